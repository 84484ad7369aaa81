#pragma once
//! \file
//! Reference decode attention on the host over a paged selection, and the exact merge of partial states.

#include <algorithm>
#include <concepts>
#include <cmath>
#include <limits>

#include "heterocache/attention/paged_selection.hpp"
#include "heterocache/attention/host_thread_pool.hpp"
#include "heterocache/detail/attention_kernel.hpp"
#include "heterocache/tensor/element.hpp"

namespace heterocache {
inline namespace v1 {

namespace detail {

//! Keys and values of a hot pool as the kernel reads them: fp32 slots in place, 16-bit slots converted to fp32
//! into the kernel's buffer as they are read (once per token, shared by the G query heads of the row).
template <KvElement E>
struct element_slots {
    const E* keys;
    const E* values;
    index_t head_dim;
    [[nodiscard]] const float* key(index_t slot, float* buffer) const noexcept { return read(keys, slot, buffer); }
    [[nodiscard]] const float* value(index_t slot, float* buffer) const noexcept { return read(values, slot, buffer); }
    HETEROCACHE_ALWAYS_INLINE void prefetch(index_t slot, bool value) const noexcept {
        detail::prefetch((value ? values : keys) + slot * head_dim, static_cast<std::size_t>(head_dim) * sizeof(E));
    }
    [[nodiscard]] const float* read(const E* base, index_t slot, float* buffer) const noexcept {
        if constexpr (std::same_as<E, float>) {
            return base + slot * head_dim;
        } else {
            to_floats(base + slot * head_dim, buffer, head_dim);
            return buffer;
        }
    }
};

//! The kernel's view of a selection's slots.
template <KvElement E>
element_slots<E> slots_of(const basic_paged_selection<E>& selection) noexcept {
    return {selection.keys, selection.values, selection.head_dim};
}

inline void check_head_dim(index_t head_dim) {
    detail::require<shape_error>(head_dim > 0 && head_dim <= max_head_dim, "head_dim", head_dim, "[1, 256]");
}

//! Checks the shape of a selection, and that what it asks the kernel to capture fits its rows. O(rows).
template <class Selection>
void check_selection(const Selection& selection) {
    check_head_dim(selection.head_dim);
    detail::require<shape_error>(selection.rows >= 0, "selection.rows", selection.rows, "[0, inf)");
    detail::require<shape_error>(selection.rows == 0 || selection.page_size >= 1, "selection.page_size",
                                 selection.page_size, "[1, inf)");
    if (selection.captures.empty()) return;
    detail::require<shape_error>(static_cast<index_t>(selection.captures.size()) == selection.rows, "captures.size()",
                                 selection.captures.size(), "0 or rows");
    for (index_t row = 0; row < selection.rows; ++row) {
        const score_capture& capture = selection.captures[row];
        if (capture.scores != nullptr)
            detail::require<shape_error>(capture.tokens >= 0 && capture.tokens <= selection.row_length(row),
                                         "captures[row].tokens", capture.tokens, "[0, row_length(row)]");
    }
}

//! The capture request of row `row` (none when the selection asks for none).
template <class Selection>
score_capture capture_of(const Selection& selection, index_t row) noexcept {
    return selection.captures.empty() ? score_capture{} : selection.captures[row];
}

//! Row `row` of a selection whose slots `source` reads.
template <class Selection, class Source>
attention_row<Source> selection_row(const Selection& selection, const Source& source, index_t row, const float* queries,
                                    float* output, float* lse, float scale) noexcept {
    const index_t first_head = row * selection.group_size;  // == seq * Hq + head * G
    const score_capture capture = capture_of(selection, row);
    return {source,
            selection.indices + selection.indptr[row],
            selection.page_size,
            0,
            selection.row_length(row),
            selection.group_size,
            selection.head_dim,
            queries + first_head * selection.head_dim,
            output + first_head * selection.head_dim,
            lse + first_head,
            scale,
            capture.scores,
            capture.tokens,
            capture.tokens};
}

//! Attends row `row` whole and stamps its capture.
template <class Selection, class Source>
void attend_selection_row(const Selection& selection, const Source& source, index_t row, const float* queries,
                          float* output, float* lse, float scale) noexcept {
    attend_row(selection_row(selection, source, row, queries, output, lse, scale));
    mark_written(capture_of(selection, row));
}

}  // namespace detail

//! Exact softmax attention of one decode query per query head over the selection, for hot tiers of any
//! element type (16-bit keys and values widened to fp32 as they are read, fp32 accumulation: the result
//! matches the fp32 kernel run on the widened K/V).
//! `queries`, `output`: `[sequence][query_head][head_dim]`; `lse`: `[sequence][query_head]`, natural log of
//! the softmax denominator of the scaled scores. GQA is native: the G query heads of a row are computed
//! together, so each key and value is read once per row. fp32 with an online softmax over blocks of 64
//! tokens and compensated (Kahan) sums across blocks: relative error about 1e-6 against float64 at 32K
//! tokens. Deterministic: the result depends on the selection's tokens only (bit-identical for selections
//! that list the same K/V in the same order, whatever the page size or pool runs it). A row with no token
//! gives output 0 and lse -inf. Writes the scores `selection.captures` asks for and stamps them. Allocates
//! nothing. Throws `shape_error` unless `1 <= head_dim <= 256`, the page size is positive and every capture
//! fits its row. O(total_tokens * G * d).
template <KvElement E>
void decode_attention(const basic_paged_selection<E>& selection, const float* queries, float* output, float* lse,
                      float scale) {
    detail::check_selection(selection);
    const detail::element_slots<E> source = detail::slots_of(selection);
    for (index_t row = 0; row < selection.rows; ++row)
        detail::attend_selection_row(selection, source, row, queries, output, lse, scale);
}

//! As above, with the rows spread over the threads of `pool` (each row computed by one thread, so the
//! result is bit-identical to the single-threaded call).
template <KvElement E>
void decode_attention(const basic_paged_selection<E>& selection, const float* queries, float* output, float* lse,
                      float scale, host_thread_pool& pool) {
    detail::check_selection(selection);
    const detail::element_slots<E> source = detail::slots_of(selection);
    pool.for_each(selection.rows, [&](index_t row) {
        detail::attend_selection_row(selection, source, row, queries, output, lse, scale);
    });
}

//! Merges two partial attention states over disjoint token sets into the state over their union, exactly:
//! `lse = log(e^lse_a + e^lse_b)`, `out = out_a * e^(lse_a - lse) + out_b * e^(lse_b - lse)`.
//! Either side may be empty (lse -inf). `out` may alias `out_a`. O(head_dim).
inline void merge_attention_states(const float* out_a, float lse_a, const float* out_b, float lse_b, index_t head_dim,
                                   float* out, float& lse) noexcept {
    const double a = lse_a, b = lse_b;
    const double top = std::max(a, b);
    if (top == -std::numeric_limits<double>::infinity()) {
        for (index_t c = 0; c < head_dim; ++c) out[c] = 0.0f;
        lse = static_cast<float>(top);
        return;
    }
    const double wa = std::exp(a - top), wb = std::exp(b - top);
    const double total = wa + wb;
    for (index_t c = 0; c < head_dim; ++c)
        out[c] = static_cast<float>((wa * out_a[c] + wb * out_b[c]) / total);
    lse = static_cast<float>(top + std::log(total));
}

}  // namespace v1
}  // namespace heterocache
