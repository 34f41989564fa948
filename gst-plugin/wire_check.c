/* What a consumer checks before it believes a buffer message: GstVideoMeta from the wire
 * says where each plane starts and how far apart its rows are, and whatever maps the buffer
 * downstream (videoconvert's orc code, say) reads exactly there, unchecked. So every plane
 * must lie inside the buffer's bytes, and the meta must agree with the negotiated caps. */
#include "wire_check.h"

/* Largest width or height accepted from the wire: far above any real frame, and small enough
 * that stride * height cannot overflow 64 bits. */
#define MAX_DIMENSION (1u << 16)

/* The bytes one row of plane p spans (from the row's start to its last byte), from the
 * components on that plane; 0 if the format does not say (packed formats without a pixel
 * stride, such as v210: then the default stride of the format is used instead). */
static guint64 row_bytes(const GstVideoFormatInfo *finfo, guint plane, guint width)
{
    guint64 bytes = 0;
    for (guint c = 0; c < GST_VIDEO_FORMAT_INFO_N_COMPONENTS(finfo); c++) {
        if (GST_VIDEO_FORMAT_INFO_PLANE(finfo, c) != plane)
            continue;
        gint pstride = GST_VIDEO_FORMAT_INFO_PSTRIDE(finfo, c);
        if (pstride <= 0)
            return 0;
        guint w = GST_VIDEO_FORMAT_INFO_SCALE_WIDTH(finfo, c, width);
        guint64 last = (guint64)GST_VIDEO_FORMAT_INFO_POFFSET(finfo, c) + (guint64)pstride * (w ? w - 1 : 0) +
                       (GST_VIDEO_FORMAT_INFO_DEPTH(finfo, c) + 7) / 8;
        if (last > bytes)
            bytes = last;
    }
    return bytes;
}

static guint plane_height(const GstVideoFormatInfo *finfo, guint plane, guint height)
{
    for (guint c = 0; c < GST_VIDEO_FORMAT_INFO_N_COMPONENTS(finfo); c++)
        if (GST_VIDEO_FORMAT_INFO_PLANE(finfo, c) == plane)
            return GST_VIDEO_FORMAT_INFO_SCALE_HEIGHT(finfo, c, height);
    return 0;
}

/* A raw video format this GStreamer knows (asking gst_video_format_get_info about any
 * other number is a g_critical). */
static gboolean is_raw_format(guint32 format)
{
    guint n;
    const GstVideoFormat *formats = gst_video_formats_raw(&n);
    for (guint i = 0; i < n; i++)
        if ((guint32)formats[i] == format)
            return TRUE;
    return FALSE;
}

/* The memory that holds byte `offset` of the buffer: its start (in the buffer) and size. */
static gboolean memory_at(const gsize *sizes, guint n, guint64 offset, guint64 *start, guint64 *size)
{
    guint64 at = 0;
    for (guint i = 0; i < n; i++) {
        if (offset < at + sizes[i]) {
            *start = at;
            *size = sizes[i];
            return TRUE;
        }
        at += sizes[i];
    }
    return FALSE;
}

const char *vsg_check_buffer_video(const vsg_video_meta *v, const gsize *memory_sizes, guint n_memories,
                                   const GstVideoInfo *caps)
{
    guint64 size = 0;
    for (guint i = 0; i < n_memories; i++)
        size += memory_sizes[i];
    if (caps && GST_VIDEO_INFO_INTERLACE_MODE(caps) == GST_VIDEO_INTERLACE_MODE_ALTERNATE)
        return "alternate-field interlacing is not accepted over the wire"; /* a field read as a frame */
    if (!v->present) /* mapped whole (memories merged) */
        return caps && size < GST_VIDEO_INFO_SIZE(caps) ? "buffer smaller than a frame of its caps" : NULL;
    if (!is_raw_format(v->format))
        return "video meta with an unknown format";
    const GstVideoFormatInfo *finfo = gst_video_format_get_info((GstVideoFormat)v->format);
    if (GST_VIDEO_FORMAT_INFO_IS_TILED(finfo))
        return "video meta with a tiled format (not accepted over the wire)";
    if (v->n_planes != GST_VIDEO_FORMAT_INFO_N_PLANES(finfo))
        return "video meta whose plane count is not its format's";
    if (v->width == 0 || v->height == 0 || v->width > MAX_DIMENSION || v->height > MAX_DIMENSION)
        return "video meta with an impossible width or height";
    if (caps && (GST_VIDEO_INFO_FORMAT(caps) != (GstVideoFormat)v->format ||
                 (guint)GST_VIDEO_INFO_WIDTH(caps) > v->width || (guint)GST_VIDEO_INFO_HEIGHT(caps) > v->height))
        return "video meta that does not match the caps";
    GstVideoInfo dflt;
    if (!gst_video_info_set_format(&dflt, (GstVideoFormat)v->format, v->width, v->height))
        return "video meta with a format and size GStreamer cannot lay out";
    for (guint p = 0; p < v->n_planes; p++) {
        if (v->stride[p] < 0)
            return "video meta with a negative stride";
        guint64 extent;
        guint h = plane_height(finfo, p, v->height);
        if (h == 0) { /* no component: a palette */
            if (!GST_VIDEO_FORMAT_INFO_HAS_PALETTE(finfo))
                return "video meta with a plane its format does not describe";
            extent = 256 * 4;
        } else {
            guint64 row = row_bytes(finfo, p, v->width);
            if (row == 0)
                row = (guint64)GST_VIDEO_INFO_PLANE_STRIDE(&dflt, p);
            extent = (guint64)v->stride[p] * (h - 1) + row;
        }
        guint64 start, in;
        if (!memory_at(memory_sizes, n_memories, v->offset[p], &start, &in) ||
            extent > in - (v->offset[p] - start))
            return "video meta with a plane outside the buffer, or across two of its memories";
    }
    return NULL;
}
