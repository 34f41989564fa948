/* Large-block churn, for the preload shim's benchmark (scripts/bench-preload).
 *
 * For each block size it loops: malloc(size), write one byte every 4096 bytes (every page of
 * the block), free. After a warm-up it measures the time per iteration and the minor page
 * faults per iteration (getrusage(RUSAGE_SELF).ru_minflt around the timed loop).
 *
 * The same binary runs under each allocator being compared: plain (glibc malloc, with its
 * default dynamic mmap threshold or with MALLOC_MMAP_THRESHOLD_ fixing it), with jemalloc
 * preloaded, and with libvarslot-preload.so preloaded. It reports which allocator it found
 * and, under the shim, how many of the timed blocks were routed into the segment, so a
 * silent fallback can never pass for a shim measurement.
 *
 * Two more modes take the loop apart:
 *   --floor     the same page writes into one block allocated before the loop: what the
 *               loop costs when allocating and freeing cost nothing and fault nothing;
 *   --no-touch  malloc + free only: the allocator's own cost.
 *
 * Timing: the clock is read every CHUNK iterations. ns_per_iter is the median over the
 * chunks (robust against the odd preemption on a shared machine), mean_ns_per_iter the
 * whole timed loop's wall time divided by its iterations.
 *
 * Output, one line per size, key=value separated by spaces (nothing else goes to stdout):
 *   result mode=alloc|floor|notouch size=N iters=N ns_per_iter=F mean_ns_per_iter=F
 *          minflt_per_iter=F minflt=N majflt=N allocator=glibc|jemalloc|varslot-preload
 *          routed=N/N glibc_mmapped=0|1|-
 * glibc_mmapped (glibc only): whether a block of this size was served by mmap at the end.
 * Exit status: 0, or 1 when an allocation failed, 2 for bad arguments.
 *
 * Usage: bench_preload_alloc [--floor|--no-touch] [--min-ms MS] [--warmup-ms MS] SIZE...
 *   SIZE         bytes, with an optional K or M suffix (default: 256K 1M)
 *   --min-ms     the timed loop runs at least this long (default 300)
 *   --warmup-ms  untimed iterations first (default 100): first-touch faults, caches, the
 *                allocator's steady state (glibc raising its dynamic threshold, jemalloc's
 *                extent cache, the shim opening its segment and caching a slot)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define PAGE 4096
#define CHUNK 16          /* iterations between clock reads */
#define MAX_CHUNKS 200000 /* the timed loop also ends when this many chunks are recorded */

enum mode { ALLOC, FLOOR, NOTOUCH };
static enum mode mode = ALLOC;
static const char *const mode_name[] = {"alloc", "floor", "notouch"};

static uint32_t chunk_ns[MAX_CHUNKS]; /* static: the timed loop itself allocates nothing else */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The block escapes: the compiler may not drop the stores or the malloc/free pair. */
static inline void escape(void *p) { __asm__ volatile("" : : "g"(p) : "memory"); }

typedef int (*owns_fn)(const void *);
static owns_fn vs_owns_p; /* exported by the shim only */

static const char *allocator_name(void)
{
    if (vs_owns_p)
        return "varslot-preload";
    if (dlsym(RTLD_DEFAULT, "mallocx")) /* jemalloc's own API, exported by libjemalloc */
        return "jemalloc";
    return "glibc";
}

static inline void touch(char *p, size_t size, long i)
{
    for (size_t off = 0; off < size; off += PAGE)
        p[off] = (char)i;
    escape(p);
}

/* Runs CHUNK iterations; counts the blocks the shim routed into its segment. */
static int churn(size_t size, char *fixed, long *routed)
{
    if (mode == FLOOR) {
        for (long i = 0; i < CHUNK; i++)
            touch(fixed, size, i);
        return 0;
    }
    for (long i = 0; i < CHUNK; i++) {
        char *p = malloc(size);
        if (!p)
            return -1;
        if (mode == ALLOC)
            touch(p, size, i);
        else
            escape(p);
        if (vs_owns_p && vs_owns_p(p))
            (*routed)++;
        free(p);
    }
    return 0;
}

/* Under glibc: is a block of this size served by mmap (its mmap path) right now? */
static int glibc_mmapped(size_t size)
{
    struct mallinfo2 before = mallinfo2();
    void *p = malloc(size);
    if (!p)
        return -1;
    escape(p);
    struct mallinfo2 during = mallinfo2();
    free(p);
    return during.hblks > before.hblks;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static int measure(size_t size, double min_ms, double warmup_ms)
{
    long routed = 0, iters = 0, nchunks = 0;
    char *fixed = NULL;
    if (mode == FLOOR && !(fixed = malloc(size)))
        goto oom;

    uint64_t t0 = now_ns(), until = t0 + (uint64_t)(warmup_ms * 1e6);
    do {
        if (churn(size, fixed, &routed) != 0)
            goto oom;
    } while (now_ns() < until);

    routed = 0;
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    t0 = now_ns();
    until = t0 + (uint64_t)(min_ms * 1e6);
    uint64_t prev = t0, t;
    do {
        if (churn(size, fixed, &routed) != 0)
            goto oom;
        t = now_ns();
        uint64_t d = t - prev;
        chunk_ns[nchunks++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
        prev = t;
        iters += CHUNK;
    } while (t < until && nchunks < MAX_CHUNKS);
    getrusage(RUSAGE_SELF, &r1);

    qsort(chunk_ns, (size_t)nchunks, sizeof *chunk_ns, cmp_u32);
    double med = nchunks % 2 ? chunk_ns[nchunks / 2]
                             : ((double)chunk_ns[nchunks / 2 - 1] + chunk_ns[nchunks / 2]) / 2;
    const char *who = allocator_name();
    char mm[8] = "-";
    if (!strcmp(who, "glibc"))
        snprintf(mm, sizeof mm, "%d", glibc_mmapped(size));
    long flt = r1.ru_minflt - r0.ru_minflt;
    printf("result mode=%s size=%zu iters=%ld ns_per_iter=%.1f mean_ns_per_iter=%.1f "
           "minflt_per_iter=%.4f minflt=%ld majflt=%ld allocator=%s routed=%ld/%ld "
           "glibc_mmapped=%s\n",
           mode_name[mode], size, iters, med / CHUNK, (double)(t - t0) / (double)iters,
           (double)flt / (double)iters, flt, r1.ru_majflt - r0.ru_majflt, who, routed,
           mode == FLOOR ? 0 : iters, mm);
    fflush(stdout);
    free(fixed);
    return 0;
oom:
    fprintf(stderr, "bench_preload_alloc: malloc(%zu) failed: %s\n", size, strerror(errno));
    return 1;
}

static int parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    if (*end == 'K' || *end == 'k')
        v <<= 10, end++;
    else if (*end == 'M' || *end == 'm')
        v <<= 20, end++;
    if (*end || v == 0 || v > (1ull << 32))
        return -1;
    *out = (size_t)v;
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_preload_alloc [--floor|--no-touch] [--min-ms MS] [--warmup-ms MS] "
                    "SIZE...\n");
    return 2;
}

int main(int argc, char **argv)
{
    double min_ms = 300, warmup_ms = 100;
    size_t sizes[16];
    int nsizes = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--floor")) {
            mode = FLOOR;
        } else if (!strcmp(argv[i], "--no-touch")) {
            mode = NOTOUCH;
        } else if ((!strcmp(argv[i], "--min-ms") || !strcmp(argv[i], "--warmup-ms")) && i + 1 < argc) {
            char *end;
            double v = strtod(argv[i + 1], &end);
            if (*end || end == argv[i + 1] || v < 0 || v > 600000)
                return usage();
            *(argv[i][2] == 'm' ? &min_ms : &warmup_ms) = v;
            i++;
        } else if (argv[i][0] == '-' || nsizes == 16 || parse_size(argv[i], &sizes[nsizes++]) != 0) {
            return usage();
        }
    }
    if (!nsizes) {
        sizes[nsizes++] = 256u << 10;
        sizes[nsizes++] = 1u << 20;
    }
    vs_owns_p = (owns_fn)dlsym(RTLD_DEFAULT, "vs_owns");
    for (int i = 0; i < nsizes; i++)
        if (measure(sizes[i], min_ms, warmup_ms) != 0)
            return 1;
    return 0;
}
