/* A per-thread stack of slots this thread freed or reserved, reused first (LIFO, warm).
 * It is only a hint: a cached slot stays FREE in its slot word, and taking it still needs
 * the claiming CAS, so a stale or copied (fork) cache can cost a failed CAS, never a slot
 * handed out twice. Slots parked here (and in the pending mask of a batched class) are
 * invisible to the shared bitmap; an allocation that finds the bitmap empty scans the slot
 * words and republishes them. */
#ifndef VARSLOT_SLOT_CACHE_H
#define VARSLOT_SLOT_CACHE_H

#include "internal.h"

#define VS__TC_CLASSES 16 /* classes above this index are never cached */
#define VS__TC_DEPTH 8
#define VS__TC_RECENT 8   /* slots this thread allocated last: a free of one of them is cached */

struct vs__thread_cache {
    uint32_t pool_id;    /* vs_pool.attach_id the entries belong to */
    uint32_t alloc_pool_id; /* the pool of this thread's last allocation */
    uint16_t ordinal;    /* this thread's number in its process, from 1; 0 = not yet set */
    uint8_t recent_next;
    uint8_t count[VS__TC_CLASSES];
    uint32_t recent[VS__TC_RECENT]; /* vs__tc_key of the slots allocated last; 0 = none */
    uint32_t idx[VS__TC_CLASSES][VS__TC_DEPTH];
    /* Batched classes only (see pool.c, batched()): */
    uint32_t cursor[VS__TC_CLASSES];    /* bitmap word this thread's search starts at, + 1; 0 = none yet */
    uint32_t pend_word[VS__TC_CLASSES]; /* freed slots not yet in the bitmap: their word, */
    uint64_t pend_mask[VS__TC_CLASSES]; /* their bits, */
    uint8_t pend_n[VS__TC_CLASSES];     /* how many */
    /* purge.c looks at the clock after this thread freed 1 MiB of large slots, and after 64
     * allocations that missed the cache */
    uint32_t purge_bytes;
    uint32_t slow_allocs;
};

/* One word naming a slot of a cached class (class < 16, index < 2^24), never 0. */
static inline uint32_t vs__tc_key(uint8_t class_idx, uint32_t idx)
{
    return 1u << 31 | (uint32_t)class_idx << 24 | idx;
}

#ifdef VS_TLS_INITIAL_EXEC /* a build used inside malloc: no __tls_get_addr (it may call malloc) */
#define VS__TLS __thread __attribute__((tls_model("initial-exec")))
#else
#define VS__TLS __thread
#endif
extern VS__TLS struct vs__thread_cache vs__tc;

uint16_t vs__thread_ordinal_init(void);

static inline uint16_t vs__thread_ordinal(void)
{
    uint16_t o = vs__tc.ordinal;
    return VS__LIKELY(o) ? o : vs__thread_ordinal_init();
}

/* This thread allocated the slot: a free of it by this thread soon after goes to the cache. */
static inline void vs__tc_remember(struct vs__thread_cache *tc, uint8_t class_idx, uint32_t idx)
{
    if (class_idx < VS__TC_CLASSES)
        tc->recent[tc->recent_next++ % VS__TC_RECENT] = vs__tc_key(class_idx, idx);
}

/* Whether this thread allocated the slot among its last few allocations (and forgets it):
 * the test free() uses to keep a slot in this thread's cache. A hint, as the cache is. */
static inline bool vs__tc_forget(struct vs__thread_cache *tc, uint32_t key)
{
    unsigned last = (tc->recent_next - 1u) % VS__TC_RECENT;
    if (VS__LIKELY(tc->recent[last] == key)) {
        tc->recent[last] = 0;
        return true;
    }
    for (unsigned i = 0; i < VS__TC_RECENT; i++)
        if (tc->recent[i] == key) {
            tc->recent[i] = 0;
            return true;
        }
    return false;
}

/* Whether this thread holds free slots of its current pool (cached, reserved or pending). */
static inline bool vs__tc_holds_slots(const struct vs__thread_cache *tc)
{
    for (int i = 0; i < VS__TC_CLASSES; i++)
        if (tc->count[i] || tc->pend_n[i])
            return true;
    return false;
}

/* The cache for this pool, emptied first if it held another pool's slots. */
static inline struct vs__thread_cache *vs__tc_for(const vs_pool *pool)
{
    struct vs__thread_cache *tc = &vs__tc;
    if (VS__UNLIKELY(tc->pool_id != pool->attach_id)) {
        for (int i = 0; i < VS__TC_CLASSES; i++)
            tc->count[i] = 0;
        for (int i = 0; i < VS__TC_RECENT; i++)
            tc->recent[i] = 0;
        /* Another pool's pending slots are dropped, not published here: they are FREE in
         * their words and their class is parked, so that pool's searches find them. */
        for (int i = 0; i < VS__TC_CLASSES; i++) {
            tc->cursor[i] = 0;
            tc->pend_mask[i] = 0;
            tc->pend_n[i] = 0;
        }
        tc->pool_id = pool->attach_id;
    }
    return tc;
}

#endif
