// What the shim's suites share (one file per part of preload/: route, shim, routed, fork,
// config). They test behaviour of libvarslot-preload.so that is the shim's own (the malloc
// family's semantics against glibc's are tests/preload/semantics/'s business).
//
// The binary is meant to run under the shim (tests/preload/run-shim-tests.sh sets
// LD_PRELOAD, VARSLOT_SEGMENT=<fresh>, VARSLOT_MIN_SIZE=64K, VARSLOT_CALLERS=
// libvstest-caller.so, VARSLOT_STATS=1, VSTEST_PEER and VSTEST_CALLER_LIB). Without the shim
// every test is skipped. What the shim did is checked from the outside too: the segment is
// opened a second time through the core API (libvarslot.a, linked in; the shim's own copy is
// private to it) to read slot states, owners and tags.
//
// Child processes get no gtest: they report through their exit status and their stdout.
#pragma once

#include <gtest/gtest.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <varslot.h>
#include <varslot/preload.h>

extern char **environ;

namespace shimtest {

// ---------------------------------------------------------------------------------------
// the shim's API, found the documented way

struct ShimApi {
    vs_tag_push_fn push = nullptr;
    vs_tag_pop_fn pop = nullptr;
    vs_handle_of_fn handle_of = nullptr;
    vs_ptr_of_fn ptr_of = nullptr;
    vs_owns_fn owns = nullptr;
    bool present() const { return owns && push && pop && handle_of && ptr_of; }
};

const ShimApi &api();
bool owned(const void *p);

// The compiler may not see through these: every malloc really happens, with this size.
template <class T>
inline T opaque(T v)
{
    asm volatile("" : "+r"(v) : : "memory");
    return v;
}

// ---------------------------------------------------------------------------------------
// configuration as the runner set it

size_t min_size(); // VARSLOT_MIN_SIZE (the shim's default is 64K)
bool env_is(const char *var, const char *value);
// A helper program or library: $env_var, else `name` beside this binary.
std::string helper_path(const char *env_var, const char *name);

// ---------------------------------------------------------------------------------------
// the segment, seen through the core API

class CoreView {
public:
    static CoreView &get()
    {
        static CoreView view;
        return view;
    }
    bool ok() const { return ok_; }
    const std::string &error() const { return error_; }
    const vs_pool *pool() { return vs_segment_pool(&seg_); }
    vs_segment *segment() { return &seg_; }

    vs_slot_info info(uint64_t handle); // the slot of a handle, as the segment says now
    bool released(uint64_t handle);     // the block it named freed (or freed and reused)?
    uint8_t peer_of(pid_t pid);         // the peer entry of a live process, 0 if none
    size_t owned_by(uint8_t peer);      // allocated slots of a peer id (0: of anyone)
    // Free slots that could hold a block of this size (allocation spills to larger classes).
    size_t free_slots_for(size_t size);
    size_t largest_slot();

private:
    CoreView();
    vs_segment seg_{};
    bool ok_ = false;
    std::string error_;
};

// ---------------------------------------------------------------------------------------
// content patterns

void fill(void *p, size_t n, uint32_t seed);
// Offset of the first byte that differs from the pattern, or SIZE_MAX if all match.
size_t mismatch(const void *p, size_t n, uint32_t seed);
bool all_bytes(const void *p, size_t n, unsigned char v);
uint64_t fnv1a(const void *p, size_t n);
std::string hex_head(const void *p, size_t n);

// ---------------------------------------------------------------------------------------
// child processes: fork + execve, pipes on stdin/stdout/stderr, a deadline

struct Child {
    pid_t pid = -1;
    int in = -1, out = -1, err = -1; // our ends
    double deadline = 0;
    std::string out_buf, err_buf;
    bool out_eof = false, err_eof = false;

    ~Child(); // not waited for (a failed test): killed, so nothing is left running

    // Environment: the current one, minus every VARSLOT_* not given in `set`, plus `set`.
    static std::vector<std::string> environment(const std::map<std::string, std::string> &set,
                                                bool keep_varslot = true);
    bool start(const std::vector<std::string> &argv, const std::vector<std::string> &env,
               double timeout_s, std::string *why);
    void send(const std::string &s);
    void close_stdin();
    // Reads whatever is available from stdout and stderr, waiting at most until `until`.
    // Returns false on timeout.
    bool pump(double until);
    // The next line of stdout (without '\n'); false on EOF or timeout.
    bool line(std::string *l);
    // Reads both streams to EOF and reaps the child. Returns its wait status, or -1 on
    // timeout (the child is then killed).
    int finish();
};

std::string describe_status(int status);
// "key=value" lines of a child's stdout.
std::map<std::string, std::string> key_values(const std::string &text);
std::string ptr_string(const void *p);

// ---------------------------------------------------------------------------------------
// the fixture: skip without the shim; every test must give back every slot it took

class Shim : public ::testing::Test {
protected:
    void SetUp() override
    {
        if (!api().present())
            GTEST_SKIP() << "not running under libvarslot-preload.so (dlsym(RTLD_DEFAULT, "
                            "\"vs_owns\") is NULL): run it with tests/preload/run-shim-tests.sh";
        CoreView &v = CoreView::get();
        ASSERT_TRUE(v.ok()) << v.error();
        my_peer_ = v.peer_of(getpid());
        ASSERT_NE(my_peer_, 0) << "this process has no peer entry in the segment";
        slots_at_start_ = v.owned_by(my_peer_);
    }
    void TearDown() override
    {
        if (!api().present() || !CoreView::get().ok() || !my_peer_)
            return;
        EXPECT_EQ(CoreView::get().owned_by(my_peer_), slots_at_start_)
            << "the test left slots allocated to this process (a leak, or a free that did "
               "not reach the pool)";
    }
    CoreView &view() { return CoreView::get(); }
    uint8_t my_peer_ = 0;
    size_t slots_at_start_ = 0;
};

// A size that is routed by size alone and fits the pool's largest class.
size_t routed_size(CoreView &v, size_t want);

} // namespace shimtest
