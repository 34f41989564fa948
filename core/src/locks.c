/* The kernel locks that stand for liveness, and the descriptions that carry them.
 * An OFD lock lives as long as its open file description, and a description lives as long as
 * any process holds it: an fd, or a mapping made from it. So locks go only on descriptions
 * that are never mapped, and a fork child closes the ones it inherited (pthread_atfork), or
 * a dead parent's locks would live on in its children. */
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- one-byte locks ---- */

static int ofd_lock(int fd, off_t off, short type, int cmd, struct flock *fl)
{
    memset(fl, 0, sizeof *fl);
    fl->l_type = type;
    fl->l_whence = SEEK_SET;
    fl->l_start = off;
    fl->l_len = 1;
    return fcntl(fd, cmd, fl);
}

int vs__lock_byte(int fd, off_t off)
{
    struct flock fl;
    return ofd_lock(fd, off, F_WRLCK, F_OFD_SETLK, &fl);
}

int vs__lock_byte_shared(int fd, off_t off)
{
    struct flock fl;
    return ofd_lock(fd, off, F_RDLCK, F_OFD_SETLK, &fl);
}

int vs__unlock_byte(int fd, off_t off)
{
    struct flock fl;
    return ofd_lock(fd, off, F_UNLCK, F_OFD_SETLK, &fl);
}

int vs__byte_locked_elsewhere(int fd, off_t off)
{
    struct flock fl;
    if (ofd_lock(fd, off, F_WRLCK, F_OFD_GETLK, &fl) != 0)
        return -1;
    return fl.l_type != F_UNLCK;
}

/* ---- which process a description belongs to ---- */

/* Bumped in every fork child that ran the handler below. Together with the pid it tells a
 * description or a vs_segment inherited from an ancestor from one this process made: the
 * pid alone can repeat (a child that is pid 1 of a new namespace, or a reused pid). */
static unsigned fork_epoch;

vs__proc_id vs__self(void)
{
    return (vs__proc_id){getpid(), __atomic_load_n(&fork_epoch, __ATOMIC_RELAXED)};
}

bool vs__proc_is_self(vs__proc_id p)
{
    vs__proc_id me = vs__self();
    return p.pid == me.pid && p.epoch == me.epoch;
}

/* ---- flags that a fork child may inherit set ---- */

/* A flag holds a token of the process whose thread set it, 0 when clear. Threads of this
 * process wait for each other; a flag set by another process was copied into this one by
 * fork, and no thread of that process runs here: it is taken over. The token is the pid and
 * the fork epoch, so a child that gets its parent's pid number (pid 1 of a new namespace)
 * is still told apart. */
static int process_token(void)
{
    return (int)((unsigned)getpid() << 8 | (__atomic_load_n(&fork_epoch, __ATOMIC_RELAXED) & 255u));
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
    int fd; /* -1: empty */
    vs__proc_id opener;
} lock_fds[VS__LOCK_FDS];
/* Held from the open of a lock description to its registration, from its unregistration to
 * its close, and across fork(): so no fork child ever holds a lock description that is not in
 * the table its fork handler closes. */
static int registry_busy;
static pthread_once_t handlers_once = PTHREAD_ONCE_INIT;

static void before_fork(void) { vs__flag_take(&registry_busy); }
static void in_parent(void) { vs__flag_release(&registry_busy); }
/* The child: close every lock description an ancestor registered. Their locks now die with
 * the process that took them (or, for the CREATING, REAP and JOIN locks, with its thread's
 * work, which did not come along into this child). */
static void in_child(void)
{
    __atomic_add_fetch(&fork_epoch, 1, __ATOMIC_RELAXED);
    vs__proc_id me = vs__self();
    for (int i = 0; i < VS__LOCK_FDS; i++) {
        struct lock_fd *e = &lock_fds[i];
        if (e->fd >= 0 && (e->opener.pid != me.pid || e->opener.epoch != me.epoch)) {
            close(e->fd);
            e->fd = -1;
        }
    }
    vs__flag_release(&registry_busy);
}

static void install_handlers(void)
{
    for (int i = 0; i < VS__LOCK_FDS; i++)
        lock_fds[i].fd = -1;
    pthread_atfork(before_fork, in_parent, in_child);
}

/* Registers fd (just opened, registry held); false if the table is full. */
static bool registry_add(int fd, vs__proc_id me)
{
    for (int i = 0; i < VS__LOCK_FDS; i++)
        if (lock_fds[i].fd < 0) {
            lock_fds[i] = (struct lock_fd){fd, me};
            return true;
        }
    return false;
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
    /* /proc names the file seg->fd has open (unless the program closed seg->fd and reused its
     * number); else the name must still name it. Either way it must be the file this
     * segment was opened as. */
    char path[32] = "/proc/self/fd/";
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

/* Opens (with open_fd) and registers a lock description, with no fork in between. */
static int lock_fd_open(int (*open_fd)(const void *, int), const void *arg, vs__proc_id *opener)
{
    pthread_once(&handlers_once, install_handlers);
    vs__flag_take(&registry_busy);
    *opener = vs__self();
    int fd = open_fd(arg, O_RDWR);
    if (fd >= 0 && !registry_add(fd, *opener)) {
        close(fd);
        fd = -1;
        errno = EMFILE;
    }
    vs__flag_release(&registry_busy);
    return fd;
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
    /* Closed here only if it is still registered to its opener: after a fork the handler has
     * closed it already, and its number may now be some other file of this process. */
    pthread_once(&handlers_once, install_handlers);
    vs__flag_take(&registry_busy);
    for (int i = 0; i < VS__LOCK_FDS; i++) {
        struct lock_fd *e = &lock_fds[i];
        if (e->fd == fd && e->opener.pid == opener.pid && e->opener.epoch == opener.epoch) {
            e->fd = -1;
            close(fd);
            break;
        }
    }
    vs__flag_release(&registry_busy);
}

int vs__lock_byte_wait(int fd, off_t off, bool shared, int max_ms)
{
    for (int waited = 0;; waited++) {
        if ((shared ? vs__lock_byte_shared(fd, off) : vs__lock_byte(fd, off)) == 0)
            return 0;
        if ((errno != EAGAIN && errno != EACCES) || waited >= max_ms)
            return -1;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
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
         * skipped it (a raw clone), in which case they are still registered and close here. */
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
    if (!seg || !seg->map)
        return VS_EINVAL;
    return vs__segment_adopt(seg);
}
