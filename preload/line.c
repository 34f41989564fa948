/* Lines for stderr built without stdio (it may allocate, and all of this runs inside
 * malloc): pieces are appended up to the buffer's end, and a line always ends in a newline,
 * so what comes next (another warning, the stats line) starts a line of its own. */
#include "internal.h"

#include <string.h>
#include <unistd.h>

void vsp_write(const char *s) { (void)!write(STDERR_FILENO, s, strlen(s)); }

char *vsp_append(char *p, const char *end, const char *s)
{
    while (*s && p < end - 1)
        *p++ = *s++;
    *p = '\0';
    return p;
}

char *vsp_append_clipped(char *p, const char *end, const char *s, size_t max)
{
    size_t len = strnlen(s, max + 1);
    if (len <= max)
        return vsp_append(p, end, s);
    for (size_t i = 0; i < max && p < end - 1; i++)
        *p++ = s[i];
    *p = '\0';
    return vsp_append(p, end, "...");
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

void vsp_write_line(int fd, char *line, char *p, char *end)
{
    if (p >= end - 1 && end - line >= 5) { /* full: something may have been cut, say so */
        p = end - 5;
        memcpy(p, "...", 3);
        p += 3;
    }
    *p++ = '\n';
    (void)!write(fd, line, (size_t)(p - line));
}
