/* varslot: a purge in one thread of a peer racing that peer's leave in another thread
 * (core/src/purge.c purge_pass and purge_slot; core/src/peers.c vs_segment_leave). slots.pml
 * checks the purge as an ownership change among allocators, frees and reaps; this model checks
 * what a leave adds: a leave returns every slot marked with the peer's id, PURGING ones too
 * (a dead purger's are the reaper's), so a purge of the same process must not be running when
 * the leave's reclaim does, nor start after it.
 *
 * The protocol: purge_pass announces itself (purges_enter: a per-process count), then reads
 * its own peer entry and does nothing unless it is ALIVE; vs_segment_leave marks the entry
 * REAPING, waits until the count is 0 (vs__purges_wait), then reclaims. Sequentially
 * consistent (the C uses seq_cst on both sides): either the purge sees the mark, or the
 * leave sees the purge.
 *
 * Actors: peer 1's purging thread and its leaving thread; peer 2, which allocates the slot
 * whenever it is free (twice at most), writes it and frees it. Peer 1's process may exit once
 * its leave is done, killing its purger wherever it is.
 * Properties (always on): only the holder of the slot writes it (the purger's page removal is a
 * write); at the end no slot is left PURGING with nobody to return it.
 * Mutants: -DMUTANT_LEAVE_NO_WAIT (the leave reclaims without waiting for running purges: the
 * slot is returned under the purger and peer 2 gets pages that are being removed),
 * -DMUTANT_PURGE_UNCHECKED (a purge does not read its entry: it starts after the leave, marks
 * the slot with an id no longer joined, and dies with its process: the slot is lost). */

#define S_FREE    0
#define S_ALLOC   1
#define S_PURGING 3

#define E_FREE    0
#define E_ALIVE   1
#define E_REAPING 2

byte st = S_FREE;        /* the slot word's state */
byte own;                /* and its owner */
byte entry = E_ALIVE;    /* peer 1's entry */
byte running;            /* purges_running of peer 1's process */
bool gone;               /* peer 1's process exited (after its leave) */
byte holder;             /* ghost: who holds the slot (1: peer 1's purger, 2: peer 2) */

proctype Purger()
{
  bool ok;
  {
    running++;                                           /* purge_pass: purges_enter */
    if
#ifndef MUTANT_PURGE_UNCHECKED
    :: entry != E_ALIVE -> skip                          /* purge_pass: entry marked: nothing */
    :: entry == E_ALIVE ->                               /* purge_pass: its entry is ALIVE */
#else
    :: true ->                                           /* mutant: the entry is not read */
#endif
       atomic {                                          /* purge_slot: CAS FREE -> PURGING (purge_cas) */
         if
         :: st == S_FREE -> st = S_PURGING; own = 1; assert(holder == 0); holder = 1; ok = 1
         :: else
         fi
       };
       if
       :: ok ->
          assert(holder == 1);                           /* purge_slot: fallocate (purge_punch) */
          atomic {                                       /* purge_slot: CAS PURGING -> FREE (purge_done) */
            if
            :: st == S_PURGING && own == 1 -> st = S_FREE; own = 0; holder = 0
            :: else
            fi
          }
       :: else
       fi
    fi;
    running--                                            /* purge_pass: purges_exit */
  } unless { gone }
}

proctype Leaver()
{
  entry = E_REAPING;                                     /* vs_segment_leave: CAS ALIVE -> REAPING */
#ifndef MUTANT_LEAVE_NO_WAIT
  running == 0;                                          /* vs_segment_leave: vs__purges_wait */
#endif
  atomic {                                               /* vs_pool_reclaim_peer_slots(1) */
    if
    :: (st == S_ALLOC || st == S_PURGING) && own == 1 -> st = S_FREE; own = 0; holder = 0
    :: else
    fi
  };
  entry = E_FREE;                                        /* vs_segment_leave: CAS REAPING -> FREE */
  if
  :: gone = 1                                            /* the process exits */
  :: skip
  fi
}

proctype Peer2()
{
  byte n; bool got;
  do
  :: n == 2 -> break
  :: n < 2 ->
     atomic {                                            /* claim: CAS FREE -> ALLOCATED */
       if
       :: st == S_FREE -> st = S_ALLOC; own = 2; assert(holder == 0); holder = 2; got = 1
       :: else
       fi
     };
     if
     :: got ->
        assert(holder == 2);                             /* writes its slot */
        atomic { st = S_FREE; own = 0; holder = 0 };     /* free_word: CAS ALLOCATED -> FREE */
        got = 0
     :: else
     fi;
     n++
  od
}

init
{
  atomic { run Purger(); run Leaver(); run Peer2() };
  _nr_pr == 1;
  /* nothing lost: the slot is FREE (a PURGING slot of a peer whose entry is FREE would wait
   * for a reap that never comes) */
  assert(st == S_FREE)
}
