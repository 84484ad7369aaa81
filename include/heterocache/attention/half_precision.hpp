#pragma once
//! \file
//! Decode attention over 16-bit K/V (`fp16_t`, `bf16_t` slots of storage/kv_element.hpp): each key and
//! value converted to fp32 as it is read, fp32 accumulation. Halves the bytes a decode step reads.

#include <concepts>

#include "heterocache/attention/decode_attention.hpp"
#include "heterocache/storage/kv_element.hpp"

namespace heterocache {
inline namespace v1 {

//! The 16-bit element types the host attention kernel reads.
template <class E>
concept HalfElement = std::same_as<E, fp16_t> || std::same_as<E, bf16_t>;

namespace detail {

//! Keys and values converted to fp32 into the kernel's buffer as they are read (once per token, shared by
//! the G query heads of the row).
template <HalfElement E>
struct half_slots {
    const E* keys;
    const E* values;
    index_t head_dim;
    [[nodiscard]] const float* key(index_t slot, float* buffer) const noexcept { return convert(keys, slot, buffer); }
    [[nodiscard]] const float* value(index_t slot, float* buffer) const noexcept { return convert(values, slot, buffer); }
    HETEROCACHE_ALWAYS_INLINE void prefetch(index_t slot, bool value) const noexcept {
        detail::prefetch((value ? values : keys) + slot * head_dim, static_cast<std::size_t>(head_dim) * sizeof(E));
    }
    const float* convert(const E* base, index_t slot, float* buffer) const noexcept {
        to_floats(base + slot * head_dim, buffer, head_dim);
        return buffer;
    }
};

//! The kernel's view of a 16-bit selection's slots.
template <HalfElement E>
half_slots<E> slots_of(const basic_csr_selection<E>& selection) noexcept {
    return {selection.keys, selection.values, selection.head_dim};
}

}  // namespace detail

//! `decode_attention` over 16-bit K/V: the same kernel, each key and value converted to fp32 once as it is
//! read, fp32 accumulation. Matches the fp32 kernel run on the K/V widened to float, to float rounding. Rows
//! are spread over the threads of `pool` when one is given (same result). Writes the scores
//! `selection.captures` asks for. Allocates nothing. Throws `shape_error` unless `1 <= head_dim <= 256` and
//! every capture fits its row.
template <HalfElement E>
void decode_attention(const basic_csr_selection<E>& selection, const float* queries, float* output, float* lse,
                      float scale, host_thread_pool* pool = nullptr) {
    detail::check_selection(selection);
    const detail::half_slots<E> source = detail::slots_of(selection);
    const auto attend = [&](index_t row) {
        detail::attend_row(detail::selection_row(selection, source, row, queries, output, lse, scale));
    };
    if (pool != nullptr)
        pool->for_each(selection.rows, attend);
    else
        for (index_t row = 0; row < selection.rows; ++row) attend(row);
}

//! As above, with the rows spread over the threads of `pool`.
template <HalfElement E>
void decode_attention(const basic_csr_selection<E>& selection, const float* queries, float* output, float* lse,
                      float scale, host_thread_pool& pool) {
    decode_attention(selection, queries, output, lse, scale, &pool);
}

}  // namespace v1
}  // namespace heterocache
