/* Giving memory back: the pages of free slots that stayed idle for the decay time are removed
 * from the segment file, so tmpfs frees them.
 *
 * A purge is an ownership change like any other (model: purge_cas, purge_punch, purge_done in
 * slots.pml): FREE(gen) -> PURGING(gen, us) by one CAS, the pages removed while the word says
 * PURGING, then PURGING -> FREE(gen) and the slot's bit published. So a slot handed out is
 * never purged (its word is not FREE), a slot being purged is never handed out (claims only
 * take FREE words), and a purger killed mid-way leaves a PURGING word its reaping returns.
 *
 * When a slot became idle is a hint in its share entry (`idle`: the generation it was seen
 * free at, since when, and whether it was purged since): a scribbled hint purges a free slot
 * early or late, never a slot in use. The hint is written by the free that looks at the
 * clock (once a thread freed 1 MiB of large slots: every free of a 1 MiB slot, every 16th of
 * a 64 KiB one, so that a small slot's allocate+free pair does not pay for a clock) and by
 * passes that meet a free slot whose hint is of an earlier generation. A slot goes back at
 * the first pass after its decay; passes come with the program's calls (no call, no pass).
 *
 * No thread of our own: joined peers run bounded passes on their slow paths, at most one per
 * segment per interval (a fraction of the decay), whichever peer runs it. A leave waits for
 * its process's other threads' purges: a purge must not outlive the peer id it marks slots
 * with (its slots go back at the leave). (model: purge.pml) */
#include "debug.h"
#include "segment.h"
#include "slot_cache.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#define VS__PURGE_PASS_SLOTS 1024            /* slot words an opportunistic pass looks at */
#define VS__PURGE_PASS_BYTES (32ull << 20)   /* and the most it gives back (0.4-0.6 ms a MiB
                                                measured on tmpfs, another job running) */
#define VS__PURGE_MIN_INTERVAL_MS 1u
#define VS__PURGE_MAX_INTERVAL_MS 250u

/* ---- the idle hint: bits 0..31 generation, 32..62 ms clock (mod 2^31), 63 purged ---- */
#define IDLE_PURGED (1ull << 63)
static inline uint64_t idle_make(uint32_t gen, uint32_t ms, bool purged)
{
    return gen | (uint64_t)(ms & 0x7fffffffu) << 32 | (purged ? IDLE_PURGED : 0);
}
static inline uint32_t idle_gen(uint64_t v) { return (uint32_t)v; }
static inline uint32_t idle_age(uint64_t v, uint32_t now_ms)
{
    return (now_ms - (uint32_t)(v >> 32)) & 0x7fffffffu;
}

/* The coarse clock (no system call, ticks of a few ms): read once per MiB a thread frees. */
static uint32_t now_ms(void) { return (uint32_t)(vs__now_ns(CLOCK_MONOTONIC_COARSE) / 1000000u); }

/* ---- the decay ---- */

/* VARSLOT_DECAY_MS as the last create or open read it: INT32_MIN while unset. */
static int32_t env_decay = INT32_MIN;

int vs__decay_env_check(void)
{
    const char *v = getenv("VARSLOT_DECAY_MS");
    int32_t val = INT32_MIN;
    if (v) {
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (end == v || *end || errno || n < -1 || n > INT32_MAX) {
            vs__set_detail("VARSLOT_DECAY_MS is not a number of milliseconds from -1 (never) to 2147483647");
            return VS_EINVAL;
        }
        val = (int32_t)n;
    }
    __atomic_store_n(&env_decay, val, __ATOMIC_RELAXED);
    return VS_OK;
}

int32_t vs__decay_for_new_segment(void)
{
    int32_t e = __atomic_load_n(&env_decay, __ATOMIC_RELAXED);
    return e != INT32_MIN ? e : VS_DEFAULT_DECAY_MS;
}

int32_t vs_segment_decay_ms(const vs_segment *seg)
{
    int32_t e = __atomic_load_n(&env_decay, __ATOMIC_RELAXED);
    if (e != INT32_MIN)
        return e;
    if (!seg || !seg->map)
        return -1;
    /* Validated at open (checksummed); read again because nothing is kept per segment for it.
     * A scribble changes only when free pages go back. */
    int32_t d = __atomic_load_n(&vs__header(seg)->decay_ms, __ATOMIC_RELAXED);
    return d < -1 ? -1 : d;
}

/* ---- this process's purges, which a leave waits for ----
 * The process (pid and fork epoch, vs__self) in the high 40 bits, purges running in the low
 * 24: a fork child's copy counts its parent's threads, which do not run in it. Each thread
 * also counts its own: a leave waits for the others' only. A signal handler that interrupts
 * a purge and calls exit() leaves from the same thread, and the interrupted purge never
 * resumes (a leave in a handler that then returns to the purge is not supported: the purge
 * would go on marking slots with the id given up). */
#define RUNNING_MASK 0xffffffull
static _Atomic uint64_t purges_running;
static VS__TLS uint32_t purges_of_this_thread;

static uint64_t process_key(void)
{
    vs__proc_id p = vs__self();
    return ((uint64_t)(uint32_t)p.pid << 8 | (p.epoch & 0xffu)) << 24;
}

/* The process's count and the thread's change together: a handler that runs between the two
 * and leaves would wait for its own purge. Signals are held off for the two: two system calls
 * beside a pass's punches, which cost far more. */
static void purges_enter(void)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    uint64_t me = process_key();
    uint64_t b = atomic_load_explicit(&purges_running, memory_order_relaxed), n;
    do
        n = (b & ~RUNNING_MASK) == me ? b + 1 : me | 1;
    while (!atomic_compare_exchange_weak_explicit(&purges_running, &b, n, memory_order_seq_cst,
                                                  memory_order_relaxed));
    purges_of_this_thread++;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void purges_exit(void)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    purges_of_this_thread--;
    atomic_fetch_sub_explicit(&purges_running, 1, memory_order_seq_cst);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void vs__purges_wait(void)
{
    uint64_t me = process_key();
    for (;;) {
        uint64_t b = atomic_load_explicit(&purges_running, memory_order_seq_cst);
        if ((b & ~RUNNING_MASK) != me || (b & RUNNING_MASK) <= purges_of_this_thread)
            return;
        sched_yield();
    }
}

/* ---- one slot ---- */

/* Slots made of whole system pages (4 KiB, or 16 or 64 KiB on some arm64 and ppc64 kernels):
 * a hole punched in part of a page only zeroes it. */
static inline bool purgeable(const struct vs_pool_class *cls)
{
    static size_t page;
    if (VS__UNLIKELY(!page))
        page = (size_t)sysconf(_SC_PAGESIZE);
    return cls->stride >= VS_SLOT_PAGE && cls->stride % page == 0 &&
           (uintptr_t)vs_pool_class_data(cls) % page == 0;
}

enum { PURGE_SKIPPED, PURGE_DONE, PURGE_FAILED };

/* Slot idx of cls, if free and (unless `all`) idle for decay_ms. */
static int purge_slot(const vs_segment *seg, const struct vs_pool_class *cls, uint32_t idx,
                      uint8_t me, uint32_t now, int32_t decay_ms, bool all)
{
    vs__slot_meta *m = vs__meta(cls, idx);
    uint64_t w = atomic_load_explicit(&m->word, memory_order_relaxed);
    if (vs__word_state(w) != VS_SLOT_FREE || (vs__word_gen(w) == 0 && vs__word_lap(w) == 0))
        return PURGE_SKIPPED; /* in use, or never handed out (its pages were never touched) */
    _Atomic uint64_t *idle = &vs__share_entry(cls, idx)->idle;
    uint64_t hint = atomic_load_explicit(idle, memory_order_relaxed);
    if (idle_gen(hint) != vs__word_gen(w)) { /* first seen free at this generation */
        atomic_store_explicit(idle, idle_make(vs__word_gen(w), now, false), memory_order_relaxed);
        if (!all)
            return PURGE_SKIPPED;
    } else if (hint & IDLE_PURGED) {
        return PURGE_SKIPPED;
    } else if (!all && idle_age(hint, now) < (uint32_t)decay_ms) {
        return PURGE_SKIPPED;
    }
    uint64_t purging = vs__word_with(w, me, VS_SLOT_PURGING);
    VS__DEBUG_POINT(vs__debug_before_purge_cas, idx);
    /* model: purge_cas. From here the slot is ours: no claim can take it. */
    if (!atomic_compare_exchange_strong_explicit(&m->word, &w, purging, memory_order_acquire,
                                                 memory_order_relaxed))
        return PURGE_SKIPPED;
    /* model: purge_punch */
    /* Through the file, not this process's mapping: a range here may be a private copy (the
     * preload shim's fork child and exit), which MADV_REMOVE would refuse. */
    off_t at = (off_t)(vs__slot_data(cls, idx) - (uint8_t *)seg->map);
    int rc = fallocate(seg->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, at, (off_t)cls->stride) == 0
                 ? PURGE_DONE
                 : PURGE_FAILED;
    int e = errno;
    VS__DEBUG_POINT(vs__debug_after_purge_punch, idx);
    /* model: purge_done. Fails only if the word was scribbled on, or reaped from under a
     * purger its own process gave up for dead: the slot is someone else's business then. */
    if (atomic_compare_exchange_strong_explicit(&m->word, &purging, vs__word_with(w, 0, VS_SLOT_FREE),
                                                memory_order_release, memory_order_relaxed)) {
        if (rc == PURGE_DONE)
            atomic_store_explicit(idle, idle_make(vs__word_gen(w), now, true), memory_order_relaxed);
        vs__publish_free(cls, idx);
    }
    errno = e;
    return rc;
}

/* ---- passes ---- */

static _Atomic int purge_broken; /* the file system cannot remove pages: stop trying */

/* Purges what it may of seg's pool: every slot (all) or a window after the cursor. Returns
 * VS_OK, VS_ENOTJOINED, or VS_ESYS when pages could not be removed. `leaving`: called by
 * vs_segment_leave itself, after its reclaim, with the entry REAPING (its own mark). */
static int purge_pass(vs_segment *seg, bool all, int32_t decay_ms, uint64_t *returned, bool leaving)
{
    uint8_t me = __atomic_load_n(&seg->peer_id, __ATOMIC_ACQUIRE);
    if (!me)
        return VS_ENOTJOINED;
    /* Announced first, then our entry checked: a leave marks the entry, then waits for the
     * purges it may have missed (vs__purges_wait); one that starts after sees the mark. */
    purges_enter();
    uint64_t s = atomic_load_explicit(&vs__peer_entry(seg, me)->state, memory_order_seq_cst);
    if (vs__peer_state(s) != (leaving ? VS_PEER_REAPING : VS_PEER_ALIVE) ||
        __atomic_load_n(&seg->peer_id, __ATOMIC_ACQUIRE) != me) {
        purges_exit();
        return VS_ENOTJOINED;
    }
    const vs_pool *pool = &seg->pool;
    uint32_t total = vs_pool_total_slots(pool), now = now_ms();
    _Atomic uint32_t *cursor = &vs__header(seg)->purge_cursor;
    uint32_t start = all ? 0 : atomic_load_explicit(cursor, memory_order_relaxed) % (total ? total : 1);
    uint32_t todo = all || total < VS__PURGE_PASS_SLOTS ? total : VS__PURGE_PASS_SLOTS;
    uint64_t bytes = 0;
    int rc = VS_OK, err = 0;
    uint32_t n = 0, k = start;
    size_t c = 0;
    for (; n < todo; n++, k = k + 1 < total ? k + 1 : 0) {
        while (c + 1 < pool->class_count && k >= pool->classes[c + 1].index_base)
            c++;
        while (c > 0 && k < pool->classes[c].index_base)
            c--;
        const struct vs_pool_class *cls = &pool->classes[c];
        if (!purgeable(cls))
            continue;
        int r = purge_slot(seg, cls, k - cls->index_base, me, now, decay_ms, all);
        if (r == PURGE_FAILED) {
            err = errno;
            rc = VS_ESYS;
            if (err == EOPNOTSUPP || err == ENOSYS)
                atomic_store_explicit(&purge_broken, 1, memory_order_relaxed);
            break;
        }
        if (r == PURGE_DONE) {
            bytes += cls->stride;
            if (!all && bytes >= VS__PURGE_PASS_BYTES) {
                n++;
                k = k + 1 < total ? k + 1 : 0;
                break;
            }
        }
    }
    if (!all)
        atomic_store_explicit(cursor, k, memory_order_relaxed);
    purges_exit();
    if (returned)
        *returned = bytes;
    if (rc == VS_ESYS) {
        vs__set_detail("the segment's file system cannot remove pages (fallocate PUNCH_HOLE)");
        errno = err;
    }
    return rc;
}

/* Only the process that joined purges: a fork child that has not adopted yet still sees its
 * parent's peer id, which it must not mark slots with. */
static vs_segment *purging_segment(const vs_pool *pool)
{
    vs_segment *seg = pool->segment;
    if (!seg || !__atomic_load_n(&seg->peer_id, __ATOMIC_ACQUIRE) ||
        !vs__proc_is_self(vs__segment_owner(seg)))
        return NULL;
    return seg;
}

/* A pass if no peer ran one on this segment for a while (the time of the next is in the
 * segment: one pass per interval whichever peer runs it). Decay 0: a pass every time. A time
 * further ahead than the longest interval was scribbled, or written by a peer in another time
 * namespace: it is ignored. Slow paths only. */
static void purge_maybe(const vs_pool *pool, uint32_t now)
{
    vs_segment *seg = pool->segment;
    if (!seg || !__atomic_load_n(&seg->peer_id, __ATOMIC_RELAXED) ||
        atomic_load_explicit(&purge_broken, memory_order_relaxed))
        return;
    int32_t decay = vs_segment_decay_ms(seg);
    if (decay < 0)
        return;
    _Atomic uint32_t *next_ms = &vs__header(seg)->purge_next_ms;
    uint32_t next = atomic_load_explicit(next_ms, memory_order_relaxed);
    if (decay > 0) {
        if ((int32_t)(now - next) < 0 && next - now <= VS__PURGE_MAX_INTERVAL_MS)
            return;
        uint32_t interval = (uint32_t)decay / 32;
        interval = interval < VS__PURGE_MIN_INTERVAL_MS   ? VS__PURGE_MIN_INTERVAL_MS
                   : interval > VS__PURGE_MAX_INTERVAL_MS ? VS__PURGE_MAX_INTERVAL_MS
                                                          : interval;
        if (!atomic_compare_exchange_strong_explicit(next_ms, &next, now + interval,
                                                     memory_order_relaxed, memory_order_relaxed))
            return; /* another thread runs this one */
    }
    /* Only now the process check (a getpid, a system call: 1-2 us on a paravirtualised VM,
     * measured; per tick it cost a 64 KiB allocate+free pair 4x). */
    if (!purging_segment(pool))
        return;
    uint64_t returned = 0;
    purge_pass(seg, false, decay, &returned, false);
    if (returned >= VS__PURGE_PASS_BYTES) /* stopped at its budget: the next may come at once */
        atomic_store_explicit(next_ms, now, memory_order_relaxed);
}

void vs__purge_after_free(const vs_pool *pool, const struct vs_pool_class *cls, uint32_t idx,
                          uint32_t gen)
{
    vs__tc.purge_bytes = 0;
    if (!purgeable(cls))
        return;
    uint32_t now = now_ms();
    /* The slot just freed is idle from now (if someone took it meanwhile, the hint is moot). */
    atomic_store_explicit(&vs__share_entry(cls, idx)->idle, idle_make(gen, now, false),
                          memory_order_relaxed);
    purge_maybe(pool, now);
}

void vs__purge_on_slow_path(const vs_pool *pool) { purge_maybe(pool, now_ms()); }

void vs__purge_at_leave(vs_segment *seg)
{
    int32_t decay = vs_segment_decay_ms(seg);
    if (decay < 0 || atomic_load_explicit(&purge_broken, memory_order_relaxed))
        return;
    /* The last peer out gives back every free slot, those it held until its reclaim a moment
     * ago too: nobody is left to reuse them. Peers leaving (or being reaped) at the same time
     * count as gone: of two last peers leaving together, each gives back what it sees free
     * (their CASes on the words decide who purges which). (Killed in here, it is reaped as
     * any peer is: its entry is REAPING and its liveness lock gone with it.) */
    uint8_t me = seg->peer_id;
    bool last = true;
    for (uint32_t id = 1; id <= seg->max_peers && last; id++)
        last = id == me || vs__peer_state(atomic_load_explicit(&vs__peer_entry(seg, (uint8_t)id)->state,
                                                               memory_order_acquire)) != VS_PEER_ALIVE;
    purge_pass(seg, last, decay, NULL, true);
}

int vs_segment_trim(vs_segment *seg, uint64_t *returned)
{
    VS__NO_CANCEL;
    if (returned)
        *returned = 0;
    if (!seg || !seg->map)
        return VS_EINVAL;
    int rc = vs__segment_adopt(seg);
    if (rc != VS_OK)
        return rc;
    vs__pool_flush_pending(&seg->pool);
    return purge_pass(seg, true, 0, returned, false);
}
