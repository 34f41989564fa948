// VARSLOT_* options (preload/config.c): the verbose line, and bad values that warn once and
// take the default.
#include "shim_test.h"

namespace shimtest {
namespace {

// ---------------------------------------------------------------------------------------
// bad environment values: one warning line, the default, the program runs

// VARSLOT_VERBOSE=1 prints the options on one line from inside the first malloc, into a
// fixed buffer: the longest options there are must be cut, not written past its end.
TEST_F(Shim, VerboseLineWithTheLongestOptionsStaysInItsBuffer)
{
    std::string callers, classes;
    for (int i = 0; i < 16; i++)
        callers += (i ? "," : "") + std::string(63, (char)('a' + i));
    for (int i = 1; i <= 64; i++)
        classes += (i > 1 ? "," : "") + std::to_string(64 * i) + "K:1";
    std::map<std::string, std::string> env = {{"VARSLOT_VERBOSE", "1"},
                                              {"VARSLOT_CALLERS", callers},
                                              {"VARSLOT_CLASSES", classes},
                                              {"VARSLOT_SEGMENT", getenv("VARSLOT_SEGMENT")}};
    Child c;
    std::string why;
    ASSERT_TRUE(c.start({"/bin/true"}, Child::environment(env, false), 30, &why)) << why;
    int status = c.finish();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << describe_status(status) << "\nstderr:\n" << c.err_buf;
    EXPECT_EQ(c.err_buf.rfind("varslot: segment=", 0), 0u) << c.err_buf;
    EXPECT_NE(c.err_buf.find(std::string(20, 'a')), std::string::npos) << "the callers are printed";
    EXPECT_EQ(c.err_buf.find('\n'), c.err_buf.size() - 1) << "one line, ended: " << c.err_buf;
    EXPECT_LT(c.err_buf.size(), 1100u);
}

struct BadValue {
    const char *var, *value;
};

void PrintTo(const BadValue &b, std::ostream *os) { *os << b.var << "=\"" << b.value << "\""; }

class BadEnvironment : public Shim, public ::testing::WithParamInterface<BadValue> {};

TEST_P(BadEnvironment, OneWarningAndTheProgramRuns)
{
    const BadValue &bad = GetParam();
    std::string peer = helper_path("VSTEST_PEER", "vstest-peer");
    for (const std::string &prog : {std::string("/bin/true"), peer}) {
        SCOPED_TRACE(prog + " with " + bad.var + "=\"" + bad.value + "\"");
        std::map<std::string, std::string> env = {{bad.var, bad.value}};
        // Only the bad variable differs from a quiet, working configuration. An empty
        // VARSLOT_SEGMENT means the per-user default: route nothing then, so that no
        // default segment is created by a test.
        if (strcmp(bad.var, "VARSLOT_SEGMENT"))
            env["VARSLOT_SEGMENT"] = getenv("VARSLOT_SEGMENT");
        else
            env["VARSLOT_MIN_SIZE"] = "off";
        Child c;
        std::string why;
        ASSERT_TRUE(c.start({prog, "noop"}, Child::environment(env, false), 30, &why)) << why;
        int status = c.finish();
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
            << describe_status(status) << "\nstderr:\n" << c.err_buf;
        if (prog != "/bin/true") {
            EXPECT_EQ(c.out_buf, "peer ok\n");
        }
        std::vector<std::string> lines;
        size_t pos = 0;
        while (pos < c.err_buf.size()) {
            size_t nl = c.err_buf.find('\n', pos);
            lines.push_back(c.err_buf.substr(pos, nl - pos));
            pos = nl == std::string::npos ? c.err_buf.size() : nl + 1;
        }
        std::string prefix = std::string("varslot: ignoring ") + bad.var + "=" + bad.value;
        size_t warnings = 0, matching = 0;
        for (auto &l : lines) {
            warnings += l.rfind("varslot: ignoring ", 0) == 0;
            matching += l.rfind(prefix, 0) == 0;
        }
        EXPECT_EQ(warnings, 1u) << "stderr:\n" << c.err_buf;
        EXPECT_EQ(matching, 1u) << "want a line starting with \"" << prefix << "\"; stderr:\n"
                                << c.err_buf;
        EXPECT_EQ(lines.size(), 1u) << "nothing else on stderr; stderr:\n" << c.err_buf;
    }
}

INSTANTIATE_TEST_SUITE_P(
    Values, BadEnvironment,
    ::testing::Values(BadValue{"VARSLOT_MIN_SIZE", "banana"}, BadValue{"VARSLOT_MIN_SIZE", "64Q"},
                      BadValue{"VARSLOT_CLASSES", "64K"}, BadValue{"VARSLOT_CLASSES", "1M:4,64K:4"},
                      BadValue{"VARSLOT_FALLBACK", "tcmalloc"}, BadValue{"VARSLOT_STATS", "maybe"},
                      BadValue{"VARSLOT_VERBOSE", "loud"}, BadValue{"VARSLOT_FORK", "sometimes"},
                      BadValue{"VARSLOT_TRUST", "perhaps"},
                      BadValue{"VARSLOT_CALLERS", ",,"}, BadValue{"VARSLOT_SEGMENT", ""}),
    [](const ::testing::TestParamInfo<BadValue> &info) {
        std::string name = std::string(info.param.var).substr(8) + "_" + std::to_string(info.index);
        return name;
    });

} // namespace
} // namespace shimtest
