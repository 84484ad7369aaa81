#pragma once
//! \file
//! Reference decode attention on the host over a CSR selection, and the exact merge of partial states.

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "heterocache/attention/csr_selection.hpp"

namespace heterocache {
inline namespace v1 {

//! Maximum head dimension of the host kernels (the accumulator lives on the stack).
inline constexpr index_t max_head_dim = 256;

//! Exact softmax attention of one decode query per query head over the selection.
//! `queries`, `output`: `[sequence][query_head][head_dim]`; `lse`: `[sequence][query_head]`, natural log of
//! the softmax denominator of the scaled scores. GQA is native: the G query heads of a row read the same
//! slots. Accumulates in double (single pass, running maximum). A row with no token gives output 0 and
//! lse -inf. Allocates nothing. O(total_tokens * G * d).
inline void decode_attention(const csr_selection& selection, const float* queries, float* output, float* lse,
                             float scale) {
    detail::require<shape_error>(selection.head_dim > 0 && selection.head_dim <= max_head_dim, "head_dim",
                                 selection.head_dim, "[1, 256]");
    const index_t d = selection.head_dim;
    std::array<double, max_head_dim> accumulator{};
    for (index_t row = 0; row < selection.rows; ++row) {
        for (index_t g = 0; g < selection.group_size; ++g) {
            const index_t q_head = row * selection.group_size + g;  // == seq * Hq + head * G + g
            const float* q = queries + q_head * d;
            double maximum = -std::numeric_limits<double>::infinity();
            double denominator = 0.0;
            std::fill(accumulator.begin(), accumulator.begin() + d, 0.0);
            for (index_t i = selection.indptr[row]; i < selection.indptr[row + 1]; ++i) {
                const float* k = selection.keys + selection.indices[i] * d;
                const float* v = selection.values + selection.indices[i] * d;
                float dot = 0.0f;
                for (index_t c = 0; c < d; ++c) dot += q[c] * k[c];
                const double score = static_cast<double>(dot * scale);
                if (score > maximum) {
                    const double rescale = std::exp(maximum - score);
                    denominator *= rescale;
                    for (index_t c = 0; c < d; ++c) accumulator[c] *= rescale;
                    maximum = score;
                }
                const double p = std::exp(score - maximum);
                denominator += p;
                for (index_t c = 0; c < d; ++c) accumulator[c] += p * static_cast<double>(v[c]);
            }
            float* out = output + q_head * d;
            const bool empty = denominator == 0.0;
            for (index_t c = 0; c < d; ++c) out[c] = empty ? 0.0f : static_cast<float>(accumulator[c] / denominator);
            lse[q_head] = empty ? -std::numeric_limits<float>::infinity()
                                : static_cast<float>(maximum + std::log(denominator));
        }
    }
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
