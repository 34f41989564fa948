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

struct vsp_config vsp_cfg;

void vsp_write(const char *s) { (void)!write(STDERR_FILENO, s, strlen(s)); }

char *vsp_append(char *p, const char *end, const char *s)
{
    while (*s && p < end - 1)
        *p++ = *s++;
    *p = '\0';
    return p;
}

char *vsp_fmt_u64(char *p, const char *end, uint64_t v)
{
    char tmp[24], *t = tmp + sizeof tmp;
    *--t = '\0';
    do
        *--t = (char)('0' + v % 10);
    while ((v /= 10));
    return vsp_append(p, end, t); /* bounded like every other piece of the line */
}

static void warn(const char *var, const char *value, const char *why, const char *fallback)
{
    char line[512], *p = line, *end = line + sizeof line;
    p = vsp_append(p, end, "varslot: ignoring ");
    p = vsp_append(p, end, var);
    p = vsp_append(p, end, "=");
    p = vsp_append(p, end, value);
    p = vsp_append(p, end, ": ");
    p = vsp_append(p, end, why);
    p = vsp_append(p, end, "; using ");
    p = vsp_append(p, end, fallback);
    vsp_append(p, end, "\n");
    vsp_write(line);
}

static bool parse_bool(const char *var, const char *v, bool dflt)
{
    if (!v)
        return dflt;
    static const char *const yes[] = {"1", "yes", "true", "on"}, *const no[] = {"0", "no", "false", "off", ""};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        if (!strcasecmp(v, yes[i]))
            return true;
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        if (!strcasecmp(v, no[i]))
            return false;
    warn(var, v, "expected 1/0, yes/no, true/false or on/off", dflt ? "on" : "off");
    return dflt;
}

static void load_min_size(void)
{
    const char *v = secure_getenv("VARSLOT_MIN_SIZE");
    uint64_t size;
    vsp_cfg.min_size = 64 << 10;
    if (!v)
        return;
    if (!strcasecmp(v, "off"))
        vsp_cfg.min_size = 0;
    else if (vs_parse_size(v, &size) == VS_OK)
        vsp_cfg.min_size = size ? size : 1; /* 0 means "route everything that fits" */
    else
        warn("VARSLOT_MIN_SIZE", v, "expected a size such as 64K, 1M or off", "64K");
}

/* "libfoo.so,myprog": object names, compared with the basename of each loaded object. */
static void load_callers(void)
{
    const char *v = secure_getenv("VARSLOT_CALLERS");
    if (!v || !*v)
        return;
    for (const char *item = v;;) {
        const char *comma = strchr(item, ',');
        size_t len = comma ? (size_t)(comma - item) : strlen(item);
        const char *why = NULL;
        if (len == 0)
            why = "empty name in the list";
        else if (len >= sizeof vsp_cfg.callers[0])
            why = "a name is longer than 63 bytes";
        else if (vsp_cfg.ncallers == VSP_MAX_CALLERS)
            why = "more than 16 names";
        if (why) {
            vsp_cfg.ncallers = 0;
            warn("VARSLOT_CALLERS", v, why, "no caller routing");
            return;
        }
        memcpy(vsp_cfg.callers[vsp_cfg.ncallers], item, len);
        vsp_cfg.callers[vsp_cfg.ncallers++][len] = '\0';
        if (!comma)
            return;
        item = comma + 1;
    }
}

static void default_segment_name(void)
{
    char *end = vsp_cfg.segment + sizeof vsp_cfg.segment;
    /* per user: other users' segments are refused anyway */
    vsp_fmt_u64(vsp_append(vsp_cfg.segment, end, "/varslot-"), end, getuid());
}

static void load_segment(void)
{
    const char *v = secure_getenv("VARSLOT_SEGMENT");
    default_segment_name();
    if (!v)
        return;
    if (!*v || strlen(v) >= sizeof vsp_cfg.segment)
        warn("VARSLOT_SEGMENT", v, "expected /name (shared memory) or a file path under 256 bytes",
             vsp_cfg.segment);
    else
        vsp_append(vsp_cfg.segment, vsp_cfg.segment + sizeof vsp_cfg.segment, v);
}

static void load_classes(void)
{
    const char *v = secure_getenv("VARSLOT_CLASSES");
    const char *why;
    if (v && vs_parse_classes(v, vsp_cfg.classes, &vsp_cfg.class_count, &why) != VS_OK) {
        vsp_cfg.class_count = 0;
        warn("VARSLOT_CLASSES", v, why, "the default classes");
    }
}

static void load_choice(const char *var, const char *a, const char *b, bool *is_b)
{
    const char *v = secure_getenv(var);
    if (!v || !strcmp(v, a))
        *is_b = false;
    else if (!strcmp(v, b))
        *is_b = true;
    else {
        char why[96], *p = why, *end = why + sizeof why;
        p = vsp_append(p, end, "expected ");
        p = vsp_append(p, end, a);
        p = vsp_append(p, end, " or ");
        vsp_append(p, end, b);
        warn(var, v, why, a);
        *is_b = false;
    }
}

void vsp_config_load(void)
{
    load_min_size();
    load_callers();
    load_segment();
    load_classes();
    load_choice("VARSLOT_FALLBACK", "jemalloc", "libc", &vsp_cfg.fallback_libc);
    /* Memcheck tracks glibc's malloc (it replaces it) but not jemalloc: under Valgrind the
     * unrouted blocks go to glibc, so leaks among them are reported too. */
    if (!secure_getenv("VARSLOT_FALLBACK") && RUNNING_ON_VALGRIND)
        vsp_cfg.fallback_libc = true;
    load_choice("VARSLOT_FORK", "copy", "share", &vsp_cfg.fork_share);
    vsp_cfg.stats = parse_bool("VARSLOT_STATS", secure_getenv("VARSLOT_STATS"), false);
    vsp_cfg.verbose = parse_bool("VARSLOT_VERBOSE", secure_getenv("VARSLOT_VERBOSE"), false);
}

void vsp_config_print(void)
{
    char line[1024], *p = line, *end = line + sizeof line;
    p = vsp_append(p, end, "varslot: segment=");
    p = vsp_append(p, end, vsp_cfg.segment);
    p = vsp_append(p, end, " min_size=");
    p = vsp_cfg.min_size ? vsp_fmt_u64(p, end, vsp_cfg.min_size) : vsp_append(p, end, "off");
    p = vsp_append(p, end, " callers=");
    for (int i = 0; i < vsp_cfg.ncallers; i++) {
        p = vsp_append(p, end, i ? "," : "");
        p = vsp_append(p, end, vsp_cfg.callers[i]);
    }
    p = vsp_append(p, end, vsp_cfg.ncallers ? "" : "none");
    p = vsp_append(p, end, " classes=");
    for (size_t i = 0; i < vsp_cfg.class_count; i++) {
        p = vsp_append(p, end, i ? "," : "");
        p = vsp_fmt_u64(p, end, vsp_cfg.classes[i].slot_size);
        p = vsp_append(p, end, ":");
        p = vsp_fmt_u64(p, end, vsp_cfg.classes[i].slot_count);
    }
    p = vsp_append(p, end, vsp_cfg.class_count ? "" : "default");
    p = vsp_append(p, end, vsp_cfg.fallback_libc ? " fallback=libc" : " fallback=jemalloc");
    p = vsp_append(p, end, vsp_cfg.fork_share ? " fork=share" : " fork=copy");
    vsp_append(p, end, vsp_cfg.stats ? " stats=on" : " stats=off");
    vsp_write(line);
    vsp_write("\n"); /* even when the options filled the line */
}
