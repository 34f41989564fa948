// varslotsrc against hostile producers (gst-plugin/varslotsrc.c, and the checks of
// gst-plugin/wire.c): forged greetings, stolen peer ids, video meta outside the buffer; and
// the acks an honest producer waits for.
#include "gst_test.h"
#include "fake_peers.h"

namespace {

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

// The next ack from the source, or 0 if none came in 10 s (a hang guard, not a timing).
uint64_t next_ack(FakeProducer &fake)
{
    for (;;) {
        struct pollfd p = {fake.fd, POLLIN, 0};
        vsg_message m;
        const char *why;
        if (poll(&p, 1, 10000) != 1 || vsg_recv(fake.fd, &m, nullptr, &why) != 1)
            return 0;
        if (m.h.type == VSG_ACK)
            return m.ack.seq;
    }
}

class SourceAcks : public Link {};

// A sink with client-max-pending buffers out waits for the source's ack, since taking a slot
// makes no sound on the socket. The source acked every 32 buffers, or at an idle moment 5 ms
// after its last ack: buffers that came sooner after one were never acked until more came,
// and the sink slept a millisecond each time (64x64 GRAY8: 22,000 buffers/s). Now whenever
// the source runs out of buffers it acks what it took.
TEST_F(SourceAcks, TheSourceAcksWhatItTookWhenItRunsOutOfBuffers)
{
    std::string own = unique_segment("acks");
    vs_segment seg_;
    uint8_t id;
    vs_segment_options o = one_class(4096, 4);
    ASSERT_EQ(vs_segment_create(&seg_, own.c_str(), &o), VS_OK);
    ASSERT_EQ(vs_segment_join(&seg_, &id), VS_OK);
    vs_pool *pool = vs_segment_pool(&seg_);
    vs_slot_ref refs[3];
    for (auto &r : refs)
        ASSERT_TRUE(vs_pool_allocate(pool, 4096, id, &r));
    {
        FakeProducer fake(sock);
        Pipeline p("varslotsrc name=src socket-path=" + sock + " ! fakesink sync=false");
        ASSERT_NE(p.play(), GST_STATE_CHANGE_FAILURE);
        ASSERT_TRUE(fake.accept_consumer());
        ASSERT_TRUE(fake.hello(own, id, seg_.fd));
        ASSERT_TRUE(fake.greeted());
        ASSERT_TRUE(fake.caps("application/x-vstest"));
        ASSERT_TRUE(fake.buffer(1, refs[0], 4096));
        ASSERT_EQ(next_ack(fake), 1u) << "the first buffer was not acked";
        // At once after that ack: well inside the 5 ms the old code waited between acks.
        ASSERT_TRUE(fake.buffer(2, refs[1], 4096));
        ASSERT_TRUE(fake.buffer(3, refs[2], 4096));
        uint64_t seq = next_ack(fake);
        if (seq == 2u) // it ran out between the two: the next ack covers the third
            seq = next_ack(fake);
        EXPECT_EQ(seq, 3u) << "the source went idle without acking the buffers it took";
        EXPECT_EQ(get_u64(p["src"], "buffers-received"), 3u);
        p.expect_no_error();
        p.stop();
    }
    vs_segment_close(&seg_);
    remove_segment(own);
}

} // namespace
