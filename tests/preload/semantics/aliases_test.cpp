// glibc's internal names (__libc_*), and every allocator paired with every release
// (preload/shim.c: the aliases at its end; every entry point against every other).
#include "semantics.h"

namespace semantics {
namespace {

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

} // namespace
} // namespace semantics
