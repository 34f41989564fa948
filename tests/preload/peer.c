/* The second process of the shim suite's cross-process tests (tests/preload/shim/
 * routed_test.cpp), which fork+execs it under the same LD_PRELOAD and VARSLOT_SEGMENT and
 * talks to it over pipes (stdin / stdout), one line at a time. Like any program that must
 * also run without the shim, it finds the opt-in API with dlsym(RTLD_DEFAULT, ...) and links
 * nothing of varslot.
 *
 *   peer raw [--prime]
 *       reads "PTR LEN" (PTR in hex, as %p prints it); with --prime first makes one routed
 *       allocation of its own (a tag scope around a small malloc); prints owns=, head= (the
 *       first 16 bytes at PTR, in hex) and sum= (FNV-1a of the LEN bytes at PTR); then
 *       free(PTR) and prints "freed".
 *   peer handle
 *       reads "HANDLE LEN" (decimal); p = vs_ptr_of(HANDLE); prints ptr= (%p), owns=, head=,
 *       sum=, "ready"; waits for a line "free"; free(p); prints "freed".
 *   peer noop
 *       a small malloc/free, prints "peer ok" (for the bad-environment tests).
 *
 * Exit status 0 on success; 2 usage, 3 a missing API, 4 protocol error, 5 vs_ptr_of failed. */
#include <dlfcn.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <varslot/preload.h>

static vs_owns_fn owns;
static vs_ptr_of_fn ptr_of;
static vs_tag_push_fn tag_push;
static vs_tag_pop_fn tag_pop;

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 0xCBF29CE484222325ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001B3ULL;
    return h;
}

static void describe(const unsigned char *p, size_t len)
{
    printf("owns=%d\n", owns ? owns(p) : -1);
    printf("head=");
    for (size_t i = 0; i < 16 && i < len; i++)
        printf("%02x", p[i]);
    printf("\nsum=%016" PRIx64 "\n", fnv1a(p, len));
    fflush(stdout);
}

static int read_line(char *buf, size_t size)
{
    if (!fgets(buf, (int)size, stdin))
        return -1;
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

int main(int argc, char **argv)
{
    owns = (vs_owns_fn)dlsym(RTLD_DEFAULT, "vs_owns");
    ptr_of = (vs_ptr_of_fn)dlsym(RTLD_DEFAULT, "vs_ptr_of");
    tag_push = (vs_tag_push_fn)dlsym(RTLD_DEFAULT, "vs_tag_push");
    tag_pop = (vs_tag_pop_fn)dlsym(RTLD_DEFAULT, "vs_tag_pop");
    char line[256];
    if (argc >= 2 && !strcmp(argv[1], "noop")) {
        char *volatile p = malloc(100);
        if (!p)
            return 1;
        memset(p, 1, 100);
        free(p);
        puts("peer ok");
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "raw")) {
        int prime = argc >= 3 && !strcmp(argv[2], "--prime");
        if (prime) {
            if (!tag_push || !tag_pop)
                return 3;
            tag_push(0xfeed);
            void *volatile q = malloc(64);
            tag_pop();
            printf("primed=%d\n", owns ? owns(q) : -1);
            free(q);
        }
        void *p;
        size_t len;
        if (read_line(line, sizeof line) || sscanf(line, "%p %zu", &p, &len) != 2)
            return 4;
        describe(p, len);
        free(p);
        puts("freed");
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "handle")) {
        if (!ptr_of)
            return 3;
        uint64_t handle;
        size_t len;
        if (read_line(line, sizeof line) || sscanf(line, "%" SCNu64 " %zu", &handle, &len) != 2)
            return 4;
        unsigned char *p = ptr_of(handle);
        printf("ptr=%p\n", (void *)p);
        fflush(stdout);
        if (!p)
            return 5;
        describe(p, len);
        puts("ready");
        fflush(stdout);
        if (read_line(line, sizeof line) || strcmp(line, "free"))
            return 4;
        free(p);
        puts("freed");
        return 0;
    }
    fprintf(stderr, "usage: peer raw [--prime] | handle | noop\n");
    return 2;
}
