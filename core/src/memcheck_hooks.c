/* Memcheck client requests for slots. A slot held here is a MALLOCLIKE block sized to the
 * bytes requested (so reading past them is reported); freeing it is FREELIKE (so a later
 * access is a use after free); slots nobody here holds are NOACCESS. Which slots this
 * process holds as blocks is its own business, kept per mapped region in a private bitmap
 * (mmap'd: the core never calls malloc), shared by every attachment of that region, so a
 * slot is never announced twice and never freed without being held. */
#include "memcheck_hooks.h"

#include <stdatomic.h>
#include <sys/mman.h>

#ifdef VS_HAVE_VALGRIND
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#endif

int vs__on_valgrind;

#ifdef VS_HAVE_VALGRIND

/* Regions (by the address of the pool's first byte) this process has attached. */
struct vg_region {
    uintptr_t base;
    uint64_t layout; /* where the slots are: see layout_of */
    size_t slots;
    uint8_t *held;
    int attachments;
};
static struct vg_region regions[64];
static atomic_flag regions_lock = ATOMIC_FLAG_INIT;

static void lock(void)
{
    while (atomic_flag_test_and_set_explicit(&regions_lock, memory_order_acquire)) {
    }
}
static void unlock(void) { atomic_flag_clear_explicit(&regions_lock, memory_order_release); }

static size_t pool_slots(const vs_pool *pool)
{
    size_t n = 0;
    for (size_t c = 0; c < pool->class_count; c++)
        n += pool->classes[c].slot_count;
    return n;
}

/* A fingerprint of where a pool's slots lie, so a region entry is only ever read with the
 * layout it was made for. */
static uint64_t layout_of(const vs_pool *pool)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t c = 0; c < pool->class_count; c++) {
        const struct vs_pool_class *cls = &pool->classes[c];
        uint64_t parts[3] = {(uintptr_t)vs_pool_class_data(cls), cls->stride, cls->slot_count};
        for (int i = 0; i < 3; i++)
            h = (h ^ parts[i]) * 1099511628211ull;
    }
    return h;
}

/* Sets or clears one bit; returns its old value. */
static bool flip_bit(uint8_t *bits, size_t bit, bool set)
{
    uint8_t mask = (uint8_t)(1u << (bit % 8));
    uint8_t old = set ? __atomic_fetch_or(&bits[bit / 8], mask, __ATOMIC_RELAXED)
                      : __atomic_fetch_and(&bits[bit / 8], (uint8_t)~mask, __ATOMIC_RELAXED);
    return old & mask;
}

/* One bit per slot of the region, process-local. Returns the old value of the bit. */
static bool flip_held(const vs_pool *pool, const struct vs_pool_class *cls, uint32_t idx, bool held)
{
    if (!pool->vg_held)
        return !held; /* no bitmap (mmap failed): behave as if the state changed */
    return flip_bit(pool->vg_held, cls->index_base + idx, held);
}

/* Forgets the blocks held in a region: its memory is going away, or being initialised anew. */
static void forget_blocks(struct vg_region *r, const vs_pool *pool)
{
    for (size_t c = 0; r->held && c < pool->class_count; c++) {
        const struct vs_pool_class *cls = &pool->classes[c];
        for (uint32_t s = 0; s < cls->slot_count && cls->index_base + s < r->slots; s++)
            if (flip_bit(r->held, cls->index_base + s, false))
                VALGRIND_FREELIKE_BLOCK(vs__slot_data(cls, s), 0);
    }
}

static void drop_region(struct vg_region *r)
{
    if (r->held)
        munmap(r->held, (r->slots + 7) / 8);
    *r = (struct vg_region){0, 0, 0, NULL, 0};
}

void vs__vg_setup(vs_pool *pool, bool fresh)
{
    /* Written only when it changes (once, under Valgrind): other threads read it on every
     * allocate and free. */
    int on = RUNNING_ON_VALGRIND ? 1 : 0;
    if (on != __atomic_load_n(&vs__on_valgrind, __ATOMIC_RELAXED))
        __atomic_store_n(&vs__on_valgrind, on, __ATOMIC_RELAXED);
    if (!on)
        return;
    uintptr_t base = (uintptr_t)pool->base + pool->base_offset;
    size_t slots = pool_slots(pool);
    uint64_t layout = layout_of(pool);
    lock();
    struct vg_region *r = NULL, *free_entry = NULL;
    for (size_t i = 0; i < sizeof regions / sizeof *regions; i++) {
        if (regions[i].attachments && regions[i].base == base) {
            if (regions[i].layout != layout) {
                /* Left behind by a pool unmapped without vs_pool_detach and mapped anew with
                 * other slots: its blocks cannot be found again (memcheck keeps them). */
                drop_region(&regions[i]);
            } else {
                if (fresh) /* a fresh init frees every slot: nothing is held here any more */
                    forget_blocks(&regions[i], pool);
                r = &regions[i];
            }
        }
        if (!regions[i].attachments && !free_entry)
            free_entry = &regions[i];
    }
    if (!r && free_entry) { /* first attachment here: nothing is held, nothing is accessible */
        void *bits = mmap(NULL, (slots + 7) / 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        *free_entry = (struct vg_region){base, layout, slots, bits == MAP_FAILED ? NULL : bits, 0};
        r = free_entry;
        for (size_t c = 0; c < pool->class_count; c++) {
            const struct vs_pool_class *cls = &pool->classes[c];
            VALGRIND_MAKE_MEM_NOACCESS(vs_pool_class_data(cls), cls->stride * cls->slot_count);
        }
    }
    if (r)
        r->attachments++;
    pool->vg_held = r ? r->held : NULL;
    unlock();
}

void vs__vg_detach(vs_pool *pool)
{
    uintptr_t base = (uintptr_t)pool->base + pool->base_offset;
    uint64_t layout = layout_of(pool);
    lock();
    for (size_t i = 0; i < sizeof regions / sizeof *regions; i++) {
        struct vg_region *r = &regions[i];
        if (!r->attachments || r->base != base || r->layout != layout || --r->attachments)
            continue;
        /* The memory is about to go: blocks left in it would haunt the leak check. */
        forget_blocks(r, pool);
        drop_region(r);
    }
    unlock();
    pool->vg_held = NULL;
}

void vs__vg_held(const vs_pool *pool, const struct vs_pool_class *cls, uint32_t idx, uint32_t size,
                 bool taken)
{
    uint8_t *p = vs__slot_data(cls, idx);
    if (flip_held(pool, cls, idx, true)) {
        if (taken)
            return; /* never left this process (a transfer between two peers sharing this
                     * mapping, or a handle of a block not handed over): the same block */
        VALGRIND_FREELIKE_BLOCK(p, 0); /* reclaimed earlier without a free: a new block now */
    }
    VALGRIND_MALLOCLIKE_BLOCK(p, size, 0, 0);
    if (taken)
        VALGRIND_MAKE_MEM_DEFINED(p, size); /* another process wrote these bytes */
}

void vs__vg_released(const vs_pool *pool, const struct vs_pool_class *cls, uint32_t idx)
{
    uint8_t *p = vs__slot_data(cls, idx);
    if (flip_held(pool, cls, idx, false))
        VALGRIND_FREELIKE_BLOCK(p, 0);
    else
        VALGRIND_MAKE_MEM_NOACCESS(p, cls->stride); /* freed for another process */
}

void vs__vg_resized(const vs_pool *pool, const struct vs_pool_class *cls, uint32_t idx,
                    uint32_t old_size, uint32_t new_size)
{
    size_t bit = cls->index_base + idx;
    if (pool->vg_held && (pool->vg_held[bit / 8] >> (bit % 8) & 1))
        VALGRIND_RESIZEINPLACE_BLOCK(vs__slot_data(cls, idx), old_size, new_size, 0);
}

#else /* built without Valgrind's headers: nothing to tell */

void vs__vg_setup(vs_pool *pool, bool fresh) { (void)pool, (void)fresh; }
void vs__vg_detach(vs_pool *pool) { (void)pool; }
void vs__vg_held(const vs_pool *pool, const struct vs_pool_class *cls, uint32_t idx, uint32_t size,
                 bool taken)
{
    (void)pool, (void)cls, (void)idx, (void)size, (void)taken;
}
void vs__vg_released(const vs_pool *pool, const struct vs_pool_class *cls, uint32_t idx)
{
    (void)pool, (void)cls, (void)idx;
}
void vs__vg_resized(const vs_pool *pool, const struct vs_pool_class *cls, uint32_t idx,
                    uint32_t old_size, uint32_t new_size)
{
    (void)pool, (void)cls, (void)idx, (void)old_size, (void)new_size;
}

#endif
