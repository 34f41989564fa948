/* The allocator for everything not routed: jemalloc through its non-conflicting entry points
 * (the shim links it as DT_NEEDED, so it is loaded before any malloc call and never
 * dlopened), or glibc's own allocator with VARSLOT_FALLBACK=libc, found with dlvsym. A small
 * static arena serves the few allocations dlvsym itself may make while we look glibc up. */
#include "internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <string.h>

/* jemalloc's extended API; declared here because jemalloc.h also declares malloc & co. */
void *mallocx(size_t size, int flags);
void *rallocx(void *ptr, size_t size, int flags);
void dallocx(void *ptr, int flags);
size_t sallocx(const void *ptr, int flags);
int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);
#define JE_ALIGN(a) ((int)__builtin_ctzl(a)) /* MALLOCX_ALIGN for a power of two */
#define JE_ZERO 0x40                          /* MALLOCX_ZERO */

static struct {
    void *(*malloc)(size_t);
    void *(*calloc)(size_t, size_t);
    void *(*memalign)(size_t, size_t);
    void *(*realloc)(void *, size_t);
    void (*free)(void *);
    size_t (*usable_size)(void *);
} libc;
static _Atomic bool libc_ready;

/* ---- the bootstrap arena: only while glibc's functions are being looked up ---- */

static _Alignas(4096) unsigned char boot_arena[64 << 10];
static _Atomic size_t boot_used;

struct boot_header {
    size_t size;
    size_t pad;
};

static void *bootstrap_alloc(size_t size, size_t align)
{
    if (align < VSP_MIN_ALIGN)
        align = VSP_MIN_ALIGN;
    if (size > sizeof boot_arena || align > 4096) {
        errno = ENOMEM;
        return NULL;
    }
    size_t need = (sizeof(struct boot_header) + size + align - 1 + 15) & ~(size_t)15;
    size_t off = atomic_fetch_add(&boot_used, need);
    if (off + need > sizeof boot_arena) {
        errno = ENOMEM;
        return NULL;
    }
    uintptr_t p = (uintptr_t)boot_arena + off + sizeof(struct boot_header);
    p = (p + align - 1) & ~(uintptr_t)(align - 1);
    ((struct boot_header *)p - 1)->size = size;
    return (void *)p; /* zeroed: the arena is static and never reused */
}

bool vsp_bootstrap_owns(const void *p)
{
    return (uintptr_t)p - (uintptr_t)boot_arena < sizeof boot_arena;
}

/* ---- setup ---- */

static void *lookup(const char *name, const char *version)
{
    void *f = dlvsym(RTLD_NEXT, name, version);
    return f ? f : dlsym(RTLD_NEXT, name);
}

void vsp_backend_init(void)
{
    if (!vsp_cfg.fallback_libc)
        return;
    libc.malloc = lookup("malloc", "GLIBC_2.2.5");
    libc.calloc = lookup("calloc", "GLIBC_2.2.5");
    libc.memalign = lookup("memalign", "GLIBC_2.2.5");
    libc.realloc = lookup("realloc", "GLIBC_2.2.5");
    libc.free = lookup("free", "GLIBC_2.2.5");
    libc.usable_size = lookup("malloc_usable_size", "GLIBC_2.2.5");
    if (!libc.malloc || !libc.calloc || !libc.memalign || !libc.realloc || !libc.free ||
        !libc.usable_size) {
        vsp_write("varslot: VARSLOT_FALLBACK=libc: glibc's allocator not found; using jemalloc\n");
        vsp_cfg.fallback_libc = false;
        return;
    }
    atomic_store_explicit(&libc_ready, true, memory_order_release);
}

static inline bool use_libc(void) { return VSP_UNLIKELY(vsp_cfg.fallback_libc); }

static inline bool libc_usable(void)
{
    return atomic_load_explicit(&libc_ready, memory_order_acquire);
}

/* ---- the allocator interface ---- */

void *vsp_backend_malloc(size_t size)
{
    if (use_libc())
        return libc_usable() ? libc.malloc(size) : bootstrap_alloc(size, VSP_MIN_ALIGN);
    /* jemalloc's 8-byte class would break glibc's 16-byte promise; mallocx(0) is undefined. */
    void *p = mallocx(size < VSP_MIN_ALIGN ? VSP_MIN_ALIGN : size, 0);
    if (VSP_UNLIKELY(!p))
        errno = ENOMEM; /* mallocx does not set it */
    return p;
}

void *vsp_backend_calloc(size_t n, size_t size)
{
    if (use_libc())
        return libc_usable() ? libc.calloc(n, size) : bootstrap_alloc(n * size, VSP_MIN_ALIGN);
    size_t total = n * size; /* the shim checked for overflow */
    void *p = mallocx(total < VSP_MIN_ALIGN ? VSP_MIN_ALIGN : total, JE_ZERO);
    if (!p)
        errno = ENOMEM;
    return p;
}

void *vsp_backend_memalign(size_t align, size_t size)
{
    if (use_libc())
        return libc_usable() ? libc.memalign(align, size) : bootstrap_alloc(size, align);
    void *p = mallocx(size < VSP_MIN_ALIGN ? VSP_MIN_ALIGN : size, JE_ALIGN(align));
    if (!p)
        errno = ENOMEM;
    return p;
}

void *vsp_backend_realloc(void *p, size_t size)
{
    if (VSP_UNLIKELY(vsp_bootstrap_owns(p))) { /* out of the arena into the real allocator */
        size_t old = ((struct boot_header *)p - 1)->size;
        void *q = vsp_backend_malloc(size);
        if (q)
            memcpy(q, p, old < size ? old : size);
        return q;
    }
    if (use_libc())
        return libc.realloc(p, size);
    void *q = rallocx(p, size < VSP_MIN_ALIGN ? VSP_MIN_ALIGN : size, 0);
    if (!q)
        errno = ENOMEM;
    return q;
}

void vsp_backend_free(void *p)
{
    if (VSP_UNLIKELY(vsp_bootstrap_owns(p)))
        return; /* the arena is never reused */
    if (use_libc())
        libc.free(p);
    else
        dallocx(p, 0);
}

size_t vsp_backend_usable_size(void *p)
{
    if (VSP_UNLIKELY(vsp_bootstrap_owns(p)))
        return ((struct boot_header *)p - 1)->size;
    return use_libc() ? libc.usable_size(p) : sallocx(p, 0);
}

/* ---- statistics and tuning, for mallinfo, malloc_trim, malloc_stats, mallopt ---- */

static size_t jemalloc_stat(const char *name)
{
    uint64_t epoch = 1;
    size_t value = 0, len = sizeof value;
    mallctl("epoch", NULL, NULL, &epoch, sizeof epoch); /* refresh the cached statistics */
    return mallctl(name, &value, &len, NULL, 0) == 0 ? value : 0;
}

/* The fallback's share of mallinfo2, keeping glibc's invariants: uordblks + fordblks ==
 * arena, and at least one free chunk (glibc always counts its top chunk). */
struct mallinfo2 vsp_backend_mallinfo(void)
{
    if (use_libc() && libc_usable()) {
        struct mallinfo2 (*mi)(void) = lookup("mallinfo2", "GLIBC_2.33");
        if (mi)
            return mi();
    }
    struct mallinfo2 m = {0};
    size_t in_use = jemalloc_stat("stats.allocated"), mapped = jemalloc_stat("stats.mapped");
    m.arena = mapped > in_use ? mapped : in_use;
    m.uordblks = in_use;
    m.fordblks = m.arena - in_use;
    m.ordblks = 1;
    return m;
}

int vsp_backend_trim(size_t pad)
{
    if (use_libc() && libc_usable()) {
        int (*trim)(size_t) = lookup("malloc_trim", "GLIBC_2.2.5");
        return trim ? trim(pad) : 0;
    }
    /* Purge every arena's unused dirty pages (4096 = MALLCTL_ARENAS_ALL). */
    return mallctl("arena.4096.purge", NULL, NULL, NULL, 0) == 0;
}

int vsp_backend_mallopt(int param, int value)
{
    if (use_libc() && libc_usable()) {
        int (*opt)(int, int) = lookup("mallopt", "GLIBC_2.2.5");
        return opt ? opt(param, value) : 0;
    }
    /* jemalloc tunes itself; answer as glibc 2.36 does: 1, except for a fastbin limit above
     * its maximum (unknown parameters, too, get 1). */
    return param == M_MXFAST ? value >= 0 && value <= 160 : 1;
}
