// Routing (preload/route.c): the VARSLOT_MIN_SIZE=1 run really uses routed blocks.
#include "semantics.h"

namespace semantics {
namespace {

// ---------------------------------------------------------------------------------------
// shim only: the VARSLOT_MIN_SIZE=1 run must really exercise routed blocks

// Skipped without the shim. With VARSLOT_MIN_SIZE=1 every allocation that fits a slot is
// routed, so the whole suite above ran on shared-segment blocks; this makes sure it did.
TEST(ShimRouting, MinSizeOneRoutesSmallAllocations)
{
    auto owns = lookup<vs_owns_fn>("vs_owns");
    if (!owns)
        GTEST_SKIP() << "libvarslot-preload.so is not loaded (plain glibc run)";
    const char *ms = getenv("VARSLOT_MIN_SIZE");
    if (!ms || strcmp(ms, "1") != 0)
        GTEST_SKIP() << "VARSLOT_MIN_SIZE is not 1";
    for (size_t n : {(size_t)1, (size_t)100, (size_t)4096, (size_t)70000, (size_t)1 << 20}) {
        void *p = opaque(malloc(opaque(n)));
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(owns(p), 1) << "malloc(" << n << ") not routed with VARSLOT_MIN_SIZE=1";
        free(opaque(p));
        p = opaque(calloc(opaque(n), opaque((size_t)1)));
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(owns(p), 1) << "calloc(" << n << ", 1) not routed with VARSLOT_MIN_SIZE=1";
        free(opaque(p));
    }
    int x;
    EXPECT_EQ(owns(&x), 0);
}

} // namespace
} // namespace semantics
