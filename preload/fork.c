/* Fork privatisation (VARSLOT_FORK=copy): the child gets a private copy, at the same
 * address, of each routed block its parent owned, as fork promises. The parent copies them
 * before fork into anonymous memory (which fork copies on write), and the child moves the
 * copies over the slots. The child's bitmap of privatized slots says which pages are not the
 * segment's: freeing or reallocating such a slot maps the shared pages back first. */
#include "internal.h"

#ifdef VS_HAVE_VALGRIND
#include <valgrind/memcheck.h>
#else
#define VALGRIND_DISABLE_ERROR_REPORTING
#define VALGRIND_ENABLE_ERROR_REPORTING
#endif

#include <string.h>
#include <sys/mman.h>

/* One run of adjacent owned slots, copied at offset in the copies region. */
struct snapshot {
    uintptr_t start;
    size_t offset, len;
};
static struct snapshot *snaps;
static size_t nsnaps, nwanted, snaps_bytes;
static uint8_t *copies; /* one anonymous region for every copy: two mmaps per fork, not one per slot */
static size_t copies_bytes, copies_used;
/* In a fork child (and its own children): one bit per slot whose pages are a private copy,
 * indexed by pool-wide slot number. Threads of the child may flip bits of one byte at once:
 * atomic. */
uint8_t *vsp_privatized;

bool vsp_is_privatized(const void *p, vs_slot_location *slot)
{
    if (!vsp_privatized || vs_pool_locate(vsp_pool, p, slot) != VS_OK)
        return false;
    uint32_t g = slot->pool_slot;
    return __atomic_load_n(&vsp_privatized[g / 8], __ATOMIC_RELAXED) & (1u << (g % 8));
}

bool vsp_unprivatize(const vs_slot_location *slot)
{
    if (vs_segment_remap_shared(&vsp_seg, slot->start, slot->span) != VS_OK)
        return false;
    uint32_t g = slot->pool_slot;
    __atomic_fetch_and(&vsp_privatized[g / 8], (uint8_t)~(1u << (g % 8)), __ATOMIC_RELAXED);
    return true;
}

static void *anonymous(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void copy_bytes(void *to, const void *from, size_t len)
{
    VALGRIND_DISABLE_ERROR_REPORTING; /* the whole slot, past the block memcheck knows */
    memcpy(to, from, len);
    VALGRIND_ENABLE_ERROR_REPORTING;
}

void vsp_make_private(void *slot, size_t len)
{
    void *copy = anonymous(len);
    if (!copy)
        return;
    copy_bytes(copy, slot, len);
    if (mremap(copy, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, slot) == MAP_FAILED)
        munmap(copy, len);
}

static bool count_slot(const vs_slot_location *slot, size_t in_use, void *arg)
{
    (void)in_use;
    (void)arg;
    nwanted++;
    copies_bytes += slot->span;
    return true;
}

/* Only the pages that hold the block's bytes are copied: the rest of the slot stays zero pages
 * the kernel never backs. A 40-byte block in a 64 KiB slot costs one page, not sixteen (the
 * fork-heavy case: a shell whose small blocks filled a pool copied whole slots at every fork).
 * The block's bytes are its size in use, which malloc_usable_size raises to the whole slot. */
static bool snapshot_slot(const vs_slot_location *slot, size_t in_use, void *arg)
{
    (void)arg;
    if (nsnaps == nwanted || copies_used + slot->span > copies_bytes)
        return false; /* more than counted: allocated meanwhile by another thread */
    size_t used = (in_use + 4095) & ~(size_t)4095;
    copy_bytes(copies + copies_used, slot->start, used < slot->span ? used : slot->span);
    struct snapshot *last = nsnaps ? &snaps[nsnaps - 1] : NULL;
    if (last && last->start + last->len == (uintptr_t)slot->start &&
        last->offset + last->len == copies_used)
        last->len += slot->span; /* adjacent: one mremap in the child moves both */
    else
        snaps[nsnaps++] = (struct snapshot){(uintptr_t)slot->start, copies_used, slot->span};
    copies_used += slot->span;
    return true;
}

/* Parent, before fork: copy every block we own. Only slots of whole pages can be swapped
 * under the child; smaller ones stay shared. */
void vsp_fork_prepare(void)
{
    if (!vsp_routed_owns_blocks() || vsp_cfg.fork_share)
        return;
    nwanted = copies_bytes = copies_used = 0;
    vsp_each_owned_page_slot(count_slot, NULL);
    if (!nwanted)
        return;
    snaps_bytes = (nwanted * sizeof *snaps + 4095) & ~(size_t)4095;
    snaps = anonymous(snaps_bytes);
    copies = snaps ? anonymous(copies_bytes) : NULL;
    if (!copies) {
        if (snaps)
            munmap(snaps, snaps_bytes);
        snaps = NULL;
        return;
    }
    vsp_each_owned_page_slot(snapshot_slot, NULL);
}

/* What is left of the copies (in the child: what could not be moved) and the list. */
static void drop_snapshots(void)
{
    if (copies)
        munmap(copies, copies_bytes);
    if (snaps)
        munmap(snaps, snaps_bytes);
    copies = NULL;
    snaps = NULL;
    nsnaps = 0;
}

void vsp_fork_parent(void) { drop_snapshots(); }

static void mark_privatized(uintptr_t start, size_t len)
{
    vs_slot_location slot;
    for (uintptr_t p = start; p < start + len && vs_pool_locate(vsp_pool, (void *)p, &slot) == VS_OK;
         p = (uintptr_t)slot.start + slot.span) {
        uint32_t g = slot.pool_slot;
        __atomic_fetch_or(&vsp_privatized[g / 8], (uint8_t)(1u << (g % 8)), __ATOMIC_RELAXED);
    }
}

void vsp_fork_child(void)
{
    if (!vsp_routed_forget_peer())
        return;
    memset((void *)&vsp_stats, 0, sizeof vsp_stats);
    if (!nsnaps) {
        drop_snapshots();
        return;
    }
    if (!vsp_privatized) { /* a child of a child keeps (its copy of) the bits it inherited */
        void *bits = anonymous((vs_pool_total_slots(vsp_pool) + 7) / 8);
        vsp_privatized = bits;
    }
    for (size_t i = 0; vsp_privatized && i < nsnaps; i++) {
        /* Move the copies' pages over the slots: the parent's blocks, as they were at fork,
         * ours alone. A run that cannot be moved stays shared, as a small slot does. */
        if (mremap(copies + snaps[i].offset, snaps[i].len, snaps[i].len,
                   MREMAP_MAYMOVE | MREMAP_FIXED, (void *)snaps[i].start) != MAP_FAILED)
            mark_privatized(snaps[i].start, snaps[i].len);
    }
    drop_snapshots();
}
