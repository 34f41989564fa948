/* The wire between varslotsink and varslotsrc: fixed-width messages over a SOCK_SEQPACKET
 * unix socket (one message per packet, so no framing), never a pointer, only slot handles.
 * 1.22 has no meta serialisation: GstVideoMeta travels as its plain fields. The greeting
 * carries the producer's segment file itself (SCM_RIGHTS) beside its name, so a consumer
 * checks it opened the very file its producer has; who the producer is comes from the
 * socket (SO_PEERCRED), never from the message. */
#ifndef GST_VARSLOT_PROTOCOL_H
#define GST_VARSLOT_PROTOCOL_H

#include <glib.h>
#include <stdint.h>
#include <sys/types.h>

G_BEGIN_DECLS

#define VSG_MAGIC 0x31475356u /* "VSG1" */
#define VSG_VERSION 3 /* 2: the greeting carries the segment file; 3: shared buffers */
#define VSG_MAX_MEMORIES 8
#define VSG_MAX_PLANES 4
#define VSG_MAX_CAPS 8192
#define VSG_DEFAULT_SOCKET_PATH "/tmp/varslot.sock" /* both elements' socket-path */

enum vsg_type {
    VSG_HELLO = 1,      /* sink -> src: my peer id, the segment (name, and its file by SCM_RIGHTS) */
    VSG_HELLO_REPLY,    /* src -> sink: my peer id */
    VSG_CAPS,           /* sink -> src: caps as a string */
    VSG_BUFFER,         /* sink -> src: slot handles and metadata */
    VSG_EOS,            /* sink -> src */
    VSG_ACK,            /* src -> sink: buffer seq taken (ownership moved) or refused */
};

typedef struct {
    uint32_t magic;
    uint16_t type;
    uint16_t version;
    uint32_t length; /* whole message, header included */
    uint32_t reserved;
} vsg_header;

typedef struct {
    vsg_header h;
    uint8_t peer; /* the sink's peer id in the segment */
    uint8_t reserved[7];
    char segment[256];
} vsg_hello;

typedef struct {
    vsg_header h;
    uint8_t peer;
    uint8_t reserved[7];
} vsg_hello_reply;

typedef struct {
    vsg_header h;
    char caps[VSG_MAX_CAPS]; /* NUL-terminated; sent only up to the NUL */
} vsg_caps;

typedef struct {
    uint64_t handle;
    uint32_t offset; /* first byte inside the slot */
    uint32_t size;
} vsg_memory;

typedef struct {
    uint32_t present, flags, format, width, height, n_planes;
    uint64_t offset[VSG_MAX_PLANES];
    int32_t stride[VSG_MAX_PLANES];
} vsg_video_meta;

typedef struct {
    vsg_header h;
    uint64_t seq;
    uint64_t pts, dts, duration, offset, offset_end; /* GST_CLOCK_TIME_NONE is all ones */
    uint32_t flags;
    uint32_t n_memories;
    uint32_t shared;   /* 1: the slots are shared with the receiver (vs_pool_share), read in
                        * place and released; 0: the receiver takes them (vs_pool_transfer) */
    uint32_t reserved;
    vsg_video_meta video;
    vsg_memory memories[VSG_MAX_MEMORIES];
} vsg_buffer;

typedef struct {
    vsg_header h;
    uint64_t seq;
    uint32_t taken; /* 1: the receiver owns the slots now; 0: it could not take them */
    uint32_t reserved;
} vsg_ack;

typedef union {
    vsg_header h;
    vsg_hello hello;
    vsg_hello_reply hello_reply;
    vsg_caps caps;
    vsg_buffer buffer;
    vsg_ack ack;
} vsg_message;

void vsg_init_header(vsg_header *h, enum vsg_type type, size_t length);
/* Size of a message as sent (a caps message stops after its string). */
size_t vsg_message_size(const vsg_message *m);

/* A listening socket at path; a stale socket file left by a dead sink is replaced, a live
 * one is an error. Non-blocking, close-on-exec. -1 with *error set on failure. */
int vsg_listen(const char *path, GError **error);
int vsg_connect(const char *path, GError **error);

/* Non-blocking send of one message: 1 sent, 0 would block, -1 peer gone or error. */
int vsg_send(int fd, const vsg_message *m);
/* The same, with the descriptor passed along (SCM_RIGHTS). */
int vsg_send_with_fd(int fd, const vsg_message *m, int passed);
/* Any bytes as one packet, with a descriptor (passed >= 0): what the above send, and what
 * the tests' fuzzers send instead of a message. */
int vsg_send_bytes(int fd, const void *bytes, size_t len, int passed);
/* Non-blocking receive and validation: 1 a valid message, 0 nothing yet, -1 the peer closed
 * the connection or sent something malformed (*why says which). A greeting must come with
 * exactly one descriptor, which *passed receives (close-on-exec; the caller closes it);
 * descriptors with any other message are closed here. passed may be NULL where no greeting
 * is expected (one then is refused). */
int vsg_recv(int fd, vsg_message *m, int *passed, const char **why);

/* The process at the other end of a connected unix socket (as the kernel saw it connect):
 * FALSE with errno if it cannot be told. */
gboolean vsg_peer_pid(int fd, pid_t *pid, uid_t *uid);

G_END_DECLS
#endif
