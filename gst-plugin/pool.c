/* GstVarslotBufferPool: GstVideoBufferPool (so GstVideoMeta and strides work as upstream
 * expects) whose allocator is always ours, whatever upstream puts in the config, and which
 * never recycles a buffer whose slot has been given to a consumer. */
#include "pool.h"

#include "allocator.h"

struct _GstVarslotBufferPool {
    GstVideoBufferPool parent;
    GstAllocator *allocator;
};

G_DEFINE_TYPE(GstVarslotBufferPool, gst_varslot_buffer_pool, GST_TYPE_VIDEO_BUFFER_POOL)

GstBufferPool *gst_varslot_buffer_pool_new(GstAllocator *allocator)
{
    GstVarslotBufferPool *self = g_object_new(GST_TYPE_VARSLOT_BUFFER_POOL, NULL);
    gst_object_ref_sink(self);
    self->allocator = gst_object_ref(allocator);
    return GST_BUFFER_POOL_CAST(self);
}

/* Upstream (GstBaseSrc) writes its allocator choice into our config: keep its params, but
 * the memories must be slots, or nothing downstream can be zero copy. */
static gboolean gst_varslot_buffer_pool_set_config(GstBufferPool *pool, GstStructure *config)
{
    GstVarslotBufferPool *self = GST_VARSLOT_BUFFER_POOL(pool);
    GstAllocationParams params;
    gst_buffer_pool_config_get_allocator(config, NULL, &params);
    gst_buffer_pool_config_set_allocator(config, self->allocator, &params);
    return GST_BUFFER_POOL_CLASS(gst_varslot_buffer_pool_parent_class)->set_config(pool, config);
}

/* A slot that is not ours any more (handed to a consumer, taken, reaped) must not be reused:
 * the slot word decides, not what this process last believed. And while the segment is out
 * of slots, an idle buffer would keep its slot from whoever waits for one (the sink's copies
 * for its further consumers): it is freed instead of kept (a tagged buffer is not pooled). */
static void gst_varslot_buffer_pool_release_buffer(GstBufferPool *pool, GstBuffer *buffer)
{
    GstVarslotBufferPool *self = GST_VARSLOT_BUFFER_POOL(pool);
    gboolean give_back = gst_varslot_allocator_starved(self->allocator);
    for (guint i = 0; i < gst_buffer_n_memory(buffer); i++) {
        GstMemory *mem = gst_buffer_peek_memory(buffer, i);
        if (gst_is_varslot_memory(mem) && (give_back || !gst_varslot_memory_still_ours(mem)))
            GST_BUFFER_FLAG_SET(buffer, GST_BUFFER_FLAG_TAG_MEMORY);
    }
    GST_BUFFER_POOL_CLASS(gst_varslot_buffer_pool_parent_class)->release_buffer(pool, buffer);
}

static void gst_varslot_buffer_pool_finalize(GObject *object)
{
    gst_object_unref(GST_VARSLOT_BUFFER_POOL(object)->allocator);
    G_OBJECT_CLASS(gst_varslot_buffer_pool_parent_class)->finalize(object);
}

static void gst_varslot_buffer_pool_class_init(GstVarslotBufferPoolClass *klass)
{
    GST_BUFFER_POOL_CLASS(klass)->set_config = GST_DEBUG_FUNCPTR(gst_varslot_buffer_pool_set_config);
    GST_BUFFER_POOL_CLASS(klass)->release_buffer = GST_DEBUG_FUNCPTR(gst_varslot_buffer_pool_release_buffer);
    G_OBJECT_CLASS(klass)->finalize = GST_DEBUG_FUNCPTR(gst_varslot_buffer_pool_finalize);
}

static void gst_varslot_buffer_pool_init(GstVarslotBufferPool *self) { (void)self; }
