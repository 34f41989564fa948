/* varslotsink's server: the listening socket and its varslotsrc clients, the buffers each
 * was sent and has not taken yet, their acks and refusals, and settling what a client took
 * or left. It runs in the sink's streaming thread (and start/stop), never blocks but in its
 * waits, and every wait is on one GstPoll that vsg_server_set_flushing() interrupts. The
 * element decides what to send (zero copy or copies) and owns every GStreamer state. */
#ifndef GST_VARSLOT_SERVER_H
#define GST_VARSLOT_SERVER_H

#include "segments.h"

#include <gst/gst.h>

G_BEGIN_DECLS

typedef struct _VsgServer VsgServer;

/* The element's properties the server obeys, read as they are at each use. */
typedef struct {
    guint client_timeout_ms;  /* a client that keeps us waiting longer is dropped; 0: never */
    guint client_max_pending; /* buffers a client may have been sent and not taken */
    guint max_clients;        /* connections served at once */
} VsgServerLimits;

/* Counters the element shows as properties, from any thread; they outlive the server. */
typedef struct {
    gint clients;            /* connected now (g_atomic) */
    guint64 clients_dropped; /* for keeping the sink waiting (__atomic) */
} VsgServerCounts;

/* Called when a wait was interrupted by flushing: GST_FLOW_OK to wait on (the element has
 * waited for preroll, as GstBaseSink asks), else what the caller returns. */
typedef GstFlowReturn (*VsgServerFlushed)(gpointer user_data);

/* Listens at socket_path (see vsg_listen). limits and counts stay the caller's; element is
 * what logs and warnings are about. NULL with *error set if it cannot listen. */
VsgServer *vsg_server_new(GstElement *element, const gchar *socket_path, const VsgServerLimits *limits,
                          VsgServerCounts *counts, VsgServerFlushed flushed, gpointer user_data,
                          GError **error);
/* Settles what the clients have taken, disconnects them (the rest comes back to us) and
 * removes the socket. */
void vsg_server_free(VsgServer *self);
void vsg_server_set_flushing(VsgServer *self, gboolean flushing);

/* Clients are accepted once there is a segment their greeting can name. */
void vsg_server_set_segment(VsgServer *self, GstVarslotSegment *segment);
/* Sends the caps to every client now, and to each that connects later. */
void vsg_server_set_caps(VsgServer *self, GstCaps *caps);

/* Waits until a client has answered its greeting: GST_FLOW_OK, or at once
 * GST_FLOW_CUSTOM_SUCCESS when there is none and wait is FALSE; else flushing. */
GstFlowReturn vsg_server_wait_for_client(VsgServer *self, gboolean wait);
/* The ids of the clients that answered their greeting: a snapshot to go by while clients
 * come and go. */
GArray *vsg_server_ready_clients(VsgServer *self);
/* The peer id client id answered its greeting with (0: gone, or not ready). */
guint8 vsg_server_client_peer(VsgServer *self, guint64 id);
/* Sends buf (taken), numbered seq, to client id once it has room for it, and holds it until
 * the client took its slots or went away. *sent: the client got it (FALSE: it is gone, or
 * was dropped meanwhile). Not GST_FLOW_OK: flushing while waiting. */
GstFlowReturn vsg_server_send_buffer(VsgServer *self, guint64 id, GstBuffer *buf, guint64 seq, gboolean *sent);
/* At EOS: tells every client, then waits until each has taken what it was sent or gone. */
void vsg_server_finish(VsgServer *self);

/* Accepts, reads acks, drops dead and overdue clients; never waits. */
void vsg_server_service(VsgServer *self);
/* The same, when it is due (about once a millisecond, or when a client falls behind). */
void vsg_server_service_now_and_then(VsgServer *self);
/* Waits up to timeout for anything on the sockets. FALSE: flushing. */
gboolean vsg_server_wait(VsgServer *self, GstClockTime timeout);
/* What is left of client-timeout since start_us (g_get_monotonic_time()): 0 when it has
 * passed, GST_CLOCK_TIME_NONE when there is no timeout. */
GstClockTime vsg_server_time_left(VsgServer *self, gint64 start_us);

G_END_DECLS
#endif
