/* varslot: the slot-ownership protocol of one size class (core/src/pool.c, core/src/reap.c),
 * with the v3 slot word {gen, owner, state, lap}. Whether a free goes to the freeing thread's
 * cache is decided by the thread's ring of recent allocations (thread-local). README.md:
 * bounds, what is left out, the map to the C functions. ./check runs every property and every
 * mutant.
 *
 * Granularity. Every atomic write to shared memory (CAS, fetch_and, fetch_or, exchange, store)
 * is a step of its own, with its C function named beside it. Folded into a step, because no
 * other thread can tell the difference:
 *  - a load whose value only serves as the expected value of the CAS right after it (claim,
 *    free_word, vs_pool_transfer, reclaim): the load has no effect and the CAS fails unless the
 *    word still holds the loaded value, so each interleaving of the load-then-CAS code has a
 *    folded twin through the same shared states (-DFINE: separate loads, the v3 side stores
 *    and the parked load/store as steps of their own);
 *  - load-then-store/exchange pairs on `parked` (storing or exchanging a value the flag
 *    already has changes nothing);
 *  - thread-local work (the thread cache, locals) and ghost bookkeeping.
 * Loads not checked again by a CAS stay steps of their own: the bitmap word in
 * claim_from_bitmap, the word and then the bitmap in vs__republish_class. Memory is
 * sequentially consistent.
 *
 * Batched classes (issue 10). The class stands for one with slot_size <= 64 KiB and
 * slot_count >= 256, which C batches at both ends of the bitmap: a free that does not go to
 * the thread cache collects the slot's bit in a thread-local pending mask (pending_add) and
 * publishes the mask with one fetch_or (pending_flush); claim_from_bitmap takes the candidate
 * and further set bits of the word in one fetch_and and keeps the extra slots in the thread
 * cache (the reservation). Pending and reserved slots are FREE with their bit clear, like
 * cached ones, and parked is set for each: a failing allocation republishes them, the final
 * scan does even if someone consumed parked, and a reaper does for a killed peer.
 *
 * One property family is compiled in at a time (one assertion family each):
 *   -DPROP_TWO_OWNERS -DPROP_NOTHING_LOST -DPROP_LIVE_NOT_REAPED -DPROP_STALE_REF
 *   -DPROP_ALLOC_PROGRESS
 * Mutants, each a deliberate bug: -DMUTANT_OWNER_AFTER_CAS -DMUTANT_FREE_STORE
 *   -DMUTANT_NO_REPUBLISH -DMUTANT_REAP_LIVE -DMUTANT_GEN_WRAP -DMUTANT_NO_FINAL_SCAN
 *   -DMUTANT_SCAN_SHORT_CIRCUIT (after a scan that set no bit, no search: the code before
 *   this model found that it let an allocation fail with a slot free and published)
 *   -DMUTANT_PARK_ONCE -DMUTANT_FLUSH_STORE -DMUTANT_RESERVE_NO_PARK -DMUTANT_RESERVE_STRANDED
 *   (the batching, beside the steps they break)
 * Other switches: -DCONFIG=n (one configuration only), -DFINE, -DANY_BIT, -DDEPTH=2,
 *   -DHINT_ANY, -DGEN_MAX / -DLAP_MAX, -DALLOC_PROGRESS_SCAN (the quiescent form of
 *   alloc_progress, below).
 *
 * Actors. Peer 1 is ThreadA, ThreadB and the reaping thread Reaper(R1); peer 2 is Peer2;
 * peer 3 is Reaper(R3). init picks one of three configurations:
 *   1 "crash":      Peer2 is killed at any step; Reaper(R3) reaps it, concurrently with A, B.
 *   2 "contention": ThreadB holds slot 1 from the start and frees it first, so allocations
 *                   contend for one slot; Peer2 exits normally (dead, reaped like a crash);
 *                   Reaper(R3) may be killed mid-reap and Reaper(R1) takes over.
 *   3 "two crashes": Peer2 killed at any step and Reaper(R3) killed mid-reap; ThreadA
 *                   allocates a slot and holds it until the check (a producer's slot in
 *                   flight: its reservation has no free behind it to set parked), then frees
 *                   it and drains.
 *   ThreadA  (tag 1) allocate, write, hand the ref to ThreadB, free (racing with B's free of
 *            the same ref) (config 3: allocate, write, hold); then, as the checker, once
 *            everyone else is done or dead: nothing_lost, (config 3: free the held slot) and
 *            drain the pool with vs_pool_allocate.
 *   ThreadB  (tag 2) (config 2: free slot 1, to its cache); free A's ref: a racing double free,
 *            or a stale free once A's won and the slot may be reused; take peer 2's handle
 *            from the channel, vs_pool_transfer(h, 2 -> 1), write, free (the consumer of the
 *            hand-off: its frees of slots it did not allocate go to its pending mask, which
 *            it may never flush).
 *   Peer2    (tag 3) allocate, write, free (to its cache); allocate (its cache first), write,
 *            send the handle through a one-entry channel; exit. A kill stops its remaining
 *            steps, its thread cache and pending mask vanish (they are TLS, also at a normal
 *            exit) and its LIVE lock drops (alive[2] = 0).
 *   Reaper   R3 reaps peer 2 as soon as it is dead; R1 reaps once A and B are done and R3 is
 *            done or dead (the next vs_segment_join or reap, taking over a half-done reap).
 */

#ifndef GEN_MAX
#define GEN_MAX 2   /* generations 1..GEN_MAX in a lap (C: 1..0xFFFFFFFF) */
#endif
#ifndef LAP_MAX
#define LAP_MAX 1   /* laps 0..LAP_MAX (C: lap_max = min(2^20, 2^24 / slot_count) - 1) */
#endif
#ifndef DEPTH
#define DEPTH 1     /* thread cache depth, 1 or 2 (C: VS__TC_DEPTH = 8) */
#endif

#define NS 2        /* slots in the class */


/* ---- the slot word: state 2 bits | owner 2 bits | gen 2 bits | lap 2 bits ---- */
#define S_FREE    0
#define S_ALLOC   1
#define S_RETIRED 2
#define S_PURGING 3
#define ST(w)  ((w) & 3)
#define OWN(w) (((w) >> 2) & 3)
#define GEN(w) (((w) >> 4) & 3)
#define LAP(w) (((w) >> 6) & 3)
#define MKW(st, own, gen, lap) ((st) | ((own) << 2) | ((gen) << 4) | ((lap) << 6))

/* ---- a ref (the handle): slot 1 bit | lap 2 bits | gen 2 bits | ghost serial 3 bits ----
 * (C: slot_idx = lap * slot_count + index, generation) */
#define RSLOT(r) ((r) & 1)
#define RLAP(r)  (((r) >> 1) & 3)
#define RGEN(r)  (((r) >> 3) & 3)
#define RSER(r)  (((r) >> 5) & 7)
#define MKREF(s, lap, gen, ser) ((s) | ((lap) << 1) | ((gen) << 3) | ((ser) << 5))
#define NOREF 0     /* generation 0 is never handed out, so no ref is 0 */
/* vs__word_is_live, v3: allocated, at the ref's generation and lap */
#define LIVE(w, r) (ST(w) == S_ALLOC && GEN(w) == RGEN(r) && LAP(w) == RLAP(r))

#define VS_OK 0
#define VS_EDOUBLEFREE 1
#define VS_ESTALE 2
#define VS_EPERM 3
#define RC_NONE 9

#define TA 1       /* actor ids; for the three allocating threads also their thread tags */
#define TB 2
#define TP 3
#define R3 5
#define R1 6
#define NT 4
#define PEER_OF(t) ((t) == TP -> 2 : 1)

/* peer 2's entry in the peer table */
#define P_ALIVE   1
#define P_REAPING 2
#define P_FREE    3

/* ---- the segment ---- */
byte config;             /* which scenario: set once by init */
byte word[NS];           /* vs__slot_meta.word (FREE, gen 0, lap 0 after vs_pool_init; see init) */
byte bm;                 /* the class's bitmap word: vs_pool_init sets every slot's bit */
/* config 2: ThreadB allocated slot 1 (gen 1) before the model starts, and holds it */
#define B_REF1 MKREF(1, 0, 1, B_SER1)
byte parked;             /* vs__class_header.parked */
#ifdef PROP_NOTHING_LOST
byte claimer[NS];        /* ghost: the actor whose claim took slot s last */
#define G_CLAIMER(x, me) claimer[x] = me
#else
#define G_CLAIMER(x, me) skip
#endif
byte pstate = P_ALIVE;   /* vs__peer.state of peer 2 */
byte reaplock;           /* who holds the REAP(2) OFD lock; 0: nobody */
/* ---- processes, and the harness ---- */
byte alive[4] = 1;      /* alive[p]: peer p's process lives (holds LIVE(p)) */
byte doneA, doneB, doneR1, doneR3;
byte fincache[NT];       /* a finished thread's cache, as a slot mask, for the checker */
chan hand = [1] of { byte };   /* peer 2 -> peer 1: a packed handle (a pipe, a socket) */
byte exposed;            /* ThreadA's ref, handed to ThreadB for the racing free */
byte exposedSet;

/* ==== property families: ghost state and assertions ==== */

#ifdef PROP_TWO_OWNERS
/* holder[s]: the actor holding slot s (0: nobody), set by its successful claim or transfer,
 * cleared by the free or reap that returns the slot. A claim never succeeds on a held slot;
 * only the holder writes; a free only succeeds on a held slot; a transfer only moves the
 * sender's slot; the reaper only frees the dead peer's. */
byte holder[NS];
#define G_CLAIM(x, me)  assert(holder[x] == 0); holder[x] = me
#define G_WRITE(x, me)  assert(holder[x] == me)
#define G_FREE(x, me)   assert(holder[x] != 0); holder[x] = 0
#define G_XFER(x, me)   assert(holder[x] == TP); holder[x] = me
#define G_REAP(x)       assert(holder[x] == TP); holder[x] = 0
#else
#define G_CLAIM(x, me)  skip
#define G_WRITE(x, me)  skip
#define G_FREE(x, me)   skip
#define G_XFER(x, me)   skip
#define G_REAP(x)       skip
#endif

#ifdef PROP_STALE_REF
/* gser[s]: how many times slot s was claimed: the identity of its current allocation. A ref
 * carries the serial of the allocation it names; a free or transfer succeeds only on it. */
byte gser[NS];
#define G_SER_BUMP(x)   assert(gser[x] < 7); gser[x] = gser[x] + 1
#define B_SER1 1
#define G_SER(x)        gser[x]
#define G_SAME(x, rr)   assert(RSER(rr) == gser[x])
#else
#define G_SER_BUMP(x)   skip
#define B_SER1 0
#define G_SER(x)        0
#define G_SAME(x, rr)   skip
#endif

#ifdef PROP_LIVE_NOT_REAPED
/* the reaper's CAS only frees (or moves) a word whose owner is dead */
#define G_REAP_DEAD(w)  assert(!alive[OWN(w)])
#else
#define G_REAP_DEAD(w)  skip
#endif

#ifdef PROP_ALLOC_PROGRESS
/* alloc_progress. watch[t] bit s: slot s was FREE in its word when thread t's vs_pool_allocate
 * began, and no other actor has changed slot s's word or its bitmap bit since. Claim: an
 * allocation that returns false has no such slot. (Quiescent: vs_pool_allocate fails only if
 * no slot is FREE; ThreadA's drain checks that case too.)
 * Why it holds: the slot is in t's own cache (claim_cached takes it), or its bit is set all
 * along (t's first claim_from_bitmap finds it and nobody else can take it), or clear all along
 * (t's last vs__republish_class reads it FREE with the bit clear, sets the bit and so returns
 * non-zero, and the bitmap is searched again, where only t can take it).
 * Why nothing stronger holds while other actors run:
 *  - "no slot is FREE when the allocation returns false": another allocator may have taken
 *    the slot's bit (fetch_and) and not yet CASed its word, or died in between (the slot stays
 *    FREE and out of the bitmap until a reap or someone's final scan republishes it);
 *  - "no slot is FREE when the final scan reads it while no other operation runs": fails, as
 *    -DALLOC_PROGRESS_SCAN shows (config 2): Peer2 takes slot 0's bit; B frees slot 1 into its
 *    cache; A's allocation finds the bitmap empty and parked 0, its final scan republishes
 *    both slots and it claims slot 0; Peer2's CAS on slot 0 fails, its bitmap pass ends, parked
 *    is still 0; B sets parked and returns; Peer2's final scan reads slot 1 FREE with nobody
 *    else running, but A set the bit already, so the scan sets nothing, returns 0, and
 *    `vs__republish_class(cls) && claim_from_bitmap(...)` did not search again: Peer2 failed
 *    with slot 1 FREE and in the bitmap. The code now searches the bitmap after every scan
 *    whatever it set, and that form holds too (MUTANT_SCAN_SHORT_CIRCUIT is the old code). */
byte watch[7];            /* by actor id (1..3 allocate; the reapers never do) */
#define W1(x, me, t)    watch[t] = ((me) == (t) -> watch[t] : watch[t] & ~(1 << (x)))
#define TOUCH(x, me)    W1(x, me, 1); W1(x, me, 2); W1(x, me, 3)
#define RETIRE(x)       TOUCH(x, 0)   /* a retired slot is gone for everyone */
#ifdef ALLOC_PROGRESS_SCAN
/* the scan form: bit s of watch[t] is set when t's final republish scan reads slot s FREE
 * while no other actor is inside a pool operation (busy[]), and cleared when another actor
 * changes the slot's word or bit afterwards */
byte busy[7];
#define OTHERS_IDLE(me) (busy[1] + busy[2] + busy[3] + busy[5] + busy[6] == busy[me])
#define G_WATCH_START(me) busy[me] = 1
#define G_SCAN_WATCH(x, me) \
  if :: fin && ST(w) == S_FREE && OTHERS_IDLE(me) -> watch[me] = watch[me] | (1 << (x)) :: else fi
#define G_BUSY(me, v) busy[me] = v
#else
#define G_WATCH_START(me) d_step { watch[me] = (ST(word[0]) == S_FREE) | ((ST(word[1]) == S_FREE) << 1) }
#define G_SCAN_WATCH(x, me) skip
#endif
#define G_WATCH_END(me) d_step { assert(ok || watch[me] == 0); watch[me] = 0; G_BUSY(me, 0) }
#else
#define TOUCH(x, me)    skip
#define RETIRE(x)       skip
#define G_WATCH_START(me) skip
#define G_SCAN_WATCH(x, me) skip
#define G_WATCH_END(me) skip
#endif
#ifndef G_BUSY
#define G_BUSY(me, v) skip
#endif

#ifdef MUTANT_REAP_LIVE
#define PROBE_DEAD 1            /* mutant: the reaper does not probe LIVE(2) */
#else
#define PROBE_DEAD (!alive[2])  /* vs__byte_locked_elsewhere(lock_fd, LIVE(2)) == 0 */
#endif

/* ==== the code ==== */

/* claim(): the word after FREE(gen, lap). v3: gen 1..GEN_MAX, then lap + 1 and gen 1; a slot
 * whose lap would pass LAP_MAX is retired by the claim's CAS instead (FREE -> RETIRED, and the
 * claim fails), so a (lap, gen) pair never comes back and no stale ref matches a later
 * allocation. (Where the retire happens is not in the notes: here, in claim().) */
inline next_word(cw, cnw, own)
{
  if
  :: GEN(cw) < GEN_MAX -> cnw = MKW(S_ALLOC, own, GEN(cw) + 1, LAP(cw))
  :: else ->
#ifdef MUTANT_GEN_WRAP
     cnw = MKW(S_ALLOC, own, 1, LAP(cw))       /* mutant: the generation wraps, no lap */
#else
     if
     :: LAP(cw) < LAP_MAX -> cnw = MKW(S_ALLOC, own, 1, LAP(cw) + 1)
     :: else -> cnw = MKW(S_RETIRED, 0, GEN(cw), LAP(cw))
     fi
#endif
  fi
}

#ifdef MUTANT_OWNER_AFTER_CAS
#define CLAIM_NEXT next_word(w, nw, 0)      /* mutant: the CAS leaves the owner 0 */
#else
#define CLAIM_NEXT next_word(w, nw, PEER_OF(me))
#endif
/* On a won claim the thread remembers the slot among its recent allocations (vs__tc_remember,
 * thread-local: the recent mask of the actor's locals). */
#define CLAIM_WON(x, me) \
  if \
  :: ST(nw) == S_ALLOC -> \
     ok = 1; G_SER_BUMP(x); r = MKREF(x, LAP(nw), GEN(nw), G_SER(x)); G_CLAIM(x, me); \
     TOUCH(x, me); G_CLAIMER(x, me); recent = recent | (1 << (x)) \
  :: else -> ok = 0; RETIRE(x) \
  fi
/* claim(): atomic_load of the word + atomic_compare_exchange_weak FREE(g) -> ALLOCATED(next,
 * owner), folded. (A weak CAS's spurious failure is one more round of the loop: nothing new.) */
#define CLAIM_STEP(x, me) \
  w = word[x]; \
  if \
  :: ST(w) == S_FREE -> CLAIM_NEXT; word[x] = nw; CLAIM_WON(x, me) \
  :: else \
  fi; \
  w = 0; nw = 0

/* vs__publish_free(cls, x): atomic_fetch_or of x's bit. (The search hint is not modelled: with
 * one bitmap word it is always 0.) */
inline publish_free(x, me)
{
  d_step {
    if :: !(bm & (1 << (x))) -> TOUCH(x, me) :: else fi;
    bm = bm | (1 << (x))
  }
}

/* pending_flush(tc, cls): this thread's pending mask goes to the bitmap word in one
 * atomic_fetch_or (release), as vs__publish_free does for one bit; the mask (TLS) is cleared.
 * C flushes when the mask holds 16 bits, when the next free is in another bitmap word, when an
 * allocation of this thread misses its cache (allocate_from) and at vs_segment_leave/close:
 * the model flushes after any add (nondeterministically) and in allocate_from.
 * MUTANT_FLUSH_STORE: a plain store of the mask (erases bits others published). */
inline pending_flush(me)
{
  d_step {                                               /* pending_flush: atomic_fetch_or(mask) */
    if :: (pend & 1) && !(bm & 1) -> TOUCH(0, me) :: else fi;
    if :: (pend & 2) && !(bm & 2) -> TOUCH(1, me) :: else fi;
#ifdef MUTANT_FLUSH_STORE
    if :: (bm & ~pend & 1) -> TOUCH(0, me) :: else fi;
    if :: (bm & ~pend & 2) -> TOUCH(1, me) :: else fi;
    bm = pend;                                           /* mutant: atomic_store(mask) */
#else
    bm = bm | pend;
#endif
    pend = 0
  }
}

/* claim(cls, idx): sets ok (and r). */
inline claim(x, me)
{
#ifdef FINE
  w = word[x];                                           /* claim: atomic_load(&m->word) */
  do
  :: cas || ST(w) != S_FREE -> break
  :: else ->
     d_step {                                            /* claim: CAS (claim_cas, retire) */
       CLAIM_NEXT;
       if
       :: word[x] == w -> word[x] = nw; cas = 1; CLAIM_WON(x, me)
       :: else -> w = word[x]
       fi;
       nw = 0
     }
  od;
  w = 0; cas = 0;
#else
  d_step { CLAIM_STEP(x, me) }                           /* claim: load + CAS (claim_cas, retire) */
#endif
#ifdef MUTANT_OWNER_AFTER_CAS
  if
  :: ok -> d_step { word[x] = word[x] | (PEER_OF(me) << 2); TOUCH(x, me) }  /* mutant: owner store */
  :: else
  fi
#endif
}

/* claim_cached(tc, cls): pop this thread's cache (thread-local) until a claim succeeds. */
inline claim_cached(me)
{
  do
  :: tcn == 0 -> break
  :: else ->
     if
     :: DEPTH > 1 && tcn == 2 -> s = tc1; tc1 = 0
     :: else -> s = tc0; tc0 = 0
     fi;
     tcn--;
     claim(s, me);
     s = 0;
     if :: ok -> break :: else fi
  od
}

/* The parked pair of a free into the cache or the pending mask, and of a reservation: load
 * parked (relaxed), store 1 (release) if it is 0. Folded: storing the value the flag already
 * has changes nothing (-DFINE: two steps). */
#ifdef FINE
#define SET_PARKED if :: parked == 0 -> parked = 1 :: else fi
#else
#define SET_PARKED parked = 1
#endif

/* claim_from_bitmap(cls), batched class: load the bitmap word; choose a candidate; one
 * fetch_and takes the candidate and, while this thread's cache has room, up to 7 further set
 * bits of the loaded word (here: the other slot). The extra bits that were really set
 * (prev & take & ~bit) are reserved: into this thread's cache (TLS), then parked is set. Then
 * the candidate is claimed. If it is not won (its bit was already clear in prev, or its claim
 * fails) and the cache holds slots, claim_cached before the search goes on.
 * search_rotation() (C: the thread's private cursor picks the word, the rotation the bit)
 * chooses the first bit; with two slots the C code always tries the lower set bit first.
 * -DANY_BIT lets any set bit be tried (every rotation of a larger class).
 * MUTANT_RESERVE_NO_PARK: reserved slots are cached without setting parked.
 * MUTANT_RESERVE_STRANDED: a lost candidate goes on to the next bit without claim_cached. */
inline claim_from_bitmap(me)
{
  v = bm;                                                /* claim_from_bitmap: atomic_load(&bm[wi]) */
  do
  :: v == 0 -> break
  :: else ->
     atomic {                                            /* claim_from_bitmap: atomic_fetch_and(~take) */
#ifdef ANY_BIT
       if
       :: v & 1 -> b = 0
       :: v & 2 -> b = 1
       fi;
#else
       b = (v & 1 -> 0 : 1);
#endif
       take = (tcn < DEPTH -> v : (1 << b));             /* the candidate, and reservations */
       prev = bm;
       bm = bm & ~take;
       if :: prev & take & 1 -> TOUCH(0, me) :: else fi;
       if :: prev & take & 2 -> TOUCH(1, me) :: else fi;
       v = prev & ~take;
       take = prev & take & ~(1 << b);                   /* reserved: into this thread's cache */
       if
       :: take -> if :: tcn == 0 -> tc0 = (take == 2) :: else -> tc1 = (take == 2) fi; tcn++
       :: else
       fi
     }
     if
     :: take ->
        take = 0;
#ifndef MUTANT_RESERVE_NO_PARK
        SET_PARKED                                       /* claim_from_bitmap: parked load, store 1 */
#else
        skip                                             /* mutant: reservations not parked */
#endif
     :: else
     fi;
     if
     :: prev & (1 << b) -> prev = 0; claim(b, me)        /* claim_from_bitmap: claim */
     :: else -> prev = 0; ok = 0                         /* another allocator took it */
     fi;
     if
     :: ok -> break
#ifndef MUTANT_RESERVE_STRANDED
     :: !ok && tcn > 0 ->                                /* lost: take a reservation first */
        claim_cached(me);                                /* claim_from_bitmap: claim_cached */
        if :: ok -> break :: else fi
#endif
     :: else
     fi
  od;
  v = 0; b = 0; prev = 0
}

/* vs__republish_class(cls): for each slot, load its word; if FREE, load the bitmap word; if
 * the bit is clear, vs__publish_free. pub: how many bits it set. */
inline republish(me, fin)
{
  pub = 0; i = 0;
  do
  :: i < NS ->
#ifdef ALLOC_PROGRESS_SCAN
     d_step { w = word[i]; G_SCAN_WATCH(i, me) }         /* vs__republish_class: atomic_load(word) */
#else
     w = word[i];                                        /* vs__republish_class: atomic_load(word) */
#endif
     if
     :: ST(w) == S_FREE ->
        if
        :: bm & (1 << i) -> skip                         /* vs__republish_class: atomic_load(bm) */
        :: else -> publish_free(i, me); pub++
        fi
     :: else
     fi;
     w = 0; i++
  :: else -> break
  od;
  i = 0
}

/* After a republish scan, allocate_from searches the bitmap again whatever the scan set
 * (another thread's scan may have set the bit); the mutant searches only if its own scan
 * set one, as the code once did. */
#ifdef MUTANT_SCAN_SHORT_CIRCUIT
#define SEARCH_AFTER_SCAN(me) if :: pub -> pub = 0; claim_from_bitmap(me) :: else fi
#else
#define SEARCH_AFTER_SCAN(me) pub = 0; claim_from_bitmap(me)
#endif

/* vs_pool_allocate: claim_cached (the hot path, no flush); on a miss allocate_slow ->
 * allocate_from, one class: pending_flush of this thread's mask; claim_cached; claim_from_bitmap;
 * if parked (load, then exchange to 0): republish and claim_from_bitmap; the final loop:
 * republish and claim_from_bitmap. allocate_slow's reap on exhaustion is the Reaper processes
 * (a reap does not depend on who asked for it). Sets ok and r. */
inline vs_pool_allocate(me)
{
  ok = 0; r = NOREF;
  G_WATCH_START(me);
  claim_cached(me);                                      /* vs_pool_allocate: claim_cached */
  if
  :: !ok ->
     if :: pend -> pending_flush(me) :: else fi;         /* allocate_from: pending_flush */
     claim_cached(me);                                   /* allocate_from: claim_cached */
     if
     :: !ok -> claim_from_bitmap(me)                     /* allocate_from: claim_from_bitmap */
     :: else
     fi;
     if
     :: !ok ->
        if
#ifdef FINE
        :: parked ->                                     /* allocate_from: atomic_load(parked) */
           d_step { pv = parked; parked = 0 };           /* allocate_from: atomic_exchange(parked, 0) */
           if
           :: pv ->
              pv = 0;
              republish(me, 0);                          /* allocate_from: vs__republish_class */
              SEARCH_AFTER_SCAN(me)
           :: else
           fi
#else
        /* the load and the exchange, folded: exchanging a 0 changes nothing */
        :: d_step { parked -> parked = 0 } ->            /* allocate_from: load + atomic_exchange */
           republish(me, 0);                             /* allocate_from: vs__republish_class */
           SEARCH_AFTER_SCAN(me)
#endif
        :: else
        fi;
#ifndef MUTANT_NO_FINAL_SCAN
        if
        :: !ok ->
           republish(me, 1);                             /* allocate_from, last loop: vs__republish_class */
           SEARCH_AFTER_SCAN(me)
        :: else
        fi
#endif
     :: else
     fi
  :: else
  fi;
  pub = 0;
  G_WATCH_END(me)
}

/* The cache-or-pending decision of vs_pool_free: a slot this thread allocated recently
 * (vs__tc_forget finds it in the thread's ring, and forgets it) goes to the cache if there is
 * room, any other to the pending mask. Thread-local, so no interleaving point. -DHINT_ANY: any free may go either way (the
 * properties do not depend on the hint). */
#ifdef HINT_ANY
#define CACHE_HINT(x, me) 1
#define CACHE_ELSE 1
#else
#define CACHE_HINT(x, me) (recent & (1 << (x)))
#define CACHE_ELSE else
#endif

/* vs_pool_free -> free_word: load; while live at (gen, lap), CAS ALLOCATED(g) -> FREE(g).
 * Then, if this thread allocated the slot recently and the cache has room: push (thread-local)
 * and set parked (load, store 1 if 0). Else, batched class: pending_add: the slot's bit into
 * this thread's pending mask (TLS) and parked set on every add (a failed allocation may have
 * consumed parked since the mask opened: MUTANT_PARK_ONCE sets it only on the first add);
 * then pending_flush or not (C: at 16 bits or when the next free is in another word). A pending
 * slot is FREE with its bit clear, like a cached one: the TLS dies with a killed or exiting
 * peer, and parked (or the final scan, or the reaper's republish) finds it. Sets rc.
 * chkw: the caller wrote the slot before this free (two_owners: the writer still holds it;
 * the holder can only change away from the writer, so checking here covers the write). */
inline vs_pool_free(rr, me, chkw)
{
  s = RSLOT(rr);
  rc = RC_NONE;
#ifdef MUTANT_FREE_STORE
  G_BUSY(me, 1);
  w = word[s];                                           /* free_word: atomic_load(&m->word) */
  if :: chkw -> G_WRITE(s, me) :: else fi;
  if                                                     /* mutant: check, then a plain store */
  :: LIVE(w, rr) -> d_step { word[s] = MKW(S_FREE, 0, RGEN(rr), RLAP(rr)); rc = VS_OK;
                             G_SAME(s, rr); G_FREE(s, me); TOUCH(s, me) }
  :: else -> rc = VS_EDOUBLEFREE
  fi;
#elif defined(FINE)
  G_BUSY(me, 1);
  if :: chkw -> G_WRITE(s, me) :: else fi;
  w = word[s];                                           /* free_word: atomic_load(&m->word) */
  do
  :: rc == VS_OK -> break
  :: rc != VS_OK && !LIVE(w, rr) -> rc = VS_EDOUBLEFREE; break   /* free_refused */
  :: else ->
     d_step {                                            /* free_word: CAS (free_cas) */
       if
       :: word[s] == w -> word[s] = MKW(S_FREE, 0, GEN(w), LAP(w)); rc = VS_OK;
                          G_SAME(s, rr); G_FREE(s, me); TOUCH(s, me)
       :: else -> w = word[s]
       fi
     }
  od;
#else
  d_step {                                               /* free_word: load + CAS (free_cas) */
    G_BUSY(me, 1);
    if :: chkw -> G_WRITE(s, me) :: else fi;
    w = word[s];
    if
    :: LIVE(w, rr) -> word[s] = MKW(S_FREE, 0, GEN(w), LAP(w)); rc = VS_OK;
                      G_SAME(s, rr); G_FREE(s, me); TOUCH(s, me)
    :: else -> rc = VS_EDOUBLEFREE                       /* free_refused */
    fi
  }
#endif
  w = 0;
  if
  :: rc == VS_OK ->
     if
     :: atomic { tcn < DEPTH && CACHE_HINT(s, me) ->     /* vs_pool_free: vs__tc_forget */
          recent = recent & ~(1 << s);
          if :: tcn == 0 -> tc0 = s :: else -> tc1 = s fi;   /* push, thread-local (cache_push) */
          tcn++
        }
        SET_PARKED                                       /* vs_pool_free: load parked, store 1 */
     :: CACHE_ELSE ->                                    /* vs_pool_free: pending_add */
#if defined(MUTANT_PARK_ONCE)
        d_step { if :: pend == 0 -> parked = 1 :: else fi; pend = pend | (1 << s) }  /* mutant */
#elif defined(FINE)
        pend = pend | (1 << s);                          /* pending_add: the bit into the mask (TLS) */
        SET_PARKED;                                      /* pending_add: load parked, store 1 */
#else
        d_step { parked = 1; pend = pend | (1 << s) }    /* pending_add: mask |= bit; parked, every add */
#endif
        if
        :: pending_flush(me)                             /* pending_flush: 16 bits, another word */
        :: skip                                          /* not yet */
        fi
     fi
  :: else
  fi;
  s = 0;
  G_BUSY(me, 0)
}

/* vs_pool_transfer: load; while live and owned by from, CAS owner from -> to at the same
 * (gen, lap); v3: then clear the thread-tag side field (folded as in claim). Sets rc. */
inline vs_pool_transfer(rr, from, to, me)
{
  s = RSLOT(rr);
  rc = RC_NONE;
#ifdef FINE
  G_BUSY(me, 1);
  w = word[s];                                           /* vs_pool_transfer: atomic_load */
  do
  :: rc == VS_OK -> break
  :: rc != VS_OK && !LIVE(w, rr) -> rc = VS_ESTALE; break
  :: rc != VS_OK && LIVE(w, rr) && OWN(w) != from -> rc = VS_EPERM; break
  :: else ->
     d_step {                                            /* vs_pool_transfer: CAS (transfer_cas) */
       if
       :: word[s] == w -> word[s] = MKW(S_ALLOC, to, GEN(w), LAP(w)); rc = VS_OK;
                          G_SAME(s, rr); G_XFER(s, me); TOUCH(s, me)
       :: else -> w = word[s]
       fi
     }
  od;
#else
  d_step {                                               /* vs_pool_transfer: load + CAS (transfer_cas) */
    G_BUSY(me, 1);
    w = word[s];
    if
    :: !LIVE(w, rr) -> rc = VS_ESTALE
    :: LIVE(w, rr) && OWN(w) != from -> rc = VS_EPERM
    :: else -> word[s] = MKW(S_ALLOC, to, GEN(w), LAP(w)); rc = VS_OK;
               G_SAME(s, rr); G_XFER(s, me); TOUCH(s, me)
    fi
  }
#endif
  w = 0;
  G_BUSY(me, 0)
}

/* purge.c purge_slot(cls, x): a free slot's pages go back to the system. load the word; if
 * FREE: CAS FREE(g) -> PURGING(g, me) (purge_cas: from here the slot is the purger's, as a
 * claim makes it an allocator's); remove the pages (purge_punch: a write of the slot); CAS
 * PURGING(g, me) -> FREE(g) (purge_done); vs__publish_free. The generation stays: no ref was
 * handed out. (Which slots a pass picks, by their idle hint, is not modelled: any slot may be
 * picked at any time, the hint only says when.) MUTANT_PURGE_UNCLAIMED removes the pages of
 * a slot it read FREE without the CAS; MUTANT_PURGE_UNPUBLISHED does not publish the slot it
 * returned. */
inline purge(x, me)
{
#ifdef MUTANT_PURGE_UNCLAIMED
  w = word[x];                                           /* mutant: load, no CAS */
  if
  :: ST(w) == S_FREE -> G_WRITE(x, me)                   /* mutant: the pages go, unowned */
  :: else
  fi;
#else
  d_step {                                               /* purge_slot: load + CAS (purge_cas) */
    w = word[x];
    if
    :: ST(w) == S_FREE -> word[x] = MKW(S_PURGING, PEER_OF(me), GEN(w), LAP(w)); cas = 1;
                          G_CLAIM(x, me); TOUCH(x, me)
    :: else
    fi
  };
  if
  :: cas ->
     G_WRITE(x, me);                                     /* purge_slot: fallocate (purge_punch) */
     d_step {                                            /* purge_slot: CAS (purge_done) */
       if
       :: word[x] == MKW(S_PURGING, PEER_OF(me), GEN(w), LAP(w)) ->
          word[x] = MKW(S_FREE, 0, GEN(w), LAP(w)); G_FREE(x, me); TOUCH(x, me)
       :: else -> cas = 0                                /* reaped from under it: not its own now */
       fi
     };
#ifndef MUTANT_PURGE_UNPUBLISHED
     if :: cas -> publish_free(x, me) :: else fi         /* purge_slot: vs__publish_free */
#endif
  :: else
  fi;
#endif
  w = 0; cas = 0
}

/* vs_pool_reclaim_peer_slots(pool, pr): for each slot, load; while ALLOCATED or PURGING and
 * owned by pr, CAS -> FREE(gen); if it freed, vs__publish_free. MUTANT_REAP_NOT_PURGING leaves
 * a dead purger's PURGING slot. */
#ifdef MUTANT_REAP_NOT_PURGING
#define RECLAIMABLE(w) (ST(w) == S_ALLOC)
#else
#define RECLAIMABLE(w) (ST(w) == S_ALLOC || ST(w) == S_PURGING)
#endif
inline reclaim_peer_slots(pr, me)
{
  i = 0;
  do
  :: i < NS ->
#ifdef FINE
     w = word[i];                                        /* reclaim: atomic_load */
     do
     :: cas || !(RECLAIMABLE(w) && OWN(w) == pr) -> break
     :: else ->
        d_step {                                         /* reclaim: CAS (reclaim_cas) */
          if
          :: word[i] == w -> word[i] = MKW(S_FREE, 0, GEN(w), LAP(w)); cas = 1;
                             G_REAP_DEAD(w); G_REAP(i); TOUCH(i, me)
          :: else -> w = word[i]
          fi
        }
     od;
#else
     d_step {                                            /* reclaim: load + CAS (reclaim_cas) */
       w = word[i];
       if
       :: RECLAIMABLE(w) && OWN(w) == pr ->
          word[i] = MKW(S_FREE, 0, GEN(w), LAP(w)); cas = 1;
          G_REAP_DEAD(w); G_REAP(i); TOUCH(i, me)
       :: else
       fi
     }
#endif
     w = 0;
     if :: cas -> cas = 0; publish_free(i, me) :: else fi;    /* reclaim: vs__publish_free */
     i++
  :: else -> break
  od;
  i = 0
}

/* reap.c reap_one(seg, 2), as in the issue-9 notes: entry ALIVE or REAPING; LIVE(2) not held;
 * lock REAP(2); re-read + re-probe; CAS ALIVE -> REAPING; reclaim; republish; pid = 0; CAS
 * REAPING -> FREE(epoch + 1); unlock REAP(2).
 * The peer-table and lock steps touch only pstate, alive[] and reaplock, which no allocator
 * reads; the model takes them as one abstract step before the slot work and one after (the
 * lock/join model checks their own races). A failed F_OFD_SETLK, like a call while peer 2
 * lives, returns without writing anything and the reaper is called again later: the model
 * waits instead. */
inline reap_one(me)
{
  if
  :: atomic {                                  /* reap_one: state ALIVE/REAPING; probe LIVE(2); */
       pstate != P_FREE && PROBE_DEAD && reaplock == 0 ->   /* lock REAP(2); re-read; re-probe; */
       reaplock = me; pstate = P_REAPING;      /* CAS ALIVE -> REAPING (or REAPING already) */
       G_BUSY(me, 1)
     }
     reclaim_peer_slots(2, me);                /* vs_pool_reclaim_peer_slots */
#ifndef MUTANT_NO_REPUBLISH
     republish(me, 0);                         /* vs_pool_republish_free -> vs__republish_class */
#endif
     pub = 0;
     d_step { pstate = P_FREE; reaplock = 0; G_BUSY(me, 0) }  /* CAS REAPING -> FREE; unlock */
  :: pstate == P_FREE                          /* nothing (left) to reap */
  fi
}

/* (byte, not bit or unsigned: spin 6.5.2 loses states with bit-field locals here) */
#define ALLOC_LOCALS byte w, nw, r, rc, v, prev, i, pub, tcn, b, s, tc0, tc1, ok, cas, pv, recent, pend, take
#define CACHE_MASK ((tcn > 0 && tc0 == 0) || (tcn > 1 && tc1 == 0)) | \
                   (((tcn > 0 && tc0 == 1) || (tcn > 1 && tc1 == 1)) << 1)

/* peer 1, thread A: allocate, write, share the ref with B, free. Then A is the checker: once
 * everyone else is done or dead, nothing_lost, and it drains the pool (from its own cache
 * first). Config 3: A only drains. */
proctype ThreadA(byte cfg)
{
  ALLOC_LOCALS; byte r1, n, phase;
  do
  :: phase == 1 ->                             /* A's work is done: wait for everyone */
     doneA = 1;
     doneB && !alive[2] && doneR1 && (doneR3 || !alive[3]);
#ifdef PROP_NOTHING_LOST
     /* peer 2 reaped; every slot FREE with no owner (or retired), or (config 3) the one A
      * holds; and the index finds each free one without a scan of the words: its bitmap bit
      * is set, or it is in a live thread's cache or pending mask (A's, B's) and parked is set */
     d_step {
       assert(pstate == P_FREE);
       assert(ST(word[0]) == S_RETIRED || (r1 != NOREF && RSLOT(r1) == 0 && LIVE(word[0], r1) &&
              OWN(word[0]) == 1) || (word[0] == MKW(S_FREE, 0, GEN(word[0]), LAP(word[0])) &&
              ((bm & 1) || (parked && ((CACHE_MASK | pend | fincache[TB]) & 1)))));
       assert(ST(word[1]) == S_RETIRED || (r1 != NOREF && RSLOT(r1) == 1 && LIVE(word[1], r1) &&
              OWN(word[1]) == 1) || (word[1] == MKW(S_FREE, 0, GEN(word[1]), LAP(word[1])) &&
              ((bm & 2) || (parked && ((CACHE_MASK | pend | fincache[TB]) & 2)))))
     };
#endif
     if :: r1 != NOREF -> vs_pool_free(r1, TA, 1); r1 = 0; rc = 0 :: else fi;  /* config 3 */
     phase = 2
  :: phase != 1 ->
     vs_pool_allocate(TA);
     if
     :: phase == 0 && cfg == 3 ->              /* the producer's slot, still in flight */
        r1 = r; r = 0;
        if :: r1 != NOREF -> G_WRITE(RSLOT(r1), TA) :: else fi;
        d_step { exposed = NOREF; exposedSet = 1 };
        ok = 0; phase = 1
     :: phase == 0 && cfg != 3 ->
        r1 = r; r = 0;
        d_step {                               /* write the slot; then share the ref with B */
          if :: r1 != NOREF -> G_WRITE(RSLOT(r1), TA) :: else fi;
          exposed = r1; exposedSet = 1
        };
        if :: r1 != NOREF -> vs_pool_free(r1, TA, 0) :: else fi;   /* races with B's free */
        r1 = 0; rc = 0; ok = 0; phase = 1
  :: phase == 2 && ok -> n++; G_WRITE(RSLOT(r), TA); r = 0; ok = 0   /* the drain */
     :: phase == 2 && !ok -> break
     fi
  od;
  phase = 0;
#ifdef PROP_NOTHING_LOST
  /* the drain claimed every slot that is not retired, each exactly once */
  d_step {
    assert(ST(word[0]) == S_RETIRED || (ST(word[0]) == S_ALLOC && claimer[0] == TA));
    assert(ST(word[1]) == S_RETIRED || (ST(word[1]) == S_ALLOC && claimer[1] == TA));
    assert(n == (ST(word[0]) == S_ALLOC) + (ST(word[1]) == S_ALLOC))
  };
#endif
  skip
}

/* peer 1, thread B: (config 2) free slot 1, which it holds from the start (to its cache);
 * free A's ref (racing with A's free, or stale once A's won); take peer 2's handle, transfer
 * it 2 -> 1, write, free. */
proctype ThreadB(byte cfg)
{
  ALLOC_LOCALS; byte h;
  if
  :: cfg == 2 ->
     recent = 2;                                         /* B allocated slot 1 before the start */
     vs_pool_free(B_REF1, TB, 1); rc = 0                 /* write, free slot 1 (to B's cache) */
  :: else
  fi;
  atomic { exposedSet -> h = exposed; exposed = 0 };
  if :: h != NOREF -> vs_pool_free(h, TB, 0); rc = 0 :: else fi;   /* A's ref: racing, or stale */
  if
  :: hand?h
  :: len(hand) == 0 && !alive[2] -> h = NOREF            /* peer 2 died before sending */
  fi;
  if
  :: h != NOREF ->
     vs_pool_transfer(h, 2, 1, TB);                      /* take ownership with the handle */
     if :: rc == VS_OK -> vs_pool_free(h, TB, 1) :: else fi
  :: else
  fi;
  h = 0; rc = 0;
  d_step { doneB = 1; fincache[TB] = CACHE_MASK | pend; tc0 = 0; tc1 = 0; tcn = 0; recent = 0; pend = 0 }
}

/* peer 2: allocate, write, free (to its cache); allocate (its cache first), write, send the
 * handle to peer 1; exit. Configs 1 and 3: killed at any step. */
proctype Peer2()
{
  ALLOC_LOCALS; byte k;
  {
    do
    :: k == 2 -> break
    :: k < 2 ->
       vs_pool_allocate(TP);
       if
       :: k == 0 ->
          if :: ok -> vs_pool_free(r, TP, 1) :: else fi;
          r = 0; rc = 0;
          if                                             /* a purge pass: either slot */
          :: config == 1 -> purge(0, TP)
          :: config == 1 -> purge(1, TP)
          :: else
          fi
       :: else -> if :: ok -> atomic { G_WRITE(RSLOT(r), TP); hand!r } :: else -> hand!NOREF fi
       fi;
       r = 0; rc = 0; ok = 0; k++
    od;
    k = 0
  } unless {
    atomic { !alive[2] ->                      /* killed: its stack and thread cache are gone */
      w = 0; nw = 0; v = 0; b = 0; prev = 0; i = 0; pub = 0; s = 0; r = 0; rc = 0;
      tc0 = 0; tc1 = 0; tcn = 0; ok = 0; cas = 0; pv = 0; k = 0; recent = 0; pend = 0; take = 0 }
  };
  d_step { alive[2] = 0; r = 0; ok = 0; tc0 = 0; tc1 = 0; tcn = 0; k = 0; recent = 0; pend = 0 }  /* exit: LIVE(2) drops */
}

/* SIGKILL of peer p: its remaining steps stop (its process's unless), the kernel drops its
 * OFD locks: LIVE(p), and REAP(2) if it held it. Peer 3 dies only inside its reap: a death
 * before it takes the lock is a reaper that never came, one after the unlock a finished one. */
proctype Kill(byte p)
{
end:
  atomic {
    alive[p] && (p == 2 || reaplock == R3) ->
    alive[p] = 0;
    if :: p == 3 -> reaplock = 0; G_BUSY(R3, 0) :: else -> G_BUSY(TP, 0) fi
  }
}

/* R3: peer 3, reaps as soon as peer 2 is dead, may die mid-reap. R1: a thread of peer 1 that
 * reaps once the others are done (taking over from a dead R3). */
proctype Reaper(byte me)
{
  byte w, i, pub, cas;
  if
  :: me == R3 ->
     { reap_one(me) } unless { atomic { !alive[3] -> w = 0; i = 0; pub = 0; cas = 0 } };
     doneR3 = alive[3]
  :: else ->
     (doneR3 || !alive[3]) && doneA && doneB && !alive[2];
     reap_one(me);
     doneR1 = 1
  fi
}

init
{
  atomic {
#ifdef CONFIG
    config = CONFIG;
#else
    if :: config = 1 :: config = 2 :: config = 3 fi;
#endif
    /* slot 0 has been allocated GEN_MAX times: its next claims wrap to lap 1, count gen up,
     * and retire it, so every branch of next_word is reached */
    word[0] = MKW(S_FREE, 0, GEN_MAX, 0);
    if
    :: config != 2 -> bm = 3
    :: else ->
       bm = 1; word[1] = MKW(S_ALLOC, 1, 1, 0);
#ifdef PROP_TWO_OWNERS
       holder[1] = TB;
#endif
#ifdef PROP_STALE_REF
       gser[1] = 1;
#endif
       skip
    fi;
    /* (the config as a parameter: a local, so reading it is no interleaving point) */
    run ThreadA(config); run ThreadB(config); run Peer2(); run Reaper(R3); run Reaper(R1);
    if :: config != 2 -> run Kill(2) :: else fi;
    if :: config != 1 -> run Kill(3) :: else fi
  }
}
