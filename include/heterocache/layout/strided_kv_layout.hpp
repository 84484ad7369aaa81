#pragma once
//! \file
//! A strided view over contiguous engine K/V tensors.

#include "heterocache/concepts/kv_layout.hpp"

namespace heterocache {
inline namespace v1 {

//! Strides (in floats) of one K or V tensor; the head dimension is contiguous.
struct kv_strides {
    index_t layer = 0;
    index_t sequence = 0;
    index_t token = 0;
    index_t head = 0;
};

//! `KvLayout` over two tensors (keys, values) with the same strides, e.g. `[layer][seq][head][token][dim]`
//! or `[layer][seq][token][head][dim]`.
struct strided_kv_layout {
    const float* keys = nullptr;
    const float* values = nullptr;
    kv_strides strides;
    index_t heads = 0;
    index_t dim = 0;

    [[nodiscard]] const float* key(index_t layer, index_t seq, index_t head, index_t token) const noexcept {
        return keys + offset(layer, seq, head, token);
    }
    [[nodiscard]] const float* value(index_t layer, index_t seq, index_t head, index_t token) const noexcept {
        return values + offset(layer, seq, head, token);
    }
    [[nodiscard]] index_t kv_heads() const noexcept { return heads; }
    [[nodiscard]] index_t head_dim() const noexcept { return dim; }

private:
    [[nodiscard]] index_t offset(index_t layer, index_t seq, index_t head, index_t token) const noexcept {
        return layer * strides.layer + seq * strides.sequence + token * strides.token + head * strides.head;
    }
};
static_assert(KvLayout<strided_kv_layout>);

//! Layout of tensors shaped `[layers][sequences][kv_heads][tokens][head_dim]` (head-major, tokens contiguous
//! per head), the shape most reference code uses.
inline strided_kv_layout make_head_major_layout(const float* keys, const float* values, index_t sequences,
                                                index_t kv_heads, index_t tokens, index_t head_dim) {
    detail::require<shape_error>(kv_heads > 0, "kv_heads", kv_heads, "[1, inf)");
    detail::require<shape_error>(head_dim > 0, "head_dim", head_dim, "[1, inf)");
    detail::require<shape_error>(tokens > 0, "tokens", tokens, "[1, inf)");
    const index_t token = head_dim, head = tokens * head_dim, sequence = kv_heads * head;
    return {keys, values, {sequences * sequence, sequence, token, head}, kv_heads, head_dim};
}

}  // namespace v1
}  // namespace heterocache
