/* Test helper for test-cli.sh: runs a command on a pseudo-terminal of its own, as a user's
 * terminal would, and lets the test type and resize it.
 *
 *   pty-run COLS ROWS LOG CMD [ARGS...]
 *
 * Everything the command writes to the terminal is appended to LOG as it comes (escape codes
 * included). Lines on pty-run's stdin drive the terminal: "keys TEXT" types TEXT, "ctrl-c"
 * types ^C (the terminal sends SIGINT), "resize COLS ROWS" resizes it (the kernel sends
 * SIGWINCH). When the command has exited, pty-run prints "exit N" (or "signal N") and
 * "termios same" or "termios changed": whether the command left the terminal's modes as it
 * found them. Exits 0 once it has reported, 2 on bad usage, 1 when the terminal fails. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#include <utmp.h>

static int fail(const char *what)
{
    fprintf(stderr, "pty-run: %s: %s\n", what, strerror(errno));
    return 1;
}

static void control(int master, char *cmd)
{
    unsigned cols, rows;
    cmd[strcspn(cmd, "\n")] = '\0';
    if (!strncmp(cmd, "keys ", 5)) {
        if (write(master, cmd + 5, strlen(cmd + 5)) < 0)
            fail("typing");
    } else if (!strcmp(cmd, "ctrl-c")) {
        if (write(master, "\003", 1) < 0)
            fail("typing ^C");
    } else if (sscanf(cmd, "resize %u %u", &cols, &rows) == 2) {
        struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
        if (ioctl(master, TIOCSWINSZ, &ws) != 0)
            fail("resizing");
    } else {
        fprintf(stderr, "pty-run: unknown control line '%s'\n", cmd);
    }
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: pty-run COLS ROWS LOG CMD [ARGS...]\n");
        return 2;
    }
    struct winsize ws = {.ws_row = (unsigned short)atoi(argv[2]), .ws_col = (unsigned short)atoi(argv[1])};
    int log = open(argv[3], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log < 0)
        return fail(argv[3]);
    int master, slave;
    if (openpty(&master, &slave, NULL, NULL, &ws) != 0)
        return fail("openpty");
    struct termios before, after;
    if (tcgetattr(slave, &before) != 0)
        return fail("tcgetattr");
    pid_t pid = fork();
    if (pid < 0)
        return fail("fork");
    if (pid == 0) {
        close(master);
        if (login_tty(slave) != 0) /* its own session, the pty its controlling terminal */
            _exit(126);
        execvp(argv[4], argv + 4);
        _exit(127);
    }
    close(slave);
    int status = 0;
    bool have_input = true, exited = false;
    char buf[4096], cmd[256];
    size_t cmd_len = 0;
    while (!exited) {
        struct pollfd p[2] = {{master, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
        if (poll(p, have_input ? 2 : 1, 100) < 0 && errno != EINTR)
            return fail("poll");
        if (p[0].revents) {
            ssize_t n = read(master, buf, sizeof buf);
            if (n > 0 && write(log, buf, (size_t)n) != n)
                return fail("writing the log");
            if (n <= 0) /* EIO: every slave descriptor is closed */
                exited = waitpid(pid, &status, 0) == pid;
        }
        if (have_input && p[1].revents) {
            char c;
            ssize_t n = read(STDIN_FILENO, &c, 1);
            if (n <= 0)
                have_input = false;
            else if (c == '\n' || cmd_len == sizeof cmd - 1) {
                cmd[cmd_len] = '\0';
                control(master, cmd);
                cmd_len = 0;
            } else {
                cmd[cmd_len++] = c;
            }
        }
        if (!exited && waitpid(pid, &status, WNOHANG) == pid) {
            exited = true;
            while (poll(p, 1, 0) > 0 && p[0].revents & POLLIN) { /* what it wrote last */
                ssize_t n = read(master, buf, sizeof buf);
                if (n <= 0 || write(log, buf, (size_t)n) != n)
                    break;
            }
        }
    }
    if (WIFEXITED(status))
        printf("exit %d\n", WEXITSTATUS(status));
    else
        printf("signal %d\n", WTERMSIG(status));
    bool same = tcgetattr(master, &after) == 0 && before.c_lflag == after.c_lflag &&
                before.c_iflag == after.c_iflag && before.c_oflag == after.c_oflag &&
                !memcmp(before.c_cc, after.c_cc, sizeof before.c_cc);
    printf("termios %s\n", same ? "same" : "changed");
    return 0;
}
