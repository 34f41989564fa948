// Every C++ operator new and delete, so C++ allocations take the same routes as malloc:
// Debian's jemalloc (our DT_NEEDED) exports its own operators, and without these a program
// whose libstdc++ comes after it in the search order would bypass the shim for `new`.
#include <cstddef>
#include <new>

extern "C" {
void *vsp_alloc_from(size_t size, const void *caller);
void *vsp_aligned_from(size_t align, size_t size, const void *caller);
void free(void *p) noexcept;
}

namespace {

// The standard's loop: call the new-handler until it succeeds or there is none, then throw.
void *new_or_throw(size_t size, size_t align, const void *caller)
{
    for (;;) {
        void *p = align ? vsp_aligned_from(align, size, caller) : vsp_alloc_from(size, caller);
        if (p)
            return p;
        std::new_handler handler = std::get_new_handler();
        if (!handler)
            throw std::bad_alloc();
        handler();
    }
}

void *new_or_null(size_t size, size_t align, const void *caller) noexcept
{
    try {
        return new_or_throw(size, align, caller);
    } catch (...) {
        return nullptr;
    }
}

} // namespace

#define VSP_EXPORT __attribute__((visibility("default")))
#define CALLER __builtin_return_address(0)
#define ALIGN(a) static_cast<size_t>(a)

VSP_EXPORT void *operator new(size_t n) { return new_or_throw(n, 0, CALLER); }
VSP_EXPORT void *operator new[](size_t n) { return new_or_throw(n, 0, CALLER); }
VSP_EXPORT void *operator new(size_t n, const std::nothrow_t &) noexcept { return new_or_null(n, 0, CALLER); }
VSP_EXPORT void *operator new[](size_t n, const std::nothrow_t &) noexcept { return new_or_null(n, 0, CALLER); }
VSP_EXPORT void *operator new(size_t n, std::align_val_t a) { return new_or_throw(n, ALIGN(a), CALLER); }
VSP_EXPORT void *operator new[](size_t n, std::align_val_t a) { return new_or_throw(n, ALIGN(a), CALLER); }
VSP_EXPORT void *operator new(size_t n, std::align_val_t a, const std::nothrow_t &) noexcept
{
    return new_or_null(n, ALIGN(a), CALLER);
}
VSP_EXPORT void *operator new[](size_t n, std::align_val_t a, const std::nothrow_t &) noexcept
{
    return new_or_null(n, ALIGN(a), CALLER);
}

VSP_EXPORT void operator delete(void *p) noexcept { free(p); }
VSP_EXPORT void operator delete[](void *p) noexcept { free(p); }
VSP_EXPORT void operator delete(void *p, const std::nothrow_t &) noexcept { free(p); }
VSP_EXPORT void operator delete[](void *p, const std::nothrow_t &) noexcept { free(p); }
VSP_EXPORT void operator delete(void *p, size_t) noexcept { free(p); }
VSP_EXPORT void operator delete[](void *p, size_t) noexcept { free(p); }
VSP_EXPORT void operator delete(void *p, std::align_val_t) noexcept { free(p); }
VSP_EXPORT void operator delete[](void *p, std::align_val_t) noexcept { free(p); }
VSP_EXPORT void operator delete(void *p, std::align_val_t, const std::nothrow_t &) noexcept { free(p); }
VSP_EXPORT void operator delete[](void *p, std::align_val_t, const std::nothrow_t &) noexcept { free(p); }
VSP_EXPORT void operator delete(void *p, size_t, std::align_val_t) noexcept { free(p); }
VSP_EXPORT void operator delete[](void *p, size_t, std::align_val_t) noexcept { free(p); }
