/* The malloc family as unmodified programs call it, with glibc 2.36's semantics: routed
 * requests go to the segment, the rest (and anything the segment cannot take) to the
 * fallback. free, realloc and malloc_usable_size tell routed blocks by address alone.
 * The C++ operators (cxx.cpp) come here too. */
#include "internal.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

VSP_TLS int vsp_busy;

/* ---- lazy initialisation: inside the first call, since constructors run too late ---- */

enum { INIT_NONE, INIT_RUNNING, INIT_DONE };
static _Atomic int init_state;

static __attribute__((noinline)) void init_slow(void)
{
    int s = INIT_NONE;
    if (atomic_compare_exchange_strong(&init_state, &s, INIT_RUNNING)) {
        vsp_busy++; /* what init allocates (dlvsym, pthread_atfork) goes straight to the fallback */
        vsp_config_load();
        vsp_backend_init();
        if (vsp_cfg.callers.count)
            vsp_route_init();
        vsp_stats_init();
        vsp_segment_map();
        pthread_atfork(vsp_fork_prepare, vsp_fork_parent, vsp_fork_child);
        if (vsp_cfg.verbose)
            vsp_config_print();
        vsp_busy--;
        atomic_store_explicit(&init_state, INIT_DONE, memory_order_release);
        return;
    }
    if (vsp_busy)
        return; /* our own init allocating: the fallback (or bootstrap arena) serves it */
    while (atomic_load_explicit(&init_state, memory_order_acquire) != INIT_DONE)
        sched_yield(); /* another thread is initialising: a few microseconds */
}

void vsp_ensure_init(void)
{
    if (VSP_UNLIKELY(atomic_load_explicit(&init_state, memory_order_acquire) != INIT_DONE))
        init_slow();
}

/* Libraries initialised before us (libstdc++'s exception pool, for one) allocate for the
 * process's whole life; routing them would make every process a peer holding slots. Routing
 * starts when our constructor runs, before the program's own constructors and main. */
static _Atomic bool routing_open;

__attribute__((constructor)) static void vsp_constructor(void)
{
    vsp_ensure_init();
    atomic_store_explicit(&routing_open, true, memory_order_release);
}

/* A cheap first look: can this request be routed at all? The full decision (tag, caller
 * object, re-entry) is out of line, so unrouted calls do not pay for it. */
static inline bool maybe_routed(size_t size)
{
    return VSP_UNLIKELY(vsp_tag_depth || (vsp_cfg.min_size && size >= vsp_cfg.min_size) ||
                        vsp_cfg.callers.count);
}

/* The cheap tests first: inside the shim, or before the constructor, the caller lookup
 * (_dl_find_object) would be thrown away. */
static bool may_route(size_t size, const void *caller, uint32_t *tag)
{
    *tag = 0;
    return !vsp_busy && atomic_load_explicit(&routing_open, memory_order_relaxed) &&
           vsp_wants_route(size, caller, tag);
}

/* errno's address is fixed per thread: keep it, rather than ask libc on every free. */
static VSP_TLS int *errno_location;
static inline int *errno_ptr(void)
{
    int *e = errno_location;
    if (VSP_UNLIKELY(!e))
        e = errno_location = &errno;
    return e;
}

__attribute__((destructor)) static void vsp_destructor(void)
{
    vsp_busy++;
    if (vsp_cfg.stats)
        vsp_stats_print();
    vsp_routed_at_exit();
    vsp_busy--;
}

/* ---- the routed path, guarded against re-entry and errno-neutral when it falls back ---- */

static void *route(size_t size, size_t align, uint32_t tag, bool zero)
{
    int saved = errno;
    vsp_busy++;
    void *p = vsp_routed_alloc(size, align, tag, zero);
    vsp_busy--;
    if (!p)
        errno = saved;
    return p;
}

/* NULL when the request is not to be routed or the segment cannot take it. */
static __attribute__((noinline)) void *try_route(size_t size, size_t align, bool zero,
                                                 const void *caller)
{
    uint32_t tag;
    return may_route(size, caller, &tag) ? route(size, align, tag, zero) : NULL;
}

void *vsp_alloc_from(size_t size, const void *caller);
void *vsp_aligned_from(size_t align, size_t size, const void *caller);

static inline void *alloc_from(size_t size, const void *caller)
{
    vsp_ensure_init();
    if (maybe_routed(size)) {
        void *p = try_route(size, VSP_MIN_ALIGN, false, caller);
        if (p)
            return p;
    }
    return vsp_fallback_malloc(size);
}

static __attribute__((noinline)) void free_routed(void *p)
{
    int saved = errno;
    vsp_busy++;
    vsp_routed_free(p);
    vsp_busy--;
    errno = saved;
}

static inline void free_any(void *p)
{
    if (VSP_UNLIKELY(vsp_in_segment(p))) {
        free_routed(p);
        return;
    }
    int *e = errno_ptr(), saved = *e; /* glibc 2.33+: free never changes errno */
    vsp_fallback_free(p);
    *e = saved;
}

/* For the C++ operators (cxx.cpp), which pass their own caller's address. */
void *vsp_alloc_from(size_t size, const void *caller) { return alloc_from(size, caller); }

/* ---- malloc, free, calloc ---- */

VSP_EXPORT void *malloc(size_t size) { return alloc_from(size, __builtin_return_address(0)); }

VSP_EXPORT void free(void *p)
{
    if (p)
        free_any(p);
}

VSP_EXPORT void cfree(void *p) __attribute__((alias("free"), copy(free)));

VSP_EXPORT void *calloc(size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    vsp_ensure_init();
    if (maybe_routed(total)) {
        void *p = try_route(total, VSP_MIN_ALIGN, true, __builtin_return_address(0));
        if (p)
            return p;
    }
    return vsp_backend_calloc(n, size);
}

/* ---- realloc: in place inside a slot, or move (routed <-> fallback: allocate, copy, free) ---- */

static void *move_block(void *p, size_t old, size_t size, const void *caller)
{
    void *q = alloc_from(size, caller);
    if (!q)
        return NULL; /* p is untouched, as realloc promises */
    memcpy(q, p, old < size ? old : size);
    free_any(p);
    return q;
}

static void *realloc_from(void *p, size_t size, const void *caller)
{
    if (!p)
        return alloc_from(size, caller);
    if (size == 0) { /* glibc: realloc(p, 0) frees p and returns NULL */
        free_any(p);
        return NULL;
    }
    vsp_ensure_init();
    uint32_t tag;
    bool routed_wanted = maybe_routed(size) && may_route(size, caller, &tag);
    if (VSP_UNLIKELY(vsp_in_segment(p))) {
        vsp_busy++;
        bool in_place = routed_wanted && vsp_routed_resize_in_place(p, size);
        size_t old = in_place ? 0 : vsp_routed_size_in_use(p);
        vsp_busy--;
        return in_place ? p : move_block(p, old, size, caller);
    }
    if (VSP_UNLIKELY(routed_wanted) && !vsp_bootstrap_owns(p)) {
        void *q = route(size, VSP_MIN_ALIGN, tag, false);
        if (q) {
            size_t old = vsp_backend_usable_size(p);
            memcpy(q, p, old < size ? old : size);
            vsp_backend_free(p);
            return q;
        }
    }
    return vsp_backend_realloc(p, size);
}

VSP_EXPORT void *realloc(void *p, size_t size)
{
    return realloc_from(p, size, __builtin_return_address(0));
}

VSP_EXPORT void *reallocarray(void *p, size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc_from(p, total, __builtin_return_address(0));
}

/* ---- aligned allocation, with glibc 2.36's rules ---- */

static void *aligned_from(size_t align, size_t size, const void *caller)
{
    if (align <= VSP_MIN_ALIGN)
        return alloc_from(size, caller);
    if (align > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return NULL;
    }
    if (align & (align - 1)) { /* glibc rounds a non-power of two up, from 32 */
        size_t a = 2 * VSP_MIN_ALIGN;
        while (a < align)
            a <<= 1;
        align = a;
    }
    vsp_ensure_init();
    if (maybe_routed(size)) {
        void *p = try_route(size, align, false, caller);
        if (p)
            return p;
    }
    return vsp_backend_memalign(align, size);
}

void *vsp_aligned_from(size_t align, size_t size, const void *caller)
{
    return aligned_from(align, size, caller);
}

VSP_EXPORT void *memalign(size_t align, size_t size)
{
    return aligned_from(align, size, __builtin_return_address(0));
}

/* glibc 2.36's aligned_alloc is memalign (2.38 made it reject non-powers of two). */
VSP_EXPORT void *aligned_alloc(size_t align, size_t size)
{
    return aligned_from(align, size, __builtin_return_address(0));
}

VSP_EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
    if (align == 0 || align % sizeof(void *) || ((align / sizeof(void *)) & (align / sizeof(void *) - 1)))
        return EINVAL; /* *out untouched */
    int saved = errno; /* the result is the return value; errno stays as it was */
    void *p = aligned_from(align, size, __builtin_return_address(0));
    errno = saved;
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

VSP_EXPORT void *valloc(size_t size)
{
    return aligned_from((size_t)sysconf(_SC_PAGESIZE), size, __builtin_return_address(0));
}

VSP_EXPORT void *pvalloc(size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), rounded;
    if (__builtin_add_overflow(size, page - 1, &rounded)) {
        errno = ENOMEM;
        return NULL;
    }
    rounded &= ~(page - 1);
    return aligned_from(page, rounded ? rounded : page, __builtin_return_address(0));
}

/* ---- sizes and statistics ---- */

VSP_EXPORT size_t malloc_usable_size(void *p)
{
    if (!p)
        return 0;
    if (vsp_in_segment(p))
        return vsp_routed_claim_usable(p);
    vsp_ensure_init();
    return vsp_backend_usable_size(p);
}

/* Routed blocks count as in use, inside the arena: they are this process's memory too. */
VSP_EXPORT struct mallinfo2 mallinfo2(void)
{
    vsp_ensure_init();
    struct mallinfo2 m = vsp_backend_mallinfo();
    size_t routed = atomic_load_explicit(&vsp_stats.live_bytes, memory_order_relaxed);
    m.arena += routed;
    m.uordblks += routed;
    return m;
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
VSP_EXPORT struct mallinfo mallinfo(void)
{
    struct mallinfo2 m2 = mallinfo2();
    struct mallinfo m; /* int fields, as glibc's: they wrap past 2 GiB */
    m.arena = (int)m2.arena;
    m.ordblks = (int)m2.ordblks;
    m.smblks = (int)m2.smblks;
    m.hblks = (int)m2.hblks;
    m.hblkhd = (int)m2.hblkhd;
    m.usmblks = (int)m2.usmblks;
    m.fsmblks = (int)m2.fsmblks;
    m.uordblks = (int)m2.uordblks;
    m.fordblks = (int)m2.fordblks;
    m.keepcost = (int)m2.keepcost;
    return m;
}
#pragma GCC diagnostic pop

VSP_EXPORT int malloc_trim(size_t pad)
{
    vsp_ensure_init();
    return vsp_backend_trim(pad);
}

VSP_EXPORT int mallopt(int param, int value)
{
    vsp_ensure_init();
    return vsp_backend_mallopt(param, value);
}

VSP_EXPORT void malloc_stats(void)
{
    struct mallinfo2 m = mallinfo2();
    char line[512], *p = line, *end = line + sizeof line;
    p = vsp_append(p, end, "Total (incl. mmap):\nsystem bytes     = ");
    p = vsp_fmt_u64(p, end, m.arena + m.hblkhd);
    p = vsp_append(p, end, "\nin use bytes     = ");
    p = vsp_fmt_u64(p, end, m.uordblks + m.hblkhd);
    p = vsp_append(p, end, "\nvarslot routed blocks = ");
    p = vsp_fmt_u64(p, end, atomic_load_explicit(&vsp_stats.live_slots, memory_order_relaxed));
    p = vsp_append(p, end, ", bytes = ");
    p = vsp_fmt_u64(p, end, atomic_load_explicit(&vsp_stats.live_bytes, memory_order_relaxed));
    vsp_append(p, end, "\n");
    vsp_write(line);
}

/* glibc's internal names, which some programs and libraries call directly. */
VSP_EXPORT void *__libc_malloc(size_t) __attribute__((alias("malloc"), copy(malloc)));
VSP_EXPORT void __libc_free(void *) __attribute__((alias("free"), copy(free)));
VSP_EXPORT void *__libc_calloc(size_t, size_t) __attribute__((alias("calloc"), copy(calloc)));
VSP_EXPORT void *__libc_realloc(void *, size_t) __attribute__((alias("realloc"), copy(realloc)));
VSP_EXPORT void *__libc_memalign(size_t, size_t) __attribute__((alias("memalign"), copy(memalign)));
VSP_EXPORT void *__libc_valloc(size_t) __attribute__((alias("valloc"), copy(valloc)));
VSP_EXPORT void *__libc_pvalloc(size_t) __attribute__((alias("pvalloc"), copy(pvalloc)));
