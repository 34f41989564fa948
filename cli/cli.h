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
enum { OPT_CLASSES, OPT_MAX_PEERS, OPT_MODE, OPT_JSON, OPT_FORCE, OPT_TRUST_OWNER, OPT_COUNT };

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

#endif
