/* A tiny shared library for the shim suite's caller-routing tests (tests/preload/shim/
 * route_test.cpp): built as build/tests/libvstest-caller.so, dlopened by path, and named in
 * VARSLOT_CALLERS, so every allocation it makes is routed whatever its size.
 *
 * The malloc/realloc calls must not be tail calls: a `jmp malloc` would make malloc's return
 * address the test binary's, and the shim would (rightly) not see this library as the caller.
 * The compiler barrier after each call keeps it a real call even at -O2. */
#include <stddef.h>
#include <stdlib.h>

#define KEEP_CALL() __asm__ volatile("" ::: "memory")

__attribute__((visibility("default"))) void *caller_lib_alloc(size_t size)
{
    void *p = malloc(size);
    KEEP_CALL();
    return p;
}

__attribute__((visibility("default"))) void *caller_lib_realloc(void *p, size_t size)
{
    void *q = realloc(p, size);
    KEEP_CALL();
    return q;
}
