/* varslot top: a live view of a segment, redrawn every second: classes with allocated/total
 * and a bar, peers with pid, state and slots, and the allocation rate. On a terminal it draws
 * with plain ANSI codes on the alternate screen and reads q; anywhere else it prints plain
 * frames, one a second (--ansi forces the codes, --once prints one frame and exits). It ends
 * when the segment's name is removed (exit 1), and on q, Ctrl-C, SIGTERM or SIGHUP (exit 0),
 * giving the terminal back as it found it. Read-only, like stat: it never joins or reaps. */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define INTERVAL_MS 1000

/* ---- signals: flags for the loop, and a way out of a read of a truncated segment ---- */

static volatile sig_atomic_t stop_requested, resized, bus_armed;
static sigjmp_buf bus_jump;

static void on_stop(int sig) { stop_requested = sig; }
static void on_winch(int sig) { (void)sig; resized = 1; }
/* A segment file truncated by someone else raises SIGBUS on the next read of its pages. */
static void on_bus(int sig)
{
    if (bus_armed)
        siglongjmp(bus_jump, 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install_handlers(void)
{
    struct sigaction sa = {0};
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop; /* no SA_RESTART: poll returns at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = on_winch;
    sigaction(SIGWINCH, &sa, NULL);
    sa.sa_handler = on_bus;
    sigaction(SIGBUS, &sa, NULL);
}

/* ---- the terminal ---- */

struct screen {
    bool ansi;     /* escape codes: stdout is a terminal, or --ansi */
    bool keys;     /* q is read from stdin, a terminal */
    bool raw;      /* stdin's modes were changed and must be restored */
    bool drawn;    /* the alternate screen is on and the cursor hidden */
    struct termios saved;
    unsigned cols, rows; /* rows 0: no limit (not a terminal) */
};

static void measure(struct screen *s)
{
    struct winsize ws;
    s->cols = 80;
    s->rows = 0;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
        s->cols = ws.ws_col;
        s->rows = ws.ws_row;
    }
}

static void screen_open(struct screen *s, bool force_ansi, bool once)
{
    memset(s, 0, sizeof *s);
    bool tty = isatty(STDOUT_FILENO);
    s->ansi = tty || force_ansi;
    measure(s);
    if (once)
        return; /* one frame, printed in place: no screen of its own, no keys */
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &s->saved) == 0) {
        struct termios t = s->saved;
        t.c_lflag &= ~(tcflag_t)(ICANON | ECHO); /* q without Enter, not echoed; ^C still signals */
        t.c_cc[VMIN] = 1;
        t.c_cc[VTIME] = 0;
        s->raw = tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0;
        s->keys = true;
    }
    if (s->ansi) {
        fputs("\033[?1049h\033[?25l", stdout); /* alternate screen, cursor hidden */
        s->drawn = true;
    }
}

/* Everything screen_open changed, undone: on every way out. */
static void screen_close(struct screen *s)
{
    if (s->drawn)
        fputs("\033[?25h\033[?1049l", stdout);
    fflush(stdout);
    if (s->raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &s->saved);
    s->drawn = s->raw = false;
}

/* ---- a frame: lines cut to the terminal's width, and to its height ---- */

struct frame {
    const struct screen *s;
    FILE *out;
    unsigned lines;
    unsigned dropped; /* lines that did not fit */
};

__attribute__((format(printf, 2, 3))) static void line(struct frame *f, const char *fmt, ...)
{
    if (f->s->rows && f->lines + 1 >= f->s->rows) { /* the last row says what was left out */
        f->dropped++;
        return;
    }
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((unsigned)n > f->s->cols)
        n = (int)f->s->cols;
    if (n > (int)sizeof buf - 1)
        n = (int)sizeof buf - 1;
    fwrite(buf, 1, (size_t)n, f->out);
    fputs(f->s->ansi ? "\033[K\n" : "\n", f->out); /* clear what the last frame left there */
    f->lines++;
}

static void bar(char *out, size_t width, uint64_t part, uint64_t whole)
{
    size_t full = whole ? (size_t)(part * width / whole) : 0;
    if (part && !full)
        full = 1; /* one slot in use is never an empty bar */
    for (size_t i = 0; i < width; i++)
        out[i] = i < full ? '#' : '.';
    out[width] = '\0';
}

struct view {
    const char *name;
    struct census *cs;
    bool have_rate;
    double rate;     /* allocations per second since the previous sample */
    bool interactive;
};

static void draw(const struct screen *s, vs_segment *seg, const struct view *v)
{
    vs_pool *pool = vs_segment_pool(seg);
    const struct census *cs = v->cs;
    struct frame f = {s, stdout, 0, 0};
    if (s->ansi)
        fputs("\033[H", stdout); /* overwrite in place: no flash of an empty screen */
    char rate[32] = "-";
    if (v->have_rate)
        snprintf(rate, sizeof rate, "%.0f/s", v->rate);
    if (v->interactive)
        line(&f, "varslot top %s (every %d s; q quits)", v->name, INTERVAL_MS / 1000);
    size_t map_len = 0;
    vs_segment_mapping(seg, NULL, &map_len, NULL);
    line(&f, "segment %s: %zu bytes, %zu of %" PRIu32 " peers", v->name, map_len, cs->peer_count,
         vs_segment_max_peers(seg));
    line(&f, "allocations: %" PRIu64 " in all, %s", cs->allocations, rate);
    line(&f, "%s", "");
    /* 5 + 2 + 10 + 2 + 19 + 2 + [bar] + 2 + 4 columns: the bar takes what is left. */
    size_t width = s->cols > 48 + 10 ? s->cols - 48 : 10;
    if (width > 60)
        width = 60;
    char b[64];
    line(&f, "%5s  %10s  %19s  %-*s  %4s", "class", "slot_size", "allocated/total", (int)width + 2,
         "use", "");
    for (size_t c = 0; c < cs->class_count; c++) {
        uint32_t total = vs_pool_slot_count(pool, c);
        char frac[32];
        snprintf(frac, sizeof frac, "%" PRIu64 "/%" PRIu32, cs->allocated[c], total);
        bar(b, width, cs->allocated[c], total);
        line(&f, "%5zu  %10" PRIu32 "  %19s  [%s]  %3.0f%%", c, vs_pool_slot_size(pool, c), frac, b,
             total ? 100.0 * (double)cs->allocated[c] / total : 0.0);
    }
    line(&f, "%s", "");
    if (cs->peer_count == 0)
        line(&f, "no peers");
    else
        line(&f, "%5s  %10s  %-8s  %10s", "peer", "pid", "state", "slots");
    for (size_t i = 0; i < cs->peer_count; i++) {
        const struct peer_row *p = &cs->peers[i];
        line(&f, "%5u  %10" PRId32 "  %-8s  %10" PRIu64, (unsigned)p->info.id, p->info.pid, p->state,
             p->slots);
    }
    if (cs->unowned)
        line(&f, "unowned allocated slots: %" PRIu64, cs->unowned);
    if (f.dropped) { /* the row line() kept free */
        f.s = &(struct screen){.ansi = s->ansi, .cols = s->cols, .rows = 0};
        line(&f, "... %u more lines: enlarge the window", f.dropped);
    }
    if (s->ansi)
        fputs("\033[J", stdout); /* and below the frame */
    else if (v->interactive)
        fputs("\n", stdout); /* frames one after the other: a blank line between them */
    fflush(stdout);
}

/* ---- sampling ---- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* false: the segment's file was truncated under us (reading it raised SIGBUS). */
static bool sample(vs_segment *seg, struct census *cs, uint64_t *at)
{
    if (sigsetjmp(bus_jump, 1)) {
        bus_armed = 0;
        return false;
    }
    bus_armed = 1;
    take_census(seg, cs);
    bus_armed = 0;
    free(cs->groups); /* stat's summary by tag: not shown here */
    cs->groups = NULL;
    *at = now_ns();
    return true;
}

static double rate_between(const struct census *a, uint64_t a_ns, const struct census *b, uint64_t b_ns)
{
    if (b_ns <= a_ns || b->allocations < a->allocations)
        return 0;
    return (double)(b->allocations - a->allocations) * 1e9 / (double)(b_ns - a_ns);
}

/* Waits up to ms for q or a signal. true: time to stop. */
static bool wait_for_keys(struct screen *s, int ms)
{
    struct pollfd pfd = {STDIN_FILENO, POLLIN, 0};
    int n = poll(&pfd, s->keys ? 1 : 0, ms);
    if (n > 0 && pfd.revents) {
        char keys[64];
        ssize_t got = read(STDIN_FILENO, keys, sizeof keys);
        if (got <= 0)
            s->keys = false; /* the terminal went away: watch on until a signal */
        for (ssize_t i = 0; i < got; i++)
            if (keys[i] == 'q' || keys[i] == 'Q')
                return true;
    }
    return stop_requested != 0;
}

static int vanished(struct screen *s, const char *name, const char *why)
{
    screen_close(s);
    fprintf(stderr, "varslot: top %s: %s\n", name, why);
    return EXIT_LIBRARY;
}

int run_top(const struct command *cmd, const char *name, char *const *values)
{
    vs_segment seg;
    int status = open_segment(cmd, name, values, &seg);
    if (status != 0)
        return status;
    struct census *samples = calloc(2, sizeof *samples);
    if (!samples) {
        vs_segment_close(&seg);
        fprintf(stderr, "varslot: %s %s: out of memory\n", cmd->name, name);
        return EXIT_LIBRARY;
    }
    bool once = values[OPT_ONCE] != NULL;
    struct screen s;
    install_handlers();
    screen_open(&s, values[OPT_ANSI] != NULL, once);
    struct census *prev = &samples[0], *cur = &samples[1];
    uint64_t prev_ns = 0, cur_ns = 0;
    struct view v = {name, cur, false, 0, !once};
    bool have_prev = false;
    uint64_t next = now_ns();
    while (!stop_requested) {
        if (now_ns() >= next) {
            if (vs_segment_check_name(&seg) != VS_OK) {
                status = vanished(&s, name, "the segment was removed (its name is gone or names "
                                            "another segment)");
                break;
            }
            if (!sample(&seg, cur, &cur_ns)) {
                status = vanished(&s, name, "the segment's file was truncated under us");
                break;
            }
            v.cs = cur;
            v.have_rate = have_prev;
            v.rate = have_prev ? rate_between(prev, prev_ns, cur, cur_ns) : 0;
            if (!once || have_prev)
                draw(&s, &seg, &v);
            if (once && have_prev)
                break;
            struct census *t = prev;
            prev = cur;
            cur = t;
            prev_ns = cur_ns;
            have_prev = true;
            next += INTERVAL_MS * 1000000ull;
            if (next < now_ns()) /* stopped or starved: no burst of frames to catch up */
                next = now_ns() + INTERVAL_MS * 1000000ull;
        }
        if (resized) { /* the last frame again, at the new size */
            resized = 0;
            measure(&s);
            if (have_prev && !once) {
                v.cs = prev;
                draw(&s, &seg, &v);
            }
        }
        uint64_t t = now_ns();
        if (next > t && wait_for_keys(&s, (int)((next - t) / 1000000u) + 1))
            break;
    }
    screen_close(&s);
    free(samples);
    vs_segment_close(&seg);
    return status;
}
