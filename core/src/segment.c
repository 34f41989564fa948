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

uint64_t vs__header_checksum(const vs__seg_header *h)
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
const int vs__preferred_attempts = 0;
#else
const int vs__preferred_attempts = 4;
#endif

/* A per-name address in a range that programs rarely use (above the PIE/heap area, below
 * the mmap base), so every peer is likely to find it free and raw pointers stay portable. */
uintptr_t vs__preferred_address(const char *name, int attempt)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    return 0x200000000000ull + (((h >> 20) + (unsigned)attempt * 7919u) % 16384u) * (1ull << 30);
}

void *vs__map_at(int fd, size_t len, uintptr_t addr)
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

/* ---- a vs_segment being set up ---- */

void vs__segment_reset(vs_segment *seg)
{
    memset(seg, 0, sizeof *seg);
    seg->fd = seg->lock_fd = seg->live_fd = -1;
}

int vs__segment_begin(vs_segment *seg, const char *name)
{
    if (!seg)
        return VS_EINVAL;
    vs__segment_reset(seg);
    return vs__check_name(name);
}

void vs__segment_discard(vs_segment *seg, void *map, size_t len)
{
    if (map)
        munmap(map, len);
    vs__lock_fd_close(seg->live_fd, vs__segment_owner(seg));
    vs__lock_fd_close(seg->lock_fd, vs__segment_owner(seg));
    if (seg->fd >= 0)
        close(seg->fd);
    vs__segment_reset(seg);
}

int vs__segment_record_file(vs_segment *seg, int fd, const char *name)
{
    struct stat st;
    seg->fd = fd;
    strcpy(seg->name, name);
    if (fstat(fd, &st) != 0)
        return vs__errno_status(errno, "fstat failed");
    seg->file_dev = st.st_dev;
    seg->file_ino = st.st_ino;
    return VS_OK;
}

int vs__segment_take_lock_fd(vs_segment *seg, int lock_fd, vs__proc_id opener)
{
    seg->lock_fd = lock_fd;
    if (lock_fd < 0)
        return vs__errno_status(errno, "cannot open a second descriptor of the segment for its locks");
    seg->owner_pid = opener.pid;
    seg->owner_epoch = opener.epoch;
    return VS_OK;
}

void vs__segment_finish_attach(vs_segment *seg, const vs__seg_header *h, void *map, size_t len,
                               bool at_creator)
{
    seg->map = map;
    seg->map_len = len;
    seg->at_creator_address = at_creator;
    seg->max_peers = h->max_peers;
    seg->flags = h->flags;
    seg->pool.segment = seg;
}

/* ---- opening ---- */

/* Another user's segment is taken only when asked (VS_OPEN_TRUST_OWNER), and only when its
 * group is one of this process's. The read-write open already proved the mode lets this user
 * in, but a file open to everyone through its "other" bits may be anyone's: /dev/shm lets
 * every user take a name first. Its owner could only give it a group the owner is in (chown
 * allows no other), so trusting it is trusting the members of that group. */
static int check_owner(const struct stat *st, uint32_t open_flags)
{
    if (st->st_uid == geteuid())
        return VS_OK;
    if (!(open_flags & VS_OPEN_TRUST_OWNER)) {
        vs__set_detail("segment is owned by another user, and VS_OPEN_TRUST_OWNER was not given");
        return VS_EPERM;
    }
    if (st->st_gid != getegid() && !group_member(st->st_gid)) {
        vs__set_detail("segment is owned by another user and its group is not one of this "
                       "process's groups (trusted only when shared through a group)");
        return VS_EPERM;
    }
    return VS_OK;
}

/* Reads the header without mapping (a truncated file cannot SIGBUS a pread). Every file a
 * name names is a complete segment or not one at all: creators give the name last. */
static int read_header(int fd, uint32_t open_flags, vs__seg_header *h, size_t *file_size)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return vs__errno_status(errno, "fstat failed");
    if (!S_ISREG(st.st_mode)) {
        vs__set_detail("not a regular file");
        return VS_ECORRUPT;
    }
    int rc = check_owner(&st, open_flags);
    if (rc != VS_OK)
        return rc;
    memset(h, 0, sizeof *h);
    ssize_t got = pread(fd, h, sizeof *h, 0);
    if (got < 0)
        return vs__errno_status(errno, "cannot read the segment header");
    if (got == 0) {
        vs__set_detail("not a varslot segment (an empty file)");
        return VS_ECORRUPT;
    }
    if ((size_t)got < sizeof h->magic || atomic_load_explicit(&h->magic, memory_order_relaxed) != VS__SEG_MAGIC) {
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
    if (h->checksum != vs__header_checksum(h)) {
        vs__set_detail("segment header checksum mismatch (scribbled over?)");
        return VS_ECORRUPT;
    }
    /* After the checksum: a scribbled field is corruption, not a newer format. */
    if (h->flags & ~VS_SEGMENT_REMOVE_WHEN_UNUSED) {
        vs__set_detail("segment uses flags this library does not know");
        return VS_EVERSION;
    }
    if (h->decay_ms < -1) {
        vs__set_detail("segment header has a decay below -1 (never)");
        return VS_ECORRUPT;
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

int vs_segment_open_flags(vs_segment *seg, const char *name, uint32_t flags)
{
    VS__NO_CANCEL;
    int rc = vs__segment_begin(seg, name);
    if (rc != VS_OK)
        return rc;
    if (flags & ~VS_OPEN_TRUST_OWNER) {
        vs__set_detail("unknown open flags");
        return VS_EINVAL;
    }
    if ((rc = vs__decay_env_check()) != VS_OK)
        return rc;
    int fd = vs__open_name(name, O_RDWR, 0);
    if (fd < 0 && errno == EACCES) {
        vs__set_detail("permission denied: the segment's mode does not let this user read and write it");
        return VS_EPERM;
    }
    if (fd < 0)
        return vs__errno_status(errno, "cannot open the segment");
    vs__seg_header h;
    size_t file_size = 0, pool_offset = 0;
    void *map = NULL;
    vs__proc_id me;
    if ((rc = vs__segment_record_file(seg, fd, name)) != VS_OK ||
        (rc = read_header(fd, flags, &h, &file_size)) != VS_OK ||
        (rc = validate_header(&h, file_size, &pool_offset)) != VS_OK ||
        (rc = vs__segment_take_lock_fd(seg, vs__lock_fd_open(seg, &me), me)) != VS_OK)
        goto fail;
    uintptr_t want = (uintptr_t)h.map_addr;
    bool sane = want && want % VS__PAGE == 0 && want < 0x800000000000ull;
    map = sane ? vs__map_at(fd, file_size, want) : NULL;
    bool at_creator = map != NULL;
    if (!map && !(map = vs__map_at(fd, file_size, 0))) {
        rc = vs__errno_status(errno, "cannot map the segment");
        goto fail;
    }
    rc = vs_pool_attach(&seg->pool, (vs_region){map, file_size}, pool_offset, h.classes,
                        h.class_count);
    if (rc != VS_OK) {
        vs__set_detail("pool class headers are corrupt");
        goto fail;
    }
    vs__segment_finish_attach(seg, &h, map, file_size, at_creator);
    return VS_OK;
fail:
    vs__segment_discard(seg, map, file_size);
    return rc;
}

int vs_segment_open(vs_segment *seg, const char *name) { return vs_segment_open_flags(seg, name, 0); }

int vs_segment_open_or_create_flags(vs_segment *seg, const char *name, const vs_segment_options *opts,
                                    uint32_t flags)
{
    if (flags & ~VS_OPEN_TRUST_OWNER) { /* checked before a create could succeed */
        vs__set_detail("unknown open flags");
        return VS_EINVAL;
    }
    int rc = VS_EINVAL;
    for (int attempt = 0; attempt < 8; attempt++) {
        rc = vs_segment_create(seg, name, opts);
        if (rc != VS_EEXIST)
            return rc;
        rc = vs_segment_open_flags(seg, name, flags);
        if (rc != VS_ENOENT) /* ENOENT: removed between the two calls; try again */
            return rc;
    }
    return rc;
}

int vs_segment_open_or_create(vs_segment *seg, const char *name, const vs_segment_options *opts)
{
    return vs_segment_open_or_create_flags(seg, name, opts, 0);
}

/* ---- closing ---- */

vs_pool *vs_segment_pool(vs_segment *seg) { return seg && seg->map ? &seg->pool : NULL; }

uint32_t vs_segment_max_peers(const vs_segment *seg) { return seg && seg->map ? seg->max_peers : 0; }

int vs_segment_check_name(const vs_segment *seg)
{
    if (!seg || !seg->map)
        return VS_EINVAL;
    if (!vs__name_still_names(seg->name, seg->file_dev, seg->file_ino)) {
        vs__set_detail("the segment's name was removed (or names another segment) since it was opened");
        return VS_ESTALE;
    }
    return VS_OK;
}

int vs_segment_mapping(const vs_segment *seg, void **addr, size_t *len, bool *at_creator)
{
    if (!seg || !seg->map)
        return VS_EINVAL;
    if (addr)
        *addr = seg->map;
    if (len)
        *len = seg->map_len;
    if (at_creator)
        *at_creator = seg->at_creator_address;
    return VS_OK;
}

/* seg->fd is the description mapped at open; a fork child keeps it (only lock descriptions
 * are replaced), so it is the one to map again. */
int vs_segment_remap_shared(vs_segment *seg, void *addr, size_t len)
{
    if (!seg || !seg->map)
        return VS_EINVAL;
    uintptr_t a = (uintptr_t)addr, lo = (uintptr_t)seg->map;
    if (!len || (a | len) % VS_SLOT_PAGE || a < lo || a - lo > seg->map_len || len > seg->map_len - (a - lo))
        return VS_EINVAL;
    if (mmap(addr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, seg->fd, (off_t)(a - lo)) ==
        MAP_FAILED) {
        int e = errno;
        vs__set_detail("cannot map the segment's pages again");
        errno = e;
        return VS_ESYS;
    }
    return VS_OK;
}

void vs_segment_close(vs_segment *seg)
{
    VS__NO_CANCEL;
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
    vs__segment_discard(seg, map, seg->map_len); /* closing drops every lock this segment held */
}
