/* Shared-memory structures of the pool and the encoding of a slot's ownership word.
 * Everything here that lives in the segment is read as hostile: values come out of shared
 * memory only to be compared or bounds-checked against the layout this process computed. */
#ifndef VARSLOT_INTERNAL_H
#define VARSLOT_INTERNAL_H

#include "varslot.h"

#include <stdatomic.h>
#include <stdint.h>

#define VS__LIKELY(x) __builtin_expect(!!(x), 1)
#define VS__UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---- the slot word: the only truth about who owns a slot ----
 * bits  0..31 generation (of the current or the last allocation)
 * bits 32..39 owner peer (0 when free)
 * bits 40..43 state (enum vs_slot_state)
 * bits 44..63 lap: how many times the generation wrapped. A ref names the slot as
 *             slot_idx = lap * slot_count + index, so a handle from 2^32 allocations ago
 *             no longer matches; a slot whose laps run out retires (see vs__class_laps). */
typedef struct vs__slot_meta {
    _Atomic uint64_t word;
    _Atomic uint32_t tag;  /* caller-defined label; informational, written after the claim */
    _Atomic uint32_t size; /* bytes requested; informational, written after the claim */
} vs__slot_meta;
_Static_assert(sizeof(vs__slot_meta) == 16, "16 bytes of metadata per slot");

#define VS__LAP_BITS 20
static inline uint32_t vs__word_gen(uint64_t w) { return (uint32_t)w; }
static inline uint8_t vs__word_owner(uint64_t w) { return (uint8_t)(w >> 32); }
static inline uint8_t vs__word_state(uint64_t w) { return (uint8_t)(w >> 40) & 15u; }
static inline uint32_t vs__word_lap(uint64_t w) { return (uint32_t)(w >> 44); }
static inline uint64_t vs__word_make(uint32_t gen, uint8_t owner, uint8_t state, uint32_t lap)
{
    return (uint64_t)gen | (uint64_t)owner << 32 | (uint64_t)(state & 15u) << 40 | (uint64_t)lap << 44;
}
/* The same word with another owner and state: generation and lap stay. */
static inline uint64_t vs__word_with(uint64_t w, uint8_t owner, uint8_t state)
{
    return vs__word_make(vs__word_gen(w), owner, state, vs__word_lap(w));
}
/* How many laps a class's slots get: as many as its refs can tell apart in the handle's 24
 * slot bits, at most 2^20. A slot's generations last (laps x 2^32 - 1) allocations. */
static inline uint32_t vs__class_laps(uint32_t slot_count)
{
    uint32_t laps = VS_MAX_SLOTS_PER_CLASS / slot_count;
    return laps < (1u << VS__LAP_BITS) ? laps : 1u << VS__LAP_BITS;
}

/* ---- the share entry: who reads a shared slot (share.c) ----
 * One per slot, in its class's share table (between the bitmap and the slot data), touched
 * only by sharing: a class never shared never has those pages backed. While the slot word says
 * SHARED at {gen, lap}, `live` says which seats still hold a reference:
 * bits  0..31 generation, bits 32..47 the lap's low 16 bits (of the share this entry is for),
 * bits 48..63 one bit per seat still held; seat[i] is the reader peer of seat i.
 * The seats are written by the owner while its word says SHARING (its CAS from ALLOCATED made
 * it the only writer), before the CAS that makes it SHARED; every change after that is one
 * CAS on `live` that compares its {gen, lap}, so a reader of an earlier share of the slot can
 * never clear a seat of a later one. */
#define VS__SEATS 16
_Static_assert(VS__SEATS == VS_MAX_READERS, "one seat per reader");
typedef struct vs__share {
    _Atomic uint64_t live;
    _Atomic uint8_t seat[VS__SEATS];
    _Atomic uint64_t idle; /* purge.c: since when the slot is free, a hint; not sharing's */
} vs__share;
_Static_assert(sizeof(vs__share) == 32, "32 bytes per share entry");
static inline uint64_t vs__live_make(uint32_t gen, uint32_t lap, uint16_t seats)
{
    return (uint64_t)gen | (uint64_t)(lap & 0xffffu) << 32 | (uint64_t)seats << 48;
}
static inline uint16_t vs__live_seats(uint64_t live) { return (uint16_t)(live >> 48); }
/* Whether live belongs to the share of slot word w (its generation and lap). */
static inline bool vs__live_is_of(uint64_t live, uint64_t w)
{
    return (live & 0xffffffffffffull) == vs__live_make(vs__word_gen(w), vs__word_lap(w), 0);
}

/* ---- class header: 64 bytes per class at the start of the pool ---- */
#define VS__CLASS_MAGIC 0x4c435356u /* "VSCL" */
typedef struct vs__class_header {
    uint32_t magic;          /* written last by init */
    uint32_t class_idx;
    uint32_t slot_size;
    uint32_t slot_count;
    uint64_t meta_offset;    /* all offsets relative to the pool base */
    uint64_t bitmap_offset;
    uint64_t data_offset;
    uint64_t stride;
    _Atomic uint32_t search_hint; /* bitmap word to start searching at; a hint, taken modulo */
    _Atomic uint32_t parked;      /* set when a free parks a slot in a thread cache, so an
                                     allocation republishes before falling to a larger class */
    uint32_t reserved[2];
} vs__class_header;
_Static_assert(sizeof(vs__class_header) == 64, "class headers are 64 bytes");

/* Layout of one class, computed locally from validated configs. */
typedef struct vs__class_layout {
    size_t meta_offset, bitmap_offset, share_offset, data_offset, stride;
    uint32_t bitmap_words;
} vs__class_layout;

/* Validates configs and computes every class's offsets; VS_OK or VS_EINVAL. */
int vs__layout_compute(const vs_class_config *configs, size_t n, vs__class_layout *classes,
                       size_t *total, const char **why);

/* ---- the pool's hot paths ---- */
/* The class and slot a ref names, with the lap its slot_idx carries; NULL when the ref is out
 * of this pool's range. */
static inline const struct vs_pool_class *vs__pool_class(const vs_pool *pool, vs_slot_ref ref,
                                                         uint32_t *idx, uint32_t *lap)
{
    if (VS__UNLIKELY(ref.class_idx >= pool->class_count || ref.extent_idx != 0))
        return NULL;
    const struct vs_pool_class *cls = &pool->classes[ref.class_idx];
    if (VS__LIKELY(ref.slot_idx < cls->slot_count)) {
        *idx = ref.slot_idx;
        *lap = 0;
        return cls;
    }
    if (ref.slot_idx >= cls->ref_span) /* past its class's last lap */
        return NULL;
    *idx = ref.slot_idx % cls->slot_count;
    *lap = ref.slot_idx / cls->slot_count;
    return cls;
}
static inline vs__slot_meta *vs__meta(const struct vs_pool_class *cls, uint32_t idx)
{
    return (vs__slot_meta *)cls->meta + idx;
}

static inline uint8_t *vs__slot_data(const struct vs_pool_class *cls, uint32_t idx)
{
    return vs_pool_class_data(cls) + (size_t)idx * cls->stride;
}
/* The slot word a ref names (and its index and lap), or NULL when the ref is out of range. */
static inline vs__slot_meta *vs__ref_meta(const vs_pool *pool, vs_slot_ref ref,
                                          const struct vs_pool_class **cls, uint32_t *idx,
                                          uint32_t *lap)
{
    *cls = pool ? vs__pool_class(pool, ref, idx, lap) : NULL;
    return *cls ? vs__meta(*cls, *idx) : NULL;
}
/* Whether a slot word says "allocated, at this generation and lap": what a live ref must see. */
static inline bool vs__word_is_live(uint64_t w, uint32_t gen, uint32_t lap)
{
    return (w & ~((uint64_t)0xff << 32)) == vs__word_make(gen, 0, VS_SLOT_ALLOCATED, lap);
}
/* The slot_idx a ref carries for slot idx on lap lap. */
static inline uint32_t vs__ref_slot_idx(const struct vs_pool_class *cls, uint32_t idx, uint32_t lap)
{
    return idx + lap * cls->slot_count;
}
static inline _Atomic uint64_t *vs__bitmap(const struct vs_pool_class *cls)
{
    return (_Atomic uint64_t *)cls->bitmap;
}
/* The share table follows the bitmap, on the next cache line (layout.c). */
static inline vs__share *vs__share_entry(const struct vs_pool_class *cls, uint32_t idx)
{
    size_t bitmap_bytes = ((size_t)cls->bitmap_words * 8 + 63) & ~(size_t)63;
    return (vs__share *)((uint8_t *)cls->bitmap + bitmap_bytes) + idx;
}
/* share.c, for reclaim: slot idx's word says SHARED; peer is dead or leaving. Drops every
 * reference peer holds to it; if peer published it, also those of readers that are no longer
 * joined (a publisher killed before it looked at them again); frees the slot if no reference
 * is left. */
void vs__share_reclaim(const vs_pool *pool, const struct vs_pool_class *cls, uint32_t idx, uint8_t peer);

/* Marks slot idx as probably free in the class's index (idempotent). */
void vs__publish_free(const struct vs_pool_class *cls, uint32_t idx);
/* Republishes every free slot of one class; returns how many bits it had to set. */
unsigned vs__republish_class(const struct vs_pool_class *cls);
/* The calling thread's freed slots that wait to be published in batches (pool.c) go to the
 * bitmap now: at leave and close, so that nothing waits on a thread that stops using it. */
void vs__pool_flush_pending(const vs_pool *pool);

/* Segment hook: the pool found every fitting class exhausted. Returns true when reaping
 * returned slots, so the allocation is worth retrying. */
bool vs__segment_reap_on_exhaustion(struct vs_segment *seg);

/* purge.c, from the pool's slow paths: a free of a slot of a page or more once this thread
 * freed VS__PURGE_TICK_BYTES of them (the slot was free at generation gen), and every
 * VS__PURGE_TICK_ALLOCS allocations that missed the thread cache. */
#define VS__PURGE_TICK_BYTES (1u << 20)
#define VS__PURGE_TICK_ALLOCS 64u
void vs__purge_after_free(const vs_pool *pool, const struct vs_pool_class *cls, uint32_t idx,
                          uint32_t gen);
void vs__purge_on_slow_path(const vs_pool *pool);

/* Monotonic and wall-clock nanoseconds, without libc allocations. */
uint64_t vs__now_ns(int clock);

#endif
