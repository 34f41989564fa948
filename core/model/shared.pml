/* varslot: shared read-only slots (core/src/share.c), with the reaping and leaving that drop a
 * gone reader's references (pool.c vs_pool_reclaim_peer_slots, reap.c, peers.c
 * vs_segment_leave). README.md: the map to the C code, bounds, what is left out.
 *
 * One slot. Its word {state, gen, owner}; its share entry: `live` {gen, seat mask} (one byte
 * here, one 64-bit word in C) and two seat bytes. Every step is one atomic access of shared
 * memory, named with its C step; a load whose value only feeds the CAS right after it is
 * folded into that CAS, as in slots.pml. The seat bytes are read in a step of their own,
 * between the load of `live` and the CAS on it. Memory is sequentially consistent (C: the
 * share CAS and the recheck are seq_cst, and so is the fence at the start of the reclaim).
 *
 * Actors. Peer 1 publishes: claims the slot, shares it with {1, 2} (itself and the reader),
 * sends the ref to peer 2 through a channel, releases its own reference; then a second
 * round on the same slot if it is free again, with a release of the first round's ref (a
 * stale release) in between. Peer 2 reads and releases what it receives, tries each release
 * twice, and leaves at the end (a reader drops references it never heard of by leaving).
 * Peer 3 claims the slot once at any moment (a reuse that must wait for the last reader) and
 * frees it, and reaps peers 1 and 2 when they are dead (the reaper of reap.c: mark the entry
 * REAPING, reclaim, FREE). init picks a configuration:
 *   1: peer 2 is killed at any step (or not at all);
 *   2: peer 2 leaves at any moment, not only at its end;
 *   3: peer 1 is killed at any step (or not at all).
 *
 * Properties (one per run):
 *   PROP_NO_REUSE      a claim and a free of a shared slot (finish) happen only when no
 *                      reference is held (ghost counts per peer), and a reader reading finds
 *                      the slot shared at its ref's generation
 *   PROP_REFS_EXACT    a release succeeds only for a reference its peer holds in the share
 *                      its ref names: a second or stale release is refused
 *   PROP_LIVE_KEPT     a drop (reap, leave, the share's recheck) only drops references of a
 *                      peer that is dead or leaving
 *   PROP_NOTHING_LOST  once everyone is done or dead and reaped, the slot is FREE
 * Mutants (each caught by the property beside it):
 *   MUTANT_FREE_EARLY      a release frees the slot whatever references are left  NO_REUSE
 *   MUTANT_NO_GEN          the release compares no generation (word or live)       REFS_EXACT
 *   MUTANT_REAP_ALL        a drop drops every reference, not only the peer's       LIVE_KEPT
 *   MUTANT_NO_FINISH       a drop that empties the share does not free the slot   NOTHING_LOST
 *   MUTANT_NO_RECHECK      the share does not look at its readers' entries again  NOTHING_LOST
 *   MUTANT_LEAVE_UNMARKED  leave reclaims before marking its entry               NOTHING_LOST
 */

#define FREE   0
#define ALLOC  1
#define SHARED 2

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
/* the peer table: state and epoch of peers 1..3 */
byte pst[4] = P_ALIVE;
byte pep[4];
bool alive[4] = true;
/* ghost */
byte held[4];          /* references each peer holds in the current share */
byte cur_gen;          /* the generation of the current share (0: none) */
bool leaving[4];
bool done1, done2, done3;
chan ch = [2] of { byte };  /* peer 1 -> peer 2: refs (their generation) */

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
#define G_DROPPED(p) assert(!alive[p] || leaving[p])
#else
#define G_DROPPED(p) skip
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

/* vs__share_drop_peer(): every reference of peer q to the slot, and the finish if that
 * empties the share (or a releaser died leaving it empty). */
inline drop_peer(q, dw, dg, dl, ds, dd) {
  atomic { dw = w_st; dg = w_gen };                 /* load the word */
  if
  :: dw == SHARED ->
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
                if :: (dd & 1) -> G_DROPPED(seat[0]); held[seat[0]]-- :: else fi;
                if :: (dd & 2) -> G_DROPPED(seat[1]); held[seat[1]]-- :: else fi;
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

/* vs_pool_reclaim_peer_slots(q) on the one slot: shared -> drop; owned by q -> free. */
inline reclaim(q, dw, dg, dl, ds, dd) {
  atomic { dw = w_st; dg = w_gen };
  if
  :: dw == SHARED -> drop_peer(q, dw, dg, dl, ds, dd)
  :: dw == ALLOC ->
     atomic { if :: w_st == ALLOC && w_gen == dg && w_own == q -> w_st = FREE; w_own = 0 :: else fi }
  :: else
  fi
}

/* vs_pool_share(g) by p to readers {p, r}, with the segment's checks. rc: OK, ENOTJOINED. */
inline share(p, r, g, rc, s_st, s_ep, dw, dg, dl, ds, dd) {
  atomic { s_st = pst[r]; s_ep = pep[r] };          /* readers_joined (p is joined: itself) */
  if
  :: s_st != P_ALIVE -> rc = ENOTJOINED
  :: else ->
     seat[0] = p;                                   /* the seats, the slot still ours */
     seat[1] = r;
     live = MKL(g, 3);
     atomic {                                       /* model: share_cas */
       if
       :: w_st == ALLOC && w_gen == g && w_own == p ->
          w_st = SHARED; held[p]++; held[r]++; cur_gen = g; rc = OK
       :: else -> rc = ESTALE
       fi
     };
#ifndef MUTANT_NO_RECHECK
     if                                             /* model: share_recheck */
     :: rc == OK && !(pst[r] == s_st && pep[r] == s_ep) -> drop_peer(r, dw, dg, dl, ds, dd)
     :: else
     fi
#endif
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

proctype Publisher() {
  byte g1, g2, rc, s_st, s_ep, dw, dg, dl, ds, dd, rw, rg, rl, rs, rm, rleft;
  {
    claim(1, g1);                                   /* peer 3 may have it: then no round 1 */
    if
    :: g1 != 0 ->
       rc = 9;
       share(1, 2, g1, rc, s_st, s_ep, dw, dg, dl, ds, dd);
       if
       :: rc == OK -> ch!g1; rc = 9; release(1, g1, rc, rw, rg, rl, rs, rm, rleft); assert(rc == OK)
       :: else -> free_owned(1, g1)
       fi
    :: else
    fi;
    /* round 2: the same slot again, if it is free already */
    claim(1, g2);
    rc = 9;
    if :: g1 != 0 -> release(1, g1, rc, rw, rg, rl, rs, rm, rleft) :: else fi;  /* stale: refused */
    if
    :: g2 != 0 ->
       rc = 9;
       share(1, 2, g2, rc, s_st, s_ep, dw, dg, dl, ds, dd);
#ifdef REACH_SECOND_SHARE
       assert(rc != OK);
#endif
       if
       :: rc == OK -> ch!g2; rc = 9; release(1, g2, rc, rw, rg, rl, rs, rm, rleft)
       :: else -> free_owned(1, g2)
       fi
    :: else
    fi;
    done1 = true
  } unless { !alive[1] }
}

proctype Reader() {
  byte g, rc, dw, dg, dl, ds, dd, rw, rg, rl, rs, rm, rleft, i;
  {
    do
    :: nempty(ch) ->
       ch?g;
       G_READ(g);
       rc = 9; release(2, g, rc, rw, rg, rl, rs, rm, rleft);
       rc = 9; release(2, g, rc, rw, rg, rl, rs, rm, rleft);   /* a double release */
    :: empty(ch) && (done1 || !alive[1]) -> break
    :: config == 2 && !leaving[2] -> leave(2, dw, dg, dl, ds, dd); break
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
  byte g, dw, dg, dl, ds, dd;
  bool tried;
  do
  :: !tried -> tried = true; claim(3, g); if :: g != 0 -> free_owned(3, g) :: else fi
  :: !alive[1] && (pst[1] == P_ALIVE || pst[1] == P_REAPING) -> reap(1, dw, dg, dl, ds, dd)
  :: !alive[2] && (pst[2] == P_ALIVE || pst[2] == P_REAPING) -> reap(2, dw, dg, dl, ds, dd)
  :: tried && (done1 || (!alive[1] && pst[1] == P_FREE)) &&
     (done2 || (!alive[2] && pst[2] == P_FREE)) -> break
  od;
  done3 = true
}

init {
  if :: config = 1 :: config = 2 :: config = 3 fi;
  atomic {
    run Publisher(); run Reader(); run Peer3();
    if :: config == 1 -> run Killer(2) :: config == 3 -> run Killer(1) :: else fi
  };
  done3;
#ifdef PROP_NOTHING_LOST
  assert(w_st == FREE);
#endif
#ifdef REACH
  assert(false);
#endif
}
