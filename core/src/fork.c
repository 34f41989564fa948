/* Which process a descriptor belongs to, and fork. A lock description (one that carries OFD
 * locks: seg->lock_fd, seg->live_fd) is never mapped, and is registered here; a fork child
 * closes the ones that existed when it was forked, so a parent's locks die with the parent
 * whatever its children do. A vs_segment a child inherited adopts itself at its next call.
 * The model of this is core/model/peers.pml, SCENARIO_FORK. */
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- which process this is ---- */

/* Bumped once in every fork child, at the child's first look at it (fork_pending is set, and
 * the pid is not the forking process's), or by the fork handler at the latest. With the pid,
 * it tells a descriptor or a vs_segment an ancestor made from one this process made, from
 * the child's first instruction on, whatever other fork handlers run before ours. */
static unsigned fork_epoch;
static int fork_pending;
static pid_t forking_pid;
/* Odd while a fork is under way (see lock_fd_open). */
static unsigned fork_seq;

static void child_begins(void)
{
    /* Only the forking thread runs in a new child: no race here. */
    if (__atomic_exchange_n(&fork_pending, 0, __ATOMIC_ACQ_REL)) {
        __atomic_add_fetch(&fork_epoch, 1, __ATOMIC_RELEASE);
        __atomic_add_fetch(&fork_seq, 1, __ATOMIC_ACQ_REL); /* the fork is over, here */
    }
}

vs__proc_id vs__self(void)
{
    pid_t pid = getpid();
    if (VS__UNLIKELY(__atomic_load_n(&fork_pending, __ATOMIC_ACQUIRE)) &&
        pid != __atomic_load_n(&forking_pid, __ATOMIC_RELAXED))
        child_begins();
    return (vs__proc_id){pid, __atomic_load_n(&fork_epoch, __ATOMIC_ACQUIRE)};
}

bool vs__proc_is_self(vs__proc_id p)
{
    vs__proc_id me = vs__self();
    return p.pid == me.pid && p.epoch == me.epoch;
}

/* ---- flags that a fork child may inherit set ---- */

/* A flag holds a token of the process whose thread set it, 0 when clear. Threads of this
 * process wait for each other; a flag set by another process was copied into this one by
 * fork, and no thread of that process runs here: it is taken over. */
static int process_token(void)
{
    vs__proc_id me = vs__self();
    return (int)((unsigned)me.pid << 8 | (me.epoch & 255u));
}

bool vs__flag_try(int *flag)
{
    int me = process_token(), cur = 0;
    if (__atomic_compare_exchange_n(flag, &cur, me, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return true;
    return cur != me &&
           __atomic_compare_exchange_n(flag, &cur, me, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}

void vs__flag_take(int *flag)
{
    while (!vs__flag_try(flag))
        sched_yield();
}

void vs__flag_release(int *flag) { __atomic_store_n(flag, 0, __ATOMIC_RELEASE); }

/* ---- the registry of lock descriptions ---- */

#define VS__LOCK_FDS 512 /* two per open segment (probe + liveness): 256 segments at once */

static struct lock_fd {
    int fd;         /* -1: empty */
    bool at_fork;   /* it existed when the fork under way began: the child closes it */
    vs__proc_id opener;
} lock_fds[VS__LOCK_FDS];
/* Taken for every change of the table, and by the forking thread from before fork() to after
 * it, with that thread's id beside it: the same thread coming back (from another library's
 * fork handler, or a signal handler) is told so instead of waiting for itself. */
static int registry_busy;
static pid_t registry_holder;
static pthread_once_t handlers_once = PTHREAD_ONCE_INIT;

/* false: this very thread holds the registry (it is forking, or a handler interrupted it). */
static bool registry_take(void)
{
    pid_t tid = gettid();
    while (!vs__flag_try(&registry_busy)) {
        if (__atomic_load_n(&registry_holder, __ATOMIC_RELAXED) == tid)
            return false;
        sched_yield();
    }
    __atomic_store_n(&registry_holder, tid, __ATOMIC_RELAXED);
    return true;
}

static void registry_release(void)
{
    __atomic_store_n(&registry_holder, 0, __ATOMIC_RELAXED);
    vs__flag_release(&registry_busy);
}

static bool fork_reentered; /* the forking thread already held the registry */

static void before_fork(void)
{
    fork_reentered = !registry_take();
    for (int i = 0; i < VS__LOCK_FDS; i++)
        lock_fds[i].at_fork = lock_fds[i].fd >= 0;
    __atomic_store_n(&forking_pid, getpid(), __ATOMIC_RELAXED);
    __atomic_store_n(&fork_pending, 1, __ATOMIC_RELEASE);
    __atomic_add_fetch(&fork_seq, 1, __ATOMIC_ACQ_REL);
}

static void in_parent(void)
{
    for (int i = 0; i < VS__LOCK_FDS; i++)
        lock_fds[i].at_fork = false;
    __atomic_store_n(&fork_pending, 0, __ATOMIC_RELEASE);
    __atomic_add_fetch(&fork_seq, 1, __ATOMIC_ACQ_REL);
    if (!fork_reentered)
        registry_release();
}

/* The child: close every lock description that existed when it was forked. Their locks die
 * with the process that took them (or, for the CREATING, REAP and JOIN locks, with its
 * thread's work, which did not come along into this child). Descriptions a handler of
 * another library opened here before this one ran are this child's own, and stay. */
static void in_child(void)
{
    child_begins();
    for (int i = 0; i < VS__LOCK_FDS; i++) {
        struct lock_fd *e = &lock_fds[i];
        if (e->fd >= 0 && e->at_fork) {
            close(e->fd);
            e->fd = -1;
        }
        e->at_fork = false;
    }
    if (!fork_reentered)
        registry_release();
}

static void install_handlers(void)
{
    for (int i = 0; i < VS__LOCK_FDS; i++)
        lock_fds[i].fd = -1;
    pthread_atfork(before_fork, in_parent, in_child);
}

/* At load, before the program registers handlers of its own: ours then run last before fork
 * and first after it, so theirs may use segments on either side. */
__attribute__((constructor)) static void install_at_load(void)
{
    pthread_once(&handlers_once, install_handlers);
}

/* ---- opening and closing lock descriptions ---- */

static char *put_uint(char *p, unsigned v)
{
    char digits[12];
    int n = 0;
    do
        digits[n++] = (char)('0' + v % 10);
    while (v /= 10);
    while (n)
        *p++ = digits[--n];
    *p = '\0';
    return p;
}

static bool is_file(int fd, uint64_t dev, uint64_t ino)
{
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

int vs__reopen(const vs_segment *seg, int flags)
{
    /* /proc names the file this thread's seg->fd has open (unless the program closed it and
     * reused its number); else the name must still name it. Either way it must be the file
     * this segment was opened as. */
    char path[48] = "/proc/thread-self/fd/";
    put_uint(path + strlen(path), (unsigned)seg->fd);
    int fd = open(path, flags | O_CLOEXEC);
    if (fd >= 0 && !is_file(fd, seg->file_dev, seg->file_ino)) {
        close(fd);
        fd = -1;
    }
    if (fd < 0 && (fd = vs__open_name(seg->name, flags, 0)) >= 0 &&
        !is_file(fd, seg->file_dev, seg->file_ino)) {
        close(fd);
        errno = ESTALE; /* the name now names another file */
        return -1;
    }
    return fd;
}

/* Opens (with open_fd) and registers a lock description that no fork child can hold. The open
 * runs outside the registry (it may block: a slow filesystem, an on-access scanner), so a
 * fork that overlapped it is seen by fork_seq (odd while a fork is under way), and the open is
 * done again: the child may hold the first one, unregistered, and it never carries a lock. */
static int lock_fd_open(int (*open_fd)(const void *, int), const void *arg, vs__proc_id *opener)
{
    pthread_once(&handlers_once, install_handlers);
    vs__self(); /* in a child that another library's fork handler runs in, the fork is over */
    for (;;) {
        unsigned seq = __atomic_load_n(&fork_seq, __ATOMIC_ACQUIRE);
        if (seq & 1) { /* a fork is under way: by another thread, or by this one */
            if (__atomic_load_n(&registry_holder, __ATOMIC_RELAXED) == gettid()) {
                errno = EDEADLK; /* called from a fork handler of this very fork */
                return -1;
            }
            sched_yield();
            continue;
        }
        int fd = open_fd(arg, O_RDWR);
        if (fd < 0)
            return -1;
        if (!registry_take()) {
            close(fd);
            errno = EDEADLK;
            return -1;
        }
        bool overlapped = __atomic_load_n(&fork_seq, __ATOMIC_ACQUIRE) != seq;
        bool added = false;
        *opener = vs__self();
        for (int i = 0; i < VS__LOCK_FDS && !overlapped && !added; i++)
            if (lock_fds[i].fd < 0) {
                lock_fds[i] = (struct lock_fd){fd, false, *opener};
                added = true;
            }
        registry_release();
        if (added)
            return fd;
        close(fd);
        if (!overlapped) {
            errno = EMFILE;
            return -1;
        }
    }
}

static int reopen_segment(const void *seg, int flags) { return vs__reopen(seg, flags); }
static int open_by_name(const void *name, int flags) { return vs__open_name(name, flags | O_NONBLOCK, 0); }

int vs__lock_fd_open(const vs_segment *seg, vs__proc_id *opener)
{
    return lock_fd_open(reopen_segment, seg, opener);
}

int vs__lock_fd_open_name(const char *name, vs__proc_id *opener)
{
    return lock_fd_open(open_by_name, name, opener);
}

void vs__lock_fd_close(int fd, vs__proc_id opener)
{
    if (fd < 0)
        return;
    /* Closed here only if it is still registered to its opener: in a fork child the handler
     * has closed it already, and its number may now be some other file of this process. (From
     * a fork handler of this very fork this thread holds the registry already: go ahead.) */
    pthread_once(&handlers_once, install_handlers);
    bool took = registry_take();
    for (int i = 0; i < VS__LOCK_FDS; i++) {
        struct lock_fd *e = &lock_fds[i];
        if (e->fd == fd && e->opener.pid == opener.pid && e->opener.epoch == opener.epoch) {
            e->fd = -1;
            e->at_fork = false;
            close(fd);
            break;
        }
    }
    if (took)
        registry_release();
}

/* ---- a vs_segment inherited through fork ---- */

int vs__segment_adopt(vs_segment *seg)
{
    if (VS__LIKELY(vs__proc_is_self(vs__segment_owner(seg))))
        return seg->lock_fd >= 0 ? VS_OK : VS_ESTALE;
    /* Threads of this child may arrive together: one adopts, under the join flag (which a
     * thread of the parent may have held as it forked). */
    vs__flag_take(&seg->joining);
    vs__proc_id owner = vs__segment_owner(seg);
    int rc = VS_OK;
    if (!vs__proc_is_self(owner)) {
        /* The ancestor's descriptions: closed by the fork handler already, unless the fork
         * skipped it (a raw clone) or it has not run yet (another library's handler called
         * us first), in which case they are still registered and close here. */
        vs__lock_fd_close(seg->live_fd, owner);
        vs__lock_fd_close(seg->lock_fd, owner);
        seg->live_fd = -1;
        seg->peer_id = 0; /* the parent's id: never ours to leave or to reap for */
        seg->reaping = 0;
        vs__proc_id me = vs__self();
        seg->lock_fd = vs__lock_fd_open(seg, &me);
        if (seg->lock_fd < 0 && errno == ESTALE) {
            vs__set_detail("in a fork child: the segment's file can no longer be reached "
                           "(its descriptor was reused, and its name names another file)");
            rc = VS_ESTALE;
        } else if (seg->lock_fd < 0) {
            rc = vs__errno_status(errno, "cannot reopen the segment in a fork child");
        }
        __atomic_store_n(&seg->owner_epoch, me.epoch, __ATOMIC_RELAXED);
        __atomic_store_n(&seg->owner_pid, me.pid, __ATOMIC_RELEASE);
    } else if (seg->lock_fd < 0) {
        rc = VS_ESTALE;
    }
    vs__flag_release(&seg->joining);
    return rc;
}

int vs_segment_after_fork_child(vs_segment *seg)
{
    VS__NO_CANCEL;
    if (!seg || !seg->map)
        return VS_EINVAL;
    return vs__segment_adopt(seg);
}
