// Batched classes (core/src/pool.c, batched()): an allocation reserves several bits of a
// bitmap word at once, a free collects bits and publishes them with one fetch_or. Slots held
// so are FREE in their words and out of the bitmap; what keeps them findable is the class's
// `parked` flag and the rules around it (model: core/model/slots.pml). Each test here forces,
// step by step in threads that keep their thread-local state, one interleaving in which a
// broken rule makes an allocation fall to a larger class while a slot of the class it asked
// for is free: the model's counterexample for that rule, in C.
#include "test_util.h"

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

using namespace vstest;

extern "C" {
typedef void (*vs__debug_hook)(uint32_t idx);
extern vs__debug_hook vs__debug_before_claim_cas;
}

namespace {

// Class 0 is batched (64 B x 256); class 1 is where a wrong search falls to.
const vs_class_config kBatched[2] = {{64, 256}, {128, 16}};

// A thread that stays alive between steps, so its thread cache and pending mask do too.
class Worker {
  public:
    Worker() : thread_([this] { loop(); }) {}
    ~Worker()
    {
        run([this] { done_ = true; });
        thread_.join();
    }
    void run(const std::function<void()> &step) // runs step on the worker, waits for it
    {
        std::unique_lock<std::mutex> lk(mu_);
        step_ = step;
        cv_.notify_all();
        cv_.wait(lk, [this] { return !step_; });
    }

  private:
    void loop()
    {
        std::unique_lock<std::mutex> lk(mu_);
        while (!done_) {
            cv_.wait(lk, [this] { return bool(step_); });
            step_();
            step_ = nullptr;
            cv_.notify_all();
        }
    }
    std::mutex mu_;
    std::condition_variable cv_;
    std::function<void()> step_;
    bool done_ = false;
    std::thread thread_;
};

// This thread takes every slot of class 0, then clears `parked` (an allocation that finds
// class 0 empty takes the flag and falls to class 1), and gives back what it took there.
std::vector<vs_slot_ref> take_class_0(const vs_pool *pool)
{
    std::vector<vs_slot_ref> held(256);
    for (auto &r : held) {
        EXPECT_TRUE(vs_pool_allocate(pool, 64, 1, &r));
        EXPECT_EQ(r.class_idx, 0);
    }
    vs_slot_ref spill;
    EXPECT_TRUE(vs_pool_allocate(pool, 64, 1, &spill));
    EXPECT_EQ(spill.class_idx, 1) << "class 0 should be full";
    EXPECT_EQ(vs_pool_free_owned(pool, spill, 1), VS_OK);
    return held;
}

// A thread reserves only from its second allocation in a pool on (one that alternates
// between pools would drop its reservations at every switch): this is its first. Class 0
// must be full: the slot comes from class 1 and goes back.
void settle(const vs_pool *pool)
{
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(pool, 64, 3, &r));
    ASSERT_EQ(r.class_idx, 1);
    ASSERT_EQ(vs_pool_free_owned(pool, r, 3), VS_OK);
}

// Two slots of one bitmap word, neither allocated last by this thread.
uint32_t word_of(const vs_slot_ref &r) { return r.slot_idx % 256 / 64; }

} // namespace

// A free into a batch sets `parked` on every add, not only when the batch opens: a failing
// search may have taken the flag after the first add (model: MUTANT_PARK_ONCE).
TEST(Batch, EverySlotAddedToABatchIsFoundByAnotherThread)
{
    HeapPool p(kBatched, 2);
    std::vector<vs_slot_ref> held = take_class_0(p.get());
    vs_slot_ref x = held[10], y = held[20];
    ASSERT_EQ(word_of(x), word_of(y));
    Worker freer;
    freer.run([&] { EXPECT_EQ(vs_pool_free(p.get(), x), VS_OK); }); // pending: {x}, parked
    vs_slot_ref got;
    ASSERT_TRUE(vs_pool_allocate(p.get(), 64, 1, &got)); // takes `parked`, republishes x
    EXPECT_EQ(got.class_idx, 0);
    EXPECT_EQ(got.slot_idx, x.slot_idx) << "x was the only free slot of class 0";
    freer.run([&] { EXPECT_EQ(vs_pool_free(p.get(), y), VS_OK); }); // pending: {x, y}
    ASSERT_TRUE(vs_pool_allocate(p.get(), 64, 1, &got));
    EXPECT_EQ(got.class_idx, 0) << "y waits in another thread's batch, and nothing said so: "
                                   "the allocation fell to a larger class";
    EXPECT_EQ(got.slot_idx, y.slot_idx);
}

// A batch goes out with fetch_or: bits that others published into the word meanwhile stay
// (model: MUTANT_FLUSH_STORE).
TEST(Batch, PublishingABatchKeepsTheBitsOthersPublished)
{
    HeapPool p(kBatched, 2);
    std::vector<vs_slot_ref> held = take_class_0(p.get());
    vs_slot_ref x = held[10], z = held[30];
    ASSERT_EQ(word_of(x), word_of(z));
    Worker batcher;
    batcher.run([&] { EXPECT_EQ(vs_pool_free(p.get(), x), VS_OK); }); // pending: {x}
    vs_slot_ref got;
    ASSERT_TRUE(vs_pool_allocate(p.get(), 64, 1, &got)); // x again, through the republish
    ASSERT_EQ(got.slot_idx, x.slot_idx);
    ASSERT_EQ(vs_pool_free_owned(p.get(), z, 1), VS_OK); // z's bit: in the bitmap now
    batcher.run([&] { // its allocation publishes its batch first, then searches
        ASSERT_TRUE(vs_pool_allocate(p.get(), 64, 2, &got));
    });
    EXPECT_EQ(got.class_idx, 0) << "publishing the batch {x} erased z's bit";
    EXPECT_EQ(got.slot_idx, z.slot_idx);
}

// Slots an allocation reserved (taken out of the bitmap with its candidate) are parked
// (model: MUTANT_RESERVE_NO_PARK).
TEST(Batch, ReservedSlotsAreFoundByAnotherThread)
{
    HeapPool p(kBatched, 2);
    std::vector<vs_slot_ref> held = take_class_0(p.get());
    vs_slot_ref x = held[10], y = held[20];
    Worker reserver;
    reserver.run([&] { settle(p.get()); });
    ASSERT_EQ(vs_pool_free_owned(p.get(), x, 1), VS_OK);
    ASSERT_EQ(vs_pool_free_owned(p.get(), y, 1), VS_OK);
    vs_slot_ref a{};
    reserver.run([&] { ASSERT_TRUE(vs_pool_allocate(p.get(), 64, 2, &a)); }); // one, and the other reserved
    ASSERT_EQ(a.class_idx, 0);
    vs_slot_ref other = a.slot_idx == x.slot_idx ? y : x, got;
    ASSERT_TRUE(vs_pool_allocate(p.get(), 64, 1, &got));
    EXPECT_EQ(got.class_idx, 0) << "the slot another thread reserved was not findable";
    EXPECT_EQ(got.slot_idx, other.slot_idx);
}

namespace {
std::atomic<int> g_phase; // 1: the worker is at its candidate's claim CAS; 2: let it go
std::atomic<uint32_t> g_candidate;
thread_local bool t_hold;

void hold_at_candidate(uint32_t idx)
{
    if (!t_hold)
        return;
    t_hold = false;
    g_candidate = idx;
    g_phase = 1;
    for (int i = 0; i < 50000 && g_phase.load() != 2; i++)
        usleep(100);
}
} // namespace

// An allocation whose candidate another thread won tries the slots it reserved with that
// candidate before it gives up on the class (model: MUTANT_RESERVE_STRANDED).
TEST(Batch, AnAllocationThatLostItsCandidateUsesWhatItReserved)
{
    HeapPool p(kBatched, 2);
    std::vector<vs_slot_ref> held = take_class_0(p.get());
    vs_slot_ref x = held[10], y = held[20];
    g_phase = 0;
    std::atomic<int> step{0};
    vs_slot_ref got{};
    bool ok = false;
    std::thread loser([&] { // takes both bits, and stops before claiming its candidate
        settle(p.get());
        step = 1;
        while (step.load() != 2)
            usleep(100);
        t_hold = true;
        ok = vs_pool_allocate(p.get(), 64, 2, &got);
    });
    while (step.load() != 1)
        usleep(100);
    ASSERT_EQ(vs_pool_free_owned(p.get(), x, 1), VS_OK);
    ASSERT_EQ(vs_pool_free_owned(p.get(), y, 1), VS_OK); // class 0: x and y free, in the bitmap
    vs__debug_before_claim_cas = hold_at_candidate;
    step = 2;
    for (int i = 0; i < 50000 && g_phase.load() != 1; i++)
        usleep(100);
    ASSERT_EQ(g_phase.load(), 1) << "the worker never reached its claim";
    uint32_t cand = g_candidate; // class 0 is first: its index is the slot index
    // This thread wins the candidate (its search republishes both slots and takes them), then
    // clears `parked` and gives the other one back to the bitmap: the loser's reservation is
    // then the only way it has to that slot.
    vs_slot_ref a, b, spill;
    ASSERT_TRUE(vs_pool_allocate(p.get(), 64, 1, &a));
    ASSERT_TRUE(vs_pool_allocate(p.get(), 64, 1, &b));
    ASSERT_EQ(a.class_idx + b.class_idx, 0);
    ASSERT_TRUE(a.slot_idx == cand || b.slot_idx == cand);
    ASSERT_TRUE(vs_pool_allocate(p.get(), 64, 1, &spill));
    ASSERT_EQ(spill.class_idx, 1);
    vs_slot_ref other = a.slot_idx == cand ? b : a;
    ASSERT_EQ(vs_pool_free_owned(p.get(), other, 1), VS_OK);
    ASSERT_EQ(vs_pool_free_owned(p.get(), spill, 1), VS_OK);
    g_phase = 2;
    loser.join();
    vs__debug_before_claim_cas = nullptr;
    ASSERT_TRUE(ok);
    EXPECT_EQ(got.class_idx, 0) << "it lost its candidate and gave up on class 0 with a free "
                                   "slot of it in its own reservation";
    EXPECT_EQ(got.slot_idx, other.slot_idx);
}

// Leaving publishes the calling thread's batch: the slots are in the bitmap, not only
// findable through `parked`.
TEST(Batch, LeavingPublishesThisThreadsBatch)
{
    TestSegment seg("batchleave", kBatched, 2);
    uint8_t me = seg.join();
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(seg.pool(), 64, me, &r));
    Worker other;
    other.run([&] { EXPECT_EQ(vs_pool_free(seg.pool(), r), VS_OK); }); // pending in `other`
    const vs_pool_class *c = &seg.pool()->classes[0];
    auto bit_set = [&] {
        return (__atomic_load_n((uint64_t *)c->bitmap + r.slot_idx / 64, __ATOMIC_ACQUIRE) >>
                (r.slot_idx % 64)) & 1;
    };
    EXPECT_FALSE(bit_set()) << "a batch of one should not have been published yet";
    other.run([&] { // another thread of this process may leave: its own batch goes out
        EXPECT_EQ(vs_segment_leave(&seg.seg), VS_OK);
    });
    EXPECT_TRUE(bit_set()) << "leaving kept this thread's freed slot out of the bitmap";
}
