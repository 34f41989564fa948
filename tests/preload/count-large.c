/* An LD_PRELOAD library that goes in front of libvarslot-preload.so (tests/preload/
 * test-real-programs.sh): it counts the program's large allocations and, by their address
 * (vs_owns), how many the shim put into the segment. It takes nothing from the shim's own
 * statistics: it sees every call the program makes to the malloc family and to operator new,
 * and forwards it to the shim.
 *
 * It links against the shim (DT_NEEDED), so its constructor runs after the shim's, when the
 * shim has begun to route: only calls from then on are counted. A fork child starts from 0,
 * as the shim's statistics do. At exit, one line on stderr:
 *   vscount: pid=P large=N fit=F fit_routed=R
 * large: allocations of at least VSTEST_COUNT_MIN bytes that returned a block; fit: those a
 * class of the segment can take (at most VSTEST_COUNT_FIT bytes, aligned to at most a page);
 * fit_routed: those of them inside the segment. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* The shim's: it exports the __libc_ aliases too, and comes before libc in the search order. */
int vs_owns(const void *ptr);
void *__libc_malloc(size_t);
void *__libc_calloc(size_t, size_t);
void *__libc_realloc(void *, size_t);
void *__libc_memalign(size_t, size_t);
void *__libc_valloc(size_t);
void *__libc_pvalloc(size_t);

static bool counting;
static size_t min_bytes = SIZE_MAX, fit_bytes;
static uint64_t large, fit, fit_routed;
static int out_fd = -1;

static void count(const void *p, size_t size, size_t align)
{
    if (!counting || !p || size < min_bytes)
        return;
    __atomic_fetch_add(&large, 1, __ATOMIC_RELAXED);
    if (size > fit_bytes || align > 4096)
        return;
    __atomic_fetch_add(&fit, 1, __ATOMIC_RELAXED);
    if (vs_owns(p))
        __atomic_fetch_add(&fit_routed, 1, __ATOMIC_RELAXED);
}

static void child_after_fork(void) { large = fit = fit_routed = 0; }

static size_t env_bytes(const char *var, size_t dflt)
{
    const char *v = getenv(var);
    return v && *v ? (size_t)strtoull(v, NULL, 10) : dflt;
}

__attribute__((constructor)) static void start(void)
{
    min_bytes = env_bytes("VSTEST_COUNT_MIN", 64 << 10);
    fit_bytes = env_bytes("VSTEST_COUNT_FIT", 16 << 20);
    out_fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 910); /* programs close stderr before exit */
    pthread_atfork(NULL, NULL, child_after_fork);
    counting = true;
}

__attribute__((destructor)) static void report(void)
{
    if (out_fd < 0)
        return;
    char line[160];
    int n = snprintf(line, sizeof line, "vscount: pid=%d large=%llu fit=%llu fit_routed=%llu\n",
                     (int)getpid(), (unsigned long long)large, (unsigned long long)fit,
                     (unsigned long long)fit_routed);
    (void)!write(out_fd, line, (size_t)n);
}

/* The shim's entry points without a __libc_ alias, found once (dlsym's own allocations go
 * through malloc, which needs none of them). */
static void *next(void **slot, const char *name)
{
    void *f = __atomic_load_n(slot, __ATOMIC_RELAXED);
    if (!f) {
        f = dlsym(RTLD_NEXT, name);
        if (!f)
            abort();
        __atomic_store_n(slot, f, __ATOMIC_RELAXED);
    }
    return f;
}
typedef void *(*size_fn)(size_t);
typedef void *(*size_ptr_fn)(size_t, const void *);
typedef void *(*size_size_fn)(size_t, size_t);
typedef void *(*size_size_ptr_fn)(size_t, size_t, const void *);
typedef void *(*realloc_array_fn)(void *, size_t, size_t);
typedef int (*posix_memalign_fn)(void **, size_t, size_t);
#define NEXT(type, name)                                                                      \
    static void *slot_##name;                                                                  \
    type next_##name = (type)next(&slot_##name, #name)

void *malloc(size_t n)
{
    void *p = __libc_malloc(n);
    count(p, n, 16);
    return p;
}

void *calloc(size_t n, size_t size)
{
    void *p = __libc_calloc(n, size);
    count(p, n * size, 16); /* an overflowing product returned NULL */
    return p;
}

void *realloc(void *old, size_t n)
{
    void *p = __libc_realloc(old, n);
    count(p, n, 16);
    return p;
}

void *reallocarray(void *old, size_t n, size_t size)
{
    NEXT(realloc_array_fn, reallocarray);
    void *p = next_reallocarray(old, n, size);
    count(p, n * size, 16);
    return p;
}

void *memalign(size_t align, size_t n)
{
    void *p = __libc_memalign(align, n);
    count(p, n, align);
    return p;
}

void *aligned_alloc(size_t align, size_t n)
{
    NEXT(size_size_fn, aligned_alloc);
    void *p = next_aligned_alloc(align, n);
    count(p, n, align);
    return p;
}

int posix_memalign(void **out, size_t align, size_t n)
{
    NEXT(posix_memalign_fn, posix_memalign);
    int rc = next_posix_memalign(out, align, n);
    if (rc == 0)
        count(*out, n, align);
    return rc;
}

void *valloc(size_t n)
{
    void *p = __libc_valloc(n);
    count(p, n, 4096);
    return p;
}

void *pvalloc(size_t n)
{
    void *p = __libc_pvalloc(n);
    count(p, (n + 4095) & ~(size_t)4095, 4096);
    return p;
}

/* operator new, all eight (mangled names; C++ exceptions pass through, -fexceptions) */
#define NEW(name)                                                                             \
    void *name(size_t n)                                                                       \
    {                                                                                          \
        NEXT(size_fn, name);                                                                 \
        void *p = next_##name(n);                                                              \
        count(p, n, 16);                                                                       \
        return p;                                                                              \
    }
#define NEW_NOTHROW(name)                                                                     \
    void *name(size_t n, const void *nothrow)                                                  \
    {                                                                                          \
        NEXT(size_ptr_fn, name);                                                               \
        void *p = next_##name(n, nothrow);                                                     \
        count(p, n, 16);                                                                       \
        return p;                                                                              \
    }
#define NEW_ALIGNED(name)                                                                     \
    void *name(size_t n, size_t align)                                                         \
    {                                                                                          \
        NEXT(size_size_fn, name);                                                              \
        void *p = next_##name(n, align);                                                       \
        count(p, n, align);                                                                    \
        return p;                                                                              \
    }
#define NEW_ALIGNED_NOTHROW(name)                                                             \
    void *name(size_t n, size_t align, const void *nothrow)                                    \
    {                                                                                          \
        NEXT(size_size_ptr_fn, name);                                                          \
        void *p = next_##name(n, align, nothrow);                                              \
        count(p, n, align);                                                                    \
        return p;                                                                              \
    }
NEW(_Znwm)
NEW(_Znam)
NEW_NOTHROW(_ZnwmRKSt9nothrow_t)
NEW_NOTHROW(_ZnamRKSt9nothrow_t)
NEW_ALIGNED(_ZnwmSt11align_val_t)
NEW_ALIGNED(_ZnamSt11align_val_t)
NEW_ALIGNED_NOTHROW(_ZnwmSt11align_val_tRKSt9nothrow_t)
NEW_ALIGNED_NOTHROW(_ZnamSt11align_val_tRKSt9nothrow_t)
