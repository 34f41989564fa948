/* Telling Valgrind's memcheck about slots, so its leak check and invalid-access reports
 * cover them as they cover heap blocks: a slot this process holds is a block the size that
 * was asked for, everything else in the slot arrays is off limits here. Outside Valgrind
 * every hook is one load of a flag, written once (at the first init/attach under Valgrind). */
#ifndef VARSLOT_MEMCHECK_H
#define VARSLOT_MEMCHECK_H

#include "internal.h"

/* Hidden: read straight, not through the GOT (this is on the allocate and free paths). */
extern int vs__on_valgrind __attribute__((visibility("hidden")));

/* After init (fresh) or attach: find out once whether we run on Valgrind; if so, mark the
 * slot arrays off limits and give the pool its "held here" bitmap. */
void vs__vg_setup(vs_pool *pool, bool fresh);
/* Before the pool's memory goes away: blocks still held in it are forgotten. */
void vs__vg_detach(vs_pool *pool);

/* This process now holds slot idx as a block of size bytes (allocated here, or taken from
 * another process: then its bytes are defined, someone wrote them). */
void vs__vg_held(const vs_pool *pool, const struct vs_pool_class *cls, uint32_t idx, uint32_t size,
                 bool taken);
/* This process no longer holds it (freed, or handed to another process). */
void vs__vg_released(const vs_pool *pool, const struct vs_pool_class *cls, uint32_t idx);
void vs__vg_resized(const vs_pool *pool, const struct vs_pool_class *cls, uint32_t idx,
                    uint32_t old_size, uint32_t new_size);

#ifdef VS_HAVE_VALGRIND
#define VS__VG(call) \
    do { \
        if (VS__UNLIKELY(vs__on_valgrind)) { \
            call; \
        } \
    } while (0)
#else /* built without Valgrind's headers: not even the flag is looked at (the call still
       * compiles, so what it uses is not "unused") */
#define VS__VG(call) \
    do { \
        if (0) { \
            call; \
        } \
    } while (0)
#endif

#endif
