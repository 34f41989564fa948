// realloc and reallocarray (preload/shim.c: "realloc").
#include "semantics.h"

namespace semantics {
namespace {

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

} // namespace
} // namespace semantics
