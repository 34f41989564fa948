/* Internal assertions, as mimalloc's mi_assert_internal: the protocol's invariants, checked
 * where they must hold. They test values this process computed or just wrote, never what it
 * read from shared memory (a scribbler may put anything there: that is an error to report,
 * not a broken invariant). Compiled in with VS_DEBUG (the test and sanitizer builds), out of
 * the release library. */
#ifndef VARSLOT_DEBUG_H
#define VARSLOT_DEBUG_H

#ifdef VS_DEBUG
__attribute__((noreturn, cold)) void vs__assert_fail(const char *cond, const char *file, int line,
                                                     const char *func);
#define vs__assert(cond) \
    (__builtin_expect(!!(cond), 1) ? (void)0 : vs__assert_fail(#cond, __FILE__, __LINE__, __func__))
#else
#define vs__assert(cond) ((void)0)
#endif

#endif
