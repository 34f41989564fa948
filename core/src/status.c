/* Human-readable text for every vs_status, the clocks the core reads, and the debug tier's
 * assertion failure. */
#include "debug.h"
#include "segment.h"
#include "slot_cache.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *vs_strerror(int status)
{
    switch (status) {
    case VS_OK: return "success";
    case VS_EINVAL: return "invalid argument or configuration";
    case VS_ENOSPC: return "not enough space (region too small for the pool, or filesystem full)";
    case VS_EDOUBLEFREE: return "slot is not allocated at that generation (double or stale free)";
    case VS_ECORRUPT: return "segment is corrupt, truncated or not a varslot segment";
    case VS_EVERSION: return "segment was written by an incompatible varslot version";
    case VS_ENOENT: return "no such segment";
    case VS_EEXIST: return "segment already exists";
    case VS_EPERM: return "not permitted (another user's segment, a symlink, or not the slot's owner)";
    case VS_EFULL: return "no free peer entry in the segment";
    case VS_ESYS: return "system call failed (see errno)";
    case VS_ESTALE: return "stale: the slot was freed or reused, or the segment removed since it was opened";
    case VS_ENOTJOINED: return "this process has not joined the segment as a peer";
    case VS_EBUSY: return "segment is busy: still being created, or its name being removed";
    default: return "unknown varslot status";
    }
}

uint64_t vs__now_ns(int clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static VS__TLS const char *vs__detail;

void vs__set_detail(const char *why) { vs__detail = why; }

const char *vs_last_detail(void) { return vs__detail ? vs__detail : "no detail recorded"; }

#ifdef VS_DEBUG
vs__debug_hook vs__debug_before_claim_cas;
vs__debug_hook vs__debug_before_reap_cas;
vs__debug_hook vs__debug_before_publish;
vs__debug_hook vs__debug_before_share_cas;
vs__debug_hook vs__debug_before_release_cas;
vs__debug_hook vs__debug_before_finish_cas;
vs__debug_hook vs__debug_after_leave_reclaim;
vs__debug_hook vs__debug_before_purge_cas;
vs__debug_hook vs__debug_after_purge_punch;

void vs__assert_fail(const char *cond, const char *file, int line, const char *func)
{
    /* No stdio: this may run inside malloc (a malloc replacement built on the core). */
    char num[12], *p = num + sizeof num;
    *--p = '\0';
    do
        *--p = (char)('0' + line % 10);
    while (line /= 10);
    const char *parts[] = {"varslot: internal assertion failed: ", cond, " (", func, ", ", file, ":", p, ")\n"};
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
        (void)!write(2, parts[i], strlen(parts[i]));
    abort();
}
#endif
