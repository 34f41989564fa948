/* The segment's on-disk format (header, peer table) and the kernel locks that stand for
 * peer liveness. Shared between segment.c, peers.c and reap.c. */
#ifndef VARSLOT_SEGMENT_H
#define VARSLOT_SEGMENT_H

#include "internal.h"

#include <sys/types.h>

#define VS__SEG_MAGIC 0x00544f4c53524156ull /* "VARSLOT\0" */
#define VS__SEG_VERSION 2u /* 2: flags in the header */
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
    uint32_t reserved;
    uint64_t peers_offset;
    uint64_t pool_offset;
    uint64_t pool_size;
    vs_class_config classes[VS_MAX_CLASSES];
    uint64_t checksum;        /* FNV-1a over version .. classes */
    /* mutable statistics */
    _Atomic uint64_t peers_reaped;
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
 * when it dies, whatever its pid namespace, with no pid-reuse race. */
#define VS__LOCK_CREATING 0            /* held by the creator until the magic is written */
#define VS__LOCK_LIVE(id) ((off_t)(id))        /* held by peer id while it is joined */
#define VS__LOCK_REAP(id) ((off_t)(256 + (id))) /* held by whoever is reaping peer id */

/* Non-blocking lock/unlock of one byte; 0 on success, -1 with errno (EAGAIN: taken). */
int vs__lock_byte(int fd, off_t off);
int vs__unlock_byte(int fd, off_t off);
/* 1 if another open file description holds a lock on the byte, 0 if not, -1 on error. */
int vs__byte_locked_elsewhere(int fd, off_t off);

static inline vs__seg_header *vs__header(const vs_segment *seg) { return seg->map; }
static inline vs__peer *vs__peer_entry(const vs_segment *seg, uint8_t id)
{
    return (vs__peer *)((uint8_t *)seg->map + VS__PAGE) + (id - 1);
}

/* Geometry of a segment for these configs; VS_OK or VS_EINVAL. */
int vs__segment_geometry(uint32_t max_peers, const vs_class_config *configs, size_t n,
                         size_t *pool_offset, size_t *pool_size, size_t *total);

/* The reason behind this thread's last error, for messages (static strings only). */
void vs__set_detail(const char *why);

#endif
