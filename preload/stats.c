/* What the shim did, for VARSLOT_STATS=1: one line on stderr at exit. Counters move only on
 * routed operations and fallbacks (large, rare), so relaxed atomics cost nothing visible. */
#include "internal.h"

#include <fcntl.h>
#include <unistd.h>

struct vsp_stats vsp_stats;
/* A private copy of stderr: sort, xz and friends close fd 2 in their own exit handlers,
 * which run before our line is written. High, so it stays out of programs' way. */
static int stats_fd = STDERR_FILENO;

void vsp_stats_init(void)
{
    if (!vsp_cfg.stats)
        return;
    int fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 900);
    if (fd >= 0)
        stats_fd = fd;
}

void vsp_stats_routed(size_t bytes)
{
    atomic_fetch_add_explicit(&vsp_stats.routed, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&vsp_stats.routed_bytes, bytes, memory_order_relaxed);
    atomic_fetch_add_explicit(&vsp_stats.live_bytes, bytes, memory_order_relaxed);
    uint64_t live = atomic_fetch_add_explicit(&vsp_stats.live_slots, 1, memory_order_relaxed) + 1;
    uint64_t peak = atomic_load_explicit(&vsp_stats.peak_slots, memory_order_relaxed);
    while (live > peak && !atomic_compare_exchange_weak_explicit(&vsp_stats.peak_slots, &peak, live,
                                                                 memory_order_relaxed,
                                                                 memory_order_relaxed)) {
    }
}

/* Live counts are this process's blocks: those routed or adopted here. A block another
 * process allocated can be freed here too (ours = false): it was never counted live. */
void vsp_stats_freed(size_t bytes, bool ours)
{
    atomic_fetch_add_explicit(&vsp_stats.freed, 1, memory_order_relaxed);
    if (!ours)
        return;
    atomic_fetch_sub_explicit(&vsp_stats.live_slots, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&vsp_stats.live_bytes, bytes, memory_order_relaxed);
}

void vsp_stats_adopted(size_t bytes)
{
    atomic_fetch_add_explicit(&vsp_stats.live_slots, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&vsp_stats.live_bytes, bytes, memory_order_relaxed);
}

void vsp_stats_resized(size_t old_bytes, size_t new_bytes)
{
    atomic_fetch_add_explicit(&vsp_stats.live_bytes, new_bytes - old_bytes, memory_order_relaxed);
}

void vsp_stats_print(void)
{
    char line[512], *p = line, *end = line + sizeof line;
    static const struct {
        const char *name;
        _Atomic uint64_t *value;
    } fields[] = {
        {" routed=", &vsp_stats.routed},   {" bytes=", &vsp_stats.routed_bytes},
        {" fallback=", &vsp_stats.fallback}, {" peak_slots=", &vsp_stats.peak_slots},
        {" freed=", &vsp_stats.freed},
    };
    p = vsp_append(p, end, "varslot: pid=");
    p = vsp_fmt_u64(p, end, (uint64_t)getpid());
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        p = vsp_append(p, end, fields[i].name);
        p = vsp_fmt_u64(p, end, atomic_load_explicit(fields[i].value, memory_order_relaxed));
    }
    p = vsp_append(p, end, " segment=");
    p = vsp_append(p, end, vsp_cfg.segment);
    vsp_write_line(stats_fd, line, p, end);
}
