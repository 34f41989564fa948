// The registered "varslot" allocator (gst-plugin/allocator.c): params, map, share, copy,
// is_span, and the full-segment policy (wait, then system memory).
#include "gst_test.h"

namespace {

class Allocator : public testing::Test {
protected:
    GstAllocator *alloc = nullptr;
    void SetUp() override
    {
        alloc = registered_allocator();
        ASSERT_NE(alloc, nullptr) << "gst_allocator_find(\"varslot\") after loading the plugin";
    }
    void TearDown() override
    {
        if (alloc)
            gst_object_unref(alloc);
    }
    GstMemory *take(gsize size, GstMemoryFlags flags = (GstMemoryFlags)0, gsize align = 0, gsize prefix = 0,
                    gsize padding = 0)
    {
        GstAllocationParams params;
        gst_allocation_params_init(&params);
        params.flags = flags;
        params.align = align;
        params.prefix = prefix;
        params.padding = padding;
        return gst_allocator_alloc(alloc, size, &params);
    }
};

TEST_F(Allocator, RegisteredOnceThePluginIsLoaded)
{
    EXPECT_STREQ(alloc->mem_type, "VarslotMemory");
    GstAllocator *again = gst_allocator_find("varslot");
    EXPECT_EQ(again, alloc) << "one registered instance";
    gst_object_unref(again);
    GstMemory *mem = take(1000);
    ASSERT_NE(mem, nullptr);
    EXPECT_TRUE(is_varslot(mem));
    EXPECT_EQ(mem->allocator, alloc);
    EXPECT_EQ(gst_memory_get_sizes(mem, nullptr, nullptr), 1000u);
    gst_memory_unref(mem);
}

TEST_F(Allocator, CanBeTheDefault)
{
    GstAllocator *sysmem = gst_allocator_find(GST_ALLOCATOR_SYSMEM);
    ASSERT_NE(sysmem, nullptr);
    gst_allocator_set_default(GST_ALLOCATOR(gst_object_ref(alloc)));
    GstMemory *mem = gst_allocator_alloc(nullptr, 4096, nullptr);
    GstBuffer *buf = gst_buffer_new_allocate(nullptr, 2048, nullptr);
    gst_allocator_set_default(sysmem); // takes our ref
    ASSERT_NE(mem, nullptr);
    EXPECT_TRUE(is_varslot(mem));
    ASSERT_NE(buf, nullptr);
    EXPECT_TRUE(is_varslot(gst_buffer_peek_memory(buf, 0)));
    gst_memory_unref(mem);
    gst_buffer_unref(buf);
    GstMemory *plain = gst_allocator_alloc(nullptr, 16, nullptr);
    EXPECT_FALSE(is_varslot(plain)) << "the system default is back";
    gst_memory_unref(plain);
}

TEST_F(Allocator, HonoursAlignPrefixPadding)
{
    const gsize aligns[] = {0, 1, 3, 7, 15, 31, 63, 127, 255, 511, 1023, 2047, 4095};
    const gsize prefixes[] = {0, 1, 13, 64, 300};
    const gsize paddings[] = {0, 5, 100, 4096};
    for (gsize align : aligns)
        for (gsize prefix : prefixes)
            for (gsize padding : paddings) {
                SCOPED_TRACE(testing::Message() << "align " << align << " prefix " << prefix << " padding "
                                                << padding);
                const gsize size = 10000;
                GstMemory *mem = take(size, (GstMemoryFlags)0, align, prefix, padding);
                ASSERT_NE(mem, nullptr);
                EXPECT_TRUE(is_varslot(mem));
                gsize offset = 0, maxsize = 0;
                EXPECT_EQ(gst_memory_get_sizes(mem, &offset, &maxsize), size);
                EXPECT_EQ(offset, prefix);
                EXPECT_GE(maxsize, prefix + size + padding);
                EXPECT_EQ(mem->align & align, align) << "align mask recorded";
                GstMapInfo map;
                ASSERT_TRUE(gst_memory_map(mem, &map, GST_MAP_READWRITE));
                EXPECT_EQ(map.size, size);
                EXPECT_EQ(map.maxsize, maxsize - prefix);
                guintptr base = (guintptr)map.data - prefix; // start of the maxsize region
                EXPECT_EQ(base & (align | gst_memory_alignment), 0u) << "base " << (void *)base;
                // The whole region is usable: prefix, data, padding.
                memset(map.data - prefix, 0x5c, prefix + size + padding);
                gst_memory_unmap(mem, &map);
                gst_memory_unref(mem);
            }
}

TEST_F(Allocator, ZeroPrefixedAndZeroPaddedOnDirtySlots)
{
    // Dirty every slot of the segment (64K:8, made by main) so whichever comes next is dirty.
    std::vector<GstMemory *> all;
    for (int i = 0; i < 8; i++) {
        GstMemory *m = take(60000);
        ASSERT_NE(m, nullptr);
        ASSERT_TRUE(is_varslot(m)) << "slot " << i;
        gsize maxsize = 0;
        gst_memory_get_sizes(m, nullptr, &maxsize);
        gst_memory_resize(m, 0, maxsize);
        GstMapInfo map;
        ASSERT_TRUE(gst_memory_map(m, &map, GST_MAP_WRITE));
        memset(map.data, 0xAA, map.size);
        gst_memory_unmap(m, &map);
        all.push_back(m);
    }
    for (auto m : all)
        gst_memory_unref(m);

    struct Case {
        GstMemoryFlags flags;
        gsize align, prefix, size, padding;
    } cases[] = {
        {GST_MEMORY_FLAG_ZERO_PREFIXED, 0, 100, 1000, 50},
        {GST_MEMORY_FLAG_ZERO_PADDED, 0, 100, 1000, 50},
        {(GstMemoryFlags)(GST_MEMORY_FLAG_ZERO_PREFIXED | GST_MEMORY_FLAG_ZERO_PADDED), 4095, 333, 777, 999},
        {(GstMemoryFlags)(GST_MEMORY_FLAG_ZERO_PREFIXED | GST_MEMORY_FLAG_ZERO_PADDED), 63, 0, 30000, 0},
    };
    for (const Case &c : cases) {
        SCOPED_TRACE(testing::Message() << "flags 0x" << std::hex << c.flags << std::dec << " align " << c.align
                                        << " prefix " << c.prefix << " size " << c.size << " padding "
                                        << c.padding);
        std::vector<GstMemory *> mems;
        for (int i = 0; i < 8; i++) { // every slot once, so a dirty one is certainly checked
            GstMemory *mem = take(c.size, c.flags, c.align, c.prefix, c.padding);
            ASSERT_NE(mem, nullptr);
            ASSERT_TRUE(is_varslot(mem));
            EXPECT_EQ((GST_MINI_OBJECT_FLAGS(mem) & c.flags), (guint)c.flags) << "flags kept on the memory";
            gsize offset = 0, maxsize = 0;
            gst_memory_get_sizes(mem, &offset, &maxsize);
            // Expose prefix and padding through the public API, then read them.
            gst_memory_resize(mem, -(gssize)offset, maxsize);
            GstMapInfo map;
            ASSERT_TRUE(gst_memory_map(mem, &map, GST_MAP_READ));
            ASSERT_EQ(map.size, maxsize);
            if (c.flags & GST_MEMORY_FLAG_ZERO_PREFIXED) {
                gsize bad = 0;
                for (gsize k = 0; k < c.prefix; k++)
                    bad += map.data[k] != 0;
                EXPECT_EQ(bad, 0u) << "non-zero bytes in the prefix of slot " << i;
            }
            if (c.flags & GST_MEMORY_FLAG_ZERO_PADDED) {
                gsize bad = 0;
                for (gsize k = c.prefix + c.size; k < maxsize; k++)
                    bad += map.data[k] != 0;
                EXPECT_EQ(bad, 0u) << "non-zero bytes after the data of slot " << i;
            }
            gst_memory_unmap(mem, &map);
            mems.push_back(mem);
        }
        for (auto m : mems)
            gst_memory_unref(m);
    }
}

TEST_F(Allocator, MapReadWriteAndReadOnly)
{
    GstMemory *mem = take(5000);
    ASSERT_NE(mem, nullptr);
    GstMapInfo w, r;
    ASSERT_TRUE(gst_memory_map(mem, &w, GST_MAP_WRITE));
    ASSERT_EQ(w.size, 5000u);
    fill_pattern(w.data, w.size, 1);
    gst_memory_unmap(mem, &w);
    ASSERT_TRUE(gst_memory_map(mem, &r, GST_MAP_READ));
    EXPECT_EQ(r.data, w.data) << "the same bytes every time";
    EXPECT_TRUE(has_pattern(r.data, r.size, 1));
    // Two readers at once.
    GstMapInfo r2;
    ASSERT_TRUE(gst_memory_map(mem, &r2, GST_MAP_READ));
    EXPECT_EQ(r2.data, r.data);
    gst_memory_unmap(mem, &r2);
    gst_memory_unmap(mem, &r);
    gst_memory_unref(mem);

    GstMemory *ro = take(100, GST_MEMORY_FLAG_READONLY);
    ASSERT_NE(ro, nullptr);
    EXPECT_TRUE(GST_MEMORY_IS_READONLY(ro));
    GstMapInfo m;
    EXPECT_FALSE(gst_memory_map(ro, &m, GST_MAP_WRITE)) << "read-only memory refuses a write map";
    ASSERT_TRUE(gst_memory_map(ro, &m, GST_MAP_READ));
    gst_memory_unmap(ro, &m);
    gst_memory_unref(ro);
}

TEST_F(Allocator, ShareSeesTheSameBytesAndKeepsTheParent)
{
    GstMemory *mem = take(4000, (GstMemoryFlags)0, 0, 16, 0);
    ASSERT_NE(mem, nullptr);
    GstMapInfo w;
    ASSERT_TRUE(gst_memory_map(mem, &w, GST_MAP_WRITE));
    fill_pattern(w.data, w.size, 2);
    const guint8 *pdata = w.data;
    gst_memory_unmap(mem, &w);

    GstMemory *sub = gst_memory_share(mem, 100, 1000);
    ASSERT_NE(sub, nullptr);
    EXPECT_TRUE(is_varslot(sub));
    EXPECT_EQ(sub->parent, mem);
    EXPECT_EQ(sub->size, 1000u);
    EXPECT_EQ(sub->offset, mem->offset + 100);
    GstMapInfo r;
    ASSERT_TRUE(gst_memory_map(sub, &r, GST_MAP_READ));
    EXPECT_EQ(r.data, pdata + 100) << "a share is a window on the same bytes";
    EXPECT_EQ(memcmp(r.data, pdata + 100, 1000), 0);
    gst_memory_unmap(sub, &r);
    EXPECT_FALSE(gst_memory_map(sub, &r, GST_MAP_WRITE)) << "a share is read-only";

    GstMemory *rest = gst_memory_share(mem, 3000, -1);
    ASSERT_NE(rest, nullptr);
    EXPECT_EQ(rest->size, 1000u) << "size -1: to the end";
    GstMemory *subsub = gst_memory_share(sub, 10, 20);
    ASSERT_NE(subsub, nullptr);
    EXPECT_EQ(subsub->parent, mem) << "a share of a share hangs off the real parent";
    ASSERT_TRUE(gst_memory_map(subsub, &r, GST_MAP_READ));
    EXPECT_EQ(r.data, pdata + 110);
    gst_memory_unmap(subsub, &r);

    // Drop our parent ref: the shares keep it (and its slot) alive.
    gst_memory_unref(mem);
    gst_memory_unref(rest);
    gst_memory_unref(subsub);
    ASSERT_EQ(GST_MINI_OBJECT_REFCOUNT_VALUE(sub->parent), 1);
    // The slot is still held: the other 7 slots of the segment are all distinct from it.
    std::vector<GstMemory *> others;
    {
        AllowGstWarnings allow({"no free slot"}); // only if the slot had been freed
        for (int i = 0; i < 7; i++) {
            GstMemory *o = take(60000);
            ASSERT_NE(o, nullptr);
            EXPECT_TRUE(is_varslot(o)) << "7 slots are free";
            GstMapInfo om;
            ASSERT_TRUE(gst_memory_map(o, &om, GST_MAP_WRITE));
            EXPECT_TRUE(om.data + om.maxsize <= pdata - 16 || om.data >= pdata + 4000)
                << "a free slot overlaps the shared parent";
            memset(om.data, 0, om.size);
            gst_memory_unmap(o, &om);
            others.push_back(o);
        }
    }
    ASSERT_TRUE(gst_memory_map(sub, &r, GST_MAP_READ));
    EXPECT_EQ(r.data, pdata + 100);
    EXPECT_TRUE(has_pattern(r.data - 100, 1000, 2)) << "the shared bytes are untouched";
    gst_memory_unmap(sub, &r);
    for (auto o : others)
        gst_memory_unref(o);
    gst_memory_unref(sub);
}

TEST_F(Allocator, CopyIsPrivateAndEqual)
{
    GstMemory *mem = take(3000);
    ASSERT_NE(mem, nullptr);
    GstMapInfo w;
    ASSERT_TRUE(gst_memory_map(mem, &w, GST_MAP_WRITE));
    fill_pattern(w.data, w.size, 3);
    gst_memory_unmap(mem, &w);

    GstMemory *copy = gst_memory_copy(mem, 0, -1);
    ASSERT_NE(copy, nullptr);
    EXPECT_FALSE(is_varslot(copy)) << "a deep copy does not take a slot";
    EXPECT_EQ(copy->size, 3000u);
    GstMapInfo a, b;
    ASSERT_TRUE(gst_memory_map(mem, &a, GST_MAP_READ));
    ASSERT_TRUE(gst_memory_map(copy, &b, GST_MAP_READ));
    EXPECT_NE(a.data, b.data);
    EXPECT_EQ(memcmp(a.data, b.data, 3000), 0);
    gst_memory_unmap(copy, &b);

    GstMemory *part = gst_memory_copy(mem, 500, 100);
    ASSERT_NE(part, nullptr);
    EXPECT_EQ(part->size, 100u);
    ASSERT_TRUE(gst_memory_map(part, &b, GST_MAP_READ));
    EXPECT_EQ(memcmp(a.data + 500, b.data, 100), 0);
    gst_memory_unmap(part, &b);
    gst_memory_unmap(mem, &a);

    // A copy of a share copies the share's window.
    GstMemory *sub = gst_memory_share(mem, 1000, 200);
    GstMemory *subcopy = gst_memory_copy(sub, 0, -1);
    ASSERT_NE(subcopy, nullptr);
    EXPECT_EQ(subcopy->size, 200u);
    ASSERT_TRUE(gst_memory_map(subcopy, &b, GST_MAP_WRITE)) << "a copy is writable";
    ASSERT_TRUE(gst_memory_map(mem, &a, GST_MAP_READ));
    EXPECT_EQ(memcmp(a.data + 1000, b.data, 200), 0);
    memset(b.data, 0, 200);
    EXPECT_TRUE(has_pattern(a.data, 3000, 3)) << "writing the copy leaves the original alone";
    gst_memory_unmap(mem, &a);
    gst_memory_unmap(subcopy, &b);

    // A whole-buffer deep copy.
    GstBuffer *buf = gst_buffer_new();
    gst_buffer_append_memory(buf, gst_memory_ref(mem));
    GstBuffer *deep = gst_buffer_copy_deep(buf);
    EXPECT_FALSE(is_varslot(gst_buffer_peek_memory(deep, 0)));
    EXPECT_EQ(gst_buffer_memcmp(deep, 0, mapped_data(buf), 3000), 0);

    gst_buffer_unref(deep);
    gst_buffer_unref(buf);
    gst_memory_unref(subcopy);
    gst_memory_unref(sub);
    gst_memory_unref(part);
    gst_memory_unref(copy);
    gst_memory_unref(mem);
}

TEST_F(Allocator, IsSpanAndMergedMapWithoutCopy)
{
    GstMemory *mem = take(1000, (GstMemoryFlags)0, 0, 32, 0);
    ASSERT_NE(mem, nullptr);
    GstMapInfo w;
    ASSERT_TRUE(gst_memory_map(mem, &w, GST_MAP_WRITE));
    fill_pattern(w.data, w.size, 4);
    const guint8 *pdata = w.data;
    gst_memory_unmap(mem, &w);

    GstMemory *a = gst_memory_share(mem, 0, 300);
    GstMemory *b = gst_memory_share(mem, 300, 200);
    GstMemory *c = gst_memory_share(mem, 600, 100);
    gsize off = 12345;
    EXPECT_TRUE(gst_memory_is_span(a, b, &off));
    EXPECT_EQ(off, 0u);
    EXPECT_FALSE(gst_memory_is_span(b, c, &off)) << "a gap of 100 bytes";
    EXPECT_FALSE(gst_memory_is_span(b, a, &off)) << "wrong order";
    GstMemory *d = gst_memory_share(mem, 500, 100);
    EXPECT_TRUE(gst_memory_is_span(b, d, &off));
    EXPECT_EQ(off, 300u);

    // gst_buffer_map merges spanning memories by sharing the parent, not by copying.
    GstBuffer *buf = gst_buffer_new();
    gst_buffer_append_memory(buf, gst_memory_ref(a));
    gst_buffer_append_memory(buf, gst_memory_ref(b));
    GstMapInfo map;
    ASSERT_TRUE(gst_buffer_map(buf, &map, GST_MAP_READ));
    EXPECT_EQ(map.size, 500u);
    EXPECT_EQ(map.data, pdata) << "merged in place";
    EXPECT_TRUE(has_pattern(map.data, 500, 4));
    gst_buffer_unmap(buf, &map);
    gst_buffer_unref(buf);

    // Memories of two different slots never span.
    GstMemory *other = take(1000);
    EXPECT_FALSE(gst_memory_is_span(mem, other, &off));
    gst_memory_unref(other);
    for (GstMemory *m : {a, b, c, d, mem})
        gst_memory_unref(m);
}

// The full-segment policy needs the registered allocator on its own tiny segment, which it
// binds once per process, with its wait (VARSLOT_GST_WAIT_MS) read once: each case re-runs
// this binary on one child test with that environment.
namespace {
void run_full_segment_child(const char *child_test, const char *wait_ms)
{
    std::string seg = unique_segment("tiny");
    std::string out;
    ASSERT_EQ(varslot_cli({"create", seg, "--classes", "64K:2"}, &out), 0) << out;
    gchar *self = g_file_read_link("/proc/self/exe", nullptr);
    ASSERT_NE(self, nullptr);
    gchar **envp = g_get_environ();
    envp = g_environ_setenv(envp, "VARSLOT_SEGMENT", seg.c_str(), TRUE);
    envp = g_environ_setenv(envp, "VARSLOT_GST_WAIT_MS", wait_ms, TRUE);
    envp = g_environ_setenv(envp, "VSTEST_GST_CHILD", "1", TRUE);
    envp = g_environ_unsetenv(envp, "GST_TRACERS");
    std::string filter = std::string("--gtest_filter=AllocatorFullSegmentChild.") + child_test;
    const gchar *argv[] = {self, filter.c_str(), nullptr};
    gchar *cout = nullptr, *cerr = nullptr;
    gint status = -1;
    GError *err = nullptr;
    ASSERT_TRUE(g_spawn_sync(nullptr, (gchar **)argv, envp, G_SPAWN_DEFAULT, nullptr, nullptr, &cout, &cerr,
                             &status, &err))
        << (err ? err->message : "");
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child:\n" << cout << cerr;
    EXPECT_NE(std::string(cout).find("[  PASSED  ] 1 test"), std::string::npos) << "child:\n" << cout << cerr;
    // The child returned everything: no slot stays allocated.
    std::string json;
    EXPECT_EQ(varslot_cli({"stat", seg, "--json"}, &json), 0) << json;
    EXPECT_EQ(json.find("\"allocated\": 1"), std::string::npos) << json;
    EXPECT_EQ(json.find("\"allocated\": 2"), std::string::npos) << json;
    g_free(cout);
    g_free(cerr);
    g_strfreev(envp);
    g_free(self);
    remove_segment(seg);
}

bool full_segment_child()
{
    return getenv("VSTEST_GST_CHILD") != nullptr;
}
} // namespace

TEST(AllocatorFullSegment, FallsBackToSystemMemoryWhenTheWaitEnds)
{
    run_full_segment_child("FallsBack", "50");
}

// The wait is long (60 s) and the slot comes free while the allocation waits: no outcome
// depends on how soon a thread runs.
TEST(AllocatorFullSegment, TakesASlotFreedDuringTheWait)
{
    run_full_segment_child("TakesAFreedSlot", "60000");
}

TEST(AllocatorFullSegmentChild, FallsBack)
{
    if (!full_segment_child())
        GTEST_SKIP() << "runs in the child of AllocatorFullSegment.FallsBackToSystemMemoryWhenTheWaitEnds";
    AllowGstWarnings allow({"no free slot"});
    GstAllocator *alloc = registered_allocator();
    ASSERT_NE(alloc, nullptr);
    const gsize size = 64 * 1024;
    GstMemory *a = gst_allocator_alloc(alloc, size, nullptr);
    GstMemory *b = gst_allocator_alloc(alloc, size, nullptr);
    ASSERT_TRUE(is_varslot(a) && is_varslot(b)) << "the two 64K slots";
    GstMemory *c = gst_allocator_alloc(alloc, size, nullptr);
    ASSERT_NE(c, nullptr) << "a full segment still yields memory";
    EXPECT_FALSE(is_varslot(c)) << "from system memory";
    EXPECT_EQ(c->size, size);
    GstMapInfo map;
    ASSERT_TRUE(gst_memory_map(c, &map, GST_MAP_READWRITE));
    EXPECT_EQ(map.size, size);
    fill_pattern(map.data, map.size, 9);
    EXPECT_TRUE(has_pattern(map.data, map.size, 9));
    gst_memory_unmap(c, &map);

    // Larger than any slot: system memory too, without a slot.
    GstMemory *big = gst_allocator_alloc(alloc, 3 * size, nullptr);
    ASSERT_NE(big, nullptr);
    EXPECT_FALSE(is_varslot(big));
    EXPECT_EQ(big->size, 3 * size);
    gst_memory_unref(big);

    gst_memory_unref(c);
    gst_memory_unref(a);
    gst_memory_unref(b);
    // Both slots are back.
    GstMemory *e = gst_allocator_alloc(alloc, size, nullptr);
    GstMemory *f = gst_allocator_alloc(alloc, size, nullptr);
    EXPECT_TRUE(is_varslot(e) && is_varslot(f));
    gst_memory_unref(e);
    gst_memory_unref(f);
    gst_object_unref(alloc);
}

TEST(AllocatorFullSegmentChild, TakesAFreedSlot)
{
    if (!full_segment_child())
        GTEST_SKIP() << "runs in the child of AllocatorFullSegment.TakesASlotFreedDuringTheWait";
    GstAllocator *alloc = registered_allocator();
    ASSERT_NE(alloc, nullptr);
    const gsize size = 64 * 1024;
    GstMemory *a = gst_allocator_alloc(alloc, size, nullptr);
    GstMemory *b = gst_allocator_alloc(alloc, size, nullptr);
    ASSERT_TRUE(is_varslot(a) && is_varslot(b)) << "the two 64K slots";
    // The freer lets the allocation start (and find the pool full) before it frees a slot;
    // without a wait the allocation would have fallen back to system memory by then.
    struct Freer {
        GstMemory *mem;
        std::atomic<bool> allocating{false};
    } freer_arg{a};
    GThread *freer = g_thread_new("freer", [](gpointer p) -> gpointer {
        auto *f = static_cast<Freer *>(p);
        while (!f->allocating.load())
            g_usleep(100);
        g_usleep(20 * 1000);
        gst_memory_unref(f->mem);
        return nullptr;
    }, &freer_arg);
    freer_arg.allocating = true;
    GstMemory *d = gst_allocator_alloc(alloc, size, nullptr);
    g_thread_join(freer);
    ASSERT_NE(d, nullptr);
    EXPECT_TRUE(is_varslot(d)) << "the slot freed during the wait was not taken";
    gst_memory_unref(b);
    gst_memory_unref(d);
    gst_object_unref(alloc);
}

} // namespace
