/* Human-readable text for every vs_status, and the clocks the core reads. */
#include "segment.h"
#include "slot_cache.h"

#include <time.h>

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
    case VS_ESTALE: return "stale handle: the slot has been freed or reused";
    case VS_ENOTJOINED: return "this process has not joined the segment as a peer";
    case VS_EBUSY: return "segment is still being created by another process";
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
