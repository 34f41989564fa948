/* The shim's parts and what they share: options, the fallback allocator, routing, the
 * segment, statistics. Nothing here may call malloc: it all runs inside malloc. */
#ifndef VARSLOT_PRELOAD_INTERNAL_H
#define VARSLOT_PRELOAD_INTERNAL_H

#include "varslot.h"
#include "varslot/preload.h"
#include "options.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Everything declared below is the shim's own: hidden, so it is reached PC-relative rather
 * than through the GOT on every malloc. Exports say VSP_EXPORT. */
#pragma GCC visibility push(hidden)

#define VSP_LIKELY(x) __builtin_expect(!!(x), 1)
#define VSP_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define VSP_TLS __thread __attribute__((tls_model("initial-exec")))
#define VSP_EXPORT __attribute__((visibility("default")))

/* glibc's malloc alignment: every block the shim returns is aligned at least this much. */
#define VSP_MIN_ALIGN 16

/* ---- options (config.c; the table and its parsers: options.h) ---- */
extern struct vsopt_values vsp_cfg;
void vsp_config_load(void); /* reads VARSLOT_* once (secure_getenv), warns on bad values */
void vsp_config_print(void);

/* ---- warnings about options: once per process tree (warn.c) ---- */
/* Whether this process is the first of its tree to see VARIABLE=value, and so should warn. */
bool vsp_warning_is_new(const char *variable, const char *value);

/* ---- lines for stderr without stdio (line.c) ---- */
void vsp_write(const char *s);
char *vsp_fmt_u64(char *p, const char *end, uint64_t v);
char *vsp_append(char *p, const char *end, const char *s);
/* s, cut to max bytes and "..." when longer. */
char *vsp_append_clipped(char *p, const char *end, const char *s, size_t max);
/* Writes [line, p) and a newline to fd; a full line is cut to end in "...". */
void vsp_write_line(int fd, char *line, char *p, char *end);

/* ---- the fallback allocator (backend.c): jemalloc, or glibc's with VARSLOT_FALLBACK=libc ---- */
/* jemalloc's extended API, called directly on the hot path (jemalloc.h would also declare
 * malloc & co, which are ours here). */
VSP_EXPORT void *mallocx(size_t size, int flags); /* jemalloc's, not hidden */
VSP_EXPORT void dallocx(void *ptr, int flags);
extern bool vsp_bootstrap_used; /* the static arena served something (libc lookup) */
/* jemalloc's own fast paths (see vsp_backend_init); mallocx/dallocx until they are found. */
struct vsp_jemalloc {
    void *(*malloc)(size_t);
    void (*free)(void *);
};
extern struct vsp_jemalloc vsp_je;
void vsp_backend_init(void);
void *vsp_backend_malloc(size_t size);
void *vsp_backend_calloc(size_t n, size_t size);
void *vsp_backend_memalign(size_t align, size_t size);
void *vsp_backend_realloc(void *p, size_t size);
void vsp_backend_free(void *p);
size_t vsp_backend_usable_size(void *p);
bool vsp_bootstrap_owns(const void *p);
struct mallinfo2 vsp_backend_mallinfo(void);
int vsp_backend_trim(size_t pad);
int vsp_backend_mallopt(int param, int value);

/* The common case inline: jemalloc, no bootstrap block, nothing to look up. */
static inline void *vsp_fallback_malloc(size_t size)
{
    if (VSP_UNLIKELY(vsp_cfg.fallback_libc))
        return vsp_backend_malloc(size);
    /* jemalloc's 8-byte class would break glibc's 16-byte promise. */
    return vsp_je.malloc(size < VSP_MIN_ALIGN ? VSP_MIN_ALIGN : size);
}

static inline void vsp_fallback_free(void *p)
{
    if (VSP_UNLIKELY(vsp_cfg.fallback_libc || vsp_bootstrap_used))
        vsp_backend_free(p);
    else
        vsp_je.free(p);
}

/* ---- routing (route.c) ---- */
extern VSP_TLS int vsp_tag_depth;
extern VSP_TLS uint32_t vsp_tag_stack[VS_TAG_MAX_DEPTH];
void vsp_route_init(void);
bool vsp_caller_routed(const void *ret_addr, uint32_t *tag);

/* Route this request? size: bytes asked for; caller: the malloc call's return address. */
static inline bool vsp_wants_route(size_t size, const void *caller, uint32_t *tag)
{
    if (vsp_tag_depth > 0) {
        *tag = vsp_tag_stack[vsp_tag_depth - 1];
        return true;
    }
    *tag = 0;
    if (vsp_cfg.min_size && size >= vsp_cfg.min_size)
        return true;
    return vsp_cfg.callers.count && vsp_caller_routed(caller, tag);
}

/* ---- the segment side (routed.c) ---- */
extern uintptr_t vsp_seg_lo, vsp_seg_hi; /* the mapped segment; both 0 until it is open */
static inline bool vsp_in_segment(const void *p)
{
    return (uintptr_t)p - vsp_seg_lo < vsp_seg_hi - vsp_seg_lo;
}
void *vsp_routed_alloc(size_t size, size_t align, uint32_t tag, bool zero);
void vsp_routed_free(void *p);
size_t vsp_routed_usable_size(const void *p);
/* malloc_usable_size: the program may now use the whole slot, so the block's size in use
 * becomes the slot size (what a fork child's copy and realloc then carry). */
size_t vsp_routed_claim_usable(const void *p);
size_t vsp_routed_size_in_use(const void *p);
bool vsp_routed_resize_in_place(void *p, size_t size);
uint64_t vsp_routed_handle_of(const void *p);
void *vsp_routed_adopt(uint64_t handle);
void vsp_segment_map(void); /* at init: open or create, and map; joining waits */
void vsp_routed_at_exit(void);
/* For fork.c. The segment is opaque here: only the core's calls look inside. */
extern vs_segment vsp_seg;
extern const vs_pool *vsp_pool; /* vsp_seg's pool once mapped, else NULL */
bool vsp_routed_owns_blocks(void); /* joined and not left: there may be blocks to copy */
/* In a fork child: forget the parent's peer id (join again to route). false: the segment
 * is not in use here, nothing to do. */
bool vsp_routed_forget_peer(void);
/* Calls fn on each slot of whole pages that we own, with the bytes its block uses (its size
 * in use), until fn returns false. */
void vsp_each_owned_page_slot(bool (*fn)(const vs_slot_location *slot, size_t in_use, void *arg),
                              void *arg);

/* ---- fork privatisation (fork.c) ---- */
extern uint8_t *vsp_privatized; /* NULL until a fork child took private copies */
/* Whether p is in a slot whose pages are a private copy here; *slot says which. */
bool vsp_is_privatized(const void *p, vs_slot_location *slot);
/* Maps the segment's pages back under a privatized slot (the child frees it, or claims it).
 * false: they could not be mapped, the slot is still private here. */
bool vsp_unprivatize(const vs_slot_location *slot);
/* Swaps a private copy of [slot, slot+len) in under the same address. */
void vsp_make_private(void *slot, size_t len);
void vsp_fork_prepare(void);
void vsp_fork_parent(void);
void vsp_fork_child(void);

/* ---- statistics (stats.c) ---- */
struct vsp_stats {
    _Atomic uint64_t routed, routed_bytes, freed, fallback, live_slots, peak_slots, live_bytes;
};
extern struct vsp_stats vsp_stats;
void vsp_stats_routed(size_t bytes);
void vsp_stats_freed(size_t bytes, bool ours);
void vsp_stats_adopted(size_t bytes);
void vsp_stats_resized(size_t old_bytes, size_t new_bytes);
static inline void vsp_stats_fallback(void)
{
    atomic_fetch_add_explicit(&vsp_stats.fallback, 1, memory_order_relaxed);
}
void vsp_stats_init(void);
void vsp_stats_print(void);

/* ---- lifecycle (shim.c) ---- */
void vsp_ensure_init(void);
extern VSP_TLS int vsp_busy; /* > 0 while this thread is inside the shim's own machinery */

#pragma GCC visibility pop
#endif
