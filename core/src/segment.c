/* Creating, validating, mapping and closing a segment file (POSIX shm or a plain path).
 * Creation writes the magic last; opening validates every field against what this process
 * computes before it trusts any of them, and maps at the creator's address when it can. */
#include "segment.h"
#include "slot_cache.h"

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

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

/* ---- geometry and header ---- */

int vs__segment_geometry(uint32_t max_peers, const vs_class_config *configs, size_t n,
                         size_t *pool_offset, size_t *pool_size, size_t *total)
{
    if (max_peers == 0 || max_peers > VS_MAX_PEERS)
        return VS_EINVAL;
    size_t ps = vs_pool_required_size(configs, n);
    if (ps == 0)
        return VS_EINVAL;
    size_t po = (VS__PAGE + (size_t)max_peers * sizeof(vs__peer) + VS__PAGE - 1) & ~(size_t)(VS__PAGE - 1);
    if (ps > SIZE_MAX - po - VS__PAGE)
        return VS_EINVAL;
    *pool_offset = po;
    *pool_size = ps;
    *total = (po + ps + VS__PAGE - 1) & ~(size_t)(VS__PAGE - 1);
    return VS_OK;
}

static uint64_t header_checksum(const vs__seg_header *h)
{
    const uint8_t *p = (const uint8_t *)&h->version;
    const uint8_t *end = (const uint8_t *)&h->checksum;
    uint64_t x = 0xcbf29ce484222325ull;
    for (; p < end; p++)
        x = (x ^ *p) * 0x100000001b3ull;
    return x;
}

/* ---- names and descriptors ---- */

bool vs__is_shm_name(const char *name) { return name[0] == '/' && !strchr(name + 1, '/'); }

int vs__check_name(const char *name)
{
    if (!name || !name[0] || strlen(name) >= sizeof(((vs_segment *)0)->name)) {
        vs__set_detail("segment name is empty or longer than 255 bytes");
        return VS_EINVAL;
    }
    return VS_OK;
}

int vs__errno_status(int e, const char *what)
{
    switch (e) {
    case ENOENT: vs__set_detail("no segment of that name"); return VS_ENOENT;
    case EEXIST: vs__set_detail("a segment of that name already exists"); return VS_EEXIST;
    case ELOOP: vs__set_detail("refusing to follow a symbolic link"); return VS_EPERM;
    case EACCES:
    case EPERM: vs__set_detail("permission denied"); return VS_EPERM;
    case EINVAL:
    case ENAMETOOLONG: vs__set_detail("invalid segment name"); return VS_EINVAL;
    default: vs__set_detail(what); return VS_ESYS;
    }
}

int vs__open_name(const char *name, int flags, mode_t mode)
{
    if (vs__is_shm_name(name))
        return shm_open(name, flags, mode); /* glibc adds O_NOFOLLOW | O_CLOEXEC */
    return open(name, flags | O_NOFOLLOW | O_CLOEXEC, mode);
}

/* ---- mapping ---- */

/* ThreadSanitizer kills a process that maps outside the ranges it shadows, and our preferred
 * range is one of them: under TSan the creator lets the kernel choose (openers still try the
 * creator's address, which is then inside TSan's ranges). */
#if defined(__SANITIZE_THREAD__)
static const int vs__preferred_attempts = 0;
#else
static const int vs__preferred_attempts = 4;
#endif

/* A per-name address in a range that programs rarely use (above the PIE/heap area, below
 * the mmap base), so every peer is likely to find it free and raw pointers stay portable. */
static uintptr_t preferred_address(const char *name, int attempt)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    return 0x200000000000ull + (((h >> 20) + (unsigned)attempt * 7919u) % 16384u) * (1ull << 30);
}

static void *map_at(int fd, size_t len, uintptr_t addr)
{
    void *p = mmap((void *)addr, len, PROT_READ | PROT_WRITE,
                   addr ? MAP_SHARED | MAP_FIXED_NOREPLACE : MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return NULL;
    if (addr && (uintptr_t)p != addr) { /* old kernel: the flag was only a hint */
        munmap(p, len);
        return NULL;
    }
    return p;
}

/* ---- creation ---- */

static uint64_t random_id(void)
{
    uint64_t id = 0;
    if (getrandom(&id, sizeof id, GRND_NONBLOCK) != sizeof id)
        id = vs__now_ns(CLOCK_MONOTONIC) ^ ((uint64_t)getpid() << 32);
    return id;
}

static void segment_reset(vs_segment *seg)
{
    memset(seg, 0, sizeof *seg);
    seg->fd = seg->lock_fd = seg->live_fd = -1;
}

/* Gives up a half-made vs_segment: its mapping and descriptions. */
static void segment_discard(vs_segment *seg, void *map, size_t len)
{
    if (map)
        munmap(map, len);
    vs__lock_fd_close(seg->live_fd, vs__segment_owner(seg));
    vs__lock_fd_close(seg->lock_fd, vs__segment_owner(seg));
    if (seg->fd >= 0)
        close(seg->fd);
    segment_reset(seg);
}

/* The data description and the name are set; now the description that carries locks. */
static int open_lock_fd(vs_segment *seg)
{
    vs__proc_id me;
    seg->lock_fd = vs__lock_fd_open(seg, &me);
    if (seg->lock_fd < 0)
        return vs__errno_status(errno, "cannot open a second descriptor of the segment for its locks");
    seg->owner_pid = me.pid;
    seg->owner_epoch = me.epoch;
    return VS_OK;
}

/* Everything that bounds a loop or an access comes from h, the private copy this process
 * validated, never again from the shared header. */
static int finish_attach(vs_segment *seg, const vs__seg_header *h, void *map, size_t len,
                         bool at_creator)
{
    seg->map = map;
    seg->map_len = len;
    seg->at_creator_address = at_creator;
    seg->max_peers = h->max_peers;
    seg->flags = h->flags;
    seg->pool.segment = seg;
    return VS_OK;
}

/* The directory a name's file lives in, and the file's path. */
static void name_dir(const char *name, char *dir, size_t size)
{
    if (vs__is_shm_name(name)) {
        snprintf(dir, size, "/dev/shm");
        return;
    }
    const char *slash = strrchr(name, '/');
    if (!slash)
        snprintf(dir, size, ".");
    else if (slash == name)
        snprintf(dir, size, "/");
    else
        snprintf(dir, size, "%.*s", (int)(slash - name), name);
}

/* An unnamed file in the name's directory (-1: the name exists, errno EEXIST, or unnamed
 * files cannot be made and linked here). */
static int create_unnamed(const char *name, mode_t mode)
{
    char dir[VS__PATH_MAX], path[VS__PATH_MAX];
    vs__name_path(name, path, sizeof path);
    struct stat st;
    if (lstat(path, &st) == 0) {
        errno = EEXIST; /* saves building one; linkat is what decides */
        return -1;
    }
    if (access("/proc/self/fd", X_OK) != 0) {
        errno = ENOTSUP;
        return -1;
    }
    name_dir(name, dir, sizeof dir);
    return open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
}

static int link_name(int fd, const char *name)
{
    char proc[32], path[VS__PATH_MAX];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    vs__name_path(name, path, sizeof path);
    return linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW);
}

int vs_segment_create(vs_segment *seg, const char *name, const vs_segment_options *opts)
{
    static const vs_class_config defaults[VS_DEFAULT_CLASS_COUNT] = VS_DEFAULT_CLASSES_INIT;
    if (!seg)
        return VS_EINVAL;
    segment_reset(seg);
    int rc = vs__check_name(name);
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
    if (o.flags & ~VS_SEGMENT_REMOVE_WHEN_UNUSED) {
        vs__set_detail("unknown segment flags");
        return VS_EINVAL;
    }
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

    /* Built in an unnamed file that gets the name only once complete (linkat fails if the
     * name is taken): nobody ever sees a half-made segment, and a creator killed midway
     * leaves nothing behind. Where that cannot be done (no O_TMPFILE, no /proc to link
     * through), a named file with the creating magic and lock. */
    int fd = create_unnamed(name, (mode_t)o.mode);
    bool unnamed = fd >= 0;
    if (!unnamed && errno == EEXIST)
        return vs__errno_status(errno, "cannot create the segment file");
    if (!unnamed && (fd = vs__open_name(name, O_RDWR | O_CREAT | O_EXCL, (mode_t)o.mode)) < 0)
        return vs__errno_status(errno, "cannot create the segment file");
    seg->fd = fd;
    strcpy(seg->name, name);
    void *map = NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = vs__errno_status(errno, "fstat failed");
        goto fail;
    }
    seg->file_dev = st.st_dev;
    seg->file_ino = st.st_ino;
    if (!unnamed) {
        /* Openers that find the creating magic wait while this lock is held;
         * vs_segment_unlink refuses to remove the file meanwhile. */
        uint64_t creating = VS__SEG_MAGIC_CREATING;
        if ((rc = open_lock_fd(seg)) != VS_OK)
            goto fail;
        if (vs__lock_byte(seg->lock_fd, VS__LOCK_CREATING) != 0 ||
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
        map = map_at(fd, total, preferred_address(name, attempt));
    if (!map && !(map = map_at(fd, total, 0))) {
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
    h->flags = o.flags;
    h->peers_offset = VS__PAGE;
    h->pool_offset = pool_offset;
    h->pool_size = pool_size;
    memcpy(h->classes, o.classes, o.class_count * sizeof *o.classes);
    h->checksum = header_checksum(h);
    rc = vs_pool_init(&seg->pool, (vs_region){map, total}, pool_offset, o.classes, o.class_count);
    if (rc != VS_OK) {
        vs__set_detail("pool initialisation failed");
        goto fail;
    }
    vs__seg_header valid = *h; /* ours: nobody else may write the header before the magic */
    atomic_store_explicit(&h->magic, VS__SEG_MAGIC, memory_order_release);
    if (unnamed) {
        if (link_name(fd, name) != 0) {
            rc = vs__errno_status(errno, "cannot give the new segment its name");
            goto fail;
        }
        if ((rc = open_lock_fd(seg)) != VS_OK)
            goto fail;
    } else {
        vs__unlock_byte(seg->lock_fd, VS__LOCK_CREATING);
    }
    vs__segment_sweep_removed(name); /* a segment of this name whose remover died midway */
    return finish_attach(seg, &valid, map, total, true);

fail:
    /* Nobody else removes a file while its creator holds VS__LOCK_CREATING, but a name is only
     * ever removed for the file it was checked to name. */
    if (vs__name_still_names(seg->name, seg->file_dev, seg->file_ino))
        (vs__is_shm_name(name) ? shm_unlink : unlink)(name);
    if (map)
        vs_pool_detach(&seg->pool);
    segment_discard(seg, map, total);
    return rc;
}

/* ---- opening ---- */

/* Reads and validates the header without mapping (a truncated file cannot SIGBUS a pread). */
static int read_header(int fd, int lock_probe, vs__seg_header *h, size_t *file_size)
{
    for (int waited_ms = 0;; waited_ms++) {
        struct stat st;
        if (fstat(fd, &st) != 0)
            return vs__errno_status(errno, "fstat failed");
        if (!S_ISREG(st.st_mode)) {
            vs__set_detail("not a regular file");
            return VS_ECORRUPT;
        }
        if (st.st_uid != geteuid()) {
            vs__set_detail("segment is owned by another user");
            return VS_EPERM;
        }
        memset(h, 0, sizeof *h);
        ssize_t got = pread(fd, h, sizeof *h, 0);
        if (got < 0)
            return vs__errno_status(errno, "cannot read the segment header");
        uint64_t magic = atomic_load_explicit(&h->magic, memory_order_relaxed);
        if ((got > 0 && (size_t)got < sizeof h->magic) ||
            (got > 0 && magic != VS__SEG_MAGIC && magic != VS__SEG_MAGIC_CREATING)) {
            vs__set_detail("not a varslot segment (bad magic)");
            return VS_ECORRUPT;
        }
        if (magic == VS__SEG_MAGIC) {
            if ((size_t)got < sizeof *h) {
                vs__set_detail("segment file is truncated (shorter than its header)");
                return VS_ECORRUPT;
            }
            *file_size = (size_t)st.st_size;
            return VS_OK;
        }
        /* Empty, or still being created: a creator at work holds the creation lock; give it
         * time. A creator between open(O_EXCL) and taking the lock gets a few milliseconds. */
        int creating = vs__byte_locked_elsewhere(lock_probe, VS__LOCK_CREATING);
        if (creating == 1 ? waited_ms >= 2000 : waited_ms >= 5) {
            vs__set_detail(creating == 1 ? "segment is still being created"
                                         : "segment was never completed (its creator died?) or is empty");
            return creating == 1 ? VS_EBUSY : VS_ECORRUPT;
        }
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
}

static int validate_header(const vs__seg_header *h, size_t file_size, size_t *pool_offset)
{
    if (h->version != VS__SEG_VERSION) {
        vs__set_detail(h->version > VS__SEG_VERSION ? "segment format is newer than this library"
                                                    : "segment format is older than this library");
        return VS_EVERSION;
    }
    if (h->header_size != sizeof *h) {
        vs__set_detail("segment header size does not match this version");
        return VS_ECORRUPT;
    }
    if (h->checksum != header_checksum(h)) {
        vs__set_detail("segment header checksum mismatch (scribbled over?)");
        return VS_ECORRUPT;
    }
    /* After the checksum: a scribbled field is corruption, not a newer format. */
    if (h->flags & ~VS_SEGMENT_REMOVE_WHEN_UNUSED) {
        vs__set_detail("segment uses flags this library does not know");
        return VS_EVERSION;
    }
    if (h->total_size != file_size) {
        vs__set_detail("segment size in the header differs from the file size (truncated?)");
        return VS_ECORRUPT;
    }
    const char *why;
    size_t total, po, ps;
    if (h->class_count == 0 || h->class_count > VS_MAX_CLASSES ||
        vs__layout_compute(h->classes, h->class_count, NULL, &total, &why) != VS_OK ||
        vs__segment_geometry(h->max_peers, h->classes, h->class_count, &po, &ps, &total) != VS_OK) {
        vs__set_detail("segment header has invalid class configs or peer count");
        return VS_ECORRUPT;
    }
    if (h->peers_offset != VS__PAGE || h->pool_offset != po || h->pool_size != ps ||
        h->total_size != total) {
        vs__set_detail("segment header offsets disagree with its configs");
        return VS_ECORRUPT;
    }
    *pool_offset = po;
    return VS_OK;
}

int vs_segment_open(vs_segment *seg, const char *name)
{
    if (!seg)
        return VS_EINVAL;
    segment_reset(seg);
    int rc = vs__check_name(name);
    if (rc != VS_OK)
        return rc;
    int fd = vs__open_name(name, O_RDWR, 0);
    if (fd < 0)
        return vs__errno_status(errno, "cannot open the segment");
    seg->fd = fd;
    strcpy(seg->name, name);
    struct stat st;
    if (fstat(fd, &st) == 0) {
        seg->file_dev = st.st_dev;
        seg->file_ino = st.st_ino;
    }
    vs__seg_header h;
    size_t file_size = 0, pool_offset = 0;
    void *map = NULL;
    if ((rc = open_lock_fd(seg)) != VS_OK ||
        (rc = read_header(fd, seg->lock_fd, &h, &file_size)) != VS_OK ||
        (rc = validate_header(&h, file_size, &pool_offset)) != VS_OK)
        goto fail;
    uintptr_t want = (uintptr_t)h.map_addr;
    bool sane = want && want % VS__PAGE == 0 && want < 0x800000000000ull;
    map = sane ? map_at(fd, file_size, want) : NULL;
    bool at_creator = map != NULL;
    if (!map && !(map = map_at(fd, file_size, 0))) {
        rc = vs__errno_status(errno, "cannot map the segment");
        goto fail;
    }
    rc = vs_pool_attach(&seg->pool, (vs_region){map, file_size}, pool_offset, h.classes,
                        h.class_count);
    if (rc != VS_OK) {
        vs__set_detail("pool class headers are corrupt");
        goto fail;
    }
    if (atomic_load_explicit(&((vs__seg_header *)map)->retired, memory_order_acquire)) {
        /* Its name is going or gone; if its remover died before the unlink, finish for it. */
        vs_pool_detach(&seg->pool);
        vs__segment_finish_removal(seg);
        vs__set_detail("the segment was removed while it was being opened");
        rc = VS_ENOENT;
        goto fail;
    }
    return finish_attach(seg, &h, map, file_size, at_creator);
fail:
    segment_discard(seg, map, file_size);
    return rc;
}

int vs_segment_open_or_create(vs_segment *seg, const char *name, const vs_segment_options *opts)
{
    int rc = VS_EINVAL;
    for (int attempt = 0; attempt < 8; attempt++) {
        rc = vs_segment_create(seg, name, opts);
        if (rc != VS_EEXIST)
            return rc;
        rc = vs_segment_open(seg, name);
        if (rc != VS_ENOENT) /* ENOENT: removed between the two calls; try again */
            return rc;
    }
    return rc;
}

/* ---- closing ---- */

vs_pool *vs_segment_pool(vs_segment *seg) { return seg && seg->map ? &seg->pool : NULL; }

uint32_t vs_segment_max_peers(const vs_segment *seg) { return seg && seg->map ? seg->max_peers : 0; }

void vs_segment_close(vs_segment *seg)
{
    if (!seg || !seg->map)
        return;
    /* In a fork child that never joined, adopting forgets the parent's id: closing must not
     * take the live parent's slots or entry with it. */
    bool was_peer = vs__segment_adopt(seg) == VS_OK && seg->peer_id != 0;
    if (was_peer)
        vs_segment_leave(seg);
    /* Leave first, then look: of two peers leaving together, at least one sees nobody. Only
     * a peer removes: an inspector (varslot stat) must not, even between create and join. */
    if (was_peer && (seg->flags & VS_SEGMENT_REMOVE_WHEN_UNUSED))
        vs__segment_remove_if_unused(seg);
    vs_pool_detach(&seg->pool);
    void *map = seg->map;
    seg->map = NULL;
    segment_discard(seg, map, seg->map_len); /* closing drops every lock this segment held */
}
