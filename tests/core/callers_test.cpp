// Callers in awkward places: fork handlers that use the segment, threads cancelled inside a
// segment call, a creator or remover killed midway (also where there is no /proc), a create
// that fails late, another user squatting a private name, a thread with a file table of its
// own. Each test is a proof from a review of the library turned into a regression test (its
// name in the comment above it), and failed before the fix. The proofs interposed libc
// functions in their own binaries; here a seccomp filter stops (or kills) a forked child at
// the system call in question instead (gate.h), fork handlers are registered before the
// library's with a constructor, and "no /proc" is an empty tmpfs over /proc in a private
// mount namespace. Everything that could hang runs in a forked child under an alarm whose
// exit status says at which step it was stopped (100 + step).
#include "gate.h"
#include "test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <chrono>

using namespace vstest;

namespace {

std::string shm_path(const std::string &name) { return "/dev/shm" + name; }

bool exists(const std::string &path)
{
    struct stat st;
    return lstat(path.c_str(), &st) == 0;
}

// Whether path names the file fd has open.
bool path_names_fd(const std::string &path, int fd)
{
    struct stat a, b;
    return lstat(path.c_str(), &a) == 0 && fstat(fd, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

double seconds_since(std::chrono::steady_clock::time_point t)
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

template <class F> bool wait_for(F done, int ms)
{
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (!done()) {
        if (std::chrono::steady_clock::now() >= end)
            return false;
        usleep(100);
    }
    return true;
}

vs_segment_options small_options(uint32_t flags = 0)
{
    static const vs_class_config classes[1] = {{4096, 4}};
    vs_segment_options o{};
    o.classes = classes;
    o.class_count = 1;
    o.flags = flags;
    return o;
}

// The private name removals used before the fix: the same for every segment of a name, and
// computable by anyone (FNV-1a 64 of the name).
std::string predictable_private_path(const std::string &name)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (char c : name)
        h = (h ^ (uint8_t)c) * 0x100000001b3ull;
    char buf[64];
    snprintf(buf, sizeof buf, "/dev/shm/.vsrm-%016llx", (unsigned long long)h);
    return buf;
}

// A directory of this test's own under /dev/shm, so that what a killed creator or remover
// leaves under a private name there can be counted exactly. Removed with its contents.
struct TempDir {
    std::string path;
    TempDir()
    {
        char t[] = "/dev/shm/vstest-a2-XXXXXX";
        if (mkdtemp(t))
            path = t;
    }
    std::vector<std::string> entries() const
    {
        std::vector<std::string> out;
        DIR *d = opendir(path.c_str());
        while (dirent *e = d ? readdir(d) : nullptr)
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                out.push_back(e->d_name);
        if (d)
            closedir(d);
        return out;
    }
    void clear() const
    {
        for (auto &e : entries())
            unlink((path + "/" + e).c_str());
    }
    ~TempDir()
    {
        if (!path.empty()) {
            clear();
            rmdir(path.c_str());
        }
    }
};

// Sets a file's times this many seconds back: what it looks like that much later.
void backdate(const std::string &path, int seconds)
{
    struct timespec t[2];
    clock_gettime(CLOCK_REALTIME, &t[0]);
    t[0].tv_sec -= seconds;
    t[1] = t[0];
    utimensat(AT_FDCWD, path.c_str(), t, AT_SYMLINK_NOFOLLOW);
}

std::string joined(const std::vector<std::string> &v)
{
    std::string s;
    for (auto &e : v)
        s += (s.empty() ? "" : ", ") + e;
    return s.empty() ? "(none)" : s;
}

// ---- bounded steps in a forked child ----

volatile sig_atomic_t g_step;

void on_alarm(int)
{
    _exit(100 + g_step);
}

// From now on an alarm ends this process with 100 + the step it was at.
void arm_steps()
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, nullptr);
}

void step(int n, unsigned seconds = 3)
{
    g_step = n;
    alarm(slow_run() ? seconds * 20 : seconds); // Valgrind runs some 50x slower
}

// A fork whose child exits at once, and the wait for it: what hangs if a fork handler spins.
bool fork_works()
{
    pid_t c = fork();
    if (c == 0)
        _exit(0);
    return c > 0 && wait_child(c) == 0;
}

void sigkill_self(int)
{
    syscall(SYS_kill, syscall(SYS_getpid), SIGKILL);
}

// The process dies of SIGKILL at the first of these calls the calling thread makes, before
// the call does anything (as the proofs' interposed functions killed it). Call it in a
// forked child; false where seccomp filters are not available.
bool die_at(const std::vector<Rule> &rules)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = sigkill_self;
    sigaction(SIGSYS, &sa, nullptr);
    return install_filter(rules, SECCOMP_RET_TRAP, 0) == 0;
}

// ---- fork handlers that use the segment ----
// A program's pthread_atfork handlers. Child handlers run in registration order, prepare
// handlers in reverse: those registered by the constructor below, before any of the
// library's (constructors with a priority run before those without), run before varslot's
// in the child and in the parent, and after varslot's before fork; those registered later
// (register_late_hooks) the other way round. Both sets do nothing unless a test turns them on,
// and tests do that only in forked children.

enum HookMode { kHookOff, kHookChildJoins, kHookPrepareLeavesAndOpens, kHookParentJoinsAndOpens };

struct Hook {
    std::atomic<int> mode{kHookOff};
    vs_segment *seg = nullptr;
    const char *name = nullptr;
    bool parent_fds_open = false; // in the child: varslot's own child handler had not run yet
    int child_rc = 99;
    uint8_t child_id = 0;
    bool done = false;
};

Hook g_early, g_late;

// Another vs_segment of the name, opened and closed: opening takes a lock description.
void open_and_close(const char *name)
{
    vs_segment s;
    if (vs_segment_open(&s, name) == VS_OK)
        vs_segment_close(&s);
}

void hook_prepare(Hook &h)
{
    if (h.mode.load() != kHookPrepareLeavesAndOpens)
        return;
    vs_segment_leave(h.seg); // "children must not inherit our membership"
    open_and_close(h.name);
    h.done = true;
}

void hook_parent(Hook &h)
{
    if (h.mode.load() != kHookParentJoinsAndOpens)
        return;
    uint8_t id;
    vs_segment_join(h.seg, &id); // "and join again after the fork"; an error is fine
    open_and_close(h.name);
    h.done = true;
}

void hook_child(Hook &h)
{
    if (h.mode.load() != kHookChildJoins)
        return;
    h.parent_fds_open = fcntl(h.seg->lock_fd, F_GETFD) != -1;
    h.child_rc = vs_segment_join(h.seg, &h.child_id); // "re-arm after fork": a peer of its own
    h.done = true;
}

void early_prepare() { hook_prepare(g_early); }
void early_parent() { hook_parent(g_early); }
void early_child() { hook_child(g_early); }
void late_prepare() { hook_prepare(g_late); }
void late_parent() { hook_parent(g_late); }
void late_child() { hook_child(g_late); }

__attribute__((constructor(101))) void register_early_hooks()
{
    pthread_atfork(early_prepare, early_parent, early_child);
}

void register_late_hooks()
{
    pthread_atfork(late_prepare, late_parent, late_child);
}

} // namespace

// atfork_child_join: a program's child handler that joins the inherited segment (a peer of
// the child's own). Registered before varslot's handlers it ran before the library's child
// handler, which then took the descriptions it had just opened for an ancestor's and closed
// them: the child believed itself joined with no liveness lock, and the parent's reap freed
// its slot and handed it out again (two owners). Either order must keep the child live.
TEST(Callers, AtforkChildHandlerThatJoinsKeepsItsLiveness)
{
    for (bool early : {true, false}) {
        SCOPED_TRACE(early ? "handler registered before varslot's" : "handler registered after varslot's");
        std::string name = unique_name("a2atfork");
        pid_t p = spawn([&] {
            arm_steps();
            step(1, 10);
            static const vs_class_config one[1] = {{4096, 1}}; // one slot: a thief gets it
            vs_segment_options o{};
            o.classes = one;
            o.class_count = 1;
            o.max_peers = 8;
            vs_segment seg;
            uint8_t mine;
            if (vs_segment_create(&seg, name.c_str(), &o) != VS_OK || vs_segment_join(&seg, &mine) != VS_OK)
                return 2;
            Hook &h = early ? g_early : g_late;
            if (!early)
                register_late_hooks();
            int up[2], down[2];
            if (pipe(up) || pipe(down))
                return 2;
            h.seg = &seg;
            h.mode = kHookChildJoins;
            pid_t c = fork();
            if (c == 0) {
                alarm(slow_run() ? 200 : 10);
                if (!h.done)
                    _exit(19);
                if (h.parent_fds_open != early)
                    _exit(20); // the handlers did not run in the order this case is about
                if (h.child_rc != VS_OK)
                    _exit(21);
                vs_pool *pool = vs_segment_pool(&seg);
                vs_slot_ref ref;
                if (!vs_pool_allocate(pool, 100, h.child_id, &ref))
                    _exit(22);
                char *data = static_cast<char *>(vs_pool_slot_data(pool, &ref));
                strcpy(data, "the child's");
                char go;
                if (write(up[1], &h.child_id, 1) != 1 || read(down[0], &go, 1) != 1)
                    _exit(23);
                vs_slot_info info;
                if (vs_pool_slot_info(pool, ref.class_idx, ref.slot_idx, &info) != VS_OK ||
                    info.owner != h.child_id || strcmp(data, "the child's") != 0)
                    _exit(24);
                _exit(0);
            }
            h.mode = kHookOff;
            uint8_t child_id = 0;
            if (read(up[0], &child_id, 1) != 1) {
                int st = wait_child(c);
                return st ? st : 3;
            }
            // What any peer's reap or allocation sees while the child is alive and joined.
            vs_peer_info pi;
            bool live = vs_segment_peer_info(&seg, child_id, &pi) == VS_OK && pi.live &&
                        pi.state == VS_PEER_ALIVE && pi.pid == c;
            unsigned reaped = 0;
            vs_segment_reap(&seg, &reaped);
            vs_slot_ref ref;
            bool stolen = vs_pool_allocate(vs_segment_pool(&seg), 100, mine, &ref);
            if (stolen)
                strcpy(static_cast<char *>(vs_pool_slot_data(vs_segment_pool(&seg), &ref)), "the parent's");
            if (write(down[1], "g", 1) != 1)
                return 2;
            int st = wait_child(c);
            vs_segment_close(&seg);
            return !live ? 4 : reaped ? 5 : stolen ? 6 : st;
        });
        int rc = wait_child(p);
        unlink(shm_path(name).c_str());
        EXPECT_NE(rc, 20) << "the program's child handler did not run "
                          << (early ? "before" : "after") << " varslot's (constructor order?)";
        EXPECT_NE(rc, 21) << "the join in the child handler failed";
        EXPECT_NE(rc, 4) << "the child that joined in its fork handler is not live (no liveness lock)";
        EXPECT_NE(rc, 5) << "the live child was reaped";
        EXPECT_NE(rc, 6) << "the live child's slot was handed to another peer (two owners)";
        EXPECT_NE(rc, 24) << "the child's slot changed owner or contents under it";
        EXPECT_EQ(rc, 0) << "(100 + n: stuck at step n; 128 + n: killed by signal n)";
    }
}

// atfork_prepare_hang: a program's prepare or parent handler that calls the segment (leave,
// open, join) spun forever in the library's registry flag, which the forking thread held:
// fork() never returned. It must return, whatever the calls answer, in either order.
TEST(Callers, AForkHandlerCallingTheSegmentNeverHangs)
{
    for (bool early : {true, false}) {
        for (HookMode mode : {kHookPrepareLeavesAndOpens, kHookParentJoinsAndOpens}) {
            std::string what = std::string(mode == kHookPrepareLeavesAndOpens ? "prepare handler (leave, open)"
                                                                              : "parent handler (join, open)") +
                               (early ? ", registered before varslot's" : ", registered after varslot's");
            SCOPED_TRACE(what);
            std::string name = unique_name("a2prep");
            pid_t p = spawn([&] {
                arm_steps();
                step(1);
                vs_segment_options o = small_options();
                vs_segment seg;
                uint8_t id;
                if (vs_segment_create(&seg, name.c_str(), &o) != VS_OK || vs_segment_join(&seg, &id) != VS_OK)
                    return 2;
                if (mode == kHookParentJoinsAndOpens)
                    vs_segment_leave(&seg);
                Hook &h = early ? g_early : g_late;
                if (!early)
                    register_late_hooks();
                h.seg = &seg;
                h.name = name.c_str();
                h.mode = mode;
                step(2); // the fork with the handler
                pid_t c = fork();
                if (c == 0)
                    _exit(0);
                h.mode = kHookOff;
                if (c < 0 || wait_child(c) != 0)
                    return 3;
                if (!h.done)
                    return 4;
                step(3); // the process still works: join, fork, close
                if (vs_segment_join(&seg, &id) != VS_OK)
                    return 5;
                step(4);
                if (!fork_works())
                    return 6;
                step(5);
                vs_segment_close(&seg);
                return 0;
            });
            int rc = wait_child(p);
            unlink(shm_path(name).c_str());
            EXPECT_NE(rc, 102) << "fork() never returned: the handler spun in a segment call";
            EXPECT_NE(rc, 103) << "stuck at step 3: the join after the fork";
            EXPECT_NE(rc, 104) << "stuck at step 4: a later fork";
            EXPECT_EQ(rc, 0) << "(100 + n: stuck at step n; 128 + n: killed by signal n)";
        }
    }
}

// cancel_hang, cancel_unlink_join_lock: open(), close() and nanosleep() are cancellation
// points, and a thread cancelled there while the library held one of its flags or locks left
// it held for good: the vs_segment's join flag (every later join spun), the registry flag
// (every later fork and segment call spun), or the JOIN lock on a leaked description (every
// join of the name by any process failed). After a thread is cancelled inside join, open,
// close or unlink (at the calls named below, held there by a seccomp gate or a lock), joins,
// forks, opens and the removal of the name must all still work.
namespace {

struct CancelArg {
    vs_segment *seg;
    const char *name;
    std::atomic<int> paused{0}, cancelled{0}, no_gate{0};
};

void *cancel_joiner(void *a)
{
    auto *arg = static_cast<CancelArg *>(a);
    uint8_t id;
    vs_segment_join(arg->seg, &id);
    return nullptr;
}

void *cancel_unlinker(void *a)
{
    auto *arg = static_cast<CancelArg *>(a);
    vs_segment_unlink(arg->name);
    return nullptr;
}

// Held where the caller's rules say; the main thread cancels it there.
void hold_until_cancelled(CancelArg *arg)
{
    if (arg->paused.exchange(1))
        return; // a call restarted after the cancel: let it go
    wait_for([&] { return arg->cancelled.load() != 0; }, 3000);
}

void *cancel_closer(void *a)
{
    auto *arg = static_cast<CancelArg *>(a);
    vs_segment s;
    if (vs_segment_open(&s, arg->name) != VS_OK)
        return nullptr;
    // The close of the lock description (in vs__lock_fd_close): nothing else closes that number.
    if (!hold_at({{__NR_close, 0, (uint32_t)s.lock_fd}}, [arg](const seccomp_notif &) { hold_until_cancelled(arg); })) {
        arg->no_gate = 1;
        vs_segment_close(&s);
        return nullptr;
    }
    vs_segment_close(&s);
    return nullptr;
}

void *cancel_opener(void *a)
{
    auto *arg = static_cast<CancelArg *>(a);
    // The open of its lock description: a descriptor reopened through /proc (this thread's
    // memory is the supervisor's too, so the path can be read there).
    if (!hold_at({{__NR_openat}}, [arg](const seccomp_notif &req) {
            // Read as the kernel would (a plain read is a data race to ThreadSanitizer, which
            // does not see the hand-over through the notification).
            char path[8] = {0};
            iovec local{path, sizeof path - 1}, remote{reinterpret_cast<void *>(req.data.args[1]), sizeof path - 1};
            if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) > 0 && strncmp(path, "/proc/", 6) == 0)
                hold_until_cancelled(arg);
        })) {
        arg->no_gate = 1;
        return nullptr;
    }
    vs_segment s;
    if (vs_segment_open(&s, arg->name) == VS_OK)
        vs_segment_close(&s);
    return nullptr;
}

void *cancel_gated_unlinker(void *a)
{
    auto *arg = static_cast<CancelArg *>(a);
    if (!hold_at({{__NR_renameat2}}, [arg](const seccomp_notif &) { hold_until_cancelled(arg); })) {
        arg->no_gate = 1;
        return nullptr;
    }
    vs_segment_unlink(arg->name);
    return nullptr;
}

// A process that is not this one opens (or creates) the name and joins it.
bool newcomer_joins(const std::string &name)
{
    pid_t c = fork();
    if (c == 0) {
        alarm(5);
        vs_segment_options o = small_options();
        vs_segment s;
        uint8_t id;
        if (vs_segment_open_or_create(&s, name.c_str(), &o) != VS_OK)
            _exit(1);
        int rc = vs_segment_join(&s, &id);
        vs_segment_close(&s);
        _exit(rc == VS_OK ? 0 : 2);
    }
    return c > 0 && wait_child(c) == 0;
}

// After the cancel: this process and others still get along with the name (steps 10..14).
int everything_still_works(vs_segment *seg, const std::string &name, bool join_seg)
{
    uint8_t id;
    step(10);
    if (join_seg && vs_segment_join(seg, &id) != VS_OK)
        return 10;
    step(11);
    if (!fork_works())
        return 11;
    step(12);
    open_and_close(name.c_str());
    step(13);
    if (!newcomer_joins(name))
        return 13;
    step(14);
    vs_segment_close(seg);
    int rc = vs_segment_unlink(name.c_str());
    if ((rc != VS_OK && rc != VS_ENOENT) || exists(shm_path(name)))
        return 14;
    return 0;
}

const char *cancel_failure(int rc)
{
    switch (rc) {
    case 110: return "a join on the vs_segment spun forever";
    case 10: return "a join on the vs_segment failed";
    case 111: return "fork() spun forever (the registry flag was left held)";
    case 11: return "fork() failed";
    case 112: return "opening the name spun forever";
    case 113: return "another process's open_or_create + join of the name hung";
    case 13: return "another process could not open_or_create and join the name (JOIN lock left held?)";
    case 114: return "removing the name hung";
    case 14: return "the name could not be removed";
    case 15: return "the thread never reached the call it is cancelled at";
    default: return "(100 + n: stuck at step n; 128 + n: killed by signal n)";
    }
}

} // namespace

TEST(Callers, ThreadCancellationNeverLeavesAFlagOrLockHeld)
{
    if (slow_run())
        GTEST_SKIP() << "seccomp user notification and pthread_cancel timing are not for Valgrind";
    enum Case { kInJoin, kInOpen, kInClose, kInUnlinkWaiting, kInUnlinkGated };
    const char *names[] = {"cancelled in vs_segment_join (waiting for the JOIN lock)",
                           "cancelled in vs_segment_open (at the open of its lock description)",
                           "cancelled in vs_segment_close (at the close of its lock description)",
                           "cancelled in vs_segment_unlink (its private name occupied, as before the fix)",
                           "cancelled in vs_segment_unlink (at its rename)"};
    bool no_gate = false;
    for (Case k : {kInJoin, kInOpen, kInClose, kInUnlinkWaiting, kInUnlinkGated}) {
        SCOPED_TRACE(names[k]);
        std::string name = unique_name("a2cancel");
        std::string obstacle = predictable_private_path(name);
        auto start = std::chrono::steady_clock::now();
        pid_t p = spawn([&] {
            arm_steps();
            step(1, 5);
            vs_segment_options o = small_options();
            vs_segment seg;
            if (vs_segment_create(&seg, name.c_str(), &o) != VS_OK)
                return 2;
            CancelArg arg;
            arg.seg = &seg;
            arg.name = name.c_str();
            pthread_t t;
            int hold = -1;
            struct flock fl;
            memset(&fl, 0, sizeof fl);
            fl.l_whence = SEEK_SET;
            fl.l_start = 512; // VS__LOCK_JOIN, held as a remover holds it
            fl.l_len = 1;
            if (k == kInJoin) {
                hold = open(shm_path(name).c_str(), O_RDWR | O_CLOEXEC);
                fl.l_type = F_WRLCK;
                if (hold < 0 || fcntl(hold, F_OFD_SETLK, &fl) != 0)
                    return 2;
                pthread_create(&t, nullptr, cancel_joiner, &arg);
                usleep(50000); // waiting for the JOIN lock by now (it waits up to 1 s)
            } else if (k == kInOpen || k == kInClose || k == kInUnlinkGated) {
                pthread_create(&t, nullptr,
                               k == kInOpen ? cancel_opener : k == kInClose ? cancel_closer : cancel_gated_unlinker,
                               &arg);
                bool held = wait_for([&] { return arg.paused.load() || arg.no_gate.load(); }, 3000);
                if (arg.no_gate.load()) {
                    pthread_join(t, nullptr);
                    return 9;
                }
                if (!held)
                    return 15;
            } else {
                int fd = open(obstacle.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
                if (fd < 0)
                    return 2;
                close(fd);
                pthread_create(&t, nullptr, cancel_unlinker, &arg);
                usleep(200000); // before the fix: holding the JOIN lock, waiting for that name
            }
            step(2);
            pthread_cancel(t);
            arg.cancelled = 1;
            if (hold >= 0) {
                fl.l_type = F_UNLCK;
                fcntl(hold, F_OFD_SETLK, &fl);
                close(hold);
            }
            pthread_join(t, nullptr);
            unlink(obstacle.c_str());
            return everything_still_works(&seg, name, k != kInUnlinkWaiting && k != kInUnlinkGated);
        });
        int rc = wait_child(p);
        unlink(obstacle.c_str());
        unlink(shm_path(name).c_str());
        if (rc == 9) {
            no_gate = true;
            continue;
        }
        EXPECT_EQ(rc, 0) << cancel_failure(rc);
        if (rc == 0) {
            EXPECT_LT(seconds_since(start), 2.0);
        }
    }
    if (no_gate)
        GTEST_SKIP() << "seccomp user notification is not available here (the gated cases did not run)";
}

// foreign_private_name: the private name a removal renamed the name to was computable from
// the name, and /dev/shm is world-writable: another user who created that file first made
// every removal of the name fail (vs_segment_unlink: VS_EEXIST after a second; the last peer
// out of a remove-when-unused segment left the name). Removal must not care.
TEST(Callers, AnotherUserCannotBlockRemoval)
{
    if (geteuid() != 0)
        GTEST_SKIP() << "needs root to act as another user";
    std::string name = unique_name("a2squat");
    std::string path = shm_path(name), squatted = predictable_private_path(name);
    auto squat = [&] {
        pid_t c = spawn([&] {
            if (setgid(65534) != 0 || setuid(65534) != 0)
                return 2;
            int fd = open(squatted.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
            return fd < 0 ? 3 : 0;
        });
        return wait_child(c);
    };

    vs_segment_options o = small_options();
    vs_segment s;
    ASSERT_EQ(vs_segment_create(&s, name.c_str(), &o), VS_OK) << vs_last_detail();
    vs_segment_close(&s);
    int sq = squat();
    if (sq != 0) {
        unlink(path.c_str());
        GTEST_SKIP() << "user 65534 cannot create a file in /dev/shm here (" << sq << ")";
    }
    auto t = std::chrono::steady_clock::now();
    int rc = vs_segment_unlink(name.c_str());
    double took = seconds_since(t);
    EXPECT_EQ(rc, VS_OK) << vs_strerror(rc) << ": " << vs_last_detail();
    EXPECT_FALSE(exists(path)) << "vs_segment_unlink left the name";
    if (!slow_run()) {
        EXPECT_LT(took, 0.5) << "vs_segment_unlink waited for another user's file";
    }
    unlink(path.c_str());

    // The last peer out of a remove-when-unused segment.
    o = small_options(VS_SEGMENT_REMOVE_WHEN_UNUSED);
    uint8_t id;
    ASSERT_EQ(vs_segment_create(&s, name.c_str(), &o), VS_OK) << vs_last_detail();
    ASSERT_EQ(vs_segment_join(&s, &id), VS_OK);
    t = std::chrono::steady_clock::now();
    vs_segment_close(&s);
    took = seconds_since(t);
    EXPECT_FALSE(exists(path)) << "the last peer out left the name";
    if (!slow_run()) {
        EXPECT_LT(took, 0.5) << "the last peer out waited for another user's file";
    }
    unlink(path.c_str());
    unlink(squatted.c_str());
}

// fallback_creator_killed: where a segment cannot be built unnamed (no /proc, here an empty
// tmpfs over /proc in a private mount namespace), a creator killed midway left a file under
// the name that nothing in the API cleared (killed before the creating magic: an empty file,
// open_or_create VS_ECORRUPT and unlink VS_EPERM for good; after it: VS_ECORRUPT until an
// explicit unlink). Killed at each step, it must leave the name to the next open_or_create.
namespace {

struct FallbackPoint {
    const char *what;
    Rule rule;
};

struct FallbackResult {
    int creator, open_rc, join_rc, unlink_rc;
    bool name_left;
    char left_after_create[256]; // besides the name, after the next creator (and its sweep)
    char left_at_end[256];       // anything, after that and the unlink of the name
};

// Runs each point in a child with a private mount namespace and no /proc: a creator killed
// there, then the next comer's open_or_create + join, then the unlink. The status of that
// child: 0, 10 (no namespace or tmpfs over /proc), 12 (no seccomp), or 100 + step.
int run_fallback_kills(const std::vector<FallbackPoint> &points, std::vector<FallbackResult> &out,
                       bool a_while_later = false)
{
    size_t len = sizeof(FallbackResult) * points.size();
    auto *res = static_cast<FallbackResult *>(
        mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    if (res == MAP_FAILED)
        return 2;
    memset(res, 0, len);
    TempDir dir;
    if (dir.path.empty())
        return 2;
    std::string name = dir.path + "/seg";
    pid_t p = spawn([&] {
        arm_steps();
        step(1);
        if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
            mount("none", "/proc", "tmpfs", 0, nullptr) != 0)
            return 10;
        if (access("/proc/self/fd", F_OK) == 0 || access("/proc/thread-self/fd", F_OK) == 0)
            return 10;
        vs_segment_options o = small_options();
        auto list = [&](bool all) {
            std::string left;
            for (auto &e : dir.entries())
                if (all || e != "seg")
                    left += e + " ";
            return left;
        };
        for (size_t i = 0; i < points.size(); i++) {
            FallbackResult &r = res[i];
            step(10 * (int)(i + 1));
            pid_t c = fork();
            if (c == 0) {
                alarm(5);
                if (!die_at({points[i].rule}))
                    _exit(12);
                vs_segment s;
                _exit(vs_segment_create(&s, name.c_str(), &o) == VS_OK ? 13 : 14);
            }
            r.creator = wait_child(c);
            if (r.creator == 12)
                return 12;
            if (a_while_later)
                for (auto &e : dir.entries())
                    backdate(dir.path + "/" + e, 3600);
            step(10 * (int)(i + 1) + 1); // the next comer
            vs_segment s;
            uint8_t id;
            r.open_rc = vs_segment_open_or_create(&s, name.c_str(), &o);
            r.join_rc = r.open_rc == VS_OK ? vs_segment_join(&s, &id) : r.open_rc;
            if (r.open_rc == VS_OK)
                vs_segment_close(&s);
            snprintf(r.left_after_create, sizeof r.left_after_create, "%s", list(false).c_str());
            step(10 * (int)(i + 1) + 2);
            r.unlink_rc = vs_segment_unlink(name.c_str());
            r.name_left = exists(name);
            snprintf(r.left_at_end, sizeof r.left_at_end, "%s", list(true).c_str());
            dir.clear(); // the next point starts from an empty directory
        }
        return 0;
    });
    int rc = wait_child(p);
    out.assign(res, res + points.size());
    munmap(res, len);
    return rc;
}

// Why run_fallback_kills cannot run here (before it: rc 0), or nullptr.
const char *fallback_unavailable(int rc)
{
    if (slow_run())
        return "seccomp filters are not for Valgrind";
    if (geteuid() != 0 || rc == 10)
        return "cannot put an empty tmpfs over /proc in a private mount namespace (needs root)";
    if (rc == 12)
        return "seccomp filters are not available here";
    return nullptr;
}

void expect_killed_then_name_usable(const FallbackResult &r)
{
    EXPECT_EQ(r.creator, 128 + SIGKILL) << "the creator was not killed there (13: it succeeded)";
    EXPECT_EQ(r.open_rc, VS_OK) << "open_or_create of the name: " << vs_strerror(r.open_rc);
}

} // namespace

TEST(Callers, AFallbackCreatorKilledNeverBlocksTheName)
{
    if (const char *why = fallback_unavailable(0))
        GTEST_SKIP() << why;
    std::vector<FallbackPoint> points = {
        {"before the creating magic (its pwrite)", {__NR_pwrite64}},
        {"after the creating magic (its ftruncate)", {__NR_ftruncate}},
        {"at its publish (renameat2)", {__NR_renameat2}},
    };
    auto start = std::chrono::steady_clock::now();
    std::vector<FallbackResult> res;
    int rc = run_fallback_kills(points, res);
    if (const char *why = fallback_unavailable(rc))
        GTEST_SKIP() << why;
    ASSERT_EQ(rc, 0) << "(100 + n: stuck at step n; 128 + n: killed by signal n)";
    for (size_t i = 0; i < points.size(); i++) {
        const FallbackResult &r = res[i];
        SCOPED_TRACE(std::string("creator killed ") + points[i].what);
        expect_killed_then_name_usable(r);
        EXPECT_EQ(r.join_rc, VS_OK) << "join: " << vs_strerror(r.join_rc);
        if (i > 0) { // a file with the creating magic and no creator is swept (see the next test)
            EXPECT_STREQ(r.left_after_create, "") << "left under a private name after the next create";
        }
        EXPECT_EQ(r.unlink_rc, VS_OK) << vs_strerror(r.unlink_rc);
        EXPECT_FALSE(r.name_left);
    }
    EXPECT_LT(seconds_since(start), 3.0);
}

// The same, killed before the creating magic is written (at its CREATING lock, at the write
// of the magic): an empty file under a private name that nobody holds a lock on. Before the
// fix the name itself was left, as an empty file nothing removed; then such a private file
// was never swept. The next creator in the directory sweeps it once it is old enough (an hour
// later here), and never a young one: that may be a creator between its open and its lock.
TEST(Callers, AFallbackCreatorKilledBeforeItsMagicLeavesNoFileForGood)
{
    if (const char *why = fallback_unavailable(0))
        GTEST_SKIP() << why;
    std::vector<FallbackPoint> points = {
        {"at its CREATING lock (fcntl F_OFD_SETLK)", {__NR_fcntl, 1, F_OFD_SETLK}},
        {"before the creating magic (its pwrite)", {__NR_pwrite64}},
    };
    std::vector<FallbackResult> res;
    int rc = run_fallback_kills(points, res, true);
    if (const char *why = fallback_unavailable(rc))
        GTEST_SKIP() << why;
    ASSERT_EQ(rc, 0) << "(100 + n: stuck at step n; 128 + n: killed by signal n)";
    for (size_t i = 0; i < points.size(); i++) {
        const FallbackResult &r = res[i];
        SCOPED_TRACE(std::string("creator killed ") + points[i].what);
        expect_killed_then_name_usable(r);
        EXPECT_STREQ(r.left_at_end, "")
            << "left in the directory after the next creator (and its sweep) and the unlink of the name";
    }
}

TEST(Callers, TheSweepSparesAYoungEmptyFileAndOneOfAnotherKind)
{
    TempDir dir;
    ASSERT_FALSE(dir.path.empty());
    std::string young = dir.path + "/.vsmk-0123456789abcdef";
    std::string foreign = dir.path + "/.vsmk-not-ours";
    for (auto &p : {young, foreign}) {
        int fd = open(p.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
        ASSERT_GE(fd, 0);
        if (p == foreign) {
            ASSERT_EQ(write(fd, "a file of someone else's", 24), 24);
        }
        close(fd);
    }
    backdate(foreign, 3600);
    vs_segment_options o = small_options();
    auto create_one = [&](const char *leaf) {
        vs_segment s;
        ASSERT_EQ(vs_segment_create(&s, (dir.path + leaf).c_str(), &o), VS_OK) << vs_last_detail();
        vs_segment_close(&s);
    };
    create_one("/seg1");
    EXPECT_TRUE(exists(young)) << "an empty file just made (a creator before its lock) was swept";
    EXPECT_TRUE(exists(foreign)) << "a file that is not a segment was swept";
    backdate(young, 3600);
    create_one("/seg2");
    EXPECT_FALSE(exists(young)) << "an empty private file an hour old and unlocked was not swept";
    EXPECT_TRUE(exists(foreign)) << "a file that is not a segment was swept";
}

// unlinker_killed_joined: vs_segment_unlink marked the segment retired, then renamed the
// name away; SIGKILLed in between while a peer was joined, it left a name that could be
// neither opened, created nor joined while that peer lived. Killed at each step here, the
// name must stay usable (a newcomer opens or creates it and joins), and the newcomer gets the
// joined peer's segment unless the name was really removed (killed after its rename).
TEST(Callers, AnUnlinkerKilledMidwayNeverWedgesTheName)
{
    if (slow_run())
        GTEST_SKIP() << "seccomp filters are not for Valgrind";
    struct Point {
        const char *what;
        std::vector<Rule> rules;
        bool renamed; // the name was moved away before the kill
    } points[] = {
        {"before it takes the JOIN lock", {{__NR_fcntl, 1, F_OFD_SETLK}}, false},
        {"at its rename", {{__NR_renameat2}}, false},
        {"after its rename (at the unlink of the private name)", unlink_rules(), true},
    };
    TempDir dir;
    ASSERT_FALSE(dir.path.empty());
    std::string name = dir.path + "/seg";
    vs_segment_options o = small_options();
    auto start = std::chrono::steady_clock::now();
    for (const Point &pt : points) {
        SCOPED_TRACE(std::string("unlinker killed ") + pt.what);
        vs_segment peer;
        uint8_t id;
        ASSERT_EQ(vs_segment_create(&peer, name.c_str(), &o), VS_OK) << vs_last_detail();
        ASSERT_EQ(vs_segment_join(&peer, &id), VS_OK);
        pid_t u = spawn([&] {
            if (!die_at(pt.rules))
                return 12;
            vs_segment_unlink(name.c_str());
            return 13;
        });
        int ust = wait_child(u);
        if (ust == 12) {
            vs_segment_close(&peer);
            GTEST_SKIP() << "seccomp filters are not available here";
        }
        EXPECT_EQ(ust, 128 + SIGKILL) << "the unlinker was not killed there (13: it finished)";
        struct stat peer_st;
        ASSERT_EQ(fstat(peer.fd, &peer_st), 0);
        pid_t n = spawn([&] { // a newcomer that wants the segment of that name
            alarm(5);
            vs_segment s;
            uint8_t nid;
            if (vs_segment_open_or_create(&s, name.c_str(), &o) != VS_OK)
                return 2;
            if (vs_segment_join(&s, &nid) != VS_OK)
                return 3;
            struct stat st;
            bool same = fstat(s.fd, &st) == 0 && st.st_dev == peer_st.st_dev && st.st_ino == peer_st.st_ino;
            vs_segment_close(&s);
            return same ? 0 : 4;
        });
        int nst = wait_child(n);
        EXPECT_NE(nst, 2) << "the newcomer could not open or create the name";
        EXPECT_NE(nst, 3) << "the newcomer could not join";
        if (pt.renamed) {
            EXPECT_EQ(nst, 4) << "the name was removed, yet the newcomer got the old segment";
        } else {
            EXPECT_EQ(nst, 0) << "the name was never removed, but the newcomer did not get the joined peer's "
                                 "segment (split brain)";
            EXPECT_TRUE(path_names_fd(name, peer.fd)) << "the joined peer's name was lost";
        }
        std::vector<std::string> left;
        for (auto &e : dir.entries())
            if (e != "seg")
                left.push_back(e);
        EXPECT_TRUE(left.empty()) << "left under a private name: " << joined(left);
        vs_segment_close(&peer);
        vs_segment_unlink(name.c_str());
        dir.clear();
    }
    EXPECT_LT(seconds_since(start), 3.0);
}

// create_fail_after_link: vs_segment_create published the segment (linkat), then opened its
// lock description; when that failed (EMFILE) it unlinked the name, though a peer could have
// opened and joined the segment in between: the peer was left in a nameless segment and the
// next newcomer created a second one (split brain). Here the creator has one descriptor to
// spare, and a gate lets a peer in at any unlink the creator makes.
TEST(Callers, ACreateThatFailsLateNeverRemovesAnotherSegmentsName)
{
    if (slow_run())
        GTEST_SKIP() << "seccomp user notification is not for Valgrind";
    std::string name = unique_name("a2latefail");
    int go[2], ack[2];
    ASSERT_EQ(pipe(go), 0);
    ASSERT_EQ(pipe(ack), 0);
    pid_t c = spawn([&] {
        close(go[0]);
        close(ack[1]);
        alarm(10);
        if (!install_gate([&](GateCall call) {
                char x = 0;
                if (call == kUnlink && write(go[1], &x, 1) == 1) // the name is public: a peer gets in
                    (void)!read(ack[0], &x, 1);
            }))
            return 12;
        int probe = open("/dev/null", O_RDONLY | O_CLOEXEC); // the lowest free descriptor
        close(probe);
        struct rlimit rl = {(rlim_t)probe + 1, (rlim_t)probe + 1}; // only that one
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            return 2;
        vs_segment_options o = small_options();
        vs_segment s;
        return vs_segment_create(&s, name.c_str(), &o) == VS_OK ? 3 : 0;
    });
    close(go[1]);
    close(ack[0]);
    char x;
    vs_segment peer{};
    peer.fd = -1;
    bool joined = false;
    if (read(go[0], &x, 1) == 1) { // the creator is at an unlink (else it is gone)
        uint8_t id;
        joined = vs_segment_open(&peer, name.c_str()) == VS_OK && vs_segment_join(&peer, &id) == VS_OK;
        EXPECT_EQ(write(ack[1], &x, 1), 1);
    }
    int st = wait_child(c);
    close(go[0]);
    close(ack[1]);
    if (st == 12) {
        unlink(shm_path(name).c_str());
        GTEST_SKIP() << "seccomp user notification is not available here";
    }
    EXPECT_EQ(st, 0) << "(3: the create succeeded with a single descriptor to spare)";
    if (joined) {
        EXPECT_TRUE(path_names_fd(shm_path(name), peer.fd))
            << "the creator's failure removed the name of a joined peer's segment";
        vs_segment_options o = small_options();
        vs_segment q;
        ASSERT_EQ(vs_segment_open_or_create(&q, name.c_str(), &o), VS_OK) << vs_last_detail();
        struct stat a, b;
        EXPECT_TRUE(fstat(q.fd, &a) == 0 && fstat(peer.fd, &b) == 0 && a.st_ino == b.st_ino)
            << "a newcomer got a different segment than the joined peer (split brain)";
        vs_segment_close(&q);
    } else {
        EXPECT_FALSE(exists(shm_path(name))) << "a create that failed left its name";
    }
    vs_segment_close(&peer);
    vs_segment_unlink(name.c_str());
    unlink(shm_path(name).c_str());
}

// unshared_fdtable_link: /proc/self/fd/N is descriptor N of the thread-group leader's table;
// a thread with a table of its own (unshare(CLONE_FILES)) that created a segment linked the
// leader's file N under the name. The name must name the new segment.
namespace {

struct FdTableArg {
    const char *name;
    int unshared[2], opened[2];
    int unshare_rc = -1, create_rc = VS_EINVAL;
};

void *own_table_creator(void *a)
{
    auto *arg = static_cast<FdTableArg *>(a);
    arg->unshare_rc = unshare(CLONE_FILES);
    char c = 0;
    if (write(arg->unshared[1], &c, 1) != 1 || arg->unshare_rc != 0)
        return nullptr;
    if (read(arg->opened[0], &c, 1) != 1) // the leader has its own file at our next number
        return nullptr;
    vs_segment_options o = small_options();
    vs_segment s;
    arg->create_rc = vs_segment_create(&s, arg->name, &o);
    if (arg->create_rc == VS_OK)
        vs_segment_close(&s);
    return nullptr;
}

} // namespace

TEST(Callers, AThreadWithItsOwnFdTableLinksTheRightFile)
{
    std::string name = unique_name("a2fdtable");
    std::string other = shm_path(unique_name("a2unrelated"));
    pid_t c = spawn([&] {
        alarm(10);
        FdTableArg arg;
        arg.name = name.c_str();
        if (pipe(arg.unshared) || pipe(arg.opened))
            return 2;
        pthread_t t;
        pthread_create(&t, nullptr, own_table_creator, &arg);
        char x;
        if (read(arg.unshared[0], &x, 1) != 1)
            return 2;
        if (arg.unshare_rc != 0) {
            pthread_join(t, nullptr);
            return 10;
        }
        int fd = open(other.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600); // the leader's own file
        if (fd < 0 || write(fd, "unrelated\n", 10) != 10 || write(arg.opened[1], &x, 1) != 1)
            return 2;
        pthread_join(t, nullptr);
        struct stat a, b;
        if (lstat(shm_path(name).c_str(), &b) == 0 && fstat(fd, &a) == 0 && a.st_ino == b.st_ino)
            return 5;
        if (arg.create_rc != VS_OK)
            return 3;
        if (!exists(shm_path(name)))
            return 4;
        vs_segment s;
        if (vs_segment_open(&s, name.c_str()) != VS_OK)
            return 6;
        vs_segment_close(&s);
        return 0;
    });
    int rc = wait_child(c);
    unlink(shm_path(name).c_str());
    unlink(other.c_str());
    if (rc == 10)
        GTEST_SKIP() << "unshare(CLONE_FILES) is not allowed here";
    EXPECT_NE(rc, 5) << "another file (the leader's descriptor of the same number) was linked under the name";
    EXPECT_NE(rc, 3) << "the create failed";
    EXPECT_NE(rc, 4) << "the create left no name";
    EXPECT_NE(rc, 6) << "the name cannot be opened";
    EXPECT_EQ(rc, 0);
}
