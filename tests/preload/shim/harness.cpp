// The shared helpers of the shim suites (shim_test.h): the shim's API, the segment seen
// through the core, content patterns, child processes.
#include "shim_test.h"

namespace shimtest {

const ShimApi &api()
{
    static ShimApi a = [] {
        ShimApi s;
        s.push = (vs_tag_push_fn)dlsym(RTLD_DEFAULT, "vs_tag_push");
        s.pop = (vs_tag_pop_fn)dlsym(RTLD_DEFAULT, "vs_tag_pop");
        s.handle_of = (vs_handle_of_fn)dlsym(RTLD_DEFAULT, "vs_handle_of");
        s.ptr_of = (vs_ptr_of_fn)dlsym(RTLD_DEFAULT, "vs_ptr_of");
        s.owns = (vs_owns_fn)dlsym(RTLD_DEFAULT, "vs_owns");
        return s;
    }();
    return a;
}

bool owned(const void *p) { return api().owns(p) != 0; }

static uint64_t env_size(const char *var, uint64_t dflt)
{
    const char *v = getenv(var);
    uint64_t out;
    if (!v)
        return dflt;
    if (!strcasecmp(v, "off"))
        return 0;
    return vs_parse_size(v, &out) == VS_OK ? out : dflt;
}

size_t min_size()
{
    static size_t m = (size_t)env_size("VARSLOT_MIN_SIZE", 64 << 10);
    return m;
}

bool env_is(const char *var, const char *value)
{
    const char *v = getenv(var);
    return v && !strcmp(v, value);
}

static std::string self_dir()
{
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0)
        return ".";
    buf[n] = '\0';
    std::string s(buf);
    size_t slash = s.rfind('/');
    return slash == std::string::npos ? "." : s.substr(0, slash);
}

std::string helper_path(const char *env_var, const char *name)
{
    const char *v = getenv(env_var);
    return v && *v ? v : self_dir() + "/" + name;
}

CoreView::CoreView()
{
    const char *name = getenv("VARSLOT_SEGMENT");
    if (!name || !*name) {
        error_ = "VARSLOT_SEGMENT is not set: the runner must name a fresh segment";
        return;
    }
    // The shim opens its segment at its first routed allocation: make one, so the shim's
    // mapping is at the creator's address and ours (a second one) goes elsewhere.
    api().push(0x7e57);
    void *p = malloc(opaque<size_t>(64));
    api().pop();
    bool routed = owned(p);
    free(p);
    if (!routed) {
        error_ = "a tag-scoped malloc was not routed: the shim cannot open its segment";
        return;
    }
    int rc = vs_segment_open(&seg_, name);
    if (rc != VS_OK) {
        error_ = std::string("vs_segment_open(") + name + "): " + vs_strerror(rc) + " (" +
                 vs_last_detail() + ")";
        return;
    }
    ok_ = true;
}
vs_segment seg_{};

vs_slot_info CoreView::info(uint64_t handle)
{
    vs_slot_info out{};
    vs_slot_ref ref = vs_slot_ref_unpack(handle);
    if (vs_pool_slot_info(pool(), ref.class_idx, ref.slot_idx, &out) != VS_OK)
        out.state = 0xdead;
    return out;
}

bool CoreView::released(uint64_t handle)
{
    vs_slot_info i = info(handle);
    return i.state == VS_SLOT_FREE || i.generation != vs_slot_ref_unpack(handle).generation;
}

uint8_t CoreView::peer_of(pid_t pid)
{
    uint32_t max = vs_segment_max_peers(&seg_);
    for (uint32_t id = 1; id <= max; id++) {
        vs_peer_info p;
        if (vs_segment_peer_info(&seg_, (uint8_t)id, &p) == VS_OK && p.state != VS_PEER_FREE &&
            p.pid == pid)
            return (uint8_t)id;
    }
    return 0;
}

size_t CoreView::owned_by(uint8_t peer)
{
    size_t n = 0;
    for (size_t c = 0; c < vs_pool_class_count(pool()); c++)
        for (uint32_t i = 0; i < vs_pool_slot_count(pool(), c); i++) {
            vs_slot_info s;
            if (vs_pool_slot_info(pool(), (uint8_t)c, i, &s) == VS_OK &&
                s.state == VS_SLOT_ALLOCATED && (!peer || s.owner == peer))
                n++;
        }
    return n;
}

size_t CoreView::free_slots_for(size_t size)
{
    size_t n = 0;
    for (size_t c = 0; c < vs_pool_class_count(pool()); c++) {
        if (vs_pool_slot_size(pool(), c) < size)
            continue;
        for (uint32_t i = 0; i < vs_pool_slot_count(pool(), c); i++) {
            vs_slot_info s;
            if (vs_pool_slot_info(pool(), (uint8_t)c, i, &s) == VS_OK && s.state == VS_SLOT_FREE)
                n++;
        }
    }
    return n;
}

size_t CoreView::largest_slot()
{
    size_t n = vs_pool_class_count(pool());
    return n ? vs_pool_slot_size(pool(), n - 1) : 0;
}

void fill(void *p, size_t n, uint32_t seed)
{
    unsigned char *b = static_cast<unsigned char *>(p);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        b[i] = (unsigned char)(x >> 16);
    }
}

size_t mismatch(const void *p, size_t n, uint32_t seed)
{
    const unsigned char *b = static_cast<const unsigned char *>(p);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        if (b[i] != (unsigned char)(x >> 16))
            return i;
    }
    return SIZE_MAX;
}

bool all_bytes(const void *p, size_t n, unsigned char v)
{
    const unsigned char *b = static_cast<const unsigned char *>(p);
    for (size_t i = 0; i < n; i++)
        if (b[i] != v)
            return false;
    return true;
}

uint64_t fnv1a(const void *p, size_t n)
{
    const unsigned char *b = static_cast<const unsigned char *>(p);
    uint64_t h = 0xCBF29CE484222325ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001B3ULL;
    return h;
}

std::string hex_head(const void *p, size_t n)
{
    const unsigned char *b = static_cast<const unsigned char *>(p);
    std::string s;
    char buf[3];
    for (size_t i = 0; i < 16 && i < n; i++) {
        snprintf(buf, sizeof buf, "%02x", b[i]);
        s += buf;
    }
    return s;
}

static double now_s()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}
Child::~Child()
{
    if (pid > 0) { // not waited for: a failed test; leave nothing running
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
    }
    for (int fd : {in, out, err})
        if (fd >= 0)
            close(fd);
}

std::vector<std::string> Child::environment(const std::map<std::string, std::string> &set,
                                             bool keep_varslot)
{
    std::vector<std::string> env;
    for (char **e = environ; *e; e++) {
        std::string kv(*e), key = kv.substr(0, kv.find('='));
        if (set.count(key) || (!keep_varslot && key.rfind("VARSLOT_", 0) == 0))
            continue;
        env.push_back(kv);
    }
    for (auto &kv : set)
        env.push_back(kv.first + "=" + kv.second);
    return env;
}

bool Child::start(const std::vector<std::string> &argv, const std::vector<std::string> &env,
                  double timeout_s, std::string *why)
{
    int pin[2], pout[2], perr[2];
    if (pipe2(pin, O_CLOEXEC) || pipe2(pout, O_CLOEXEC) || pipe2(perr, O_CLOEXEC)) {
        *why = std::string("pipe: ") + strerror(errno);
        return false;
    }
    std::vector<char *> av, ev;
    for (auto &s : argv)
        av.push_back(const_cast<char *>(s.c_str()));
    av.push_back(nullptr);
    for (auto &s : env)
        ev.push_back(const_cast<char *>(s.c_str()));
    ev.push_back(nullptr);
    pid = fork();
    if (pid < 0) {
        *why = std::string("fork: ") + strerror(errno);
        return false;
    }
    if (pid == 0) { // async-signal-safe calls only until execve
        dup2(pin[0], 0);
        dup2(pout[1], 1);
        dup2(perr[1], 2);
        execve(av[0], av.data(), ev.data());
        _exit(127);
    }
    close(pin[0]);
    close(pout[1]);
    close(perr[1]);
    in = pin[1];
    out = pout[0];
    err = perr[0];
    deadline = now_s() + timeout_s;
    return true;
}

void Child::send(const std::string &s)
{
    const char *p = s.data();
    size_t left = s.size();
    while (left) {
        ssize_t n = write(in, p, left);
        if (n <= 0)
            return; // the child is gone: what it printed tells the story
        p += n;
        left -= (size_t)n;
    }
}

void Child::close_stdin()
{
    if (in >= 0)
        close(in);
    in = -1;
}

bool Child::pump(double until)
{
    struct pollfd fds[2];
    int n = 0;
    if (!out_eof)
        fds[n++] = {out, POLLIN, 0};
    if (!err_eof)
        fds[n++] = {err, POLLIN, 0};
    if (!n)
        return true;
    double left = until - now_s();
    if (left <= 0)
        return false;
    int r = poll(fds, (nfds_t)n, (int)(left * 1000) + 1);
    if (r < 0)
        return errno == EINTR;
    for (int i = 0; i < n; i++) {
        if (!fds[i].revents)
            continue;
        char buf[4096];
        ssize_t got = read(fds[i].fd, buf, sizeof buf);
        bool is_out = fds[i].fd == out;
        if (got <= 0)
            (is_out ? out_eof : err_eof) = true;
        else
            (is_out ? out_buf : err_buf).append(buf, (size_t)got);
    }
    return true;
}

bool Child::line(std::string *l)
{
    for (;;) {
        size_t nl = out_buf.find('\n');
        if (nl != std::string::npos) {
            *l = out_buf.substr(0, nl);
            out_buf.erase(0, nl + 1);
            return true;
        }
        if (out_eof || !pump(deadline))
            return false;
    }
}

int Child::finish()
{
    close_stdin();
    while ((!out_eof || !err_eof) && pump(deadline)) {
    }
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            pid = -1;
            return status;
        }
        if (now_s() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
            pid = -1;
            return -1;
        }
        usleep(2000);
    }
}

std::string describe_status(int status)
{
    if (status == -1)
        return "timed out (killed)";
    if (WIFEXITED(status))
        return "exit status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status))
        return std::string("killed by signal ") + strsignal(WTERMSIG(status));
    return "status " + std::to_string(status);
}

std::map<std::string, std::string> key_values(const std::string &text)
{
    std::map<std::string, std::string> kv;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        std::string l = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        size_t eq = l.find('=');
        kv[eq == std::string::npos ? l : l.substr(0, eq)] =
            eq == std::string::npos ? "" : l.substr(eq + 1);
        if (nl == std::string::npos)
            break;
        pos = nl + 1;
    }
    return kv;
}

std::string ptr_string(const void *p)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%p", p);
    return buf;
}

size_t routed_size(CoreView &v, size_t want)
{
    size_t lo = min_size() ? min_size() : 1, hi = v.largest_slot();
    return want < lo ? lo : want > hi ? hi : want;
}

// Without the shim every test skips; say why once, not only per test.
class ShimPresence : public ::testing::Environment {
    void SetUp() override
    {
        if (!api().present())
            fprintf(stderr, "shim_tests: libvarslot-preload.so is not loaded: every test is skipped "
                            "(run tests/preload/run-shim-tests.sh)\n");
    }
};
const ::testing::Environment *const shim_presence = ::testing::AddGlobalTestEnvironment(new ShimPresence);

} // namespace shimtest
