// malloc_usable_size, mallinfo, mallinfo2, malloc_trim, malloc_stats and mallopt
// (preload/shim.c: "sizes and statistics").
#include "semantics.h"

namespace semantics {
namespace {

// ---------------------------------------------------------------------------------------
// malloc_usable_size

// glibc: "if (m == NULL) return 0".
TEST(MallocUsableSize, NullIsZero)
{
    EXPECT_EQ(malloc_usable_size(opaque((void *)nullptr)), 0u);
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

} // namespace
} // namespace semantics
