// Shared slots across processes: one publisher, three reader processes, no copies; readers
// and publishers SIGKILLed at random instants and at the exact instants between the steps of
// sharing and releasing. A live reader's frames never change while it holds them, and once the
// dead are reaped every slot is allocatable exactly once.
#include "test_util.h"

#include <poll.h>

#include <deque>
#include <random>

using namespace vstest;

extern "C" {
extern vs__debug_hook vs__debug_before_share_cas;
extern vs__debug_hook vs__debug_before_finish_cas;
extern vs__debug_hook vs__debug_after_leave_reclaim;
}

namespace {

const vs_class_config kFrames[] = {{4096, 256}};
const size_t kWords = 4096 / 8;

// A frame's bytes are a function of its handle and a sequence number, so a reader can tell an
// intact frame from one rewritten by a later owner of its slot.
void stamp(uint64_t *d, uint64_t handle, uint64_t seq)
{
    d[0] = handle;
    d[1] = seq;
    for (size_t i = 2; i < kWords; i++)
        d[i] = handle * 0x9e3779b97f4a7c15ull ^ (seq + i);
}
bool intact(const uint64_t *d, uint64_t handle)
{
    if (d[0] != handle)
        return false;
    for (size_t i = 2; i < kWords; i++)
        if (d[i] != (handle * 0x9e3779b97f4a7c15ull ^ (d[1] + i)))
            return false;
    return true;
}

struct Message { // 16 bytes: one pipe write is atomic, so a kill never tears it
    uint64_t handle;
    uint64_t seq;
};

bool open_and_join(const std::string &name, vs_segment *s, uint8_t *id)
{
    return vs_segment_open(s, name.c_str()) == VS_OK && vs_segment_join(s, id) == VS_OK;
}


// The shared slots in which `reader` still holds a reference.
std::vector<vs_slot_ref> seats_of(const vs_pool *pool, uint8_t reader)
{
    std::vector<vs_slot_ref> out;
    for (size_t c = 0; c < vs_pool_class_count(pool); c++)
        for (uint32_t i = 0; i < vs_pool_slot_count(pool, c); i++) {
            vs_slot_info info;
            if (vs_pool_slot_info(pool, (uint8_t)c, i, &info) != VS_OK || info.state != VS_SLOT_SHARED)
                continue;
            vs_slot_ref r{};
            r.class_idx = (uint8_t)c;
            r.slot_idx = i + info.lap * vs_pool_slot_count(pool, c);
            r.generation = info.generation;
            uint8_t readers[VS_MAX_READERS];
            size_t n = 0;
            if (vs_pool_share_readers(pool, r, readers, &n) == VS_OK &&
                std::count(readers, readers + n, reader))
                out.push_back(r);
        }
    return out;
}

} // namespace

// One publisher shares every frame with three reader processes: each reads the publisher's
// bytes in place (the pointer is the slot's own, in the shared mapping: nothing was copied)
// and releases; the last release of each frame frees it, so the pool never runs dry.
TEST(ShareAcrossProcesses, ThreeReadersReadEveryFrameInPlaceAndTheLastReleaseFreesIt)
{
    TestSegment seg("share-fanout", kFrames, 1);
    const vs_pool *pool = seg.pool();
    uint8_t me = seg.join();
    const int kReaders = 3;
    const uint64_t frames = (uint64_t)scaled(20000);
    int to[kReaders][2], ids[2];
    ASSERT_EQ(pipe(ids), 0);
    std::vector<pid_t> kids;
    std::string name = seg.name;
    uintptr_t slots_lo = (uintptr_t)vs_pool_class_data(&pool->classes[0]);
    for (int k = 0; k < kReaders; k++) {
        ASSERT_EQ(pipe(to[k]), 0);
        kids.push_back(spawn([&, k] {
            close(to[k][1]);
            vs_segment s;
            uint8_t id;
            if (!open_and_join(name, &s, &id) || write(ids[1], &id, 1) != 1)
                return 2;
            const vs_pool *p = vs_segment_pool(&s);
            Message m;
            uint64_t seen = 0;
            while (read(to[k][0], &m, sizeof m) == sizeof m) {
                vs_slot_ref r = vs_slot_ref_unpack(m.handle);
                auto *d = static_cast<const uint64_t *>(vs_pool_shared_data(p, &r, id));
                vs_slot_location loc;
                if (!d || vs_pool_locate_slot(p, r.class_idx, r.slot_idx % vs_pool_slot_count(p, 0), &loc) != VS_OK ||
                    loc.start != d)
                    return 3;
                if (s.at_creator_address && (uintptr_t)d - slots_lo >= 4096u * 256)
                    return 4; // the same address as the publisher's: the very bytes it wrote
                if (!intact(d, m.handle) || d[1] != m.seq)
                    return 5;
                if (vs_pool_release(p, r, id) != VS_OK)
                    return 6;
                seen++;
            }
            vs_segment_close(&s);
            return seen == frames ? 0 : 7;
        }));
        close(to[k][0]);
    }
    uint8_t readers[kReaders];
    for (int k = 0; k < kReaders; k++)
        ASSERT_EQ(read(ids[0], &readers[k], 1), 1);
    // The ids arrive in any order; each pipe's reader must get its own id's seats, so every
    // frame goes to all three: which pipe carries which id does not matter.
    for (uint64_t f = 0; f < frames; f++) {
        vs_slot_ref r;
        while (!vs_pool_allocate(pool, 4096, me, &r))
            sched_yield(); // all 256 slots in flight: wait for releases
        uint64_t h = vs_slot_ref_pack(r);
        stamp(static_cast<uint64_t *>(vs_pool_slot_data(pool, &r)), h, f);
        ASSERT_EQ(vs_pool_share(pool, r, me, readers, kReaders), VS_OK);
        Message m{h, f};
        for (int k = 0; k < kReaders; k++)
            ASSERT_EQ(write(to[k][1], &m, sizeof m), (ssize_t)sizeof m);
    }
    for (int k = 0; k < kReaders; k++)
        close(to[k][1]);
    for (pid_t kid : kids)
        EXPECT_EQ(wait_child(kid), 0);
    close(ids[0]);
    close(ids[1]);
    expect_every_slot_free_once(seg);
}

namespace {

// A victim: publishes frames to itself and the survivor, keeps its own reference to the last
// few and releases the oldest, and churns owned slots besides, until it is killed.
int victim(const std::string &name, uint8_t survivor, int to_survivor, int joined, unsigned seed)
{
    vs_segment s;
    uint8_t id;
    if (!open_and_join(name, &s, &id))
        return 2;
    if (joined >= 0 && write(joined, "j", 1) != 1)
        return 3;
    const vs_pool *pool = vs_segment_pool(&s);
    std::mt19937 rng(seed);
    std::deque<vs_slot_ref> mine;
    for (uint64_t seq = 0;; seq++) {
        vs_slot_ref r;
        if (!vs_pool_allocate(pool, 4096, id, &r))
            continue;
        uint64_t h = vs_slot_ref_pack(r);
        stamp(static_cast<uint64_t *>(vs_pool_slot_data(pool, &r)), h, seq);
        if (rng() % 4 == 0) { // an owned slot, freed again
            if (vs_pool_free(pool, r) != VS_OK)
                return 4;
            continue;
        }
        const uint8_t readers[] = {id, survivor};
        int rc = vs_pool_share(pool, r, id, readers, 2);
        if (rc != VS_OK)
            return 10 + -rc;
        Message m{h, seq};
        if (write(to_survivor, &m, sizeof m) != sizeof m)
            return 5;
        mine.push_back(r);
        if (mine.size() > 4) {
            if (vs_pool_release(pool, mine.front(), id) != VS_OK)
                return 6;
            mine.pop_front();
        }
    }
}

// The live reader: holds up to eight frames at a time and checks each one again just before
// it releases it. A frame that changed under it was reused while it held it.
int survivor(const std::string &name, int id_out, int from_victims, int report)
{
    vs_segment s;
    uint8_t id;
    if (!open_and_join(name, &s, &id) || write(id_out, &id, 1) != 1)
        return 2;
    const vs_pool *pool = vs_segment_pool(&s);
    std::deque<Message> held;
    uint64_t taken = 0;
    auto release_oldest = [&] {
        Message m = held.front();
        held.pop_front();
        vs_slot_ref r = vs_slot_ref_unpack(m.handle);
        auto *d = static_cast<const uint64_t *>(vs_pool_shared_data(pool, &r, id));
        return d && intact(d, m.handle) && d[1] == m.seq && vs_pool_release(pool, r, id) == VS_OK;
    };
    Message m;
    while (read(from_victims, &m, sizeof m) == sizeof m) {
        vs_slot_ref r = vs_slot_ref_unpack(m.handle);
        auto *d = static_cast<const uint64_t *>(vs_pool_shared_data(pool, &r, id));
        if (!d || !intact(d, m.handle) || d[1] != m.seq)
            return 3;
        held.push_back(m);
        taken++;
        if (held.size() > 8 && !release_oldest())
            return 4;
    }
    while (!held.empty())
        if (!release_oldest())
            return 5;
    // A publisher killed between its share and its message left us references we never
    // heard of: they are ours to drop, and leaving does.
    uint64_t counts[2] = {taken, seats_of(pool, id).size()};
    if (vs_segment_leave(&s) != VS_OK || !seats_of(pool, id).empty())
        return 6;
    if (write(report, counts, sizeof counts) != sizeof counts)
        return 7;
    vs_segment_close(&s);
    return 0;
}

} // namespace

TEST(ShareKill, PublishersKilledAtRandomLoseNoSlotAndNeverChangeAFrameALiveReaderHolds)
{
    TestSegment seg("share-kill", kFrames, 1);
    int msgs[2], report[2], ids[2];
    ASSERT_EQ(pipe(msgs), 0);
    ASSERT_EQ(pipe(report), 0);
    ASSERT_EQ(pipe(ids), 0);
    std::string name = seg.name;
    pid_t live = spawn([&] {
        close(msgs[1]);
        close(report[0]);
        return survivor(name, ids[1], msgs[0], report[1]);
    });
    close(report[1]);
    uint8_t survivor_id = 0;
    ASSERT_EQ(read(ids[0], &survivor_id, 1), 1) << "the survivor did not start: " << wait_child(live);
    std::mt19937 rng(20261202);
    const int kKills = (int)scaled(400);
    for (int k = 0; k < kKills; k++) {
        int joined[2];
        ASSERT_EQ(pipe(joined), 0);
        pid_t v = spawn([&, k] {
            close(msgs[0]);
            return victim(name, survivor_id, msgs[1], joined[1], 1000 + k);
        });
        pollfd pfd{joined[0], POLLIN, 0};
        char c;
        ASSERT_EQ(poll(&pfd, 1, 30000), 1) << "victim " << k << " never joined: " << wait_child(v);
        ASSERT_EQ(read(joined[0], &c, 1), 1);
        close(joined[0]);
        close(joined[1]);
        unsigned us = stretched(rng() % 2000);
        if (us)
            usleep(us);
        kill(v, SIGKILL);
        ASSERT_EQ(wait_child(v), 128 + SIGKILL) << "victim " << k << " failed on its own";
    }
    close(msgs[1]);
    close(msgs[0]);
    uint64_t counts[2] = {0, 0};
    ssize_t got = read(report[0], counts, sizeof counts);
    close(report[0]);
    ASSERT_EQ(wait_child(live), 0) << "the live reader lost a frame or saw one change";
    ASSERT_EQ(got, (ssize_t)sizeof counts);
    EXPECT_GT(counts[0], 0u) << "no frame was ever shared: the test did not test sharing";
    RecordProperty("frames_read", std::to_string(counts[0]));
    RecordProperty("references_never_announced", std::to_string(counts[1]));
    unsigned n = 0;
    ASSERT_EQ(vs_segment_reap(&seg.seg, &n), VS_OK); // the last victim
    expect_every_slot_free_once(seg);
    close(ids[0]);
    close(ids[1]);
}

namespace {
vs_pool *dying_pool; // its blocks are left behind on purpose: memcheck forgets them first
void die_here(uint32_t) { die_holding_slots(dying_pool); }
} // namespace

// The windows between the steps, every run: a publisher killed with its seats written and the
// slot not yet shared (the slot is its own still: reaped), and the last reader killed between
// emptying the share and freeing the slot (an empty share: the reap frees it).
TEST(ShareKill, APeerKilledBetweenTheStepsOfAShareOrAReleaseLeavesNothingOnceReaped)
{
    for (int window = 0; window < 2; window++) {
        SCOPED_TRACE(window ? "last reader killed before the free" : "publisher killed before the share");
        TestSegment seg("share-window", kFrames, 1);
        uint8_t me = seg.join();
        int id_pipe[2], handle_pipe[2];
        ASSERT_EQ(pipe(id_pipe), 0);
        ASSERT_EQ(pipe(handle_pipe), 0);
        std::string name = seg.name;
        pid_t v = spawn([&] {
            vs_segment s;
            uint8_t id;
            if (!open_and_join(name, &s, &id))
                return 2;
            const vs_pool *p = vs_segment_pool(&s);
            dying_pool = vs_segment_pool(&s);
            if (!window) {
                vs_slot_ref r;
                if (!vs_pool_allocate(p, 100, id, &r))
                    return 3;
                const uint8_t readers[] = {id, me};
                vs__debug_before_share_cas = die_here;
                vs_pool_share(p, r, id, readers, 2);
                return 4; // the window was never reached
            }
            uint64_t h;
            if (write(id_pipe[1], &id, 1) != 1 || read(handle_pipe[0], &h, sizeof h) != sizeof h)
                return 5;
            vs__debug_before_finish_cas = die_here;
            vs_pool_release(p, vs_slot_ref_unpack(h), id);
            return 6;
        });
        vs_slot_ref r{};
        if (window) { // shared with the victim alone, which releases it last
            uint8_t id = 0;
            ASSERT_EQ(read(id_pipe[0], &id, 1), 1) << wait_child(v);
            ASSERT_TRUE(vs_pool_allocate(seg.pool(), 100, me, &r));
            const uint8_t readers[] = {id};
            ASSERT_EQ(vs_pool_share(seg.pool(), r, me, readers, 1), VS_OK);
            uint64_t h = vs_slot_ref_pack(r);
            ASSERT_EQ(write(handle_pipe[1], &h, sizeof h), (ssize_t)sizeof h);
        }
        ASSERT_EQ(wait_child(v), 128 + SIGKILL) << "the victim did not die in the window";
        if (window) {
            vs_slot_info info;
            ASSERT_EQ(vs_pool_slot_info(seg.pool(), r.class_idx, r.slot_idx, &info), VS_OK);
            EXPECT_EQ(info.state, (uint32_t)VS_SLOT_SHARED) << "killed before the free: still shared";
        }
        unsigned n = 0;
        ASSERT_EQ(vs_segment_reap(&seg.seg, &n), VS_OK);
        EXPECT_EQ(n, 1u);
        for (int fd : {id_pipe[0], id_pipe[1], handle_pipe[0], handle_pipe[1]})
            close(fd);
        expect_every_slot_free_once(seg);
    }
}

namespace {
// The reader that leaves, or dies and is reaped, while a share naming it is between its look
// at the reader's entry and its CAS.
std::function<void()> in_share_window;
void run_in_share_window(uint32_t)
{
    vs__debug_before_share_cas = nullptr;
    in_share_window();
}
} // namespace

namespace {
int leaving_signal = -1, leaving_resume = -1;
void pause_leaving(uint32_t)
{
    char c;
    if (write(leaving_signal, "r", 1) != 1 || read(leaving_resume, &c, 1) != 1)
        _exit(9);
}
} // namespace

// A reader that leaves or is reaped after the publisher checked it was joined, and before the
// slot was shared, has had its reclaim already: the share itself must drop its seat, or the
// slot would stay shared for a peer that is gone. And a reader whose leave has reclaimed its
// slots but not yet freed its entry is not joined any more: a share then is refused.
TEST(ShareKill, AReaderGoneBetweenTheCheckAndTheShareHoldsNoReference)
{
    for (int mode = 0; mode < 3; mode++) {
        const bool dies = mode == 1, mid_leave = mode == 2;
        SCOPED_TRACE(mode == 0 ? "the reader leaves" : dies ? "the reader dies and is reaped"
                                                            : "the reader is in the middle of leaving");
        TestSegment seg("share-gone", kFrames, 1);
        uint8_t me = seg.join();
        int id_pipe[2], go[2], done[2];
        ASSERT_EQ(pipe(id_pipe), 0);
        ASSERT_EQ(pipe(go), 0);
        ASSERT_EQ(pipe(done), 0);
        std::string name = seg.name;
        pid_t v = spawn([&] {
            close(go[1]); // so that the test's close is our end of file
            vs_segment s;
            uint8_t id;
            if (!open_and_join(name, &s, &id) || write(id_pipe[1], &id, 1) != 1)
                return 2;
            char c;
            if (read(go[0], &c, 1) != 1)
                return 3;
            if (dies)
                die_holding_slots(vs_segment_pool(&s));
            if (mid_leave) { // stops between its reclaim and its entry's CAS until told
                leaving_signal = done[1];
                leaving_resume = go[0];
                vs__debug_after_leave_reclaim = pause_leaving;
            }
            if (vs_segment_leave(&s) != VS_OK || write(done[1], "d", 1) != 1)
                return 4;
            return read(go[0], &c, 1) == 0 ? 0 : 5; // stays open (not joined) until the test ends
        });
        uint8_t id = 0;
        ASSERT_EQ(read(id_pipe[0], &id, 1), 1) << wait_child(v);
        vs_slot_ref r;
        ASSERT_TRUE(vs_pool_allocate(seg.pool(), 100, me, &r));
        const uint8_t readers[] = {id};
        if (mid_leave) {
            char c;
            ASSERT_EQ(write(go[1], "g", 1), 1);
            ASSERT_EQ(read(done[0], &c, 1), 1); // its reclaim is done
            int rc = vs_pool_share(seg.pool(), r, me, readers, 1);
            ASSERT_EQ(write(go[1], "g", 1), 1);
            ASSERT_EQ(read(done[0], &c, 1), 1); // it has left
            EXPECT_EQ(rc, VS_ENOTJOINED);
            if (rc != VS_OK)
                vs_pool_free(seg.pool(), r);
        } else {
            in_share_window = [&] {
                ASSERT_EQ(write(go[1], "g", 1), 1);
                if (dies) {
                    ASSERT_EQ(wait_child(v), 128 + SIGKILL);
                    unsigned n = 0;
                    ASSERT_EQ(vs_segment_reap(&seg.seg, &n), VS_OK);
                    ASSERT_EQ(n, 1u);
                } else {
                    char c;
                    ASSERT_EQ(read(done[0], &c, 1), 1);
                }
            };
            vs__debug_before_share_cas = run_in_share_window;
            EXPECT_EQ(vs_pool_share(seg.pool(), r, me, readers, 1), VS_OK);
            vs__debug_before_share_cas = nullptr;
        }
        vs_slot_info info;
        ASSERT_EQ(vs_pool_slot_info(seg.pool(), r.class_idx, r.slot_idx, &info), VS_OK);
        EXPECT_EQ(info.state, (uint32_t)VS_SLOT_FREE) << "a gone reader still holds the slot";
        close(go[1]);
        if (!dies) {
            EXPECT_EQ(wait_child(v), 0);
        }
        for (int fd : {id_pipe[0], id_pipe[1], go[0], done[0], done[1]})
            close(fd);
        expect_every_slot_free_once(seg);
    }
}
