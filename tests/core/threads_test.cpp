// Multi-thread stress of the correctness rule: every ownership change is one CAS, so racing
// frees, stale refs and racing transfers each have exactly one winner, and no slot is ever
// held by two threads at once.
#include "test_util.h"

#include <atomic>
#include <thread>

using namespace vstest;

namespace {
struct Stamp {
    uint32_t thread;
    uint32_t seq;
};
} // namespace


TEST(Threads, StressNoSlotEverHeldTwice)
{
    const vs_class_config classes[3] = {{64, 16}, {256, 8}, {4096, 4}};
    HeapPool p(classes, 3);
    std::atomic<long> overlaps{0}, failures{0}, allocated{0};
    const int kThreads = 4;
    const long kIters = scaled(300000);
    run_threads(kThreads, [&](int t) {
        std::vector<std::pair<vs_slot_ref, Stamp>> held;
        uint32_t seq = 0;
        for (int i = 0; i < kIters; i++) {
            bool release = held.size() >= 6 || (!held.empty() && (i * 7 + t) % 3 == 0);
            if (release) {
                auto [r, s] = held.back();
                held.pop_back();
                auto *d = static_cast<Stamp *>(vs_pool_slot_data(p.get(), &r));
                if (!d || d->thread != s.thread || d->seq != s.seq)
                    overlaps++;
                if (vs_pool_free(p.get(), r) != VS_OK)
                    failures++;
                continue;
            }
            vs_slot_ref r;
            uint32_t size = (i % 3 == 0) ? 4000 : (i % 3 == 1) ? 200 : 8;
            if (!vs_pool_allocate(p.get(), size, static_cast<uint8_t>(t + 1), &r))
                continue;
            allocated++;
            auto *d = static_cast<Stamp *>(vs_pool_slot_data(p.get(), &r));
            Stamp s{static_cast<uint32_t>(t), seq++};
            *d = s;
            held.push_back({r, s});
        }
        for (auto &[r, s] : held) {
            auto *d = static_cast<Stamp *>(vs_pool_slot_data(p.get(), &r));
            if (!d || d->thread != s.thread || d->seq != s.seq)
                overlaps++;
            if (vs_pool_free(p.get(), r) != VS_OK)
                failures++;
        }
    });
    EXPECT_EQ(overlaps.load(), 0);
    EXPECT_EQ(failures.load(), 0);
    EXPECT_GT(allocated.load(), kThreads * kIters / 4);
    std::vector<vs_slot_ref> got;
    EXPECT_EQ(drain_count(p.get(), 1, &got), 28u);
}

TEST(Threads, RacingDoubleFreesHaveExactlyOneWinner)
{
    const vs_class_config one[1] = {{64, 4}};
    HeapPool p(one, 1);
    const int kThreads = 2; // one per core: they really start each round together
    vs_slot_ref r;
    std::atomic<int> ok{0}, dbl{0};
    ASSERT_TRUE(vs_pool_allocate(p.get(), 64, 1, &r));
    race_rounds(
        kThreads, (int)scaled(5000),
        [&](int, int) { (vs_pool_free(p.get(), r) == VS_OK ? ok : dbl)++; },
        [&](int round) {
            EXPECT_EQ(ok.load(), 1) << "round " << round;
            EXPECT_EQ(dbl.load(), kThreads - 1) << "round " << round;
            ok = dbl = 0;
            return vs_pool_allocate(p.get(), 64, 1, &r) && !HasFailure();
        });
    ASSERT_EQ(vs_pool_free(p.get(), r), VS_OK);
    std::vector<vs_slot_ref> got;
    EXPECT_EQ(drain_count(p.get(), 1, &got), 4u); // and no slot is in the index twice
    vs_slot_ref extra;
    EXPECT_FALSE(vs_pool_allocate(p.get(), 64, 1, &extra));
}

TEST(Threads, StaleRefsNeverFreeAReusedSlot)
{
    const vs_class_config one[1] = {{64, 1}};
    HeapPool p(one, 1);
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> last_handle{0};
    std::atomic<long> wrongly_freed{0}, cycles{0};
    // The cycler frees and reallocates the only slot; the attacker frees handles it saw once
    // the slot has moved past them. None of those frees may succeed.
    std::thread cycler([&] {
        while (!stop) {
            vs_slot_ref r;
            if (!vs_pool_allocate(p.get(), 64, 1, &r))
                continue;
            last_handle = vs_slot_ref_pack(r);
            cycles++;
            if (vs_pool_free(p.get(), r) != VS_OK) // nobody else may free the live generation
                wrongly_freed++;
        }
    });
    std::thread attacker([&] {
        uint64_t prev = 0;
        while (!stop) {
            uint64_t h = last_handle.load();
            if (h == prev || !h) {
                spin_pause();
                continue;
            }
            // Wait until the slot has moved on at least one generation, then try the stale ref.
            vs_slot_ref old = vs_slot_ref_unpack(h);
            vs_slot_info info;
            vs_pool_slot_info(p.get(), 0, 0, &info);
            if (info.generation > old.generation && vs_pool_free(p.get(), old) == VS_OK)
                wrongly_freed++;
            prev = h;
        }
    });
    while (cycles.load() < scaled(200000))
        std::this_thread::yield();
    stop = true;
    cycler.join();
    attacker.join();
    EXPECT_EQ(wrongly_freed.load(), 0);
}

TEST(Threads, RacingTransfersHaveExactlyOneWinner)
{
    HeapPool p;
    vs_slot_ref r;
    std::atomic<int> ok{0};
    ASSERT_TRUE(vs_pool_allocate(p.get(), 10, 1, &r));
    race_rounds(
        2, (int)scaled(5000),
        [&](int t, int) {
            if (vs_pool_transfer(p.get(), r, 1, static_cast<uint8_t>(10 + t)) == VS_OK)
                ok++;
        },
        [&](int round) {
            EXPECT_EQ(ok.load(), 1) << "round " << round;
            vs_slot_info info;
            EXPECT_EQ(vs_pool_slot_info(p.get(), r.class_idx, r.slot_idx, &info), VS_OK);
            EXPECT_TRUE(info.owner == 10 || info.owner == 11) << int(info.owner);
            EXPECT_EQ(vs_pool_free(p.get(), r), VS_OK);
            ok = 0;
            return vs_pool_allocate(p.get(), 10, 1, &r) && !HasFailure();
        });
}

TEST(Threads, ProducerConsumerAcrossThreadsKeepsEverySlotReachable)
{
    // A producer allocates, a consumer frees: the frees must reach the shared index, not the
    // consumer's thread cache, or the producer would starve.
    const vs_class_config one[1] = {{256, 8}};
    HeapPool p(one, 1);
    std::atomic<uint64_t> box[8];
    for (auto &b : box)
        b = 0;
    std::atomic<bool> done{false};
    std::atomic<long> produced{0}, consumed{0}, corrupt{0};
    std::thread consumer([&] {
        while (!done || produced.load() != consumed.load()) {
            spin_pause();
            for (auto &b : box) {
                uint64_t h = b.exchange(0);
                if (!h)
                    continue;
                vs_slot_ref r = vs_slot_ref_unpack(h);
                auto *d = static_cast<uint64_t *>(vs_pool_slot_data(p.get(), &r));
                if (!d || *d != h)
                    corrupt++;
                if (vs_pool_transfer(p.get(), r, 1, 2) != VS_OK || vs_pool_free(p.get(), r) != VS_OK)
                    corrupt++;
                consumed++;
            }
        }
    });
    for (long i = 0; i < scaled(100000); i++) {
        vs_slot_ref r;
        while (!vs_pool_allocate(p.get(), 256, 1, &r))
            std::this_thread::yield();
        uint64_t h = vs_slot_ref_pack(r);
        *static_cast<uint64_t *>(vs_pool_slot_data(p.get(), &r)) = h;
        produced++;
        for (;;) {
            bool put = false;
            for (auto &b : box) {
                uint64_t z = 0;
                if (b.compare_exchange_strong(z, h)) {
                    put = true;
                    break;
                }
            }
            if (put)
                break;
            std::this_thread::yield();
        }
    }
    done = true;
    consumer.join();
    EXPECT_EQ(corrupt.load(), 0);
    EXPECT_EQ(consumed.load(), scaled(100000));
    std::vector<vs_slot_ref> got;
    EXPECT_EQ(drain_count(p.get(), 1, &got), 8u);
}

// ---- interleavings forced through the core's debug points (core/src/debug.h) ----

extern "C" {
typedef void (*vs__debug_hook)(uint32_t idx);
extern vs__debug_hook vs__debug_before_claim_cas;
}

namespace {

std::atomic<int> g_claim_phase; // 1: the held thread is at its CAS; 2: let it go
thread_local bool t_hold_at_claim;

void hold_at_claim(uint32_t)
{
    if (!t_hold_at_claim)
        return;
    t_hold_at_claim = false; // once
    g_claim_phase = 1;
    for (int i = 0; i < 50000 && g_claim_phase.load() != 2; i++)
        usleep(100);
}

} // namespace

// Two claimers of one free slot: thread A read the slot word FREE and is about to CAS it when
// B claims the same slot (the only one: A took its bitmap bit, B finds it by the slot words).
// A's CAS must then fail. Sampling reaches this window of a few nanoseconds rarely (the
// bitmap's fetch_and keeps most candidates apart); here A is held in it, every run.
TEST(Claim, TwoClaimersOfOneSlotNeverBothWin)
{
    static const vs_class_config one[1] = {{64, 1}};
    HeapPool p(one, 1);
    g_claim_phase = 0;
    vs__debug_before_claim_cas = hold_at_claim;
    vs_slot_ref a{}, b{};
    bool got_a = false, got_b = false;
    std::thread ta([&] {
        t_hold_at_claim = true;
        got_a = vs_pool_allocate(p.get(), 1, 1, &a);
    });
    for (int i = 0; i < 50000 && g_claim_phase.load() != 1; i++)
        usleep(100);
    ASSERT_EQ(g_claim_phase.load(), 1) << "A never reached the claim";
    got_b = vs_pool_allocate(p.get(), 1, 2, &b); // this thread is not held
    g_claim_phase = 2;
    ta.join();
    vs__debug_before_claim_cas = nullptr;
    EXPECT_TRUE(got_b) << "B did not find the slot A had only read";
    EXPECT_FALSE(got_a && got_b) << "both threads own the only slot";
    vs_slot_info info;
    ASSERT_EQ(vs_pool_slot_info(p.get(), 0, 0, &info), VS_OK);
    EXPECT_EQ(info.owner, got_b ? 2 : 1) << "the slot word names another owner than the winner";
}
