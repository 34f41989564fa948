// Sharing a segment between users (VS_OPEN_TRUST_OWNER): another user's segment is refused
// unless the opener asks, and even then only when it is shared through a group the opener is
// in; a trusted peer of another user hands slots over, and its death is reaped, like any
// peer's. Root acts as three users in forked children (numeric ids need no passwd entries);
// tests/users/test-users.sh does the same with real accounts and the varslot tool.
#include "test_util.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>

using namespace vstest;

namespace {

// Ids no account uses: A owns the segment, B is in the shared group S, C is in neither.
constexpr uid_t kUidA = 3210001, kUidB = 3210002, kUidC = 3210003;
constexpr gid_t kGidShared = 3210100, kGidB = 3210102, kGidC = 3210103;
constexpr int kCannotBecome = 77;

// In a forked child: become uid with primary group gid and the supplementary groups given.
bool become(uid_t uid, gid_t gid, std::initializer_list<gid_t> groups)
{
    std::vector<gid_t> g(groups);
    return setgroups(g.size(), g.data()) == 0 && setresgid(gid, gid, gid) == 0 &&
           setresuid(uid, uid, uid) == 0;
}

vs_segment_options shared_options(uint32_t mode)
{
    vs_segment_options o{};
    o.classes = kRefClasses;
    o.class_count = 3;
    o.mode = mode;
    return o;
}

// A named segment that root removes at the end, whoever made it (vs_segment_unlink removes
// only this user's).
struct Name {
    std::string name;
    explicit Name(const char *what) : name(unique_name(what)) {}
    ~Name() { unlink(("/dev/shm" + name).c_str()); }
    const char *c_str() const { return name.c_str(); }
};

// Creates the segment as user A (primary group S unless given) under a umask that would
// strip the group's bits, and returns the child's status.
int create_as(uid_t uid, gid_t gid, const Name &n, uint32_t mode)
{
    return wait_child(spawn([&] {
        if (!become(uid, gid, {}))
            return kCannotBecome;
        umask(077);
        vs_segment s;
        vs_segment_options o = shared_options(mode);
        if (vs_segment_create(&s, n.c_str(), &o) != VS_OK)
            return 2;
        vs_segment_close(&s);
        return 0;
    }));
}

// Opens as user B (in group S) or C: 0 opened and joined, else 10 + -status.
int open_as(uid_t uid, gid_t gid, std::initializer_list<gid_t> groups, const Name &n, uint32_t flags)
{
    return wait_child(spawn([&] {
        if (!become(uid, gid, groups))
            return kCannotBecome;
        vs_segment s;
        uint8_t id;
        int rc = vs_segment_open_flags(&s, n.c_str(), flags);
        if (rc == VS_OK && (rc = vs_segment_join(&s, &id)) == VS_OK)
            vs_segment_close(&s);
        return rc == VS_OK ? 0 : 10 - rc;
    }));
}

#define SKIP_UNLESS_ROOT()                                                                     \
    do {                                                                                       \
        if (geteuid() != 0)                                                                    \
            GTEST_SKIP() << "needs root to act as other users";                                \
    } while (0)

} // namespace

TEST(Trust, AnotherUsersSegmentOpensOnlyWhenTrusted)
{
    SKIP_UNLESS_ROOT();
    Name n("trust");
    ASSERT_EQ(create_as(kUidA, kGidShared, n, 0660), 0);
    struct stat st;
    ASSERT_EQ(stat(("/dev/shm" + n.name).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0660u) << "the umask changed the requested mode";
    EXPECT_EQ(st.st_gid, kGidShared);

    EXPECT_EQ(open_as(kUidB, kGidB, {kGidShared}, n, 0), 10 - VS_EPERM)
        << "another user's segment was taken without VS_OPEN_TRUST_OWNER";
    EXPECT_EQ(open_as(kUidB, kGidB, {kGidShared}, n, VS_OPEN_TRUST_OWNER), 0)
        << "a member of the segment's group could not open it with VS_OPEN_TRUST_OWNER";
    EXPECT_EQ(open_as(kUidB, kGidShared, {}, n, VS_OPEN_TRUST_OWNER), 0)
        << "the group as the opener's primary group was not enough";
    EXPECT_EQ(open_as(kUidC, kGidC, {}, n, VS_OPEN_TRUST_OWNER), 10 - VS_EPERM)
        << "a user outside the group opened it";
    EXPECT_EQ(open_as(kUidA, kGidShared, {}, n, 0), 0) << "its owner needs no flag";
    EXPECT_EQ(open_as(kUidB, kGidB, {kGidShared}, n, 2), 10 - VS_EINVAL) << "an unknown flag was accepted";
}

// A stranger's file that every user may write (0666, the stranger's own group) is open to B,
// but anybody could have put it under the name first: trusting owners is trusting the group.
TEST(Trust, WorldWritableSegmentOfAStrangerIsRefused)
{
    SKIP_UNLESS_ROOT();
    Name n("squat");
    ASSERT_EQ(create_as(kUidC, kGidC, n, 0666), 0);
    EXPECT_EQ(open_as(kUidB, kGidB, {kGidShared}, n, VS_OPEN_TRUST_OWNER), 10 - VS_EPERM)
        << "a segment open to everyone through its other bits was trusted";
}

// A's process hands a slot to B's (trusted), B allocates one of its own; a reap by A while B
// lives takes nothing of B's (B's liveness is a lock the kernel holds for it whoever looks,
// not a signal A may not send); once B is killed, A reaps both slots.
TEST(Trust, PeersOfTwoUsersHandOverAndReapEachOther)
{
    SKIP_UNLESS_ROOT();
    Name n("xreap");
    int to_b[2], to_a[2], a_looked[2];
    ASSERT_EQ(pipe(to_b), 0);
    ASSERT_EQ(pipe(to_a), 0);
    ASSERT_EQ(pipe(a_looked), 0);
    struct Msg { // no padding: Valgrind checks every byte a pipe carries
        uint64_t peer;
        uint64_t handle[2];
    };
    pid_t a = spawn([&] {
        close(to_b[0]);
        close(to_a[1]);
        close(a_looked[0]);
        if (!become(kUidA, kGidShared, {}))
            return kCannotBecome;
        vs_segment s;
        vs_segment_options o = shared_options(0660);
        uint8_t me;
        if (vs_segment_create(&s, n.c_str(), &o) != VS_OK || vs_segment_join(&s, &me) != VS_OK)
            return 2;
        vs_pool *pool = vs_segment_pool(&s);
        vs_slot_ref ref;
        if (!vs_pool_allocate(pool, 100, me, &ref))
            return 3;
        strcpy((char *)vs_pool_slot_data(pool, &ref), "from A");
        vs_pool_handed_over(pool, ref);
        Msg m{me, {vs_slot_ref_pack(ref), 0}};
        if (write(to_b[1], &m, sizeof m) != sizeof m)
            return 4;
        Msg b{};
        if (read(to_a[0], &b, sizeof b) != sizeof b) // B took it and holds a slot of its own
            return 5;
        unsigned reaped = 99;
        if (vs_segment_reap(&s, &reaped) != VS_OK || reaped != 0)
            return 6; // B is alive
        vs_peer_info pi;
        if (vs_segment_peer_info(&s, (uint8_t)b.peer, &pi) != VS_OK || !pi.live)
            return 7;
        if (write(a_looked[1], "x", 1) != 1) // now B may die
            return 12;
        char end;
        if (read(to_a[0], &end, 1) != 0) // EOF: B is dead
            return 8;
        // B's pipe may close before the kernel drops B's liveness lock: retry for up to 2 s.
        for (int tries = 0; tries < 2000 && reaped == 0; tries++) {
            if (vs_segment_reap(&s, &reaped) != VS_OK)
                return 9;
            if (reaped == 0)
                usleep(1000);
        }
        if (reaped != 1)
            return 10;
        for (uint64_t h : b.handle) {
            vs_slot_ref r = vs_slot_ref_unpack(h);
            vs_slot_info si;
            if (vs_pool_slot_info(pool, r.class_idx, r.slot_idx, &si) != VS_OK || si.state != VS_SLOT_FREE)
                return 11;
        }
        vs_segment_close(&s);
        return 0;
    });
    close(to_b[1]);
    close(to_a[0]);
    pid_t b = spawn([&] {
        close(a_looked[1]);
        if (!become(kUidB, kGidB, {kGidShared}))
            return kCannotBecome;
        Msg m{};
        if (read(to_b[0], &m, sizeof m) != sizeof m)
            return 2;
        vs_segment s;
        uint8_t me;
        if (vs_segment_open_flags(&s, n.c_str(), VS_OPEN_TRUST_OWNER) != VS_OK || vs_segment_join(&s, &me) != VS_OK)
            return 3;
        vs_pool *pool = vs_segment_pool(&s);
        vs_slot_ref ref = vs_slot_ref_unpack(m.handle[0]), mine;
        if (vs_pool_transfer(pool, ref, (uint8_t)m.peer, me) != VS_OK ||
            strcmp((const char *)vs_pool_slot_data(pool, &ref), "from A") != 0)
            return 4;
        if (!vs_pool_allocate(pool, 100, me, &mine))
            return 5;
        Msg back{me, {m.handle[0], vs_slot_ref_pack(mine)}};
        if (write(to_a[1], &back, sizeof back) != sizeof back)
            return 6;
        char go;
        if (read(a_looked[0], &go, 1) != 1)
            return 7;
        die_holding_slots(pool);
    });
    close(to_b[0]);
    close(to_a[1]);
    close(a_looked[0]);
    close(a_looked[1]);
    int sb = wait_child(b), sa = wait_child(a);
    if (sa == kCannotBecome || sb == kCannotBecome)
        GTEST_SKIP() << "cannot switch to the test's user ids here";
    EXPECT_EQ(sb, 128 + SIGKILL) << "B failed before dying holding its slots";
    EXPECT_EQ(sa, 0) << "A's step " << sa
                     << " failed (6: reaped a live peer of another user; 10: did not reap the dead one)";
}
