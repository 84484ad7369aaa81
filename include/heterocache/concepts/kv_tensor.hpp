#pragma once
//! \file
//! The `KvTensor` concept: how the engine's own K/V memory is described to the cache.

#include <concepts>

#include "heterocache/tensor/element.hpp"
#include "heterocache/tensor/memory_space.hpp"

namespace heterocache {
inline namespace v1 {

//! A K/V tensor maps `(layer, sequence, kv_head, token)` to the `head_dim` contiguous elements of that key or
//! value in the engine's memory, typed (`element_type`: `float`, `fp16_t` or `bf16_t`) and tagged with the
//! memory that holds it (`memory_space`). `kv_tensor` (tensor/kv_tensor.hpp) models it; the library only
//! reads through it.
template <class T>
concept KvTensor = KvElement<typename T::element_type> && MemorySpace<typename T::memory_space> &&
                   requires(const T& tensor, index_t i) {
                       { tensor.key(i, i, i, i) } -> std::same_as<const typename T::element_type*>;
                       { tensor.value(i, i, i, i) } -> std::same_as<const typename T::element_type*>;
                       tensor.key_rows(i, i, i);
                       tensor.value_rows(i, i, i);
                       { tensor.kv_heads() } -> std::convertible_to<index_t>;
                       { tensor.head_dim() } -> std::convertible_to<index_t>;
                   };

}  // namespace v1
}  // namespace heterocache
