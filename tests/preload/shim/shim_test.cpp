// The malloc family's own paths through the shim (preload/shim.c): realloc across the
// routed/fallback boundary, calloc on a reused slot, routed and unrouted calls from many threads.
#include "shim_test.h"

namespace shimtest {
namespace {

// ---------------------------------------------------------------------------------------
// realloc across the boundary; calloc of a reused slot

using Realloc = Shim;

TEST_F(Realloc, RoutedToFallbackWhenShrinkingBelowTheThreshold)
{
    size_t m = routed_size(view(), 2 * min_size());
    unsigned char *p = static_cast<unsigned char *>(malloc(opaque(m)));
    ASSERT_TRUE(p);
    ASSERT_TRUE(owned(p));
    fill(p, m, 21);
    uint64_t h = api().handle_of(p);
    unsigned char *q = static_cast<unsigned char *>(realloc(p, opaque<size_t>(1000)));
    ASSERT_TRUE(q);
    EXPECT_FALSE(owned(q)) << "shrunk below VARSLOT_MIN_SIZE: moved to the fallback";
    EXPECT_EQ(mismatch(q, 1000, 21), SIZE_MAX) << "content kept";
    EXPECT_TRUE(view().released(h)) << "the old slot must be freed";
    free(q);
}

TEST_F(Realloc, FallbackToRoutedWhenGrowingPastTheThreshold)
{
    size_t m = routed_size(view(), 4 * min_size());
    unsigned char *p = static_cast<unsigned char *>(malloc(opaque<size_t>(1000)));
    ASSERT_TRUE(p);
    ASSERT_FALSE(owned(p));
    fill(p, 1000, 22);
    unsigned char *q = static_cast<unsigned char *>(realloc(p, opaque(m)));
    ASSERT_TRUE(q);
    EXPECT_TRUE(owned(q)) << "grown past VARSLOT_MIN_SIZE: moved into the segment";
    EXPECT_EQ(mismatch(q, 1000, 22), SIZE_MAX) << "content kept";
    memset(q + 1000, 0xee, m - 1000);
    EXPECT_EQ(view().info(api().handle_of(q)).size, m);
    free(q);
}

TEST_F(Realloc, WithinTheSegmentKeepsContentAcrossClasses)
{
    size_t m = min_size(), largest = view().largest_slot();
    if (largest < 4 * m)
        GTEST_SKIP() << "needs classes up to 4x VARSLOT_MIN_SIZE";
    unsigned char *p = static_cast<unsigned char *>(malloc(opaque(m)));
    ASSERT_TRUE(p && owned(p));
    fill(p, m, 23);
    unsigned char *q = static_cast<unsigned char *>(realloc(p, opaque(m + m / 2)));
    ASSERT_TRUE(q && owned(q));
    EXPECT_EQ(mismatch(q, m, 23), SIZE_MAX);
    fill(q, m + m / 2, 24);
    unsigned char *r = static_cast<unsigned char *>(realloc(q, opaque(4 * m)));
    ASSERT_TRUE(r && owned(r));
    EXPECT_EQ(mismatch(r, m + m / 2, 24), SIZE_MAX);
    unsigned char *s = static_cast<unsigned char *>(realloc(r, opaque(m)));
    ASSERT_TRUE(s && owned(s));
    EXPECT_EQ(mismatch(s, m, 24), SIZE_MAX);
    uint64_t h = api().handle_of(s);
    EXPECT_EQ(realloc(s, 0), nullptr) << "realloc(p, 0) frees p and returns NULL";
    EXPECT_TRUE(view().released(h));
}

TEST_F(Realloc, UnderATagScopeStaysRouted)
{
    ASSERT_EQ(api().push(5), 0);
    void *p = malloc(opaque<size_t>(100));
    fill(p, 100, 25);
    void *q = realloc(p, opaque<size_t>(3000));
    api().pop();
    ASSERT_TRUE(q);
    EXPECT_TRUE(owned(q));
    EXPECT_EQ(mismatch(q, 100, 25), SIZE_MAX);
    free(q);
}

using Calloc = Shim;

TEST_F(Calloc, ZeroesASlotDirtiedBefore)
{
    size_t m = routed_size(view(), min_size());
    constexpr int kBlocks = 6;
    std::set<void *> dirtied;
    void *b[kBlocks];
    for (int i = 0; i < kBlocks; i++) {
        b[i] = malloc(opaque(m));
        ASSERT_TRUE(b[i] && owned(b[i]));
        memset(b[i], 0xAB, m);
        dirtied.insert(b[i]);
    }
    for (int i = kBlocks - 1; i >= 0; i--)
        free(b[i]);
    int reused = 0;
    for (int i = 0; i < kBlocks; i++) {
        b[i] = i % 2 ? calloc(opaque(m), 1) : calloc(1, opaque(m));
        ASSERT_TRUE(b[i]);
        EXPECT_TRUE(owned(b[i]));
        reused += dirtied.count(b[i]) ? 1 : 0;
        EXPECT_TRUE(all_bytes(b[i], m, 0)) << "calloc block " << i << " is not all zero";
    }
    EXPECT_GT(reused, 0) << "no dirtied slot was reused: this test proved nothing";
    for (int i = 0; i < kBlocks; i++)
        free(b[i]);

    // The same for a small calloc in a tag scope.
    ASSERT_EQ(api().push(6), 0);
    void *s = malloc(opaque<size_t>(300));
    memset(s, 0xCD, 300);
    free(s);
    void *z = calloc(3, opaque<size_t>(100));
    api().pop();
    ASSERT_TRUE(z);
    EXPECT_TRUE(owned(z));
    EXPECT_TRUE(all_bytes(z, 300, 0));
    free(z);
}

// ---------------------------------------------------------------------------------------
// threads

using Threads = Shim;

TEST_F(Threads, RoutedAndUnroutedAllocationsConcurrently)
{
    constexpr int kThreads = 8, kIters = 400, kLive = 4;
    size_t m = routed_size(view(), min_size()), largest = view().largest_slot();
    std::atomic<int> errors{0};
    std::mutex mu;
    std::string first_error;
    auto report = [&](const std::string &what) {
        if (errors.fetch_add(1) == 0) {
            std::lock_guard<std::mutex> g(mu);
            first_error = what;
        }
    };
    auto work = [&](int t) {
        struct Block {
            unsigned char *p = nullptr;
            size_t n = 0;
            uint32_t seed = 0;
            bool routed = false;
        } live[kLive];
        uint32_t rng = 0x9e3779b9u * (uint32_t)(t + 1);
        auto next = [&] { return rng = rng * 1664525u + 1013904223u; };
        for (int it = 0; it < kIters && errors.load() == 0; it++) {
            Block &b = live[(next() >> 8) % kLive];
            uint32_t seed = (uint32_t)(t << 20 | it);
            if (b.p) {
                if (mismatch(b.p, b.n, b.seed) != SIZE_MAX)
                    report("thread " + std::to_string(t) + ": block corrupted");
                if (owned(b.p) != b.routed)
                    report("thread " + std::to_string(t) + ": vs_owns changed");
                if (next() % 2) {
                    free(b.p);
                    b = Block();
                    continue;
                }
                // realloc across the boundary, either way
                size_t n = b.routed ? 100 + next() % 4000
                                    : m + next() % (std::min(m, largest - m) + 1);
                unsigned char *q = static_cast<unsigned char *>(realloc(b.p, n));
                if (!q) {
                    report("realloc failed");
                    continue;
                }
                size_t keep = n < b.n ? n : b.n;
                if (mismatch(q, keep, b.seed) != SIZE_MAX)
                    report("thread " + std::to_string(t) + ": realloc lost content");
                b.p = q;
                b.n = n;
                b.routed = !b.routed;
                if (owned(q) != b.routed)
                    report("thread " + std::to_string(t) + ": realloc to " + std::to_string(n) +
                           " bytes: routed=" + std::to_string(owned(q)));
                fill(q, n, b.seed);
                continue;
            }
            switch (next() % 3) {
            case 0: // routed by size
                b.n = m + next() % m;
                if (b.n > largest)
                    b.n = largest;
                b.p = static_cast<unsigned char *>(malloc(b.n));
                b.routed = true;
                break;
            case 1: // not routed
                b.n = 16 + next() % 8000;
                b.p = static_cast<unsigned char *>(malloc(b.n));
                b.routed = false;
                break;
            default: { // routed by a tag scope, tag visible in the segment
                api().push(1000 + t);
                b.n = 16 + next() % 2000;
                b.p = static_cast<unsigned char *>(malloc(b.n));
                api().pop();
                b.routed = true;
                uint64_t h = b.p ? api().handle_of(b.p) : 0;
                if (b.p && view().info(h).tag != (uint32_t)(1000 + t))
                    report("thread " + std::to_string(t) + ": wrong tag in the segment");
                break;
            }
            }
            if (!b.p) {
                report("malloc failed");
                continue;
            }
            if (owned(b.p) != b.routed)
                report("thread " + std::to_string(t) + ": malloc(" + std::to_string(b.n) +
                       ") routed=" + std::to_string(owned(b.p)) + ", want " +
                       std::to_string(b.routed));
            b.seed = seed;
            fill(b.p, b.n, seed);
        }
        for (Block &b : live)
            if (b.p) {
                if (mismatch(b.p, b.n, b.seed) != SIZE_MAX)
                    report("thread " + std::to_string(t) + ": block corrupted at the end");
                free(b.p);
            }
    };
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; t++)
        threads.emplace_back(work, t);
    for (auto &th : threads)
        th.join();
    EXPECT_EQ(errors.load(), 0) << "first error: " << first_error;
}

} // namespace
} // namespace shimtest
