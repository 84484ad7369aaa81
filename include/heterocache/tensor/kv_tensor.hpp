#pragma once
//! \file
//! `kv_tensor`: an engine's K/V memory as the library sees it, a typed pointer pair in a memory space plus an
//! offset map (DESIGN.md section 3.1, "Engine memory"). The engine owns the memory; the library reads it.

#include "heterocache/concepts/kv_tensor.hpp"
#include "heterocache/tensor/element.hpp"
#include "heterocache/tensor/memory_space.hpp"
#include "heterocache/tensor/offset_map.hpp"

namespace heterocache {
inline namespace v1 {

//! The tokens of one (layer, sequence, KV head) of a tensor: `at(t)` points at the `head_dim` contiguous
//! elements of token `t`.
template <KvElement Element>
struct token_rows {
    const Element* base = nullptr;
    token_run_map map;

    [[nodiscard]] HETEROCACHE_HOST_DEVICE const Element* at(index_t token) const noexcept { return base + map.offset(token); }
};

//! Keys and values of every (layer, sequence, KV head, token) of an engine, `Element` each, in `Space`, laid
//! out by `Map` (`strided_map`, `paged_map`, or an engine's own `OffsetMap`). A plain value: copying it copies
//! the pointers, not the data.
template <KvElement Element, MemorySpace Space = host_memory, OffsetMap Map = strided_map>
struct kv_tensor {
    using element_type = Element;
    using memory_space = Space;
    using map_type = Map;

    const Element* keys = nullptr;
    const Element* values = nullptr;
    Map map;
    index_t heads = 0;  //!< KV heads
    index_t dim = 0;    //!< head dimension

    [[nodiscard]] HETEROCACHE_HOST_DEVICE const Element* key(index_t layer, index_t seq, index_t head,
                                                            index_t token) const noexcept {
        return keys + map.offset(layer, seq, head, token);
    }
    [[nodiscard]] HETEROCACHE_HOST_DEVICE const Element* value(index_t layer, index_t seq, index_t head,
                                                              index_t token) const noexcept {
        return values + map.offset(layer, seq, head, token);
    }
    //! The keys of one (layer, sequence, KV head), token by token.
    [[nodiscard]] HETEROCACHE_HOST_DEVICE token_rows<Element> key_rows(index_t layer, index_t seq,
                                                                      index_t head) const noexcept {
        return {keys, map.tokens(layer, seq, head)};
    }
    [[nodiscard]] HETEROCACHE_HOST_DEVICE token_rows<Element> value_rows(index_t layer, index_t seq,
                                                                        index_t head) const noexcept {
        return {values, map.tokens(layer, seq, head)};
    }
    [[nodiscard]] HETEROCACHE_HOST_DEVICE index_t kv_heads() const noexcept { return heads; }
    [[nodiscard]] HETEROCACHE_HOST_DEVICE index_t head_dim() const noexcept { return dim; }
};

//! A tensor with strides: the common contiguous layouts.
template <KvElement Element = float, MemorySpace Space = host_memory>
using strided_kv_tensor = kv_tensor<Element, Space, strided_map>;
//! A tensor over an engine's page pools and page table.
template <KvElement Element = float, MemorySpace Space = host_memory>
using paged_kv_tensor = kv_tensor<Element, Space, paged_map>;
static_assert(KvTensor<strided_kv_tensor<>> && KvTensor<paged_kv_tensor<bf16_t>>);

namespace detail {
//! Throws `shape_error` unless every size of a contiguous tensor is positive.
inline void require_tensor_sizes(index_t sequences, index_t kv_heads, index_t tokens, index_t head_dim) {
    require<shape_error>(sequences > 0, "sequences", sequences, "[1, inf)");
    require<shape_error>(kv_heads > 0, "kv_heads", kv_heads, "[1, inf)");
    require<shape_error>(tokens > 0, "tokens", tokens, "[1, inf)");
    require<shape_error>(head_dim > 0, "head_dim", head_dim, "[1, inf)");
}
}  // namespace detail

//! A tensor over `keys`/`values` shaped `[layers][sequences][kv_heads][tokens][head_dim]` (head-major, the
//! tokens of a head contiguous), the shape most reference code uses. Throws `shape_error` unless every size is
//! positive.
template <KvElement Element, MemorySpace Space = host_memory>
strided_kv_tensor<Element, Space> make_head_major_tensor(const Element* keys, const Element* values, index_t sequences,
                                                        index_t kv_heads, index_t tokens, index_t head_dim) {
    detail::require_tensor_sizes(sequences, kv_heads, tokens, head_dim);
    const index_t head = tokens * head_dim, sequence = kv_heads * head;
    return {keys, values, {sequences * sequence, sequence, head, head_dim}, kv_heads, head_dim};
}

//! A tensor over `keys`/`values` shaped `[layers][sequences][tokens][kv_heads][head_dim]` (token-major, all
//! heads of a token together, as projections write them). Throws `shape_error` unless every size is positive.
template <KvElement Element, MemorySpace Space = host_memory>
strided_kv_tensor<Element, Space> make_token_major_tensor(const Element* keys, const Element* values, index_t sequences,
                                                         index_t kv_heads, index_t tokens, index_t head_dim) {
    detail::require_tensor_sizes(sequences, kv_heads, tokens, head_dim);
    const index_t token = kv_heads * head_dim, sequence = tokens * token;
    return {keys, values, {sequences * sequence, sequence, head_dim, token}, kv_heads, head_dim};
}

}  // namespace v1
}  // namespace heterocache
