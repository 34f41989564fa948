/* One slot, many readers: an owner publishes its slot read-only to a set of reader peers, each
 * reader gives its reference back, and a dead or departed reader's references are dropped.
 * The slot word stays the only truth about whether a slot may be handed out: a SHARED word
 * is never claimed, freed, transferred or reclaimed as an owned slot, and only the CAS
 * SHARED -> FREE, made once the share entry holds no seat, gives the slot back. Who holds a
 * seat is in the share entry (internal.h); every change to it is one CAS that compares the
 * share's {gen, lap}. model: shared.pml */
#include "debug.h"
#include "memcheck_hooks.h"
#include "segment.h"

/* The seats among `seats` whose reader is peer. The seat bytes are read only under a `live`
 * value of the current share, and compared, never used as an index. */
static uint16_t seats_of(const vs__share *sh, uint16_t seats, uint8_t peer)
{
    uint16_t mine = 0;
    for (uint16_t s = seats; s; s &= (uint16_t)(s - 1)) {
        unsigned i = (unsigned)__builtin_ctz(s);
        if (atomic_load_explicit(&sh->seat[i], memory_order_relaxed) == peer)
            mine |= (uint16_t)(1u << i);
    }
    return mine;
}

/* Whether this process stands for peer: in a segment, only its own peer id; a pool over
 * private memory has no other process in it. (For memcheck: which blocks are this process's.) */
static inline bool of_this_process(const vs_pool *pool, uint8_t peer)
{
    return !pool->segment || __atomic_load_n(&pool->segment->peer_id, __ATOMIC_RELAXED) == peer;
}

/* Whether any of `seats` is held by a peer this process stands for. */
static bool process_holds(const vs_pool *pool, const vs__share *sh, uint16_t seats)
{
    if (!pool->segment)
        return seats != 0;
    uint8_t self = __atomic_load_n(&pool->segment->peer_id, __ATOMIC_RELAXED);
    return self && seats_of(sh, seats, self) != 0;
}

static inline bool word_shared_at(uint64_t w, uint32_t gen, uint32_t lap)
{
    return vs__word_state(w) == VS_SLOT_SHARED && vs__word_gen(w) == gen && vs__word_lap(w) == lap;
}

/* The share of word w holds no seat: SHARED -> FREE in one CAS, and the index hears of it.
 * Whoever sees the empty share may do it (the last releaser, a reaper after a releaser died
 * between its two CASes); one of them wins. model: finish_cas */
static bool finish(const struct vs_pool_class *cls, vs__slot_meta *m, uint32_t idx, uint64_t w)
{
    VS__DEBUG_POINT(vs__debug_before_finish_cas, idx);
    if (!atomic_compare_exchange_strong_explicit(&m->word, &w, vs__word_with(w, 0, VS_SLOT_FREE),
                                                 memory_order_acq_rel, memory_order_relaxed))
        return false;
    vs__publish_free(cls, idx);
    return true;
}

/* In a segment, every reader is a joined peer now: their entries' state words, to compare
 * once the slot is shared. */
static int readers_joined(const vs_segment *seg, const uint8_t *readers, size_t n, uint64_t *states)
{
    for (size_t i = 0; i < n; i++) {
        if (readers[i] > seg->max_peers)
            return VS_EINVAL;
        states[i] = atomic_load_explicit(&vs__peer_entry(seg, readers[i])->state, memory_order_seq_cst);
        if (vs__peer_state(states[i]) != VS_PEER_ALIVE)
            return VS_ENOTJOINED;
    }
    return VS_OK;
}

static bool drop_peer(const struct vs_pool_class *cls, uint32_t idx, uint8_t peer, uint64_t share);

int vs_pool_share(const vs_pool *pool, vs_slot_ref ref, uint8_t owner, const uint8_t *readers, size_t n)
{
    const struct vs_pool_class *cls;
    uint32_t idx, lap;
    vs__slot_meta *m = vs__ref_meta(pool, ref, &cls, &idx, &lap);
    if (!m || !readers || n == 0 || n > VS__SEATS)
        return VS_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (readers[i] == 0)
            return VS_EINVAL;
    uint64_t states[VS__SEATS];
    const vs_segment *seg = pool->segment;
    if (seg) {
        int rc = readers_joined(seg, readers, n, states);
        if (rc != VS_OK)
            return rc;
    }
    /* ALLOCATED -> SHARING(owner): from here on this call alone writes the share entry (a
     * second share of the slot, or a free or transfer by another thread of the owner, now
     * fails instead of racing our writes). model: sharing_cas */
    uint64_t w = atomic_load_explicit(&m->word, memory_order_relaxed);
    do {
        if (!vs__word_is_live(w, ref.generation, lap))
            return VS_ESTALE;
        if (vs__word_owner(w) != owner)
            return VS_EPERM;
    } while (!atomic_compare_exchange_weak_explicit(&m->word, &w, vs__word_with(w, owner, VS_SLOT_SHARING),
                                                    memory_order_acquire, memory_order_relaxed));
    uint64_t sharing = vs__word_with(w, owner, VS_SLOT_SHARING);
    vs__share *sh = vs__share_entry(cls, idx);
    bool kept_here = false;
    for (size_t i = 0; i < n; i++) {
        atomic_store_explicit(&sh->seat[i], readers[i], memory_order_relaxed);
        kept_here |= of_this_process(pool, readers[i]);
    }
    atomic_store_explicit(&sh->live, vs__live_make(ref.generation, lap, (uint16_t)((1u << n) - 1)),
                          memory_order_relaxed);
    /* The owner gives up writing; if none of the readers is this process, its block goes. */
    VS__VG(if (!kept_here) vs__vg_released(pool, cls, idx));
    VS__DEBUG_POINT(vs__debug_before_share_cas, idx);
    /* model: share_cas. Release: whoever sees SHARED sees the seats. Nobody else changes a
     * SHARING word but a reaper of a dead owner and a scribbler. */
    uint64_t shared = vs__word_with(w, owner, VS_SLOT_SHARED);
    if (!atomic_compare_exchange_strong_explicit(&m->word, &sharing, shared, memory_order_seq_cst,
                                                 memory_order_relaxed))
        return VS_ESTALE;
    if (seg) {
        /* A reader that was reaped (or left) between our look at its entry and the CAS may have
         * had its slots reclaimed before its seat existed: nobody would ever drop it. An entry
         * still in the state we saw is reaped after the CAS, and the reap finds the seat
         * (seq_cst here and in the reclaim: the two sides' write-then-read must not cross).
         * Only this share's seats: by now the slot may be free and shared again.
         * model: share_recheck */
        atomic_thread_fence(memory_order_seq_cst);
        for (size_t i = 0; i < n; i++)
            if (atomic_load_explicit(&vs__peer_entry(seg, readers[i])->state, memory_order_seq_cst) != states[i])
                drop_peer(cls, idx, readers[i], shared);
    }
    return VS_OK;
}

int vs_pool_release(const vs_pool *pool, vs_slot_ref ref, uint8_t reader)
{
    const struct vs_pool_class *cls;
    uint32_t idx, lap;
    vs__slot_meta *m = vs__ref_meta(pool, ref, &cls, &idx, &lap);
    if (!m)
        return VS_EINVAL;
    uint64_t w = atomic_load_explicit(&m->word, memory_order_acquire);
    if (!word_shared_at(w, ref.generation, lap))
        return VS_EDOUBLEFREE; /* not shared, or a later use of the slot */
    vs__share *sh = vs__share_entry(cls, idx);
    uint64_t live = atomic_load_explicit(&sh->live, memory_order_acquire);
    uint16_t left;
    do {
        if (!vs__live_is_of(live, w))
            return VS_EDOUBLEFREE; /* that share ended */
        uint16_t seats = vs__live_seats(live), mine = seats_of(sh, seats, reader);
        if (!mine)
            return VS_EDOUBLEFREE; /* reader holds no reference (any more) */
        left = (uint16_t)(seats & ~(mine & -mine));
        /* Memcheck hears before the CAS: the last one frees the slot for anyone to claim. */
        VS__VG(if (!process_holds(pool, sh, left)) vs__vg_released(pool, cls, idx));
        VS__DEBUG_POINT(vs__debug_before_release_cas, idx);
        /* model: release_cas */
    } while (!atomic_compare_exchange_weak_explicit(&sh->live, &live,
                                                    vs__live_make(ref.generation, lap, left),
                                                    memory_order_acq_rel, memory_order_acquire));
    if (!left)
        finish(cls, m, idx, w);
    return VS_OK;
}

/* Drops every reference peer holds to the share of slot idx whose SHARED word is `share`
 * (0: whatever share the slot holds now), and frees the slot if none is left (a releaser
 * killed between its two CASes leaves an empty share too). model: drop_peer */
static bool drop_peer(const struct vs_pool_class *cls, uint32_t idx, uint8_t peer, uint64_t share)
{
    vs__slot_meta *m = vs__meta(cls, idx);
    uint64_t w = atomic_load_explicit(&m->word, memory_order_acquire);
    if (vs__word_state(w) != VS_SLOT_SHARED || (share && w != share))
        return false;
    vs__share *sh = vs__share_entry(cls, idx);
    uint64_t live = atomic_load_explicit(&sh->live, memory_order_acquire);
    uint16_t seats;
    for (;;) {
        if (!vs__live_is_of(live, w))
            return false; /* that share ended (or the entry was scribbled on) */
        seats = vs__live_seats(live);
        uint16_t drop = seats_of(sh, seats, peer);
        if (!drop)
            break;
        seats = (uint16_t)(seats & ~drop);
        /* model: drop_cas */
        if (atomic_compare_exchange_weak_explicit(&sh->live, &live,
                                                  vs__live_make(vs__word_gen(w), vs__word_lap(w), seats),
                                                  memory_order_acq_rel, memory_order_acquire))
            break;
    }
    return seats == 0 && finish(cls, m, idx, w);
}

void vs__share_reclaim(const vs_pool *pool, const struct vs_pool_class *cls, uint32_t idx, uint8_t peer)
{
    vs__slot_meta *m = vs__meta(cls, idx);
    uint64_t w = atomic_load_explicit(&m->word, memory_order_acquire);
    if (drop_peer(cls, idx, peer, w) || vs__word_owner(w) != peer || !pool->segment)
        return;
    /* Its publisher: if it died between its CAS and its look at the readers' entries, a
     * reader reaped before the CAS still has a seat nobody will drop. A reader whose entry is
     * not ALIVE now is gone (its own reap drops its seats too: dropping is idempotent). A
     * reader id out of range is a scribble: left alone. model: publisher_reap */
    const vs_segment *seg = pool->segment;
    const vs__share *sh = vs__share_entry(cls, idx);
    uint64_t live = atomic_load_explicit(&sh->live, memory_order_acquire);
    if (!vs__live_is_of(live, w))
        return;
    for (uint16_t s = vs__live_seats(live); s; s &= (uint16_t)(s - 1)) {
        uint8_t q = atomic_load_explicit(&sh->seat[__builtin_ctz(s)], memory_order_relaxed);
        if (q >= 1 && q <= seg->max_peers &&
            vs__peer_state(atomic_load_explicit(&vs__peer_entry(seg, q)->state, memory_order_seq_cst)) != VS_PEER_ALIVE)
            drop_peer(cls, idx, q, w);
    }
}

const void *vs_pool_shared_data(const vs_pool *pool, const vs_slot_ref *ref, uint8_t reader)
{
    const struct vs_pool_class *cls;
    uint32_t idx, lap;
    vs__slot_meta *m = ref ? vs__ref_meta(pool, *ref, &cls, &idx, &lap) : NULL;
    if (!m)
        return NULL;
    uint64_t w = atomic_load_explicit(&m->word, memory_order_acquire);
    if (!word_shared_at(w, ref->generation, lap))
        return NULL;
    const vs__share *sh = vs__share_entry(cls, idx);
    uint64_t live = atomic_load_explicit(&sh->live, memory_order_acquire);
    if (!vs__live_is_of(live, w) || !seats_of(sh, vs__live_seats(live), reader))
        return NULL;
    /* A readable block here (the same one if this process wrote it or holds it already). */
    VS__VG(if (of_this_process(pool, reader)) vs__vg_held(
               pool, cls, idx, atomic_load_explicit(&m->size, memory_order_relaxed), true));
    return vs__slot_data(cls, idx);
}

int vs_pool_share_readers(const vs_pool *pool, vs_slot_ref ref, uint8_t *out, size_t *n)
{
    const struct vs_pool_class *cls;
    uint32_t idx, lap;
    vs__slot_meta *m = vs__ref_meta(pool, ref, &cls, &idx, &lap);
    if (!m || !out || !n)
        return VS_EINVAL;
    *n = 0;
    uint64_t w = atomic_load_explicit(&m->word, memory_order_acquire);
    if (!word_shared_at(w, ref.generation, lap))
        return VS_ESTALE;
    const vs__share *sh = vs__share_entry(cls, idx);
    uint64_t live = atomic_load_explicit(&sh->live, memory_order_acquire);
    if (!vs__live_is_of(live, w))
        return VS_ESTALE;
    for (uint16_t s = vs__live_seats(live); s; s &= (uint16_t)(s - 1))
        out[(*n)++] = atomic_load_explicit(&sh->seat[__builtin_ctz(s)], memory_order_relaxed);
    return VS_OK;
}
