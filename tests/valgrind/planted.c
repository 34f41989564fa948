/* Small programs with one planted defect each, run under valgrind/varslot-memcheck by
 * test-memcheck.sh, which checks that memcheck reports it at the line marked DEFECT. Blocks
 * are 100,000 bytes: routed into the segment (VARSLOT_MIN_SIZE 64K), so these are slots. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <varslot/preload.h>

#define BLOCK 100000

#pragma GCC diagnostic ignored "-Wuse-after-free" /* the defects are the point */

static void *api(const char *name)
{
    void *f = dlsym(RTLD_DEFAULT, name);
    if (!f) {
        fprintf(stderr, "planted: %s not found: not running under the shim\n", name);
        exit(3);
    }
    return f;
}

static char *routed_block(void)
{
    char *p = malloc(BLOCK);
    if (!p || !((vs_owns_fn)api("vs_owns"))(p)) {
        fprintf(stderr, "planted: the block was not routed\n");
        exit(3);
    }
    memset(p, 7, BLOCK);
    return p;
}

static volatile char sink;
static char *keep;

static int leak(void)
{
    char *p = routed_block();
    p = NULL; /* DEFECT leak: the only pointer is dropped */
    keep = p;
    return 0;
}

static int overread(void)
{
    char *p = routed_block();
    sink = p[BLOCK]; /* DEFECT overread: one byte past the request, inside the slot */
    free(p);
    return 0;
}

static int use_after_free(void)
{
    char *p = routed_block();
    free(p);
    sink = p[10]; /* DEFECT uaf */
    return 0;
}

static int double_free(void)
{
    char *p = routed_block();
    free(p);
    free(p); /* DEFECT dfree */
    return 0;
}

static int clean(void)
{
    for (int i = 0; i < 50; i++) {
        char *big = routed_block(), *small = malloc(100 + i);
        memset(small, 1, 100 + i);
        big = realloc(big, BLOCK + 1000 * i); /* grows within its slot, or moves */
        sink = big[BLOCK - 1] + small[99];
        free(small);
        free(big);
    }
    return 0;
}

/* Hand-over: the sender writes a block and prints its handle, then waits (a line on stdin)
 * while the receiver takes it: a sender that exits first takes its blocks with it. */
static int send_block(void)
{
    char *p = routed_block();
    strcpy(p, "from the sender");
    printf("%llu\n", (unsigned long long)((vs_handle_of_fn)api("vs_handle_of"))(p));
    fflush(stdout);
    char line[16];
    return fgets(line, sizeof line, stdin) ? 0 : 1; /* p is not freed here: it is the receiver's */
}

static int receive_block(const char *handle)
{
    char *p = ((vs_ptr_of_fn)api("vs_ptr_of"))(strtoull(handle, NULL, 10));
    if (!p || strcmp(p, "from the sender") != 0) {
        fprintf(stderr, "planted: the handed-over block did not arrive\n");
        return 1;
    }
    free(p);
    return 0;
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "leak")) return leak();
    if (!strcmp(what, "overread")) return overread();
    if (!strcmp(what, "uaf")) return use_after_free();
    if (!strcmp(what, "dfree")) return double_free();
    if (!strcmp(what, "clean")) return clean();
    if (!strcmp(what, "send")) return send_block();
    if (!strcmp(what, "receive") && argc > 2) return receive_block(argv[2]);
    fprintf(stderr, "usage: planted leak|overread|uaf|dfree|clean|send|receive HANDLE\n");
    return 2;
}
