/* The option table's parsers and the table as data (options.h). Compiled into the shim and
 * into the varslot CLI: no malloc, no stdio, no environment here. */
#include "options.h"

#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Every option has a `varslot run` flag and a help line that fits the terminal: a table line
 * without them does not compile. */
#define VSOPT_CHECK(field, type, parse, var, flag, meta, dflt, help)                          \
    _Static_assert(sizeof flag > sizeof "--", var " needs a varslot run flag");              \
    _Static_assert(sizeof help > 1 && sizeof help <= 65, var "'s help: one line of 64 chars"); \
    _Static_assert(sizeof dflt > 1, var " needs its default written out");
VSOPT_TABLE(VSOPT_CHECK)

/* ---- segment names ----
 * The name comes from the environment of every process of a program, each in its own working
 * directory, so it must name the same object from anywhere: "/name" (one slash, POSIX shared
 * memory in /dev/shm, as the core reads it) or an absolute file path. The core itself takes
 * any path (its caller's working directory is one), so the rule is the shim's, not the
 * core's. A path with an empty, "." or ".." component, or a trailing slash, cannot be what
 * was meant: "//double" would make the file /double at the root, not the shm object. */
const char *vsopt_segment_name_problem(const char *v)
{
    if (!*v)
        return "empty";
    if (strlen(v) >= sizeof(vsopt_segment_name))
        return "longer than 255 bytes";
    if (v[0] != '/')
        return "relative: each working directory would get its own; use /name or /abs/path";
    for (const char *c = v + 1;; c++) { /* c: the start of a component */
        const char *slash = strchr(c, '/');
        size_t len = slash ? (size_t)(slash - c) : strlen(c);
        if (len == 0)
            return slash ? "an empty path component ('//')" : "a trailing '/' (a directory)";
        if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
            return "a '.' or '..' path component";
        if (!slash)
            return NULL;
        c = slash;
    }
}

const char *vsopt_parse_segment(const char *v, vsopt_segment_name *out)
{
    const char *why = v ? vsopt_segment_name_problem(v) : NULL;
    if (v && !why) {
        memcpy(*out, v, strlen(v) + 1);
        return NULL;
    }
    /* per user: another user's segment would be refused anyway */
    char digits[16], *d = digits + sizeof digits;
    unsigned long uid = (unsigned long)getuid();
    *--d = '\0';
    do
        *--d = (char)('0' + uid % 10);
    while ((uid /= 10));
    memcpy(*out, "/varslot-", sizeof "/varslot-" - 1);
    memcpy(*out + sizeof "/varslot-" - 1, d, (size_t)(digits + sizeof digits - d));
    return why;
}

/* ---- sizes, lists, classes ---- */

const char *vsopt_parse_min_size(const char *v, uint64_t *out)
{
    uint64_t size;
    *out = 64 << 10;
    if (!v)
        return NULL;
    if (!strcasecmp(v, "off"))
        *out = 0;
    else if (vs_parse_size(v, &size) == VS_OK)
        *out = size ? size : 1; /* 0 means "route everything that fits" */
    else
        return "expected a size such as 64K, 1M or off";
    return NULL;
}

/* "libfoo.so,myprog": object names, compared with the basename of each loaded object. */
const char *vsopt_parse_callers(const char *v, vsopt_callers *out)
{
    out->count = 0;
    if (!v || !*v)
        return NULL;
    for (const char *item = v;;) {
        const char *comma = strchr(item, ',');
        size_t len = comma ? (size_t)(comma - item) : strlen(item);
        const char *why = NULL;
        if (len == 0)
            why = "empty name in the list";
        else if (len >= sizeof out->names[0])
            why = "a name is longer than 63 bytes";
        else if (out->count == VSOPT_MAX_CALLERS)
            why = "more than 16 names";
        if (why) {
            out->count = 0;
            return why;
        }
        memcpy(out->names[out->count], item, len);
        out->names[out->count++][len] = '\0';
        if (!comma)
            return NULL;
        item = comma + 1;
    }
}

const char *vsopt_parse_classes(const char *v, vsopt_classes *out)
{
    const char *why = NULL;
    if (v && vs_parse_classes(v, out->list, &out->count, &why) == VS_OK)
        return NULL;
    out->count = 0;
    return why;
}

/* ---- choices ---- */

/* One of two words; the first is the default. */
static const char *choice(const char *v, const char *a, const char *b, const char *why, bool *is_b)
{
    *is_b = v && !strcmp(v, b);
    return !v || *is_b || !strcmp(v, a) ? NULL : why;
}

const char *vsopt_parse_fallback(const char *v, bool *libc)
{
    return choice(v, "jemalloc", "libc", "expected jemalloc or libc", libc);
}

const char *vsopt_parse_fork(const char *v, bool *share)
{
    return choice(v, "copy", "share", "expected copy or share", share);
}

const char *vsopt_parse_switch(const char *v, bool *on)
{
    static const char *const yes[] = {"1", "yes", "true", "on"}, *const no[] = {"0", "no", "false", "off", ""};
    *on = false;
    if (!v)
        return NULL;
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        if (!strcasecmp(v, yes[i])) {
            *on = true;
            return NULL;
        }
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        if (!strcasecmp(v, no[i]))
            return NULL;
    return "expected 1/0, yes/no, true/false or on/off";
}

/* ---- the table as data ---- */

#define VSOPT_SETTER(field, type, parse, ...) \
    static const char *set_##field(const char *v, struct vsopt_values *o) { return parse(v, &o->field); }
VSOPT_TABLE(VSOPT_SETTER)

#define VSOPT_ENTRY(field, type, parse, var, flag, meta, dflt, help) {var, flag, meta, dflt, help, set_##field},
const struct vsopt vsopt_table[] = {VSOPT_TABLE(VSOPT_ENTRY)};
const size_t vsopt_count = sizeof vsopt_table / sizeof *vsopt_table;
