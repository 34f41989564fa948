/* VARSLOT_* options, read once at the first allocation. A bad value gets one line on stderr
 * and the default; the program always continues. Setuid programs see no options at all
 * (secure_getenv), so an unprivileged user cannot steer a privileged process's memory. */
#include "internal.h"

#ifdef VS_HAVE_VALGRIND
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct vsopt_values vsp_cfg;

/* "varslot: ignoring VAR=VALUE: why; using the default (D)", on one line however long the
 * value: it is cut to a readable length, visibly. Printed once per process tree (warn.c). */
static void warn(const struct vsopt *o, const char *value, const char *why)
{
    char line[512], *p = line, *end = line + sizeof line;
    if (!vsp_warning_is_new(o->variable, value))
        return;
    p = vsp_append(p, end, "varslot: ignoring ");
    p = vsp_append(p, end, o->variable);
    p = vsp_append(p, end, "=");
    p = vsp_append_clipped(p, end, value, 96);
    p = vsp_append(p, end, ": ");
    p = vsp_append(p, end, why);
    p = vsp_append(p, end, "; using the default (");
    p = vsp_append(p, end, o->dflt);
    p = vsp_append(p, end, ")");
    vsp_write_line(STDERR_FILENO, line, p, end);
}

void vsp_config_load(void)
{
    for (size_t i = 0; i < vsopt_count; i++) {
        const struct vsopt *o = &vsopt_table[i];
        const char *v = secure_getenv(o->variable), *why = o->parse(v, &vsp_cfg);
        if (why)
            warn(o, v, why); /* the parser has set the default */
    }
    /* Memcheck tracks glibc's malloc (it replaces it) but not jemalloc: under Valgrind the
     * unrouted blocks go to glibc, so leaks among them are reported too. */
    if (!secure_getenv("VARSLOT_FALLBACK") && RUNNING_ON_VALGRIND)
        vsp_cfg.fallback_libc = true;
}

void vsp_config_print(void)
{
    char line[1024], *p = line, *end = line + sizeof line;
    p = vsp_append(p, end, "varslot: segment=");
    p = vsp_append(p, end, vsp_cfg.segment);
    p = vsp_append(p, end, " min_size=");
    p = vsp_cfg.min_size ? vsp_fmt_u64(p, end, vsp_cfg.min_size) : vsp_append(p, end, "off");
    p = vsp_append(p, end, " callers=");
    for (int i = 0; i < vsp_cfg.callers.count; i++) {
        p = vsp_append(p, end, i ? "," : "");
        p = vsp_append(p, end, vsp_cfg.callers.names[i]);
    }
    p = vsp_append(p, end, vsp_cfg.callers.count ? "" : "none");
    p = vsp_append(p, end, " classes=");
    for (size_t i = 0; i < vsp_cfg.classes.count; i++) {
        p = vsp_append(p, end, i ? "," : "");
        p = vsp_fmt_u64(p, end, vsp_cfg.classes.list[i].slot_size);
        p = vsp_append(p, end, ":");
        p = vsp_fmt_u64(p, end, vsp_cfg.classes.list[i].slot_count);
    }
    p = vsp_append(p, end, vsp_cfg.classes.count ? "" : "default");
    p = vsp_append(p, end, vsp_cfg.fallback_libc ? " fallback=libc" : " fallback=jemalloc");
    p = vsp_append(p, end, vsp_cfg.fork_share ? " fork=share" : " fork=copy");
    p = vsp_append(p, end, vsp_cfg.trust_owner ? " trust=on" : " trust=off");
    p = vsp_append(p, end, vsp_cfg.stats ? " stats=on" : " stats=off");
    vsp_write_line(STDERR_FILENO, line, p, end);
}
