/* Slot handles: a vs_slot_ref in one uint64_t, the form that crosses process boundaries.
 * Layout: generation (32) | slot index (24) | class (6) | extent (2). Generation 0 is never
 * allocated, so 0 doubles as "no handle". */
#include "internal.h"

uint64_t vs_slot_ref_pack(vs_slot_ref ref)
{
    if (ref.generation == 0 || ref.class_idx >= VS_MAX_CLASSES || ref.extent_idx >= 4 ||
        ref.slot_idx >= VS_MAX_SLOTS_PER_CLASS)
        return 0;
    return (uint64_t)ref.generation << 32 | (uint64_t)ref.slot_idx << 8 |
           (uint64_t)ref.class_idx << 2 | ref.extent_idx;
}

vs_slot_ref vs_slot_ref_unpack(uint64_t handle)
{
    vs_slot_ref ref;
    ref.generation = (uint32_t)(handle >> 32);
    ref.slot_idx = (uint32_t)(handle >> 8) & (VS_MAX_SLOTS_PER_CLASS - 1);
    ref.class_idx = (uint8_t)((handle >> 2) & 63);
    ref.extent_idx = (uint8_t)(handle & 3);
    return ref;
}
