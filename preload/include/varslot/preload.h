/* The opt-in API of libvarslot-preload.so, for programs that know about varslot.
 *
 * These functions live in the shim, not in libvarslot. A program that must also run without
 * the shim looks them up at run time instead of linking them:
 *
 *     #include <dlfcn.h>
 *     #include <varslot/preload.h>
 *     vs_tag_push_fn push = (vs_tag_push_fn)dlsym(RTLD_DEFAULT, "vs_tag_push");
 *     if (push) push(42);              // routed from here on, tagged 42
 *     void *frame = malloc(1 << 20);
 *     ...
 *
 * Without the shim the lookups return NULL and malloc is plain malloc. */
#ifndef VARSLOT_PRELOAD_H
#define VARSLOT_PRELOAD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VS_TAG_MAX_DEPTH 16

/* Routes every allocation this thread makes until the matching vs_tag_pop, whatever its size
 * (up to the largest class), and labels its slot with tag (shown by `varslot ls`). Scopes
 * nest; returns 0, or -1 when VS_TAG_MAX_DEPTH scopes are already open. */
int vs_tag_push(uint32_t tag);
/* Closes the innermost scope (no effect when none is open). */
void vs_tag_pop(void);

/* The handle of a routed allocation, to send to another process; 0 if ptr is not one. Taking
 * the handle hands the block over: do not touch it afterwards (under Valgrind it stops being
 * this process's block, so memcheck reports neither a leak here nor a double free there). */
uint64_t vs_handle_of(const void *ptr);
/* The pointer for a handle received from another process, or NULL if the handle is stale or
 * not of this segment. The calling process takes ownership: it frees the block (free()), and
 * the sender's death no longer affects it. */
void *vs_ptr_of(uint64_t handle);
/* 1 if ptr points into a routed allocation of this process's segment, else 0. */
int vs_owns(const void *ptr);

typedef int (*vs_tag_push_fn)(uint32_t);
typedef void (*vs_tag_pop_fn)(void);
typedef uint64_t (*vs_handle_of_fn)(const void *);
typedef void *(*vs_ptr_of_fn)(uint64_t);
typedef int (*vs_owns_fn)(const void *);

#ifdef __cplusplus
}
#endif
#endif
