/* Which allocations go to the segment: tag scopes (vs_tag_push), the size threshold, and
 * the object that called malloc (VARSLOT_CALLERS). Finding an object from an address is
 * _dl_find_object (lock-free, no allocation); each thread remembers recent answers, keyed
 * by return address, so a hot call site costs one compare. */
#include "internal.h"

#include <dlfcn.h>
#include <link.h>
#include <string.h>
#include <unistd.h>

VSP_TLS int vsp_tag_depth;
VSP_TLS uint32_t vsp_tag_stack[VS_TAG_MAX_DEPTH];

/* Tags the shim gives on its own: routed by size is 0; by the i-th caller, this + i. */
#define VSP_TAG_CALLER_BASE 0xffffff00u

#define CALLER_CACHE 64
struct caller_entry {
    const void *ret;
    int match; /* index into vsp_cfg.callers, or -1 */
};
static VSP_TLS struct caller_entry caller_cache[CALLER_CACHE];

static char exe_name[256];

static const char *basename_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* The main program's link map has an empty name: it is matched by /proc/self/exe's name. */
void vsp_route_init(void)
{
    char path[sizeof exe_name];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    path[n > 0 ? n : 0] = '\0';
    vsp_append(exe_name, exe_name + sizeof exe_name, basename_of(path));
}

static const char *object_name(struct link_map *map)
{
    return map->l_name && map->l_name[0] ? basename_of(map->l_name) : exe_name;
}

static int find_caller(const void *ret)
{
    struct dl_find_object found;
    if (_dl_find_object((void *)ret, &found) != 0)
        return -1;
    const char *name = object_name(found.dlfo_link_map);
    for (int i = 0; i < vsp_cfg.callers.count; i++)
        if (!strcmp(name, vsp_cfg.callers.names[i]))
            return i;
    return -1;
}

bool vsp_caller_routed(const void *ret, uint32_t *tag)
{
    struct caller_entry *e = &caller_cache[((uintptr_t)ret >> 4) % CALLER_CACHE];
    if (VSP_UNLIKELY(e->ret != ret)) {
        e->match = find_caller(ret);
        e->ret = ret;
    }
    if (e->match < 0)
        return false;
    *tag = VSP_TAG_CALLER_BASE + (uint32_t)e->match;
    return true;
}
