/* Test helper for test-cli.sh: joins a segment as a peer, allocates COUNT slots of SIZE bytes
 * and holds them until killed, so the CLI's allocated/peer counts can be checked against it.
 * Given OWNER it does not join and allocates in that id's name (0 = the host), as a process
 * that is no peer may. With HOLD_SLOTS_CHURN=1 in its environment it then allocates and frees
 * one more slot about a thousand times a second, so that allocation rates have something to
 * show. */
#include "varslot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: hold-slots NAME COUNT [SIZE [OWNER]]\n");
        return 2;
    }
    const char *name = argv[1];
    long count = strtol(argv[2], NULL, 10);
    long size = argc >= 4 ? strtol(argv[3], NULL, 10) : 1;
    vs_segment seg;
    uint8_t peer = argc == 5 ? (uint8_t)strtol(argv[4], NULL, 10) : 0;
    int rc = vs_segment_open(&seg, name);
    if (rc == VS_OK && argc < 5)
        rc = vs_segment_join(&seg, &peer);
    if (rc != VS_OK) {
        fprintf(stderr, "hold-slots: %s: %s (%s)\n", name, vs_strerror(rc), vs_last_detail());
        return 1;
    }
    for (long i = 0; i < count; i++) {
        vs_slot_ref ref;
        if (!vs_pool_allocate(vs_segment_pool(&seg), (uint32_t)size, peer, &ref)) {
            fprintf(stderr, "hold-slots: allocation %ld of %ld failed\n", i + 1, count);
            return 1;
        }
        /* Touch the slot, as a real peer would, so the mapping is really used. */
        memset(vs_pool_slot_data(vs_segment_pool(&seg), &ref), 0xa5, (size_t)size);
    }
    printf("ready %u\n", (unsigned)peer);
    fflush(stdout);
    const char *churn = getenv("HOLD_SLOTS_CHURN");
    while (churn && !strcmp(churn, "1")) {
        vs_slot_ref ref;
        if (vs_pool_allocate(vs_segment_pool(&seg), (uint32_t)size, peer, &ref))
            vs_pool_free(vs_segment_pool(&seg), ref);
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    for (;;)
        pause();
}
