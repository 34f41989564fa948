/* varslot: the peer lifecycle as the code does it (core/src/peers.c, reap.c, remove.c, fork.c,
 * locks.c, segment.c). Kernel objects are modelled as the kernel keeps them: an open file
 * description lives while anything holds it (an fd in some process, or a mapping), and the
 * OFD locks on it die with it; a lock conflicts only with locks of other descriptions, and
 * F_OFD_GETLK reports only those. One atomic step here is one system call or one atomic
 * instruction there. A process can be killed between any two of its steps (Killer +
 * `unless`): the kernel then drops every hold it had.
 *
 * One scenario per run (-D SCENARIO_x), each checking its own property:
 *   FORK     a parent thread joins while another forks at any moment of that (its lock
 *            descriptions opened outside the registry, redone if a fork overlapped); the
 *            parent then dies: while the child lives on (having adopted its segment and
 *            joined), the parent's entry and slot are reaped (fork_parent_reaped). With
 *            -DLATE_HANDLER another library's fork handler adopts and joins in the child
 *            before ours runs (fork_late_handler). (A reaper killed mid-reap is REAP's.)
 *   THREADS  one process: a thread joins, holds a slot, leaves and joins again while another
 *            thread reaps: it never reaps its own process's live peer (own_peer_live).
 *   REAP     a peer dies holding a slot; two reapers (either may die mid-reap) and a joiner
 *            race: no live peer's entry or slot is ever reaped, and the dead peer's are
 *            reaped in the end (live_not_reaped).
 *   REMOVE   two peers of a remove-when-unused segment leave (one may die at any step) while a
 *            third opens and joins (creating a new segment if the name is gone), and someone
 *            may remove the name by hand: no name is removed while a peer is joined to its
 *            file, no join succeeds on a file varslot removed (a joiner checks, under JOIN
 *            shared, that the name still names its file), and no remover removes a file it
 *            did not decide about (remove_safe).
 * Mutants (-D MUTANT_x) break one rule each; check says which property must catch it.
 *
 * Bounds: 2 peer ids, at most 2 segment files, epochs mod 4, one slot per actor. Every rule
 * of the code is per entry (one state word, one LIVE byte, one REAP byte) or per file (the
 * JOIN byte, the name), so two ids and two files are the smallest instance
 * in which an id is freed and re-taken by another process and a name moves to another file.
 * What is not here: the slot-word protocol itself (slots.pml) and scribbled memory.
 */

#define NID 2
#define NINO 2                     /* files 1..NINO */
#ifdef SCENARIO_REMOVE
#define ND 14                      /* open file descriptions 1..ND-1; 0 = none */
#else
#define ND 8
#endif
#define NP 6                       /* processes 1..NP-1 */
#define NS 4                       /* slots */
#define E(i, id) ((i) * (NID + 1) + (id))
#define NE ((NINO + 1) * (NID + 1))

#define FREE 0
#define ALIVE 1
#define REAPING 2

/* Where the liveness lock goes and what probes go through: the code's choice, or a mutant's. */
#if defined(MUTANT_LOCKS_ON_MAPPED)
#define LIVE_DESC(lived) datad      /* the description the segment is mapped from */
#elif defined(MUTANT_PROBE_VIA_LIVE)
#define LIVE_DESC(lived) lockd      /* one description for probes and the lock (old code) */
#else
#define LIVE_DESC(lived) lived
#endif
#define PROBE_DESC lockd

/* ---- the kernel ---- */
byte refs[ND];       /* holds on description d: one per process with an fd of it, one per mapping */
byte ino[ND];        /* the file d is a description of */
byte nd = 1;
#define LIVE 0       /* lk[LIVE + E(i, id)]: the description holding LIVE(id) of file i; 0 = none */
#define REAP NE      /* lk[REAP + E(i, id)]: ... REAP(id) */
byte lk[2 * NE];
byte join_excl[NINO + 1];
bool join_sh[ND];    /* d holds JOIN shared (of its file) */
byte name = 1;       /* the file the segment's name names; 0 = none */
byte next_ino = 2;
bool alive[NP];      /* process p has not been killed */
bool doom[NP];       /* the Killer picked p */
bool gone[NP];       /* ... and the kernel has torn p down (dropped all its holds) */

/* ---- the segment files ---- */
byte state[NE];      /* peer entry: state ... */
byte epoch[NE];      /* ... and epoch, one CAS word in the code */
bool removed[NINO + 1]; /* ghost: varslot removed the file's name */
byte slot_owner[NS]; /* the slot word's owner peer id; 0 = free */
byte slot_ino[NS];

/* ---- ghosts ---- */
byte entry_holder[NE];   /* the process whose join CAS made the entry ALIVE, until its leave */
byte slot_holder[NS];    /* the process that holds slot s (allocated it, has not freed it) */
bool fork_handler_done;

#define HELD_BY_LIVE(p) ((p) != 0 && alive[p])

inline open_desc(i, d) { d_step { open_desc_held(i, d) } }
inline open_desc_held(i, d) { d = nd; nd++; refs[d] = 1; ino[d] = i }

/* The kernel drops one hold on d; with the last one, its locks go. (drop_held: the same,
 * inside a d_step the caller has opened, e.g. with the fd table entry that held it.) */
inline drop(d) { d_step { drop_held(d) } }
inline drop_held(d) {
        if
        :: d != 0 ->
            refs[d]--;
            if
            :: refs[d] == 0 ->
                k = 0;
                do
                :: k < 2 * NE -> if :: lk[k] == d -> lk[k] = 0 :: else -> skip fi; k++
                :: else -> break
                od;
                if :: join_excl[ino[d]] == d -> join_excl[ino[d]] = 0 :: else -> skip fi;
                join_sh[d] = false;
                k = 0
            :: else -> skip
            fi
        :: else -> skip
        fi
}

/* F_OFD_SETLK F_WRLCK on one byte: fails if another description holds it. */
inline try_lock(kind, i, id, d, ok) {
    d_step {
        if
        :: lk[kind + E(i, id)] == 0 || lk[kind + E(i, id)] == d -> lk[kind + E(i, id)] = d; ok = true
        :: else -> ok = false
        fi
    }
}
inline unlock(kind, i, id, d) {
    d_step { if :: lk[kind + E(i, id)] == d -> lk[kind + E(i, id)] = 0 :: else -> skip fi }
}
/* F_OFD_GETLK: held by a description other than d? */
#define ELSEWHERE(kind, i, id, d) (lk[kind + E(i, id)] != 0 && lk[kind + E(i, id)] != (d))

inline try_join_shared(i, d, ok) {
    d_step {
        if
        :: join_excl[i] == 0 || join_excl[i] == d -> join_sh[d] = true; ok = true
        :: else -> ok = false
        fi
    }
}
inline try_join_excl(i, d, ok) {
    d_step {
        ok = (join_excl[i] == 0 || join_excl[i] == d);
        k = 1;
        do
        :: k < ND -> if :: join_sh[k] && k != d && ino[k] == i -> ok = false :: else -> skip fi; k++
        :: else -> break
        od;
        k = 0;
        if :: ok -> join_excl[i] = d :: else -> skip fi
    }
}

/* ---- the code ---- */

/* pool.c vs_pool_reclaim_peer_slots: one CAS per slot word that still names the peer.
 * by == the process reclaiming; it may take back only its own slots or a dead process's. */
inline reclaim(i, id, by) {
    s = 0;
    do
    :: s < NS ->
        atomic {
            if
            :: slot_ino[s] == i && slot_owner[s] == id ->
                assert(slot_holder[s] == by || !HELD_BY_LIVE(slot_holder[s])); /* live_not_reaped */
                slot_owner[s] = 0; slot_holder[s] = 0
            :: else -> skip
            fi
        };
        s++
    :: else -> break
    od;
    s = 0
}

/* reap.c reap_one: probes through lockd (seg->lock_fd), never the liveness description. */
inline reap_one(i, id, lockd, me) {
    st = state[E(i, id)];
    if
    :: (st == ALIVE || st == REAPING) && !ELSEWHERE(LIVE, i, id, PROBE_DESC) ->
        try_lock(REAP, i, id, lockd, ok);
        if
        :: ok ->
            atomic { st = state[E(i, id)]; ep = epoch[E(i, id)] };   /* look again, locked */
#ifdef MUTANT_NO_SECOND_PROBE
            if
            :: (st == ALIVE || st == REAPING) ->
#else
            if
            :: (st == ALIVE || st == REAPING) && !ELSEWHERE(LIVE, i, id, PROBE_DESC) ->
#endif
                if
                :: st == ALIVE ->
                    atomic {   /* reap_cas: ALIVE(ep) -> REAPING(ep) */
                        if
                        :: state[E(i, id)] == ALIVE && epoch[E(i, id)] == ep ->
                            assert(!HELD_BY_LIVE(entry_holder[E(i, id)]));   /* live_not_reaped */
                            state[E(i, id)] = REAPING; ok = true
                        :: else -> ok = false
                        fi
                    }
                :: else -> ok = true
                fi;
                if
                :: ok ->
                    reclaim(i, id, me);
                    atomic {   /* REAPING(ep) -> FREE(ep + 1) */
                        if
                        :: state[E(i, id)] == REAPING && epoch[E(i, id)] == ep ->
                            state[E(i, id)] = FREE; epoch[E(i, id)] = (ep + 1) % 4;
                            entry_holder[E(i, id)] = 0
                        :: else -> skip
                        fi
                    }
                :: else -> skip
                fi
            :: else -> skip
            fi;
            unlock(REAP, i, id, lockd)
        :: else -> skip
        fi
    :: else -> skip
    fi;
    st = 0; ep = 0; ok = false
}

inline reap_all(i, lockd, me) {
    rid = 1;
    do
    :: rid <= NID -> if :: rid != self_id -> reap_one(i, rid, lockd, me) :: else -> skip fi; rid++
    :: else -> break
    od;
    rid = 0
}

/* peers.c join_once + claim_entry: a new description for the liveness lock; JOIN shared; the
 * check that the name still names the file; for a FREE entry, LIVE(id) first, then the CAS FREE -> ALIVE; then
 * seg->peer_id. got: the id joined, 0 if none. */
inline join(i, me, lived, got) {
    open_desc(i, lived);
    got = 0;
#ifdef MUTANT_NO_JOIN_LOCK
    ok = true;
#else
    try_join_shared(i, lived, ok);
#endif
    if
#ifdef MUTANT_NO_JOINER_NAME_CHECK
    :: ok ->
#else
    :: ok && name == i ->         /* vs__name_still_names, under JOIN shared: else VS_ESTALE */
#endif
        id = 1;
        do
        :: id <= NID && got == 0 ->
            atomic { st = state[E(i, id)]; ep = epoch[E(i, id)] };
            if
            :: st == FREE ->
                try_lock(LIVE, i, id, LIVE_DESC(lived), ok);
                if
                :: ok ->
                    atomic {   /* join_cas */
                        if
                        :: state[E(i, id)] == FREE && epoch[E(i, id)] == ep ->
                            state[E(i, id)] = ALIVE; epoch[E(i, id)] = (ep + 1) % 4;
                            entry_holder[E(i, id)] = me; got = id;
                            assert(!removed[i])   /* remove_safe: never a join on a removed file */
                        :: else -> skip
                        fi
                    };
                    if :: got == 0 -> unlock(LIVE, i, id, LIVE_DESC(lived)) :: else -> skip fi
                :: else -> skip
                fi
            :: else -> skip
            fi;
            id++
        :: else -> break
        od
    :: else -> skip
    fi;
    skip;
    d_step { join_sh[lived] = false };
    if :: got == 0 -> drop(lived); lived = 0 :: else -> skip fi;
    id = 0; st = 0; ep = 0; ok = false
}

/* peers.c vs_segment_leave: CAS ALIVE -> REAPING (the mark a share's recheck looks for,
 * shared.pml), slots back, CAS REAPING -> FREE, then the liveness description. */
inline leave(i, me, lived, got) {
    atomic { if :: state[E(i, got)] == ALIVE -> state[E(i, got)] = REAPING :: else -> skip fi };
    reclaim(i, got, me);
    atomic {
        if
        :: state[E(i, got)] == REAPING ->
            state[E(i, got)] = FREE; epoch[E(i, got)] = (epoch[E(i, got)] + 1) % 4;
            entry_holder[E(i, got)] = 0
        :: else -> skip
        fi
    };
    drop(lived); lived = 0; got = 0
}

/* A slot allocated by the joined peer (the claim CAS of slots.pml, in one step here). */
inline take_slot(sl, i, got, me) {
    atomic { slot_ino[sl] = i; slot_owner[sl] = got; slot_holder[sl] = me }
}

/* ---- who kills whom ---- */
proctype Killer(byte p) {
    if :: doom[p] = true :: skip fi
}

byte self_id;        /* THREADS: seg->peer_id, shared by the process's threads */

/* -D REACH: every final check fails on purpose, so check can prove the check is reached
 * (a check nothing reaches would pass vacuously). */
#ifdef REACH
#define REACHED assert(false);
#else
#define REACHED skip;
#endif

/* ======================= FORK ======================= */
/* The parent is one process with two threads: one joins (and so opens and registers its
 * liveness description, and holds the join flag), the other forks at any moment of that.
 * The kernel gives the child a hold on every description the parent holds (fds and
 * mappings). In the child, the fork handler (fork.c in_child) closes the registered
 * descriptions that existed at the fork; another library's fork handler may have adopted the
 * segment and joined before ours runs, or after. */
#ifdef SCENARIO_FORK
#define PARENT 1
#define CHILD 2
#define CHECK 3
byte holds[ND];        /* the parent's holds on each description (fds + mappings) */
byte child_holds[ND];  /* the child's: from fork, and its own */
bool parent_reg[ND];   /* in the parent's registry of lock descriptions */
bool child_reg[ND];    /* in the child's (a copy at fork, then its own) */
bool at_fork[ND];      /* registered when the fork began: what the child's handler closes */
byte joining_flag;     /* seg->joining: 0, or the process (PARENT/CHILD) whose thread holds it */
bool forking;          /* fork() under way: the registry is held, fork_seq is odd */
byte fork_count;
bool forked, child_done;
byte p_datad, p_lockd, p_lived, forked_lived;
/* The child is not killed: its death only drops holds, never takes one, so it cannot keep a
 * dead parent's lock alive (-DKILL_CHILD kills it anyway: 18 million states, no error). */
#ifdef KILL_CHILD
#define CHILD_KILLER run Killer(CHILD)
#else
#define CHILD_KILLER skip
#endif

/* fork.c lock_fd_open: open outside the registry (the open may block), then register, unless
 * a fork overlapped the open (fork_seq moved): then close it and open again; the child may hold
 * the first one, which never carries a lock. (The mutant registers it anyway.) */
inline open_lock_desc(i, d) {
    do
    :: atomic { !forking -> seq = fork_count };
       open_desc(i, d); holds[d]++;
       atomic {
           !forking ->
#ifdef MUTANT_REGISTER_AFTER_OPEN
           overlapped = false;
#else
           overlapped = fork_count != seq;
#endif
           if :: !overlapped -> parent_reg[d] = true :: else -> skip fi
       };
       if
       :: !overlapped -> break
       :: else -> d_step { holds[d]--; drop_held(d) }
       fi
    od;
    seq = 0; overlapped = false
}

proctype ParentJoiner() {
    byte lockd = p_lockd, datad = p_datad, lived, got, id, st, ep, k, s, seq;
    bool ok, overlapped;
    {
        atomic { joining_flag == 0 -> joining_flag = PARENT };   /* vs_segment_join's flag */
        open_lock_desc(1, lived);
        try_join_shared(1, lived, ok);
        if
        :: ok ->
            id = 1;
            do
            :: id <= NID && got == 0 ->
                atomic { st = state[E(1, id)]; ep = epoch[E(1, id)] };
                if
                :: st == FREE ->
                    try_lock(LIVE, 1, id, LIVE_DESC(lived), ok);
                    if
                    :: ok ->
                        atomic {
                            if
                            :: state[E(1, id)] == FREE && epoch[E(1, id)] == ep ->
                                state[E(1, id)] = ALIVE; epoch[E(1, id)] = (ep + 1) % 4;
                                entry_holder[E(1, id)] = PARENT; got = id
                            :: else -> skip
                            fi
                        }
                    :: else -> skip
                    fi
                :: else -> skip
                fi;
                id++
            :: else -> break
            od
        :: else -> skip
        fi;
        skip;
        d_step { join_sh[lived] = false };
        if :: got != 0 -> p_lived = lived :: else -> skip fi;   /* seg->live_fd */
        joining_flag = 0;
        if :: got != 0 -> take_slot(0, 1, got, PARENT) :: else -> skip fi;
end_parent:
        false
    } unless { doom[PARENT] }
}

/* fork.c vs__lock_fd_close: closes d only if this process's registry still has it. */
inline close_registered(d) {
    if
    :: d != 0 && child_reg[d] -> d_step { child_reg[d] = false; child_holds[d]--; drop_held(d) }
    :: else -> skip
    fi
}

/* fork.c in_child: closes what was registered when the fork began (the mutant: everything
 * registered, the child's own new descriptions too, as "not opened by this process and
 * epoch" did once another library's handler had used the segment before ours ran). */
inline in_child() {
    d = 1;
    do
    :: d < ND ->
#ifdef MUTANT_HANDLER_CLOSES_NEW
        if :: child_reg[d] -> close_registered(d) :: else -> skip fi;
#else
        if :: child_reg[d] && at_fork[d] -> close_registered(d) :: else -> skip fi;
#endif
        d++
    :: else -> break
    od;
    d = 0
}

proctype Child() {
    byte datad = p_datad, lockd, c_lockd, c_lived, mylockd, mylived, got, id, st, ep, k, s, d;
    bool ok, handler_first;
    {
    c_lockd = p_lockd; c_lived = forked_lived;         /* seg->lock_fd, seg->live_fd as copied */
#ifdef LATE_HANDLER
    handler_first = false;  /* another library's fork handler adopts and joins before ours */
#else
    handler_first = true;
#endif
    if :: handler_first -> in_child() :: else -> skip fi;
    /* vs__segment_adopt: under the join flag, which a parent's thread may have held */
#ifdef MUTANT_FLAG_NOT_TAKEN_OVER
    atomic { joining_flag == 0 -> joining_flag = CHILD };
#else
    atomic { joining_flag == 0 || joining_flag == PARENT -> joining_flag = CHILD };
#endif
    close_registered(c_lived);                          /* the parent's: if still registered */
    close_registered(c_lockd);
    d_step { open_desc_held(1, mylockd); child_holds[mylockd] = 1; child_reg[mylockd] = true };
    joining_flag = 0;
    join(1, CHILD, mylived, got);
    if :: got != 0 -> d_step { child_holds[mylived] = 1; child_reg[mylived] = true } :: else -> skip fi;
    if :: got != 0 -> take_slot(1, 1, got, CHILD) :: else -> skip fi;
    if :: !handler_first -> in_child() :: else -> skip fi;
    child_done = true;
end_child:
    false
    } unless {
        doom[CHILD] ->
            alive[CHILD] = false;
            d = 1;
            do
            :: d < ND -> do :: child_holds[d] > 0 -> d_step { child_holds[d]--; drop_held(d) } :: else -> break od; d++
            :: else -> break
            od;
            /* killed inside its join: the liveness description it opened there */
            if :: mylived != 0 && child_holds[mylived] == 0 && refs[mylived] > 0 -> drop(mylived) :: else -> skip fi;
            child_done = true
    }
}
proctype Parent() {
    byte datad, lockd, d, k, seq;
    bool overlapped;
    {
        open_desc(1, datad);
        d_step { refs[datad]++; holds[datad] = 2 };           /* the fd and the mapping */
        open_lock_desc(1, lockd);
        p_datad = datad; p_lockd = lockd;
        run ParentJoiner();
        /* fork(), at any moment of the joiner's work: the child holds whatever we hold and a
         * copy of our registry; the fork handler's marks say what existed at the fork */
        atomic { forking = true };
        d_step {
            d = 1;
            do
            :: d < ND ->
                child_holds[d] = holds[d]; refs[d] = refs[d] + holds[d];
                child_reg[d] = parent_reg[d]; at_fork[d] = parent_reg[d]; d++
            :: else -> break
            od;
            d = 0; forked_lived = p_lived; fork_count++; forked = true; forking = false
        };
        run Child(); CHILD_KILLER
end_forked:
        false
    } unless {
        doom[PARENT] ->
            alive[PARENT] = false;
            /* the kernel tears the process down: every hold of both threads goes */
            d = 1;
            do
            :: d < ND -> do :: holds[d] > 0 -> d_step { holds[d]--; drop_held(d) } :: else -> break od; d++
            :: else -> break
            od;
            gone[PARENT] = true
    }
}

/* After the parent died and the child's fork handler ran: the next reaper finds it dead. */
proctype Check() {
    byte lockd, rid, id, st, ep, k, s;
    bool ok;
end_wait:
    (gone[PARENT] && forked && child_done);   /* everyone else done: quiescent */
    open_desc(1, lockd);
    reap_all(1, lockd, CHECK);
    /* fork_parent_reaped: its slot back, its entry no longer its own (the child may have
     * taken the id since), nothing left half-reaped */
    assert(slot_owner[0] == 0 && entry_holder[E(1, 1)] != PARENT && entry_holder[E(1, 2)] != PARENT);
    assert(state[E(1, 1)] != REAPING && state[E(1, 2)] != REAPING);
    assert(slot_owner[1] == 0 || slot_holder[1] == CHILD);  /* the child's slot stays */
    REACHED
}

init {
    d_step { alive[PARENT] = true; alive[CHILD] = true; alive[CHECK] = true };
    atomic { run Parent(); run Check() };
    forked;                                   /* the parent dies at any moment after fork */
    doom[PARENT] = true
}
#endif

/* ======================= THREADS ======================= */
#ifdef SCENARIO_THREADS
#define T_JOIN 1
#define T_REAP 2
byte datad, lockd;    /* the process's seg->fd and seg->lock_fd, shared by its threads */

proctype Joiner() {
    byte lived, got, id, st, ep, k, s, round;
    bool ok;
    do
    :: round < 2 ->
        join(1, T_JOIN, lived, got);
        assert(got != 0);
        self_id = got;                            /* join_once: seg->peer_id, after the CAS */
        take_slot(0, 1, got, T_JOIN);
        self_id = 0;                              /* ... leave clears it (order as in code: */
        leave(1, T_JOIN, lived, got);             /*  leave's peer_id = 0 comes last; earlier */
        round++                                   /*  is weaker for the reaper, so stronger) */
    :: else -> break
    od;
    REACHED
}

proctype ThreadReaper() {
    byte rid, id, st, ep, k, s, round;
    bool ok;
    do
    :: round < 3 -> reap_all(1, lockd, T_REAP); round++
    :: else -> break
    od
}

init {
    byte k;
    d_step { alive[T_JOIN] = true; alive[T_REAP] = true };
    open_desc(1, datad);
    open_desc(1, lockd);
    atomic { run Joiner(); run ThreadReaper() }
}
#endif

/* ======================= REAP ======================= */
#ifdef SCENARIO_REAP
#define DEAD 1
#define REAPER 2
#define JOINER 3
#define CHECK 4
bool dead_joined, reaper_done, joiner_done;

proctype Doomed() {
    byte lockd, lived, got, id, st, ep, k, s;
    bool ok;
    {
        open_desc(1, lockd);
        join(1, DEAD, lived, got);
        if :: got != 0 -> take_slot(0, 1, got, DEAD) :: else -> skip fi;
        dead_joined = true;
        doom[DEAD] = true;                        /* exits without leaving ... */
        false                                     /* ... (the escape below is taken) */
    } unless {
        doom[DEAD] -> alive[DEAD] = false; drop(lockd); drop(lived); gone[DEAD] = true
    }
}

/* A reaper that may die at any step of its reap (then the joiner's reap, which join_once
 * runs first, and the final one take over). */
proctype Reaper() {
    byte lockd, rid, id, st, ep, k, s;
    bool ok;
end_wait:
    {
        dead_joined;
        open_desc(1, lockd);
        reap_all(1, lockd, REAPER);
        reaper_done = true
    } unless {
        doom[REAPER] -> alive[REAPER] = false; drop(lockd); reaper_done = true
    }
}

proctype Joiner() {
    byte lockd, lived, got, rid, id, st, ep, k, s;
    bool ok;
end_wait:
    dead_joined;
    open_desc(1, lockd);
    reap_all(1, lockd, JOINER);                   /* join_once reaps first */
    join(1, JOINER, lived, got);
    if :: got != 0 -> take_slot(1, 1, got, JOINER) :: else -> skip fi;
    joiner_done = true;
end_joined:
    false
}

proctype Check() {
    byte lockd, rid, id, st, ep, k, s;
    bool ok;
end_wait:
    (gone[DEAD] && reaper_done && joiner_done);
    open_desc(1, lockd);
    reap_all(1, lockd, CHECK);
    assert(slot_owner[0] == 0);                               /* the dead peer's slot is back */
    assert(state[E(1, 1)] != REAPING && state[E(1, 2)] != REAPING);
    assert(entry_holder[E(1, 1)] != DEAD && entry_holder[E(1, 2)] != DEAD);
    REACHED
}

init {
    d_step { alive[DEAD] = true; alive[REAPER] = true; alive[JOINER] = true; alive[CHECK] = true };
    atomic { run Doomed(); run Reaper(); run Joiner(); run Check(); run Killer(REAPER) }
}
#endif

/* ======================= REMOVE ======================= */
#ifdef SCENARIO_REMOVE
#define PA 1
#define PB 2
#define NEWCOMER 3
#define HAND 4

/* remove.c: the last peer out (vs__segment_remove_if_unused), holding JOIN exclusively from
 * its decision to the unlink; the name goes by a rename to a private name, checked before it
 * is unlinked (remove_name_of), so only the decided-about file is ever removed. */
inline remove_if_unused(i, lockd, me) {
#ifdef MUTANT_NO_JOIN_LOCK
    ok = true;
#else
    try_join_excl(i, lockd, ok);
#endif
    if
    :: ok ->
        /* any_peer_joined: one F_OFD_GETLK over every LIVE byte */
        if
        :: !ELSEWHERE(LIVE, i, 1, lockd) && !ELSEWHERE(LIVE, i, 2, lockd) ->
#ifdef MUTANT_NO_NAME_CHECK
            atomic {                                      /* unlink(name) */
                assert(name == i);                        /* remove_safe: only its own file */
                assert(!HELD_BY_LIVE(entry_holder[E(i, 1)]) && !HELD_BY_LIVE(entry_holder[E(i, 2)]));
                name = 0; removed[i] = true
            }
#else
            if
            :: name == i ->                               /* vs__name_still_names */
                atomic { tmp = name; name = 0 };          /* renameat2(name, private, NOREPLACE) */
                if
                :: tmp == i ->                            /* it is ours: unlink the private name */
                    assert(!HELD_BY_LIVE(entry_holder[E(i, 1)]) && !HELD_BY_LIVE(entry_holder[E(i, 2)]));
                    removed[i] = true
                :: tmp != i && tmp != 0 ->                /* another file: rename it back */
                    atomic { if :: name == 0 -> name = tmp :: else -> orphaned = true fi }
                :: else -> skip
                fi;
                tmp = 0
            :: else -> skip
            fi
#endif
        :: else -> skip
        fi
    :: else -> skip
    fi;
    unlock_join_excl(i, lockd);
    ok = false
}

inline unlock_join_excl(i, d) { d_step { if :: join_excl[i] == d -> join_excl[i] = 0 :: else -> skip fi } }

bool orphaned;

/* A peer of file 1 leaving: vs_segment_close = leave, then remove_if_unused. It may be
 * killed at any step: the kernel drops its descriptions and their locks. */
proctype Leaver(byte me; byte lockd; byte lived; byte got) {
    byte id, st, ep, k, s, tmp;
    bool ok;
    {
        leave(1, me, lived, got);
        remove_if_unused(1, lockd, me);
        drop(lockd); lockd = 0
    } unless {
        doom[me] -> alive[me] = false; drop(lockd); drop(lived)
    }
}

/* vs_segment_open_or_create + join, again while the segment it opened was removed. */
proctype Newcomer() {
    byte f, lockd, lived, got, id, st, ep, k, s, tries, tmp;
    bool ok;
    do
    :: tries < 3 && got == 0 ->
        atomic {
            if
            :: name == 0 && next_ino <= NINO ->           /* create: a new file at the name */
                f = next_ino; next_ino++; name = f
            :: else -> f = name                           /* open */
            fi
        };
        if
        :: f != 0 ->
            open_desc(f, lockd);
            join(f, NEWCOMER, lived, got);                /* VS_ESTALE if the name moved on */
            if :: got == 0 -> drop(lockd) :: else -> skip fi
        :: else -> skip
        fi;
        tries++
    :: else -> break
    od;
    if
    :: got != 0 -> assert(!removed[f])                    /* remove_safe: joined a live segment */
    :: else -> skip
    fi;
    REACHED
end_joined:
    false
}

/* Someone removing the name by hand (rm /dev/shm/NAME): no protocol at all. */
proctype Hand() {
    if :: atomic { name = 0 } :: skip fi
}

init {
    byte la, va, ga, lb, vb, gb, id, st, ep, k, s;
    bool ok;
    d_step { alive[PA] = true; alive[PB] = true; alive[NEWCOMER] = true };
    open_desc(1, la); join(1, PA, va, ga);
    open_desc(1, lb); join(1, PB, vb, gb);
    assert(ga != 0 && gb != 0);
    atomic {
        run Leaver(PA, la, va, ga); run Leaver(PB, lb, vb, gb); run Newcomer(); run Hand();
        run Killer(PA)
    }
}
#endif
