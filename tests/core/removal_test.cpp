// Removing a segment's name: never half-done, never by a process that may not, never while a
// peer is joined, and never leaving a name nothing can open, create or remove. Each test is a
// proof from an attack on this code, kept so the hole stays closed.
#include "gate.h"
#include "test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

using namespace vstest;

namespace {

std::string shm_path(const std::string &name) { return "/dev/shm" + name; }

bool exists(const std::string &path) { return access(path.c_str(), F_OK) == 0; }

// Files in /dev/shm a removal would leave behind under its private name (".vsrm-...").
int private_names_left()
{
    int n = 0;
    DIR *d = opendir("/dev/shm");
    while (dirent *e = d ? readdir(d) : nullptr)
        n += strncmp(e->d_name, ".vsrm-", 6) == 0;
    if (d)
        closedir(d);
    return n;
}

vs_segment_options remove_when_unused()
{
    vs_segment_options o{};
    o.classes = kRefClasses;
    o.class_count = 3;
    o.flags = VS_SEGMENT_REMOVE_WHEN_UNUSED;
    return o;
}

} // namespace

// The private name a removal renames to was the name plus 26 bytes: for names near the
// 255-byte limit the rename failed after the segment was marked retired, and the name could
// then be neither opened, created nor removed.
TEST(Removal, ALongNameIsRemovedLikeAnyOther)
{
    std::string name = "/" + std::string(240, 'w').replace(0, 16, unique_name("long").substr(1));
    name.resize(241);
    vs_segment_options o = remove_when_unused();
    vs_segment seg;
    ASSERT_EQ(vs_segment_create(&seg, name.c_str(), &o), VS_OK) << vs_last_detail();
    uint8_t id;
    ASSERT_EQ(vs_segment_join(&seg, &id), VS_OK);
    vs_segment_close(&seg); // the last peer out
    EXPECT_FALSE(exists(shm_path(name))) << "the last peer out did not remove a long name";
    ASSERT_EQ(vs_segment_open_or_create(&seg, name.c_str(), &o), VS_OK) << vs_last_detail();
    ASSERT_EQ(vs_segment_join(&seg, &id), VS_OK);
    EXPECT_EQ(vs_segment_unlink(name.c_str()), VS_OK) << vs_last_detail();
    EXPECT_FALSE(exists(shm_path(name)));
    vs_segment_close(&seg);
}

// A user who may write the file but not remove its name (a 0666 segment in the sticky
// /dev/shm) got VS_EPERM, but only after marking the segment retired: its owner's next open
// then removed the name while a peer was still joined.
TEST(Removal, AnotherUsersUnlinkChangesNothing)
{
    if (geteuid() != 0)
        GTEST_SKIP() << "needs root to act as another user";
    vs_segment_options o{};
    o.classes = kRefClasses;
    o.class_count = 3;
    o.mode = 0666;
    std::string name = unique_name("otheruser");
    vs_segment seg;
    ASSERT_EQ(vs_segment_create(&seg, name.c_str(), &o), VS_OK);
    uint8_t id;
    ASSERT_EQ(vs_segment_join(&seg, &id), VS_OK);
    pid_t pid = spawn([&] {
        if (setgid(65534) != 0 || setuid(65534) != 0)
            return 2;
        return vs_segment_unlink(name.c_str()) == VS_EPERM ? 0 : 3;
    });
    EXPECT_EQ(wait_child(pid), 0);
    vs_segment other;
    ASSERT_EQ(vs_segment_open(&other, name.c_str()), VS_OK) << vs_last_detail();
    uint8_t id2;
    EXPECT_EQ(vs_segment_join(&other, &id2), VS_OK) << "the segment was left retired";
    vs_segment_close(&other);
    EXPECT_TRUE(exists(shm_path(name)));
    vs_segment_close(&seg);
    vs_segment_unlink(name.c_str());
}

// A remover SIGKILLed between moving the name to its private name and unlinking that left a
// segment file (with every page its peers touched) in /dev/shm for good. The next segment
// created under the name clears it.
TEST(Removal, ARemoverKilledAfterItsRenameLeavesNothingForGood)
{
    if (slow_run())
        GTEST_SKIP() << "seccomp user notification is not for Valgrind";
    vs_segment_options o = remove_when_unused();
    std::string name = unique_name("killedremover");
    int before = private_names_left();
    pid_t pid = spawn([&] {
        vs_segment seg;
        uint8_t id;
        if (vs_segment_create(&seg, name.c_str(), &o) != VS_OK || vs_segment_join(&seg, &id) != VS_OK)
            return 2;
        // The remover's one unlink is of the private name, just after the rename: die there.
        if (!install_gate([](GateCall call) {
                if (call == kUnlink)
                    kill(getpid(), SIGKILL);
            }))
            return 3;
        vs_segment_close(&seg);
        return 4;
    });
    int st = wait_child(pid);
    if (st == 3)
        GTEST_SKIP() << "seccomp user notification is not available here";
    ASSERT_EQ(st, 128 + SIGKILL) << "the remover was not killed at its unlink";
    EXPECT_FALSE(exists(shm_path(name)));
    EXPECT_EQ(private_names_left(), before + 1) << "the kill did not land between rename and unlink";
    vs_segment seg;
    ASSERT_EQ(vs_segment_open_or_create(&seg, name.c_str(), &o), VS_OK) << vs_last_detail();
    EXPECT_EQ(private_names_left(), before) << "the orphaned segment is still in /dev/shm";
    vs_segment_close(&seg);
    vs_segment_unlink(name.c_str());
}

// A creator SIGKILLed inside vs_segment_create left a half-made file under the name, and
// vs_segment_open_or_create of that name failed from then on. Killed at every point here.
TEST(Removal, ACreatorKilledMidwayNeverBlocksTheName)
{
    std::string name = unique_name("killedcreator");
    vs_segment_options o{};
    o.classes = kRefClasses;
    o.class_count = 3;
    int killed_inside = 0;
    for (int us = 0; us < (int)scaled(400); us += 5) {
        pid_t pid = spawn([&] {
            vs_segment seg;
            if (vs_segment_create(&seg, name.c_str(), &o) != VS_OK)
                return 2;
            pause(); // created: wait to be killed
            return 0;
        });
        usleep(stretched((unsigned)us));
        kill(pid, SIGKILL);
        wait_child(pid);
        vs_segment seg;
        int rc = vs_segment_open_or_create(&seg, name.c_str(), &o);
        ASSERT_EQ(rc, VS_OK) << "killed " << us << " us into create: " << vs_last_detail();
        vs_segment_close(&seg);
        killed_inside += vs_segment_unlink(name.c_str()) != VS_OK;
    }
    EXPECT_EQ(killed_inside, 0);
}
