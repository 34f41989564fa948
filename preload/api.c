/* The opt-in API (varslot/preload.h) for programs that know they run under the shim: tag
 * scopes, and handles to pass a routed block to another process. */
#include "internal.h"

VSP_EXPORT int vs_tag_push(uint32_t tag)
{
    if (vsp_tag_depth >= VS_TAG_MAX_DEPTH)
        return -1;
    vsp_tag_stack[vsp_tag_depth++] = tag;
    return 0;
}

VSP_EXPORT void vs_tag_pop(void)
{
    if (vsp_tag_depth > 0)
        vsp_tag_depth--;
}

VSP_EXPORT int vs_owns(const void *ptr) { return vsp_in_segment(ptr); }

VSP_EXPORT uint64_t vs_handle_of(const void *ptr)
{
    if (!vsp_in_segment(ptr))
        return 0;
    vsp_busy++;
    uint64_t h = vsp_routed_handle_of(ptr);
    vsp_busy--;
    return h;
}

VSP_EXPORT void *vs_ptr_of(uint64_t handle)
{
    vsp_ensure_init();
    vsp_busy++;
    void *p = handle ? vsp_routed_adopt(handle) : NULL;
    vsp_busy--;
    return p;
}
