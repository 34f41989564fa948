// Giving memory back (core/src/purge.c): free slots' pages leave the segment file, held
// slots never do, a purger killed mid-purge loses nothing, a leave never returns a slot
// under its own process's purge, and bad decays are refused.
#include "../test_util.h"

#include <climits>
#include <random>

#include <sys/stat.h>

using namespace vstest;

extern "C" vs__debug_hook vs__debug_after_purge_punch;
extern "C" vs__debug_hook vs__debug_after_leave_reclaim;

namespace {

const vs_class_config kPurgeClasses[3] = {{512, 64}, {65536, 16}, {1u << 20, 8}};
constexpr uint64_t MiB = 1u << 20;
// Metadata that purging itself touches: the idle hints, a page of share table per class.
constexpr uint64_t kHintPages = 3 * 4096;

// Bytes the segment's file holds (tmpfs: its pages in memory).
uint64_t file_bytes(const TestSegment &seg)
{
    struct stat st;
    EXPECT_EQ(fstat(seg.seg.fd, &st), 0);
    return (uint64_t)st.st_blocks * 512;
}

// Allocates every slot of class c, fills each with `fill`, returns the refs.
std::vector<vs_slot_ref> fill_class(const vs_pool *pool, uint8_t id, size_t c, int fill)
{
    std::vector<vs_slot_ref> refs;
    for (uint32_t i = 0; i < vs_pool_slot_count(pool, c); i++) {
        vs_slot_ref r;
        EXPECT_TRUE(vs_pool_allocate(pool, vs_pool_slot_size(pool, c), id, &r));
        EXPECT_EQ(r.class_idx, c);
        memset(vs_pool_slot_data(pool, &r), fill, vs_pool_slot_size(pool, c));
        refs.push_back(r);
    }
    return refs;
}

// The idle hint of slot idx (core/src/internal.h: the share table follows the bitmap on the
// next cache line, 32 bytes per slot, the hint in its last 8).
uint64_t *idle_hint(const vs_pool *pool, size_t c, uint32_t idx)
{
    const vs_pool_class *cls = &pool->classes[c];
    size_t bitmap_bytes = ((size_t)cls->bitmap_words * 8 + 63) & ~(size_t)63;
    return reinterpret_cast<uint64_t *>(static_cast<uint8_t *>(cls->bitmap) + bitmap_bytes + idx * 32 + 24);
}

// A 1 MiB slot written and freed: dirty pages for a purge to give back. Its (stale) ref.
vs_slot_ref write_and_free(const vs_pool *pool, uint8_t id, int fill)
{
    vs_slot_ref r{};
    EXPECT_TRUE(vs_pool_allocate(pool, MiB, id, &r));
    memset(vs_pool_slot_data(pool, &r), fill, MiB);
    EXPECT_EQ(vs_pool_free(pool, r), VS_OK);
    return r;
}

bool all_bytes(const void *p, size_t n, int v)
{
    auto *b = static_cast<const uint8_t *>(p);
    for (size_t i = 0; i < n; i++)
        if (b[i] != v)
            return false;
    return true;
}

// Where a test must not read VARSLOT_DECAY_MS from the environment it runs in.
struct DecayEnv {
    std::string old;
    bool had;
    explicit DecayEnv(const char *v)
    {
        const char *o = getenv("VARSLOT_DECAY_MS");
        had = o != nullptr;
        if (o)
            old = o;
        if (v)
            setenv("VARSLOT_DECAY_MS", v, 1);
        else
            unsetenv("VARSLOT_DECAY_MS");
    }
    ~DecayEnv()
    {
        if (had)
            setenv("VARSLOT_DECAY_MS", old.c_str(), 1);
        else
            unsetenv("VARSLOT_DECAY_MS");
    }
};

} // namespace

TEST(Purge, TrimGivesFreePagesBackAndNeverTouchesAHeldSlot)
{
    DecayEnv env(nullptr);
    TestSegment seg("trim", kPurgeClasses, 3, 0, -1); // never by itself: only the trim
    uint8_t id = seg.join();
    const vs_pool *pool = seg.pool();
    uint64_t empty = file_bytes(seg);
    auto big = fill_class(pool, id, 2, 0xab);
    auto mid = fill_class(pool, id, 1, 0xcd);
    uint64_t full = file_bytes(seg);
    EXPECT_GE(full, empty + 8 * MiB + 16 * 65536);
    for (size_t i = 1; i < big.size(); i++) // slot 0 stays held
        ASSERT_EQ(vs_pool_free(pool, big[i]), VS_OK);
    for (auto &r : mid)
        ASSERT_EQ(vs_pool_free(pool, r), VS_OK);
    EXPECT_GE(file_bytes(seg), full) << "nothing goes back while the decay says never";

    uint64_t returned = 0;
    ASSERT_EQ(vs_segment_trim(&seg.seg, &returned), VS_OK) << vs_last_detail();
    EXPECT_EQ(returned, 7 * MiB + 16 * 65536) << "every freed slot, and only those";
    EXPECT_LE(file_bytes(seg), empty + kHintPages + 1 * MiB) << "the metadata and the one held slot";
    EXPECT_TRUE(all_bytes(vs_pool_slot_data(pool, &big[0]), MiB, 0xab)) << "the held slot was purged";
    EXPECT_EQ(slot_info_of(pool, big[0]).state, (uint32_t)VS_SLOT_ALLOCATED);

    ASSERT_EQ(vs_segment_trim(&seg.seg, &returned), VS_OK);
    EXPECT_EQ(returned, 0u) << "purged slots are not purged again";
    // A purged slot comes back as zeros: its old pages are gone, not just forgotten. (Not
    // under memcheck: a new block's bytes are undefined to it, and reading them is an error.)
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(pool, MiB, id, &r));
    if (!slow_run()) {
        EXPECT_TRUE(all_bytes(vs_pool_slot_data(pool, &r), MiB, 0));
    }
    ASSERT_EQ(vs_pool_free(pool, r), VS_OK);
    ASSERT_EQ(vs_pool_free(pool, big[0]), VS_OK);
    expect_every_slot_free_once(seg);
}

TEST(Purge, TrimNeedsAJoinedPeer)
{
    DecayEnv env(nullptr);
    TestSegment seg("trim-unjoined", kPurgeClasses, 3);
    uint64_t returned = 7;
    EXPECT_EQ(vs_segment_trim(&seg.seg, &returned), VS_ENOTJOINED);
    EXPECT_EQ(returned, 0u);
    EXPECT_EQ(vs_segment_trim(nullptr, nullptr), VS_EINVAL);
}

TEST(Purge, DecayZeroGivesASlotsPagesBackAtItsFree)
{
    DecayEnv env(nullptr);
    TestSegment seg("decay0", kPurgeClasses, 3, 0, 0);
    EXPECT_EQ(vs_segment_decay_ms(&seg.seg), 0);
    uint8_t id = seg.join();
    uint64_t empty = file_bytes(seg);
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(seg.pool(), MiB, id, &r));
    memset(vs_pool_slot_data(seg.pool(), &r), 1, MiB);
    EXPECT_GE(file_bytes(seg), empty + MiB);
    ASSERT_EQ(vs_pool_free(seg.pool(), r), VS_OK);
    EXPECT_LE(file_bytes(seg), empty + kHintPages);
    expect_every_slot_free_once(seg);
}

TEST(Purge, IdleSlotsGoBackAfterTheDecayWhileTheProgramWorks)
{
    DecayEnv env(nullptr);
    TestSegment seg("decay", kPurgeClasses, 3, 0, 300);
    uint8_t id = seg.join();
    const vs_pool *pool = seg.pool();
    uint64_t empty = file_bytes(seg);
    auto big = fill_class(pool, id, 2, 0x5a);
    for (auto &r : big)
        ASSERT_EQ(vs_pool_free(pool, r), VS_OK);
    if (!slow_run()) { // microseconds after the free, far from 300 ms (Valgrind's pace aside)
        EXPECT_GE(file_bytes(seg), empty + 8 * MiB) << "purged before the decay";
    }
    // The program goes on with small work; its slow paths purge. No timing is asserted: the
    // loop only gives up after 30 s.
    bool back = false;
    for (int i = 0; i < 3000 && !back; i++) {
        vs_slot_ref r;
        ASSERT_TRUE(vs_pool_allocate(pool, 65536, id, &r));
        ASSERT_EQ(vs_pool_free(pool, r), VS_OK);
        usleep(10000);
        back = file_bytes(seg) <= empty + kHintPages + 65536;
    }
    EXPECT_TRUE(back) << "still " << file_bytes(seg) << " bytes, " << empty << " empty";
    expect_every_slot_free_once(seg);
}

TEST(Purge, DecayNeverKeepsPagesUntilATrim)
{
    DecayEnv env(nullptr);
    TestSegment seg("never", kPurgeClasses, 3, 0, -1);
    EXPECT_EQ(vs_segment_decay_ms(&seg.seg), -1);
    uint8_t id = seg.join();
    auto big = fill_class(seg.pool(), id, 2, 1);
    for (auto &r : big)
        ASSERT_EQ(vs_pool_free(seg.pool(), r), VS_OK);
    uint64_t held = file_bytes(seg);
    for (int i = 0; i < 200; i++) { // slow paths: allocations that miss the cache
        std::vector<vs_slot_ref> rs;
        for (int k = 0; k < 8; k++) {
            vs_slot_ref r;
            ASSERT_TRUE(vs_pool_allocate(seg.pool(), MiB, id, &r));
            rs.push_back(r);
        }
        for (auto &r : rs)
            ASSERT_EQ(vs_pool_free(seg.pool(), r), VS_OK);
    }
    EXPECT_GE(file_bytes(seg), held);
    uint64_t returned = 0;
    ASSERT_EQ(vs_segment_trim(&seg.seg, &returned), VS_OK);
    EXPECT_EQ(returned, 8 * MiB);
}

TEST(Purge, TheLastPeerOutGivesEveryFreeSlotBack)
{
    DecayEnv env(nullptr);
    TestSegment seg("last", kPurgeClasses, 3); // the default decay: 10 s
    EXPECT_EQ(vs_segment_decay_ms(&seg.seg), VS_DEFAULT_DECAY_MS);
    uint64_t empty = file_bytes(seg);
    // A second peer, alive while the first leaves: its leave gives back nothing young.
    int go[2], done[2];
    ASSERT_EQ(pipe(go), 0);
    ASSERT_EQ(pipe(done), 0);
    pid_t other = spawn([&] {
        vs_segment s;
        uint8_t pid;
        if (vs_segment_open(&s, seg.name.c_str()) != VS_OK || vs_segment_join(&s, &pid) != VS_OK)
            return 2;
        char c;
        if (write(done[1], "j", 1) != 1 || read(go[0], &c, 1) != 1)
            return 3;
        vs_segment_close(&s);
        return 0;
    });
    char c;
    ASSERT_EQ(read(done[0], &c, 1), 1);
    uint8_t id = seg.join();
    auto big = fill_class(seg.pool(), id, 2, 7);
    for (auto &r : big)
        ASSERT_EQ(vs_pool_free(seg.pool(), r), VS_OK);
    ASSERT_EQ(vs_segment_leave(&seg.seg), VS_OK);
    if (!slow_run()) {
        EXPECT_GE(file_bytes(seg), empty + 8 * MiB) << "a peer is still joined: young slots stay";
    }
    ASSERT_EQ(write(go[1], "g", 1), 1);
    ASSERT_EQ(wait_child(other), 0);
    // Now this process is the last one: its join and leave find nobody else.
    seg.join();
    ASSERT_EQ(vs_segment_leave(&seg.seg), VS_OK);
    EXPECT_LE(file_bytes(seg), empty + kHintPages);
    for (int fd : {go[0], go[1], done[0], done[1]})
        close(fd);
}

TEST(Purge, BadDecaysAreRefusedWithAReason)
{
    {
        DecayEnv env("soon");
        vs_segment s;
        std::string name = unique_name("baddecay");
        EXPECT_EQ(vs_segment_create(&s, name.c_str(), nullptr), VS_EINVAL);
        EXPECT_NE(std::string(vs_last_detail()).find("VARSLOT_DECAY_MS"), std::string::npos)
            << vs_last_detail();
        EXPECT_EQ(vs_segment_open(&s, name.c_str()), VS_EINVAL);
    }
    for (const char *bad : {"-2", "", "12ms", "99999999999"}) {
        DecayEnv env(bad);
        vs_segment s;
        EXPECT_EQ(vs_segment_create(&s, unique_name("baddecay").c_str(), nullptr), VS_EINVAL) << bad;
    }
    {
        DecayEnv env(nullptr);
        vs_segment_options o{};
        o.flags = VS_SEGMENT_DECAY;
        o.decay_ms = -2;
        vs_segment s;
        EXPECT_EQ(vs_segment_create(&s, unique_name("baddecay").c_str(), &o), VS_EINVAL);
        o.flags = 4; // no such flag
        o.decay_ms = 0;
        EXPECT_EQ(vs_segment_create(&s, unique_name("baddecay").c_str(), &o), VS_EINVAL);
    }
    // A good one: recorded by the creator, and this process's own overrides it.
    std::string name;
    {
        DecayEnv env("1234");
        TestSegment seg("gooddecay", kPurgeClasses, 3);
        EXPECT_EQ(vs_segment_decay_ms(&seg.seg), 1234);
        DecayEnv env2(nullptr);
        vs_segment other;
        ASSERT_EQ(vs_segment_open(&other, seg.name.c_str()), VS_OK);
        EXPECT_EQ(vs_segment_decay_ms(&other), 1234) << "recorded at creation";
        vs_segment_close(&other);
        DecayEnv env3("-1");
        ASSERT_EQ(vs_segment_open(&other, seg.name.c_str()), VS_OK);
        EXPECT_EQ(vs_segment_decay_ms(&other), -1) << "this process's own";
        vs_segment_close(&other);
    }
}

// A purger killed after removing the pages, before returning the slot: the word says
// PURGING with the dead peer's id, and its reap returns the slot.
TEST(Purge, APurgerKilledMidPurgeLeavesASlotItsReapReturns)
{
    DecayEnv env(nullptr);
    TestSegment seg("purge-kill", kPurgeClasses, 3, 0, -1);
    pid_t child = spawn([&] {
        vs_segment s;
        uint8_t cid;
        if (vs_segment_open(&s, seg.name.c_str()) != VS_OK || vs_segment_join(&s, &cid) != VS_OK)
            return 2;
        write_and_free(vs_segment_pool(&s), cid, 9);
        vs__debug_after_purge_punch = [](uint32_t) { raise(SIGKILL); };
        vs_segment_trim(&s, nullptr);
        return 5; // the hook never fired
    });
    ASSERT_EQ(wait_child(child), 128 + SIGKILL);
    const vs_pool *pool = seg.pool();
    int purging = 0;
    for (uint32_t i = 0; i < vs_pool_slot_count(pool, 2); i++) {
        vs_slot_info info;
        ASSERT_EQ(vs_pool_slot_info(pool, 2, i, &info), VS_OK);
        purging += info.state == VS_SLOT_PURGING;
    }
    EXPECT_EQ(purging, 1) << "the killed purger held one slot";
    unsigned reaped = 0;
    ASSERT_EQ(vs_segment_reap(&seg.seg, &reaped), VS_OK);
    EXPECT_EQ(reaped, 1u);
    expect_every_slot_free_once(seg);
}

// A leave waits for a purge another thread of its process is in the middle of: the slot
// comes back only once the purge is done with it (model: purge.pml, LEAVE_NO_WAIT).
namespace {
std::atomic<int> g_in_purge{0}, g_leave_started{0}, g_leave_done{0}, g_done_seen_in_purge{0};
}

TEST(Purge, ALeaveWaitsForAPurgeOfItsOwnProcess)
{
    DecayEnv env(nullptr);
    TestSegment seg("purge-leave", kPurgeClasses, 3, 0, -1);
    uint8_t id = seg.join();
    vs_slot_ref r = write_and_free(seg.pool(), id, 3);
    g_in_purge = g_leave_started = g_leave_done = g_done_seen_in_purge = 0;
    vs__debug_after_purge_punch = [](uint32_t) {
        g_in_purge = 1;
        while (!g_leave_started)
            sched_yield();
        usleep(stretched(100000)); // room for a leave that does not wait to finish
        g_done_seen_in_purge = g_leave_done.load();
    };
    std::thread purger([&] { vs_segment_trim(&seg.seg, nullptr); });
    while (!g_in_purge)
        sched_yield();
    std::thread leaver([&] {
        g_leave_started = 1;
        EXPECT_EQ(vs_segment_leave(&seg.seg), VS_OK);
        g_leave_done = 1;
    });
    purger.join();
    leaver.join();
    vs__debug_after_purge_punch = nullptr;
    EXPECT_EQ(g_done_seen_in_purge.load(), 0) << "the leave returned while its process purged";
    EXPECT_EQ(slot_info_of(seg.pool(), r).state, (uint32_t)VS_SLOT_FREE);
    expect_every_slot_free_once(seg);
}

// Purges racing allocations in threads of several processes: every slot stamped by its
// holder stays as stamped until it frees it, and nothing is lost.
TEST(Purge, PurgesRacingAllocationsNeverTouchAHeldSlot)
{
    DecayEnv env(nullptr);
    const vs_class_config classes[2] = {{4096, 32}, {65536, 8}};
    TestSegment seg("purge-race", classes, 2, 0, 0); // every free purges at once
    const long rounds = scaled(4000);
    auto worker = [&](int proc) {
        vs_segment s;
        uint8_t cid;
        if (vs_segment_open(&s, seg.name.c_str()) != VS_OK || vs_segment_join(&s, &cid) != VS_OK)
            return 2;
        const vs_pool *pool = vs_segment_pool(&s);
        std::atomic<int> bad{0};
        run_threads(2, [&](int t) {
            std::mt19937 rng(proc * 10 + t);
            for (long i = 0; i < rounds && !bad; i++) {
                uint32_t size = rng() % 2 ? 4096 : 65536;
                vs_slot_ref r;
                if (!vs_pool_allocate(pool, size, cid, &r))
                    continue; // full for a moment: others hold or purge the rest
                auto *p = static_cast<uint64_t *>(vs_pool_slot_data(pool, &r));
                uint64_t stamp = (uint64_t)cid << 56 | (uint64_t)t << 48 | (uint64_t)i;
                size_t words = vs_pool_slot_size(pool, r.class_idx) / 8;
                for (size_t w = 0; w < words; w += 512) // one word per page
                    p[w] = stamp + w;
                sched_yield();
                for (size_t w = 0; w < words; w += 512)
                    if (p[w] != stamp + w)
                        bad = 1;
                if (vs_pool_free(pool, r) != VS_OK)
                    bad = 2;
            }
        });
        vs_segment_close(&s);
        return bad.load() ? 10 + bad.load() : 0;
    };
    pid_t a = spawn([&] { return worker(1); });
    pid_t b = spawn([&] { return worker(2); });
    uint8_t id = seg.join();
    (void)id;
    int ra = -1, rb = -1;
    std::thread trimmer([&] {
        while (true) {
            uint64_t n;
            EXPECT_EQ(vs_segment_trim(&seg.seg, &n), VS_OK);
            int st;
            if (ra < 0 && waitpid(a, &st, WNOHANG) == a)
                ra = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            if (rb < 0 && waitpid(b, &st, WNOHANG) == b)
                rb = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            if (ra >= 0 && rb >= 0)
                break;
        }
    });
    trimmer.join();
    EXPECT_EQ(ra, 0) << "10+: a held slot's bytes changed; 12: a free failed";
    EXPECT_EQ(rb, 0);
    expect_every_slot_free_once(seg);
}

// A hostile peer scribbles every idle hint: purges then come early or late, never to a held
// slot, and nothing is lost.
TEST(Purge, ScribbledIdleHintsPurgeOnlyFreeSlots)
{
    DecayEnv env(nullptr);
    TestSegment seg("purge-scribble", kPurgeClasses, 3, 0, 5);
    uint8_t id = seg.join();
    const vs_pool *pool = seg.pool();
    auto big = fill_class(pool, id, 2, 0x77);
    std::mt19937_64 rng(12);
    for (int round = 0; round < 50; round++) {
        for (size_t c = 0; c < vs_pool_class_count(pool); c++)
            for (uint32_t i = 0; i < vs_pool_slot_count(pool, c); i++)
                __atomic_store_n(idle_hint(pool, c, i), rng(), __ATOMIC_RELAXED);
        // free half, purge (by trims and by frees), take them back, check the other half
        for (size_t i = round % 2; i < big.size(); i += 2)
            ASSERT_EQ(vs_pool_free(pool, big[i]), VS_OK);
        uint64_t n;
        ASSERT_EQ(vs_segment_trim(&seg.seg, &n), VS_OK);
        for (size_t i = 1 - round % 2; i < big.size(); i += 2)
            ASSERT_TRUE(all_bytes(vs_pool_slot_data(pool, &big[i]), MiB, 0x77)) << round << " " << i;
        for (size_t i = round % 2; i < big.size(); i += 2) {
            ASSERT_TRUE(vs_pool_allocate(pool, MiB, id, &big[i]));
            memset(vs_pool_slot_data(pool, &big[i]), 0x77, MiB);
        }
    }
    for (auto &r : big)
        ASSERT_EQ(vs_pool_free(pool, r), VS_OK);
    expect_every_slot_free_once(seg);
}

// A purge that starts while its peer is leaving (entry marked, slots being returned) does
// nothing: it would mark slots with an id the leave no longer covers (model: purge.pml,
// PURGE_UNCHECKED).
namespace {
std::atomic<int> g_leaving{0}, g_release_leave{0};
}

TEST(Purge, APurgeThatStartsDuringALeaveDoesNothing)
{
    DecayEnv env(nullptr);
    TestSegment seg("purge-during-leave", kPurgeClasses, 3, 0, -1);
    uint8_t id = seg.join();
    vs_slot_ref r = write_and_free(seg.pool(), id, 3);
    g_leaving = g_release_leave = 0;
    vs__debug_after_leave_reclaim = [](uint32_t) {
        g_leaving = 1;
        while (!g_release_leave)
            sched_yield();
    };
    std::thread leaver([&] { EXPECT_EQ(vs_segment_leave(&seg.seg), VS_OK); });
    while (!g_leaving)
        sched_yield();
    uint64_t returned = 7;
    EXPECT_EQ(vs_segment_trim(&seg.seg, &returned), VS_ENOTJOINED);
    EXPECT_EQ(returned, 0u);
    EXPECT_EQ(slot_info_of(seg.pool(), r).state, (uint32_t)VS_SLOT_FREE);
    g_release_leave = 1;
    leaver.join();
    vs__debug_after_leave_reclaim = nullptr;
    expect_every_slot_free_once(seg);
}

// Pages go through the file, not through this process's mapping: a slot whose range here is
// a private copy (the preload shim's fork child and exit put those under slots) is purged too.
TEST(Purge, ASlotPrivatelyMappedHereIsPurgedThroughTheFile)
{
    DecayEnv env(nullptr);
    TestSegment seg("purge-private", kPurgeClasses, 3, 0, -1);
    uint8_t id = seg.join();
    uint64_t empty = file_bytes(seg);
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(seg.pool(), MiB, id, &r));
    void *p = vs_pool_slot_data(seg.pool(), &r);
    memset(p, 5, MiB);
    ASSERT_EQ(vs_pool_free(seg.pool(), r), VS_OK);
    ASSERT_EQ(mmap(p, MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0), p);
    uint64_t returned = 0;
    EXPECT_EQ(vs_segment_trim(&seg.seg, &returned), VS_OK) << vs_last_detail();
    EXPECT_EQ(returned, MiB);
    EXPECT_LE(file_bytes(seg), empty + kHintPages);
    ASSERT_EQ(vs_segment_remap_shared(&seg.seg, p, MiB), VS_OK);
    expect_every_slot_free_once(seg);
}

// The last peer out gives back the slots it still held at its leave too: they are free once
// its reclaim returned them (a program that exits holding its buffers).
TEST(Purge, TheLastPeerOutGivesBackTheSlotsItStillHeld)
{
    DecayEnv env(nullptr);
    TestSegment seg("last-held", kPurgeClasses, 3);
    uint64_t empty = file_bytes(seg);
    uint8_t id = seg.join();
    fill_class(seg.pool(), id, 2, 6); // held, never freed
    EXPECT_GE(file_bytes(seg), empty + 8 * MiB);
    ASSERT_EQ(vs_segment_leave(&seg.seg), VS_OK);
    EXPECT_LE(file_bytes(seg), empty + kHintPages);
    expect_every_slot_free_once(seg);
}

// A signal handler that interrupts a purge and leaves (as exit() does through the shim's
// atexit handler): the leave does not wait for the purge it interrupted (which never
// resumes), and returns the slot being purged.
namespace {
vs_segment g_exiting_seg;
}

TEST(Purge, ExitFromASignalHandlerThatInterruptedAPurgeDoesNotHang)
{
    DecayEnv env(nullptr);
    TestSegment seg("purge-exit", kPurgeClasses, 3, 0, -1);
    pid_t child = spawn([&] {
        uint8_t cid;
        if (vs_segment_open(&g_exiting_seg, seg.name.c_str()) != VS_OK ||
            vs_segment_join(&g_exiting_seg, &cid) != VS_OK)
            return 2;
        write_and_free(vs_segment_pool(&g_exiting_seg), cid, 4);
        // What exit() does through an atexit handler (the shim's leave), without the test
        // process's own destructors (TSan reports those as unsafe in a handler, rightly).
        signal(SIGUSR1, [](int) {
            vs_segment_close(&g_exiting_seg);
            _exit(0);
        });
        vs__debug_after_purge_punch = [](uint32_t) { raise(SIGUSR1); };
        vs_segment_trim(&g_exiting_seg, nullptr);
        return 3; // the handler never ran
    });
    int st = -1;
    for (int i = 0; i < 3000 && waitpid(child, &st, WNOHANG) == 0; i++)
        usleep(10000);
    if (waitpid(child, nullptr, WNOHANG) == 0) { // still there after 30 s: hung in its leave
        kill(child, SIGKILL);
        waitpid(child, nullptr, 0);
        FAIL() << "the exit hung in vs_segment_leave, waiting for the purge it interrupted";
    }
    ASSERT_TRUE(WIFEXITED(st)) << st;
    EXPECT_EQ(WEXITSTATUS(st), 0);
    expect_every_slot_free_once(seg);
}

// Passes over one segment neither move another's cursor nor take its turn: each segment keeps
// its own (in the segment). Proofs by a second cold review: a small segment's passes kept a big
// one's slots past the first 1024 from ever being looked at, and a busy segment took every
// pass interval of a quiet one.
namespace {
// One pass, run by the free of a 1 MiB slot (the class's only slot).
void pass_by_a_free(TestSegment &seg)
{
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(seg.pool(), MiB, seg.seg.peer_id, &r));
    ASSERT_EQ(vs_pool_free(seg.pool(), r), VS_OK);
}
} // namespace

TEST(Purge, ASmallSegmentsPassesDoNotKeepABigOnesSlotsFromBeingLookedAt)
{
    DecayEnv env(nullptr);
    const vs_class_config big_classes[2] = {{4096, 4096}, {1u << 20, 1}};
    const vs_class_config small_classes[2] = {{4096, 4}, {1u << 20, 1}};
    TestSegment big("cursor-big", big_classes, 2, 0, 0), small("cursor-small", small_classes, 2, 0, 0);
    uint8_t id = big.join();
    small.join();
    uint64_t empty = file_bytes(big);
    auto refs = fill_class(big.pool(), id, 0, 0x5a);
    for (auto &r : refs)
        ASSERT_EQ(vs_pool_free(big.pool(), r), VS_OK);
    for (int round = 0; round < 20; round++) { // 4096 slots, 1024 a pass: 4 rounds would do
        pass_by_a_free(big);
        pass_by_a_free(small);
    }
    EXPECT_LE(file_bytes(big), empty + 2 * MiB) << "slots of the big segment were never looked at";
}

TEST(Purge, ABusySegmentDoesNotTakeEveryPassFromAQuietOne)
{
    DecayEnv env(nullptr);
    const vs_class_config classes[1] = {{1u << 20, 8}};
    // Both segments' intervals are 1 ms; the quiet one's slots are long idle (their hints
    // backdated), so its first pass gives them back.
    TestSegment busy("busy", classes, 1, 0, 32), quiet("quiet", classes, 1, 0, 32);
    busy.join();
    uint8_t id = quiet.join();
    uint64_t empty = file_bytes(quiet);
    auto refs = fill_class(quiet.pool(), id, 0, 1); // 8 slots written
    for (auto &r : refs) {
        ASSERT_EQ(vs_pool_free(quiet.pool(), r), VS_OK);
        __atomic_store_n(idle_hint(quiet.pool(), 0, r.slot_idx % 8), (uint64_t)r.generation,
                         __ATOMIC_RELAXED); // idle since the clock's 0
    }
    // (No check that all 8 MiB are still there: at a sanitizer's or Valgrind's pace the frees
    // above are 32 ms apart and purge some already. The plain build's mutant run shows the
    // test fails with one clock for both segments.)
    // Each quiet free comes right after a busy one, mostly within the same coarse clock tick:
    // with one clock for both, the busy free takes the turn (the mutant's test runs 3 times).
    for (int round = 0; round < 4; round++) { // 8 ms: the 4 ms coarse clock moves on
        usleep(2000);
        pass_by_a_free(busy);
        pass_by_a_free(quiet);
    }
    // (the loop's own quiet frees dirty up to two slots again: the one its allocations take)
    EXPECT_LE(file_bytes(quiet), empty + kHintPages + 2 * MiB)
        << "the quiet segment never got a pass: its slots kept their pages";
}

// The last two peers leaving together both count as the last: the slots both held go back.
namespace {
std::atomic<int> *g_past_reclaim;
}

TEST(Purge, TheLastTwoPeersLeavingTogetherGiveEverythingBack)
{
    DecayEnv env(nullptr);
    TestSegment seg("last-two", kPurgeClasses, 3); // the default decay: nothing is idle yet
    uint64_t empty = file_bytes(seg);
    g_past_reclaim = static_cast<std::atomic<int> *>(
        mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE((void *)g_past_reclaim, MAP_FAILED);
    new (g_past_reclaim) std::atomic<int>(0);
    int ready[2], go[2]; // each one way: a peer must never read another's "ready"
    ASSERT_EQ(pipe(ready), 0);
    ASSERT_EQ(pipe(go), 0);
    auto peer = [&] {
        vs_segment s;
        uint8_t cid;
        if (vs_segment_open(&s, seg.name.c_str()) != VS_OK || vs_segment_join(&s, &cid) != VS_OK)
            return 2;
        for (int i = 0; i < 4; i++) { // 4 MiB held by each, never freed
            vs_slot_ref r;
            if (!vs_pool_allocate(vs_segment_pool(&s), MiB, cid, &r))
                return 3;
            memset(vs_pool_slot_data(vs_segment_pool(&s), &r), 2, MiB);
        }
        // Both leaves reclaim, then both look at the peer table.
        vs__debug_after_leave_reclaim = [](uint32_t) {
            g_past_reclaim->fetch_add(1);
            for (int i = 0; i < 2000000 && g_past_reclaim->load() < 2; i++)
                sched_yield();
        };
        if (write(ready[1], "r", 1) != 1)
            return 4;
        char c;
        if (read(go[0], &c, 1) != 1) // the go, once both are ready
            return 5;
        vs_segment_close(&s);
        return 0;
    };
    pid_t a = spawn(peer), b = spawn(peer);
    char c;
    ASSERT_EQ(read(ready[0], &c, 1), 1);
    ASSERT_EQ(read(ready[0], &c, 1), 1);
    ASSERT_EQ(write(go[1], "gg", 2), 2);
    EXPECT_EQ(wait_child(a), 0);
    EXPECT_EQ(wait_child(b), 0);
    EXPECT_EQ(g_past_reclaim->load(), 2);
    EXPECT_LE(file_bytes(seg), empty + kHintPages) << "the 8 MiB the two held stayed";
    munmap(g_past_reclaim, 4096);
    for (int fd : {ready[0], ready[1], go[0], go[1]})
        close(fd);
}
