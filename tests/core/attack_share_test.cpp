// Attacks on shared read-only slots, from a cold review of share.c: each proved a two-owner
// or a lost slot in the first version (F1: a share that lost a race still wrote its seats
// into the winner's entry, now it takes the word SHARING before it writes; F2: the recheck
// dropped a reader from whatever share the slot held by then, now only from its own; F3: a
// publisher killed between its CAS and its recheck left a reaped reader's seat for good, now
// its reap drops the seats of readers that are gone). A thread is stopped at an exact
// instruction of vs_pool_share by write-protecting (or unmapping) the page its next access
// touches: the SIGSEGV handler parks the thread until the test has run its interleaving and
// restored the page, then the access is retried.
#include "test_util.h"

#include <sys/resource.h>

using namespace vstest;

extern "C" {
extern vs__debug_hook vs__debug_before_share_cas;
}

namespace {

std::atomic<uintptr_t> g_lo{0}, g_hi{0};
std::atomic<int> g_faulted{0}, g_go{0}, g_kill{0};

void park_handler(int, siginfo_t *si, void *)
{
    uintptr_t a = (uintptr_t)si->si_addr;
    if (a < g_lo.load() || a >= g_hi.load()) {
        signal(SIGSEGV, SIG_DFL); // a real fault: crash on the retry
        return;
    }
    if (g_kill.load())
        raise(SIGKILL); // killed at this very instruction
    g_faulted.store(1);
    while (!g_go.load())
        ;
}

void install_park(uintptr_t page)
{
    g_lo = page;
    g_hi = page + 4096;
    g_faulted = 0;
    g_go = 0;
    struct sigaction sa{};
    sa.sa_sigaction = park_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, nullptr);
}

void uninstall_park() { signal(SIGSEGV, SIG_DFL); }

// A thread parked inside a SIGSEGV handler: TSan delivers signals at its own points, so
// the thread never parks where the test needs it, and
// Valgrind (VSTEST_SLOW: the memcheck run) does not retry a faulting access after the
// handler returns. Plain and ASan runs cover these.
#if defined(__SANITIZE_THREAD__)
#define SKIP_PAGE_TRICKS() GTEST_SKIP() << "a fault handler that parks a thread is not for ThreadSanitizer"
#else
#define SKIP_PAGE_TRICKS() \
    do { \
        if (slow_run()) \
            GTEST_SKIP() << "a fault handler that parks a thread is not for Valgrind"; \
    } while (0)
#endif

uintptr_t page_of(const void *p) { return (uintptr_t)p & ~(uintptr_t)4095; }

void *share_entry(const vs_pool *pool, vs_slot_ref r)
{
    const vs_pool_class *c = &pool->classes[r.class_idx];
    size_t bm = ((size_t)c->bitmap_words * 8 + 63) & ~(size_t)63;
    return (uint8_t *)c->bitmap + bm + (r.slot_idx % c->slot_count) * 32;
}

std::string str(const std::vector<int> &v)
{
    std::string s = "{";
    for (int x : v)
        s += std::to_string(x) + " ";
    return s + "}";
}

} // namespace

// F1a. Two threads of the owner share one slot at once. The loser is told VS_ESTALE, but it
// wrote its seats and `live` after the winner's CAS: the winner's reader (2) loses its
// reference while it reads, and a peer the loser named (3) holds it instead; when 3 goes
// (its reclaim), the slot is FREE and handed out again under reader 2.
TEST(AttackShare, ALosingRacingShareRewritesTheWinnersSeats)
{
    SKIP_PAGE_TRICKS();
    const vs_class_config c[] = {{64, 4}};
    HeapPool hp(c, 1);
    const vs_pool *pool = hp.get();
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(pool, 10, 1, &r));
    memset(vs_pool_slot_data(pool, &r), 0x5a, 64);
    uintptr_t page = page_of(share_entry(pool, r));
    install_park(page);
    ASSERT_EQ(mprotect((void *)page, 4096, PROT_READ), 0);
    int loser_rc = 0;
    std::thread loser([&] {
        const uint8_t readers[] = {3};
        loser_rc = vs_pool_share(pool, r, 1, readers, 1); // stops at its first seat write
    });
    while (!g_faulted.load())
        ;
    ASSERT_EQ(mprotect((void *)page, 4096, PROT_READ | PROT_WRITE), 0);
    const uint8_t readers[] = {2};
    int winner_rc = vs_pool_share(pool, r, 1, readers, 1); // the other thread of owner 1
    auto *d2 = static_cast<const uint8_t *>(vs_pool_shared_data(pool, &r, 2));
    printf("winner share rc=%d, reader 2 data=%p readers=%s\n", winner_rc, (const void *)d2,
           str(share_readers_of(pool, r)).c_str());
    g_go = 1;
    loser.join();
    uninstall_park();
    printf("loser share rc=%d (VS_ESTALE=%d); readers now %s; shared_data(2)=%p\n", loser_rc,
           VS_ESTALE, str(share_readers_of(pool, r)).c_str(), vs_pool_shared_data(pool, &r, 2));
    ASSERT_EQ(winner_rc, VS_OK);
    ASSERT_NE(d2, nullptr);
    EXPECT_EQ(loser_rc, VS_ESTALE);
    // Peer 3, never told of the slot, goes: its reclaim drops "its" reference.
    vs_pool_reclaim_peer_slots(pool, 3);
    vs_slot_info i = slot_info_of(pool, r);
    printf("after peer 3's reclaim: state=%u (FREE=0) while reader 2 never released\n", i.state);
    vs_slot_ref again;
    bool got = vs_pool_allocate(pool, 10, 4, &again) && again.slot_idx == r.slot_idx;
    if (got)
        memset(vs_pool_slot_data(pool, &again), 0xee, 64);
    printf("slot handed out again: %d; reader 2 now reads 0x%02x (wrote 0x5a)\n", got, d2[0]);
    EXPECT_EQ(i.state, (uint32_t)VS_SLOT_SHARED) << "TWO-OWNER: freed under live reader 2";
    EXPECT_EQ(d2[0], 0x5a) << "reader 2's bytes were rewritten while it held its reference";
}

// F1b. A share racing a free by another thread of the owner is told VS_ESTALE, but its
// late seat/live writes land on the NEXT share of the slot, by another peer (2, reader 5):
// the live entry now carries the old generation, so reader 5 is locked out (no data, no
// release) and nothing, no reap or reclaim, ever frees the slot: lost.
TEST(AttackShare, AShareRacingAFreeBreaksTheNextOwnersShare)
{
    SKIP_PAGE_TRICKS();
    const vs_class_config c[] = {{64, 1}};
    HeapPool hp(c, 1);
    const vs_pool *pool = hp.get();
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(pool, 10, 1, &r));
    uintptr_t page = page_of(share_entry(pool, r));
    install_park(page);
    ASSERT_EQ(mprotect((void *)page, 4096, PROT_READ), 0);
    int late_rc = 0;
    std::thread late([&] {
        const uint8_t readers[] = {7};
        late_rc = vs_pool_share(pool, r, 1, readers, 1);
    });
    while (!g_faulted.load())
        ;
    ASSERT_EQ(mprotect((void *)page, 4096, PROT_READ | PROT_WRITE), 0);
    ASSERT_EQ(vs_pool_free(pool, r), VS_OK); // another thread of owner 1 frees it
    vs_slot_ref r2;
    ASSERT_TRUE(vs_pool_allocate(pool, 10, 2, &r2)); // peer 2 gets the slot, next generation
    const uint8_t readers[] = {5};
    ASSERT_EQ(vs_pool_share(pool, r2, 2, readers, 1), VS_OK);
    ASSERT_NE(vs_pool_shared_data(pool, &r2, 5), nullptr);
    g_go = 1;
    late.join();
    uninstall_park();
    printf("late share rc=%d (VS_ESTALE=%d)\n", late_rc, VS_ESTALE);
    const void *d5 = vs_pool_shared_data(pool, &r2, 5);
    int rel = vs_pool_release(pool, r2, 5);
    for (uint8_t p = 1; p < 10; p++)
        vs_pool_reclaim_peer_slots(pool, p);
    vs_slot_info i = slot_info_of(pool, r2);
    vs_slot_ref any;
    bool alloc = vs_pool_allocate(pool, 10, 3, &any);
    printf("reader 5: shared_data=%p release=%d (VS_EDOUBLEFREE=%d); after every reclaim state=%u "
           "(SHARED=3); allocate=%d\n",
           d5, rel, VS_EDOUBLEFREE, i.state, alloc);
    EXPECT_NE(d5, nullptr) << "live reader 5 lost its reference";
    EXPECT_EQ(rel, VS_OK);
    EXPECT_TRUE(alloc) << "LOST SLOT";
}

namespace {
int cmd_fd[2], ans_fd[2];
void park_share_after_cas(uint32_t)
{
    vs__debug_before_share_cas = nullptr;
    // The slot word's CAS comes next (its page stays writable); the recheck's first load of a
    // reader's peer entry faults and parks.
    mprotect((void *)g_lo.load(), 4096, PROT_NONE);
}
} // namespace

// F2. The share's recheck drops the reader from whatever share the slot holds NOW. Thread T
// of owner 1 shares slot S (gen g) with reader X and is stopped between its CAS and its
// recheck. Meanwhile X leaves (its leave drops its seat; S goes FREE) and joins again (a new
// state word), owner 1's main thread allocates S again (gen g+1) and shares it with X, and X
// reads it. T's recheck then sees X's entry changed and drops X's seat of the g+1 share:
// S goes FREE while live reader X holds it.
TEST(AttackShare, TheRecheckDropsALiveReaderOfTheNextShare)
{
    SKIP_PAGE_TRICKS();
    const vs_class_config c[] = {{64, 1}};
    TestSegment seg("atk-recheck", c, 1, 4);
    uint8_t me = seg.join();
    const vs_pool *pool = seg.pool();
    uintptr_t peers = (uintptr_t)seg.seg.map + 4096;
    ASSERT_NE(page_of(pool->classes[0].meta), peers) << "the slot words must be on another page";
    int ids[2];
    ASSERT_EQ(pipe(ids), 0);
    ASSERT_EQ(pipe(cmd_fd), 0);
    ASSERT_EQ(pipe(ans_fd), 0);
    std::string name = seg.name;
    pid_t x = spawn([&] {
        vs_segment s;
        uint8_t id;
        if (vs_segment_open(&s, name.c_str()) != VS_OK || vs_segment_join(&s, &id) != VS_OK ||
            write(ids[1], &id, 1) != 1)
            return 2;
        char c;
        while (read(cmd_fd[0], &c, 1) == 1) {
            if (c == 'L') { // leave and join again
                if (vs_segment_leave(&s) != VS_OK || vs_segment_join(&s, &id) != VS_OK)
                    return 3;
                if (write(ans_fd[1], &id, 1) != 1)
                    return 4;
            } else if (c == 'H') { // does it hold handle h?
                uint64_t h;
                if (read(cmd_fd[0], &h, 8) != 8)
                    return 5;
                vs_slot_ref r = vs_slot_ref_unpack(h);
                char a = vs_pool_shared_data(vs_segment_pool(&s), &r, id) ? '1' : '0';
                if (write(ans_fd[1], &a, 1) != 1)
                    return 6;
            } else
                break;
        }
        vs_segment_close(&s);
        return 0;
    });
    uint8_t xid = 0;
    ASSERT_EQ(read(ids[0], &xid, 1), 1);
    auto holds = [&](vs_slot_ref r) {
        uint64_t h = vs_slot_ref_pack(r);
        char c = 'H', a = '?';
        EXPECT_EQ(write(cmd_fd[1], &c, 1), 1);
        EXPECT_EQ(write(cmd_fd[1], &h, 8), 8);
        EXPECT_EQ(read(ans_fd[0], &a, 1), 1);
        return a == '1';
    };

    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(pool, 10, me, &r));
    install_park(peers);
    vs__debug_before_share_cas = park_share_after_cas;
    int t_rc = -100;
    std::thread t([&] {
        const uint8_t readers[] = {xid};
        t_rc = vs_pool_share(pool, r, me, readers, 1);
    });
    while (!g_faulted.load())
        ;
    ASSERT_EQ(mprotect((void *)peers, 4096, PROT_READ | PROT_WRITE), 0);
    printf("T parked after its CAS: slot state=%u, readers %s\n", slot_info_of(pool, r).state,
           str(share_readers_of(pool, r)).c_str());
    char cmd = 'L';
    uint8_t xid2 = 0;
    ASSERT_EQ(write(cmd_fd[1], &cmd, 1), 1);
    ASSERT_EQ(read(ans_fd[0], &xid2, 1), 1);
    printf("X left and joined again as %d; slot state=%u\n", xid2, slot_info_of(pool, r).state);
    ASSERT_EQ(xid2, xid);
    vs_slot_ref r2;
    ASSERT_TRUE(vs_pool_allocate(pool, 10, me, &r2));
    memset(vs_pool_slot_data(pool, &r2), 0x5a, 64);
    const uint8_t readers[] = {xid};
    ASSERT_EQ(vs_pool_share(pool, r2, me, readers, 1), VS_OK);
    bool before = holds(r2);
    printf("second share (gen %u) to X: X holds it: %d\n", r2.generation, before);
    g_go = 1;
    t.join();
    uninstall_park();
    vs_slot_info i = slot_info_of(pool, r2);
    bool after = holds(r2);
    vs_slot_ref r3;
    bool again = vs_pool_allocate(pool, 10, me, &r3);
    printf("T's share rc=%d; X never released, yet: X holds=%d, slot state=%u (FREE=0), "
           "handed out again=%d (gen %u)\n",
           t_rc, after, i.state, again, again ? r3.generation : 0);
    EXPECT_TRUE(before);
    EXPECT_TRUE(after) << "live reader X's reference of the second share was dropped";
    EXPECT_FALSE(again) << "TWO-OWNER: the slot was claimed while X held it";
    cmd = 'Q';
    ASSERT_EQ(write(cmd_fd[1], &cmd, 1), 1);
    EXPECT_EQ(wait_child(x), 0);
    for (int fd : {ids[0], ids[1], cmd_fd[0], cmd_fd[1], ans_fd[0], ans_fd[1]})
        close(fd);
}

// F3. The publisher is SIGKILLed between its share CAS and its recheck, after its reader died
// and was reaped (the reaper saw no seat yet). The recheck that would have dropped the dead
// reader's seat never runs; the publisher's reap drops only the publisher's seats. Once
// every dead peer is reaped the slot stays SHARED, held by an empty peer entry: lost.
TEST(AttackShare, APublisherKilledBetweenItsCasAndItsRecheckLosesTheSlot)
{
    SKIP_PAGE_TRICKS();
    const vs_class_config c[] = {{64, 2}};
    TestSegment seg("atk-pubkill", c, 1, 4);
    uint8_t me = seg.join();
    (void)me;
    int ids[2], at[2], go[2], die[2];
    ASSERT_EQ(pipe(ids), 0);
    ASSERT_EQ(pipe(die), 0);
    ASSERT_EQ(pipe(at), 0);
    ASSERT_EQ(pipe(go), 0);
    std::string name = seg.name;
    pid_t x = spawn([&] { // the reader: dies when told
        vs_segment s;
        uint8_t id;
        if (vs_segment_open(&s, name.c_str()) != VS_OK || vs_segment_join(&s, &id) != VS_OK ||
            write(ids[1], &id, 1) != 1)
            return 2;
        char ch;
        if (read(die[0], &ch, 1) != 1)
            return 3;
        die_holding_slots(vs_segment_pool(&s));
    });
    uint8_t xid = 0;
    ASSERT_EQ(read(ids[0], &xid, 1), 1);
    pid_t p = spawn([&] { // the publisher
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        vs_segment s;
        uint8_t id;
        if (vs_segment_open(&s, name.c_str()) != VS_OK || vs_segment_join(&s, &id) != VS_OK)
            return 2;
        const vs_pool *pl = vs_segment_pool(&s);
        vs_slot_ref r;
        if (!vs_pool_allocate(pl, 10, id, &r))
            return 3;
        install_park((uintptr_t)s.map + 4096);
        g_kill = 1;
        cmd_fd[1] = at[1];
        ans_fd[0] = go[0];
        vs__debug_before_share_cas = [](uint32_t) {
            vs__debug_before_share_cas = nullptr;
            char ch;
            if (write(cmd_fd[1], "a", 1) != 1 || read(ans_fd[0], &ch, 1) != 1)
                _exit(8);
            mprotect((void *)g_lo.load(), 4096, PROT_NONE); // the recheck's load kills us
        };
        const uint8_t readers[] = {xid};
        vs_pool_share(pl, r, id, readers, 1);
        return 4; // never reached the window
    });
    char ch;
    ASSERT_EQ(read(at[0], &ch, 1), 1) << wait_child(p);
    ASSERT_EQ(write(die[1], "d", 1), 1); // the reader dies...
    ASSERT_EQ(wait_child(x), 128 + SIGKILL);
    unsigned n = 0;
    ASSERT_EQ(vs_segment_reap(&seg.seg, &n), VS_OK); // ...and is reaped before the share CAS
    EXPECT_EQ(n, 1u);
    ASSERT_EQ(write(go[1], "g", 1), 1); // the publisher: CAS, then killed before the recheck
    EXPECT_EQ(wait_child(p), 128 + SIGKILL);
    ASSERT_EQ(vs_segment_reap(&seg.seg, &n), VS_OK);
    printf("publisher reaped: %u\n", n);
    for (uint32_t i = 0; i < 2; i++) {
        vs_slot_info info;
        vs_pool_slot_info(seg.pool(), 0, i, &info);
        vs_slot_ref r{};
        r.slot_idx = i;
        r.generation = info.generation;
        printf("slot %u: state=%u owner=%u readers %s\n", i, info.state, info.owner,
               str(share_readers_of(seg.pool(), r)).c_str());
    }
    for (int fd : {ids[0], ids[1], at[0], at[1], go[0], go[1], die[0], die[1]})
        close(fd);
    expect_every_slot_free_once(seg);
}

// F1a without any help: two threads of the owner share fresh slots at once, no page tricks.
// Count the rounds where the share that returned VS_OK does not have the readers it named.
TEST(AttackShare, RacingSharesUnaidedCorruptTheWinnersSeats)
{
    const vs_class_config c[] = {{64, 4}};
    HeapPool hp(c, 1);
    const vs_pool *pool = hp.get();
    vs_slot_ref r{};
    int rc[2];
    long bad = 0, rounds = scaled(200000);
    const uint8_t a[] = {2};
    uint8_t b[16];
    for (int i = 0; i < 16; i++)
        b[i] = 3;
    ASSERT_TRUE(vs_pool_allocate(pool, 10, 1, &r));
    race_rounds(
        2, (int)rounds,
        [&](int t, int) { rc[t] = t == 0 ? vs_pool_share(pool, r, 1, a, 1) : vs_pool_share(pool, r, 1, b, 16); },
        [&](int) {
            std::vector<int> got = share_readers_of(pool, r);
            if ((rc[0] == VS_OK && got != std::vector<int>{2}) ||
                (rc[1] == VS_OK && got != std::vector<int>(16, 3)))
                bad++;
            vs_pool_reclaim_peer_slots(pool, 2);
            vs_pool_reclaim_peer_slots(pool, 3);
            if (slot_info_of(pool, r).state != VS_SLOT_FREE)
                return false;
            return vs_pool_allocate(pool, 10, 1, &r);
        });
    printf("rounds with the winner's seats rewritten by the loser: %ld of %ld\n", bad, rounds);
    EXPECT_EQ(bad, 0);
}

// F1c. The same late writes hit ANOTHER peer's share at the same generation: owner 1's thread
// shares the slot while another thread of owner 1 transfers it to peer 2 (transfer keeps the
// generation). Peer 2 shares it with reader 5; the late writes (gen g, valid) replace reader 5
// by reader 3; 3's reclaim frees the slot while 5 reads.
TEST(AttackShare, AShareRacingATransferReplacesTheReceiversReaders)
{
    SKIP_PAGE_TRICKS();
    const vs_class_config c[] = {{64, 1}};
    HeapPool hp(c, 1);
    const vs_pool *pool = hp.get();
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(pool, 10, 1, &r));
    uintptr_t page = page_of(share_entry(pool, r));
    install_park(page);
    ASSERT_EQ(mprotect((void *)page, 4096, PROT_READ), 0);
    int late_rc = 0;
    std::thread late([&] {
        const uint8_t readers[] = {3};
        late_rc = vs_pool_share(pool, r, 1, readers, 1);
    });
    while (!g_faulted.load())
        ;
    ASSERT_EQ(mprotect((void *)page, 4096, PROT_READ | PROT_WRITE), 0);
    ASSERT_EQ(vs_pool_transfer(pool, r, 1, 2), VS_OK);
    memset(vs_pool_slot_data(pool, &r), 0x5a, 64);
    const uint8_t readers[] = {5};
    ASSERT_EQ(vs_pool_share(pool, r, 2, readers, 1), VS_OK);
    auto *d5 = static_cast<const uint8_t *>(vs_pool_shared_data(pool, &r, 5));
    ASSERT_NE(d5, nullptr);
    g_go = 1;
    late.join();
    uninstall_park();
    std::string rd = str(share_readers_of(pool, r));
    vs_pool_reclaim_peer_slots(pool, 3);
    vs_slot_ref again;
    bool got = vs_pool_allocate(pool, 10, 4, &again);
    if (got)
        memset(vs_pool_slot_data(pool, &again), 0xee, 64);
    printf("late share rc=%d (VS_ESTALE=%d); peer 2's share now has readers %s; after peer 3's "
           "reclaim the slot was handed out again: %d; reader 5 reads 0x%02x (was 0x5a)\n",
           late_rc, VS_ESTALE, rd.c_str(), got, d5[0]);
    EXPECT_FALSE(got) << "TWO-OWNER";
}
