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

/* ---- locks ---- */

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

static bool is_shm_name(const char *name) { return name[0] == '/' && !strchr(name + 1, '/'); }

static int check_name(const char *name)
{
    if (!name || !name[0] || strlen(name) >= sizeof(((vs_segment *)0)->name)) {
        vs__set_detail("segment name is empty or longer than 255 bytes");
        return VS_EINVAL;
    }
    return VS_OK;
}

static int errno_status(int e, const char *what)
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

static int open_name(const char *name, int flags, mode_t mode)
{
    if (is_shm_name(name))
        return shm_open(name, flags, mode); /* glibc adds O_NOFOLLOW | O_CLOEXEC */
    return open(name, flags | O_NOFOLLOW | O_CLOEXEC, mode);
}

/* Removes only what looks like ours: a varslot magic, or no magic yet (a creation that never
 * finished), so a typo cannot delete someone's file or another program's shm object. */
int vs_segment_unlink(const char *name)
{
    int rc = check_name(name);
    if (rc != VS_OK)
        return rc;
    int fd = open_name(name, O_RDONLY | O_NONBLOCK, 0);
    if (fd < 0)
        return errno_status(errno, "cannot open the segment");
    struct stat st;
    uint64_t magic = 0;
    ssize_t got = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? pread(fd, &magic, sizeof magic, 0) : -1;
    close(fd);
    if (got < 0 || (magic != VS__SEG_MAGIC && magic != 0) || (got > 0 && got < (ssize_t)sizeof magic)) {
        vs__set_detail("not a varslot segment: refusing to remove it");
        return VS_EPERM;
    }
    if ((is_shm_name(name) ? shm_unlink(name) : unlink(name)) != 0)
        return errno_status(errno, "unlink failed");
    return VS_OK;
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
    seg->fd = -1;
}

static int finish_attach(vs_segment *seg, const char *name, int fd, void *map, size_t len,
                         bool at_creator)
{
    strcpy(seg->name, name);
    seg->fd = fd;
    seg->map = map;
    seg->map_len = len;
    seg->at_creator_address = at_creator;
    seg->max_peers = vs__header(seg)->max_peers;
    seg->flags = vs__header(seg)->flags;
    seg->pool.segment = seg;
    return VS_OK;
}

int vs_segment_create(vs_segment *seg, const char *name, const vs_segment_options *opts)
{
    static const vs_class_config defaults[VS_DEFAULT_CLASS_COUNT] = VS_DEFAULT_CLASSES_INIT;
    if (!seg)
        return VS_EINVAL;
    segment_reset(seg);
    int rc = check_name(name);
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

    int fd = open_name(name, O_RDWR | O_CREAT | O_EXCL, (mode_t)o.mode);
    if (fd < 0)
        return errno_status(errno, "cannot create the segment file");
    void *map = NULL;
    /* Openers seeing no magic yet wait while this lock is held. */
    if (vs__lock_byte(fd, VS__LOCK_CREATING) != 0 || fchmod(fd, (mode_t)o.mode) != 0) {
        rc = errno_status(errno, "cannot lock or chmod the new segment");
        goto fail;
    }
    struct statvfs vfs;
    if (fstatvfs(fd, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < total) {
        vs__set_detail("the filesystem (e.g. /dev/shm) has less free space than the segment needs");
        rc = VS_ENOSPC;
        goto fail;
    }
    if (ftruncate(fd, (off_t)total) != 0) {
        rc = errno_status(errno, "cannot size the segment file");
        goto fail;
    }
    for (int attempt = 0; attempt < vs__preferred_attempts && !map; attempt++)
        map = map_at(fd, total, preferred_address(name, attempt));
    if (!map && !(map = map_at(fd, total, 0))) {
        rc = errno_status(errno, "cannot map the segment");
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
    atomic_store_explicit(&h->magic, VS__SEG_MAGIC, memory_order_release);
    vs__unlock_byte(fd, VS__LOCK_CREATING);
    return finish_attach(seg, name, fd, map, total, true);

fail:
    if (map)
        munmap(map, total);
    if (is_shm_name(name))
        shm_unlink(name);
    else
        unlink(name);
    close(fd);
    segment_reset(seg);
    return rc;
}

/* ---- opening ---- */

/* Reads and validates the header without mapping (a truncated file cannot SIGBUS a pread). */
static int read_header(int fd, vs__seg_header *h, size_t *file_size)
{
    for (int waited_ms = 0;; waited_ms++) {
        struct stat st;
        if (fstat(fd, &st) != 0)
            return errno_status(errno, "fstat failed");
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
            return errno_status(errno, "cannot read the segment header");
        uint64_t magic = atomic_load_explicit(&h->magic, memory_order_relaxed);
        if (got > 0 && (size_t)got < sizeof h->magic) {
            vs__set_detail("not a varslot segment (shorter than a magic number)");
            return VS_ECORRUPT;
        }
        if ((size_t)got >= sizeof h->magic && magic != 0) {
            if (magic != VS__SEG_MAGIC) {
                vs__set_detail("not a varslot segment (bad magic)");
                return VS_ECORRUPT;
            }
            if ((size_t)got < sizeof *h) {
                vs__set_detail("segment file is truncated (shorter than its header)");
                return VS_ECORRUPT;
            }
            *file_size = (size_t)st.st_size;
            return VS_OK;
        }
        /* No magic yet: a creator at work holds the creation lock; give it time. A creator
         * between open(O_EXCL) and taking the lock gets a few milliseconds of grace. */
        int creating = vs__byte_locked_elsewhere(fd, VS__LOCK_CREATING);
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
    int rc = check_name(name);
    if (rc != VS_OK)
        return rc;
    int fd = open_name(name, O_RDWR, 0);
    if (fd < 0)
        return errno_status(errno, "cannot open the segment");
    vs__seg_header h;
    size_t file_size = 0, pool_offset = 0;
    void *map = NULL;
    if ((rc = read_header(fd, &h, &file_size)) != VS_OK ||
        (rc = validate_header(&h, file_size, &pool_offset)) != VS_OK)
        goto fail;
    uintptr_t want = (uintptr_t)h.map_addr;
    bool sane = want && want % VS__PAGE == 0 && want < 0x800000000000ull;
    map = sane ? map_at(fd, file_size, want) : NULL;
    bool at_creator = map != NULL;
    if (!map && !(map = map_at(fd, file_size, 0))) {
        rc = errno_status(errno, "cannot map the segment");
        goto fail;
    }
    rc = vs_pool_attach(&seg->pool, (vs_region){map, file_size}, pool_offset, h.classes,
                        h.class_count);
    if (rc != VS_OK) {
        vs__set_detail("pool class headers are corrupt");
        goto fail;
    }
    return finish_attach(seg, name, fd, map, file_size, at_creator);
fail:
    if (map)
        munmap(map, file_size);
    close(fd);
    segment_reset(seg);
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

static bool any_peer_joined(vs_segment *seg)
{
    for (uint32_t id = 1; id <= seg->max_peers; id++) {
        vs_peer_info info;
        if (vs_segment_peer_info(seg, (uint8_t)id, &info) == VS_OK && info.state != VS_PEER_FREE &&
            info.live)
            return true;
    }
    return false;
}

/* Whether seg's name still names the file we have open: another process may have removed it
 * and created a new segment under the same name meanwhile, which is not ours to remove. */
static bool name_still_ours(const vs_segment *seg)
{
    char path[sizeof seg->name + sizeof "/dev/shm"] = "";
    if (is_shm_name(seg->name))
        strcpy(path, "/dev/shm");
    strcat(path, seg->name);
    struct stat open_file, named;
    return fstat(seg->fd, &open_file) == 0 && lstat(path, &named) == 0 &&
           open_file.st_dev == named.st_dev && open_file.st_ino == named.st_ino;
}

void vs_segment_close(vs_segment *seg)
{
    if (!seg || !seg->map)
        return;
    bool was_peer = seg->peer_id != 0;
    if (was_peer)
        vs_segment_leave(seg);
    /* Leave first, then look: of two peers leaving together, at least one sees nobody. Only
     * a peer removes: an inspector (varslot stat) must not, even between create and join. */
    bool remove = was_peer && (seg->flags & VS_SEGMENT_REMOVE_WHEN_UNUSED) && !any_peer_joined(seg) &&
                  name_still_ours(seg);
    char name[sizeof seg->name];
    strcpy(name, seg->name);
    vs_pool_detach(&seg->pool);
    munmap(seg->map, seg->map_len);
    close(seg->fd); /* drops every OFD lock this segment held */
    segment_reset(seg);
    if (remove)
        vs_segment_unlink(name);
}

int vs_segment_after_fork_child(vs_segment *seg)
{
    if (!seg || !seg->map)
        return VS_EINVAL;
    /* A new open file description of the same file: the inherited one shares the parent's
     * liveness lock, which must die with the parent, not with us. */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", seg->fd);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        fd = open_name(seg->name, O_RDWR, 0);
    if (fd < 0)
        return errno_status(errno, "cannot reopen the segment after fork");
    close(seg->fd);
    seg->fd = fd;
    seg->peer_id = 0;
    seg->reaping = 0;
    vs__tc.thread_tag = 0; /* the parent's tag would steer our frees into our own cache */
    return VS_OK;
}
