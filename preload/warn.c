/* A bad VARSLOT_* value is warned about once per process tree, not once per process.
 *
 * A setting is inherited by every process a program starts: make's recipes, a shell loop's
 * commands, git's helpers. Warned per process, one mistake prints hundreds of lines. The
 * environment must stay exactly as the user set it (programs see it; tests compare it with
 * and without the shim), and there is no daemon to remember anything, so the tree leaves a
 * marker in the file system:
 *
 * - The tree's top is the process that brought the setting in. From this process up, each
 *   parent that was started with the same VARIABLE=value and the same LD_PRELOAD (its
 *   /proc/PID/environ) belongs to the tree: `VARSLOT_X=bad LD_PRELOAD=... make` is make's
 *   tree, and each command a shell, a test harness or a terminal starts with a setting of
 *   its own is a tree of its own. Keying on the session or process group instead would
 *   silence every later command typed in a terminal, or one test after another.
 * - The marker is /dev/shm/.varslot-warned-UID/PID-START-HASH: the top's pid and start time
 *   (together they name one process for the whole boot, and /dev/shm is emptied at boot),
 *   and a hash of VARIABLE=value, so another bad setting still gets its line. Creating it
 *   with O_EXCL decides, atomically, the one process that warns.
 * - Whoever makes a marker sweeps those whose top has exited: they stay few.
 *
 * Whatever fails (no /proc, no /dev/shm, a directory that is not ours) means: warn. The worst
 * case is a second line (an orphan whose top died is a top of its own), never a tree that
 * was not told. Syscalls only: this runs inside the first malloc. */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_TREE_DEPTH 64

static char *proc_path(char *buf, const char *end, uint64_t pid, const char *file)
{
    char *p = vsp_append(buf, end, "/proc/");
    p = vsp_fmt_u64(p, end, pid);
    return vsp_append(vsp_append(p, end, "/"), end, file);
}

/* pid's parent and start time (clock ticks since boot), from /proc/PID/stat. */
static bool proc_stat(uint64_t pid, uint64_t *ppid, uint64_t *start)
{
    char path[48], buf[1024];
    proc_path(path, path + sizeof path, pid, "stat");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name before it may hold anything */
    if (!p)
        return false;
    /* after ')': state, ppid (field 4), ..., starttime (field 22) */
    uint64_t field[20] = {0};
    int k = -1;
    for (p++; *p && k < 20; p++) {
        if (*p == ' ')
            k++;
        else if (k >= 1 && *p >= '0' && *p <= '9')
            field[k - 1] = field[k - 1] * 10 + (uint64_t)(*p - '0');
    }
    if (k < 20)
        return false;
    *ppid = field[0];
    *start = field[18];
    return true;
}

/* An environment entry as two pieces, "NAME=" and its value: a value may be of any length. */
struct entry {
    const char *head, *tail;
    size_t head_len, len;
};

static struct entry entry_of(const char *head, const char *tail)
{
    size_t head_len = strlen(head);
    return (struct entry){head, tail, head_len, head_len + strlen(tail)};
}

static char entry_at(const struct entry *e, size_t i)
{
    return i < e->head_len ? e->head[i] : e->tail[i - e->head_len];
}

/* Whether pid was started with each of the n entries in its environment. */
static bool started_with(uint64_t pid, const struct entry *want, int n)
{
    char path[48], buf[4096];
    proc_path(path, path + sizeof path, pid, "environ");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool match[2] = {true, true}, found[2] = {false, false};
    size_t pos = 0;
    ssize_t got;
    while ((got = read(fd, buf, sizeof buf)) > 0 || (got < 0 && errno == EINTR))
        for (ssize_t i = 0; i < got; i++) { /* entries end in '\0'; match them as they stream */
            for (int k = 0; k < n; k++) {
                if (buf[i] == '\0')
                    found[k] |= match[k] && pos == want[k].len;
                else
                    match[k] = match[k] && pos < want[k].len && entry_at(&want[k], pos) == buf[i];
            }
            if (buf[i] == '\0') {
                pos = 0;
                match[0] = match[1] = true;
            } else {
                pos++;
            }
        }
    close(fd);
    return found[0] && (n < 2 || found[1]);
}

/* The marker's name: TOP_PID-TOP_START-HASH. */
static void marker_name(char *name, const char *end, const char *variable, const char *value)
{
    uint64_t h = 0xcbf29ce484222325ull, pid = (uint64_t)getpid(), ppid, start;
    char head[64];
    vsp_append(vsp_append(head, head + sizeof head, variable), head + sizeof head, "=");
    for (const char *s = head; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    for (const char *s = value; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;

    const char *preload = getenv("LD_PRELOAD");
    struct entry want[2] = {entry_of(head, value), entry_of("LD_PRELOAD=", preload ? preload : "")};
    for (int depth = 0; depth < MAX_TREE_DEPTH; depth++) {
        if (!proc_stat(pid, &ppid, &start) || ppid <= 1 || !started_with(ppid, want, preload ? 2 : 1))
            break;
        pid = ppid;
    }
    if (!proc_stat(pid, &ppid, &start))
        start = 0; /* no /proc: this process is as good a top as any */
    char *p = vsp_fmt_u64(name, end, pid);
    p = vsp_fmt_u64(vsp_append(p, end, "-"), end, start);
    p = vsp_append(p, end, "-");
    for (int shift = 60; shift >= 0 && p < end - 1; shift -= 4)
        *p++ = "0123456789abcdef"[(h >> shift) & 15];
    *p = '\0';
}

/* Removes the markers whose top has exited (its pid is gone or is another process now). */
static void sweep(int dfd)
{
    char buf[4096];
    long got;
    while ((got = syscall(SYS_getdents64, dfd, buf, sizeof buf)) > 0)
        for (long off = 0; off < got;) {
            struct dirent64 *d = (struct dirent64 *)(buf + off);
            off += d->d_reclen;
            uint64_t pid = 0, start = 0, ppid, now;
            const char *c = d->d_name;
            for (; *c >= '0' && *c <= '9'; c++)
                pid = pid * 10 + (uint64_t)(*c - '0');
            if (*c++ != '-' || !pid)
                continue; /* ".", "..", nothing of ours */
            for (; *c >= '0' && *c <= '9'; c++)
                start = start * 10 + (uint64_t)(*c - '0');
            if (*c == '-' && (!proc_stat(pid, &ppid, &now) || now != start))
                unlinkat(dfd, d->d_name, 0);
        }
}

bool vsp_warning_is_new(const char *variable, const char *value)
{
    int saved_errno = errno;
    bool is_new = true;
    char dir[64], name[80];
    vsp_fmt_u64(vsp_append(dir, dir + sizeof dir, "/dev/shm/.varslot-warned-"), dir + sizeof dir,
                (uint64_t)getuid());
    (void)mkdir(dir, 0700);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    /* Only a directory of ours that nobody else can write decides that we stay quiet. */
    if (dfd >= 0 && fstat(dfd, &st) == 0 && st.st_uid == getuid() && (st.st_mode & 0777) == 0700) {
        marker_name(name, name + sizeof name, variable, value);
        int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0) {
            close(fd);
            sweep(dfd);
        } else if (errno == EEXIST) {
            is_new = false;
        }
    }
    if (dfd >= 0)
        close(dfd);
    errno = saved_errno;
    return is_new;
}
