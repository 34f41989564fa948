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

struct snapshot {
    uintptr_t slot;
    void *copy;
    size_t len;
};
static struct snapshot *snaps;
static size_t nsnaps, nwanted, snaps_bytes;
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

/* An anonymous copy of [slot, slot+len), or NULL. */
static void *copy_of(const void *slot, size_t len)
{
    void *copy = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (copy == MAP_FAILED)
        return NULL;
    VALGRIND_DISABLE_ERROR_REPORTING; /* the whole slot, past the block memcheck knows */
    memcpy(copy, slot, len);
    VALGRIND_ENABLE_ERROR_REPORTING;
    return copy;
}

void vsp_make_private(void *slot, size_t len)
{
    void *copy = copy_of(slot, len);
    if (copy && mremap(copy, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, slot) == MAP_FAILED)
        munmap(copy, len);
}

static bool count_slot(const vs_slot_location *slot, void *arg)
{
    (void)slot;
    (void)arg;
    nwanted++;
    return true;
}

static bool snapshot_slot(const vs_slot_location *slot, void *arg)
{
    (void)arg;
    if (nsnaps == nwanted)
        return false; /* more than counted: allocated meanwhile by another thread */
    void *copy = copy_of(slot->start, slot->span);
    if (copy)
        snaps[nsnaps++] = (struct snapshot){(uintptr_t)slot->start, copy, slot->span};
    return true;
}

/* Parent, before fork: copy every block we own. Only slots of whole pages can be swapped
 * under the child; smaller ones stay shared. */
void vsp_fork_prepare(void)
{
    if (!vsp_routed_owns_blocks() || vsp_cfg.fork_share)
        return;
    nwanted = 0;
    vsp_each_owned_page_slot(count_slot, NULL);
    if (!nwanted)
        return;
    snaps_bytes = (nwanted * sizeof *snaps + 4095) & ~(size_t)4095;
    snaps = mmap(NULL, snaps_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (snaps == MAP_FAILED) {
        snaps = NULL;
        return;
    }
    vsp_each_owned_page_slot(snapshot_slot, NULL);
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
    if (!vsp_routed_forget_peer())
        return;
    memset((void *)&vsp_stats, 0, sizeof vsp_stats);
    if (!nsnaps) {
        drop_snapshots(false);
        return;
    }
    if (!vsp_privatized) { /* a child of a child keeps (its copy of) the bits it inherited */
        void *bits = mmap(NULL, (vs_pool_total_slots(vsp_pool) + 7) / 8, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        vsp_privatized = bits == MAP_FAILED ? NULL : bits;
    }
    for (size_t i = 0; i < nsnaps; i++) {
        vs_slot_location slot;
        vs_pool_locate(vsp_pool, (void *)snaps[i].slot, &slot);
        uint32_t g = slot.pool_slot;
        /* Move the copy's pages over the slot: the parent's block, as it was at fork, ours alone. */
        if (vsp_privatized && mremap(snaps[i].copy, snaps[i].len, snaps[i].len,
                                     MREMAP_MAYMOVE | MREMAP_FIXED, (void *)snaps[i].slot) != MAP_FAILED)
            __atomic_fetch_or(&vsp_privatized[g / 8], (uint8_t)(1u << (g % 8)), __ATOMIC_RELAXED);
        else
            munmap(snaps[i].copy, snaps[i].len);
    }
    drop_snapshots(false);
}
