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
 * bits 40..47 state (enum vs_slot_state)
 * bits 48..63 tag of the allocating thread (0 when free): lets free() keep a slot in the
 *             thread-local cache only when the thread that allocated it frees it. */
typedef struct vs__slot_meta {
    _Atomic uint64_t word;
    _Atomic uint32_t tag;  /* caller-defined label; informational, written after the claim */
    _Atomic uint32_t size; /* bytes requested; informational, written after the claim */
} vs__slot_meta;
_Static_assert(sizeof(vs__slot_meta) == 16, "16 bytes of metadata per slot");

static inline uint32_t vs__word_gen(uint64_t w) { return (uint32_t)w; }
static inline uint8_t vs__word_owner(uint64_t w) { return (uint8_t)(w >> 32); }
static inline uint8_t vs__word_state(uint64_t w) { return (uint8_t)(w >> 40); }
static inline uint16_t vs__word_thread(uint64_t w) { return (uint16_t)(w >> 48); }
static inline uint64_t vs__word_make(uint32_t gen, uint8_t owner, uint8_t state, uint16_t thread)
{
    return (uint64_t)gen | (uint64_t)owner << 32 | (uint64_t)state << 40 | (uint64_t)thread << 48;
}
/* Generation 0 is never handed out, so a zeroed handle never matches a slot. */
static inline uint32_t vs__next_gen(uint32_t gen) { return gen + 1 ? gen + 1 : 1; }

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
    size_t meta_offset, bitmap_offset, data_offset, stride;
    uint32_t bitmap_words;
} vs__class_layout;

/* Validates configs and computes every class's offsets; VS_OK or VS_EINVAL. */
int vs__layout_compute(const vs_class_config *configs, size_t n, vs__class_layout *classes,
                       size_t *total, const char **why);

/* ---- the pool's hot paths ---- */
static inline const struct vs_pool_class *vs__pool_class(const vs_pool *pool, vs_slot_ref ref,
                                                         uint32_t *idx)
{
    if (VS__UNLIKELY(ref.class_idx >= pool->class_count || ref.extent_idx != 0))
        return NULL;
    const struct vs_pool_class *cls = &pool->classes[ref.class_idx];
    if (VS__UNLIKELY(ref.slot_idx >= cls->slot_count))
        return NULL;
    *idx = ref.slot_idx;
    return cls;
}
static inline vs__slot_meta *vs__meta(const struct vs_pool_class *cls, uint32_t idx)
{
    return (vs__slot_meta *)cls->meta + idx;
}
/* The slot word a ref names, or NULL when the ref is out of this pool's range. */
static inline vs__slot_meta *vs__ref_meta(const vs_pool *pool, vs_slot_ref ref,
                                          const struct vs_pool_class **cls)
{
    uint32_t idx;
    *cls = pool ? vs__pool_class(pool, ref, &idx) : NULL;
    return *cls ? vs__meta(*cls, idx) : NULL;
}
/* Whether a slot word says "allocated, at this generation": what a live ref must see. */
static inline bool vs__word_is_live(uint64_t w, uint32_t gen)
{
    return vs__word_state(w) == VS_SLOT_ALLOCATED && vs__word_gen(w) == gen;
}
static inline _Atomic uint64_t *vs__bitmap(const struct vs_pool_class *cls)
{
    return (_Atomic uint64_t *)cls->bitmap;
}

/* Marks slot idx as probably free in the class's index (idempotent). */
void vs__publish_free(const struct vs_pool_class *cls, uint32_t idx);
/* Republishes every free slot of one class; returns how many bits it had to set. */
unsigned vs__republish_class(const struct vs_pool_class *cls);

/* Segment hook: the pool found every fitting class exhausted. Returns true when reaping
 * returned slots, so the allocation is worth retrying. */
bool vs__segment_reap_on_exhaustion(struct vs_segment *seg);

/* Monotonic and wall-clock nanoseconds, without libc allocations. */
uint64_t vs__now_ns(int clock);

#endif
