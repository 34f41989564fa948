// The observable semantics of glibc 2.36's malloc family (Debian 12), pinned down so that
// libvarslot-preload.so can be held to them.
//
// The same binary runs twice over:
//   - plainly, against glibc itself: it must pass, which proves each expectation is glibc's;
//   - with LD_PRELOAD=build/lib/libvarslot-preload.so, in every shim mode
//     (tests/preload/run-semantics.sh): it must pass again, which proves the shim matches.
//
// Every expectation here was checked against glibc-2.36 malloc/malloc.c (and
// malloc/reallocarray.c); the comments name the rule. Only what glibc guarantees, or what it
// observably does and a program could rely on, is asserted: exact usable sizes, chunk layout
// and arena details are not.
//
// Compiler hygiene: GCC knows the malloc family as builtins. It may delete a malloc/free
// pair, assume calloc memory reads as zero, assume free does not touch errno, and warn about
// deliberately huge constant sizes. opaque() hides values from the optimizer (and is a full
// compiler memory barrier), so every call below really happens, in order, with sizes the
// compiler cannot see.

#include <gtest/gtest.h>

#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <random>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <varslot/preload.h>

namespace {

// ---------------------------------------------------------------------------------------
// helpers

// Returns v unchanged, but the compiler can assume nothing about it, and all memory may have
// been read and written: a call wrapped as opaque(f(opaque(x))) cannot be folded, elided or
// moved across neighbouring errno stores and loads.
template <class T>
inline T opaque(T v)
{
    asm volatile("" : "+r"(v) : : "memory");
    return v;
}
inline void barrier()
{
    asm volatile("" : : : "memory");
}

constexpr size_t kHalf = SIZE_MAX / 2 + 1;               // 2^63: the largest power of two
constexpr size_t kPtrdiffMax = (size_t)PTRDIFF_MAX;      // == SIZE_MAX / 2
constexpr size_t kNoMismatch = SIZE_MAX;

size_t page_size()
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

bool is_aligned(const void *p, size_t a)
{
    return ((uintptr_t)p & (a - 1)) == 0;
}

size_t round_up(size_t n, size_t a)
{
    return (n + a - 1) & ~(a - 1);
}

// A byte pattern that depends on the offset's low and high bits and on a per-block seed, so
// a block that was moved, shifted, truncated, overlapped or mixed up with another shows.
inline unsigned char pat(size_t i, uint32_t seed)
{
    return (unsigned char)(seed + i * 0x9du + (i >> 8) * 0x3bu + (i >> 16) * 0x71u);
}
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

// Writes every usable byte (so ASan, valgrind or a shim guard would notice an overstatement),
// then checks the whole usable size still reads back.
void write_whole_usable(void *p, uint32_t seed)
{
    size_t u = malloc_usable_size(p);
    memset(p, 0x5a, u);
    fill(p, u, seed);
    EXPECT_EQ(first_mismatch(p, u, seed), kNoMismatch) << "usable size " << u;
}

// Looked up at run time: not declared by the headers (cfree, __libc_*) or provided by the
// shim only (vs_owns).
template <class F>
F lookup(const char *name)
{
    return reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
}

using malloc_fn = void *(*)(size_t);
using free_fn = void (*)(void *);
using calloc_fn = void *(*)(size_t, size_t);
using realloc_fn = void *(*)(void *, size_t);
using memalign_fn = void *(*)(size_t, size_t);

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

// Collects the violations of a rule over a long loop, so a failure prints one line with a
// count and the first few cases instead of thousands of lines.
class Violations {
public:
    void add(const std::string &what)
    {
        if (count_++ < 8)
            first_ += (first_.empty() ? "" : ", ") + what;
    }
    void add(const void *p)
    {
        char buf[32];
        snprintf(buf, sizeof buf, "%p", p);
        add(std::string(buf));
    }
    bool none() const { return count_ == 0; }
    friend std::ostream &operator<<(std::ostream &os, const Violations &v)
    {
        return os << v.count_ << " case(s): " << v.first_ << (v.count_ > 8 ? ", ..." : "");
    }

private:
    size_t count_ = 0;
    std::string first_;
};

// The sizes most tests walk: tiny, around tcache/fastbin limits, around the default mmap
// threshold (128 KiB), around the shim's slot classes (64K, 256K, 1M, 4M, 16M), beyond them.
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

// ---------------------------------------------------------------------------------------
// malloc

// glibc: malloc(0) allocates a minimum chunk (request2size(0) == MINSIZE), so every call
// returns a distinct, non-NULL pointer that free accepts.
TEST(Malloc, ZeroReturnsUniqueNonNullFreeablePointers)
{
    std::vector<void *> v;
    std::set<void *> seen;
    Violations misaligned, repeated;
    for (int i = 0; i < 1000; i++) {
        void *p = opaque(malloc(opaque((size_t)0)));
        ASSERT_NE(p, nullptr) << "call " << i;
        if (!is_aligned(p, 16))
            misaligned.add(p);
        if (!seen.insert(p).second)
            repeated.add(p);
        v.push_back(p);
    }
    EXPECT_TRUE(misaligned.none()) << "malloc(0) not 16-byte aligned: " << misaligned;
    EXPECT_TRUE(repeated.none()) << "malloc(0) returned a live pointer again: " << repeated;
    for (void *p : v)
        free(opaque(p));
}

// glibc x86-64: MALLOC_ALIGNMENT is 16 (2 * SIZE_SZ, and alignof(long double) == 16).
TEST(Malloc, EveryResultIsSixteenByteAlignedForSizes0To4096)
{
    std::vector<void *> v;
    Violations misaligned;
    for (size_t n = 0; n <= 4096; n++) {
        void *p = opaque(malloc(opaque(n)));
        ASSERT_NE(p, nullptr) << "size " << n;
        if (!is_aligned(p, 16))
            misaligned.add("malloc(" + std::to_string(n) + ")");
        v.push_back(p);  // all live at once, so each size gets a fresh block
    }
    EXPECT_TRUE(misaligned.none()) << "not 16-byte aligned: " << misaligned;
    for (void *p : v)
        free(opaque(p));
}

TEST(Malloc, LargeResultsAreSixteenByteAligned)
{
    for (size_t n : {(size_t)65536, (size_t)200000, (size_t)1 << 20, (size_t)(3 << 20) + 7,
                     (size_t)(16 << 20) + 1}) {
        for (int rep = 0; rep < 4; rep++) {
            void *p = opaque(malloc(opaque(n)));
            ASSERT_NE(p, nullptr) << "size " << n;
            EXPECT_TRUE(is_aligned(p, 16)) << "size " << n << " -> " << p;
            free(opaque(p));
        }
    }
}

// glibc 2.36: checked_request2size rejects requests above PTRDIFF_MAX (and the padding of
// anything just below SIZE_MAX); malloc then sets errno to ENOMEM and returns NULL. Requests
// of exactly PTRDIFF_MAX pass the check and fail in the system allocator, also ENOMEM.
TEST(Malloc, HugeSizesReturnNullWithEnomem)
{
    for (size_t n : {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 15, SIZE_MAX - 4096, kPtrdiffMax,
                     kPtrdiffMax + 1, kHalf + 4096}) {
        errno = 0;
        void *p = opaque(malloc(opaque(n)));
        int e = errno;
        EXPECT_EQ(p, nullptr) << "malloc(" << n << ")";
        EXPECT_EQ(e, ENOMEM) << "malloc(" << n << ")";
        free(p);
    }
}

// The whole requested size is usable and blocks that are live together never overlap.
TEST(Malloc, LiveBlocksAreWritableOverRequestedSizeAndDoNotOverlap)
{
    std::vector<std::pair<void *, size_t>> v;
    uint32_t seed = 1;
    for (int rep = 0; rep < 2; rep++)
        for (size_t n : sizes()) {
            void *p = opaque(malloc(opaque(n)));
            ASSERT_NE(p, nullptr) << "size " << n;
            fill(p, n, seed++);
            v.emplace_back(p, n);
        }
    seed = 1;
    for (auto &b : v)
        EXPECT_EQ(first_mismatch(b.first, b.second, seed++), kNoMismatch)
            << "block of " << b.second << " was overwritten by another";
    for (auto &b : v)
        free(opaque(b.first));
}

// ---------------------------------------------------------------------------------------
// calloc

TEST(Calloc, ReturnsZeroedMemorySmallAndLarge)
{
    for (size_t n : sizes()) {
        void *p = opaque(calloc(opaque(n), opaque((size_t)1)));
        ASSERT_NE(p, nullptr) << "size " << n;
        EXPECT_TRUE(is_aligned(p, 16));
        EXPECT_EQ(first_nonzero(p, n), kNoMismatch) << "calloc(" << n << ", 1)";
        free(opaque(p));
        // the same total as a count of elements
        if (n % 8 == 0) {
            p = opaque(calloc(opaque(n / 8), opaque((size_t)8)));
            ASSERT_NE(p, nullptr);
            EXPECT_EQ(first_nonzero(p, n), kNoMismatch) << "calloc(" << n / 8 << ", 8)";
            free(opaque(p));
        }
    }
}

// glibc clears recycled chunks itself (it only skips the memset for fresh mmap/top memory):
// calloc must return zeros even where the same memory was just dirtied and freed.
TEST(Calloc, ZeroesMemoryThatWasDirtiedAndFreed)
{
    for (size_t n : {(size_t)1, (size_t)24, (size_t)100, (size_t)1000, (size_t)4096,
                     (size_t)65536, (size_t)100000, (size_t)200000, (size_t)1 << 20,
                     (size_t)(3 << 20) + 7, (size_t)(16 << 20) + 1}) {
        for (int rep = 0; rep < 20; rep++) {
            void *d = opaque(malloc(opaque(n)));
            ASSERT_NE(d, nullptr);
            memset(d, 0xab, malloc_usable_size(d));
            free(opaque(d));
            void *p = opaque(calloc(opaque((size_t)1), opaque(n)));
            ASSERT_NE(p, nullptr);
            size_t at = first_nonzero(p, n);
            EXPECT_EQ(at, kNoMismatch) << "calloc(1, " << n << ") rep " << rep
                                       << (p == d ? " (same block)" : "");
            // dirty it again before freeing, for the next round
            memset(p, 0xab, n);
            free(opaque(p));
            if (at != kNoMismatch)
                break;
        }
    }
}

// glibc 2.36: __builtin_mul_overflow(n, elem_size, &bytes) with a ptrdiff_t result, so a
// product above PTRDIFF_MAX counts as overflow too: NULL with ENOMEM.
TEST(Calloc, MultiplicationOverflowReturnsNullWithEnomem)
{
    const std::pair<size_t, size_t> cases[] = {
        {SIZE_MAX, 2},          {2, SIZE_MAX},     {kHalf, 2},
        {(size_t)1 << 32, (size_t)1 << 32},        {SIZE_MAX, SIZE_MAX},
        {kHalf, 1},             {1, kHalf},        {(size_t)3, SIZE_MAX / 3 + 1},
    };
    for (auto &c : cases) {
        errno = 0;
        void *p = opaque(calloc(opaque(c.first), opaque(c.second)));
        int e = errno;
        EXPECT_EQ(p, nullptr) << "calloc(" << c.first << ", " << c.second << ")";
        EXPECT_EQ(e, ENOMEM) << "calloc(" << c.first << ", " << c.second << ")";
        free(p);
    }
}

TEST(Calloc, HugeNonOverflowingProductReturnsNullWithEnomem)
{
    for (size_t n : {kPtrdiffMax, kPtrdiffMax - 4096, SIZE_MAX / 4}) {
        errno = 0;
        void *p = opaque(calloc(opaque(n), opaque((size_t)1)));
        int e = errno;
        EXPECT_EQ(p, nullptr) << "calloc(" << n << ", 1)";
        EXPECT_EQ(e, ENOMEM) << "calloc(" << n << ", 1)";
        free(p);
    }
}

// A zero product is no overflow: calloc(0, x) and calloc(x, 0) behave like malloc(0).
TEST(Calloc, ZeroCountOrSizeReturnsUniqueFreeablePointer)
{
    const std::pair<size_t, size_t> cases[] = {
        {0, 0}, {0, 1}, {1, 0}, {0, 100}, {100, 0}, {0, SIZE_MAX}, {SIZE_MAX, 0},
    };
    std::set<void *> seen;
    std::vector<void *> v;
    for (auto &c : cases) {
        void *p = opaque(calloc(opaque(c.first), opaque(c.second)));
        ASSERT_NE(p, nullptr) << "calloc(" << c.first << ", " << c.second << ")";
        EXPECT_TRUE(is_aligned(p, 16));
        EXPECT_TRUE(seen.insert(p).second);
        v.push_back(p);
    }
    for (void *p : v)
        free(opaque(p));
}

// ---------------------------------------------------------------------------------------
// realloc

// "realloc of null is supposed to be same as malloc", including realloc(NULL, 0), which
// returns a minimum chunk (the zero-size free rule only applies to a non-NULL pointer).
TEST(Realloc, NullPointerActsLikeMalloc)
{
    std::set<void *> seen;
    std::vector<void *> v;
    for (size_t n : sizes()) {
        void *p = opaque(realloc(opaque((void *)nullptr), opaque(n)));
        ASSERT_NE(p, nullptr) << "realloc(NULL, " << n << ")";
        EXPECT_TRUE(is_aligned(p, 16));
        EXPECT_GE(malloc_usable_size(p), n);
        EXPECT_TRUE(seen.insert(p).second);
        fill(p, n, (uint32_t)n);
        v.push_back(p);
    }
    for (void *p : v)
        free(opaque(p));
}

// glibc 2.36: REALLOC_ZERO_BYTES_FREES is 1, so realloc(p, 0) with p != NULL frees p and
// returns NULL (not a minimum chunk, as C17 would also allow). errno is left alone: the
// free inside preserves it.
TEST(Realloc, ZeroSizeFreesAndReturnsNull)
{
    const size_t before = in_use_bytes();
    for (size_t n : sizes()) {
        void *p = opaque(malloc(opaque(n)));
        ASSERT_NE(p, nullptr);
        fill(p, n, 7);
        errno = 4242;
        void *q = opaque(realloc(opaque(p), opaque((size_t)0)));
        int e = errno;
        EXPECT_EQ(q, nullptr) << "realloc(p, 0) on a block of " << n;
        EXPECT_EQ(e, 4242) << "realloc(p, 0) on a block of " << n << " changed errno";
        if (q)
            free(q);
    }
    // and it really freed: 16 MiB blocks went through it without the in-use count growing
    for (int i = 0; i < 8; i++) {
        void *p = opaque(malloc(opaque((size_t)16 << 20)));
        ASSERT_NE(p, nullptr);
        memset(p, 1, 4096);
        EXPECT_EQ(opaque(realloc(opaque(p), opaque((size_t)0))), nullptr);
    }
    EXPECT_LT(in_use_bytes(), before + ((size_t)16 << 20)) << "realloc(p, 0) leaked";
}

// Growing and shrinking keep the old prefix, whichever side of the 64 KiB / 128 KiB /
// 1 MiB / 4 MiB / 16 MiB boundaries (slot classes, mmap threshold) each step lands.
TEST(Realloc, GrowAndShrinkPreserveContentAcrossSizeBoundaries)
{
    const std::vector<size_t> chain = {
        100,     200000,  3000000, 50,      70000,   65535,   65536,   65537,   131072,
        1048575, 1048576, 1048577, 4194305, 1048576, 65536,   64,      16777217, 70000,
        16,      16777216, 262145, 262144,  0 + 1,   3145735, 3145735, 24,      1048576,
    };
    uint32_t seed = 11;
    void *p = opaque(malloc(opaque(chain[0])));
    ASSERT_NE(p, nullptr);
    fill(p, chain[0], seed);
    for (size_t i = 1; i < chain.size(); i++) {
        size_t from = chain[i - 1], to = chain[i];
        void *q = opaque(realloc(opaque(p), opaque(to)));
        ASSERT_NE(q, nullptr) << from << " -> " << to;
        EXPECT_TRUE(is_aligned(q, 16)) << from << " -> " << to;
        EXPECT_GE(malloc_usable_size(q), to);
        EXPECT_EQ(first_mismatch(q, from < to ? from : to, seed), kNoMismatch)
            << "prefix lost in realloc " << from << " -> " << to;
        p = q;
        fill(p, to, ++seed);  // the whole new size is writable
    }
    free(opaque(p));
}

// glibc 2.36: checked_request2size fails before anything moves: NULL, ENOMEM, and the
// original block is still allocated, in place, with its content.
TEST(Realloc, HugeSizeFailsWithEnomemAndKeepsOriginal)
{
    for (size_t n : {(size_t)100, (size_t)70000, (size_t)200000, (size_t)(3 << 20) + 7}) {
        void *p = opaque(malloc(opaque(n)));
        ASSERT_NE(p, nullptr);
        fill(p, n, 99);
        for (size_t huge : {SIZE_MAX, SIZE_MAX - 15, kPtrdiffMax + 1, kPtrdiffMax, kHalf + 4096}) {
            errno = 0;
            void *q = opaque(realloc(opaque(p), opaque(huge)));
            int e = errno;
            EXPECT_EQ(q, nullptr) << "realloc(" << n << "-byte block, " << huge << ")";
            EXPECT_EQ(e, ENOMEM) << "realloc(" << n << "-byte block, " << huge << ")";
            EXPECT_EQ(first_mismatch(p, n, 99), kNoMismatch) << "original damaged";
        }
        // still a live block: it can be grown and freed normally
        void *q = opaque(realloc(opaque(p), opaque(n + 1000)));
        ASSERT_NE(q, nullptr);
        EXPECT_EQ(first_mismatch(q, n, 99), kNoMismatch);
        free(opaque(q));
    }
}

// ---------------------------------------------------------------------------------------
// reallocarray

// glibc malloc/reallocarray.c: __builtin_mul_overflow -> ENOMEM, NULL; the original block
// is not touched. (Only true size_t overflow counts here, unlike calloc.)
TEST(Reallocarray, OverflowReturnsNullWithEnomemAndKeepsOriginal)
{
    void *p = opaque(malloc(opaque((size_t)1000)));
    ASSERT_NE(p, nullptr);
    fill(p, 1000, 5);
    const std::pair<size_t, size_t> cases[] = {
        {SIZE_MAX, 2}, {2, SIZE_MAX}, {kHalf, 2}, {(size_t)1 << 32, (size_t)1 << 32},
        {SIZE_MAX, SIZE_MAX},
    };
    for (auto &c : cases) {
        errno = 0;
        void *q = opaque(reallocarray(opaque(p), opaque(c.first), opaque(c.second)));
        int e = errno;
        EXPECT_EQ(q, nullptr) << "reallocarray(p, " << c.first << ", " << c.second << ")";
        EXPECT_EQ(e, ENOMEM);
        EXPECT_EQ(first_mismatch(p, 1000, 5), kNoMismatch) << "original damaged";
    }
    // NULL and an overflow: also NULL + ENOMEM, nothing allocated
    errno = 0;
    void *q = opaque(reallocarray(opaque((void *)nullptr), opaque(SIZE_MAX), opaque((size_t)3)));
    EXPECT_EQ(q, nullptr);
    EXPECT_EQ(errno, ENOMEM);
    free(opaque(p));
}

// A product that does not overflow but is too large goes to realloc, which fails with
// ENOMEM and keeps the block.
TEST(Reallocarray, HugeNonOverflowingProductFailsWithEnomemAndKeepsOriginal)
{
    void *p = opaque(malloc(opaque((size_t)300)));
    ASSERT_NE(p, nullptr);
    fill(p, 300, 6);
    errno = 0;
    void *q = opaque(reallocarray(opaque(p), opaque((size_t)1 << 62), opaque((size_t)2)));
    int e = errno;
    EXPECT_EQ(q, nullptr);
    EXPECT_EQ(e, ENOMEM);
    EXPECT_EQ(first_mismatch(p, 300, 6), kNoMismatch);
    free(opaque(p));
}

// Otherwise reallocarray(p, n, m) is realloc(p, n * m): NULL -> malloc, content kept.
TEST(Reallocarray, WithoutOverflowBehavesLikeRealloc)
{
    void *p = opaque(reallocarray(opaque((void *)nullptr), opaque((size_t)10), opaque((size_t)10)));
    ASSERT_NE(p, nullptr);
    EXPECT_GE(malloc_usable_size(p), 100u);
    fill(p, 100, 8);
    const size_t steps[][2] = {{1000, 200}, {3, 7}, {1 << 10, 3 << 10}, {1, 100}};
    size_t have = 100;
    for (auto &s : steps) {
        size_t want = s[0] * s[1];
        void *q = opaque(reallocarray(opaque(p), opaque(s[0]), opaque(s[1])));
        ASSERT_NE(q, nullptr) << want;
        EXPECT_TRUE(is_aligned(q, 16));
        EXPECT_EQ(first_mismatch(q, have < want ? have : want, 8), kNoMismatch) << want;
        fill(q, want, 8);
        p = q;
        have = want;
    }
    free(opaque(p));
    // reallocarray(NULL, 0, x) is realloc(NULL, 0) == malloc(0): a real pointer
    p = opaque(reallocarray(opaque((void *)nullptr), opaque((size_t)0), opaque((size_t)10)));
    EXPECT_NE(p, nullptr);
    free(opaque(p));
}

// reallocarray(p, 0, x) with p != NULL is realloc(p, 0): glibc 2.36 frees and returns NULL.
TEST(Reallocarray, ZeroProductFreesAndReturnsNull)
{
    for (size_t n : {(size_t)10, (size_t)100000, (size_t)(3 << 20)}) {
        void *p = opaque(malloc(opaque(n)));
        ASSERT_NE(p, nullptr);
        errno = 777;
        void *q = opaque(reallocarray(opaque(p), opaque((size_t)0), opaque((size_t)10)));
        EXPECT_EQ(q, nullptr) << n;
        EXPECT_EQ(errno, 777);
        if (q)
            free(q);
        p = opaque(malloc(opaque(n)));
        ASSERT_NE(p, nullptr);
        q = opaque(reallocarray(opaque(p), opaque((size_t)10), opaque((size_t)0)));
        EXPECT_EQ(q, nullptr) << n;
        if (q)
            free(q);
    }
}

// ---------------------------------------------------------------------------------------
// posix_memalign

// glibc: "alignment % sizeof (void *) != 0 || !powerof2 (alignment / sizeof (void *)) ||
// alignment == 0" -> return EINVAL, before anything else: *memptr is not written and errno
// is not touched (the result is the return value).
TEST(PosixMemalign, InvalidAlignmentReturnsEinvalAndTouchesNothing)
{
    void *const sentinel = (void *)(uintptr_t)0x5e47196e1;
    for (size_t a : {(size_t)0, (size_t)1, (size_t)2, (size_t)4, (size_t)3, (size_t)12,
                     (size_t)24, (size_t)40, (size_t)48, (size_t)96, (size_t)4095, (size_t)4104,
                     ((size_t)1 << 20) + 8, SIZE_MAX, kHalf + 8, kHalf - 8, (size_t)4 << 1 | 1}) {
        for (size_t n : {(size_t)0, (size_t)1, (size_t)100, (size_t)1 << 20, SIZE_MAX}) {
            void *p = sentinel;
            errno = 31337;
            int rc = opaque(posix_memalign(opaque(&p), opaque(a), opaque(n)));
            int e = errno;
            EXPECT_EQ(rc, EINVAL) << "posix_memalign(&p, " << a << ", " << n << ")";
            EXPECT_EQ(p, sentinel) << "*memptr written on EINVAL, alignment " << a;
            EXPECT_EQ(e, 31337) << "errno changed on EINVAL, alignment " << a;
            if (rc == 0)
                free(p);
        }
    }
}

// A valid alignment with an impossible size (or the impossible alignment 2^63, which is a
// valid power-of-two multiple of 8): the return value is ENOMEM, *memptr untouched.
TEST(PosixMemalign, HugeRequestReturnsEnomemAndLeavesPointer)
{
    void *const sentinel = (void *)(uintptr_t)0xdeadbee0;
    const std::pair<size_t, size_t> cases[] = {
        {8, SIZE_MAX},         {16, SIZE_MAX},          {64, SIZE_MAX},
        {4096, kPtrdiffMax},   {(size_t)1 << 20, SIZE_MAX - 4096},
        {kHalf, 1},            {kHalf, 0},              {64, kPtrdiffMax + 1},
    };
    for (auto &c : cases) {
        void *p = sentinel;
        int rc = opaque(posix_memalign(opaque(&p), opaque(c.first), opaque(c.second)));
        EXPECT_EQ(rc, ENOMEM) << "posix_memalign(&p, " << c.first << ", " << c.second << ")";
        EXPECT_EQ(p, sentinel) << "*memptr written on failure";
        if (rc == 0)
            free(p);
    }
}

TEST(PosixMemalign, ValidAlignmentsAreHonouredForAllSizes)
{
    for (size_t a = sizeof(void *); a <= ((size_t)1 << 20); a <<= 1) {
        for (size_t n : {(size_t)0, (size_t)1, (size_t)100, (size_t)65536, (size_t)1 << 20,
                         (size_t)3 << 20}) {
            void *p = nullptr;
            errno = 0;
            int rc = opaque(posix_memalign(opaque(&p), opaque(a), opaque(n)));
            ASSERT_EQ(rc, 0) << "posix_memalign(&p, " << a << ", " << n << ")";
            ASSERT_NE(p, nullptr);
            EXPECT_TRUE(is_aligned(p, a)) << "alignment " << a << " size " << n << " -> " << p;
            EXPECT_GE(malloc_usable_size(p), n);
            fill(p, n, (uint32_t)(a + n));
            EXPECT_EQ(first_mismatch(p, n, (uint32_t)(a + n)), kNoMismatch);
            free(opaque(p));
        }
    }
}

// Size 0 with a valid alignment succeeds with a real, distinct, freeable pointer.
TEST(PosixMemalign, SizeZeroGivesUniqueFreeablePointer)
{
    std::set<void *> seen;
    std::vector<void *> v;
    for (size_t a : {(size_t)8, (size_t)16, (size_t)64, (size_t)4096, (size_t)1 << 16}) {
        for (int rep = 0; rep < 3; rep++) {
            void *p = nullptr;
            ASSERT_EQ(opaque(posix_memalign(opaque(&p), opaque(a), opaque((size_t)0))), 0);
            ASSERT_NE(p, nullptr);
            EXPECT_TRUE(is_aligned(p, a));
            EXPECT_TRUE(seen.insert(p).second);
            v.push_back(p);
        }
    }
    for (void *p : v)
        free(opaque(p));
}

// ---------------------------------------------------------------------------------------
// memalign and aligned_alloc: in glibc 2.36 aligned_alloc is a weak alias of
// __libc_memalign, so both follow _mid_memalign exactly (no C11 alignment/size checks).

void check_small_alignment_is_malloc(memalign_fn f, const char *name)
{
    for (size_t a : {(size_t)0, (size_t)1, (size_t)2, (size_t)3, (size_t)4, (size_t)5,
                     (size_t)7, (size_t)8, (size_t)12, (size_t)15, (size_t)16}) {
        for (size_t n : {(size_t)0, (size_t)1, (size_t)100, (size_t)70000, (size_t)1 << 20}) {
            void *p = opaque(f(opaque(a), opaque(n)));
            ASSERT_NE(p, nullptr) << name << "(" << a << ", " << n << ")";
            EXPECT_TRUE(is_aligned(p, 16)) << name << "(" << a << ", " << n << ")";
            EXPECT_GE(malloc_usable_size(p), n);
            fill(p, n, 3);
            free(opaque(p));
        }
    }
}

// glibc: "if (alignment <= MALLOC_ALIGNMENT) return __libc_malloc (bytes)": any alignment up
// to 16, even 0 or a non-power-of-two, gives a malloc block (16-byte aligned).
TEST(Memalign, AlignmentUpTo16BehavesLikeMalloc)
{
    check_small_alignment_is_malloc(memalign, "memalign");
}
TEST(AlignedAlloc, AlignmentUpTo16BehavesLikeMalloc)
{
    check_small_alignment_is_malloc(aligned_alloc, "aligned_alloc");
}

void check_power_of_two_alignments(memalign_fn f, const char *name)
{
    for (size_t a = 32; a <= ((size_t)1 << 22); a <<= 1) {
        for (size_t n : {(size_t)0, (size_t)1, (size_t)100, (size_t)65536, (size_t)1 << 20,
                         (size_t)(3 << 20) + 7}) {
            void *p = opaque(f(opaque(a), opaque(n)));
            ASSERT_NE(p, nullptr) << name << "(" << a << ", " << n << ")";
            EXPECT_TRUE(is_aligned(p, a)) << name << "(" << a << ", " << n << ") -> " << p;
            EXPECT_GE(malloc_usable_size(p), n);
            fill(p, n, 4);
            EXPECT_EQ(first_mismatch(p, n, 4), kNoMismatch);
            free(opaque(p));
        }
    }
}
TEST(Memalign, PowerOfTwoAlignmentsAreHonoured)
{
    check_power_of_two_alignments(memalign, "memalign");
}
// glibc 2.36 accepts sizes that are not a multiple of the alignment (C11 DR 460 leniency).
TEST(AlignedAlloc, PowerOfTwoAlignmentsAreHonouredWhateverTheSize)
{
    check_power_of_two_alignments(aligned_alloc, "aligned_alloc");
}

void check_non_power_of_two_rounds_up(memalign_fn f, const char *name)
{
    // alignment -> the power of two glibc rounds it to (at least MINSIZE, 32)
    const std::pair<size_t, size_t> cases[] = {
        {17, 32},      {20, 32},      {24, 32},       {31, 32},      {33, 64},
        {48, 64},      {100, 128},    {1000, 1024},   {3000, 4096},  {4097, 8192},
        {65537, 131072}, {(1 << 20) + 1, 1 << 21}, {(3 << 20), 4 << 20},
    };
    for (auto &c : cases) {
        for (size_t n : {(size_t)0, (size_t)1, (size_t)100, (size_t)70000}) {
            void *p = opaque(f(opaque(c.first), opaque(n)));
            ASSERT_NE(p, nullptr) << name << "(" << c.first << ", " << n << ")";
            EXPECT_TRUE(is_aligned(p, c.second))
                << name << "(" << c.first << ", " << n << ") -> " << p << " not aligned to "
                << c.second;
            EXPECT_GE(malloc_usable_size(p), n);
            fill(p, n, 5);
            free(opaque(p));
        }
    }
}
// glibc: "Make sure alignment is power of 2": a = 32; while (a < alignment) a <<= 1.
TEST(Memalign, NonPowerOfTwoAlignmentIsRoundedUpToNextPowerOfTwo)
{
    check_non_power_of_two_rounds_up(memalign, "memalign");
}
// glibc 2.36 only (2.38 made aligned_alloc reject these with EINVAL): same rounding.
TEST(AlignedAlloc, NonPowerOfTwoAlignmentIsRoundedUpLikeMemalign)
{
    check_non_power_of_two_rounds_up(aligned_alloc, "aligned_alloc");
}

void check_alignment_limits(memalign_fn f, const char *name)
{
    // "If the alignment is greater than SIZE_MAX / 2 + 1 it cannot be a power of 2": EINVAL
    for (size_t a : {kHalf + 1, kHalf + 16, SIZE_MAX - 1, SIZE_MAX}) {
        errno = 0;
        void *p = opaque(f(opaque(a), opaque((size_t)1)));
        int e = errno;
        EXPECT_EQ(p, nullptr) << name << "(" << a << ", 1)";
        EXPECT_EQ(e, EINVAL) << name << "(" << a << ", 1)";
        free(p);
    }
    // exactly 2^63 is a power of two: it passes, and the allocation fails with ENOMEM
    // (Debian's CVE-2026-0861 fix rejects it as > PTRDIFF_MAX, unpatched 2.36 fails in
    // _int_malloc: ENOMEM either way). So do other impossible alignments.
    for (size_t a : {kHalf, (size_t)1 << 62, kHalf - 1}) {
        errno = 0;
        void *p = opaque(f(opaque(a), opaque((size_t)1)));
        int e = errno;
        EXPECT_EQ(p, nullptr) << name << "(" << a << ", 1)";
        EXPECT_EQ(e, ENOMEM) << name << "(" << a << ", 1)";
        free(p);
    }
}
TEST(Memalign, AlignmentAboveHalfAddressSpaceFailsWithEinvalElseEnomem)
{
    check_alignment_limits(memalign, "memalign");
}
TEST(AlignedAlloc, AlignmentAboveHalfAddressSpaceFailsWithEinvalElseEnomem)
{
    check_alignment_limits(aligned_alloc, "aligned_alloc");
}

void check_huge_size(memalign_fn f, const char *name)
{
    for (size_t a : {(size_t)0, (size_t)8, (size_t)16, (size_t)64, (size_t)4096,
                     (size_t)1 << 20}) {
        for (size_t n : {SIZE_MAX, SIZE_MAX - 4096, kPtrdiffMax + 1, kPtrdiffMax}) {
            errno = 0;
            void *p = opaque(f(opaque(a), opaque(n)));
            int e = errno;
            EXPECT_EQ(p, nullptr) << name << "(" << a << ", " << n << ")";
            EXPECT_EQ(e, ENOMEM) << name << "(" << a << ", " << n << ")";
            free(p);
        }
    }
}
TEST(Memalign, HugeSizeFailsWithEnomem)
{
    check_huge_size(memalign, "memalign");
}
TEST(AlignedAlloc, HugeSizeFailsWithEnomem)
{
    check_huge_size(aligned_alloc, "aligned_alloc");
}

// ---------------------------------------------------------------------------------------
// valloc and pvalloc

// glibc: valloc(n) is _mid_memalign(pagesize, n).
TEST(Valloc, ResultsArePageAligned)
{
    const size_t pg = page_size();
    std::set<void *> seen;
    std::vector<void *> v;
    for (size_t n : sizes()) {
        void *p = opaque(valloc(opaque(n)));
        ASSERT_NE(p, nullptr) << "valloc(" << n << ")";
        EXPECT_TRUE(is_aligned(p, pg)) << "valloc(" << n << ") -> " << p;
        EXPECT_GE(malloc_usable_size(p), n);
        EXPECT_TRUE(seen.insert(p).second);
        fill(p, n, 9);
        v.push_back(p);
    }
    for (void *p : v)
        free(opaque(p));
}

TEST(Valloc, HugeSizeFailsWithEnomem)
{
    for (size_t n : {SIZE_MAX, kPtrdiffMax + 1, kPtrdiffMax}) {
        errno = 0;
        void *p = opaque(valloc(opaque(n)));
        int e = errno;
        EXPECT_EQ(p, nullptr) << "valloc(" << n << ")";
        EXPECT_EQ(e, ENOMEM) << "valloc(" << n << ")";
        free(p);
    }
}

// glibc: pvalloc rounds the size up to whole pages, then valloc's it.
TEST(Pvalloc, PageAlignedAndUsableSizeCoversWholePages)
{
    const size_t pg = page_size();
    for (size_t n : sizes()) {
        if (n == 0)
            continue;  // see ZeroReturnsPageAlignedFreeablePointer
        void *p = opaque(pvalloc(opaque(n)));
        ASSERT_NE(p, nullptr) << "pvalloc(" << n << ")";
        EXPECT_TRUE(is_aligned(p, pg)) << "pvalloc(" << n << ") -> " << p;
        size_t want = round_up(n, pg);
        EXPECT_GE(malloc_usable_size(p), want) << "pvalloc(" << n << ")";
        fill(p, want, 10);  // the whole rounded size is the caller's
        EXPECT_EQ(first_mismatch(p, want, 10), kNoMismatch);
        free(opaque(p));
    }
}

// glibc 2.36 rounds with "& -(pagesize - 1)" (sic), which maps 0 to 1, not to a page: pvalloc(0)
// is a page-ALIGNED minimum chunk (malloc_usable_size 24 on x86-64), not a whole page. Only
// the robust part is asserted: non-NULL, page aligned, freeable, distinct.
TEST(Pvalloc, ZeroReturnsPageAlignedFreeablePointer)
{
    const size_t pg = page_size();
    std::set<void *> seen;
    std::vector<void *> v;
    for (int i = 0; i < 8; i++) {
        void *p = opaque(pvalloc(opaque((size_t)0)));
        ASSERT_NE(p, nullptr);
        EXPECT_TRUE(is_aligned(p, pg)) << p;
        EXPECT_TRUE(seen.insert(p).second);
        write_whole_usable(p, 12);
        v.push_back(p);
    }
    for (void *p : v)
        free(opaque(p));
}

// glibc 2.36: __builtin_add_overflow (bytes, pagesize - 1, ...) -> ENOMEM; sizes that round
// without overflow but are too big fail with ENOMEM as well.
TEST(Pvalloc, RoundingOverflowAndHugeSizesFailWithEnomem)
{
    const size_t pg = page_size();
    for (size_t n : {SIZE_MAX, SIZE_MAX - pg + 2, SIZE_MAX - pg + 1, SIZE_MAX - pg, kPtrdiffMax,
                     kPtrdiffMax + 1}) {
        errno = 0;
        void *p = opaque(pvalloc(opaque(n)));
        int e = errno;
        EXPECT_EQ(p, nullptr) << "pvalloc(" << n << ")";
        EXPECT_EQ(e, ENOMEM) << "pvalloc(" << n << ")";
        free(p);
    }
}

// ---------------------------------------------------------------------------------------
// malloc_usable_size

// glibc: "if (m == NULL) return 0".
TEST(MallocUsableSize, NullIsZero)
{
    EXPECT_EQ(malloc_usable_size(opaque((void *)nullptr)), 0u);
}

struct Allocator {
    const char *name;
    std::function<void *(size_t)> alloc;
};

// Every way to get a block, as a function of the requested size.
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

// Usable size is at least what was asked for, for every allocator, and all of it is
// writable (and keeps what is written).
TEST(MallocUsableSize, AtLeastRequestedForEveryAllocatorAndWholeUsableSizeIsWritable)
{
    for (const Allocator &a : allocators()) {
        for (size_t n : sizes()) {
            void *p = opaque(a.alloc(opaque(n)));
            ASSERT_NE(p, nullptr) << a.name << " size " << n;
            size_t u = malloc_usable_size(p);
            EXPECT_GE(u, n) << a.name << " size " << n;
            write_whole_usable(p, (uint32_t)n);
            EXPECT_EQ(malloc_usable_size(p), u) << "usable size of a live block changed";
            free(opaque(p));
        }
    }
}

// ---------------------------------------------------------------------------------------
// free and cfree

// glibc: "free(0) has no effect".
TEST(Free, NullIsNoOpAndKeepsErrno)
{
    for (int i = 0; i < 100; i++) {
        errno = 12345;
        free(opaque((void *)nullptr));
        barrier();
        EXPECT_EQ(errno, 12345);
    }
}

// glibc 2.33+: __libc_free saves errno and restores it, also around munmap of mmapped
// chunks and trimming of the heap.
TEST(Free, PreservesErrnoForEveryKindOfBlock)
{
    for (const Allocator &a : allocators()) {
        for (size_t n : {(size_t)1, (size_t)100, (size_t)5000, (size_t)70000, (size_t)200000,
                         (size_t)1 << 20, (size_t)(3 << 20) + 7, (size_t)(16 << 20) + 1,
                         (size_t)64 << 20}) {
            void *p = opaque(a.alloc(opaque(n)));
            ASSERT_NE(p, nullptr) << a.name << " " << n;
            memset(p, 1, n < 8192 ? n : 8192);
            for (int err : {12345, ENOMEM, 0}) {
                if (err != 12345) {
                    p = opaque(a.alloc(opaque(n)));
                    ASSERT_NE(p, nullptr);
                }
                errno = err;
                free(opaque(p));
                barrier();
                EXPECT_EQ(errno, err) << "free changed errno, block from " << a.name << " of " << n;
            }
        }
    }
}

// cfree(p) is free(p) (glibc: compat alias of __libc_free; absent from the headers).
TEST(Cfree, ExistsAndFrees)
{
    free_fn cf = lookup_cfree();
    ASSERT_NE(cf, nullptr) << "cfree not found by dlsym or dlvsym";
    cf(opaque((void *)nullptr));  // like free(NULL)
    for (size_t n : {(size_t)1, (size_t)100, (size_t)200000, (size_t)(3 << 20)}) {
        void *p = opaque(malloc(opaque(n)));
        ASSERT_NE(p, nullptr);
        memset(p, 2, n);
        errno = 999;
        cf(opaque(p));
        barrier();
        EXPECT_EQ(errno, 999) << "cfree changed errno";
    }
    // it really frees: the in-use count drops by the block
    const size_t big = (size_t)8 << 20;
    void *p = opaque(malloc(opaque(big)));
    ASSERT_NE(p, nullptr);
    memset(p, 3, big);
    size_t before = in_use_bytes();
    cf(opaque(p));
    barrier();
    size_t after = in_use_bytes();
    EXPECT_GE(before, after + big * 9 / 10) << "cfree of " << big << " bytes: in use " << before
                                             << " -> " << after;
}

// ---------------------------------------------------------------------------------------
// __libc_* aliases

TEST(LibcAliases, AllEntryPointsExist)
{
    for (const char *name : {"__libc_malloc", "__libc_free", "__libc_calloc", "__libc_realloc",
                             "__libc_memalign", "__libc_valloc", "__libc_pvalloc"})
        EXPECT_NE(dlsym(RTLD_DEFAULT, name), nullptr) << name;
}

// Each alias follows the same rules as its public name and pairs with the other family.
TEST(LibcAliases, WorkAndPairWithThePublicFunctions)
{
    auto lmalloc = lookup<malloc_fn>("__libc_malloc");
    auto lfree = lookup<free_fn>("__libc_free");
    auto lcalloc = lookup<calloc_fn>("__libc_calloc");
    auto lrealloc = lookup<realloc_fn>("__libc_realloc");
    auto lmemalign = lookup<memalign_fn>("__libc_memalign");
    auto lvalloc = lookup<malloc_fn>("__libc_valloc");
    auto lpvalloc = lookup<malloc_fn>("__libc_pvalloc");
    ASSERT_TRUE(lmalloc && lfree && lcalloc && lrealloc && lmemalign && lvalloc && lpvalloc);
    const size_t pg = page_size();

    for (size_t n : {(size_t)0, (size_t)1, (size_t)100, (size_t)70000, (size_t)(3 << 20) + 7}) {
        // __libc_malloc -> free, malloc -> __libc_free
        void *p = opaque(lmalloc(opaque(n)));
        ASSERT_NE(p, nullptr);
        EXPECT_TRUE(is_aligned(p, 16));
        fill(p, n, 1);
        free(opaque(p));
        p = opaque(malloc(opaque(n)));
        ASSERT_NE(p, nullptr);
        fill(p, n, 1);
        errno = 5150;
        lfree(opaque(p));
        barrier();
        EXPECT_EQ(errno, 5150) << "__libc_free changed errno";

        // __libc_calloc zeroes, even recycled memory
        p = opaque(malloc(opaque(n)));
        ASSERT_NE(p, nullptr);
        memset(p, 0xab, malloc_usable_size(p));
        free(opaque(p));
        p = opaque(lcalloc(opaque(n), opaque((size_t)1)));
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(first_nonzero(p, n), kNoMismatch) << "__libc_calloc(" << n << ", 1)";
        fill(p, n, 2);
        // __libc_realloc keeps content, then realloc and __libc_free
        void *q = opaque(lrealloc(opaque(p), opaque(n + 5000)));
        ASSERT_NE(q, nullptr);
        EXPECT_EQ(first_mismatch(q, n, 2), kNoMismatch);
        fill(q, n + 5000, 3);
        p = opaque(realloc(opaque(q), opaque(n / 2 + 1)));
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(first_mismatch(p, n / 2 + 1, 3), kNoMismatch);
        lfree(opaque(p));

        // __libc_memalign / __libc_valloc / __libc_pvalloc alignments, freed both ways
        p = opaque(lmemalign(opaque((size_t)4096), opaque(n)));
        ASSERT_NE(p, nullptr);
        EXPECT_TRUE(is_aligned(p, 4096));
        fill(p, n, 4);
        free(opaque(p));
        p = opaque(lmemalign(opaque((size_t)100), opaque(n)));  // rounded up to 128
        ASSERT_NE(p, nullptr);
        EXPECT_TRUE(is_aligned(p, 128));
        lfree(opaque(p));
        p = opaque(lvalloc(opaque(n)));
        ASSERT_NE(p, nullptr);
        EXPECT_TRUE(is_aligned(p, pg));
        fill(p, n, 5);
        lfree(opaque(p));
        p = opaque(lpvalloc(opaque(n)));
        ASSERT_NE(p, nullptr);
        EXPECT_TRUE(is_aligned(p, pg));
        if (n) {
            EXPECT_GE(malloc_usable_size(p), round_up(n, pg));
        }
        free(opaque(p));
    }

    // the same edge cases as the public names
    errno = 0;
    EXPECT_EQ(opaque(lmalloc(opaque(SIZE_MAX))), nullptr);
    EXPECT_EQ(errno, ENOMEM);
    errno = 0;
    EXPECT_EQ(opaque(lcalloc(opaque(SIZE_MAX), opaque((size_t)2))), nullptr);
    EXPECT_EQ(errno, ENOMEM);
    void *p = opaque(lmalloc(opaque((size_t)10)));
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(opaque(lrealloc(opaque(p), opaque((size_t)0))), nullptr);  // frees
    p = opaque(lrealloc(opaque((void *)nullptr), opaque((size_t)0)));      // malloc(0)
    EXPECT_NE(p, nullptr);
    lfree(opaque(p));
    lfree(opaque((void *)nullptr));
    errno = 0;
    EXPECT_EQ(opaque(lmemalign(opaque(kHalf + 1), opaque((size_t)1))), nullptr);
    EXPECT_EQ(errno, EINVAL);
    errno = 0;
    EXPECT_EQ(opaque(lpvalloc(opaque(SIZE_MAX))), nullptr);
    EXPECT_EQ(errno, ENOMEM);
    p = opaque(lpvalloc(opaque((size_t)0)));
    EXPECT_NE(p, nullptr);
    EXPECT_TRUE(is_aligned(p, pg));
    lfree(opaque(p));
}

// ---------------------------------------------------------------------------------------
// cross-function pairing

struct Release {
    const char *name;
    std::function<void(void *)> release;
};

// Every way to give a block back; all must accept every block.
std::vector<Release> releasers()
{
    std::vector<Release> v = {
        {"free", [](void *p) { free(p); }},
        {"realloc(p,0)",
         [](void *p) {
             void *q = realloc(p, 0);
             EXPECT_EQ(q, nullptr) << "realloc(p, 0) must free and return NULL";
         }},
        {"reallocarray(p,0,1)",
         [](void *p) {
             void *q = reallocarray(p, 0, 1);
             EXPECT_EQ(q, nullptr) << "reallocarray(p, 0, 1) must free and return NULL";
         }},
    };
    if (auto f = lookup_cfree())
        v.push_back({"cfree", [f](void *p) { f(p); }});
    if (auto f = lookup<free_fn>("__libc_free"))
        v.push_back({"__libc_free", [f](void *p) { f(p); }});
    if (auto f = lookup<realloc_fn>("__libc_realloc"))
        v.push_back({"__libc_realloc(p,0)", [f](void *p) { EXPECT_EQ(f(p, 0), nullptr); }});
    return v;
}

// A block from any allocator can be grown and shrunk by realloc (content kept, alignment
// kept at 16) and released by any release function.
TEST(CrossFunction, EveryAllocatorPairsWithReallocAndEveryRelease)
{
    const std::vector<Release> rel = releasers();
    ASSERT_EQ(rel.size(), 6u) << "cfree, __libc_free or __libc_realloc missing";
    size_t k = 0;
    for (const Allocator &a : allocators()) {
        for (size_t n : {(size_t)1, (size_t)100, (size_t)5000, (size_t)70000, (size_t)1 << 20,
                         (size_t)3 << 20}) {
            for (const Release &r : rel) {
                uint32_t seed = (uint32_t)(k++);
                void *p = opaque(a.alloc(opaque(n)));
                ASSERT_NE(p, nullptr) << a.name << " " << n;
                fill(p, n, seed);
                size_t grown = n * 2 + 3;
                void *q = opaque(realloc(opaque(p), opaque(grown)));
                ASSERT_NE(q, nullptr) << a.name << " " << n << " grown";
                EXPECT_TRUE(is_aligned(q, 16));
                EXPECT_EQ(first_mismatch(q, n, seed), kNoMismatch)
                    << "realloc grow of a block from " << a.name << " of " << n;
                fill(q, grown, seed + 1);
                size_t shrunk = n / 3 + 1;
                p = opaque(realloc(opaque(q), opaque(shrunk)));
                ASSERT_NE(p, nullptr);
                EXPECT_EQ(first_mismatch(p, shrunk, seed + 1), kNoMismatch)
                    << "realloc shrink of a block from " << a.name << " of " << n;
                r.release(opaque(p));
                // and directly, without the realloc in between
                p = opaque(a.alloc(opaque(n)));
                ASSERT_NE(p, nullptr);
                fill(p, n, seed);
                r.release(opaque(p));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// mallinfo, mallinfo2, malloc_trim, malloc_stats

// glibc: uordblks = system_mem - avail summed over arenas; 100 KB blocks are below the
// mmap threshold (128 KiB default, only ever raised dynamically) so they are heap chunks and
// count in uordblks, not hblkhd. Freed, they go to bins/top and count as free again.
TEST(Mallinfo2, InUseBytesRiseWithAllocationAndFallWithFree)
{
    const size_t block = 100 * 1024, count = 100, total = block * count;
    struct mallinfo2 m0 = mallinfo2();
    std::vector<void *> v;
    for (size_t i = 0; i < count; i++) {
        void *p = opaque(malloc(opaque(block)));
        ASSERT_NE(p, nullptr);
        memset(p, (int)i, block);
        v.push_back(p);
    }
    struct mallinfo2 m1 = mallinfo2();
    EXPECT_GE(m1.uordblks, m0.uordblks + total * 9 / 10)
        << "uordblks " << m0.uordblks << " -> " << m1.uordblks << " after " << total
        << " bytes allocated (hblkhd " << m0.hblkhd << " -> " << m1.hblkhd << ")";
    for (void *p : v)
        free(opaque(p));
    struct mallinfo2 m2 = mallinfo2();
    EXPECT_LE(m2.uordblks + total * 9 / 10, m1.uordblks)
        << "uordblks " << m1.uordblks << " -> " << m2.uordblks << " after freeing " << total;
}

// glibc: arena = system_mem, fordblks = avail, uordblks = system_mem - avail, so
// uordblks + fordblks == arena exactly; usmblks is always 0; keepcost (top) <= fordblks.
TEST(Mallinfo2, FieldsAreConsistent)
{
    std::vector<void *> v;
    for (size_t n : sizes())
        v.push_back(opaque(malloc(opaque(n))));
    for (size_t i = 0; i < v.size(); i += 2)
        free(opaque(v[i]));
    struct mallinfo2 m = mallinfo2();
    EXPECT_EQ(m.uordblks + m.fordblks, m.arena);
    EXPECT_EQ(m.usmblks, 0u);
    EXPECT_LE(m.keepcost, m.fordblks);
    EXPECT_LE(m.fsmblks, m.fordblks);
    EXPECT_GE(m.ordblks, 1u);  // top always counts
    for (size_t i = 1; i < v.size(); i += 2)
        free(opaque(v[i]));
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
// mallinfo is mallinfo2 truncated to int fields (deprecated since 2.33, still exported).
TEST(Mallinfo, DeprecatedVariantTracksAllocationAndFree)
{
    const size_t block = 100 * 1024, count = 100, total = block * count;
    struct mallinfo m0 = mallinfo();
    std::vector<void *> v;
    for (size_t i = 0; i < count; i++) {
        void *p = opaque(malloc(opaque(block)));
        ASSERT_NE(p, nullptr);
        memset(p, (int)i, block);
        v.push_back(p);
    }
    struct mallinfo m1 = mallinfo();
    EXPECT_GE((long long)m1.uordblks, (long long)m0.uordblks + (long long)(total * 9 / 10));
    EXPECT_EQ((long long)m1.uordblks + m1.fordblks, (long long)m1.arena);
    for (void *p : v)
        free(opaque(p));
    struct mallinfo m2 = mallinfo();
    EXPECT_LE((long long)m2.uordblks + (long long)(total * 9 / 10), (long long)m1.uordblks);
    EXPECT_EQ(m2.usmblks, 0);
}
#pragma GCC diagnostic pop

// glibc: malloc_trim ORs mtrim over the arenas: 1 if memory was released, else 0.
TEST(MallocTrim, ReturnsZeroOrOne)
{
    std::vector<void *> v;
    for (int i = 0; i < 64; i++) {
        void *p = opaque(malloc(opaque((size_t)100000)));
        memset(p, 1, 100000);
        v.push_back(p);
    }
    for (void *p : v)
        free(opaque(p));
    for (size_t pad : {(size_t)0, (size_t)4096, (size_t)1 << 20, SIZE_MAX}) {
        int r = malloc_trim(opaque(pad));
        EXPECT_TRUE(r == 0 || r == 1) << "malloc_trim(" << pad << ") = " << r;
    }
    // the allocator still works afterwards
    void *p = opaque(malloc(opaque((size_t)200000)));
    ASSERT_NE(p, nullptr);
    fill(p, 200000, 1);
    free(opaque(p));
}

// Runs fn with fd 2 redirected to a temporary file and returns what was written there.
std::string capture_stderr(const std::function<void()> &fn)
{
    fflush(stderr);
    FILE *tmp = tmpfile();
    if (!tmp)
        return "<tmpfile failed>";
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    std::string out;
    rewind(tmp);
    char buf[4096];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, tmp)) > 0)
        out.append(buf, r);
    fclose(tmp);
    return out;
}

// glibc prints, to stderr: "Arena N:" blocks with "system bytes" and "in use bytes", then
// "Total (incl. mmap):", "max mmap regions" and "max mmap bytes".
TEST(MallocStats, WritesAReportToStderr)
{
    void *p = opaque(malloc(opaque((size_t)300000)));
    std::string out = capture_stderr([] { malloc_stats(); });
    free(opaque(p));
    EXPECT_FALSE(out.empty()) << "malloc_stats wrote nothing to fd 2";
    EXPECT_NE(out.find("system bytes"), std::string::npos) << out;
    EXPECT_NE(out.find("in use bytes"), std::string::npos) << out;
    EXPECT_NE(out.find("Total (incl. mmap):"), std::string::npos) << out;
    // and stderr still works afterwards
    std::string again = capture_stderr([] { fputs("after\n", stderr); });
    EXPECT_EQ(again, "after\n");
}

// ---------------------------------------------------------------------------------------
// threads

// Each thread keeps a few live blocks and does random malloc / realloc / free on them,
// sizes 1 B .. 2 MiB (log-uniform, so every size class and both sides of every threshold
// are hit), and checks each block's content before every realloc and free. A sample of
// every block (its first and last 256 bytes and every 997th byte) is stamped, so the check
// is cheap even for 2 MiB blocks.
struct Block {
    unsigned char *p = nullptr;
    size_t n = 0;
    uint32_t seed = 0;
};
template <class F>
void for_samples(size_t n, F f)
{
    const size_t head = n < 256 ? n : 256;
    const size_t tail = n > 512 ? n - 256 : head;  // where the last 256 bytes start
    for (size_t i = 0; i < head; i++)
        f(i);
    for (size_t i = 997; i < tail; i += 997)
        f(i);
    for (size_t i = tail; i < n; i++)
        f(i);
}
void stamp(const Block &b)
{
    for_samples(b.n, [&](size_t i) { b.p[i] = pat(i, b.seed); });
}
// first sampled offset below `upto` whose byte is wrong, or kNoMismatch
size_t verify(const Block &b, size_t upto)
{
    size_t bad = kNoMismatch;
    for_samples(b.n, [&](size_t i) {
        if (bad == kNoMismatch && i < upto && b.p[i] != pat(i, b.seed))
            bad = i;
    });
    return bad;
}

TEST(Threads, ConcurrentRandomMallocReallocFreeKeepContent)
{
    constexpr int kThreads = 4, kOps = 100000, kLive = 24;
    constexpr size_t kMax = (size_t)2 << 20;
    std::atomic<long> failures{0};
    std::atomic<long> ops_done{0};
    std::string first_error[kThreads];

    auto worker = [&](int t) {
        std::mt19937_64 rng(0x5eed + t);
        Block live[kLive];
        auto random_size = [&]() -> size_t {
            size_t bits = rng() % 22;  // 2^0 .. 2^21 (2 MiB)
            size_t n = 1 + rng() % ((size_t)1 << bits);
            return n > kMax ? kMax : n;
        };
        auto fail = [&](const std::string &what) {
            if (failures.fetch_add(1) < 20 && first_error[t].empty())
                first_error[t] = what;
        };
        for (int op = 0; op < kOps; op++) {
            Block &b = live[rng() % kLive];
            if (!b.p) {
                b.n = random_size();
                b.seed = (uint32_t)rng();
                b.p = static_cast<unsigned char *>(opaque(malloc(opaque(b.n))));
                if (!b.p) {
                    fail("malloc(" + std::to_string(b.n) + ") failed");
                    continue;
                }
                if (((uintptr_t)b.p & 15) != 0)
                    fail("malloc result not 16-byte aligned");
                stamp(b);
                continue;
            }
            size_t bad = verify(b, b.n);
            if (bad != kNoMismatch) {
                fail("block of " + std::to_string(b.n) + " corrupted at " + std::to_string(bad));
                free(b.p);
                b.p = nullptr;
                continue;
            }
            if (rng() % 3 == 0) {
                free(opaque(b.p));
                b.p = nullptr;
            } else {
                size_t n = random_size();
                void *q = opaque(realloc(opaque(b.p), opaque(n)));
                if (!q) {
                    fail("realloc to " + std::to_string(n) + " failed");
                    continue;
                }
                Block nb{static_cast<unsigned char *>(q), n, b.seed};
                // the prefix kept by realloc: the samples of the old block below the new size
                Block old_view{nb.p, b.n, b.seed};
                size_t keep = b.n < n ? b.n : n;
                bad = verify(old_view, keep);
                if (bad != kNoMismatch)
                    fail("realloc " + std::to_string(b.n) + " -> " + std::to_string(n) +
                         " lost the prefix at " + std::to_string(bad));
                if (((uintptr_t)q & 15) != 0)
                    fail("realloc result not 16-byte aligned");
                b = nb;
                b.seed = (uint32_t)rng();
                stamp(b);
            }
            ops_done.fetch_add(1, std::memory_order_relaxed);
        }
        for (Block &b : live) {
            if (b.p && verify(b, b.n) != kNoMismatch)
                fail("block corrupted at the end");
            free(b.p);
        }
    };
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; t++)
        threads.emplace_back(worker, t);
    for (auto &th : threads)
        th.join();
    EXPECT_EQ(failures.load(), 0);
    for (int t = 0; t < kThreads; t++)
        EXPECT_TRUE(first_error[t].empty()) << "thread " << t << ": " << first_error[t];
}

// ---------------------------------------------------------------------------------------
// shim only: the VARSLOT_MIN_SIZE=1 run must really exercise routed blocks

// Skipped without the shim. With VARSLOT_MIN_SIZE=1 every allocation that fits a slot is
// routed, so the whole suite above ran on shared-segment blocks; this makes sure it did.
TEST(ShimRouting, MinSizeOneRoutesSmallAllocations)
{
    auto owns = lookup<vs_owns_fn>("vs_owns");
    if (!owns)
        GTEST_SKIP() << "libvarslot-preload.so is not loaded (plain glibc run)";
    const char *ms = getenv("VARSLOT_MIN_SIZE");
    if (!ms || strcmp(ms, "1") != 0)
        GTEST_SKIP() << "VARSLOT_MIN_SIZE is not 1";
    for (size_t n : {(size_t)1, (size_t)100, (size_t)4096, (size_t)70000, (size_t)1 << 20}) {
        void *p = opaque(malloc(opaque(n)));
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(owns(p), 1) << "malloc(" << n << ") not routed with VARSLOT_MIN_SIZE=1";
        free(opaque(p));
        p = opaque(calloc(opaque(n), opaque((size_t)1)));
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(owns(p), 1) << "calloc(" << n << ", 1) not routed with VARSLOT_MIN_SIZE=1";
        free(opaque(p));
    }
    int x;
    EXPECT_EQ(owns(&x), 0);
}

// ---------------------------------------------------------------------------------------
// mallopt

// Calls mallopt(param, value) for each pair in a forked child, so the tuning it sets cannot
// slow down or change the other tests, whatever order they run in (glibc: setting
// M_MMAP_THRESHOLD also switches the dynamic threshold off for good, and then every block
// above 1 MiB is a fresh mmap). The child then checks that the allocator still works (a
// 2 MiB and a 100-byte block, written and read back). Returns the mallopt results in order,
// then 1 if that check passed; empty if the child did not report.
std::vector<int> mallopt_in_child(const std::vector<std::pair<int, int>> &calls)
{
    int fds[2];
    if (calls.size() > 60 || pipe(fds) != 0)
        return {};
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return {};
    }
    if (pid == 0) {
        close(fds[0]);
        int out[64];
        size_t k = 0;
        for (auto &c : calls)
            out[k++] = mallopt(c.first, c.second);
        int ok = 1;
        for (size_t n : {(size_t)2 << 20, (size_t)100}) {
            void *p = opaque(malloc(opaque(n)));
            if (!p) {
                ok = 0;
                continue;
            }
            fill(p, n, 1);
            if (first_mismatch(p, n, 1) != kNoMismatch)
                ok = 0;
            free(opaque(p));
        }
        out[k++] = ok;
        ssize_t w = write(fds[1], out, k * sizeof(int));
        _exit(w == (ssize_t)(k * sizeof(int)) ? 0 : 1);
    }
    close(fds[1]);
    std::vector<int> results;
    int v;
    while (read(fds[0], &v, sizeof v) == (ssize_t)sizeof v)
        results.push_back(v);
    close(fds[0]);
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return {};
    return results;
}

// glibc 2.36 __libc_mallopt starts with res = 1 and only the helpers that validate can
// return 0: M_MMAP_THRESHOLD (no upper bound any more in 2.36), M_ARENA_MAX, M_TRIM_THRESHOLD,
// M_TOP_PAD and an M_MXFAST up to 160 return 1; M_ARENA_MAX 0 is ignored and still returns 1.
TEST(Mallopt, KnownParametersReturnOne)
{
    std::vector<int> r = mallopt_in_child({{M_MMAP_THRESHOLD, 1 << 20},
                                           {M_ARENA_MAX, 2},
                                           {M_ARENA_MAX, 0},
                                           {M_TRIM_THRESHOLD, 1 << 20},
                                           {M_TOP_PAD, 64 << 10},
                                           {M_MXFAST, 64}});
    EXPECT_EQ(r, (std::vector<int>{1, 1, 1, 1, 1, 1, 1}))
        << "M_MMAP_THRESHOLD, M_ARENA_MAX 2, M_ARENA_MAX 0, M_TRIM_THRESHOLD, M_TOP_PAD, "
           "M_MXFAST 64, then 'allocator still works'";
}
// glibc 2.36: the switch has no default case, so an unknown parameter keeps res = 1.
TEST(Mallopt, UnknownParameterReturnsOne)
{
    std::vector<int> r = mallopt_in_child({{12345, 1}, {-100, 5}, {0, 0}});
    EXPECT_EQ(r, (std::vector<int>{1, 1, 1, 1})) << "mallopt(12345, 1), mallopt(-100, 5), "
                                                    "mallopt(0, 0), then 'allocator still works'";
}
// glibc: do_set_mxfast returns 0 for a value above MAX_FAST_SIZE (80 * sizeof(size_t) / 4).
TEST(Mallopt, MxfastAboveLimitReturnsZero)
{
    std::vector<int> r = mallopt_in_child({{M_MXFAST, 1000}});
    EXPECT_EQ(r, (std::vector<int>{0, 1})) << "mallopt(M_MXFAST, 1000), then 'allocator still works'";
}

}  // namespace
