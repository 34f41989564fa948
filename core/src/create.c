/* Creating a segment. It is built where nobody can see it and given its name in one step at
 * the end, so every file a name names is a complete segment (or not one at all), and a
 * creator killed midway leaves no name behind: an unnamed file (O_TMPFILE) linked to the
 * name, or, where that cannot be done (no O_TMPFILE, no /proc), a file under a private name
 * renamed to it without replacing. */
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

static uint64_t random_id(void)
{
    uint64_t id = 0;
    if (getrandom(&id, sizeof id, GRND_NONBLOCK) != sizeof id)
        id = vs__now_ns(CLOCK_MONOTONIC) ^ ((uint64_t)getpid() << 32);
    return id;
}

/* Where it is built: an unnamed file in the name's directory (*private == ""), or a file under
 * a private name there. -1 with errno. */
static int open_unpublished(const char *name, mode_t mode, char *private, size_t size)
{
    char path[VS__PATH_MAX], dir[VS__PATH_MAX];
    vs__name_path(name, path, sizeof path);
    private[0] = '\0';
    if (access("/proc/thread-self/fd", X_OK) == 0) {
        const char *slash = strrchr(path, '/');
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path + (slash == path)) : 1,
                 slash ? path : ".");
        int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
        if (fd >= 0)
            return fd;
    }
    vs__private_path(name, VS__MAKING, private, size);
    return open(private, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
}

/* Gives the finished segment its name, never replacing what has it (-1, EEXIST). */
static int publish(int fd, const char *private, const char *name)
{
    char path[VS__PATH_MAX], proc[48];
    vs__name_path(name, path, sizeof path);
    if (!private[0]) {
        snprintf(proc, sizeof proc, "/proc/thread-self/fd/%d", fd);
        return linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW);
    }
    if (renameat2(AT_FDCWD, private, AT_FDCWD, path, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS) /* a filesystem without RENAME_NOREPLACE: */
        return -1;
    if (link(private, path) != 0)       /* link() does not replace either */
        return -1;
    unlink(private);
    return 0;
}

int vs_segment_create(vs_segment *seg, const char *name, const vs_segment_options *opts)
{
    VS__NO_CANCEL;
    static const vs_class_config defaults[VS_DEFAULT_CLASS_COUNT] = VS_DEFAULT_CLASSES_INIT;
    int rc = vs__segment_begin(seg, name);
    if (rc != VS_OK)
        return rc;
    vs_segment_options o = opts ? *opts : (vs_segment_options){0};
    if (!o.classes) {
        if (o.class_count) {
            vs__set_detail("class_count given without classes");
            return VS_EINVAL;
        }
        o.classes = defaults;
        o.class_count = VS_DEFAULT_CLASS_COUNT;
    }
    if (!o.max_peers)
        o.max_peers = VS_DEFAULT_MAX_PEERS;
    if (!o.mode)
        o.mode = 0600;
    if (o.mode & ~0777u) {
        vs__set_detail("mode has bits outside 0777");
        return VS_EINVAL;
    }
    if (o.flags & ~(VS_SEGMENT_REMOVE_WHEN_UNUSED | VS_SEGMENT_DECAY)) {
        vs__set_detail("unknown segment flags");
        return VS_EINVAL;
    }
    if ((o.flags & VS_SEGMENT_DECAY) && o.decay_ms < -1) {
        vs__set_detail("decay_ms is below -1 (never)");
        return VS_EINVAL;
    }
    int env_rc = vs__decay_env_check();
    if (env_rc != VS_OK)
        return env_rc;
    size_t pool_offset, pool_size, total;
    if (o.max_peers > VS_MAX_PEERS) {
        vs__set_detail("max_peers is above 255");
        return VS_EINVAL;
    }
    const char *why;
    if (vs__layout_compute(o.classes, o.class_count, NULL, &total, &why) != VS_OK) {
        vs__set_detail(why);
        return VS_EINVAL;
    }
    if (vs__segment_geometry(o.max_peers, o.classes, o.class_count, &pool_offset, &pool_size,
                             &total) != VS_OK) {
        vs__set_detail("segment size overflows");
        return VS_EINVAL;
    }

    char path[VS__PATH_MAX], private[VS__PATH_MAX + 32];
    struct stat st;
    vs__name_path(name, path, sizeof path);
    if (lstat(path, &st) == 0) { /* saves building one; publish() is what decides */
        vs__set_detail("a segment of that name already exists");
        return VS_EEXIST;
    }
    int fd = open_unpublished(name, (mode_t)o.mode, private, sizeof private);
    if (fd < 0)
        return vs__errno_status(errno, "cannot create the segment file");
    void *map = NULL;
    vs__proc_id me;
    if ((rc = vs__segment_record_file(seg, fd, name)) != VS_OK)
        goto fail;
    /* The lock description now, before the name: nothing may fail once it is published. A
     * file under a private name is opened by that name (there may be no /proc). */
    rc = vs__segment_take_lock_fd(seg, private[0] ? vs__lock_fd_open_name(private, &me)
                                                  : vs__lock_fd_open(seg, &me), me);
    if (rc != VS_OK)
        goto fail;
    if (private[0]) {
        /* A file under a private name that no creator holds this lock on is swept. */
        uint64_t creating = VS__SEG_MAGIC_CREATING;
        if (fstat(seg->lock_fd, &st) != 0 || st.st_dev != seg->file_dev || st.st_ino != seg->file_ino ||
            vs__lock_byte(seg->lock_fd, VS__LOCK_CREATING) != 0 ||
            pwrite(fd, &creating, sizeof creating, 0) != sizeof creating) {
            rc = vs__errno_status(errno, "cannot lock or write the new segment");
            goto fail;
        }
    }
    if (fchmod(fd, (mode_t)o.mode) != 0) {
        rc = vs__errno_status(errno, "cannot chmod the new segment");
        goto fail;
    }
    struct statvfs vfs;
    if (fstatvfs(fd, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < total) {
        vs__set_detail("the filesystem (e.g. /dev/shm) has less free space than the segment needs");
        rc = VS_ENOSPC;
        goto fail;
    }
    if (ftruncate(fd, (off_t)total) != 0) {
        rc = vs__errno_status(errno, "cannot size the segment file");
        goto fail;
    }
    for (int attempt = 0; attempt < vs__preferred_attempts && !map; attempt++)
        map = vs__map_at(fd, total, vs__preferred_address(name, attempt));
    if (!map && !(map = vs__map_at(fd, total, 0))) {
        rc = vs__errno_status(errno, "cannot map the segment");
        goto fail;
    }

    vs__seg_header *h = map;
    h->version = VS__SEG_VERSION;
    h->header_size = sizeof *h;
    h->total_size = total;
    h->map_addr = (uintptr_t)map;
    h->segment_id = random_id();
    h->created_unix_ns = vs__now_ns(CLOCK_REALTIME);
    h->creator_uid = geteuid();
    h->creator_pid = getpid();
    h->max_peers = o.max_peers;
    h->class_count = (uint32_t)o.class_count;
    h->flags = o.flags & ~VS_SEGMENT_DECAY; /* an option, not a property of the segment */
    h->decay_ms = o.flags & VS_SEGMENT_DECAY ? o.decay_ms : vs__decay_for_new_segment();
    h->peers_offset = VS__PAGE;
    h->pool_offset = pool_offset;
    h->pool_size = pool_size;
    memcpy(h->classes, o.classes, o.class_count * sizeof *o.classes);
    h->checksum = vs__header_checksum(h);
    rc = vs_pool_init(&seg->pool, (vs_region){map, total}, pool_offset, o.classes, o.class_count);
    if (rc != VS_OK) {
        vs__set_detail("pool initialisation failed");
        goto fail;
    }
    vs__seg_header valid = *h; /* ours alone until published */
    atomic_store_explicit(&h->magic, VS__SEG_MAGIC, memory_order_release);
    if (publish(fd, private, name) != 0) {
        rc = vs__errno_status(errno, "cannot give the new segment its name");
        vs_pool_detach(&seg->pool);
        goto fail;
    }
    if (private[0])
        vs__unlock_byte(seg->lock_fd, VS__LOCK_CREATING);
    vs__sweep_private_names(name); /* what creators and removers killed midway left here */
    vs__segment_finish_attach(seg, &valid, map, total, true);
    return VS_OK;

fail:
    if (private[0] && vs__name_path_is(private, seg->file_dev, seg->file_ino))
        unlink(private);
    vs__segment_discard(seg, map, total);
    return rc;
}
