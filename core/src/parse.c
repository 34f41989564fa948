/* Parsing the textual forms users write sizes and classes in ("64K", "64K:256,1M:64"), for
 * the CLI and for environment variables read inside malloc: strict, and no allocation. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* strtoull alone would accept " 5", "+5" and "-5" (negated!), so a digit must come first. */
static bool parse_u64(const char *s, const char **end, uint64_t *out)
{
    if (*s < '0' || *s > '9')
        return false;
    int saved = errno; /* callers may be inside malloc: leave errno as it was */
    errno = 0;
    char *e;
    unsigned long long v = strtoull(s, &e, 10);
    bool ok = errno != ERANGE;
    errno = saved;
    *end = e;
    *out = v;
    return ok;
}

/* A size ending at stop: digits and an optional K, M or G (powers of 1024). */
static bool parse_size_until(const char *s, char stop, uint64_t *out)
{
    const char *end;
    uint64_t v;
    if (!parse_u64(s, &end, &v))
        return false;
    unsigned shift = 0;
    switch (*end) {
    case 'K': case 'k': shift = 10; end++; break;
    case 'M': case 'm': shift = 20; end++; break;
    case 'G': case 'g': shift = 30; end++; break;
    }
    if (*end != stop || v > (UINT64_MAX >> shift))
        return false;
    *out = v << shift;
    return true;
}

int vs_parse_size(const char *s, uint64_t *out)
{
    return s && out && parse_size_until(s, '\0', out) ? VS_OK : VS_EINVAL;
}

/* One "SIZE:COUNT" item of len bytes; NULL when it is good, else what is wrong with it. */
static const char *parse_class_item(const char *item, size_t len, vs_class_config *out)
{
    char buf[64];
    if (len >= sizeof buf)
        return "an item is too long";
    memcpy(buf, item, len);
    buf[len] = '\0';
    char *colon = strchr(buf, ':');
    uint64_t size, count;
    const char *end;
    if (!colon)
        return "expected SIZE:COUNT items such as 64K:256";
    if (!parse_size_until(buf, ':', &size))
        return "SIZE must be a number with an optional K, M or G suffix";
    if (size == 0 || size > UINT32_MAX)
        return "SIZE must be from 1 byte to 4G-1";
    if (!parse_u64(colon + 1, &end, &count) || *end || count < 1 || count > VS_MAX_SLOTS_PER_CLASS)
        return "COUNT must be a number from 1 to 16777216";
    *out = (vs_class_config){(uint32_t)size, (uint32_t)count};
    return NULL;
}

int vs_parse_classes(const char *spec, vs_class_config *out, size_t *n, const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    *why = "no classes given";
    if (!spec || !out || !n)
        return VS_EINVAL;
    *n = 0;
    /* Split by hand: strtok would let "64K:1,,1M:2" pass. */
    for (const char *item = spec;; item++) {
        const char *comma = strchr(item, ',');
        size_t len = comma ? (size_t)(comma - item) : strlen(item);
        if (len == 0)
            *why = "empty item";
        else if (*n == VS_MAX_CLASSES)
            *why = "more than 64 classes";
        else if (!(*why = parse_class_item(item, len, &out[*n])) && *n > 0 &&
                 out[*n].slot_size <= out[*n - 1].slot_size)
            *why = "slot sizes must be strictly ascending";
        if (*why)
            return VS_EINVAL;
        ++*n;
        if (!comma)
            return VS_OK;
        item = comma;
    }
}
