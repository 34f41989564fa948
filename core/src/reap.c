/* Returning a dead peer's slots. A reaper owns a dead entry while it holds that entry's reap
 * lock, so two reapers never reap one entry at once and a reaper that dies mid-reap is taken
 * over by the next. Liveness is probed through seg->lock_fd, a description no peer's lock is
 * on, so a peer of this very process (another thread's join) reads as live. Reaping only
 * CASes slot words that still name the dead peer, then rebuilds the free bitmap from the slot
 * words: idempotent, so a half-done reap is harmless. */
#include "debug.h"
#include "segment.h"

#include <time.h>

/* Reaps entry id if it is dead and no live reaper is on it. Returns true if it did. */
static bool reap_one(vs_segment *seg, uint8_t id)
{
    vs__peer *p = vs__peer_entry(seg, id);
    uint64_t s = atomic_load_explicit(&p->state, memory_order_acquire);
    uint8_t st = vs__peer_state(s);
    if (st != VS_PEER_ALIVE && st != VS_PEER_REAPING)
        return false;
    if (vs__byte_locked_elsewhere(seg->lock_fd, VS__LOCK_LIVE(id)) != 0)
        return false; /* alive (or we cannot tell: never reap on doubt) */
    if (vs__lock_byte(seg->lock_fd, VS__LOCK_REAP(id)) != 0)
        return false; /* another reaper is on it */
    bool reaped = false;
    /* Look again now that the entry is ours to reap: it may have been freed and re-joined
     * between the first look and the lock. */
    s = atomic_load_explicit(&p->state, memory_order_acquire);
    st = vs__peer_state(s);
    if ((st == VS_PEER_ALIVE || st == VS_PEER_REAPING) &&
        vs__byte_locked_elsewhere(seg->lock_fd, VS__LOCK_LIVE(id)) == 0) {
        VS__DEBUG_POINT(vs__debug_before_reap_cas, id);
        if (st == VS_PEER_ALIVE &&
            !atomic_compare_exchange_strong_explicit(&p->state, &s,
                                                     vs__peer_make(VS_PEER_REAPING, vs__peer_epoch(s)),
                                                     memory_order_acq_rel, memory_order_acquire))
            goto out; /* nobody else may change a dead ALIVE entry: a scribbler did */
        s = vs__peer_make(VS_PEER_REAPING, vs__peer_epoch(s));
        vs__assert(id >= 1 && id <= seg->max_peers && id != __atomic_load_n(&seg->peer_id, __ATOMIC_RELAXED));
        vs_pool_reclaim_peer_slots(&seg->pool, id);
        /* A peer killed between the two steps of an allocate or a free left a free slot
         * out of the bitmap: the slot words are the truth, republish from them. */
        vs_pool_republish_free(&seg->pool);
        atomic_store_explicit(&p->pid, 0, memory_order_relaxed);
        if (atomic_compare_exchange_strong_explicit(&p->state, &s,
                                                    vs__peer_make(VS_PEER_FREE, vs__peer_epoch(s) + 1),
                                                    memory_order_acq_rel, memory_order_acquire)) {
            atomic_fetch_add_explicit(&vs__header(seg)->peers_reaped, 1, memory_order_relaxed);
            reaped = true;
        }
    }
out:
    vs__unlock_byte(seg->lock_fd, VS__LOCK_REAP(id));
    return reaped;
}

int vs_segment_reap(vs_segment *seg, unsigned *reaped)
{
    VS__NO_CANCEL;
    unsigned n = 0;
    if (reaped)
        *reaped = 0;
    if (!seg || !seg->map)
        return VS_EINVAL;
    int rc = vs__segment_adopt(seg);
    if (rc != VS_OK)
        return rc;
    /* Threads of one process share the segment's locks, so they take turns here instead. */
    if (!vs__flag_try(&seg->reaping))
        return VS_OK;
    for (uint32_t id = 1; id <= seg->max_peers; id++)
        if (id != __atomic_load_n(&seg->peer_id, __ATOMIC_RELAXED) && reap_one(seg, (uint8_t)id))
            n++;
    vs__flag_release(&seg->reaping);
    if (reaped)
        *reaped = n;
    return VS_OK;
}

bool vs__segment_reap_on_exhaustion(vs_segment *seg)
{
    /* Probing every peer's lock costs a syscall each: at most once per 10 ms per segment. */
    uint64_t now = vs__now_ns(CLOCK_MONOTONIC_COARSE);
    uint64_t last = __atomic_load_n(&seg->last_auto_reap_ns, __ATOMIC_RELAXED);
    if (now - last < 10000000u && last != 0)
        return false;
    if (!__atomic_compare_exchange_n(&seg->last_auto_reap_ns, &last, now, false, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED))
        return false;
    unsigned n = 0;
    vs_segment_reap(seg, &n);
    return n > 0;
}
