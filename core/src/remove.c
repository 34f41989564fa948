/* Removing a segment's name: on request (vs_segment_unlink), or by the last peer out of a
 * VS_SEGMENT_REMOVE_WHEN_UNUSED segment. A remover holds the JOIN lock exclusively from its
 * decision to the unlink (joiners hold it shared), so nobody joins in between; it marks the
 * segment retired first, so a process that opened it just before can no longer join it; and
 * it removes the name only for the very file it decided about (remove_name_of). The model of
 * all this is core/model/peers.pml, SCENARIO_REMOVE. */
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void vs__name_path(const char *name, char *path, size_t size)
{
    snprintf(path, size, "%s%s", vs__is_shm_name(name) ? "/dev/shm" : "", name);
}

static bool path_is(const char *path, uint64_t dev, uint64_t ino)
{
    struct stat st;
    return lstat(path, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

bool vs__name_still_names(const char *name, uint64_t dev, uint64_t ino)
{
    char path[VS__PATH_MAX];
    vs__name_path(name, path, sizeof path);
    return path_is(path, dev, ino);
}

/* Where a name is moved while it is being removed: in its directory, short (any name fits),
 * and the same for every segment that had the name, so an orphan left there by a remover that
 * died can be found again. */
static void private_path(const char *name, char *out, size_t size)
{
    char path[VS__PATH_MAX];
    vs__name_path(name, path, sizeof path);
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    const char *slash = strrchr(path, '/');
    int dir_len = slash ? (int)(slash - path + 1) : 0;
    snprintf(out, size, "%.*s.vsrm-%016llx", dir_len, path, (unsigned long long)h);
}

/* Removes a retired segment left under the private name by a remover that died between its
 * rename and its unlink (one whose remover still works holds its JOIN lock). */
static void sweep_private(const char *priv)
{
    int fd = open(priv, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return;
    vs__seg_header h;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() &&
        pread(fd, &h, sizeof h, 0) == sizeof h && h.magic == VS__SEG_MAGIC && h.retired &&
        vs__byte_locked_elsewhere(fd, VS__LOCK_JOIN) == 0 && path_is(priv, st.st_dev, st.st_ino))
        unlink(priv);
    close(fd);
}

void vs__segment_sweep_removed(const char *name)
{
    char priv[VS__PATH_MAX + 32];
    private_path(name, priv, sizeof priv);
    sweep_private(priv);
}

/* model: remove_name. Removes name if it names the file (dev, ino), and never another file:
 * the name first moves to the private name (one atomic rename), which is unlinked only once
 * it is checked to be that file; another file caught in between (someone removed the name by
 * hand and a new segment took it) is renamed back. 0: removed; 1: the name names another
 * file or none; -1: errno. */
static int remove_name_of(const char *name, uint64_t dev, uint64_t ino)
{
    char path[VS__PATH_MAX], priv[VS__PATH_MAX + 32];
    vs__name_path(name, path, sizeof path);
    private_path(name, priv, sizeof priv);
    if (!path_is(path, dev, ino))
        return 1;
    for (int waited_ms = 0; renameat2(AT_FDCWD, path, AT_FDCWD, priv, RENAME_NOREPLACE) != 0;
         waited_ms++) {
        if (errno == ENOENT)
            return 1;
        if (errno == EINVAL || errno == ENOSYS) /* no RENAME_NOREPLACE here: checked, then unlinked */
            return path_is(path, dev, ino) ? (unlink(path) == 0 ? 0 : -1) : 1;
        if (errno != EEXIST || waited_ms >= 1000)
            return -1;
        /* Another remover of this name is at work, or one died there: wait, or sweep. */
        sweep_private(priv);
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    if (path_is(priv, dev, ino))
        return unlink(priv) == 0 ? 0 : -1;
    if (renameat2(AT_FDCWD, priv, AT_FDCWD, path, RENAME_NOREPLACE) != 0)
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

static _Atomic uint32_t *retired_flag(const vs_segment *seg) { return &vs__header(seg)->retired; }

/* model: remove_if_unused. Retired before the name goes: a remover killed in between leaves a
 * named segment nobody can join, which the next opener removes (vs__segment_finish_removal).
 * A removal that fails for another reason takes the mark back. */
void vs__segment_remove_if_unused(vs_segment *seg)
{
    if (vs__lock_byte_wait(seg->lock_fd, VS__LOCK_JOIN, false, 100) != 0)
        return; /* a peer is joining: it will be the last out, and decide then */
    if (!atomic_load_explicit(retired_flag(seg), memory_order_acquire) && !any_peer_joined(seg) &&
        vs__name_still_names(seg->name, seg->file_dev, seg->file_ino)) {
        atomic_store_explicit(retired_flag(seg), 1, memory_order_release);
        if (remove_name_of(seg->name, seg->file_dev, seg->file_ino) < 0)
            atomic_store_explicit(retired_flag(seg), 0, memory_order_release);
    }
    vs__unlock_byte(seg->lock_fd, VS__LOCK_JOIN);
}

/* model: finish_removal. seg is retired but still named: its remover died before the unlink.
 * (A scribbler can set the flag too: never remove a name while a peer is joined.) */
void vs__segment_finish_removal(vs_segment *seg)
{
    if (vs__lock_byte_wait(seg->lock_fd, VS__LOCK_JOIN, false, 100) != 0)
        return;
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
        pread(fd, &magic, sizeof magic, 0) != sizeof magic ||
        (magic != VS__SEG_MAGIC && magic != VS__SEG_MAGIC_CREATING)) {
        vs__set_detail("not a varslot segment: refusing to remove it");
        return VS_EPERM;
    }
    if (st.st_uid != geteuid()) {
        vs__set_detail("segment is owned by another user");
        return VS_EPERM;
    }
    if (magic == VS__SEG_MAGIC_CREATING && vs__byte_locked_elsewhere(fd, VS__LOCK_CREATING) != 0) {
        vs__set_detail("the segment is still being created");
        return VS_EBUSY;
    }
    if (vs__lock_byte_wait(fd, VS__LOCK_JOIN, false, 1000) != 0) {
        vs__set_detail("peers kept joining the segment for a second; try again");
        return VS_EBUSY;
    }
    /* Retired first, so that a process that opened it just before cannot join it now. One
     * byte turns 0 -> 1: peers reading the field never see a torn value. */
    const off_t retired_at = offsetof(vs__seg_header, retired);
    uint8_t one = 1, zero = 0;
    bool segment = pread(fd, &magic, sizeof magic, 0) == sizeof magic && magic == VS__SEG_MAGIC;
    int rc;
    if (segment && pwrite(fd, &one, 1, retired_at) != 1) {
        rc = vs__errno_status(errno, "cannot mark the segment retired");
    } else if ((rc = remove_name_of(name, st.st_dev, st.st_ino)) < 0) {
        rc = vs__errno_status(errno, "cannot remove the name");
        if (segment)
            (void)!pwrite(fd, &zero, 1, retired_at);
    }
    vs__unlock_byte(fd, VS__LOCK_JOIN);
    return rc;
}

int vs_segment_unlink(const char *name)
{
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
