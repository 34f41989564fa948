/* varslotsrc: connects to a varslotsink, takes ownership of each buffer's slots as it
 * receives their handles (one CAS each: from then on the producer's death cannot touch
 * them), or, for a buffer the producer shares with several consumers, finds its reference to
 * each slot (released when the buffer is freed), and pushes buffers that wrap the slots in
 * place, read-only. Caps, timestamps,
 * offsets, flags and GstVideoMeta come over the wire. Acks (cumulative, in batches) and
 * refusals are the only things sent back, from the streaming thread, never from a memory's
 * destroy notify.
 * The producer is not trusted: the segment is the file it passed (never one its words name or
 * create), the peer id it claims must be the process at the other end of the socket (checked
 * again before every buffer, so a peer id given up and taken by another process is not
 * stolen from), and a buffer whose video meta or size would send a reader outside the
 * buffer is refused. */
#include "varslotsrc.h"

#include "allocator.h"
#include "protocol.h"
#include "wire.h"

#include <errno.h>
#include <gst/video/video.h>
#include <string.h>
#include <unistd.h>

GST_DEBUG_CATEGORY_EXTERN(gst_varslot_debug);
#define GST_CAT_DEFAULT gst_varslot_debug

struct _GstVarslotSrc {
    GstPushSrc parent;
    /* properties */
    gchar *socket_path;
    gboolean wait_for_producer;
    gboolean trust_owner;
    guint64 buffers_received, buffers_refused; /* atomic */
    /* streaming state */
    int fd;
    GstPoll *poll;
    GstPollFD pfd;
    guint8 sink_peer;         /* the producer: its peer id, as checked against the socket */
    pid_t sink_pid;
    guint64 sink_joined_ns;   /* which join of that peer id */
    GstVarslotSegment *segment;
    GstVideoInfo video;       /* the caps, when they are raw video */
    gboolean have_video;
    GstAllocator *allocator;
    /* Buffers taken but not yet acked: one cumulative ack covers them. The sink learns what
     * we took from the slot words, so acks go out in batches (see ACK_BATCH), and all
     * of them at EOS, on a refusal and at stop. */
    guint64 ack_seq;
    gboolean ack_due;
    guint unacked;
};

enum { PROP_0, PROP_SOCKET_PATH, PROP_IS_LIVE, PROP_WAIT_FOR_PRODUCER, PROP_RECEIVED, PROP_REFUSED,
       PROP_TRUST_OWNER };

static GstStaticPadTemplate src_template =
    GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS_ANY);

G_DEFINE_TYPE(GstVarslotSrc, gst_varslot_src, GST_TYPE_PUSH_SRC)
GST_ELEMENT_REGISTER_DEFINE(varslotsrc, "varslotsrc", GST_RANK_NONE, GST_TYPE_VARSLOT_SRC)

/* ---- connection ---- */


static void disconnect(GstVarslotSrc *self)
{
    if (self->fd >= 0) {
        gst_poll_remove_fd(self->poll, &self->pfd);
        close(self->fd);
        self->fd = -1;
    }
    self->ack_due = FALSE;
    self->unacked = 0;
    self->sink_peer = 0;
}

static gboolean try_connect(GstVarslotSrc *self, GError **err)
{
    self->fd = vsg_connect(self->socket_path, err);
    if (self->fd < 0)
        return FALSE;
    gst_poll_fd_init(&self->pfd);
    self->pfd.fd = self->fd;
    gst_poll_add_fd(self->poll, &self->pfd);
    gst_poll_fd_ctl_read(self->poll, &self->pfd, TRUE);
    return TRUE;
}

/* GST_FLOW_FLUSHING when unlocked. With wait-for-producer, waits (and retries) until a sink
 * answers. */
static GstFlowReturn connect_or_wait(GstVarslotSrc *self)
{
    GError *err = NULL;
    while (!try_connect(self, &err)) {
        if (!self->wait_for_producer) {
            GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ, ("No varslotsink to connect to"),
                              ("%s", err->message));
            g_clear_error(&err);
            return GST_FLOW_ERROR;
        }
        g_clear_error(&err);
        if (gst_poll_wait(self->poll, 100 * GST_MSECOND) < 0 && errno == EBUSY)
            return GST_FLOW_FLUSHING;
    }
    return GST_FLOW_OK;
}

/* Never blocks: 1 sent, 0 the socket is full (the ack stays due and goes out later), -1 the
 * producer is gone. */
static int send_ack(GstVarslotSrc *self, guint64 seq, gboolean taken)
{
    vsg_ack ack;
    memset(&ack, 0, sizeof ack);
    vsg_init_header(&ack.h, VSG_ACK, sizeof ack);
    ack.seq = seq;
    ack.taken = taken;
    return vsg_send(self->fd, (const vsg_message *)&ack);
}

/* A producer that went away needs no ack: the slot words already say what we took. */
static void send_due_ack(GstVarslotSrc *self)
{
    if (self->ack_due && send_ack(self, self->ack_seq, TRUE) != 0) {
        self->ack_due = FALSE;
        self->unacked = 0;
    }
}

/* One ack per buffer would cost both processes a system call per buffer (and the sink a
 * wake-up): at 100,000 small buffers a second that is most of the work. So while buffers
 * keep coming, an ack goes out every ACK_BATCH of them; and whenever we run out of buffers
 * and go to sleep, the due ack goes out first. That one is what a sink with
 * client-max-pending buffers outstanding waits for: our takes change only the slot words,
 * which it cannot sleep on, and without the ack it slept a whole millisecond per
 * client-max-pending buffers (measured: 64x64 GRAY8 at 22,000-29,000 buffers/s). It costs
 * one send per sleep, never one per buffer under load. */
#define ACK_BATCH 32

/* Whether peer id `peer` of our segment is, right now, the join of process pid we checked
 * (joined_ns 0: any join of it, which is then recorded); `live`: and holds its liveness lock
 * (two system calls more, so asked at the greeting only: per buffer they were the largest
 * part of taking a buffer, 15-20 us of a 720p frame's 125 us). */
static gboolean peer_is(GstVarslotSrc *self, guint8 peer, pid_t pid, guint64 *joined_ns, gboolean live)
{
    vs_peer_info pi;
    vs_segment *seg = &self->segment->seg;
    if (peer == 0 ||
        (live ? vs_segment_peer_info(seg, peer, &pi) : vs_segment_peer_identity(seg, peer, &pi)) != VS_OK ||
        pi.state != VS_PEER_ALIVE ||
        pi.pid != pid || (live && !pi.live) || (*joined_ns && pi.joined_unix_ns != *joined_ns))
        return FALSE;
    *joined_ns = pi.joined_unix_ns;
    return TRUE;
}

/* The greeting: the producer's segment (its file, passed; closed here) and peer id. */
static gboolean handle_hello(GstVarslotSrc *self, const vsg_hello *hello, int file_fd)
{
    GError *err = NULL;
    pid_t pid;
    uid_t uid;
    g_clear_pointer(&self->segment, gst_varslot_segment_unref);
    gst_clear_object(&self->allocator);
    self->sink_peer = 0;
    if (!vsg_peer_pid(self->fd, &pid, &uid)) {
        close(file_fd);
        GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ_WRITE, ("Cannot tell which process the producer is"),
                          ("SO_PEERCRED: %s", g_strerror(errno)));
        return FALSE;
    }
    if (!g_utf8_validate(hello->segment, -1, NULL)) { /* it would be shown in messages */
        close(file_fd);
        gchar *shown = g_strescape(hello->segment, NULL);
        GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ_WRITE, ("The producer named no valid segment"),
                          ("segment name \"%s\" is not UTF-8", shown));
        g_free(shown);
        return FALSE;
    }
    self->segment = gst_varslot_segment_open_consumer(hello->segment, file_fd, self->trust_owner, &err);
    close(file_fd);
    if (!self->segment) {
        GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ_WRITE, ("Cannot attach the producer's segment"),
                          ("%s", err->message));
        g_clear_error(&err);
        return FALSE;
    }
    guint64 joined = 0;
    if (!peer_is(self, hello->peer, pid, &joined, TRUE)) {
        GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ_WRITE, ("The producer is not who it says it is"),
                          ("it claims peer %u of segment %s, which is not a live peer joined by "
                           "process %d at the other end of the socket", hello->peer, hello->segment,
                           (int)pid));
        g_clear_pointer(&self->segment, gst_varslot_segment_unref);
        return FALSE;
    }
    self->allocator = gst_varslot_allocator_new(self->segment);
    self->sink_peer = hello->peer;
    self->sink_pid = pid;
    self->sink_joined_ns = joined;
    vsg_message reply;
    memset(&reply, 0, sizeof reply);
    vsg_init_header(&reply.h, VSG_HELLO_REPLY, sizeof reply.hello_reply);
    reply.hello_reply.peer = self->segment->peer;
    vsg_send(self->fd, &reply); /* first packet on a fresh socket: there is room */
    GST_INFO_OBJECT(self, "joined segment %s as peer %u; producer is peer %u (pid %d)", hello->segment,
                    self->segment->peer, hello->peer, (int)pid);
    return TRUE;
}

static gboolean handle_caps(GstVarslotSrc *self, const vsg_caps *msg)
{
    GstCaps *caps = g_utf8_validate(msg->caps, -1, NULL) && vsg_caps_text_ok(msg->caps)
                        ? gst_caps_from_string(msg->caps)
                        : NULL;
    if (!caps || !gst_caps_is_fixed(caps)) { /* what a stream's caps must be, or a g_critical */
        gchar *shown = g_strescape(msg->caps, NULL);
        GST_ELEMENT_ERROR(self, STREAM, FORMAT, ("Producer sent caps that are not one fixed format"),
                          ("%s", shown));
        g_free(shown);
        if (caps)
            gst_caps_unref(caps);
        return FALSE;
    }
    const char *bad = vsg_check_caps(caps);
    if (bad) { /* downstream elements trust caps: their math asserts on what they cannot be */
        gchar *shown = g_strescape(msg->caps, NULL);
        GST_ELEMENT_ERROR(self, STREAM, FORMAT, ("Producer sent caps that cannot be"), ("%s: %s", bad, shown));
        g_free(shown);
        gst_caps_unref(caps);
        return FALSE;
    }
    gboolean ok = gst_base_src_set_caps(GST_BASE_SRC(self), caps);
    self->have_video = ok && gst_video_info_from_caps(&self->video, caps);
    gst_caps_unref(caps);
    if (!ok)
        GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("Downstream refused the producer's caps"),
                          ("%s", msg->caps));
    return ok;
}

/* ---- buffers ---- */

/* Whether memory i of a message names the same slot as an earlier one. */
static gboolean repeats_a_slot(const vsg_buffer *b, guint i)
{
    for (guint j = 0; j < i; j++)
        if (b->memories[j].handle == b->memories[i].handle)
            return TRUE;
    return FALSE;
}

/* Our references to a shared buffer's slots from memory `from` on, released unread (one per
 * slot: a producer that names a slot twice gave us one reference to it). */
static void release_shared(GstVarslotSrc *self, const vsg_buffer *b, guint from)
{
    const vs_pool *pool = gst_varslot_segment_pool(self->segment);
    for (guint i = from; b->shared && i < b->n_memories && i < VSG_MAX_MEMORIES; i++)
        if (!repeats_a_slot(b, i))
            vs_pool_release(pool, vs_slot_ref_unpack(b->memories[i].handle), self->segment->peer);
}

/* Metadata and video meta onto buf, whose memories are the message's: the reason it cannot
 * be pushed, or NULL. */
static const char *finish_buffer(GstVarslotSrc *self, const vsg_buffer *b, GstBuffer *buf)
{
    vsg_buffer_read_metadata(b, buf);
    gsize sizes[VSG_MAX_MEMORIES];
    for (guint i = 0; i < b->n_memories; i++)
        sizes[i] = gst_buffer_peek_memory(buf, i)->size;
    const char *bad = vsg_check_buffer_video(&b->video, sizes, b->n_memories, self->have_video ? &self->video : NULL);
    if (!bad)
        vsg_buffer_read_video_meta(b, buf);
    return bad;
}

/* Takes every slot of the message; on any failure frees what it had taken (the memories do)
 * and refuses the whole buffer: the sink sees those slots are no longer its own. */
static GstBuffer *take_buffer(GstVarslotSrc *self, const vsg_buffer *b)
{
    const vs_pool *pool = gst_varslot_segment_pool(self->segment);
    if (!peer_is(self, self->sink_peer, self->sink_pid, &self->sink_joined_ns, FALSE)) {
        GST_WARNING_OBJECT(self, "cannot take buffer %" G_GUINT64_FORMAT ": peer %u is no longer the "
                           "producer we greeted", b->seq, self->sink_peer);
        return NULL;
    }
    GstBuffer *buf = gst_buffer_new();
    for (guint i = 0; !b->shared && i < b->n_memories; i++) {
        vs_slot_ref ref = vs_slot_ref_unpack(b->memories[i].handle);
        int rc = vs_pool_transfer(pool, ref, self->sink_peer, self->segment->peer);
        GstMemory *mem = rc == VS_OK ? gst_varslot_memory_wrap_owned(self->allocator, ref,
                                                                     b->memories[i].offset,
                                                                     b->memories[i].size)
                                     : NULL;
        if (!mem) {
            if (rc == VS_OK) /* a bad offset/size: the slot is ours, give it back */
                vs_pool_free_owned(pool, ref, self->segment->peer);
            GST_WARNING_OBJECT(self, "cannot take buffer %" G_GUINT64_FORMAT ": %s", b->seq,
                               rc == VS_OK ? "offset or size outside its slot" : vs_strerror(rc));
            gst_buffer_unref(buf);
            return NULL;
        }
        gst_buffer_append_memory(buf, mem);
    }
    const char *bad = finish_buffer(self, b, buf);
    if (bad) {
        GST_WARNING_OBJECT(self, "refusing buffer %" G_GUINT64_FORMAT ": %s", b->seq, bad);
        gst_buffer_unref(buf); /* its slots are ours now: freed */
        return NULL;
    }
    return buf;
}

/* ---- shared buffers ----
 * The producer gave us a reference to each slot before it sent the message; we take the
 * buffer by acking it, at once. A producer that drops us, or stops, shuts our socket for
 * reading first (our ack then fails) and releases the references of what we never acked: so
 * what we did not ack is the producer's to release, never ours. (We cannot tell a producer
 * that released them and left from one that died first; releasing them twice would drop
 * another reader's reference when two sources of this process share a peer id. A producer
 * that crashes leaves them with us until we leave: at most client-max-pending slots.) */

/* Makes our references a buffer, read-only: *wrapped memories of it (all of them, and NULL
 * returned as the reason, when it is whole and checked). */
static const char *wrap_shared(GstVarslotSrc *self, const vsg_buffer *b, GstBuffer **out, guint *wrapped)
{
    GstBuffer *buf = *out = gst_buffer_new();
    *wrapped = 0;
    if (!peer_is(self, self->sink_peer, self->sink_pid, &self->sink_joined_ns, FALSE))
        return "the producer's peer id is no longer the process we greeted";
    for (guint i = 0; i < b->n_memories; i++, (*wrapped)++) {
        if (repeats_a_slot(b, i))
            return "it names one slot twice";
        GstMemory *mem = gst_varslot_memory_wrap_shared(self->allocator, vs_slot_ref_unpack(b->memories[i].handle),
                                                        b->memories[i].offset, b->memories[i].size);
        if (!mem)
            return "a slot is not shared with us, or the window lies outside it";
        gst_buffer_append_memory(buf, mem);
    }
    return finish_buffer(self, b, buf);
}

/* Acks buffer seq now, waiting for room in the socket: 1 sent, -1 the producer is gone or
 * shut us out, -2 flushing. */
static int ack_now(GstVarslotSrc *self, guint64 seq, gboolean taken)
{
    for (;;) {
        int rc = send_ack(self, seq, taken);
        if (rc == 1) {
            self->ack_due = FALSE; /* cumulative: it covers what we took before */
            self->unacked = 0;
        }
        if (rc != 0)
            return rc;
        gst_poll_fd_ctl_write(self->poll, &self->pfd, TRUE);
        int w = gst_poll_wait(self->poll, 100 * GST_MSECOND);
        gst_poll_fd_ctl_write(self->poll, &self->pfd, FALSE);
        if (w < 0 && errno == EBUSY)
            return -2;
    }
}

/* A shared buffer message: *out the buffer to push, or NULL (refused: counted). Not
 * GST_FLOW_OK: flushing, or the producer went away (the caller handles that). */
static GstFlowReturn take_shared(GstVarslotSrc *self, const vsg_buffer *b, GstBuffer **out)
{
    GstBuffer *buf;
    guint wrapped;
    const char *bad = wrap_shared(self, b, &buf, &wrapped);
    if (bad)
        GST_WARNING_OBJECT(self, "refusing shared buffer %" G_GUINT64_FORMAT ": %s", b->seq, bad);
    if (bad)
        send_due_ack(self); /* what we took before it, then the refusal */
    int rc = ack_now(self, b->seq, bad == NULL);
    *out = NULL;
    if (rc == 1 && !bad) {
        *out = buf;
        return GST_FLOW_OK;
    }
    if (rc != 1) /* not acked: the producer's to release (below) */
        for (guint i = 0; i < gst_buffer_n_memory(buf); i++)
            gst_varslot_memory_forget_shared(gst_buffer_peek_memory(buf, i));
    gst_buffer_unref(buf);
    if (rc == 1)
        release_shared(self, b, wrapped);
    if (rc == 1) {
        __atomic_fetch_add(&self->buffers_refused, 1, __ATOMIC_RELAXED);
        return GST_FLOW_OK;
    }
    return rc == -2 ? GST_FLOW_FLUSHING : GST_FLOW_CUSTOM_ERROR;
}

/* ---- create ---- */

static GstFlowReturn producer_gone(GstVarslotSrc *self, const char *why)
{
    disconnect(self);
    if (self->wait_for_producer) {
        GST_WARNING_OBJECT(self, "producer went away (%s); waiting for it", why);
        return connect_or_wait(self);
    }
    GST_ELEMENT_ERROR(self, RESOURCE, READ, ("The varslotsink went away"), ("%s", why));
    return GST_FLOW_ERROR;
}

static GstFlowReturn gst_varslot_src_create(GstPushSrc *psrc, GstBuffer **out)
{
    GstVarslotSrc *self = GST_VARSLOT_SRC(psrc);
    GstFlowReturn ret;
    if (self->fd < 0 && (ret = connect_or_wait(self)) != GST_FLOW_OK)
        return ret;
    vsg_message m;
    for (;;) {
        if (self->unacked >= ACK_BATCH)
            send_due_ack(self); /* the buffers we returned have been pushed by now */
        const char *why = NULL;
        int passed = -1;
        int rc = vsg_recv(self->fd, &m, &passed, &why);
        if (rc == 0) {
            send_due_ack(self); /* idle: out of the way of a buffer's latency */
            gst_poll_fd_ctl_write(self->poll, &self->pfd, self->ack_due); /* the socket was full */
            if (gst_poll_wait(self->poll, GST_CLOCK_TIME_NONE) < 0 && errno == EBUSY)
                return GST_FLOW_FLUSHING;
            continue;
        }
        if (rc < 0) {
            if ((ret = producer_gone(self, why)) != GST_FLOW_OK)
                return ret;
            continue;
        }
        switch (m.h.type) {
        case VSG_HELLO:
            if (!handle_hello(self, &m.hello, passed))
                return GST_FLOW_ERROR;
            break;
        case VSG_CAPS:
            if (!handle_caps(self, &m.caps))
                return GST_FLOW_NOT_NEGOTIATED;
            break;
        case VSG_EOS:
            /* A producer still draining may be waiting for our acks: send them even if it
             * takes a moment for room in the socket (one that has gone needs none). */
            while (self->ack_due) {
                send_due_ack(self);
                gst_poll_fd_ctl_write(self->poll, &self->pfd, self->ack_due);
                if (self->ack_due && gst_poll_wait(self->poll, 100 * GST_MSECOND) < 0 && errno == EBUSY)
                    return GST_FLOW_FLUSHING;
            }
            return GST_FLOW_EOS;
        case VSG_BUFFER: {
            if (!self->segment) {
                ret = producer_gone(self, "buffer before greeting");
                if (ret != GST_FLOW_OK)
                    return ret;
                break;
            }
            if (m.buffer.shared) {
                GstBuffer *buf;
                ret = take_shared(self, &m.buffer, &buf);
                if (ret == GST_FLOW_CUSTOM_ERROR && (ret = producer_gone(self, "it shut us out")) == GST_FLOW_OK)
                    break;
                if (ret != GST_FLOW_OK)
                    return ret;
                if (!buf)
                    break;
                __atomic_fetch_add(&self->buffers_received, 1, __ATOMIC_RELAXED);
                *out = buf;
                return GST_FLOW_OK;
            }
            GstBuffer *buf = take_buffer(self, &m.buffer);
            if (!buf) {
                /* Ack what was taken before it, then refuse this one by its number. */
                send_due_ack(self);
                if (send_ack(self, m.buffer.seq, FALSE) != 1)
                    GST_WARNING_OBJECT(self, "cannot tell the producer about refused buffer %"
                                       G_GUINT64_FORMAT, m.buffer.seq);
                __atomic_fetch_add(&self->buffers_refused, 1, __ATOMIC_RELAXED);
                break;
            }
            self->ack_seq = m.buffer.seq;
            self->ack_due = TRUE;
            self->unacked++;
            __atomic_fetch_add(&self->buffers_received, 1, __ATOMIC_RELAXED);
            *out = buf;
            return GST_FLOW_OK;
        }
        default:
            if ((ret = producer_gone(self, "unexpected message")) != GST_FLOW_OK)
                return ret;
        }
    }
}

/* Caps come from the producer, in create(): nothing to negotiate before that. */
static gboolean gst_varslot_src_negotiate(GstBaseSrc *bsrc)
{
    (void)bsrc;
    return TRUE;
}

/* ---- lifecycle ---- */

static gboolean gst_varslot_src_start(GstBaseSrc *bsrc)
{
    GstVarslotSrc *self = GST_VARSLOT_SRC(bsrc);
    self->poll = gst_poll_new(TRUE);
    GError *err = NULL;
    /* Connect now when we can, so a sink waiting for a connection starts sending. */
    if (!try_connect(self, &err) && !self->wait_for_producer) {
        GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ, ("No varslotsink to connect to"),
                          ("%s", err->message));
        g_clear_error(&err);
        return FALSE;
    }
    g_clear_error(&err);
    return TRUE;
}

static gboolean gst_varslot_src_stop(GstBaseSrc *bsrc)
{
    GstVarslotSrc *self = GST_VARSLOT_SRC(bsrc);
    if (self->fd >= 0)
        send_due_ack(self); /* so the producer knows which slots are ours now */
    disconnect(self);
    g_clear_pointer(&self->poll, gst_poll_free);
    gst_clear_object(&self->allocator);
    /* Buffers still downstream keep the segment (through their memories) until freed. */
    g_clear_pointer(&self->segment, gst_varslot_segment_unref);
    return TRUE;
}

static gboolean gst_varslot_src_unlock(GstBaseSrc *bsrc)
{
    GstVarslotSrc *self = GST_VARSLOT_SRC(bsrc);
    if (self->poll)
        gst_poll_set_flushing(self->poll, TRUE);
    return TRUE;
}

static gboolean gst_varslot_src_unlock_stop(GstBaseSrc *bsrc)
{
    GstVarslotSrc *self = GST_VARSLOT_SRC(bsrc);
    if (self->poll)
        gst_poll_set_flushing(self->poll, FALSE);
    return TRUE;
}

/* ---- properties ---- */

static void gst_varslot_src_set_property(GObject *object, guint id, const GValue *value, GParamSpec *pspec)
{
    GstVarslotSrc *self = GST_VARSLOT_SRC(object);
    switch (id) {
    case PROP_SOCKET_PATH:
        GST_OBJECT_LOCK(self);
        g_free(self->socket_path);
        self->socket_path = g_value_dup_string(value);
        GST_OBJECT_UNLOCK(self);
        break;
    case PROP_IS_LIVE: gst_base_src_set_live(GST_BASE_SRC(self), g_value_get_boolean(value)); break;
    case PROP_WAIT_FOR_PRODUCER: self->wait_for_producer = g_value_get_boolean(value); break;
    case PROP_TRUST_OWNER: self->trust_owner = g_value_get_boolean(value); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void gst_varslot_src_get_property(GObject *object, guint id, GValue *value, GParamSpec *pspec)
{
    GstVarslotSrc *self = GST_VARSLOT_SRC(object);
    switch (id) {
    case PROP_SOCKET_PATH:
        GST_OBJECT_LOCK(self);
        g_value_set_string(value, self->socket_path);
        GST_OBJECT_UNLOCK(self);
        break;
    case PROP_IS_LIVE: g_value_set_boolean(value, gst_base_src_is_live(GST_BASE_SRC(self))); break;
    case PROP_WAIT_FOR_PRODUCER: g_value_set_boolean(value, self->wait_for_producer); break;
    case PROP_TRUST_OWNER: g_value_set_boolean(value, self->trust_owner); break;
    case PROP_RECEIVED:
        g_value_set_uint64(value, __atomic_load_n(&self->buffers_received, __ATOMIC_RELAXED));
        break;
    case PROP_REFUSED:
        g_value_set_uint64(value, __atomic_load_n(&self->buffers_refused, __ATOMIC_RELAXED));
        break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void gst_varslot_src_finalize(GObject *object)
{
    g_free(GST_VARSLOT_SRC(object)->socket_path);
    G_OBJECT_CLASS(gst_varslot_src_parent_class)->finalize(object);
}

static void gst_varslot_src_class_init(GstVarslotSrcClass *klass)
{
    GObjectClass *gobject = G_OBJECT_CLASS(klass);
    GstBaseSrcClass *base = GST_BASE_SRC_CLASS(klass);
    gobject->set_property = GST_DEBUG_FUNCPTR(gst_varslot_src_set_property);
    gobject->get_property = GST_DEBUG_FUNCPTR(gst_varslot_src_get_property);
    gobject->finalize = GST_DEBUG_FUNCPTR(gst_varslot_src_finalize);
    const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY;
    g_object_class_install_property(gobject, PROP_SOCKET_PATH,
        g_param_spec_string("socket-path", "Socket path", "Unix socket of the varslotsink", VSG_DEFAULT_SOCKET_PATH, rw));
    g_object_class_install_property(gobject, PROP_IS_LIVE,
        g_param_spec_boolean("is-live", "Is live", "Act as a live source", FALSE, rw));
    g_object_class_install_property(gobject, PROP_WAIT_FOR_PRODUCER,
        g_param_spec_boolean("wait-for-producer", "Wait for producer",
                             "Wait (and reconnect) while no varslotsink answers, instead of "
                             "posting an error", FALSE, rw));
    g_object_class_install_property(gobject, PROP_TRUST_OWNER,
        g_param_spec_boolean("trust-owner", "Trust owner",
                             "Accept a producer's segment owned by another user when it is shared "
                             "through one of this process's groups (its members become trusted peers)",
                             FALSE, rw));
    g_object_class_install_property(gobject, PROP_RECEIVED,
        g_param_spec_uint64("buffers-received", "Buffers received", "Buffers taken from the producer",
                            0, G_MAXUINT64, 0, G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));
    g_object_class_install_property(gobject, PROP_REFUSED,
        g_param_spec_uint64("buffers-refused", "Buffers refused",
                            "Buffers whose slots could not be taken (the producer died or they "
                            "were reclaimed first)", 0, G_MAXUINT64, 0,
                            G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));
    base->start = GST_DEBUG_FUNCPTR(gst_varslot_src_start);
    base->stop = GST_DEBUG_FUNCPTR(gst_varslot_src_stop);
    base->unlock = GST_DEBUG_FUNCPTR(gst_varslot_src_unlock);
    base->unlock_stop = GST_DEBUG_FUNCPTR(gst_varslot_src_unlock_stop);
    base->negotiate = GST_DEBUG_FUNCPTR(gst_varslot_src_negotiate);
    GST_PUSH_SRC_CLASS(klass)->create = GST_DEBUG_FUNCPTR(gst_varslot_src_create);
    gst_element_class_add_static_pad_template(GST_ELEMENT_CLASS(klass), &src_template);
    gst_element_class_set_static_metadata(GST_ELEMENT_CLASS(klass), "varslot source", "Source/Network",
        "Receives buffers from a varslotsink in another process, in place in shared memory",
        "varslot developers");
}

static void gst_varslot_src_init(GstVarslotSrc *self)
{
    self->fd = -1;
    self->socket_path = g_strdup(VSG_DEFAULT_SOCKET_PATH);
    gst_base_src_set_format(GST_BASE_SRC(self), GST_FORMAT_TIME);
}
