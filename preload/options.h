/* The preload shim's options, in one table. The shim reads each from its VARSLOT_* variable
 * (preload/config.c); `varslot run` turns each into a flag, a help entry and a check that
 * refuses a bad value before the program starts (cli/run.c). Both use the same parsers, so
 * what `varslot run` accepts is what the shim accepts. Like mimalloc's options table: one
 * line per option, its value typed, read once.
 *
 * Adding an option is one VSOPT_TABLE line (and a parser, for a new kind of value); the man
 * page and the README's list must then describe it (tests/cli/test-cli.sh checks them).
 * This header needs only the public varslot.h: the CLI builds against nothing else.
 * Parsers never allocate, print or read the environment: the shim runs them inside the first
 * malloc of a process. */
#ifndef VARSLOT_PRELOAD_OPTIONS_H
#define VARSLOT_PRELOAD_OPTIONS_H

#include "varslot.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- the kinds of value ---- */
#define VSOPT_MAX_CALLERS 16
typedef struct {
    int count;
    char names[VSOPT_MAX_CALLERS][64];
} vsopt_callers;
typedef struct {
    size_t count; /* 0: the library's default classes */
    vs_class_config list[VS_MAX_CLASSES];
} vsopt_classes;
typedef char vsopt_segment_name[256];

/* X(field, type, parser, variable, flag, metavar, default, help)
 *   parser   const char *parser(const char *value, type *out): NULL when value is good, else
 *            why it is not (out then holds the default). value NULL: set the default.
 *   flag     the `varslot run` flag; metavar " WORD" for a flag that takes a value, "" for a
 *            switch (the flag sets the variable to 1).
 *   default  as a user would write it; help: one line, at most 64 characters. */
#define VSOPT_TABLE(X)                                                                              \
    X(segment, vsopt_segment_name, vsopt_parse_segment, "VARSLOT_SEGMENT", "--segment", " NAME",    \
      "/varslot-UID", "/name (POSIX shared memory) or an absolute file path")                       \
    X(min_size, uint64_t, vsopt_parse_min_size, "VARSLOT_MIN_SIZE", "--min-size", " S", "64K",      \
      "route allocations of at least S bytes (K, M, G); off: none")                                 \
    X(callers, vsopt_callers, vsopt_parse_callers, "VARSLOT_CALLERS", "--callers", " LIST", "none", \
      "route allocations made by these objects (basenames: a.so,b)")                        \
    X(classes, vsopt_classes, vsopt_parse_classes, "VARSLOT_CLASSES", "--classes", " SPEC",         \
      "library defaults", "classes of a segment this process creates, as SIZE:COUNT,...")           \
    X(fallback_libc, bool, vsopt_parse_fallback, "VARSLOT_FALLBACK", "--fallback", " jemalloc|libc", \
      "jemalloc", "where requests that are not routed go")                                          \
    X(fork_share, bool, vsopt_parse_fork, "VARSLOT_FORK", "--fork", " copy|share", "copy",          \
      "a fork child copies its parent's routed blocks, or shares them")                           \
    X(trust_owner, bool, vsopt_parse_switch, "VARSLOT_TRUST", "--trust", "", "0",                   \
      "use another user's segment shared through one of our groups")                               \
    X(stats, bool, vsopt_parse_switch, "VARSLOT_STATS", "--stats", "", "0",                         \
      "one line of what was routed, on stderr at exit")                                             \
    X(verbose, bool, vsopt_parse_switch, "VARSLOT_VERBOSE", "--verbose", "", "0",                   \
      "print the effective options when the shim starts")

/* The values of all options: one field each. */
struct vsopt_values {
#define VSOPT_FIELD(field, type, ...) type field;
    VSOPT_TABLE(VSOPT_FIELD)
#undef VSOPT_FIELD
};

const char *vsopt_parse_segment(const char *v, vsopt_segment_name *out);
/* Why NAME cannot be the segment a user meant (relative, "//", ".." ...), or NULL: the rule
 * VARSLOT_SEGMENT follows, for the shim, `varslot run` and the GStreamer plugin alike. */
const char *vsopt_segment_name_problem(const char *name);
const char *vsopt_parse_min_size(const char *v, uint64_t *out);
const char *vsopt_parse_callers(const char *v, vsopt_callers *out);
const char *vsopt_parse_classes(const char *v, vsopt_classes *out);
const char *vsopt_parse_fallback(const char *v, bool *libc);
const char *vsopt_parse_fork(const char *v, bool *share);
const char *vsopt_parse_switch(const char *v, bool *on);

/* The table as data, in VSOPT_TABLE's order. */
struct vsopt {
    const char *variable, *flag, *metavar, *dflt, *help;
    /* The option's parser on its field of *values. */
    const char *(*parse)(const char *v, struct vsopt_values *values);
};
extern const struct vsopt vsopt_table[];
extern const size_t vsopt_count;

/* `varslot run`'s help for the options, from the table: two lines per option. */
#define VSOPT_HELP_ENTRY(field, type, parse, var, flag, meta, dflt, help) \
    "      " flag meta "  (" var "; default " dflt ")\n          " help "\n"
#define VSOPT_HELP VSOPT_TABLE(VSOPT_HELP_ENTRY)

#endif
