// varslotsink's server (gst-plugin/server.c) against hostile and broken consumers: clients
// that never take, never answer, come and go, or are only slow.
#include "gst_test.h"
#include "fake_peers.h"

namespace {

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
    reply.peer = hello.hello.peer; // a peer of this process (the sink's): the sink checks
    ASSERT_EQ(send(late.fd, &reply, sizeof reply, MSG_NOSIGNAL), (ssize_t)sizeof reply);
    EXPECT_EQ(late.read_buffers(3), 3) << "the sink dropped a consumer that answered late";
    EXPECT_EQ(get_u64(vsink, "clients-dropped"), 0u);
}

// The sink shares slots with the peer id a consumer names in its answer: a consumer naming a
// peer id that is not its own process's (another consumer's, say) would pin slots for a
// reader that never hears of them. It is disconnected instead, and never sent a buffer.
TEST_F(HostileConsumer, AConsumerNamingAnotherPeerIdIsDisconnected)
{
    start_stream("client-timeout=300");
    FakeConsumer liar(sock);
    vsg_message hello;
    ASSERT_EQ(liar.read_message(hello), VSG_HELLO);
    vsg_hello_reply reply = {};
    reply.h = hello.h;
    reply.h.type = VSG_HELLO_REPLY;
    reply.h.length = sizeof reply;
    reply.peer = hello.hello.peer == 1 ? 2 : 1; // a peer id, but not this process's
    ASSERT_EQ(send(liar.fd, &reply, sizeof reply, MSG_NOSIGNAL), (ssize_t)sizeof reply);
    liar.read_timeout_ms(3000);
    EXPECT_EQ(liar.read_buffers(1), 0) << "the sink sent buffers to a consumer naming a peer not its own";
    GstElement *out = honest_consumer();
    EXPECT_TRUE(frames_arrive(out, 10)) << "the honest consumer got nothing";
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
    int held = held_slots(seg);
    EXPECT_GE(held, 0);
    EXPECT_LT(held, 32) << "slots are held for clients long gone";
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

} // namespace
