/* The segment side of the shim: mapped at init, joined at the first routed allocation; routed
 * blocks are slots (a block's address is its slot's), freed by address from any process
 * that maps the segment at the same place. A full pool or a segment that cannot be opened
 * makes the caller fall back; it never fails the program's allocation. What a fork child
 * gets of the blocks is fork.c. Only the core's calls reach into the segment. */
#include "internal.h"

#ifdef VS_HAVE_VALGRIND
#include <valgrind/memcheck.h>
#else
#define VALGRIND_FREELIKE_BLOCK(p, rz) ((void)(p))
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

uintptr_t vsp_seg_lo, vsp_seg_hi;
vs_segment vsp_seg;
const vs_pool *vsp_pool;

static uint8_t peer;          /* our peer id; 0 in a fork child until it routes again */
static uint32_t largest;      /* the largest slot size */
static bool left;             /* left at exit: the segment's slots are no longer ours */
/* The segment is mapped at init (a raw routed pointer from a cooperating process must be
 * recognised, readable and freeable before this process routes anything), and joined at the
 * first routed allocation: a process that never routes never takes a peer entry. */
enum { SEG_CLOSED, SEG_MAPPED /* not joined */, SEG_JOINING, SEG_JOINED, SEG_FAILED };
static _Atomic int seg_state;

static const vs_pool *pool(void) { return vsp_pool; }

static _Noreturn void fatal(const char *what, const void *p)
{
    char line[160], *q = line, *end = line + sizeof line;
    char hex[20] = "0x", *h = hex + 2;
    for (int shift = 44; shift >= 0; shift -= 4)
        *h++ = "0123456789abcdef"[((uintptr_t)p >> shift) & 15];
    *h = '\0';
    q = vsp_append(q, end, "varslot: ");
    q = vsp_append(q, end, what);
    q = vsp_append(q, end, " ");
    q = vsp_append(q, end, hex);
    vsp_append(q, end, "\n");
    vsp_write(line);
    abort(); /* as glibc does for a corrupted heap: continuing would spread the damage */
}

/* ---- opening ---- */

static void warn_once(const char *what, int rc)
{
    char line[512], *p = line, *end = line + sizeof line;
    p = vsp_append(p, end, "varslot: ");
    p = vsp_append(p, end, what);
    p = vsp_append(p, end, " ");
    p = vsp_append(p, end, vsp_cfg.segment);
    p = vsp_append(p, end, ": ");
    p = vsp_append(p, end, vs_strerror(rc));
    p = vsp_append(p, end, " (");
    p = vsp_append(p, end, vs_last_detail());
    p = vsp_append(p, end, "); routed allocations fall back");
    vsp_write_line(STDERR_FILENO, line, p, end);
}

void vsp_segment_map(void)
{
    vs_segment_options opts = {0};
    if (vsp_cfg.classes.count) {
        opts.classes = vsp_cfg.classes.list;
        opts.class_count = vsp_cfg.classes.count;
    }
    int rc = vs_segment_open_or_create_flags(&vsp_seg, vsp_cfg.segment, &opts,
                                             vsp_cfg.trust_owner ? VS_OPEN_TRUST_OWNER : 0);
    if (rc != VS_OK) {
        warn_once("cannot open or create", rc);
        atomic_store(&seg_state, SEG_FAILED);
        return;
    }
    const vs_pool *p = vsp_pool = vs_segment_pool(&vsp_seg);
    largest = vs_pool_slot_size(p, vs_pool_class_count(p) - 1);
    void *map;
    size_t len;
    bool at_creator;
    vs_segment_mapping(&vsp_seg, &map, &len, &at_creator);
    if (vsp_cfg.verbose && !at_creator)
        vsp_write("varslot: segment mapped away from its creator's address: raw pointers are "
                  "not portable to other processes (handles are)\n");
    vsp_seg_hi = (uintptr_t)map + len;
    vsp_seg_lo = (uintptr_t)map;
    atomic_store_explicit(&seg_state, SEG_MAPPED, memory_order_release);
}

/* Joins once per process (again in a fork child); threads that arrive while another joins
 * fall back this time. */
static bool segment_ready(void)
{
    int s = atomic_load_explicit(&seg_state, memory_order_acquire);
    if (VSP_LIKELY(s == SEG_JOINED))
        return !left;
    if (s != SEG_MAPPED || left || !atomic_compare_exchange_strong(&seg_state, &s, SEG_JOINING))
        return false;
    int rc = vs_segment_join(&vsp_seg, &peer);
    if (rc != VS_OK)
        warn_once("cannot join", rc);
    atomic_store_explicit(&seg_state, rc == VS_OK ? SEG_JOINED : SEG_FAILED, memory_order_release);
    return rc == VS_OK;
}

/* ---- routed blocks ---- */

void *vsp_routed_alloc(size_t size, size_t align, uint32_t tag, bool zero)
{
    /* Slots are 64-byte aligned; those of a page or more are page aligned. */
    size_t want = align > VS_SLOT_ALIGN && size < VS_SLOT_PAGE ? VS_SLOT_PAGE : size;
    if (align > VS_SLOT_PAGE || !segment_ready() || want > largest) {
        vsp_stats_fallback();
        return NULL;
    }
    vs_slot_ref ref;
    if (!vs_pool_allocate(pool(), (uint32_t)want, peer, &ref)) {
        vsp_stats_fallback();
        return NULL;
    }
    void *p = vs_pool_slot_data(pool(), &ref);
    vs_slot_location ps;
    if (VSP_UNLIKELY(vsp_privatized) && vsp_is_privatized(p, &ps) && !vsp_unprivatize(&ps)) {
        vs_pool_free(pool(), ref); /* its pages are not the segment's here: useless to share */
        vsp_stats_fallback();
        return NULL;
    }
    if (want != size)
        vs_pool_set_size(pool(), ref, (uint32_t)size);
    if (tag)
        vs_pool_set_tag(pool(), ref, tag);
    if (zero)
        memset(p, 0, size); /* slots are reused: unlike fresh pages, they hold old bytes */
    vsp_stats_routed(size);
    return p;
}

void vsp_routed_free(void *p)
{
    vs_slot_location ps;
    if (VSP_UNLIKELY(vsp_privatized) && vsp_is_privatized(p, &ps)) {
        vsp_unprivatize(&ps); /* the parent's copy, ours alone: nothing to return */
        return;
    }
    if (left)
        return; /* after leaving at exit the slot is not ours: our copy (if any) stays */
    vs_slot_ref ref;
    vs_slot_info info = {0};
    int rc = vs_pool_ref_of(pool(), p, &ref);
    if (rc == VS_OK && vs_pool_slot_data(pool(), &ref) != p)
        rc = VS_EINVAL; /* inside a block, not its start */
    else if (rc == VS_OK && vs_pool_slot_info(pool(), ref.class_idx, ref.slot_idx, &info) == VS_OK &&
             (rc = vs_pool_free(pool(), ref)) == VS_OK) {
        vsp_stats_freed(info.size, info.owner == peer);
        return;
    }
    /* Let memcheck, if it watches, report the bad free with its stacks before we stop. */
    VALGRIND_FREELIKE_BLOCK(p, 0);
    if (rc == VS_EINVAL)
        fatal("free(): invalid pointer into the varslot segment", p);
    fatal("free(): double free of a routed block", p); /* ESTALE or a racing EDOUBLEFREE */
}

size_t vsp_routed_usable_size(const void *p)
{
    vs_slot_location loc;
    return vs_pool_locate(pool(), p, &loc) == VS_OK ? vs_pool_slot_size(pool(), loc.class_idx) : 0;
}

size_t vsp_routed_claim_usable(const void *p)
{
    size_t usable = vsp_routed_usable_size(p);
    vs_slot_ref ref;
    vs_slot_location ps;
    if (usable && !left && !(vsp_privatized && vsp_is_privatized(p, &ps)) &&
        vs_pool_ref_of(pool(), p, &ref) == VS_OK && vs_pool_slot_data(pool(), &ref) == p)
        vs_pool_set_size(pool(), ref, (uint32_t)usable);
    return usable;
}

size_t vsp_routed_size_in_use(const void *p)
{
    vs_slot_location ps;
    vs_slot_ref ref;
    vs_slot_info info;
    /* A private copy, or a slot we left at exit (someone else's now): the slot word does not
     * describe our bytes; the whole slot is what we can copy. */
    if (left || (vsp_privatized && vsp_is_privatized(p, &ps)))
        return vsp_routed_usable_size(p);
    if (vs_pool_ref_of(pool(), p, &ref) != VS_OK ||
        vs_pool_slot_info(pool(), ref.class_idx, ref.slot_idx, &info) != VS_OK)
        return 0;
    return info.size;
}

bool vsp_routed_resize_in_place(void *p, size_t size)
{
    vs_slot_ref ref;
    vs_slot_info info;
    vs_slot_location ps;
    if (left || (vsp_privatized && vsp_is_privatized(p, &ps)))
        return false; /* not a slot of ours to resize */
    if (size > UINT32_MAX || vs_pool_ref_of(pool(), p, &ref) != VS_OK ||
        vs_pool_slot_data(pool(), &ref) != p || /* inside a block: not one realloc knows */
        vs_pool_slot_info(pool(), ref.class_idx, ref.slot_idx, &info) != VS_OK ||
        vs_pool_set_size(pool(), ref, (uint32_t)size) != VS_OK)
        return false;
    vsp_stats_resized(info.size, size);
    return true;
}

/* The handle is for sending: the block is handed over (memory checkers stop counting it as
 * ours, so it is no leak here and the receiver's free is no double free). */
uint64_t vsp_routed_handle_of(const void *p)
{
    vs_slot_ref ref;
    if (vs_pool_ref_of(pool(), p, &ref) != VS_OK || vs_pool_slot_data(pool(), &ref) != p)
        return 0; /* not the start of a routed block */
    vs_pool_handed_over(pool(), ref);
    return vs_slot_ref_pack(ref);
}

void *vsp_routed_adopt(uint64_t handle)
{
    if (!segment_ready())
        return NULL;
    vs_slot_ref ref = vs_slot_ref_unpack(handle);
    vs_slot_info info;
    if (vs_pool_slot_info(pool(), ref.class_idx, ref.slot_idx, &info) != VS_OK ||
        info.generation != ref.generation)
        return NULL;
    /* Even from ourselves (another thread sent it): the transfer makes it our block again for
     * memcheck, which forgot it when the handle was taken. */
    if (vs_pool_transfer(pool(), ref, info.owner, peer) != VS_OK)
        return NULL;
    if (info.owner != peer)
        vsp_stats_adopted(info.size); /* ours from now on; one of ours already counted */
    return vs_pool_slot_data(pool(), &ref);
}

/* ---- what fork.c needs of the segment ---- */

bool vsp_routed_owns_blocks(void)
{
    return atomic_load(&seg_state) == SEG_JOINED && !left;
}

bool vsp_routed_forget_peer(void)
{
    /* JOINING: another thread of the parent was joining as it forked; that join is the
     * parent's, and this child joins for itself at its first routed allocation. */
    int state = atomic_load(&seg_state);
    if ((state != SEG_JOINED && state != SEG_MAPPED && state != SEG_JOINING) || left)
        return false;
    vs_segment_after_fork_child(&vsp_seg); /* our own liveness; the parent's id is not ours */
    peer = 0;
    atomic_store(&seg_state, SEG_MAPPED);
    return true;
}

void vsp_each_owned_page_slot(bool (*fn)(const vs_slot_location *slot, size_t in_use, void *arg),
                              void *arg)
{
    const vs_pool *p = pool();
    for (size_t c = 0; c < vs_pool_class_count(p); c++) {
        vs_slot_location loc;
        uint32_t n = vs_pool_slot_count(p, c);
        if (vs_pool_locate_slot(p, (uint8_t)c, 0, &loc) != VS_OK || loc.span % 4096)
            continue;
        for (uint32_t i = 0; i < n; i++) {
            vs_slot_info info;
            vs_pool_slot_info(p, (uint8_t)c, i, &info);
            if (info.state != VS_SLOT_ALLOCATED || info.owner != peer)
                continue;
            vs_pool_locate_slot(p, (uint8_t)c, i, &loc);
            if (!fn(&loc, info.size, arg))
                return;
        }
    }
}

/* ---- exit ---- */

static bool privatize_at_exit(const vs_slot_location *slot, size_t in_use, void *arg)
{
    (void)in_use; /* the whole slot: a late write may land anywhere in it */
    (void)arg;
    vsp_make_private(slot->start, slot->span);
    return true;
}

/* Leaves the segment at exit, returning every slot we own. Threads may still be running,
 * and libraries finalised after us may still touch their blocks (libstdc++'s, for one), so
 * each owned block first becomes a private copy at the same address: late writes land there,
 * never in a slot another process has reused. */
void vsp_routed_at_exit(void)
{
    if (atomic_load(&seg_state) != SEG_JOINED || left)
        return;
    left = true; /* from here, routed requests fall back and routed frees are no-ops */
    vsp_each_owned_page_slot(privatize_at_exit, NULL);
    vs_segment_leave(&vsp_seg);
}
