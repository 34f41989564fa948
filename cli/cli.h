/* What the varslot tool's files share: the command table's shape, option slots, and the
 * two ways a command fails (bad usage: exit 2; the library refused: exit 1). */
#ifndef VARSLOT_CLI_H
#define VARSLOT_CLI_H

#include "varslot.h"
#include "../preload/options.h" /* the shim's option table, for run */

#include <stdbool.h>
#include <stdio.h>

#define EXIT_LIBRARY 1
#define EXIT_USAGE 2

/* ---- usage ---- */

/* Option values by index; a flag's value is "" when given. NULL: not given. */
enum {
    OPT_CLASSES, OPT_MAX_PEERS, OPT_MODE, OPT_JSON, OPT_FORCE, OPT_TRUST_OWNER, OPT_ONCE, OPT_ANSI,
    OPT_COUNT
};

struct command {
    const char *name;
    unsigned options; /* bit 1 << OPT_* for each option this command accepts */
    const char *help;
    int (*run)(const struct command *cmd, const char *name, char *const *values);
};

__attribute__((format(printf, 1, 2))) int usage_error(const char *fmt, ...);
int library_error(const char *cmd, const char *name, int rc, int err);
/* Opens NAME for cmd (another user's segment only with --trust-owner); 0, or the exit status
 * after the message. */
int open_segment(const struct command *cmd, const char *name, char *const *values, vs_segment *seg);

/* ---- what a segment holds (inspect.c), for stat and top ---- */

struct peer_row {
    vs_peer_info info;
    const char *state;
    uint64_t slots;
};

/* Live allocations grouped by owner and tag: what `stat --json` reports as "allocations". */
struct group {
    uint8_t peer;
    uint32_t tag;
    uint64_t count, bytes;
};

struct census {
    size_t class_count;
    struct group *groups; /* malloc'd */
    size_t group_count, group_cap;
    uint64_t allocated[VS_MAX_CLASSES];
    uint64_t shared[VS_MAX_CLASSES];  /* published read-only to readers (vs_pool_share) */
    uint64_t corrupt[VS_MAX_CLASSES]; /* slot words in no known state: scribbled on */
    uint64_t by_owner[256];
    struct peer_row peers[VS_MAX_PEERS];
    size_t peer_count;
    uint64_t unowned; /* allocated, but to the host (0) or to an id with no peer entry */
    uint64_t allocations; /* ever made in the segment: every slot's generations, laps counted */
};

/* Counts the slot words, then lists the peers (read-only: never joins or reaps). */
void take_census(vs_segment *seg, struct census *cs);

int run_stat(const struct command *cmd, const char *name, char *const *values);
int run_ls(const struct command *cmd, const char *name, char *const *values);
int run_run(int argc, char **argv);
/* `varslot run`'s help; its options are the shim's table (preload/options.h). */
#define RUN_HELP                                                                              \
    "  varslot run [OPTIONS] -- CMD ARGS...\n"                                                \
    "      run an unmodified program under the preload shim: its allocations of at least\n"  \
    "      the minimum size, or made by the listed objects, go to the segment. Each option\n" \
    "      sets its VARSLOT_* variable; a value may follow it or be joined with '='.\n"       \
    VSOPT_HELP
int run_top(const struct command *cmd, const char *name, char *const *values);

#endif
