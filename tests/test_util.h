// Shared helpers for the core suites: heap-backed pools, uniquely named segments that clean
// up after themselves, and forked children whose exit status the parent checks.
#pragma once

#include "varslot.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

// The core's debug points (core/src/debug.h, test builds only): a test sets one to stop or
// kill a thread at an exact step of the protocol.
extern "C" typedef void (*vs__debug_hook)(uint32_t idx);

namespace vstest {

// The reference's test configuration: 1 KiB x 8, 16 KiB x 4, 256 KiB x 2 (14 slots).
inline const vs_class_config kRefClasses[3] = {{1024, 8}, {16384, 4}, {262144, 2}};

// A pool in anonymous memory: private for tests that need no second process, shared when a
// forked child must work on the same slot words.
enum class Mapping { Private, Shared };
struct HeapPool {
    vs_pool pool{};
    void *mem = nullptr;
    size_t len = 0;
    explicit HeapPool(const vs_class_config *c = kRefClasses, size_t n = 3,
                      Mapping m = Mapping::Private)
    {
        len = vs_pool_required_size(c, n);
        EXPECT_GT(len, 0u);
        mem = mmap(nullptr, len, PROT_READ | PROT_WRITE,
                   (m == Mapping::Shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);
        EXPECT_NE(mem, MAP_FAILED);
        EXPECT_EQ(vs_pool_init(&pool, vs_region{mem, len}, 0, c, n), VS_OK);
    }
    ~HeapPool()
    {
        vs_pool_detach(&pool);
        munmap(mem, len);
    }
    const vs_pool *operator->() const { return &pool; }
    const vs_pool *get() const { return &pool; }
};

// Iteration counts for stress loops: memcheck runs the suite at a fraction of the speed, so
// there (VSTEST_SLOW=1) the loops shrink; plain, ASan and TSan runs keep their full size.
inline bool slow_run() { return getenv("VSTEST_SLOW") != nullptr; }
inline long scaled(long n) { return slow_run() ? std::max(1L, n / 5) : n; }
// ... and waits that give another process time to get somewhere grow by the same factor.
// In a loop that waits for another thread: under Valgrind one thread runs at a time, and a
// bare spin would burn its whole time slice before the thread it waits for runs.
inline void spin_pause()
{
    static const bool slow = slow_run();
    if (slow)
        sched_yield();
}
inline unsigned stretched(unsigned us) { return slow_run() ? us * 20 : us; }

// A fresh POSIX shm name per call, so parallel or repeated runs never collide.
inline std::string unique_name(const char *what)
{
    static int counter;
    return "/vstest-" + std::string(what) + "-" + std::to_string(getpid()) + "-" +
           std::to_string(counter++);
}

// A created segment, closed and unlinked when the test ends (children inherit the mapping).
struct TestSegment {
    vs_segment seg{};
    std::string name;
    static constexpr int32_t kDefaultDecay = INT32_MIN; // VS_SEGMENT_DECAY not given
    explicit TestSegment(const char *what, const vs_class_config *c = kRefClasses, size_t n = 3,
                         uint32_t max_peers = 0, int32_t decay_ms = kDefaultDecay)
        : name(unique_name(what))
    {
        vs_segment_options o{};
        o.classes = c;
        o.class_count = n;
        o.max_peers = max_peers;
        if (decay_ms != kDefaultDecay) {
            o.flags |= VS_SEGMENT_DECAY;
            o.decay_ms = decay_ms;
        }
        int rc = vs_segment_create(&seg, name.c_str(), &o);
        EXPECT_EQ(rc, VS_OK) << vs_strerror(rc) << ": " << vs_last_detail();
    }
    ~TestSegment()
    {
        vs_segment_close(&seg);
        vs_segment_unlink(name.c_str());
    }
    vs_pool *pool() { return vs_segment_pool(&seg); }
    // This process's peer id. Allocate with it: slots owned by an id that is not a live
    // peer's are fair game for the reaper.
    uint8_t join()
    {
        uint8_t id = 0;
        EXPECT_EQ(vs_segment_join(&seg, &id), VS_OK);
        return id;
    }
};

// Runs fn in a forked child; the child's exit status is fn's return value. The child must
// not use gtest assertions (they would report in the child only): return non-zero instead.
inline pid_t spawn(const std::function<int()> &fn)
{
    fflush(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(120); // a child that hangs dies instead of hanging the suite
        int rc = 1;
        try {
            rc = fn();
        } catch (...) {
            rc = 99;
        }
        _exit(rc);
    }
    return pid;
}

// A child dies holding its slots, for a reaper to find. Under Valgrind a self-inflicted
// SIGKILL still runs memcheck's leak check; the slots are left behind on purpose, so the
// process tells memcheck to forget them first (process-local: the segment is untouched).
[[noreturn]] inline void die_holding_slots(vs_pool *pool)
{
    vs_pool_detach(pool);
    raise(SIGKILL);
    _exit(99);
}

// Waits for a child and returns its exit status, or 128+signal if it was killed.
inline int wait_child(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// Counts how many slots of the pool are allocatable right now by draining and refilling:
// every slot must be found exactly once.
inline size_t drain_count(const vs_pool *pool, uint8_t owner, std::vector<vs_slot_ref> *out)
{
    size_t n = 0;
    for (size_t c = 0; c < vs_pool_class_count(pool); c++) {
        vs_slot_ref r;
        while (vs_pool_allocate(pool, vs_pool_slot_size(pool, c), owner, &r)) {
            if (r.class_idx != c) { // fell through to a larger class: give it back
                vs_pool_free(pool, r);
                break;
            }
            out->push_back(r);
            n++;
        }
    }
    return n;
}

inline uint32_t total_slots(const vs_pool *pool)
{
    uint32_t n = 0;
    for (size_t c = 0; c < vs_pool_class_count(pool); c++)
        n += vs_pool_slot_count(pool, c);
    return n;
}

// A slot's word as vs_pool_slot_info reads it, for the slot a ref names.
inline vs_slot_info slot_info_of(const vs_pool *pool, vs_slot_ref r)
{
    vs_slot_info i{};
    EXPECT_EQ(vs_pool_slot_info(pool, r.class_idx, r.slot_idx, &i), VS_OK);
    return i;
}

// The readers of a shared slot, sorted (empty when the ref's slot is not shared).
inline std::vector<int> share_readers_of(const vs_pool *pool, vs_slot_ref r)
{
    uint8_t out[VS_MAX_READERS];
    size_t n = 0;
    if (vs_pool_share_readers(pool, r, out, &n) != VS_OK)
        return {};
    std::vector<int> v(out, out + n);
    std::sort(v.begin(), v.end());
    return v;
}

// Every slot word says FREE, and a drain claims every slot exactly once (then frees them).
inline void expect_every_slot_free_once(const vs_pool *pool, uint8_t owner)
{
    for (size_t c = 0; c < vs_pool_class_count(pool); c++)
        for (uint32_t i = 0; i < vs_pool_slot_count(pool, c); i++) {
            vs_slot_info info;
            ASSERT_EQ(vs_pool_slot_info(pool, static_cast<uint8_t>(c), i, &info), VS_OK);
            ASSERT_EQ(info.state, (uint32_t)VS_SLOT_FREE) << "class " << c << " slot " << i
                                                         << " owner " << int(info.owner);
        }
    std::vector<vs_slot_ref> got;
    EXPECT_EQ(drain_count(pool, owner, &got), total_slots(pool));
    std::vector<uint64_t> ids;
    for (auto &r : got)
        ids.push_back((uint64_t)r.class_idx << 32 | r.slot_idx);
    std::sort(ids.begin(), ids.end());
    EXPECT_EQ(std::unique(ids.begin(), ids.end()), ids.end()) << "a slot was handed out twice";
    for (auto &r : got)
        vs_pool_free(pool, r);
}
inline void expect_every_slot_free_once(TestSegment &seg) { expect_every_slot_free_once(seg.pool(), seg.join()); }

inline void run_threads(int n, const std::function<void(int)> &fn)
{
    std::vector<std::thread> ts;
    for (int i = 0; i < n; i++)
        ts.emplace_back(fn, i);
    for (auto &t : ts)
        t.join();
}

// A spinning barrier: threads already on a core leave it within a few hundred cycles of
// each other, which is what a race needs (a yielding wait spreads them over microseconds).
struct SpinBarrier {
    explicit SpinBarrier(int n) : n(n) {}
    void wait()
    {
        int ph = phase.load();
        if (count.fetch_add(1) + 1 == n) {
            count = 0;
            phase.fetch_add(1);
        } else {
            while (phase.load() == ph)
                spin_pause();
        }
    }
    const int n;
    std::atomic<int> count{0}, phase{0};
};

// Runs `rounds` rounds in which n threads (no more than the cores) race on act(thread, round);
// thread 0 then runs check(round) alone, which prepares the next round or says stop.
inline void race_rounds(int n, int rounds, const std::function<void(int, int)> &act,
                 const std::function<bool(int)> &check)
{
    SpinBarrier barrier(n);
    std::atomic<bool> stop{false};
    run_threads(n, [&](int t) {
        for (int r = 0; r < rounds && !stop; r++) {
            barrier.wait();
            act(t, r);
            barrier.wait();
            if (t == 0 && !check(r))
                stop = true;
            barrier.wait();
        }
    });
}

} // namespace vstest
