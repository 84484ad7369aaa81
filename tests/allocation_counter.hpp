#pragma once
// Test support: counts every allocation of the test program, so a test can assert that a call made none.
// Replaces the global operator new and delete: include it from one source file of a test program only.

#include <atomic>
#include <cstdlib>
#include <new>

namespace testing_support {
//! Allocations through operator new since the program started.
inline std::atomic<long> allocations{0};
}  // namespace testing_support

// Out of line, so that GCC does not pair the malloc and free inside with the new and delete of callers.
[[gnu::noinline]] void* operator new(std::size_t size) {
    testing_support::allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
    throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
