// Shared read-only slots in one process: the API's answers, racing releases, what a reap and
// a leave drop, and scribbled share entries. (Across processes and under kills:
// share_kill_test.cpp.)
#include "test_util.h"

#include <random>

using namespace vstest;

TEST(Share, EveryReaderReadsTheOwnersBytesAndTheLastReleaseFreesTheSlot)
{
    HeapPool hp;
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(hp.get(), 1000, 1, &r));
    memset(vs_pool_slot_data(hp.get(), &r), 0x5a, 1000);
    const uint8_t readers[] = {1, 2, 3};
    ASSERT_EQ(vs_pool_share(hp.get(), r, 1, readers, 3), VS_OK);
    EXPECT_EQ(slot_info_of(hp.get(), r).state, (uint32_t)VS_SLOT_SHARED);
    EXPECT_EQ(share_readers_of(hp.get(), r), (std::vector<int>{1, 2, 3}));
    for (uint8_t p : readers) {
        auto *d = static_cast<const uint8_t *>(vs_pool_shared_data(hp.get(), &r, p));
        ASSERT_NE(d, nullptr) << "reader " << int(p);
        EXPECT_EQ(d[0], 0x5a);
        EXPECT_EQ(d[999], 0x5a);
    }
    EXPECT_EQ(vs_pool_shared_data(hp.get(), &r, 4), nullptr) << "peer 4 is no reader";
    // Shared is not owned: nobody may write, free, give it away or share it again.
    EXPECT_EQ(vs_pool_slot_data(hp.get(), &r), nullptr);
    EXPECT_EQ(vs_pool_free(hp.get(), r), VS_EDOUBLEFREE);
    EXPECT_EQ(vs_pool_transfer(hp.get(), r, 1, 2), VS_ESTALE);
    EXPECT_EQ(vs_pool_share(hp.get(), r, 1, readers, 3), VS_ESTALE);
    vs_pool_reclaim_peer_slots(hp.get(), 9); // no seat of peer 9: nothing changes
    EXPECT_EQ(share_readers_of(hp.get(), r).size(), 3u);

    EXPECT_EQ(vs_pool_release(hp.get(), r, 2), VS_OK);
    EXPECT_EQ(vs_pool_release(hp.get(), r, 2), VS_EDOUBLEFREE) << "a second release by one reader";
    EXPECT_EQ(vs_pool_release(hp.get(), r, 4), VS_EDOUBLEFREE) << "a release by a non-reader";
    EXPECT_EQ(vs_pool_shared_data(hp.get(), &r, 2), nullptr) << "released: no longer readable";
    EXPECT_EQ(vs_pool_release(hp.get(), r, 1), VS_OK);
    EXPECT_EQ(slot_info_of(hp.get(), r).state, (uint32_t)VS_SLOT_SHARED) << "reader 3 still reads";
    EXPECT_EQ(vs_pool_release(hp.get(), r, 3), VS_OK);
    EXPECT_EQ(slot_info_of(hp.get(), r).state, (uint32_t)VS_SLOT_FREE);
    EXPECT_EQ(vs_pool_release(hp.get(), r, 3), VS_EDOUBLEFREE);
    uint8_t out[VS_MAX_READERS];
    size_t n = 0;
    EXPECT_EQ(vs_pool_share_readers(hp.get(), r, out, &n), VS_ESTALE);
    expect_every_slot_free_once(hp.get(), 1);
}

TEST(Share, BadArgumentsAreRefusedAndChangeNothing)
{
    HeapPool hp;
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(hp.get(), 10, 1, &r));
    uint8_t many[VS_MAX_READERS + 1];
    for (size_t i = 0; i < sizeof many; i++)
        many[i] = (uint8_t)(i + 1);
    EXPECT_EQ(vs_pool_share(hp.get(), r, 1, many, 0), VS_EINVAL);
    EXPECT_EQ(vs_pool_share(hp.get(), r, 1, many, VS_MAX_READERS + 1), VS_EINVAL);
    EXPECT_EQ(vs_pool_share(hp.get(), r, 1, nullptr, 1), VS_EINVAL);
    const uint8_t zero[] = {2, 0};
    EXPECT_EQ(vs_pool_share(hp.get(), r, 1, zero, 2), VS_EINVAL) << "peer 0 is nobody";
    EXPECT_EQ(vs_pool_share(hp.get(), r, 2, many, 1), VS_EPERM) << "peer 2 does not own it";
    vs_slot_ref out_of_range = r;
    out_of_range.class_idx = 7;
    EXPECT_EQ(vs_pool_share(hp.get(), out_of_range, 1, many, 1), VS_EINVAL);
    EXPECT_EQ(vs_pool_release(hp.get(), out_of_range, 1), VS_EINVAL);
    EXPECT_EQ(vs_pool_release(hp.get(), r, 1), VS_EDOUBLEFREE) << "not shared";
    EXPECT_EQ(vs_pool_shared_data(hp.get(), nullptr, 1), nullptr);
    EXPECT_EQ(slot_info_of(hp.get(), r).state, (uint32_t)VS_SLOT_ALLOCATED);
    // All sixteen seats, then a stale ref of the slot.
    ASSERT_EQ(vs_pool_share(hp.get(), r, 1, many, VS_MAX_READERS), VS_OK);
    EXPECT_EQ(share_readers_of(hp.get(), r).size(), (size_t)VS_MAX_READERS);
    for (size_t i = 0; i < VS_MAX_READERS; i++)
        EXPECT_EQ(vs_pool_release(hp.get(), r, many[i]), VS_OK);
    EXPECT_EQ(vs_pool_share(hp.get(), r, 1, many, 1), VS_ESTALE);
    expect_every_slot_free_once(hp.get(), 1);
}

TEST(Share, APeerNamedTwiceHoldsTwoReferences)
{
    HeapPool hp;
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(hp.get(), 10, 1, &r));
    const uint8_t readers[] = {2, 2};
    ASSERT_EQ(vs_pool_share(hp.get(), r, 1, readers, 2), VS_OK);
    EXPECT_EQ(vs_pool_release(hp.get(), r, 2), VS_OK);
    EXPECT_NE(vs_pool_shared_data(hp.get(), &r, 2), nullptr) << "its second reference still reads";
    EXPECT_EQ(vs_pool_release(hp.get(), r, 2), VS_OK);
    EXPECT_EQ(vs_pool_release(hp.get(), r, 2), VS_EDOUBLEFREE);
    expect_every_slot_free_once(hp.get(), 1);
}

// A reader that kept a handle of an earlier share of the slot releases nothing of the next
// share, whose readers are the same peers: the generation tells the shares apart.
TEST(Share, AReleaseOfAnEarlierShareOfTheSlotIsRefused)
{
    const vs_class_config one[] = {{64, 1}};
    HeapPool hp(one, 1);
    const uint8_t readers[] = {2, 3};
    vs_slot_ref old;
    ASSERT_TRUE(vs_pool_allocate(hp.get(), 10, 1, &old));
    ASSERT_EQ(vs_pool_share(hp.get(), old, 1, readers, 2), VS_OK);
    ASSERT_EQ(vs_pool_release(hp.get(), old, 2), VS_OK);
    ASSERT_EQ(vs_pool_release(hp.get(), old, 3), VS_OK);
    vs_slot_ref now;
    ASSERT_TRUE(vs_pool_allocate(hp.get(), 10, 1, &now));
    ASSERT_EQ(now.slot_idx, old.slot_idx) << "the one slot, reused";
    ASSERT_EQ(vs_pool_share(hp.get(), now, 1, readers, 2), VS_OK);
    EXPECT_EQ(vs_pool_release(hp.get(), old, 2), VS_EDOUBLEFREE);
    EXPECT_EQ(vs_pool_shared_data(hp.get(), &old, 3), nullptr);
    EXPECT_EQ(share_readers_of(hp.get(), now), (std::vector<int>{2, 3}));
    EXPECT_EQ(vs_pool_release(hp.get(), now, 2), VS_OK);
    EXPECT_EQ(vs_pool_release(hp.get(), now, 3), VS_OK);
    expect_every_slot_free_once(hp.get(), 1);
}

// Two threads (one per core) release at once, each for two readers and each reference
// twice: each reference drops once, the slot is freed once, by the last release, and never
// while a reader still holds it.
TEST(Share, RacingReleasesDropEachReferenceOnceAndFreeTheSlotOnce)
{
    const vs_class_config one[] = {{64, 2}};
    HeapPool hp(one, 1);
    const int kThreads = 2, kReaders = 4;
    const uint8_t readers[kReaders] = {1, 2, 3, 4};
    std::atomic<int> ok{0}, refused{0}, freed_early{0};
    vs_slot_ref r{};
    const int rounds = (int)scaled(20000);
    auto prepare = [&] {
        if (!vs_pool_allocate(hp.get(), 8, 9, &r))
            return false;
        *static_cast<uint64_t *>(vs_pool_slot_data(hp.get(), &r)) = vs_slot_ref_pack(r);
        return vs_pool_share(hp.get(), r, 9, readers, kReaders) == VS_OK;
    };
    ASSERT_TRUE(prepare());
    race_rounds(
        kThreads, rounds,
        [&](int t, int) {
            for (int i = 0; i < 4; i++) { // readers t and t + 2, each twice
                uint8_t me = readers[t + 2 * (i % 2)];
                if (i < 2) {
                    auto *d = static_cast<const uint64_t *>(vs_pool_shared_data(hp.get(), &r, me));
                    if (!d || *d != vs_slot_ref_pack(r))
                        freed_early++;
                }
                (vs_pool_release(hp.get(), r, me) == VS_OK ? ok : refused)++;
            }
        },
        [&](int round) {
            EXPECT_EQ(slot_info_of(hp.get(), r).state, (uint32_t)VS_SLOT_FREE) << "round " << round;
            return prepare();
        });
    EXPECT_EQ(freed_early.load(), 0);
    EXPECT_EQ(ok.load(), rounds * kReaders);
    EXPECT_EQ(refused.load(), rounds * kReaders);
    for (uint8_t p : readers) // the share the last check prepared
        vs_pool_release(hp.get(), r, p);
    expect_every_slot_free_once(hp.get(), 9);
}

// Sharing many slots from several threads while others read and release them, with frees and
// allocations of owned slots around: every slot ends free once, nothing read was ever torn.
TEST(Share, ThreadsSharingReadingAndReleasingLoseNothing)
{
    const vs_class_config c[] = {{256, 64}};
    HeapPool hp(c, 1);
    const int kPublishers = 2, kReaders = 2;
    const int frames = (int)scaled(40000);
    struct Box {
        std::atomic<uint64_t> handle{0};
    };
    std::vector<Box> boxes(kPublishers * kReaders);
    std::atomic<int> bad{0}, done{0};
    run_threads(kPublishers + kReaders, [&](int t) {
        if (t < kPublishers) { // publisher t: shares each frame with both readers and itself
            std::mt19937 rng(t);
            for (int f = 0; f < frames; f++) {
                vs_slot_ref r;
                if (!vs_pool_allocate(hp.get(), 256, (uint8_t)(10 + t), &r)) {
                    f--;
                    std::this_thread::yield();
                    continue;
                }
                auto *d = static_cast<uint64_t *>(vs_pool_slot_data(hp.get(), &r));
                for (int i = 0; i < 32; i++)
                    d[i] = vs_slot_ref_pack(r) + i;
                const uint8_t readers[] = {(uint8_t)(10 + t), 1, 2};
                if (vs_pool_share(hp.get(), r, (uint8_t)(10 + t), readers, 3) != VS_OK)
                    bad++;
                for (int k = 0; k < kReaders; k++) { // the readers' mailboxes: one frame each
                    uint64_t expect = 0;
                    while (!boxes[t * kReaders + k].handle.compare_exchange_weak(expect, vs_slot_ref_pack(r))) {
                        expect = 0;
                        std::this_thread::yield();
                    }
                }
                if (rng() % 2)
                    std::this_thread::yield();
                if (vs_pool_release(hp.get(), r, (uint8_t)(10 + t)) != VS_OK)
                    bad++;
            }
            done++;
            return;
        }
        int k = t - kPublishers;
        uint8_t me = (uint8_t)(1 + k);
        for (;;) {
            bool any = false;
            for (int p = 0; p < kPublishers; p++) {
                uint64_t h = boxes[p * kReaders + k].handle.exchange(0);
                if (!h)
                    continue;
                any = true;
                vs_slot_ref r = vs_slot_ref_unpack(h);
                auto *d = static_cast<const uint64_t *>(vs_pool_shared_data(hp.get(), &r, me));
                for (int i = 0; d && i < 32; i++)
                    if (d[i] != h + i)
                        d = nullptr;
                if (!d || vs_pool_release(hp.get(), r, me) != VS_OK)
                    bad++;
            }
            if (!any && done.load() == kPublishers) {
                bool empty = true;
                for (int p = 0; p < kPublishers; p++)
                    empty &= boxes[p * kReaders + k].handle.load() == 0;
                if (empty)
                    return;
            }
            if (!any)
                std::this_thread::yield();
        }
    });
    EXPECT_EQ(bad.load(), 0);
    expect_every_slot_free_once(hp.get(), 1);
}

// A scribbled share entry (the reader mask, the seats, the generation in it) makes releases
// fail or free the slot early: errors, never a crash or an access outside the pool.
TEST(Share, AScribbledShareEntryGivesErrorsNotCrashes)
{
    const vs_class_config c[] = {{64, 4}};
    HeapPool hp(c, 1);
    vs_layout lay;
    ASSERT_EQ(vs_pool_layout(c, 1, &lay), VS_OK);
    // The share table lies between the bitmap and the data: scribble over all of it.
    auto *base = static_cast<uint8_t *>(hp.mem);
    size_t table_end = lay.class_offsets[0].data_offset;
    size_t table_start = table_end - 4 * 32;
    std::mt19937 rng(7);
    for (int round = 0; round < 2000; round++) {
        vs_slot_ref r;
        ASSERT_TRUE(vs_pool_allocate(hp.get(), 10, 1, &r));
        const uint8_t readers[] = {1, 2, 3};
        ASSERT_EQ(vs_pool_share(hp.get(), r, 1, readers, 3), VS_OK);
        for (size_t i = table_start; i < table_end; i++)
            if (rng() % 3 == 0)
                base[i] = (uint8_t)rng();
        for (uint8_t p = 0; p < 6; p++) {
            vs_pool_shared_data(hp.get(), &r, p);
            uint8_t out[VS_MAX_READERS];
            size_t n = 0;
            vs_pool_share_readers(hp.get(), r, out, &n);
            EXPECT_LE(n, (size_t)VS_MAX_READERS);
            int rc = vs_pool_release(hp.get(), r, p);
            EXPECT_TRUE(rc == VS_OK || rc == VS_EDOUBLEFREE) << rc;
        }
        // Whatever the scribble did, the slot is shared still or free; clean up by hand.
        vs_slot_info i = slot_info_of(hp.get(), r);
        ASSERT_TRUE(i.state == VS_SLOT_SHARED || i.state == VS_SLOT_FREE) << i.state;
        if (i.state == VS_SLOT_SHARED) {
            memset(base + table_start + (r.slot_idx % 4) * 32, 0, 32);
            // an empty share of this generation: the next reclaim finishes it
            uint64_t live = (uint64_t)r.generation | (uint64_t)(r.slot_idx / 4 & 0xffff) << 32;
            memcpy(base + table_start + (r.slot_idx % 4) * 32, &live, 8);
            vs_pool_reclaim_peer_slots(hp.get(), 200);
            ASSERT_EQ(slot_info_of(hp.get(), r).state, (uint32_t)VS_SLOT_FREE);
        }
    }
    expect_every_slot_free_once(hp.get(), 1);
}

// ---- in a segment: readers are joined peers ----

TEST(ShareSegment, EveryReaderMustBeAJoinedPeer)
{
    TestSegment seg("share-join", kRefClasses, 3, 4);
    uint8_t me = seg.join();
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(seg.pool(), 10, me, &r));
    const uint8_t nobody[] = {me, (uint8_t)(me == 1 ? 2 : 1)};
    EXPECT_EQ(vs_pool_share(seg.pool(), r, me, nobody, 2), VS_ENOTJOINED);
    const uint8_t beyond[] = {me, 5};
    EXPECT_EQ(vs_pool_share(seg.pool(), r, me, beyond, 2), VS_EINVAL) << "above max_peers";
    EXPECT_EQ(slot_info_of(seg.pool(), r).state, (uint32_t)VS_SLOT_ALLOCATED);
    const uint8_t self[] = {me};
    ASSERT_EQ(vs_pool_share(seg.pool(), r, me, self, 1), VS_OK);
    // Leaving drops this peer's references: the slot comes back.
    ASSERT_EQ(vs_segment_leave(&seg.seg), VS_OK);
    EXPECT_EQ(slot_info_of(seg.pool(), r).state, (uint32_t)VS_SLOT_FREE);
    expect_every_slot_free_once(seg.pool(), seg.join());
}

// A dead reader's references go with its reap; a live reader's stay, and its release frees.
TEST(ShareSegment, AReapDropsTheDeadReadersReferencesOnly)
{
    TestSegment seg("share-reap");
    uint8_t me = seg.join();
    int ids[2];
    ASSERT_EQ(pipe(ids), 0);
    int go[2];
    ASSERT_EQ(pipe(go), 0);
    std::string name = seg.name;
    pid_t child = spawn([&] {
        vs_segment s;
        uint8_t id;
        if (vs_segment_open(&s, name.c_str()) != VS_OK || vs_segment_join(&s, &id) != VS_OK)
            return 2;
        if (write(ids[1], &id, 1) != 1)
            return 3;
        char c;
        if (read(go[0], &c, 1) != 1) // shared with us by now: die holding the references
            return 4;
        die_holding_slots(vs_segment_pool(&s));
    });
    uint8_t other = 0;
    ASSERT_EQ(read(ids[0], &other, 1), 1) << wait_child(child);
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(seg.pool(), 10, me, &r));
    const uint8_t readers[] = {other, me, other};
    ASSERT_EQ(vs_pool_share(seg.pool(), r, me, readers, 3), VS_OK);
    ASSERT_EQ(write(go[1], "g", 1), 1);
    ASSERT_EQ(wait_child(child), 128 + SIGKILL);
    unsigned n = 0;
    ASSERT_EQ(vs_segment_reap(&seg.seg, &n), VS_OK);
    EXPECT_EQ(n, 1u);
    EXPECT_EQ(share_readers_of(seg.pool(), r), (std::vector<int>{me})) << "only the live reader is left";
    EXPECT_NE(vs_pool_shared_data(seg.pool(), &r, me), nullptr);
    EXPECT_EQ(vs_pool_release(seg.pool(), r, me), VS_OK);
    EXPECT_EQ(slot_info_of(seg.pool(), r).state, (uint32_t)VS_SLOT_FREE);
    for (int fd : {ids[0], ids[1], go[0], go[1]})
        close(fd);
    expect_every_slot_free_once(seg.pool(), me);
}
