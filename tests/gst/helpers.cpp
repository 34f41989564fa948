// The helpers of tests/gst/gst_test.h.
#include "gst_test.h"

// ---------------------------------------------------------------------------------------
// Helpers

std::string env_or(const char *var, const char *fallback)
{
    const char *v = getenv(var);
    return v && *v ? v : fallback;
}

// Runs build/bin/varslot; returns its exit status, output in *out.
int varslot_cli(const std::vector<std::string> &args, std::string *out)
{
    std::string cli = env_or("VSTEST_VARSLOT_CLI", VSTEST_VARSLOT_CLI);
    std::vector<char *> argv;
    argv.push_back(const_cast<char *>(cli.c_str()));
    for (auto &a : args)
        argv.push_back(const_cast<char *>(a.c_str()));
    argv.push_back(nullptr);
    gchar *sout = nullptr, *serr = nullptr;
    gint status = -1;
    GError *err = nullptr;
    if (!g_spawn_sync(nullptr, argv.data(), nullptr, G_SPAWN_DEFAULT, nullptr, nullptr, &sout, &serr,
                      &status, &err)) {
        if (out)
            *out = err->message;
        g_clear_error(&err);
        return -1;
    }
    if (out)
        *out = std::string(sout ? sout : "") + (serr ? serr : "");
    g_free(sout);
    g_free(serr);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool shm_exists(const std::string &name) // name: "/x"
{
    struct stat st;
    return stat(("/dev/shm" + name).c_str(), &st) == 0;
}

void remove_segment(const std::string &name)
{
    if (shm_exists(name))
        varslot_cli({"rm", name});
}

// Names start with $VSTEST_GST_PREFIX (the runner's, so it can clean up after a crash) or
// vstest-gst-PID.
int g_name_counter = 0;
std::string name_prefix()
{
    const char *p = getenv("VSTEST_GST_PREFIX");
    return p && *p ? p : "vstest-gst-" + std::to_string(getpid());
}
std::string unique_segment(const char *what)
{
    return "/" + name_prefix() + "-" + what + "-" + std::to_string(g_name_counter++);
}
std::string unique_socket(const char *what)
{
    return "/tmp/" + name_prefix() + "-" + what + "-" + std::to_string(g_name_counter++) + ".sock";
}

bool is_varslot(GstMemory *mem) { return mem && gst_memory_is_type(mem, "VarslotMemory"); }

GstAllocator *registered_allocator() // a new ref
{
    GstPlugin *plugin = gst_plugin_load_by_name("varslot");
    if (plugin)
        gst_object_unref(plugin);
    return gst_allocator_find("varslot");
}

guint64 get_u64(GstElement *el, const char *prop)
{
    guint64 v = G_MAXUINT64;
    g_object_get(el, prop, &v, NULL);
    return v;
}

// A counter the streaming thread bumps after the buffer is on its way: wait (up to 5 s) for
// it to reach want, then return what it is.
guint64 wait_u64(GstElement *el, const char *prop, guint64 want)
{
    guint64 v = get_u64(el, prop);
    for (int i = 0; i < 500 && v < want; i++) {
        g_usleep(10 * 1000);
        v = get_u64(el, prop);
    }
    return v;
}

void fill_pattern(guint8 *p, gsize n, guint seed)
{
    for (gsize i = 0; i < n; i++)
        p[i] = (guint8)((i * 31u + seed * 7u + (i >> 8)) & 0xff);
}

bool has_pattern(const guint8 *p, gsize n, guint seed)
{
    for (gsize i = 0; i < n; i++)
        if (p[i] != (guint8)((i * 31u + seed * 7u + (i >> 8)) & 0xff))
            return false;
    return true;
}

const guint8 *mapped_data(GstBuffer *buf) // the address the buffer's (single) memory maps to
{
    GstMapInfo map;
    if (!gst_buffer_map(buf, &map, GST_MAP_READ))
        return nullptr;
    const guint8 *p = map.data;
    gst_buffer_unmap(buf, &map);
    return p;
}

std::string error_text(GstMessage *msg)
{
    GError *err = nullptr;
    gchar *dbg = nullptr;
    gst_message_parse_error(msg, &err, &dbg);
    std::string s = std::string(err->message) + " | " + (dbg ? dbg : "");
    g_error_free(err);
    g_free(dbg);
    return s;
}

// The sum of one per-class counter of `varslot stat --json`; -1 if stat fails.
static int class_counter(const std::string &seg, const char *key)
{
    std::string out, pattern = std::string("\"") + key + "\":";
    if (varslot_cli({"stat", seg, "--json"}, &out) != 0)
        return -1;
    int n = 0;
    for (size_t at = 0; (at = out.find(pattern, at)) != std::string::npos; at++)
        n += atoi(out.c_str() + at + pattern.size());
    return n;
}

int allocated_slots(const std::string &seg) { return class_counter(seg, "allocated"); }
int shared_slots(const std::string &seg) { return class_counter(seg, "shared"); }

int held_slots(const std::string &seg)
{
    int allocated = class_counter(seg, "allocated"), shared = class_counter(seg, "shared");
    return allocated < 0 || shared < 0 ? -1 : allocated + shared;
}
