/* varslotsink: proposes slot-backed buffers upstream (allocator, pool, GstVideoMeta) and
 * sends each buffer to every connected varslotsrc as slot handles plus metadata. The first
 * client gets the producer's own slots (zero copy; it takes ownership with one CAS each);
 * further clients get copies in slots of their own. A buffer is held until its client took
 * the slots (the slot words say so; the client's acks, in batches, confirm it and carry
 * refusals), and released at once if the client goes away. Every wait on the sockets is on
 * a GstPoll that unlock() flushes, and no lock is held across one; only the allocator's own
 * wait for a free slot (VARSLOT_GST_WAIT_MS) is not interruptible.
 * Consumers are not trusted to keep up: one may hold at most client-max-pending buffers it
 * has not taken (the sink waits for it, which slows the stream for all), and one that takes
 * none of them, or leaves its socket full, for client-timeout is disconnected and its
 * buffers settled: a slow consumer is waited for, a stuck one is not. A copy that finds no slot within client-timeout is skipped (buffers-skipped),
 * and while slots are short the upstream pool frees the buffers it gets back instead of
 * keeping them idle. So nothing a consumer does or fails to do wedges the sink. */
#include "varslotsink.h"

#include "allocator.h"
#include "pool.h"
#include "protocol.h"

#include <errno.h>
#include <gst/video/video.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

GST_DEBUG_CATEGORY_EXTERN(gst_varslot_debug);
#define GST_CAT_DEFAULT gst_varslot_debug

typedef struct {
    guint64 id;       /* never reused: a Client's address may be, once it is freed */
    int fd;
    GstPollFD pfd;
    guint8 peer;      /* 0 until its HELLO_REPLY */
    GQueue pending;   /* PendingBuffer*, in send order */
    gint64 progress_us; /* when it last took a buffer, or was sent one with none pending */
    gint64 connected_us;
} Client;

typedef struct {
    guint64 seq;
    GstBuffer *buffer; /* what the client's slots are in; released once it took them */
} PendingBuffer;

struct _GstVarslotSink {
    GstBaseSink parent;
    /* properties */
    gchar *socket_path;
    gchar *segment_name;
    gboolean wait_for_connection;
    guint client_timeout_ms, client_max_pending, max_clients;
    /* counters, read by property getters from any thread */
    guint64 buffers_sent, copied_buffers, fanout_copies, dropped, skipped, clients_dropped;
    gint n_clients;
    /* streaming state: touched by the streaming thread (and start/stop) only */
    int listen_fd;
    GstPoll *poll;
    GstPollFD listen_pfd;
    GList *clients;
    GstVarslotSegment *segment;
    GstAllocator *allocator;
    GstCaps *caps;
    guint64 seq;
    guint64 next_client_id;
    gint64 accept_paused_until; /* out of descriptors: the listening socket rests till then */
    gint64 last_service; /* g_get_monotonic_time() of the last look at the sockets */
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
};

#define DEFAULT_CLIENT_TIMEOUT_MS 2000
#define DEFAULT_CLIENT_MAX_PENDING 16
#define DEFAULT_MAX_CLIENTS 64
#define ACCEPT_PAUSE_US (100 * 1000)

static GstStaticPadTemplate sink_template =
    GST_STATIC_PAD_TEMPLATE("sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS_ANY);

G_DEFINE_TYPE(GstVarslotSink, gst_varslot_sink, GST_TYPE_BASE_SINK)
GST_ELEMENT_REGISTER_DEFINE(varslotsink, "varslotsink", GST_RANK_NONE, GST_TYPE_VARSLOT_SINK)

#define COUNT(field) __atomic_fetch_add(&self->field, 1, __ATOMIC_RELAXED)
#define READ_COUNT(field) __atomic_load_n(&self->field, __ATOMIC_RELAXED)

/* ---- clients ---- */

static void send_caps(GstVarslotSink *self, Client *c);

/* The ids of the clients (only those that answered our greeting: ready_only), a snapshot to
 * go by while clients come and go. */
static GArray *client_ids(GstVarslotSink *self, gboolean ready_only)
{
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(guint64));
    for (GList *l = self->clients; l; l = l->next)
        if (!ready_only || ((Client *)l->data)->peer)
            g_array_append_val(ids, ((Client *)l->data)->id);
    return ids;
}

/* The client with that id, if it is still connected. */
static Client *client_by_id(GstVarslotSink *self, guint64 id)
{
    for (GList *l = self->clients; l; l = l->next)
        if (((Client *)l->data)->id == id)
            return l->data;
    return NULL;
}

static void drop_pending(PendingBuffer *p)
{
    gst_buffer_unref(p->buffer);
    g_free(p);
}

/* We stop holding a sent buffer (the client acked, refused or went away). Acks can be late,
 * batched or lost, so the slot words say what the client took, memory by memory: those slots
 * are not ours to free or reuse any more; the others come back to us. */
static void settle(PendingBuffer *p)
{
    gboolean any = FALSE;
    for (guint i = 0; i < gst_buffer_n_memory(p->buffer); i++) {
        GstMemory *mem = gst_buffer_peek_memory(p->buffer, i);
        if (gst_is_varslot_memory(mem) && !gst_varslot_memory_still_ours(mem)) {
            gst_varslot_memory_given_away(mem);
            any = TRUE;
        }
    }
    if (any)
        GST_BUFFER_FLAG_SET(p->buffer, GST_BUFFER_FLAG_TAG_MEMORY);
    drop_pending(p);
}

/* A client takes a buffer by moving each slot's owner to itself (one CAS each), so the slot
 * words say what was taken without a word from the client: once no slot of the oldest
 * pending buffer is ours, it is the client's. This costs no system call per buffer; the
 * client's acks come in large batches and matter for refusals and at EOS. */
static gboolean taken_by_client(GstBuffer *buf)
{
    gboolean any = FALSE;
    for (guint i = 0; i < gst_buffer_n_memory(buf); i++) {
        GstMemory *mem = gst_buffer_peek_memory(buf, i);
        if (!gst_is_varslot_memory(mem))
            continue;
        if (gst_varslot_memory_still_ours(mem))
            return FALSE;
        any = TRUE;
    }
    return any;
}

static void release_taken(Client *c)
{
    PendingBuffer *p;
    gboolean took = FALSE;
    while ((p = g_queue_peek_head(&c->pending)) && taken_by_client(p->buffer)) {
        settle(g_queue_pop_head(&c->pending));
        took = TRUE;
    }
    if (took)
        c->progress_us = g_get_monotonic_time();
}

static void client_remove(GstVarslotSink *self, Client *c, const char *why)
{
    GST_INFO_OBJECT(self, "client (peer %u) gone: %s; releasing %u buffers", c->peer, why,
                    g_queue_get_length(&c->pending));
    gst_poll_remove_fd(self->poll, &c->pfd);
    close(c->fd);
    g_queue_clear_full(&c->pending, (GDestroyNotify)settle);
    self->clients = g_list_remove(self->clients, c);
    g_atomic_int_add(&self->n_clients, -1);
    g_free(c);
}

/* Acks are cumulative ("taken" up to seq) and a refusal names one buffer: either way the
 * client is done with every buffer up to seq, and settle() asks the slot words what it took. */
static void handle_ack(GstVarslotSink *self, Client *c, const vsg_ack *ack)
{
    PendingBuffer *p;
    while ((p = g_queue_peek_head(&c->pending)) && p->seq <= ack->seq) {
        if (!ack->taken && p->seq == ack->seq)
            GST_DEBUG_OBJECT(self, "client refused buffer %" G_GUINT64_FORMAT, ack->seq);
        settle(g_queue_pop_head(&c->pending));
        c->progress_us = g_get_monotonic_time();
    }
}

/* Reads what a client sent; returns FALSE if it had to be dropped. */
static gboolean client_read(GstVarslotSink *self, Client *c)
{
    vsg_message m;
    const char *why = NULL;
    int rc;
    while ((rc = vsg_recv(c->fd, &m, NULL, &why)) == 1) {
        if (m.h.type == VSG_HELLO_REPLY && !c->peer) {
            c->peer = m.hello_reply.peer;
            GST_INFO_OBJECT(self, "client joined as peer %u", c->peer);
        } else if (m.h.type == VSG_ACK) {
            handle_ack(self, c, &m.ack);
        } else {
            why = "unexpected message";
            rc = -1;
            break;
        }
    }
    if (rc < 0) {
        client_remove(self, c, why);
        return FALSE;
    }
    return TRUE;
}

static gboolean evict_a_silent_client(GstVarslotSink *self);

/* Accepts whoever is knocking. Past max-clients a connection takes the place of a client that
 * has not answered its greeting for client-timeout, or is closed at once (the knocker sees it
 * end), so connections nobody serves do not pile up in the backlog; out of
 * descriptors, the listening socket rests a moment (else, readable for ever, it would wake
 * every wait at once). */
static void accept_clients(GstVarslotSink *self)
{
    int fd;
    while ((fd = accept4(self->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0 ||
           errno == EMFILE || errno == ENFILE) {
        if (fd < 0) {
            GST_WARNING_OBJECT(self, "cannot accept a client: %s; not listening for %d ms", g_strerror(errno),
                               ACCEPT_PAUSE_US / 1000);
            gst_poll_fd_ctl_read(self->poll, &self->listen_pfd, FALSE);
            self->accept_paused_until = g_get_monotonic_time() + ACCEPT_PAUSE_US;
            return;
        }
        if (g_list_length(self->clients) >= self->max_clients && !evict_a_silent_client(self)) {
            GST_DEBUG_OBJECT(self, "max-clients (%u) reached: a connection refused", self->max_clients);
            close(fd);
            continue;
        }
        Client *c = g_new0(Client, 1);
        c->id = ++self->next_client_id;
        c->connected_us = g_get_monotonic_time();
        c->fd = fd;
        gst_poll_fd_init(&c->pfd);
        c->pfd.fd = fd;
        gst_poll_add_fd(self->poll, &c->pfd);
        gst_poll_fd_ctl_read(self->poll, &c->pfd, TRUE);
        g_queue_init(&c->pending);
        vsg_message hello;
        memset(&hello, 0, sizeof hello);
        vsg_init_header(&hello.h, VSG_HELLO, sizeof hello.hello);
        hello.hello.peer = self->segment->peer; /* accept_clients runs once there is one */
        g_strlcpy(hello.hello.segment, self->segment->name, sizeof hello.hello.segment);
        self->clients = g_list_append(self->clients, c);
        g_atomic_int_add(&self->n_clients, 1);
        if (vsg_send_with_fd(fd, &hello, self->segment->seg.fd) != 1) {
            client_remove(self, c, "cannot send the greeting");
            continue;
        }
        send_caps(self, c);
        GST_INFO_OBJECT(self, "client connected");
    }
}

/* The time a client may keep us waiting, in g_get_monotonic_time() units; 0: for ever. */
static gint64 client_timeout_us(GstVarslotSink *self)
{
    return (gint64)self->client_timeout_ms * 1000;
}

/* How long a wait may last from now: until client-timeout after start_us. */
static GstClockTime wait_left(GstVarslotSink *self, gint64 start_us)
{
    if (!client_timeout_us(self))
        return GST_CLOCK_TIME_NONE;
    gint64 left = start_us + client_timeout_us(self) - g_get_monotonic_time();
    return left > 0 ? (GstClockTime)left * GST_USECOND : 0;
}

/* Why a client keeps us waiting too long, or NULL: it has buffers to take and has taken none
 * for client-timeout (a slow one keeps taking, however slowly: this measures progress, not
 * how long a buffer waited). */
static const char *overdue(GstVarslotSink *self, Client *c, gint64 now)
{
    if (client_timeout_us(self) && !g_queue_is_empty(&c->pending) &&
        now - c->progress_us > client_timeout_us(self))
        return "it took none of its buffers for client-timeout";
    return NULL;
}

static void client_drop(GstVarslotSink *self, Client *c, const char *why)
{
    GST_WARNING_OBJECT(self, "dropping a client (peer %u): %s", c->peer, why);
    COUNT(clients_dropped);
    client_remove(self, c, why);
}

/* With max-clients connected, a newcomer takes the place of the longest-waiting client that
 * has not answered its greeting for client-timeout (a flood of silent connections must not
 * lock consumers out; a consumer paused before its first buffer keeps its place otherwise).
 * FALSE: nobody to evict. */
static gboolean evict_a_silent_client(GstVarslotSink *self)
{
    gint64 now = g_get_monotonic_time();
    Client *oldest = NULL;
    for (GList *l = self->clients; l; l = l->next) {
        Client *c = l->data;
        if (!c->peer && (!oldest || c->connected_us < oldest->connected_us))
            oldest = c;
    }
    if (!oldest || !client_timeout_us(self) || now - oldest->connected_us <= client_timeout_us(self))
        return FALSE;
    client_drop(self, oldest, "it did not answer the greeting within client-timeout, and max-clients are connected");
    return TRUE;
}

/* Accepts, reads acks, drops dead and overdue clients: never waits. One poll says which
 * sockets have something, so an idle socket costs no system call (at 100,000 buffers a
 * second they add up). */
static void service(GstVarslotSink *self)
{
    gint64 now = self->last_service = g_get_monotonic_time();
    for (GList *l = self->clients; l;) {
        Client *c = l->data;
        l = l->next; /* client_drop removes c */
        release_taken(c);
        const char *why = overdue(self, c, now);
        if (why)
            client_drop(self, c, why);
    }
    if (self->accept_paused_until && now >= self->accept_paused_until) {
        self->accept_paused_until = 0;
        gst_poll_fd_ctl_read(self->poll, &self->listen_pfd, TRUE);
    }
    if (gst_poll_wait(self->poll, 0) <= 0)
        return;
    if (self->segment && gst_poll_fd_can_read(self->poll, &self->listen_pfd))
        accept_clients(self); /* before the segment exists, a greeting could not name it */
    for (GList *l = self->clients; l;) {
        Client *c = l->data;
        l = l->next; /* client_read may remove c */
        if (gst_poll_fd_can_read(self->poll, &c->pfd) || gst_poll_fd_has_closed(self->poll, &c->pfd) ||
            gst_poll_fd_has_error(self->poll, &c->pfd))
            client_read(self, c);
    }
}

/* After a render: the sockets need a look (new clients, refusals, a client gone) about once
 * a millisecond, not once a buffer; sooner if a client's backlog says something is stuck. */
#define SERVICE_INTERVAL_US 1000
#define PENDING_BACKLOG 64
static void service_now_and_then(GstVarslotSink *self)
{
    gboolean backlog = FALSE;
    for (GList *l = self->clients; l; l = l->next) {
        Client *c = l->data;
        release_taken(c);
        backlog |= g_queue_get_length(&c->pending) > PENDING_BACKLOG;
    }
    if (backlog || g_get_monotonic_time() - self->last_service >= SERVICE_INTERVAL_US)
        service(self);
}

static guint ready_clients(GstVarslotSink *self)
{
    guint n = 0;
    for (GList *l = self->clients; l; l = l->next)
        n += ((Client *)l->data)->peer != 0;
    return n;
}

/* Waits for anything on the sockets. FALSE: unlock() flushed us; the caller goes through
 * gst_base_sink_wait_preroll() as the base class asks. */
static gboolean wait_for_io(GstVarslotSink *self, GstClockTime timeout)
{
    gint r = gst_poll_wait(self->poll, timeout);
    return !(r < 0 && errno == EBUSY);
}

static void send_caps(GstVarslotSink *self, Client *c)
{
    if (!self->caps)
        return;
    vsg_message m;
    gchar *s = gst_caps_to_string(self->caps);
    gsize len = strlen(s) + 1;
    if (len > VSG_MAX_CAPS) {
        GST_ELEMENT_WARNING(self, STREAM, FORMAT, (NULL), ("caps too long to send: %s", s));
        g_free(s);
        return;
    }
    vsg_init_header(&m.h, VSG_CAPS, sizeof(vsg_header) + len);
    memcpy(m.caps.caps, s, len);
    g_free(s);
    if (vsg_send(c->fd, &m) != 1)
        GST_WARNING_OBJECT(self, "cannot send caps to a client");
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
    self->segment = gst_varslot_segment_open(self->segment_name, GST_VARSLOT_ROLE_PRODUCER, frame, &err);
    if (!self->segment) {
        GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ_WRITE, ("Cannot use the varslot segment"),
                          ("%s", err->message));
        g_clear_error(&err);
        return FALSE;
    }
    GstAllocator *allocator = gst_varslot_allocator_new(self->segment);
    GST_OBJECT_LOCK(self); /* the fallbacks getter reads it from any thread */
    self->allocator = allocator;
    GST_OBJECT_UNLOCK(self);
    return TRUE;
}

/* ---- sending ---- */

/* Zero copy when every memory is a whole slot of our segment that nothing else references:
 * handing the slot over must not pull bytes from under another holder. */
static gboolean shareable(GstVarslotSink *self, GstBuffer *buf)
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
        service(self); /* consumers take and free slots; what they took we release */
        if (wait_left(self, start) == 0)
            return FLOW_NO_SLOT;
        if (!wait_for_io(self, 2 * GST_MSECOND)) {
            GstFlowReturn ret = gst_base_sink_wait_preroll(GST_BASE_SINK(self));
            if (ret != GST_FLOW_OK)
                return ret;
        }
    }
}

static void describe(GstVarslotSink *self, GstBuffer *buf, vsg_message *m)
{
    memset(m, 0, sizeof m->buffer);
    vsg_init_header(&m->h, VSG_BUFFER, sizeof m->buffer);
    vsg_buffer *b = &m->buffer;
    b->seq = self->seq;
    b->pts = GST_BUFFER_PTS(buf);
    b->dts = GST_BUFFER_DTS(buf);
    b->duration = GST_BUFFER_DURATION(buf);
    b->offset = GST_BUFFER_OFFSET(buf);
    b->offset_end = GST_BUFFER_OFFSET_END(buf);
    b->flags = GST_BUFFER_FLAGS(buf) & ~GST_BUFFER_FLAG_TAG_MEMORY;
    b->n_memories = gst_buffer_n_memory(buf);
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

/* Sends m to c, waiting for room in its socket (up to client-timeout: then c is dropped)
 * while servicing every socket. *sent: c got it (FALSE: c went away or was dropped
 * meanwhile). Not GST_FLOW_OK: flushing while waiting. */
static GstFlowReturn send_waiting(GstVarslotSink *self, Client *c, const vsg_message *m,
                                  gboolean *sent)
{
    *sent = FALSE;
    gint64 start = g_get_monotonic_time();
    guint64 id = c->id;
    for (;;) {
        int rc = vsg_send(c->fd, m);
        if (rc == 1) {
            *sent = TRUE;
            return GST_FLOW_OK;
        }
        if (rc < 0) {
            client_remove(self, c, "send failed");
            return GST_FLOW_OK; /* the stream goes on for the others */
        }
        GstClockTime left = wait_left(self, start);
        if (left == 0) {
            client_drop(self, c, "its socket stayed full for client-timeout");
            return GST_FLOW_OK;
        }
        gst_poll_fd_ctl_write(self->poll, &c->pfd, TRUE);
        gboolean woke = wait_for_io(self, left);
        gst_poll_fd_ctl_write(self->poll, &c->pfd, FALSE);
        /* Every socket, not only c's: one left unread would wake the poll again at once. */
        service(self);
        if (client_by_id(self, id) != c)
            return GST_FLOW_OK;
        if (!woke) {
            GstFlowReturn ret = gst_base_sink_wait_preroll(GST_BASE_SINK(self));
            if (ret != GST_FLOW_OK)
                return ret;
        }
    }
}

/* Waits until c has fewer than client-max-pending buffers it has not taken. A client takes
 * a buffer by the slot words, without a word on its socket, so this looks every
 * millisecond; service() drops c if it takes none for client-timeout.
 * FALSE: c is gone. */
static gboolean wait_for_room(GstVarslotSink *self, Client *c, GstFlowReturn *ret)
{
    guint64 id = c->id;
    while (g_queue_get_length(&c->pending) >= self->client_max_pending) {
        service(self);
        if (client_by_id(self, id) != c)
            return FALSE;
        if (g_queue_get_length(&c->pending) < self->client_max_pending)
            break;
        if (!wait_for_io(self, GST_MSECOND) &&
            (*ret = gst_base_sink_wait_preroll(GST_BASE_SINK(self))) != GST_FLOW_OK)
            return FALSE;
    }
    return TRUE;
}

/* Sends one buffer to one client. Takes buf; *sent says whether the client got it (it may
 * have gone away instead); then we hold buf until the client settles it. */
static GstFlowReturn send_to(GstVarslotSink *self, Client *c, GstBuffer *buf, gboolean *sent)
{
    vsg_message m;
    GstFlowReturn ret = GST_FLOW_OK;
    *sent = FALSE;
    if (!wait_for_room(self, c, &ret)) {
        gst_buffer_unref(buf);
        return ret;
    }
    describe(self, buf, &m);
    ret = send_waiting(self, c, &m, sent);
    if (!*sent) {
        gst_buffer_unref(buf);
        return ret;
    }
    PendingBuffer *p = g_new0(PendingBuffer, 1);
    p->seq = self->seq;
    p->buffer = buf;
    if (g_queue_is_empty(&c->pending))
        c->progress_us = g_get_monotonic_time(); /* the clock starts now */
    g_queue_push_tail(&c->pending, p);
    return ret;
}

static GstFlowReturn wait_for_client(GstVarslotSink *self)
{
    if (!ready_clients(self))
        service(self); /* a client may be knocking, or its greeting reply waiting */
    while (!ready_clients(self)) {
        if (!self->wait_for_connection)
            return GST_FLOW_CUSTOM_SUCCESS; /* nobody to send to: drop */
        if (!wait_for_io(self, GST_CLOCK_TIME_NONE)) {
            GstFlowReturn ret = gst_base_sink_wait_preroll(GST_BASE_SINK(self));
            if (ret != GST_FLOW_OK)
                return ret;
        }
        service(self);
    }
    return GST_FLOW_OK;
}

static GstFlowReturn render(GstBaseSink *bsink, GstBuffer *buf)
{
    GstVarslotSink *self = GST_VARSLOT_SINK(bsink);
    if (!self->segment && !ensure_segment(self, self->caps))
        return GST_FLOW_ERROR;
    /* Send first, look after: a frame's latency should not include accepting and acks. */
    GstFlowReturn ret = wait_for_client(self);
    if (ret == GST_FLOW_CUSTOM_SUCCESS) {
        COUNT(dropped);
        return GST_FLOW_OK;
    }
    if (ret != GST_FLOW_OK)
        return ret;
    /* The first ready client gets the buffer's own slots when they can be handed over. */
    GstBuffer *first;
    if (shareable(self, buf)) {
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
    }
    self->seq++;
    /* Clients can go away under any wait below, so go by a snapshot and check each is still
     * there. The first client gets the original slots, the others copies, all made before the
     * original is sent: once sent, its client may take, free and reuse those slots at once. */
    GArray *targets = client_ids(self, TRUE);
    GPtrArray *outs = g_ptr_array_new_with_free_func((GDestroyNotify)gst_buffer_unref);
    g_ptr_array_add(outs, first);
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
    gboolean given = FALSE;
    for (guint i = 0; i < targets->len && ret == GST_FLOW_OK; i++) {
        Client *c = client_by_id(self, g_array_index(targets, guint64, i));
        if (!c)
            continue; /* its buffer is dropped with outs */
        gboolean sent;
        ret = send_to(self, c, gst_buffer_ref(g_ptr_array_index(outs, i)), &sent);
        given |= sent;
    }
    g_ptr_array_free(outs, TRUE);
    g_array_free(targets, TRUE);
    if (ret == GST_FLOW_OK)
        given ? COUNT(buffers_sent) : COUNT(dropped); /* every client went away meanwhile */
    service_now_and_then(self);
    return ret;
}

/* ---- allocation, caps, events ---- */

static gboolean propose_allocation(GstBaseSink *bsink, GstQuery *query)
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

static gboolean set_caps(GstBaseSink *bsink, GstCaps *caps)
{
    GstVarslotSink *self = GST_VARSLOT_SINK(bsink);
    if (!ensure_segment(self, caps))
        return FALSE;
    gst_caps_replace(&self->caps, caps);
    for (GList *l = self->clients; l; l = l->next)
        send_caps(self, l->data);
    return TRUE;
}

/* EOS reaches every client even behind a full socket (small buffers at a high rate fill it):
 * a consumer that missed it would see the producer vanish instead. */
static void broadcast_eos(GstVarslotSink *self)
{
    vsg_message m;
    vsg_init_header(&m.h, VSG_EOS, sizeof m.h);
    GArray *targets = client_ids(self, FALSE); /* clients may come and go while we wait */
    for (guint i = 0; i < targets->len; i++) {
        Client *c = client_by_id(self, g_array_index(targets, guint64, i));
        gboolean sent;
        if (c && send_waiting(self, c, &m, &sent) != GST_FLOW_OK)
            break; /* flushing */
    }
    g_array_free(targets, TRUE);
}

static gboolean anything_pending(GstVarslotSink *self)
{
    for (GList *l = self->clients; l; l = l->next)
        if (!g_queue_is_empty(&((Client *)l->data)->pending))
            return TRUE;
    return FALSE;
}

/* At EOS every sent buffer must reach its client before we may stop: stopping releases the
 * slots of whatever was not taken yet. Clients that go away end the wait for their part. */
static void drain_clients(GstVarslotSink *self)
{
    service(self);
    /* A client takes by the slot words, not by a word on its socket, and a stuck one says
     * nothing at all: look again every few milliseconds (service() drops it in time). */
    while (anything_pending(self) && wait_for_io(self, 5 * GST_MSECOND))
        service(self);
}

static gboolean event(GstBaseSink *bsink, GstEvent *ev)
{
    GstVarslotSink *self = GST_VARSLOT_SINK(bsink);
    if (GST_EVENT_TYPE(ev) == GST_EVENT_EOS && self->poll) {
        broadcast_eos(self);
        drain_clients(self);
    }
    return GST_BASE_SINK_CLASS(gst_varslot_sink_parent_class)->event(bsink, ev);
}

/* ---- lifecycle ---- */

static gboolean start(GstBaseSink *bsink)
{
    GstVarslotSink *self = GST_VARSLOT_SINK(bsink);
    GError *err = NULL;
    self->listen_fd = vsg_listen(self->socket_path, &err);
    if (self->listen_fd < 0) {
        GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ_WRITE, ("Cannot listen for varslotsrc"),
                          ("%s", err->message));
        g_clear_error(&err);
        return FALSE;
    }
    self->poll = gst_poll_new(TRUE);
    gst_poll_fd_init(&self->listen_pfd);
    self->listen_pfd.fd = self->listen_fd;
    gst_poll_add_fd(self->poll, &self->listen_pfd);
    gst_poll_fd_ctl_read(self->poll, &self->listen_pfd, TRUE);
    self->seq = 0;
    return TRUE;
}

static gboolean stop(GstBaseSink *bsink)
{
    GstVarslotSink *self = GST_VARSLOT_SINK(bsink);
    GST_INFO_OBJECT(self, "sent %" G_GUINT64_FORMAT " buffers, copied %" G_GUINT64_FORMAT
                    ", fan-out copies %" G_GUINT64_FORMAT ", dropped %" G_GUINT64_FORMAT,
                    READ_COUNT(buffers_sent), READ_COUNT(copied_buffers), READ_COUNT(fanout_copies),
                    READ_COUNT(dropped));
    if (self->poll)
        service(self); /* acks already here release their buffers as given away, not freed */
    while (self->clients)
        client_remove(self, self->clients->data, "stopping");
    if (self->listen_fd >= 0) {
        close(self->listen_fd);
        unlink(self->socket_path);
        self->listen_fd = -1;
    }
    g_clear_pointer(&self->poll, gst_poll_free);
    gst_clear_caps(&self->caps);
    GST_OBJECT_LOCK(self);
    GstAllocator *allocator = g_steal_pointer(&self->allocator);
    GST_OBJECT_UNLOCK(self);
    gst_clear_object(&allocator);
    g_clear_pointer(&self->segment, gst_varslot_segment_unref);
    return TRUE;
}

static gboolean unlock(GstBaseSink *bsink)
{
    GstVarslotSink *self = GST_VARSLOT_SINK(bsink);
    if (self->poll)
        gst_poll_set_flushing(self->poll, TRUE);
    return TRUE;
}

static gboolean unlock_stop(GstBaseSink *bsink)
{
    GstVarslotSink *self = GST_VARSLOT_SINK(bsink);
    if (self->poll)
        gst_poll_set_flushing(self->poll, FALSE);
    return TRUE;
}

/* ---- properties ---- */

static void set_property(GObject *object, guint id, const GValue *value, GParamSpec *pspec)
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
    case PROP_CLIENT_TIMEOUT: self->client_timeout_ms = g_value_get_uint(value); break;
    case PROP_CLIENT_MAX_PENDING: self->client_max_pending = g_value_get_uint(value); break;
    case PROP_MAX_CLIENTS: self->max_clients = g_value_get_uint(value); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
    GST_OBJECT_UNLOCK(self);
}

static void get_property(GObject *object, guint id, GValue *value, GParamSpec *pspec)
{
    GstVarslotSink *self = GST_VARSLOT_SINK(object);
    GST_OBJECT_LOCK(self);
    switch (id) {
    case PROP_SOCKET_PATH: g_value_set_string(value, self->socket_path); break;
    case PROP_SEGMENT: g_value_set_string(value, self->segment_name); break;
    case PROP_WAIT_FOR_CONNECTION: g_value_set_boolean(value, self->wait_for_connection); break;
    case PROP_CLIENT_TIMEOUT: g_value_set_uint(value, self->client_timeout_ms); break;
    case PROP_CLIENT_MAX_PENDING: g_value_set_uint(value, self->client_max_pending); break;
    case PROP_MAX_CLIENTS: g_value_set_uint(value, self->max_clients); break;
    case PROP_SKIPPED: g_value_set_uint64(value, READ_COUNT(skipped)); break;
    case PROP_CLIENTS_DROPPED: g_value_set_uint64(value, READ_COUNT(clients_dropped)); break;
    case PROP_BUFFERS_SENT: g_value_set_uint64(value, READ_COUNT(buffers_sent)); break;
    case PROP_COPIED_BUFFERS: g_value_set_uint64(value, READ_COUNT(copied_buffers)); break;
    case PROP_FANOUT_COPIES: g_value_set_uint64(value, READ_COUNT(fanout_copies)); break;
    case PROP_DROPPED: g_value_set_uint64(value, READ_COUNT(dropped)); break;
    case PROP_CLIENTS: g_value_set_uint(value, (guint)g_atomic_int_get(&self->n_clients)); break;
    case PROP_FALLBACKS:
        g_value_set_uint64(value, self->allocator ? gst_varslot_allocator_fallbacks(self->allocator) : 0);
        break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
    GST_OBJECT_UNLOCK(self);
}

static void finalize(GObject *object)
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
    gobject->set_property = set_property;
    gobject->get_property = get_property;
    gobject->finalize = finalize;
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
    g_object_class_install_property(gobject, PROP_SKIPPED,
        counter("buffers-skipped", "Buffers some client did not get because no slot came free "
                                   "for its copy within client-timeout"));
    g_object_class_install_property(gobject, PROP_CLIENTS_DROPPED,
        counter("clients-dropped", "Clients disconnected for keeping the sink waiting longer than "
                                   "client-timeout"));
    g_object_class_install_property(gobject, PROP_BUFFERS_SENT,
                                    counter("buffers-sent", "Buffers sent to at least one client"));
    g_object_class_install_property(gobject, PROP_COPIED_BUFFERS,
        counter("copied-buffers", "Buffers copied into a slot because their memory could not be "
                                  "handed over (not from our pool, shared, or referenced elsewhere)"));
    g_object_class_install_property(gobject, PROP_FANOUT_COPIES,
        counter("fanout-copies", "Copies made for the second and further clients"));
    g_object_class_install_property(gobject, PROP_DROPPED,
        counter("dropped", "Buffers dropped because no client was connected"));
    g_object_class_install_property(gobject, PROP_FALLBACKS,
        counter("fallbacks", "Allocations that found no free slot in time and used system memory"));
    g_object_class_install_property(gobject, PROP_CLIENTS,
        g_param_spec_uint("clients", "Clients", "Connected varslotsrc elements", 0, G_MAXUINT, 0,
                          G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));
    base->start = start;
    base->stop = stop;
    base->render = render;
    base->set_caps = set_caps;
    base->propose_allocation = propose_allocation;
    base->event = event;
    base->unlock = unlock;
    base->unlock_stop = unlock_stop;
    gst_element_class_add_static_pad_template(GST_ELEMENT_CLASS(klass), &sink_template);
    gst_element_class_set_static_metadata(GST_ELEMENT_CLASS(klass), "varslot sink", "Sink/Network",
        "Sends buffers to varslotsrc elements in other processes as shared-memory slots, without "
        "copying", "varslot developers");
}

static void gst_varslot_sink_init(GstVarslotSink *self)
{
    self->listen_fd = -1;
    self->wait_for_connection = TRUE;
    self->client_timeout_ms = DEFAULT_CLIENT_TIMEOUT_MS;
    self->client_max_pending = DEFAULT_CLIENT_MAX_PENDING;
    self->max_clients = DEFAULT_MAX_CLIENTS;
    self->socket_path = g_strdup(VSG_DEFAULT_SOCKET_PATH);
    /* The last sample would keep a reference to every frame: no slot could be handed over. */
    gst_base_sink_set_last_sample_enabled(GST_BASE_SINK(self), FALSE);
    gst_base_sink_set_sync(GST_BASE_SINK(self), FALSE);
}
