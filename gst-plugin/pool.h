/* GstVarslotBufferPool: a video buffer pool whose buffers are slots of the sink's segment. */
#ifndef GST_VARSLOT_POOL_H
#define GST_VARSLOT_POOL_H

#include <gst/video/gstvideopool.h>

G_BEGIN_DECLS

#define GST_TYPE_VARSLOT_BUFFER_POOL (gst_varslot_buffer_pool_get_type())
G_DECLARE_FINAL_TYPE(GstVarslotBufferPool, gst_varslot_buffer_pool, GST, VARSLOT_BUFFER_POOL,
                     GstVideoBufferPool)

GstBufferPool *gst_varslot_buffer_pool_new(GstAllocator *allocator);

G_END_DECLS
#endif
