/* The core benchmark: varslot's pool against glibc malloc and Boost.Interprocess.
 * Every figure and the anchor it is compared with are measured in this one run; the table
 * shows value, anchor, ratio, target and PASS/MISS. Exit status is non-zero only when a
 * measurement itself failed (a child crashed, a segment could not be made), never for a MISS. */
#include "varslot.h"

#include <boost/interprocess/managed_shared_memory.hpp>
#include <boost/version.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sched.h>
#include <gnu/libc-version.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

namespace bip = boost::interprocess;

namespace {

/* ---- options ---- */

struct Options {
    int reps = 5;       /* timed repetitions per figure; the median is reported */
    double scale = 1.0; /* multiplies every iteration count (--quick: 0.1) */
    std::string tsv;    /* --tsv FILE: the table again, tab-separated */
    int only = 0;       /* --only N: section N alone; 0 = all */
};
Options g_opt;

long iters(long n) { return std::max(1L, (long)((double)n * g_opt.scale)); }

/* ---- small helpers ---- */

struct Failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::string fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char *f, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

uint64_t now_ns()
{
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Tells the compiler the pointer escapes, so an allocate/free pair cannot be elided. */
template <class T> inline void escape(T *p) { asm volatile("" : : "g"(p) : "memory"); }

struct Stat {
    double median, lo, hi;
};

Stat summarize(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    double med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    return {med, v.front(), v.back()};
}

/* Warms every candidate up once, then runs the repetitions round-robin, so slow drift
 * of the machine (frequency, a noisy neighbour) hits all candidates alike. */
std::vector<Stat> interleaved(const std::vector<std::function<double()>> &fns)
{
    std::vector<std::vector<double>> samples(fns.size());
    for (auto &f : fns)
        f();
    for (int r = 0; r < g_opt.reps; r++)
        for (size_t i = 0; i < fns.size(); i++)
            samples[i].push_back(fns[i]());
    std::vector<Stat> out;
    for (auto &s : samples)
        out.push_back(summarize(s));
    return out;
}

/* ---- segments: unique names, removed at the end, on failure and on a fatal signal ---- */

const int kMaxTracked = 32;
char g_tracked[kMaxTracked][160]; /* /dev/shm paths; "" = free entry */
pid_t g_main_pid;

/* A segment call's failure in words: status, the library's detail and, for VS_ESYS, errno. */
std::string vs_error(const char *call, const std::string &name, int rc)
{
    int e = errno;
    return fmt("%s(%s): %s (%s%s%s)", call, name.c_str(), vs_strerror(rc), vs_last_detail(),
               rc == VS_ESYS ? ": " : "", rc == VS_ESYS ? strerror(e) : "");
}

std::string unique_name(const char *what) { return fmt("vsbench-%d-%s", (int)getpid(), what); }

/* varslot and Boost both put a POSIX shm object named N (or /N) at /dev/shm/N. */
void track(const std::string &name, bool on)
{
    std::string path = "/dev/shm/" + name.substr(name[0] == '/' ? 1 : 0);
    for (auto &slot : g_tracked) {
        if (on && !slot[0]) {
            snprintf(slot, sizeof slot, "%s", path.c_str());
            return;
        }
        if (!on && path == slot) {
            slot[0] = 0;
            return;
        }
    }
}

/* Only the main process removes anything: a child's exit must not take the parent's segments. */
void remove_tracked()
{
    if (getpid() != g_main_pid)
        return;
    for (auto &slot : g_tracked)
        if (slot[0]) {
            unlink(slot);
            slot[0] = 0;
        }
}

void on_fatal_signal(int sig)
{
    remove_tracked();
    signal(sig, SIG_DFL);
    raise(sig);
}

class VsSegment {
public:
    VsSegment() { reset(); }
    ~VsSegment() { close(); }
    VsSegment(const VsSegment &) = delete;
    VsSegment &operator=(const VsSegment &) = delete;

    /* Returns the status so a caller can retry with a smaller size; throws on nothing. */
    int try_create(const std::string &name, const vs_class_config *classes, size_t n,
                   int32_t decay_ms = INT32_MIN /* the default */)
    {
        close();
        vs_segment_options o{};
        o.classes = classes;
        o.class_count = n;
        if (decay_ms != INT32_MIN) {
            o.flags = VS_SEGMENT_DECAY;
            o.decay_ms = decay_ms;
        }
        track(name, true); /* before creating: a signal in between still removes it */
        int rc = vs_segment_create(&seg_, name.c_str(), &o);
        if (rc != VS_OK) {
            track(name, false);
            return rc;
        }
        name_ = name;
        owner_ = open_ = true;
        return rc;
    }
    void create(const std::string &name, const vs_class_config *classes, size_t n,
                int32_t decay_ms = INT32_MIN)
    {
        int rc = try_create(name, classes, n, decay_ms);
        if (rc != VS_OK)
            throw Failure(vs_error("vs_segment_create", name, rc));
    }
    void open(const std::string &name)
    {
        close();
        int rc = vs_segment_open(&seg_, name.c_str());
        if (rc != VS_OK)
            throw Failure(vs_error("vs_segment_open", name, rc));
        name_ = name;
        open_ = true;
    }
    uint8_t join()
    {
        uint8_t peer = 0;
        int rc = vs_segment_join(&seg_, &peer);
        if (rc != VS_OK)
            throw Failure(vs_error("vs_segment_join", name_, rc));
        return peer;
    }
    void close()
    {
        if (open_)
            vs_segment_close(&seg_);
        if (owner_) {
            vs_segment_unlink(name_.c_str());
            track(name_, false);
        }
        reset();
    }
    vs_segment *seg() { return &seg_; }
    const vs_pool *pool() { return vs_segment_pool(&seg_); }

private:
    void reset()
    {
        std::memset(&seg_, 0, sizeof seg_);
        seg_.fd = -1;
        open_ = owner_ = false;
        name_.clear();
    }
    vs_segment seg_;
    std::string name_;
    bool open_, owner_;
};

/* Removes a Boost segment now (a leftover) and again when it goes out of scope. */
class BoostName {
public:
    explicit BoostName(std::string name) : name_(std::move(name))
    {
        track(name_, true);
        bip::shared_memory_object::remove(name_.c_str());
    }
    ~BoostName()
    {
        bip::shared_memory_object::remove(name_.c_str());
        track(name_, false);
    }
    const char *c_str() const { return name_.c_str(); }

private:
    std::string name_;
};

const size_t kBoostSize = 16u << 20;

/* ---- child processes ---- */

/* Children started by one measurement; any still running when it ends (normally or by an
 * exception) are killed and waited for, so a failure never leaves a process behind. */
class Children {
public:
    ~Children()
    {
        for (pid_t p : pids_) {
            kill(p, SIGKILL);
            while (waitpid(p, nullptr, 0) < 0 && errno == EINTR) {
            }
        }
    }
    /* body runs in the child; its return value is the child's exit status. */
    pid_t spawn(const std::function<int()> &body)
    {
        fflush(stdout);
        fflush(stderr);
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0)
            throw Failure(fmt("fork: %s", strerror(errno)));
        if (pid == 0) {
            /* A child must not outlive a killed parent (the reap child waits forever). */
            if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
                _exit(93);
            int rc = 90;
            try {
                rc = body();
            } catch (const std::exception &e) {
                fprintf(stderr, "bench_core child %d: %s\n", (int)getpid(), e.what());
                rc = 91;
            } catch (...) {
                rc = 92;
            }
            _exit(rc); /* no atexit handlers, no destructors of the parent's objects */
        }
        pids_.push_back(pid);
        return pid;
    }
    /* Waits for pid; a child that did not exit 0 (or die of expect_signal) fails the measurement. */
    void wait(pid_t pid, const char *what, int expect_signal = 0)
    {
        int st = 0;
        while (waitpid(pid, &st, 0) < 0)
            if (errno != EINTR)
                throw Failure(fmt("waitpid: %s", strerror(errno)));
        pids_.erase(std::remove(pids_.begin(), pids_.end(), pid), pids_.end());
        check_status(st, what, expect_signal);
    }
    /* Waits for every child in the order they end: the first that fails throws at once, and
     * the destructor kills the others (which may be waiting for it). */
    void wait_all(const char *what)
    {
        while (!pids_.empty()) {
            int st = 0;
            pid_t p = waitpid(-1, &st, 0);
            if (p < 0 && errno == EINTR)
                continue;
            if (p < 0)
                throw Failure(fmt("waitpid: %s", strerror(errno)));
            auto it = std::find(pids_.begin(), pids_.end(), p);
            if (it == pids_.end())
                continue; /* not started here */
            pids_.erase(it);
            check_status(st, what, 0);
        }
    }
    /* Throws if a child already ended: used while waiting for children to get ready. */
    void check_alive(const char *what)
    {
        for (pid_t p : pids_) {
            int st;
            if (waitpid(p, &st, WNOHANG) == p) {
                pids_.erase(std::remove(pids_.begin(), pids_.end(), p), pids_.end());
                throw Failure(fmt("%s: child ended early (status 0x%x)", what, st));
            }
        }
    }

private:
    static void check_status(int st, const char *what, int expect_signal)
    {
        bool ok = expect_signal ? WIFSIGNALED(st) && WTERMSIG(st) == expect_signal
                                : WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (!ok)
            throw Failure(WIFSIGNALED(st) ? fmt("%s: child killed by signal %d", what, WTERMSIG(st))
                                          : fmt("%s: child exited with status %d", what,
                                                WEXITSTATUS(st)));
    }
    std::vector<pid_t> pids_;
};

/* Memory shared with the children (MAP_SHARED|MAP_ANONYMOUS survives fork). */
template <class T> class SharedBlock {
public:
    SharedBlock()
    {
        void *p = mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            throw Failure(fmt("mmap: %s", strerror(errno)));
        t_ = new (p) T();
    }
    ~SharedBlock() { munmap(t_, sizeof(T)); }
    T *operator->() { return t_; }
    T &operator*() { return *t_; }
    T *get() { return t_; }

private:
    T *t_;
};

struct Pipe {
    int fd[2] = {-1, -1};
    Pipe()
    {
        if (pipe2(fd, O_CLOEXEC) != 0)
            throw Failure(fmt("pipe: %s", strerror(errno)));
    }
    ~Pipe()
    {
        close_end(0);
        close_end(1);
    }
    void close_end(int i)
    {
        if (fd[i] >= 0)
            ::close(fd[i]);
        fd[i] = -1;
    }
};

/* ---- the report ---- */

enum class Verdict { Pass, Miss, Info, Failed };

struct Row {
    std::string what, value, anchor, anchor_value, ratio, target;
    Verdict verdict;
};

std::vector<Row> g_rows;
std::vector<std::string> g_notes;

std::string ns(double v)
{
    return v >= 10000 ? fmt("%.1f us", v / 1000) : fmt(v < 100 ? "%.1f ns" : "%.0f ns", v);
}
std::string ns(const Stat &s)
{
    double spread = s.median > 0 ? (s.hi - s.lo) / 2 / s.median * 100 : 0;
    return ns(s.median) + fmt(" ±%.0f%%", spread);
}
std::string ratio(double r) { return fmt(r < 0.1 ? "%.3fx" : "%.2fx", r); }
Verdict check(bool ok) { return ok ? Verdict::Pass : Verdict::Miss; }

void row(std::string what, std::string value, std::string anchor, std::string anchor_value,
         std::string r, std::string target, Verdict v)
{
    g_rows.push_back({std::move(what), std::move(value), std::move(anchor), std::move(anchor_value),
                      std::move(r), std::move(target), v});
}

/* ---- 1. single-thread allocate+free pair ---- */

const vs_class_config kPairClasses[] = {{512, 4096}, {8192, 256}};

double vs_pairs(const vs_pool *pool, uint8_t peer, long n)
{
    vs_slot_ref ref;
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        if (!vs_pool_allocate(pool, 512, peer, &ref))
            throw Failure("vs_pool_allocate(512) failed on an idle pool");
        escape(&ref);
        if (vs_pool_free(pool, ref) != VS_OK)
            throw Failure("vs_pool_free of a fresh slot failed");
    }
    return (double)(now_ns() - t0) / (double)n;
}

double malloc_pairs(long n)
{
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        char *p = static_cast<char *>(malloc(512));
        if (!p)
            throw Failure("malloc(512) failed");
        p[0] = (char)i;
        escape(p);
        free(p);
    }
    return (double)(now_ns() - t0) / (double)n;
}

double boost_pairs(bip::managed_shared_memory &m, long n)
{
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        char *p = static_cast<char *>(m.allocate(512)); /* throws bad_alloc when full */
        p[0] = (char)i;
        escape(p);
        m.deallocate(p);
    }
    return (double)(now_ns() - t0) / (double)n;
}

/* The design's floor on this machine: a pair is at least two CAS on the slot word (the claim
 * and the release), whatever else the allocator does. */
double cas_floor_pairs(long n)
{
    static std::atomic<uint64_t> word{0};
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        uint64_t w = word.load(std::memory_order_relaxed);
        word.compare_exchange_weak(w, w + 1, std::memory_order_acquire, std::memory_order_relaxed);
        w = word.load(std::memory_order_relaxed);
        word.compare_exchange_weak(w, w + 1, std::memory_order_release, std::memory_order_relaxed);
    }
    return (double)(now_ns() - t0) / (double)n;
}

void bench_single_thread()
{
    const char *what = "1 alloc+free pair, 512 B, 1 thread";
    VsSegment vs;
    vs.create("/" + unique_name("pair"), kPairClasses, 2);
    uint8_t peer = vs.join();
    BoostName bname(unique_name("boost-pair"));
    bip::managed_shared_memory bm(bip::create_only, bname.c_str(), kBoostSize);

    long nv = iters(5000000), nm = iters(5000000), nb = iters(1000000);
    auto st = interleaved({[&] { return vs_pairs(vs.pool(), peer, nv); },
                           [&] { return malloc_pairs(nm); },
                           [&] { return boost_pairs(bm, nb); },
                           [&] { return cas_floor_pairs(nv); }});
    double v = st[0].median, m = st[1].median, b = st[2].median;
    row(what, ns(st[0]), "-", "-", "-", "<= 8 ns", check(v <= 8));
    row("  vs glibc", ns(v), "malloc(512)+free", ns(st[1]), ratio(v / m), "<= 2x", check(v / m <= 2));
    row("  vs Boost", ns(v), "bip managed_shm", ns(st[2]), ratio(v / b), "<= 0.08x",
        check(v / b <= 0.08));
    row("  vs its floor", ns(v), "2 CAS on one word", ns(st[3]), ratio(v / st[3].median), "(none)",
        Verdict::Info);
}

/* ---- 2. two processes on one class of one segment ---- */

struct RaceBoard {
    std::atomic<int> ready{0};
    std::atomic<int> go{0};
    uint64_t t0[2], t1[2];
};

/* Forks two children that each set up with `setup` and then run `loop(n)` at the same
 * moment: both spin (yielding) on a shared flag that the parent raises once both are ready,
 * so both are on a CPU when it flips. Returns the wall time from the first start to the
 * last end, in ns per pair per process; *overlap gets the share of it both were running. */
using RaceSetup = std::function<std::function<void(long)>(int child)>;
double race_two(const char *what, long n, const RaceSetup &setup, double *overlap)
{
    SharedBlock<RaceBoard> board;
    Children kids;
    pid_t pid[2];
    for (int k = 0; k < 2; k++)
        pid[k] = kids.spawn([&, k] {
            std::function<void(long)> loop = setup(k);
            loop(std::max(1L, n / 10)); /* warm-up: caches, page faults, thread cache */
            board->ready.fetch_add(1);
            while (!board->go.load(std::memory_order_acquire))
                sched_yield(); /* leaves the parent a CPU to raise the flag */
            board->t0[k] = now_ns();
            loop(n);
            board->t1[k] = now_ns();
            return 0;
        });
    uint64_t deadline = now_ns() + 60000000000ull;
    while (board->ready.load() < 2) {
        kids.check_alive(what);
        if (now_ns() > deadline)
            throw Failure(fmt("%s: children not ready after 60 s", what));
        usleep(200);
    }
    board->go.store(1, std::memory_order_release);
    for (int k = 0; k < 2; k++)
        kids.wait(pid[k], what);
    uint64_t start = std::min(board->t0[0], board->t0[1]), end = std::max(board->t1[0], board->t1[1]);
    uint64_t ostart = std::max(board->t0[0], board->t0[1]), oend = std::min(board->t1[0], board->t1[1]);
    *overlap = oend > ostart ? (double)(oend - ostart) / (double)(end - start) : 0;
    return (double)(end - start) / (double)n;
}

void bench_two_processes()
{
    const char *what = "2 alloc+free pair, 512 B, 2 processes";
    /* Children open segments by name, like unrelated processes would. "own" gives each child
     * a segment of its own: nothing shared, so the ratio to it is the cost of sharing one
     * segment, apart from what two busy processes cost each other on this machine. */
    VsSegment shared, own[2];
    std::string sname = "/" + unique_name("race"), oname[2];
    shared.create(sname, kPairClasses, 2);
    for (int k = 0; k < 2; k++) {
        oname[k] = "/" + unique_name(k ? "race-own1" : "race-own0");
        own[k].create(oname[k], kPairClasses, 2);
    }
    BoostName bname(unique_name("boost-race"));

    long nv = iters(2000000), nb = iters(400000);
    auto vs_setup = [](const std::string &name) -> std::function<void(long)> {
        auto seg = std::make_shared<VsSegment>();
        seg->open(name);
        uint8_t peer = seg->join();
        return [seg, peer](long n) { vs_pairs(seg->pool(), peer, n); };
    };
    std::vector<double> overlaps;
    auto race = [&](const char *label, long n, const RaceSetup &setup) {
        return [&, label, n, setup] {
            double o, r = race_two(label, n, setup, &o);
            overlaps.push_back(o);
            return r;
        };
    };
    auto st = interleaved(
        {race("varslot, one shared segment", nv, [&](int) { return vs_setup(sname); }),
         race("Boost, one shared segment", nb,
              [&](int) -> std::function<void(long)> {
                  auto m = std::make_shared<bip::managed_shared_memory>(
                      bip::open_or_create, bname.c_str(), kBoostSize); /* both race to create */
                  return [m](long n) { boost_pairs(*m, n); };
              }),
         race("varslot, a segment each", nv, [&](int k) { return vs_setup(oname[k]); })});
    double v = st[0].median, b = st[1].median;
    row(what, ns(st[0]), "bip managed_shm", ns(st[1]), ratio(v / b), "<= 0.05x", check(v / b <= 0.05));
    row("  vs no sharing", ns(v), "a segment each", ns(st[2]), ratio(v / st[2].median), "(none)",
        Verdict::Info);
    g_notes.push_back(fmt("2: ns per pair per process = wall time (first start .. last end) / pairs "
                          "per process; in every run the two processes overlapped for >= %.0f%% of "
                          "that time.",
                          100 * summarize(overlaps).lo));
}

/* ---- 3. batch: allocate 64, then free 64 ---- */

const int kBatch = 64;

double vs_batches(const vs_pool *pool, uint8_t peer, long rounds)
{
    vs_slot_ref refs[kBatch];
    uint64_t t0 = now_ns();
    for (long r = 0; r < rounds; r++) {
        for (int i = 0; i < kBatch; i++)
            if (!vs_pool_allocate(pool, 512, peer, &refs[i]))
                throw Failure("vs_pool_allocate(512) failed in a batch of 64");
        escape(refs);
        for (int i = 0; i < kBatch; i++)
            if (vs_pool_free(pool, refs[i]) != VS_OK)
                throw Failure("vs_pool_free failed in a batch of 64");
    }
    return (double)(now_ns() - t0) / (double)(rounds * kBatch);
}

double malloc_batches(long rounds)
{
    char *p[kBatch];
    uint64_t t0 = now_ns();
    for (long r = 0; r < rounds; r++) {
        for (int i = 0; i < kBatch; i++) {
            p[i] = static_cast<char *>(malloc(512));
            if (!p[i])
                throw Failure("malloc(512) failed");
            p[i][0] = (char)i;
        }
        escape(p);
        for (int i = 0; i < kBatch; i++)
            free(p[i]);
    }
    return (double)(now_ns() - t0) / (double)(rounds * kBatch);
}

double boost_batches(bip::managed_shared_memory &m, long rounds)
{
    char *p[kBatch];
    uint64_t t0 = now_ns();
    for (long r = 0; r < rounds; r++) {
        for (int i = 0; i < kBatch; i++) {
            p[i] = static_cast<char *>(m.allocate(512));
            p[i][0] = (char)i;
        }
        escape(p);
        for (int i = 0; i < kBatch; i++)
            m.deallocate(p[i]);
    }
    return (double)(now_ns() - t0) / (double)(rounds * kBatch);
}

void bench_batch()
{
    VsSegment vs;
    vs.create("/" + unique_name("batch"), kPairClasses, 2);
    uint8_t peer = vs.join();
    BoostName bname(unique_name("boost-batch"));
    bip::managed_shared_memory bm(bip::create_only, bname.c_str(), kBoostSize);

    long rv = iters(60000), rm = iters(60000), rb = iters(15000);
    auto st = interleaved({[&] { return vs_batches(vs.pool(), peer, rv); },
                           [&] { return malloc_batches(rm); },
                           [&] { return boost_batches(bm, rb); }});
    double v = st[0].median;
    row("3 alloc 64 then free 64, 512 B, per pair", ns(st[0]), "malloc(512)+free", ns(st[1]),
        ratio(v / st[1].median), "(none)", Verdict::Info);
    row("  vs Boost", ns(v), "bip managed_shm", ns(st[2]), ratio(v / st[2].median), "(none)",
        Verdict::Info);
}

/* ---- 4. memory ---- */

/* Boost's bookkeeping per 512 B block, from the free-memory counter of a fresh segment. */
double boost_overhead_per_block()
{
    BoostName bname(unique_name("boost-mem"));
    bip::managed_shared_memory bm(bip::create_only, bname.c_str(), kBoostSize);
    const int n = 4096;
    std::vector<void *> blocks;
    size_t before = bm.get_free_memory();
    for (int i = 0; i < n; i++)
        blocks.push_back(bm.allocate(512));
    size_t after = bm.get_free_memory();
    for (void *p : blocks)
        bm.deallocate(p);
    return (double)(before - after) / n - 512;
}

void bench_metadata()
{
    const vs_class_config big[] = {{64u << 10, 16384}};
    size_t total = vs_pool_required_size(big, 1);
    if (total == 0)
        throw Failure("vs_pool_required_size rejected 64 KiB x 16384");
    double slots = big[0].slot_count, data = (double)big[0].slot_size * big[0].slot_count;
    double per_slot = ((double)total - data) / slots;
    double boost = boost_overhead_per_block();
    row("4 metadata per slot (64 KiB x 16384)", fmt("%.3f B", per_slot), "bip header/512 B block",
        fmt("%.1f B", boost), ratio(per_slot / boost), "<= 16.5 B", check(per_slot <= 16.5));
}

struct Rss {
    long vm_kib, shmem_kib;
};

/* VmRSS and RssShmem of this process, read without malloc (a heap page must not show up). */
Rss read_rss()
{
    char buf[16384];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        throw Failure(fmt("/proc/self/status: %s", strerror(errno)));
    size_t len = 0;
    ssize_t got;
    while (len < sizeof buf - 1 && (got = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)got;
    close(fd);
    buf[len] = 0;
    auto field = [&](const char *name) {
        const char *p = strstr(buf, name);
        if (!p)
            throw Failure(fmt("/proc/self/status has no %s", name));
        return strtol(p + strlen(name), nullptr, 10);
    };
    return {field("VmRSS:"), field("RssShmem:")};
}

void bench_resident()
{
    VsSegment vs;
    vs_class_config big[] = {{1u << 20, 2048}}; /* 2 GiB of address space */
    std::string name = "/" + unique_name("rss");
    read_rss(); /* fault in this function's own stack and code first */
    Rss before = read_rss();
    int rc;
    while ((rc = vs.try_create(name, big, 1)) == VS_ENOSPC && big[0].slot_count > 256)
        big[0].slot_count /= 2; /* a small /dev/shm: still show untouched slots are free */
    if (rc != VS_OK)
        throw Failure(vs_error("vs_segment_create", name, rc));
    uint8_t peer = vs.join();
    Rss joined = read_rss();

    size_t seg_bytes = vs.seg()->map_len;
    size_t data_bytes = (size_t)big[0].slot_size * big[0].slot_count;
    long bookkeeping_kib = (long)((seg_bytes - data_bytes) / 1024);
    long grew = joined.vm_kib - before.vm_kib;
    long limit = bookkeeping_kib + 64;
    row(fmt("4 RSS after create+join (%zu MiB seg)", seg_bytes >> 20),
        fmt("+%ld KiB (shm +%ld)", grew, joined.shmem_kib - before.shmem_kib), "segment size",
        fmt("%zu KiB", seg_bytes / 1024), ratio((double)grew * 1024 / (double)seg_bytes),
        fmt("<= %ld KiB", limit), check(grew <= limit));
    g_notes.push_back(fmt("4: RSS target = the segment's non-slot bytes (header, peer table, slot "
                          "words, bitmap: %ld KiB) + 64 KiB slack; slot data must cost nothing "
                          "until touched.",
                          bookkeeping_kib));

    vs_slot_ref ref;
    if (!vs_pool_allocate(vs.pool(), big[0].slot_size, peer, &ref))
        throw Failure("cannot allocate one slot of the big segment");
    void *data = vs_pool_slot_data(vs.pool(), &ref);
    if (!data)
        throw Failure("vs_pool_slot_data returned NULL for a fresh slot");
    memset(data, 0xa5, big[0].slot_size);
    Rss touched = read_rss();
    long slot_kib = big[0].slot_size / 1024, one = touched.vm_kib - joined.vm_kib;
    double r = (double)one / (double)slot_kib;
    row("4 RSS after touching 1 slot", fmt("+%ld KiB (shm +%ld)", one, touched.shmem_kib - joined.shmem_kib),
        "slot size", fmt("%ld KiB", slot_kib), ratio(r), "1.00x .. 1.10x", check(r >= 1.0 && r <= 1.1));
    vs_pool_free(vs.pool(), ref);
}

/* ---- 5. reaping a dead peer ---- */

const vs_class_config kReapClasses[] = {{64, 50000}, {128, 30000}, {256, 20000}};
const size_t kReapClassCount = 3;
const long kReapSlots = 100000;

/* Allocates every slot, class by class (a size that fits exactly, so no request spills
 * into a larger class). Returns how many it got. */
long allocate_all(const vs_pool *pool, uint8_t peer, std::vector<vs_slot_ref> *keep)
{
    long got = 0;
    vs_slot_ref ref;
    for (size_t c = 0; c < kReapClassCount; c++)
        for (uint32_t i = 0; i < kReapClasses[c].slot_count; i++) {
            if (!vs_pool_allocate(pool, kReapClasses[c].slot_size, peer, &ref))
                return got;
            if (keep)
                keep->push_back(ref);
            got++;
        }
    return got;
}

struct ReapBoard {
    long allocated;
};

/* One repetition: a child joins, takes every slot, is SIGKILLed; the parent times the reap. */
double reap_once(const std::string &name, VsSegment &seg)
{
    SharedBlock<ReapBoard> board;
    Pipe ready;
    Children kids;
    pid_t pid = kids.spawn([&] {
        ready.close_end(0);
        VsSegment s;
        s.open(name);
        board->allocated = allocate_all(s.pool(), s.join(), nullptr);
        if (write(ready.fd[1], "r", 1) != 1)
            return 1;
        for (;;)
            pause(); /* hold everything until killed, like a peer that crashed */
    });
    ready.close_end(1);
    char c;
    ssize_t got;
    while ((got = read(ready.fd[0], &c, 1)) < 0 && errno == EINTR) {
    }
    if (got != 1) {
        kids.wait(pid, "reap child"); /* reports how it ended */
        throw Failure("reap child ended before taking the slots");
    }
    kill(pid, SIGKILL);
    kids.wait(pid, "reap child", SIGKILL);
    if (board->allocated < kReapSlots * 9 / 10)
        throw Failure(fmt("reap child got only %ld of %ld slots", board->allocated, kReapSlots));

    unsigned reaped = 0;
    uint64_t t0 = now_ns();
    int rc = vs_segment_reap(seg.seg(), &reaped);
    uint64_t t = now_ns() - t0;
    if (rc != VS_OK || reaped != 1)
        throw Failure(fmt("vs_segment_reap: %s, reaped %u peers (expected 1)", vs_strerror(rc), reaped));
    /* Not timed: every slot must be free again. */
    for (size_t c = 0; c < kReapClassCount; c++)
        for (uint32_t i = 0; i < kReapClasses[c].slot_count; i++) {
            vs_slot_info info;
            if (vs_pool_slot_info(seg.pool(), (uint8_t)c, i, &info) != VS_OK || info.state != VS_SLOT_FREE)
                throw Failure(fmt("after reaping, slot %zu/%u is still allocated", c, i));
        }
    return (double)t / 1e6 / ((double)board->allocated / 10000);
}

/* The anchor: the owner itself freeing as many slots one by one (a separate segment, so
 * this process's thread cache never hides slots from the reap children). */
double free_all_once(VsSegment &seg, uint8_t peer)
{
    std::vector<vs_slot_ref> refs;
    refs.reserve(kReapSlots);
    long got = allocate_all(seg.pool(), peer, &refs);
    if (got != kReapSlots)
        throw Failure(fmt("anchor: got %ld of %ld slots", got, kReapSlots));
    uint64_t t0 = now_ns();
    for (const vs_slot_ref &r : refs)
        if (vs_pool_free(seg.pool(), r) != VS_OK)
            throw Failure("anchor: vs_pool_free failed");
    return (double)(now_ns() - t0) / 1e6 / ((double)got / 10000);
}

void bench_reap()
{
    std::string name = "/" + unique_name("reap");
    VsSegment seg, ref_seg;
    seg.create(name, kReapClasses, kReapClassCount); /* the parent reaps; it never joins */
    ref_seg.create("/" + unique_name("reap-anchor"), kReapClasses, kReapClassCount);
    uint8_t peer = ref_seg.join();
    auto st = interleaved({[&] { return reap_once(name, seg); },
                           [&] { return free_all_once(ref_seg, peer); }});
    double v = st[0].median;
    row("5 reap a SIGKILLed peer (100k slots), per 10k", fmt("%.3f ms ±%.0f%%", v,
                                                             (st[0].hi - st[0].lo) / 2 / v * 100),
        "owner frees them", fmt("%.3f ms", st[1].median), ratio(v / st[1].median), "<= 1 ms",
        check(v <= 1.0));
}

/* ---- 6. hand-off: A allocates and writes a slot, B takes it, reads it and frees it ---- */

/* Varslot's users hand slots over: A allocates and writes, passes the handle, B reads and
 * frees. Here the handle goes through a single-producer single-consumer ring in shared
 * memory; the ring alone, passing integers, is the floor any allocator adds to. Each figure
 * is ns per handed-off item: from the go flag to the last consumer's last item. */

const unsigned kRingEntries = 256;
const int kMaxPairs = 2;

/* tail and head on lines of their own, so the producer's and the consumer's stores never
 * share a line. */
struct HandoffRing {
    alignas(64) std::atomic<uint64_t> tail{0}; /* written by the producer only */
    alignas(64) std::atomic<uint64_t> head{0}; /* written by the consumer only */
    alignas(64) uint64_t entry[kRingEntries];
};

struct HandoffBoard {
    alignas(64) std::atomic<int> ready{0};
    alignas(64) std::atomic<int> go{0};
    alignas(64) std::atomic<long> failed_allocations{0};
    uint64_t end_ns[kMaxPairs]; /* each consumer's last item */
    std::atomic<int> taken_all[kMaxPairs]; /* the consumer holds every item its producer sent */
    alignas(64) uint8_t producer_peer[kMaxPairs]; /* written before the first push, then only read */
    HandoffRing ring[kMaxPairs];
};

inline void cpu_relax()
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

/* Spins with pause; every 2000 spins yields, since on a loaded 2-CPU machine the side we
 * wait for may need this CPU. */
class Backoff {
public:
    void relax()
    {
        if (++spins_ > 2000) {
            spins_ = 0;
            sched_yield();
        } else {
            cpu_relax();
        }
    }

private:
    unsigned spins_ = 0;
};

/* The producer's end. It keeps its own copy of head and reads the shared one only when the
 * ring looks full; depth (<= kRingEntries) is how many entries may wait in it. */
class RingWriter {
public:
    RingWriter(HandoffRing *r, unsigned depth) : r_(r), depth_(depth) {}
    void wait_room()
    {
        Backoff b;
        while (tail_ - head_ >= depth_) {
            head_ = r_->head.load(std::memory_order_acquire);
            if (tail_ - head_ >= depth_)
                b.relax();
        }
    }
    void push(uint64_t v)
    {
        wait_room();
        r_->entry[tail_ % kRingEntries] = v;
        r_->tail.store(++tail_, std::memory_order_release);
    }
    uint64_t pushed() const { return tail_; }

private:
    HandoffRing *r_;
    unsigned depth_;
    uint64_t tail_ = 0, head_ = 0;
};

/* The consumer's end, the mirror image. An entry's place is free again as soon as it is popped. */
class RingReader {
public:
    explicit RingReader(HandoffRing *r) : r_(r) {}
    uint64_t pop()
    {
        Backoff b;
        while (head_ == tail_) {
            tail_ = r_->tail.load(std::memory_order_acquire);
            if (head_ == tail_)
                b.relax();
        }
        uint64_t v = r_->entry[head_ % kRingEntries];
        r_->head.store(++head_, std::memory_order_release);
        return v;
    }

private:
    HandoffRing *r_;
    uint64_t head_ = 0, tail_ = 0;
};

/* Item i's payload: every byte is i's low byte, so every uint64_t word reads fill_word(i). The
 * consumer sums the words it reads and the total is checked, so a hand-off that delivered
 * the wrong bytes fails the measurement instead of timing it. */
inline int fill_byte(long i) { return (int)(uint8_t)i; }
inline uint64_t fill_word(long i) { return 0x0101010101010101ull * (uint8_t)i; }
inline uint64_t sum_words(const void *p, size_t bytes)
{
    const uint64_t *w = static_cast<const uint64_t *>(p);
    uint64_t s = 0;
    for (size_t j = 0; j < bytes / 8; j++)
        s += w[j];
    return s;
}

/* Maps every page of [p, p + len) into this process, writable, before the timed part: a
 * long-lived process takes those faults once, whatever the allocator, and a short warm-up
 * would leave some of them in the figure (a 1 MiB slot is 256 write faults). */
void map_in(void *p, size_t len)
{
    if (madvise(p, len, MADV_POPULATE_WRITE) != 0)
        throw Failure(fmt("madvise(MADV_POPULATE_WRITE, %zu bytes): %s (Linux >= 5.14 needed)", len,
                          strerror(errno)));
}

void map_in(VsSegment &seg)
{
    void *addr;
    size_t len;
    if (vs_segment_mapping(seg.seg(), &addr, &len, nullptr) != VS_OK)
        throw Failure("vs_segment_mapping failed on an open segment");
    map_in(addr, len);
}

struct HandoffShape {
    int pairs;      /* producer/consumer pairs, each with a ring of its own */
    unsigned depth; /* entries that may wait in a ring */
    long items;     /* handed over in all, split between the pairs */
    size_t words;   /* payload words the consumer reads per item */
};

struct HandoffResult {
    double ns_per_item;
    long failed_allocations;
};

void arrive_and_wait(HandoffBoard &b)
{
    b.ready.fetch_add(1);
    while (!b.go.load(std::memory_order_acquire))
        sched_yield(); /* leaves the parent a CPU to raise the flag */
}

/* A pair's producer and consumer run on different CPUs: left to the scheduler, both
 * sometimes share one, and the ring then moves in scheduler-sized batches (seen: 3.6 ns per
 * integer instead of 22, 71 ns per slot instead of 275), which is not a hand-off between
 * cores. Without a second CPU, nothing is pinned. */
void pin_to_cpu(int cpu)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 2)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu % (int)n, &set);
    sched_setaffinity(0, sizeof set, &set); /* a refusal (a cpuset) leaves it unpinned */
}

/* Forks a producer and a consumer per pair. In its child, make_producer(pair, board) opens
 * what it needs and returns step(i, writer), which hands item i over; make_consumer(pair,
 * board) returns take(popped entry), which returns the sum of the payload words it read.
 * They first hand a tenth of the items over untimed (caches, thread caches, the ring in its
 * steady state), then wait for the go flag, raised once all are ready. */
template <class MakeProducer, class MakeConsumer>
HandoffResult handoff(const char *what, const HandoffShape &shape, const MakeProducer &make_producer,
                      const MakeConsumer &make_consumer)
{
    if (shape.pairs < 1 || shape.pairs > kMaxPairs || shape.depth < 1 || shape.depth > kRingEntries)
        throw Failure(fmt("%s: bad hand-off shape", what));
    SharedBlock<HandoffBoard> board;
    Children kids;
    long per_pair = std::max(1L, shape.items / shape.pairs), warm = std::max(1L, per_pair / 10);
    for (int k = 0; k < shape.pairs; k++) {
        kids.spawn([&, k] {
            pin_to_cpu(2 * k);
            auto step = make_producer(k, *board);
            RingWriter w(&board->ring[k], shape.depth);
            for (long i = 0; i < warm; i++)
                step(i, w);
            arrive_and_wait(*board);
            for (long i = warm; i < warm + per_pair; i++)
                step(i, w);
            /* step's segment must stay joined until B took the last slots: leaving would
             * return the ones still in the ring. Sleeping leaves B the CPU. */
            while (!board->taken_all[k].load(std::memory_order_acquire))
                usleep(100);
            return 0;
        });
        kids.spawn([&, k] {
            pin_to_cpu(2 * k + 1);
            auto take = make_consumer(k, *board);
            RingReader r(&board->ring[k]);
            uint64_t sum = 0;
            for (long i = 0; i < warm; i++)
                sum += take(r.pop());
            arrive_and_wait(*board);
            for (long i = warm; i < warm + per_pair; i++)
                sum += take(r.pop());
            board->end_ns[k] = now_ns();
            board->taken_all[k].store(1, std::memory_order_release);
            uint64_t expect = 0;
            for (long i = 0; i < warm + per_pair; i++)
                expect += fill_word(i) * shape.words;
            if (sum != expect)
                throw Failure(fmt("%s: consumer %d read payloads its producer did not write", what, k));
            return 0;
        });
    }
    uint64_t deadline = now_ns() + 60000000000ull;
    while (board->ready.load() < 2 * shape.pairs) {
        kids.check_alive(what);
        if (now_ns() > deadline)
            throw Failure(fmt("%s: children not ready after 60 s", what));
        usleep(200);
    }
    uint64_t t0 = now_ns();
    board->go.store(1, std::memory_order_release);
    kids.wait_all(what);
    uint64_t end = *std::max_element(board->end_ns, board->end_ns + shape.pairs);
    return {(double)(end - t0) / (double)(per_pair * shape.pairs), board->failed_allocations.load()};
}

/* ---- the sides: the ring alone, varslot, Boost, fixed buffers ---- */

auto ring_producer()
{
    return [](int, HandoffBoard &) { return [](long i, RingWriter &w) { w.push(fill_word(i)); }; };
}
auto ring_consumer()
{
    return [](int, HandoffBoard &) { return [](uint64_t v) { return v; }; };
}

/* A child's view of the segment, the way an unrelated process gets it: open by name, join. */
std::shared_ptr<VsSegment> open_mapped(const std::string &name, uint8_t *me)
{
    auto seg = std::make_shared<VsSegment>();
    seg->open(name);
    map_in(*seg);
    *me = seg->join();
    return seg;
}

/* A: allocate `size`, write `bytes` of it, hand the handle over. A full pool is counted and
 * waited out (the consumer frees), for 10 s at most: longer means slots were lost. */
auto vs_producer(const std::string &name, uint32_t size, size_t bytes)
{
    return [name, size, bytes](int pair, HandoffBoard &b) {
        uint8_t me;
        auto seg = open_mapped(name, &me);
        b.producer_peer[pair] = me;
        const vs_pool *pool = seg->pool();
        std::atomic<long> *failed = &b.failed_allocations;
        return [seg, pool, me, size, bytes, failed](long i, RingWriter &w) {
            vs_slot_ref ref;
            Backoff wait;
            uint64_t since = 0;
            while (!vs_pool_allocate(pool, size, me, &ref)) {
                failed->fetch_add(1, std::memory_order_relaxed);
                if (!since)
                    since = now_ns();
                else if (now_ns() - since > 10000000000ull)
                    throw Failure(fmt("no free %u B slot for 10 s: slots were lost", size));
                wait.relax();
            }
            void *p = vs_pool_slot_data(pool, &ref);
            if (!p)
                throw Failure("vs_pool_slot_data returned NULL for a fresh slot");
            memset(p, fill_byte(i), bytes);
            vs_pool_handed_over(pool, ref); /* the sender's side of the documented pattern */
            w.push(vs_slot_ref_pack(ref));
        };
    };
}

/* B: take the slot (vs_pool_transfer from A, unless `transfer` is false: the reference
 * design's pattern, freeing what another peer allocated), read `bytes`, free it. */
auto vs_consumer(const std::string &name, size_t bytes, bool transfer)
{
    return [name, bytes, transfer](int pair, HandoffBoard &b) {
        uint8_t me;
        auto seg = open_mapped(name, &me);
        const vs_pool *pool = seg->pool();
        const uint8_t *from = &b.producer_peer[pair]; /* set before the first entry arrives */
        return [seg, pool, me, bytes, transfer, from](uint64_t h) {
            vs_slot_ref ref = vs_slot_ref_unpack(h);
            int rc = transfer ? vs_pool_transfer(pool, ref, *from, me) : VS_OK;
            if (rc != VS_OK)
                throw Failure(fmt("vs_pool_transfer of a handed-off slot from peer %u to %u: %s",
                                  *from, me, vs_strerror(rc)));
            const void *p = vs_pool_slot_data(pool, &ref);
            if (!p)
                throw Failure("vs_pool_slot_data returned NULL for a handed-off slot");
            uint64_t s = sum_words(p, bytes);
            if (vs_pool_free(pool, ref) != VS_OK)
                throw Failure("vs_pool_free of a handed-off slot failed");
            return s;
        };
    };
}

/* Boost's way: allocate in A, pass the segment-relative handle, deallocate in B. */
auto boost_producer(const std::string &name, size_t size, size_t bytes)
{
    return [name, size, bytes](int, HandoffBoard &) {
        auto m = std::make_shared<bip::managed_shared_memory>(bip::open_only, name.c_str());
        map_in(m->get_address(), m->get_size());
        return [m, size, bytes](long i, RingWriter &w) {
            void *p = m->allocate(size); /* throws bad_alloc when full */
            memset(p, fill_byte(i), bytes);
            w.push((uint64_t)m->get_handle_from_address(p));
        };
    };
}
auto boost_consumer(const std::string &name, size_t bytes)
{
    return [name, bytes](int, HandoffBoard &) {
        auto m = std::make_shared<bip::managed_shared_memory>(bip::open_only, name.c_str());
        map_in(m->get_address(), m->get_size());
        return [m, bytes](uint64_t h) {
            void *p = m->get_address_from_handle((bip::managed_shared_memory::handle_t)h);
            uint64_t s = sum_words(p, bytes);
            m->deallocate(p);
            return s;
        };
    };
}

/* The payload floor: no allocator, the ring passes indices of fixed buffers. depth + 1 of
 * them suffice: the producer writes one while depth - 1 wait and the consumer reads one. */
const unsigned kFixedDepth = 16;
const size_t kFixedMax = 1u << 20;
struct FixedBuffers {
    uint8_t bytes[(kFixedDepth + 1) * kFixedMax];
    /* One word per buffer, a line each, for the anchor that changes owners as varslot does. */
    struct alignas(64) OwnerWord {
        std::atomic<uint64_t> word;
    } owner[kRingEntries + 1]; /* 6c rotates over kRingEntries + 1 buffers */
};

/* The three ownership changes of varslot's hand-off, and nothing else of the allocator: A
 * takes the buffer (free -> A), B takes it from A (A -> B) and gives it back (B -> free),
 * each one CAS on the buffer's word, which the other process wrote last. */
enum { kOwnerFree = 0, kOwnerA = 1, kOwnerB = 2 };
void change_owner(FixedBuffers *bufs, uint64_t k, uint64_t from, uint64_t to)
{
    uint64_t w = from;
    if (!bufs->owner[k].word.compare_exchange_strong(w, to, std::memory_order_acq_rel))
        throw Failure(fmt("fixed buffer %llu: owner %llu, expected %llu", (unsigned long long)k,
                          (unsigned long long)w, (unsigned long long)from));
}

/* How the anchor picks the buffer it writes next. */
enum class Reuse {
    Rotation,      /* buffer k = item % (depth + 1), no owner words */
    OwnedRotation, /* the same, and each side changes the owner word as varslot's hand-off does */
    OwnedFirstFree /* the lowest-numbered buffer whose owner word says free, taken by the CAS:
                      varslot's own choice (its search takes the first free bit) */
};

/* Buffer k of `stride` bytes; `bytes` of it written and read; depth + 1 buffers. */
auto fixed_producer(FixedBuffers *bufs, size_t stride, size_t bytes, unsigned depth,
                    Reuse reuse = Reuse::Rotation)
{
    return [bufs, stride, bytes, depth, reuse](int, HandoffBoard &) {
        map_in(bufs, sizeof *bufs);
        return [bufs, stride, bytes, depth, reuse](long i, RingWriter &w) {
            w.wait_room(); /* with an entry's room, some buffer is free (the rotation's next) */
            uint64_t k = w.pushed() % (depth + 1);
            if (reuse == Reuse::OwnedRotation)
                change_owner(bufs, k, kOwnerFree, kOwnerA);
            if (reuse == Reuse::OwnedFirstFree) {
                Backoff b; /* the consumer may still be giving the last free one back */
                for (k = 0;; k = k == depth ? (b.relax(), 0) : k + 1) {
                    uint64_t free = kOwnerFree;
                    if (bufs->owner[k].word.load(std::memory_order_relaxed) == kOwnerFree &&
                        bufs->owner[k].word.compare_exchange_strong(free, kOwnerA,
                                                                    std::memory_order_acq_rel))
                        break;
                }
            }
            memset(bufs->bytes + k * stride, fill_byte(i), bytes);
            w.push(k);
        };
    };
}
auto fixed_consumer(FixedBuffers *bufs, size_t stride, size_t bytes, bool owned = false)
{
    return [bufs, stride, bytes, owned](int, HandoffBoard &) {
        map_in(bufs, sizeof *bufs);
        return [bufs, stride, bytes, owned](uint64_t k) {
            if (owned)
                change_owner(bufs, k, kOwnerA, kOwnerB);
            uint64_t s = sum_words(bufs->bytes + k * stride, bytes);
            if (owned)
                change_owner(bufs, k, kOwnerB, kOwnerFree);
            return s;
        };
    };
}

/* What one cache line costs to cross between the two processes' CPUs: they take turns
 * incrementing one word. Every figure of section 6 scales with this distance, which the
 * hypervisor may change from one run to the next. ns per one-way crossing. */
struct PingPongBoard {
    alignas(64) std::atomic<int> ready{0};
    std::atomic<int> go{0};
    uint64_t end_ns;
    alignas(64) std::atomic<uint64_t> word{0};
};

double line_crossing(long rounds)
{
    SharedBlock<PingPongBoard> board;
    Children kids;
    for (int k = 0; k < 2; k++)
        kids.spawn([&, k] {
            pin_to_cpu(k); /* as the hand-off's pairs are */
            board->ready.fetch_add(1);
            while (!board->go.load(std::memory_order_acquire))
                sched_yield();
            for (long i = 0; i < rounds; i++) {
                Backoff b;
                while (board->word.load(std::memory_order_acquire) != (uint64_t)(2 * i + k))
                    b.relax();
                board->word.fetch_add(1, std::memory_order_acq_rel);
            }
            if (k == 1)
                board->end_ns = now_ns();
            return 0;
        });
    while (board->ready.load() < 2) {
        kids.check_alive("6 line crossing");
        usleep(200);
    }
    uint64_t t0 = now_ns();
    board->go.store(1, std::memory_order_release);
    kids.wait_all("6 line crossing");
    return (double)(board->end_ns - t0) / (double)(2 * rounds);
}

/* ---- the measurements ---- */

const vs_class_config kHandoffClasses[] = {{1024, 1024}, {16384, 256}, {262144, 32}};
const size_t kHandoffRequest = 512, kHandoffTouch = 64;

/* The segments of 6a-6d, created by the parent, which never joins: children open them by name. */
struct SmallHandoff {
    explicit SmallHandoff(const char *what)
        : vname("/" + unique_name(what)), bname(unique_name((std::string("boost-") + what).c_str()))
    {
        vs.create(vname, kHandoffClasses, 3);
        bip::managed_shared_memory created(bip::create_only, bname.c_str(), kBoostSize);
    }
    double ring(int pairs, long items)
    {
        return handoff("6 ring alone", {pairs, kRingEntries, items, 1}, ring_producer(), ring_consumer())
            .ns_per_item;
    }
    double varslot(int pairs, long items, bool transfer)
    {
        return handoff(transfer ? "6 varslot" : "6 varslot, no transfer",
                       {pairs, kRingEntries, items, kHandoffTouch / 8},
                       vs_producer(vname, kHandoffRequest, kHandoffTouch),
                       vs_consumer(vname, kHandoffTouch, transfer))
            .ns_per_item;
    }
    /* The payload's own cost: the same 64 B written and read, in 257 fixed 512 B buffers. */
    double fixed(int pairs, long items)
    {
        static_assert((kRingEntries + 1) * kHandoffRequest <= sizeof(FixedBuffers), "room");
        return handoff("6 fixed buffers", {pairs, kRingEntries, items, kHandoffTouch / 8},
                       fixed_producer(bufs.get(), kHandoffRequest, kHandoffTouch, kRingEntries),
                       fixed_consumer(bufs.get(), kHandoffRequest, kHandoffTouch))
            .ns_per_item;
    }
    /* The same, and each side changes the buffer's owner word as varslot's hand-off does. */
    double fixed_owned(int pairs, long items)
    {
        return handoff("6 fixed buffers, owner words", {pairs, kRingEntries, items, kHandoffTouch / 8},
                       fixed_producer(bufs.get(), kHandoffRequest, kHandoffTouch, kRingEntries,
                                      Reuse::OwnedRotation),
                       fixed_consumer(bufs.get(), kHandoffRequest, kHandoffTouch, true))
            .ns_per_item;
    }
    double boost(int pairs, long items)
    {
        return handoff("6 Boost", {pairs, kRingEntries, items, kHandoffTouch / 8},
                       boost_producer(bname.c_str(), kHandoffRequest, kHandoffTouch),
                       boost_consumer(bname.c_str(), kHandoffTouch))
            .ns_per_item;
    }
    std::string vname;
    VsSegment vs;
    BoostName bname;
    SharedBlock<FixedBuffers> bufs;
};

/* Items per run: the ring alone is cheap; varslot and Boost get as many as keep section 6
 * under 20 s on an idle 2-CPU machine (there: varslot ~300 ns per item, Boost ~2 us). */
const long kRingItems = 2000000, kVarslotItems = 600000, kBoostItems = 150000;

void bench_handoff_one_pair()
{
    g_notes.push_back("6: ns per handed-off item = wall time from the go flag to the last consumer's "
                      "last item / items; producers and consumers are forked processes that open the "
                      "segment by name, map it in and join; a tenth of the items goes through untimed "
                      "first.");
    SmallHandoff h("handoff");
    auto st = interleaved({[&] { return h.ring(1, iters(kRingItems)); },
                           [&] { return h.varslot(1, iters(kVarslotItems), true); },
                           [&] { return h.varslot(1, iters(kVarslotItems), false); },
                           [&] { return h.boost(1, iters(kBoostItems)); },
                           [&] { return h.fixed(1, iters(kRingItems)); },
                           [&] { return line_crossing(iters(500000)); },
                           [&] { return h.fixed_owned(1, iters(kVarslotItems)); }});
    double v = st[1].median;
    row("6b hand-off 512 B: A allocates, B transfers+frees", ns(st[1]), "6a SPSC ring alone, integers",
        ns(st[0]), ratio(v / st[0].median), "<= 8x", check(v / st[0].median <= 8));
    row("  vs no transfer", ns(v), "B frees without transferring", ns(st[2]), ratio(v / st[2].median),
        "(none)", Verdict::Info);
    row("6c the same hand-off vs Boost", ns(v), "bip allocate in A, deallocate in B", ns(st[3]),
        ratio(v / st[3].median), "(none)", Verdict::Info);
    row("  vs the payload alone", ns(v), "64 B in 257 fixed buffers, same ring", ns(st[4]),
        ratio(v / st[4].median), "(none)", Verdict::Info);
    row("  vs the 3 ownership CASes alone", ns(v), "the same + an owner word each, 3 CASes", ns(st[6]),
        ratio(v / st[6].median), "(none)", Verdict::Info);
    row("  those CASes against the ring", ns(st[6]), "6a SPSC ring alone, integers", ns(st[0]),
        ratio(st[6].median / st[0].median), "(none)", Verdict::Info);
    g_notes.push_back("6c: the owner-word anchor adds to the fixed buffers the three ownership changes "
                      "of varslot's hand-off and nothing else of an allocator: a CAS on the buffer's word "
                      "in A before writing (free -> A) and two in B (A -> B before reading, B -> free "
                      "after), each on a line the other process wrote last. Any design that keeps one "
                      "owner per slot in shared memory pays at least that; its ratio to the ring is the "
                      "least such a design can reach on this machine.");
    g_notes.push_back(fmt("6: in this run one cache line took %s (median; %s .. %s) to cross between "
                          "two processes' CPUs, one way; the ring floor and every hand-off scale with it.",
                          ns(st[5].median).c_str(), ns(st[5].lo).c_str(), ns(st[5].hi).c_str()));
}

/* 6d: two producers and two consumers on one class, four processes on what may be 2 CPUs. */
void bench_handoff_two_pairs()
{
    SmallHandoff h("handoff2");
    auto st = interleaved({[&] { return h.ring(2, iters(kRingItems)); },
                           [&] { return h.varslot(2, iters(kVarslotItems), true); },
                           [&] { return h.boost(2, iters(kBoostItems / 2)); }});
    double v = st[1].median;
    row("6d hand-off 512 B, 2 producers + 2 consumers", ns(st[1]), "two rings alone, integers",
        ns(st[0]), ratio(v / st[0].median), "(report)", Verdict::Info);
    row("  vs Boost", ns(v), "bip, 2 producers + 2 consumers", ns(st[2]), ratio(v / st[2].median),
        "(report)", Verdict::Info);
}

/* 6e: the payload dominates; what the allocator adds to writing and reading it in full. */
void bench_handoff_payload()
{
    const vs_class_config classes[] = {{64u << 10, 256}, {1u << 20, 64}};
    std::string vname = "/" + unique_name("handoff-big");
    VsSegment vs;
    vs.create(vname, classes, 2);
    SharedBlock<FixedBuffers> bufs;
    for (size_t size : {(size_t)64 << 10, (size_t)1 << 20}) {
        HandoffShape shape{1, kFixedDepth, iters(size == kFixedMax ? 2500 : 40000), size / 8};
        auto st = interleaved(
            {[&] {
                 return handoff("6e fixed buffers", shape,
                                fixed_producer(bufs.get(), size, size, kFixedDepth),
                                fixed_consumer(bufs.get(), size, size))
                     .ns_per_item;
             },
             [&] {
                 return handoff("6e varslot", shape, vs_producer(vname, (uint32_t)size, size),
                                vs_consumer(vname, size, true))
                     .ns_per_item;
             },
             [&] {
                 return handoff("6e fixed buffers, owner words", shape,
                                fixed_producer(bufs.get(), size, size, kFixedDepth, Reuse::OwnedRotation),
                                fixed_consumer(bufs.get(), size, size, true))
                     .ns_per_item;
             },
             [&] {
                 return handoff("6e fixed buffers, first free", shape,
                                fixed_producer(bufs.get(), size, size, kFixedDepth, Reuse::OwnedFirstFree),
                                fixed_consumer(bufs.get(), size, size, true))
                     .ns_per_item;
             }});
        double a = st[0].median, v = st[1].median, share = (v - a) / v;
        double owned = st[2].median, owned_share = (owned - a) / owned;
        const char *label = size == kFixedMax ? "6e hand-off 1 MiB, written+read in full, depth 16"
                                              : "6e hand-off 64 KiB, written+read in full, depth 16";
        row(label, ns(st[1]), "17 fixed buffers, same ring", ns(st[0]), ratio(v / a), "(none)",
            Verdict::Info);
        row("  allocator's share (v - anchor) / v", fmt("%.1f%%", 100 * share), "-", "-", "-", "< 5%",
            check(share < 0.05));
        row("  the 3 ownership CASes alone: share", fmt("%.1f%%", 100 * owned_share),
            "the same buffers, owner words", ns(st[2]), ratio(owned / a), "(none)", Verdict::Info);
        double first = st[3].median;
        row("  + varslot's reuse order: share", fmt("%.1f%%", 100 * (first - a) / first),
            "first free buffer, owner words", ns(st[3]), ratio(first / a), "(none)", Verdict::Info);
        row("  varslot against that anchor: share", fmt("%.1f%%", 100 * (v - first) / v), "-", "-",
            "-", "(none)", Verdict::Info);
    }
    g_notes.push_back("6e: the fixed-buffer anchor reuses its buffers in strict rotation (each one 17 "
                      "items later). The owner-word anchor adds only varslot's three ownership changes "
                      "(A takes the buffer, B takes it from A, B gives it back), one CAS each on a word "
                      "the other process wrote last. The first-free anchor also reuses as varslot's "
                      "search does: A takes the lowest-numbered free buffer, often the one B freed a "
                      "moment ago, whose lines are still in B's cache; what that costs depends on the "
                      "host's caches and moves from run to run. varslot against the first-free anchor "
                      "is the allocator's own work; shares can come out negative.");
}

/* 6f: a few big slots shared by four processes: nothing may sit parked where the other pair
 * cannot claim it. Each pair holds at most three (one being written, one in the ring, one
 * being read), so a failed allocation means a slot was hoarded. */
void bench_handoff_big_slots()
{
    const vs_class_config classes[] = {{16u << 20, 8}};
    std::string vname = "/" + unique_name("handoff-16m");
    VsSegment vs;
    vs.create(vname, classes, 1);
    HandoffShape shape{2, 1, iters(200000), kHandoffTouch / 8};
    long failed = 0;
    auto st = interleaved({[&] {
        HandoffResult r = handoff("6f varslot 16 MiB", shape, vs_producer(vname, 16u << 20, kHandoffTouch),
                                  vs_consumer(vname, kHandoffTouch, true));
        failed += r.failed_allocations;
        return r.ns_per_item;
    }});
    row("6f 16 MiB x 8, 2 pairs, depth 1: failed allocations", fmt("%ld", failed), "-", "-", "-", "0",
        check(failed == 0));
    row("  ns per handed-off slot", ns(st[0]), "-", "-", "-", "(none)", Verdict::Info);
}

/* ---- main ---- */

/* CPU time the whole machine spent busy and in steal, in seconds, from /proc/stat. Compared
 * with our own CPU time it tells how much other processes competed with this run. */
struct CpuTimes {
    double busy, steal, wall, ours;
};

CpuTimes cpu_times()
{
    CpuTimes t{0, 0, (double)now_ns() / 1e9, 0};
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[8] = {0};
    if (f && fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                    &v[4], &v[5], &v[6], &v[7]) == 8) {
        double hz = (double)sysconf(_SC_CLK_TCK);
        t.busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / hz; /* user nice system irq softirq */
        t.steal = (double)v[7] / hz;
    }
    if (f)
        fclose(f);
    for (int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
        rusage ru{};
        getrusage(who, &ru);
        t.ours += (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                  (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    }
    return t;
}

void note_competition(const CpuTimes &a, const CpuTimes &b)
{
    double capacity = (b.wall - a.wall) * (double)sysconf(_SC_NPROCESSORS_ONLN);
    if (capacity <= 0)
        return;
    double others = std::max(0.0, (b.busy - a.busy) - (b.ours - a.ours));
    g_notes.push_back(fmt("machine: during this run other processes used %.0f%% of the CPUs' time "
                          "and the hypervisor stole %.0f%%; above a few %% the timings are inflated "
                          "and noisy.",
                          100 * others / capacity, 100 * (b.steal - a.steal) / capacity));
}

/* Characters on screen, not bytes: the table holds a few UTF-8 signs (±). */
size_t columns(const std::string &s)
{
    return (size_t)std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xc0) != 0x80; });
}

void print_report()
{
    std::vector<std::vector<std::string>> lines = {
        {"measurement", "varslot", "anchor (same run)", "anchor value", "ratio", "target", "result"}};
    for (const Row &r : g_rows) {
        const char *v = r.verdict == Verdict::Pass   ? "PASS"
                        : r.verdict == Verdict::Miss ? "MISS"
                        : r.verdict == Verdict::Info ? "info"
                                                     : "FAILED";
        lines.push_back({r.what, r.value, r.anchor, r.anchor_value, r.ratio, r.target, v});
    }
    std::vector<size_t> w(lines[0].size(), 0);
    for (const auto &l : lines)
        for (size_t i = 0; i < l.size(); i++)
            w[i] = std::max(w[i], columns(l[i]));
    if (!g_opt.tsv.empty()) { // the same cells, machine-readable, for scripts/bench-report
        FILE *f = fopen(g_opt.tsv.c_str(), "w");
        for (const auto &l : lines)
            for (size_t i = 0; f && i < l.size(); i++)
                fprintf(f, "%s%c", l[i].c_str(), i + 1 < l.size() ? '\t' : '\n');
        if (!f || fclose(f) != 0)
            fprintf(stderr, "bench_core: cannot write %s\n", g_opt.tsv.c_str());
    }
    for (const auto &l : lines) {
        std::string out;
        for (size_t i = 0; i < l.size(); i++)
            out += l[i] + (i + 1 < l.size() ? std::string(w[i] - columns(l[i]) + 2, ' ') : "");
        printf("%s\n", out.c_str());
    }
    if (!g_notes.empty())
        printf("\n");
    for (const std::string &n : g_notes)
        printf("note %s\n", n.c_str());
}

/* ---- 7. giving memory back ---- */

/* Bytes of memory the segment's file holds (tmpfs: its pages). */
uint64_t file_bytes(VsSegment &vs)
{
    struct stat st;
    if (fstat(vs.seg()->fd, &st) != 0)
        throw Failure("fstat of the segment failed");
    return (uint64_t)st.st_blocks * 512;
}

/* The allocate+free pair on classes whose frees count towards purging (64 KiB: every 16th
 * free looks at the clock; 1 MiB: every free) against the same pair on a class of 512 B slots
 * in the same segment, which purging never touches (a pool with no segment was tried as the
 * anchor: its pair ran at 25 or 50 ns from run to run, by where its words fell against the
 * stack, 4K aliasing). No data is touched: the pair alone. */
void bench_purge_pair_cost()
{
    const vs_class_config classes[] = {{512, 256}, {65536, 256}, {1u << 20, 64}};
    VsSegment vs;
    vs.create("/" + unique_name("purge-pair"), classes, 3);
    uint8_t peer = vs.join();
    auto pairs = [&](uint32_t size, long n) {
        vs_slot_ref ref;
        uint64_t t0 = now_ns();
        for (long i = 0; i < n; i++) {
            if (!vs_pool_allocate(vs.pool(), size, peer, &ref))
                throw Failure("vs_pool_allocate failed on an idle pool");
            escape(&ref);
            if (vs_pool_free(vs.pool(), ref) != VS_OK)
                throw Failure("vs_pool_free of a fresh slot failed");
        }
        return (double)(now_ns() - t0) / (double)n;
    };
    long n = iters(5000000);
    auto st = interleaved({[&] { return pairs(512, n); }, [&] { return pairs(65536, n); },
                           [&] { return pairs(1u << 20, n); }});
    double r64 = st[1].median / st[0].median, r1m = st[2].median / st[0].median;
    row("7 alloc+free pair, 64 KiB (purge check every 16th)", ns(st[1]), "the pair on 512 B slots",
        ns(st[0]), ratio(r64), "<= 1.05x", check(r64 <= 1.05));
    row("7 alloc+free pair, 1 MiB (purge check every free)", ns(st[2]), "the pair on 512 B slots",
        ns(st[0]), ratio(r1m), "(none)", Verdict::Info);
}

/* The default classes, every slot written, then all freed; the program goes on with one
 * 64 KiB allocate+free every millisecond. tmpfs use of the segment's file before, at the peak, and
 * decay + 1 s after the last free. */
void bench_purge_memory()
{
    const int32_t decay_ms = 2000;
    const vs_class_config classes[] = VS_DEFAULT_CLASSES_INIT;
    VsSegment vs;
    vs.create("/" + unique_name("purge-du"), classes, VS_DEFAULT_CLASS_COUNT, decay_ms);
    uint8_t peer = vs.join();
    const vs_pool *pool = vs.pool();
    uint64_t before = file_bytes(vs), one_per_class = 0;
    std::vector<vs_slot_ref> refs;
    for (size_t c = 0; c < VS_DEFAULT_CLASS_COUNT; c++) {
        one_per_class += classes[c].slot_size;
        for (uint32_t i = 0; i < classes[c].slot_count; i++) {
            vs_slot_ref r;
            if (!vs_pool_allocate(pool, classes[c].slot_size, peer, &r) || r.class_idx != c)
                throw Failure("the burst did not get every slot of its class");
            memset(vs_pool_slot_data(pool, &r), 0x5a, classes[c].slot_size);
            refs.push_back(r);
        }
    }
    uint64_t peak = file_bytes(vs);
    for (auto &r : refs)
        if (vs_pool_free(pool, r) != VS_OK)
            throw Failure("a free of the burst failed");
    uint64_t t_free = now_ns(), back_ns = 0, at_target = 0;
    uint64_t target = before + 3 * 4096 /* the idle hints */ + one_per_class;
    while (now_ns() - t_free < (uint64_t)(decay_ms + 1000) * 1000000u) {
        vs_slot_ref r;
        if (!vs_pool_allocate(pool, 65536, peer, &r) || vs_pool_free(pool, r) != VS_OK)
            throw Failure("the work after the burst failed");
        usleep(1000);
        if (!back_ns && file_bytes(vs) <= target)
            back_ns = now_ns() - t_free;
    }
    at_target = file_bytes(vs);
    row("7 tmpfs before the burst (default classes)", fmt("%.0f KiB", before / 1024.0), "-", "-", "-",
        "(none)", Verdict::Info);
    row("7 tmpfs at the peak, every slot written", fmt("%.1f MiB", peak / 1048576.0), "-", "-", "-",
        "(none)", Verdict::Info);
    row(fmt("7 tmpfs decay (%d ms) + 1 s after the last free", decay_ms),
        fmt("%.0f KiB", at_target / 1024.0), "before + 1 slot per class",
        fmt("%.0f KiB", target / 1024.0), ratio((double)at_target / (double)target), "<= 1.00x",
        check(at_target <= target));
    row("  back to the target after the last free", back_ns ? fmt("%.2f s", back_ns / 1e9) : "not yet",
        "the decay", fmt("%.2f s", decay_ms / 1000.0), back_ns ? ratio(back_ns / 1e6 / decay_ms) : "-",
        "(none)", Verdict::Info);
    g_notes.push_back(fmt("7: a segment of the default classes (%.0f MiB of slots) with decay %d ms: "
                          "every slot allocated and written, all freed, then one 64 KiB allocate+free "
                          "every ms (purging needs calls: there is no thread; a pass every 16th such "
                          "free gives back up to 32 MiB); tmpfs use = the file's "
                          "st_blocks. The pairs: 5M allocate+free each of 64 KiB, 1 MiB and 512 B slots of "
                          "one segment, interleaved; the 512 B class never counts towards purging.",
                          peak / 1048576.0, decay_ms));
}

void usage(FILE *to)
{
    fprintf(to, "usage: bench_core [--reps N] [--quick] [--only N] [--tsv FILE]\n"
                "  --reps N   timed repetitions per figure, median reported (default 5)\n"
                "  --quick    a tenth of the iterations (a smoke run; figures get noisier)\n"
                "  --only N   run section N alone (1 pairs, 2 two processes, 3 batch, 4 memory,\n"
                "             5 reap, 6 hand-off, 7 giving memory back)\n"
                "  --tsv FILE also write the table as tab-separated values to FILE\n");
}

} // namespace

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            g_opt.reps = atoi(argv[++i]);
            if (g_opt.reps < 1 || g_opt.reps > 1000) {
                usage(stderr);
                return 2;
            }
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || n < 1 || n > 7) {
                fprintf(stderr, "bench_core: --only takes a section number, 1 to 7\n");
                usage(stderr);
                return 2;
            }
            g_opt.only = (int)n;
        } else if (!strcmp(argv[i], "--tsv") && i + 1 < argc) {
            g_opt.tsv = argv[++i];
        } else if (!strcmp(argv[i], "--quick")) {
            g_opt.scale = 0.1;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    g_main_pid = getpid();
    atexit(remove_tracked);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGSEGV, SIGBUS, SIGABRT})
        signal(sig, on_fatal_signal);

    utsname u{};
    uname(&u);
    printf("varslot core benchmark: %ld CPUs, Linux %s, glibc %s, Boost %s; median of %d "
           "repetitions after a warm-up (± = half the min..max spread)\n\n",
           sysconf(_SC_NPROCESSORS_ONLN), u.release, gnu_get_libc_version(), BOOST_LIB_VERSION,
           g_opt.reps);

    struct Measurement {
        int section;
        const char *name;
        void (*run)();
    };
    const Measurement all[] = {{1, "1 single-thread pairs", bench_single_thread},
                               {2, "2 two processes", bench_two_processes},
                               {3, "3 batch of 64", bench_batch},
                               {4, "4 metadata per slot", bench_metadata},
                               {4, "4 resident memory", bench_resident},
                               {5, "5 reap", bench_reap},
                               {6, "6a-6c hand-off, one pair", bench_handoff_one_pair},
                               {6, "6d hand-off, two pairs", bench_handoff_two_pairs},
                               {6, "6e hand-off, 64 KiB and 1 MiB", bench_handoff_payload},
                               {6, "6f hand-off, 16 MiB x 8", bench_handoff_big_slots},
                               {7, "7 purge: the pair's cost", bench_purge_pair_cost},
                               {7, "7 purge: memory given back", bench_purge_memory}};
    bool failed = false;
    CpuTimes before = cpu_times();
    for (const Measurement &m : all) {
        if (g_opt.only && m.section != g_opt.only)
            continue;
        try {
            m.run();
        } catch (const std::exception &e) {
            failed = true;
            row(m.name, "-", "-", "-", "-", "-", Verdict::Failed);
            g_notes.push_back(fmt("FAILED %s: %s", m.name, e.what()));
        }
    }
    note_competition(before, cpu_times());
    print_report();
    remove_tracked();
    return failed ? 1 : 0;
}
