/* Removing a segment's name: on request (vs_segment_unlink), or by the last peer out of a
 * VS_SEGMENT_REMOVE_WHEN_UNUSED segment. A remover holds the JOIN lock exclusively from its
 * decision to the unlink; a joiner holds it shared while it checks that the name still names
 * its segment and claims an entry. So nobody joins a segment whose name is going or gone, and
 * nobody removes a name a peer has joined under. The name goes by a rename to a private name
 * that is unlinked only once checked to be the very file decided about. Files a remover or a
 * creator killed midway leaves under a private name are swept by the next creator in that
 * directory. The model of all this is core/model/peers.pml, SCENARIO_REMOVE. */
#include "segment.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

void vs__name_path(const char *name, char *path, size_t size)
{
    snprintf(path, size, "%s%s", vs__is_shm_name(name) ? "/dev/shm" : "", name);
}

bool vs__name_path_is(const char *path, uint64_t dev, uint64_t ino)
{
    struct stat st;
    return lstat(path, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

bool vs__name_still_names(const char *name, uint64_t dev, uint64_t ino)
{
    char path[VS__PATH_MAX];
    vs__name_path(name, path, sizeof path);
    return vs__name_path_is(path, dev, ino);
}

/* ---- private names ---- */

/* The directory part of a name's path, with its slash ("" for a bare relative name). */
static int dir_len(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? (int)(slash - path + 1) : 0;
}

void vs__private_path(const char *name, const char *prefix, char *out, size_t size)
{
    char path[VS__PATH_MAX];
    uint64_t r = 0;
    vs__name_path(name, path, sizeof path);
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r)
        r = vs__now_ns(CLOCK_MONOTONIC) ^ (uint64_t)getpid() << 40; /* unique enough with O_EXCL */
    snprintf(out, size, "%.*s%s%016llx", dir_len(path), path, prefix, (unsigned long long)r);
}

/* A creator opens its private file, then locks it, then writes the creating magic; a file
 * still empty and unlocked this long after it was made is one whose creator died before its
 * lock or its magic. One that is younger may be a creator between those steps (if it is swept
 * all the same, that creator fails cleanly: its name is gone when it publishes). */
#define VS__EMPTY_CREATING_GRACE_S 60

/* Whether a file under a private name is ours and what a varslot remover or creator left: a
 * segment, one being made, or (a creator's) still empty and past the grace time. */
static bool left_by_varslot(int fd, const struct stat *st, off_t held)
{
    if (!S_ISREG(st->st_mode) || st->st_uid != geteuid())
        return false;
    uint64_t magic = 0;
    if (pread(fd, &magic, sizeof magic, 0) == sizeof magic)
        return magic == VS__SEG_MAGIC || magic == VS__SEG_MAGIC_CREATING;
    return held == VS__LOCK_CREATING && st->st_size == 0 &&
           (int64_t)(vs__now_ns(CLOCK_REALTIME) / 1000000000) - (int64_t)st->st_mtime >
               VS__EMPTY_CREATING_GRACE_S;
}

/* A file under a private name whose remover or creator died: left by varslot (above), and
 * nobody holds the lock its remover or creator held throughout. */
static void sweep_one(int dfd, const char *entry, off_t held)
{
    int fd = openat(dfd, entry, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return;
    struct stat st, now;
    if (fstat(fd, &st) == 0 && left_by_varslot(fd, &st, held) &&
        vs__byte_locked_elsewhere(fd, held) == 0 && fstatat(dfd, entry, &now, AT_SYMLINK_NOFOLLOW) == 0 &&
        now.st_dev == st.st_dev && now.st_ino == st.st_ino)
        unlinkat(dfd, entry, 0);
    close(fd);
}

void vs__sweep_private_names(const char *name)
{
    char path[VS__PATH_MAX], dir[VS__PATH_MAX];
    vs__name_path(name, path, sizeof path);
    int len = dir_len(path);
    snprintf(dir, sizeof dir, "%.*s", len ? len : 1, len ? path : ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return;
    /* getdents64, not readdir: the core never calls malloc. */
    char buf[4096];
    long got;
    while ((got = syscall(SYS_getdents64, dfd, buf, sizeof buf)) > 0) {
        for (long off = 0; off < got;) {
            struct dirent64 *e = (struct dirent64 *)(buf + off);
            off += e->d_reclen;
            if (strncmp(e->d_name, VS__REMOVING, strlen(VS__REMOVING)) == 0)
                sweep_one(dfd, e->d_name, VS__LOCK_JOIN);
            else if (strncmp(e->d_name, VS__MAKING, strlen(VS__MAKING)) == 0)
                sweep_one(dfd, e->d_name, VS__LOCK_CREATING);
        }
    }
    close(dfd);
}

/* model: remove_name. Removes name if it names the file (dev, ino), and never another file:
 * the name first moves to a private name (one atomic rename), which is unlinked only once it
 * is checked to be that file; another file caught in between (someone removed the name by
 * hand and a new segment took it) is renamed back. 0: removed; 1: the name names another file
 * or none; -1: errno. */
static int remove_name_of(const char *name, uint64_t dev, uint64_t ino)
{
    char path[VS__PATH_MAX], moved[VS__PATH_MAX + 32];
    vs__name_path(name, path, sizeof path);
    vs__private_path(name, VS__REMOVING, moved, sizeof moved);
    if (!vs__name_path_is(path, dev, ino))
        return 1;
    if (renameat2(AT_FDCWD, path, AT_FDCWD, moved, RENAME_NOREPLACE) != 0) {
        if (errno == ENOENT)
            return 1;
        if (errno != EINVAL && errno != ENOSYS)
            return -1;
        /* A filesystem without RENAME_NOREPLACE: checked, then unlinked by name. */
        return vs__name_path_is(path, dev, ino) ? (unlink(path) == 0 ? 0 : -1) : 1;
    }
    if (vs__name_path_is(moved, dev, ino))
        return unlink(moved) == 0 ? 0 : -1;
    if (renameat2(AT_FDCWD, moved, AT_FDCWD, path, RENAME_NOREPLACE) != 0)
        vs__set_detail("a segment that took the name meanwhile was left under a private name");
    return 1;
}

/* Whether any peer holds its liveness lock: the kernel's word, one probe over every id.
 * An error counts as "someone is there": never remove on doubt. */
static bool any_peer_joined(const vs_segment *seg)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = VS__LOCK_LIVE(1),
                       .l_len = seg->max_peers};
    return fcntl(seg->lock_fd, F_OFD_GETLK, &fl) != 0 || fl.l_type != F_UNLCK;
}

/* model: remove_if_unused */
void vs__segment_remove_if_unused(vs_segment *seg)
{
    if (vs__lock_byte_wait(seg->lock_fd, VS__LOCK_JOIN, false, 100) != 0)
        return; /* a peer is joining: it will be the last out, and decide then */
    if (!any_peer_joined(seg))
        remove_name_of(seg->name, seg->file_dev, seg->file_ino);
    vs__unlock_byte(seg->lock_fd, VS__LOCK_JOIN);
}

/* One attempt on the file fd has open under name; 1: the name was given to another file
 * meanwhile, look again. */
static int unlink_open_file(const char *name, int fd)
{
    struct stat st;
    uint64_t magic = 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        pread(fd, &magic, sizeof magic, 0) != sizeof magic || magic != VS__SEG_MAGIC) {
        vs__set_detail("not a varslot segment: refusing to remove it");
        return VS_EPERM;
    }
    if (st.st_uid != geteuid()) {
        vs__set_detail("segment is owned by another user");
        return VS_EPERM;
    }
    if (vs__lock_byte_wait(fd, VS__LOCK_JOIN, false, 1000) != 0) {
        vs__set_detail("peers kept joining the segment for a second; try again");
        return VS_EBUSY;
    }
    int rc = remove_name_of(name, st.st_dev, st.st_ino);
    if (rc < 0)
        rc = vs__errno_status(errno, "cannot remove the name");
    vs__unlock_byte(fd, VS__LOCK_JOIN);
    return rc;
}

int vs_segment_unlink(const char *name)
{
    VS__NO_CANCEL;
    int rc = vs__check_name(name);
    if (rc != VS_OK)
        return rc;
    for (int attempt = 0; attempt < 8; attempt++) {
        /* Its own description, never mapped: it carries the JOIN lock for a moment. */
        vs__proc_id me;
        int fd = vs__lock_fd_open_name(name, &me);
        if (fd < 0)
            return vs__errno_status(errno, "cannot open the segment");
        rc = unlink_open_file(name, fd);
        vs__lock_fd_close(fd, me);
        if (rc != 1)
            return rc;
    }
    vs__set_detail("the name kept being given to new files; try again");
    return VS_EBUSY;
}
