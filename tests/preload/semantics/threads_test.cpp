// Many threads at once through malloc, realloc and free (preload/shim.c and the segment
// behind it).
#include "semantics.h"

namespace semantics {
namespace {

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

} // namespace
} // namespace semantics
