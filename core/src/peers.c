/* Joining and leaving the peer table. A peer's liveness is an OFD lock on its byte, taken
 * before its entry turns ALIVE and dropped by the kernel when the process dies; so an ALIVE
 * entry whose byte is unlocked belongs to a dead peer, never to one still joining. */
#include "segment.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

int vs_segment_join(vs_segment *seg, uint8_t *peer_id)
{
    if (!seg || !seg->map)
        return VS_EINVAL;
    if (seg->peer_id) {
        if (peer_id)
            *peer_id = seg->peer_id;
        return VS_OK;
    }
    unsigned reaped;
    vs_segment_reap(seg, &reaped); /* make room from the dead first */
    for (uint32_t id = 1; id <= seg->max_peers; id++) {
        vs__peer *p = vs__peer_entry(seg, (uint8_t)id);
        uint64_t s = atomic_load_explicit(&p->state, memory_order_acquire);
        if (vs__peer_state(s) != VS_PEER_FREE)
            continue;
        if (vs__lock_byte(seg->fd, VS__LOCK_LIVE(id)) != 0)
            continue; /* another joiner is taking it */
        if (!atomic_compare_exchange_strong_explicit(
                &p->state, &s, vs__peer_make(VS_PEER_ALIVE, vs__peer_epoch(s) + 1),
                memory_order_acq_rel, memory_order_acquire)) {
            vs__unlock_byte(seg->fd, VS__LOCK_LIVE(id));
            continue;
        }
        atomic_store_explicit(&p->pid, getpid(), memory_order_relaxed);
        atomic_store_explicit(&p->joined_unix_ns, vs__now_ns(CLOCK_REALTIME), memory_order_relaxed);
        seg->peer_id = (uint8_t)id;
        if (peer_id)
            *peer_id = (uint8_t)id;
        return VS_OK;
    }
    vs__set_detail("every peer entry is taken by a live process");
    return VS_EFULL;
}

int vs_segment_leave(vs_segment *seg)
{
    if (!seg || !seg->map)
        return VS_EINVAL;
    uint8_t id = seg->peer_id;
    if (!id)
        return VS_ENOTJOINED;
    /* Our slots go back first: once the entry is FREE the id can be reused, and a slot still
     * marked with it would then look like the new peer's. */
    vs_pool_reclaim_peer_slots(&seg->pool, id);
    vs__peer *p = vs__peer_entry(seg, id);
    atomic_store_explicit(&p->pid, 0, memory_order_relaxed);
    uint64_t s = atomic_load_explicit(&p->state, memory_order_acquire);
    if (vs__peer_state(s) == VS_PEER_ALIVE)
        atomic_compare_exchange_strong_explicit(&p->state, &s,
                                                vs__peer_make(VS_PEER_FREE, vs__peer_epoch(s) + 1),
                                                memory_order_acq_rel, memory_order_acquire);
    vs__unlock_byte(seg->fd, VS__LOCK_LIVE(id));
    seg->peer_id = 0;
    return VS_OK;
}

int vs_segment_peer_info(vs_segment *seg, uint8_t peer_id, vs_peer_info *out)
{
    if (!seg || !seg->map || !out || peer_id == 0 || peer_id > seg->max_peers)
        return VS_EINVAL;
    vs__peer *p = vs__peer_entry(seg, peer_id);
    uint64_t s = atomic_load_explicit(&p->state, memory_order_acquire);
    out->id = peer_id;
    out->state = vs__peer_state(s);
    out->pid = atomic_load_explicit(&p->pid, memory_order_relaxed);
    out->joined_unix_ns = atomic_load_explicit(&p->joined_unix_ns, memory_order_relaxed);
    /* An error probing the lock counts as live, as it does for the reaper. */
    out->live = peer_id == seg->peer_id ||
                vs__byte_locked_elsewhere(seg->fd, VS__LOCK_LIVE(peer_id)) != 0;
    return VS_OK;
}
