#pragma once
//! \file
//! Memory-space tags: which memory a pointer points into (DESIGN.md section 3.1, "Engine memory").

#include <concepts>

namespace heterocache {
inline namespace v1 {

//! Pageable host memory: what `new` and `std::vector` give.
struct host_memory {
    static constexpr bool host_accessible = true;
    static constexpr bool device_accessible = false;
};
//! Page-locked host memory (`cudaHostAlloc`): host code reads it, and a device reads it in place when it is
//! mapped, or copies from it at full bus speed.
struct pinned_memory {
    static constexpr bool host_accessible = true;
    static constexpr bool device_accessible = true;
};
//! Device memory: only device code and copies reach it.
struct device_memory {
    static constexpr bool host_accessible = false;
    static constexpr bool device_accessible = true;
};

//! One of the memory-space tags above (or a tag of the same shape an engine defines).
template <class S>
concept MemorySpace = requires {
    { S::host_accessible } -> std::convertible_to<bool>;
    { S::device_accessible } -> std::convertible_to<bool>;
};

//! Whether host code may read and write memory of `Space` directly.
template <MemorySpace Space>
inline constexpr bool host_accessible_v = Space::host_accessible;

}  // namespace v1
}  // namespace heterocache
