/* The segment side of the shim: mapped at init, joined at the first routed allocation; routed
 * blocks are slots (a block's address is its slot's), freed by address from any process
 * that maps the segment at the same place. A full pool or a segment that cannot be opened
 * makes the caller fall back; it never fails the program's allocation. */
#include "internal.h"

#ifdef VS_HAVE_VALGRIND
#include <valgrind/memcheck.h>
#else
#define VALGRIND_DISABLE_ERROR_REPORTING
#define VALGRIND_ENABLE_ERROR_REPORTING
#define VALGRIND_FREELIKE_BLOCK(p, rz) ((void)(p))
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

uintptr_t vsp_seg_lo, vsp_seg_hi;

static vs_segment seg;
static uint8_t peer;          /* our peer id; 0 in a fork child until it routes again */
static uint32_t largest;      /* the largest slot size */
static bool left;             /* left at exit: the segment's slots are no longer ours */
/* The segment is mapped at init (a raw routed pointer from a cooperating process must be
 * recognised, readable and freeable before this process routes anything), and joined at the
 * first routed allocation: a process that never routes never takes a peer entry. */
enum { SEG_CLOSED, SEG_MAPPED /* not joined */, SEG_JOINING, SEG_JOINED, SEG_FAILED };
static _Atomic int seg_state;

static const vs_pool *pool(void) { return &seg.pool; }

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
    vsp_append(p, end, "); routed allocations fall back\n");
    vsp_write(line);
}

void vsp_segment_map(void)
{
    vs_segment_options opts = {0};
    if (vsp_cfg.class_count) {
        opts.classes = vsp_cfg.classes;
        opts.class_count = vsp_cfg.class_count;
    }
    int rc = vs_segment_open_or_create(&seg, vsp_cfg.segment, &opts);
    if (rc != VS_OK) {
        warn_once("cannot open or create", rc);
        atomic_store(&seg_state, SEG_FAILED);
        return;
    }
    const vs_pool *p = pool();
    largest = vs_pool_slot_size(p, vs_pool_class_count(p) - 1);
    if (vsp_cfg.verbose && !seg.at_creator_address)
        vsp_write("varslot: segment mapped away from its creator's address: raw pointers are "
                  "not portable to other processes (handles are)\n");
    vsp_seg_hi = (uintptr_t)seg.map + seg.map_len;
    vsp_seg_lo = (uintptr_t)seg.map;
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
    int rc = vs_segment_join(&seg, &peer);
    if (rc != VS_OK)
        warn_once("cannot join", rc);
    atomic_store_explicit(&seg_state, rc == VS_OK ? SEG_JOINED : SEG_FAILED, memory_order_release);
    return rc == VS_OK;
}

/* ---- fork: the child gets a private copy of the blocks its parent owned ---- */

struct snapshot {
    uintptr_t slot;
    void *copy;
    size_t len;
};
static struct snapshot *snaps;
static size_t nsnaps, snaps_bytes;
/* In a fork child (and its own children): one bit per slot whose pages are a private copy.
 * Threads of the child may flip bits of one byte at once: atomic. */
static uint8_t *privatized;

/* The pool-wide number of the slot addr is in, or SIZE_MAX outside every slot array. */
static size_t global_index(const struct vs_pool_class **cls_out, uintptr_t addr, uint32_t *idx)
{
    const vs_pool *p = pool();
    for (size_t c = 0; c < p->class_count; c++) {
        const struct vs_pool_class *cls = &p->classes[c];
        uintptr_t lo = (uintptr_t)vs_pool_class_data(cls);
        if (addr - lo < cls->stride * cls->slot_count) {
            *idx = (uint32_t)((addr - lo) / cls->stride);
            *cls_out = cls;
            return cls->index_base + *idx;
        }
    }
    return SIZE_MAX;
}

struct private_slot {
    uintptr_t slot;
    size_t len, bit;
};
static bool is_privatized(const void *p, struct private_slot *ps)
{
    const struct vs_pool_class *cls;
    uint32_t idx;
    size_t g = privatized ? global_index(&cls, (uintptr_t)p, &idx) : SIZE_MAX;
    if (g == SIZE_MAX || !(__atomic_load_n(&privatized[g / 8], __ATOMIC_RELAXED) & (1u << (g % 8))))
        return false;
    *ps = (struct private_slot){(uintptr_t)vs_pool_class_data(cls) + (size_t)idx * cls->stride,
                                cls->stride, g};
    return true;
}

/* Puts the shared pages back under a privatized slot (the child frees it, or claims it).
 * false: they could not be mapped, the slot is still private here. */
static bool unprivatize(const struct private_slot *ps)
{
    if (mmap((void *)ps->slot, ps->len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, seg.fd,
             (off_t)(ps->slot - (uintptr_t)seg.map)) == MAP_FAILED)
        return false;
    __atomic_fetch_and(&privatized[ps->bit / 8], (uint8_t)~(1u << (ps->bit % 8)), __ATOMIC_RELAXED);
    return true;
}

/* Swaps a private copy of [slot, slot+len) in under the same address. */
static void make_private(uintptr_t slot, size_t len)
{
    void *copy = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (copy == MAP_FAILED)
        return;
    VALGRIND_DISABLE_ERROR_REPORTING; /* the whole slot, past the block memcheck knows */
    memcpy(copy, (void *)slot, len);
    VALGRIND_ENABLE_ERROR_REPORTING;
    if (mremap(copy, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)slot) == MAP_FAILED)
        munmap(copy, len);
}

/* Parent, before fork: copy every block we own into anonymous memory, which fork copies on
 * write. Only slots of whole pages can be swapped under the child; smaller ones stay shared. */
void vsp_fork_prepare(void)
{
    if (atomic_load(&seg_state) != SEG_JOINED || left || vsp_cfg.fork_share)
        return;
    const vs_pool *p = pool();
    size_t n = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t c = 0; c < p->class_count; c++) {
            const struct vs_pool_class *cls = &p->classes[c];
            if (cls->stride % 4096)
                continue;
            for (uint32_t i = 0; i < cls->slot_count; i++) {
                vs_slot_info info;
                vs_pool_slot_info(p, (uint8_t)c, i, &info);
                if (info.state != VS_SLOT_ALLOCATED || info.owner != peer)
                    continue;
                if (pass == 0) {
                    n++;
                    continue;
                }
                if (nsnaps == n)
                    break; /* more than counted: allocated meanwhile by another thread */
                uintptr_t slot = (uintptr_t)vs_pool_class_data(cls) + (size_t)i * cls->stride;
                void *copy = mmap(NULL, cls->stride, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (copy == MAP_FAILED)
                    continue;
                VALGRIND_DISABLE_ERROR_REPORTING; /* the whole slot, past the block */
                memcpy(copy, (void *)slot, cls->stride);
                VALGRIND_ENABLE_ERROR_REPORTING;
                snaps[nsnaps++] = (struct snapshot){slot, copy, cls->stride};
            }
        }
        if (pass == 0) {
            if (!n)
                return;
            snaps_bytes = (n * sizeof *snaps + 4095) & ~(size_t)4095;
            snaps = mmap(NULL, snaps_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (snaps == MAP_FAILED) {
                snaps = NULL;
                return;
            }
        }
    }
}

static void drop_snapshots(bool unmap_copies)
{
    for (size_t i = 0; unmap_copies && i < nsnaps; i++)
        munmap(snaps[i].copy, snaps[i].len);
    if (snaps)
        munmap(snaps, snaps_bytes);
    snaps = NULL;
    nsnaps = 0;
}

void vsp_fork_parent(void) { drop_snapshots(true); }

void vsp_fork_child(void)
{
    /* JOINING: another thread of the parent was joining as it forked; that join is the
     * parent's, and this child joins for itself at its first routed allocation. */
    int state = atomic_load(&seg_state);
    if ((state != SEG_JOINED && state != SEG_MAPPED && state != SEG_JOINING) || left)
        return;
    vs_segment_after_fork_child(&seg); /* our own liveness; the parent's id is not ours */
    peer = 0;
    atomic_store(&seg_state, SEG_MAPPED);
    memset((void *)&vsp_stats, 0, sizeof vsp_stats);
    if (!nsnaps) {
        drop_snapshots(false);
        return;
    }
    if (!privatized) { /* a child of a child keeps (its copy of) the bits it inherited */
        const vs_pool *p = pool();
        const struct vs_pool_class *last = &p->classes[p->class_count - 1];
        size_t total = last->index_base + last->slot_count;
        void *bits = mmap(NULL, (total + 7) / 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        privatized = bits == MAP_FAILED ? NULL : bits;
    }
    for (size_t i = 0; i < nsnaps; i++) {
        const struct vs_pool_class *cls;
        uint32_t idx;
        size_t g = global_index(&cls, snaps[i].slot, &idx);
        /* Move the copy's pages over the slot: the parent's block, as it was at fork, ours alone. */
        if (privatized && mremap(snaps[i].copy, snaps[i].len, snaps[i].len,
                                 MREMAP_MAYMOVE | MREMAP_FIXED, (void *)snaps[i].slot) != MAP_FAILED)
            __atomic_fetch_or(&privatized[g / 8], (uint8_t)(1u << (g % 8)), __ATOMIC_RELAXED);
        else
            munmap(snaps[i].copy, snaps[i].len);
    }
    drop_snapshots(false);
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
    struct private_slot ps;
    if (VSP_UNLIKELY(privatized) && is_privatized(p, &ps) && !unprivatize(&ps)) {
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
    struct private_slot ps;
    if (VSP_UNLIKELY(privatized) && is_privatized(p, &ps)) {
        unprivatize(&ps); /* the parent's copy, ours alone: nothing to return */
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
    const struct vs_pool_class *cls;
    uint32_t idx;
    return global_index(&cls, (uintptr_t)p, &idx) == SIZE_MAX ? 0 : cls->slot_size;
}

size_t vsp_routed_size_in_use(const void *p)
{
    struct private_slot ps;
    vs_slot_ref ref;
    vs_slot_info info;
    /* A private copy, or a slot we left at exit (someone else's now): the slot word does not
     * describe our bytes; the whole slot is what we can copy. */
    if (left || (privatized && is_privatized(p, &ps)))
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
    struct private_slot ps;
    if (left || (privatized && is_privatized(p, &ps)))
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

/* ---- exit ---- */

/* Leaves the segment at exit, returning every slot we own. Threads may still be running,
 * and libraries finalised after us may still touch their blocks (libstdc++'s, for one), so
 * each owned block first becomes a private copy at the same address: late writes land there,
 * never in a slot another process has reused. */
void vsp_routed_at_exit(void)
{
    if (atomic_load(&seg_state) != SEG_JOINED || left)
        return;
    left = true; /* from here, routed requests fall back and routed frees are no-ops */
    const vs_pool *p = pool();
    for (size_t c = 0; c < p->class_count; c++) {
        const struct vs_pool_class *cls = &p->classes[c];
        for (uint32_t i = 0; cls->stride % 4096 == 0 && i < cls->slot_count; i++) {
            vs_slot_info info;
            vs_pool_slot_info(p, (uint8_t)c, i, &info);
            if (info.state == VS_SLOT_ALLOCATED && info.owner == peer)
                make_private((uintptr_t)vs_pool_class_data(cls) + (size_t)i * cls->stride, cls->stride);
        }
    }
    vs_segment_leave(&seg);
}
