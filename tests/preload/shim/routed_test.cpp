// The segment side (preload/routed.c): routed blocks passed to another process (raw pointer,
// then handle), and a full pool that falls back instead of failing.
#include "shim_test.h"

namespace shimtest {
namespace {

// ---------------------------------------------------------------------------------------
// two cooperating processes

class CrossProcess : public Shim {
protected:
    std::string peer_ = helper_path("VSTEST_PEER", "vstest-peer");

    // A routed block of `len` bytes filled with pattern `seed`.
    unsigned char *routed_block(size_t len, uint32_t seed)
    {
        unsigned char *p = static_cast<unsigned char *>(malloc(opaque(len)));
        if (p)
            fill(p, len, seed);
        return p;
    }

    // Sends a raw pointer to `peer raw`, which reads and frees it.
    void raw_round_trip(const std::vector<std::string> &args,
                        const std::map<std::string, std::string> &env)
    {
        size_t len = routed_size(view(), 2 * min_size());
        unsigned char *p = routed_block(len, 31);
        ASSERT_TRUE(p && owned(p));
        uint64_t h = api().handle_of(p);
        pending_ = p;
        pending_handle_ = h;
        std::string head = hex_head(p, len);
        uint64_t sum = fnv1a(p, len);

        Child c;
        std::string why;
        std::vector<std::string> argv = {peer_, "raw"};
        argv.insert(argv.end(), args.begin(), args.end());
        ASSERT_TRUE(c.start(argv, Child::environment(env), 60, &why)) << why;
        c.send(ptr_string(p) + " " + std::to_string(len) + "\n");
        int status = c.finish();
        auto kv = key_values(c.out_buf);
        SCOPED_TRACE("peer stdout:\n" + c.out_buf + "peer stderr:\n" + c.err_buf);
        ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
            << "peer " << describe_status(status);
        EXPECT_EQ(kv["owns"], "1") << "vs_owns in the peer";
        EXPECT_EQ(kv["head"], head) << "the peer read other bytes at the same address";
        char want[32];
        snprintf(want, sizeof want, "%016" PRIx64, sum);
        EXPECT_EQ(kv["sum"], want);
        if (!args.empty() && args[0] == "--prime") {
            EXPECT_EQ(kv["primed"], "1") << "the peer's own tag-scoped malloc";
        }
        EXPECT_TRUE(kv.count("freed"));
        EXPECT_TRUE(view().released(h)) << "free() in the peer must return the slot to the pool";
        // p was the peer's to free, and it did: the slot may already be someone else's.
    }
    void TearDown() override
    {
        // A peer that failed before its free() leaves the block ours: give it back, so
        // one failure is not reported twice (as a leak too).
        if (pending_ && !view().released(pending_handle_))
            free(pending_);
        Shim::TearDown();
    }
    void *pending_ = nullptr;
    uint64_t pending_handle_ = 0;
};

TEST_F(CrossProcess, RawPointerIsValidAtTheSameAddressAndFreedByThePeer)
{
    raw_round_trip({"--prime"}, {});
}

// The receiver has not routed anything yet (its threshold is above libstdc++'s startup
// allocation): the segment must still be mapped where the sender's pointer points.
TEST_F(CrossProcess, RawPointerInAPeerThatHasNotRoutedYet)
{
    raw_round_trip({}, {{"VARSLOT_MIN_SIZE", "1G"}});
}

TEST_F(CrossProcess, HandleAdoptedByThePeerWhileTheSenderLives)
{
    size_t len = routed_size(view(), min_size());
    unsigned char *p = routed_block(len, 32);
    ASSERT_TRUE(p && owned(p));
    uint64_t h = api().handle_of(p);
    ASSERT_NE(h, 0u);
    std::string head = hex_head(p, len);
    uint64_t sum = fnv1a(p, len);

    Child c;
    std::string why, l;
    ASSERT_TRUE(c.start({peer_, "handle"}, Child::environment({}), 60, &why)) << why;
    c.send(std::to_string(h) + " " + std::to_string(len) + "\n");
    std::string got;
    while (c.line(&l) && l != "ready")
        got += l + "\n";
    auto kv = key_values(got);
    if (l != "ready") {
        int status = c.finish();
        FAIL() << "peer did not get ready: " << describe_status(status) << "\nstdout:\n"
               << c.out_buf << "\nstderr:\n" << c.err_buf;
    }
    EXPECT_EQ(kv["ptr"], ptr_string(p)) << "vs_ptr_of in the peer: same address";
    EXPECT_EQ(kv["owns"], "1");
    EXPECT_EQ(kv["head"], head);
    char want[32];
    snprintf(want, sizeof want, "%016" PRIx64, sum);
    EXPECT_EQ(kv["sum"], want);

    // Adopted: the slot is the peer's now, while we are alive and still map it.
    uint8_t their_peer = view().peer_of(c.pid);
    EXPECT_NE(their_peer, 0) << "the peer process has no peer entry";
    EXPECT_NE(their_peer, my_peer_);
    vs_slot_info i = view().info(h);
    EXPECT_EQ(i.state, (uint32_t)VS_SLOT_ALLOCATED);
    EXPECT_EQ(i.owner, their_peer) << "vs_ptr_of must transfer ownership to the caller";
    EXPECT_EQ(mismatch(p, len, 32), SIZE_MAX) << "our view of the block is unchanged";

    c.send("free\n");
    int status = c.finish();
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "peer " << describe_status(status) << "\nstdout:\n" << c.out_buf << "\nstderr:\n"
        << c.err_buf;
    EXPECT_NE(c.out_buf.find("freed"), std::string::npos);
    EXPECT_TRUE(view().released(h)) << "the peer's free() must return the slot";
    EXPECT_EQ(view().peer_of(getpid()), my_peer_) << "we are still a peer";
    EXPECT_EQ(api().ptr_of(h), nullptr) << "vs_ptr_of of a freed block's handle";
    EXPECT_EQ(api().ptr_of(0), nullptr);
}

// ---------------------------------------------------------------------------------------
// pool exhaustion: a full pool never fails a malloc

using Exhaustion = Shim;

TEST_F(Exhaustion, FullPoolFallsBack)
{
    size_t m = min_size();
    size_t free_slots = view().free_slots_for(m);
    if (free_slots > 2048)
        GTEST_SKIP() << free_slots << " free slots: too many to fill in a test";
    constexpr size_t kExtra = 6; // the runner's tiny configuration expects fallback >= this
    std::vector<void *> blocks;
    blocks.reserve(free_slots + kExtra);
    size_t routed = 0, fell_back = 0, unexpected = 0;
    for (size_t i = 0; i < free_slots + kExtra; i++) {
        void *p = malloc(opaque(m));
        ASSERT_NE(p, nullptr) << "malloc " << i << " failed: a full pool must fall back";
        bool o = owned(p);
        (o ? routed : fell_back)++;
        if (o != (i < free_slots))
            unexpected++;
        memset(p, (int)(i & 0xff), m);
        blocks.push_back(p);
    }
    for (size_t i = 0; i < blocks.size(); i++)
        EXPECT_TRUE(all_bytes(blocks[i], m, (unsigned char)(i & 0xff))) << "block " << i;
    EXPECT_EQ(routed, free_slots) << "every free slot should have been used first";
    EXPECT_EQ(fell_back, kExtra);
    EXPECT_EQ(unexpected, 0u) << "routed blocks after a fallback, or the reverse";
    EXPECT_EQ(view().free_slots_for(m), 0u);
    for (void *p : blocks)
        free(p);
    EXPECT_EQ(view().free_slots_for(m), free_slots) << "every slot back after the frees";
    // Routing works again.
    void *again = malloc(opaque(m));
    EXPECT_TRUE(owned(again));
    free(again);
    printf("[          ] %zu blocks of %zu bytes: %zu routed, %zu fell back\n", blocks.size(), m,
           routed, fell_back);
}

} // namespace
} // namespace shimtest
