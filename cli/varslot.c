/* varslot: the command-line tool over libvarslot: create, inspect, reap and remove segments.
 * Unlike the library it may allocate and print. Exits 0 done, 1 library error, 2 bad usage. */
#include "varslot.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static const char usage_head[] =
    "usage: varslot COMMAND NAME [OPTIONS]\n"
    "\n"
    "NAME '/x' (one leading '/' and no other) is a POSIX shared-memory object in /dev/shm;\n"
    "any other NAME, /abs/path included, is a file path. Put '--' before a NAME that starts\n"
    "with '-'.\n"
    "\n"
    "commands:\n";

static const char usage_tail[] =
    "\n"
    "  --trust-owner: open a segment another user owns when its group is one of yours and\n"
    "  may read and write it (one open to you only as 'other' is refused: anyone may have\n"
    "  made it); its group's members are then trusted peers\n"
    "\n"
    "  varslot help | --help | -h      this text; 'varslot COMMAND --help' for one command\n"
    "  varslot --version               the version of varslot (its library's)\n"
    "\n"
    "exit status: 0 success, 1 the library refused (message says why), 2 bad arguments\n";

/* Every argument error ends here, so they all look alike and all exit 2. */
int usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("varslot: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'varslot --help' for usage.\n", stderr);
    return EXIT_USAGE;
}

int library_error(const char *cmd, const char *name, int rc, int err)
{
    fprintf(stderr, "varslot: %s %s: %s (%s", cmd, name, vs_strerror(rc), vs_last_detail());
    if (rc == VS_ESYS && err) /* the detail names the call; errno names the reason */
        fprintf(stderr, ": %s", strerror(err));
    fputs(")\n", stderr);
    return EXIT_LIBRARY;
}

/* "/x", one leading slash and no other: a POSIX shm object, /dev/shm/x. */
static bool is_shm_name(const char *name) { return name[0] == '/' && !strchr(name + 1, '/'); }

/* Whether NAME is a file another user owns. */
static bool owned_by_another_user(const char *name)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof path, "%s%s", is_shm_name(name) ? "/dev/shm" : "", name);
    return lstat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid != geteuid();
}

int open_segment(const struct command *cmd, const char *name, char *const *values, vs_segment *seg)
{
    bool trust = values[OPT_TRUST_OWNER] != NULL;
    int rc = vs_segment_open_flags(seg, name, trust ? VS_OPEN_TRUST_OWNER : 0);
    if (rc == VS_OK)
        return 0;
    int status = library_error(cmd->name, name, rc, errno);
    if (rc == VS_EPERM && !trust && owned_by_another_user(name))
        fputs("varslot: --trust-owner accepts another user's segment shared through one of your "
              "groups\n", stderr);
    return status;
}

/* ---- strict number parsing ---- */

/* strtoull alone would accept " 5", "+5" and "-5" (negated!), so a digit must come first. */
static bool parse_u64(const char *s, int base, char **end, uint64_t *out)
{
    if (*s < '0' || *s > '9')
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, end, base);
    if (errno == ERANGE)
        return false;
    *out = v;
    return true;
}

static bool parse_count(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    return parse_u64(s, 10, &end, out) && *end == '\0' && *out >= 1 && *out <= max;
}

/* "64K:256,1M:64" -> configs; the library knows the syntax, we add the context. */
static int parse_classes(const char *spec, vs_class_config *out, size_t *n)
{
    const char *why;
    if (vs_parse_classes(spec, out, n, &why) != VS_OK)
        return usage_error("bad --classes '%s': %s", spec, why);
    return 0;
}

static int parse_max_peers(const char *s, uint32_t *out)
{
    uint64_t v;
    if (!parse_count(s, VS_MAX_PEERS, &v))
        return usage_error("bad --max-peers '%s': expected a number from 1 to %d", s, VS_MAX_PEERS);
    *out = (uint32_t)v;
    return 0;
}

/* The library opens segments read-write (another user's only through its group, and only
 * when trusted), so a mode without u+rw would lock its own owner out. */
static int parse_mode(const char *s, uint32_t *out)
{
    char *end;
    uint64_t v;
    if (!parse_u64(s, 8, &end, &v) || *end != '\0' || v > 0777)
        return usage_error("bad --mode '%s': expected octal permission bits such as 0660", s);
    if ((v & 0600) != 0600)
        return usage_error("bad --mode '%s': the owner needs read and write (0600)", s);
    *out = (uint32_t)v;
    return 0;
}

/* ---- create ---- */

static void print_size(FILE *f, uint32_t v)
{
    static const char suffix[] = "GMK";
    for (int i = 0, shift = 30; i < 3; i++, shift -= 10)
        if (v >= (1u << shift) && v % (1u << shift) == 0) {
            fprintf(f, "%" PRIu32 "%c", v >> shift, suffix[i]);
            return;
        }
    fprintf(f, "%" PRIu32, v);
}

static int run_create(const struct command *cmd, const char *name, char *const *values)
{
    vs_class_config classes[VS_MAX_CLASSES];
    vs_segment_options opts = {0}; /* zeros ask the library for its defaults */
    const char *spec = values[OPT_CLASSES], *peers = values[OPT_MAX_PEERS];
    const char *mode = values[OPT_MODE];
    int rc;
    if ((spec && (rc = parse_classes(spec, classes, &opts.class_count))) ||
        (peers && (rc = parse_max_peers(peers, &opts.max_peers))) ||
        (mode && (rc = parse_mode(mode, &opts.mode))))
        return rc;
    opts.classes = spec ? classes : NULL;

    vs_segment seg;
    rc = vs_segment_create(&seg, name, &opts);
    if (rc != VS_OK)
        return library_error(cmd->name, name, rc, errno);
    vs_pool *pool = vs_segment_pool(&seg);
    printf("created %s: classes ", name);
    for (size_t c = 0; c < vs_pool_class_count(pool); c++) {
        fputs(c ? "," : "", stdout);
        print_size(stdout, vs_pool_slot_size(pool, c));
        printf(":%" PRIu32, vs_pool_slot_count(pool, c));
    }
    printf(", %zu bytes, max peers %" PRIu32 ", mode %04o\n", seg.map_len,
           vs_segment_max_peers(&seg), opts.mode ? (unsigned)opts.mode : 0600u /* its default */);
    vs_segment_close(&seg);
    return 0;
}

/* ---- reap, rm ---- */

static int run_reap(const struct command *cmd, const char *name, char *const *values)
{
    vs_segment seg;
    unsigned reaped = 0;
    int rc = open_segment(cmd, name, values, &seg);
    if (rc)
        return rc;
    rc = vs_segment_reap(&seg, &reaped);
    vs_segment_close(&seg);
    if (rc != VS_OK)
        return library_error(cmd->name, name, rc, errno);
    printf("reaped %u dead peer%s in %s\n", reaped, reaped == 1 ? "" : "s", name);
    return 0;
}

/* Bytes of memory the segment's file holds (tmpfs: pages in use), -1 if unknown. */
static long long file_bytes(const vs_segment *seg)
{
    struct stat st;
    return fstat(seg->fd, &st) == 0 ? (long long)st.st_blocks * 512 : -1;
}

static int run_trim(const struct command *cmd, const char *name, char *const *values)
{
    vs_segment seg;
    uint64_t returned = 0;
    int rc = open_segment(cmd, name, values, &seg);
    if (rc)
        return rc;
    long long before = file_bytes(&seg);
    if ((rc = vs_segment_join(&seg, NULL)) == VS_OK)
        rc = vs_segment_trim(&seg, &returned);
    int err = errno;
    long long after = file_bytes(&seg);
    vs_segment_close(&seg);
    if (rc != VS_OK)
        return library_error(cmd->name, name, rc, err);
    printf("trimmed %s: %" PRIu64 " KiB of free slots given back; the file held %lld KiB, now %lld KiB\n",
           name, returned / 1024, before / 1024, after / 1024);
    return 0;
}

/* The library removes only what looks like a segment; --force is for one too damaged to
 * be recognised, and removes the name whatever it holds. */
static int force_remove(const struct command *cmd, const char *name)
{
    if ((is_shm_name(name) ? shm_unlink(name) : unlink(name)) != 0) {
        fprintf(stderr, "varslot: %s %s: %s\n", cmd->name, name, strerror(errno));
        return EXIT_LIBRARY;
    }
    return 0;
}

static int run_rm(const struct command *cmd, const char *name, char *const *values)
{
    int rc = values[OPT_FORCE] ? force_remove(cmd, name) : vs_segment_unlink(name);
    if (values[OPT_FORCE] && rc)
        return rc;
    if (rc != VS_OK)
        return library_error(cmd->name, name, rc, errno);
    printf("removed %s\n", name);
    return 0;
}

#define TRUST_HELP "      --trust-owner: also another user's segment, shared through one of your groups\n"

static const struct command commands[] = {
    {"create", 1u << OPT_CLASSES | 1u << OPT_MAX_PEERS | 1u << OPT_MODE,
     "  varslot create NAME [--classes SIZE:COUNT,...] [--max-peers N] [--mode OCTAL]\n"
     "      create a segment. SIZE takes K, M or G (powers of 1024), sizes strictly ascending;\n"
     "      default classes 64K:256,256K:128,1M:64,4M:32,16M:8; --max-peers 1..255 (default\n"
     "      64); --mode default 0600, must include 0600, set whatever the umask (0660 and a\n"
     "      shared group as the effective group: members may open it with --trust-owner)\n",
     run_create},
    {"stat", 1u << OPT_JSON | 1u << OPT_TRUST_OWNER,
     "  varslot stat NAME [--json] [--trust-owner]\n"
     "      per class: slot size, slot count, allocated slots; per peer: id, pid, state\n"
     "      (alive, dead = waiting to be reaped, reaping) and the slots it owns\n" TRUST_HELP,
     run_stat},
    {"ls", 1u << OPT_JSON | 1u << OPT_TRUST_OWNER,
     "  varslot ls NAME [--json] [--trust-owner]\n"
     "      every live allocation: owner peer and pid, class, slot, bytes in use, tag\n"
     "      ('-' untagged or routed by size, caller#N routed by VARSLOT_CALLERS entry N)\n"
     TRUST_HELP,
     run_ls},
    {"top", 1u << OPT_ONCE | 1u << OPT_ANSI | 1u << OPT_TRUST_OWNER,
     "  varslot top NAME [--once] [--ansi] [--trust-owner]\n"
     "      a live view, redrawn every second: per class allocated/total with a bar, per\n"
     "      peer pid, state and slots, and allocations per second; q or Ctrl-C quits. Ends\n"
     "      with exit 1 when the segment is removed. --once: one frame after one second (to\n"
     "      measure the rate), then exit; --ansi: escape codes even when not on a terminal\n"
     TRUST_HELP,
     run_top},
    {"run", 0, RUN_HELP, NULL},
    {"reap", 1u << OPT_TRUST_OWNER,
     "  varslot reap NAME [--trust-owner]\n"
     "      return the slots of dead peers and free their entries\n" TRUST_HELP,
     run_reap},
    {"trim", 1u << OPT_TRUST_OWNER,
     "  varslot trim NAME [--trust-owner]\n"
     "      give the pages of every free slot back to the system now (peers do so by\n"
     "      themselves for slots idle longer than the decay, VARSLOT_DECAY_MS, default 10 s)\n"
     TRUST_HELP,
     run_trim},
    {"rm", 1u << OPT_FORCE,
     "  varslot rm NAME [--force]\n"
     "      remove the segment's name (processes that have it mapped keep their mapping);\n"
     "      refuses a NAME that is not a varslot segment unless --force, and another\n"
     "      user's segment\n",
     run_rm},
    {NULL, 0, NULL, NULL},
};

static void print_usage(FILE *f)
{
    fputs(usage_head, f);
    for (const struct command *c = commands; c->name; c++)
        fputs(c->help, f);
    fputs(usage_tail, f);
}

static const struct command *find_command(const char *name)
{
    for (const struct command *c = commands; c->name; c++)
        if (!strcmp(name, c->name))
            return c;
    return NULL;
}

/* ---- argument parsing ---- */

static const struct {
    const char *name;
    bool takes_value;
} option_table[OPT_COUNT] = {
    [OPT_CLASSES] = {"--classes", true},
    [OPT_MAX_PEERS] = {"--max-peers", true},
    [OPT_MODE] = {"--mode", true},
    [OPT_JSON] = {"--json", false},
    [OPT_FORCE] = {"--force", false},
    [OPT_TRUST_OWNER] = {"--trust-owner", false},
    [OPT_ONCE] = {"--once", false},
    [OPT_ANSI] = {"--ansi", false},
};

static bool is_help(const char *arg) { return !strcmp(arg, "--help") || !strcmp(arg, "-h"); }

/* The option at argv[*i], as "--opt value" or "--opt=value", into values[OPT_*]. */
static int parse_option(const struct command *cmd, int argc, char **argv, int *i, char **values)
{
    const char *arg = argv[*i];
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    for (int k = 0; k < OPT_COUNT; k++) {
        const char *opt = option_table[k].name;
        if (strlen(opt) != len || strncmp(arg, opt, len) != 0)
            continue;
        if (!(cmd->options & 1u << k))
            break;
        if (values[k])
            return usage_error("%s: %s given twice", cmd->name, opt);
        if (!option_table[k].takes_value) {
            if (eq)
                return usage_error("%s: %s takes no value", cmd->name, opt);
            values[k] = "";
        } else if (eq) {
            values[k] = (char *)eq + 1;
        } else if (*i + 1 < argc) {
            values[k] = argv[++*i];
        } else {
            return usage_error("%s: %s needs a value", cmd->name, opt);
        }
        return 0;
    }
    return usage_error("%s: unknown option '%s'", cmd->name, arg);
}

static int run_command(const struct command *cmd, int argc, char **argv)
{
    /* Help wins over any other mistake on the line: whoever asks for it needs it most. */
    for (int i = 0; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (is_help(argv[i])) {
            fputs(cmd->help, stdout);
            return 0;
        }
    char *values[OPT_COUNT] = {NULL};
    const char *name = NULL;
    bool options_done = false;
    for (int i = 0; i < argc; i++) {
        int rc;
        if (!options_done && !strcmp(argv[i], "--"))
            options_done = true;
        else if (!options_done && argv[i][0] == '-' && argv[i][1] != '\0') {
            if ((rc = parse_option(cmd, argc, argv, &i, values)) != 0)
                return rc;
        } else if (name)
            return usage_error("%s: unexpected argument '%s' (one NAME only)", cmd->name, argv[i]);
        else
            name = argv[i];
    }
    if (!name || !name[0])
        return usage_error("%s: missing segment NAME", cmd->name);
    return cmd->run(cmd, name, values);
}

static int run_help(int argc, char **argv)
{
    if (argc == 0) {
        print_usage(stdout);
        return 0;
    }
    const struct command *c = find_command(argv[0]);
    if (!c)
        return usage_error("help: unknown command '%s'", argv[0]);
    if (argc > 1)
        return usage_error("help: unexpected argument '%s'", argv[1]);
    fputs(c->help, stdout);
    return 0;
}

static int finish(int status)
{
    /* A full disk or a closed pipe must not look like success. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "varslot: cannot write the output: %s\n", strerror(errno));
        return status ? status : EXIT_LIBRARY;
    }
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("no command given");
    if (is_help(argv[1]) || !strcmp(argv[1], "help"))
        return finish(run_help(argc - 2, argv + 2));
    if (!strcmp(argv[1], "--version")) {
        if (argc > 2)
            return usage_error("--version takes no arguments");
        printf("varslot %s\n", VS_VERSION);
        return finish(0);
    }
    const struct command *c = find_command(argv[1]);
    if (!c)
        return usage_error("unknown command '%s'", argv[1]);
    if (!c->run) { /* run takes a command line, not a segment NAME */
        if (argc > 2 && is_help(argv[2])) {
            fputs(c->help, stdout);
            return finish(0);
        }
        return finish(run_run(argc - 2, argv + 2));
    }
    return finish(run_command(c, argc - 2, argv + 2));
}
