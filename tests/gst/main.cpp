// Entry point of the plugin's unit tests, and their strictness: as strict as gst_check_init,
// any g_warning/g_critical fails the test that is running (and the run, if it comes at
// gst_deinit, e.g. from the leaks tracer), and so does a GST_WARNING or GST_ERROR in the
// plugin's "varslot" debug category unless the test expects it (AllowGstWarnings).
#include "gst_test.h"

std::mutex g_log_mutex;
std::vector<std::string> g_allowed;

namespace {

// ---------------------------------------------------------------------------------------
// Strictness: GLib warnings and criticals, and the plugin's own GST_WARNING/GST_ERROR.

std::atomic<int> g_glib_problems{0};
std::atomic<int> g_gst_problems{0};
bool g_in_test = false;

GLogWriterOutput log_writer(GLogLevelFlags level, const GLogField *fields, gsize n, gpointer)
{
    if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING)) {
        std::string domain = "?", message = "?";
        for (gsize i = 0; i < n; i++) {
            if (!strcmp(fields[i].key, "GLIB_DOMAIN") && fields[i].length < 0)
                domain = static_cast<const char *>(fields[i].value);
            if (!strcmp(fields[i].key, "MESSAGE") && fields[i].length < 0)
                message = static_cast<const char *>(fields[i].value);
        }
        g_glib_problems++;
        std::lock_guard<std::mutex> lock(g_log_mutex);
        if (g_in_test)
            ADD_FAILURE() << "unexpected " << (level & G_LOG_LEVEL_CRITICAL ? "g_critical" : "g_warning")
                          << " (" << domain << "): " << message;
    }
    return g_log_writer_default(level, fields, n, nullptr);
}

void gst_log_hook(GstDebugCategory *cat, GstDebugLevel level, const gchar *file, const gchar *function,
                  gint line, GObject *, GstDebugMessage *message, gpointer)
{
    if (level > GST_LEVEL_WARNING || strcmp(gst_debug_category_get_name(cat), "varslot") != 0)
        return;
    std::string text = gst_debug_message_get(message);
    std::lock_guard<std::mutex> lock(g_log_mutex);
    for (const auto &allowed : g_allowed)
        if (text.find(allowed) != std::string::npos)
            return;
    g_gst_problems++;
    if (g_in_test)
        ADD_FAILURE() << "unexpected GST_" << gst_debug_level_get_name(level) << " from the plugin ("
                      << file << ":" << line << " " << function << "): " << text;
}

class StrictListener : public testing::EmptyTestEventListener {
    void OnTestStart(const testing::TestInfo &) override
    {
        std::lock_guard<std::mutex> lock(g_log_mutex);
        g_in_test = true;
    }
    void OnTestEnd(const testing::TestInfo &) override
    {
        std::lock_guard<std::mutex> lock(g_log_mutex);
        g_in_test = false;
    }
};

} // namespace

int main(int argc, char **argv)
{
    // Before anything can log: every warning and critical goes through us.
    g_log_set_writer_func(log_writer, nullptr, nullptr);
    setenv("GST_PLUGIN_PATH", env_or("GST_PLUGIN_PATH", VSTEST_PLUGIN_DIR).c_str(), 1);
    setenv("GST_REGISTRY", env_or("GST_REGISTRY", VSTEST_REGISTRY).c_str(), 1);
    const bool child = getenv("VSTEST_GST_CHILD") != nullptr;
    std::string default_seg;
    if (!child) {
        // The registered allocator binds $VARSLOT_SEGMENT at its first allocation: give it
        // a known 64K:8 segment of our own.
        unsetenv("VARSLOT_GST_WAIT_MS");
        default_seg = unique_segment("default");
        std::string out;
        if (varslot_cli({"create", default_seg, "--classes", "64K:8"}, &out) != 0) {
            fprintf(stderr, "plugin_test: cannot create %s: %s\n", default_seg.c_str(), out.c_str());
            return 1;
        }
        setenv("VARSLOT_SEGMENT", default_seg.c_str(), 1);
    }
    gst_init(&argc, &argv);
    // The hook only sees what the category lets through: at least warnings, more if asked.
    const char *gst_debug = getenv("GST_DEBUG");
    if (!gst_debug || !strstr(gst_debug, "varslot"))
        gst_debug_set_threshold_for_name("varslot", MAX(gst_debug_get_default_threshold(), GST_LEVEL_WARNING));
    gst_debug_add_log_function(gst_log_hook, nullptr, nullptr);
    testing::InitGoogleTest(&argc, argv);
    testing::UnitTest::GetInstance()->listeners().Append(new StrictListener);
    int rc = RUN_ALL_TESTS();
    gst_deinit(); // the leaks tracer, when enabled, warns here
    if (!default_seg.empty())
        remove_segment(default_seg);
    if (g_glib_problems > 0 || g_gst_problems > 0) {
        fprintf(stderr, "plugin_test: %d GLib warning(s)/critical(s) and %d unexpected varslot warning(s)\n",
                g_glib_problems.load(), g_gst_problems.load());
        rc = 1;
    }
    return rc;
}
