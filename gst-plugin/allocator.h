/* GstVarslotAllocator: GstMemory backed by slots of a varslot segment. */
#ifndef GST_VARSLOT_ALLOCATOR_H
#define GST_VARSLOT_ALLOCATOR_H

#include "segments.h"

#include <gst/gst.h>

G_BEGIN_DECLS

#define GST_VARSLOT_MEMORY_TYPE "VarslotMemory"
#define GST_TYPE_VARSLOT_ALLOCATOR (gst_varslot_allocator_get_type())
G_DECLARE_FINAL_TYPE(GstVarslotAllocator, gst_varslot_allocator, GST, VARSLOT_ALLOCATOR, GstAllocator)

/* An allocator over one segment. The registered "varslot" allocator has none until its first
 * allocation, when it opens $VARSLOT_SEGMENT (or /varslot-gst-UID). */
GstAllocator *gst_varslot_allocator_new(GstVarslotSegment *segment);
GstVarslotSegment *gst_varslot_allocator_segment(GstAllocator *allocator, GError **error);
/* How many allocations found every slot busy for wait-ms and came from system memory. */
guint64 gst_varslot_allocator_fallbacks(GstAllocator *allocator);
/* Whether an allocation found no slot within the last second: buffer pools then free the
 * buffers they get back instead of keeping them idle, so their slots serve whoever waits. */
gboolean gst_varslot_allocator_starved(GstAllocator *allocator);

gboolean gst_is_varslot_memory(GstMemory *mem);
/* The slot under a varslot memory (for a sub-memory: its parent's) and where mem's bytes
 * start inside it. */
vs_slot_ref gst_varslot_memory_slot(GstMemory *mem, gsize *offset_in_slot);
GstVarslotSegment *gst_varslot_memory_segment(GstMemory *mem);
/* The slot was handed to another peer (which took ownership): freeing mem must not free it. */
void gst_varslot_memory_given_away(GstMemory *mem);
gboolean gst_varslot_memory_is_given_away(GstMemory *mem);
/* Whether the slot word still says this process holds mem's slot (a consumer that went away
 * may have taken it without acking). */
gboolean gst_varslot_memory_still_ours(GstMemory *mem);
/* Wraps a slot this process has just taken ownership of, read-only, bytes [offset, +size). */
GstMemory *gst_varslot_memory_wrap_owned(GstAllocator *allocator, vs_slot_ref ref, gsize offset,
                                         gsize size);
/* The slot was shared (vs_pool_share, this process among its readers): freeing mem releases
 * this process's reference instead of freeing the slot. */
void gst_varslot_memory_mark_shared(GstMemory *mem);
gboolean gst_varslot_memory_is_shared(GstMemory *mem);
/* Freeing mem leaves the reference alone: another process releases it for us. */
void gst_varslot_memory_forget_shared(GstMemory *mem);
/* Wraps a slot shared with this process, read-only, bytes [offset, +size); NULL if this
 * process holds no reference or the window lies outside it (the reference stays). */
GstMemory *gst_varslot_memory_wrap_shared(GstAllocator *allocator, vs_slot_ref ref, gsize offset,
                                          gsize size);

G_END_DECLS
#endif
