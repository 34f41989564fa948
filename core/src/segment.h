/* The segment's on-disk format (header, peer table) and the kernel locks that stand for
 * peer liveness. Shared between segment.c, peers.c and reap.c. */
#ifndef VARSLOT_SEGMENT_H
#define VARSLOT_SEGMENT_H

#include "internal.h"

#include <pthread.h>
#include <sys/types.h>

/* Segment calls hold flags and locks across cancellation points (open, close, nanosleep): a
 * thread cancelled there would leave them held. VS__NO_CANCEL, first in such a call, holds
 * cancellation off until the call returns. */
static inline int vs__cancel_off(void)
{
    int old = PTHREAD_CANCEL_ENABLE;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    return old;
}
static inline void vs__cancel_restore(int *old) { pthread_setcancelstate(*old, NULL); }
#define VS__NO_CANCEL int vs__cancel_was __attribute__((cleanup(vs__cancel_restore))) = vs__cancel_off()

#define VS__SEG_MAGIC 0x00544f4c53524156ull /* "VARSLOT\0" */
/* Written first by a creator building a segment under a private name: such a file whose
 * creator no longer holds VS__LOCK_CREATING was left by a creator that died. */
#define VS__SEG_MAGIC_CREATING 0x3f544f4c53524156ull /* "VARSLOT?" */
#define VS__SEG_VERSION 5u /* 3: laps in the slot word; 4: share tables; 5: purging, decay */
#define VS__PAGE 4096u

/* Page 0 of the segment. Everything from version to classes is immutable after creation and
 * covered by the checksum; the magic is written last. */
typedef struct vs__seg_header {
    _Atomic uint64_t magic;
    uint32_t version;
    uint32_t header_size;
    uint64_t total_size;
    uint64_t map_addr;        /* where the creator mapped it; peers try the same address */
    uint64_t segment_id;      /* random, tells segments apart */
    uint64_t created_unix_ns;
    uint32_t creator_uid;
    int32_t creator_pid;
    uint32_t max_peers;
    uint32_t class_count;
    uint32_t flags;           /* VS_SEGMENT_* */
    int32_t decay_ms;         /* -1 never, 0 at the next pass (vs_segment_options.decay_ms) */
    uint64_t peers_offset;
    uint64_t pool_offset;
    uint64_t pool_size;
    vs_class_config classes[VS_MAX_CLASSES];
    uint64_t checksum;        /* FNV-1a over version .. classes */
    /* mutable statistics */
    _Atomic uint64_t peers_reaped;
    /* purge.c's passes, shared by every peer (hints: taken modulo, or ignored when far off) */
    _Atomic uint32_t purge_cursor;  /* pool-wide slot number the next pass starts at */
    _Atomic uint32_t purge_next_ms; /* no pass before (coarse monotonic ms, mod 2^32) */
} vs__seg_header;
_Static_assert(sizeof(vs__seg_header) <= VS__PAGE, "the header fits in one page");

/* One entry per peer id (entry i-1 for id i). The state word changes only by CAS. */
typedef struct vs__peer {
    _Atomic uint64_t state; /* enum vs_peer_state (8 bits) | epoch << 8 */
    _Atomic int32_t pid;
    uint32_t reserved0;
    _Atomic uint64_t joined_unix_ns;
    uint8_t reserved[40];
} vs__peer;
_Static_assert(sizeof(vs__peer) == 64, "peer entries are one cache line");

static inline uint8_t vs__peer_state(uint64_t s) { return (uint8_t)s; }
static inline uint64_t vs__peer_epoch(uint64_t s) { return s >> 8; }
static inline uint64_t vs__peer_make(uint8_t state, uint64_t epoch) { return state | epoch << 8; }

/* Byte offsets of the segment file used as OFD lock targets (advisory: they overlap the
 * header, the data there is never touched by the locks). The kernel drops a process's locks
 * when it dies, whatever its pid namespace, with no pid-reuse race. Locks are taken only on
 * descriptions that are never mapped (seg->lock_fd, seg->live_fd), see locks.c. */
#define VS__LOCK_CREATING 0            /* held by a creator until its segment has its name */
#define VS__LOCK_LIVE(id) ((off_t)(id))        /* held by peer id while it is joined */
#define VS__LOCK_REAP(id) ((off_t)(256 + (id))) /* held by whoever is reaping peer id */
#define VS__LOCK_JOIN 512 /* shared while joining; exclusive while removing the name */

/* Non-blocking lock/unlock of one byte; 0 on success, -1 with errno (EAGAIN: taken). */
int vs__lock_byte(int fd, off_t off);
int vs__lock_byte_shared(int fd, off_t off);
int vs__unlock_byte(int fd, off_t off);
/* 1 if another open file description holds a lock on the byte, 0 if not, -1 on error. */
int vs__byte_locked_elsewhere(int fd, off_t off);

/* A process, as fork children tell themselves from their parent. */
typedef struct vs__proc_id { int32_t pid; uint32_t epoch; } vs__proc_id;
vs__proc_id vs__self(void);
bool vs__proc_is_self(vs__proc_id p);

/* A new open file description of the file seg was opened as (-1, errno ESTALE: it cannot be
 * reached any more, its name now naming another file). */
int vs__reopen(const vs_segment *seg, int flags);
/* A description to carry locks: never mapped, closed in fork children (registered with no
 * fork in between). Of the file seg was opened as, or of a name. -1 with errno. */
int vs__lock_fd_open(const vs_segment *seg, vs__proc_id *opener);
int vs__lock_fd_open_name(const char *name, vs__proc_id *opener);
/* Closes it if opener's registration still stands (a fork child's handler closed it else). */
void vs__lock_fd_close(int fd, vs__proc_id opener);
/* Called first by every vs_segment_* call that uses the lock descriptions: a vs_segment
 * inherited through fork gets descriptions of its own and forgets its parent's peer id. */
int vs__segment_adopt(vs_segment *seg);
/* A per-vs_segment flag one thread holds at a time (seg->joining, seg->reaping); a fork child
 * that inherited it set takes it over. */
bool vs__flag_try(int *flag);
void vs__flag_take(int *flag);
void vs__flag_release(int *flag);
/* Takes a lock byte, retrying while another process holds it, for up to max_ms. */
int vs__lock_byte_wait(int fd, off_t off, bool shared, int max_ms);

/* Names: "/x" is a POSIX shm object, anything else a file path. */
int vs__open_name(const char *name, int flags, mode_t mode);
bool vs__is_shm_name(const char *name);
int vs__check_name(const char *name);
/* A vs_status for errno, with a detail for vs_last_detail. */
int vs__errno_status(int e, const char *what);
#define VS__PATH_MAX (sizeof ((vs_segment *)0)->name + sizeof "/dev/shm")
/* The path a name stands for ("/x": /dev/shm/x). */
void vs__name_path(const char *name, char *path, size_t size);
/* Whether name still names the file (dev, ino); the same for a path. */
bool vs__name_still_names(const char *name, uint64_t dev, uint64_t ino);
bool vs__name_path_is(const char *path, uint64_t dev, uint64_t ino);
/* purge.c: VARSLOT_DECAY_MS read and checked (VS_EINVAL with a detail if it is not a
 * number of ms >= -1), the decay a new segment records, the wait for this process's other
 * threads' purges (a leave, after marking its entry) and a leaving peer's purge (after its
 * reclaim, its entry still REAPING). */
int vs__decay_env_check(void);
int32_t vs__decay_for_new_segment(void);
void vs__purge_at_leave(vs_segment *seg);
void vs__purges_wait(void);
/* remove.c: the last peer out of a VS_SEGMENT_REMOVE_WHEN_UNUSED segment. */
void vs__segment_remove_if_unused(vs_segment *seg);
/* Private names in a segment name's directory: a name being removed moves to
 * VS__REMOVING<random>, a segment being built without O_TMPFILE is made as VS__MAKING<random>.
 * vs__sweep_private_names removes those whose remover or creator died. */
#define VS__REMOVING ".vsrm-"
#define VS__MAKING ".vsmk-"
void vs__private_path(const char *name, const char *prefix, char *out, size_t size);
void vs__sweep_private_names(const char *name);

static inline vs__seg_header *vs__header(const vs_segment *seg) { return seg->map; }
static inline vs__proc_id vs__segment_owner(const vs_segment *seg)
{
    return (vs__proc_id){__atomic_load_n(&seg->owner_pid, __ATOMIC_ACQUIRE),
                         __atomic_load_n(&seg->owner_epoch, __ATOMIC_ACQUIRE)};
}
static inline vs__peer *vs__peer_entry(const vs_segment *seg, uint8_t id)
{
    return (vs__peer *)((uint8_t *)seg->map + VS__PAGE) + (id - 1);
}

/* segment.c, for create.c: setting up a vs_segment, and mapping it. */
void vs__segment_reset(vs_segment *seg);
/* The start of an open or a create: seg reset (never left uninitialised), name checked. */
int vs__segment_begin(vs_segment *seg, const char *name);
/* Gives up a half-made vs_segment: its mapping and descriptors. */
void vs__segment_discard(vs_segment *seg, void *map, size_t len);
/* seg->fd, the name, and the identity of the file (device, inode). */
int vs__segment_record_file(vs_segment *seg, int fd, const char *name);
/* seg->lock_fd (from vs__lock_fd_open*: -1 with errno is an error) and its opener. */
int vs__segment_take_lock_fd(vs_segment *seg, int lock_fd, vs__proc_id opener);
/* Everything that bounds a loop or an access comes from h, the private copy this process
 * validated (or wrote), never again from the shared header. */
void vs__segment_finish_attach(vs_segment *seg, const vs__seg_header *h, void *map, size_t len,
                               bool at_creator);
extern const int vs__preferred_attempts;
/* A per-name address in a range that programs rarely use, so every peer is likely to find it
 * free and raw pointers stay portable. */
uintptr_t vs__preferred_address(const char *name, int attempt);
/* mmap, at addr exactly (MAP_FIXED_NOREPLACE) or anywhere (0); NULL with errno. */
void *vs__map_at(int fd, size_t len, uintptr_t addr);
uint64_t vs__header_checksum(const vs__seg_header *h);

/* Geometry of a segment for these configs; VS_OK or VS_EINVAL. */
int vs__segment_geometry(uint32_t max_peers, const vs_class_config *configs, size_t n,
                         size_t *pool_offset, size_t *pool_size, size_t *total);

/* The reason behind this thread's last error, for messages (static strings only). */
void vs__set_detail(const char *why);

#endif
