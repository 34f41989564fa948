/* The allocator for everything not routed: jemalloc through its non-conflicting entry points
 * (the shim links it as DT_NEEDED, so it is loaded before any malloc call and never
 * dlopened), or glibc's own allocator with VARSLOT_FALLBACK=libc, found with dlvsym. A small
 * static arena serves the few allocations dlvsym itself may make while we look glibc up. */
#include "internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <elf.h>
#include <link.h>
#include <malloc.h>
#include <string.h>

/* The rest of jemalloc's extended API (mallocx and dallocx are in internal.h). */
VSP_EXPORT void *rallocx(void *ptr, size_t size, int flags);
VSP_EXPORT size_t sallocx(const void *ptr, int flags);
VSP_EXPORT int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);
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
bool vsp_bootstrap_used;

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
    vsp_bootstrap_used = true;
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

/* ---- jemalloc's fast paths ----
 * mallocx and dallocx, jemalloc's non-conflicting names, take its general path: about 90
 * instructions each where its malloc and free take about 30 (callgrind, jemalloc 5.3). Those
 * two cannot be called by name (the names are ours) and dlsym needs a dlopen handle, so we
 * read them from jemalloc's own dynamic symbol table, found through _dl_find_object on
 * mallocx: no dlopen, no allocation, and jemalloc stays the DT_NEEDED copy. */

static void *je_mallocx_fallback(size_t size)
{
    void *p = mallocx(size, 0); /* size >= 16 here: mallocx(0) is undefined */
    if (!p)
        errno = ENOMEM; /* mallocx does not set it */
    return p;
}

static void je_dallocx_fallback(void *p) { dallocx(p, 0); }

struct vsp_jemalloc vsp_je = {je_mallocx_fallback, je_dallocx_fallback};

struct elf_symbols {
    uintptr_t base;
    const ElfW(Sym) *symtab;
    const char *strtab;
    const uint32_t *gnu_hash;
};

/* A defined function of the object, by the GNU hash table every Debian object carries. */
static void *elf_lookup(const struct elf_symbols *e, const char *name)
{
    uint32_t h = 5381;
    for (const char *c = name; *c; c++)
        h = h * 33 + (uint8_t)*c;
    const uint32_t *gh = e->gnu_hash;
    uint32_t nbuckets = gh[0], symoffset = gh[1], bloom_words = gh[2];
    const uint32_t *buckets = (const uint32_t *)((const ElfW(Addr) *)(gh + 4) + bloom_words);
    const uint32_t *chain = buckets + nbuckets;
    uint32_t i = buckets[h % nbuckets];
    if (i < symoffset)
        return NULL;
    for (;; i++) {
        uint32_t h2 = chain[i - symoffset];
        const ElfW(Sym) *sym = &e->symtab[i];
        if ((h | 1) == (h2 | 1) && sym->st_shndx != SHN_UNDEF &&
            ELF64_ST_TYPE(sym->st_info) == STT_FUNC && !strcmp(e->strtab + sym->st_name, name))
            return (void *)(e->base + sym->st_value);
        if (h2 & 1)
            return NULL;
    }
}

static void find_jemalloc_fast_paths(void)
{
    struct dl_find_object je;
    if (_dl_find_object((void *)mallocx, &je) != 0)
        return;
    struct elf_symbols e = {je.dlfo_link_map->l_addr, NULL, NULL, NULL};
    for (const ElfW(Dyn) *d = je.dlfo_link_map->l_ld; d->d_tag != DT_NULL; d++) {
        if (d->d_tag == DT_SYMTAB)
            e.symtab = (const ElfW(Sym) *)d->d_un.d_ptr; /* ld.so relocated these in place */
        else if (d->d_tag == DT_STRTAB)
            e.strtab = (const char *)d->d_un.d_ptr;
        else if (d->d_tag == DT_GNU_HASH)
            e.gnu_hash = (const uint32_t *)d->d_un.d_ptr;
    }
    if (!e.symtab || !e.strtab || !e.gnu_hash)
        return;
    void *m = elf_lookup(&e, "malloc"), *f = elf_lookup(&e, "free");
    struct dl_find_object owner;
    /* Both must lie in jemalloc, or neither is used. */
    if (m && f && _dl_find_object(m, &owner) == 0 && owner.dlfo_link_map == je.dlfo_link_map &&
        _dl_find_object(f, &owner) == 0 && owner.dlfo_link_map == je.dlfo_link_map) {
        vsp_je.malloc = (void *(*)(size_t))m;
        vsp_je.free = (void (*)(void *))f;
    }
}

/* ---- setup ---- */

static void *lookup(const char *name, const char *version)
{
    void *f = dlvsym(RTLD_NEXT, name, version);
    return f ? f : dlsym(RTLD_NEXT, name);
}

void vsp_backend_init(void)
{
    if (!vsp_cfg.fallback_libc) {
        find_jemalloc_fast_paths();
        return;
    }
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
    return vsp_je.malloc(size < VSP_MIN_ALIGN ? VSP_MIN_ALIGN : size);
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
        vsp_je.free(p);
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
