// Bad settings and missing peers: each a clear error, nothing left behind.
#include "gst_test.h"

namespace {

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

} // namespace
