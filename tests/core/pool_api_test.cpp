// Every pool function with good and bad input: layouts and configs, init/attach/discover,
// handles, free/transfer/tag/info edge cases, and refs that point anywhere they should not.
#include "test_util.h"

#include <algorithm>
#include <set>
#include <thread>

using namespace vstest;

// ---- configs and layout ----

TEST(Layout, RejectsInvalidConfigs)
{
    vs_layout l;
    const vs_class_config zero_size[1] = {{0, 4}};
    const vs_class_config zero_count[1] = {{64, 0}};
    const vs_class_config too_many_slots[1] = {{64, VS_MAX_SLOTS_PER_CLASS + 1}};
    const vs_class_config descending[2] = {{1024, 4}, {512, 4}};
    const vs_class_config equal[2] = {{512, 4}, {512, 4}};
    EXPECT_EQ(vs_pool_layout(nullptr, 1, &l), VS_EINVAL);
    EXPECT_EQ(vs_pool_layout(kRefClasses, 0, &l), VS_EINVAL);
    EXPECT_EQ(vs_pool_layout(kRefClasses, 3, nullptr), VS_EINVAL);
    EXPECT_EQ(vs_pool_layout(zero_size, 1, &l), VS_EINVAL);
    EXPECT_EQ(vs_pool_layout(zero_count, 1, &l), VS_EINVAL);
    EXPECT_EQ(vs_pool_layout(too_many_slots, 1, &l), VS_EINVAL);
    EXPECT_EQ(vs_pool_layout(descending, 2, &l), VS_EINVAL);
    EXPECT_EQ(vs_pool_layout(equal, 2, &l), VS_EINVAL);
    EXPECT_EQ(vs_pool_required_size(descending, 2), 0u);
    EXPECT_EQ(vs_pool_required_size(nullptr, 0), 0u);
    std::vector<vs_class_config> many(VS_MAX_CLASSES + 1);
    for (size_t i = 0; i < many.size(); i++)
        many[i] = {static_cast<uint32_t>(64 * (i + 1)), 1};
    // The most classes there may be: valid, and the size is what the layout spans.
    ASSERT_EQ(vs_pool_layout(many.data(), VS_MAX_CLASSES, &l), VS_OK);
    EXPECT_EQ(vs_pool_required_size(many.data(), VS_MAX_CLASSES), l.total_size);
    EXPECT_GT(l.total_size, 0u);
    EXPECT_EQ(vs_pool_layout(many.data(), VS_MAX_CLASSES + 1, &l), VS_EINVAL);
    EXPECT_EQ(vs_pool_required_size(many.data(), VS_MAX_CLASSES + 1), 0u);
}

TEST(Layout, SlotsAreAlignedAndDisjoint)
{
    const vs_class_config odd[4] = {{1, 3}, {100, 5}, {4097, 2}, {65536, 2}};
    HeapPool p(odd, 4);
    std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
    for (size_t c = 0; c < 4; c++) {
        std::vector<vs_slot_ref> refs;
        for (uint32_t i = 0; i < odd[c].slot_count; i++) {
            vs_slot_ref r;
            ASSERT_TRUE(vs_pool_allocate(p.get(), odd[c].slot_size, 1, &r));
            ASSERT_EQ(r.class_idx, c);
            auto a = reinterpret_cast<uintptr_t>(vs_pool_slot_data(p.get(), &r));
            EXPECT_EQ(a % 64, 0u);
            if (odd[c].slot_size >= 4096) {
                EXPECT_EQ((a - reinterpret_cast<uintptr_t>(p.mem)) % 4096, 0u);
            }
            ranges.push_back({a, a + odd[c].slot_size});
        }
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); i++)
        EXPECT_LE(ranges[i - 1].second, ranges[i].first) << "slots overlap";
    EXPECT_LE(ranges.back().second, reinterpret_cast<uintptr_t>(p.mem) + p.len);
}

// ---- init / attach / discover ----

TEST(PoolSetup, InitRejectsBadRegions)
{
    size_t need = vs_pool_required_size(kRefClasses, 3);
    std::vector<uint8_t> buf(need + 256);
    auto *aligned = reinterpret_cast<uint8_t *>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t(63));
    vs_pool p;
    EXPECT_EQ(vs_pool_init(nullptr, vs_region{aligned, need}, 0, kRefClasses, 3), VS_EINVAL);
    EXPECT_EQ(vs_pool_init(&p, vs_region{nullptr, need}, 0, kRefClasses, 3), VS_EINVAL);
    EXPECT_EQ(vs_pool_init(&p, vs_region{aligned, need - 1}, 0, kRefClasses, 3), VS_ENOSPC);
    EXPECT_EQ(vs_pool_init(&p, vs_region{aligned, need + 64}, 65, kRefClasses, 3), VS_EINVAL);
    EXPECT_EQ(vs_pool_init(&p, vs_region{aligned, need}, 64, kRefClasses, 3), VS_ENOSPC);
    EXPECT_EQ(vs_pool_init(&p, vs_region{aligned + 1, need}, 0, kRefClasses, 3), VS_EINVAL);
    EXPECT_EQ(vs_pool_init(&p, vs_region{aligned, need}, 0, kRefClasses, 0), VS_EINVAL);
    EXPECT_EQ(vs_pool_init(&p, vs_region{aligned, need + 64}, 64, kRefClasses, 3), VS_OK);
    vs_pool_detach(&p);
}

TEST(PoolSetup, AttachSeesTheSamePoolAndDiscoversItsConfigs)
{
    HeapPool p;
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(p.get(), 5000, 3, &r));
    vs_class_config found[3];
    const char *why = "unset";
    ASSERT_EQ(vs_pool_discover_configs(vs_region{p.mem, p.len}, 0, 3, found, &why), VS_OK);
    EXPECT_EQ(why, nullptr);
    EXPECT_EQ(memcmp(found, kRefClasses, sizeof found), 0);
    vs_pool q;
    ASSERT_EQ(vs_pool_attach(&q, vs_region{p.mem, p.len}, 0, found, 3), VS_OK);
    EXPECT_EQ(vs_pool_class_count(&q), 3u);
    EXPECT_EQ(vs_pool_slot_data(&q, &r), vs_pool_slot_data(p.get(), &r));
    EXPECT_EQ(vs_pool_free(&q, r), VS_OK); // freed through the other attachment
    EXPECT_EQ(vs_pool_free(p.get(), r), VS_EDOUBLEFREE);
    vs_pool_detach(&q);
}

TEST(PoolSetup, AttachRejectsOtherConfigsAndGarbage)
{
    HeapPool p;
    vs_pool q;
    const vs_class_config other[3] = {{1024, 8}, {16384, 4}, {262144, 1}}; // fits, differs
    EXPECT_EQ(vs_pool_attach(&q, vs_region{p.mem, p.len}, 0, other, 3), VS_ECORRUPT);
    EXPECT_EQ(vs_pool_attach(&q, vs_region{p.mem, p.len}, 0, kRefClasses, 2), VS_ECORRUPT);
    std::vector<uint8_t> zeros(p.len + 64, 0);
    auto *z = reinterpret_cast<uint8_t *>((reinterpret_cast<uintptr_t>(zeros.data()) + 63) & ~uintptr_t(63));
    EXPECT_EQ(vs_pool_attach(&q, vs_region{z, p.len}, 0, kRefClasses, 3), VS_ECORRUPT);
}

TEST(PoolSetup, DiscoverRejectsGarbageWithAReason)
{
    HeapPool p;
    vs_class_config out[VS_MAX_CLASSES];
    const char *why = nullptr;
    vs_region reg{p.mem, p.len};
    EXPECT_EQ(vs_pool_discover_configs(reg, 0, 0, out, &why), VS_EINVAL);
    EXPECT_EQ(vs_pool_discover_configs(reg, 0, 65, out, &why), VS_EINVAL);
    EXPECT_EQ(vs_pool_discover_configs(reg, 3, 3, out, &why), VS_EINVAL);
    EXPECT_EQ(vs_pool_discover_configs(vs_region{nullptr, 0}, 0, 3, out, &why), VS_EINVAL);
    EXPECT_EQ(vs_pool_discover_configs(reg, p.len, 3, out, &why), VS_ECORRUPT);
    EXPECT_EQ(vs_pool_discover_configs(vs_region{p.mem, 100}, 0, 3, out, &why), VS_ECORRUPT);
    EXPECT_EQ(vs_pool_discover_configs(vs_region{p.mem, p.len - 4096}, 0, 3, out, &why), VS_ECORRUPT);
    EXPECT_NE(why, nullptr);
    EXPECT_EQ(vs_pool_discover_configs(reg, 0, 4, out, &why), VS_ECORRUPT); // no 4th header
    // Scribble each field of the class-1 header in turn: every change is caught.
    auto *hdr = static_cast<uint8_t *>(p.mem) + 64;
    for (int off = 0; off < 48; off += 4) {
        uint32_t saved;
        memcpy(&saved, hdr + off, 4);
        uint32_t bad = saved ^ 0x10;
        memcpy(hdr + off, &bad, 4);
        why = nullptr;
        EXPECT_EQ(vs_pool_discover_configs(reg, 0, 3, out, &why), VS_ECORRUPT) << "field at " << off;
        EXPECT_NE(why, nullptr);
        memcpy(hdr + off, &saved, 4);
    }
    EXPECT_EQ(vs_pool_discover_configs(reg, 0, 3, out, nullptr), VS_OK);
}

// ---- handles ----

TEST(Handle, PackUnpackRoundTrips)
{
    vs_slot_ref refs[] = {{0, 0, 0, 1}, {63, 3, VS_MAX_SLOTS_PER_CLASS - 1, UINT32_MAX}, {5, 0, 12345, 77}};
    std::set<uint64_t> seen;
    for (auto r : refs) {
        uint64_t h = vs_slot_ref_pack(r);
        EXPECT_NE(h, 0u);
        EXPECT_TRUE(seen.insert(h).second);
        vs_slot_ref u = vs_slot_ref_unpack(h);
        EXPECT_EQ(u.class_idx, r.class_idx);
        EXPECT_EQ(u.extent_idx, r.extent_idx);
        EXPECT_EQ(u.slot_idx, r.slot_idx);
        EXPECT_EQ(u.generation, r.generation);
    }
}

TEST(Handle, UnrepresentableRefsPackToZero)
{
    EXPECT_EQ(vs_slot_ref_pack({0, 0, 0, 0}), 0u);
    EXPECT_EQ(vs_slot_ref_pack({64, 0, 0, 1}), 0u);
    EXPECT_EQ(vs_slot_ref_pack({0, 4, 0, 1}), 0u);
    EXPECT_EQ(vs_slot_ref_pack({0, 0, VS_MAX_SLOTS_PER_CLASS, 1}), 0u);
    HeapPool p;
    vs_slot_ref z = vs_slot_ref_unpack(0);
    EXPECT_EQ(vs_pool_free(p.get(), z), VS_EDOUBLEFREE); // generation 0 never matches
    EXPECT_EQ(vs_pool_slot_data(p.get(), &z), nullptr);
}

TEST(Handle, AHandleFromAnotherGenerationIsRejectedEverywhere)
{
    HeapPool p;
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(p.get(), 10, 1, &r));
    uint64_t h = vs_slot_ref_pack(r);
    ASSERT_EQ(vs_pool_free(p.get(), r), VS_OK);
    vs_slot_ref again;
    ASSERT_TRUE(vs_pool_allocate(p.get(), 10, 1, &again));
    ASSERT_EQ(again.slot_idx, r.slot_idx);
    vs_slot_ref stale = vs_slot_ref_unpack(h);
    EXPECT_EQ(vs_pool_slot_data(p.get(), &stale), nullptr);
    EXPECT_EQ(vs_pool_free(p.get(), stale), VS_EDOUBLEFREE);
    EXPECT_EQ(vs_pool_transfer(p.get(), stale, 1, 2), VS_ESTALE);
    EXPECT_EQ(vs_pool_set_tag(p.get(), stale, 9), VS_ESTALE);
    vs_slot_info info;
    ASSERT_EQ(vs_pool_slot_info(p.get(), r.class_idx, r.slot_idx, &info), VS_OK);
    EXPECT_EQ(info.owner, 1);
    EXPECT_EQ(info.generation, again.generation);
}

// ---- out-of-range refs ----

TEST(BadRefs, OutOfRangeRefsAreInvalidNotCrashes)
{
    HeapPool p;
    // Past every lap of its class (slot_count x 2^20 for these small classes), another
    // extent, another class: out of range. (slot_idx 8 of an 8-slot class is slot 0 on its
    // second lap: a ref of the right shape, stale here; see the Laps tests.)
    vs_slot_ref bad[] = {{3, 0, 0, 1}, {255, 0, 0, 1}, {0, 1, 0, 1}, {0, 0, 8u << 20, 1},
                         {2, 0, 2u << 20, 1}, {0, 0, UINT32_MAX, 1}};
    for (auto r : bad) {
        EXPECT_EQ(vs_pool_free(p.get(), r), VS_EINVAL);
        EXPECT_EQ(vs_pool_slot_data(p.get(), &r), nullptr);
        EXPECT_EQ(vs_pool_transfer(p.get(), r, 1, 2), VS_EINVAL);
        EXPECT_EQ(vs_pool_set_tag(p.get(), r, 1), VS_EINVAL);
    }
    vs_slot_info info;
    EXPECT_EQ(vs_pool_slot_info(p.get(), 3, 0, &info), VS_EINVAL);
    EXPECT_EQ(vs_pool_slot_info(p.get(), 0, 8u << 20, &info), VS_EINVAL);
    EXPECT_EQ(vs_pool_slot_info(p.get(), 0, 0, nullptr), VS_EINVAL);
    EXPECT_EQ(vs_pool_slot_info(nullptr, 0, 0, &info), VS_EINVAL);
    EXPECT_EQ(vs_pool_slot_data(p.get(), nullptr), nullptr);
    EXPECT_EQ(vs_pool_free(nullptr, bad[0]), VS_EINVAL);
    EXPECT_EQ(vs_pool_slot_size(p.get(), 3), 0u);
    EXPECT_EQ(vs_pool_slot_size(nullptr, 0), 0u);
    EXPECT_EQ(vs_pool_class_count(nullptr), 0u);
    vs_slot_ref r;
    EXPECT_FALSE(vs_pool_allocate(nullptr, 1, 1, &r));
    EXPECT_FALSE(vs_pool_allocate(p.get(), 1, 1, nullptr));
    vs_pool_reclaim_peer_slots(nullptr, 1); // no crash
}

TEST(BadRefs, UnallocatedSlotsHaveNoData)
{
    HeapPool p;
    vs_slot_ref never{0, 0, 5, 1};
    EXPECT_EQ(vs_pool_slot_data(p.get(), &never), nullptr);
    EXPECT_EQ(vs_pool_free(p.get(), never), VS_EDOUBLEFREE);
}

// ---- transfer ----

TEST(Transfer, MovesTheOwnerWithOneCheck)
{
    HeapPool p;
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(p.get(), 10, 1, &r));
    EXPECT_EQ(vs_pool_transfer(p.get(), r, 2, 3), VS_EPERM); // 2 is not the owner
    EXPECT_EQ(vs_pool_transfer(p.get(), r, 1, 3), VS_OK);
    EXPECT_EQ(vs_pool_transfer(p.get(), r, 1, 3), VS_EPERM); // not any more
    vs_slot_info info;
    ASSERT_EQ(vs_pool_slot_info(p.get(), r.class_idx, r.slot_idx, &info), VS_OK);
    EXPECT_EQ(info.owner, 3);
    EXPECT_EQ(info.generation, r.generation);
    vs_pool_reclaim_peer_slots(p.get(), 1); // the sender's death no longer touches it
    EXPECT_NE(vs_pool_slot_data(p.get(), &r), nullptr);
    vs_pool_reclaim_peer_slots(p.get(), 3); // the receiver's does
    EXPECT_EQ(vs_pool_slot_data(p.get(), &r), nullptr);
    EXPECT_EQ(vs_pool_transfer(p.get(), r, 3, 1), VS_ESTALE);
}

TEST(Transfer, FreeOwnedFreesOnlyWhatIsStillYours)
{
    HeapPool p;
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(p.get(), 10, 1, &r));
    ASSERT_EQ(vs_pool_transfer(p.get(), r, 1, 2), VS_OK);
    EXPECT_EQ(vs_pool_free_owned(p.get(), r, 1), VS_EPERM); // the sender gave it away
    EXPECT_NE(vs_pool_slot_data(p.get(), &r), nullptr);
    EXPECT_EQ(vs_pool_free_owned(p.get(), r, 2), VS_OK);
    EXPECT_EQ(vs_pool_free_owned(p.get(), r, 2), VS_EDOUBLEFREE);
    EXPECT_EQ(vs_pool_free_owned(p.get(), vs_slot_ref{9, 0, 0, 1}, 2), VS_EINVAL);
}

// ---- tags, sizes, pointers ----

TEST(SlotInfo, TagAndSizeAreRecorded)
{
    HeapPool p;
    vs_slot_ref r;
    ASSERT_TRUE(vs_pool_allocate(p.get(), 3000, 4, &r));
    EXPECT_EQ(vs_pool_set_tag(p.get(), r, 0xabcd), VS_OK);
    vs_slot_info info;
    ASSERT_EQ(vs_pool_slot_info(p.get(), r.class_idx, r.slot_idx, &info), VS_OK);
    EXPECT_EQ(info.tag, 0xabcdu);
    EXPECT_EQ(info.size, 3000u);
    EXPECT_EQ(vs_pool_set_size(p.get(), r, 4000), VS_OK); // a realloc that stays in place
    EXPECT_EQ(vs_pool_set_size(p.get(), r, 16385), VS_EINVAL); // beyond the slot
    ASSERT_EQ(vs_pool_slot_info(p.get(), r.class_idx, r.slot_idx, &info), VS_OK);
    EXPECT_EQ(info.size, 4000u);
    ASSERT_EQ(vs_pool_free(p.get(), r), VS_OK);
    EXPECT_EQ(vs_pool_set_tag(p.get(), r, 1), VS_ESTALE);
    ASSERT_TRUE(vs_pool_allocate(p.get(), 3000, 4, &r));
    ASSERT_EQ(vs_pool_slot_info(p.get(), r.class_idx, r.slot_idx, &info), VS_OK);
    EXPECT_EQ(info.tag, 0u); // a new allocation starts untagged
}

TEST(RefOf, MapsAnyInteriorPointerBackToItsRef)
{
    HeapPool p;
    vs_slot_ref r, got;
    ASSERT_TRUE(vs_pool_allocate(p.get(), 16000, 1, &r));
    auto *d = static_cast<uint8_t *>(vs_pool_slot_data(p.get(), &r));
    for (size_t off : {size_t(0), size_t(1), size_t(8191), size_t(16383)}) {
        ASSERT_EQ(vs_pool_ref_of(p.get(), d + off, &got), VS_OK) << off;
        EXPECT_EQ(vs_slot_ref_pack(got), vs_slot_ref_pack(r));
    }
    int x;
    EXPECT_EQ(vs_pool_ref_of(p.get(), &x, &got), VS_EINVAL);
    EXPECT_EQ(vs_pool_ref_of(p.get(), p.mem, &got), VS_EINVAL); // the class headers
    ASSERT_EQ(vs_pool_free(p.get(), r), VS_OK);
    EXPECT_EQ(vs_pool_ref_of(p.get(), d, &got), VS_ESTALE);
}

TEST(Locate, FindsEverySlotWhateverItsState)
{
    HeapPool p;
    const vs_pool *pool = &p.pool;
    uint32_t before = 0;
    for (uint8_t c = 0; c < 3; c++) {
        uint32_t n = vs_pool_slot_count(pool, c);
        vs_slot_location first, last, got;
        ASSERT_EQ(vs_pool_locate_slot(pool, c, 0, &first), VS_OK);
        ASSERT_EQ(vs_pool_locate_slot(pool, c, n - 1, &last), VS_OK);
        EXPECT_EQ(vs_pool_locate_slot(pool, c, n, &got), VS_EINVAL); // no laps here
        EXPECT_GE(first.span, vs_pool_slot_size(pool, c));
        EXPECT_EQ(first.span % VS_SLOT_ALIGN, 0u);
        EXPECT_EQ(static_cast<uint8_t *>(last.start),
                  static_cast<uint8_t *>(first.start) + size_t(n - 1) * first.span);
        // The first byte of the first slot and the last byte of the last, all free.
        auto *lo = static_cast<uint8_t *>(first.start);
        auto *hi = static_cast<uint8_t *>(last.start) + last.span - 1;
        ASSERT_EQ(vs_pool_locate(pool, lo, &got), VS_OK);
        EXPECT_EQ(got.class_idx, c);
        EXPECT_EQ(got.slot_idx, 0u);
        EXPECT_EQ(got.pool_slot, before);
        EXPECT_EQ(got.start, first.start);
        EXPECT_EQ(got.span, first.span);
        ASSERT_EQ(vs_pool_locate(pool, hi, &got), VS_OK);
        EXPECT_EQ(got.class_idx, c);
        EXPECT_EQ(got.slot_idx, n - 1);
        EXPECT_EQ(got.pool_slot, before + n - 1);
        EXPECT_EQ(got.start, last.start);
        // Around the array: what lies before and after it is some other class's metadata.
        EXPECT_EQ(vs_pool_locate(pool, lo - 1, &got), VS_EINVAL);
        EXPECT_EQ(vs_pool_locate(pool, hi + 1, &got), VS_EINVAL);
        before += n;
    }
    EXPECT_EQ(vs_pool_total_slots(pool), before);
    EXPECT_EQ(vs_pool_total_slots(nullptr), 0u);
    vs_slot_location got;
    int x;
    EXPECT_EQ(vs_pool_locate(pool, nullptr, &got), VS_EINVAL);
    EXPECT_EQ(vs_pool_locate(pool, &x, &got), VS_EINVAL);
    EXPECT_EQ(vs_pool_locate(pool, p.mem, &got), VS_EINVAL); // the class headers
    EXPECT_EQ(vs_pool_locate(nullptr, p.mem, &got), VS_EINVAL);
    EXPECT_EQ(vs_pool_locate(pool, p.mem, nullptr), VS_EINVAL);
    EXPECT_EQ(vs_pool_locate_slot(pool, 3, 0, &got), VS_EINVAL);
    EXPECT_EQ(vs_pool_locate_slot(nullptr, 0, 0, &got), VS_EINVAL);
}

TEST(Locate, CoversThePaddingThatRefOfRefuses)
{
    const vs_class_config padded[1] = {{1000, 4}};
    HeapPool p(padded, 1);
    vs_slot_ref r, got_ref;
    ASSERT_TRUE(vs_pool_allocate(&p.pool, 1000, 1, &r));
    auto *d = static_cast<uint8_t *>(vs_pool_slot_data(&p.pool, &r));
    vs_slot_location loc;
    ASSERT_EQ(vs_pool_locate(&p.pool, d + 1000, &loc), VS_OK);
    EXPECT_GT(loc.span, 1000u);
    EXPECT_EQ(loc.start, d);
    EXPECT_EQ(loc.slot_idx, r.slot_idx);
    EXPECT_EQ(vs_pool_ref_of(&p.pool, d + 999, &got_ref), VS_OK);
    EXPECT_EQ(vs_pool_ref_of(&p.pool, d + 1000, &got_ref), VS_EINVAL);
}

TEST(Status, EveryCodeHasItsOwnText)
{
    std::set<std::string> texts;
    for (int s = 0; s >= VS_EBUSY; s--) {
        std::string t = vs_strerror(s);
        EXPECT_FALSE(t.empty());
        EXPECT_TRUE(texts.insert(t).second) << s;
    }
    EXPECT_STREQ(vs_strerror(-1000), "unknown varslot status");
    EXPECT_STREQ(vs_strerror(5), "unknown varslot status");
}

TEST(Republish, RecoversSlotsThatLeftTheIndex)
{
    HeapPool p;
    // Allocate everything here and free it all in another thread: a free by a thread other
    // than the allocating one goes to the shared bitmap, not to a thread cache, so after the
    // wipe below no cache holds a slot and only republishing can find them.
    std::vector<vs_slot_ref> held;
    ASSERT_EQ(drain_count(p.get(), 1, &held), 14u);
    std::thread([&] {
        for (auto &r : held)
            ASSERT_EQ(vs_pool_free(p.get(), r), VS_OK);
    }).join();
    // Wipe the bitmap words as a crashed peer could leave them (cleared, never set).
    for (int c = 0; c < 3; c++)
        memset(p->classes[c].bitmap, 0, 8);
    // The slot words are the truth: before saying "full", allocation finds all 14 again.
    std::set<std::pair<int, uint32_t>> seen;
    vs_slot_ref r;
    while (seen.size() < 20 && vs_pool_allocate(p.get(), 1, 1, &r))
        seen.insert({r.class_idx, r.slot_idx});
    EXPECT_EQ(seen.size(), 14u);
    EXPECT_FALSE(vs_pool_allocate(p.get(), 1, 1, &r));
}

TEST(Parse, SizesAndClasses)
{
    uint64_t v;
    EXPECT_EQ(vs_parse_size("4096", &v), VS_OK);
    EXPECT_EQ(v, 4096u);
    EXPECT_EQ(vs_parse_size("64K", &v), VS_OK);
    EXPECT_EQ(v, 65536u);
    EXPECT_EQ(vs_parse_size("3m", &v), VS_OK);
    EXPECT_EQ(v, 3u << 20);
    EXPECT_EQ(vs_parse_size("2G", &v), VS_OK);
    EXPECT_EQ(v, 2ull << 30);
    for (const char *bad : {"", " 5", "-5", "+5", "5Q", "5KB", "K", "99999999999999999999", "17179869184G"})
        EXPECT_EQ(vs_parse_size(bad, &v), VS_EINVAL) << bad;
    vs_class_config c[VS_MAX_CLASSES];
    size_t n = 0;
    const char *why = nullptr;
    ASSERT_EQ(vs_parse_classes("64K:256,1M:64", c, &n, &why), VS_OK);
    ASSERT_EQ(n, 2u);
    EXPECT_EQ(c[0].slot_size, 65536u);
    EXPECT_EQ(c[0].slot_count, 256u);
    EXPECT_EQ(c[1].slot_size, 1u << 20);
    EXPECT_EQ(c[1].slot_count, 64u);
    for (const char *bad : {"", "64K", "64K:", ":5", "0:5", "64K:0", "64K:1,,1M:1", "1M:1,64K:1",
                            "64K:1,64K:1", "4G:1", "64K:16777217", "64K:1,", "64Q:3"}) {
        why = nullptr;
        EXPECT_EQ(vs_parse_classes(bad, c, &n, &why), VS_EINVAL) << bad;
        EXPECT_NE(why, nullptr) << bad;
    }
}

// ---- generation wrap: laps and retirement ----

namespace {
// Sets a free slot's word as 2^32 allocations of it would leave it (the slot word's layout in
// core/src/internal.h: generation 32 | owner 8 | state 4 | lap 20; 16 bytes of meta per slot).
void set_free_word(const vs_pool *pool, int c, uint32_t idx, uint32_t gen, uint32_t lap)
{
    auto *word = reinterpret_cast<uint64_t *>(static_cast<uint8_t *>(pool->classes[c].meta) + 16 * idx);
    __atomic_store_n(word, (uint64_t)gen | (uint64_t)lap << 44, __ATOMIC_RELEASE);
}
} // namespace

TEST(Laps, AHandleFromBeforeTheGenerationWrappedStaysStale)
{
    const vs_class_config one[1] = {{4096, 1}};
    HeapPool p(one, 1);
    vs_slot_ref first;
    ASSERT_TRUE(vs_pool_allocate(p.get(), 1, 1, &first));
    ASSERT_EQ(first.generation, 1u);
    uint64_t old_handle = vs_slot_ref_pack(first);
    void *data = vs_pool_slot_data(p.get(), &first);
    ASSERT_EQ(vs_pool_free(p.get(), first), VS_OK);
    // 2^32 - 2 allocations later: the last generation of lap 0, then the wrap.
    set_free_word(p.get(), 0, 0, UINT32_MAX - 1, 0);
    vs_slot_ref last, wrapped;
    ASSERT_TRUE(vs_pool_allocate(p.get(), 1, 1, &last));
    EXPECT_EQ(last.generation, UINT32_MAX);
    EXPECT_EQ(last.slot_idx, 0u);
    ASSERT_EQ(vs_pool_free(p.get(), last), VS_OK);
    ASSERT_TRUE(vs_pool_allocate(p.get(), 1, 1, &wrapped));
    EXPECT_EQ(wrapped.generation, 1u) << "generation 0 is never handed out";
    EXPECT_EQ(wrapped.slot_idx, 1u) << "the second lap of slot 0 of a 1-slot class";
    EXPECT_EQ(vs_pool_slot_data(p.get(), &wrapped), data);
    // The handle from the first allocation has the same generation, and names lap 0: stale.
    vs_slot_ref old = vs_slot_ref_unpack(old_handle);
    EXPECT_EQ(old.generation, wrapped.generation);
    EXPECT_EQ(vs_pool_slot_data(p.get(), &old), nullptr);
    EXPECT_EQ(vs_pool_free(p.get(), old), VS_EDOUBLEFREE);
    EXPECT_EQ(vs_pool_transfer(p.get(), old, 1, 2), VS_ESTALE);
    EXPECT_EQ(vs_pool_set_tag(p.get(), old, 7), VS_ESTALE);
    // The new ref works everywhere a ref does, handle included.
    vs_slot_ref back = vs_slot_ref_unpack(vs_slot_ref_pack(wrapped));
    EXPECT_EQ(back.slot_idx, wrapped.slot_idx);
    vs_slot_ref found;
    ASSERT_EQ(vs_pool_ref_of(p.get(), data, &found), VS_OK);
    EXPECT_EQ(found.slot_idx, wrapped.slot_idx);
    EXPECT_EQ(found.generation, wrapped.generation);
    vs_slot_info info;
    ASSERT_EQ(vs_pool_slot_info(p.get(), 0, wrapped.slot_idx, &info), VS_OK);
    EXPECT_EQ(info.lap, 1u);
    EXPECT_EQ(info.owner, 1);
    ASSERT_EQ(vs_pool_transfer(p.get(), back, 1, 2), VS_OK);
    EXPECT_EQ(vs_pool_free_owned(p.get(), back, 2), VS_OK);
    EXPECT_EQ(vs_pool_free(p.get(), back), VS_EDOUBLEFREE);
}

TEST(Laps, ASlotOutOfLapsRetiresInsteadOfRepeatingAHandle)
{
    // 8 slots: 2^20 laps each (2^24 / 8 would allow more; the word holds 20 bits of lap).
    HeapPool p;
    const uint32_t laps = 1u << 20;
    set_free_word(p.get(), 0, 3, UINT32_MAX, laps - 1); // slot 3's last generation was used
    std::vector<vs_slot_ref> got;
    EXPECT_EQ(drain_count(p.get(), 1, &got), 13u) << "slot 3 of class 0 is never handed out";
    for (auto &r : got)
        EXPECT_FALSE(r.class_idx == 0 && r.slot_idx % 8 == 3);
    vs_slot_info info;
    ASSERT_EQ(vs_pool_slot_info(p.get(), 0, 3, &info), VS_OK);
    EXPECT_EQ(info.state, (uint32_t)VS_SLOT_RETIRED);
    for (auto &r : got)
        ASSERT_EQ(vs_pool_free(p.get(), r), VS_OK);
    vs_pool_republish_free(p.get());
    EXPECT_FALSE(*static_cast<uint64_t *>(p->classes[0].bitmap) & 1u << 3)
        << "a retired slot is not published as free";
    // A slot in its last lap still runs to the end of it: laps x (2^32 - 1) allocations.
    set_free_word(p.get(), 0, 5, UINT32_MAX - 1, laps - 1);
    vs_slot_ref r;
    bool found = false;
    while (vs_pool_allocate(p.get(), 1, 1, &r) && r.class_idx == 0)
        if (r.slot_idx % 8 == 5) {
            found = true;
            EXPECT_EQ(r.slot_idx, (laps - 1) * 8 + 5);
            EXPECT_EQ(r.generation, UINT32_MAX);
            vs_slot_ref back = vs_slot_ref_unpack(vs_slot_ref_pack(r));
            EXPECT_NE(vs_pool_slot_data(p.get(), &back), nullptr) << "the highest ref still packs";
            break;
        }
    EXPECT_TRUE(found);
}

TEST(Laps, AScribbledLapNeverMakesARefOutOfRange)
{
    HeapPool p;
    set_free_word(p.get(), 1, 0, 5, (1u << 20) - 1 + 1); // lap bits all set past the class's laps
    set_free_word(p.get(), 2, 1, 0, 0xfffff);
    std::vector<vs_slot_ref> got;
    drain_count(p.get(), 1, &got);
    for (auto &r : got) {
        EXPECT_LT(r.slot_idx, vs_pool_slot_count(p.get(), r.class_idx) << 20);
        EXPECT_NE(vs_slot_ref_pack(r), 0u);
        EXPECT_NE(vs_pool_slot_data(p.get(), &r), nullptr);
    }
}
