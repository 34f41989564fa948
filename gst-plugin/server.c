/* varslotsink's server (see server.h). A buffer is held until its client took the slots
 * (the slot words say so; the client's acks, in batches, confirm it and carry refusals), and
 * released at once if the client goes away. Consumers are not trusted to keep up: one may
 * hold at most client-max-pending buffers it has not taken (the sink waits for it, which
 * slows the stream for all), and one that takes none of them, or leaves its socket full, for
 * client-timeout is disconnected and its buffers settled: a slow consumer is waited for, a
 * stuck one is not. No lock is held across a wait. */
#include "server.h"

#include "allocator.h"
#include "protocol.h"
#include "wire.h"

#include <errno.h>
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
    /* A shared buffer instead (buffer NULL): the slots the client holds a reference to, to
     * release for it if it goes without acking. We keep no reference of our own: the client
     * has its own from the share on, and ours goes when this process is done with the
     * buffer (an idle sink must not pin the last frame's slots). */
    guint n_shared;
    vs_slot_ref shared[VSG_MAX_MEMORIES];
} PendingBuffer;

struct _VsgServer {
    GstElement *element; /* not a reference: the element owns the server */
    const VsgServerLimits *limits;
    VsgServerCounts *counts;
    VsgServerFlushed flushed;
    gpointer flushed_data;
    gchar *socket_path;
    int listen_fd;
    GstPoll *poll;
    GstPollFD listen_pfd;
    GList *clients;
    GstVarslotSegment *segment;
    GstCaps *caps;
    guint64 next_client_id;
    gint64 accept_paused_until; /* out of descriptors: the listening socket rests till then */
    gint64 last_service; /* g_get_monotonic_time() of the last look at the sockets */
};

#define ACCEPT_PAUSE_US (100 * 1000)

/* ---- clients ---- */

static void send_caps(VsgServer *self, Client *c);

/* The ids of the clients (only those that answered our greeting: ready_only). */
static GArray *client_ids(VsgServer *self, gboolean ready_only)
{
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(guint64));
    for (GList *l = self->clients; l; l = l->next)
        if (!ready_only || ((Client *)l->data)->peer)
            g_array_append_val(ids, ((Client *)l->data)->id);
    return ids;
}

/* The client with that id, if it is still connected. */
static Client *client_by_id(VsgServer *self, guint64 id)
{
    for (GList *l = self->clients; l; l = l->next)
        if (((Client *)l->data)->id == id)
            return l->data;
    return NULL;
}

static void drop_pending(PendingBuffer *p)
{
    if (p->buffer)
        gst_buffer_unref(p->buffer);
    g_free(p);
}

/* We stop holding a sent buffer (the client acked, refused or went away). Acks can be late,
 * batched or lost, so the slot words say what the client took, memory by memory: those slots
 * are not ours to free or reuse any more; the others come back to us. */
static void settle(PendingBuffer *p)
{
    gboolean any = FALSE;
    for (guint i = 0; p->buffer && i < gst_buffer_n_memory(p->buffer); i++) {
        GstMemory *mem = gst_buffer_peek_memory(p->buffer, i);
        if (gst_is_varslot_memory(mem) && !gst_varslot_memory_is_shared(mem) &&
            !gst_varslot_memory_still_ours(mem)) {
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
 * client's acks come in large batches and matter for refusals and at EOS. A shared buffer
 * leaves no such trace (the client reads in place, its reference already in the slot's
 * share entry): only the client's ack says it took one. */
static gboolean taken_by_client(const PendingBuffer *p)
{
    gboolean any = FALSE;
    GstBuffer *buf = p->buffer;
    if (p->n_shared)
        return FALSE;
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
    while ((p = g_queue_peek_head(&c->pending)) && taken_by_client(p)) {
        settle(g_queue_pop_head(&c->pending));
        took = TRUE;
    }
    if (took)
        c->progress_us = g_get_monotonic_time();
}

static void handle_ack(VsgServer *self, Client *c, const vsg_ack *ack);

/* Whether any buffer c was sent shared has not been acked. */
static gboolean shared_pending(Client *c)
{
    for (GList *l = c->pending.head; l; l = l->next)
        if (((PendingBuffer *)l->data)->n_shared)
            return TRUE;
    return FALSE;
}

/* The references a client holds to the shared buffers it never took are ours to release:
 * a client takes a shared buffer by acking it, and once we shut its socket for reading its
 * acks fail (EPIPE), so it cannot take one any more; the acks already in the socket are read
 * first. Whatever is left was never read, so releasing it pulls no bytes from under a reader. */
static void revoke_shared(VsgServer *self, Client *c)
{
    if (!c->peer || !shared_pending(c))
        return;
    shutdown(c->fd, SHUT_RD);
    vsg_message m;
    const char *why;
    while (vsg_recv(c->fd, &m, NULL, &why) == 1)
        if (m.h.type == VSG_ACK)
            handle_ack(self, c, &m.ack);
    const vs_pool *pool = gst_varslot_segment_pool(self->segment);
    for (GList *l = c->pending.head; l; l = l->next) {
        const PendingBuffer *p = l->data;
        for (guint i = 0; i < p->n_shared; i++)
            vs_pool_release(pool, p->shared[i], c->peer);
    }
}

static void client_remove(VsgServer *self, Client *c, const char *why)
{
    GST_INFO_OBJECT(self->element, "client (peer %u) gone: %s; releasing %u buffers", c->peer, why,
                    g_queue_get_length(&c->pending));
    revoke_shared(self, c);
    gst_poll_remove_fd(self->poll, &c->pfd);
    close(c->fd);
    g_queue_clear_full(&c->pending, (GDestroyNotify)settle);
    self->clients = g_list_remove(self->clients, c);
    g_atomic_int_add(&self->counts->clients, -1);
    g_free(c);
}

/* Acks are cumulative ("taken" up to seq) and a refusal names one buffer: either way the
 * client is done with every buffer up to seq, and settle() asks the slot words what it took. */
static void handle_ack(VsgServer *self, Client *c, const vsg_ack *ack)
{
    PendingBuffer *p;
    while ((p = g_queue_peek_head(&c->pending)) && p->seq <= ack->seq) {
        if (!ack->taken && p->seq == ack->seq)
            GST_DEBUG_OBJECT(self->element, "client refused buffer %" G_GUINT64_FORMAT, ack->seq);
        settle(g_queue_pop_head(&c->pending));
        c->progress_us = g_get_monotonic_time();
    }
}

/* Whether peer id `peer` of our segment is joined by the process at the other end of fd. */
static gboolean is_peer_of(VsgServer *self, int fd, guint8 peer)
{
    pid_t pid;
    uid_t uid;
    vs_peer_info pi;
    return peer != 0 && vsg_peer_pid(fd, &pid, &uid) &&
           vs_segment_peer_info(&self->segment->seg, peer, &pi) == VS_OK &&
           pi.state == VS_PEER_ALIVE && pi.pid == pid;
}

/* Reads what a client sent; returns FALSE if it had to be dropped. */
static gboolean client_read(VsgServer *self, Client *c)
{
    vsg_message m;
    const char *why = NULL;
    int rc;
    while ((rc = vsg_recv(c->fd, &m, NULL, &why)) == 1) {
        if (m.h.type == VSG_HELLO_REPLY && !c->peer) {
            if (!is_peer_of(self, c->fd, m.hello_reply.peer)) {
                /* Slots are shared with the peer id a client names: one naming another's
                 * would pin slots for a reader that never hears of them. */
                why = "its peer id is not its own process's";
                rc = -1;
                break;
            }
            c->peer = m.hello_reply.peer;
            GST_INFO_OBJECT(self->element, "client joined as peer %u", c->peer);
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

static gboolean evict_a_silent_client(VsgServer *self);

/* Accepts whoever is knocking. Past max-clients a connection takes the place of a client that
 * has not answered its greeting for client-timeout, or is closed at once (the knocker sees it
 * end), so connections nobody serves do not pile up in the backlog; out of
 * descriptors, the listening socket rests a moment (else, readable for ever, it would wake
 * every wait at once). */
static void accept_clients(VsgServer *self)
{
    int fd;
    while ((fd = accept4(self->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0 ||
           errno == EMFILE || errno == ENFILE) {
        if (fd < 0) {
            GST_WARNING_OBJECT(self->element, "cannot accept a client: %s; not listening for %d ms", g_strerror(errno),
                               ACCEPT_PAUSE_US / 1000);
            gst_poll_fd_ctl_read(self->poll, &self->listen_pfd, FALSE);
            self->accept_paused_until = g_get_monotonic_time() + ACCEPT_PAUSE_US;
            return;
        }
        if (g_list_length(self->clients) >= self->limits->max_clients && !evict_a_silent_client(self)) {
            GST_DEBUG_OBJECT(self->element, "max-clients (%u) reached: a connection refused", self->limits->max_clients);
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
        g_atomic_int_add(&self->counts->clients, 1);
        if (vsg_send_with_fd(fd, &hello, self->segment->seg.fd) != 1) {
            client_remove(self, c, "cannot send the greeting");
            continue;
        }
        send_caps(self, c);
        GST_INFO_OBJECT(self->element, "client connected");
    }
}

/* The time a client may keep us waiting, in g_get_monotonic_time() units; 0: for ever. */
static gint64 client_timeout_us(VsgServer *self)
{
    return (gint64)self->limits->client_timeout_ms * 1000;
}

GstClockTime vsg_server_time_left(VsgServer *self, gint64 start_us)
{
    if (!client_timeout_us(self))
        return GST_CLOCK_TIME_NONE;
    gint64 left = start_us + client_timeout_us(self) - g_get_monotonic_time();
    return left > 0 ? (GstClockTime)left * GST_USECOND : 0;
}

/* Why a client keeps us waiting too long, or NULL: it has buffers to take and has taken none
 * for client-timeout (a slow one keeps taking, however slowly: this measures progress, not
 * how long a buffer waited). */
static const char *overdue(VsgServer *self, Client *c, gint64 now)
{
    if (client_timeout_us(self) && !g_queue_is_empty(&c->pending) &&
        now - c->progress_us > client_timeout_us(self))
        return "it took none of its buffers for client-timeout";
    return NULL;
}

static void client_drop(VsgServer *self, Client *c, const char *why)
{
    GST_WARNING_OBJECT(self->element, "dropping a client (peer %u): %s", c->peer, why);
    __atomic_fetch_add(&self->counts->clients_dropped, 1, __ATOMIC_RELAXED);
    client_remove(self, c, why);
}

/* With max-clients connected, a newcomer takes the place of the longest-waiting client that
 * has not answered its greeting for client-timeout (a flood of silent connections must not
 * lock consumers out; a consumer paused before its first buffer keeps its place otherwise).
 * FALSE: nobody to evict. */
static gboolean evict_a_silent_client(VsgServer *self)
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
void vsg_server_service(VsgServer *self)
{
    gint64 now = self->last_service = g_get_monotonic_time();
    if (self->accept_paused_until && now >= self->accept_paused_until) {
        self->accept_paused_until = 0;
        gst_poll_fd_ctl_read(self->poll, &self->listen_pfd, TRUE);
    }
    if (gst_poll_wait(self->poll, 0) > 0) {
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
    /* Progress is judged after the acks waiting in the sockets are read: a shared buffer is
     * taken by its ack alone, and we may not have looked for a while. */
    for (GList *l = self->clients; l;) {
        Client *c = l->data;
        l = l->next; /* client_drop removes c */
        release_taken(c);
        const char *why = overdue(self, c, now);
        if (why)
            client_drop(self, c, why);
    }
}

/* After a render: the sockets need a look (new clients, refusals, a client gone) about once
 * a millisecond, not once a buffer; sooner if a client's backlog says something is stuck. */
#define SERVICE_INTERVAL_US 1000
#define PENDING_BACKLOG 64
void vsg_server_service_now_and_then(VsgServer *self)
{
    gboolean backlog = FALSE;
    for (GList *l = self->clients; l; l = l->next) {
        Client *c = l->data;
        release_taken(c);
        backlog |= g_queue_get_length(&c->pending) > PENDING_BACKLOG;
    }
    if (backlog || g_get_monotonic_time() - self->last_service >= SERVICE_INTERVAL_US)
        vsg_server_service(self);
}

static guint ready_clients(VsgServer *self)
{
    guint n = 0;
    for (GList *l = self->clients; l; l = l->next)
        n += ((Client *)l->data)->peer != 0;
    return n;
}

/* FALSE: flushing; the caller asks self->flushed whether to go on. */
gboolean vsg_server_wait(VsgServer *self, GstClockTime timeout)
{
    gint r = gst_poll_wait(self->poll, timeout);
    return !(r < 0 && errno == EBUSY);
}

static void send_caps(VsgServer *self, Client *c)
{
    if (!self->caps)
        return;
    vsg_message m;
    gchar *s = gst_caps_to_string(self->caps);
    if (!vsg_caps_write(&m.caps, s)) {
        GST_ELEMENT_WARNING(self->element, STREAM, FORMAT, (NULL), ("caps too long to send: %s", s));
        g_free(s);
        return;
    }
    g_free(s);
    if (vsg_send(c->fd, &m) != 1)
        GST_WARNING_OBJECT(self->element, "cannot send caps to a client");
}

/* Sends m to c, waiting for room in its socket (up to client-timeout: then c is dropped)
 * while servicing every socket. *sent: c got it (FALSE: c went away or was dropped
 * meanwhile). Not GST_FLOW_OK: flushing while waiting. */
static GstFlowReturn send_waiting(VsgServer *self, Client *c, const vsg_message *m,
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
        GstClockTime left = vsg_server_time_left(self, start);
        if (left == 0) {
            client_drop(self, c, "its socket stayed full for client-timeout");
            return GST_FLOW_OK;
        }
        gst_poll_fd_ctl_write(self->poll, &c->pfd, TRUE);
        gboolean woke = vsg_server_wait(self, left);
        gst_poll_fd_ctl_write(self->poll, &c->pfd, FALSE);
        /* Every socket, not only c's: one left unread would wake the poll again at once. */
        vsg_server_service(self);
        if (client_by_id(self, id) != c)
            return GST_FLOW_OK;
        if (!woke) {
            GstFlowReturn ret = self->flushed(self->flushed_data);
            if (ret != GST_FLOW_OK)
                return ret;
        }
    }
}

/* Waits until c has fewer than client-max-pending buffers it has not taken. A client takes
 * a buffer by the slot words, without a word on its socket, so this looks every
 * millisecond, and at once when c's ack arrives (c sends its due ack whenever it runs out
 * of buffers); service() drops c if it takes none for client-timeout.
 * FALSE: c is gone. */
static gboolean wait_for_room(VsgServer *self, Client *c, GstFlowReturn *ret)
{
    guint64 id = c->id;
    while (g_queue_get_length(&c->pending) >= self->limits->client_max_pending) {
        vsg_server_service(self);
        if (client_by_id(self, id) != c)
            return FALSE;
        if (g_queue_get_length(&c->pending) < self->limits->client_max_pending)
            break;
        if (!vsg_server_wait(self, GST_MSECOND) &&
            (*ret = self->flushed(self->flushed_data)) != GST_FLOW_OK)
            return FALSE;
    }
    return TRUE;
}

GstFlowReturn vsg_server_send_buffer(VsgServer *self, guint64 id, GstBuffer *buf, guint64 seq, gboolean *sent)
{
    vsg_message m;
    GstFlowReturn ret = GST_FLOW_OK;
    *sent = FALSE;
    Client *c = client_by_id(self, id);
    if (!c || !wait_for_room(self, c, &ret)) {
        gst_buffer_unref(buf);
        return ret;
    }
    vsg_buffer_write(&m.buffer, buf, seq);
    ret = send_waiting(self, c, &m, sent);
    if (!*sent) {
        gst_buffer_unref(buf);
        return ret;
    }
    PendingBuffer *p = g_new0(PendingBuffer, 1);
    p->seq = seq;
    if (m.buffer.shared) {
        for (guint i = 0; i < m.buffer.n_memories; i++)
            p->shared[p->n_shared++] = vs_slot_ref_unpack(m.buffer.memories[i].handle);
        gst_buffer_unref(buf);
    } else {
        p->buffer = buf;
    }
    if (g_queue_is_empty(&c->pending))
        c->progress_us = g_get_monotonic_time(); /* the clock starts now */
    g_queue_push_tail(&c->pending, p);
    return ret;
}

GstFlowReturn vsg_server_wait_for_client(VsgServer *self, gboolean wait)
{
    if (!ready_clients(self))
        vsg_server_service(self); /* a client may be knocking, or its greeting reply waiting */
    while (!ready_clients(self)) {
        if (!wait)
            return GST_FLOW_CUSTOM_SUCCESS; /* nobody to send to: drop */
        if (!vsg_server_wait(self, GST_CLOCK_TIME_NONE)) {
            GstFlowReturn ret = self->flushed(self->flushed_data);
            if (ret != GST_FLOW_OK)
                return ret;
        }
        vsg_server_service(self);
    }
    return GST_FLOW_OK;
}

/* EOS reaches every client even behind a full socket (small buffers at a high rate fill it):
 * a consumer that missed it would see the producer vanish instead. */
static void broadcast_eos(VsgServer *self)
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

static gboolean anything_pending(VsgServer *self)
{
    for (GList *l = self->clients; l; l = l->next)
        if (!g_queue_is_empty(&((Client *)l->data)->pending))
            return TRUE;
    return FALSE;
}

/* At EOS every sent buffer must reach its client before we may stop: stopping releases the
 * slots of whatever was not taken yet. Clients that go away end the wait for their part. */
static void drain_clients(VsgServer *self)
{
    vsg_server_service(self);
    /* A client takes by the slot words, not by a word on its socket, and a stuck one says
     * nothing at all: look again every few milliseconds (service() drops it in time). */
    while (anything_pending(self) && vsg_server_wait(self, 5 * GST_MSECOND))
        vsg_server_service(self);
}


void vsg_server_finish(VsgServer *self)
{
    broadcast_eos(self);
    drain_clients(self);
}

GArray *vsg_server_ready_clients(VsgServer *self) { return client_ids(self, TRUE); }

guint8 vsg_server_client_peer(VsgServer *self, guint64 id)
{
    Client *c = client_by_id(self, id);
    return c ? c->peer : 0;
}

/* ---- lifecycle ---- */

VsgServer *vsg_server_new(GstElement *element, const gchar *socket_path, const VsgServerLimits *limits,
                          VsgServerCounts *counts, VsgServerFlushed flushed, gpointer user_data,
                          GError **error)
{
    int fd = vsg_listen(socket_path, error);
    if (fd < 0)
        return NULL;
    VsgServer *self = g_new0(VsgServer, 1);
    self->element = element;
    self->limits = limits;
    self->counts = counts;
    self->flushed = flushed;
    self->flushed_data = user_data;
    self->socket_path = g_strdup(socket_path);
    self->listen_fd = fd;
    self->poll = gst_poll_new(TRUE);
    gst_poll_fd_init(&self->listen_pfd);
    self->listen_pfd.fd = self->listen_fd;
    gst_poll_add_fd(self->poll, &self->listen_pfd);
    gst_poll_fd_ctl_read(self->poll, &self->listen_pfd, TRUE);
    return self;
}

void vsg_server_free(VsgServer *self)
{
    vsg_server_service(self); /* acks already here release their buffers as given away, not freed */
    while (self->clients)
        client_remove(self, self->clients->data, "stopping");
    close(self->listen_fd);
    unlink(self->socket_path);
    gst_poll_free(self->poll);
    gst_clear_caps(&self->caps);
    g_clear_pointer(&self->segment, gst_varslot_segment_unref);
    g_free(self->socket_path);
    g_free(self);
}

void vsg_server_set_flushing(VsgServer *self, gboolean flushing) { gst_poll_set_flushing(self->poll, flushing); }

void vsg_server_set_segment(VsgServer *self, GstVarslotSegment *segment)
{
    g_clear_pointer(&self->segment, gst_varslot_segment_unref);
    self->segment = gst_varslot_segment_ref(segment);
}

void vsg_server_set_caps(VsgServer *self, GstCaps *caps)
{
    gst_caps_replace(&self->caps, caps);
    for (GList *l = self->clients; l; l = l->next)
        send_caps(self, l->data);
}
