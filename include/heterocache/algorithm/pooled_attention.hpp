#pragma once
//! \file
//! The pooled attention row of a KV head (DESIGN.md section 2, "Attention row of a KV head").

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>

#include "heterocache/detail/vector_math.hpp"
#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! Width of the 1-D average pool that smooths attention rows (zero padded, divided by the full width).
inline constexpr index_t attention_pool_width = 5;

//! Where the keys of one KV head live: `key(position)` points at `head_dim` contiguous floats.
struct key_rows {
    const float* base = nullptr;  //!< key of position 0
    index_t stride = 0;           //!< elements between consecutive positions
    [[nodiscard]] const float* key(index_t position) const noexcept { return base + position * stride; }
};

//! Queries of one sequence for an attention-row computation: `query(i, q_head)` points at `head_dim`
//! floats; query `i` sits at absolute position `first_position + i` (for the causal mask).
struct query_rows {
    const float* base = nullptr;
    index_t count = 0;           //!< number of queries (observation window width, or 1 at decode)
    index_t token_stride = 0;    //!< elements between consecutive queries
    index_t head_stride = 0;     //!< elements between consecutive query heads
    index_t first_position = 0;  //!< absolute position of query 0
    [[nodiscard]] const float* query(index_t i, index_t q_head) const noexcept {
        return base + i * token_stride + q_head * head_stride;
    }
};

namespace detail {

//! Writes `exp(q.k_t * scale - max)` for positions `[0, visible)` into `out` and returns their sum (in
//! double): the softmax of one query over a head's keys is `out[t] / sum`.
inline double softmax_numerators(const float* q, const key_rows& keys, index_t visible, index_t head_dim, float scale,
                                 float* out) noexcept {
    float maximum = -std::numeric_limits<float>::infinity();
    for (index_t t = 0; t < visible; ++t) {
        out[t] = dot(q, keys.key(t), head_dim) * scale;
        maximum = std::max(maximum, out[t]);
    }
    for (index_t t = 0; t < visible; ++t) out[t] = exp_nonpositive(out[t] - maximum);
    double total = 0.0;
    for (index_t t = 0; t < visible; ++t) total += out[t];
    return total;
}

}  // namespace detail

//! Computes the pooled attention row of KV head `kv_head` over prompt positions `[0, row.size())`:
//! for each query head of the GQA group, the softmax rows of the `queries` (causally masked) averaged over
//! the queries; then the maximum over the group; then an average pool of width 5.
//! `scratch` must hold `2 * row.size()` floats. Allocates nothing. O(w * G * T * d).
inline void pooled_attention_row(const query_rows& queries, const key_rows& keys, index_t kv_head,
                                 index_t group_size, index_t head_dim, std::span<float> row,
                                 std::span<float> scratch) {
    const auto length = static_cast<index_t>(row.size());
    detail::require(queries.count > 0, "queries.count", queries.count, "[1, inf)");
    detail::require(static_cast<index_t>(scratch.size()) >= 2 * length, "scratch.size()", scratch.size(),
                    "[2 * row.size(), inf)");
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    float* probabilities = scratch.data();
    float* group_max = scratch.data() + length;
    std::fill(group_max, group_max + length, 0.0f);
    for (index_t g = 0; g < group_size; ++g) {
        const index_t q_head = kv_head * group_size + g;
        std::fill(probabilities, probabilities + length, 0.0f);
        for (index_t i = 0; i < queries.count; ++i) {
            const float* q = queries.query(i, q_head);
            const index_t visible = std::min(length, queries.first_position + i + 1);
            const double total = detail::softmax_numerators(q, keys, visible, head_dim, scale, row.data());
            const float inverse = static_cast<float>(1.0 / (total * static_cast<double>(queries.count)));
            for (index_t t = 0; t < visible; ++t) probabilities[t] += row[t] * inverse;
        }
        for (index_t t = 0; t < length; ++t) group_max[t] = std::max(group_max[t], probabilities[t]);
    }
    constexpr index_t half = attention_pool_width / 2;
    for (index_t t = 0; t < length; ++t) {
        float sum = 0.0f;
        for (index_t u = std::max<index_t>(0, t - half); u <= std::min(length - 1, t + half); ++u) sum += group_max[u];
        row[t] = sum / static_cast<float>(attention_pool_width);
    }
}

}  // namespace v1
}  // namespace heterocache
