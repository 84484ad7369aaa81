#pragma once
//! \file
//! The `KvLayout` concept: how the engine's own K/V memory is described to the cache.

#include <concepts>

#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! A layout maps `(layer, sequence, kv_head, token)` to the `head_dim` contiguous floats of that key or
//! value in the engine's memory. The library only reads through it; the engine keeps ownership.
template <class L>
concept KvLayout = requires(const L& layout, index_t i) {
    { layout.key(i, i, i, i) } -> std::convertible_to<const float*>;
    { layout.value(i, i, i, i) } -> std::convertible_to<const float*>;
    { layout.kv_heads() } -> std::convertible_to<index_t>;
    { layout.head_dim() } -> std::convertible_to<index_t>;
};

}  // namespace v1
}  // namespace heterocache
