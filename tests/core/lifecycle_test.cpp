// Lifecycle: how a peer's liveness and a segment's name survive fork, threads, death and
// removal. Each test guards one hole that was found in the lifecycle code (see each comment):
// a dead parent kept alive by its fork child, a header field read again after validation, a
// thread reaping its own process's peer, the remove-when-unused races, a fork child without
// /proc locking the wrong file, and vs_segment_unlink removing files that are not segments.
#include "gate.h"
#include "test_util.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <chrono>
#include <cstddef>
#include <random>

using namespace vstest;

namespace {

std::string shm_path(const std::string &name) { return "/dev/shm" + name; }

// Whether name (a POSIX shm name) names the file open on fd.
bool names_file(const std::string &name, int fd)
{
    struct stat named, open_file;
    return stat(shm_path(name).c_str(), &named) == 0 && fstat(fd, &open_file) == 0 &&
           named.st_dev == open_file.st_dev && named.st_ino == open_file.st_ino;
}

bool name_exists(const std::string &name) { return access(shm_path(name).c_str(), F_OK) == 0; }

vs_segment_options options(const vs_class_config *classes, size_t n, uint32_t flags,
                           uint32_t max_peers = 0)
{
    vs_segment_options o{};
    o.classes = classes;
    o.class_count = n;
    o.flags = flags;
    o.max_peers = max_peers;
    return o;
}

void spin_for(std::chrono::nanoseconds d)
{
    auto end = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < end) {
    }
}

// Waits until done() holds or `ms` milliseconds have passed: a gate must never hang, as the
// code under test (once fixed, say) may never reach the point another party waits for.
template <class F> void wait_until(F done, int ms = 300)
{
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (!done() && std::chrono::steady_clock::now() < end)
        usleep(50);
}

// ---- hole 1: a fork child kept its dead parent's liveness lock ----
// An OFD lock lives as long as its open file description, and a shared mapping holds the
// description it was made from: a fork child inherits the parent's mapping (and descriptor),
// so after the parent died its liveness lock stayed held for as long as the child lived.

struct ParentReport {
    uint8_t id;
    uint64_t handle;
    pid_t child;
    int rearm_rc;
};

// P (a child of the test) joins and allocates, forks G, and is SIGKILLed while G lives.
void killed_parent_is_reaped_while_its_child_lives(bool child_rearms)
{
    TestSegment a("forkdead");
    std::string name = a.name;
    int up[2];
    ASSERT_EQ(pipe(up), 0);
    pid_t p = spawn([&] {
        close(up[0]);
        vs_segment b;
        uint8_t id;
        vs_slot_ref r;
        if (vs_segment_open(&b, name.c_str()) != VS_OK || vs_segment_join(&b, &id) != VS_OK ||
            !vs_pool_allocate(vs_segment_pool(&b), 100, id, &r))
            return 2;
        int g2p[2];
        if (pipe(g2p) != 0)
            return 3;
        pid_t g = fork();
        if (g == 0) { // G: outlives P, re-armed or not touched at all
            alarm(30);
            close(up[1]);
            int rc = child_rearms ? vs_segment_after_fork_child(&b) : VS_OK;
            if (write(g2p[1], &rc, sizeof rc) != sizeof rc)
                _exit(4);
            for (;;)
                pause();
        }
        ParentReport rep;
        memset(&rep, 0, sizeof rep); // padding too: it goes through a pipe
        rep.id = id;
        rep.handle = vs_slot_ref_pack(r);
        rep.child = g;
        if (g < 0 || read(g2p[0], &rep.rearm_rc, sizeof rep.rearm_rc) != sizeof rep.rearm_rc)
            return 5;
        if (write(up[1], &rep, sizeof rep) != sizeof rep)
            return 6;
        for (;;)
            pause(); // until SIGKILLed
    });
    close(up[1]);
    ParentReport rep{};
    ssize_t got = read(up[0], &rep, sizeof rep);
    close(up[0]);
    if (got != (ssize_t)sizeof rep) {
        ADD_FAILURE() << "P failed before forking G: exit " << wait_child(p);
        return;
    }
    struct Reaper { // G is not our child: it is killed by pid when the test is done
        pid_t pid;
        ~Reaper() { kill(pid, SIGKILL); }
    } g_guard{rep.child};
    kill(p, SIGKILL);
    EXPECT_EQ(wait_child(p), 128 + SIGKILL);
    EXPECT_EQ(rep.rearm_rc, VS_OK);

    vs_peer_info info;
    ASSERT_EQ(vs_segment_peer_info(&a.seg, rep.id, &info), VS_OK);
    EXPECT_FALSE(info.live) << "dead P still looks live: its fork child holds P's liveness lock";
    unsigned n = 0;
    ASSERT_EQ(vs_segment_reap(&a.seg, &n), VS_OK);
    EXPECT_EQ(n, 1u) << "dead P was not reaped while its fork child lives";
    vs_slot_ref r = vs_slot_ref_unpack(rep.handle);
    EXPECT_EQ(vs_pool_slot_data(a.pool(), &r), nullptr) << "dead P's slot was not returned";
    EXPECT_EQ(kill(rep.child, 0), 0) << "G should have been alive throughout";
}

} // namespace

TEST(Lifecycle, KilledParentIsReapedWhileItsRearmedForkChildLives)
{
    killed_parent_is_reaped_while_its_child_lives(true);
}

TEST(Lifecycle, KilledParentIsReapedWhileItsForkChildThatDidNothingLives)
{
    killed_parent_is_reaped_while_its_child_lives(false);
}

// Hole 1, the other side: a fork child that never calls vs_segment_after_fork_child still
// carries its parent's peer id; closing the segment there must not leave on the parent's
// behalf (returning the live parent's slots, freeing its entry, dropping its lock).
TEST(Lifecycle, ForkChildThatDidNotRearmCannotLeaveForItsParent)
{
    TestSegment a("forkclose");
    uint8_t id = a.join();
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(a.pool(), 100, id, &r));
    pid_t c = spawn([&] {
        vs_segment_close(&a.seg);
        return 0;
    });
    ASSERT_EQ(wait_child(c), 0);
    // Another open file description sees the parent as any other process would.
    vs_segment probe;
    ASSERT_EQ(vs_segment_open(&probe, a.name.c_str()), VS_OK);
    vs_peer_info info;
    ASSERT_EQ(vs_segment_peer_info(&probe, id, &info), VS_OK);
    EXPECT_EQ(info.state, (uint32_t)VS_PEER_ALIVE) << "the child freed its live parent's entry";
    EXPECT_EQ(info.pid, getpid());
    EXPECT_TRUE(info.live) << "the child dropped its live parent's liveness lock";
    vs_slot_info si;
    ASSERT_EQ(vs_pool_slot_info(a.pool(), r.class_idx, r.slot_idx, &si), VS_OK);
    EXPECT_EQ(si.state, (uint32_t)VS_SLOT_ALLOCATED) << "the child returned its live parent's slot";
    EXPECT_EQ(si.owner, id);
    EXPECT_EQ(si.generation, r.generation);
    vs_segment_close(&probe);
}

// ---- hole 2: header fields read again from the mapping after validation ----
// Opening validated a private copy of the header, then took max_peers and flags from the
// shared mapping, where another process may have changed them in between. Here the header is
// scribbled exactly then (when the opener maps the file, after it read and checked the
// header): what the open returns must be what it validated, and nothing may walk the peer
// table by the scribbled count or remove the name by the scribbled flag.
TEST(Lifecycle, HeaderFieldsAreNotReadAgainAfterValidation)
{
    if (slow_run())
        GTEST_SKIP() << "seccomp user notification is not for Valgrind";
    // A small file: a peer table walked up to a scribbled max_peers of 255 runs off its end.
    const vs_class_config classes[2] = {{64, 1}, {128, 1}};
    TestSegment a("reread", classes, 2, 7);
    std::string name = a.name;
    // vs__seg_header (core/src/segment.h): u64 magic, u32 version, u32 header_size,
    // 5 x u64 (total_size .. created_unix_ns), u32 creator_uid, i32 creator_pid, then
    // u32 max_peers @56, class_count @60, flags @64, i32 decay_ms @68. Checked before
    // scribbling. (The decay is read again, clamped: it bounds nothing, see purge.c.)
    const size_t kMaxPeers = 56, kClassCount = 60, kFlags = 64, kDecay = 68;
    int fd = open(shm_path(name).c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    auto *h = static_cast<uint8_t *>(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    close(fd);
    ASSERT_NE(h, MAP_FAILED);
    auto field = [&](size_t off) { return reinterpret_cast<volatile uint32_t *>(h + off); };
    ASSERT_EQ(*field(kMaxPeers), 7u) << "header layout changed: update the offsets";
    ASSERT_EQ(*field(kClassCount), 2u) << "header layout changed: update the offsets";
    ASSERT_EQ(*field(kFlags), 0u) << "header layout changed: update the offsets";
    ASSERT_EQ(*field(kDecay), (uint32_t)VS_DEFAULT_DECAY_MS) << "header layout changed: update the offsets";

    pid_t c = spawn([&] {
        if (!install_gate([&](GateCall call) {
                if (call == kMap) {
                    *field(kMaxPeers) = 255;
                    *field(kFlags) = VS_SEGMENT_REMOVE_WHEN_UNUSED;
                }
            }))
            return 10;
        vs_segment s;
        if (vs_segment_open(&s, name.c_str()) != VS_OK)
            return 0; // refusing a header that changed under it is fine too
        uint32_t m = vs_segment_max_peers(&s);
        if (m != 7)
            return 3;
        uint8_t id;
        unsigned n;
        vs_peer_info info;
        if (vs_segment_join(&s, &id) != VS_OK || vs_segment_reap(&s, &n) != VS_OK)
            return 4;
        for (uint32_t p = 1; p <= m; p++)
            vs_segment_peer_info(&s, (uint8_t)p, &info);
        vs_segment_close(&s); // the last peer out, but the segment was validated without the flag
        return name_exists(name) ? 0 : 5;
    });
    int rc = wait_child(c);
    *field(kMaxPeers) = 7;
    *field(kFlags) = 0;
    munmap(h, 4096);
    if (rc == 10)
        GTEST_SKIP() << "seccomp user notification is not available here";
    EXPECT_NE(rc, 3) << "vs_segment_max_peers returned a max_peers scribbled after validation";
    EXPECT_NE(rc, 5) << "close removed the name by a flag scribbled after validation";
    EXPECT_EQ(rc, 0) << "(128 + n: killed by signal n)";
}

// ---- hole 3: a thread reaped its own process's live peer ----
// F_OFD_GETLK never reports the caller's own lock, so to a reaper its own entry always looks
// dead; reaping skipped seg->peer_id, which join wrote only after the entry turned ALIVE. A
// thread reaping while another thread of the same process joins must never reap that peer.
TEST(Lifecycle, AThreadNeverReapsItsOwnProcesssLivePeer)
{
    TestSegment a("selfreap", kRefClasses, 3, 2);
    std::atomic<bool> stop{false};
    std::atomic<unsigned> reaped{0};
    std::atomic<long> broken{0}, cycles{0};
    std::thread reaper([&] {
        while (!stop.load()) {
            unsigned n = 0;
            vs_segment_reap(&a.seg, &n);
            if (n) {
                reaped += n;
                stop = true;
            }
        }
    });
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(scaled(1500));
    for (long i = 0; i < scaled(200000) && !stop.load() && std::chrono::steady_clock::now() < end;
         i++) {
        uint8_t id = 0;
        vs_slot_ref r;
        vs_slot_info si;
        vs_peer_info pi;
        if (vs_segment_join(&a.seg, &id) != VS_OK) {
            broken++;
            break;
        }
        bool got = vs_pool_allocate(a.pool(), 100, id, &r);
        if (!got || vs_pool_slot_info(a.pool(), r.class_idx, r.slot_idx, &si) != VS_OK ||
            si.state != VS_SLOT_ALLOCATED || si.owner != id ||
            vs_segment_peer_info(&a.seg, id, &pi) != VS_OK || pi.state != VS_PEER_ALIVE) {
            broken++;
            stop = true;
        }
        if (got)
            vs_pool_free(a.pool(), r);
        vs_segment_leave(&a.seg);
        cycles++;
    }
    stop = true;
    reaper.join();
    EXPECT_EQ(reaped.load(), 0u) << "a live peer of this process was reaped (after " << cycles
                                 << " join/leave cycles)";
    EXPECT_EQ(broken.load(), 0) << "a joined thread lost its entry or its slot";
}

// Hole 3, joining: two threads joining one vs_segment at once share its descriptor, so each
// "took" the other's lock; the loser of the entry's CAS then unlocked the winner's byte and
// took a second entry. They must end up with one id and one ALIVE entry, which is live. A
// gate holds each thread at its first lock call until the other is at its own, so both have
// seen the same entry free.
TEST(Lifecycle, TwoThreadsJoiningOneSegmentGetOneEntry)
{
    if (slow_run())
        GTEST_SKIP() << "seccomp user notification is not for Valgrind";
    TestSegment a("jointwo", kRefClasses, 3, 4);
    std::string name = a.name;
    pid_t c = spawn([&] {
        vs_segment s, probe;
        if (vs_segment_open(&s, name.c_str()) != VS_OK || vs_segment_open(&probe, name.c_str()) != VS_OK)
            return 2;
        std::atomic<int> at_lock{0};
        if (!install_gate(
                [&](GateCall call) {
                    if (call == kLock && at_lock.fetch_add(1) < 2)
                        wait_until([&] { return at_lock.load() >= 2; });
                },
                2))
            return 10;
        uint8_t ids[2] = {0, 0};
        int rcs[2] = {1, 1};
        run_threads(2, [&](int t) { rcs[t] = vs_segment_join(&s, &ids[t]); });
        if (rcs[0] != VS_OK || rcs[1] != VS_OK || ids[0] != ids[1])
            return 3;
        int alive = 0, live = 0;
        for (uint32_t id = 1; id <= vs_segment_max_peers(&probe); id++) {
            vs_peer_info info;
            if (vs_segment_peer_info(&probe, (uint8_t)id, &info) == VS_OK && info.state == VS_PEER_ALIVE) {
                alive++;
                live += info.live;
            }
        }
        return alive == 1 && live == 1 ? 0 : 4;
    });
    int rc = wait_child(c);
    if (rc == 10)
        GTEST_SKIP() << "seccomp user notification is not available here";
    EXPECT_NE(rc, 3) << "two threads joining one vs_segment got different ids";
    EXPECT_NE(rc, 4) << "two threads joining one vs_segment left other than one live ALIVE entry";
    EXPECT_EQ(rc, 0);
}

// ---- hole 4: the remove-when-unused races ----
// The last peer out checked "nobody joined" and "the name is still ours", then unmapped,
// closed and unlinked by name, holding nothing across. A peer that joined in that window
// (or after) was left in a segment with no name.
TEST(Lifecycle, AJoinRacingTheLastPeerOutNeverLandsInANamelessSegment)
{
    vs_segment_options o = options(kRefClasses, 3, VS_SEGMENT_REMOVE_WHEN_UNUSED, 4);
    std::mt19937 rng(7);
    const int kIters = (int)scaled(100);
    int nameless = 0, ok_joins = 0;
    for (int i = 0; i < kIters; i++) {
        std::string name = unique_name("lastout");
        vs_segment x, y;
        uint8_t idx, idy = 0;
        ASSERT_EQ(vs_segment_create(&x, name.c_str(), &o), VS_OK);
        ASSERT_EQ(vs_segment_join(&x, &idx), VS_OK);
        ASSERT_EQ(vs_segment_open(&y, name.c_str()), VS_OK);
        // Y joins while X closes: at once, a little later, or once X is done.
        std::atomic<int> phase{0};
        int mode = i % 3;
        unsigned delay_ns = rng() % 20000;
        int rc = VS_OK;
        std::thread joiner([&] {
            phase++;
            while (phase.load() < 2)
                spin_pause();
            if (mode == 1)
                spin_for(std::chrono::nanoseconds(delay_ns));
            while (mode == 2 && phase.load() < 3)
                sched_yield();
            rc = vs_segment_join(&y, &idy);
        });
        while (phase.load() < 1)
            spin_pause();
        phase++;
        vs_segment_close(&x);
        phase++;
        joiner.join();
        if (rc == VS_OK) {
            ok_joins++;
            if (!names_file(name, y.fd))
                nameless++;
        } else {
            EXPECT_LT(rc, 0);
        }
        vs_segment_close(&y);
        vs_segment_unlink(name.c_str());
    }
    EXPECT_EQ(nameless, 0) << nameless << " of " << ok_joins << " successful joins (of " << kIters
                           << " tries) left the peer in a segment its name no longer names";
}

// Hole 4, two leavers and a newcomer: F and S leave together, each sees nobody joined and
// each finds the name still its own; S unlinks, a newcomer sees the name vanish and creates a
// fresh segment under it, and F, whose checks passed before all that, then unlinked the
// newcomer's segment by name. The interleaving is forced, not hoped for: a seccomp gate
// holds each leaver at its first lock probe (after leaving, before looking) until the other
// has left too, holds S at its unlink until F is at its own, and F at its unlink until the
// newcomer has joined.
TEST(Lifecycle, LastPeersOutNeverRemoveANewcomersSegment)
{
    if (slow_run())
        GTEST_SKIP() << "seccomp user notification is not for Valgrind";
    vs_segment_options o = options(kRefClasses, 3, VS_SEGMENT_REMOVE_WHEN_UNUSED, 4);
    struct Marks {
        std::atomic<int> joined, f_left, s_left, f_at_unlink, n_joined, done, no_gate;
    };
    auto *m = static_cast<Marks *>(
        mmap(nullptr, sizeof(Marks), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(m, MAP_FAILED);
    new (m) Marks{};
    std::string name = unique_name("newcomer");
    {
        vs_segment s; // created and closed without joining: the name stays
        ASSERT_EQ(vs_segment_create(&s, name.c_str(), &o), VS_OK);
        vs_segment_close(&s);
    }
    auto leaver = [&](bool is_f) {
        return spawn([&, is_f] {
            vs_segment s;
            uint8_t id;
            if (vs_segment_open(&s, name.c_str()) != VS_OK || vs_segment_join(&s, &id) != VS_OK)
                return 2;
            m->joined++;
            wait_until([&] { return m->joined.load() >= 2; }, 10000);
            std::atomic<int> &left = is_f ? m->f_left : m->s_left;
            std::atomic<int> &other_left = is_f ? m->s_left : m->f_left;
            if (!install_gate([&, is_f](GateCall call) {
                    if (call == kLockProbe && !left.exchange(1))
                        wait_until([&] { return other_left.load() != 0; });
                    if (call == kUnlink && is_f) {
                        m->f_at_unlink = 1;
                        wait_until([&] { return m->n_joined.load() != 0; });
                    } else if (call == kUnlink) {
                        wait_until([&] { return m->f_at_unlink.load() != 0; });
                    }
                }))
                m->no_gate = 1;
            vs_segment_close(&s);
            m->done++;
            return 0;
        });
    };
    pid_t f = leaver(true), s = leaver(false);
    // The newcomer: as soon as the name is gone, a segment of its own under it.
    vs_segment n{};
    bool joined = false;
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (name_exists(name) && m->done.load() < 2 && std::chrono::steady_clock::now() < end)
        usleep(100);
    if (!name_exists(name)) {
        uint8_t id;
        int rc = vs_segment_open_or_create(&n, name.c_str(), &o);
        if (rc == VS_OK)
            rc = vs_segment_join(&n, &id);
        EXPECT_EQ(rc, VS_OK) << vs_last_detail();
        joined = rc == VS_OK;
    }
    m->n_joined = 1;
    EXPECT_EQ(wait_child(f), 0);
    EXPECT_EQ(wait_child(s), 0);
    bool no_gate = m->no_gate.load();
    if (joined) {
        EXPECT_TRUE(names_file(name, n.fd)) << "a leaver removed the newcomer's fresh segment";
    }
    vs_segment_close(&n); // no-op if it was never opened
    vs_segment_unlink(name.c_str());
    munmap(m, sizeof(Marks));
    if (no_gate)
        GTEST_SKIP() << "seccomp user notification is not available here";
}

// ---- hole 5: a fork child without /proc reopened the name, not the file ----
// vs_segment_after_fork_child reopened /proc/self/fd/N, and without /proc fell back to the
// name without checking it still names the same file: on a segment removed and created anew
// the child's liveness lock landed on the new file, and a reaper of the original segment
// (which the child still maps and joins in) reaped the live child.
TEST(Lifecycle, ForkChildWithoutProcNeverLocksARecreatedSegment)
{
    TestSegment a("noproc");
    int up[2], down[2];
    ASSERT_EQ(pipe(up), 0);
    ASSERT_EQ(pipe(down), 0);
    struct Report {
        int rearm_rc, join_rc;
        uint8_t id;
    };
    pid_t c = spawn([&] {
        close(up[0]);
        close(down[1]);
        int ready = 0; // 1: cannot get rid of /proc here
        if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, nullptr) != 0)
            ready = 1;
        while (!ready && access("/proc/self/fd", F_OK) == 0)
            if (umount2("/proc", MNT_DETACH) != 0)
                ready = 1;
        if (write(up[1], &ready, sizeof ready) != sizeof ready || ready)
            return 0;
        char go;
        if (read(down[0], &go, 1) != 1) // the parent has re-created the name
            return 2;
        Report rep;
        memset(&rep, 0, sizeof rep); // padding too: it goes through a pipe
        rep.join_rc = VS_EINVAL;
        rep.rearm_rc = vs_segment_after_fork_child(&a.seg);
        if (rep.rearm_rc == VS_OK)
            rep.join_rc = vs_segment_join(&a.seg, &rep.id);
        if (write(up[1], &rep, sizeof rep) != sizeof rep)
            return 3;
        return read(down[0], &go, 1) == 1 ? 0 : 4; // stay alive (and joined) until released
    });
    close(up[1]);
    close(down[0]);
    int ready = -1;
    ASSERT_EQ(read(up[0], &ready, sizeof ready), (ssize_t)sizeof ready);
    if (ready) {
        close(up[0]);
        close(down[1]);
        EXPECT_EQ(wait_child(c), 0);
        GTEST_SKIP() << "cannot unmount /proc in a private mount namespace (needs CAP_SYS_ADMIN)";
    }
    ASSERT_EQ(vs_segment_unlink(a.name.c_str()), VS_OK);
    vs_segment fresh;
    vs_segment_options o = options(kRefClasses, 3, 0);
    ASSERT_EQ(vs_segment_create(&fresh, a.name.c_str(), &o), VS_OK);
    ASSERT_EQ(write(down[1], "g", 1), 1);
    Report rep{};
    ASSERT_EQ(read(up[0], &rep, sizeof rep), (ssize_t)sizeof rep);
    if (rep.rearm_rc == VS_OK && rep.join_rc == VS_OK) {
        vs_peer_info info;
        ASSERT_EQ(vs_segment_peer_info(&a.seg, rep.id, &info), VS_OK);
        EXPECT_EQ(info.state, (uint32_t)VS_PEER_ALIVE);
        EXPECT_EQ(info.pid, c);
        EXPECT_TRUE(info.live) << "the live child's liveness lock is not on the segment it joined";
        unsigned n = 99;
        ASSERT_EQ(vs_segment_reap(&a.seg, &n), VS_OK);
        EXPECT_EQ(n, 0u) << "the live child was reaped";
    } else {
        EXPECT_LT(rep.rearm_rc == VS_OK ? rep.join_rc : rep.rearm_rc, 0);
    }
    ASSERT_EQ(write(down[1], "r", 1), 1);
    EXPECT_EQ(wait_child(c), 0);
    close(up[0]);
    close(down[1]);
    vs_segment_close(&fresh);
}

// ---- hole 6: vs_segment_unlink removed files that are not segments ----
// It removed any file whose first 8 bytes were zero (or that was empty) as "a creation that
// never finished", so a typo could delete someone's file.
TEST(Lifecycle, UnlinkRefusesFilesThatAreNotSegments)
{
    char dir[] = "/tmp/vstest-unlinkXXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    const struct {
        const char *what;
        std::string bytes;
    } files[] = {
        {"empty", ""},
        {"zeros", std::string(4096, '\0')},
        {"zeros-then-text", std::string(8, '\0') + "notes: not a segment\n"},
        {"text", "VARSLOX\nno magic here, just a text file\n"},
    };
    for (const auto &f : files) {
        std::string path = std::string(dir) + "/" + f.what;
        int fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(write(fd, f.bytes.data(), f.bytes.size()), (ssize_t)f.bytes.size());
        close(fd);
        int rc = vs_segment_unlink(path.c_str());
        EXPECT_NE(rc, VS_OK) << f.what;
        EXPECT_EQ(access(path.c_str(), F_OK), 0) << "vs_segment_unlink removed a file that is not a "
                                                    "segment: "
                                                 << f.what;
        unlink(path.c_str());
    }
    rmdir(dir);
}

// Hole 6, a creation at work: a file with no magic yet whose creation lock (an OFD lock on
// byte 0) is held is a segment being created; it is not vs_segment_unlink's to remove.
TEST(Lifecycle, UnlinkNeverRemovesASegmentBeingCreated)
{
    std::string name = unique_name("creating");
    int fd = shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, 65536), 0);
    // The creator's lock, held by another open file description (as another process would).
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 1;
    ASSERT_EQ(fcntl(fd, F_OFD_SETLK, &fl), 0);
    EXPECT_NE(vs_segment_unlink(name.c_str()), VS_OK);
    EXPECT_TRUE(name_exists(name)) << "a segment was removed under its creator";
    close(fd);
    shm_unlink(name.c_str());
}
