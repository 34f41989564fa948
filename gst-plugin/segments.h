/* The segments this process uses, opened once per role and shared by every element and
 * allocator of that role, with the process's peer id for that role in each. */
#ifndef GST_VARSLOT_SEGMENTS_H
#define GST_VARSLOT_SEGMENTS_H

#include <glib.h>
#include <varslot.h>

G_BEGIN_DECLS

typedef struct {
    gint refcount;
    gchar *key;  /* role + name: the registry's key */
    gchar *name;
    vs_segment seg;
    guint8 peer; /* this process's peer id in the segment, for this role */
} GstVarslotSegment;

/* Who holds a slot inside one process: producers and consumers are different peers, so
 * handing a slot from a sink to a src in the same process is a real change of owner. */
typedef enum { GST_VARSLOT_ROLE_PRODUCER, GST_VARSLOT_ROLE_CONSUMER } GstVarslotRole;

/* For a producer: opens (or creates, with classes fit for frames of frame_size bytes) the
 * named segment and joins it. NULL name: $VARSLOT_SEGMENT, else /varslot-gst-UID. A segment
 * created here is removed by the last peer to leave it. trust_owner: another user's segment
 * shared through one of our groups is accepted (VS_OPEN_TRUST_OWNER); elements that did not
 * ask never share the vs_segment of one that did. */
GstVarslotSegment *gst_varslot_segment_open(const gchar *name, GstVarslotRole role,
                                            gsize frame_size, gboolean trust_owner, GError **error);
/* For a consumer: opens (never creates) the named segment and joins it, and only if it is
 * the very file the producer passed (file_fd): a name alone may name anything. */
GstVarslotSegment *gst_varslot_segment_open_consumer(const gchar *name, int file_fd,
                                                     gboolean trust_owner, GError **error);
/* VARSLOT_TRUST=1 (or yes, true, on): what the allocator, which has no properties, does
 * about other owners. */
gboolean gst_varslot_default_trust_owner(void);
GstVarslotSegment *gst_varslot_segment_ref(GstVarslotSegment *s);
void gst_varslot_segment_unref(GstVarslotSegment *s);
const vs_pool *gst_varslot_segment_pool(GstVarslotSegment *s);
guint32 gst_varslot_segment_largest_slot(GstVarslotSegment *s);
gchar *gst_varslot_default_segment_name(void);

G_END_DECLS
#endif
