/* Where each class's slot words, free bitmap, share table and slot data live inside a pool, and the
 * validation of class configs. Every process recomputes this from the configs, so the
 * offsets it uses never come out of shared memory. */
#include "internal.h"

#include <stddef.h>
#include <string.h>

#define VS__CACHE_LINE 64

static bool align_up(size_t v, size_t a, size_t *out)
{
    size_t r;
    if (__builtin_add_overflow(v, a - 1, &r))
        return false;
    *out = r & ~(a - 1);
    return true;
}

/* Slots of a page or more get page-aligned strides so page-multiple requests start on a page. */
static size_t class_stride(uint32_t slot_size)
{
    size_t a = slot_size >= VS_SLOT_PAGE ? VS_SLOT_PAGE : VS_SLOT_ALIGN;
    return ((size_t)slot_size + a - 1) & ~(a - 1);
}

int vs__layout_compute(const vs_class_config *configs, size_t n, vs__class_layout *classes,
                       size_t *total, const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    if (!configs || n == 0) {
        *why = "no size classes given";
        return VS_EINVAL;
    }
    if (n > VS_MAX_CLASSES) {
        *why = "more than 64 size classes";
        return VS_EINVAL;
    }
    size_t off = n * sizeof(vs__class_header);
    for (size_t i = 0; i < n; i++) {
        const vs_class_config *c = &configs[i];
        if (c->slot_size == 0) {
            *why = "a class has slot_size 0";
            return VS_EINVAL;
        }
        if (c->slot_count == 0 || c->slot_count > VS_MAX_SLOTS_PER_CLASS) {
            *why = "a class's slot_count is 0 or above 2^24";
            return VS_EINVAL;
        }
        if (i > 0 && c->slot_size <= configs[i - 1].slot_size) {
            *why = "slot sizes must be strictly ascending";
            return VS_EINVAL;
        }
        vs__class_layout l;
        l.stride = class_stride(c->slot_size);
        l.bitmap_words = (c->slot_count + 63) / 64;
        size_t data_bytes, next;
        if (!align_up(off, VS__CACHE_LINE, &l.meta_offset) ||
            !align_up(l.meta_offset + (size_t)c->slot_count * sizeof(vs__slot_meta), VS__CACHE_LINE,
                      &l.bitmap_offset) ||
            !align_up(l.bitmap_offset + (size_t)l.bitmap_words * 8, VS__CACHE_LINE, &l.share_offset) ||
            !align_up(l.share_offset + (size_t)c->slot_count * sizeof(vs__share),
                      l.stride >= VS_SLOT_PAGE ? VS_SLOT_PAGE : VS__CACHE_LINE, &l.data_offset) ||
            __builtin_mul_overflow(l.stride, (size_t)c->slot_count, &data_bytes) ||
            __builtin_add_overflow(l.data_offset, data_bytes, &next)) {
            *why = "the pool would not fit in the address space";
            return VS_EINVAL;
        }
        off = next;
        if (classes)
            classes[i] = l;
    }
    if (!align_up(off, VS__CACHE_LINE, &off)) {
        *why = "the pool would not fit in the address space";
        return VS_EINVAL;
    }
    *total = off;
    return VS_OK;
}

int vs_pool_layout(const vs_class_config *configs, size_t n, vs_layout *out)
{
    vs__class_layout classes[VS_MAX_CLASSES];
    size_t total;
    if (!out)
        return VS_EINVAL;
    int rc = vs__layout_compute(configs, n, classes, &total, NULL);
    if (rc != VS_OK)
        return rc;
    memset(out, 0, sizeof *out);
    out->total_size = total;
    out->class_count = n;
    for (size_t i = 0; i < n; i++) {
        out->class_offsets[i].meta_offset = classes[i].meta_offset;
        out->class_offsets[i].data_offset = classes[i].data_offset;
    }
    return VS_OK;
}

size_t vs_pool_required_size(const vs_class_config *configs, size_t n)
{
    size_t total;
    return vs__layout_compute(configs, n, NULL, &total, NULL) == VS_OK ? total : 0;
}

int vs_pool_discover_configs(vs_region region, size_t base_offset, uint32_t num_classes,
                             vs_class_config *out, const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    if (!region.base || !out) {
        *why = "no region or no output array";
        return VS_EINVAL;
    }
    if (num_classes == 0 || num_classes > VS_MAX_CLASSES) {
        *why = "class count is 0 or above 64";
        return VS_EINVAL;
    }
    if (base_offset % VS__CACHE_LINE) {
        *why = "pool base offset is not 64-byte aligned";
        return VS_EINVAL;
    }
    if (base_offset > region.len ||
        region.len - base_offset < (size_t)num_classes * sizeof(vs__class_header)) {
        *why = "class headers lie outside the region";
        return VS_ECORRUPT;
    }
    /* Copy the immutable part of each header out once: a peer may be scribbling on them
     * while we look, and the search hint after it changes all the time. */
    vs__class_header hdr[VS_MAX_CLASSES];
    const vs__class_header *shared = (const void *)((const uint8_t *)region.base + base_offset);
    for (uint32_t i = 0; i < num_classes; i++)
        memcpy(&hdr[i], &shared[i], offsetof(vs__class_header, search_hint));
    for (uint32_t i = 0; i < num_classes; i++) {
        if (hdr[i].magic != VS__CLASS_MAGIC || hdr[i].class_idx != i) {
            *why = "a class header has a bad magic or index";
            return VS_ECORRUPT;
        }
        out[i].slot_size = hdr[i].slot_size;
        out[i].slot_count = hdr[i].slot_count;
    }
    vs__class_layout classes[VS_MAX_CLASSES];
    size_t total;
    const char *bad;
    if (vs__layout_compute(out, num_classes, classes, &total, &bad) != VS_OK) {
        *why = bad;
        return VS_ECORRUPT;
    }
    for (uint32_t i = 0; i < num_classes; i++) {
        if (hdr[i].meta_offset != classes[i].meta_offset ||
            hdr[i].bitmap_offset != classes[i].bitmap_offset ||
            hdr[i].data_offset != classes[i].data_offset || hdr[i].stride != classes[i].stride) {
            *why = "a class header's offsets disagree with its config";
            return VS_ECORRUPT;
        }
    }
    if (total > region.len - base_offset) {
        *why = "the pool described by the class headers is larger than the region";
        return VS_ECORRUPT;
    }
    *why = NULL;
    return VS_OK;
}
