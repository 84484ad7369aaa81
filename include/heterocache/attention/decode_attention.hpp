#pragma once
//! \file
//! Reference decode attention on the host over a CSR selection, and the exact merge of partial states.

#include <algorithm>
#include <cmath>
#include <limits>

#include "heterocache/attention/csr_selection.hpp"
#include "heterocache/attention/host_thread_pool.hpp"
#include "heterocache/detail/attention_kernel.hpp"

namespace heterocache {
inline namespace v1 {

namespace detail {

//! Keys and values read in place from fp32 slots.
struct float_slots {
    const float* keys;
    const float* values;
    index_t head_dim;
    [[nodiscard]] const float* key(index_t slot, float*) const noexcept { return keys + slot * head_dim; }
    [[nodiscard]] const float* value(index_t slot, float*) const noexcept { return values + slot * head_dim; }
    HETEROCACHE_ALWAYS_INLINE void prefetch(index_t slot, bool value) const noexcept {
        detail::prefetch((value ? values : keys) + slot * head_dim, static_cast<std::size_t>(head_dim) * sizeof(float));
    }
};

//! The kernel's view of an fp32 selection's slots.
inline float_slots slots_of(const csr_selection& selection) noexcept {
    return {selection.keys, selection.values, selection.head_dim};
}

inline void check_head_dim(index_t head_dim) {
    detail::require<shape_error>(head_dim > 0 && head_dim <= max_head_dim, "head_dim", head_dim, "[1, 256]");
}

//! Checks what a selection asks the kernel to capture fits its rows.
template <class Selection>
void check_selection(const Selection& selection) {
    check_head_dim(selection.head_dim);
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

//! Row `row` of a selection whose slots `source` reads.
template <class Selection, class Source>
attention_row<Source> selection_row(const Selection& selection, const Source& source, index_t row, const float* queries,
                                    float* output, float* lse, float scale) noexcept {
    const index_t first_head = row * selection.group_size;  // == seq * Hq + head * G
    const score_capture capture = selection.captures.empty() ? score_capture{} : selection.captures[row];
    return {source,
            selection.indices.data() + selection.indptr[row],
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

}  // namespace detail

//! Exact softmax attention of one decode query per query head over the selection.
//! `queries`, `output`: `[sequence][query_head][head_dim]`; `lse`: `[sequence][query_head]`, natural log of
//! the softmax denominator of the scaled scores. GQA is native: the G query heads of a row are computed
//! together, so each key and value is read once per row. fp32 with an online softmax over blocks of 64
//! tokens and compensated (Kahan) sums across blocks: relative error about 1e-6 against float64 at 32K
//! tokens. Deterministic: the result depends on the selection only (bit-identical for identical
//! selections, whatever pool runs it). A row with no token gives output 0 and lse -inf. Writes the scores
//! `selection.captures` asks for. Allocates nothing. Throws `shape_error` unless `1 <= head_dim <= 256`
//! and every capture fits its row. O(total_tokens * G * d).
inline void decode_attention(const csr_selection& selection, const float* queries, float* output, float* lse,
                             float scale) {
    detail::check_selection(selection);
    const detail::float_slots source = detail::slots_of(selection);
    for (index_t row = 0; row < selection.rows; ++row)
        detail::attend_row(detail::selection_row(selection, source, row, queries, output, lse, scale));
}

//! As above, with the rows spread over the threads of `pool` (each row computed by one thread, so the
//! result is bit-identical to the single-threaded call).
inline void decode_attention(const csr_selection& selection, const float* queries, float* output, float* lse,
                             float scale, host_thread_pool& pool) {
    detail::check_selection(selection);
    const detail::float_slots source = detail::slots_of(selection);
    pool.for_each(selection.rows, [&](index_t row) {
        detail::attend_row(detail::selection_row(selection, source, row, queries, output, lse, scale));
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
