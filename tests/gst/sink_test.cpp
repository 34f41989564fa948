// varslotsink's ALLOCATION answer (gst-plugin/varslotsink.c), through GstHarness.
#include "gst_test.h"

namespace {

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


// Behind a tee (gst-plugin/tee_offer.c): the tee's answer to its upstream carries the sink's
// allocator first, even though the tee drops every branch's allocator and another branch (a
// fakesink, listed first: the tee stops asking there) answers nothing; also through a
// converter with nothing to convert (passthrough); but not through one that makes buffers of
// its own: slots taken upstream of it would never reach the sink.
class SinkBehindATee : public testing::Test {
protected:
    std::string seg = unique_segment("tee"), sock = unique_socket("tee");
    void TearDown() override
    {
        remove_segment(seg);
        unlink(sock.c_str());
    }
    // Stands for a branch element with an allocator of its own: answers with system memory's.
    static GstPadProbeReturn answer_with_sysmem(GstPad *, GstPadProbeInfo *info, gpointer)
    {
        GstQuery *q = GST_PAD_PROBE_INFO_QUERY(info);
        if (GST_QUERY_TYPE(q) != GST_QUERY_ALLOCATION)
            return GST_PAD_PROBE_OK;
        GstAllocator *sys = gst_allocator_find(GST_ALLOCATOR_SYSMEM);
        gst_query_add_allocation_param(q, sys, nullptr);
        gst_object_unref(sys);
        return GST_PAD_PROBE_HANDLED;
    }
    // The allocator first in the tee's answer with `branch` before the sink, or "" (none,
    // or the query failed). own_allocator: the name of a branch element whose src pad answers
    // for itself, with system memory's allocator.
    std::string upstream_allocator(const std::string &branch, const char *own_allocator = nullptr)
    {
        Pipeline p("appsrc name=src ! tee name=t t. ! queue ! fakesink t. ! " + branch +
                   " varslotsink socket-path=" + sock + " segment=" + seg + " wait-for-connection=false");
        if (own_allocator) {
            GstPad *src = gst_element_get_static_pad(p[own_allocator], "src");
            gst_pad_add_probe(src, GST_PAD_PROBE_TYPE_QUERY_DOWNSTREAM, answer_with_sysmem, nullptr, nullptr);
            gst_object_unref(src);
        }
        EXPECT_NE(gst_element_set_state(p.p, GST_STATE_PAUSED), GST_STATE_CHANGE_FAILURE);
        GstPad *pad = gst_element_get_static_pad(p["t"], "sink");
        GstCaps *caps = gst_caps_from_string(kI420);
        // Negotiated first, as upstream does before it asks: a converter then knows whether it
        // passes buffers through.
        GstSegment segment;
        gst_segment_init(&segment, GST_FORMAT_TIME);
        EXPECT_TRUE(gst_pad_send_event(pad, gst_event_new_stream_start("tee-test")));
        EXPECT_TRUE(gst_pad_send_event(pad, gst_event_new_caps(caps)));
        EXPECT_TRUE(gst_pad_send_event(pad, gst_event_new_segment(&segment)));
        GstQuery *q = gst_query_new_allocation(caps, TRUE);
        std::string type;
        if (gst_pad_query(pad, q) && gst_query_get_n_allocation_params(q) > 0) {
            GstAllocator *alloc = nullptr;
            gst_query_parse_nth_allocation_param(q, 0, &alloc, nullptr);
            if (alloc)
                type = alloc->mem_type;
            gst_clear_object(&alloc);
        }
        gst_query_unref(q);
        gst_caps_unref(caps);
        gst_object_unref(pad);
        return type;
    }
};

TEST_F(SinkBehindATee, ItsAllocatorIsOfferedAcrossTheTee)
{
    EXPECT_EQ(upstream_allocator("queue !"), "VarslotMemory");
    EXPECT_EQ(upstream_allocator("queue ! capsfilter ! queue !"), "VarslotMemory");
}

TEST_F(SinkBehindATee, AcrossAConverterOnlyWhenItPassesBuffersThrough)
{
    EXPECT_EQ(upstream_allocator("queue ! videoconvert !"), "VarslotMemory");
    EXPECT_EQ(upstream_allocator("queue ! videoconvert ! video/x-raw,format=BGRx !"), "");
}

TEST_F(SinkBehindATee, ABranchElementsOwnAllocatorIsNotOfferedPastTheTee)
{
    EXPECT_EQ(upstream_allocator("queue name=own !", "own"), "");
}

} // namespace
