/* What a buffer message carries, in one place: the sink writes it from a GstBuffer, the
 * source checks it (hostile until then) and reads it back into one. protocol.c has already
 * checked its framing (length, memory and plane counts); what the fields mean is checked
 * here, before anything downstream sees them. Caps travel as a string: checked here too. */
#ifndef GST_VARSLOT_WIRE_H
#define GST_VARSLOT_WIRE_H

#include "protocol.h"

#include <gst/video/video.h>

G_BEGIN_DECLS

/* The message for buf, numbered seq: the slot of each memory (every one a varslot memory),
 * timestamps, offsets, flags, and its GstVideoMeta when it has one. */
void vsg_buffer_write(vsg_buffer *b, GstBuffer *buf, guint64 seq);

/* Onto buf (whose memories the caller made from the message's slots): timestamps, offsets
 * and the flags another process may set. */
void vsg_buffer_read_metadata(const vsg_buffer *b, GstBuffer *buf);
/* Onto buf: the message's GstVideoMeta, if it has one; only once vsg_check_buffer_video
 * accepted it. */
void vsg_buffer_read_video_meta(const vsg_buffer *b, GstBuffer *buf);

/* Whether a buffer of n_memories memories of these sizes, with this video meta (or none), is
 * safe to push: every plane inside one memory (a plane is mapped through the memory its
 * first byte is in, and read from there), and the meta agreeing with the caps (caps: the
 * negotiated video info, NULL when the caps are not video). NULL if so, else why not. */
const char *vsg_check_buffer_video(const vsg_video_meta *v, const gsize *memory_sizes, guint n_memories,
                                   const GstVideoInfo *caps);

/* The caps message for text (a caps string): FALSE, m untouched, if it is too long to send. */
gboolean vsg_caps_write(vsg_caps *m, const gchar *text);
/* Whether a caps string from the wire can be given to gst_caps_from_string without making
 * it print a warning or fail an assertion: one structure, a valid structure name, caps
 * features (if any) well-formed names. */
gboolean vsg_caps_text_ok(const char *text);
/* Whether fixed caps from the wire describe what they claim: raw video that GStreamer can lay
 * out, with a frame rate and pixel aspect ratio that are fractions (a zero denominator makes
 * downstream arithmetic fail its assertions). NULL if so, else why not. */
const char *vsg_check_caps(const GstCaps *caps);

G_END_DECLS
#endif
