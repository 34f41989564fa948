/* Which prefetch this CPU has (see prefetch.h). */
#include "prefetch.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

bool vs__cpu_prefetchw;

/* Before main and before any pool: a program that allocates earlier (the preload shim's
 * first malloc) only goes without the hint until then. */
__attribute__((constructor)) static void vs__detect_prefetchw(void)
{
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    vs__cpu_prefetchw = __get_cpuid(0x80000001u, &a, &b, &c, &d) && (c & bit_PRFCHW);
#endif
}
