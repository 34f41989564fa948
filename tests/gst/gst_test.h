// Shared by the plugin's unit tests (tests/gst/*_test.cpp, one program): the strictness
// every test runs under (main.cpp), helpers (helpers.cpp), pipelines, and the Link fixture
// (a producer pipeline and its consumers, inside this process).
//
// Environment (run-gst-tests.sh sets it; defaults are compiled in): GST_PLUGIN_PATH,
// GST_REGISTRY, VSTEST_VARSLOT_CLI (build/bin/varslot), VSTEST_GST_PREFIX. The process makes
// its own segments (/PREFIX-*) and sockets (/tmp/PREFIX-*.sock) and removes them; PREFIX is
// $VSTEST_GST_PREFIX, else vstest-gst-PID.
#ifndef VSTEST_GST_TEST_H
#define VSTEST_GST_TEST_H

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

// ---------------------------------------------------------------------------------------
// Strictness (main.cpp): any g_warning/g_critical fails the test that is running, and so does
// a GST_WARNING or GST_ERROR in the plugin's "varslot" debug category unless it is allowed.

extern std::mutex g_log_mutex;
extern std::vector<std::string> g_allowed; // substrings of varslot-category warnings a test expects

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

// ---------------------------------------------------------------------------------------
// Helpers (helpers.cpp)

std::string env_or(const char *var, const char *fallback);
// Runs build/bin/varslot; returns its exit status, output in *out.
int varslot_cli(const std::vector<std::string> &args, std::string *out = nullptr);
bool shm_exists(const std::string &name); // name: "/x"
void remove_segment(const std::string &name);
// Names start with $VSTEST_GST_PREFIX (the runner's, so it can clean up after a crash) or
// vstest-gst-PID.
std::string name_prefix();
std::string unique_segment(const char *what);
std::string unique_socket(const char *what);
bool is_varslot(GstMemory *mem);
GstAllocator *registered_allocator(); // a new ref
guint64 get_u64(GstElement *el, const char *prop);
// A counter the streaming thread bumps after the buffer is on its way: wait (up to 5 s) for
// it to reach want, then return what it is.
guint64 wait_u64(GstElement *el, const char *prop, guint64 want);
void fill_pattern(guint8 *p, gsize n, guint seed);
bool has_pattern(const guint8 *p, gsize n, guint seed);
const guint8 *mapped_data(GstBuffer *buf); // the address the buffer's (single) memory maps to
std::string error_text(GstMessage *msg);
// How many slots of segment seg are allocated (varslot stat), -1 if it cannot be told.
int allocated_slots(const std::string &seg);
// Shared with readers; allocated or shared: slots someone holds.
int shared_slots(const std::string &seg);
int held_slots(const std::string &seg);

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

constexpr const char *kI420 = "video/x-raw,format=I420,width=64,height=48,framerate=30/1";
constexpr gsize kI420Size = 64 * 48 * 3 / 2;

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
    // middle: elements between appsrc and varslotsink ("tee name=t ... t. ! queue !", say).
    void start_producer(const char *caps_str = kI420, const std::string &sink_props = "",
                        const std::string &middle = "")
    {
        producer = new Pipeline("appsrc name=src format=time ! " + middle + " varslotsink name=sink socket-path=" +
                                sock + " segment=" + seg + " " + sink_props);
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

inline GstBuffer *sample_buffer(GstSample *s) { return s ? gst_sample_get_buffer(s) : nullptr; }

#endif
