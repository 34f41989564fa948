/* Shared slots under memcheck, through the C API (no shim): run by test-memcheck.sh, which
 * checks what memcheck says in each process. A shared slot must be a readable block in every
 * reader, a use after its reader's release must be reported, and a reference a reader never
 * releases must be a leak in that reader, at the line that took it.
 *   planted-share publish NAME   creates NAME, prints "ready"; reads a reader's peer id on
 *                                stdin, shares a 100,000-byte slot with itself and that
 *                                reader, prints the handle, reads its own copy, releases it
 *                                on a line on stdin, and removes NAME
 *   planted-share read NAME release|keep   joins NAME, prints its peer id, reads a handle on
 *                                stdin, checks every byte, then releases its reference or
 *                                (keep: DEFECT share-leak) exits holding it
 *   planted-share uaf NAME       one process: shares a slot with itself, releases, reads */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <varslot.h>

#define BLOCK 100000

static volatile unsigned sink;

static int fail(const char *what, int rc)
{
    fprintf(stderr, "planted-share: %s: %s\n", what, vs_strerror(rc));
    return 1;
}

/* Every byte, summed: memcheck complains if any of them is not addressable or not defined. */
static unsigned sum_of(const unsigned char *p)
{
    unsigned s = 0;
    for (size_t i = 0; i < BLOCK; i++)
        s += p[i];
    return s;
}

static int publish(const char *name)
{
    vs_segment seg;
    uint8_t me, reader;
    vs_slot_ref r;
    char line[32];
    int rc = vs_segment_create(&seg, name, NULL);
    if (rc != VS_OK || (rc = vs_segment_join(&seg, &me)) != VS_OK)
        return fail("create", rc);
    printf("ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 1;
    reader = (uint8_t)atoi(line);
    const vs_pool *pool = vs_segment_pool(&seg);
    if (!vs_pool_allocate(pool, BLOCK, me, &r))
        return fail("allocate", VS_EFULL);
    memset(vs_pool_slot_data(pool, &r), 3, BLOCK);
    const uint8_t readers[] = {me, reader};
    if ((rc = vs_pool_share(pool, r, me, readers, 2)) != VS_OK)
        return fail("share", rc);
    printf("%llu\n", (unsigned long long)vs_slot_ref_pack(r));
    fflush(stdout);
    const unsigned char *mine = vs_pool_shared_data(pool, &r, me);
    if (!mine || sum_of(mine) != 3u * BLOCK)
        return fail("own copy", VS_ESTALE);
    if (!fgets(line, sizeof line, stdin)) /* the reader is done */
        return 1;
    if ((rc = vs_pool_release(pool, r, me)) != VS_OK)
        return fail("release", rc);
    vs_segment_close(&seg);
    vs_segment_unlink(name);
    return 0;
}

static int read_shared(const char *name, int keep)
{
    vs_segment seg;
    uint8_t me;
    char line[32];
    int rc = vs_segment_open(&seg, name);
    if (rc != VS_OK || (rc = vs_segment_join(&seg, &me)) != VS_OK)
        return fail("open", rc);
    printf("%u\n", me);
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 1;
    vs_slot_ref r = vs_slot_ref_unpack(strtoull(line, NULL, 10));
    const vs_pool *pool = vs_segment_pool(&seg);
    const unsigned char *p = vs_pool_shared_data(pool, &r, me); /* TAKEN here */
    if (!p || sum_of(p) != 3u * BLOCK)
        return fail("read", VS_ESTALE);
    if (keep) {
        p = NULL; /* DEFECT share-leak: the reference is never released */
        sink = p != NULL;
        exit(0); /* without leaving: the reference goes with the reap of this peer */
    }
    if ((rc = vs_pool_release(pool, r, me)) != VS_OK)
        return fail("release", rc);
    vs_segment_close(&seg);
    return 0;
}

static int use_after_release(const char *name)
{
    vs_segment seg;
    uint8_t me;
    vs_slot_ref r;
    int rc = vs_segment_create(&seg, name, NULL);
    if (rc != VS_OK || (rc = vs_segment_join(&seg, &me)) != VS_OK)
        return fail("create", rc);
    const vs_pool *pool = vs_segment_pool(&seg);
    if (!vs_pool_allocate(pool, BLOCK, me, &r))
        return fail("allocate", VS_EFULL);
    memset(vs_pool_slot_data(pool, &r), 3, BLOCK);
    const uint8_t readers[] = {me};
    if ((rc = vs_pool_share(pool, r, me, readers, 1)) != VS_OK)
        return fail("share", rc);
    const unsigned char *p = vs_pool_shared_data(pool, &r, me);
    if (!p || sum_of(p) != 3u * BLOCK || (rc = vs_pool_release(pool, r, me)) != VS_OK)
        return fail("read and release", rc);
    sink = p[10]; /* DEFECT share-uaf */
    vs_segment_close(&seg);
    vs_segment_unlink(name);
    return 0;
}

int main(int argc, char **argv)
{
    const char *what = argc > 2 ? argv[1] : "";
    if (!strcmp(what, "publish")) return publish(argv[2]);
    if (!strcmp(what, "read") && argc > 3) return read_shared(argv[2], !strcmp(argv[3], "keep"));
    if (!strcmp(what, "uaf")) return use_after_release(argv[2]);
    fprintf(stderr, "usage: planted-share publish NAME | read NAME release|keep | uaf NAME\n");
    return 2;
}
