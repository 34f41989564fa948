/* A multi-threaded C program doing large malloc/realloc/free, for running unmodified under
 * libvarslot-preload.so (tests/preload/test-real-programs.sh).
 *
 * 4 threads each keep up to 16 live blocks of 1 KiB .. 8 MiB (log-uniform sizes, so every
 * size class of the segment and the fallback are hit). Every block's bytes are a pattern
 * that depends only on the thread, the block's serial number and the offset, never on an
 * address, so the whole run is deterministic. Before every realloc and every free the block
 * is verified in full (after a realloc, its kept prefix is verified again, then the rest is
 * filled). The checksum of every verified byte is printed per thread and in total: the
 * output is byte-identical with and without the shim. Any corruption is reported on stderr
 * and the exit status is 1.
 *
 * Usage: mt-alloc [ITERATIONS_PER_THREAD]   (default 600) */
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 4
#define LIVE 16
#define MIN_SIZE (1u << 10)
#define MAX_SIZE (8u << 20)

struct block {
    unsigned char *p;
    size_t size;
    uint64_t serial; /* pattern seed */
};

struct worker {
    int id;
    long iterations;
    uint64_t checksum;   /* of every verified byte, in order */
    uint64_t verified;   /* bytes verified */
    uint64_t mallocs, reallocs, frees;
    int failed;
    pthread_t thread;
};

static uint64_t next_rand(uint64_t *s) /* xorshift64* */
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* The 8 bytes at word offset i of a block with this seed. */
static inline uint64_t pattern_word(uint64_t seed, uint64_t i)
{
    uint64_t z = seed + i * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    return z ^ (z >> 31);
}

static void fill(unsigned char *p, size_t from, size_t to, uint64_t seed)
{
    /* Byte at offset o is byte (o % 8) of pattern_word(seed, o / 8), little-endian. */
    size_t o = from;
    while (o < to && (o & 7)) {
        p[o] = (unsigned char)(pattern_word(seed, o / 8) >> (8 * (o & 7)));
        o++;
    }
    for (; o + 8 <= to; o += 8) {
        uint64_t w = pattern_word(seed, o / 8);
        memcpy(p + o, &w, 8);
    }
    for (; o < to; o++)
        p[o] = (unsigned char)(pattern_word(seed, o / 8) >> (8 * (o & 7)));
}

/* Checks p[0, len) against the pattern; folds what was read into the worker's checksum. */
static int verify(struct worker *w, const unsigned char *p, size_t len, uint64_t seed,
                  const char *when)
{
    uint64_t sum = w->checksum;
    size_t o = 0;
    for (; o + 8 <= len; o += 8) {
        uint64_t got, want = pattern_word(seed, o / 8);
        memcpy(&got, p + o, 8);
        if (got != want)
            goto bad;
        sum = (sum ^ got) * 0x100000001B3ULL;
    }
    for (; o < len; o++) {
        unsigned char want = (unsigned char)(pattern_word(seed, o / 8) >> (8 * (o & 7)));
        if (p[o] != want)
            goto bad_byte;
        sum = (sum ^ p[o]) * 0x100000001B3ULL;
    }
    w->checksum = sum;
    w->verified += len;
    return 0;
bad:
    while (p[o] == (unsigned char)(pattern_word(seed, o / 8) >> (8 * (o & 7))))
        o++; /* the first wrong byte */
bad_byte:
    fprintf(stderr, "mt-alloc: thread %d: corruption %s: block serial %" PRIu64 " (%zu bytes) "
            "at offset %zu: got 0x%02x, want 0x%02x\n", w->id, when, seed, len, o, p[o],
            (unsigned char)(pattern_word(seed, o / 8) >> (8 * (o & 7))));
    w->failed = 1;
    return -1;
}

static size_t random_size(uint64_t *rng)
{
    /* log-uniform in [1 KiB, 8 MiB]: an exponent 10..23, then a uniform mantissa */
    unsigned e = 10 + (unsigned)(next_rand(rng) % 13);
    size_t lo = (size_t)1 << e, size = lo + (size_t)(next_rand(rng) % lo);
    if (size < MIN_SIZE)
        size = MIN_SIZE;
    if (size > MAX_SIZE)
        size = MAX_SIZE;
    return size;
}

static void *run(void *arg)
{
    struct worker *w = arg;
    struct block live[LIVE] = {{0}};
    uint64_t rng = 0x1234567ULL * (uint64_t)(w->id + 1), serial = (uint64_t)w->id << 48;
    w->checksum = 0xCBF29CE484222325ULL;
    for (long it = 0; it < w->iterations && !w->failed; it++) {
        struct block *b = &live[next_rand(&rng) % LIVE];
        if (!b->p) {
            b->size = random_size(&rng);
            b->serial = ++serial;
            if (!(b->p = malloc(b->size))) {
                fprintf(stderr, "mt-alloc: thread %d: malloc(%zu) failed\n", w->id, b->size);
                w->failed = 1;
                break;
            }
            fill(b->p, 0, b->size, b->serial);
            w->mallocs++;
            continue;
        }
        if (verify(w, b->p, b->size, b->serial, "before realloc/free"))
            break;
        if (next_rand(&rng) % 3 == 0) {
            free(b->p);
            b->p = NULL;
            w->frees++;
            continue;
        }
        size_t size = random_size(&rng), keep = size < b->size ? size : b->size;
        unsigned char *q = realloc(b->p, size);
        if (!q) {
            fprintf(stderr, "mt-alloc: thread %d: realloc(%zu) failed\n", w->id, size);
            w->failed = 1;
            break;
        }
        b->p = q;
        b->size = size;
        if (verify(w, q, keep, b->serial, "after realloc (kept prefix)"))
            break;
        fill(q, keep, size, b->serial);
        w->reallocs++;
    }
    for (int i = 0; i < LIVE; i++) {
        if (!live[i].p)
            continue;
        if (!w->failed)
            verify(w, live[i].p, live[i].size, live[i].serial, "before final free");
        free(live[i].p);
        w->frees++;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? strtol(argv[1], NULL, 10) : 600;
    if (iterations <= 0) {
        fprintf(stderr, "usage: mt-alloc [ITERATIONS_PER_THREAD]\n");
        return 2;
    }
    struct worker workers[THREADS];
    for (int i = 0; i < THREADS; i++) {
        workers[i] = (struct worker){.id = i, .iterations = iterations};
        if (pthread_create(&workers[i].thread, NULL, run, &workers[i]) != 0) {
            fprintf(stderr, "mt-alloc: pthread_create failed\n");
            return 1;
        }
    }
    uint64_t total = 0xCBF29CE484222325ULL, bytes = 0;
    int failed = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(workers[i].thread, NULL);
        struct worker *w = &workers[i];
        printf("thread %d: mallocs=%" PRIu64 " reallocs=%" PRIu64 " frees=%" PRIu64
               " verified=%" PRIu64 " checksum=%016" PRIx64 "\n",
               i, w->mallocs, w->reallocs, w->frees, w->verified, w->checksum);
        total = (total ^ w->checksum) * 0x100000001B3ULL;
        bytes += w->verified;
        failed |= w->failed;
    }
    printf("total: verified=%" PRIu64 " checksum=%016" PRIx64 "\n", bytes, total);
    if (failed) {
        printf("CORRUPTION DETECTED\n");
        return 1;
    }
    return 0;
}
