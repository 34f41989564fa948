/* Internal assertions, as mimalloc's mi_assert_internal: the protocol's invariants, checked
 * where they must hold. They test values this process computed or just wrote, never what it
 * read from shared memory (a scribbler may put anything there: that is an error to report,
 * not a broken invariant). Compiled in with VS_DEBUG (the test and sanitizer builds), out of
 * the release library. */
#ifndef VARSLOT_DEBUG_H
#define VARSLOT_DEBUG_H

#include <stdint.h>

#ifdef VS_DEBUG
__attribute__((noreturn, cold)) void vs__assert_fail(const char *cond, const char *file, int line,
                                                     const char *func);
#define vs__assert(cond) \
    (__builtin_expect(!!(cond), 1) ? (void)0 : vs__assert_fail(#cond, __FILE__, __LINE__, __func__))

/* Points where a test may stop a thread, to force an interleaving that sampling reaches too
 * rarely (a hook NULL: nothing happens). Tests set them; the release library has none. */
typedef void (*vs__debug_hook)(uint32_t idx);
extern vs__debug_hook vs__debug_before_claim_cas; /* a claimer read the word FREE, CAS next */
extern vs__debug_hook vs__debug_before_reap_cas;  /* a reaper found peer idx dead, CAS next */
extern vs__debug_hook vs__debug_before_publish;   /* slot idx is FREE, its bit not set yet */
extern vs__debug_hook vs__debug_before_share_cas;   /* seats written, ALLOCATED -> SHARED next */
extern vs__debug_hook vs__debug_before_release_cas; /* a release chose its seat, its CAS next */
extern vs__debug_hook vs__debug_before_finish_cas;  /* a share is empty, SHARED -> FREE next */
extern vs__debug_hook vs__debug_after_leave_reclaim; /* peer idx leaving: slots back, entry next */
extern vs__debug_hook vs__debug_before_purge_cas;   /* slot idx idle and FREE, FREE -> PURGING next */
extern vs__debug_hook vs__debug_after_purge_punch;  /* slot idx's pages removed, -> FREE next */
#define VS__DEBUG_POINT(hook, arg) \
    do {                           \
        vs__debug_hook h_ = (hook); \
        if (h_)                    \
            h_(arg);               \
    } while (0)
#else
#define vs__assert(cond) ((void)0)
#define VS__DEBUG_POINT(hook, arg) ((void)0)
#endif

#endif
