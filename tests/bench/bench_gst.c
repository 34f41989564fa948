/* bench_gst: one process of the GStreamer benchmark (issue 4, section 7). scripts/bench-gst
 * starts the processes, alternates the variants and prints the table; this program runs one
 * role per invocation and prints one "result key=value ..." line on stdout.
 *
 *   bench_gst onepc    videotestsrc ! CAPS ! fakesink sync=false, in one process
 *   bench_gst producer videotestsrc ! CAPS ! [identity drop-allocation=true !] SINK
 *                      SINK = varslotsink | shmsink; with --stamp a pad probe on the sink's
 *                      sink pad writes CLOCK_MONOTONIC (ns, 8 bytes) into the frame's first
 *                      bytes just before the sink gets it
 *   bench_gst consumer SRC [! CAPS] ! fakesink sync=false
 *                      SRC = varslotsrc | shmsrc; a pad probe on SRC's src pad counts the
 *                      frames (first frame and EOS times) and with --latency reads the stamp
 *   bench_gst floor-rate     no GStreamer: two processes (a fork) exchange what varslot's
 *                      wire needs per buffer, one 272-byte message (a vsg_buffer) one way
 *                      and one 32-byte ack back, over a non-blocking SOCK_SEQPACKET pair,
 *                      waiting in poll() only when a call would block; messages per second
 *   bench_gst floor-latency  no GStreamer: every 1/--fps s the parent stamps CLOCK_MONOTONIC
 *                      into a 272-byte message and sends it; the child sleeps in poll(),
 *                      receives and subtracts: the machine's cross-process wake-up latency
 *
 * Timing (onepc and consumer): frames / (time of EOS on the probed pad - time of the first
 * frame there), CLOCK_MONOTONIC. A consumer that sees no frame for --stall-ms prints its own
 * threads and its producer's (--peer-pid) with the system call each is blocked in, and exits
 * with status 3: the driver reports that as a deadlock. Exit status: 0 done, 1 the pipeline
 * failed (an error message, a state change refused), 2 bad arguments, 3 stalled.
 *
 * Built by scripts/bench-gst: gcc -O2 $(pkg-config --cflags gstreamer-1.0 gstreamer-video-1.0) \
 *     -o build/bench/bench_gst tests/bench/bench_gst.c $(pkg-config --libs ...) */
#define _GNU_SOURCE
#include <gst/gst.h>

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- options ---- */

static struct {
    const char *role;
    const char *variant;   /* producer: varslot | shm | shm-copy; consumer: varslot | shm */
    const char *socket;
    const char *segment;
    const char *pattern;
    const char *format;
    int width, height;
    int fps;               /* 0: framerate=0/1, as fast as possible; else is-live, N/1 */
    long num;              /* frames the producer makes; shmsrc's num-buffers */
    guint64 shm_size;
    gboolean stamp, latency;
    long skip;             /* latency: frames not counted at the start */
    const char *dump;      /* latency: "stamp_ns probe_ns" per frame into this file */
    long stall_ms, start_ms;
    int peer_pid;
    gboolean tee;          /* producer: a tee before the sink, a second branch into fakesink */
    int clients;           /* shm producer: hold the first frame until this many shmsrc came */
    gboolean wait_producer;/* varslot consumer: started first, waits for the sink to appear */
} opt = {
    .pattern = "black", .format = "BGRx", .width = 3840, .height = 2160, .num = 300,
    .shm_size = 0, .skip = 10, .stall_ms = 3000, .start_ms = 20000,
};

static void usage(FILE *f)
{
    fprintf(f,
        "usage: bench_gst onepc|producer|consumer|floor-rate|floor-latency [options]\n"
        "  --variant V      producer: varslot | shm | shm-copy; consumer: varslot | shm\n"
        "  --socket PATH    the sink's socket-path\n"
        "  --segment NAME   varslotsink's segment\n"
        "  --shm-size B     shmsink's shm-size\n"
        "  --pattern P      videotestsrc pattern (default black)\n"
        "  --format F --width W --height H   the caps (default BGRx 3840x2160)\n"
        "  --fps N          is-live videotestsrc at N/1 (default 0: framerate=0/1, unpaced)\n"
        "  --num N          frames the producer makes (shmsrc: num-buffers)\n"
        "  --stamp          producer: write CLOCK_MONOTONIC into each frame's first 8 bytes\n"
        "  --latency        consumer: read the stamp, print p50/p90/p99\n"
        "  --skip N         latency: frames not counted at the start (default 10)\n"
        "  --dump FILE      latency: write 'stamp_ns probe_ns' for every frame to FILE\n"
        "  --stall-ms MS    consumer: no frame for MS after the first one = stalled (default 3000)\n"
        "  --start-ms MS    consumer: no first frame within MS = stalled (default 20000)\n"
        "  --peer-pid PID   consumer: the producer, whose threads a stall report shows\n"
        "  --tee            producer: SOURCE ! tee ! queue ! SINK, and tee. ! queue ! fakesink\n"
        "  --clients N      shm producer: hold the first frame until N shmsrc connected\n"
        "  --wait-for-producer  varslot consumer: start before the producer and wait for it\n");
}

static int parse_args(int argc, char **argv)
{
    enum { O_VARIANT = 256, O_SOCKET, O_SEGMENT, O_SHM, O_PATTERN, O_FORMAT, O_WIDTH, O_HEIGHT,
           O_FPS, O_NUM, O_STAMP, O_LATENCY, O_SKIP, O_STALL, O_START, O_PEER, O_DUMP, O_HELP,
           O_TEE, O_CLIENTS, O_WAIT_PRODUCER };
    static const struct option longs[] = {
        {"variant", 1, 0, O_VARIANT}, {"socket", 1, 0, O_SOCKET}, {"segment", 1, 0, O_SEGMENT},
        {"shm-size", 1, 0, O_SHM}, {"pattern", 1, 0, O_PATTERN}, {"format", 1, 0, O_FORMAT},
        {"width", 1, 0, O_WIDTH}, {"height", 1, 0, O_HEIGHT}, {"fps", 1, 0, O_FPS},
        {"num", 1, 0, O_NUM}, {"stamp", 0, 0, O_STAMP}, {"latency", 0, 0, O_LATENCY},
        {"skip", 1, 0, O_SKIP}, {"stall-ms", 1, 0, O_STALL}, {"start-ms", 1, 0, O_START},
        {"peer-pid", 1, 0, O_PEER}, {"dump", 1, 0, O_DUMP}, {"help", 0, 0, O_HELP},
        {"tee", 0, 0, O_TEE}, {"clients", 1, 0, O_CLIENTS}, {"wait-for-producer", 0, 0, O_WAIT_PRODUCER},
        {0, 0, 0, 0}};
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    opt.role = argv[1];
    if (!strcmp(opt.role, "-h") || !strcmp(opt.role, "--help")) {
        usage(stdout);
        exit(0);
    }
    optind = 2;
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        char *end = NULL;
        long v = 0;
        if (c != O_VARIANT && c != O_SOCKET && c != O_SEGMENT && c != O_PATTERN && c != O_FORMAT &&
            c != O_STAMP && c != O_LATENCY && c != O_DUMP && c != O_HELP && c != O_TEE &&
            c != O_WAIT_PRODUCER && c != '?') {
            errno = 0;
            v = strtol(optarg, &end, 10);
            if (errno || !*optarg || *end || v < 0) {
                fprintf(stderr, "bench_gst: bad number '%s'\n", optarg);
                return 2;
            }
        }
        switch (c) {
        case O_VARIANT: opt.variant = optarg; break;
        case O_SOCKET: opt.socket = optarg; break;
        case O_SEGMENT: opt.segment = optarg; break;
        case O_SHM: opt.shm_size = (guint64)v; break;
        case O_PATTERN: opt.pattern = optarg; break;
        case O_FORMAT: opt.format = optarg; break;
        case O_WIDTH: opt.width = (int)v; break;
        case O_HEIGHT: opt.height = (int)v; break;
        case O_FPS: opt.fps = (int)v; break;
        case O_NUM: opt.num = v; break;
        case O_STAMP: opt.stamp = TRUE; break;
        case O_LATENCY: opt.latency = TRUE; break;
        case O_SKIP: opt.skip = v; break;
        case O_STALL: opt.stall_ms = v; break;
        case O_START: opt.start_ms = v; break;
        case O_PEER: opt.peer_pid = (int)v; break;
        case O_DUMP: opt.dump = optarg; break;
        case O_TEE: opt.tee = TRUE; break;
        case O_CLIENTS: opt.clients = (int)v; break;
        case O_WAIT_PRODUCER: opt.wait_producer = TRUE; break;
        case O_HELP: usage(stdout); exit(0);
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc || opt.num < 1 || opt.width < 1 || opt.height < 1) {
        usage(stderr);
        return 2;
    }
    return 0;
}

/* ---- what the probes see (written by a streaming thread, read by the main thread) ---- */

static struct {
    gint64 frames;               /* atomic */
    gint64 last_ns;              /* atomic: time of the latest frame */
    uint64_t first_ns, eos_ns;
    gint64 *lat;                 /* latency samples, ns */
    guint64 (*pairs)[2];         /* --dump: stamp and probe time of every frame */
    long n_pairs;
    long n_lat, bad_stamps;
    long stamped, unstamped;     /* producer */
} st;

static GstPadProbeReturn count_probe(GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
    (void)pad;
    (void)data;
    uint64_t t = now_ns();
    if (info->type & GST_PAD_PROBE_TYPE_BUFFER) {
        gint64 n = __atomic_load_n(&st.frames, __ATOMIC_ACQUIRE);
        if (n == 0)
            st.first_ns = t;
        if (opt.latency) {
            guint64 stamp = 0;
            GstBuffer *buf = GST_PAD_PROBE_INFO_BUFFER(info);
            if (gst_buffer_extract(buf, 0, &stamp, sizeof stamp) == sizeof stamp && stamp > 0 &&
                stamp <= t && t - stamp < 10 * GST_SECOND) {
                if (n >= opt.skip && st.n_lat < opt.num)
                    st.lat[st.n_lat++] = (gint64)(t - stamp);
                if (st.pairs && st.n_pairs < opt.num) {
                    st.pairs[st.n_pairs][0] = stamp;
                    st.pairs[st.n_pairs++][1] = t;
                }
            } else {
                st.bad_stamps++;
            }
        }
        __atomic_store_n(&st.last_ns, (gint64)t, __ATOMIC_RELEASE);
        __atomic_store_n(&st.frames, n + 1, __ATOMIC_RELEASE);
    } else if (info->type & GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM) {
        if (GST_EVENT_TYPE(GST_PAD_PROBE_INFO_EVENT(info)) == GST_EVENT_EOS && !st.eos_ns)
            st.eos_ns = t;
    }
    return GST_PAD_PROBE_OK;
}

/* --clients: the first frame waits (up to start-ms) until that many shmsrc connected. */
static struct {
    GMutex lock;
    GCond changed;
    int connected;
} gate;

static void client_connected(GstElement *sink, gint fd, gpointer data)
{
    (void)sink;
    (void)fd;
    (void)data;
    g_mutex_lock(&gate.lock);
    gate.connected++;
    g_cond_broadcast(&gate.changed);
    g_mutex_unlock(&gate.lock);
}

static GstPadProbeReturn gate_probe(GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
    (void)pad;
    (void)info;
    (void)data;
    g_mutex_lock(&gate.lock);
    gint64 until = g_get_monotonic_time() + opt.start_ms * 1000;
    while (gate.connected < opt.clients && g_cond_wait_until(&gate.changed, &gate.lock, until)) {
    }
    if (gate.connected < opt.clients)
        fprintf(stderr, "bench_gst producer: only %d of %d clients came; going on\n", gate.connected,
                opt.clients);
    g_mutex_unlock(&gate.lock);
    return GST_PAD_PROBE_REMOVE; /* the first frame only: no cost to the frames timed */
}

/* The producer's stamp: the frame is in the sink's memory now (its pool's, or shmsink's
 * allocator's); the clock is read right before the 8-byte write. */
static GstPadProbeReturn stamp_probe(GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
    (void)pad;
    (void)data;
    GstBuffer *buf = GST_PAD_PROBE_INFO_BUFFER(info);
    GstMapInfo map;
    if (gst_buffer_is_writable(buf) && gst_buffer_n_memory(buf) > 0) {
        GstMemory *mem = gst_buffer_peek_memory(buf, 0);
        if (mem->size >= 8 && gst_memory_map(mem, &map, GST_MAP_WRITE)) {
            guint64 t = now_ns();
            memcpy(map.data, &t, sizeof t);
            gst_memory_unmap(mem, &map);
            st.stamped++;
            return GST_PAD_PROBE_OK;
        }
    }
    st.unstamped++;
    return GST_PAD_PROBE_OK;
}

/* ---- a stall: which system call every thread of ours and of the producer sits in ---- */

static const char *syscall_name(long nr)
{
    switch (nr) {
#ifdef SYS_sendto
    case SYS_sendto: return "sendto";
#endif
#ifdef SYS_sendmsg
    case SYS_sendmsg: return "sendmsg";
#endif
#ifdef SYS_recvfrom
    case SYS_recvfrom: return "recvfrom";
#endif
#ifdef SYS_recvmsg
    case SYS_recvmsg: return "recvmsg";
#endif
#ifdef SYS_write
    case SYS_write: return "write";
#endif
#ifdef SYS_read
    case SYS_read: return "read";
#endif
#ifdef SYS_poll
    case SYS_poll: return "poll";
#endif
#ifdef SYS_ppoll
    case SYS_ppoll: return "ppoll";
#endif
#ifdef SYS_futex
    case SYS_futex: return "futex";
#endif
#ifdef SYS_epoll_wait
    case SYS_epoll_wait: return "epoll_wait";
#endif
#ifdef SYS_clock_nanosleep
    case SYS_clock_nanosleep: return "clock_nanosleep";
#endif
#ifdef SYS_nanosleep
    case SYS_nanosleep: return "nanosleep";
#endif
    default: return NULL;
    }
}

/* CPU seconds (user + system) this process has used so far. */
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void read_line(const char *path, char *buf, size_t n)
{
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    if (!fgets(buf, (int)n, f))
        buf[0] = 0;
    fclose(f);
    buf[strcspn(buf, "\n")] = 0;
}

static void dump_threads(const char *who, int pid)
{
    char path[512], comm[64], sc[256], wchan[128];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d) {
        printf("thread who=%s pid=%d unreadable=%s\n", who, pid, strerror(errno));
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%d/task/%s/comm", pid, e->d_name);
        read_line(path, comm, sizeof comm);
        snprintf(path, sizeof path, "/proc/%d/task/%s/syscall", pid, e->d_name);
        read_line(path, sc, sizeof sc);
        snprintf(path, sizeof path, "/proc/%d/task/%s/wchan", pid, e->d_name);
        read_line(path, wchan, sizeof wchan);
        for (char *p = comm; *p; p++)
            if (*p == ' ')
                *p = '_';
        char *end;
        long nr = strtol(sc, &end, 10);
        const char *name = end != sc ? syscall_name(nr) : NULL;
        char scs[32];
        if (end == sc)
            snprintf(scs, sizeof scs, "%s", sc[0] ? "running" : "?");
        else if (name)
            snprintf(scs, sizeof scs, "%s", name);
        else
            snprintf(scs, sizeof scs, "%ld", nr);
        printf("thread who=%s pid=%d tid=%s comm=%s syscall=%s wchan=%s\n", who, pid, e->d_name,
               comm[0] ? comm : "?", scs, wchan[0] ? wchan : "?");
    }
    closedir(d);
}

/* ---- running a pipeline ---- */

static GstElement *launch(const char *desc)
{
    GError *err = NULL;
    GstElement *p = gst_parse_launch(desc, &err);
    if (!p || err) {
        fprintf(stderr, "bench_gst: cannot build '%s': %s\n", desc, err ? err->message : "?");
        return NULL;
    }
    return p;
}

static void print_error(GstMessage *msg)
{
    GError *err = NULL;
    gchar *dbg = NULL;
    gst_message_parse_error(msg, &err, &dbg);
    fprintf(stderr, "bench_gst %s: error from %s: %s (%s)\n", opt.role, GST_OBJECT_NAME(msg->src),
            err->message, dbg ? dbg : "");
    g_clear_error(&err);
    g_free(dbg);
}

/* Plays until EOS (0), an error (1) or, with watch set, a stall (3). */
static int play(GstElement *pipe, gboolean watch)
{
    GstBus *bus = gst_element_get_bus(pipe);
    int rc = -1;
    uint64_t t0 = now_ns();
    if (gst_element_set_state(pipe, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
        GstMessage *m = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
        if (m) {
            print_error(m);
            gst_message_unref(m);
        } else {
            fprintf(stderr, "bench_gst %s: the pipeline refused to play\n", opt.role);
        }
        rc = 1;
    }
    while (rc < 0) {
        GstMessage *m = gst_bus_timed_pop_filtered(bus, 50 * GST_MSECOND,
                                                   GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
        if (m) {
            if (GST_MESSAGE_TYPE(m) == GST_MESSAGE_EOS) {
                rc = 0;
            } else {
                print_error(m);
                rc = 1;
            }
            gst_message_unref(m);
            continue;
        }
        if (!watch)
            continue;
        gint64 n = __atomic_load_n(&st.frames, __ATOMIC_ACQUIRE);
        /* Signed: a frame may arrive between reading the clock and reading last_ns. */
        gint64 idle = n == 0 ? (gint64)(now_ns() - t0)
                             : (gint64)now_ns() - __atomic_load_n(&st.last_ns, __ATOMIC_ACQUIRE);
        gint64 limit = (n == 0 ? opt.start_ms : opt.stall_ms) * (gint64)1000000;
        if (idle > limit) {
            printf("result role=%s variant=%s stalled=1 frames=%" G_GINT64_FORMAT " of=%ld "
                   "idle_ms=%.0f\n", opt.role, opt.variant, n, opt.num, (double)idle / 1e6);
            dump_threads("consumer", getpid());
            if (opt.peer_pid > 0)
                dump_threads("producer", opt.peer_pid);
            fflush(stdout);
            _exit(3); /* a stuck streaming thread would keep a state change from finishing */
        }
    }
    gst_object_unref(bus);
    return rc;
}

static gboolean add_probe(GstElement *pipe, const char *elem, const char *pad_name,
                          GstPadProbeType type, GstPadProbeCallback cb)
{
    GstElement *e = gst_bin_get_by_name(GST_BIN(pipe), elem);
    GstPad *pad = e ? gst_element_get_static_pad(e, pad_name) : NULL;
    if (!pad) {
        fprintf(stderr, "bench_gst: no pad %s.%s\n", elem, pad_name);
        if (e)
            gst_object_unref(e);
        return FALSE;
    }
    gst_pad_add_probe(pad, type, cb, NULL, NULL);
    gst_object_unref(pad);
    gst_object_unref(e);
    return TRUE;
}

static gchar *caps_string(void)
{
    return opt.fps ? g_strdup_printf("video/x-raw,format=%s,width=%d,height=%d,framerate=%d/1",
                                     opt.format, opt.width, opt.height, opt.fps)
                   : g_strdup_printf("video/x-raw,format=%s,width=%d,height=%d,framerate=0/1",
                                     opt.format, opt.width, opt.height);
}

static gchar *source_string(void)
{
    gchar *caps = caps_string();
    gchar *s = g_strdup_printf("videotestsrc name=src pattern=%s num-buffers=%ld is-live=%s ! %s",
                               opt.pattern, opt.num, opt.fps ? "true" : "false", caps);
    g_free(caps);
    return s;
}

static int cmp_i64(const void *a, const void *b)
{
    gint64 x = *(const gint64 *)a, y = *(const gint64 *)b;
    return x < y ? -1 : x > y;
}

static double pct(const gint64 *v, long n, double p)
{
    if (n == 0)
        return -1;
    long i = (long)(p / 100.0 * (double)(n - 1) + 0.5);
    return (double)v[i < n ? i : n - 1];
}

/* ---- the floors: what two processes on this machine cost per buffer without GStreamer ---- */

enum { FLOOR_MSG = 272, FLOOR_ACK = 32 }; /* sizeof(vsg_buffer), sizeof(vsg_ack) */

static void wait_fd(int fd, short events)
{
    struct pollfd p = {fd, events, 0};
    while (poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
}

/* A child that dies with us (the driver's timeout kills the parent). */
static pid_t fork_child(void)
{
    fflush(stdout);
    pid_t parent = getpid(), pid = fork();
    if (pid == 0 && (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent))
        _exit(93);
    return pid;
}

static int reap(pid_t pid)
{
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_gst %s: the child failed (status 0x%x)\n", opt.role, status);
        return 1;
    }
    return 0;
}

static int run_floor_rate(void)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        perror("bench_gst floor-rate: socketpair");
        return 1;
    }
    char buf[8192] = {0};
    pid_t pid = fork_child();
    if (pid < 0)
        return perror("fork"), 1;
    if (pid == 0) { /* consumer: receive, ack, poll only when empty */
        close(sv[0]);
        uint64_t first = 0, last = 0;
        for (long got = 0; got < opt.num;) {
            ssize_t n = recv(sv[1], buf, sizeof buf, MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                wait_fd(sv[1], POLLIN);
                continue;
            }
            if (n != FLOOR_MSG)
                _exit(1);
            last = now_ns();
            if (!got++)
                first = last;
            while (send(sv[1], buf, FLOOR_ACK, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
                if (errno != EAGAIN && errno != EINTR)
                    _exit(1);
                wait_fd(sv[1], POLLOUT);
            }
        }
        double secs = (double)(last - first) / 1e9;
        printf("result role=floor-rate variant=floor frames=%ld secs=%.6f fps=%.3f cpu_s=%.3f\n",
               opt.num, secs, secs > 0 ? (double)opt.num / secs : 0, cpu_s());
        fflush(stdout);
        _exit(0);
    }
    close(sv[1]);
    int fd = sv[0];
    long acks = 0;
    for (long i = 0; i < opt.num; i++) { /* producer: read acks, send, poll only when full */
        while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
            acks++;
        while (send(fd, buf, FLOOR_MSG, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
            if (errno != EAGAIN && errno != EINTR)
                return perror("bench_gst floor-rate: send"), 1;
            wait_fd(fd, POLLOUT);
        }
    }
    while (acks < opt.num) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0)
            acks++;
        else if (n == 0 || (errno != EAGAIN && errno != EINTR))
            break;
        else
            wait_fd(fd, POLLIN);
    }
    close(fd);
    return reap(pid);
}

static int run_floor_latency(void)
{
    int sv[2];
    if (opt.fps < 1) {
        fprintf(stderr, "bench_gst floor-latency: --fps is needed\n");
        return 2;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        perror("bench_gst floor-latency: socketpair");
        return 1;
    }
    pid_t pid = fork_child();
    if (pid < 0)
        return perror("fork"), 1;
    if (pid == 0) { /* consumer: asleep in poll until a message comes */
        close(sv[0]);
        char buf[8192];
        st.lat = g_new0(gint64, opt.num);
        for (long got = 0; got < opt.num;) {
            wait_fd(sv[1], POLLIN);
            ssize_t n = recv(sv[1], buf, sizeof buf, MSG_DONTWAIT);
            uint64_t t = now_ns();
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (n != FLOOR_MSG)
                _exit(1);
            uint64_t stamp;
            memcpy(&stamp, buf, sizeof stamp);
            if (got++ >= opt.skip)
                st.lat[st.n_lat++] = (gint64)(t - stamp);
        }
        qsort(st.lat, (size_t)st.n_lat, sizeof *st.lat, cmp_i64);
        printf("result role=floor-latency variant=floor frames=%ld lat_n=%ld lat_p50_ns=%.0f "
               "lat_p90_ns=%.0f lat_p99_ns=%.0f lat_min_ns=%.0f lat_max_ns=%.0f\n", opt.num,
               st.n_lat, pct(st.lat, st.n_lat, 50), pct(st.lat, st.n_lat, 90),
               pct(st.lat, st.n_lat, 99), pct(st.lat, st.n_lat, 0), pct(st.lat, st.n_lat, 100));
        fflush(stdout);
        _exit(0);
    }
    close(sv[1]);
    char buf[FLOOR_MSG] = {0};
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    long period = 1000000000L / opt.fps;
    for (long i = 0; i < opt.num; i++) {
        next.tv_nsec += period;
        while (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR) {
        }
        uint64_t t = now_ns();
        memcpy(buf, &t, sizeof t);
        if (send(sv[0], buf, sizeof buf, MSG_NOSIGNAL) != (ssize_t)sizeof buf)
            return perror("bench_gst floor-latency: send"), 1;
    }
    int rc = reap(pid);
    close(sv[0]);
    return rc;
}

/* The consumer's (and one process's) figures. */
static int report_frames(const char *extra)
{
    if (!st.first_ns || !st.eos_ns || st.eos_ns <= st.first_ns) {
        fprintf(stderr, "bench_gst %s: no frame or no EOS seen (frames %" G_GINT64_FORMAT ")\n",
                opt.role, (gint64)st.frames);
        return 1;
    }
    double secs = (double)(st.eos_ns - st.first_ns) / 1e9;
    printf("result role=%s variant=%s frames=%" G_GINT64_FORMAT " secs=%.6f fps=%.3f first_ns=%" G_GUINT64_FORMAT
           " eos_ns=%" G_GUINT64_FORMAT, opt.role, opt.variant ? opt.variant : "-", (gint64)st.frames, secs,
           (double)st.frames / secs, (guint64)st.first_ns, (guint64)st.eos_ns);
    if (opt.latency) {
        qsort(st.lat, (size_t)st.n_lat, sizeof *st.lat, cmp_i64);
        printf(" lat_n=%ld bad_stamps=%ld lat_p50_ns=%.0f lat_p90_ns=%.0f lat_p99_ns=%.0f "
               "lat_min_ns=%.0f lat_max_ns=%.0f", st.n_lat, st.bad_stamps,
               pct(st.lat, st.n_lat, 50), pct(st.lat, st.n_lat, 90), pct(st.lat, st.n_lat, 99),
               pct(st.lat, st.n_lat, 0), pct(st.lat, st.n_lat, 100));
    }
    printf(" cpu_s=%.3f%s\n", cpu_s(), extra ? extra : "");
    return 0;
}

static int run_onepc(void)
{
    gchar *src = source_string();
    gchar *desc = g_strdup_printf("%s ! fakesink name=sink sync=false", src);
    GstElement *pipe = launch(desc);
    g_free(src);
    g_free(desc);
    if (!pipe)
        return 1;
    opt.variant = "onepc";
    if (!add_probe(pipe, "sink", "sink",
                   GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM, count_probe))
        return 1;
    int rc = play(pipe, FALSE);
    gst_element_set_state(pipe, GST_STATE_NULL);
    gst_object_unref(pipe);
    return rc ? rc : report_frames(NULL);
}

static int run_producer(void)
{
    gchar *src = source_string(), *sink;
    if (!opt.variant || !opt.socket)
        return usage(stderr), 2;
    if (!strcmp(opt.variant, "varslot")) {
        if (!opt.segment)
            return usage(stderr), 2;
        sink = g_strdup_printf("varslotsink name=sink socket-path=%s segment=%s "
                               "wait-for-connection=true", opt.socket, opt.segment);
    } else if (!strcmp(opt.variant, "shm") || !strcmp(opt.variant, "shm-copy")) {
        gchar *size = opt.shm_size ? g_strdup_printf(" shm-size=%" G_GUINT64_FORMAT, opt.shm_size)
                                   : g_strdup("");
        sink = g_strdup_printf("%sshmsink name=sink socket-path=%s wait-for-connection=true "
                               "sync=false%s",
                               strcmp(opt.variant, "shm-copy") ? ""
                                                               : "identity drop-allocation=true ! ",
                               opt.socket, size);
        g_free(size);
    } else {
        fprintf(stderr, "bench_gst producer: unknown variant %s\n", opt.variant);
        return 2;
    }
    /* The tee's second branch is a local display's stand-in: it holds each buffer a moment. */
    gchar *desc = opt.tee ? g_strdup_printf("%s ! tee name=t t. ! queue ! %s t. ! queue ! fakesink "
                                            "sync=false", src, sink)
                          : g_strdup_printf("%s ! %s", src, sink);
    GstElement *pipe = launch(desc);
    g_free(src);
    g_free(sink);
    g_free(desc);
    if (!pipe)
        return 1;
    if (opt.stamp && !add_probe(pipe, "sink", "sink", GST_PAD_PROBE_TYPE_BUFFER, stamp_probe))
        return 1;
    if (opt.clients > 1 && strcmp(opt.variant, "varslot")) {
        /* shmsink accepts in a thread of its own: its clients can all come before frame 1. */
        GstElement *s = gst_bin_get_by_name(GST_BIN(pipe), "sink");
        g_signal_connect(s, "client-connected", G_CALLBACK(client_connected), NULL);
        gst_object_unref(s);
        if (!add_probe(pipe, "sink", "sink", GST_PAD_PROBE_TYPE_BUFFER, gate_probe))
            return 1;
    }
    printf("started pid=%d\n", (int)getpid());
    fflush(stdout);
    int rc = play(pipe, FALSE);
    if (rc == 0) {
        /* The counters, read before stop() lets the segment and allocator go. */
        GstElement *s = gst_bin_get_by_name(GST_BIN(pipe), "sink");
        printf("result role=producer variant=%s stamped=%ld unstamped=%ld", opt.variant,
               st.stamped, st.unstamped);
        if (!strcmp(opt.variant, "varslot")) {
            guint64 sent = 0, shared = 0, copied = 0, fanout = 0, fallbacks = 0;
            g_object_get(s, "buffers-sent", &sent, "buffers-shared", &shared, "copied-buffers", &copied,
                         "fanout-copies", &fanout, "fallbacks", &fallbacks, NULL);
            printf(" buffers_sent=%" G_GUINT64_FORMAT " buffers_shared=%" G_GUINT64_FORMAT
                   " copied_buffers=%" G_GUINT64_FORMAT " fanout_copies=%" G_GUINT64_FORMAT
                   " fallbacks=%" G_GUINT64_FORMAT, sent, shared, copied, fanout, fallbacks);
        }
        printf(" cpu_s=%.3f\n", cpu_s());
        gst_object_unref(s);
    }
    gst_element_set_state(pipe, GST_STATE_NULL);
    gst_object_unref(pipe);
    return rc;
}

static int run_consumer(void)
{
    gchar *desc;
    if (!opt.variant || !opt.socket)
        return usage(stderr), 2;
    if (!strcmp(opt.variant, "varslot")) {
        desc = g_strdup_printf("varslotsrc name=src socket-path=%s wait-for-producer=%s ! fakesink "
                               "name=sink sync=false", opt.socket, opt.wait_producer ? "true" : "false");
    } else if (!strcmp(opt.variant, "shm")) {
        /* shmsrc carries bytes only: caps from a capsfilter; num-buffers gives it an EOS. */
        gchar *caps = caps_string();
        desc = g_strdup_printf("shmsrc name=src socket-path=%s num-buffers=%ld is-live=%s "
                               "do-timestamp=%s ! %s ! fakesink name=sink sync=false",
                               opt.socket, opt.num, opt.fps ? "true" : "false",
                               opt.fps ? "true" : "false", caps);
        g_free(caps);
    } else {
        fprintf(stderr, "bench_gst consumer: unknown variant %s\n", opt.variant);
        return 2;
    }
    GstElement *pipe = launch(desc);
    g_free(desc);
    if (!pipe)
        return 1;
    if (opt.latency)
        st.lat = g_new0(gint64, opt.num);
    if (opt.latency && opt.dump)
        st.pairs = g_malloc0_n((gsize)opt.num, sizeof *st.pairs);
    if (!add_probe(pipe, "src", "src",
                   GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM, count_probe))
        return 1;
    int rc = play(pipe, TRUE);
    gchar *extra = NULL;
    if (rc == 0 && !strcmp(opt.variant, "varslot")) {
        GstElement *s = gst_bin_get_by_name(GST_BIN(pipe), "src");
        guint64 received = 0, refused = 0;
        g_object_get(s, "buffers-received", &received, "buffers-refused", &refused, NULL);
        extra = g_strdup_printf(" received=%" G_GUINT64_FORMAT " refused=%" G_GUINT64_FORMAT,
                                received, refused);
        gst_object_unref(s);
    }
    gst_element_set_state(pipe, GST_STATE_NULL);
    gst_object_unref(pipe);
    if (rc == 0)
        rc = report_frames(extra);
    g_free(extra);
    if (st.pairs) {
        FILE *f = fopen(opt.dump, "w");
        for (long i = 0; f && i < st.n_pairs; i++)
            fprintf(f, "%" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT "\n", st.pairs[i][0], st.pairs[i][1]);
        if (!f || fclose(f) != 0) {
            fprintf(stderr, "bench_gst consumer: cannot write %s\n", opt.dump);
            rc = rc ? rc : 1;
        }
    }
    return rc;
}

int main(int argc, char **argv)
{
    int rc = parse_args(argc, argv);
    if (rc)
        return rc;
    gst_init(NULL, NULL);
    if (!strcmp(opt.role, "onepc"))
        rc = run_onepc();
    else if (!strcmp(opt.role, "producer"))
        rc = run_producer();
    else if (!strcmp(opt.role, "consumer"))
        rc = run_consumer();
    else if (!strcmp(opt.role, "floor-rate"))
        rc = run_floor_rate();
    else if (!strcmp(opt.role, "floor-latency"))
        rc = run_floor_latency();
    else {
        usage(stderr);
        rc = 2;
    }
    fflush(stdout);
    return rc;
}
