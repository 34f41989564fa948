// varslotsink and varslotsrc linked inside one process (appsrc ! varslotsink,
// varslotsrc ! appsink): metadata, caps and video meta round trips, zero copy and copies,
// fan-out, the upstream pool while slots are short, stopping.
#include "gst_test.h"
#include "fake_peers.h"

namespace {

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

// A buffer the producer still holds (a tee's other branch, say) cannot be handed over: its
// slot is shared instead, with the consumer and with the producer, which may no longer write
// it. A write map of the producer's buffer now gets a copy; the consumer's bytes stay.
TEST_F(Link, ABufferTheProducerStillHoldsIsSharedAndItsWritesGoToACopy)
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
    GstBuffer *got = sample_buffer(s);
    // Zero copy: a byte changed in the slot behind the producer's back (through the pointer
    // it mapped before sending) is what the consumer reads.
    ASSERT_TRUE(gst_buffer_map(got, &map, GST_MAP_READ));
    volatile guint8 *alias = const_cast<guint8 *>(sent);
    guint8 before = alias[0];
    alias[0] = (guint8)~before;
    EXPECT_EQ(map.data[0], (guint8)~before) << "the consumer does not read the producer's slot";
    alias[0] = before;
    gst_buffer_unmap(got, &map);
    EXPECT_EQ(get_u64(sink, "copied-buffers"), 0u);
    EXPECT_EQ(wait_u64(sink, "buffers-shared", 1), 1u); // counted once the send returns
    // Writing: the producer's buffer gets a private copy, the slot keeps what was sent.
    buf = gst_buffer_make_writable(buf);
    ASSERT_TRUE(gst_buffer_map(buf, &map, GST_MAP_WRITE));
    EXPECT_NE(map.data, sent) << "a write map of a shared slot must not be the slot";
    EXPECT_TRUE(has_pattern(map.data, map.size, 11)) << "the copy holds the bytes";
    map.data[0] = (guint8)~map.data[0];
    gst_buffer_unmap(buf, &map);
    ASSERT_TRUE(gst_buffer_map(got, &map, GST_MAP_READ));
    EXPECT_TRUE(has_pattern(map.data, map.size, 11)) << "the consumer's bytes changed";
    gst_buffer_unmap(got, &map);
    gst_sample_unref(s);
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
    EXPECT_EQ(no_meta_b, 0u) << "buffers without GstVideoMeta at the second consumer";
    EXPECT_EQ(wait_u64(sink, "buffers-shared", n + b_probes), n + b_probes);
    EXPECT_EQ(get_u64(sink, "fanout-copies"), 0u) << "the second consumer got copies";
    EXPECT_EQ(get_u64(sink, "copied-buffers"), 0u);
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
    reply.peer = m.hello.peer; // a peer of this process (the sink's): the sink checks
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

// A copy (of a buffer outside the slots) waited for a slot for ever, however long nothing
// freed one. Now it waits client-timeout, then the buffer is skipped (counted) and the stream
// goes on. With two consumers the one copy is shared by both: no copy per consumer.
TEST_F(Link, ACopyWithNoSlotIsSkippedNotWaitedForForEver)
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
    // shared buffer says it saw both ready (and it reads answers only between buffers).
    guint64 pushed = 0;
    for (int i = 0; i < 100 && get_u64(sink, "buffers-shared") == 0; i++, pushed++) {
        push(gst_buffer_new_allocate(nullptr, kI420Size, nullptr));
        g_usleep(20000);
    }
    ASSERT_GT(get_u64(sink, "buffers-shared"), 0u) << "the sink never had both consumers ready";
    auto rendered = [&] { return get_u64(sink, "buffers-sent") + get_u64(sink, "dropped") + get_u64(sink, "buffers-skipped"); };
    for (int i = 0; i < 500 && rendered() < pushed; i++)
        g_usleep(10000); // every buffer pushed has been sent
    EXPECT_EQ(rendered(), pushed);
    for (int i = 0; i < 500 && held_slots(seg) != 0; i++)
        g_usleep(10000); // and every slot came back
    EXPECT_EQ(get_u64(sink, "fanout-copies"), 0u) << "a shared copy was copied again per consumer";
    GstBufferPool *pool = sink_pool();
    ASSERT_NE(pool, nullptr);
    std::vector<GstBuffer *> held(4);
    for (auto &b : held) { // every slot
        ASSERT_EQ(gst_buffer_pool_acquire_buffer(pool, &b, nullptr), GST_FLOW_OK);
        ASSERT_TRUE(is_varslot(gst_buffer_peek_memory(b, 0))) << "a slot is still held";
    }
    guint64 before = received();
    AllowGstWarnings allow({"no free slot"});
    push(gst_buffer_new_allocate(nullptr, kI420Size, nullptr)); // its copy finds no slot
    EXPECT_EQ(wait_u64(sink, "buffers-skipped", 1), 1u) << "the copy still waits for a slot";
    for (auto b : held)
        gst_buffer_unref(b);
    push(gst_buffer_new_allocate(nullptr, kI420Size, nullptr)); // copied once, shared by both
    for (int i = 0; i < 500 && received() < before + 2; i++)
        g_usleep(10000);
    EXPECT_EQ(received(), before + 2) << "both consumers get the second buffer, neither the first";
    EXPECT_EQ(get_u64(sink, "fanout-copies"), 0u);
    gst_buffer_pool_set_active(pool, FALSE);
    gst_object_unref(pool);
}


// Three consumers: every frame reaches all three in the one slot the producer wrote (no
// fan-out copy), intact, with its metadata; a byte changed in the producer's slot after the
// send is what all three read (zero copy), and nothing is left held once they are done.
TEST_F(Link, ThreeConsumersReadEveryFrameInTheProducersSlot)
{
    start_producer();
    std::vector<GstElement *> outs;
    for (int i = 0; i < 3; i++)
        outs.push_back(start_consumer());
    GstBufferPool *pool = sink_pool();
    ASSERT_NE(pool, nullptr);
    GstMapInfo map;
    auto send = [&](guint seed, guint8 **slot) {
        GstBuffer *buf = nullptr;
        ASSERT_EQ(gst_buffer_pool_acquire_buffer(pool, &buf, nullptr), GST_FLOW_OK);
        ASSERT_TRUE(gst_buffer_map(buf, &map, GST_MAP_WRITE));
        fill_pattern(map.data, map.size, seed);
        if (slot)
            *slot = map.data;
        gst_buffer_unmap(buf, &map);
        GST_BUFFER_PTS(buf) = seed * GST_MSECOND;
        push(buf);
    };
    // The sink serves a consumer from the buffer after it read its answer: probe until all
    // three have one, then drain what each got.
    guint seed = 1;
    std::vector<guint> first(3, 0);
    for (; seed < 200 && std::count(first.begin(), first.end(), 0u); seed++) {
        send(seed, nullptr);
        for (int i = 0; i < 3; i++)
            while (GstSample *s = pull(outs[i], first[i] ? 0 : 20 * GST_MSECOND)) {
                if (!first[i])
                    first[i] = seed;
                gst_sample_unref(s);
            }
    }
    ASSERT_EQ(std::count(first.begin(), first.end(), 0u), 0) << "some consumer never got a buffer";
    for (int i = 0; i < 3; i++) // what is still on its way to each
        while (GstSample *s = pull(outs[i], 300 * GST_MSECOND))
            gst_sample_unref(s);
    guint64 shared_before = wait_u64(sink, "buffers-shared", 1);
    const guint n = 10;
    for (guint k = 0; k < n; k++, seed++) {
        guint8 *slot = nullptr;
        send(seed, &slot);
        std::vector<GstSample *> got;
        for (int i = 0; i < 3; i++) {
            GstSample *s = pull(outs[i]);
            ASSERT_NE(s, nullptr) << "consumer " << i << " buffer " << seed;
            GstBuffer *b = sample_buffer(s);
            EXPECT_EQ(GST_BUFFER_PTS(b), seed * GST_MSECOND);
            EXPECT_NE(gst_buffer_get_video_meta(b), nullptr);
            ASSERT_TRUE(gst_buffer_map(b, &map, GST_MAP_READ));
            EXPECT_TRUE(has_pattern(map.data, map.size, seed)) << "consumer " << i;
            gst_buffer_unmap(b, &map);
            got.push_back(s);
        }
        // All three hold it now: a byte changed in the slot behind the producer's back is
        // what each of them reads.
        volatile guint8 *alias = slot;
        guint8 before = alias[7];
        alias[7] = (guint8)~before;
        for (int i = 0; i < 3; i++) {
            ASSERT_TRUE(gst_buffer_map(sample_buffer(got[i]), &map, GST_MAP_READ));
            EXPECT_EQ(map.data[7], (guint8)~before) << "consumer " << i << " reads a copy";
            gst_buffer_unmap(sample_buffer(got[i]), &map);
        }
        alias[7] = before;
        for (auto s : got)
            gst_sample_unref(s);
    }
    EXPECT_EQ(wait_u64(sink, "buffers-shared", shared_before + n), shared_before + n);
    EXPECT_EQ(get_u64(sink, "fanout-copies"), 0u);
    EXPECT_EQ(get_u64(sink, "copied-buffers"), 0u);
    gst_buffer_pool_set_active(pool, FALSE);
    gst_object_unref(pool);
    finish(outs);
    shut_down_and_check_nothing_left();
}

// A buffer that reaches the sink through a tee (another branch holds it too) cannot be handed
// over: it is shared, not copied. (Behind a tee the upstream gets no allocator from the
// ALLOCATION query, which tee answers with system memory: here the buffers come from the
// sink's allocator, as an application or a decoder given it would make them.)
TEST_F(Link, BuffersThroughATeeAreSharedNotCopied)
{
    start_producer(kI420, "", "tee name=t t. ! queue ! fakesink sync=false async=false t. ! queue !");
    GstElement *out = start_consumer();
    GstPad *pad = gst_element_get_static_pad(sink, "sink");
    GstCaps *caps = gst_caps_from_string(kI420);
    GstQuery *q = gst_query_new_allocation(caps, FALSE);
    ASSERT_TRUE(gst_pad_query(pad, q));
    GstAllocator *alloc = nullptr;
    ASSERT_GT(gst_query_get_n_allocation_params(q), 0u);
    gst_query_parse_nth_allocation_param(q, 0, &alloc, nullptr);
    gst_query_unref(q);
    gst_caps_unref(caps);
    gst_object_unref(pad);
    ASSERT_NE(alloc, nullptr);
    const guint n = 10;
    for (guint seed = 1; seed <= n; seed++) {
        GstBuffer *buf = gst_buffer_new_allocate(alloc, kI420Size, nullptr);
        ASSERT_TRUE(is_varslot(gst_buffer_peek_memory(buf, 0)));
        GstMapInfo map;
        ASSERT_TRUE(gst_buffer_map(buf, &map, GST_MAP_WRITE));
        fill_pattern(map.data, map.size, seed);
        gst_buffer_unmap(buf, &map);
        GST_BUFFER_PTS(buf) = seed * GST_MSECOND;
        push(buf);
        GstSample *s = pull(out);
        ASSERT_NE(s, nullptr) << "buffer " << seed;
        ASSERT_TRUE(gst_buffer_map(sample_buffer(s), &map, GST_MAP_READ));
        EXPECT_TRUE(has_pattern(map.data, map.size, seed));
        gst_buffer_unmap(sample_buffer(s), &map);
        gst_sample_unref(s);
    }
    EXPECT_EQ(get_u64(sink, "copied-buffers"), 0u) << "a buffer through a tee was copied";
    EXPECT_EQ(wait_u64(sink, "buffers-shared", n), n);
    gst_object_unref(alloc);
    finish({out});
    shut_down_and_check_nothing_left();
}

// A consumer that is sent shared buffers and never takes one (never reads its socket) is
// dropped after client-timeout, and the references it was given go back: shutting its
// socket for reading first means it cannot take one any more, so nothing it reads is
// released under it. Without that, its slots stayed shared until it left.
TEST_F(Link, AConsumerThatNeverTakesItsSharedBuffersHasThemTakenBack)
{
    start_producer(kI420, "client-timeout=300");
    AllowGstWarnings allow({"dropping a client"});
    consumers.push_back(new Pipeline("varslotsrc name=vsrc socket-path=" + sock +
                                     " ! fakesink sync=false enable-last-sample=false"));
    ASSERT_NE(consumers.back()->play(), GST_STATE_CHANGE_FAILURE);
    GstElement *honest = (*consumers.back())["vsrc"];
    GstBufferPool *pool = sink_pool();
    ASSERT_NE(pool, nullptr);
    FakeConsumer stuck(sock);
    std::thread greeted([&] { EXPECT_TRUE(stuck.join()); }); // the sink greets it between buffers
    // The stream goes on (the sink looks at its clients between buffers) until the stuck one,
    // sent shared buffers, is dropped.
    for (int i = 0; i < 300 && get_u64(sink, "clients-dropped") == 0; i++) {
        GstBuffer *buf = nullptr;
        ASSERT_EQ(gst_buffer_pool_acquire_buffer(pool, &buf, nullptr), GST_FLOW_OK);
        push(buf);
        g_usleep(10000);
    }
    greeted.join();
    EXPECT_GT(get_u64(sink, "buffers-shared"), 0u) << "the sink never served both";
    EXPECT_EQ(get_u64(sink, "clients-dropped"), 1u) << "the stuck consumer was not dropped";
    EXPECT_GT(get_u64(honest, "buffers-received"), 0u);
    gst_buffer_pool_set_active(pool, FALSE);
    gst_object_unref(pool);
    for (int i = 0; i < 300 && shared_slots(seg) != 0; i++)
        g_usleep(10000);
    EXPECT_EQ(shared_slots(seg), 0) << "slots shared with the dropped consumer stay held";
}

} // namespace
