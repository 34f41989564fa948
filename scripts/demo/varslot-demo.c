/* The demo's peers: a producer that writes frames into slots and passes only their handles
 * down a pipe, a consumer that takes ownership and reads them in place, and a holder that
 * grabs slots and waits to be killed. run-demo wires them together. */
#include "varslot.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct frame_header {
    uint64_t seq;
    uint64_t checksum; /* of the payload after this header */
    uint32_t bytes;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t checksum(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static int die(const char *what, const char *name, int rc)
{
    fprintf(stderr, "varslot-demo: %s %s: %s (%s)\n", what, name, vs_strerror(rc), vs_last_detail());
    return 1;
}

static int attach(vs_segment *seg, const char *name, uint8_t *id)
{
    int rc = vs_segment_open(seg, name);
    if (rc != VS_OK)
        return die("open", name, rc);
    if ((rc = vs_segment_join(seg, id)) != VS_OK)
        return die("join", name, rc);
    return 0;
}

/* Writes `frames` frames of `bytes` each and sends each slot's 8-byte handle to stdout. */
static int producer(const char *name, long frames, uint32_t bytes)
{
    vs_segment seg;
    uint8_t id;
    if (attach(&seg, name, &id))
        return 1;
    const vs_pool *pool = vs_segment_pool(&seg);
    fprintf(stderr, "  producer: peer %u, pid %d, mapped at %p%s\n", id, getpid(), seg.map,
            seg.at_creator_address ? " (the creator's address)" : "");
    uint64_t me = id; /* the stream starts with who sends: the receiver takes slots from us */
    if (write(STDOUT_FILENO, &me, sizeof me) != sizeof me)
        return 1;
    long waits = 0;
    for (long i = 0; i < frames; i++) {
        vs_slot_ref ref;
        while (!vs_pool_allocate(pool, bytes, id, &ref)) { /* backpressure: all slots in flight */
            waits++;
            usleep(100);
        }
        uint8_t *slot = vs_pool_slot_data(pool, &ref);
        struct frame_header *h = (struct frame_header *)slot;
        uint8_t *payload = slot + sizeof *h;
        size_t n = bytes - sizeof *h;
        for (size_t k = 0; k < n; k += 64) /* a cheap moving pattern: a "video frame" */
            memset(payload + k, (int)(i + k / 64), n - k < 64 ? n - k : 64);
        *h = (struct frame_header){(uint64_t)i, checksum(payload, n), bytes};
        if (i == 0)
            fprintf(stderr, "  producer: frame 0 written at %p, handle 0x%016" PRIx64 "\n",
                    (void *)slot, vs_slot_ref_pack(ref));
        uint64_t handle = vs_slot_ref_pack(ref);
        if (write(STDOUT_FILENO, &handle, sizeof handle) != sizeof handle)
            return 1;
    }
    fprintf(stderr, "  producer: sent %ld handles (%ld waits for a free slot)\n", frames, waits);
    /* Leave only after the consumer has taken everything: leaving frees what we still own. */
    close(STDOUT_FILENO);
    usleep(200000);
    vs_segment_close(&seg);
    return 0;
}

/* Reads handles from stdin, takes ownership, verifies each frame in place, frees it. */
static int consumer(const char *name)
{
    vs_segment seg;
    uint8_t id;
    if (attach(&seg, name, &id))
        return 1;
    const vs_pool *pool = vs_segment_pool(&seg);
    fprintf(stderr, "  consumer: peer %u, pid %d, mapped at %p\n", id, getpid(), seg.map);
    long frames = 0, bad = 0;
    uint64_t bytes = 0, handle, sender;
    if (read(STDIN_FILENO, &sender, sizeof sender) != sizeof sender)
        return 1;
    double t0 = now_s();
    while (read(STDIN_FILENO, &handle, sizeof handle) == sizeof handle) {
        vs_slot_ref ref = vs_slot_ref_unpack(handle);
        /* Ownership first: from here a crash of the producer cannot take the slot from us. */
        if (vs_pool_transfer(pool, ref, (uint8_t)sender, id) != VS_OK) {
            bad++;
            continue;
        }
        const uint8_t *slot = vs_pool_slot_data(pool, &ref);
        const struct frame_header *h = (const struct frame_header *)slot;
        if (h->checksum != checksum(slot + sizeof *h, h->bytes - sizeof *h))
            bad++;
        if (frames == 0)
            fprintf(stderr, "  consumer: frame 0 read in place at %p (no copy)\n", (void *)slot);
        bytes += h->bytes;
        frames++;
        vs_pool_free(pool, ref);
    }
    double dt = now_s() - t0;
    fprintf(stderr, "  consumer: %ld frames, %.1f MiB verified in place, %ld bad, %.0f frames/s\n",
            frames, bytes / 1048576.0, bad, dt > 0 ? frames / dt : 0.0);
    vs_segment_close(&seg);
    return bad ? 1 : 0;
}

/* Takes n slots, says so, and waits to be killed. */
static int holder(const char *name, int n)
{
    vs_segment seg;
    uint8_t id;
    if (attach(&seg, name, &id))
        return 1;
    for (int i = 0; i < n; i++) {
        vs_slot_ref ref;
        if (!vs_pool_allocate(vs_segment_pool(&seg), 60000, id, &ref))
            return die("allocate in", name, VS_ENOSPC);
        memset(vs_pool_slot_data(vs_segment_pool(&seg), &ref), 0xee, 60000);
    }
    printf("holder: peer %u, pid %d, holding %d slots\n", id, getpid(), n);
    fflush(stdout);
    for (;;)
        pause();
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "producer"))
        return producer(argv[2], atol(argv[3]), (uint32_t)atol(argv[4]));
    if (argc == 3 && !strcmp(argv[1], "consumer"))
        return consumer(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "holder"))
        return holder(argv[2], atoi(argv[3]));
    fprintf(stderr, "usage: varslot-demo producer NAME FRAMES BYTES | consumer NAME | holder NAME N\n");
    return 2;
}
