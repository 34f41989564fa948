// The helpers the semantics suite shares (semantics.h): byte patterns, run-time lookups of
// the entry points the headers do not declare, the sizes and allocators the tests walk.
#include "semantics.h"

namespace semantics {

void fill(void *p, size_t n, uint32_t seed)
{
    unsigned char *b = static_cast<unsigned char *>(p);
    for (size_t i = 0; i < n; i++)
        b[i] = pat(i, seed);
    barrier();
}
size_t first_mismatch(const void *p, size_t n, uint32_t seed)
{
    barrier();
    const unsigned char *b = static_cast<const unsigned char *>(p);
    for (size_t i = 0; i < n; i++)
        if (b[i] != pat(i, seed))
            return i;
    return kNoMismatch;
}
size_t first_nonzero(const void *p, size_t n)
{
    barrier();
    const unsigned char *b = static_cast<const unsigned char *>(p);
    for (size_t i = 0; i < n; i++)
        if (b[i] != 0)
            return i;
    return kNoMismatch;
}


void write_whole_usable(void *p, uint32_t seed)
{
    size_t u = malloc_usable_size(p);
    memset(p, 0x5a, u);
    fill(p, u, seed);
    EXPECT_EQ(first_mismatch(p, u, seed), kNoMismatch) << "usable size " << u;
}

// cfree is a compat-only symbol in glibc 2.36 (compat_symbol (libc, __libc_free, cfree,
// GLIBC_2_0)): it has no default version, so plain dlsym does not find it in glibc, only
// dlvsym with the architecture's base version. The shim defines it unversioned, so there
// plain dlsym finds the shim's.
free_fn lookup_cfree()
{
    if (free_fn f = lookup<free_fn>("cfree"))
        return f;
    static const char *const versions[] = {"GLIBC_2.2.5", "GLIBC_2.0",  "GLIBC_2.17",
                                           "GLIBC_2.27",  "GLIBC_2.3",  "GLIBC_2.2",
                                           "GLIBC_2.4",   "GLIBC_2.18", "GLIBC_2.35"};
    for (const char *v : versions)
        if (void *s = dlvsym(RTLD_DEFAULT, "cfree", v))
            return reinterpret_cast<free_fn>(s);
    return nullptr;
}

// Bytes the allocator reports as handed out: heap chunks in use plus mmapped chunks. glibc
// counts a block in one of the two depending on the (dynamic) mmap threshold.
size_t in_use_bytes()
{
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

const std::vector<size_t> &sizes()
{
    static const std::vector<size_t> s = {
        0,      1,      7,       8,       15,      16,       17,       24,      25,
        100,    1000,   1024,    1032,    1040,    4095,     4096,     4097,    65535,
        65536,  65537,  131072,  200000,  262144,  262145,   1048575,  1048576, 1048577,
        3145735, 4194304, 4194305, 16777216, 16777217,
    };
    return s;
}

std::vector<Allocator> allocators()
{
    std::vector<Allocator> v = {
        {"malloc", [](size_t n) { return malloc(n); }},
        {"calloc(n,1)", [](size_t n) { return calloc(n, 1); }},
        {"calloc(1,n)", [](size_t n) { return calloc(1, n); }},
        {"realloc(NULL,n)", [](size_t n) { return realloc(nullptr, n); }},
        {"realloc(malloc(1),n)",
         [](size_t n) {
             void *p = opaque(malloc(1));
             void *q = realloc(p, n ? n : 1);
             if (!q)
                 free(p);
             return q;
         }},
        {"reallocarray(NULL,n,1)", [](size_t n) { return reallocarray(nullptr, n, 1); }},
        {"memalign(32,n)", [](size_t n) { return memalign(32, n); }},
        {"memalign(4096,n)", [](size_t n) { return memalign(4096, n); }},
        {"memalign(1<<20,n)", [](size_t n) { return memalign((size_t)1 << 20, n); }},
        {"aligned_alloc(64,n)", [](size_t n) { return aligned_alloc(64, n); }},
        {"aligned_alloc(24,n)", [](size_t n) { return aligned_alloc(opaque((size_t)24), n); }},
        {"posix_memalign(8,n)",
         [](size_t n) {
             void *p = nullptr;
             return posix_memalign(&p, 8, n) == 0 ? p : nullptr;
         }},
        {"posix_memalign(256,n)",
         [](size_t n) {
             void *p = nullptr;
             return posix_memalign(&p, 256, n) == 0 ? p : nullptr;
         }},
        {"posix_memalign(65536,n)",
         [](size_t n) {
             void *p = nullptr;
             return posix_memalign(&p, 65536, n) == 0 ? p : nullptr;
         }},
        {"valloc", [](size_t n) { return valloc(n); }},
        {"pvalloc", [](size_t n) { return pvalloc(n); }},
    };
    // the __libc_* entry points, when present (glibc exports them all)
    if (auto f = lookup<malloc_fn>("__libc_malloc"))
        v.push_back({"__libc_malloc", [f](size_t n) { return f(n); }});
    if (auto f = lookup<calloc_fn>("__libc_calloc"))
        v.push_back({"__libc_calloc", [f](size_t n) { return f(n, 1); }});
    if (auto f = lookup<realloc_fn>("__libc_realloc"))
        v.push_back({"__libc_realloc(NULL,n)", [f](size_t n) { return f(nullptr, n); }});
    if (auto f = lookup<memalign_fn>("__libc_memalign"))
        v.push_back({"__libc_memalign(128,n)", [f](size_t n) { return f(128, n); }});
    if (auto f = lookup<malloc_fn>("__libc_valloc"))
        v.push_back({"__libc_valloc", [f](size_t n) { return f(n); }});
    if (auto f = lookup<malloc_fn>("__libc_pvalloc"))
        v.push_back({"__libc_pvalloc", [f](size_t n) { return f(n); }});
    return v;
}

} // namespace semantics
