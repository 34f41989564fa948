/* varslot: a lock-free size-class slot pool in a shared-memory segment.
 *
 * Cooperating processes attach one segment; any of them allocates a slot, writes it,
 * passes its 64-bit handle to another process, which reads it in place and frees it.
 * The core never calls malloc, so it can be used from inside a malloc implementation. */
#ifndef VARSLOT_H
#define VARSLOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VS_API __attribute__((visibility("default")))

#define VS_MAX_CLASSES 64           /* class_idx is a uint8_t; handles carry 6 bits of it */
#define VS_MAX_PEERS 255            /* peer ids are 1..max_peers; 0 means "host / no peer" */
#define VS_DEFAULT_MAX_PEERS 64
#define VS_MAX_SLOTS_PER_CLASS (1u << 24) /* handles carry 24 bits of slot_idx */
#define VS_SLOT_ALIGN 64            /* every slot starts 64-byte aligned ...                  */
#define VS_SLOT_PAGE 4096           /* ... and slots of 4 KiB or more start page aligned      */

enum vs_status {
    VS_OK = 0,
    VS_EINVAL = -1,      /* invalid argument or configuration */
    VS_ENOSPC = -2,      /* region too small for the layout */
    VS_EDOUBLEFREE = -3, /* slot is not allocated at that generation (double or stale free) */
    VS_ECORRUPT = -4,    /* segment or pool metadata failed validation */
    VS_EVERSION = -5,    /* segment written by a newer, incompatible varslot */
    VS_ENOENT = -6,      /* no such segment */
    VS_EEXIST = -7,      /* segment already exists */
    VS_EPERM = -8,       /* not permitted (other user's segment, not the owner, symlink) */
    VS_EFULL = -9,       /* no free peer entry */
    VS_ESYS = -10,       /* system call failed; errno tells which */
    VS_ESTALE = -11,     /* handle refers to a slot that has since been freed or reused */
    VS_ENOTJOINED = -12, /* operation needs a joined peer */
    VS_EBUSY = -13,      /* segment is still being created by another process */
};
VS_API const char *vs_strerror(int status);
/* Why this thread's last segment call failed, in more words than its status (never NULL). */
VS_API const char *vs_last_detail(void);

typedef struct vs_region { void *base; size_t len; } vs_region;
typedef struct vs_class_config { uint32_t slot_size; uint32_t slot_count; } vs_class_config;
typedef struct vs_slot_ref {
    uint8_t class_idx;
    uint8_t extent_idx; /* always 0: extents are not implemented */
    /* The slot's index in its class, plus slot_count times its lap: how many times the
     * slot's 32-bit generation has wrapped (0 for its first 2^32 - 1 allocations). */
    uint32_t slot_idx;
    uint32_t generation; /* 1 on a slot's first allocation, +1 on each one after */
} vs_slot_ref;
typedef struct vs_class_offsets { size_t meta_offset; size_t data_offset; } vs_class_offsets;
typedef struct vs_layout {
    size_t total_size;
    size_t class_count;
    vs_class_offsets class_offsets[VS_MAX_CLASSES];
} vs_layout;

/* RETIRED: the slot used up its generations (see "Handles" in the README) and is never handed
 * out again, so that no stale handle can ever match it. SHARED: published read-only to a set
 * of readers (vs_pool_share); it goes back to the pool when the last of them releases it.
 * SHARING: its owner is writing the readers in, for a moment (still the owner's). PURGING: a
 * free slot whose pages a peer (`owner`) is giving back to the system, for a moment; FREE
 * again after, or when that peer is reaped (see vs_segment_trim). */
enum vs_slot_state { VS_SLOT_FREE = 0, VS_SLOT_ALLOCATED = 1, VS_SLOT_RETIRED = 2, VS_SLOT_SHARED = 3,
                     VS_SLOT_SHARING = 4, VS_SLOT_PURGING = 5 };
typedef struct vs_slot_info {
    uint32_t state;      /* enum vs_slot_state; any other value means the word was scribbled on */
    uint8_t owner;       /* peer id, 0 when free; of a shared slot, the peer that published it */
    uint32_t generation;
    uint32_t lap;        /* times the generation wrapped */
    uint32_t tag;        /* caller-defined label, see vs_pool_set_tag */
    uint32_t size;       /* bytes requested when the slot was allocated */
} vs_slot_info;

typedef struct vs_segment_options {
    const vs_class_config *classes; /* NULL: VS_DEFAULT_CLASSES */
    size_t class_count;
    uint32_t max_peers;             /* 0: VS_DEFAULT_MAX_PEERS */
    uint32_t mode;                  /* 0: 0600; set as given, whatever the umask. The group is
                                     * the creator's effective group (its directory's if setgid) */
    uint32_t flags;                 /* VS_SEGMENT_* below */
    int32_t decay_ms;               /* read only with VS_SEGMENT_DECAY (1.2; it fills what was
                                     * padding, so the struct keeps its size) */
} vs_segment_options;

/* The last peer to leave removes the segment's name (a joined peer's vs_segment_close that
 * finds no other peer joined): for segments a pipeline makes for itself. Recorded in the
 * segment, so it holds whichever process leaves last; in a sticky directory such as /dev/shm
 * only the owner may remove a name, so a peer of another user that leaves last leaves it. */
#define VS_SEGMENT_REMOVE_WHEN_UNUSED 1u
/* opts->decay_ms is set: how long a free slot's pages stay idle before a peer gives them back
 * to the system (0: at the next pass, -1: never). Without it: VARSLOT_DECAY_MS of the
 * creating process, else VS_DEFAULT_DECAY_MS. Recorded in the segment; a process whose
 * VARSLOT_DECAY_MS is set uses that for every segment instead. (1.2) */
#define VS_SEGMENT_DECAY 2u
#define VS_DEFAULT_DECAY_MS 10000

/* Default classes, sized for media buffers and large heap blocks:
 * 64 KiB x 256, 256 KiB x 128, 1 MiB x 64, 4 MiB x 32, 16 MiB x 8 (about 400 MiB of
 * address space; tmpfs only backs the pages that are touched). */
#define VS_DEFAULT_CLASSES_INIT { {64u << 10, 256}, {256u << 10, 128}, {1u << 20, 64}, \
                                  {4u << 20, 32}, {16u << 20, 8} }
#define VS_DEFAULT_CLASS_COUNT 5

/* A pool as this process sees it: everything here is computed locally at init/attach and
 * never re-read from shared memory, so a peer that scribbles over the segment cannot steer
 * this process out of bounds. Embed it; treat the fields as private. */
struct vs_pool_class {
    uint32_t slot_size;
    uint32_t slot_count;
    size_t stride;
    void *meta;          /* slot_count x 16-byte slot words */
    void *bitmap;        /* ceil(slot_count / 64) words: set bit = probably free */
    size_t data_from_meta; /* slot 0 is this far after meta (see vs_pool_class_data) */
    void *header;        /* the class header in the segment (search hint lives there) */
    uint32_t bitmap_words;
    uint32_t index_base; /* slots of the classes before this one: a pool-wide slot number */
    uint32_t laps;       /* how many times a slot's generation may wrap before it retires */
    uint32_t ref_span;   /* slot_count x laps: refs' slot_idx is below this */
};
struct vs_pool {
    uint8_t *base;       /* region base */
    size_t region_len;
    size_t base_offset;
    size_t class_count;
    uint32_t attach_id;  /* process-unique: keys this thread's slot cache */
    struct vs_segment *segment; /* set when the pool lives in a segment: exhaustion reaps */
    uint8_t *vg_held;    /* under Valgrind: which slots this process holds as blocks */
    struct vs_pool_class classes[VS_MAX_CLASSES];
};
typedef struct vs_pool vs_pool;

/* A class's first slot. Computed, not stored: a pointer to slot 0 kept in the pool would look
 * to Valgrind's leak check like a reference to whatever block lives there. */
static inline uint8_t *vs_pool_class_data(const struct vs_pool_class *c)
{
    return (uint8_t *)c->meta + c->data_from_meta;
}

/* A segment as this process has it open. Its pool points back at it: do not move or copy
 * a vs_segment between create/open and close. */
struct vs_segment {
    vs_pool pool;
    void *map;           /* mapped address */
    size_t map_len;
    int fd;              /* the description the segment is mapped from; it carries no lock */
    int lock_fd;         /* never mapped: liveness probes, and the creating/reaping/removing locks */
    int live_fd;         /* never mapped: holds this peer's liveness lock while joined, else -1 */
    uint8_t peer_id;     /* 0 until joined */
    bool at_creator_address; /* raw pointers are portable to peers mapped at the same place */
    uint32_t max_peers;  /* as validated at open: never re-read from the segment */
    uint32_t flags;      /* VS_SEGMENT_*, as validated at open */
    int reaping;         /* one reaper at a time per vs_segment (threads share its locks) */
    int joining;         /* one joiner at a time per vs_segment; the others wait for its id */
    uint64_t file_dev;   /* the file it was opened as: descriptors reopened later must be it */
    uint64_t file_ino;
    int32_t owner_pid;   /* the process that opened the lock descriptions: a fork child */
    uint32_t owner_epoch; /* sees it is not that process and takes descriptions of its own */
    uint64_t last_auto_reap_ns;
    char name[256];
};
typedef struct vs_segment vs_segment;

/* ---- pool ---- */
VS_API int vs_pool_layout(const vs_class_config *configs, size_t n, vs_layout *out);
VS_API size_t vs_pool_required_size(const vs_class_config *configs, size_t n); /* 0 = invalid configs */
VS_API int vs_pool_discover_configs(vs_region region, size_t base_offset, uint32_t num_classes,
                             vs_class_config *out, const char **why);
VS_API int vs_pool_init(vs_pool *pool, vs_region region, size_t base_offset,
                 const vs_class_config *configs, size_t n);
VS_API int vs_pool_attach(vs_pool *pool, vs_region region, size_t base_offset,
                   const vs_class_config *configs, size_t n);
/* Before unmapping a pool's region: this process is done with it (memory checkers forget the
 * blocks it held there). vs_segment_close does this itself. */
VS_API void vs_pool_detach(vs_pool *pool);
VS_API bool vs_pool_allocate(const vs_pool *pool, uint32_t size, uint8_t owner_peer, vs_slot_ref *out);
VS_API int vs_pool_free(const vs_pool *pool, vs_slot_ref ref); /* VS_OK, VS_EDOUBLEFREE, VS_EINVAL */
VS_API void *vs_pool_slot_data(const vs_pool *pool, const vs_slot_ref *ref); /* NULL: invalid or stale ref */
VS_API size_t vs_pool_class_count(const vs_pool *pool);
VS_API uint32_t vs_pool_slot_size(const vs_pool *pool, size_t class_idx); /* 0 for a bad index */
VS_API void vs_pool_reclaim_peer_slots(const vs_pool *pool, uint8_t peer_id);
VS_API int vs_pool_transfer(const vs_pool *pool, vs_slot_ref ref, uint8_t from_peer, uint8_t to_peer);
/* Free only if owner still owns it (one CAS): VS_EPERM when it was given away in between. */
VS_API int vs_pool_free_owned(const vs_pool *pool, vs_slot_ref ref, uint8_t owner);
/* The sender's side of a hand-over: this process gave the slot to another and will not touch
 * it again. Only memory checkers care (under Valgrind the block stops being this process's,
 * so it is neither a leak here nor readable); otherwise a no-op. */
VS_API void vs_pool_handed_over(const vs_pool *pool, vs_slot_ref ref);
VS_API int vs_pool_slot_info(const vs_pool *pool, uint8_t class_idx, uint32_t slot_idx, vs_slot_info *out);

/* One slot, many readers. The owner of an allocated slot publishes it read-only to n readers
 * (peer ids, 1 <= n <= VS_MAX_READERS; a peer may appear more than once, the owner may be one
 * of them); each reader's vs_pool_release gives one of its references back, and the release
 * that drops the last one frees the slot. Every step is one CAS, so racing releases and
 * releases racing a reap of a dead reader each drop exactly one reference. In a segment every
 * reader must be a joined peer (VS_ENOTJOINED else); one that dies, or leaves, has its
 * references dropped by the reap (or its leave), never a live reader's. After sharing, the
 * owner holds the slot only as one of its readers: it no longer writes it.
 * vs_pool_share: VS_OK; VS_ESTALE (not allocated at ref's generation), VS_EPERM (owner does not
 * own it), VS_EINVAL (bad ref, n or reader id), VS_ENOTJOINED (a reader is not a joined peer). */
#define VS_MAX_READERS 16
VS_API int vs_pool_share(const vs_pool *pool, vs_slot_ref ref, uint8_t owner, const uint8_t *readers,
                         size_t n);
/* Drops one of reader's references to a shared slot: VS_OK, VS_EDOUBLEFREE when reader holds
 * none (released already, or the slot was reused), VS_EINVAL for a ref out of range. */
VS_API int vs_pool_release(const vs_pool *pool, vs_slot_ref ref, uint8_t reader);
/* A shared slot's bytes for one of its readers, read-only; NULL unless the slot is shared at
 * ref's generation and reader holds a reference. */
VS_API const void *vs_pool_shared_data(const vs_pool *pool, const vs_slot_ref *ref, uint8_t reader);
/* The readers of a shared slot as this instant sees them: VS_OK and up to VS_MAX_READERS peer
 * ids in out (*n of them), VS_ESTALE when ref's slot is not shared at its generation. */
VS_API int vs_pool_share_readers(const vs_pool *pool, vs_slot_ref ref, uint8_t *out, size_t *n);

/* Beside the reference API. */
VS_API int vs_pool_set_tag(const vs_pool *pool, vs_slot_ref ref, uint32_t tag); /* label a slot you hold */
VS_API int vs_pool_set_size(const vs_pool *pool, vs_slot_ref ref, uint32_t size); /* bytes in use, <= slot size */
VS_API int vs_pool_ref_of(const vs_pool *pool, const void *ptr, vs_slot_ref *out); /* ptr anywhere in an allocated slot */
VS_API uint32_t vs_pool_slot_count(const vs_pool *pool, size_t class_idx);
/* Where a slot is, whatever its state: for callers that manage the slot's pages themselves
 * (a malloc replacement may swap private copies in under them in a fork child). */
typedef struct vs_slot_location {
    uint8_t class_idx;
    uint32_t slot_idx;   /* in its class: below vs_pool_slot_count (no lap, unlike a ref's) */
    uint32_t pool_slot;  /* pool-wide: the slots of the classes before, plus slot_idx */
    void *start;         /* the slot's first byte */
    size_t span;         /* start to the next slot's start: the slot size plus its padding */
} vs_slot_location;
/* The slot whose span holds ptr (padding after a slot included); VS_EINVAL outside every
 * class's slot array. */
VS_API int vs_pool_locate(const vs_pool *pool, const void *ptr, vs_slot_location *out);
/* The same for a slot given by index (slot_idx below vs_pool_slot_count); VS_EINVAL else. */
VS_API int vs_pool_locate_slot(const vs_pool *pool, uint8_t class_idx, uint32_t slot_idx,
                               vs_slot_location *out);
VS_API uint32_t vs_pool_total_slots(const vs_pool *pool); /* every class's slots: pool_slot < this */
VS_API unsigned vs_pool_republish_free(const vs_pool *pool); /* rebuild the free index from the slot words */

/* Handles: one uint64_t, generation in the high half. 0 is never a valid handle. A ref that
 * does not fit (class >= 64, extent >= 4, slot >= 2^24, generation 0) packs to 0. */
VS_API uint64_t vs_slot_ref_pack(vs_slot_ref ref);
VS_API vs_slot_ref vs_slot_ref_unpack(uint64_t handle);

/* "64K", "1M", "4096": bytes, with an optional K, M or G suffix (powers of 1024). */
VS_API int vs_parse_size(const char *s, uint64_t *out);
/* "64K:256,1M:64": classes as SIZE:COUNT items, sizes strictly ascending. On VS_EINVAL, *why
 * says what is wrong. Neither function allocates. */
VS_API int vs_parse_classes(const char *spec, vs_class_config *out, size_t *n, const char **why);

/* ---- segment ----
 * Threads: vs_segment_join, vs_segment_reap, vs_segment_peer_info, vs_segment_pool and
 * vs_segment_max_peers may be called by any number of threads at once, on one vs_segment,
 * together with the pool calls (threads joining one vs_segment at once all get the one peer
 * id it joins as). vs_segment_leave and vs_segment_close end what other threads rely on:
 * call them when no other thread uses that vs_segment (and for leave: no longer allocates
 * with its peer id). create/open initialise a vs_segment nobody else uses yet.
 *
 * fork: a child needs nothing. Its inherited vs_segment keeps its mapping, and at its first
 * segment call takes descriptors of its own and forgets the parent's peer id (join again
 * to allocate as a peer); the parent's liveness and reaping locks are closed in the child as
 * it forks (pthread_atfork, registered when the library loads), so a parent killed later is
 * seen dead whatever its children do. A program's fork handlers may use segments; a call
 * from one that runs inside varslot's own fork steps (registered before varslot loaded)
 * fails with VS_ESYS (EDEADLK) rather than wait for itself. A child that forks without
 * fork()'s handlers (a raw clone) keeps the parent's locks until its first segment call or
 * vs_segment_after_fork_child. Segment calls hold thread cancellation off while they run. */
VS_API int vs_segment_create(vs_segment *seg, const char *name, const vs_segment_options *opts); /* "/x" = POSIX shm, else a file path */
VS_API int vs_segment_open(vs_segment *seg, const char *name);
VS_API int vs_segment_open_or_create(vs_segment *seg, const char *name, const vs_segment_options *opts);
/* The same, with VS_OPEN_* flags: how this process opens the segment (never recorded in it).
 * VS_EINVAL for an unknown flag. */
VS_API int vs_segment_open_flags(vs_segment *seg, const char *name, uint32_t flags);
VS_API int vs_segment_open_or_create_flags(vs_segment *seg, const char *name,
                                           const vs_segment_options *opts, uint32_t flags);
/* Accept a segment another user owns when it is shared through a group: its mode lets this
 * user read and write it, and its group is this process's effective or a supplementary
 * group. Without the flag (the default) such a segment is VS_EPERM. One open to this user
 * only through its "other" bits is refused even with it: any user may have made it (a shared
 * /dev/shm lets anyone take a name first). Trusting it means trusting every member of the
 * group as a peer (README, "Trust model"): they may take or spoil slots; the core's checks
 * of segment memory still keep their scribbles from crashing this process. */
#define VS_OPEN_TRUST_OWNER 1u
/* VS_ESTALE: the segment's name was removed since it was opened (nobody may join it now):
 * close it and open the name again. */
VS_API int vs_segment_join(vs_segment *seg, uint8_t *peer_id);
VS_API int vs_segment_leave(vs_segment *seg);
VS_API int vs_segment_reap(vs_segment *seg, unsigned *reaped);
VS_API vs_pool *vs_segment_pool(vs_segment *seg);
/* Leaves (if joined here), then, for a VS_SEGMENT_REMOVE_WHEN_UNUSED segment whose last peer
 * this was, removes the name, never while another peer is joined or joining, and only if the
 * name still names this segment. */
VS_API void vs_segment_close(vs_segment *seg);
/* Removes the name of a varslot segment (never another kind of file, nor one still being
 * created: VS_EPERM, VS_EBUSY). Peers that have it mapped keep using it; no one can join it
 * from then on. */
VS_API int vs_segment_unlink(const char *name);
/* In a fork child: what the first segment call does anyway (see above), now. VS_ESTALE if
 * the descriptors cannot be reopened (no /proc, and the name now names another file). */
VS_API int vs_segment_after_fork_child(vs_segment *seg);

enum vs_peer_state { VS_PEER_FREE = 0, VS_PEER_ALIVE = 1, VS_PEER_REAPING = 2 };
typedef struct vs_peer_info {
    uint8_t id;
    uint32_t state;      /* enum vs_peer_state */
    bool live;           /* its kernel liveness lock is held */
    int32_t pid;
    uint64_t joined_unix_ns;
} vs_peer_info;
VS_API int vs_segment_peer_info(vs_segment *seg, uint8_t peer_id, vs_peer_info *out);
/* vs_segment_peer_info without the liveness probe (`live` is always false): the entry's state,
 * pid and join time, read from the segment with no system call. For a check made per message,
 * such as a consumer's "is peer id N still the join of the process I greeted". (1.1) */
VS_API int vs_segment_peer_identity(const vs_segment *seg, uint8_t peer_id, vs_peer_info *out);
VS_API uint32_t vs_segment_max_peers(const vs_segment *seg);
/* Giving memory back. A free slot of a class of page-sized slots or larger whose pages have
 * been idle for the decay time is purged: its pages are removed from the segment file
 * (tmpfs frees them; the slot reads as zeros when next handed out). Purging is an ownership
 * change like any other (FREE -> PURGING by one CAS, the pages removed, back to FREE), so a
 * slot in use is never purged and a peer killed mid-purge leaves a slot its reaping returns.
 * Joined peers purge on their own slow paths (a free of a large slot, an allocation that
 * missed its cache, leaving: the last peer out purges every free slot), a bounded amount at
 * a time, with no thread of their own; vs_segment_trim purges every free slot now, whatever
 * the decay. *returned (may be NULL): bytes given back. VS_ENOTJOINED unless joined; VS_ESYS
 * when the file system cannot remove pages (errno). (1.2) */
VS_API int vs_segment_trim(vs_segment *seg, uint64_t *returned);
/* The decay this process applies to seg, in ms (-1: never), as set above. (1.2) */
VS_API int32_t vs_segment_decay_ms(const vs_segment *seg);
/* Whether the segment's name still names this segment: VS_OK, VS_ESTALE once it was removed
 * or names another file (the mapping stays usable), VS_EINVAL for a segment not open. For
 * watchers such as `varslot top`; one stat of the name, no lock. */
VS_API int vs_segment_check_name(const vs_segment *seg);
/* The segment's mapping in this process: *addr, *len (any may be NULL), and whether it is at
 * its creator's address (raw pointers are then portable to peers mapped there too). VS_EINVAL
 * for a segment that is not open. */
VS_API int vs_segment_mapping(const vs_segment *seg, void **addr, size_t *len, bool *at_creator);
/* Maps the segment's own shared pages again over [addr, addr+len), page aligned and inside the
 * mapping: undoes a private copy put there (mremap over it, say). VS_EINVAL out of bounds or
 * unaligned, VS_ESYS when mmap fails (the range is then as it was). */
VS_API int vs_segment_remap_shared(vs_segment *seg, void *addr, size_t len);

#ifdef __cplusplus
}
#endif
#endif
