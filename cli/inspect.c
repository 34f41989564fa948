/* varslot stat and ls: what a segment holds, counted from its slot words and peer table,
 * as a table or as one JSON object. Read-only: inspecting never joins or reaps. */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const char *peer_state_name(const vs_peer_info *p)
{
    switch (p->state) {
    case VS_PEER_ALIVE: return p->live ? "alive" : "dead"; /* dead: waiting to be reaped */
    case VS_PEER_REAPING: return "reaping";
    default: return "invalid"; /* the entry was scribbled on */
    }
}

static void add_to_group(struct census *cs, uint8_t peer, uint32_t tag, uint32_t bytes)
{
    size_t i = 0;
    while (i < cs->group_count && (cs->groups[i].peer != peer || cs->groups[i].tag != tag))
        i++;
    if (i == cs->group_count) {
        if (cs->group_count == cs->group_cap) {
            size_t cap = cs->group_cap ? 2 * cs->group_cap : 16;
            struct group *g = realloc(cs->groups, cap * sizeof *g);
            if (!g)
                return; /* the summary loses a row; the counts above stay exact */
            cs->groups = g;
            cs->group_cap = cap;
        }
        cs->groups[cs->group_count++] = (struct group){peer, tag, 0, 0};
    }
    cs->groups[i].count++;
    cs->groups[i].bytes += bytes;
}

/* The preload shim tags what it routes: 0 by size (or not tagged at all), 0xffffff00 + i by
 * the i-th VARSLOT_CALLERS entry; anything else came from vs_tag_push or vs_pool_set_tag. */
static const char *tag_label(uint32_t tag, char *buf, size_t len)
{
    if (tag == 0)
        snprintf(buf, len, "-");
    else if (tag >= 0xffffff00u)
        snprintf(buf, len, "caller#%u", tag - 0xffffff00u);
    else
        snprintf(buf, len, "%" PRIu32, tag);
    return buf;
}

static void count_slots(vs_segment *seg, struct census *cs)
{
    vs_pool *pool = vs_segment_pool(seg);
    cs->class_count = vs_pool_class_count(pool);
    for (size_t c = 0; c < cs->class_count; c++) {
        uint32_t n = vs_pool_slot_count(pool, c);
        for (uint32_t i = 0; i < n; i++) {
            vs_slot_info si;
            if (vs_pool_slot_info(pool, (uint8_t)c, i, &si) != VS_OK)
                continue;
            cs->allocations += (uint64_t)si.lap * UINT32_MAX + si.generation;
            if (si.state == VS_SLOT_ALLOCATED) {
                cs->allocated[c]++;
                cs->by_owner[si.owner]++;
                add_to_group(cs, si.owner, si.tag, si.size);
            } else if (si.state == VS_SLOT_SHARED || si.state == VS_SLOT_SHARING) {
                cs->shared[c]++;
            } else if (si.state != VS_SLOT_FREE && si.state != VS_SLOT_RETIRED &&
                       si.state != VS_SLOT_PURGING /* free, its pages going back */) {
                cs->corrupt[c]++;
            }
        }
    }
}

/* Slots are counted before peers are listed: a peer that joins in between shows with the
 * slots it had at the count, rather than its slots showing up as unowned. */
void take_census(vs_segment *seg, struct census *cs)
{
    memset(cs, 0, sizeof *cs);
    count_slots(seg, cs);
    bool listed[256] = {false};
    for (uint32_t id = 1; id <= vs_segment_max_peers(seg); id++) {
        vs_peer_info p;
        if (vs_segment_peer_info(seg, (uint8_t)id, &p) != VS_OK || p.state == VS_PEER_FREE)
            continue;
        cs->peers[cs->peer_count++] = (struct peer_row){p, peer_state_name(&p), cs->by_owner[id]};
        listed[id] = true;
    }
    for (int id = 0; id < 256; id++)
        if (!listed[id])
            cs->unowned += cs->by_owner[id];
}

/* Segment names are arbitrary bytes; JSON needs valid UTF-8, so bad bytes become U+FFFD. */
static size_t utf8_sequence_length(const unsigned char *s)
{
    size_t len = s[0] < 0xC2 ? 0 : s[0] < 0xE0 ? 2 : s[0] < 0xF0 ? 3 : s[0] < 0xF5 ? 4 : 0;
    unsigned char lo = 0x80, hi = 0xBF; /* overlong forms, surrogates and > U+10FFFF are invalid */
    if (s[0] == 0xE0) lo = 0xA0;
    if (s[0] == 0xED) hi = 0x9F;
    if (s[0] == 0xF0) lo = 0x90;
    if (s[0] == 0xF4) hi = 0x8F;
    for (size_t i = 1; i < len; i++, lo = 0x80, hi = 0xBF)
        if (s[i] < lo || s[i] > hi)
            return 0;
    return len;
}

static void print_json_string(FILE *f, const char *str)
{
    fputc('"', f);
    for (const unsigned char *s = (const unsigned char *)str; *s;) {
        if (*s == '"' || *s == '\\') {
            fprintf(f, "\\%c", *s++);
        } else if (*s < 0x20) {
            fprintf(f, "\\u%04x", *s++);
        } else if (*s < 0x80) {
            fputc(*s++, f);
        } else {
            size_t len = utf8_sequence_length(s);
            if (len) {
                fwrite(s, 1, len, f);
                s += len;
            } else {
                fputs("\\ufffd", f);
                s++;
            }
        }
    }
    fputc('"', f);
}

static void print_stat_json(vs_segment *seg, const char *name, const struct census *cs)
{
    vs_pool *pool = vs_segment_pool(seg);
    fputs("{\"segment\":", stdout);
    print_json_string(stdout, name);
    printf(",\"total_size\":%zu,\"max_peers\":%" PRIu32 ",\"mapped_at_creator_address\":%s",
           seg->map_len, vs_segment_max_peers(seg), seg->at_creator_address ? "true" : "false");
    fputs(",\"classes\":[", stdout);
    for (size_t c = 0; c < cs->class_count; c++)
        printf("%s{\"slot_size\":%" PRIu32 ",\"slot_count\":%" PRIu32 ",\"allocated\":%" PRIu64
               ",\"shared\":%" PRIu64 ",\"corrupt\":%" PRIu64 "}",
               c ? "," : "", vs_pool_slot_size(pool, c), vs_pool_slot_count(pool, c),
               cs->allocated[c], cs->shared[c], cs->corrupt[c]);
    fputs("],\"peers\":[", stdout);
    for (size_t i = 0; i < cs->peer_count; i++) {
        const struct peer_row *p = &cs->peers[i];
        printf("%s{\"id\":%u,\"pid\":%" PRId32 ",\"state\":\"%s\",\"slots\":%" PRIu64
               ",\"joined_unix_ns\":%" PRIu64 "}",
               i ? "," : "", (unsigned)p->info.id, p->info.pid, p->state, p->slots,
               p->info.joined_unix_ns);
    }
    fputs("],\"allocations\":[", stdout);
    for (size_t i = 0; i < cs->group_count; i++) {
        const struct group *g = &cs->groups[i];
        char label[32];
        printf("%s{\"peer\":%u,\"tag\":%" PRIu32 ",\"label\":\"%s\",\"count\":%" PRIu64
               ",\"bytes\":%" PRIu64 "}",
               i ? "," : "", (unsigned)g->peer, g->tag, tag_label(g->tag, label, sizeof label),
               g->count, g->bytes);
    }
    printf("],\"unowned\":%" PRIu64 "}\n", cs->unowned);
}

static void print_stat_table(vs_segment *seg, const char *name, const struct census *cs)
{
    vs_pool *pool = vs_segment_pool(seg);
    printf("segment %s: %zu bytes, max peers %" PRIu32 ", %s\n\n", name, seg->map_len,
           vs_segment_max_peers(seg),
           seg->at_creator_address ? "mapped at the creator's address"
                                   : "mapped elsewhere than the creator (handles still work)");
    printf("%5s  %10s  %10s  %10s\n", "class", "slot_size", "slot_count", "allocated");
    for (size_t c = 0; c < cs->class_count; c++)
        printf("%5zu  %10" PRIu32 "  %10" PRIu32 "  %10" PRIu64 "\n", c,
               vs_pool_slot_size(pool, c), vs_pool_slot_count(pool, c), cs->allocated[c]);
    if (cs->peer_count == 0)
        printf("\nno peers\n");
    else
        printf("\n%5s  %10s  %-8s  %10s\n", "peer", "pid", "state", "slots");
    for (size_t i = 0; i < cs->peer_count; i++) {
        const struct peer_row *p = &cs->peers[i];
        printf("%5u  %10" PRId32 "  %-8s  %10" PRIu64 "\n", (unsigned)p->info.id, p->info.pid,
               p->state, p->slots);
    }
    printf("\nunowned allocated slots: %" PRIu64 "\n", cs->unowned);
    for (size_t c = 0; c < cs->class_count; c++)
        if (cs->shared[c])
            printf("class %zu: %" PRIu64 " slot%s shared with readers\n", c, cs->shared[c],
                   cs->shared[c] == 1 ? "" : "s");
    for (size_t c = 0; c < cs->class_count; c++)
        if (cs->corrupt[c])
            printf("class %zu: %" PRIu64 " slot words in no known state (scribbled on?)\n", c,
                   cs->corrupt[c]);
}

int run_stat(const struct command *cmd, const char *name, char *const *values)
{
    vs_segment seg;
    int rc = open_segment(cmd, name, values, &seg);
    if (rc)
        return rc;
    struct census *cs = malloc(sizeof *cs);
    if (!cs) {
        vs_segment_close(&seg);
        fprintf(stderr, "varslot: %s %s: out of memory\n", cmd->name, name);
        return EXIT_LIBRARY;
    }
    take_census(&seg, cs);
    if (values[OPT_JSON])
        print_stat_json(&seg, name, cs);
    else
        print_stat_table(&seg, name, cs);
    free(cs->groups);
    free(cs);
    vs_segment_close(&seg);
    return 0;
}

/* ---- ls: every live allocation, one per line ---- */

static void print_ls_row(bool json, bool first, vs_segment *seg, uint8_t c, uint32_t i,
                         const vs_slot_info *si)
{
    vs_pool *pool = vs_segment_pool(seg);
    vs_peer_info peer = {0};
    char label[32];
    if (si->owner)
        vs_segment_peer_info(seg, si->owner, &peer);
    tag_label(si->tag, label, sizeof label);
    vs_slot_ref ref = {c, 0, i, si->generation};
    if (json)
        printf("%s{\"peer\":%u,\"pid\":%" PRId32 ",\"class\":%u,\"slot\":%" PRIu32
               ",\"slot_size\":%" PRIu32 ",\"size\":%" PRIu32 ",\"tag\":%" PRIu32
               ",\"label\":\"%s\",\"handle\":\"0x%016" PRIx64 "\"}",
               first ? "" : ",", (unsigned)si->owner, peer.pid, (unsigned)c, i,
               vs_pool_slot_size(pool, c), si->size, si->tag, label, vs_slot_ref_pack(ref));
    else
        printf("%4u  %8" PRId32 "  %5u  %8" PRIu32 "  %10" PRIu32 "  %10" PRIu32 "  %-10s  0x%016" PRIx64 "\n",
               (unsigned)si->owner, peer.pid, (unsigned)c, i, vs_pool_slot_size(pool, c), si->size,
               label, vs_slot_ref_pack(ref));
}

int run_ls(const struct command *cmd, const char *name, char *const *values)
{
    vs_segment seg;
    int rc = open_segment(cmd, name, values, &seg);
    if (rc)
        return rc;
    vs_pool *pool = vs_segment_pool(&seg);
    bool json = values[OPT_JSON] != NULL;
    uint64_t rows = 0, bytes = 0;
    if (json)
        fputs("[", stdout);
    else
        printf("%4s  %8s  %5s  %8s  %10s  %10s  %-10s  %s\n", "peer", "pid", "class", "slot",
               "slot_size", "size", "tag", "handle");
    for (size_t c = 0; c < vs_pool_class_count(pool); c++)
        for (uint32_t i = 0; i < vs_pool_slot_count(pool, c); i++) {
            vs_slot_info si;
            if (vs_pool_slot_info(pool, (uint8_t)c, i, &si) != VS_OK || si.state != VS_SLOT_ALLOCATED)
                continue;
            print_ls_row(json, rows == 0, &seg, (uint8_t)c, i, &si);
            rows++;
            bytes += si.size;
        }
    if (json)
        fputs("]\n", stdout);
    else
        printf("%" PRIu64 " live allocation%s, %" PRIu64 " bytes in use\n", rows, rows == 1 ? "" : "s",
               bytes);
    vs_segment_close(&seg);
    return 0;
}

