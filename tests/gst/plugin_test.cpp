// Unit tests of the varslot GStreamer plugin through the public GStreamer API only: the
// registered "varslot" allocator (params, map, share, copy, is_span, full-segment policy),
// varslotsink's ALLOCATION answer (GstHarness), and sink->src round trips inside one process
// (metadata, caps, zero copy, copies, fan-out, bad input).
//
// As strict as gst_check_init: any g_warning/g_critical fails the test that is running (and
// the run, if it comes at gst_deinit, e.g. from the leaks tracer), and so does a GST_WARNING
// or GST_ERROR in the plugin's "varslot" debug category unless the test expects it.
//
// Environment (run-gst-tests.sh sets it; defaults are compiled in): GST_PLUGIN_PATH,
// GST_REGISTRY, VSTEST_VARSLOT_CLI (build/bin/varslot), VSTEST_GST_PREFIX. The process makes
// its own segments (/PREFIX-*) and sockets (/tmp/PREFIX-*.sock) and removes them; PREFIX is
// $VSTEST_GST_PREFIX, else vstest-gst-PID.
#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "../../gst-plugin/protocol.h" // the wire's structs: a hand-made consumer speaks it
#include <varslot.h>                     // and hand-made producers are real peers

#include <fcntl.h>
#include <poll.h>
#include <random>
#include <memory>
#include <thread>
#include <sys/inotify.h>
#include <sys/wait.h>

#ifndef VSTEST_PLUGIN_DIR
#define VSTEST_PLUGIN_DIR "build/lib/gstreamer-1.0"
#endif
#ifndef VSTEST_VARSLOT_CLI
#define VSTEST_VARSLOT_CLI "build/bin/varslot"
#endif
#ifndef VSTEST_REGISTRY
#define VSTEST_REGISTRY "build/tests/gst-registry-unit.bin"
#endif

namespace {

// ---------------------------------------------------------------------------------------
// Strictness: GLib warnings and criticals, and the plugin's own GST_WARNING/GST_ERROR.

std::mutex g_log_mutex;
std::vector<std::string> g_allowed; // substrings of varslot-category warnings a test expects
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

// Within its scope, varslot-category warnings containing one of these substrings are fine.
struct AllowGstWarnings {
    size_t n;
    explicit AllowGstWarnings(std::initializer_list<const char *> patterns) : n(patterns.size())
    {
        std::lock_guard<std::mutex> lock(g_log_mutex);
        for (auto p : patterns)
            g_allowed.emplace_back(p);
    }
    ~AllowGstWarnings()
    {
        std::lock_guard<std::mutex> lock(g_log_mutex);
        g_allowed.resize(g_allowed.size() - n);
    }
};

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

// ---------------------------------------------------------------------------------------
// Helpers

std::string env_or(const char *var, const char *fallback)
{
    const char *v = getenv(var);
    return v && *v ? v : fallback;
}

// Runs build/bin/varslot; returns its exit status, output in *out.
int varslot_cli(const std::vector<std::string> &args, std::string *out = nullptr)
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

// A parsed pipeline, set to NULL and freed at scope end.
struct Pipeline {
    GstElement *p = nullptr;
    std::vector<GstElement *> refs;
    explicit Pipeline(const std::string &desc)
    {
        GError *err = nullptr;
        p = gst_parse_launch_full(desc.c_str(), nullptr, GST_PARSE_FLAG_FATAL_ERRORS, &err);
        EXPECT_NE(p, nullptr) << desc << ": " << (err ? err->message : "?");
        g_clear_error(&err);
    }
    ~Pipeline() { stop(); }
    void stop()
    {
        for (auto e : refs)
            gst_object_unref(e);
        refs.clear();
        if (p) {
            gst_element_set_state(p, GST_STATE_NULL);
            gst_object_unref(p);
            p = nullptr;
        }
    }
    GstElement *operator[](const char *name)
    {
        GstElement *e = gst_bin_get_by_name(GST_BIN(p), name);
        EXPECT_NE(e, nullptr) << name;
        if (e)
            refs.push_back(e);
        return e;
    }
    GstStateChangeReturn play() { return gst_element_set_state(p, GST_STATE_PLAYING); }
    // The first ERROR message within timeout, or nullptr (caller unrefs).
    GstMessage *error(GstClockTime timeout)
    {
        GstBus *bus = gst_element_get_bus(p);
        GstMessage *m = gst_bus_timed_pop_filtered(bus, timeout, GST_MESSAGE_ERROR);
        gst_object_unref(bus);
        return m;
    }
    void expect_no_error()
    {
        if (GstMessage *m = error(0)) {
            ADD_FAILURE() << "error on the bus: " << error_text(m);
            gst_message_unref(m);
        }
    }
};

const char *kI420 = "video/x-raw,format=I420,width=64,height=48,framerate=30/1";
const gsize kI420Size = 64 * 48 * 3 / 2;

// ---------------------------------------------------------------------------------------
// The registered allocator

class Allocator : public testing::Test {
protected:
    GstAllocator *alloc = nullptr;
    void SetUp() override
    {
        alloc = registered_allocator();
        ASSERT_NE(alloc, nullptr) << "gst_allocator_find(\"varslot\") after loading the plugin";
    }
    void TearDown() override
    {
        if (alloc)
            gst_object_unref(alloc);
    }
    GstMemory *take(gsize size, GstMemoryFlags flags = (GstMemoryFlags)0, gsize align = 0, gsize prefix = 0,
                    gsize padding = 0)
    {
        GstAllocationParams params;
        gst_allocation_params_init(&params);
        params.flags = flags;
        params.align = align;
        params.prefix = prefix;
        params.padding = padding;
        return gst_allocator_alloc(alloc, size, &params);
    }
};

TEST_F(Allocator, RegisteredOnceThePluginIsLoaded)
{
    EXPECT_STREQ(alloc->mem_type, "VarslotMemory");
    GstAllocator *again = gst_allocator_find("varslot");
    EXPECT_EQ(again, alloc) << "one registered instance";
    gst_object_unref(again);
    GstMemory *mem = take(1000);
    ASSERT_NE(mem, nullptr);
    EXPECT_TRUE(is_varslot(mem));
    EXPECT_EQ(mem->allocator, alloc);
    EXPECT_EQ(gst_memory_get_sizes(mem, nullptr, nullptr), 1000u);
    gst_memory_unref(mem);
}

TEST_F(Allocator, CanBeTheDefault)
{
    GstAllocator *sysmem = gst_allocator_find(GST_ALLOCATOR_SYSMEM);
    ASSERT_NE(sysmem, nullptr);
    gst_allocator_set_default(GST_ALLOCATOR(gst_object_ref(alloc)));
    GstMemory *mem = gst_allocator_alloc(nullptr, 4096, nullptr);
    GstBuffer *buf = gst_buffer_new_allocate(nullptr, 2048, nullptr);
    gst_allocator_set_default(sysmem); // takes our ref
    ASSERT_NE(mem, nullptr);
    EXPECT_TRUE(is_varslot(mem));
    ASSERT_NE(buf, nullptr);
    EXPECT_TRUE(is_varslot(gst_buffer_peek_memory(buf, 0)));
    gst_memory_unref(mem);
    gst_buffer_unref(buf);
    GstMemory *plain = gst_allocator_alloc(nullptr, 16, nullptr);
    EXPECT_FALSE(is_varslot(plain)) << "the system default is back";
    gst_memory_unref(plain);
}

TEST_F(Allocator, HonoursAlignPrefixPadding)
{
    const gsize aligns[] = {0, 1, 3, 7, 15, 31, 63, 127, 255, 511, 1023, 2047, 4095};
    const gsize prefixes[] = {0, 1, 13, 64, 300};
    const gsize paddings[] = {0, 5, 100, 4096};
    for (gsize align : aligns)
        for (gsize prefix : prefixes)
            for (gsize padding : paddings) {
                SCOPED_TRACE(testing::Message() << "align " << align << " prefix " << prefix << " padding "
                                                << padding);
                const gsize size = 10000;
                GstMemory *mem = take(size, (GstMemoryFlags)0, align, prefix, padding);
                ASSERT_NE(mem, nullptr);
                EXPECT_TRUE(is_varslot(mem));
                gsize offset = 0, maxsize = 0;
                EXPECT_EQ(gst_memory_get_sizes(mem, &offset, &maxsize), size);
                EXPECT_EQ(offset, prefix);
                EXPECT_GE(maxsize, prefix + size + padding);
                EXPECT_EQ(mem->align & align, align) << "align mask recorded";
                GstMapInfo map;
                ASSERT_TRUE(gst_memory_map(mem, &map, GST_MAP_READWRITE));
                EXPECT_EQ(map.size, size);
                EXPECT_EQ(map.maxsize, maxsize - prefix);
                guintptr base = (guintptr)map.data - prefix; // start of the maxsize region
                EXPECT_EQ(base & (align | gst_memory_alignment), 0u) << "base " << (void *)base;
                // The whole region is usable: prefix, data, padding.
                memset(map.data - prefix, 0x5c, prefix + size + padding);
                gst_memory_unmap(mem, &map);
                gst_memory_unref(mem);
            }
}

TEST_F(Allocator, ZeroPrefixedAndZeroPaddedOnDirtySlots)
{
    // Dirty every slot of the segment (64K:8, made by main) so whichever comes next is dirty.
    std::vector<GstMemory *> all;
    for (int i = 0; i < 8; i++) {
        GstMemory *m = take(60000);
        ASSERT_NE(m, nullptr);
        ASSERT_TRUE(is_varslot(m)) << "slot " << i;
        gsize maxsize = 0;
        gst_memory_get_sizes(m, nullptr, &maxsize);
        gst_memory_resize(m, 0, maxsize);
        GstMapInfo map;
        ASSERT_TRUE(gst_memory_map(m, &map, GST_MAP_WRITE));
        memset(map.data, 0xAA, map.size);
        gst_memory_unmap(m, &map);
        all.push_back(m);
    }
    for (auto m : all)
        gst_memory_unref(m);

    struct Case {
        GstMemoryFlags flags;
        gsize align, prefix, size, padding;
    } cases[] = {
        {GST_MEMORY_FLAG_ZERO_PREFIXED, 0, 100, 1000, 50},
        {GST_MEMORY_FLAG_ZERO_PADDED, 0, 100, 1000, 50},
        {(GstMemoryFlags)(GST_MEMORY_FLAG_ZERO_PREFIXED | GST_MEMORY_FLAG_ZERO_PADDED), 4095, 333, 777, 999},
        {(GstMemoryFlags)(GST_MEMORY_FLAG_ZERO_PREFIXED | GST_MEMORY_FLAG_ZERO_PADDED), 63, 0, 30000, 0},
    };
    for (const Case &c : cases) {
        SCOPED_TRACE(testing::Message() << "flags 0x" << std::hex << c.flags << std::dec << " align " << c.align
                                        << " prefix " << c.prefix << " size " << c.size << " padding "
                                        << c.padding);
        std::vector<GstMemory *> mems;
        for (int i = 0; i < 8; i++) { // every slot once, so a dirty one is certainly checked
            GstMemory *mem = take(c.size, c.flags, c.align, c.prefix, c.padding);
            ASSERT_NE(mem, nullptr);
            ASSERT_TRUE(is_varslot(mem));
            EXPECT_EQ((GST_MINI_OBJECT_FLAGS(mem) & c.flags), (guint)c.flags) << "flags kept on the memory";
            gsize offset = 0, maxsize = 0;
            gst_memory_get_sizes(mem, &offset, &maxsize);
            // Expose prefix and padding through the public API, then read them.
            gst_memory_resize(mem, -(gssize)offset, maxsize);
            GstMapInfo map;
            ASSERT_TRUE(gst_memory_map(mem, &map, GST_MAP_READ));
            ASSERT_EQ(map.size, maxsize);
            if (c.flags & GST_MEMORY_FLAG_ZERO_PREFIXED) {
                gsize bad = 0;
                for (gsize k = 0; k < c.prefix; k++)
                    bad += map.data[k] != 0;
                EXPECT_EQ(bad, 0u) << "non-zero bytes in the prefix of slot " << i;
            }
            if (c.flags & GST_MEMORY_FLAG_ZERO_PADDED) {
                gsize bad = 0;
                for (gsize k = c.prefix + c.size; k < maxsize; k++)
                    bad += map.data[k] != 0;
                EXPECT_EQ(bad, 0u) << "non-zero bytes after the data of slot " << i;
            }
            gst_memory_unmap(mem, &map);
            mems.push_back(mem);
        }
        for (auto m : mems)
            gst_memory_unref(m);
    }
}

TEST_F(Allocator, MapReadWriteAndReadOnly)
{
    GstMemory *mem = take(5000);
    ASSERT_NE(mem, nullptr);
    GstMapInfo w, r;
    ASSERT_TRUE(gst_memory_map(mem, &w, GST_MAP_WRITE));
    ASSERT_EQ(w.size, 5000u);
    fill_pattern(w.data, w.size, 1);
    gst_memory_unmap(mem, &w);
    ASSERT_TRUE(gst_memory_map(mem, &r, GST_MAP_READ));
    EXPECT_EQ(r.data, w.data) << "the same bytes every time";
    EXPECT_TRUE(has_pattern(r.data, r.size, 1));
    // Two readers at once.
    GstMapInfo r2;
    ASSERT_TRUE(gst_memory_map(mem, &r2, GST_MAP_READ));
    EXPECT_EQ(r2.data, r.data);
    gst_memory_unmap(mem, &r2);
    gst_memory_unmap(mem, &r);
    gst_memory_unref(mem);

    GstMemory *ro = take(100, GST_MEMORY_FLAG_READONLY);
    ASSERT_NE(ro, nullptr);
    EXPECT_TRUE(GST_MEMORY_IS_READONLY(ro));
    GstMapInfo m;
    EXPECT_FALSE(gst_memory_map(ro, &m, GST_MAP_WRITE)) << "read-only memory refuses a write map";
    ASSERT_TRUE(gst_memory_map(ro, &m, GST_MAP_READ));
    gst_memory_unmap(ro, &m);
    gst_memory_unref(ro);
}

TEST_F(Allocator, ShareSeesTheSameBytesAndKeepsTheParent)
{
    GstMemory *mem = take(4000, (GstMemoryFlags)0, 0, 16, 0);
    ASSERT_NE(mem, nullptr);
    GstMapInfo w;
    ASSERT_TRUE(gst_memory_map(mem, &w, GST_MAP_WRITE));
    fill_pattern(w.data, w.size, 2);
    const guint8 *pdata = w.data;
    gst_memory_unmap(mem, &w);

    GstMemory *sub = gst_memory_share(mem, 100, 1000);
    ASSERT_NE(sub, nullptr);
    EXPECT_TRUE(is_varslot(sub));
    EXPECT_EQ(sub->parent, mem);
    EXPECT_EQ(sub->size, 1000u);
    EXPECT_EQ(sub->offset, mem->offset + 100);
    GstMapInfo r;
    ASSERT_TRUE(gst_memory_map(sub, &r, GST_MAP_READ));
    EXPECT_EQ(r.data, pdata + 100) << "a share is a window on the same bytes";
    EXPECT_EQ(memcmp(r.data, pdata + 100, 1000), 0);
    gst_memory_unmap(sub, &r);
    EXPECT_FALSE(gst_memory_map(sub, &r, GST_MAP_WRITE)) << "a share is read-only";

    GstMemory *rest = gst_memory_share(mem, 3000, -1);
    ASSERT_NE(rest, nullptr);
    EXPECT_EQ(rest->size, 1000u) << "size -1: to the end";
    GstMemory *subsub = gst_memory_share(sub, 10, 20);
    ASSERT_NE(subsub, nullptr);
    EXPECT_EQ(subsub->parent, mem) << "a share of a share hangs off the real parent";
    ASSERT_TRUE(gst_memory_map(subsub, &r, GST_MAP_READ));
    EXPECT_EQ(r.data, pdata + 110);
    gst_memory_unmap(subsub, &r);

    // Drop our parent ref: the shares keep it (and its slot) alive.
    gst_memory_unref(mem);
    gst_memory_unref(rest);
    gst_memory_unref(subsub);
    ASSERT_EQ(GST_MINI_OBJECT_REFCOUNT_VALUE(sub->parent), 1);
    // The slot is still held: the other 7 slots of the segment are all distinct from it.
    std::vector<GstMemory *> others;
    {
        AllowGstWarnings allow({"no free slot"}); // only if the slot had been freed
        for (int i = 0; i < 7; i++) {
            GstMemory *o = take(60000);
            ASSERT_NE(o, nullptr);
            EXPECT_TRUE(is_varslot(o)) << "7 slots are free";
            GstMapInfo om;
            ASSERT_TRUE(gst_memory_map(o, &om, GST_MAP_WRITE));
            EXPECT_TRUE(om.data + om.maxsize <= pdata - 16 || om.data >= pdata + 4000)
                << "a free slot overlaps the shared parent";
            memset(om.data, 0, om.size);
            gst_memory_unmap(o, &om);
            others.push_back(o);
        }
    }
    ASSERT_TRUE(gst_memory_map(sub, &r, GST_MAP_READ));
    EXPECT_EQ(r.data, pdata + 100);
    EXPECT_TRUE(has_pattern(r.data - 100, 1000, 2)) << "the shared bytes are untouched";
    gst_memory_unmap(sub, &r);
    for (auto o : others)
        gst_memory_unref(o);
    gst_memory_unref(sub);
}

TEST_F(Allocator, CopyIsPrivateAndEqual)
{
    GstMemory *mem = take(3000);
    ASSERT_NE(mem, nullptr);
    GstMapInfo w;
    ASSERT_TRUE(gst_memory_map(mem, &w, GST_MAP_WRITE));
    fill_pattern(w.data, w.size, 3);
    gst_memory_unmap(mem, &w);

    GstMemory *copy = gst_memory_copy(mem, 0, -1);
    ASSERT_NE(copy, nullptr);
    EXPECT_FALSE(is_varslot(copy)) << "a deep copy does not take a slot";
    EXPECT_EQ(copy->size, 3000u);
    GstMapInfo a, b;
    ASSERT_TRUE(gst_memory_map(mem, &a, GST_MAP_READ));
    ASSERT_TRUE(gst_memory_map(copy, &b, GST_MAP_READ));
    EXPECT_NE(a.data, b.data);
    EXPECT_EQ(memcmp(a.data, b.data, 3000), 0);
    gst_memory_unmap(copy, &b);

    GstMemory *part = gst_memory_copy(mem, 500, 100);
    ASSERT_NE(part, nullptr);
    EXPECT_EQ(part->size, 100u);
    ASSERT_TRUE(gst_memory_map(part, &b, GST_MAP_READ));
    EXPECT_EQ(memcmp(a.data + 500, b.data, 100), 0);
    gst_memory_unmap(part, &b);
    gst_memory_unmap(mem, &a);

    // A copy of a share copies the share's window.
    GstMemory *sub = gst_memory_share(mem, 1000, 200);
    GstMemory *subcopy = gst_memory_copy(sub, 0, -1);
    ASSERT_NE(subcopy, nullptr);
    EXPECT_EQ(subcopy->size, 200u);
    ASSERT_TRUE(gst_memory_map(subcopy, &b, GST_MAP_WRITE)) << "a copy is writable";
    ASSERT_TRUE(gst_memory_map(mem, &a, GST_MAP_READ));
    EXPECT_EQ(memcmp(a.data + 1000, b.data, 200), 0);
    memset(b.data, 0, 200);
    EXPECT_TRUE(has_pattern(a.data, 3000, 3)) << "writing the copy leaves the original alone";
    gst_memory_unmap(mem, &a);
    gst_memory_unmap(subcopy, &b);

    // A whole-buffer deep copy.
    GstBuffer *buf = gst_buffer_new();
    gst_buffer_append_memory(buf, gst_memory_ref(mem));
    GstBuffer *deep = gst_buffer_copy_deep(buf);
    EXPECT_FALSE(is_varslot(gst_buffer_peek_memory(deep, 0)));
    EXPECT_EQ(gst_buffer_memcmp(deep, 0, mapped_data(buf), 3000), 0);

    gst_buffer_unref(deep);
    gst_buffer_unref(buf);
    gst_memory_unref(subcopy);
    gst_memory_unref(sub);
    gst_memory_unref(part);
    gst_memory_unref(copy);
    gst_memory_unref(mem);
}

TEST_F(Allocator, IsSpanAndMergedMapWithoutCopy)
{
    GstMemory *mem = take(1000, (GstMemoryFlags)0, 0, 32, 0);
    ASSERT_NE(mem, nullptr);
    GstMapInfo w;
    ASSERT_TRUE(gst_memory_map(mem, &w, GST_MAP_WRITE));
    fill_pattern(w.data, w.size, 4);
    const guint8 *pdata = w.data;
    gst_memory_unmap(mem, &w);

    GstMemory *a = gst_memory_share(mem, 0, 300);
    GstMemory *b = gst_memory_share(mem, 300, 200);
    GstMemory *c = gst_memory_share(mem, 600, 100);
    gsize off = 12345;
    EXPECT_TRUE(gst_memory_is_span(a, b, &off));
    EXPECT_EQ(off, 0u);
    EXPECT_FALSE(gst_memory_is_span(b, c, &off)) << "a gap of 100 bytes";
    EXPECT_FALSE(gst_memory_is_span(b, a, &off)) << "wrong order";
    GstMemory *d = gst_memory_share(mem, 500, 100);
    EXPECT_TRUE(gst_memory_is_span(b, d, &off));
    EXPECT_EQ(off, 300u);

    // gst_buffer_map merges spanning memories by sharing the parent, not by copying.
    GstBuffer *buf = gst_buffer_new();
    gst_buffer_append_memory(buf, gst_memory_ref(a));
    gst_buffer_append_memory(buf, gst_memory_ref(b));
    GstMapInfo map;
    ASSERT_TRUE(gst_buffer_map(buf, &map, GST_MAP_READ));
    EXPECT_EQ(map.size, 500u);
    EXPECT_EQ(map.data, pdata) << "merged in place";
    EXPECT_TRUE(has_pattern(map.data, 500, 4));
    gst_buffer_unmap(buf, &map);
    gst_buffer_unref(buf);

    // Memories of two different slots never span.
    GstMemory *other = take(1000);
    EXPECT_FALSE(gst_memory_is_span(mem, other, &off));
    gst_memory_unref(other);
    for (GstMemory *m : {a, b, c, d, mem})
        gst_memory_unref(m);
}

// The full-segment policy needs the registered allocator on its own tiny segment, which it
// binds once per process, with its wait (VARSLOT_GST_WAIT_MS) read once: each case re-runs
// this binary on one child test with that environment.
namespace {
void run_full_segment_child(const char *child_test, const char *wait_ms)
{
    std::string seg = unique_segment("tiny");
    std::string out;
    ASSERT_EQ(varslot_cli({"create", seg, "--classes", "64K:2"}, &out), 0) << out;
    gchar *self = g_file_read_link("/proc/self/exe", nullptr);
    ASSERT_NE(self, nullptr);
    gchar **envp = g_get_environ();
    envp = g_environ_setenv(envp, "VARSLOT_SEGMENT", seg.c_str(), TRUE);
    envp = g_environ_setenv(envp, "VARSLOT_GST_WAIT_MS", wait_ms, TRUE);
    envp = g_environ_setenv(envp, "VSTEST_GST_CHILD", "1", TRUE);
    envp = g_environ_unsetenv(envp, "GST_TRACERS");
    std::string filter = std::string("--gtest_filter=AllocatorFullSegmentChild.") + child_test;
    const gchar *argv[] = {self, filter.c_str(), nullptr};
    gchar *cout = nullptr, *cerr = nullptr;
    gint status = -1;
    GError *err = nullptr;
    ASSERT_TRUE(g_spawn_sync(nullptr, (gchar **)argv, envp, G_SPAWN_DEFAULT, nullptr, nullptr, &cout, &cerr,
                             &status, &err))
        << (err ? err->message : "");
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child:\n" << cout << cerr;
    EXPECT_NE(std::string(cout).find("[  PASSED  ] 1 test"), std::string::npos) << "child:\n" << cout << cerr;
    // The child returned everything: no slot stays allocated.
    std::string json;
    EXPECT_EQ(varslot_cli({"stat", seg, "--json"}, &json), 0) << json;
    EXPECT_EQ(json.find("\"allocated\": 1"), std::string::npos) << json;
    EXPECT_EQ(json.find("\"allocated\": 2"), std::string::npos) << json;
    g_free(cout);
    g_free(cerr);
    g_strfreev(envp);
    g_free(self);
    remove_segment(seg);
}

bool full_segment_child()
{
    return getenv("VSTEST_GST_CHILD") != nullptr;
}
} // namespace

TEST(AllocatorFullSegment, FallsBackToSystemMemoryWhenTheWaitEnds)
{
    run_full_segment_child("FallsBack", "50");
}

// The wait is long (60 s) and the slot comes free while the allocation waits: no outcome
// depends on how soon a thread runs.
TEST(AllocatorFullSegment, TakesASlotFreedDuringTheWait)
{
    run_full_segment_child("TakesAFreedSlot", "60000");
}

TEST(AllocatorFullSegmentChild, FallsBack)
{
    if (!full_segment_child())
        GTEST_SKIP() << "runs in the child of AllocatorFullSegment.FallsBackToSystemMemoryWhenTheWaitEnds";
    AllowGstWarnings allow({"no free slot"});
    GstAllocator *alloc = registered_allocator();
    ASSERT_NE(alloc, nullptr);
    const gsize size = 64 * 1024;
    GstMemory *a = gst_allocator_alloc(alloc, size, nullptr);
    GstMemory *b = gst_allocator_alloc(alloc, size, nullptr);
    ASSERT_TRUE(is_varslot(a) && is_varslot(b)) << "the two 64K slots";
    GstMemory *c = gst_allocator_alloc(alloc, size, nullptr);
    ASSERT_NE(c, nullptr) << "a full segment still yields memory";
    EXPECT_FALSE(is_varslot(c)) << "from system memory";
    EXPECT_EQ(c->size, size);
    GstMapInfo map;
    ASSERT_TRUE(gst_memory_map(c, &map, GST_MAP_READWRITE));
    EXPECT_EQ(map.size, size);
    fill_pattern(map.data, map.size, 9);
    EXPECT_TRUE(has_pattern(map.data, map.size, 9));
    gst_memory_unmap(c, &map);

    // Larger than any slot: system memory too, without a slot.
    GstMemory *big = gst_allocator_alloc(alloc, 3 * size, nullptr);
    ASSERT_NE(big, nullptr);
    EXPECT_FALSE(is_varslot(big));
    EXPECT_EQ(big->size, 3 * size);
    gst_memory_unref(big);

    gst_memory_unref(c);
    gst_memory_unref(a);
    gst_memory_unref(b);
    // Both slots are back.
    GstMemory *e = gst_allocator_alloc(alloc, size, nullptr);
    GstMemory *f = gst_allocator_alloc(alloc, size, nullptr);
    EXPECT_TRUE(is_varslot(e) && is_varslot(f));
    gst_memory_unref(e);
    gst_memory_unref(f);
    gst_object_unref(alloc);
}

TEST(AllocatorFullSegmentChild, TakesAFreedSlot)
{
    if (!full_segment_child())
        GTEST_SKIP() << "runs in the child of AllocatorFullSegment.TakesASlotFreedDuringTheWait";
    GstAllocator *alloc = registered_allocator();
    ASSERT_NE(alloc, nullptr);
    const gsize size = 64 * 1024;
    GstMemory *a = gst_allocator_alloc(alloc, size, nullptr);
    GstMemory *b = gst_allocator_alloc(alloc, size, nullptr);
    ASSERT_TRUE(is_varslot(a) && is_varslot(b)) << "the two 64K slots";
    // The freer lets the allocation start (and find the pool full) before it frees a slot;
    // without a wait the allocation would have fallen back to system memory by then.
    struct Freer {
        GstMemory *mem;
        std::atomic<bool> allocating{false};
    } freer_arg{a};
    GThread *freer = g_thread_new("freer", [](gpointer p) -> gpointer {
        auto *f = static_cast<Freer *>(p);
        while (!f->allocating.load())
            g_usleep(100);
        g_usleep(20 * 1000);
        gst_memory_unref(f->mem);
        return nullptr;
    }, &freer_arg);
    freer_arg.allocating = true;
    GstMemory *d = gst_allocator_alloc(alloc, size, nullptr);
    g_thread_join(freer);
    ASSERT_NE(d, nullptr);
    EXPECT_TRUE(is_varslot(d)) << "the slot freed during the wait was not taken";
    gst_memory_unref(b);
    gst_memory_unref(d);
    gst_object_unref(alloc);
}

// ---------------------------------------------------------------------------------------
// varslotsink's ALLOCATION answer, through GstHarness

class SinkAllocation : public testing::Test {
protected:
    std::string seg = unique_segment("alloc"), sock = unique_socket("alloc");
    GstHarness *h = nullptr;
    GstElement *sink = nullptr;
    void SetUp() override
    {
        sink = gst_element_factory_make("varslotsink", nullptr);
        ASSERT_NE(sink, nullptr);
        g_object_set(sink, "socket-path", sock.c_str(), "segment", seg.c_str(), "wait-for-connection", FALSE,
                     NULL);
        h = gst_harness_new_with_element(sink, "sink", nullptr); // starts it
        gst_harness_set_src_caps_str(h, kI420);
    }
    void TearDown() override
    {
        if (h)
            gst_harness_teardown(h);
        if (sink)
            gst_object_unref(sink);
        EXPECT_FALSE(shm_exists(seg)) << "the sink's own segment is removed when it stops";
        EXPECT_NE(access(sock.c_str(), F_OK), 0) << "the socket file is removed when it stops";
        remove_segment(seg);
        unlink(sock.c_str());
    }
    GstQuery *query(const char *caps_str, gboolean need_pool)
    {
        GstCaps *caps = caps_str ? gst_caps_from_string(caps_str) : nullptr;
        GstQuery *q = gst_query_new_allocation(caps, need_pool);
        if (caps)
            gst_caps_unref(caps);
        EXPECT_TRUE(gst_pad_peer_query(h->srcpad, q));
        return q;
    }
};

TEST_F(SinkAllocation, OffersPoolAllocatorAndVideoMeta)
{
    GstQuery *q = query(kI420, TRUE);
    ASSERT_GE(gst_query_get_n_allocation_pools(q), 1u);
    GstBufferPool *pool = nullptr;
    guint size = 0, min = 0, max = 0;
    gst_query_parse_nth_allocation_pool(q, 0, &pool, &size, &min, &max);
    ASSERT_NE(pool, nullptr) << "a pool is offered";
    EXPECT_GE(size, kI420Size);
    EXPECT_TRUE(GST_IS_VIDEO_BUFFER_POOL(pool));
    EXPECT_STREQ(G_OBJECT_TYPE_NAME(pool), "GstVarslotBufferPool");

    ASSERT_GE(gst_query_get_n_allocation_params(q), 1u);
    GstAllocator *alloc = nullptr;
    GstAllocationParams params;
    gst_query_parse_nth_allocation_param(q, 0, &alloc, &params);
    ASSERT_NE(alloc, nullptr);
    EXPECT_STREQ(alloc->mem_type, "VarslotMemory");
    guint idx = 0;
    EXPECT_TRUE(gst_query_find_allocation_meta(q, GST_VIDEO_META_API_TYPE, &idx));

    // Configured with VIDEO_META, the pool yields slot buffers with GstVideoMeta.
    GstStructure *config = gst_buffer_pool_get_config(pool);
    GstCaps *caps = gst_caps_from_string(kI420);
    gst_buffer_pool_config_set_params(config, caps, size, min, max);
    gst_buffer_pool_config_add_option(config, GST_BUFFER_POOL_OPTION_VIDEO_META);
    ASSERT_TRUE(gst_buffer_pool_set_config(pool, config));
    ASSERT_TRUE(gst_buffer_pool_set_active(pool, TRUE));
    GstBuffer *buf = nullptr;
    ASSERT_EQ(gst_buffer_pool_acquire_buffer(pool, &buf, nullptr), GST_FLOW_OK);
    GstVideoMeta *vm = gst_buffer_get_video_meta(buf);
    ASSERT_NE(vm, nullptr);
    EXPECT_EQ(vm->format, GST_VIDEO_FORMAT_I420);
    EXPECT_EQ(vm->width, 64u);
    EXPECT_EQ(vm->height, 48u);
    EXPECT_EQ(vm->n_planes, 3u);
    ASSERT_EQ(gst_buffer_n_memory(buf), 1u);
    EXPECT_TRUE(is_varslot(gst_buffer_peek_memory(buf, 0)));
    // Mapping it as a video frame works with the meta.
    GstVideoInfo info;
    ASSERT_TRUE(gst_video_info_from_caps(&info, caps));
    GstVideoFrame frame;
    ASSERT_TRUE(gst_video_frame_map(&frame, &info, buf, GST_MAP_WRITE));
    memset(GST_VIDEO_FRAME_PLANE_DATA(&frame, 0), 0x10, 64);
    gst_video_frame_unmap(&frame);

    // Without a consumer (wait-for-connection=false) the sink drops it, counted.
    EXPECT_EQ(gst_harness_push(h, buf), GST_FLOW_OK);
    EXPECT_EQ(get_u64(sink, "dropped"), 1u);
    EXPECT_EQ(get_u64(sink, "buffers-sent"), 0u);

    gst_caps_unref(caps);
    gst_buffer_pool_set_active(pool, FALSE);
    gst_object_unref(pool);
    gst_object_unref(alloc);
    gst_query_unref(q);
}

TEST_F(SinkAllocation, AllocatorWithoutPoolWhenNotAsked)
{
    GstQuery *q = query(kI420, FALSE);
    ASSERT_GE(gst_query_get_n_allocation_params(q), 1u);
    GstAllocator *alloc = nullptr;
    gst_query_parse_nth_allocation_param(q, 0, &alloc, nullptr);
    ASSERT_NE(alloc, nullptr);
    EXPECT_STREQ(alloc->mem_type, "VarslotMemory");
    for (guint i = 0; i < gst_query_get_n_allocation_pools(q); i++) {
        GstBufferPool *pool = nullptr;
        gst_query_parse_nth_allocation_pool(q, i, &pool, nullptr, nullptr, nullptr);
        EXPECT_EQ(pool, nullptr) << "need_pool=FALSE: no pool object";
        if (pool)
            gst_object_unref(pool);
    }
    EXPECT_TRUE(gst_query_find_allocation_meta(q, GST_VIDEO_META_API_TYPE, nullptr));
    // The harness's own buffers come from that allocator.
    GstBuffer *buf = gst_harness_create_buffer(h, 1000);
    ASSERT_NE(buf, nullptr);
    EXPECT_TRUE(is_varslot(gst_buffer_peek_memory(buf, 0)));
    gst_buffer_unref(buf);
    gst_object_unref(alloc);
    gst_query_unref(q);
}

TEST_F(SinkAllocation, NonVideoCapsGetTheAllocatorOnly)
{
    GstQuery *q = query("application/x-test", TRUE);
    for (guint i = 0; i < gst_query_get_n_allocation_pools(q); i++) {
        GstBufferPool *pool = nullptr;
        gst_query_parse_nth_allocation_pool(q, i, &pool, nullptr, nullptr, nullptr);
        EXPECT_EQ(pool, nullptr) << "a video pool cannot take non-video caps";
        if (pool)
            gst_object_unref(pool);
    }
    ASSERT_GE(gst_query_get_n_allocation_params(q), 1u);
    GstAllocator *alloc = nullptr;
    gst_query_parse_nth_allocation_param(q, 0, &alloc, nullptr);
    ASSERT_NE(alloc, nullptr);
    EXPECT_STREQ(alloc->mem_type, "VarslotMemory");
    gst_object_unref(alloc);
    gst_query_unref(q);
}

// ---------------------------------------------------------------------------------------
// Round trips inside one process: appsrc ! varslotsink and varslotsrc ! appsink

class Link : public testing::Test {
protected:
    std::string seg = unique_segment("link"), sock = unique_socket("link");
    Pipeline *producer = nullptr;
    std::vector<Pipeline *> consumers;
    GstElement *appsrc = nullptr, *sink = nullptr;

    void TearDown() override
    {
        for (auto c : consumers)
            delete c;
        delete producer;
        remove_segment(seg);
        unlink(sock.c_str());
    }
    void start_producer(const char *caps_str = kI420, const std::string &sink_props = "")
    {
        producer = new Pipeline("appsrc name=src format=time ! varslotsink name=sink socket-path=" + sock +
                                " segment=" + seg + " " + sink_props);
        appsrc = (*producer)["src"];
        sink = (*producer)["sink"];
        GstCaps *caps = gst_caps_from_string(caps_str);
        gst_app_src_set_caps(GST_APP_SRC(appsrc), caps);
        gst_caps_unref(caps);
        ASSERT_NE(producer->play(), GST_STATE_CHANGE_FAILURE);
    }
    GstElement *start_consumer(const std::string &src_props = "")
    {
        auto c = new Pipeline("varslotsrc name=vsrc socket-path=" + sock + " " + src_props +
                              " ! appsink name=out sync=false");
        consumers.push_back(c);
        EXPECT_NE(c->play(), GST_STATE_CHANGE_FAILURE);
        return (*c)["out"];
    }
    GstElement *consumer_src(size_t i) { return (*consumers[i])["vsrc"]; }
    // A pool from the sink's ALLOCATION answer, configured with VIDEO_META and active.
    GstBufferPool *sink_pool(const char *caps_str = kI420)
    {
        GstPad *pad = gst_element_get_static_pad(appsrc, "src");
        GstCaps *caps = gst_caps_from_string(caps_str);
        GstQuery *q = gst_query_new_allocation(caps, TRUE);
        EXPECT_TRUE(gst_pad_peer_query(pad, q));
        GstBufferPool *pool = nullptr;
        guint size = 0, min = 0, max = 0;
        if (gst_query_get_n_allocation_pools(q) > 0)
            gst_query_parse_nth_allocation_pool(q, 0, &pool, &size, &min, &max);
        EXPECT_NE(pool, nullptr);
        if (pool) {
            GstStructure *config = gst_buffer_pool_get_config(pool);
            gst_buffer_pool_config_set_params(config, caps, size, min, max);
            gst_buffer_pool_config_add_option(config, GST_BUFFER_POOL_OPTION_VIDEO_META);
            EXPECT_TRUE(gst_buffer_pool_set_config(pool, config));
            EXPECT_TRUE(gst_buffer_pool_set_active(pool, TRUE));
        }
        gst_query_unref(q);
        gst_caps_unref(caps);
        gst_object_unref(pad);
        return pool;
    }
    GstAllocator *sink_allocator()
    {
        GstPad *pad = gst_element_get_static_pad(appsrc, "src");
        GstCaps *caps = gst_caps_from_string(kI420);
        GstQuery *q = gst_query_new_allocation(caps, FALSE);
        EXPECT_TRUE(gst_pad_peer_query(pad, q));
        GstAllocator *alloc = nullptr;
        if (gst_query_get_n_allocation_params(q) > 0)
            gst_query_parse_nth_allocation_param(q, 0, &alloc, nullptr);
        gst_query_unref(q);
        gst_caps_unref(caps);
        gst_object_unref(pad);
        return alloc;
    }
    void push(GstBuffer *buf) { ASSERT_EQ(gst_app_src_push_buffer(GST_APP_SRC(appsrc), buf), GST_FLOW_OK); }
    static GstSample *pull(GstElement *out, GstClockTime timeout = 10 * GST_SECOND)
    {
        return gst_app_sink_try_pull_sample(GST_APP_SINK(out), timeout);
    }
    void finish(const std::vector<GstElement *> &outs)
    {
        gst_app_src_end_of_stream(GST_APP_SRC(appsrc));
        for (auto out : outs) {
            GstSample *s = pull(out);
            EXPECT_EQ(s, nullptr) << "no buffer after the last one";
            if (s)
                gst_sample_unref(s);
            EXPECT_TRUE(gst_app_sink_is_eos(GST_APP_SINK(out))) << "EOS is forwarded";
        }
        producer->expect_no_error();
        for (auto c : consumers)
            c->expect_no_error();
    }
    // Stops everything; a clean shutdown leaves neither the segment nor the socket.
    void shut_down_and_check_nothing_left()
    {
        for (auto c : consumers)
            c->stop();
        producer->stop();
        // The last peer out removes the name. Seen once in some dozen loaded runs: the name
        // still there at this point (cause not found yet); it must at least go soon.
        for (int i = 0; i < 300 && shm_exists(seg); i++)
            g_usleep(10000);
        EXPECT_FALSE(shm_exists(seg)) << seg << " left in /dev/shm after a clean shutdown";
        EXPECT_NE(access(sock.c_str(), F_OK), 0) << sock << " left after a clean shutdown";
    }
};

GstBuffer *sample_buffer(GstSample *s) { return s ? gst_sample_get_buffer(s) : nullptr; }

TEST_F(Link, MetadataAndCapsRoundTrip)
{
    start_producer();
    GstElement *out = start_consumer();
    GstBufferPool *pool = sink_pool();
    ASSERT_NE(pool, nullptr);

    struct Meta {
        GstClockTime pts, dts, duration;
        guint64 offset, offset_end;
        guint flags;
    };
    const guint F = 0;
    std::vector<Meta> metas = {
        {0, 0, 33 * GST_MSECOND, 0, 1, F}, // warm-up: sources may add DISCONT or a DTS here
        {GST_SECOND, 900 * GST_MSECOND, 33333333, 7, 8, GST_BUFFER_FLAG_DELTA_UNIT | GST_BUFFER_FLAG_HEADER},
        {GST_CLOCK_TIME_NONE, GST_CLOCK_TIME_NONE, GST_CLOCK_TIME_NONE, GST_BUFFER_OFFSET_NONE,
         GST_BUFFER_OFFSET_NONE, F},
        {2 * GST_SECOND, GST_CLOCK_TIME_NONE, 1, 123456789012345ull, 123456789012346ull,
         GST_BUFFER_FLAG_DISCONT | GST_BUFFER_FLAG_GAP | GST_BUFFER_FLAG_MARKER | GST_BUFFER_FLAG_DROPPABLE |
             GST_BUFFER_FLAG_CORRUPTED},
        {3 * GST_SECOND + 1, 3 * GST_SECOND, 0, 3, 3,
         GST_BUFFER_FLAG_LIVE | GST_BUFFER_FLAG_DECODE_ONLY | GST_BUFFER_FLAG_RESYNC |
             GST_BUFFER_FLAG_SYNC_AFTER | GST_BUFFER_FLAG_NON_DROPPABLE | GST_BUFFER_FLAG_DELTA_UNIT},
        {4 * GST_SECOND, 4 * GST_SECOND, 40 * GST_MSECOND, 10, 20, GST_BUFFER_FLAG_DISCONT},
    };
    GstCaps *want_caps = gst_caps_from_string(kI420);
    for (size_t i = 0; i < metas.size(); i++) {
        SCOPED_TRACE(testing::Message() << "buffer " << i);
        const Meta &m = metas[i];
        GstBuffer *buf = nullptr;
        ASSERT_EQ(gst_buffer_pool_acquire_buffer(pool, &buf, nullptr), GST_FLOW_OK);
        GstMapInfo map;
        ASSERT_TRUE(gst_buffer_map(buf, &map, GST_MAP_WRITE));
        fill_pattern(map.data, map.size, (guint)i);
        gst_buffer_unmap(buf, &map);
        GST_BUFFER_PTS(buf) = m.pts;
        GST_BUFFER_DTS(buf) = m.dts;
        GST_BUFFER_DURATION(buf) = m.duration;
        GST_BUFFER_OFFSET(buf) = m.offset;
        GST_BUFFER_OFFSET_END(buf) = m.offset_end;
        GST_BUFFER_FLAGS(buf) = m.flags;
        push(buf);
        GstSample *s = pull(out);
        ASSERT_NE(s, nullptr) << "buffer arrives";
        GstBuffer *got = sample_buffer(s);
        GstCaps *caps = gst_sample_get_caps(s);
        ASSERT_NE(caps, nullptr);
        EXPECT_TRUE(gst_caps_is_equal(caps, want_caps)) << "caps " << gst_caps_to_string(caps);
        EXPECT_EQ(gst_buffer_get_size(got), kI420Size);
        ASSERT_TRUE(gst_buffer_map(got, &map, GST_MAP_READ));
        EXPECT_TRUE(has_pattern(map.data, map.size, (guint)i)) << "bytes intact";
        gst_buffer_unmap(got, &map);
        if (i > 0) {
            EXPECT_EQ(GST_BUFFER_PTS(got), m.pts);
            EXPECT_EQ(GST_BUFFER_DTS(got), m.dts);
            EXPECT_EQ(GST_BUFFER_DURATION(got), m.duration);
            EXPECT_EQ(GST_BUFFER_OFFSET(got), m.offset);
            EXPECT_EQ(GST_BUFFER_OFFSET_END(got), m.offset_end);
            EXPECT_EQ(GST_BUFFER_FLAGS(got), m.flags) << std::hex << "got 0x" << GST_BUFFER_FLAGS(got)
                                                      << " want 0x" << m.flags;
        } else {
            EXPECT_EQ(GST_BUFFER_PTS(got), m.pts);
            EXPECT_EQ(GST_BUFFER_FLAGS(got) & ~GST_BUFFER_FLAG_DISCONT, m.flags);
        }
        GstVideoMeta *vm = gst_buffer_get_video_meta(got);
        ASSERT_NE(vm, nullptr) << "the pool's GstVideoMeta arrives";
        EXPECT_EQ(vm->format, GST_VIDEO_FORMAT_I420);
        EXPECT_EQ(vm->width, 64u);
        EXPECT_EQ(vm->height, 48u);
        gst_sample_unref(s);
    }
    gst_caps_unref(want_caps);
    gst_buffer_pool_set_active(pool, FALSE);
    gst_object_unref(pool);
    finish({out});
    shut_down_and_check_nothing_left();
}

TEST_F(Link, VideoMetaWithCustomStridesAndOffsets)
{
    start_producer();
    GstElement *out = start_consumer();
    GstAllocator *alloc = sink_allocator();
    ASSERT_NE(alloc, nullptr);
    ASSERT_STREQ(alloc->mem_type, "VarslotMemory");

    // I420 64x48 with wider strides and a leading gap: nothing like the default layout.
    gsize offset[GST_VIDEO_MAX_PLANES] = {128, 128 + 96 * 48, 128 + 96 * 48 + 48 * 24};
    gint stride[GST_VIDEO_MAX_PLANES] = {96, 48, 48};
    const gsize total = 128 + 96 * 48 + 2 * 48 * 24 + 64;
    for (int round = 0; round < 2; round++) { // a slot buffer (handed over), a system one (copied)
        SCOPED_TRACE(round ? "system memory" : "slot memory");
        GstBuffer *buf = round ? gst_buffer_new_allocate(nullptr, total, nullptr)
                               : gst_buffer_new_allocate(alloc, total, nullptr);
        ASSERT_NE(buf, nullptr);
        EXPECT_EQ(is_varslot(gst_buffer_peek_memory(buf, 0)), round == 0);
        GstMapInfo map;
        ASSERT_TRUE(gst_buffer_map(buf, &map, GST_MAP_WRITE));
        fill_pattern(map.data, map.size, 40 + round);
        gst_buffer_unmap(buf, &map);
        GstVideoMeta *vm = gst_buffer_add_video_meta_full(
            buf, (GstVideoFrameFlags)(GST_VIDEO_FRAME_FLAG_INTERLACED | GST_VIDEO_FRAME_FLAG_TFF),
            GST_VIDEO_FORMAT_I420, 64, 48, 3, offset, stride);
        ASSERT_NE(vm, nullptr);
        GST_BUFFER_PTS(buf) = (round + 1) * GST_SECOND;
        push(buf);
        GstSample *s = pull(out);
        ASSERT_NE(s, nullptr);
        GstBuffer *got = sample_buffer(s);
        EXPECT_EQ(gst_buffer_get_size(got), total);
        ASSERT_TRUE(gst_buffer_map(got, &map, GST_MAP_READ));
        EXPECT_TRUE(has_pattern(map.data, map.size, 40 + round));
        gst_buffer_unmap(got, &map);
        GstVideoMeta *gm = gst_buffer_get_video_meta(got);
        EXPECT_NE(gm, nullptr) << "GstVideoMeta arrives";
        if (gm) {
            EXPECT_EQ(gm->flags, (GstVideoFrameFlags)(GST_VIDEO_FRAME_FLAG_INTERLACED | GST_VIDEO_FRAME_FLAG_TFF));
            EXPECT_EQ(gm->format, GST_VIDEO_FORMAT_I420);
            EXPECT_EQ(gm->width, 64u);
            EXPECT_EQ(gm->height, 48u);
            EXPECT_EQ(gm->n_planes, 3u);
            for (int p = 0; p < 3; p++) {
                EXPECT_EQ(gm->offset[p], offset[p]) << "plane " << p;
                EXPECT_EQ(gm->stride[p], stride[p]) << "plane " << p;
            }
            // The meta is usable: a frame map with it finds the planes where the producer put them.
            GstVideoInfo info;
            EXPECT_TRUE(gst_video_info_from_caps(&info, gst_sample_get_caps(s)));
            GstVideoFrame frame;
            if (gst_video_frame_map(&frame, &info, got, GST_MAP_READ)) {
                EXPECT_EQ(GST_VIDEO_FRAME_PLANE_STRIDE(&frame, 0), 96);
                EXPECT_EQ((const guint8 *)GST_VIDEO_FRAME_PLANE_DATA(&frame, 1), mapped_data(got) + offset[1]);
                gst_video_frame_unmap(&frame);
            } else {
                ADD_FAILURE() << "gst_video_frame_map with the received meta";
            }
        }
        gst_sample_unref(s);
    }
    EXPECT_EQ(get_u64(sink, "copied-buffers"), 1u);
    gst_object_unref(alloc);
    finish({out});
    shut_down_and_check_nothing_left();
}

TEST_F(Link, PoolBuffersAreHandedOverWithoutCopy)
{
    start_producer();
    GstElement *out = start_consumer();
    GstBufferPool *pool = sink_pool();
    ASSERT_NE(pool, nullptr);
    const int n = 12; // more than the pool's minimum: handed-over slots must not come back
    for (int i = 0; i < n; i++) {
        SCOPED_TRACE(testing::Message() << "buffer " << i);
        GstBuffer *buf = nullptr;
        ASSERT_EQ(gst_buffer_pool_acquire_buffer(pool, &buf, nullptr), GST_FLOW_OK);
        ASSERT_EQ(gst_buffer_n_memory(buf), 1u);
        ASSERT_TRUE(is_varslot(gst_buffer_peek_memory(buf, 0)));
        GstMapInfo map;
        ASSERT_TRUE(gst_buffer_map(buf, &map, GST_MAP_WRITE));
        fill_pattern(map.data, map.size, 100 + i);
        const guint8 *sent = map.data;
        gst_buffer_unmap(buf, &map);
        GST_BUFFER_PTS(buf) = i * 33 * GST_MSECOND;
        push(buf); // our only ref goes with it
        GstSample *s = pull(out);
        ASSERT_NE(s, nullptr);
        GstBuffer *got = sample_buffer(s);
        ASSERT_EQ(gst_buffer_n_memory(got), 1u);
        GstMemory *mem = gst_buffer_peek_memory(got, 0);
        EXPECT_TRUE(is_varslot(mem));
        EXPECT_TRUE(GST_MEMORY_IS_READONLY(mem)) << "received slots are read-only";
        ASSERT_TRUE(gst_buffer_map(got, &map, GST_MAP_READ));
        EXPECT_TRUE(has_pattern(map.data, map.size, 100 + i));
        // Producer and consumer are different peers with their own mappings of the segment:
        // a byte written through the producer's address shows at the consumer's. Same pages,
        // no copy.
        volatile guint8 *alias = const_cast<guint8 *>(sent);
        guint8 before = map.data[0];
        alias[0] = (guint8)~before;
        EXPECT_EQ(map.data[0], (guint8)~before) << "the consumer reads the producer's bytes in place";
        alias[0] = before;
        gst_buffer_unmap(got, &map);
        GstMapInfo mm;
        EXPECT_FALSE(gst_memory_map(mem, &mm, GST_MAP_WRITE)) << "and cannot write them";
        gst_sample_unref(s);
    }
    EXPECT_EQ(wait_u64(sink, "buffers-sent", n), (guint64)n);
    EXPECT_EQ(get_u64(sink, "copied-buffers"), 0u);
    EXPECT_EQ(get_u64(consumer_src(0), "buffers-received"), (guint64)n);
    EXPECT_EQ(get_u64(consumer_src(0), "buffers-refused"), 0u);
    gst_buffer_pool_set_active(pool, FALSE);
    gst_object_unref(pool);
    finish({out});
    shut_down_and_check_nothing_left();
}

TEST_F(Link, SystemMemoryIsCopiedOnce)
{
    start_producer();
    GstElement *out = start_consumer();
    GstBuffer *buf = gst_buffer_new_allocate(nullptr, kI420Size, nullptr);
    GstMapInfo map;
    ASSERT_TRUE(gst_buffer_map(buf, &map, GST_MAP_WRITE));
    fill_pattern(map.data, map.size, 7);
    const guint8 *sent = map.data;
    gst_buffer_unmap(buf, &map);
    GST_BUFFER_PTS(buf) = 5 * GST_SECOND;
    GST_BUFFER_OFFSET(buf) = 77;
    GST_BUFFER_FLAG_SET(buf, GST_BUFFER_FLAG_DELTA_UNIT);
    push(buf);
    GstSample *s = pull(out);
    ASSERT_NE(s, nullptr);
    GstBuffer *got = sample_buffer(s);
    EXPECT_TRUE(is_varslot(gst_buffer_peek_memory(got, 0)));
    ASSERT_TRUE(gst_buffer_map(got, &map, GST_MAP_READ));
    EXPECT_NE(map.data, sent);
    EXPECT_EQ(map.size, kI420Size);
    EXPECT_TRUE(has_pattern(map.data, map.size, 7));
    gst_buffer_unmap(got, &map);
    EXPECT_EQ(GST_BUFFER_PTS(got), 5 * GST_SECOND);
    EXPECT_EQ(GST_BUFFER_OFFSET(got), 77u);
    EXPECT_TRUE(GST_BUFFER_FLAG_IS_SET(got, GST_BUFFER_FLAG_DELTA_UNIT));
    gst_sample_unref(s);
    EXPECT_EQ(wait_u64(sink, "buffers-sent", 1), 1u);
    EXPECT_EQ(get_u64(sink, "copied-buffers"), 1u);

    // A multi-memory system buffer: copied once, into one slot, bytes in order.
    GstBuffer *multi = gst_buffer_new();
    for (int k = 0; k < 3; k++) {
        GstMemory *m = gst_allocator_alloc(nullptr, kI420Size / 3, nullptr);
        GstMapInfo mm;
        gst_memory_map(m, &mm, GST_MAP_WRITE);
        memset(mm.data, 'a' + k, mm.size);
        gst_memory_unmap(m, &mm);
        gst_buffer_append_memory(multi, m);
    }
    push(multi);
    s = pull(out);
    ASSERT_NE(s, nullptr);
    got = sample_buffer(s);
    ASSERT_TRUE(gst_buffer_map(got, &map, GST_MAP_READ));
    ASSERT_EQ(map.size, kI420Size);
    EXPECT_EQ(map.data[0], 'a');
    EXPECT_EQ(map.data[kI420Size / 3], 'b');
    EXPECT_EQ(map.data[kI420Size - 1], 'c');
    gst_buffer_unmap(got, &map);
    gst_sample_unref(s);
    EXPECT_EQ(get_u64(sink, "copied-buffers"), 2u);
    finish({out});
    shut_down_and_check_nothing_left();
}

TEST_F(Link, BufferStillReferencedByTheProducerIsCopied)
{
    start_producer();
    GstElement *out = start_consumer();
    GstBufferPool *pool = sink_pool();
    ASSERT_NE(pool, nullptr);
    GstBuffer *buf = nullptr;
    ASSERT_EQ(gst_buffer_pool_acquire_buffer(pool, &buf, nullptr), GST_FLOW_OK);
    GstMapInfo map;
    ASSERT_TRUE(gst_buffer_map(buf, &map, GST_MAP_WRITE));
    fill_pattern(map.data, map.size, 11);
    const guint8 *sent = map.data;
    gst_buffer_unmap(buf, &map);
    push(gst_buffer_ref(buf)); // we keep a ref: the slot cannot be given away
    GstSample *s = pull(out);
    ASSERT_NE(s, nullptr);
    ASSERT_TRUE(gst_buffer_map(sample_buffer(s), &map, GST_MAP_READ));
    EXPECT_TRUE(has_pattern(map.data, map.size, 11));
    // A write through the producer's buffer must not reach the consumer's: it got a copy.
    volatile guint8 *alias = const_cast<guint8 *>(sent);
    guint8 before = alias[0];
    alias[0] = (guint8)~before;
    EXPECT_EQ(map.data[0], before) << "a shared buffer must not be handed over";
    alias[0] = before;
    gst_buffer_unmap(sample_buffer(s), &map);
    gst_sample_unref(s);
    EXPECT_EQ(get_u64(sink, "copied-buffers"), 1u);
    // Ours is intact and still ours.
    ASSERT_TRUE(gst_buffer_map(buf, &map, GST_MAP_READ));
    EXPECT_EQ(map.data, sent);
    EXPECT_TRUE(has_pattern(map.data, map.size, 11));
    gst_buffer_unmap(buf, &map);
    gst_buffer_unref(buf);
    gst_buffer_pool_set_active(pool, FALSE);
    gst_object_unref(pool);
    finish({out});
    shut_down_and_check_nothing_left();
}

TEST_F(Link, FanOutToTwoConsumers)
{
    start_producer();
    GstElement *out_a = start_consumer();
    GstBufferPool *pool = sink_pool();
    ASSERT_NE(pool, nullptr);
    auto send = [&](guint seed) {
        GstBuffer *buf = nullptr;
        ASSERT_EQ(gst_buffer_pool_acquire_buffer(pool, &buf, nullptr), GST_FLOW_OK);
        GstMapInfo map;
        ASSERT_TRUE(gst_buffer_map(buf, &map, GST_MAP_WRITE));
        fill_pattern(map.data, map.size, seed);
        gst_buffer_unmap(buf, &map);
        GST_BUFFER_PTS(buf) = seed * GST_MSECOND;
        push(buf);
    };
    guint no_meta_a = 0, no_meta_b = 0; // buffers that arrived without their GstVideoMeta
    GstElement *out_b = nullptr;
    auto expect = [&](GstElement *out, guint seed) {
        GstSample *s = pull(out);
        ASSERT_NE(s, nullptr) << "buffer " << seed;
        GstBuffer *got = sample_buffer(s);
        EXPECT_EQ(GST_BUFFER_PTS(got), seed * GST_MSECOND);
        GstMapInfo map;
        ASSERT_TRUE(gst_buffer_map(got, &map, GST_MAP_READ));
        EXPECT_TRUE(has_pattern(map.data, map.size, seed)) << "buffer " << seed;
        gst_buffer_unmap(got, &map);
        EXPECT_TRUE(is_varslot(gst_buffer_peek_memory(got, 0)));
        if (!gst_buffer_get_video_meta(got))
            (out == out_a ? no_meta_a : no_meta_b)++;
        gst_sample_unref(s);
    };
    // A is connected and served first.
    send(1);
    expect(out_a, 1);
    // B joins: the sink greets it at its next buffer and serves it from the one after its
    // reply, so send probes until B has one; A gets every probe, B every probe from its first.
    out_b = start_consumer();
    guint seed = 2, last_sent = 1, first_b = 0;
    for (; seed < 200 && !first_b; seed++) {
        send(seed);
        expect(out_a, seed);
        last_sent = seed;
        if (GstSample *s = pull(out_b, 20 * GST_MSECOND)) {
            first_b = (guint)(GST_BUFFER_PTS(sample_buffer(s)) / GST_MSECOND);
            gst_sample_unref(s);
        }
    }
    ASSERT_NE(first_b, 0u) << "B never got a buffer";
    for (guint k = first_b + 1; k <= last_sent; k++)
        expect(out_b, k);
    const guint64 b_probes = last_sent - first_b + 1;
    // From now on both get every buffer.
    const guint n = 20;
    for (guint i = 0; i < n; i++, seed++) {
        send(seed);
        expect(out_a, seed);
        expect(out_b, seed);
    }
    EXPECT_EQ(no_meta_a, 0u) << "buffers without GstVideoMeta at the first consumer";
    EXPECT_EQ(no_meta_b, 0u) << "buffers without GstVideoMeta at the second consumer (fan-out copies)";
    EXPECT_EQ(wait_u64(sink, "fanout-copies", n + b_probes), n + b_probes);
    EXPECT_EQ(get_u64(sink, "copied-buffers"), 0u) << "the first consumer still gets the slots";
    EXPECT_EQ(get_u64(consumer_src(1), "buffers-received"), n + b_probes);
    guint clients = 0;
    g_object_get(sink, "clients", &clients, NULL);
    EXPECT_EQ(clients, 2u);
    gst_buffer_pool_set_active(pool, FALSE);
    gst_object_unref(pool);
    finish({out_a, out_b});
    shut_down_and_check_nothing_left();
}

TEST_F(Link, ConsumerLeavingDoesNotStopTheProducer)
{
    start_producer("video/x-raw,format=GRAY8,width=16,height=16,framerate=30/1", "wait-for-connection=false");
    GstElement *out = start_consumer();
    // Without waiting, the sink drops buffers until the consumer has answered its greeting.
    GstSample *s = nullptr;
    guint64 probes = 0;
    while (!s && probes < 100) {
        GstBuffer *buf = gst_buffer_new_allocate(nullptr, 256, nullptr);
        gst_buffer_memset(buf, 0, 1, 256);
        push(buf);
        probes++;
        s = pull(out, 50 * GST_MSECOND);
    }
    ASSERT_NE(s, nullptr);
    gst_sample_unref(s);
    consumers[0]->stop(); // the consumer goes away while the producer runs on
    GstBuffer *buf;
    for (int i = 0; i < 5; i++) {
        buf = gst_buffer_new_allocate(nullptr, 256, nullptr);
        gst_buffer_memset(buf, 0, 2, 256);
        push(buf);
    }
    gst_app_src_end_of_stream(GST_APP_SRC(appsrc));
    GstBus *bus = gst_element_get_bus(producer->p);
    GstMessage *m = gst_bus_timed_pop_filtered(bus, 10 * GST_SECOND,
                                               (GstMessageType)(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
    gst_object_unref(bus);
    ASSERT_NE(m, nullptr) << "the producer reaches EOS";
    EXPECT_EQ(GST_MESSAGE_TYPE(m), GST_MESSAGE_EOS) << (GST_MESSAGE_TYPE(m) == GST_MESSAGE_ERROR ? error_text(m) : "");
    gst_message_unref(m);
    guint64 sent = get_u64(sink, "buffers-sent");
    EXPECT_GE(sent, 1u);
    EXPECT_EQ(get_u64(sink, "dropped"), probes + 5 - sent) << "every buffer after the consumer left is dropped";
    shut_down_and_check_nothing_left();
}

TEST_F(Link, CapsChangeReachesTheConsumer)
{
    start_producer();
    GstElement *out = start_consumer();
    const char *caps2_str = "video/x-raw,format=GRAY8,width=32,height=24,framerate=15/1";
    struct Step {
        const char *caps;
        gsize size;
    } steps[] = {{kI420, kI420Size}, {caps2_str, 32 * 24}, {kI420, kI420Size}};
    for (const Step &step : steps) {
        SCOPED_TRACE(step.caps);
        GstCaps *caps = gst_caps_from_string(step.caps);
        gst_app_src_set_caps(GST_APP_SRC(appsrc), caps);
        GstBuffer *buf = gst_buffer_new_allocate(nullptr, step.size, nullptr);
        gst_buffer_memset(buf, 0, 0x33, step.size);
        push(buf);
        GstSample *s = pull(out);
        ASSERT_NE(s, nullptr);
        EXPECT_TRUE(gst_caps_is_equal(gst_sample_get_caps(s), caps))
            << "got " << gst_caps_to_string(gst_sample_get_caps(s));
        EXPECT_EQ(gst_buffer_get_size(sample_buffer(s)), step.size);
        gst_sample_unref(s);
        gst_caps_unref(caps);
    }
    finish({out});
    shut_down_and_check_nothing_left();
}

// Runs f on another thread; a state change that blocks for 10 s is a hang, and the process
// cannot go on from there.
template <typename F> void within_10s(const char *what, F f)
{
    struct Job {
        F f;
        std::atomic<bool> done{false};
    };
    auto *job = new Job{f};
    GThread *t = g_thread_new("state", [](gpointer p) -> gpointer {
        auto *j = static_cast<Job *>(p);
        j->f();
        j->done = true;
        return nullptr;
    }, job);
    gint64 t0 = g_get_monotonic_time();
    while (!job->done && g_get_monotonic_time() - t0 < 10 * G_USEC_PER_SEC)
        g_usleep(1000);
    if (!job->done) {
        ADD_FAILURE() << what << " did not return within 10 s";
        fprintf(stderr, "plugin_test: %s hangs; giving up\n", what);
        fflush(stderr);
        _exit(1);
    }
    g_thread_join(t);
    delete job;
}

TEST_F(Link, StopsPromptlyWhileBlocked)
{
    // A producer blocked in render, waiting for a consumer that never comes.
    start_producer();
    push(gst_buffer_new_allocate(nullptr, kI420Size, nullptr));
    g_usleep(200 * 1000);
    within_10s("stopping a varslotsink that waits for a consumer", [&] { producer->stop(); });

    // A consumer blocked waiting for a buffer from a producer that sends none.
    delete producer;
    producer = nullptr;
    start_producer();
    start_consumer();
    g_usleep(200 * 1000);
    within_10s("stopping a varslotsrc that waits for a buffer", [&] { consumers[0]->stop(); });
    producer->stop();

    // A consumer waiting for a producer that does not exist.
    std::string nowhere = unique_socket("nowhere");
    Pipeline p("varslotsrc wait-for-producer=true socket-path=" + nowhere + " ! fakesink");
    EXPECT_NE(p.play(), GST_STATE_CHANGE_FAILURE);
    g_usleep(300 * 1000);
    within_10s("stopping a varslotsrc that waits for a producer", [&] { p.stop(); });
}

// The consumer took the slot (its ack may still be unread by the sink) and still holds the
// buffer when the producer stops without EOS: the slot must stay the consumer's. Every slot
// of the segment is then taken and overwritten by a new producer on the same segment; the
// held bytes must not change, and freeing them later must not be a double free.
TEST_F(Link, StoppedProducerDoesNotFreeSlotsTheConsumerTook)
{
    start_producer();
    GstElement *out = start_consumer();
    GstBuffer *buf = gst_buffer_new_allocate(nullptr, kI420Size, nullptr);
    GstMapInfo map;
    ASSERT_TRUE(gst_buffer_map(buf, &map, GST_MAP_WRITE));
    fill_pattern(map.data, map.size, 21);
    gst_buffer_unmap(buf, &map);
    push(buf);
    GstSample *held = pull(out);
    ASSERT_NE(held, nullptr);
    {
        AllowGstWarnings allow({"error:"});
        producer->stop(); // no EOS
        GstMessage *m = consumers[0]->error(10 * GST_SECOND);
        if (m)
            gst_message_unref(m);
    }
    // A second producer on the same segment takes every free slot and scribbles on it.
    std::string sock2 = unique_socket("link2");
    {
        AllowGstWarnings allow({"no free slot"});
        Pipeline p2("appsrc name=src2 format=time ! varslotsink name=sink2 wait-for-connection=false socket-path=" +
                    sock2 + " segment=" + seg);
        GstElement *src2 = p2["src2"];
        GstCaps *caps = gst_caps_from_string(kI420);
        gst_app_src_set_caps(GST_APP_SRC(src2), caps);
        ASSERT_NE(p2.play(), GST_STATE_CHANGE_FAILURE);
        GstPad *pad = gst_element_get_static_pad(src2, "src");
        GstQuery *q = gst_query_new_allocation(caps, FALSE);
        ASSERT_TRUE(gst_pad_peer_query(pad, q));
        GstAllocator *alloc = nullptr;
        gst_query_parse_nth_allocation_param(q, 0, &alloc, nullptr);
        ASSERT_NE(alloc, nullptr);
        std::vector<GstMemory *> mems;
        for (int i = 0; i < 256; i++) {
            GstMemory *m = gst_allocator_alloc(alloc, kI420Size, nullptr);
            if (!is_varslot(m)) {
                gst_memory_unref(m);
                break; // the segment is full
            }
            GstMapInfo mm;
            gst_memory_map(m, &mm, GST_MAP_WRITE);
            memset(mm.data, 0, mm.size);
            gst_memory_unmap(m, &mm);
            mems.push_back(m);
        }
        EXPECT_GT(mems.size(), 0u);
        ASSERT_TRUE(gst_buffer_map(gst_sample_get_buffer(held), &map, GST_MAP_READ));
        EXPECT_TRUE(has_pattern(map.data, map.size, 21))
            << "the slot the consumer holds was handed out again and overwritten";
        gst_buffer_unmap(gst_sample_get_buffer(held), &map);
        for (auto m : mems)
            gst_memory_unref(m);
        gst_object_unref(alloc);
        gst_query_unref(q);
        gst_object_unref(pad);
        gst_caps_unref(caps);
    }
    gst_sample_unref(held); // no "double or stale free" warning may follow
    shut_down_and_check_nothing_left();
    unlink(sock2.c_str());
}

// A consumer that cannot take a buffer refuses it by its number; the sink must then free
// the slot it copied the buffer into (nobody took it), while it held it until then.
// The consumer here is made by hand on the wire, because varslotsrc refuses only when a
// transfer fails.
int allocated_slots(const std::string &seg)
{
    std::string out;
    if (varslot_cli({"stat", seg, "--json"}, &out) != 0)
        return -1;
    int n = 0;
    for (size_t at = 0; (at = out.find("\"allocated\":", at)) != std::string::npos; at++)
        n += atoi(out.c_str() + at + strlen("\"allocated\":"));
    return n;
}

vsg_header wire_header(vsg_type type, size_t length)
{
    vsg_header h = {};
    h.magic = VSG_MAGIC;
    h.type = (uint16_t)type;
    h.version = VSG_VERSION;
    h.length = (uint32_t)length;
    return h;
}

TEST_F(Link, RefusedBufferComesBackToTheProducer)
{
    start_producer();
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    struct sockaddr_un addr = {};
    addr.sun_family = AF_UNIX;
    strncpy(addr.sun_path, sock.c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&addr, sizeof addr), 0) << strerror(errno);
    struct timeval tv = {10, 0}; // no read may hang the suite
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    // System memory: the sink copies it into a slot. It greets us once it has a buffer.
    push(gst_buffer_new_allocate(nullptr, kI420Size, nullptr));
    vsg_message m;
    ASSERT_GT(recv(fd, &m, sizeof m, 0), 0);
    ASSERT_EQ(m.h.type, VSG_HELLO);
    vsg_hello_reply reply = {};
    reply.h = wire_header(VSG_HELLO_REPLY, sizeof reply);
    reply.peer = 63; // any peer id: the sink only needs one to count us as ready
    ASSERT_EQ(send(fd, &reply, sizeof reply, MSG_NOSIGNAL), (ssize_t)sizeof reply);

    do
        ASSERT_GT(recv(fd, &m, sizeof m, 0), 0) << "no buffer came";
    while (m.h.type != VSG_BUFFER);
    EXPECT_EQ(get_u64(sink, "copied-buffers"), 1u);
    EXPECT_EQ(allocated_slots(seg), 1) << "the sink holds the slot until we say something";

    vsg_ack ack = {};
    ack.h = wire_header(VSG_ACK, sizeof ack);
    ack.seq = m.buffer.seq;
    ack.taken = 0;
    ASSERT_EQ(send(fd, &ack, sizeof ack, MSG_NOSIGNAL), (ssize_t)sizeof ack);
    gst_app_src_end_of_stream(GST_APP_SRC(appsrc)); // at EOS the sink reads every client
    do
        ASSERT_GT(recv(fd, &m, sizeof m, 0), 0) << "no EOS came";
    while (m.h.type != VSG_EOS);
    for (int i = 0; i < 100 && allocated_slots(seg) != 0; i++)
        g_usleep(20000);
    EXPECT_EQ(allocated_slots(seg), 0) << "the refused slot was not freed";
    close(fd);
    producer->expect_no_error();
}

// ---------------------------------------------------------------------------------------
// Bad input and missing peers

class BadInput : public Link {};

TEST_F(BadInput, SinkWithoutSocketPathFailsToStart)
{
    AllowGstWarnings allow({"error:"});
    for (int variant = 0; variant < 2; variant++) {
        SCOPED_TRACE(variant ? "too long" : "unset");
        Pipeline p("fakesrc ! varslotsink name=sink");
        std::string longpath = "/tmp/" + std::string(200, 'x') + ".sock";
        g_object_set(p["sink"], "socket-path", variant ? longpath.c_str() : nullptr, NULL);
        EXPECT_EQ(gst_element_set_state(p.p, GST_STATE_PAUSED), GST_STATE_CHANGE_FAILURE);
        GstMessage *m = p.error(GST_SECOND);
        ASSERT_NE(m, nullptr) << "an error message says why";
        EXPECT_NE(error_text(m).find("socket-path"), std::string::npos) << error_text(m);
        gst_message_unref(m);
    }
}

TEST_F(BadInput, SrcWithoutSocketPathFailsToStart)
{
    AllowGstWarnings allow({"error:"});
    for (int variant = 0; variant < 2; variant++) {
        SCOPED_TRACE(variant ? "too long" : "unset");
        Pipeline p("varslotsrc name=src ! fakesink");
        std::string longpath = "/tmp/" + std::string(200, 'x') + ".sock";
        g_object_set(p["src"], "socket-path", variant ? longpath.c_str() : nullptr, NULL);
        EXPECT_EQ(gst_element_set_state(p.p, GST_STATE_PAUSED), GST_STATE_CHANGE_FAILURE);
        GstMessage *m = p.error(GST_SECOND);
        ASSERT_NE(m, nullptr) << "an error message says why";
        EXPECT_NE(error_text(m).find("socket-path"), std::string::npos) << error_text(m);
        gst_message_unref(m);
    }
}

TEST_F(BadInput, SocketPathOfARunningSinkIsRefused)
{
    start_producer();
    AllowGstWarnings allow({"error:"});
    Pipeline second("fakesrc ! varslotsink socket-path=" + sock + " segment=" + seg);
    EXPECT_EQ(gst_element_set_state(second.p, GST_STATE_PAUSED), GST_STATE_CHANGE_FAILURE);
    GstMessage *m = second.error(GST_SECOND);
    ASSERT_NE(m, nullptr);
    EXPECT_NE(error_text(m).find("in use"), std::string::npos) << error_text(m);
    gst_message_unref(m);
    second.stop();
    EXPECT_EQ(access(sock.c_str(), F_OK), 0) << "the running sink's socket is left alone";
}

TEST_F(BadInput, SrcWithNoSinkPostsAnError)
{
    AllowGstWarnings allow({"error:"});
    Pipeline p("varslotsrc socket-path=" + sock + " ! fakesink");
    EXPECT_EQ(p.play(), GST_STATE_CHANGE_FAILURE);
    GstMessage *m = p.error(GST_SECOND);
    ASSERT_NE(m, nullptr);
    EXPECT_NE(error_text(m).find("No varslotsink"), std::string::npos) << error_text(m);
    gst_message_unref(m);
}

TEST_F(BadInput, SrcWaitsForProducerWhenAsked)
{
    GstElement *out = start_consumer("wait-for-producer=true");
    GstSample *s = pull(out, 500 * GST_MSECOND);
    EXPECT_EQ(s, nullptr) << "nothing to receive yet";
    if (s)
        gst_sample_unref(s);
    consumers[0]->expect_no_error();
    start_producer();
    GstBuffer *buf = gst_buffer_new_allocate(nullptr, kI420Size, nullptr);
    gst_buffer_memset(buf, 0, 0x42, kI420Size);
    GST_BUFFER_PTS(buf) = 0;
    push(buf);
    s = pull(out);
    ASSERT_NE(s, nullptr) << "connected once the sink appeared";
    EXPECT_EQ(gst_buffer_memcmp(sample_buffer(s), 0, std::string(kI420Size, '\x42').data(), kI420Size), 0);
    gst_sample_unref(s);
    finish({out});
    shut_down_and_check_nothing_left();
}

TEST_F(BadInput, SrcReportsProducerGone)
{
    start_producer();
    GstElement *out = start_consumer();
    GstBuffer *buf = gst_buffer_new_allocate(nullptr, kI420Size, nullptr);
    push(buf);
    GstSample *s = pull(out);
    ASSERT_NE(s, nullptr);
    gst_sample_unref(s);
    // (the sink may not have read the consumer's ack yet: the slot-ownership consequences of
    // that are StoppedProducerDoesNotFreeSlotsTheConsumerTook's business, not this test's)
    AllowGstWarnings allow({"error:", "double or stale free"});
    producer->stop(); // without EOS: the consumer sees the connection close
    GstMessage *m = consumers[0]->error(10 * GST_SECOND);
    ASSERT_NE(m, nullptr) << "the consumer posts an error when the producer goes away";
    EXPECT_NE(error_text(m).find("went away"), std::string::npos) << error_text(m);
    gst_message_unref(m);
    shut_down_and_check_nothing_left();
}

TEST_F(BadInput, FramesLargerThanTheSegmentsSlots)
{
    std::string out;
    ASSERT_EQ(varslot_cli({"create", seg, "--classes", "64K:4"}, &out), 0) << out;
    AllowGstWarnings allow({"error:"});
    Pipeline p("videotestsrc num-buffers=3 ! video/x-raw,format=BGRx,width=640,height=480 ! varslotsink "
               "wait-for-connection=false socket-path=" + sock + " segment=" + seg);
    p.play();
    GstMessage *m = p.error(10 * GST_SECOND);
    ASSERT_NE(m, nullptr) << "1.2 MB frames cannot go into 64K slots: an error, not a crash";
    EXPECT_NE(error_text(m).find(seg), std::string::npos) << error_text(m);
    gst_message_unref(m);
    p.stop();
    EXPECT_TRUE(shm_exists(seg)) << "a segment made beforehand is left alone";
}


// ---------------------------------------------------------------------------------------
// Hostile producers: a hand-made varslotsink on the wire, against a real varslotsrc. It
// listens where the source connects and says what the test wants it to say.

struct FakeProducer {
    std::string path;
    int listen_fd = -1, fd = -1;
    explicit FakeProducer(const std::string &socket_path) : path(socket_path)
    {
        listen_fd = vsg_listen(path.c_str(), nullptr);
        EXPECT_GE(listen_fd, 0) << path;
    }
    ~FakeProducer()
    {
        if (fd >= 0)
            close(fd);
        if (listen_fd >= 0)
            close(listen_fd);
        unlink(path.c_str());
    }
    bool accept_consumer()
    {
        struct pollfd p = {listen_fd, POLLIN, 0};
        if (poll(&p, 1, 10000) != 1)
            return false;
        fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
        return fd >= 0;
    }
    bool send(const vsg_message &m, int passed = -1) { return vsg_send_with_fd(fd, &m, passed) == 1; }
    bool hello(const std::string &segment, uint8_t peer, int file_fd)
    {
        vsg_message m = {};
        vsg_init_header(&m.h, VSG_HELLO, sizeof m.hello);
        m.hello.peer = peer;
        g_strlcpy(m.hello.segment, segment.c_str(), sizeof m.hello.segment);
        return send(m, file_fd);
    }
    bool caps(const char *caps)
    {
        vsg_message m = {};
        vsg_init_header(&m.h, VSG_CAPS, sizeof(vsg_header) + strlen(caps) + 1);
        strcpy(m.caps.caps, caps);
        return send(m);
    }
    bool buffer(uint64_t seq, vs_slot_ref ref, uint32_t size, const vsg_video_meta *video = nullptr)
    {
        vsg_message m = {};
        vsg_init_header(&m.h, VSG_BUFFER, sizeof m.buffer);
        m.buffer.seq = seq;
        m.buffer.pts = m.buffer.dts = m.buffer.duration = GST_CLOCK_TIME_NONE;
        m.buffer.offset = m.buffer.offset_end = GST_BUFFER_OFFSET_NONE;
        m.buffer.n_memories = 1;
        m.buffer.memories[0] = {vs_slot_ref_pack(ref), 0, size};
        if (video)
            m.buffer.video = *video;
        return send(m);
    }
    // Waits for the consumer's answer to the greeting: it has checked us and joined.
    bool greeted()
    {
        struct pollfd p = {fd, POLLIN, 0};
        vsg_message m;
        const char *why;
        return poll(&p, 1, 10000) == 1 && vsg_recv(fd, &m, nullptr, &why) == 1 && m.h.type == VSG_HELLO_REPLY;
    }
    bool eos()
    {
        vsg_message m = {};
        vsg_init_header(&m.h, VSG_EOS, sizeof m.h);
        return send(m);
    }
};

int open_shm(const std::string &name) { return open(("/dev/shm" + name).c_str(), O_RDONLY | O_CLOEXEC); }

vs_segment_options one_class(uint32_t size, uint32_t count)
{
    static vs_class_config c;
    c = {size, count};
    vs_segment_options o = {};
    o.classes = &c;
    o.class_count = 1;
    return o;
}

// Another process with slots of its own in a segment (which it creates, or opens): it
// reports its peer id and slot handles, waits to be told, then exits 0 if it still owns
// every slot, bytes unchanged.
struct HonestProcess {
    pid_t pid = -1;
    uint8_t peer = 0;
    std::vector<vs_slot_ref> slots;
    int to_child = -1;
    explicit HonestProcess(const std::string &seg, bool create = true)
    {
        int up[2], down[2];
        if (pipe(up) || pipe(down))
            return;
        pid = fork();
        if (pid == 0) {
            alarm(60);
            close(up[0]);
            close(down[1]);
            vs_segment_options o = one_class(4096, 8);
            vs_segment s;
            uint8_t id;
            if ((create ? vs_segment_create(&s, seg.c_str(), &o) : vs_segment_open(&s, seg.c_str())) != VS_OK ||
                vs_segment_join(&s, &id) != VS_OK)
                _exit(2);
            vs_pool *pool = vs_segment_pool(&s);
            vs_slot_ref refs[4];
            for (auto &r : refs) {
                if (!vs_pool_allocate(pool, 4096, id, &r))
                    _exit(3);
                memset(vs_pool_slot_data(pool, &r), 0x5a, 4096);
            }
            if (write(up[1], &id, 1) != 1 || write(up[1], refs, sizeof refs) != (ssize_t)sizeof refs)
                _exit(4);
            char go;
            if (read(down[0], &go, 1) != 1)
                _exit(5);
            for (auto &r : refs) {
                vs_slot_info info;
                const uint8_t *d = static_cast<const uint8_t *>(vs_pool_slot_data(pool, &r));
                if (vs_pool_slot_info(pool, r.class_idx, r.slot_idx, &info) != VS_OK || info.owner != id ||
                    info.state != VS_SLOT_ALLOCATED || info.generation != r.generation)
                    _exit(10);
                for (int i = 0; i < 4096; i++)
                    if (d[i] != 0x5a)
                        _exit(11);
            }
            vs_segment_close(&s);
            _exit(0);
        }
        close(up[1]);
        close(down[0]);
        to_child = down[1];
        vs_slot_ref refs[4];
        if (read(up[0], &peer, 1) == 1 && read(up[0], refs, sizeof refs) == (ssize_t)sizeof refs)
            slots.assign(refs, refs + 4);
        close(up[0]);
    }
    // The child's verdict: 0 all its slots intact.
    int verdict()
    {
        char go = 'g';
        if (write(to_child, &go, 1) != 1)
            return -1;
        close(to_child);
        to_child = -1;
        int st;
        if (waitpid(pid, &st, 0) != pid)
            return -1;
        pid = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    ~HonestProcess() // a test that stopped early
    {
        if (to_child >= 0)
            close(to_child);
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
        }
    }
};

class HostileProducer : public Link {};

// The source believed the greeting's segment name and peer id: a fake producer that named
// another process's segment and peer id, then sent handles of that process's slots, had them
// transferred to the source (which later freed them). Now the source checks the peer id
// against the process at the other end of the socket, and the segment against the file the
// producer passed; either lie is an error, and the other process keeps its slots.
TEST_F(HostileProducer, AForgedGreetingNeverTakesAnotherProcesssSlots)
{
    for (int lie = 0; lie < 2; lie++) {
        SCOPED_TRACE(lie == 0 ? "it passes the segment's own file and claims the other process's peer id"
                              : "it claims its own peer id in the other process's segment, and passes another file");
        std::string victim = unique_segment(lie ? "victim-b" : "victim-a");
        std::string own = unique_segment(lie ? "own-b" : "own-a");
        HonestProcess honest(victim);
        ASSERT_EQ(honest.slots.size(), 4u) << "the honest process did not start";
        vs_segment mine;
        uint8_t my_id = 0;
        if (lie == 1) { // a real peer of the victim's segment, with a segment of its own too
            ASSERT_EQ(vs_segment_open(&mine, victim.c_str()), VS_OK);
            ASSERT_EQ(vs_segment_join(&mine, &my_id), VS_OK);
        }
        vs_segment other;
        vs_segment_options o = one_class(4096, 2);
        ASSERT_EQ(vs_segment_create(&other, own.c_str(), &o), VS_OK);
        {
            FakeProducer fake(sock);
            AllowGstWarnings allow({"error:", "cannot take buffer"});
            Pipeline p("varslotsrc name=src socket-path=" + sock + " ! fakesink name=out");
            ASSERT_NE(p.play(), GST_STATE_CHANGE_FAILURE);
            ASSERT_TRUE(fake.accept_consumer());
            int file = lie == 0 ? open_shm(victim) : other.fd;
            ASSERT_TRUE(fake.hello(victim, lie == 0 ? honest.peer : my_id, file));
            if (lie == 0)
                close(file);
            fake.caps("application/x-vstest");
            for (uint64_t i = 0; i < honest.slots.size(); i++)
                fake.buffer(i + 1, honest.slots[i], 4096);
            GstMessage *m = p.error(10 * GST_SECOND);
            ASSERT_NE(m, nullptr) << "the source took the lie without a word";
            EXPECT_NE(error_text(m).find(lie == 0 ? "not who it says" : "not the file"), std::string::npos)
                << error_text(m);
            gst_message_unref(m);
            EXPECT_EQ(get_u64(p["src"], "buffers-received"), 0u);
            p.stop();
        }
        EXPECT_EQ(honest.verdict(), 0) << "the honest process lost a slot (10) or its bytes changed (11)";
        if (lie == 1)
            vs_segment_close(&mine);
        vs_segment_close(&other);
        remove_segment(victim);
        remove_segment(own);
    }
}

// A producer checked at its greeting can give its peer id up (leave) and another process
// take it: handles "from" that peer id are then the other process's slots. The source checks
// before every buffer that the peer id is still the join it greeted.
TEST_F(HostileProducer, APeerIdGivenUpAndRetakenIsNotStolenFrom)
{
    std::string victim = unique_segment("retaken");
    vs_segment mine;
    vs_segment_options o = one_class(4096, 8);
    uint8_t my_id;
    ASSERT_EQ(vs_segment_create(&mine, victim.c_str(), &o), VS_OK);
    ASSERT_EQ(vs_segment_join(&mine, &my_id), VS_OK);
    {
        FakeProducer fake(sock);
        AllowGstWarnings allow({"cannot take buffer"});
        Pipeline p("varslotsrc name=src socket-path=" + sock + " ! fakesink");
        ASSERT_NE(p.play(), GST_STATE_CHANGE_FAILURE);
        ASSERT_TRUE(fake.accept_consumer());
        ASSERT_TRUE(fake.hello(victim, my_id, mine.fd)); // all true, so far
        ASSERT_TRUE(fake.caps("application/x-vstest"));
        ASSERT_TRUE(fake.greeted());
        ASSERT_EQ(vs_segment_leave(&mine), VS_OK); // the lowest free id: the next to join gets it
        HonestProcess honest(victim, false);
        ASSERT_EQ(honest.slots.size(), 4u) << "the honest process did not start";
        ASSERT_EQ(honest.peer, my_id) << "(the test needs the other process to take the same peer id)";
        for (uint64_t i = 0; i < honest.slots.size(); i++)
            ASSERT_TRUE(fake.buffer(i + 1, honest.slots[i], 4096));
        EXPECT_EQ(wait_u64(p["src"], "buffers-refused", 4), 4u);
        EXPECT_EQ(get_u64(p["src"], "buffers-received"), 0u);
        p.expect_no_error();
        p.stop();
        EXPECT_EQ(honest.verdict(), 0) << "the honest process lost a slot (10) or its bytes changed (11)";
    }
    vs_segment_close(&mine);
    remove_segment(victim);
}

// A buffer of two memories whose plane starts in the first and runs on into the second: the
// plane is mapped through the memory its first byte is in, so its rows after that memory
// were read from whatever follows it (another process's slot, or past the mapping: SIGSEGV
// in videoconvert). Refused now; so is a field of alternate-field interlacing, which was
// read as a whole frame (the field flags do not cross the wire).
TEST_F(HostileProducer, APlaneAcrossMemoriesAndAlternateFieldsAreRefused)
{
    const uint32_t kW = 64, kH = 48, kSize = kW * kH;
    std::string own = unique_segment("spans");
    vs_segment seg_;
    uint8_t id;
    vs_segment_options o = one_class(4096, 4);
    ASSERT_EQ(vs_segment_create(&seg_, own.c_str(), &o), VS_OK);
    ASSERT_EQ(vs_segment_join(&seg_, &id), VS_OK);
    vs_pool *pool = vs_segment_pool(&seg_);
    vs_slot_ref r[3];
    for (auto &x : r)
        ASSERT_TRUE(vs_pool_allocate(pool, 4096, id, &x));
    for (bool alternate : {false, true}) {
        SCOPED_TRACE(alternate ? "a field of alternate-field interlacing" : "a plane across two memories");
        FakeProducer fake(sock);
        AllowGstWarnings allow({"refusing buffer"});
        Pipeline p("varslotsrc name=src socket-path=" + sock + " ! videoconvert ! fakesink name=out sync=false");
        ASSERT_NE(p.play(), GST_STATE_CHANGE_FAILURE);
        ASSERT_TRUE(fake.accept_consumer());
        ASSERT_TRUE(fake.hello(own, id, seg_.fd));
        ASSERT_TRUE(fake.caps(alternate ? "video/x-raw(format:Interlaced),format=GRAY8,width=64,height=48,"
                                          "interlace-mode=alternate,framerate=30/1"
                                        : "video/x-raw,format=GRAY8,width=64,height=48,framerate=30/1"));
        vsg_message m = {};
        vsg_init_header(&m.h, VSG_BUFFER, sizeof m.buffer);
        m.buffer.seq = 1;
        m.buffer.pts = m.buffer.dts = m.buffer.duration = GST_CLOCK_TIME_NONE;
        m.buffer.offset = m.buffer.offset_end = GST_BUFFER_OFFSET_NONE;
        if (alternate) {
            m.buffer.n_memories = 1;
            m.buffer.memories[0] = {vs_slot_ref_pack(r[2]), 4096 - kSize / 2, kSize / 2}; // one field
        } else {
            m.buffer.n_memories = 2;
            m.buffer.memories[0] = {vs_slot_ref_pack(r[0]), 4096 - kW, kW}; // the slot's last row
            m.buffer.memories[1] = {vs_slot_ref_pack(r[1]), 0, kSize};      // the total is large enough
            m.buffer.video = {1, 0, GST_VIDEO_FORMAT_GRAY8, kW, kH, 1, {0}, {(int32_t)kW}};
        }
        ASSERT_TRUE(fake.send(m));
        ASSERT_TRUE(fake.eos());
        EXPECT_EQ(wait_u64(p["src"], "buffers-refused", 1), 1u);
        EXPECT_EQ(get_u64(p["src"], "buffers-received"), 0u);
        p.stop();
    }
    vs_segment_close(&seg_);
    remove_segment(own);
}

// The source opened the segment a producer named with vs_segment_open_or_create: a fake
// producer made it create a file wherever it liked. A consumer never creates now.
TEST_F(HostileProducer, AProducersWordNeverCreatesASegment)
{
    std::string nowhere = unique_segment("made-up");
    std::string own = unique_segment("own");
    vs_segment other;
    vs_segment_options o = one_class(4096, 2);
    ASSERT_EQ(vs_segment_create(&other, own.c_str(), &o), VS_OK);
    // Every name made in /dev/shm from now on (a create links or renames its file there).
    int watch = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    ASSERT_GE(watch, 0);
    ASSERT_GE(inotify_add_watch(watch, "/dev/shm", IN_CREATE | IN_MOVED_TO), 0);
    auto created = [&](const std::string &name) {
        alignas(inotify_event) char buf[16384];
        ssize_t n;
        bool seen = false;
        while ((n = read(watch, buf, sizeof buf)) > 0)
            for (char *at = buf; at < buf + n; at += sizeof(inotify_event) + ((inotify_event *)at)->len)
                seen |= ((inotify_event *)at)->len && name == std::string("/") + ((inotify_event *)at)->name;
        return seen;
    };
    {
        FakeProducer fake(sock);
        AllowGstWarnings allow({"error:"});
        Pipeline p("varslotsrc socket-path=" + sock + " ! fakesink");
        ASSERT_NE(p.play(), GST_STATE_CHANGE_FAILURE);
        ASSERT_TRUE(fake.accept_consumer());
        ASSERT_TRUE(fake.hello(nowhere, 1, other.fd));
        GstMessage *m = p.error(10 * GST_SECOND);
        ASSERT_NE(m, nullptr);
        EXPECT_NE(error_text(m).find(nowhere), std::string::npos) << error_text(m);
        gst_message_unref(m);
        p.stop();
    }
    EXPECT_FALSE(shm_exists(nowhere)) << "the source created a segment where the producer said";
    EXPECT_FALSE(created(nowhere)) << "the source created a segment where the producer said (and removed it)";
    close(watch);
    remove_segment(nowhere);
    vs_segment_close(&other);
    remove_segment(own);
}

// The source attached GstVideoMeta offsets and strides from the wire unchecked: GRAY8 64x48
// with a stride of 200,000,000 sent videoconvert reading far past the mapping (SIGSEGV).
// Each lie below is refused (counted, freed, never pushed); an honest buffer after them
// still goes through.
TEST_F(HostileProducer, ForgedVideoMetaIsRefusedAndNeverReachesDownstream)
{
    const uint32_t kW = 64, kH = 48, kSize = kW * kH;
    auto meta = [&](uint32_t format, uint32_t w, uint32_t h, uint32_t planes, uint64_t offset, int32_t stride) {
        vsg_video_meta v = {};
        v.present = 1;
        v.format = format;
        v.width = w;
        v.height = h;
        v.n_planes = planes;
        v.offset[0] = offset;
        v.stride[0] = stride;
        return v;
    };
    const uint32_t gray = GST_VIDEO_FORMAT_GRAY8;
    struct Lie {
        const char *what;
        vsg_video_meta v;
        uint32_t size;
    } lies[] = {
        {"a stride of 200,000,000", meta(gray, kW, kH, 1, 0, 200000000), kSize},
        {"a negative stride", meta(gray, kW, kH, 1, kSize - kW, -(int32_t)kW), kSize},
        {"a plane that starts past the end", meta(gray, kW, kH, 1, 1ull << 40, kW), kSize},
        {"a plane one byte too long", meta(gray, kW, kH, 1, 1, kW), kSize},
        {"a buffer one byte short of its plane", meta(gray, kW, kH, 1, 0, kW), kSize - 1},
        {"two planes for a one-plane format", meta(gray, kW, kH, 2, 0, kW), kSize},
        {"a format other than the caps'", meta(GST_VIDEO_FORMAT_RGBA, kW, kH, 1, 0, kW * 4), kSize},
        {"a frame larger than the caps' and than the buffer", meta(gray, kW * 2, kH, 1, 0, kW * 2), kSize},
        {"an unknown format", meta(9999, kW, kH, 1, 0, kW), kSize},
        {"no meta and fewer bytes than a frame", vsg_video_meta{}, kSize / 2},
    };
    const size_t n_lies = sizeof lies / sizeof lies[0];
    std::string own = unique_segment("meta");
    vs_segment seg_;
    uint8_t id;
    vs_segment_options o = one_class(4096, (uint32_t)n_lies + 2);
    ASSERT_EQ(vs_segment_create(&seg_, own.c_str(), &o), VS_OK);
    ASSERT_EQ(vs_segment_join(&seg_, &id), VS_OK);
    vs_pool *pool = vs_segment_pool(&seg_);
    std::vector<vs_slot_ref> refs(n_lies + 1);
    for (auto &r : refs) {
        ASSERT_TRUE(vs_pool_allocate(pool, 4096, id, &r));
        memset(vs_pool_slot_data(pool, &r), 0x80, 4096);
    }
    {
        FakeProducer fake(sock);
        AllowGstWarnings allow({"refusing buffer"});
        Pipeline p("varslotsrc name=src socket-path=" + sock +
                   " ! videoconvert ! video/x-raw,format=RGBA ! appsink name=out sync=false");
        ASSERT_NE(p.play(), GST_STATE_CHANGE_FAILURE);
        ASSERT_TRUE(fake.accept_consumer());
        ASSERT_TRUE(fake.hello(own, id, seg_.fd));
        ASSERT_TRUE(fake.caps("video/x-raw,format=GRAY8,width=64,height=48,framerate=30/1"));
        for (size_t i = 0; i < n_lies; i++)
            ASSERT_TRUE(fake.buffer(i + 1, refs[i], lies[i].size, &lies[i].v)) << lies[i].what;
        vsg_video_meta good = meta(gray, kW, kH, 1, 0, kW);
        ASSERT_TRUE(fake.buffer(n_lies + 1, refs[n_lies], kSize, &good));
        ASSERT_TRUE(fake.eos());
        GstSample *s = pull(p["out"]);
        ASSERT_NE(s, nullptr) << "the honest buffer after the lies did not come through";
        GstMapInfo map;
        ASSERT_TRUE(gst_buffer_map(gst_sample_get_buffer(s), &map, GST_MAP_READ));
        EXPECT_EQ(map.size, (gsize)kW * kH * 4);
        gst_buffer_unmap(gst_sample_get_buffer(s), &map);
        gst_sample_unref(s);
        s = pull(p["out"]);
        EXPECT_EQ(s, nullptr) << "more than the honest buffer reached downstream";
        if (s)
            gst_sample_unref(s);
        EXPECT_EQ(get_u64(p["src"], "buffers-refused"), n_lies);
        EXPECT_EQ(get_u64(p["src"], "buffers-received"), 1u);
        p.expect_no_error();
        p.stop();
    }
    for (size_t i = 0; i < n_lies; i++) {
        vs_slot_info info;
        ASSERT_EQ(vs_pool_slot_info(pool, refs[i].class_idx, refs[i].slot_idx, &info), VS_OK);
        EXPECT_EQ(info.state, (uint32_t)VS_SLOT_FREE) << "the refused buffer's slot was not freed: " << lies[i].what;
    }
    vs_segment_close(&seg_);
    remove_segment(own);
}


// ---------------------------------------------------------------------------------------
// Hostile and broken consumers: hand-made varslotsrc's on the wire, against a real sink.

struct FakeConsumer {
    int fd = -1;
    explicit FakeConsumer(const std::string &socket_path)
    {
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        struct sockaddr_un addr = {};
        addr.sun_family = AF_UNIX;
        strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
            close(fd);
            fd = -1;
        }
        struct timeval tv = {10, 0}; // no read may hang the suite
        if (fd >= 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    ~FakeConsumer() { leave(); }
    void read_timeout_ms(int ms)
    {
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    void leave()
    {
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    // One message (a descriptor that comes with it is closed); its type, or 0.
    int read_message(vsg_message &m)
    {
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(4 * sizeof(int))];
        } control;
        struct iovec iov = {&m, sizeof m};
        struct msghdr msg = {};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof control.buf;
        if (recvmsg(fd, &msg, MSG_CMSG_CLOEXEC) < (ssize_t)sizeof(vsg_header))
            return 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
            for (size_t i = 0; c->cmsg_type == SCM_RIGHTS && i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                int passed;
                memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof passed);
                close(passed);
            }
        return m.h.type;
    }
    // Reads the greeting and answers it: from now on the sink sends us buffers.
    bool join()
    {
        vsg_message m;
        if (fd < 0 || read_message(m) != VSG_HELLO)
            return false;
        vsg_hello_reply reply = {};
        reply.h = m.h; // the sink's own magic and version
        reply.h.type = VSG_HELLO_REPLY;
        reply.h.length = sizeof reply;
        reply.peer = 200; // any peer id: the sink only needs one to count us as ready
        return send(fd, &reply, sizeof reply, MSG_NOSIGNAL) == (ssize_t)sizeof reply;
    }
    // Reads until n buffer messages came (or nothing for 10 s); how many came.
    int read_buffers(int n)
    {
        int got = 0;
        vsg_message m;
        int type;
        while (got < n && (type = read_message(m)) != 0)
            got += type == VSG_BUFFER;
        return got;
    }
};

class HostileConsumer : public Link {
protected:
    GstElement *vsink = nullptr;
    // A stream that never ends, in GRAY8 64x48 frames from the sink's own pool.
    void start_stream(const std::string &sink_props)
    {
        producer = new Pipeline("videotestsrc ! video/x-raw,format=GRAY8,width=64,height=48,framerate=1000/1 ! "
                                "varslotsink name=sink socket-path=" + sock + " segment=" + seg + " " + sink_props);
        vsink = (*producer)["sink"];
        ASSERT_NE(producer->play(), GST_STATE_CHANGE_FAILURE);
    }
    // An honest consumer that keeps only its last few frames (older ones are freed).
    GstElement *honest_consumer(const std::string &between = "", const std::string &src_props = "")
    {
        auto c = new Pipeline("varslotsrc name=vsrc socket-path=" + sock + " " + src_props + " ! " + between +
                              " appsink name=out sync=false max-buffers=4 drop=true");
        consumers.push_back(c);
        EXPECT_NE(c->play(), GST_STATE_CHANGE_FAILURE);
        return (*c)["out"];
    }
    // n frames reach out, each within 10 s.
    static bool frames_arrive(GstElement *out, int n)
    {
        for (int i = 0; i < n; i++) {
            GstSample *s = pull(out);
            if (!s)
                return false;
            gst_sample_unref(s);
        }
        return true;
    }
};

// Buffers idle in the upstream pool hold slots that the sink's copies for its further
// consumers may be waiting for. Once an allocation found no slot, a buffer that comes back
// to the pool is freed instead of kept idle, so its slot serves the next allocation.
TEST_F(Link, WhileSlotsAreShortThePoolGivesBuffersBack)
{
    std::string out;
    ASSERT_EQ(varslot_cli({"create", seg, "--classes", "8K:4"}, &out), 0) << out;
    start_producer();
    GstBufferPool *pool = sink_pool();
    GstAllocator *alloc = sink_allocator();
    ASSERT_NE(pool, nullptr);
    ASSERT_NE(alloc, nullptr);
    std::vector<GstBuffer *> bufs(4);
    for (auto &b : bufs) {
        ASSERT_EQ(gst_buffer_pool_acquire_buffer(pool, &b, nullptr), GST_FLOW_OK);
        ASSERT_TRUE(is_varslot(gst_buffer_peek_memory(b, 0)));
    }
    for (auto b : bufs)
        gst_buffer_unref(b); // idle in the pool, every slot with them
    {
        AllowGstWarnings allow({"no free slot"});
        GstMemory *m = gst_allocator_alloc(alloc, kI420Size, nullptr);
        EXPECT_FALSE(is_varslot(m)) << "the pool's four idle buffers should hold every slot";
        gst_memory_unref(m);
    }
    GstBuffer *b = nullptr;
    ASSERT_EQ(gst_buffer_pool_acquire_buffer(pool, &b, nullptr), GST_FLOW_OK);
    gst_buffer_unref(b); // comes back while slots are short: freed, not kept
    GstMemory *m = gst_allocator_alloc(alloc, kI420Size, nullptr);
    EXPECT_TRUE(is_varslot(m)) << "the pool kept an idle buffer's slot while an allocation waited for one";
    gst_memory_unref(m);
    gst_buffer_pool_set_active(pool, FALSE);
    gst_object_unref(pool);
    gst_object_unref(alloc);
}

// A fan-out copy waited for a slot for ever, however long nothing freed one. Now it waits
// client-timeout, then that consumer skips the buffer (counted) and the stream goes on.
TEST_F(Link, AFanOutCopyWithNoSlotIsSkippedNotWaitedForForEver)
{
    std::string out;
    ASSERT_EQ(varslot_cli({"create", seg, "--classes", "8K:4"}, &out), 0) << out;
    start_producer(kI420, "client-timeout=300");
    auto consumer = [&] { // which keeps no buffer (an appsink keeps its preroll buffer)
        consumers.push_back(new Pipeline("varslotsrc name=vsrc socket-path=" + sock +
                                         " ! fakesink sync=false enable-last-sample=false"));
        EXPECT_NE(consumers.back()->play(), GST_STATE_CHANGE_FAILURE);
        return (*consumers.back())["vsrc"];
    };
    GstElement *src1 = consumer(), *src2 = consumer();
    auto received = [&] { return get_u64(src1, "buffers-received") + get_u64(src2, "buffers-received"); };
    // Until the sink has read both greetings' answers, a buffer reaches only one of them; a
    // fan-out copy says it saw both ready (and it reads answers only between buffers).
    for (int i = 0; i < 100 && get_u64(sink, "fanout-copies") == 0; i++) {
        push(gst_buffer_new_allocate(nullptr, kI420Size, nullptr));
        g_usleep(20000);
    }
    ASSERT_GT(get_u64(sink, "fanout-copies"), 0u) << "the sink never had both consumers ready";
    auto delivered = [&] { return get_u64(sink, "buffers-sent") + get_u64(sink, "fanout-copies"); };
    for (int i = 0; i < 500 && received() < delivered(); i++)
        g_usleep(10000); // what was sent has arrived (and its slots are free again)
    GstBufferPool *pool = sink_pool();
    ASSERT_NE(pool, nullptr);
    std::vector<GstBuffer *> held(4);
    for (auto &b : held) { // every slot
        ASSERT_EQ(gst_buffer_pool_acquire_buffer(pool, &b, nullptr), GST_FLOW_OK);
        ASSERT_TRUE(is_varslot(gst_buffer_peek_memory(b, 0))) << "a slot is still held";
    }
    guint64 before = received();
    AllowGstWarnings allow({"no free slot"});
    push(held.back()); // its own slot goes to one consumer; the other's copy finds none
    held.pop_back();
    EXPECT_EQ(wait_u64(sink, "buffers-skipped", 1), 1u) << "the copy still waits for a slot";
    for (auto b : held)
        gst_buffer_unref(b);
    push(gst_buffer_new_allocate(nullptr, kI420Size, nullptr)); // copied for both: slots are free now
    for (int i = 0; i < 500 && received() < before + 3; i++)
        g_usleep(10000);
    EXPECT_EQ(received(), before + 3) << "one consumer gets both buffers, the other only the second";
    gst_buffer_pool_set_active(pool, FALSE);
    gst_object_unref(pool);
}

// One client that connected, answered the greeting and then never read (or read and never
// took a buffer) wedged the sink for good: the slots it was sent stayed the sink's, the
// copies for an honest consumer that came later waited for a slot for ever. Now it is
// disconnected after client-timeout and its buffers taken back; the honest one is served.
TEST_F(HostileConsumer, AClientThatNeverTakesDoesNotStopTheOthers)
{
    for (bool reads : {false, true}) {
        SCOPED_TRACE(reads ? "it reads every message and takes nothing" : "it never reads");
        seg = unique_segment(reads ? "reader" : "idle");
        start_stream("client-timeout=300");
        AllowGstWarnings allow({"dropping a client"});
        FakeConsumer bad(sock);
        ASSERT_TRUE(bad.join());
        std::atomic<bool> stop{false};
        std::thread reader;
        if (reads)
            reader = std::thread([&] {
                while (!stop && bad.read_buffers(1) == 1) {
                }
            });
        GstElement *out = honest_consumer();
        EXPECT_TRUE(frames_arrive(out, 20)) << "the honest consumer got nothing";
        EXPECT_GE(wait_u64(vsink, "clients-dropped", 1), 1u);
        stop = true;
        if (reader.joinable()) {
            shutdown(bad.fd, SHUT_RDWR);
            reader.join();
        }
        bad.leave();
        EXPECT_TRUE(frames_arrive(out, 20)) << "the honest consumer stopped getting frames after the bad one left";
        for (auto c : consumers)
            delete c;
        consumers.clear();
        delete producer;
        producer = nullptr;
        remove_segment(seg);
    }
}

// At EOS the sink waits for every sent buffer to be taken; it waited on its sockets with no
// timeout, so a client that was sent a buffer and then said nothing held EOS for ever.
TEST_F(HostileConsumer, AStuckClientDoesNotHoldEosForEver)
{
    start_producer("application/x-vstest", "client-timeout=300");
    AllowGstWarnings allow({"dropping a client"});
    push(gst_buffer_new_allocate(nullptr, 1000, nullptr)); // render waits for a client
    FakeConsumer stuck(sock);
    ASSERT_TRUE(stuck.join());
    ASSERT_EQ(stuck.read_buffers(1), 1);
    gst_app_src_end_of_stream(GST_APP_SRC(appsrc));
    GstBus *bus = gst_element_get_bus(producer->p);
    GstMessage *m = gst_bus_timed_pop_filtered(bus, 10 * GST_SECOND, (GstMessageType)(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
    ASSERT_NE(m, nullptr) << "the sink is still in EOS: a stuck client holds it";
    EXPECT_EQ(GST_MESSAGE_TYPE(m), GST_MESSAGE_EOS);
    gst_message_unref(m);
    gst_object_unref(bus);
    EXPECT_EQ(get_u64(sink, "clients-dropped"), 1u);
}

// Clients that connect and never answer the greeting had nothing pending, so nothing timed
// them out: enough of them used up the sink's descriptors and new consumers were never
// greeted. Now each is dropped after client-timeout, and past max-clients a connection is
// closed as it comes.
TEST_F(HostileConsumer, SilentClientsAreDroppedAndCapped)
{
    start_stream("client-timeout=300 max-clients=8");
    AllowGstWarnings allow({"dropping a client"});
    std::vector<std::unique_ptr<FakeConsumer>> silent;
    for (int i = 0; i < 40; i++)
        silent.push_back(std::make_unique<FakeConsumer>(sock));
    guint clients = 0;
    for (int i = 0; i < 100 && clients == 0; i++) {
        g_object_get(vsink, "clients", &clients, NULL);
        g_usleep(10000);
    }
    EXPECT_LE(clients, 8u) << "more clients than max-clients are served";
    // Turned away while the silent ones fill the sink, it comes back until it gets in.
    AllowGstWarnings also({"went away"});
    GstElement *out = honest_consumer("", "wait-for-producer=true");
    EXPECT_TRUE(frames_arrive(out, 20)) << "a consumer that came after the silent ones got nothing";
    EXPECT_GE(get_u64(vsink, "clients-dropped"), 1u) << "no silent client was dropped";
}

// A consumer paused before its first buffer (a live varslotsrc in PAUSED runs no create(), so
// it answers no greeting) keeps its place however long it waits, as long as max-clients are
// not all taken: only a flood of silent connections evicts the silent ones.
TEST_F(HostileConsumer, AConsumerThatAnswersLateKeepsItsPlace)
{
    start_stream("client-timeout=300");
    FakeConsumer late(sock);
    vsg_message hello;
    ASSERT_EQ(late.read_message(hello), VSG_HELLO);
    g_usleep(900 * 1000); // three client-timeouts without an answer
    vsg_hello_reply reply = {};
    reply.h = hello.h;
    reply.h.type = VSG_HELLO_REPLY;
    reply.h.length = sizeof reply;
    reply.peer = 200;
    ASSERT_EQ(send(late.fd, &reply, sizeof reply, MSG_NOSIGNAL), (ssize_t)sizeof reply);
    EXPECT_EQ(late.read_buffers(3), 3) << "the sink dropped a consumer that answered late";
    EXPECT_EQ(get_u64(vsink, "clients-dropped"), 0u);
}

// Clients that read a few buffers and leave without taking them: each must be settled
// completely (its buffers back to the sink), or the slots run out after some hundreds.
TEST_F(HostileConsumer, ClientsThatComeAndGoLeakNothing)
{
    start_stream("client-timeout=300");
    int served = 0;
    for (int i = 0; i < 2000; i++) {
        FakeConsumer c(sock);
        ASSERT_TRUE(c.join()) << "client " << i << " was not greeted";
        served += c.read_buffers(3) == 3;
    }
    EXPECT_EQ(served, 2000) << "some clients got no buffers";
    GstElement *out = honest_consumer();
    EXPECT_TRUE(frames_arrive(out, 20)) << "an honest consumer gets nothing after 2000 that came and went";
    EXPECT_EQ(get_u64(vsink, "clients-dropped"), 0u) << "clients that left were dropped as if stuck";
    int allocated = allocated_slots(seg);
    EXPECT_GE(allocated, 0);
    EXPECT_LT(allocated, 32) << "slots are held for clients long gone";
}

// A consumer that takes its buffers slowly (here 40 ms each, with at most 4 pending and a
// 300 ms timeout: its oldest buffer waits up to 160 ms) is waited for, never dropped.
TEST_F(HostileConsumer, ASlowConsumerIsWaitedForNotDropped)
{
    start_stream("client-timeout=300 client-max-pending=4");
    GstElement *out = honest_consumer("identity sleep-time=40000 !");
    EXPECT_TRUE(frames_arrive(out, 12)) << "the slow consumer got nothing";
    EXPECT_EQ(get_u64(vsink, "clients-dropped"), 0u) << "a slow consumer was dropped";
}


// ---------------------------------------------------------------------------------------
// Protocol fuzz: seeded (VSTEST_SEED reproduces a run), bounded, against the real elements.
// Messages start valid and are then mutated: random bytes, lengths, types, counts, handles,
// offsets, strides, descriptors. Errors are the elements' right; a crash, a hang, a GLib
// critical or a stuck stream is not.

uint64_t fuzz_seed()
{
    const char *env = getenv("VSTEST_SEED");
    uint64_t seed = env ? strtoull(env, nullptr, 0) : (uint64_t)g_get_real_time();
    fprintf(stderr, "# fuzz seed %llu (VSTEST_SEED=%llu reproduces it)\n", (unsigned long long)seed,
            (unsigned long long)seed);
    return seed;
}

// Flips, sets or randomises a few bytes of a message, and sometimes its length.
size_t mutate(std::mt19937_64 &rng, vsg_message &m, size_t len)
{
    auto *bytes = reinterpret_cast<uint8_t *>(&m);
    int edits = 1 + (int)(rng() % 4);
    for (int e = 0; e < edits; e++) {
        size_t at = rng() % len;
        switch (rng() % 4) {
        case 0: bytes[at] ^= (uint8_t)(1u << (rng() % 8)); break;
        case 1: bytes[at] = (uint8_t)rng(); break;
        case 2: bytes[at] = rng() % 2 ? 0xff : 0; break;
        default: // a whole field-sized word
            if (at + 4 <= len) {
                uint32_t v = (uint32_t)rng();
                memcpy(bytes + at, &v, 4);
            }
        }
    }
    if (rng() % 8 == 0)
        len = 1 + rng() % sizeof m; // the header's length no longer matches the packet
    return len;
}

// Sends len bytes of m, with an unrelated descriptor now and then.
void send_raw(int fd, const vsg_message &m, size_t len, std::mt19937_64 &rng)
{
    int passed = rng() % 6 == 0 ? open("/dev/null", O_RDONLY | O_CLOEXEC) : -1;
    vsg_send_bytes(fd, &m, len, passed);
    if (passed >= 0)
        close(passed);
}

class Fuzz : public HostileConsumer {};

// Clients send the sink mutated greetings' answers and acks, and garbage; afterwards an
// honest consumer is served and the sink never posted an error.
TEST_F(Fuzz, TheSinkSurvivesMutatedClientMessages)
{
    std::mt19937_64 rng(fuzz_seed());
    start_stream("client-timeout=300");
    AllowGstWarnings allow({""}); // the plugin may say what it likes about bad clients
    for (int i = 0; i < 1500; i++) {
        FakeConsumer c(sock);
        ASSERT_GE(c.fd, 0) << "connection " << i;
        vsg_message hello;
        if (rng() % 4) { // else it talks before it is greeted
            c.read_timeout_ms(10000); // the greeting comes, however loaded the machine
            ASSERT_EQ(c.read_message(hello), VSG_HELLO) << "connection " << i << " was not greeted";
        }
        c.read_timeout_ms(20); // a client the sink does not count as ready gets no buffers
        int n = 1 + (int)(rng() % 6);
        for (int k = 0; k < n; k++) {
            vsg_message m = {};
            size_t len;
            switch (rng() % 3) {
            case 0:
                vsg_init_header(&m.h, VSG_HELLO_REPLY, sizeof m.hello_reply);
                m.hello_reply.peer = (uint8_t)rng();
                len = sizeof m.hello_reply;
                break;
            case 1:
                vsg_init_header(&m.h, VSG_ACK, sizeof m.ack);
                m.ack.seq = rng() % 2 ? rng() : rng() % 64;
                m.ack.taken = (uint32_t)(rng() % 3);
                len = sizeof m.ack;
                break;
            default:
                for (size_t b = 0; b < sizeof m; b++)
                    reinterpret_cast<uint8_t *>(&m)[b] = (uint8_t)rng();
                len = 1 + rng() % sizeof m;
            }
            if (rng() % 2)
                len = mutate(rng, m, len);
            send_raw(c.fd, m, len, rng);
            if (rng() % 3 == 0)
                c.read_buffers(1);
        }
    }
    GstElement *out = honest_consumer();
    EXPECT_TRUE(frames_arrive(out, 20)) << "an honest consumer is not served after the fuzzing";
    producer->expect_no_error();
}

// A producer that greets truthfully (a real peer of a real segment), then sends mutated caps,
// buffers and greetings: the source refuses or errors, never crashes or takes a slot that is
// not the producer's; a fresh source afterwards still works.
TEST_F(Fuzz, TheSourceSurvivesMutatedProducerMessages)
{
    std::mt19937_64 rng(fuzz_seed());
    std::string own = unique_segment("fuzzsrc");
    vs_segment mine;
    uint8_t id;
    vs_segment_options o = one_class(8192, 32);
    ASSERT_EQ(vs_segment_create(&mine, own.c_str(), &o), VS_OK);
    ASSERT_EQ(vs_segment_join(&mine, &id), VS_OK);
    vs_pool *pool = vs_segment_pool(&mine);
    AllowGstWarnings allow({""});
    const char *caps[] = {"video/x-raw,format=GRAY8,width=64,height=48,framerate=30/1",
                          "video/x-raw,format=I420,width=64,height=48,framerate=30/1", "application/x-vstest"};
    for (int round = 0; round < 150; round++) {
        FakeProducer fake(sock);
        Pipeline p("varslotsrc name=src socket-path=" + sock + " ! videoconvert ! fakesink sync=false");
        if (p.play() == GST_STATE_CHANGE_FAILURE || !fake.accept_consumer())
            FAIL() << "round " << round << ": the source did not connect";
        ASSERT_TRUE(fake.hello(own, id, mine.fd));
        vsg_message m = {};
        const char *c = caps[rng() % 3];
        vsg_init_header(&m.h, VSG_CAPS, sizeof(vsg_header) + strlen(c) + 1);
        strcpy(m.caps.caps, c);
        send_raw(fake.fd, m, rng() % 4 ? m.h.length : mutate(rng, m, m.h.length), rng);
        int n = 1 + (int)(rng() % 12);
        for (int k = 0; k < n; k++) {
            vs_slot_ref ref;
            if (!vs_pool_allocate(pool, 3072, id, &ref))
                break; // the source still holds them: fine
            memset(m.buffer.memories, 0, sizeof m.buffer.memories);
            vsg_init_header(&m.h, VSG_BUFFER, sizeof m.buffer);
            m.buffer.seq = (uint64_t)k + 1;
            m.buffer.pts = m.buffer.dts = m.buffer.duration = GST_CLOCK_TIME_NONE;
            m.buffer.offset = m.buffer.offset_end = GST_BUFFER_OFFSET_NONE;
            m.buffer.flags = 0;
            m.buffer.n_memories = 1;
            m.buffer.memories[0] = {vs_slot_ref_pack(ref), 0, 3072};
            memset(&m.buffer.video, 0, sizeof m.buffer.video);
            if (rng() % 2) {
                m.buffer.video.present = 1;
                m.buffer.video.format = GST_VIDEO_FORMAT_GRAY8;
                m.buffer.video.width = 64;
                m.buffer.video.height = 48;
                m.buffer.video.n_planes = 1;
                m.buffer.video.stride[0] = 64;
            }
            size_t len = rng() % 3 ? m.h.length : mutate(rng, m, m.h.length);
            send_raw(fake.fd, m, len, rng);
        }
        if (rng() % 2)
            fake.eos();
        g_usleep(2000 + rng() % 5000);
        p.stop(); // a source that errored, stopped at EOS, or is still waiting
        // Every slot the source took it freed again on stop; what it refused it freed too.
        // Ours are ours: free what we still own, so the next round has slots.
        for (uint32_t i = 0; i < 32; i++) {
            vs_slot_info info;
            if (vs_pool_slot_info(pool, 0, i, &info) == VS_OK && info.state == VS_SLOT_ALLOCATED &&
                info.owner == id) {
                vs_slot_ref r = {};
                r.slot_idx = i + 32 * info.lap;
                r.generation = info.generation;
                vs_pool_free_owned(pool, r, id);
            }
        }
    }
    // Nothing of ours was left with anybody else.
    for (uint32_t i = 0; i < 32; i++) {
        vs_slot_info info;
        ASSERT_EQ(vs_pool_slot_info(pool, 0, i, &info), VS_OK);
        EXPECT_NE(info.state, (uint32_t)VS_SLOT_ALLOCATED) << "slot " << i << " held by peer " << (int)info.owner;
    }
    vs_segment_close(&mine);
    remove_segment(own);
}

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
