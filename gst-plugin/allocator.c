/* GstVarslotAllocator: each GstMemory is one slot (or a sub-memory of one), so any peer of
 * the segment can read it in place by handle. GstAllocationParams are honoured as the system
 * allocator does (alignment mask, prefix, padding, the zero flags). When every fitting slot
 * stays busy for wait-ms the memory comes from system memory instead, counted; deep copies
 * go to system memory too, so a copy never takes a slot another process may be waiting for. */
#include "allocator.h"

#include <string.h>

GST_DEBUG_CATEGORY_EXTERN(gst_varslot_debug);
#define GST_CAT_DEFAULT gst_varslot_debug

typedef struct {
    GstMemory mem;
    GstVarslotSegment *segment; /* a ref, held by parent memories only */
    vs_slot_ref ref;
    guint8 *slot;               /* the slot's first byte in this process */
    guint8 *base;               /* start of the maxsize region: slot, realigned if asked */
    gboolean owned;             /* freeing returns the slot (false once given away) */
    gboolean shared;            /* freeing releases this process's reference to the slot */
} GstVarslotMemory;

struct _GstVarslotAllocator {
    GstAllocator parent;
    GMutex lock;
    GstVarslotSegment *segment; /* NULL until first use for the registered allocator */
    guint wait_ms;
    gint fallbacks;             /* atomic */
    gint64 starved_until;       /* atomic: g_get_monotonic_time() until which pools give back */
};

G_DEFINE_TYPE(GstVarslotAllocator, gst_varslot_allocator, GST_TYPE_ALLOCATOR)

#define DEFAULT_WAIT_MS 100

static GstVarslotMemory *as_varslot(GstMemory *mem) { return (GstVarslotMemory *)mem; }
static GstVarslotMemory *root_of(GstMemory *mem)
{
    return as_varslot(mem->parent ? mem->parent : mem);
}

/* ---- the segment behind an allocator ---- */

GstVarslotSegment *gst_varslot_allocator_segment(GstAllocator *allocator, GError **error)
{
    GstVarslotAllocator *self = GST_VARSLOT_ALLOCATOR(allocator);
    g_mutex_lock(&self->lock);
    if (!self->segment)
        self->segment = gst_varslot_segment_open(NULL, GST_VARSLOT_ROLE_PRODUCER, 0,
                                                 gst_varslot_default_trust_owner(), error);
    GstVarslotSegment *s = self->segment;
    g_mutex_unlock(&self->lock);
    return s;
}

guint64 gst_varslot_allocator_fallbacks(GstAllocator *allocator)
{
    return (guint64)g_atomic_int_get(&GST_VARSLOT_ALLOCATOR(allocator)->fallbacks);
}

/* How long after an allocation found no slot the pools keep giving buffers back. */
#define STARVED_US (1000 * 1000)

gboolean gst_varslot_allocator_starved(GstAllocator *allocator)
{
    GstVarslotAllocator *self = GST_VARSLOT_ALLOCATOR(allocator);
    return g_get_monotonic_time() < __atomic_load_n(&self->starved_until, __ATOMIC_RELAXED);
}

/* ---- alloc and free ---- */

/* Takes a slot of at least need bytes, waiting up to wait_ms for one to come free. */
static gboolean take_slot(GstVarslotAllocator *self, GstVarslotSegment *s, gsize need,
                          vs_slot_ref *ref)
{
    const vs_pool *pool = gst_varslot_segment_pool(s);
    if (need > gst_varslot_segment_largest_slot(s))
        return FALSE;
    gint64 deadline = g_get_monotonic_time() + (gint64)self->wait_ms * 1000;
    for (guint tries = 0;; tries++) {
        if (vs_pool_allocate(pool, (guint32)need, s->peer, ref))
            return TRUE;
        if (g_get_monotonic_time() >= deadline) {
            __atomic_store_n(&self->starved_until, g_get_monotonic_time() + STARVED_US, __ATOMIC_RELAXED);
            return FALSE;
        }
        g_usleep(tries < 10 ? 50 : 500); /* slots come back when consumers free them */
    }
}

static GstMemory *system_fallback(GstVarslotAllocator *self, gsize size, GstAllocationParams *params)
{
    if (g_atomic_int_add(&self->fallbacks, 1) == 0)
        GST_WARNING_OBJECT(self, "no free slot for %" G_GSIZE_FORMAT " bytes within %u ms: using "
                           "system memory (counted in 'fallbacks'; warned once)", size,
                           self->wait_ms);
    return gst_allocator_alloc(NULL, size, params);
}

static GstMemory *gst_varslot_allocator_alloc(GstAllocator *allocator, gsize size, GstAllocationParams *params)
{
    GstVarslotAllocator *self = GST_VARSLOT_ALLOCATOR(allocator);
    GError *err = NULL;
    GstVarslotSegment *s = gst_varslot_allocator_segment(allocator, &err);
    if (!s) {
        GST_ERROR_OBJECT(self, "%s", err->message);
        g_clear_error(&err);
        return system_fallback(self, size, params);
    }
    /* Slots start 64-byte aligned at least; a stricter mask may need room to realign. */
    gsize align = params->align | gst_memory_alignment;
    gsize maxsize = size + params->prefix + params->padding;
    vs_slot_ref ref;
    gsize need = maxsize + (align >= VS_SLOT_ALIGN ? align : 0);
    if (!take_slot(self, s, need, &ref))
        return system_fallback(self, size, params);
    const vs_pool *pool = gst_varslot_segment_pool(s);
    guint8 *slot = vs_pool_slot_data(pool, &ref);
    if (!slot) { /* another peer took the slot already (a hostile one may): not ours to use */
        GST_WARNING_OBJECT(self, "slot %u/%u was taken from under its allocation", ref.class_idx, ref.slot_idx);
        return system_fallback(self, size, params);
    }
    GstVarslotMemory *m = g_slice_new0(GstVarslotMemory);
    m->segment = gst_varslot_segment_ref(s);
    m->ref = ref;
    m->slot = slot;
    gsize shift = ((guintptr)m->slot & align) ? (align + 1) - ((guintptr)m->slot & align) : 0;
    m->base = m->slot + shift;
    m->owned = TRUE;
    gsize region = need - shift; /* what we asked for: the rest of the slot is not ours */
    gst_memory_init(GST_MEMORY_CAST(m), params->flags, allocator, NULL, region, align,
                    params->prefix, size);
    if (params->prefix && (params->flags & GST_MEMORY_FLAG_ZERO_PREFIXED))
        memset(m->base, 0, params->prefix);
    if (params->flags & GST_MEMORY_FLAG_ZERO_PADDED)
        memset(m->base + params->prefix + size, 0, region - params->prefix - size);
    return GST_MEMORY_CAST(m);
}

GstMemory *gst_varslot_memory_wrap_owned(GstAllocator *allocator, vs_slot_ref ref, gsize offset,
                                         gsize size)
{
    GstVarslotSegment *s = gst_varslot_allocator_segment(allocator, NULL);
    const vs_pool *pool = s ? gst_varslot_segment_pool(s) : NULL;
    guint8 *slot = pool ? vs_pool_slot_data(pool, &ref) : NULL;
    gsize slot_size = slot ? vs_pool_slot_size(pool, ref.class_idx) : 0;
    if (!slot || offset > slot_size || size > slot_size - offset)
        return NULL;
    GstVarslotMemory *m = g_slice_new0(GstVarslotMemory);
    m->segment = gst_varslot_segment_ref(s);
    m->ref = ref;
    m->slot = m->base = slot;
    m->owned = TRUE;
    /* Read-only: what the producer wrote is what every reader of this buffer sees. */
    gst_memory_init(GST_MEMORY_CAST(m), GST_MEMORY_FLAG_READONLY, allocator, NULL, offset + size, 0,
                    offset, size);
    return GST_MEMORY_CAST(m);
}

GstMemory *gst_varslot_memory_wrap_shared(GstAllocator *allocator, vs_slot_ref ref, gsize offset,
                                          gsize size)
{
    GstVarslotSegment *s = gst_varslot_allocator_segment(allocator, NULL);
    const vs_pool *pool = s ? gst_varslot_segment_pool(s) : NULL;
    const guint8 *slot = pool ? vs_pool_shared_data(pool, &ref, s->peer) : NULL;
    gsize slot_size = slot ? vs_pool_slot_size(pool, ref.class_idx) : 0;
    if (!slot)
        return NULL;
    if (offset > slot_size || size > slot_size - offset)
        return NULL; /* a reference of ours, but no window to read: the caller releases it */
    GST_LOG_OBJECT(allocator, "peer %u reads shared slot %u/%u", s->peer, ref.class_idx, ref.slot_idx);
    GstVarslotMemory *m = g_slice_new0(GstVarslotMemory);
    m->segment = gst_varslot_segment_ref(s);
    m->ref = ref;
    m->slot = m->base = (guint8 *)slot; /* mapped writable, but the memory is read-only */
    m->shared = TRUE;
    gst_memory_init(GST_MEMORY_CAST(m), GST_MEMORY_FLAG_READONLY, allocator, NULL, offset + size, 0,
                    offset, size);
    return GST_MEMORY_CAST(m);
}

static void gst_varslot_allocator_free(GstAllocator *allocator, GstMemory *mem)
{
    GstVarslotMemory *m = as_varslot(mem);
    if (!mem->parent && m->shared) {
        int rc = vs_pool_release(gst_varslot_segment_pool(m->segment), m->ref, m->segment->peer);
        GST_LOG_OBJECT(allocator, "peer %u released shared slot %u/%u: %s", m->segment->peer,
                       m->ref.class_idx, m->ref.slot_idx, vs_strerror(rc));
        if (rc != VS_OK) /* dropped by our leave, or a hostile peer scribbled on the slot */
            GST_WARNING_OBJECT(allocator, "shared slot %u/%u: %s", m->ref.class_idx, m->ref.slot_idx,
                               vs_strerror(rc));
        gst_varslot_segment_unref(m->segment);
    } else if (!mem->parent) {
        /* Free only what is still ours: a slot given to a consumer is the consumer's to free. */
        if (m->owned) {
            int rc = vs_pool_free_owned(gst_varslot_segment_pool(m->segment), m->ref,
                                        m->segment->peer);
            /* A consumer took the slot and went away before acking it (acks come in batches):
             * it is the consumer's, or the reaper's, or already freed by them. */
            if (rc == VS_EPERM || rc == VS_EDOUBLEFREE)
                GST_DEBUG_OBJECT(allocator, "slot %u/%u was taken by another peer",
                                 m->ref.class_idx, m->ref.slot_idx);
            else if (rc != VS_OK)
                GST_WARNING_OBJECT(allocator, "slot %u/%u: %s", m->ref.class_idx, m->ref.slot_idx,
                                   vs_strerror(rc));
        }
        gst_varslot_segment_unref(m->segment);
    }
    g_slice_free(GstVarslotMemory, m);
}

/* ---- memory operations ---- */

/* The core adds mem->offset: map returns the start of the maxsize region. */
static gpointer gst_varslot_memory_map(GstMemory *mem, gsize maxsize, GstMapFlags flags)
{
    (void)maxsize;
    (void)flags;
    return root_of(mem)->base;
}

static void gst_varslot_memory_unmap(GstMemory *mem) { (void)mem; }

/* A sub-memory: same slot and region, its own window; the parent (and so the slot) lives
 * as long as it does. */
static GstMemory *gst_varslot_memory_share(GstMemory *mem, gssize offset, gssize size)
{
    GstVarslotMemory *root = root_of(mem);
    if (size == -1)
        size = (gssize)mem->size - offset;
    GstVarslotMemory *sub = g_slice_new0(GstVarslotMemory);
    sub->ref = root->ref;
    sub->slot = root->slot;
    sub->base = root->base;
    gst_memory_init(GST_MEMORY_CAST(sub),
                    GST_MINI_OBJECT_FLAGS(root) | GST_MINI_OBJECT_FLAG_LOCK_READONLY,
                    mem->allocator, GST_MEMORY_CAST(root), mem->maxsize, mem->align,
                    mem->offset + (gsize)offset, (gsize)size);
    return GST_MEMORY_CAST(sub);
}

/* Deep copies go to system memory: a slot is for sharing, a copy is private by definition. */
static GstMemory *gst_varslot_memory_copy(GstMemory *mem, gssize offset, gssize size)
{
    if (size == -1)
        size = (gssize)mem->size > offset ? (gssize)mem->size - offset : 0;
    GstAllocationParams params = {0, mem->align, 0, 0, {0}};
    GstMemory *copy = gst_allocator_alloc(NULL, (gsize)size, &params);
    GstMapInfo out;
    if (copy && gst_memory_map(copy, &out, GST_MAP_WRITE)) {
        memcpy(out.data, root_of(mem)->base + mem->offset + offset, (gsize)size);
        gst_memory_unmap(copy, &out);
    }
    return copy;
}

static gboolean gst_varslot_memory_is_span(GstMemory *a, GstMemory *b, gsize *offset)
{
    if (offset)
        *offset = a->offset - a->parent->offset;
    return root_of(a)->base + a->offset + a->size == root_of(b)->base + b->offset;
}

/* ---- queries used by the elements ---- */

gboolean gst_is_varslot_memory(GstMemory *mem)
{
    return mem && gst_memory_is_type(mem, GST_VARSLOT_MEMORY_TYPE);
}

vs_slot_ref gst_varslot_memory_slot(GstMemory *mem, gsize *offset_in_slot)
{
    GstVarslotMemory *root = root_of(mem);
    if (offset_in_slot)
        *offset_in_slot = (gsize)(root->base - root->slot) + mem->offset;
    return root->ref;
}

GstVarslotSegment *gst_varslot_memory_segment(GstMemory *mem) { return root_of(mem)->segment; }

void gst_varslot_memory_given_away(GstMemory *mem)
{
    GstVarslotMemory *root = root_of(mem);
    if (root->owned)
        vs_pool_handed_over(gst_varslot_segment_pool(root->segment), root->ref);
    root->owned = FALSE;
}

gboolean gst_varslot_memory_still_ours(GstMemory *mem)
{
    GstVarslotMemory *root = root_of(mem);
    vs_slot_info info;
    if (!root->owned || vs_pool_slot_info(gst_varslot_segment_pool(root->segment), root->ref.class_idx,
                                          root->ref.slot_idx, &info) != VS_OK)
        return FALSE;
    return info.state == VS_SLOT_ALLOCATED && info.generation == root->ref.generation &&
           info.owner == root->segment->peer;
}

gboolean gst_varslot_memory_is_given_away(GstMemory *mem) { return !root_of(mem)->owned; }

void gst_varslot_memory_mark_shared(GstMemory *mem)
{
    GstVarslotMemory *root = root_of(mem);
    root->owned = FALSE;
    root->shared = TRUE;
    /* Readers in other processes see these bytes from now on: a write map here gets a copy. */
    GST_MINI_OBJECT_FLAG_SET(root, GST_MEMORY_FLAG_READONLY);
    GST_MINI_OBJECT_FLAG_SET(mem, GST_MEMORY_FLAG_READONLY);
    /* And the memory counts as shared (a holder more than its buffer), so it is not writable
     * to GStreamer either: a buffer pool of an element upstream (behind a tee, which offers
     * it our allocator) then drops the buffer when it comes back, rather than reuse a slot
     * that is no longer its own; the next buffer gets a fresh slot. Never unlocked: the
     * memory is shared until it is freed. */
    gst_memory_lock(mem, GST_LOCK_FLAG_EXCLUSIVE);
}

gboolean gst_varslot_memory_is_shared(GstMemory *mem) { return root_of(mem)->shared; }

void gst_varslot_memory_forget_shared(GstMemory *mem)
{
    GstVarslotMemory *root = root_of(mem);
    if (root->shared) /* for memory checkers: the block is no longer this process's */
        vs_pool_handed_over(gst_varslot_segment_pool(root->segment), root->ref);
    root->shared = FALSE;
}

/* ---- GObject ---- */

GstAllocator *gst_varslot_allocator_new(GstVarslotSegment *segment)
{
    GstVarslotAllocator *self = g_object_new(GST_TYPE_VARSLOT_ALLOCATOR, NULL);
    gst_object_ref_sink(self);
    self->segment = segment ? gst_varslot_segment_ref(segment) : NULL;
    return GST_ALLOCATOR_CAST(self);
}

static void gst_varslot_allocator_finalize(GObject *object)
{
    GstVarslotAllocator *self = GST_VARSLOT_ALLOCATOR(object);
    if (self->segment)
        gst_varslot_segment_unref(self->segment);
    g_mutex_clear(&self->lock);
    G_OBJECT_CLASS(gst_varslot_allocator_parent_class)->finalize(object);
}

static void gst_varslot_allocator_class_init(GstVarslotAllocatorClass *klass)
{
    GST_ALLOCATOR_CLASS(klass)->alloc = GST_DEBUG_FUNCPTR(gst_varslot_allocator_alloc);
    GST_ALLOCATOR_CLASS(klass)->free = GST_DEBUG_FUNCPTR(gst_varslot_allocator_free);
    G_OBJECT_CLASS(klass)->finalize = GST_DEBUG_FUNCPTR(gst_varslot_allocator_finalize);
}

static void gst_varslot_allocator_init(GstVarslotAllocator *self)
{
    GstAllocator *a = GST_ALLOCATOR_CAST(self);
    a->mem_type = GST_VARSLOT_MEMORY_TYPE;
    a->mem_map = GST_DEBUG_FUNCPTR(gst_varslot_memory_map);
    a->mem_unmap = GST_DEBUG_FUNCPTR(gst_varslot_memory_unmap);
    a->mem_share = GST_DEBUG_FUNCPTR(gst_varslot_memory_share);
    a->mem_copy = GST_DEBUG_FUNCPTR(gst_varslot_memory_copy);
    a->mem_is_span = GST_DEBUG_FUNCPTR(gst_varslot_memory_is_span);
    g_mutex_init(&self->lock);
    self->wait_ms = DEFAULT_WAIT_MS;
    const gchar *wait = g_getenv("VARSLOT_GST_WAIT_MS");
    guint64 v;
    if (wait && !g_ascii_string_to_unsigned(wait, 10, 0, 60000, &v, NULL))
        GST_WARNING("ignoring VARSLOT_GST_WAIT_MS=%s: expected milliseconds from 0 to 60000; "
                    "using %u", wait, DEFAULT_WAIT_MS);
    else if (wait)
        self->wait_ms = (guint)v;
}
