// Behaviour of libvarslot-preload.so that is the shim's own (the malloc family's semantics
// against glibc's are semantics_test.cpp's business): routing by size, by tag scope and by
// caller object; realloc across the routed/fallback boundary; calloc on a reused slot; two
// cooperating processes passing a routed block (raw pointer, then handle); fork; threads;
// pool exhaustion; bad VARSLOT_* values.
//
// The binary is meant to run under the shim (tests/preload/run-shim-tests.sh sets
// LD_PRELOAD, VARSLOT_SEGMENT=<fresh>, VARSLOT_MIN_SIZE=64K, VARSLOT_CALLERS=
// libvstest-caller.so, VARSLOT_STATS=1, VSTEST_PEER and VSTEST_CALLER_LIB). Without the shim
// every test is skipped. What the shim did is checked from the outside too: the segment is
// opened a second time through the core API (libvarslot.a, linked in; the shim's own copy is
// private to it) to read slot states, owners and tags.
//
// Child processes get no gtest: they report through their exit status and their stdout.

#include <gtest/gtest.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <varslot.h>
#include <varslot/preload.h>

extern char **environ;

namespace {

// ---------------------------------------------------------------------------------------
// the shim's API, found the documented way

struct ShimApi {
    vs_tag_push_fn push = nullptr;
    vs_tag_pop_fn pop = nullptr;
    vs_handle_of_fn handle_of = nullptr;
    vs_ptr_of_fn ptr_of = nullptr;
    vs_owns_fn owns = nullptr;
    bool present() const { return owns && push && pop && handle_of && ptr_of; }
};

const ShimApi &api()
{
    static ShimApi a = [] {
        ShimApi s;
        s.push = (vs_tag_push_fn)dlsym(RTLD_DEFAULT, "vs_tag_push");
        s.pop = (vs_tag_pop_fn)dlsym(RTLD_DEFAULT, "vs_tag_pop");
        s.handle_of = (vs_handle_of_fn)dlsym(RTLD_DEFAULT, "vs_handle_of");
        s.ptr_of = (vs_ptr_of_fn)dlsym(RTLD_DEFAULT, "vs_ptr_of");
        s.owns = (vs_owns_fn)dlsym(RTLD_DEFAULT, "vs_owns");
        return s;
    }();
    return a;
}

bool owned(const void *p) { return api().owns(p) != 0; }

// The compiler may not see through these: every malloc really happens, with this size.
template <class T>
inline T opaque(T v)
{
    asm volatile("" : "+r"(v) : : "memory");
    return v;
}

// ---------------------------------------------------------------------------------------
// configuration as the runner set it

uint64_t env_size(const char *var, uint64_t dflt)
{
    const char *v = getenv(var);
    uint64_t out;
    if (!v)
        return dflt;
    if (!strcasecmp(v, "off"))
        return 0;
    return vs_parse_size(v, &out) == VS_OK ? out : dflt;
}

// VARSLOT_MIN_SIZE (the shim's default is 64K).
size_t min_size()
{
    static size_t m = (size_t)env_size("VARSLOT_MIN_SIZE", 64 << 10);
    return m;
}

bool env_is(const char *var, const char *value)
{
    const char *v = getenv(var);
    return v && !strcmp(v, value);
}

std::string self_dir()
{
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0)
        return ".";
    buf[n] = '\0';
    std::string s(buf);
    size_t slash = s.rfind('/');
    return slash == std::string::npos ? "." : s.substr(0, slash);
}

std::string helper_path(const char *env_var, const char *name)
{
    const char *v = getenv(env_var);
    return v && *v ? v : self_dir() + "/" + name;
}

// ---------------------------------------------------------------------------------------
// the segment, seen through the core API

class CoreView {
public:
    static CoreView &get()
    {
        static CoreView view;
        return view;
    }
    bool ok() const { return ok_; }
    const std::string &error() const { return error_; }
    const vs_pool *pool() { return vs_segment_pool(&seg_); }
    vs_segment *segment() { return &seg_; }

    // The slot of a handle, as the segment says now.
    vs_slot_info info(uint64_t handle)
    {
        vs_slot_info out{};
        vs_slot_ref ref = vs_slot_ref_unpack(handle);
        if (vs_pool_slot_info(pool(), ref.class_idx, ref.slot_idx, &out) != VS_OK)
            out.state = 0xdead;
        return out;
    }
    // Is the block this handle named freed (or freed and reused by someone)?
    bool released(uint64_t handle)
    {
        vs_slot_info i = info(handle);
        return i.state == VS_SLOT_FREE || i.generation != vs_slot_ref_unpack(handle).generation;
    }

    // The peer entry of a live process, 0 if none.
    uint8_t peer_of(pid_t pid)
    {
        uint32_t max = vs_segment_max_peers(&seg_);
        for (uint32_t id = 1; id <= max; id++) {
            vs_peer_info p;
            if (vs_segment_peer_info(&seg_, (uint8_t)id, &p) == VS_OK && p.state != VS_PEER_FREE &&
                p.pid == pid)
                return (uint8_t)id;
        }
        return 0;
    }

    // Allocated slots owned by a peer id (0: allocated slots of anyone).
    size_t owned_by(uint8_t peer)
    {
        size_t n = 0;
        for (size_t c = 0; c < vs_pool_class_count(pool()); c++)
            for (uint32_t i = 0; i < vs_pool_slot_count(pool(), c); i++) {
                vs_slot_info s;
                if (vs_pool_slot_info(pool(), (uint8_t)c, i, &s) == VS_OK &&
                    s.state == VS_SLOT_ALLOCATED && (!peer || s.owner == peer))
                    n++;
            }
        return n;
    }

    // Free slots that could hold a block of this size (allocation spills to larger classes).
    size_t free_slots_for(size_t size)
    {
        size_t n = 0;
        for (size_t c = 0; c < vs_pool_class_count(pool()); c++) {
            if (vs_pool_slot_size(pool(), c) < size)
                continue;
            for (uint32_t i = 0; i < vs_pool_slot_count(pool(), c); i++) {
                vs_slot_info s;
                if (vs_pool_slot_info(pool(), (uint8_t)c, i, &s) == VS_OK && s.state == VS_SLOT_FREE)
                    n++;
            }
        }
        return n;
    }

    size_t largest_slot()
    {
        size_t n = vs_pool_class_count(pool());
        return n ? vs_pool_slot_size(pool(), n - 1) : 0;
    }

private:
    CoreView()
    {
        const char *name = getenv("VARSLOT_SEGMENT");
        if (!name || !*name) {
            error_ = "VARSLOT_SEGMENT is not set: the runner must name a fresh segment";
            return;
        }
        // The shim opens its segment at its first routed allocation: make one, so the shim's
        // mapping is at the creator's address and ours (a second one) goes elsewhere.
        api().push(0x7e57);
        void *p = malloc(opaque<size_t>(64));
        api().pop();
        bool routed = owned(p);
        free(p);
        if (!routed) {
            error_ = "a tag-scoped malloc was not routed: the shim cannot open its segment";
            return;
        }
        int rc = vs_segment_open(&seg_, name);
        if (rc != VS_OK) {
            error_ = std::string("vs_segment_open(") + name + "): " + vs_strerror(rc) + " (" +
                     vs_last_detail() + ")";
            return;
        }
        ok_ = true;
    }
    vs_segment seg_{};
    bool ok_ = false;
    std::string error_;
};

// ---------------------------------------------------------------------------------------
// content patterns

void fill(void *p, size_t n, uint32_t seed)
{
    unsigned char *b = static_cast<unsigned char *>(p);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        b[i] = (unsigned char)(x >> 16);
    }
}

// Offset of the first byte that differs from the pattern, or SIZE_MAX if all match.
size_t mismatch(const void *p, size_t n, uint32_t seed)
{
    const unsigned char *b = static_cast<const unsigned char *>(p);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        if (b[i] != (unsigned char)(x >> 16))
            return i;
    }
    return SIZE_MAX;
}

bool all_bytes(const void *p, size_t n, unsigned char v)
{
    const unsigned char *b = static_cast<const unsigned char *>(p);
    for (size_t i = 0; i < n; i++)
        if (b[i] != v)
            return false;
    return true;
}

uint64_t fnv1a(const void *p, size_t n)
{
    const unsigned char *b = static_cast<const unsigned char *>(p);
    uint64_t h = 0xCBF29CE484222325ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001B3ULL;
    return h;
}

std::string hex_head(const void *p, size_t n)
{
    const unsigned char *b = static_cast<const unsigned char *>(p);
    std::string s;
    char buf[3];
    for (size_t i = 0; i < 16 && i < n; i++) {
        snprintf(buf, sizeof buf, "%02x", b[i]);
        s += buf;
    }
    return s;
}

// ---------------------------------------------------------------------------------------
// child processes: fork + execve, pipes on stdin/stdout/stderr, a deadline

double now_s()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

struct Child {
    pid_t pid = -1;
    int in = -1, out = -1, err = -1; // our ends
    double deadline = 0;
    std::string out_buf, err_buf;
    bool out_eof = false, err_eof = false;

    ~Child()
    {
        if (pid > 0) { // not waited for: a failed test; leave nothing running
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
        }
        for (int fd : {in, out, err})
            if (fd >= 0)
                close(fd);
    }

    // Environment: the current one, minus every VARSLOT_* not given in `set`, plus `set`.
    static std::vector<std::string> environment(const std::map<std::string, std::string> &set,
                                                bool keep_varslot = true)
    {
        std::vector<std::string> env;
        for (char **e = environ; *e; e++) {
            std::string kv(*e), key = kv.substr(0, kv.find('='));
            if (set.count(key) || (!keep_varslot && key.rfind("VARSLOT_", 0) == 0))
                continue;
            env.push_back(kv);
        }
        for (auto &kv : set)
            env.push_back(kv.first + "=" + kv.second);
        return env;
    }

    bool start(const std::vector<std::string> &argv, const std::vector<std::string> &env,
               double timeout_s, std::string *why)
    {
        int pin[2], pout[2], perr[2];
        if (pipe2(pin, O_CLOEXEC) || pipe2(pout, O_CLOEXEC) || pipe2(perr, O_CLOEXEC)) {
            *why = std::string("pipe: ") + strerror(errno);
            return false;
        }
        std::vector<char *> av, ev;
        for (auto &s : argv)
            av.push_back(const_cast<char *>(s.c_str()));
        av.push_back(nullptr);
        for (auto &s : env)
            ev.push_back(const_cast<char *>(s.c_str()));
        ev.push_back(nullptr);
        pid = fork();
        if (pid < 0) {
            *why = std::string("fork: ") + strerror(errno);
            return false;
        }
        if (pid == 0) { // async-signal-safe calls only until execve
            dup2(pin[0], 0);
            dup2(pout[1], 1);
            dup2(perr[1], 2);
            execve(av[0], av.data(), ev.data());
            _exit(127);
        }
        close(pin[0]);
        close(pout[1]);
        close(perr[1]);
        in = pin[1];
        out = pout[0];
        err = perr[0];
        deadline = now_s() + timeout_s;
        return true;
    }

    void send(const std::string &s)
    {
        const char *p = s.data();
        size_t left = s.size();
        while (left) {
            ssize_t n = write(in, p, left);
            if (n <= 0)
                return; // the child is gone: what it printed tells the story
            p += n;
            left -= (size_t)n;
        }
    }
    void close_stdin()
    {
        if (in >= 0)
            close(in);
        in = -1;
    }

    // Reads whatever is available from stdout and stderr, waiting at most until the deadline.
    // Returns false on timeout.
    bool pump(double until)
    {
        struct pollfd fds[2];
        int n = 0;
        if (!out_eof)
            fds[n++] = {out, POLLIN, 0};
        if (!err_eof)
            fds[n++] = {err, POLLIN, 0};
        if (!n)
            return true;
        double left = until - now_s();
        if (left <= 0)
            return false;
        int r = poll(fds, (nfds_t)n, (int)(left * 1000) + 1);
        if (r < 0)
            return errno == EINTR;
        for (int i = 0; i < n; i++) {
            if (!fds[i].revents)
                continue;
            char buf[4096];
            ssize_t got = read(fds[i].fd, buf, sizeof buf);
            bool is_out = fds[i].fd == out;
            if (got <= 0)
                (is_out ? out_eof : err_eof) = true;
            else
                (is_out ? out_buf : err_buf).append(buf, (size_t)got);
        }
        return true;
    }

    // The next line of stdout (without '\n'); false on EOF or timeout.
    bool line(std::string *l)
    {
        for (;;) {
            size_t nl = out_buf.find('\n');
            if (nl != std::string::npos) {
                *l = out_buf.substr(0, nl);
                out_buf.erase(0, nl + 1);
                return true;
            }
            if (out_eof || !pump(deadline))
                return false;
        }
    }

    // Reads both streams to EOF and reaps the child. Returns its wait status, or -1 on
    // timeout (the child is then killed).
    int finish()
    {
        close_stdin();
        while ((!out_eof || !err_eof) && pump(deadline)) {
        }
        for (;;) {
            int status;
            pid_t r = waitpid(pid, &status, WNOHANG);
            if (r == pid) {
                pid = -1;
                return status;
            }
            if (now_s() > deadline) {
                kill(pid, SIGKILL);
                waitpid(pid, nullptr, 0);
                pid = -1;
                return -1;
            }
            usleep(2000);
        }
    }
};

std::string describe_status(int status)
{
    if (status == -1)
        return "timed out (killed)";
    if (WIFEXITED(status))
        return "exit status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status))
        return std::string("killed by signal ") + strsignal(WTERMSIG(status));
    return "status " + std::to_string(status);
}

// "key=value" lines of a child's stdout.
std::map<std::string, std::string> key_values(const std::string &text)
{
    std::map<std::string, std::string> kv;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        std::string l = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        size_t eq = l.find('=');
        kv[eq == std::string::npos ? l : l.substr(0, eq)] =
            eq == std::string::npos ? "" : l.substr(eq + 1);
        if (nl == std::string::npos)
            break;
        pos = nl + 1;
    }
    return kv;
}

std::string ptr_string(const void *p)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%p", p);
    return buf;
}

// ---------------------------------------------------------------------------------------
// the fixture: skip without the shim; every test must give back every slot it took

class Shim : public ::testing::Test {
protected:
    void SetUp() override
    {
        if (!api().present())
            GTEST_SKIP() << "not running under libvarslot-preload.so (dlsym(RTLD_DEFAULT, "
                            "\"vs_owns\") is NULL): run it with tests/preload/run-shim-tests.sh";
        CoreView &v = CoreView::get();
        ASSERT_TRUE(v.ok()) << v.error();
        my_peer_ = v.peer_of(getpid());
        ASSERT_NE(my_peer_, 0) << "this process has no peer entry in the segment";
        slots_at_start_ = v.owned_by(my_peer_);
    }
    void TearDown() override
    {
        if (!api().present() || !CoreView::get().ok() || !my_peer_)
            return;
        EXPECT_EQ(CoreView::get().owned_by(my_peer_), slots_at_start_)
            << "the test left slots allocated to this process (a leak, or a free that did "
               "not reach the pool)";
    }
    CoreView &view() { return CoreView::get(); }
    uint8_t my_peer_ = 0;
    size_t slots_at_start_ = 0;
};

// A size that is routed by size alone and fits the pool's largest class.
size_t routed_size(CoreView &v, size_t want)
{
    size_t lo = min_size() ? min_size() : 1, hi = v.largest_slot();
    return want < lo ? lo : want > hi ? hi : want;
}

// ---------------------------------------------------------------------------------------
// routing by size

using Routing = Shim;

TEST_F(Routing, BySize)
{
    size_t m = min_size();
    ASSERT_GT(m, 4096u) << "the runner sets VARSLOT_MIN_SIZE=64K";
    size_t largest = view().largest_slot();
    ASSERT_GE(largest, m) << "the pool's largest class cannot hold a block of the threshold";

    void *at = malloc(opaque(m));
    void *below = malloc(opaque(m - 1));
    void *small = malloc(opaque<size_t>(100));
    void *big = malloc(opaque(largest));
    void *too_big = malloc(opaque(largest + 1));
    ASSERT_TRUE(at && below && small && big && too_big);
    EXPECT_TRUE(owned(at)) << "malloc(VARSLOT_MIN_SIZE) must be routed";
    EXPECT_TRUE(owned(static_cast<char *>(at) + m - 1)) << "vs_owns of an interior pointer";
    EXPECT_FALSE(owned(below)) << "malloc(VARSLOT_MIN_SIZE - 1) must not be routed";
    EXPECT_FALSE(owned(small));
    EXPECT_TRUE(owned(big)) << "a block of the largest class's size";
    EXPECT_FALSE(owned(too_big)) << "larger than any class: falls back";
    EXPECT_EQ(api().handle_of(small), 0u) << "vs_handle_of of a fallback block";
    int local = 0;
    EXPECT_FALSE(owned(&local));
    EXPECT_FALSE(owned(nullptr));

    // Size-routed blocks carry tag 0 and their requested size.
    uint64_t h = api().handle_of(at);
    ASSERT_NE(h, 0u);
    vs_slot_info i = view().info(h);
    EXPECT_EQ(i.state, (uint32_t)VS_SLOT_ALLOCATED);
    EXPECT_EQ(i.owner, my_peer_);
    EXPECT_EQ(i.tag, 0u);
    EXPECT_EQ(i.size, m);

    // Every byte is usable, and stays put.
    fill(at, m, 1);
    fill(big, largest, 2);
    fill(too_big, largest + 1, 3);
    EXPECT_EQ(mismatch(at, m, 1), SIZE_MAX);
    EXPECT_EQ(mismatch(big, largest, 2), SIZE_MAX);
    EXPECT_EQ(mismatch(too_big, largest + 1, 3), SIZE_MAX);

    free(at);
    EXPECT_TRUE(view().released(h)) << "free() of a routed block must return its slot";
    free(below);
    free(small);
    free(big);
    free(too_big);
}

TEST_F(Routing, OtherEntryPointsBySize)
{
    size_t m = routed_size(view(), min_size());
    void *c = calloc(opaque(m / 16), 16);
    void *pm = nullptr;
    ASSERT_EQ(posix_memalign(&pm, 4096, opaque(m)), 0);
    void *al = aligned_alloc(256, opaque(m));
    char *nw = new char[opaque(m)];
    void *small_c = calloc(opaque<size_t>(10), 10);
    ASSERT_TRUE(c && pm && al && small_c);
    EXPECT_TRUE(owned(c)) << "calloc";
    EXPECT_TRUE(owned(pm)) << "posix_memalign";
    EXPECT_EQ((uintptr_t)pm % 4096, 0u);
    EXPECT_TRUE(owned(al)) << "aligned_alloc";
    EXPECT_EQ((uintptr_t)al % 256, 0u);
    EXPECT_TRUE(owned(nw)) << "operator new[]";
    EXPECT_FALSE(owned(small_c));
    EXPECT_TRUE(all_bytes(c, m, 0));
    fill(nw, m, 9);
    EXPECT_EQ(mismatch(nw, m, 9), SIZE_MAX);
    free(c);
    free(pm);
    free(al);
    delete[] nw;
    free(small_c);
}

// A free that misses the segment (the block handed to the fallback allocator, or dropped)
// leaves its slot allocated. Each way of freeing must return the slot; a class filled to its
// last slot, emptied and filled again must be routed again, into the very same slots.
TEST_F(Routing, FreeGoesBackToTheSegment)
{
    size_t m = routed_size(view(), min_size()), big = routed_size(view(), 1 << 20);
    struct Freed {
        const char *how;
        void *p;
        void (*release)(void *p, size_t n);
        size_t n;
    } blocks[] = {
        {"malloc + free", malloc(opaque(m)), [](void *p, size_t) { free(p); }, m},
        {"calloc + free", calloc(opaque(big), 1), [](void *p, size_t) { free(p); }, big},
        {"realloc(p, 0)", malloc(opaque(big)), [](void *p, size_t) { EXPECT_EQ(realloc(p, 0), nullptr); }, big},
        {"new[] + delete[]", new char[opaque(m)], [](void *p, size_t) { delete[] static_cast<char *>(p); }, m},
        {"new + sized delete", ::operator new(opaque(big)), [](void *p, size_t n) { ::operator delete(p, n); }, big},
    };
    for (Freed &b : blocks) {
        ASSERT_TRUE(b.p && owned(b.p)) << b.how << ": not routed";
        uint64_t h = api().handle_of(b.p);
        b.release(b.p, b.n);
        EXPECT_TRUE(view().released(h)) << b.how << ": the slot is still allocated";
    }

    size_t largest = view().largest_slot(), n = view().free_slots_for(largest);
    if (n == 0 || n > 64)
        GTEST_SKIP() << n << " free slots in the largest class: want 1..64";
    std::vector<void *> first, again;
    for (size_t i = 0; i < n; i++)
        first.push_back(malloc(opaque(largest))); // untouched: no page gets backed
    size_t routed = (size_t)std::count_if(first.begin(), first.end(), owned);
    EXPECT_EQ(routed, n) << "every free slot of the largest class should be taken";
    EXPECT_EQ(view().free_slots_for(largest), 0u);
    for (void *p : first)
        free(p);
    EXPECT_EQ(view().free_slots_for(largest), n) << "free() did not return every slot";
    for (size_t i = 0; i < n; i++)
        again.push_back(malloc(opaque(largest)));
    routed = (size_t)std::count_if(again.begin(), again.end(), owned);
    EXPECT_EQ(routed, n) << "after the frees, the class should take as many blocks again";
    EXPECT_EQ(std::set<void *>(first.begin(), first.end()), std::set<void *>(again.begin(), again.end()))
        << "the same slots should have been handed out again";
    for (void *p : again)
        free(p);
}

// ---------------------------------------------------------------------------------------
// routing by tag scope

using TagScope = Shim;

TEST_F(TagScope, RoutesSmallAllocationsWithTheirTag)
{
    ASSERT_EQ(api().push(4242), 0);
    void *in = malloc(opaque<size_t>(100));
    api().pop();
    void *out = malloc(opaque<size_t>(100));
    ASSERT_TRUE(in && out);
    EXPECT_TRUE(owned(in)) << "a 100-byte malloc inside vs_tag_push must be routed";
    EXPECT_FALSE(owned(out)) << "after vs_tag_pop, a 100-byte malloc must not be routed";

    uint64_t h = api().handle_of(in);
    ASSERT_NE(h, 0u);
    vs_slot_info i = view().info(h);
    EXPECT_EQ(i.state, (uint32_t)VS_SLOT_ALLOCATED);
    EXPECT_EQ(i.tag, 4242u) << "the slot must carry the scope's tag";
    EXPECT_EQ(i.size, 100u);
    EXPECT_EQ(i.owner, my_peer_);
    fill(in, 100, 5);
    EXPECT_EQ(mismatch(in, 100, 5), SIZE_MAX);
    free(in);
    EXPECT_TRUE(view().released(h));
    free(out);
}

TEST_F(TagScope, NestsAndPops)
{
    void *a, *b, *c, *d;
    ASSERT_EQ(api().push(1), 0);
    ASSERT_EQ(api().push(2), 0);
    a = malloc(opaque<size_t>(100));
    api().pop();
    b = malloc(opaque<size_t>(100));
    api().pop();
    c = malloc(opaque<size_t>(100));
    api().pop(); // none open: no effect
    api().pop();
    ASSERT_EQ(api().push(3), 0) << "pushing after surplus pops";
    d = malloc(opaque<size_t>(100));
    api().pop();
    ASSERT_TRUE(a && b && c && d);
    EXPECT_TRUE(owned(a));
    EXPECT_TRUE(owned(b));
    EXPECT_FALSE(owned(c)) << "every scope closed";
    EXPECT_TRUE(owned(d));
    EXPECT_EQ(view().info(api().handle_of(a)).tag, 2u) << "the innermost scope's tag";
    EXPECT_EQ(view().info(api().handle_of(b)).tag, 1u) << "the outer tag again after a pop";
    EXPECT_EQ(view().info(api().handle_of(d)).tag, 3u);
    free(a);
    free(b);
    free(c);
    free(d);
}

TEST_F(TagScope, DepthLimit)
{
    for (int i = 0; i < VS_TAG_MAX_DEPTH; i++)
        ASSERT_EQ(api().push(100 + i), 0) << "push number " << i + 1;
    int over = api().push(999);
    void *p = malloc(opaque<size_t>(100));
    for (int i = 0; i < VS_TAG_MAX_DEPTH; i++)
        api().pop();
    void *q = malloc(opaque<size_t>(100));
    EXPECT_EQ(over, -1) << "push past VS_TAG_MAX_DEPTH must fail";
    ASSERT_TRUE(p && q);
    EXPECT_TRUE(owned(p));
    EXPECT_EQ(view().info(api().handle_of(p)).tag, (uint32_t)(100 + VS_TAG_MAX_DEPTH - 1))
        << "the refused push must not have replaced the innermost tag";
    EXPECT_FALSE(owned(q)) << "VS_TAG_MAX_DEPTH pops close every scope (the refused push "
                              "must not count)";
    free(p);
    free(q);
}

TEST_F(TagScope, IsPerThread)
{
    // The thread is created outside the scope: pthread_create's own allocations (the
    // thread's TLS vector, which glibc keeps cached with the stack) would be routed and
    // outlive the test otherwise.
    std::atomic<bool> go{false};
    void *other = nullptr;
    std::thread t([&] {
        while (!go.load())
            sched_yield();
        other = malloc(opaque<size_t>(100));
    });
    ASSERT_EQ(api().push(77), 0);
    go = true;
    t.join();
    void *mine = malloc(opaque<size_t>(100));
    api().pop();
    ASSERT_TRUE(other && mine);
    EXPECT_FALSE(owned(other)) << "another thread's scope must not route this thread's malloc";
    EXPECT_TRUE(owned(mine));
    free(other);
    free(mine);
}

// ---------------------------------------------------------------------------------------
// routing by caller object (VARSLOT_CALLERS=libvstest-caller.so)

using Callers = Shim;

TEST_F(Callers, LibraryAllocationsAreRouted)
{
    const char *callers = getenv("VARSLOT_CALLERS");
    if (!callers || !strstr(callers, "libvstest-caller.so"))
        GTEST_SKIP() << "VARSLOT_CALLERS does not name libvstest-caller.so";
    std::string path = helper_path("VSTEST_CALLER_LIB", "libvstest-caller.so");
    void *lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(lib, nullptr) << "dlopen(" << path << "): " << dlerror();
    auto lib_alloc = (void *(*)(size_t))dlsym(lib, "caller_lib_alloc");
    auto lib_realloc = (void *(*)(void *, size_t))dlsym(lib, "caller_lib_realloc");
    ASSERT_TRUE(lib_alloc && lib_realloc);

    void *from_lib = lib_alloc(100);
    void *from_test = malloc(opaque<size_t>(100));
    ASSERT_TRUE(from_lib && from_test);
    EXPECT_TRUE(owned(from_lib)) << "a 100-byte malloc called from libvstest-caller.so";
    EXPECT_FALSE(owned(from_test)) << "a 100-byte malloc called from the test binary";
    uint64_t h = api().handle_of(from_lib);
    EXPECT_EQ(view().info(h).state, (uint32_t)VS_SLOT_ALLOCATED);
    EXPECT_EQ(view().info(h).owner, my_peer_);

    // realloc called from the library moves a fallback block into the segment.
    fill(from_test, 100, 11);
    void *moved = lib_realloc(from_test, 200);
    ASSERT_NE(moved, nullptr);
    EXPECT_TRUE(owned(moved)) << "realloc called from libvstest-caller.so";
    EXPECT_EQ(mismatch(moved, 100, 11), SIZE_MAX);

    free(from_lib); // freed by the test binary: ownership is by address
    EXPECT_TRUE(view().released(h));
    free(moved);

    // Repeated calls (the shim caches its answer per call site) still route.
    for (int i = 0; i < 4; i++) {
        void *p = lib_alloc(64 + i);
        EXPECT_TRUE(owned(p)) << "call " << i;
        free(p);
    }
    dlclose(lib);
}

// ---------------------------------------------------------------------------------------
// realloc across the boundary; calloc of a reused slot

using Realloc = Shim;

TEST_F(Realloc, RoutedToFallbackWhenShrinkingBelowTheThreshold)
{
    size_t m = routed_size(view(), 2 * min_size());
    unsigned char *p = static_cast<unsigned char *>(malloc(opaque(m)));
    ASSERT_TRUE(p);
    ASSERT_TRUE(owned(p));
    fill(p, m, 21);
    uint64_t h = api().handle_of(p);
    unsigned char *q = static_cast<unsigned char *>(realloc(p, opaque<size_t>(1000)));
    ASSERT_TRUE(q);
    EXPECT_FALSE(owned(q)) << "shrunk below VARSLOT_MIN_SIZE: moved to the fallback";
    EXPECT_EQ(mismatch(q, 1000, 21), SIZE_MAX) << "content kept";
    EXPECT_TRUE(view().released(h)) << "the old slot must be freed";
    free(q);
}

TEST_F(Realloc, FallbackToRoutedWhenGrowingPastTheThreshold)
{
    size_t m = routed_size(view(), 4 * min_size());
    unsigned char *p = static_cast<unsigned char *>(malloc(opaque<size_t>(1000)));
    ASSERT_TRUE(p);
    ASSERT_FALSE(owned(p));
    fill(p, 1000, 22);
    unsigned char *q = static_cast<unsigned char *>(realloc(p, opaque(m)));
    ASSERT_TRUE(q);
    EXPECT_TRUE(owned(q)) << "grown past VARSLOT_MIN_SIZE: moved into the segment";
    EXPECT_EQ(mismatch(q, 1000, 22), SIZE_MAX) << "content kept";
    memset(q + 1000, 0xee, m - 1000);
    EXPECT_EQ(view().info(api().handle_of(q)).size, m);
    free(q);
}

TEST_F(Realloc, WithinTheSegmentKeepsContentAcrossClasses)
{
    size_t m = min_size(), largest = view().largest_slot();
    if (largest < 4 * m)
        GTEST_SKIP() << "needs classes up to 4x VARSLOT_MIN_SIZE";
    unsigned char *p = static_cast<unsigned char *>(malloc(opaque(m)));
    ASSERT_TRUE(p && owned(p));
    fill(p, m, 23);
    unsigned char *q = static_cast<unsigned char *>(realloc(p, opaque(m + m / 2)));
    ASSERT_TRUE(q && owned(q));
    EXPECT_EQ(mismatch(q, m, 23), SIZE_MAX);
    fill(q, m + m / 2, 24);
    unsigned char *r = static_cast<unsigned char *>(realloc(q, opaque(4 * m)));
    ASSERT_TRUE(r && owned(r));
    EXPECT_EQ(mismatch(r, m + m / 2, 24), SIZE_MAX);
    unsigned char *s = static_cast<unsigned char *>(realloc(r, opaque(m)));
    ASSERT_TRUE(s && owned(s));
    EXPECT_EQ(mismatch(s, m, 24), SIZE_MAX);
    uint64_t h = api().handle_of(s);
    EXPECT_EQ(realloc(s, 0), nullptr) << "realloc(p, 0) frees p and returns NULL";
    EXPECT_TRUE(view().released(h));
}

TEST_F(Realloc, UnderATagScopeStaysRouted)
{
    ASSERT_EQ(api().push(5), 0);
    void *p = malloc(opaque<size_t>(100));
    fill(p, 100, 25);
    void *q = realloc(p, opaque<size_t>(3000));
    api().pop();
    ASSERT_TRUE(q);
    EXPECT_TRUE(owned(q));
    EXPECT_EQ(mismatch(q, 100, 25), SIZE_MAX);
    free(q);
}

using Calloc = Shim;

TEST_F(Calloc, ZeroesASlotDirtiedBefore)
{
    size_t m = routed_size(view(), min_size());
    constexpr int kBlocks = 6;
    std::set<void *> dirtied;
    void *b[kBlocks];
    for (int i = 0; i < kBlocks; i++) {
        b[i] = malloc(opaque(m));
        ASSERT_TRUE(b[i] && owned(b[i]));
        memset(b[i], 0xAB, m);
        dirtied.insert(b[i]);
    }
    for (int i = kBlocks - 1; i >= 0; i--)
        free(b[i]);
    int reused = 0;
    for (int i = 0; i < kBlocks; i++) {
        b[i] = i % 2 ? calloc(opaque(m), 1) : calloc(1, opaque(m));
        ASSERT_TRUE(b[i]);
        EXPECT_TRUE(owned(b[i]));
        reused += dirtied.count(b[i]) ? 1 : 0;
        EXPECT_TRUE(all_bytes(b[i], m, 0)) << "calloc block " << i << " is not all zero";
    }
    EXPECT_GT(reused, 0) << "no dirtied slot was reused: this test proved nothing";
    for (int i = 0; i < kBlocks; i++)
        free(b[i]);

    // The same for a small calloc in a tag scope.
    ASSERT_EQ(api().push(6), 0);
    void *s = malloc(opaque<size_t>(300));
    memset(s, 0xCD, 300);
    free(s);
    void *z = calloc(3, opaque<size_t>(100));
    api().pop();
    ASSERT_TRUE(z);
    EXPECT_TRUE(owned(z));
    EXPECT_TRUE(all_bytes(z, 300, 0));
    free(z);
}

// ---------------------------------------------------------------------------------------
// two cooperating processes

class CrossProcess : public Shim {
protected:
    std::string peer_ = helper_path("VSTEST_PEER", "vstest-peer");

    // A routed block of `len` bytes filled with pattern `seed`.
    unsigned char *routed_block(size_t len, uint32_t seed)
    {
        unsigned char *p = static_cast<unsigned char *>(malloc(opaque(len)));
        if (p)
            fill(p, len, seed);
        return p;
    }

    // Sends a raw pointer to `peer raw`, which reads and frees it.
    void raw_round_trip(const std::vector<std::string> &args,
                        const std::map<std::string, std::string> &env)
    {
        size_t len = routed_size(view(), 2 * min_size());
        unsigned char *p = routed_block(len, 31);
        ASSERT_TRUE(p && owned(p));
        uint64_t h = api().handle_of(p);
        pending_ = p;
        pending_handle_ = h;
        std::string head = hex_head(p, len);
        uint64_t sum = fnv1a(p, len);

        Child c;
        std::string why;
        std::vector<std::string> argv = {peer_, "raw"};
        argv.insert(argv.end(), args.begin(), args.end());
        ASSERT_TRUE(c.start(argv, Child::environment(env), 60, &why)) << why;
        c.send(ptr_string(p) + " " + std::to_string(len) + "\n");
        int status = c.finish();
        auto kv = key_values(c.out_buf);
        SCOPED_TRACE("peer stdout:\n" + c.out_buf + "peer stderr:\n" + c.err_buf);
        ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
            << "peer " << describe_status(status);
        EXPECT_EQ(kv["owns"], "1") << "vs_owns in the peer";
        EXPECT_EQ(kv["head"], head) << "the peer read other bytes at the same address";
        char want[32];
        snprintf(want, sizeof want, "%016" PRIx64, sum);
        EXPECT_EQ(kv["sum"], want);
        if (!args.empty() && args[0] == "--prime") {
            EXPECT_EQ(kv["primed"], "1") << "the peer's own tag-scoped malloc";
        }
        EXPECT_TRUE(kv.count("freed"));
        EXPECT_TRUE(view().released(h)) << "free() in the peer must return the slot to the pool";
        // p was the peer's to free, and it did: the slot may already be someone else's.
    }
    void TearDown() override
    {
        // A peer that failed before its free() leaves the block ours: give it back, so
        // one failure is not reported twice (as a leak too).
        if (pending_ && !view().released(pending_handle_))
            free(pending_);
        Shim::TearDown();
    }
    void *pending_ = nullptr;
    uint64_t pending_handle_ = 0;
};

TEST_F(CrossProcess, RawPointerIsValidAtTheSameAddressAndFreedByThePeer)
{
    raw_round_trip({"--prime"}, {});
}

// The receiver has not routed anything yet (its threshold is above libstdc++'s startup
// allocation): the segment must still be mapped where the sender's pointer points.
TEST_F(CrossProcess, RawPointerInAPeerThatHasNotRoutedYet)
{
    raw_round_trip({}, {{"VARSLOT_MIN_SIZE", "1G"}});
}

TEST_F(CrossProcess, HandleAdoptedByThePeerWhileTheSenderLives)
{
    size_t len = routed_size(view(), min_size());
    unsigned char *p = routed_block(len, 32);
    ASSERT_TRUE(p && owned(p));
    uint64_t h = api().handle_of(p);
    ASSERT_NE(h, 0u);
    std::string head = hex_head(p, len);
    uint64_t sum = fnv1a(p, len);

    Child c;
    std::string why, l;
    ASSERT_TRUE(c.start({peer_, "handle"}, Child::environment({}), 60, &why)) << why;
    c.send(std::to_string(h) + " " + std::to_string(len) + "\n");
    std::string got;
    while (c.line(&l) && l != "ready")
        got += l + "\n";
    auto kv = key_values(got);
    if (l != "ready") {
        int status = c.finish();
        FAIL() << "peer did not get ready: " << describe_status(status) << "\nstdout:\n"
               << c.out_buf << "\nstderr:\n" << c.err_buf;
    }
    EXPECT_EQ(kv["ptr"], ptr_string(p)) << "vs_ptr_of in the peer: same address";
    EXPECT_EQ(kv["owns"], "1");
    EXPECT_EQ(kv["head"], head);
    char want[32];
    snprintf(want, sizeof want, "%016" PRIx64, sum);
    EXPECT_EQ(kv["sum"], want);

    // Adopted: the slot is the peer's now, while we are alive and still map it.
    uint8_t their_peer = view().peer_of(c.pid);
    EXPECT_NE(their_peer, 0) << "the peer process has no peer entry";
    EXPECT_NE(their_peer, my_peer_);
    vs_slot_info i = view().info(h);
    EXPECT_EQ(i.state, (uint32_t)VS_SLOT_ALLOCATED);
    EXPECT_EQ(i.owner, their_peer) << "vs_ptr_of must transfer ownership to the caller";
    EXPECT_EQ(mismatch(p, len, 32), SIZE_MAX) << "our view of the block is unchanged";

    c.send("free\n");
    int status = c.finish();
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "peer " << describe_status(status) << "\nstdout:\n" << c.out_buf << "\nstderr:\n"
        << c.err_buf;
    EXPECT_NE(c.out_buf.find("freed"), std::string::npos);
    EXPECT_TRUE(view().released(h)) << "the peer's free() must return the slot";
    EXPECT_EQ(view().peer_of(getpid()), my_peer_) << "we are still a peer";
    EXPECT_EQ(api().ptr_of(h), nullptr) << "vs_ptr_of of a freed block's handle";
    EXPECT_EQ(api().ptr_of(0), nullptr);
}

// ---------------------------------------------------------------------------------------
// fork: VARSLOT_FORK=copy (the default) and share (run-shim-tests.sh's share configuration)

using Fork = Shim;

TEST_F(Fork, ChildGetsAPrivateCopyOfRoutedBlocks)
{
    if (env_is("VARSLOT_FORK", "share"))
        GTEST_SKIP() << "VARSLOT_FORK=share";
    size_t len = routed_size(view(), 1 << 20);
    unsigned char *p = static_cast<unsigned char *>(malloc(opaque(len)));
    ASSERT_TRUE(p && owned(p));
    fill(p, len, 41);
    uint64_t h = api().handle_of(p);
    size_t small_routed = routed_size(view(), min_size());

    int to_child[2], to_parent[2];
    ASSERT_EQ(pipe(to_child), 0);
    ASSERT_EQ(pipe(to_parent), 0);
    fflush(nullptr);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        close(to_child[1]);
        close(to_parent[0]);
        alarm(60);
        int rc = 0;
        char c;
        if (mismatch(p, len, 41) != SIZE_MAX)
            rc = 10; // the parent's content before fork
        fill(p, len, 42);
        if (!rc && (write(to_parent[1], "1", 1) != 1 || read(to_child[0], &c, 1) != 1))
            rc = 11;
        if (!rc && mismatch(p, len, 42) != SIZE_MAX)
            rc = 12; // the parent's writes after fork leaked into our copy
        void *mine = malloc(opaque(small_routed));
        if (!rc && (!mine || !owned(mine)))
            rc = 13; // the child routes too (with a peer entry of its own)
        if (!rc && mine) {
            fill(mine, small_routed, 43);
            if (mismatch(mine, small_routed, 43) != SIZE_MAX)
                rc = 14;
        }
        free(mine);
        free(p); // frees our copy only: the parent's slot stays the parent's
        exit(rc); // a normal exit: the shim leaves the segment
    }
    close(to_child[0]);
    close(to_parent[1]);
    char c = 0;
    ssize_t n = read(to_parent[0], &c, 1);
    EXPECT_EQ(n, 1) << "the child did not report";
    EXPECT_EQ(mismatch(p, len, 41), SIZE_MAX) << "the child's writes changed the parent's copy";
    fill(p, len, 44);
    EXPECT_EQ(write(to_child[1], "2", 1), 1);
    int status = 0;
    EXPECT_EQ(waitpid(pid, &status, 0), pid);
    close(to_child[1]);
    close(to_parent[0]);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "child " << describe_status(status)
        << " (10: pre-fork content wrong, 11: pipe, 12: parent's writes visible, 13: child "
           "could not route, 14: child's routed block corrupt)";
    EXPECT_EQ(mismatch(p, len, 44), SIZE_MAX) << "parent's block after the child exited";
    vs_slot_info i = view().info(h);
    EXPECT_EQ(i.state, (uint32_t)VS_SLOT_ALLOCATED) << "the child's free() freed the parent's slot";
    EXPECT_EQ(i.generation, vs_slot_ref_unpack(h).generation);
    EXPECT_EQ(i.owner, my_peer_);
    EXPECT_EQ(view().peer_of(pid), 0) << "the exited child still has a peer entry";
    free(p);
    EXPECT_TRUE(view().released(h));
}

// copy: the child's realloc of its copy of a parent's block cannot resize the parent's slot
// in place; it moves the bytes to a block of the child's own, and the parent's slot, size and
// bytes stay as they were.
TEST_F(Fork, ChildReallocsItsPrivateCopyAwayFromTheParentsSlot)
{
    if (env_is("VARSLOT_FORK", "share"))
        GTEST_SKIP() << "VARSLOT_FORK=share";
    size_t len = routed_size(view(), 1 << 20), grown = routed_size(view(), 3 << 20);
    if (grown <= len)
        GTEST_SKIP() << "needs a class larger than 1 MiB";
    unsigned char *b[3];
    uint64_t h[3];
    for (int i = 0; i < 3; i++) {
        b[i] = static_cast<unsigned char *>(malloc(opaque(len)));
        ASSERT_TRUE(b[i] && owned(b[i]));
        fill(b[i], len, 61 + i);
        h[i] = api().handle_of(b[i]);
    }
    fflush(nullptr);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        alarm(60);
        int rc = 0;
        unsigned char *g = static_cast<unsigned char *>(realloc(b[0], opaque(grown)));
        if (!g || !owned(g) || mismatch(g, len, 61) != SIZE_MAX)
            rc = 20; // grown into a larger class: routed, content kept
        else
            fill(g, grown, 64); // all of it: none of it may reach the parent
        unsigned char *s = static_cast<unsigned char *>(realloc(b[1], opaque<size_t>(1000)));
        if (!rc && (!s || owned(s) || mismatch(s, 1000, 62) != SIZE_MAX))
            rc = 21; // shrunk below the threshold: the fallback, content kept
        unsigned char *t = static_cast<unsigned char *>(realloc(b[2], opaque(len - 4096)));
        if (!rc && (!t || t == b[2] || !owned(t) || mismatch(t, len - 4096, 63) != SIZE_MAX))
            rc = 22; // same class: moved all the same, since the slot is the parent's
        if (!rc && t)
            fill(t, len - 4096, 65);
        free(g);
        free(s);
        free(t);
        exit(rc);
    }
    int status = 0;
    EXPECT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "child " << describe_status(status)
        << " (20: grow, 21: shrink below the threshold, 22: realloc within the class)";
    for (int i = 0; i < 3; i++) {
        SCOPED_TRACE("block " + std::to_string(i));
        EXPECT_EQ(mismatch(b[i], len, 61 + i), SIZE_MAX) << "the child's realloc changed our bytes";
        vs_slot_info info = view().info(h[i]);
        EXPECT_EQ(info.state, (uint32_t)VS_SLOT_ALLOCATED) << "the child's realloc freed our slot";
        EXPECT_EQ(info.generation, vs_slot_ref_unpack(h[i]).generation);
        EXPECT_EQ(info.owner, my_peer_);
        EXPECT_EQ(info.size, len) << "the child resized our slot";
        free(b[i]);
        EXPECT_TRUE(view().released(h[i]));
    }
}

// share: nothing is copied at fork. Each process sees the other's writes; the blocks stay
// the parent's (the child's exit leaves them alone), and either process may free one, once.
TEST_F(Fork, ChildSharesRoutedBlocksWithShare)
{
    if (!env_is("VARSLOT_FORK", "share"))
        GTEST_SKIP() << "VARSLOT_FORK=share only (run-shim-tests.sh's share configuration)";
    size_t len = routed_size(view(), 1 << 20), small_routed = routed_size(view(), min_size());
    unsigned char *kept = static_cast<unsigned char *>(malloc(opaque(len)));
    unsigned char *given = static_cast<unsigned char *>(malloc(opaque(len)));
    ASSERT_TRUE(kept && given && owned(kept) && owned(given));
    fill(kept, len, 51);
    fill(given, len, 52);
    uint64_t hk = api().handle_of(kept), hg = api().handle_of(given);

    int to_child[2], to_parent[2];
    ASSERT_EQ(pipe(to_child), 0);
    ASSERT_EQ(pipe(to_parent), 0);
    fflush(nullptr);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        close(to_child[1]);
        close(to_parent[0]);
        alarm(60);
        int rc = 0;
        char c;
        if (mismatch(kept, len, 51) != SIZE_MAX || mismatch(given, len, 52) != SIZE_MAX)
            rc = 30; // the parent's content before fork
        fill(kept, len, 53);
        if (!rc && (write(to_parent[1], "1", 1) != 1 || read(to_child[0], &c, 1) != 1))
            rc = 31;
        if (!rc && mismatch(kept, len, 54) != SIZE_MAX)
            rc = 32; // the parent's write after fork is not here
        void *mine = malloc(opaque(small_routed));
        if (!rc && (!mine || !owned(mine)))
            rc = 33; // the child routes too
        free(mine);
        free(given); // for both processes: the parent must not free it again
        exit(rc);
    }
    close(to_child[0]);
    close(to_parent[1]);
    char c = 0;
    EXPECT_EQ(read(to_parent[0], &c, 1), 1) << "the child did not report";
    EXPECT_EQ(mismatch(kept, len, 53), SIZE_MAX) << "the child's write is not seen by the parent";
    fill(kept, len, 54);
    EXPECT_EQ(write(to_child[1], "2", 1), 1);
    int status = 0;
    EXPECT_EQ(waitpid(pid, &status, 0), pid);
    close(to_child[1]);
    close(to_parent[0]);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "child " << describe_status(status)
        << " (30: pre-fork content wrong, 31: pipe, 32: parent's write not seen, 33: child "
           "could not route)";
    EXPECT_TRUE(view().released(hg)) << "the child's free() of a shared block must free its slot";
    if (!view().released(hg))
        free(given); // it freed a copy: ours is still allocated
    vs_slot_info i = view().info(hk);
    EXPECT_EQ(i.state, (uint32_t)VS_SLOT_ALLOCATED) << "the child's exit freed a block it shared";
    EXPECT_EQ(i.generation, vs_slot_ref_unpack(hk).generation);
    EXPECT_EQ(i.owner, my_peer_) << "a shared block stays the parent's";
    EXPECT_EQ(mismatch(kept, len, 54), SIZE_MAX);
    EXPECT_EQ(view().peer_of(pid), 0) << "the exited child still has a peer entry";
    free(kept);
    EXPECT_TRUE(view().released(hk));
}

// A child forked while another thread's first routed allocation was still joining: that join
// is the parent's, and the child joins for itself at its own first routed allocation (it
// used to stay "joining" for good and never route).
TEST_F(Fork, AChildForkedDuringAFirstJoinRoutesToo)
{
    static size_t len;
    len = routed_size(view(), 1 << 20);
    fflush(nullptr);
    pid_t pid = fork(); // a process that has not joined yet: the shim re-arms a fork child
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        alarm(60);
        // Hold the JOIN byte (offset 512 of the segment file, core/src/segment.h) as a remover
        // would, so that the first join waits in it while we fork.
        std::string path = std::string("/dev/shm") + getenv("VARSLOT_SEGMENT");
        int hold = open(path.c_str(), O_RDWR | O_CLOEXEC);
        struct flock fl = {};
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = 512;
        fl.l_len = 1;
        if (hold < 0 || fcntl(hold, F_OFD_SETLK, &fl) != 0)
            _exit(2);
        pthread_t t;
        pthread_create(&t, nullptr, [](void *) -> void * { return malloc(opaque(len)); }, nullptr);
        usleep(100000); // t is in its first join
        pid_t g = fork();
        if (g == 0) {
            close(hold);
            int routed = 0;
            for (int i = 0; i < 20 && !routed; i++) {
                void *p = malloc(opaque(len));
                routed = owned(p);
                free(p);
                usleep(20000);
            }
            exit(routed ? 0 : 3); // a normal exit leaves the segment: no dead peer behind
        }
        fl.l_type = F_UNLCK;
        fcntl(hold, F_OFD_SETLK, &fl);
        void *first = nullptr;
        pthread_join(t, &first);
        free(first);
        int st = 0;
        waitpid(g, &st, 0);
        exit(WIFEXITED(st) ? WEXITSTATUS(st) : 4);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << describe_status(status) << " (2: lock, 3: the grandchild never routed, 4: it died)";
}

// ---------------------------------------------------------------------------------------
// threads

using Threads = Shim;

TEST_F(Threads, RoutedAndUnroutedAllocationsConcurrently)
{
    constexpr int kThreads = 8, kIters = 400, kLive = 4;
    size_t m = routed_size(view(), min_size()), largest = view().largest_slot();
    std::atomic<int> errors{0};
    std::mutex mu;
    std::string first_error;
    auto report = [&](const std::string &what) {
        if (errors.fetch_add(1) == 0) {
            std::lock_guard<std::mutex> g(mu);
            first_error = what;
        }
    };
    auto work = [&](int t) {
        struct Block {
            unsigned char *p = nullptr;
            size_t n = 0;
            uint32_t seed = 0;
            bool routed = false;
        } live[kLive];
        uint32_t rng = 0x9e3779b9u * (uint32_t)(t + 1);
        auto next = [&] { return rng = rng * 1664525u + 1013904223u; };
        for (int it = 0; it < kIters && errors.load() == 0; it++) {
            Block &b = live[(next() >> 8) % kLive];
            uint32_t seed = (uint32_t)(t << 20 | it);
            if (b.p) {
                if (mismatch(b.p, b.n, b.seed) != SIZE_MAX)
                    report("thread " + std::to_string(t) + ": block corrupted");
                if (owned(b.p) != b.routed)
                    report("thread " + std::to_string(t) + ": vs_owns changed");
                if (next() % 2) {
                    free(b.p);
                    b = Block();
                    continue;
                }
                // realloc across the boundary, either way
                size_t n = b.routed ? 100 + next() % 4000
                                    : m + next() % (std::min(m, largest - m) + 1);
                unsigned char *q = static_cast<unsigned char *>(realloc(b.p, n));
                if (!q) {
                    report("realloc failed");
                    continue;
                }
                size_t keep = n < b.n ? n : b.n;
                if (mismatch(q, keep, b.seed) != SIZE_MAX)
                    report("thread " + std::to_string(t) + ": realloc lost content");
                b.p = q;
                b.n = n;
                b.routed = !b.routed;
                if (owned(q) != b.routed)
                    report("thread " + std::to_string(t) + ": realloc to " + std::to_string(n) +
                           " bytes: routed=" + std::to_string(owned(q)));
                fill(q, n, b.seed);
                continue;
            }
            switch (next() % 3) {
            case 0: // routed by size
                b.n = m + next() % m;
                if (b.n > largest)
                    b.n = largest;
                b.p = static_cast<unsigned char *>(malloc(b.n));
                b.routed = true;
                break;
            case 1: // not routed
                b.n = 16 + next() % 8000;
                b.p = static_cast<unsigned char *>(malloc(b.n));
                b.routed = false;
                break;
            default: { // routed by a tag scope, tag visible in the segment
                api().push(1000 + t);
                b.n = 16 + next() % 2000;
                b.p = static_cast<unsigned char *>(malloc(b.n));
                api().pop();
                b.routed = true;
                uint64_t h = b.p ? api().handle_of(b.p) : 0;
                if (b.p && view().info(h).tag != (uint32_t)(1000 + t))
                    report("thread " + std::to_string(t) + ": wrong tag in the segment");
                break;
            }
            }
            if (!b.p) {
                report("malloc failed");
                continue;
            }
            if (owned(b.p) != b.routed)
                report("thread " + std::to_string(t) + ": malloc(" + std::to_string(b.n) +
                       ") routed=" + std::to_string(owned(b.p)) + ", want " +
                       std::to_string(b.routed));
            b.seed = seed;
            fill(b.p, b.n, seed);
        }
        for (Block &b : live)
            if (b.p) {
                if (mismatch(b.p, b.n, b.seed) != SIZE_MAX)
                    report("thread " + std::to_string(t) + ": block corrupted at the end");
                free(b.p);
            }
    };
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; t++)
        threads.emplace_back(work, t);
    for (auto &th : threads)
        th.join();
    EXPECT_EQ(errors.load(), 0) << "first error: " << first_error;
}

// ---------------------------------------------------------------------------------------
// pool exhaustion: a full pool never fails a malloc

using Exhaustion = Shim;

TEST_F(Exhaustion, FullPoolFallsBack)
{
    size_t m = min_size();
    size_t free_slots = view().free_slots_for(m);
    if (free_slots > 2048)
        GTEST_SKIP() << free_slots << " free slots: too many to fill in a test";
    constexpr size_t kExtra = 6; // the runner's tiny configuration expects fallback >= this
    std::vector<void *> blocks;
    blocks.reserve(free_slots + kExtra);
    size_t routed = 0, fell_back = 0, unexpected = 0;
    for (size_t i = 0; i < free_slots + kExtra; i++) {
        void *p = malloc(opaque(m));
        ASSERT_NE(p, nullptr) << "malloc " << i << " failed: a full pool must fall back";
        bool o = owned(p);
        (o ? routed : fell_back)++;
        if (o != (i < free_slots))
            unexpected++;
        memset(p, (int)(i & 0xff), m);
        blocks.push_back(p);
    }
    for (size_t i = 0; i < blocks.size(); i++)
        EXPECT_TRUE(all_bytes(blocks[i], m, (unsigned char)(i & 0xff))) << "block " << i;
    EXPECT_EQ(routed, free_slots) << "every free slot should have been used first";
    EXPECT_EQ(fell_back, kExtra);
    EXPECT_EQ(unexpected, 0u) << "routed blocks after a fallback, or the reverse";
    EXPECT_EQ(view().free_slots_for(m), 0u);
    for (void *p : blocks)
        free(p);
    EXPECT_EQ(view().free_slots_for(m), free_slots) << "every slot back after the frees";
    // Routing works again.
    void *again = malloc(opaque(m));
    EXPECT_TRUE(owned(again));
    free(again);
    printf("[          ] %zu blocks of %zu bytes: %zu routed, %zu fell back\n", blocks.size(), m,
           routed, fell_back);
}

// ---------------------------------------------------------------------------------------
// bad environment values: one warning line, the default, the program runs

// VARSLOT_VERBOSE=1 prints the options on one line from inside the first malloc, into a
// fixed buffer: the longest options there are must be cut, not written past its end.
TEST_F(Shim, VerboseLineWithTheLongestOptionsStaysInItsBuffer)
{
    std::string callers, classes;
    for (int i = 0; i < 16; i++)
        callers += (i ? "," : "") + std::string(63, (char)('a' + i));
    for (int i = 1; i <= 64; i++)
        classes += (i > 1 ? "," : "") + std::to_string(64 * i) + "K:1";
    std::map<std::string, std::string> env = {{"VARSLOT_VERBOSE", "1"},
                                              {"VARSLOT_CALLERS", callers},
                                              {"VARSLOT_CLASSES", classes},
                                              {"VARSLOT_SEGMENT", getenv("VARSLOT_SEGMENT")}};
    Child c;
    std::string why;
    ASSERT_TRUE(c.start({"/bin/true"}, Child::environment(env, false), 30, &why)) << why;
    int status = c.finish();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << describe_status(status) << "\nstderr:\n" << c.err_buf;
    EXPECT_EQ(c.err_buf.rfind("varslot: segment=", 0), 0u) << c.err_buf;
    EXPECT_NE(c.err_buf.find(std::string(20, 'a')), std::string::npos) << "the callers are printed";
    EXPECT_EQ(c.err_buf.find('\n'), c.err_buf.size() - 1) << "one line, ended: " << c.err_buf;
    EXPECT_LT(c.err_buf.size(), 1100u);
}

struct BadValue {
    const char *var, *value;
};

void PrintTo(const BadValue &b, std::ostream *os) { *os << b.var << "=\"" << b.value << "\""; }

class BadEnvironment : public Shim, public ::testing::WithParamInterface<BadValue> {};

TEST_P(BadEnvironment, OneWarningAndTheProgramRuns)
{
    const BadValue &bad = GetParam();
    std::string peer = helper_path("VSTEST_PEER", "vstest-peer");
    for (const std::string &prog : {std::string("/bin/true"), peer}) {
        SCOPED_TRACE(prog + " with " + bad.var + "=\"" + bad.value + "\"");
        std::map<std::string, std::string> env = {{bad.var, bad.value}};
        // Only the bad variable differs from a quiet, working configuration. An empty
        // VARSLOT_SEGMENT means the per-user default: route nothing then, so that no
        // default segment is created by a test.
        if (strcmp(bad.var, "VARSLOT_SEGMENT"))
            env["VARSLOT_SEGMENT"] = getenv("VARSLOT_SEGMENT");
        else
            env["VARSLOT_MIN_SIZE"] = "off";
        Child c;
        std::string why;
        ASSERT_TRUE(c.start({prog, "noop"}, Child::environment(env, false), 30, &why)) << why;
        int status = c.finish();
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
            << describe_status(status) << "\nstderr:\n" << c.err_buf;
        if (prog != "/bin/true") {
            EXPECT_EQ(c.out_buf, "peer ok\n");
        }
        std::vector<std::string> lines;
        size_t pos = 0;
        while (pos < c.err_buf.size()) {
            size_t nl = c.err_buf.find('\n', pos);
            lines.push_back(c.err_buf.substr(pos, nl - pos));
            pos = nl == std::string::npos ? c.err_buf.size() : nl + 1;
        }
        std::string prefix = std::string("varslot: ignoring ") + bad.var + "=" + bad.value;
        size_t warnings = 0, matching = 0;
        for (auto &l : lines) {
            warnings += l.rfind("varslot: ignoring ", 0) == 0;
            matching += l.rfind(prefix, 0) == 0;
        }
        EXPECT_EQ(warnings, 1u) << "stderr:\n" << c.err_buf;
        EXPECT_EQ(matching, 1u) << "want a line starting with \"" << prefix << "\"; stderr:\n"
                                << c.err_buf;
        EXPECT_EQ(lines.size(), 1u) << "nothing else on stderr; stderr:\n" << c.err_buf;
    }
}

INSTANTIATE_TEST_SUITE_P(
    Values, BadEnvironment,
    ::testing::Values(BadValue{"VARSLOT_MIN_SIZE", "banana"}, BadValue{"VARSLOT_MIN_SIZE", "64Q"},
                      BadValue{"VARSLOT_CLASSES", "64K"}, BadValue{"VARSLOT_CLASSES", "1M:4,64K:4"},
                      BadValue{"VARSLOT_FALLBACK", "tcmalloc"}, BadValue{"VARSLOT_STATS", "maybe"},
                      BadValue{"VARSLOT_VERBOSE", "loud"}, BadValue{"VARSLOT_FORK", "sometimes"},
                      BadValue{"VARSLOT_TRUST", "perhaps"},
                      BadValue{"VARSLOT_CALLERS", ",,"}, BadValue{"VARSLOT_SEGMENT", ""}),
    [](const ::testing::TestParamInfo<BadValue> &info) {
        std::string name = std::string(info.param.var).substr(8) + "_" + std::to_string(info.index);
        return name;
    });

} // namespace

int main(int argc, char **argv)
{
    ::testing::InitGoogleTest(&argc, argv);
    if (!api().present())
        fprintf(stderr, "shim_test: libvarslot-preload.so is not loaded: every test is skipped "
                        "(run tests/preload/run-shim-tests.sh)\n");
    return RUN_ALL_TESTS();
}
