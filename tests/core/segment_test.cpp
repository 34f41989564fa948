// Segments: create/open/close/unlink, peers joining and leaving, the creator's address,
// reaping, fork, and every refusal (names, modes, symlinks, other users' files).
#include "test_util.h"

#include <fcntl.h>
#include <sys/stat.h>

using namespace vstest;

TEST(Segment, CreateOpenShareOnePool)
{
    TestSegment a("share");
    vs_segment b;
    ASSERT_EQ(vs_segment_open(&b, a.name.c_str()), VS_OK);
    uint8_t ida = 0, idb = 0;
    ASSERT_EQ(vs_segment_join(&a.seg, &ida), VS_OK);
    ASSERT_EQ(vs_segment_join(&b, &idb), VS_OK);
    EXPECT_GE(ida, 1);
    EXPECT_NE(ida, idb);
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(a.pool(), 1000, ida, &r));
    strcpy(static_cast<char *>(vs_pool_slot_data(a.pool(), &r)), "hello");
    vs_pool_handed_over(a.pool(), r);
    EXPECT_EQ(vs_pool_transfer(vs_segment_pool(&b), r, ida, idb), VS_OK); // b takes it, then reads
    EXPECT_STREQ(static_cast<char *>(vs_pool_slot_data(vs_segment_pool(&b), &r)), "hello");
    EXPECT_EQ(vs_pool_free(vs_segment_pool(&b), r), VS_OK);
    vs_segment_close(&b);
}

TEST(Segment, DefaultsAreDocumentedOnes)
{
    std::string name = unique_name("defaults");
    vs_segment s;
    ASSERT_EQ(vs_segment_create(&s, name.c_str(), nullptr), VS_OK);
    const vs_class_config d[VS_DEFAULT_CLASS_COUNT] = VS_DEFAULT_CLASSES_INIT;
    ASSERT_EQ(vs_pool_class_count(vs_segment_pool(&s)), (size_t)VS_DEFAULT_CLASS_COUNT);
    for (size_t i = 0; i < VS_DEFAULT_CLASS_COUNT; i++) {
        EXPECT_EQ(vs_pool_slot_size(vs_segment_pool(&s), i), d[i].slot_size);
        EXPECT_EQ(vs_pool_slot_count(vs_segment_pool(&s), i), d[i].slot_count);
    }
    EXPECT_EQ(vs_segment_max_peers(&s), (uint32_t)VS_DEFAULT_MAX_PEERS);
    struct stat st;
    ASSERT_EQ(fstat(s.fd, &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    vs_segment_close(&s);
    EXPECT_EQ(vs_segment_unlink(name.c_str()), VS_OK);
    EXPECT_EQ(vs_segment_unlink(name.c_str()), VS_ENOENT);
}

TEST(Segment, ModeIsExactDespiteUmask)
{
    std::string name = unique_name("mode");
    vs_segment_options o{};
    o.mode = 0660;
    mode_t old = umask(077);
    vs_segment s;
    ASSERT_EQ(vs_segment_create(&s, name.c_str(), &o), VS_OK);
    umask(old);
    struct stat st;
    ASSERT_EQ(fstat(s.fd, &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0660u);
    vs_segment_close(&s);
    vs_segment_unlink(name.c_str());
}

TEST(Segment, RefusesBadArguments)
{
    vs_segment s;
    vs_segment_options o{};
    EXPECT_EQ(vs_segment_create(&s, nullptr, nullptr), VS_EINVAL);
    EXPECT_EQ(vs_segment_create(&s, "", nullptr), VS_EINVAL);
    EXPECT_EQ(vs_segment_create(&s, std::string(300, 'x').c_str(), nullptr), VS_EINVAL);
    EXPECT_EQ(vs_segment_create(nullptr, "/x", nullptr), VS_EINVAL);
    std::string name = unique_name("bad");
    o.max_peers = 256;
    EXPECT_EQ(vs_segment_create(&s, name.c_str(), &o), VS_EINVAL);
    o.max_peers = 0;
    o.mode = 01777;
    EXPECT_EQ(vs_segment_create(&s, name.c_str(), &o), VS_EINVAL);
    o.mode = 0;
    const vs_class_config bad[2] = {{1024, 4}, {512, 4}};
    o.classes = bad;
    o.class_count = 2;
    EXPECT_EQ(vs_segment_create(&s, name.c_str(), &o), VS_EINVAL);
    EXPECT_STRNE(vs_last_detail(), "no detail recorded");
    o.classes = nullptr; // a count without classes is a mistake, not "use defaults"
    EXPECT_EQ(vs_segment_create(&s, name.c_str(), &o), VS_EINVAL);
    EXPECT_EQ(vs_segment_open(&s, name.c_str()), VS_ENOENT); // nothing was left behind
    EXPECT_EQ(vs_segment_open(&s, nullptr), VS_EINVAL);
    EXPECT_EQ(vs_segment_join(nullptr, nullptr), VS_EINVAL);
    EXPECT_EQ(vs_segment_reap(nullptr, nullptr), VS_EINVAL);
    EXPECT_EQ(vs_segment_pool(nullptr), nullptr);
    vs_segment_close(nullptr);
}

TEST(Segment, CreateIsExclusive)
{
    TestSegment a("excl");
    vs_segment b;
    EXPECT_EQ(vs_segment_create(&b, a.name.c_str(), nullptr), VS_EEXIST);
    EXPECT_EQ(vs_segment_open_or_create(&b, a.name.c_str(), nullptr), VS_OK); // opens it
    EXPECT_EQ(vs_pool_class_count(vs_segment_pool(&b)), 3u); // a's classes, not the defaults
    vs_segment_close(&b);
}

TEST(Segment, FilePathsWorkAndSymlinksAreRefused)
{
    char dir[] = "/tmp/vstest-dirXXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    std::string path = std::string(dir) + "/seg";
    std::string link = std::string(dir) + "/link";
    vs_segment s, t;
    vs_segment_options o{};
    o.classes = kRefClasses;
    o.class_count = 3;
    ASSERT_EQ(vs_segment_create(&s, path.c_str(), &o), VS_OK);
    ASSERT_EQ(symlink(path.c_str(), link.c_str()), 0);
    EXPECT_EQ(vs_segment_open(&t, link.c_str()), VS_EPERM);
    EXPECT_EQ(vs_segment_create(&t, link.c_str(), &o), VS_EEXIST);
    ASSERT_EQ(vs_segment_open(&t, path.c_str()), VS_OK);
    vs_segment_close(&t);
    vs_segment_close(&s);
    EXPECT_EQ(vs_segment_unlink(path.c_str()), VS_OK);
    unlink(link.c_str());
    rmdir(dir);
}

TEST(Segment, RefusesAnotherUsersSegment)
{
    if (geteuid() != 0)
        GTEST_SKIP() << "needs root to give a file to another user";
    TestSegment a("foreign");
    ASSERT_EQ(fchown(a.seg.fd, 65534, 65534), 0); // nobody
    vs_segment b;
    EXPECT_EQ(vs_segment_open(&b, a.name.c_str()), VS_EPERM);
    EXPECT_STREQ(vs_last_detail(), "segment is owned by another user, and VS_OPEN_TRUST_OWNER was not given");
    ASSERT_EQ(fchown(a.seg.fd, 0, 0), 0); // ours again, so the destructor may remove it
}

TEST(Segment, RefusesThingsThatAreNotSegments)
{
    vs_segment s;
    EXPECT_EQ(vs_segment_open(&s, "/dev/null"), VS_ECORRUPT); // not a regular file
    char path[] = "/tmp/vstest-emptyXXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(vs_segment_open(&s, path), VS_ECORRUPT); // empty, nobody creating it
    ASSERT_EQ(write(fd, "#!/bin/sh\necho not a segment\n", 29), 29);
    EXPECT_EQ(vs_segment_open(&s, path), VS_ECORRUPT);
    EXPECT_STREQ(vs_last_detail(), "not a varslot segment (bad magic)");
    close(fd);
    unlink(path);
}

TEST(Segment, PeersMapAtTheCreatorsAddress)
{
    if (getenv("VSTEST_SLOW"))
        GTEST_SKIP() << "under Valgrind the address space is Valgrind's to place";
    TestSegment a("addr");
    EXPECT_TRUE(a.seg.at_creator_address);
    void *creator_map = a.seg.map;
    std::string name = a.name;
    // A fresh process (not a fork: that would inherit the mapping) maps at the same place.
    pid_t pid = spawn([&] {
        munmap(a.seg.map, a.seg.map_len); // as if this process had never seen it
        vs_segment b;
        if (vs_segment_open(&b, name.c_str()) != VS_OK)
            return 2;
        return b.map == creator_map && b.at_creator_address ? 0 : 3;
    });
    EXPECT_EQ(wait_child(pid), 0);
    // In this process the address is taken by a's mapping: the open falls back, handles work.
    vs_segment b;
    ASSERT_EQ(vs_segment_open(&b, name.c_str()), VS_OK);
    EXPECT_FALSE(b.at_creator_address);
    EXPECT_NE(b.map, creator_map);
    vs_segment_close(&b);
}

TEST(Segment, CheckNameSeesRemovalAndReplacement)
{
    TestSegment a("checkname");
    EXPECT_EQ(vs_segment_check_name(&a.seg), VS_OK);
    vs_segment closed{};
    EXPECT_EQ(vs_segment_check_name(&closed), VS_EINVAL);
    EXPECT_EQ(vs_segment_check_name(nullptr), VS_EINVAL);
    ASSERT_EQ(vs_segment_unlink(a.name.c_str()), VS_OK);
    EXPECT_EQ(vs_segment_check_name(&a.seg), VS_ESTALE) << "the name was removed";
    // Another segment under the same name is not this one.
    vs_segment other;
    ASSERT_EQ(vs_segment_create(&other, a.name.c_str(), nullptr), VS_OK);
    EXPECT_EQ(vs_segment_check_name(&a.seg), VS_ESTALE) << "the name names another segment";
    EXPECT_EQ(vs_segment_check_name(&other), VS_OK);
    vs_segment_close(&other);
}

TEST(Segment, MappingAndRemapShared)
{
    TestSegment a("remap");
    void *addr = nullptr;
    size_t len = 0;
    bool at_creator = false;
    ASSERT_EQ(vs_segment_mapping(&a.seg, &addr, &len, &at_creator), VS_OK);
    EXPECT_EQ(addr, a.seg.map);
    EXPECT_EQ(len, a.seg.map_len);
    EXPECT_EQ(at_creator, a.seg.at_creator_address);
    EXPECT_EQ(vs_segment_mapping(&a.seg, nullptr, nullptr, nullptr), VS_OK);
    vs_segment closed{};
    EXPECT_EQ(vs_segment_mapping(&closed, &addr, &len, &at_creator), VS_EINVAL);
    EXPECT_EQ(vs_segment_mapping(nullptr, &addr, &len, &at_creator), VS_EINVAL);

    auto *lo = static_cast<uint8_t *>(addr);
    const size_t pg = VS_SLOT_PAGE;
    EXPECT_EQ(vs_segment_remap_shared(&a.seg, lo - pg, pg), VS_EINVAL);        // before it
    EXPECT_EQ(vs_segment_remap_shared(&a.seg, lo + len - pg, 2 * pg), VS_EINVAL); // past its end
    EXPECT_EQ(vs_segment_remap_shared(&a.seg, lo + len, pg), VS_EINVAL);
    EXPECT_EQ(vs_segment_remap_shared(&a.seg, lo + 64, pg), VS_EINVAL);         // unaligned
    EXPECT_EQ(vs_segment_remap_shared(&a.seg, lo, pg + 64), VS_EINVAL);
    EXPECT_EQ(vs_segment_remap_shared(&a.seg, lo, 0), VS_EINVAL);
    EXPECT_EQ(vs_segment_remap_shared(&closed, lo, pg), VS_EINVAL);

    // A page-sized slot with a private copy swapped in: remapping shows the shared bytes again.
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(a.pool(), 16384, 0, &r));
    vs_slot_location loc;
    ASSERT_EQ(vs_pool_locate(a.pool(), vs_pool_slot_data(a.pool(), &r), &loc), VS_OK);
    auto *slot = static_cast<char *>(loc.start);
    strcpy(slot, "shared");
    ASSERT_NE(mmap(slot, loc.span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                   -1, 0), MAP_FAILED);
    strcpy(slot, "private");
    ASSERT_EQ(vs_segment_remap_shared(&a.seg, slot, loc.span), VS_OK);
    EXPECT_STREQ(slot, "shared");
    // Writes reach the segment file again. (Read from the file, not through a second
    // mapping: under memcheck a slot is readable only in the process that holds it.)
    strcpy(slot, "seen");
    int fd = open(("/dev/shm" + a.name).c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    char seen[8] = {};
    EXPECT_EQ(pread(fd, seen, 5, slot - static_cast<char *>(addr)), 5);
    close(fd);
    EXPECT_STREQ(seen, "seen");
    EXPECT_EQ(vs_pool_free(a.pool(), r), VS_OK);
}

TEST(Segment, JoinLeaveAndPeerInfo)
{
    TestSegment a("peers", kRefClasses, 3, 2);
    vs_segment b, c;
    ASSERT_EQ(vs_segment_open(&b, a.name.c_str()), VS_OK);
    ASSERT_EQ(vs_segment_open(&c, a.name.c_str()), VS_OK);
    uint8_t ia, ib, ic;
    ASSERT_EQ(vs_segment_join(&a.seg, &ia), VS_OK);
    uint8_t again;
    ASSERT_EQ(vs_segment_join(&a.seg, &again), VS_OK); // joining twice keeps the id
    EXPECT_EQ(again, ia);
    ASSERT_EQ(vs_segment_join(&b, &ib), VS_OK);
    EXPECT_EQ(vs_segment_join(&c, &ic), VS_EFULL);
    vs_peer_info info;
    ASSERT_EQ(vs_segment_peer_info(&c, ib, &info), VS_OK);
    EXPECT_EQ(info.state, (uint32_t)VS_PEER_ALIVE);
    EXPECT_TRUE(info.live);
    EXPECT_EQ(info.pid, getpid());
    EXPECT_GT(info.joined_unix_ns, 0u);
    EXPECT_EQ(vs_segment_peer_info(&c, 0, &info), VS_EINVAL);
    EXPECT_EQ(vs_segment_peer_info(&c, 3, &info), VS_EINVAL);
    // The identity alone: the same entry, no liveness asked.
    vs_peer_info id;
    ASSERT_EQ(vs_segment_peer_identity(&c, ib, &id), VS_OK);
    EXPECT_EQ(id.id, ib);
    EXPECT_EQ(id.state, (uint32_t)VS_PEER_ALIVE);
    EXPECT_FALSE(id.live);
    EXPECT_EQ(id.pid, info.pid);
    EXPECT_EQ(id.joined_unix_ns, info.joined_unix_ns);
    const uint64_t b_joined = id.joined_unix_ns;
    EXPECT_EQ(vs_segment_peer_identity(&c, 0, &id), VS_EINVAL);
    EXPECT_EQ(vs_segment_peer_identity(&c, 3, &id), VS_EINVAL);
    EXPECT_EQ(vs_segment_peer_identity(nullptr, ib, &id), VS_EINVAL);
    EXPECT_EQ(vs_segment_peer_identity(&c, ib, nullptr), VS_EINVAL);
    // b leaves holding a slot: the slot comes back, the entry is reusable.
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(vs_segment_pool(&b), 10, ib, &r));
    ASSERT_EQ(vs_segment_leave(&b), VS_OK);
    EXPECT_EQ(vs_segment_leave(&b), VS_ENOTJOINED);
    EXPECT_EQ(vs_pool_slot_data(a.pool(), &r), nullptr);
    ASSERT_EQ(vs_segment_peer_info(&c, ib, &info), VS_OK);
    EXPECT_EQ(info.state, (uint32_t)VS_PEER_FREE);
    EXPECT_FALSE(info.live);
    ASSERT_EQ(vs_segment_peer_identity(&c, ib, &id), VS_OK);
    EXPECT_EQ(id.state, (uint32_t)VS_PEER_FREE);
    EXPECT_EQ(id.pid, 0);
    ASSERT_EQ(vs_segment_join(&c, &ic), VS_OK);
    EXPECT_EQ(ic, ib);
    ASSERT_EQ(vs_segment_peer_identity(&a.seg, ic, &id), VS_OK);
    EXPECT_EQ(id.state, (uint32_t)VS_PEER_ALIVE);
    EXPECT_GT(id.joined_unix_ns, b_joined) << "a new join of the id is told apart by its time";
    vs_segment_close(&b);
    vs_segment_close(&c);
}

TEST(Segment, ExitingWithoutLeavingIsReapedLikeADeath)
{
    TestSegment a("close");
    std::string name = a.name;
    int ready[2];
    ASSERT_EQ(pipe(ready), 0);
    // A peer that exits without leaving: the kernel drops its liveness lock, nothing else.
    pid_t pid = spawn([&] {
        vs_segment b;
        uint8_t ib;
        vs_slot_ref r;
        if (vs_segment_open(&b, name.c_str()) != VS_OK || vs_segment_join(&b, &ib) != VS_OK ||
            !vs_pool_allocate(vs_segment_pool(&b), 10, ib, &r))
            return 2;
        uint64_t h = vs_slot_ref_pack(r);
        if (write(ready[1], &h, sizeof h) != sizeof h)
            return 3;
        vs_pool_detach(vs_segment_pool(&b)); // under Valgrind: memcheck forgets b's blocks
        return 0;
    });
    uint64_t h = 0;
    ASSERT_EQ(read(ready[0], &h, sizeof h), (ssize_t)sizeof h);
    ASSERT_EQ(wait_child(pid), 0);
    vs_slot_ref r = vs_slot_ref_unpack(h);
    EXPECT_NE(vs_pool_slot_data(a.pool(), &r), nullptr);
    unsigned n = 0;
    ASSERT_EQ(vs_segment_reap(&a.seg, &n), VS_OK);
    EXPECT_EQ(n, 1u);
    EXPECT_EQ(vs_pool_slot_data(a.pool(), &r), nullptr);
    ASSERT_EQ(vs_segment_reap(&a.seg, &n), VS_OK);
    EXPECT_EQ(n, 0u);
    close(ready[0]);
    close(ready[1]);
}

TEST(Segment, ReapingNeverTouchesALivePeer)
{
    TestSegment a("live");
    int ready[2], release[2];
    ASSERT_EQ(pipe(ready), 0);
    ASSERT_EQ(pipe(release), 0);
    std::string name = a.name;
    pid_t pid = spawn([&] {
        vs_segment b;
        uint8_t id;
        if (vs_segment_open(&b, name.c_str()) != VS_OK || vs_segment_join(&b, &id) != VS_OK)
            return 2;
        vs_slot_ref r;
        if (!vs_pool_allocate(vs_segment_pool(&b), 10, id, &r))
            return 3;
        uint64_t h = vs_slot_ref_pack(r);
        if (write(ready[1], &h, sizeof h) != sizeof h)
            return 4;
        char c;
        if (read(release[0], &c, 1) != 1)
            return 5;
        return vs_pool_slot_data(vs_segment_pool(&b), &r) && vs_pool_free(vs_segment_pool(&b), r) == VS_OK ? 0 : 6;
    });
    uint64_t h = 0;
    ASSERT_EQ(read(ready[0], &h, sizeof h), (ssize_t)sizeof h);
    unsigned n = 99;
    ASSERT_EQ(vs_segment_reap(&a.seg, &n), VS_OK);
    EXPECT_EQ(n, 0u);
    vs_slot_ref r = vs_slot_ref_unpack(h);
    EXPECT_NE(vs_pool_slot_data(a.pool(), &r), nullptr);
    ASSERT_EQ(write(release[1], "x", 1), 1);
    EXPECT_EQ(wait_child(pid), 0);
    for (int fd : {ready[0], ready[1], release[0], release[1]})
        close(fd);
}

TEST(Segment, ForkChildGetsItsOwnLivenessAndPeerId)
{
    TestSegment a("fork");
    uint8_t parent_id;
    ASSERT_EQ(vs_segment_join(&a.seg, &parent_id), VS_OK);
    int ready[2];
    ASSERT_EQ(pipe(ready), 0);
    pid_t pid = spawn([&] {
        if (vs_segment_after_fork_child(&a.seg) != VS_OK || a.seg.peer_id != 0)
            return 2;
        uint8_t id;
        if (vs_segment_join(&a.seg, &id) != VS_OK || id == parent_id)
            return 3;
        if (write(ready[1], &id, 1) != 1)
            return 4;
        pause();
        return 0;
    });
    uint8_t child_id = 0;
    ASSERT_EQ(read(ready[0], &child_id, 1), 1);
    vs_peer_info info;
    ASSERT_EQ(vs_segment_peer_info(&a.seg, child_id, &info), VS_OK);
    EXPECT_TRUE(info.live);
    EXPECT_EQ(info.pid, pid);
    kill(pid, SIGKILL);
    wait_child(pid);
    // The child's death is visible although the parent still holds the inherited file.
    ASSERT_EQ(vs_segment_peer_info(&a.seg, child_id, &info), VS_OK);
    EXPECT_FALSE(info.live);
    unsigned n = 0;
    ASSERT_EQ(vs_segment_reap(&a.seg, &n), VS_OK);
    EXPECT_EQ(n, 1u);
    ASSERT_EQ(vs_segment_peer_info(&a.seg, parent_id, &info), VS_OK);
    EXPECT_TRUE(info.live); // and the parent is untouched
    close(ready[0]);
    close(ready[1]);
}

TEST(Segment, ExhaustionReapsDeadPeersByItself)
{
    const vs_class_config one[1] = {{4096, 4}};
    TestSegment a("exhaust", one, 1);
    uint8_t me;
    ASSERT_EQ(vs_segment_join(&a.seg, &me), VS_OK);
    std::string name = a.name;
    pid_t pid = spawn([&] {
        vs_segment b;
        uint8_t id;
        if (vs_segment_open(&b, name.c_str()) != VS_OK || vs_segment_join(&b, &id) != VS_OK)
            return 2;
        vs_slot_ref r;
        int n = 0;
        while (vs_pool_allocate(vs_segment_pool(&b), 1, id, &r))
            n++;
        if (n != 4)
            return 3;
        die_holding_slots(vs_segment_pool(&b));
    });
    EXPECT_EQ(wait_child(pid), 128 + SIGKILL);
    usleep(20000); // past the auto-reap rate limit
    vs_slot_ref r;
    EXPECT_TRUE(vs_pool_allocate(a.pool(), 1, me, &r)); // found empty, reaped, retried
}

TEST(Segment, RemoveWhenUnusedGoesWithTheLastPeer)
{
    std::string name = unique_name("ephemeral");
    vs_segment_options o{};
    o.classes = kRefClasses;
    o.class_count = 3;
    o.flags = VS_SEGMENT_REMOVE_WHEN_UNUSED;
    vs_segment a, b, probe;
    ASSERT_EQ(vs_segment_create(&a, name.c_str(), &o), VS_OK);
    ASSERT_EQ(vs_segment_open(&b, name.c_str()), VS_OK);
    uint8_t id;
    ASSERT_EQ(vs_segment_join(&a, &id), VS_OK);
    ASSERT_EQ(vs_segment_join(&b, &id), VS_OK);
    vs_segment_close(&a); // b is still joined: the name stays
    ASSERT_EQ(vs_segment_open(&probe, name.c_str()), VS_OK);
    vs_segment_close(&probe); // never joined: removes nothing while b is there
    ASSERT_EQ(vs_segment_open(&probe, name.c_str()), VS_OK);
    vs_segment_close(&probe);
    vs_segment_close(&b); // the last peer out
    EXPECT_EQ(vs_segment_open(&probe, name.c_str()), VS_ENOENT);
    o.flags = 0x80; // unknown flags are refused
    EXPECT_EQ(vs_segment_create(&a, name.c_str(), &o), VS_EINVAL);
    // Without the flag a segment outlives its peers.
    o.flags = 0;
    ASSERT_EQ(vs_segment_create(&a, name.c_str(), &o), VS_OK);
    ASSERT_EQ(vs_segment_join(&a, &id), VS_OK);
    vs_segment_close(&a);
    ASSERT_EQ(vs_segment_open(&probe, name.c_str()), VS_OK);
    vs_segment_close(&probe);
    EXPECT_EQ(vs_segment_unlink(name.c_str()), VS_OK);
    // The last peer of a segment whose name was removed and given to a new segment meanwhile
    // leaves the new one alone.
    o.flags = VS_SEGMENT_REMOVE_WHEN_UNUSED;
    vs_segment old_seg, new_seg;
    ASSERT_EQ(vs_segment_create(&old_seg, name.c_str(), &o), VS_OK);
    ASSERT_EQ(vs_segment_join(&old_seg, &id), VS_OK);
    ASSERT_EQ(vs_segment_unlink(name.c_str()), VS_OK);
    ASSERT_EQ(vs_segment_create(&new_seg, name.c_str(), &o), VS_OK);
    vs_segment_close(&old_seg);
    EXPECT_EQ(vs_segment_open(&probe, name.c_str()), VS_OK) << "the new segment was removed";
    vs_segment_close(&probe);
    vs_segment_close(&new_seg);
    EXPECT_EQ(vs_segment_unlink(name.c_str()), VS_OK);
}
