/* Test helper for test-users.sh: one side of a slot handed from one user's process to
 * another's, as a camera service hands frames to a desktop user's pipeline.
 *   hand-over give NAME TEXT
 *       joins, writes TEXT into a slot, prints "gave PEER HANDLE", and waits to be killed
 *   hand-over take NAME PEER HANDLE [--trust-owner]
 *       opens (trusting another owner if asked), joins, takes the slot from PEER, prints
 *       "took TEXT", takes a second slot of its own, prints "holding ID", waits to be killed
 * Exits 1 with the library's message when a step is refused. */
#include "varslot.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int refused(const char *what, const char *name, int rc)
{
    fprintf(stderr, "hand-over: %s %s: %s (%s)\n", what, name, vs_strerror(rc), vs_last_detail());
    return 1;
}

static int give(const char *name, const char *text)
{
    vs_segment seg;
    uint8_t me;
    vs_slot_ref ref;
    int rc = vs_segment_open(&seg, name);
    if (rc != VS_OK || (rc = vs_segment_join(&seg, &me)) != VS_OK)
        return refused("open", name, rc);
    vs_pool *pool = vs_segment_pool(&seg);
    if (strlen(text) >= vs_pool_slot_size(pool, 0) || !vs_pool_allocate(pool, strlen(text) + 1, me, &ref))
        return refused("allocate in", name, VS_ENOSPC);
    strcpy(vs_pool_slot_data(pool, &ref), text);
    vs_pool_handed_over(pool, ref);
    printf("gave %u 0x%016" PRIx64 "\n", (unsigned)me, vs_slot_ref_pack(ref));
    fflush(stdout);
    for (;;)
        pause();
}

static int take(const char *name, uint8_t from, uint64_t handle, uint32_t flags)
{
    vs_segment seg;
    uint8_t me;
    vs_slot_ref ref = vs_slot_ref_unpack(handle), mine;
    int rc = vs_segment_open_flags(&seg, name, flags);
    if (rc != VS_OK || (rc = vs_segment_join(&seg, &me)) != VS_OK)
        return refused("open", name, rc);
    vs_pool *pool = vs_segment_pool(&seg);
    if ((rc = vs_pool_transfer(pool, ref, from, me)) != VS_OK)
        return refused("transfer in", name, rc);
    printf("took %s\n", (const char *)vs_pool_slot_data(pool, &ref));
    if (!vs_pool_allocate(pool, 1, me, &mine))
        return refused("allocate in", name, VS_ENOSPC);
    printf("holding %u\n", (unsigned)me);
    fflush(stdout);
    for (;;)
        pause();
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "give"))
        return give(argv[2], argv[3]);
    bool trust = argc == 6 && !strcmp(argv[5], "--trust-owner");
    if ((argc == 5 || trust) && !strcmp(argv[1], "take"))
        return take(argv[2], (uint8_t)strtoul(argv[3], NULL, 10), strtoull(argv[4], NULL, 0),
                    trust ? VS_OPEN_TRUST_OWNER : 0);
    fprintf(stderr, "usage: hand-over give NAME TEXT | take NAME PEER HANDLE [--trust-owner]\n");
    return 2;
}
