/* Sockets and messages for varslotsink/varslotsrc. Everything is non-blocking: waiting is
 * the elements' business (on a GstPoll they can flush), so nobody ever sits in send() while
 * the other side sits in send() too, the deadlock shmsink and shmsrc can fall into. A
 * received message is hostile until validated: lengths, counts and strings are checked here,
 * what a buffer's fields mean in wire.c. */
#include "protocol.h"

#include <errno.h>
#include <gst/gst.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

void vsg_init_header(vsg_header *h, enum vsg_type type, size_t length)
{
    memset(h, 0, sizeof *h);
    h->magic = VSG_MAGIC;
    h->type = (uint16_t)type;
    h->version = VSG_VERSION;
    h->length = (uint32_t)length;
}

size_t vsg_message_size(const vsg_message *m) { return m->h.length; }

static int address_of(const char *path, struct sockaddr_un *addr, GError **error)
{
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    if (!path || !*path || strlen(path) >= sizeof addr->sun_path) {
        g_set_error(error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS,
                    "socket-path must be set and shorter than %zu bytes", sizeof addr->sun_path);
        return -1;
    }
    strcpy(addr->sun_path, path);
    return 0;
}

static int new_socket(GError **error)
{
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        g_set_error(error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_OPEN_READ_WRITE,
                    "socket: %s", g_strerror(errno));
    return fd;
}

int vsg_connect(const char *path, GError **error)
{
    struct sockaddr_un addr;
    if (address_of(path, &addr, error) < 0)
        return -1;
    int fd = new_socket(error);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        g_set_error(error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_OPEN_READ_WRITE,
                    "cannot connect to a varslotsink at %s: %s", path, g_strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int vsg_listen(const char *path, GError **error)
{
    struct sockaddr_un addr;
    if (address_of(path, &addr, error) < 0)
        return -1;
    int fd = new_socket(error);
    if (fd < 0)
        return -1;
    int rc = bind(fd, (struct sockaddr *)&addr, sizeof addr);
    if (rc != 0 && errno == EADDRINUSE) {
        /* Someone answering there is a live sink; no answer means a dead one's leftover. */
        int probe = vsg_connect(path, NULL);
        if (probe >= 0) {
            close(probe);
            g_set_error(error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_OPEN_READ_WRITE,
                        "socket-path %s is in use by a running varslotsink", path);
            close(fd);
            return -1;
        }
        struct stat st;
        if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
            g_set_error(error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_OPEN_READ_WRITE,
                        "socket-path %s exists and is not a socket", path);
            close(fd);
            return -1;
        }
        unlink(path);
        rc = bind(fd, (struct sockaddr *)&addr, sizeof addr);
    }
    if (rc != 0 || listen(fd, 16) != 0) {
        g_set_error(error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_OPEN_READ_WRITE,
                    "cannot listen at %s: %s", path, g_strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int vsg_send_bytes(int fd, const void *bytes, size_t len, int passed)
{
    struct iovec iov = {(void *)bytes, len};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } control;
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (passed >= 0) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof control.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &passed, sizeof passed);
    }
    ssize_t n = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n == (ssize_t)len)
        return 1;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
}

int vsg_send_with_fd(int fd, const vsg_message *m, int passed)
{
    return vsg_send_bytes(fd, m, vsg_message_size(m), passed);
}

int vsg_send(int fd, const vsg_message *m) { return vsg_send_with_fd(fd, m, -1); }

gboolean vsg_peer_pid(int fd, pid_t *pid, uid_t *uid)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return FALSE;
    if (cred.pid <= 0) { /* the peer is in a pid namespace we cannot see */
        errno = ESRCH;
        return FALSE;
    }
    *pid = cred.pid;
    *uid = cred.uid;
    return TRUE;
}

static size_t expected_size(uint16_t type)
{
    switch (type) {
    case VSG_HELLO: return sizeof(vsg_hello);
    case VSG_HELLO_REPLY: return sizeof(vsg_hello_reply);
    case VSG_BUFFER: return sizeof(vsg_buffer);
    case VSG_EOS: return sizeof(vsg_header);
    case VSG_ACK: return sizeof(vsg_ack);
    default: return 0;
    }
}

static const char *validate(const vsg_message *m, size_t got)
{
    if (got < sizeof(vsg_header) || m->h.magic != VSG_MAGIC)
        return "not a varslot message";
    if (m->h.version != VSG_VERSION)
        return "protocol version mismatch";
    if (m->h.length != got)
        return "message length does not match its packet";
    if (m->h.type == VSG_CAPS)
        return got > sizeof(vsg_header) && ((const char *)m)[got - 1] == '\0' ? NULL
                                                                                : "caps string not terminated";
    if (expected_size(m->h.type) != got)
        return "unknown message type or wrong size";
    if (m->h.type == VSG_HELLO && !memchr(m->hello.segment, '\0', sizeof m->hello.segment))
        return "segment name not terminated";
    if (m->h.type == VSG_BUFFER &&
        (m->buffer.n_memories == 0 || m->buffer.n_memories > VSG_MAX_MEMORIES ||
         m->buffer.video.n_planes > VSG_MAX_PLANES))
        return "buffer message with a bad memory or plane count";
    return NULL;
}

/* The descriptors that came with a message: *passed gets the first, the rest are closed.
 * How many there were. */
static int take_passed_fds(struct msghdr *msg, int *passed)
{
    int count = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0))
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (count++ == 0)
                *passed = fd;
            else
                close(fd);
        }
    }
    return count;
}

int vsg_recv(int fd, vsg_message *m, int *passed, const char **why)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(4 * sizeof(int))];
    } control;
    struct iovec iov = {m, sizeof *m};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
    ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_TRUNC | MSG_CMSG_CLOEXEC);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    if (n <= 0) {
        *why = n == 0 ? "connection closed" : g_strerror(errno);
        return -1;
    }
    int got = -1;
    int count = take_passed_fds(&msg, &got);
    if ((size_t)n > sizeof *m)
        *why = "message larger than any valid one";
    else if (msg.msg_flags & MSG_CTRUNC)
        *why = "too many descriptors passed";
    else if (!(*why = validate(m, (size_t)n)) && (m->h.type == VSG_HELLO) != (count == 1))
        *why = m->h.type == VSG_HELLO ? "greeting without its segment file" : "descriptor passed with a message";
    else if (!*why && m->h.type == VSG_HELLO && !passed)
        *why = "unexpected greeting";
    if (*why || !passed) {
        if (got >= 0)
            close(got);
        return *why ? -1 : 1;
    }
    *passed = got;
    return 1;
}
