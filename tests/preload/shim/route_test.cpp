// Which allocations go to the segment (preload/route.c): by size, by tag scope
// (vs_tag_push, preload/api.c) and by the object that called malloc (VARSLOT_CALLERS).
#include "shim_test.h"

namespace shimtest {
namespace {

// ---------------------------------------------------------------------------------------
// routing by size

using Routing = Shim;

TEST_F(Routing, BySize)
{
    size_t m = min_size();
    ASSERT_GT(m, 4096u) << "the runner sets VARSLOT_MIN_SIZE=64K";
    size_t largest = view().largest_slot();
    ASSERT_GE(largest, m) << "the pool's largest class cannot hold a block of the threshold";

    void *at = malloc(opaque(m));
    void *below = malloc(opaque(m - 1));
    void *small = malloc(opaque<size_t>(100));
    void *big = malloc(opaque(largest));
    void *too_big = malloc(opaque(largest + 1));
    ASSERT_TRUE(at && below && small && big && too_big);
    EXPECT_TRUE(owned(at)) << "malloc(VARSLOT_MIN_SIZE) must be routed";
    EXPECT_TRUE(owned(static_cast<char *>(at) + m - 1)) << "vs_owns of an interior pointer";
    EXPECT_FALSE(owned(below)) << "malloc(VARSLOT_MIN_SIZE - 1) must not be routed";
    EXPECT_FALSE(owned(small));
    EXPECT_TRUE(owned(big)) << "a block of the largest class's size";
    EXPECT_FALSE(owned(too_big)) << "larger than any class: falls back";
    EXPECT_EQ(api().handle_of(small), 0u) << "vs_handle_of of a fallback block";
    int local = 0;
    EXPECT_FALSE(owned(&local));
    EXPECT_FALSE(owned(nullptr));

    // Size-routed blocks carry tag 0 and their requested size.
    uint64_t h = api().handle_of(at);
    ASSERT_NE(h, 0u);
    vs_slot_info i = view().info(h);
    EXPECT_EQ(i.state, (uint32_t)VS_SLOT_ALLOCATED);
    EXPECT_EQ(i.owner, my_peer_);
    EXPECT_EQ(i.tag, 0u);
    EXPECT_EQ(i.size, m);

    // Every byte is usable, and stays put.
    fill(at, m, 1);
    fill(big, largest, 2);
    fill(too_big, largest + 1, 3);
    EXPECT_EQ(mismatch(at, m, 1), SIZE_MAX);
    EXPECT_EQ(mismatch(big, largest, 2), SIZE_MAX);
    EXPECT_EQ(mismatch(too_big, largest + 1, 3), SIZE_MAX);

    free(at);
    EXPECT_TRUE(view().released(h)) << "free() of a routed block must return its slot";
    free(below);
    free(small);
    free(big);
    free(too_big);
}

TEST_F(Routing, OtherEntryPointsBySize)
{
    size_t m = routed_size(view(), min_size());
    void *c = calloc(opaque(m / 16), 16);
    void *pm = nullptr;
    ASSERT_EQ(posix_memalign(&pm, 4096, opaque(m)), 0);
    void *al = aligned_alloc(256, opaque(m));
    char *nw = new char[opaque(m)];
    void *small_c = calloc(opaque<size_t>(10), 10);
    ASSERT_TRUE(c && pm && al && small_c);
    EXPECT_TRUE(owned(c)) << "calloc";
    EXPECT_TRUE(owned(pm)) << "posix_memalign";
    EXPECT_EQ((uintptr_t)pm % 4096, 0u);
    EXPECT_TRUE(owned(al)) << "aligned_alloc";
    EXPECT_EQ((uintptr_t)al % 256, 0u);
    EXPECT_TRUE(owned(nw)) << "operator new[]";
    EXPECT_FALSE(owned(small_c));
    EXPECT_TRUE(all_bytes(c, m, 0));
    fill(nw, m, 9);
    EXPECT_EQ(mismatch(nw, m, 9), SIZE_MAX);
    free(c);
    free(pm);
    free(al);
    delete[] nw;
    free(small_c);
}

// A free that misses the segment (the block handed to the fallback allocator, or dropped)
// leaves its slot allocated. Each way of freeing must return the slot; a class filled to its
// last slot, emptied and filled again must be routed again, into the very same slots.
TEST_F(Routing, FreeGoesBackToTheSegment)
{
    size_t m = routed_size(view(), min_size()), big = routed_size(view(), 1 << 20);
    struct Freed {
        const char *how;
        void *p;
        void (*release)(void *p, size_t n);
        size_t n;
    } blocks[] = {
        {"malloc + free", malloc(opaque(m)), [](void *p, size_t) { free(p); }, m},
        {"calloc + free", calloc(opaque(big), 1), [](void *p, size_t) { free(p); }, big},
        {"realloc(p, 0)", malloc(opaque(big)), [](void *p, size_t) { EXPECT_EQ(realloc(p, 0), nullptr); }, big},
        {"new[] + delete[]", new char[opaque(m)], [](void *p, size_t) { delete[] static_cast<char *>(p); }, m},
        {"new + sized delete", ::operator new(opaque(big)), [](void *p, size_t n) { ::operator delete(p, n); }, big},
    };
    for (Freed &b : blocks) {
        ASSERT_TRUE(b.p && owned(b.p)) << b.how << ": not routed";
        uint64_t h = api().handle_of(b.p);
        b.release(b.p, b.n);
        EXPECT_TRUE(view().released(h)) << b.how << ": the slot is still allocated";
    }

    size_t largest = view().largest_slot(), n = view().free_slots_for(largest);
    if (n == 0 || n > 64)
        GTEST_SKIP() << n << " free slots in the largest class: want 1..64";
    std::vector<void *> first, again;
    for (size_t i = 0; i < n; i++)
        first.push_back(malloc(opaque(largest))); // untouched: no page gets backed
    size_t routed = (size_t)std::count_if(first.begin(), first.end(), owned);
    EXPECT_EQ(routed, n) << "every free slot of the largest class should be taken";
    EXPECT_EQ(view().free_slots_for(largest), 0u);
    for (void *p : first)
        free(p);
    EXPECT_EQ(view().free_slots_for(largest), n) << "free() did not return every slot";
    for (size_t i = 0; i < n; i++)
        again.push_back(malloc(opaque(largest)));
    routed = (size_t)std::count_if(again.begin(), again.end(), owned);
    EXPECT_EQ(routed, n) << "after the frees, the class should take as many blocks again";
    EXPECT_EQ(std::set<void *>(first.begin(), first.end()), std::set<void *>(again.begin(), again.end()))
        << "the same slots should have been handed out again";
    for (void *p : again)
        free(p);
}

// ---------------------------------------------------------------------------------------
// routing by tag scope

using TagScope = Shim;

TEST_F(TagScope, RoutesSmallAllocationsWithTheirTag)
{
    ASSERT_EQ(api().push(4242), 0);
    void *in = malloc(opaque<size_t>(100));
    api().pop();
    void *out = malloc(opaque<size_t>(100));
    ASSERT_TRUE(in && out);
    EXPECT_TRUE(owned(in)) << "a 100-byte malloc inside vs_tag_push must be routed";
    EXPECT_FALSE(owned(out)) << "after vs_tag_pop, a 100-byte malloc must not be routed";

    uint64_t h = api().handle_of(in);
    ASSERT_NE(h, 0u);
    vs_slot_info i = view().info(h);
    EXPECT_EQ(i.state, (uint32_t)VS_SLOT_ALLOCATED);
    EXPECT_EQ(i.tag, 4242u) << "the slot must carry the scope's tag";
    EXPECT_EQ(i.size, 100u);
    EXPECT_EQ(i.owner, my_peer_);
    fill(in, 100, 5);
    EXPECT_EQ(mismatch(in, 100, 5), SIZE_MAX);
    free(in);
    EXPECT_TRUE(view().released(h));
    free(out);
}

TEST_F(TagScope, NestsAndPops)
{
    void *a, *b, *c, *d;
    ASSERT_EQ(api().push(1), 0);
    ASSERT_EQ(api().push(2), 0);
    a = malloc(opaque<size_t>(100));
    api().pop();
    b = malloc(opaque<size_t>(100));
    api().pop();
    c = malloc(opaque<size_t>(100));
    api().pop(); // none open: no effect
    api().pop();
    ASSERT_EQ(api().push(3), 0) << "pushing after surplus pops";
    d = malloc(opaque<size_t>(100));
    api().pop();
    ASSERT_TRUE(a && b && c && d);
    EXPECT_TRUE(owned(a));
    EXPECT_TRUE(owned(b));
    EXPECT_FALSE(owned(c)) << "every scope closed";
    EXPECT_TRUE(owned(d));
    EXPECT_EQ(view().info(api().handle_of(a)).tag, 2u) << "the innermost scope's tag";
    EXPECT_EQ(view().info(api().handle_of(b)).tag, 1u) << "the outer tag again after a pop";
    EXPECT_EQ(view().info(api().handle_of(d)).tag, 3u);
    free(a);
    free(b);
    free(c);
    free(d);
}

TEST_F(TagScope, DepthLimit)
{
    for (int i = 0; i < VS_TAG_MAX_DEPTH; i++)
        ASSERT_EQ(api().push(100 + i), 0) << "push number " << i + 1;
    int over = api().push(999);
    void *p = malloc(opaque<size_t>(100));
    for (int i = 0; i < VS_TAG_MAX_DEPTH; i++)
        api().pop();
    void *q = malloc(opaque<size_t>(100));
    EXPECT_EQ(over, -1) << "push past VS_TAG_MAX_DEPTH must fail";
    ASSERT_TRUE(p && q);
    EXPECT_TRUE(owned(p));
    EXPECT_EQ(view().info(api().handle_of(p)).tag, (uint32_t)(100 + VS_TAG_MAX_DEPTH - 1))
        << "the refused push must not have replaced the innermost tag";
    EXPECT_FALSE(owned(q)) << "VS_TAG_MAX_DEPTH pops close every scope (the refused push "
                              "must not count)";
    free(p);
    free(q);
}

TEST_F(TagScope, IsPerThread)
{
    // The thread is created outside the scope: pthread_create's own allocations (the
    // thread's TLS vector, which glibc keeps cached with the stack) would be routed and
    // outlive the test otherwise.
    std::atomic<bool> go{false};
    void *other = nullptr;
    std::thread t([&] {
        while (!go.load())
            sched_yield();
        other = malloc(opaque<size_t>(100));
    });
    ASSERT_EQ(api().push(77), 0);
    go = true;
    t.join();
    void *mine = malloc(opaque<size_t>(100));
    api().pop();
    ASSERT_TRUE(other && mine);
    EXPECT_FALSE(owned(other)) << "another thread's scope must not route this thread's malloc";
    EXPECT_TRUE(owned(mine));
    free(other);
    free(mine);
}

// ---------------------------------------------------------------------------------------
// routing by caller object (VARSLOT_CALLERS=libvstest-caller.so)

using Callers = Shim;

TEST_F(Callers, LibraryAllocationsAreRouted)
{
    const char *callers = getenv("VARSLOT_CALLERS");
    if (!callers || !strstr(callers, "libvstest-caller.so"))
        GTEST_SKIP() << "VARSLOT_CALLERS does not name libvstest-caller.so";
    std::string path = helper_path("VSTEST_CALLER_LIB", "libvstest-caller.so");
    void *lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(lib, nullptr) << "dlopen(" << path << "): " << dlerror();
    auto lib_alloc = (void *(*)(size_t))dlsym(lib, "caller_lib_alloc");
    auto lib_realloc = (void *(*)(void *, size_t))dlsym(lib, "caller_lib_realloc");
    ASSERT_TRUE(lib_alloc && lib_realloc);

    void *from_lib = lib_alloc(100);
    void *from_test = malloc(opaque<size_t>(100));
    ASSERT_TRUE(from_lib && from_test);
    EXPECT_TRUE(owned(from_lib)) << "a 100-byte malloc called from libvstest-caller.so";
    EXPECT_FALSE(owned(from_test)) << "a 100-byte malloc called from the test binary";
    uint64_t h = api().handle_of(from_lib);
    EXPECT_EQ(view().info(h).state, (uint32_t)VS_SLOT_ALLOCATED);
    EXPECT_EQ(view().info(h).owner, my_peer_);

    // realloc called from the library moves a fallback block into the segment.
    fill(from_test, 100, 11);
    void *moved = lib_realloc(from_test, 200);
    ASSERT_NE(moved, nullptr);
    EXPECT_TRUE(owned(moved)) << "realloc called from libvstest-caller.so";
    EXPECT_EQ(mismatch(moved, 100, 11), SIZE_MAX);

    free(from_lib); // freed by the test binary: ownership is by address
    EXPECT_TRUE(view().released(h));
    free(moved);

    // Repeated calls (the shim caches its answer per call site) still route.
    for (int i = 0; i < 4; i++) {
        void *p = lib_alloc(64 + i);
        EXPECT_TRUE(owned(p)) << "call " << i;
        free(p);
    }
    dlclose(lib);
}

} // namespace
} // namespace shimtest
