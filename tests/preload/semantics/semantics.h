// The observable semantics of glibc 2.36's malloc family (Debian 12), pinned down so that
// libvarslot-preload.so can be held to them. One file per part of preload/shim.c (malloc,
// realloc, aligned, sizes and statistics, glibc's internal names), plus threads and routing;
// this header holds what they share.
//
// The same binary runs twice over:
//   - plainly, against glibc itself: it must pass, which proves each expectation is glibc's;
//   - with LD_PRELOAD=build/lib/libvarslot-preload.so, in every shim mode
//     (tests/preload/run-semantics.sh): it must pass again, which proves the shim matches.
//
// Every expectation here was checked against glibc-2.36 malloc/malloc.c (and
// malloc/reallocarray.c); the comments name the rule. Only what glibc guarantees, or what it
// observably does and a program could rely on, is asserted: exact usable sizes, chunk layout
// and arena details are not.
//
// Compiler hygiene: GCC knows the malloc family as builtins. It may delete a malloc/free
// pair, assume calloc memory reads as zero, assume free does not touch errno, and warn about
// deliberately huge constant sizes. opaque() hides values from the optimizer (and is a full
// compiler memory barrier), so every call really happens, in order, with sizes the compiler
// cannot see.
#pragma once

#include <gtest/gtest.h>

#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <random>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <varslot/preload.h>

namespace semantics {

// Returns v unchanged, but the compiler can assume nothing about it, and all memory may have
// been read and written: a call wrapped as opaque(f(opaque(x))) cannot be folded, elided or
// moved across neighbouring errno stores and loads.
template <class T>
inline T opaque(T v)
{
    asm volatile("" : "+r"(v) : : "memory");
    return v;
}
inline void barrier()
{
    asm volatile("" : : : "memory");
}

constexpr size_t kHalf = SIZE_MAX / 2 + 1;               // 2^63: the largest power of two
constexpr size_t kPtrdiffMax = (size_t)PTRDIFF_MAX;      // == SIZE_MAX / 2
constexpr size_t kNoMismatch = SIZE_MAX;

inline size_t page_size()
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

inline bool is_aligned(const void *p, size_t a)
{
    return ((uintptr_t)p & (a - 1)) == 0;
}

inline size_t round_up(size_t n, size_t a)
{
    return (n + a - 1) & ~(a - 1);
}

// A byte pattern that depends on the offset's low and high bits and on a per-block seed, so
// a block that was moved, shifted, truncated, overlapped or mixed up with another shows.
inline unsigned char pat(size_t i, uint32_t seed)
{
    return (unsigned char)(seed + i * 0x9du + (i >> 8) * 0x3bu + (i >> 16) * 0x71u);
}
void fill(void *p, size_t n, uint32_t seed);
size_t first_mismatch(const void *p, size_t n, uint32_t seed); // kNoMismatch when all match
size_t first_nonzero(const void *p, size_t n);

// Writes every usable byte (so ASan, valgrind or a shim guard would notice an overstatement),
// then checks the whole usable size still reads back.
void write_whole_usable(void *p, uint32_t seed);

// Looked up at run time: not declared by the headers (cfree, __libc_*) or provided by the
// shim only (vs_owns).
template <class F>
F lookup(const char *name)
{
    return reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
}

using malloc_fn = void *(*)(size_t);
using free_fn = void (*)(void *);
using calloc_fn = void *(*)(size_t, size_t);
using realloc_fn = void *(*)(void *, size_t);
using memalign_fn = void *(*)(size_t, size_t);

// cfree, wherever this process has it (glibc: a compat-only symbol), or nullptr.
free_fn lookup_cfree();

// Bytes the allocator reports as handed out: heap chunks in use plus mmapped chunks. glibc
// counts a block in one of the two depending on the (dynamic) mmap threshold.
size_t in_use_bytes();

// Collects the violations of a rule over a long loop, so a failure prints one line with a
// count and the first few cases instead of thousands of lines.
class Violations {
public:
    void add(const std::string &what)
    {
        if (count_++ < 8)
            first_ += (first_.empty() ? "" : ", ") + what;
    }
    void add(const void *p)
    {
        char buf[32];
        snprintf(buf, sizeof buf, "%p", p);
        add(std::string(buf));
    }
    bool none() const { return count_ == 0; }
    friend std::ostream &operator<<(std::ostream &os, const Violations &v)
    {
        return os << v.count_ << " case(s): " << v.first_ << (v.count_ > 8 ? ", ..." : "");
    }

private:
    size_t count_ = 0;
    std::string first_;
};

// The sizes most tests walk: tiny, around tcache/fastbin limits, around the default mmap
// threshold (128 KiB), around the shim's slot classes (64K, 256K, 1M, 4M, 16M), beyond them.
const std::vector<size_t> &sizes();

struct Allocator {
    const char *name;
    std::function<void *(size_t)> alloc;
};

// Every way to get a block, as a function of the requested size.
std::vector<Allocator> allocators();

} // namespace semantics
