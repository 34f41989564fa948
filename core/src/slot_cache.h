/* A per-thread stack of slots this thread freed, reused first (LIFO, warm in cache).
 * It is only a hint: a cached slot stays FREE in its slot word, and taking it still needs
 * the claiming CAS, so a stale or copied (fork) cache can cost a failed CAS, never a slot
 * handed out twice. Slots parked here are invisible to the shared bitmap; an allocation
 * that finds the bitmap empty scans the slot words and republishes them. */
#ifndef VARSLOT_SLOT_CACHE_H
#define VARSLOT_SLOT_CACHE_H

#include "internal.h"

#define VS__TC_CLASSES 16 /* classes above this index are never cached */
#define VS__TC_DEPTH 8

struct vs__thread_cache {
    uint32_t pool_id;    /* vs_pool.attach_id the entries belong to */
    uint16_t thread_tag; /* stamped into slot words this thread allocates; 0 = not yet set */
    uint16_t ordinal;    /* this thread's number in its process, from 0 */
    uint8_t count[VS__TC_CLASSES];
    uint32_t idx[VS__TC_CLASSES][VS__TC_DEPTH];
};

#ifdef VS_TLS_INITIAL_EXEC /* the preload build: no __tls_get_addr (it may call malloc) */
#define VS__TLS __thread __attribute__((tls_model("initial-exec")))
#else
#define VS__TLS __thread
#endif
extern VS__TLS struct vs__thread_cache vs__tc;

uint16_t vs__thread_tag_init(void);

static inline uint16_t vs__thread_tag(void)
{
    uint16_t t = vs__tc.thread_tag;
    return VS__LIKELY(t) ? t : vs__thread_tag_init();
}

/* The cache for this pool, emptied first if it held another pool's slots. */
static inline struct vs__thread_cache *vs__tc_for(const vs_pool *pool)
{
    struct vs__thread_cache *tc = &vs__tc;
    if (VS__UNLIKELY(tc->pool_id != pool->attach_id)) {
        for (int i = 0; i < VS__TC_CLASSES; i++)
            tc->count[i] = 0;
        tc->pool_id = pool->attach_id;
    }
    return tc;
}

#endif
