// What a fork child gets of the routed blocks (preload/fork.c): a private copy, or the
// shared slots with VARSLOT_FORK=share.
#include "shim_test.h"

#include <malloc.h>

namespace shimtest {
namespace {

// ---------------------------------------------------------------------------------------
// fork: VARSLOT_FORK=copy (the default) and share (run-shim-tests.sh's share configuration)

using Fork = Shim;

TEST_F(Fork, ChildGetsAPrivateCopyOfRoutedBlocks)
{
    if (env_is("VARSLOT_FORK", "share"))
        GTEST_SKIP() << "VARSLOT_FORK=share";
    size_t len = routed_size(view(), 1 << 20);
    unsigned char *p = static_cast<unsigned char *>(malloc(opaque(len)));
    ASSERT_TRUE(p && owned(p));
    fill(p, len, 41);
    uint64_t h = api().handle_of(p);
    size_t small_routed = routed_size(view(), min_size());

    int to_child[2], to_parent[2];
    ASSERT_EQ(pipe(to_child), 0);
    ASSERT_EQ(pipe(to_parent), 0);
    fflush(nullptr);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        close(to_child[1]);
        close(to_parent[0]);
        alarm(60);
        int rc = 0;
        char c;
        if (mismatch(p, len, 41) != SIZE_MAX)
            rc = 10; // the parent's content before fork
        fill(p, len, 42);
        if (!rc && (write(to_parent[1], "1", 1) != 1 || read(to_child[0], &c, 1) != 1))
            rc = 11;
        if (!rc && mismatch(p, len, 42) != SIZE_MAX)
            rc = 12; // the parent's writes after fork leaked into our copy
        void *mine = malloc(opaque(small_routed));
        if (!rc && (!mine || !owned(mine)))
            rc = 13; // the child routes too (with a peer entry of its own)
        if (!rc && mine) {
            fill(mine, small_routed, 43);
            if (mismatch(mine, small_routed, 43) != SIZE_MAX)
                rc = 14;
        }
        free(mine);
        free(p); // frees our copy only: the parent's slot stays the parent's
        exit(rc); // a normal exit: the shim leaves the segment
    }
    close(to_child[0]);
    close(to_parent[1]);
    char c = 0;
    ssize_t n = read(to_parent[0], &c, 1);
    EXPECT_EQ(n, 1) << "the child did not report";
    EXPECT_EQ(mismatch(p, len, 41), SIZE_MAX) << "the child's writes changed the parent's copy";
    fill(p, len, 44);
    EXPECT_EQ(write(to_child[1], "2", 1), 1);
    int status = 0;
    EXPECT_EQ(waitpid(pid, &status, 0), pid);
    close(to_child[1]);
    close(to_parent[0]);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "child " << describe_status(status)
        << " (10: pre-fork content wrong, 11: pipe, 12: parent's writes visible, 13: child "
           "could not route, 14: child's routed block corrupt)";
    EXPECT_EQ(mismatch(p, len, 44), SIZE_MAX) << "parent's block after the child exited";
    vs_slot_info i = view().info(h);
    EXPECT_EQ(i.state, (uint32_t)VS_SLOT_ALLOCATED) << "the child's free() freed the parent's slot";
    EXPECT_EQ(i.generation, vs_slot_ref_unpack(h).generation);
    EXPECT_EQ(i.owner, my_peer_);
    EXPECT_EQ(view().peer_of(pid), 0) << "the exited child still has a peer entry";
    free(p);
    EXPECT_TRUE(view().released(h));
}

// copy: a fork copies a block's bytes in use, not its whole slot; a block whose usable size
// the program asked for is in use up to it, so every byte the program may have written there
// reaches the child. Two blocks just over the threshold, in slots pages larger.
TEST_F(Fork, ChildGetsEveryUsableByteOfABlock)
{
    if (env_is("VARSLOT_FORK", "share"))
        GTEST_SKIP() << "VARSLOT_FORK=share";
    size_t want = routed_size(view(), min_size() + 100);
    unsigned char *asked = static_cast<unsigned char *>(malloc(opaque(want)));
    unsigned char *plain = static_cast<unsigned char *>(malloc(opaque(want)));
    ASSERT_TRUE(asked && owned(asked) && plain && owned(plain));
    size_t usable = malloc_usable_size(asked);
    if (usable < want + 2 * 4096)
        GTEST_SKIP() << "needs a slot at least two pages larger than the block";
    fill(asked, usable, 71);
    fill(plain, want, 72);
    fflush(nullptr);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        alarm(60);
        int rc = 0;
        if (mismatch(asked, usable, 71) != SIZE_MAX)
            rc = 40; // a usable byte past the requested size was not copied
        else if (mismatch(plain, want, 72) != SIZE_MAX)
            rc = 41; // the block's own bytes
        _exit(rc);
    }
    int status = 0;
    EXPECT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "child " << describe_status(status) << " (40: usable bytes lost, 41: block bytes lost)";
    free(asked);
    free(plain);
}

// copy: the child's realloc of its copy of a parent's block cannot resize the parent's slot
// in place; it moves the bytes to a block of the child's own, and the parent's slot, size and
// bytes stay as they were.
TEST_F(Fork, ChildReallocsItsPrivateCopyAwayFromTheParentsSlot)
{
    if (env_is("VARSLOT_FORK", "share"))
        GTEST_SKIP() << "VARSLOT_FORK=share";
    size_t len = routed_size(view(), 1 << 20), grown = routed_size(view(), 3 << 20);
    if (grown <= len)
        GTEST_SKIP() << "needs a class larger than 1 MiB";
    unsigned char *b[3];
    uint64_t h[3];
    for (int i = 0; i < 3; i++) {
        b[i] = static_cast<unsigned char *>(malloc(opaque(len)));
        ASSERT_TRUE(b[i] && owned(b[i]));
        fill(b[i], len, 61 + i);
        h[i] = api().handle_of(b[i]);
    }
    fflush(nullptr);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        alarm(60);
        int rc = 0;
        unsigned char *g = static_cast<unsigned char *>(realloc(b[0], opaque(grown)));
        if (!g || !owned(g) || mismatch(g, len, 61) != SIZE_MAX)
            rc = 20; // grown into a larger class: routed, content kept
        else
            fill(g, grown, 64); // all of it: none of it may reach the parent
        unsigned char *s = static_cast<unsigned char *>(realloc(b[1], opaque<size_t>(1000)));
        if (!rc && (!s || owned(s) || mismatch(s, 1000, 62) != SIZE_MAX))
            rc = 21; // shrunk below the threshold: the fallback, content kept
        unsigned char *t = static_cast<unsigned char *>(realloc(b[2], opaque(len - 4096)));
        if (!rc && (!t || t == b[2] || !owned(t) || mismatch(t, len - 4096, 63) != SIZE_MAX))
            rc = 22; // same class: moved all the same, since the slot is the parent's
        if (!rc && t)
            fill(t, len - 4096, 65);
        free(g);
        free(s);
        free(t);
        exit(rc);
    }
    int status = 0;
    EXPECT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "child " << describe_status(status)
        << " (20: grow, 21: shrink below the threshold, 22: realloc within the class)";
    for (int i = 0; i < 3; i++) {
        SCOPED_TRACE("block " + std::to_string(i));
        EXPECT_EQ(mismatch(b[i], len, 61 + i), SIZE_MAX) << "the child's realloc changed our bytes";
        vs_slot_info info = view().info(h[i]);
        EXPECT_EQ(info.state, (uint32_t)VS_SLOT_ALLOCATED) << "the child's realloc freed our slot";
        EXPECT_EQ(info.generation, vs_slot_ref_unpack(h[i]).generation);
        EXPECT_EQ(info.owner, my_peer_);
        EXPECT_EQ(info.size, len) << "the child resized our slot";
        free(b[i]);
        EXPECT_TRUE(view().released(h[i]));
    }
}

// share: nothing is copied at fork. Each process sees the other's writes; the blocks stay
// the parent's (the child's exit leaves them alone), and either process may free one, once.
TEST_F(Fork, ChildSharesRoutedBlocksWithShare)
{
    if (!env_is("VARSLOT_FORK", "share"))
        GTEST_SKIP() << "VARSLOT_FORK=share only (run-shim-tests.sh's share configuration)";
    size_t len = routed_size(view(), 1 << 20), small_routed = routed_size(view(), min_size());
    unsigned char *kept = static_cast<unsigned char *>(malloc(opaque(len)));
    unsigned char *given = static_cast<unsigned char *>(malloc(opaque(len)));
    ASSERT_TRUE(kept && given && owned(kept) && owned(given));
    fill(kept, len, 51);
    fill(given, len, 52);
    uint64_t hk = api().handle_of(kept), hg = api().handle_of(given);

    int to_child[2], to_parent[2];
    ASSERT_EQ(pipe(to_child), 0);
    ASSERT_EQ(pipe(to_parent), 0);
    fflush(nullptr);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        close(to_child[1]);
        close(to_parent[0]);
        alarm(60);
        int rc = 0;
        char c;
        if (mismatch(kept, len, 51) != SIZE_MAX || mismatch(given, len, 52) != SIZE_MAX)
            rc = 30; // the parent's content before fork
        fill(kept, len, 53);
        if (!rc && (write(to_parent[1], "1", 1) != 1 || read(to_child[0], &c, 1) != 1))
            rc = 31;
        if (!rc && mismatch(kept, len, 54) != SIZE_MAX)
            rc = 32; // the parent's write after fork is not here
        void *mine = malloc(opaque(small_routed));
        if (!rc && (!mine || !owned(mine)))
            rc = 33; // the child routes too
        free(mine);
        free(given); // for both processes: the parent must not free it again
        exit(rc);
    }
    close(to_child[0]);
    close(to_parent[1]);
    char c = 0;
    EXPECT_EQ(read(to_parent[0], &c, 1), 1) << "the child did not report";
    EXPECT_EQ(mismatch(kept, len, 53), SIZE_MAX) << "the child's write is not seen by the parent";
    fill(kept, len, 54);
    EXPECT_EQ(write(to_child[1], "2", 1), 1);
    int status = 0;
    EXPECT_EQ(waitpid(pid, &status, 0), pid);
    close(to_child[1]);
    close(to_parent[0]);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "child " << describe_status(status)
        << " (30: pre-fork content wrong, 31: pipe, 32: parent's write not seen, 33: child "
           "could not route)";
    EXPECT_TRUE(view().released(hg)) << "the child's free() of a shared block must free its slot";
    if (!view().released(hg))
        free(given); // it freed a copy: ours is still allocated
    vs_slot_info i = view().info(hk);
    EXPECT_EQ(i.state, (uint32_t)VS_SLOT_ALLOCATED) << "the child's exit freed a block it shared";
    EXPECT_EQ(i.generation, vs_slot_ref_unpack(hk).generation);
    EXPECT_EQ(i.owner, my_peer_) << "a shared block stays the parent's";
    EXPECT_EQ(mismatch(kept, len, 54), SIZE_MAX);
    EXPECT_EQ(view().peer_of(pid), 0) << "the exited child still has a peer entry";
    free(kept);
    EXPECT_TRUE(view().released(hk));
}

// A child forked while another thread's first routed allocation was still joining: that join
// is the parent's, and the child joins for itself at its own first routed allocation (it
// used to stay "joining" for good and never route).
TEST_F(Fork, AChildForkedDuringAFirstJoinRoutesToo)
{
    static size_t len;
    len = routed_size(view(), 1 << 20);
    fflush(nullptr);
    pid_t pid = fork(); // a process that has not joined yet: the shim re-arms a fork child
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        alarm(60);
        // Hold the JOIN byte (offset 512 of the segment file, core/src/segment.h) as a remover
        // would, so that the first join waits in it while we fork.
        std::string path = std::string("/dev/shm") + getenv("VARSLOT_SEGMENT");
        int hold = open(path.c_str(), O_RDWR | O_CLOEXEC);
        struct flock fl = {};
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = 512;
        fl.l_len = 1;
        if (hold < 0 || fcntl(hold, F_OFD_SETLK, &fl) != 0)
            _exit(2);
        pthread_t t;
        pthread_create(&t, nullptr, [](void *) -> void * { return malloc(opaque(len)); }, nullptr);
        usleep(100000); // t is in its first join
        pid_t g = fork();
        if (g == 0) {
            close(hold);
            int routed = 0;
            for (int i = 0; i < 20 && !routed; i++) {
                void *p = malloc(opaque(len));
                routed = owned(p);
                free(p);
                usleep(20000);
            }
            exit(routed ? 0 : 3); // a normal exit leaves the segment: no dead peer behind
        }
        fl.l_type = F_UNLCK;
        fcntl(hold, F_OFD_SETLK, &fl);
        void *first = nullptr;
        pthread_join(t, &first);
        free(first);
        int st = 0;
        waitpid(g, &st, 0);
        exit(WIFEXITED(st) ? WEXITSTATUS(st) : 4);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << describe_status(status) << " (2: lock, 3: the grandchild never routed, 4: it died)";
}

} // namespace
} // namespace shimtest
