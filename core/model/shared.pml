/* varslot: shared read-only slots (core/src/share.c), with the reaping and leaving that drop a
 * gone reader's references (pool.c vs_pool_reclaim_peer_slots, reap.c, peers.c
 * vs_segment_leave). README.md: the map to the C code, bounds, what is left out.
 *
 * One slot. Its word {state, gen, owner}: FREE, ALLOC, SHARING (the owner writing the
 * readers in), SHARED; its share entry: `live` {gen, seat mask} (one byte here, one 64-bit
 * word in C) and two seat bytes. Every step is one atomic access of shared
 * memory, named with its C step; a load whose value only feeds the CAS right after it is
 * folded into that CAS, as in slots.pml. The seat bytes are read in a step of their own,
 * between the load of `live` and the CAS on it. Memory is sequentially consistent (C: the
 * share CAS and the recheck are seq_cst, and so is the fence at the start of the reclaim).
 *
 * Actors. Peer 1's thread A publishes: claims the slot, shares it with {2} alone (the owner no
 * reader), sends the ref to peer 2 through a channel; then a second round on the same slot if
 * it is free again, shared with {1, 2}, with a release of the first round's ref (stale) and
 * of its own reference. Peer 1's thread B either shares A's first claim at once with {1} (a
 * racing share by another thread of the owner; it then releases its reference: configurations
 * 1 and 3) or, after A, claims the slot itself and shares it with {2} (configuration 2). Peer 2 reads and releases what it receives,
 * tries each release twice, and leaves at the end (a reader drops references it never heard
 * of by leaving); in configuration 2 it leaves at any moment and may join again (a new
 * incarnation of id 2). Peer 3 claims the slot once at any moment and frees it, and reaps
 * peers 1 and 2 when they are dead (mark the entry REAPING, reclaim, FREE; reclaiming a dead
 * publisher also drops the seats of readers whose entries are not ALIVE). init picks a
 * configuration:
 *   1: peer 2 is killed at any step (or not at all);
 *   2: peer 2 leaves at any moment and may join again;
 *   3: peer 1 (both threads) is killed at any step (or not at all);
 *   4: both are killed at any step (or not at all).
 *
 * Properties (one per run):
 *   PROP_NO_REUSE      a claim and a free of a shared slot (finish) happen only when no
 *                      reference is held (ghost counts per peer), and a reader reading finds
 *                      the slot shared at its ref's generation
 *   PROP_REFS_EXACT    a release succeeds only for a reference its peer holds in the share
 *                      its ref names: a second or stale release is refused
 *   PROP_LIVE_KEPT     a drop (reap, leave, the share's recheck) only drops references of a
 *                      peer that is dead or leaving, or of an incarnation of it that is gone
 *   PROP_NOTHING_LOST  once everyone is done or dead and reaped, the slot is FREE
 * Mutants (each caught by the property beside it):
 *   MUTANT_FREE_EARLY      a release frees the slot whatever references are left  NO_REUSE
 *   MUTANT_NO_GEN          the release compares no generation (word or live)       REFS_EXACT
 *   MUTANT_REAP_ALL        a drop drops every reference, not only the peer's       LIVE_KEPT
 *   MUTANT_NO_FINISH       a drop that empties the share does not free the slot   NOTHING_LOST
 *   MUTANT_NO_RECHECK      the share does not look at its readers' entries again  NOTHING_LOST
 *   MUTANT_LEAVE_UNMARKED  leave reclaims before marking its entry               NOTHING_LOST
 *   MUTANT_NO_SHARING      the share writes its seats before any CAS (no SHARING): a racing
 *                          share that loses writes into the winner's entry       NO_REUSE
 *   MUTANT_RECHECK_ANY     the recheck drops from whatever share the slot holds   LIVE_KEPT
 *   MUTANT_NO_PUB_REAP     reaping a publisher drops only its own seats          NOTHING_LOST
 */

#define FREE    0
#define ALLOC   1
#define SHARED  2
#define SHARING 3

#define P_ALIVE   1
#define P_REAPING 2
#define P_FREE    3

#define OK 0
#define EDOUBLEFREE 1
#define ESTALE 2
#define ENOTJOINED 3

/* live: gen (0..3) * 4 + seat mask (2 seats) */
#define LGEN(l)   ((l) / 4)
#define LSEATS(l) ((l) % 4)
#define MKL(g, s) ((g) * 4 + (s))

byte config;
/* the slot word */
byte w_st, w_gen, w_own;
/* the share entry */
byte live;
byte seat[2];
byte seat_ep[2];       /* ghost: the epoch of the reader each seat was given to */
/* the peer table: state and epoch of peers 1..3 */
byte pst[4] = P_ALIVE;
byte pep[4];
bool alive[4] = true;
/* ghost */
byte held[4];          /* references each peer holds in the current share */
byte cur_gen;          /* the generation of the current share (0: none) */
bool leaving[4];
bool done1, done1b, done2, done3;
byte a_gen;            /* ghost: A's first claim, for B's racing share */
chan ch = [3] of { byte, byte };  /* peer 1 -> peer 2: refs (their generation) and the
                                   * epoch of the reader the share was for (a message to a
                                   * reader that left is not read by its next incarnation) */

#ifdef PROP_NO_REUSE
#define G_NONE_HELD assert(held[1] + held[2] + held[3] == 0)
#define G_READ(g)   assert(w_st == SHARED && w_gen == (g))
#else
#define G_NONE_HELD skip
#define G_READ(g)   skip
#endif
#ifdef PROP_REFS_EXACT
#define G_RELEASED(p, g) assert(held[p] > 0 && cur_gen == (g))
#else
#define G_RELEASED(p, g) skip
#endif
#ifdef PROP_LIVE_KEPT
#define G_DROPPED(i) assert(!alive[seat[i]] || leaving[seat[i]] || seat_ep[i] != pep[seat[i]])
#else
#define G_DROPPED(i) skip
#endif

/* claim(): FREE -> ALLOC(gen + 1, p). model: claim_cas */
inline claim(p, g) {
  atomic {
    if
    :: w_st == FREE -> G_NONE_HELD; w_gen++; w_st = ALLOC; w_own = p; g = w_gen
    :: else -> g = 0
    fi
  }
}

/* free_word(): ALLOC(g, p) -> FREE. model: free_cas */
inline free_owned(p, g) {
  atomic { if :: w_st == ALLOC && w_gen == g && w_own == p -> w_st = FREE; w_own = 0 :: else fi }
}

/* finish(): SHARED(g) -> FREE, by whoever saw the share of g empty. model: finish_cas */
inline finish(g) {
  atomic {
    if
    :: w_st == SHARED && w_gen == g -> G_NONE_HELD; w_st = FREE; w_own = 0; cur_gen = 0
    :: else
    fi
  }
}

/* The seats among `seats` held by peer q: one step, the seat bytes read. */
inline seats_of(q, seats, mine) {
  mine = ((seats & 1) && seat[0] == q -> 1 : 0) | ((seats & 2) && seat[1] == q -> 2 : 0)
}

/* drop_peer(): every reference of peer q to the share of generation `only` (0: whatever
 * share the slot holds now), and the finish if that empties the share (or a releaser died
 * leaving it empty). */
inline drop_peer(q, only, dw, dg, dl, ds, dd) {
  atomic { dw = w_st; dg = w_gen };                 /* load the word */
  if
  :: dw == SHARED && (only == 0 || only == dg) ->
     dl = live;                                     /* load live */
     do
     :: LGEN(dl) != dg -> ds = 9; break             /* that share ended */
     :: else ->
        ds = LSEATS(dl);
#ifdef MUTANT_REAP_ALL
        dd = ds; if :: ((ds & 1) && seat[0] == q) || ((ds & 2) && seat[1] == q) -> skip :: else -> dd = 0 fi;
#else
        seats_of(q, ds, dd);
#endif
        if
        :: dd == 0 -> break
        :: else ->
           atomic {                                 /* model: drop_cas */
             if
             :: live == dl ->
                live = MKL(dg, ds & ~dd); ds = ds & ~dd;
                if :: (dd & 1) -> G_DROPPED(0); held[seat[0]]-- :: else fi;
                if :: (dd & 2) -> G_DROPPED(1); held[seat[1]]-- :: else fi;
                dd = 0
             :: else -> dl = live; dd = 1
             fi
           };
           if :: dd == 0 -> break :: else fi
        fi
     od;
#ifdef MUTANT_NO_FINISH
     skip
#else
     if :: ds == 0 -> finish(dg) :: else fi
#endif
  :: else
  fi
}

/* vs_pool_reclaim_peer_slots(q) on the one slot: shared -> vs__share_reclaim (q's seats;
 * q the publisher: the seats of readers whose entries are not ALIVE); owned or being shared
 * by q -> free. */
inline reclaim(q, dw, dg, dl, ds, dd) {    /* uses the caller's rown, rg2, rr */
  atomic { dw = w_st; dg = w_gen; rown = w_own };
  if
  :: dw == SHARED ->
     rg2 = dg;
     drop_peer(q, rg2, dw, dg, dl, ds, dd);
#ifndef MUTANT_NO_PUB_REAP
     if                                             /* model: publisher_reap */
     :: rown == q ->
        atomic { dl = live; ds = LSEATS(dl) };
        if
        :: LGEN(dl) == rg2 ->
           if :: (ds & 1) -> rr = seat[0]; if :: pst[rr] != P_ALIVE -> drop_peer(rr, rg2, dw, dg, dl, ds, dd) :: else fi :: else fi;
           atomic { dl = live; ds = LSEATS(dl) };
           if :: LGEN(dl) == rg2 && (ds & 2) -> rr = seat[1]; if :: pst[rr] != P_ALIVE -> drop_peer(rr, rg2, dw, dg, dl, ds, dd) :: else fi :: else fi
        :: else
        fi
     :: else
     fi
#endif
  :: (dw == ALLOC || dw == SHARING) ->
     atomic { if :: (w_st == ALLOC || w_st == SHARING) && w_gen == dg && w_own == q -> w_st = FREE; w_own = 0 :: else fi }
  :: else
  fi
}

/* vs_pool_share(g) by p to readers {r0} (n == 1) or {r0, r1} (n == 2), with the segment's
 * checks. rc: OK, ENOTJOINED, ESTALE. */
inline share(p, g, n, r0, r1, rc, s0, e0, s1, e1, dw, dg, dl, ds, dd) {
  atomic { s0 = pst[r0]; e0 = pep[r0] };           /* readers_joined */
  atomic { s1 = pst[r1]; e1 = pep[r1] };
  if
  :: s0 != P_ALIVE || (n == 2 && s1 != P_ALIVE) -> rc = ENOTJOINED
  :: else ->
#ifdef MUTANT_NO_SHARING
     if :: w_st == ALLOC && w_gen == g && w_own == p -> rc = OK :: else -> rc = ESTALE fi;
#else
     atomic {                                       /* model: sharing_cas */
       if
       :: w_st == ALLOC && w_gen == g && w_own == p -> w_st = SHARING; rc = OK
       :: else -> rc = ESTALE
       fi
     };
#endif
     if
     :: rc == OK ->
        atomic { seat[0] = r0; seat_ep[0] = e0 };  /* the seats (ghost: whose incarnation) */
        if :: n == 2 -> atomic { seat[1] = r1; seat_ep[1] = e1 } :: else fi;
        live = MKL(g, (n == 2 -> 3 : 1));
        atomic {                                    /* model: share_cas */
          if
#ifdef MUTANT_NO_SHARING
          :: w_st == ALLOC && w_gen == g && w_own == p ->
#else
          :: w_st == SHARING && w_gen == g && w_own == p ->
#endif
             w_st = SHARED; held[r0]++; if :: n == 2 -> held[r1]++ :: else fi; cur_gen = g; rc = OK
          :: else -> rc = ESTALE
          fi
        };
#ifndef MUTANT_NO_RECHECK
        if                                          /* model: share_recheck */
        :: rc == OK && !(pst[r0] == s0 && pep[r0] == e0) ->
#ifdef MUTANT_RECHECK_ANY
           drop_peer(r0, 0, dw, dg, dl, ds, dd)
#else
           drop_peer(r0, g, dw, dg, dl, ds, dd)
#endif
        :: else
        fi;
        if
        :: rc == OK && n == 2 && !(pst[r1] == s1 && pep[r1] == e1) ->
#ifdef MUTANT_RECHECK_ANY
           drop_peer(r1, 0, dw, dg, dl, ds, dd)
#else
           drop_peer(r1, g, dw, dg, dl, ds, dd)
#endif
        :: else
        fi
#endif
     :: else
     fi
  fi
}

/* vs_pool_release(g) by q. */
inline release(q, g, rc, rw, rg, rl, rs, rm, rleft) {
  atomic { rw = w_st; rg = w_gen };
#ifdef MUTANT_NO_GEN
  if :: rw != SHARED -> rc = EDOUBLEFREE :: else -> rg = LGEN(live) fi;
#else
  if :: !(rw == SHARED && rg == g) -> rc = EDOUBLEFREE :: else -> rg = g fi;
#endif
  if
  :: rc == EDOUBLEFREE
  :: else ->
     rl = live;
     do
     :: LGEN(rl) != rg -> rc = EDOUBLEFREE; break
     :: else ->
        rs = LSEATS(rl);
        seats_of(q, rs, rm);
        if
        :: rm == 0 -> rc = EDOUBLEFREE; break
        :: else ->
           rleft = rs & ~(rm & 1 -> 1 : 2);         /* the lowest of q's seats */
           atomic {                                 /* model: release_cas */
             if
             :: live == rl -> G_RELEASED(q, g); held[q]--; live = MKL(rg, rleft); rc = OK
             :: else -> rl = live
             fi
           };
           if :: rc == OK -> break :: else fi
        fi
     od;
#ifdef MUTANT_FREE_EARLY
     if :: rc == OK -> finish(rg) :: else fi
#else
     if :: rc == OK && rleft == 0 -> finish(rg) :: else fi
#endif
  fi
}

/* vs_segment_leave(q): mark the entry, reclaim, free the entry. */
inline leave(q, dw, dg, dl, ds, dd) {
  leaving[q] = true;
#ifdef MUTANT_LEAVE_UNMARKED
  reclaim(q, dw, dg, dl, ds, dd);
  atomic { if :: pst[q] == P_ALIVE -> pst[q] = P_FREE; pep[q]++ :: else fi }
#else
  atomic { if :: pst[q] == P_ALIVE -> pst[q] = P_REAPING :: else fi };   /* model: leave_mark */
  reclaim(q, dw, dg, dl, ds, dd);
  atomic { if :: pst[q] == P_REAPING -> pst[q] = P_FREE; pep[q]++ :: else fi }  /* leave_cas */
#endif
}

proctype Killer(byte p) {
  if :: alive[p] = false :: skip fi
}

proctype PublisherA() {
  byte g1, g2, rc, s0, e0, s1, e1, dw, dg, dl, ds, dd, rw, rg, rl, rs, rm, rleft;
  {
    claim(1, g1);                                   /* peer 3 may have it: then no round 1 */
    a_gen = g1;
    if
    :: g1 != 0 ->
       rc = 9;
       share(1, g1, 1, 2, 2, rc, s0, e0, s1, e1, dw, dg, dl, ds, dd);
       if
       :: rc == OK -> ch!g1,e0
       :: else -> free_owned(1, g1)                 /* thread B's share or free won */
       fi
    :: else
    fi;
    /* round 2: the same slot again, if it is free already (in configurations 1 and 3: 2 is
     * for leaving and joining again, 4 for the dying publisher's share of round 1) */
    if :: config == 1 || config == 3 -> claim(1, g2) :: else fi;
    if
    :: g2 != 0 ->
       rc = 9;
       share(1, g2, 2, 1, 2, rc, s0, e0, s1, e1, dw, dg, dl, ds, dd);
#ifdef REACH_SECOND_SHARE
       assert(rc != OK);
#endif
       if
       :: rc == OK ->
          ch!g2,e1;
          rc = 9;
          if :: g1 != 0 -> release(1, g1, rc, rw, rg, rl, rs, rm, rleft) :: else fi;  /* stale */
          rc = 9; release(1, g2, rc, rw, rg, rl, rs, rm, rleft); assert(rc == OK)
       :: else -> free_owned(1, g2)
       fi
    :: else
    fi;
    done1 = true
  } unless { !alive[1] }
}

/* Peer 1's other thread: a share racing A's, or a claim and share of its own later. */
proctype PublisherB() {
  byte g, rc, s0, e0, s1, e1, dw, dg, dl, ds, dd, rw, rg, rl, rs, rm, rleft;
  {
    if
    :: (config == 1 || config == 3) && (a_gen != 0 || done1) && a_gen == 0 /* A got no slot */
    :: (config == 1 || config == 3) && a_gen != 0 -> /* A's first claim, shared at once */
       g = a_gen; rc = 9;
       share(1, g, 1, 1, 1, rc, s0, e0, s1, e1, dw, dg, dl, ds, dd);
       if :: rc == OK -> rc = 9; release(1, g, rc, rw, rg, rl, rs, rm, rleft); assert(rc == OK) :: else fi
    :: config == 2 ->                               /* a claim of its own, any time */
       claim(1, g);
       if
       :: g != 0 ->
          rc = 9;
          share(1, g, 1, 2, 2, rc, s0, e0, s1, e1, dw, dg, dl, ds, dd);
          if :: rc == OK -> ch!g,e0 :: else -> free_owned(1, g) fi
       :: else
       fi
    :: config == 4
    fi;
    done1b = true
  } unless { !alive[1] }
}

#define PUB_DONE ((done1 && done1b) || !alive[1])

proctype Reader() {
  byte g, ep, rc, dw, dg, dl, ds, dd, rw, rg, rl, rs, rm, rleft, rown, rg2, rr;
  bool rejoined;
  {
    do
    :: nempty(ch) ->
       ch?g,ep;
       if
       :: !leaving[2] && ep == pep[2] ->            /* for this incarnation */
          G_READ(g);
          rc = 9; release(2, g, rc, rw, rg, rl, rs, rm, rleft);
          if :: config == 1 || config == 3 -> rc = 9; release(2, g, rc, rw, rg, rl, rs, rm, rleft) :: else fi  /* twice */
       :: else                                      /* not ours: its sender's to settle */
       fi
    :: empty(ch) && PUB_DONE -> break
    :: config == 2 && !leaving[2] -> leave(2, dw, dg, dl, ds, dd)
    :: config == 2 && leaving[2] && !rejoined ->   /* joins again: a new incarnation */
       atomic { if :: pst[2] == P_FREE -> pst[2] = P_ALIVE; pep[2]++; leaving[2] = false; rejoined = true :: else fi }
    od;
    if :: !leaving[2] -> leave(2, dw, dg, dl, ds, dd) :: else fi;
    done2 = true
  } unless { !alive[2] }
}

/* reap.c reap_one(q): CAS ALIVE/REAPING -> REAPING, reclaim, -> FREE. */
inline reap(q, dw, dg, dl, ds, dd) {
  atomic { if :: pst[q] == P_ALIVE -> pst[q] = P_REAPING :: else fi };
  reclaim(q, dw, dg, dl, ds, dd);
  atomic { if :: pst[q] == P_REAPING -> pst[q] = P_FREE; pep[q]++ :: else fi }
}

proctype Peer3() {
  byte g, dw, dg, dl, ds, dd, rown, rg2, rr;
  bool tried;
  do
  :: !tried -> tried = true; claim(3, g); if :: g != 0 -> free_owned(3, g) :: else fi
  :: !alive[1] && (pst[1] == P_ALIVE || pst[1] == P_REAPING) -> reap(1, dw, dg, dl, ds, dd)
  :: !alive[2] && (pst[2] == P_ALIVE || pst[2] == P_REAPING) -> reap(2, dw, dg, dl, ds, dd)
  :: tried && ((done1 && done1b) || (!alive[1] && pst[1] == P_FREE)) &&
     (done2 || (!alive[2] && pst[2] == P_FREE)) -> break
  od;
  done3 = true
}

init {
#ifdef CONFIG
  config = CONFIG;
#else
  if :: config = 1 :: config = 2 :: config = 3 :: config = 4 fi;
#endif
  atomic {
    run PublisherA(); run PublisherB(); run Reader(); run Peer3();
    if
    :: config == 1 -> run Killer(2)
    :: config == 3 -> run Killer(1)
    :: config == 4 -> run Killer(1); run Killer(2)
    :: else
    fi
  };
  done3;
#ifdef PROP_NOTHING_LOST
  assert(w_st == FREE);
#endif
#ifdef REACH
  assert(false);
#endif
}
