/* Checks of what comes over the wire, before anything downstream sees it. */
#ifndef GST_VARSLOT_WIRE_CHECK_H
#define GST_VARSLOT_WIRE_CHECK_H

#include "protocol.h"

#include <gst/video/video.h>

G_BEGIN_DECLS

/* Whether a buffer of size bytes with this video meta (or none) is safe to push: every plane
 * inside the buffer, and the meta agreeing with the caps (caps: the negotiated video info,
 * NULL when the caps are not video). NULL if so, else why not. */
const char *vsg_check_buffer_video(const vsg_video_meta *v, gsize size, const GstVideoInfo *caps);

G_END_DECLS
#endif
