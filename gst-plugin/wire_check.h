/* Checks of what comes over the wire, before anything downstream sees it. */
#ifndef GST_VARSLOT_WIRE_CHECK_H
#define GST_VARSLOT_WIRE_CHECK_H

#include "protocol.h"

#include <gst/video/video.h>

G_BEGIN_DECLS

/* Whether a buffer of n_memories memories of these sizes, with this video meta (or none), is
 * safe to push: every plane inside one memory (a plane is mapped through the memory its
 * first byte is in, and read from there), and the meta agreeing with the caps (caps: the
 * negotiated video info, NULL when the caps are not video). NULL if so, else why not. */
const char *vsg_check_buffer_video(const vsg_video_meta *v, const gsize *memory_sizes, guint n_memories,
                                   const GstVideoInfo *caps);

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
