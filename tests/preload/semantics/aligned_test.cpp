// posix_memalign, memalign, aligned_alloc, valloc and pvalloc (preload/shim.c: "aligned
// allocation, with glibc 2.36's rules").
#include "semantics.h"

namespace semantics {
namespace {

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

} // namespace
} // namespace semantics
