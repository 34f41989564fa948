// Real processes on one segment: several peers allocating and freeing at once with their
// ids stamped into the slots, and frames handed from one process to another by handle.
#include "test_util.h"

#include <random>
#include <set>

using namespace vstest;

namespace {

struct Stamp {
    uint64_t handle; // the slot's own handle: a slot held twice would carry another's
    int32_t pid;
    uint32_t seq;
};

// One peer's stress loop: allocate, stamp, hold a few, verify the stamp, free. Returns the
// number of violations seen (a stamp changed under us, a free that failed).
int stress_peer(const std::string &name, int iters, unsigned seed)
{
    vs_segment s;
    uint8_t id;
    if (vs_segment_open(&s, name.c_str()) != VS_OK || vs_segment_join(&s, &id) != VS_OK)
        return 100;
    const vs_pool *pool = vs_segment_pool(&s);
    std::mt19937 rng(seed);
    std::vector<std::pair<vs_slot_ref, Stamp>> held;
    int bad = 0;
    auto check_and_free = [&](size_t i) {
        auto [r, st] = held[i];
        auto *d = static_cast<Stamp *>(vs_pool_slot_data(pool, &r));
        vs_slot_info info;
        if (!d || d->handle != st.handle || d->pid != st.pid || d->seq != st.seq)
            bad++;
        if (vs_pool_slot_info(pool, r.class_idx, r.slot_idx, &info) != VS_OK || info.owner != id)
            bad++;
        if (vs_pool_free(pool, r) != VS_OK)
            bad++;
        held[i] = held.back();
        held.pop_back();
    };
    for (int i = 0; i < iters; i++) {
        if (held.size() >= 8 || (!held.empty() && rng() % 2)) {
            check_and_free(rng() % held.size());
            continue;
        }
        vs_slot_ref r;
        uint32_t size = sizeof(Stamp) + rng() % 20000; /* the stamp must fit what we asked for */
        if (!vs_pool_allocate(pool, size, id, &r))
            continue;
        auto *d = static_cast<Stamp *>(vs_pool_slot_data(pool, &r));
        Stamp st{vs_slot_ref_pack(r), getpid(), static_cast<uint32_t>(i)};
        *d = st;
        held.push_back({r, st});
    }
    while (!held.empty())
        check_and_free(held.size() - 1);
    vs_segment_close(&s);
    return bad > 99 ? 99 : bad;
}

} // namespace

TEST(MultiProcess, FourPeersStressNoSlotEverHeldTwice)
{
    const vs_class_config classes[3] = {{1024, 12}, {16384, 8}, {65536, 4}};
    TestSegment seg("mp-stress", classes, 3);
    const int kPeers = 4;
    std::vector<pid_t> pids;
    for (int p = 0; p < kPeers; p++)
        pids.push_back(spawn([&, p] { return stress_peer(seg.name, (int)scaled(200000), 1234 + p); }));
    for (pid_t pid : pids)
        EXPECT_EQ(wait_child(pid), 0) << "a peer saw a slot it held change owner or content";
    std::vector<vs_slot_ref> got;
    EXPECT_EQ(drain_count(seg.pool(), seg.join(), &got), 24u);
    std::set<uint64_t> unique;
    for (auto &r : got)
        unique.insert((uint64_t)r.class_idx << 32 | r.slot_idx);
    EXPECT_EQ(unique.size(), 24u);
}

TEST(MultiProcess, FramesHandedOverByHandleArriveIntactAndAreFreedByTheReceiver)
{
    const vs_class_config classes[2] = {{4096, 4}, {65536, 4}};
    TestSegment seg("mp-handoff", classes, 2);
    int handles[2], returns[2];
    ASSERT_EQ(pipe(handles), 0);
    ASSERT_EQ(pipe(returns), 0);
    const int kFrames = (int)scaled(20000);
    std::string name = seg.name;
    pid_t producer = spawn([&] {
        close(handles[0]);
        close(returns[1]);
        vs_segment s;
        uint8_t id;
        if (vs_segment_open(&s, name.c_str()) != VS_OK || vs_segment_join(&s, &id) != VS_OK)
            return 2;
        if (write(handles[1], &id, 1) != 1)
            return 3;
        for (int i = 0; i < kFrames; i++) {
            vs_slot_ref r;
            uint32_t size = i % 2 ? 60000 : 3000;
            while (!vs_pool_allocate(vs_segment_pool(&s), size, id, &r)) {
                char c; // backpressure: wait for the consumer to free one
                if (read(returns[0], &c, 1) != 1)
                    return 4;
            }
            auto *d = static_cast<uint32_t *>(vs_pool_slot_data(vs_segment_pool(&s), &r));
            for (uint32_t k = 0; k < size / 4; k++)
                d[k] = i * 2654435761u + k;
            uint64_t h = vs_slot_ref_pack(r);
            vs_pool_handed_over(vs_segment_pool(&s), r); // the consumer's from here on
            if (write(handles[1], &h, sizeof h) != sizeof h)
                return 5;
        }
        return 0;
    });
    pid_t consumer = spawn([&] {
        close(handles[1]);
        close(returns[0]);
        vs_segment s;
        uint8_t id, from;
        if (vs_segment_open(&s, name.c_str()) != VS_OK || vs_segment_join(&s, &id) != VS_OK)
            return 2;
        if (read(handles[0], &from, 1) != 1)
            return 3;
        for (int i = 0; i < kFrames; i++) {
            uint64_t h;
            if (read(handles[0], &h, sizeof h) != sizeof h)
                return 4;
            vs_slot_ref r = vs_slot_ref_unpack(h);
            if (vs_pool_transfer(vs_segment_pool(&s), r, from, id) != VS_OK)
                return 5; // the receiver owns it from here on
            auto *d = static_cast<const uint32_t *>(vs_pool_slot_data(vs_segment_pool(&s), &r));
            uint32_t size = i % 2 ? 60000 : 3000;
            for (uint32_t k = 0; k < size / 4; k++)
                if (d[k] != i * 2654435761u + k)
                    return 6;
            if (vs_pool_free(vs_segment_pool(&s), r) != VS_OK)
                return 7;
            (void)!write(returns[1], "r", 1); // fails harmlessly once the producer is done
        }
        return 0;
    });
    close(handles[0]);
    close(handles[1]);
    close(returns[1]);
    close(returns[0]);
    EXPECT_EQ(wait_child(producer), 0);
    EXPECT_EQ(wait_child(consumer), 0);
    std::vector<vs_slot_ref> got;
    EXPECT_EQ(drain_count(seg.pool(), seg.join(), &got), 8u);
}

TEST(MultiProcess, HostileHandlesFromAnotherProcessNeverReachOutOfBounds)
{
    TestSegment seg("mp-hostile");
    uint8_t me;
    ASSERT_EQ(vs_segment_join(&seg.seg, &me), VS_OK);
    vs_slot_ref mine;
    ASSERT_TRUE(vs_pool_allocate(seg.pool(), 100, me, &mine));
    std::mt19937_64 rng(7);
    for (long i = 0; i < scaled(200000); i++) {
        vs_slot_ref r = vs_slot_ref_unpack(rng());
        if (i % 2) // plausible class and slot, random generation
            r = {static_cast<uint8_t>(rng() % 3), 0, static_cast<uint32_t>(rng() % 8),
                 static_cast<uint32_t>(rng())};
        if (vs_slot_ref_pack(r) == vs_slot_ref_pack(mine))
            continue;
        void *d = vs_pool_slot_data(seg.pool(), &r);
        ASSERT_EQ(d, nullptr);
        int rc = vs_pool_free(seg.pool(), r);
        ASSERT_TRUE(rc == VS_EINVAL || rc == VS_EDOUBLEFREE) << rc;
        rc = vs_pool_transfer(seg.pool(), r, me, 9);
        ASSERT_TRUE(rc == VS_EINVAL || rc == VS_ESTALE) << rc;
    }
    EXPECT_NE(vs_pool_slot_data(seg.pool(), &mine), nullptr);
}
