// The wire (gst-plugin/protocol.c, gst-plugin/wire.c) fuzzed against the real elements.
#include "gst_test.h"
#include "fake_peers.h"

namespace {

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
