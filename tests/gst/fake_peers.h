// Hand-made peers on the wire (they speak gst-plugin/protocol.c), for the tests that
// put a real element against a hostile or broken other side: FakeProducer and HonestProcess
// against varslotsrc, FakeConsumer and the HostileConsumer fixture against varslotsink.
#ifndef VSTEST_FAKE_PEERS_H
#define VSTEST_FAKE_PEERS_H

#include "gst_test.h"

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

inline int open_shm(const std::string &name) { return open(("/dev/shm" + name).c_str(), O_RDONLY | O_CLOEXEC); }

inline vs_segment_options one_class(uint32_t size, uint32_t count)
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
        // The sink shares slots with the peer id a consumer names, so it must be a peer of the
        // consumer's own process: ours is the sink's (one process), which the greeting names.
        reply.peer = m.hello.peer;
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

#endif
