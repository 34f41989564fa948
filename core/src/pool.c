/* The slot pool: init/attach, allocate, free, transfer and slot access.
 * Every ownership change is one CAS on the slot word. The bitmap (set bit = probably free)
 * and the thread cache only say where to try: a crash can leave them stale, never wrong. */
#include "debug.h"
#include "memcheck_hooks.h"
#include "prefetch.h"
#include "slot_cache.h"

#include <stddef.h>
#include <string.h>
#include <unistd.h>

VS__TLS struct vs__thread_cache vs__tc;

_Static_assert(offsetof(vs_slot_ref, slot_idx) == 4 && offsetof(vs_slot_ref, generation) == 8,
               "claim() writes a vs_slot_ref as one 8-byte and one 4-byte store");

static _Atomic uint32_t vs__attach_counter;
static _Atomic uint32_t vs__thread_counter;

uint16_t vs__thread_ordinal_init(void)
{
    uint32_t n = atomic_fetch_add_explicit(&vs__thread_counter, 1, memory_order_relaxed);
    vs__tc.ordinal = (uint16_t)(n % 65535u + 1u);
    return vs__tc.ordinal;
}

/* ---- setting up ---- */

static int setup(vs_pool *pool, vs_region region, size_t base_offset,
                 const vs_class_config *configs, size_t n, vs__class_layout *classes)
{
    size_t total;
    if (!pool || !region.base)
        return VS_EINVAL;
    if (base_offset % 64 || ((uintptr_t)region.base + base_offset) % 64)
        return VS_EINVAL;
    int rc = vs__layout_compute(configs, n, classes, &total, NULL);
    if (rc != VS_OK)
        return rc;
    if (base_offset > region.len || region.len - base_offset < total)
        return VS_ENOSPC;
    memset(pool, 0, sizeof *pool);
    pool->base = region.base;
    pool->region_len = region.len;
    pool->base_offset = base_offset;
    pool->class_count = n;
    pool->attach_id = atomic_fetch_add_explicit(&vs__attach_counter, 1, memory_order_relaxed) + 1;
    uint8_t *pbase = (uint8_t *)region.base + base_offset;
    uint32_t index_base = 0;
    for (size_t i = 0; i < n; i++) {
        struct vs_pool_class *c = &pool->classes[i];
        c->index_base = index_base;
        index_base += configs[i].slot_count;
        c->slot_size = configs[i].slot_size;
        c->slot_count = configs[i].slot_count;
        c->stride = classes[i].stride;
        c->meta = pbase + classes[i].meta_offset;
        c->bitmap = pbase + classes[i].bitmap_offset;
        c->data_from_meta = classes[i].data_offset - classes[i].meta_offset;
        c->header = pbase + i * sizeof(vs__class_header);
        c->bitmap_words = classes[i].bitmap_words;
        c->laps = vs__class_laps(configs[i].slot_count);
        c->ref_span = configs[i].slot_count * c->laps;
    }
    return VS_OK;
}

int vs_pool_init(vs_pool *pool, vs_region region, size_t base_offset,
                 const vs_class_config *configs, size_t n)
{
    vs__class_layout classes[VS_MAX_CLASSES];
    int rc = setup(pool, region, base_offset, configs, n, classes);
    if (rc != VS_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const struct vs_pool_class *c = &pool->classes[i];
        /* Every word FREE at generation 0 (never handed out), lap 0; side fields 0. */
        memset(c->meta, 0, (size_t)c->slot_count * sizeof(vs__slot_meta));
        _Atomic uint64_t *bm = vs__bitmap(c);
        for (uint32_t w = 0; w < c->bitmap_words; w++) {
            uint32_t bits = c->slot_count - w * 64;
            atomic_init(&bm[w], bits >= 64 ? ~0ull : (1ull << bits) - 1);
        }
        vs__class_header *h = c->header;
        memset(h, 0, sizeof *h);
        h->class_idx = (uint32_t)i;
        h->slot_size = c->slot_size;
        h->slot_count = c->slot_count;
        h->meta_offset = classes[i].meta_offset;
        h->bitmap_offset = classes[i].bitmap_offset;
        h->data_offset = classes[i].data_offset;
        h->stride = classes[i].stride;
    }
    /* Magics last, released: a reader that sees one sees the class fully written. */
    for (size_t i = 0; i < n; i++)
        __atomic_store_n(&((vs__class_header *)pool->classes[i].header)->magic, VS__CLASS_MAGIC,
                         __ATOMIC_RELEASE);
    vs__vg_setup(pool, true);
    return VS_OK;
}

int vs_pool_attach(vs_pool *pool, vs_region region, size_t base_offset,
                   const vs_class_config *configs, size_t n)
{
    vs__class_layout classes[VS_MAX_CLASSES];
    vs_class_config found[VS_MAX_CLASSES];
    int rc = setup(pool, region, base_offset, configs, n, classes);
    if (rc != VS_OK)
        return rc;
    rc = vs_pool_discover_configs(region, base_offset, (uint32_t)n, found, NULL);
    if (rc == VS_OK && memcmp(found, configs, n * sizeof *configs) != 0)
        rc = VS_ECORRUPT; /* initialised with other configs */
    if (rc != VS_OK)
        memset(pool, 0, sizeof *pool);
    else
        vs__vg_setup(pool, false);
    return rc;
}

/* ---- the free index ---- */

/* Classes whose bitmap words are worked in batches: small slots, and many of them. When one
 * process allocates and another frees (the hand-off), taking and giving back one bit at a
 * time bounced the bitmap line, the slot words and the shared search hint between the two
 * cores for every slot (measured: 363 ns per handed-off slot against a 37 ns ring). So
 * here an allocation takes up to VS__RESERVE_MAX bits with one fetch_and and keeps the
 * extra slots in its thread cache, a free collects up to VS__PEND_MAX bits of one word and
 * gives them back with one fetch_or, and each thread searches from its own cursor. Slots
 * held so are FREE in their words and their class is parked: anyone's failing search finds
 * them (republish), and a SIGKILL loses only thread-local words. Big slots stay one at a
 * time: a few of them held back would look like a full pool to another process. */
#define VS__BATCH_MAX_SLOT_SIZE (64u * 1024)
#define VS__BATCH_MIN_SLOTS 256u
#define VS__PEND_MAX 16
#define VS__RESERVE_MAX 8 /* the candidate and up to 7 more, at most the cache's room */

static inline bool batch_shaped(const struct vs_pool_class *cls)
{
    return cls->slot_size <= VS__BATCH_MAX_SLOT_SIZE && cls->slot_count >= VS__BATCH_MIN_SLOTS;
}

/* Batched: batch-shaped, and a class the thread cache covers (reservations live there). */
static inline bool batched(const struct vs_pool_class *cls, uint8_t c)
{
    return c < VS__TC_CLASSES && batch_shaped(cls);
}

/* Some free slot of the class is out of the bitmap, in a thread's hands. */
static inline void set_parked(const struct vs_pool_class *cls)
{
    _Atomic uint32_t *parked = &((vs__class_header *)cls->header)->parked;
    if (!atomic_load_explicit(parked, memory_order_relaxed)) /* read first: keep the line shared */
        atomic_store_explicit(parked, 1, memory_order_release);
}

void vs__publish_free(const struct vs_pool_class *cls, uint32_t idx)
{
    vs__assert(idx < cls->slot_count);
    VS__DEBUG_POINT(vs__debug_before_publish, idx);
    uint32_t w = idx / 64;
    atomic_fetch_or_explicit(&vs__bitmap(cls)[w], 1ull << (idx % 64), memory_order_release);
    if (batch_shaped(cls))
        return; /* a batched class's searches start at their own cursors: no shared write */
    _Atomic uint32_t *hint = &((vs__class_header *)cls->header)->search_hint;
    if (w < atomic_load_explicit(hint, memory_order_relaxed))
        atomic_store_explicit(hint, w, memory_order_relaxed);
}

/* This thread's freed slots of class c go to the bitmap, one fetch_or. model: pending_flush */
static inline void pending_flush(struct vs__thread_cache *tc, const struct vs_pool_class *cls,
                                 uint8_t c)
{
    if (!tc->pend_n[c])
        return;
    /* Checked, not asserted: attach ids are 32 bits, so after 2^32 attaches a batch of a
     * pool long gone could meet a smaller pool with the same id. Dropped, it costs a scan. */
    if (VS__LIKELY(tc->pend_word[c] < cls->bitmap_words))
        atomic_fetch_or_explicit(&vs__bitmap(cls)[tc->pend_word[c]], tc->pend_mask[c],
                                 memory_order_release);
    tc->pend_mask[c] = 0;
    tc->pend_n[c] = 0;
}

/* A slot this thread freed (FREE in its word already) waits for the others of its word.
 * model: pending_add */
static inline void pending_add(struct vs__thread_cache *tc, const struct vs_pool_class *cls,
                               uint8_t c, uint32_t idx)
{
    uint32_t w = idx / 64;
    if (tc->pend_n[c] && tc->pend_word[c] != w)
        pending_flush(tc, cls, c);
    set_parked(cls); /* on every add: a failing search may have taken the flag since the last */
    tc->pend_word[c] = w;
    tc->pend_mask[c] |= 1ull << (idx % 64);
    if (++tc->pend_n[c] >= VS__PEND_MAX)
        pending_flush(tc, cls, c);
}

void vs__pool_flush_pending(const vs_pool *pool)
{
    struct vs__thread_cache *tc = &vs__tc;
    if (!pool || tc->pool_id != pool->attach_id)
        return;
    for (uint8_t c = 0; c < pool->class_count && c < VS__TC_CLASSES; c++)
        pending_flush(tc, &pool->classes[c], c);
}

unsigned vs__republish_class(const struct vs_pool_class *cls)
{
    const vs__slot_meta *meta = cls->meta;
    _Atomic uint64_t *bm = vs__bitmap(cls);
    unsigned published = 0;
    for (uint32_t i = 0; i < cls->slot_count; i++) {
        uint64_t w = atomic_load_explicit(&((vs__slot_meta *)meta)[i].word, memory_order_relaxed);
        if (vs__word_state(w) != VS_SLOT_FREE)
            continue;
        if (atomic_load_explicit(&bm[i / 64], memory_order_relaxed) & (1ull << (i % 64)))
            continue;
        vs__publish_free(cls, i);
        published++;
    }
    return published;
}

unsigned vs_pool_republish_free(const vs_pool *pool)
{
    unsigned n = 0;
    if (!pool)
        return 0;
    for (size_t c = 0; c < pool->class_count; c++)
        n += vs__republish_class(&pool->classes[c]);
    return n;
}

/* ---- allocation ---- */

/* The claim: FREE(gen) -> ALLOCATED(gen+1, owner) in one CAS. Nothing else makes a slot yours.
 * When the generation wraps the lap moves on; a slot out of laps retires instead. */
static inline bool claim(const struct vs_pool_class *cls, uint8_t class_idx, uint32_t idx,
                         uint32_t size, uint8_t owner, vs_slot_ref *out)
{
    vs__assert(idx < cls->slot_count);
    vs__slot_meta *m = vs__meta(cls, idx);
    vs__prefetch_for_write(vs__slot_data(cls, idx)); /* the caller writes it next */
    uint64_t w = atomic_load_explicit(&m->word, memory_order_relaxed);
    while (vs__word_state(w) == VS_SLOT_FREE) {
        uint32_t gen = vs__word_gen(w) + 1, lap = vs__word_lap(w);
        if (VS__UNLIKELY(gen == 0)) {
            gen = 1;
            lap++;
        }
        if (VS__UNLIKELY(lap >= cls->laps)) {
            /* model: retire. Its next ref would repeat one handed out before (or a scribbled
             * lap names none this class can express). */
            if (atomic_compare_exchange_weak_explicit(&m->word, &w, vs__word_with(w, 0, VS_SLOT_RETIRED),
                                                      memory_order_relaxed, memory_order_relaxed))
                return false;
            continue;
        }
        uint64_t claimed = vs__word_make(gen, owner, VS_SLOT_ALLOCATED, lap);
        VS__DEBUG_POINT(vs__debug_before_claim_cas, idx);
        /* model: claim_cas */
        if (atomic_compare_exchange_weak_explicit(&m->word, &w, claimed, memory_order_acquire,
                                                  memory_order_relaxed)) {
            vs__assert(gen != 0 && lap < cls->laps);
            atomic_store_explicit(&m->size, size, memory_order_relaxed);
            atomic_store_explicit(&m->tag, 0, memory_order_relaxed);
            vs__tc_remember(&vs__tc, class_idx, idx);
            /* Two whole stores, not four small ones: callers pass the ref on by value, and
             * a load spanning several smaller stores stalls (no store forwarding). Measured:
             * 31 -> 23 ns per allocate+free pair. */
            uint64_t head = class_idx | (uint64_t)vs__ref_slot_idx(cls, idx, lap) << 32;
            memcpy(out, &head, sizeof head); /* extent_idx 0, padding 0 */
            memcpy(&out->generation, &gen, sizeof gen);
            return true;
        }
    }
    return false;
}

static inline bool claim_cached(struct vs__thread_cache *tc, const struct vs_pool_class *cls,
                                uint8_t c, uint32_t size, uint8_t owner, vs_slot_ref *out)
{
    while (tc->count[c]) {
        uint32_t idx = tc->idx[c][--tc->count[c]];
        if (idx < cls->slot_count && claim(cls, c, idx, size, owner, out)) {
            /* The slot this thread takes next: its lines come while the caller works. */
            uint32_t next = tc->count[c] ? tc->idx[c][tc->count[c] - 1] : UINT32_MAX;
            if (next < cls->slot_count) {
                vs__prefetch_for_write(vs__meta(cls, next));
                vs__prefetch_for_write(vs__slot_data(cls, next));
            }
            return true;
        }
    }
    return false;
}

/* Which bit of a bitmap word this thread tries first. Slot words are 16 bytes, four to a
 * cache line: peers and threads that start on different lines do not bounce one line between
 * cores. Peer 1's first thread starts at bit 0, so a fresh pool hands out slot 0 first. */
static inline unsigned search_rotation(uint8_t owner, uint16_t ordinal)
{
    return ((unsigned)(owner - 1) * 5u + (ordinal - 1u) * 3u) * 4u & 63u;
}

/* The lowest `room` set bits of v. */
static inline uint64_t lowest_bits(uint64_t v, unsigned room)
{
    uint64_t take = 0;
    for (; room && v; room--, v &= v - 1)
        take |= v & -v;
    return take;
}

/* Slots reserved by one fetch_and go into this thread's cache, lowest index on top (slot
 * words side by side share a line). */
static inline void reserve(struct vs__thread_cache *tc, const struct vs_pool_class *cls, uint8_t c,
                           uint32_t wi, uint64_t got)
{
    set_parked(cls); /* model: reserve */
    while (got) {
        unsigned b = 63u - (unsigned)__builtin_clzll(got);
        got &= ~(1ull << b);
        uint32_t idx = wi * 64 + b;
        if (idx < cls->slot_count) /* a stray bit past the end (shared memory) is dropped */
            tc->idx[c][tc->count[c]++] = idx;
    }
}

/* Searches the bitmap from this thread's cursor (batched class) or the shared hint, takes a
 * candidate bit (and, batched, reserves more of its word) and claims it. */
static bool claim_from_bitmap(struct vs__thread_cache *tc, const struct vs_pool_class *cls, uint8_t c,
                              uint32_t size, uint8_t owner, vs_slot_ref *out)
{
    /* A thread that alternates between pools would drop its reservations at every switch. */
    const bool batch = batched(cls, c) && tc->alloc_pool_id == tc->pool_id;
    unsigned rot = search_rotation(owner, vs__thread_ordinal());
    _Atomic uint64_t *bm = vs__bitmap(cls);
    _Atomic uint32_t *hint = &((vs__class_header *)cls->header)->search_hint;
    uint32_t words = cls->bitmap_words;
    uint32_t start = batch && tc->cursor[c] ? tc->cursor[c] - 1 : atomic_load_explicit(hint, memory_order_relaxed);
    if (start >= words)
        start %= words; /* the hint is shared memory: anything may be there */
    for (uint32_t k = 0, wi = start; k < words; k++, wi = wi + 1 == words ? 0 : wi + 1) {
        uint64_t v = atomic_load_explicit(&bm[wi], memory_order_relaxed);
        while (v) {
            uint64_t rotated = rot ? v >> rot | v << (64 - rot) : v;
            unsigned b = ((unsigned)__builtin_ctzll(rotated) + rot) & 63u;
            uint64_t bit = 1ull << b;
            uint64_t take = bit;
            if (batch) {
                unsigned room = VS__TC_DEPTH - tc->count[c];
                take |= lowest_bits(v & ~bit, room < VS__RESERVE_MAX ? room : VS__RESERVE_MAX - 1);
            }
            uint64_t prev = atomic_fetch_and_explicit(&bm[wi], ~take, memory_order_acquire);
            v = prev & ~take;
            if (prev & take & ~bit)
                reserve(tc, cls, c, wi, prev & take & ~bit);
            uint32_t idx = wi * 64 + b;
            /* The candidate (lost if its bit was gone already: another allocator took it). */
            bool won = (prev & bit) && idx < cls->slot_count && claim(cls, c, idx, size, owner, out);
            /* Lost: what this search reserved is tried before it goes on (else it could fail
             * holding free slots; model: MUTANT_RESERVE_STRANDED). */
            if (!won && batch && tc->count[c])
                won = claim_cached(tc, cls, c, size, owner, out);
            if (won) {
                if (batch) {
                    tc->cursor[c] = wi + 1;
                    if (k >= 8) /* a seed for threads that have no cursor yet */
                        atomic_store_explicit(hint, wi, memory_order_relaxed);
                } else if (wi != start) {
                    atomic_store_explicit(hint, wi, memory_order_relaxed);
                }
                return true;
            }
        }
    }
    return false;
}

static inline uint8_t first_fitting_class(const vs_pool *pool, uint32_t size)
{
    uint8_t c = 0;
    while (c < pool->class_count && pool->classes[c].slot_size < size)
        c++;
    return c;
}

static bool allocate_from(const vs_pool *pool, uint8_t first, uint32_t size, uint8_t owner,
                          vs_slot_ref *out)
{
    struct vs__thread_cache *tc = vs__tc_for(pool);
    for (uint8_t c = first; c < pool->class_count; c++) {
        const struct vs_pool_class *cls = &pool->classes[c];
        if (c < VS__TC_CLASSES) {
            pending_flush(tc, cls, c); /* this thread's own freed slots first */
            if (claim_cached(tc, cls, c, size, owner, out))
                return true;
        }
        if (claim_from_bitmap(tc, cls, c, size, owner, out))
            return true;
        /* Smallest fitting class first: slots other threads parked in their caches (or left
         * there when they exited) still count before we fall through to a larger class. */
        _Atomic uint32_t *parked = &((vs__class_header *)cls->header)->parked;
        if (atomic_load_explicit(parked, memory_order_relaxed) &&
            atomic_exchange_explicit(parked, 0, memory_order_acquire)) {
            vs__republish_class(cls);
            if (claim_from_bitmap(tc, cls, c, size, owner, out))
                return true;
        }
    }
    /* Every fitting bitmap looked empty: free slots may be parked in other threads' caches
     * or left unpublished by a peer that died mid-operation. The slot words know. Search
     * again even if this scan set no bit: another thread's may have (model: alloc_progress). */
    for (uint8_t c = first; c < pool->class_count; c++) {
        const struct vs_pool_class *cls = &pool->classes[c];
        vs__republish_class(cls);
        if (claim_from_bitmap(tc, cls, c, size, owner, out))
            return true;
    }
    return false;
}

static __attribute__((noinline)) bool allocate_slow(const vs_pool *pool, uint8_t first,
                                                    uint32_t size, uint8_t owner, vs_slot_ref *out)
{
    bool ok = allocate_from(pool, first, size, owner, out) ||
              (pool->segment && vs__segment_reap_on_exhaustion(pool->segment) &&
               allocate_from(pool, first, size, owner, out));
    vs__tc.alloc_pool_id = pool->attach_id; /* from the next one on, batched classes reserve */
    if (pool->segment && ++vs__tc.slow_allocs % VS__PURGE_TICK_ALLOCS == 0)
        vs__purge_on_slow_path(pool);
    return ok;
}

bool vs_pool_allocate(const vs_pool *pool, uint32_t size, uint8_t owner_peer, vs_slot_ref *out)
{
    if (VS__UNLIKELY(!pool || !out))
        return false;
    uint8_t first = first_fitting_class(pool, size);
    if (VS__UNLIKELY(first >= pool->class_count))
        return false; /* larger than the largest class: the caller sends it another way */
    /* The hot path: the slot this thread freed last, still warm. */
    struct vs__thread_cache *tc = &vs__tc;
    bool ok = (VS__LIKELY(first < VS__TC_CLASSES && tc->count[first] && tc->pool_id == pool->attach_id) &&
               claim_cached(tc, &pool->classes[first], first, size, owner_peer, out)) ||
              allocate_slow(pool, first, size, owner_peer, out);
    if (ok) { /* a new block for memcheck, the size that was asked for */
        const struct vs_pool_class *cls = &pool->classes[out->class_idx];
        VS__VG(vs__vg_held(pool, cls, out->slot_idx % cls->slot_count, size, false));
    }
    return ok;
}

/* ---- release and ownership ---- */

/* Why ref's slot may not be freed (owner < 0: by anyone holding a live ref), or VS_OK. */
static inline int free_refused(uint64_t w, vs_slot_ref ref, uint32_t lap, int owner)
{
    if (!vs__word_is_live(w, ref.generation, lap))
        return VS_EDOUBLEFREE; /* already freed, or freed and reused: a stale ref */
    if (owner >= 0 && vs__word_owner(w) != owner)
        return VS_EPERM; /* given away (or reaped and reused): not ours to free */
    return VS_OK;
}

/* ALLOCATED(gen) -> FREE(gen) in one CAS. The index does not know yet. */
static inline int free_word(const vs_pool *pool, const struct vs_pool_class *cls,
                            vs__slot_meta *m, vs_slot_ref ref, uint32_t idx, uint32_t lap,
                            int owner)
{
    uint64_t w = atomic_load_explicit(&m->word, memory_order_relaxed);
    int rc;
    /* Memcheck hears before the CAS: once the slot is free another thread may claim it and
     * announce its own block there. (Two racing frees both tell it: memcheck reports the
     * double free; a slot given away meanwhile has left this process either way.) */
    VS__VG(if (free_refused(w, ref, lap, owner) == VS_OK) vs__vg_released(pool, cls, idx));
    do {
        if ((rc = free_refused(w, ref, lap, owner)) != VS_OK)
            return rc;
        /* model: free_cas */
    } while (!atomic_compare_exchange_weak_explicit(&m->word, &w, vs__word_with(w, 0, VS_SLOT_FREE),
                                                    memory_order_release, memory_order_relaxed));
    vs__assert(vs__word_state(w) == VS_SLOT_ALLOCATED && vs__word_gen(w) != 0);
    return VS_OK;
}

int vs_pool_free(const vs_pool *pool, vs_slot_ref ref)
{
    const struct vs_pool_class *cls;
    uint32_t idx, lap;
    vs__slot_meta *m = vs__ref_meta(pool, ref, &cls, &idx, &lap);
    if (VS__UNLIKELY(!m))
        return VS_EINVAL;
    int rc = free_word(pool, cls, m, ref, idx, lap, -1);
    if (rc != VS_OK)
        return rc;
    /* Frees of slots of a page or more count towards a look at the clock (purge.c): every
     * free of a slot of 1 MiB or more, every 16th of 64 KiB. */
    if (VS__UNLIKELY(cls->stride >= VS_SLOT_PAGE) && pool->segment &&
        (vs__tc.purge_bytes += (uint32_t)(cls->stride < VS__PURGE_TICK_BYTES ? cls->stride
                                                                              : VS__PURGE_TICK_BYTES)) >=
            VS__PURGE_TICK_BYTES)
        vs__purge_after_free(pool, cls, idx, ref.generation);
    /* The slot is free; now only the index needs to hear of it. A slot this thread allocated
     * a moment ago stays with it (warm, LIFO); any other goes back to the shared bitmap. */
    struct vs__thread_cache *tc = &vs__tc;
    uint8_t c = ref.class_idx;
    if (c < VS__TC_CLASSES && tc->pool_id == pool->attach_id && tc->count[c] < VS__TC_DEPTH &&
        vs__tc_forget(tc, vs__tc_key(c, idx))) {
        tc->idx[c][tc->count[c]++] = idx; /* model: cache_push */
        set_parked(cls);
        return VS_OK;
    }
    /* A slot another thread allocated waits for others of its word, unless this thread's
     * state belongs to another pool and holds slots there (switching would drop them). */
    if (batched(cls, c) && (tc->pool_id == pool->attach_id || !vs__tc_holds_slots(tc)))
        pending_add(vs__tc_for(pool), cls, c, idx);
    else
        vs__publish_free(cls, idx);
    return VS_OK;
}

int vs_pool_free_owned(const vs_pool *pool, vs_slot_ref ref, uint8_t owner)
{
    const struct vs_pool_class *cls;
    uint32_t idx, lap;
    vs__slot_meta *m = vs__ref_meta(pool, ref, &cls, &idx, &lap);
    if (!m)
        return VS_EINVAL;
    int rc = free_word(pool, cls, m, ref, idx, lap, owner);
    if (rc == VS_OK)
        vs__publish_free(cls, idx);
    return rc;
}

void vs_pool_detach(vs_pool *pool)
{
    if (!pool)
        return;
    vs__pool_flush_pending(pool);
    VS__VG(vs__vg_detach(pool));
}

void vs_pool_handed_over(const vs_pool *pool, vs_slot_ref ref)
{
    const struct vs_pool_class *cls;
    uint32_t idx, lap;
    VS__VG(if (vs__ref_meta(pool, ref, &cls, &idx, &lap)) vs__vg_released(pool, cls, idx));
}

int vs_pool_transfer(const vs_pool *pool, vs_slot_ref ref, uint8_t from_peer, uint8_t to_peer)
{
    const struct vs_pool_class *cls;
    uint32_t idx, lap;
    vs__slot_meta *m = vs__ref_meta(pool, ref, &cls, &idx, &lap);
    if (!m)
        return VS_EINVAL;
    vs__prefetch_for_read(vs__slot_data(cls, idx)); /* the receiver reads it next */
    uint64_t w = atomic_load_explicit(&m->word, memory_order_acquire);
    do {
        if (!vs__word_is_live(w, ref.generation, lap))
            return VS_ESTALE;
        if (vs__word_owner(w) != from_peer)
            return VS_EPERM;
        /* model: transfer_cas */
    } while (!atomic_compare_exchange_weak_explicit(&m->word, &w,
                                                    vs__word_with(w, to_peer, VS_SLOT_ALLOCATED),
                                                    memory_order_acq_rel, memory_order_acquire));
    vs__assert(vs__word_gen(w) == ref.generation && ref.generation != 0 && idx < cls->slot_count);
    /* The receiver takes the handle: the slot becomes its block (in a segment, if it is us). */
    VS__VG(if (!pool->segment || pool->segment->peer_id == to_peer) vs__vg_held(
               pool, cls, idx, atomic_load_explicit(&m->size, memory_order_relaxed), true));
    return VS_OK;
}

void vs_pool_reclaim_peer_slots(const vs_pool *pool, uint8_t peer_id)
{
    if (!pool)
        return;
    /* The caller marked the peer's entry (REAPING) before this: a share that saw the entry
     * unmarked after its CAS is seen here (share.c, model: share_recheck). */
    atomic_thread_fence(memory_order_seq_cst);
    for (size_t c = 0; c < pool->class_count; c++) {
        const struct vs_pool_class *cls = &pool->classes[c];
        for (uint32_t i = 0; i < cls->slot_count; i++) {
            vs__slot_meta *m = vs__meta(cls, i);
            uint64_t w = atomic_load_explicit(&m->word, memory_order_relaxed);
            if (VS__UNLIKELY(vs__word_state(w) == VS_SLOT_SHARED)) {
                /* its references, and any share a releaser left empty when it died */
                vs__share_reclaim(pool, cls, i, peer_id);
                continue;
            }
            bool freed = false;
            /* Owned, being shared by it (SHARING: still its own), or being purged by it. */
            while ((vs__word_state(w) == VS_SLOT_ALLOCATED || vs__word_state(w) == VS_SLOT_SHARING ||
                    vs__word_state(w) == VS_SLOT_PURGING) &&
                   vs__word_owner(w) == peer_id) {
                /* model: reclaim_cas */
                if (atomic_compare_exchange_weak_explicit(&m->word, &w,
                                                          vs__word_with(w, 0, VS_SLOT_FREE),
                                                          memory_order_acq_rel, memory_order_relaxed)) {
                    vs__assert(vs__word_owner(w) == peer_id);
                    freed = true;
                    break;
                }
            }
            if (freed)
                vs__publish_free(cls, i);
        }
    }
}

/* ---- slot access ---- */

void *vs_pool_slot_data(const vs_pool *pool, const vs_slot_ref *ref)
{
    const struct vs_pool_class *cls;
    uint32_t idx, lap;
    vs__slot_meta *m = ref ? vs__ref_meta(pool, *ref, &cls, &idx, &lap) : NULL;
    if (!m || !vs__word_is_live(atomic_load_explicit(&m->word, memory_order_acquire), ref->generation, lap))
        return NULL;
    return vs__slot_data(cls, idx);
}

static void fill_location(const vs_pool *pool, size_t c, uint32_t idx, vs_slot_location *out)
{
    const struct vs_pool_class *cls = &pool->classes[c];
    *out = (vs_slot_location){(uint8_t)c, idx, cls->index_base + idx,
                              vs_pool_class_data(cls) + (size_t)idx * cls->stride, cls->stride};
}

int vs_pool_locate(const vs_pool *pool, const void *ptr, vs_slot_location *out)
{
    if (!pool || !ptr || !out)
        return VS_EINVAL;
    uintptr_t p = (uintptr_t)ptr;
    for (size_t c = 0; c < pool->class_count; c++) {
        const struct vs_pool_class *cls = &pool->classes[c];
        uintptr_t lo = (uintptr_t)vs_pool_class_data(cls);
        if (p >= lo && p - lo < cls->stride * cls->slot_count) {
            fill_location(pool, c, (uint32_t)((p - lo) / cls->stride), out);
            return VS_OK;
        }
    }
    return VS_EINVAL;
}

int vs_pool_locate_slot(const vs_pool *pool, uint8_t class_idx, uint32_t slot_idx,
                        vs_slot_location *out)
{
    if (!pool || !out || class_idx >= pool->class_count ||
        slot_idx >= pool->classes[class_idx].slot_count)
        return VS_EINVAL;
    fill_location(pool, class_idx, slot_idx, out);
    return VS_OK;
}

uint32_t vs_pool_total_slots(const vs_pool *pool)
{
    if (!pool || !pool->class_count)
        return 0;
    const struct vs_pool_class *last = &pool->classes[pool->class_count - 1];
    return last->index_base + last->slot_count;
}

int vs_pool_ref_of(const vs_pool *pool, const void *ptr, vs_slot_ref *out)
{
    vs_slot_location loc;
    if (!out || vs_pool_locate(pool, ptr, &loc) != VS_OK)
        return VS_EINVAL;
    const struct vs_pool_class *cls = &pool->classes[loc.class_idx];
    if ((uintptr_t)ptr - (uintptr_t)loc.start >= cls->slot_size)
        return VS_EINVAL; /* in the padding between slots */
    uint64_t w = atomic_load_explicit(&vs__meta(cls, loc.slot_idx)->word, memory_order_acquire);
    uint32_t lap = vs__word_lap(w);
    if (vs__word_state(w) != VS_SLOT_ALLOCATED || lap >= cls->laps)
        return VS_ESTALE;
    out->class_idx = loc.class_idx;
    out->extent_idx = 0;
    out->slot_idx = vs__ref_slot_idx(cls, loc.slot_idx, lap);
    out->generation = vs__word_gen(w);
    return VS_OK;
}

/* The informational fields beside a live slot's word: the tag and the size in use. */
static int set_live_field(const vs_pool *pool, vs_slot_ref ref, size_t field, uint32_t value)
{
    const struct vs_pool_class *cls;
    uint32_t idx, lap;
    vs__slot_meta *m = vs__ref_meta(pool, ref, &cls, &idx, &lap);
    if (!m)
        return VS_EINVAL;
    if (!vs__word_is_live(atomic_load_explicit(&m->word, memory_order_acquire), ref.generation, lap))
        return VS_ESTALE;
    atomic_store_explicit((_Atomic uint32_t *)((uint8_t *)m + field), value, memory_order_relaxed);
    return VS_OK;
}

int vs_pool_set_tag(const vs_pool *pool, vs_slot_ref ref, uint32_t tag)
{
    return set_live_field(pool, ref, offsetof(vs__slot_meta, tag), tag);
}

int vs_pool_set_size(const vs_pool *pool, vs_slot_ref ref, uint32_t size)
{
    if (pool && ref.class_idx < pool->class_count && size > pool->classes[ref.class_idx].slot_size)
        return VS_EINVAL;
    const struct vs_pool_class *cls;
    uint32_t idx = 0, lap;
    vs__slot_meta *m = vs__ref_meta(pool, ref, &cls, &idx, &lap);
    uint32_t old = m ? atomic_load_explicit(&m->size, memory_order_relaxed) : 0;
    int rc = set_live_field(pool, ref, offsetof(vs__slot_meta, size), size);
    if (rc == VS_OK)
        VS__VG(vs__vg_resized(pool, cls, idx, old, size));
    return rc;
}

/* slot_idx as a ref carries it (a lap's worth of slot_count may be added). */
int vs_pool_slot_info(const vs_pool *pool, uint8_t class_idx, uint32_t slot_idx, vs_slot_info *out)
{
    if (!pool || !out || class_idx >= pool->class_count ||
        slot_idx >= pool->classes[class_idx].ref_span)
        return VS_EINVAL;
    const struct vs_pool_class *cls = &pool->classes[class_idx];
    vs__slot_meta *m = vs__meta(cls, slot_idx % cls->slot_count);
    uint64_t w = atomic_load_explicit(&m->word, memory_order_acquire);
    out->state = vs__word_state(w);
    out->owner = vs__word_owner(w);
    out->generation = vs__word_gen(w);
    out->lap = vs__word_lap(w);
    out->tag = atomic_load_explicit(&m->tag, memory_order_relaxed);
    out->size = atomic_load_explicit(&m->size, memory_order_relaxed);
    return VS_OK;
}

size_t vs_pool_class_count(const vs_pool *pool) { return pool ? pool->class_count : 0; }

uint32_t vs_pool_slot_size(const vs_pool *pool, size_t class_idx)
{
    return pool && class_idx < pool->class_count ? pool->classes[class_idx].slot_size : 0;
}

uint32_t vs_pool_slot_count(const vs_pool *pool, size_t class_idx)
{
    return pool && class_idx < pool->class_count ? pool->classes[class_idx].slot_count : 0;
}
