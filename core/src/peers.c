/* Joining and leaving the peer table. A peer's liveness is an OFD lock on its byte, held by a
 * description of its own (seg->live_fd), taken before its entry turns ALIVE and dropped by
 * the kernel when the process dies; so an ALIVE entry whose byte no description holds belongs
 * to a dead peer, never to one still joining. Probes go through another description
 * (seg->lock_fd), so this process's own peer reads as live to its own threads too. */
#include "debug.h"
#include "segment.h"

#include <errno.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

/* Claims a FREE entry for this process, under the JOIN lock (shared): a remover holds it
 * exclusively from its decision to the unlink, so either it sees us joined, or we see that
 * the name no longer names this segment (model: join, with its name check). */
static int claim_entry(vs_segment *seg, int live_fd, uint8_t *out)
{
    if (vs__lock_byte_wait(live_fd, VS__LOCK_JOIN, true, 1000) != 0) {
        vs__set_detail("the segment's name was being removed for a second; try again");
        return VS_EBUSY;
    }
    int rc = VS_EFULL;
    if (!vs__name_still_names(seg->name, seg->file_dev, seg->file_ino)) {
        vs__set_detail("the segment's name was removed (or names another segment) since it was "
                       "opened: open it again");
        rc = VS_ESTALE;
    }
    for (uint32_t id = 1; rc == VS_EFULL && id <= seg->max_peers; id++) {
        vs__peer *p = vs__peer_entry(seg, (uint8_t)id);
        uint64_t s = atomic_load_explicit(&p->state, memory_order_acquire);
        if (vs__peer_state(s) != VS_PEER_FREE)
            continue;
        if (vs__lock_byte(live_fd, VS__LOCK_LIVE(id)) != 0)
            continue; /* another joiner is taking it */
        /* model: join_cas. Locked first: a reaper probing in between sees a live peer. */
        if (!atomic_compare_exchange_strong_explicit(
                &p->state, &s, vs__peer_make(VS_PEER_ALIVE, vs__peer_epoch(s) + 1),
                memory_order_acq_rel, memory_order_acquire)) {
            vs__unlock_byte(live_fd, VS__LOCK_LIVE(id));
            continue;
        }
        vs__assert(id >= 1 && id <= seg->max_peers && vs__peer_state(s) == VS_PEER_FREE);
        atomic_store_explicit(&p->pid, getpid(), memory_order_relaxed);
        atomic_store_explicit(&p->joined_unix_ns, vs__now_ns(CLOCK_REALTIME), memory_order_relaxed);
        *out = (uint8_t)id;
        rc = VS_OK;
    }
    if (rc == VS_EFULL)
        vs__set_detail("every peer entry is taken by a live process");
    vs__unlock_byte(live_fd, VS__LOCK_JOIN);
    return rc;
}

static int join_once(vs_segment *seg)
{
    unsigned reaped;
    vs_segment_reap(seg, &reaped); /* make room from the dead first */
    vs__proc_id opener;
    int live_fd = vs__lock_fd_open(seg, &opener);
    if (live_fd < 0)
        return vs__errno_status(errno, "cannot open a descriptor for the liveness lock");
    uint8_t id = 0;
    int rc = claim_entry(seg, live_fd, &id);
    if (rc != VS_OK) {
        vs__lock_fd_close(live_fd, opener);
        return rc;
    }
    seg->live_fd = live_fd;
    __atomic_store_n(&seg->peer_id, id, __ATOMIC_RELEASE);
    return VS_OK;
}

int vs_segment_join(vs_segment *seg, uint8_t *peer_id)
{
    VS__NO_CANCEL;
    if (!seg || !seg->map)
        return VS_EINVAL;
    int rc = vs__segment_adopt(seg);
    if (rc != VS_OK)
        return rc;
    /* Threads joining one vs_segment together: one joins, the others get its id. */
    while (!__atomic_load_n(&seg->peer_id, __ATOMIC_ACQUIRE)) {
        if (vs__flag_try(&seg->joining)) {
            if (!__atomic_load_n(&seg->peer_id, __ATOMIC_ACQUIRE))
                rc = join_once(seg);
            vs__flag_release(&seg->joining);
            break;
        }
        sched_yield();
    }
    if (rc == VS_OK && peer_id)
        *peer_id = seg->peer_id;
    return rc;
}

int vs_segment_leave(vs_segment *seg)
{
    VS__NO_CANCEL;
    if (!seg || !seg->map)
        return VS_EINVAL;
    int rc = vs__segment_adopt(seg);
    uint8_t id = seg->peer_id;
    if (rc != VS_OK || !id)
        return rc != VS_OK ? rc : VS_ENOTJOINED;
    /* The entry is marked REAPING first: a share naming us as a reader that saw the entry
     * unmarked is one our reclaim sees (share.c). (Our LIVE lock keeps reapers off meanwhile;
     * killed from here on, we are reaped like any dead peer.) Our slots go back before the
     * entry is FREE: then the id can be reused, and a slot still marked with it would look
     * like the new peer's. */
    vs__pool_flush_pending(&seg->pool);
    vs__peer *p = vs__peer_entry(seg, id);
    uint64_t s = atomic_load_explicit(&p->state, memory_order_acquire);
    bool marked = vs__peer_state(s) == VS_PEER_ALIVE && /* model: leave_mark */
                  atomic_compare_exchange_strong_explicit(&p->state, &s,
                                                          vs__peer_make(VS_PEER_REAPING, vs__peer_epoch(s)),
                                                          memory_order_seq_cst, memory_order_acquire);
    /* A purge of another thread of ours marks slots with our id: it ends before they go back
     * (one that starts from here on sees the entry marked and does nothing). */
    vs__purges_wait();
    vs_pool_reclaim_peer_slots(&seg->pool, id);
    VS__DEBUG_POINT(vs__debug_after_leave_reclaim, id);
    if (marked)
        vs__purge_at_leave(seg); /* our entry still ours (REAPING), our slots free now */
    atomic_store_explicit(&p->pid, 0, memory_order_relaxed);
    s = vs__peer_make(VS_PEER_REAPING, vs__peer_epoch(s));
    if (marked) /* model: leave_cas */
        atomic_compare_exchange_strong_explicit(&p->state, &s,
                                                vs__peer_make(VS_PEER_FREE, vs__peer_epoch(s) + 1),
                                                memory_order_acq_rel, memory_order_acquire);
    vs__lock_fd_close(seg->live_fd, vs__segment_owner(seg)); /* drops the liveness lock */
    seg->live_fd = -1;
    __atomic_store_n(&seg->peer_id, 0, __ATOMIC_RELEASE);
    return VS_OK;
}

int vs_segment_peer_identity(const vs_segment *seg, uint8_t peer_id, vs_peer_info *out)
{
    if (!seg || !seg->map || !out || peer_id == 0 || peer_id > seg->max_peers)
        return VS_EINVAL;
    /* No adopt: a fork child may read the table before it has descriptors of its own. */
    vs__peer *p = vs__peer_entry(seg, peer_id);
    uint64_t s = atomic_load_explicit(&p->state, memory_order_acquire);
    out->id = peer_id;
    out->state = vs__peer_state(s);
    out->pid = atomic_load_explicit(&p->pid, memory_order_relaxed);
    out->joined_unix_ns = atomic_load_explicit(&p->joined_unix_ns, memory_order_relaxed);
    out->live = false;
    return VS_OK;
}

int vs_segment_peer_info(vs_segment *seg, uint8_t peer_id, vs_peer_info *out)
{
    VS__NO_CANCEL;
    int rc = vs_segment_peer_identity(seg, peer_id, out);
    if (rc == VS_OK)
        rc = vs__segment_adopt(seg);
    if (rc != VS_OK)
        return rc;
    /* An error probing the lock counts as live, as it does for the reaper. */
    out->live = vs__byte_locked_elsewhere(seg->lock_fd, VS__LOCK_LIVE(peer_id)) != 0;
    return VS_OK;
}
