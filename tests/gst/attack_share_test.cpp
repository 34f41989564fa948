// Attacks on the sink's slot sharing, from a cold review of the first version (varslotsink
// shares, varslotsrc takes by acking): each proved a hole there. (1) A client that went away
// while the sink waited on another had its references left in the share for good: the sink
// now releases them as the peer it shared with, recorded at the share. (2) A consumer whose
// producer stopped released the references of the shared buffers it had not read, which the
// producer had released already: with two sources of one process (one peer id), the second
// release dropped the other source's reference and the slot was reused under it. A consumer
// now never releases what it did not ack.
#include "gst_test.h"
#include "fake_peers.h"

namespace {

uint8_t join_get_peer(FakeConsumer &c)
{
    vsg_message m;
    if (c.fd < 0 || c.read_message(m) != VSG_HELLO)
        return 0;
    vsg_hello_reply reply = {};
    reply.h = m.h;
    reply.h.type = VSG_HELLO_REPLY;
    reply.h.length = sizeof reply;
    reply.peer = m.hello.peer;
    if (send(c.fd, &reply, sizeof reply, MSG_NOSIGNAL) != (ssize_t)sizeof reply)
        return 0;
    return m.hello.peer;
}

bool send_ack(FakeConsumer &c, uint64_t seq, bool taken)
{
    vsg_ack ack = {};
    vsg_init_header(&ack.h, VSG_ACK, sizeof ack);
    ack.seq = seq;
    ack.taken = taken;
    return send(c.fd, &ack, sizeof ack, MSG_NOSIGNAL) == (ssize_t)sizeof ack;
}

// Reads buffers for up to ms; acks each and releases our references to a shared one.
int take_and_release(FakeConsumer &c, const vs_pool *pool, uint8_t peer, int ms)
{
    c.read_timeout_ms(ms);
    int got = 0;
    vsg_message m;
    int type;
    while ((type = c.read_message(m)) != 0) {
        if (type != VSG_BUFFER)
            continue;
        got++;
        EXPECT_TRUE(send_ack(c, m.buffer.seq, true));
        if (m.buffer.shared) {
            for (uint32_t i = 0; i < m.buffer.n_memories; i++) {
                EXPECT_EQ(vs_pool_release(pool, vs_slot_ref_unpack(m.buffer.memories[i].handle), peer), VS_OK);
            }
        }
    }
    return got;
}

TEST_F(Link, AttackClientGoneDuringAnotherClientsSendLeaksItsReference)
{
    start_producer(kI420, "client-max-pending=1 client-timeout=20000");
    GstAllocator *alloc = sink_allocator();
    ASSERT_NE(alloc, nullptr);
    FakeConsumer x(sock), y(sock); // x connects first: first in the sink's target list
    uint8_t px = 0, py = 0;
    std::thread tx([&] { px = join_get_peer(x); });
    std::thread ty([&] { py = join_get_peer(y); });
    auto push_new = [&] { push(gst_buffer_new_allocate(alloc, kI420Size, nullptr)); };
    push_new();
    tx.join();
    ty.join();
    ASSERT_NE(px, 0);
    ASSERT_EQ(px, py);
    vs_segment mine;
    ASSERT_EQ(vs_segment_open(&mine, seg.c_str()), VS_OK);
    const vs_pool *pool = vs_segment_pool(&mine);
    for (int i = 0; i < 50 && get_u64(sink, "buffers-shared") == 0; i++) {
        take_and_release(x, pool, px, 50);
        take_and_release(y, pool, py, 50);
        push_new();
    }
    ASSERT_GT(get_u64(sink, "buffers-shared"), 0u);
    take_and_release(x, pool, px, 200);
    take_and_release(y, pool, py, 200);
    for (int i = 0; i < 200 && shared_slots(seg) != 0; i++)
        g_usleep(10000);
    ASSERT_EQ(shared_slots(seg), 0) << "the warm-up left slots shared";
    guint64 shared0 = get_u64(sink, "buffers-shared");
    push_new(); // b2 reaches both; x does not take it (pending 1 = client-max-pending)
    ASSERT_EQ(wait_u64(sink, "buffers-shared", shared0 + 1), shared0 + 1);
    push_new(); // b3 is shared with x and y, then the sink waits for room at x
    g_usleep(100000);
    ASSERT_EQ(take_and_release(y, pool, py, 200), 1) << "y gets b2 only";
    y.leave(); // y goes while the sink waits for x
    g_usleep(200000);
    ASSERT_EQ(take_and_release(x, pool, px, 300), 2) << "x gets b2 and b3";
    ASSERT_EQ(wait_u64(sink, "buffers-shared", shared0 + 2), shared0 + 2);
    for (int i = 0; i < 200 && shared_slots(seg) != 0; i++)
        g_usleep(10000);
    EXPECT_EQ(shared_slots(seg), 0) << "the reference of a client gone before its turn stays in the share";
    vs_segment_close(&mine);
    gst_object_unref(alloc);
}

TEST_F(Link, AttackStoppedProducerUnreadSharedBuffersAreReleasedTwice)
{
    start_producer(kI420);
    GstAllocator *alloc = sink_allocator();
    ASSERT_NE(alloc, nullptr);
    auto consumer = [&](const char *sink_props) {
        auto c = new Pipeline("varslotsrc name=vsrc socket-path=" + sock + " ! appsink name=out sync=false " +
                              sink_props);
        consumers.push_back(c);
        EXPECT_NE(c->play(), GST_STATE_CHANGE_FAILURE);
        return (*c)["out"];
    };
    GstElement *out_a = consumer("max-buffers=1"); // its streaming thread blocks once one waits
    GstElement *out_b = consumer("");
    auto push_new = [&](guint seed) {
        GstBuffer *b = gst_buffer_new_allocate(alloc, kI420Size, nullptr);
        GstMapInfo map;
        gst_buffer_map(b, &map, GST_MAP_WRITE);
        fill_pattern(map.data, map.size, seed);
        gst_buffer_unmap(b, &map);
        push(b);
    };
    guint seed = 1;
    for (; seed < 200 && get_u64(sink, "buffers-shared") < 2; seed++) {
        push_new(seed);
        g_usleep(20000);
        while (GstSample *s = pull(out_a, 20 * GST_MSECOND))
            gst_sample_unref(s);
        while (GstSample *s = pull(out_b, 20 * GST_MSECOND))
            gst_sample_unref(s);
    }
    ASSERT_GE(get_u64(sink, "buffers-shared"), 2u);
    while (GstSample *s = pull(out_a, 200 * GST_MSECOND))
        gst_sample_unref(s);
    while (GstSample *s = pull(out_b, 200 * GST_MSECOND))
        gst_sample_unref(s);
    guint64 shared0 = get_u64(sink, "buffers-shared");
    for (int k = 0; k < 3; k++) // b1 in a's appsink, b2 in a's blocked push, b3 unread at a
        push_new(1000 + k);
    ASSERT_EQ(wait_u64(sink, "buffers-shared", shared0 + 3), shared0 + 3);
    GstSample *b1 = pull(out_b), *b2 = pull(out_b), *b3 = pull(out_b);
    ASSERT_NE(b3, nullptr);
    gst_sample_unref(b1);
    gst_sample_unref(b2);
    GstBuffer *held = sample_buffer(b3);
    GstMapInfo map;
    ASSERT_TRUE(gst_buffer_map(held, &map, GST_MAP_READ));
    EXPECT_TRUE(has_pattern(map.data, map.size, 1002));
    gst_object_unref(alloc);
    AllowGstWarnings gone({"connection closed", "went away"});
    producer->stop(); // it releases a's references to what a never took, and leaves
    AllowGstWarnings allow({"shared slot"});
    consumers[0]->stop(); // a must not release them again
    EXPECT_EQ(shared_slots(seg), 1) << "b's reference to b3 was released by a";
    vs_segment other;
    ASSERT_EQ(vs_segment_open(&other, seg.c_str()), VS_OK);
    uint8_t me = 0;
    ASSERT_EQ(vs_segment_join(&other, &me), VS_OK);
    std::vector<vs_slot_ref> mine;
    vs_slot_ref r;
    while (vs_pool_allocate(vs_segment_pool(&other), (uint32_t)kI420Size, me, &r)) {
        memset(vs_pool_slot_data(vs_segment_pool(&other), &r), 0xEE, kI420Size);
        mine.push_back(r);
    }
    EXPECT_TRUE(has_pattern(map.data, map.size, 1002)) << "b's buffer bytes changed under it";
    for (auto &s : mine)
        vs_pool_free(vs_segment_pool(&other), s);
    vs_segment_close(&other);
    gst_buffer_unmap(held, &map);
    gst_sample_unref(b3);
}

} // namespace
