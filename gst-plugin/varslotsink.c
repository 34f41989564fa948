/* varslotsink: proposes slot-backed buffers upstream (allocator, pool, GstVideoMeta) and
 * sends each buffer to every connected varslotsrc as slot handles plus metadata, through its
 * server (server.c: clients, pending buffers, acks, client-timeout). A lone client gets the
 * producer's own slots (zero copy; it takes ownership with one CAS each); several clients,
 * or a buffer also held elsewhere in this process (a tee), get the slots shared (zero copy:
 * each reads them in place and releases its reference; the last release frees the slot).
 * Only a buffer that cannot be shared (more than 15 clients) gets copies for the clients
 * after the first, in slots of their own. Every wait on the sockets is on the server's
 * GstPoll, which unlock() flushes; only the allocator's own wait for a free slot
 * (VARSLOT_GST_WAIT_MS) is not interruptible. A copy that finds no slot within
 * client-timeout is skipped (buffers-skipped), and while slots are short the upstream pool
 * frees the buffers it gets back instead of keeping them idle. So nothing a consumer does or
 * fails to do wedges the sink. */
#include "tee_offer.h"
#include "varslotsink.h"

#include "allocator.h"
#include "pool.h"
#include "protocol.h"
#include "server.h"

#include <gst/video/video.h>

GST_DEBUG_CATEGORY_EXTERN(gst_varslot_debug);
#define GST_CAT_DEFAULT gst_varslot_debug

struct _GstVarslotSink {
    GstBaseSink parent;
    /* properties */
    gchar *socket_path;
    gchar *segment_name;
    gboolean wait_for_connection, trust_owner;
    VsgServerLimits limits; /* client-timeout, client-max-pending, max-clients */
    /* counters, read by property getters from any thread */
    guint64 buffers_sent, buffers_shared, copied_buffers, fanout_copies, dropped, skipped;
    VsgServerCounts server_counts; /* clients, clients-dropped */
    /* streaming state: touched by the streaming thread (and start/stop) only */
    VsgServer *server;
    GstVarslotSegment *segment;
    GstAllocator *allocator;
    GstCaps *caps;
    guint64 seq;
    VsgTeeOffer *tee_offer; /* behind a tee: our allocator, offered upstream of it */
};

enum {
    PROP_0,
    PROP_SOCKET_PATH,
    PROP_SEGMENT,
    PROP_WAIT_FOR_CONNECTION,
    PROP_BUFFERS_SENT,
    PROP_COPIED_BUFFERS,
    PROP_FANOUT_COPIES,
    PROP_DROPPED,
    PROP_CLIENTS,
    PROP_FALLBACKS,
    PROP_CLIENT_TIMEOUT,
    PROP_CLIENT_MAX_PENDING,
    PROP_SKIPPED,
    PROP_CLIENTS_DROPPED,
    PROP_MAX_CLIENTS,
    PROP_TRUST_OWNER,
    PROP_BUFFERS_SHARED,
};

#define DEFAULT_CLIENT_TIMEOUT_MS 2000
#define DEFAULT_CLIENT_MAX_PENDING 16
#define DEFAULT_MAX_CLIENTS 64

static GstStaticPadTemplate sink_template =
    GST_STATIC_PAD_TEMPLATE("sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS_ANY);

G_DEFINE_TYPE(GstVarslotSink, gst_varslot_sink, GST_TYPE_BASE_SINK)
GST_ELEMENT_REGISTER_DEFINE(varslotsink, "varslotsink", GST_RANK_NONE, GST_TYPE_VARSLOT_SINK)

#define COUNT(field) __atomic_fetch_add(&self->field, 1, __ATOMIC_RELAXED)
#define READ_COUNT(field) __atomic_load_n(&self->field, __ATOMIC_RELAXED)

/* A wait on the server's sockets was flushed (unlock()): wait for preroll, as GstBaseSink
 * asks, then go on waiting unless it says to stop. */
static GstFlowReturn gst_varslot_sink_flushed(gpointer user_data)
{
    return gst_base_sink_wait_preroll(GST_BASE_SINK(user_data));
}

/* ---- the segment ---- */

static gboolean ensure_segment(GstVarslotSink *self, GstCaps *caps)
{
    GstVideoInfo info;
    gsize frame = caps && gst_video_info_from_caps(&info, caps) ? info.size : 0;
    if (self->segment && frame <= gst_varslot_segment_largest_slot(self->segment))
        return TRUE;
    if (self->segment) {
        GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("Frames grew beyond the segment's slots"),
                          ("segment %s holds at most %u bytes per slot; frames are now %"
                           G_GSIZE_FORMAT " bytes", self->segment->name,
                           gst_varslot_segment_largest_slot(self->segment), frame));
        return FALSE;
    }
    GError *err = NULL;
    self->segment = gst_varslot_segment_open(self->segment_name, GST_VARSLOT_ROLE_PRODUCER, frame,
                                             self->trust_owner, &err);
    if (!self->segment) {
        GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ_WRITE, ("Cannot use the varslot segment"),
                          ("%s", err->message));
        g_clear_error(&err);
        return FALSE;
    }
    vsg_server_set_segment(self->server, self->segment);
    GstAllocator *allocator = gst_varslot_allocator_new(self->segment);
    GST_OBJECT_LOCK(self); /* the fallbacks getter reads it from any thread */
    self->allocator = allocator;
    GST_OBJECT_UNLOCK(self);
    return TRUE;
}

/* ---- sending ---- */

/* Whether a lone client may take buf's slots (hand-over): every memory a whole slot of our
 * segment that nothing else references, for taking them must not pull bytes from under
 * another holder. */
static gboolean can_hand_over(GstVarslotSink *self, GstBuffer *buf)
{
    guint n = gst_buffer_n_memory(buf);
    if (n == 0 || n > VSG_MAX_MEMORIES || GST_MINI_OBJECT_REFCOUNT_VALUE(buf) > 1)
        return FALSE;
    for (guint i = 0; i < n; i++) {
        GstMemory *mem = gst_buffer_peek_memory(buf, i);
        if (!gst_is_varslot_memory(mem) || mem->parent || gst_varslot_memory_is_given_away(mem) ||
            gst_varslot_memory_segment(mem) != self->segment ||
            GST_MINI_OBJECT_REFCOUNT_VALUE(mem) > 1)
            return FALSE;
    }
    return TRUE;
}

static gboolean in_our_slots(GstVarslotSink *self, GstBuffer *buf);

/* Shares buf's slots with this process and every target client (vs_pool_share, one CAS per
 * slot): each client reads them in place and releases its reference, the last release frees
 * the slot. Any buffer whose memories are slots of our segment still ours qualifies, however
 * many holders it has here (a tee's other branches read the same bytes: nobody writes a
 * buffer it shares). FALSE, nothing shared with anyone: copy instead. */
static gboolean share_with_clients(GstVarslotSink *self, GstBuffer *buf, GArray *targets,
                                   guint8 readers[VS_MAX_READERS])
{
    guint n = gst_buffer_n_memory(buf);
    if (n == 0 || n > VSG_MAX_MEMORIES || targets->len == 0 || targets->len + 1 > VS_MAX_READERS)
        return FALSE;
    readers[0] = self->segment->peer;
    for (guint i = 0; i < targets->len; i++)
        if (!(readers[i + 1] = vsg_server_client_peer(self->server, g_array_index(targets, guint64, i))))
            return FALSE;
    if (!in_our_slots(self, buf))
        return FALSE; /* not slots of ours (or shared already, say by another sink) */
    const vs_pool *pool = gst_varslot_segment_pool(self->segment);
    for (guint i = 0; i < n; i++) {
        GstMemory *mem = gst_buffer_peek_memory(buf, i);
        vs_slot_ref ref = gst_varslot_memory_slot(mem, NULL);
        int rc = vs_pool_share(pool, ref, self->segment->peer, readers, targets->len + 1);
        if (rc != VS_OK) {
            /* A client left meanwhile (VS_ENOTJOINED). Nobody has heard of what was shared
             * so far: its clients' references go; ours goes with the memories. */
            GST_DEBUG_OBJECT(self, "cannot share slot %u/%u: %s", ref.class_idx, ref.slot_idx, vs_strerror(rc));
            for (guint j = 0; j < i; j++) {
                vs_slot_ref done = gst_varslot_memory_slot(gst_buffer_peek_memory(buf, j), NULL);
                for (guint r = 1; r <= targets->len; r++)
                    vs_pool_release(pool, done, readers[r]);
            }
            return FALSE;
        }
        gst_varslot_memory_mark_shared(mem);
    }
    return TRUE;
}

/* Sends a shared buffer to every target. A client that went away before it was sent (while
 * we waited on another, say) never heard of its references: they are released for it, as
 * the peer it was when the slots were shared (readers[i + 1]). */
static GstFlowReturn send_shared(GstVarslotSink *self, GstBuffer *buf, GArray *targets,
                                 const guint8 readers[VS_MAX_READERS], gboolean *given)
{
    const vs_pool *pool = gst_varslot_segment_pool(self->segment);
    GstFlowReturn ret = GST_FLOW_OK;
    *given = FALSE;
    for (guint i = 0; i < targets->len; i++) {
        guint64 id = g_array_index(targets, guint64, i);
        guint8 peer = readers[i + 1];
        gboolean sent = FALSE;
        if (ret == GST_FLOW_OK)
            ret = vsg_server_send_buffer(self->server, id, gst_buffer_ref(buf), self->seq, &sent);
        *given |= sent;
        for (guint m = 0; !sent && peer && m < gst_buffer_n_memory(buf); m++)
            vs_pool_release(pool, gst_varslot_memory_slot(gst_buffer_peek_memory(buf, m), NULL), peer);
    }
    return ret;
}

/* GST_FLOW_OK's sibling for "no slot came free in time: skip this copy". */
#define FLOW_NO_SLOT GST_FLOW_CUSTOM_SUCCESS_1

/* A copy of buf in one slot of our segment, waiting (flushably, up to client-timeout: then
 * FLOW_NO_SLOT) until a slot is free. */
static GstFlowReturn copy_into_slot(GstVarslotSink *self, GstBuffer *buf, GstBuffer **out)
{
    gsize size = gst_buffer_get_size(buf);
    gint64 start = g_get_monotonic_time();
    for (;;) {
        GstMemory *mem = gst_allocator_alloc(self->allocator, size, NULL);
        if (mem && gst_is_varslot_memory(mem)) {
            GstBuffer *copy = gst_buffer_new();
            gst_buffer_copy_into(copy, buf, GST_BUFFER_COPY_METADATA, 0, -1);
            /* GstVideoMeta describes memory, so METADATA alone does not copy it; the bytes
             * keep their layout, so the same meta holds for the copy. */
            GstVideoMeta *vm = gst_buffer_get_video_meta(buf);
            if (vm && !gst_buffer_get_video_meta(copy))
                gst_buffer_add_video_meta_full(copy, vm->flags, vm->format, vm->width, vm->height,
                                               vm->n_planes, vm->offset, vm->stride);
            GstMapInfo map;
            gst_memory_map(mem, &map, GST_MAP_WRITE);
            gst_buffer_extract(buf, 0, map.data, size);
            gst_memory_unmap(mem, &map);
            gst_buffer_append_memory(copy, mem);
            *out = copy;
            return GST_FLOW_OK;
        }
        if (mem)
            gst_memory_unref(mem); /* system memory: no use to another process */
        if (size > gst_varslot_segment_largest_slot(self->segment)) {
            GST_ELEMENT_ERROR(self, RESOURCE, NO_SPACE_LEFT, ("Buffer larger than any slot"),
                              ("%" G_GSIZE_FORMAT " bytes", size));
            return GST_FLOW_ERROR;
        }
        vsg_server_service(self->server); /* consumers take and free slots; what they took we release */
        if (vsg_server_time_left(self->server, start) == 0)
            return FLOW_NO_SLOT;
        if (!vsg_server_wait(self->server, 2 * GST_MSECOND)) {
            GstFlowReturn ret = gst_base_sink_wait_preroll(GST_BASE_SINK(self));
            if (ret != GST_FLOW_OK)
                return ret;
        }
    }
}

/* Whether buf's memories are all slots of our segment that are still ours to share. */
static gboolean in_our_slots(GstVarslotSink *self, GstBuffer *buf)
{
    guint n = gst_buffer_n_memory(buf);
    if (n == 0 || n > VSG_MAX_MEMORIES)
        return FALSE;
    for (guint i = 0; i < n; i++) {
        GstMemory *mem = gst_buffer_peek_memory(buf, i);
        if (!gst_is_varslot_memory(mem) || gst_varslot_memory_segment(mem) != self->segment ||
            gst_varslot_memory_is_given_away(mem) || !gst_varslot_memory_still_ours(mem))
            return FALSE;
        /* One slot per memory: a reader holds one reference per slot, released once. */
        for (guint j = 0; j < i; j++)
            if (vs_slot_ref_pack(gst_varslot_memory_slot(gst_buffer_peek_memory(buf, j), NULL)) ==
                vs_slot_ref_pack(gst_varslot_memory_slot(mem, NULL)))
                return FALSE;
    }
    return TRUE;
}

/* The old way, for a buffer that cannot be shared: the first client gets the original slots,
 * the others copies, all made before the original is sent (once sent, its client may take,
 * free and reuse those slots at once). */
static GstFlowReturn send_with_copies(GstVarslotSink *self, GstBuffer *first, GArray *targets,
                                      gboolean *given)
{
    GstFlowReturn ret = GST_FLOW_OK;
    GPtrArray *outs = g_ptr_array_new_with_free_func((GDestroyNotify)gst_buffer_unref);
    g_ptr_array_add(outs, gst_buffer_ref(first));
    while (outs->len < targets->len && ret == GST_FLOW_OK) {
        GstBuffer *copy;
        if ((ret = copy_into_slot(self, first, &copy)) == GST_FLOW_OK) {
            g_ptr_array_add(outs, copy);
            COUNT(fanout_copies);
        }
    }
    if (ret == FLOW_NO_SLOT) { /* the clients without a copy do not get this buffer */
        GST_DEBUG_OBJECT(self, "no slot for a fan-out copy within client-timeout: %u clients skip a buffer",
                         targets->len - outs->len);
        COUNT(skipped);
        g_array_set_size(targets, outs->len);
        ret = GST_FLOW_OK;
    }
    *given = FALSE;
    for (guint i = 0; i < targets->len && ret == GST_FLOW_OK; i++) {
        gboolean sent; /* FALSE if the client went away: its buffer is dropped with outs */
        ret = vsg_server_send_buffer(self->server, g_array_index(targets, guint64, i),
                                     gst_buffer_ref(g_ptr_array_index(outs, i)), self->seq, &sent);
        *given |= sent;
    }
    g_ptr_array_free(outs, TRUE);
    return ret;
}

static GstFlowReturn gst_varslot_sink_render(GstBaseSink *bsink, GstBuffer *buf)
{
    GstVarslotSink *self = GST_VARSLOT_SINK(bsink);
    if (!self->segment && !ensure_segment(self, self->caps))
        return GST_FLOW_ERROR;
    /* Send first, look after: a frame's latency should not include accepting and acks. */
    GstFlowReturn ret = vsg_server_wait_for_client(self->server, self->wait_for_connection);
    if (ret == GST_FLOW_CUSTOM_SUCCESS) {
        COUNT(dropped);
        return GST_FLOW_OK;
    }
    if (ret != GST_FLOW_OK)
        return ret;
    /* Bytes outside our slots go into one first (and only that copy is made). */
    GstBuffer *first;
    gboolean transferable; /* a lone client may take its slots: nothing else holds them */
    if (in_our_slots(self, buf)) {
        transferable = can_hand_over(self, buf); /* before our own reference */
        first = gst_buffer_ref(buf);
    } else {
        GST_LOG_OBJECT(self, "copying buffer %" GST_PTR_FORMAT " into a slot", buf);
        if ((ret = copy_into_slot(self, buf, &first)) == FLOW_NO_SLOT) {
            GST_DEBUG_OBJECT(self, "no slot for a copy within client-timeout: buffer skipped");
            COUNT(skipped);
            return GST_FLOW_OK;
        }
        if (ret != GST_FLOW_OK)
            return ret;
        COUNT(copied_buffers);
        transferable = TRUE; /* our copy, ours alone */
    }
    self->seq++;
    /* Clients can go away under any wait below, so go by a snapshot and check each is still
     * there. One client and a buffer nobody else holds: it takes the slots (one CAS each,
     * nothing to come back). Else the slots are shared with every client, whatever their
     * number and however many holders the buffer has here (a tee's other branches). */
    GArray *targets = vsg_server_ready_clients(self->server);
    gboolean given = FALSE;
    guint8 readers[VS_MAX_READERS];
    if ((targets->len > 1 || !transferable) && share_with_clients(self, first, targets, readers)) {
        ret = send_shared(self, first, targets, readers, &given);
        if (ret == GST_FLOW_OK)
            COUNT(buffers_shared);
    } else if (transferable && !gst_varslot_memory_is_shared(gst_buffer_peek_memory(first, 0))) {
        ret = send_with_copies(self, first, targets, &given);
    } else { /* its slots may not leave: another holder here still reads them */
        GstBuffer *copy = NULL;
        if ((ret = copy_into_slot(self, first, &copy)) == GST_FLOW_OK) {
            COUNT(copied_buffers);
            ret = send_with_copies(self, copy, targets, &given);
            gst_buffer_unref(copy);
        } else if (ret == FLOW_NO_SLOT) {
            COUNT(skipped);
            ret = GST_FLOW_OK;
        }
    }
    gst_buffer_unref(first);
    g_array_free(targets, TRUE);
    if (ret == GST_FLOW_OK)
        given ? COUNT(buffers_sent) : COUNT(dropped); /* every client went away meanwhile */
    vsg_server_service_now_and_then(self->server);
    return ret;
}

/* ---- allocation, caps, events ---- */

static gboolean gst_varslot_sink_propose_allocation(GstBaseSink *bsink, GstQuery *query)
{
    GstVarslotSink *self = GST_VARSLOT_SINK(bsink);
    GstCaps *caps;
    gboolean need_pool;
    gst_query_parse_allocation(query, &caps, &need_pool);
    if (!ensure_segment(self, caps ? caps : self->caps))
        return FALSE;
    GstVideoInfo info;
    if (caps && gst_video_info_from_caps(&info, caps)) {
        /* A new pool per query: upstream configures and activates what it gets. */
        GstBufferPool *pool = gst_varslot_buffer_pool_new(self->allocator);
        GstStructure *config = gst_buffer_pool_get_config(pool);
        gst_buffer_pool_config_set_params(config, caps, (guint)info.size, 2, 0);
        gst_buffer_pool_config_set_allocator(config, self->allocator, NULL);
        if (gst_buffer_pool_set_config(pool, config))
            gst_query_add_allocation_pool(query, need_pool ? pool : NULL, (guint)info.size, 2, 0);
        gst_object_unref(pool);
    }
    gst_query_add_allocation_param(query, self->allocator, NULL);
    gst_query_add_allocation_meta(query, GST_VIDEO_META_API_TYPE, NULL);
    return TRUE;
}

static gboolean gst_varslot_sink_set_caps(GstBaseSink *bsink, GstCaps *caps)
{
    GstVarslotSink *self = GST_VARSLOT_SINK(bsink);
    if (!ensure_segment(self, caps))
        return FALSE;
    gst_caps_replace(&self->caps, caps);
    vsg_server_set_caps(self->server, caps);
    return TRUE;
}

static gboolean gst_varslot_sink_event(GstBaseSink *bsink, GstEvent *ev)
{
    GstVarslotSink *self = GST_VARSLOT_SINK(bsink);
    if (GST_EVENT_TYPE(ev) == GST_EVENT_EOS && self->server)
        vsg_server_finish(self->server);
    return GST_BASE_SINK_CLASS(gst_varslot_sink_parent_class)->event(bsink, ev);
}

/* ---- lifecycle ---- */

static gboolean gst_varslot_sink_start(GstBaseSink *bsink)
{
    GstVarslotSink *self = GST_VARSLOT_SINK(bsink);
    GError *err = NULL;
    self->server = vsg_server_new(GST_ELEMENT(self), self->socket_path, &self->limits, &self->server_counts,
                                  gst_varslot_sink_flushed, self, &err);
    if (!self->server) {
        GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ_WRITE, ("Cannot listen for varslotsrc"),
                          ("%s", err->message));
        g_clear_error(&err);
        return FALSE;
    }
    self->seq = 0;
    self->tee_offer = vsg_tee_offer_new(GST_ELEMENT(self));
    return TRUE;
}

static gboolean gst_varslot_sink_stop(GstBaseSink *bsink)
{
    GstVarslotSink *self = GST_VARSLOT_SINK(bsink);
    GST_INFO_OBJECT(self, "sent %" G_GUINT64_FORMAT " buffers, copied %" G_GUINT64_FORMAT
                    ", fan-out copies %" G_GUINT64_FORMAT ", dropped %" G_GUINT64_FORMAT,
                    READ_COUNT(buffers_sent), READ_COUNT(copied_buffers), READ_COUNT(fanout_copies),
                    READ_COUNT(dropped));
    g_clear_pointer(&self->tee_offer, vsg_tee_offer_free);
    g_clear_pointer(&self->server, vsg_server_free);
    gst_clear_caps(&self->caps);
    GST_OBJECT_LOCK(self);
    GstAllocator *allocator = g_steal_pointer(&self->allocator);
    GST_OBJECT_UNLOCK(self);
    gst_clear_object(&allocator);
    g_clear_pointer(&self->segment, gst_varslot_segment_unref);
    return TRUE;
}

static gboolean gst_varslot_sink_unlock(GstBaseSink *bsink)
{
    GstVarslotSink *self = GST_VARSLOT_SINK(bsink);
    if (self->server)
        vsg_server_set_flushing(self->server, TRUE);
    return TRUE;
}

static gboolean gst_varslot_sink_unlock_stop(GstBaseSink *bsink)
{
    GstVarslotSink *self = GST_VARSLOT_SINK(bsink);
    if (self->server)
        vsg_server_set_flushing(self->server, FALSE);
    return TRUE;
}

/* ---- properties ---- */

static void gst_varslot_sink_set_property(GObject *object, guint id, const GValue *value, GParamSpec *pspec)
{
    GstVarslotSink *self = GST_VARSLOT_SINK(object);
    GST_OBJECT_LOCK(self);
    switch (id) {
    case PROP_SOCKET_PATH:
        g_free(self->socket_path);
        self->socket_path = g_value_dup_string(value);
        break;
    case PROP_SEGMENT:
        g_free(self->segment_name);
        self->segment_name = g_value_dup_string(value);
        break;
    case PROP_WAIT_FOR_CONNECTION: self->wait_for_connection = g_value_get_boolean(value); break;
    case PROP_CLIENT_TIMEOUT: self->limits.client_timeout_ms = g_value_get_uint(value); break;
    case PROP_CLIENT_MAX_PENDING: self->limits.client_max_pending = g_value_get_uint(value); break;
    case PROP_MAX_CLIENTS: self->limits.max_clients = g_value_get_uint(value); break;
    case PROP_TRUST_OWNER: self->trust_owner = g_value_get_boolean(value); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
    GST_OBJECT_UNLOCK(self);
}

static void gst_varslot_sink_get_property(GObject *object, guint id, GValue *value, GParamSpec *pspec)
{
    GstVarslotSink *self = GST_VARSLOT_SINK(object);
    GST_OBJECT_LOCK(self);
    switch (id) {
    case PROP_SOCKET_PATH: g_value_set_string(value, self->socket_path); break;
    case PROP_SEGMENT: g_value_set_string(value, self->segment_name); break;
    case PROP_WAIT_FOR_CONNECTION: g_value_set_boolean(value, self->wait_for_connection); break;
    case PROP_CLIENT_TIMEOUT: g_value_set_uint(value, self->limits.client_timeout_ms); break;
    case PROP_CLIENT_MAX_PENDING: g_value_set_uint(value, self->limits.client_max_pending); break;
    case PROP_MAX_CLIENTS: g_value_set_uint(value, self->limits.max_clients); break;
    case PROP_TRUST_OWNER: g_value_set_boolean(value, self->trust_owner); break;
    case PROP_SKIPPED: g_value_set_uint64(value, READ_COUNT(skipped)); break;
    case PROP_CLIENTS_DROPPED: g_value_set_uint64(value, READ_COUNT(server_counts.clients_dropped)); break;
    case PROP_BUFFERS_SENT: g_value_set_uint64(value, READ_COUNT(buffers_sent)); break;
    case PROP_BUFFERS_SHARED: g_value_set_uint64(value, READ_COUNT(buffers_shared)); break;
    case PROP_COPIED_BUFFERS: g_value_set_uint64(value, READ_COUNT(copied_buffers)); break;
    case PROP_FANOUT_COPIES: g_value_set_uint64(value, READ_COUNT(fanout_copies)); break;
    case PROP_DROPPED: g_value_set_uint64(value, READ_COUNT(dropped)); break;
    case PROP_CLIENTS: g_value_set_uint(value, (guint)g_atomic_int_get(&self->server_counts.clients)); break;
    case PROP_FALLBACKS:
        g_value_set_uint64(value, self->allocator ? gst_varslot_allocator_fallbacks(self->allocator) : 0);
        break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
    GST_OBJECT_UNLOCK(self);
}

static void gst_varslot_sink_finalize(GObject *object)
{
    GstVarslotSink *self = GST_VARSLOT_SINK(object);
    g_free(self->socket_path);
    g_free(self->segment_name);
    G_OBJECT_CLASS(gst_varslot_sink_parent_class)->finalize(object);
}

static GParamSpec *counter(const char *name, const char *blurb)
{
    return g_param_spec_uint64(name, name, blurb, 0, G_MAXUINT64, 0,
                               G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
}

static void gst_varslot_sink_class_init(GstVarslotSinkClass *klass)
{
    GObjectClass *gobject = G_OBJECT_CLASS(klass);
    GstBaseSinkClass *base = GST_BASE_SINK_CLASS(klass);
    gobject->set_property = GST_DEBUG_FUNCPTR(gst_varslot_sink_set_property);
    gobject->get_property = GST_DEBUG_FUNCPTR(gst_varslot_sink_get_property);
    gobject->finalize = GST_DEBUG_FUNCPTR(gst_varslot_sink_finalize);
    const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY;
    g_object_class_install_property(gobject, PROP_SOCKET_PATH,
        g_param_spec_string("socket-path", "Socket path",
                            "Unix socket where varslotsrc elements connect", VSG_DEFAULT_SOCKET_PATH, rw));
    g_object_class_install_property(gobject, PROP_SEGMENT,
        g_param_spec_string("segment", "Segment",
                            "varslot segment for the buffers (NULL: $VARSLOT_SEGMENT, else "
                            "/varslot-gst-UID); created, sized for the frames, if missing",
                            NULL, rw));
    g_object_class_install_property(gobject, PROP_WAIT_FOR_CONNECTION,
        g_param_spec_boolean("wait-for-connection", "Wait for connection",
                             "Block until a varslotsrc is connected (else drop buffers)", TRUE, rw));
    g_object_class_install_property(gobject, PROP_CLIENT_TIMEOUT,
        g_param_spec_uint("client-timeout", "Client timeout",
                          "Milliseconds a client may go without taking any of its buffers, or "
                          "leave its socket full, before it is disconnected and its buffers taken "
                          "back; also the longest "
                          "wait for a slot to copy into before that copy is skipped (0: wait for ever)",
                          0, G_MAXUINT, DEFAULT_CLIENT_TIMEOUT_MS, rw));
    g_object_class_install_property(gobject, PROP_CLIENT_MAX_PENDING,
        g_param_spec_uint("client-max-pending", "Client max pending",
                          "Buffers a client may have been sent and not yet taken; the sink waits "
                          "for it beyond that", 1, 1024, DEFAULT_CLIENT_MAX_PENDING, rw));
    g_object_class_install_property(gobject, PROP_MAX_CLIENTS,
        g_param_spec_uint("max-clients", "Max clients",
                          "Connections served at once; further ones are closed as they come", 1, 4096,
                          DEFAULT_MAX_CLIENTS, rw));
    g_object_class_install_property(gobject, PROP_TRUST_OWNER,
        g_param_spec_boolean("trust-owner", "Trust owner",
                             "Use an existing segment owned by another user when it is shared "
                             "through one of this process's groups (its members become trusted peers)",
                             FALSE, rw));
    g_object_class_install_property(gobject, PROP_SKIPPED,
        counter("buffers-skipped", "Buffers some client did not get because no slot came free "
                                   "for its copy within client-timeout"));
    g_object_class_install_property(gobject, PROP_CLIENTS_DROPPED,
        counter("clients-dropped", "Clients disconnected for keeping the sink waiting longer than "
                                   "client-timeout"));
    g_object_class_install_property(gobject, PROP_BUFFERS_SENT,
                                    counter("buffers-sent", "Buffers sent to at least one client"));
    g_object_class_install_property(gobject, PROP_BUFFERS_SHARED,
        counter("buffers-shared", "Buffers whose slots were shared with every client to read in "
                                  "place (several clients, or a buffer also held elsewhere here)"));
    g_object_class_install_property(gobject, PROP_COPIED_BUFFERS,
        counter("copied-buffers", "Buffers copied into a slot because their memory could be neither "
                                  "handed over nor shared (not slots of this segment)"));
    g_object_class_install_property(gobject, PROP_FANOUT_COPIES,
        counter("fanout-copies", "Copies made for the second and further clients when the buffer "
                                 "could not be shared (not in slots of ours, or more than 15 clients)"));
    g_object_class_install_property(gobject, PROP_DROPPED,
        counter("dropped", "Buffers dropped because no client was connected"));
    g_object_class_install_property(gobject, PROP_FALLBACKS,
        counter("fallbacks", "Allocations that found no free slot in time and used system memory"));
    g_object_class_install_property(gobject, PROP_CLIENTS,
        g_param_spec_uint("clients", "Clients", "Connected varslotsrc elements", 0, G_MAXUINT, 0,
                          G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));
    base->start = GST_DEBUG_FUNCPTR(gst_varslot_sink_start);
    base->stop = GST_DEBUG_FUNCPTR(gst_varslot_sink_stop);
    base->render = GST_DEBUG_FUNCPTR(gst_varslot_sink_render);
    base->set_caps = GST_DEBUG_FUNCPTR(gst_varslot_sink_set_caps);
    base->propose_allocation = GST_DEBUG_FUNCPTR(gst_varslot_sink_propose_allocation);
    base->event = GST_DEBUG_FUNCPTR(gst_varslot_sink_event);
    base->unlock = GST_DEBUG_FUNCPTR(gst_varslot_sink_unlock);
    base->unlock_stop = GST_DEBUG_FUNCPTR(gst_varslot_sink_unlock_stop);
    gst_element_class_add_static_pad_template(GST_ELEMENT_CLASS(klass), &sink_template);
    gst_element_class_set_static_metadata(GST_ELEMENT_CLASS(klass), "varslot sink", "Sink/Network",
        "Sends buffers to varslotsrc elements in other processes as shared-memory slots, without "
        "copying", "varslot developers");
}

static void gst_varslot_sink_init(GstVarslotSink *self)
{
    self->wait_for_connection = TRUE;
    self->limits.client_timeout_ms = DEFAULT_CLIENT_TIMEOUT_MS;
    self->limits.client_max_pending = DEFAULT_CLIENT_MAX_PENDING;
    self->limits.max_clients = DEFAULT_MAX_CLIENTS;
    self->socket_path = g_strdup(VSG_DEFAULT_SOCKET_PATH);
    /* The last sample would keep a reference to every frame: no slot could be handed over. */
    gst_base_sink_set_last_sample_enabled(GST_BASE_SINK(self), FALSE);
    gst_base_sink_set_sync(GST_BASE_SINK(self), FALSE);
}
