/* Asking for a slot's first data line before the CAS that makes the slot ours.
 *
 * In a hand-off, the slot's lines were last written by the other process's core. A CAS is
 * a full barrier on x86: the miss on the slot word and the miss on the payload that follows
 * it would each wait for the one before, one cache line crossing after another. Asked for
 * first, the payload's line crosses while the CAS waits for the slot word's (section 6 of
 * the core benchmark). A prefetch is only a hint: it never faults, and it changes no state
 * any other peer or the protocol sees. */
#ifndef VARSLOT_PREFETCH_H
#define VARSLOT_PREFETCH_H

#include <stdbool.h>

/* Whether this CPU has PREFETCHW (CPUID 0x80000001 ECX bit 8); set once at load. Older Intel
 * CPUs lack it, and the opcode is not promised to be a no-op there. */
extern bool vs__cpu_prefetchw;

/* The line will be written: fetch it exclusive, so the writes that follow do not stall the
 * writer's next locked instruction (its store buffer would wait for the line). */
static inline void vs__prefetch_for_write(const void *p)
{
#if defined(__x86_64__) || defined(__i386__)
    if (__builtin_expect(vs__cpu_prefetchw, 1))
        __asm__ volatile("prefetchw %0" : : "m"(*(const char *)p));
#else
    __builtin_prefetch(p, 1, 3);
#endif
}

/* The line will be read. */
static inline void vs__prefetch_for_read(const void *p)
{
    __builtin_prefetch(p, 0, 3);
}

#endif
