/* varslot run: start an unmodified program under the preload shim. It only prepares the
 * environment (LD_PRELOAD with the shim's absolute path first, the VARSLOT_* options) and
 * execs, so the program's pid, exit status and signals are its own. */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SHIM_NAME "libvarslot-preload.so"

/* Takes dir/SHIM_NAME as an absolute path if it is there and readable. */
static int shim_in(const char *dir, char *out, size_t len)
{
    char path[PATH_MAX], real[PATH_MAX];
    int w = snprintf(path, sizeof path, "%s/" SHIM_NAME, dir);
    if (w < 0 || (size_t)w >= sizeof path || !realpath(path, real) || access(real, R_OK) != 0)
        return -1;
    w = snprintf(out, len, "%s", real);
    return w < 0 || (size_t)w >= len ? -1 : 0;
}

/* First ../lib beside this binary's bin/ (the build tree, and an installed copy wherever it
 * was moved or staged), then the LIBDIR make install built in (for a LIBDIR not PREFIX/lib). */
static int find_shim(char *out, size_t len)
{
    char exe[PATH_MAX], dir[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        int w = snprintf(dir, sizeof dir, "%s/../lib", dirname(exe));
        if (w > 0 && (size_t)w < sizeof dir && shim_in(dir, out, len) == 0)
            return 0;
    }
#ifdef VS_LIBDIR
    if (shim_in(VS_LIBDIR, out, len) == 0)
        return 0;
#endif
    return -1;
}

#ifdef VS_LIBDIR
#define SHIM_PLACES "../lib beside this program or in " VS_LIBDIR
#else
#define SHIM_PLACES "../lib beside this program"
#endif

/* LD_PRELOAD = shim, then whatever was there: the shim must come first to own malloc. */
static int set_preload(const char *shim)
{
    const char *old = getenv("LD_PRELOAD");
    size_t len = strlen(shim) + (old ? strlen(old) + 1 : 0) + 1;
    char *value = malloc(len);
    if (!value)
        return -1;
    snprintf(value, len, "%s%s%s", shim, old && *old ? ":" : "", old ? old : "");
    int rc = setenv("LD_PRELOAD", value, 1);
    free(value);
    return rc;
}

/* One flag per option of the shim's table (preload/options.h), checked with the shim's own
 * parser: a mistake stops here, before the program starts, where the shim could only warn. */
static int parse_run_option(int argc, char **argv, int *i)
{
    const char *arg = argv[*i];
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    for (size_t k = 0; k < vsopt_count; k++) {
        const struct vsopt *o = &vsopt_table[k];
        if (strlen(o->flag) != len || strncmp(arg, o->flag, len) != 0)
            continue;
        const char *v = "1";
        if (o->metavar[0]) {
            if (eq)
                v = eq + 1;
            else if (*i + 1 < argc)
                v = argv[++*i];
            else
                return usage_error("run: %s needs a value", o->flag);
        } else if (eq) {
            return usage_error("run: %s takes no value", o->flag);
        }
        static struct vsopt_values scratch; /* large (the classes): not on the stack */
        const char *why = o->parse(v, &scratch);
        if (why)
            return usage_error("run: bad %s '%s': %s", o->flag, v, why);
        setenv(o->variable, v, 1);
        return 0;
    }
    return usage_error("run: unknown option '%s'", arg);
}

int run_run(int argc, char **argv)
{
    int i = 0;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            i++;
            break;
        }
        if (argv[i][0] != '-')
            break; /* the command */
        int rc = parse_run_option(argc, argv, &i);
        if (rc)
            return rc;
    }
    if (i >= argc)
        return usage_error("run: no command given (varslot run [OPTIONS] -- CMD ARGS...)");
    char shim[PATH_MAX];
    if (find_shim(shim, sizeof shim) != 0) {
        fprintf(stderr, "varslot: run: cannot find " SHIM_NAME " in %s\n", SHIM_PLACES);
        return EXIT_LIBRARY;
    }
    if (set_preload(shim) != 0) {
        fprintf(stderr, "varslot: run: cannot set LD_PRELOAD: %s\n", strerror(errno));
        return EXIT_LIBRARY;
    }
    fflush(NULL);
    execvp(argv[i], argv + i);
    fprintf(stderr, "varslot: run: cannot execute '%s': %s\n", argv[i], strerror(errno));
    return errno == ENOENT ? 127 : 126; /* as a shell reports a missing or unrunnable command */
}
