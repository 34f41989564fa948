/* The buffer message, written by the sink and read by the source, and what a consumer
 * checks before it believes one: GstVideoMeta from the wire says where each plane starts and
 * how far apart its rows are, and whatever maps the buffer downstream (videoconvert's orc
 * code, say) reads exactly there, unchecked. So every plane must lie inside the buffer's
 * bytes, and the meta must agree with the negotiated caps. */
#include "wire.h"

#include "allocator.h"

#include <string.h>

void vsg_buffer_write(vsg_buffer *b, GstBuffer *buf, guint64 seq)
{
    memset(b, 0, sizeof *b);
    vsg_init_header(&b->h, VSG_BUFFER, sizeof *b);
    b->seq = seq;
    b->pts = GST_BUFFER_PTS(buf);
    b->dts = GST_BUFFER_DTS(buf);
    b->duration = GST_BUFFER_DURATION(buf);
    b->offset = GST_BUFFER_OFFSET(buf);
    b->offset_end = GST_BUFFER_OFFSET_END(buf);
    b->flags = GST_BUFFER_FLAGS(buf) & ~GST_BUFFER_FLAG_TAG_MEMORY;
    b->n_memories = gst_buffer_n_memory(buf);
    b->shared = b->n_memories && gst_varslot_memory_is_shared(gst_buffer_peek_memory(buf, 0));
    for (guint i = 0; i < b->n_memories; i++) {
        GstMemory *mem = gst_buffer_peek_memory(buf, i);
        gsize off;
        vs_slot_ref ref = gst_varslot_memory_slot(mem, &off);
        b->memories[i] = (vsg_memory){vs_slot_ref_pack(ref), (uint32_t)off, (uint32_t)mem->size};
    }
    GstVideoMeta *vm = gst_buffer_get_video_meta(buf);
    if (vm && vm->n_planes <= VSG_MAX_PLANES) {
        b->video.present = 1;
        b->video.flags = vm->flags;
        b->video.format = vm->format;
        b->video.width = vm->width;
        b->video.height = vm->height;
        b->video.n_planes = vm->n_planes;
        for (guint p = 0; p < vm->n_planes; p++) {
            b->video.offset[p] = vm->offset[p];
            b->video.stride[p] = vm->stride[p];
        }
    }
}

void vsg_buffer_read_metadata(const vsg_buffer *b, GstBuffer *buf)
{
    GST_BUFFER_PTS(buf) = b->pts;
    GST_BUFFER_DTS(buf) = b->dts;
    GST_BUFFER_DURATION(buf) = b->duration;
    GST_BUFFER_OFFSET(buf) = b->offset;
    GST_BUFFER_OFFSET_END(buf) = b->offset_end;
    GST_BUFFER_FLAGS(buf) = b->flags & (GST_BUFFER_FLAG_LAST - 1) & ~GST_BUFFER_FLAG_TAG_MEMORY;
}

void vsg_buffer_read_video_meta(const vsg_buffer *b, GstBuffer *buf)
{
    const vsg_video_meta *v = &b->video;
    if (!v->present)
        return;
    gsize offset[GST_VIDEO_MAX_PLANES] = {0};
    gint stride[GST_VIDEO_MAX_PLANES] = {0};
    for (guint p = 0; p < v->n_planes; p++) {
        offset[p] = v->offset[p];
        stride[p] = v->stride[p];
    }
    gst_buffer_add_video_meta_full(buf, v->flags, v->format, v->width, v->height, v->n_planes,
                                   offset, stride);
}

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

gboolean vsg_caps_write(vsg_caps *m, const gchar *text)
{
    gsize len = strlen(text) + 1;
    if (len > VSG_MAX_CAPS)
        return FALSE;
    vsg_init_header(&m->h, VSG_CAPS, sizeof(vsg_header) + len);
    memcpy(m->caps, text, len);
    return TRUE;
}

/* A caps feature name as GStreamer accepts it ("namespace:Name"; or ANY): any other makes
 * gst_caps_from_string print a g_warning, which a hostile producer must not be able to cause
 * (under G_DEBUG=fatal-warnings it aborts the consumer). */
static gboolean feature_name_ok(const char *f, gsize len)
{
    if (len == 3 && !strncmp(f, "ANY", 3))
        return TRUE;
    gsize i = 0;
    while (i < len && g_ascii_isalpha(f[i]))
        i++;
    if (i == 0 || i >= len || f[i] != ':' || ++i >= len || !g_ascii_isalpha(f[i]))
        return FALSE;
    while (i < len && g_ascii_isalnum(f[i]))
        i++;
    return i == len;
}

/* A structure name as GStreamer accepts it (else gst_caps_from_string fails an assertion). */
static gboolean structure_name_ok(const char *n, gsize len)
{
    if (len == 0 || !g_ascii_isalpha(n[0]))
        return FALSE;
    for (gsize i = 1; i < len; i++)
        if (!g_ascii_isalnum(n[i]) && !strchr("/-_.:+", n[i]))
            return FALSE;
    return TRUE;
}

/* Whether text holds one structure: no ';' outside a quoted string. */
static gboolean one_structure(const char *text)
{
    gboolean quoted = FALSE;
    for (const char *c = text; *c; c++) {
        if (quoted && *c == '\\' && c[1])
            c++;
        else if (*c == '"')
            quoted = !quoted;
        else if (!quoted && *c == ';')
            return FALSE;
    }
    return TRUE;
}

gboolean vsg_caps_text_ok(const char *text)
{
    while (*text == ' ')
        text++;
    const char *name_end = text;
    while (*name_end && *name_end != ',' && *name_end != '(' && *name_end != ' ')
        name_end++;
    gsize name_len = (gsize)(name_end - text);
    gboolean special = (name_len == 3 && (!strncmp(text, "ANY", 3))) || (name_len == 4 && !strncmp(text, "NONE", 4)) ||
                       (name_len == 5 && !strncmp(text, "EMPTY", 5));
    if (!one_structure(text) || (!special && !structure_name_ok(text, name_len)))
        return FALSE;
    const char *open = NULL;
    for (const char *c = name_end; *c && *c != ','; c++)
        if (*c == '(') {
            open = c;
            break;
        }
    if (!open)
        return TRUE; /* no caps features: nothing the parser warns about */
    const char *close = strchr(open, ')');
    if (!close)
        return FALSE;
    for (const char *f = open + 1; f < close;) {
        while (f < close && *f == ' ')
            f++;
        const char *end = f;
        while (end < close && *end != ',')
            end++;
        const char *last = end;
        while (last > f && last[-1] == ' ')
            last--;
        if (!feature_name_ok(f, (gsize)(last - f)))
            return FALSE;
        f = end < close ? end + 1 : close;
    }
    return TRUE;
}

const char *vsg_check_caps(const GstCaps *caps)
{
    const GstStructure *st = gst_caps_get_size(caps) == 1 ? gst_caps_get_structure(caps, 0) : NULL;
    if (!st || !gst_structure_has_name(st, "video/x-raw"))
        return NULL; /* only raw video is interpreted here; other caps pass as they are */
    GstVideoInfo info;
    if (!gst_video_info_from_caps(&info, caps))
        return "raw video caps GStreamer cannot lay out";
    if (info.width <= 0 || info.height <= 0 || info.width > (gint)MAX_DIMENSION || info.height > (gint)MAX_DIMENSION)
        return "raw video caps with an impossible width or height";
    if (info.fps_n < 0 || info.fps_d <= 0 || info.par_n <= 0 || info.par_d <= 0)
        return "raw video caps whose frame rate or pixel aspect ratio is not a fraction";
    return NULL;
}
