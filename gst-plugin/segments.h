/* The segments this process uses, opened once each and shared by every element and
 * allocator that names them, with the process's peer id in each. */
#ifndef GST_VARSLOT_SEGMENTS_H
#define GST_VARSLOT_SEGMENTS_H

#include <glib.h>
#include <varslot.h>

G_BEGIN_DECLS

typedef struct {
    gint refcount;
    gchar *name;
    vs_segment seg;
    guint8 peer;      /* this process's peer id in the segment */
    gboolean created; /* this process created it */
    gboolean remove_when_unused; /* a pipeline's own segment: the last peer out removes it */
} GstVarslotSegment;

/* Opens (or creates, with classes fit for frames of frame_size bytes) the named segment and
 * joins it. NULL name: $VARSLOT_SEGMENT, else /varslot-UID. */
GstVarslotSegment *gst_varslot_segment_open(const gchar *name, gsize frame_size, GError **error);
GstVarslotSegment *gst_varslot_segment_ref(GstVarslotSegment *s);
void gst_varslot_segment_unref(GstVarslotSegment *s);
const vs_pool *gst_varslot_segment_pool(GstVarslotSegment *s);
guint32 gst_varslot_segment_largest_slot(GstVarslotSegment *s);
gchar *gst_varslot_default_segment_name(void);

G_END_DECLS
#endif
