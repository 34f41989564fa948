// malloc, calloc, free and cfree (preload/shim.c: "malloc, free, calloc").
#include "semantics.h"

namespace semantics {
namespace {

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

} // namespace
} // namespace semantics
