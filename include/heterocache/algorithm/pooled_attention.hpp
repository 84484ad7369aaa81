#pragma once
//! \file
//! The pooled attention row of a KV head (DESIGN.md section 2, "Attention row of a KV head").

#include <algorithm>
#include <bit>
#include <concepts>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>

#include "heterocache/detail/vector_math.hpp"
#include "heterocache/tensor/kv_tensor.hpp"
#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! Width of the 1-D average pool that smooths attention rows (zero padded, divided by the full width).
inline constexpr index_t attention_pool_width = 5;

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

//! Largest head dimension the scoring functions take (a 16-bit key is widened on the stack).
inline constexpr index_t max_scored_head_dim = 256;

namespace detail {

//! `e^(scores[t] - max)` into `out` (which may be `scores`) for `t < visible`; returns their sum in double.
//! The softmax of the scores is `out[t] / sum`. Every loop vectorizes: the maximum compares `ordered_bits`;
//! the sum goes lane-wise over blocks of 64 in float, block sums added in double.
HETEROCACHE_ALWAYS_INLINE double exponentiate_scores(const float* scores, float* out, index_t visible) noexcept {
    constexpr index_t lanes = vector_lanes;
    std::int32_t lane_max[lanes];
    std::fill(lane_max, lane_max + lanes, ordered_bits(-std::numeric_limits<float>::infinity()));
    index_t t = 0;
    for (; t + lanes <= visible; t += lanes)
        for (index_t l = 0; l < lanes; ++l) {
            const std::int32_t key = ordered_bits(scores[t + l]);
            lane_max[l] = key > lane_max[l] ? key : lane_max[l];
        }
    for (index_t l = 0; t + l < visible; ++l) lane_max[l] = std::max(lane_max[l], ordered_bits(scores[t + l]));
    const float maximum = std::bit_cast<float>(ordered_bits(*std::max_element(lane_max, lane_max + lanes)));
    constexpr index_t block = 64;
    double total = 0.0;
    for (index_t begin = 0; begin < visible; begin += block) {
        const index_t end = std::min(visible, begin + block);
        for (t = begin; t < end; ++t) out[t] = exp_nonpositive(scores[t] - maximum);
        total += static_cast<double>(sum(out + begin, end - begin));
    }
    return total;
}

//! The largest of two non-negative floats (compared as integers, which vectorizes; see above).
HETEROCACHE_ALWAYS_INLINE float max_nonnegative(float a, float b) noexcept {
    return std::bit_cast<std::int32_t>(a) > std::bit_cast<std::int32_t>(b) ? a : b;
}

//! A key as `head_dim` floats: fp32 keys in place, 16-bit keys widened into `buffer`.
template <KvElement E>
HETEROCACHE_ALWAYS_INLINE const float* widened(const E* k, index_t head_dim, float* buffer) noexcept {
    if constexpr (std::same_as<E, float>) {
        return k;
    } else {
        to_floats(k, buffer, head_dim);
        return buffer;
    }
}

//! `q . k` over `head_dim` elements, a 16-bit key widened to fp32 first (into `buffer`, `head_dim` floats):
//! the same sum, in the same order, as over the widened key.
template <KvElement E>
HETEROCACHE_ALWAYS_INLINE float dot_widened(const float* q, const E* k, index_t head_dim, float* buffer) noexcept {
    return dot(q, widened(k, head_dim, buffer), head_dim);
}

//! Writes `exp(q.k_t * scale - max)` for positions `[0, visible)` into `out` and returns their sum (in
//! double): the softmax of one query over a head's keys is `out[t] / sum`.
template <KvElement E>
double softmax_numerators(const float* q, const token_rows<E>& keys, index_t visible, index_t head_dim, float scale,
                          float* out) noexcept {
    alignas(64) float buffer[max_scored_head_dim];
    for (index_t t = 0; t < visible; ++t) out[t] = dot_widened(q, keys.at(t), head_dim, buffer) * scale;
    return exponentiate_scores(out, out, visible);
}

//! `out[t]` = the mean of `in[t - 2 .. t + 2]` (zero padded, divided by the full width 5).
HETEROCACHE_ALWAYS_INLINE void average_pool(const float* __restrict in, float* __restrict out, index_t length) noexcept {
    constexpr index_t half = attention_pool_width / 2;
    static_assert(attention_pool_width == 5, "the interior loop adds five neighbours");
    const auto edge = [&](index_t t) {
        float sum = 0.0f;
        for (index_t u = std::max<index_t>(0, t - half); u <= std::min(length - 1, t + half); ++u) sum += in[u];
        out[t] = sum / static_cast<float>(attention_pool_width);
    };
    const index_t interior_end = std::max<index_t>(half, length - half);
    for (index_t t = 0; t < std::min(half, length); ++t) edge(t);
    for (index_t t = half; t < interior_end; ++t)  // the same sums, left to right, in a loop that vectorizes
        out[t] = ((((in[t - 2] + in[t - 1]) + in[t]) + in[t + 1]) + in[t + 2]) / static_cast<float>(attention_pool_width);
    for (index_t t = std::max(interior_end, std::min(half, length)); t < length; ++t) edge(t);
}

//! The body of `pooled_attention_row_from_scores` (arguments checked), inlined into each instruction-set
//! copy below (detail/isa_dispatch.hpp; the copies give bit-identical rows).
HETEROCACHE_ALWAYS_INLINE void pool_group_scores_body(const float* scores, index_t group_size, index_t length,
                                                      float* row, float* scratch) noexcept {
    float* probabilities = scratch;
    float* group_max = scratch + length;
    std::fill(group_max, group_max + length, 0.0f);
    for (index_t g = 0; g < group_size; ++g) {
        const float inverse = static_cast<float>(1.0 / exponentiate_scores(scores + g * length, probabilities, length));
        for (index_t t = 0; t < length; ++t) group_max[t] = max_nonnegative(group_max[t], probabilities[t] * inverse);
    }
    average_pool(group_max, row, length);
}

inline void pool_group_scores_baseline(const float* scores, index_t group_size, index_t length, float* row,
                                       float* scratch) noexcept {
    pool_group_scores_body(scores, group_size, length, row, scratch);
}

HETEROCACHE_TARGET_AVX2 inline void pool_group_scores_avx2(const float* scores, index_t group_size, index_t length,
                                                           float* row, float* scratch) noexcept {
    pool_group_scores_body(scores, group_size, length, row, scratch);
}

}  // namespace detail

//! The default attention scale `1 / sqrt(head_dim)`.
[[nodiscard]] inline float attention_scale(index_t head_dim) noexcept {
    return 1.0f / std::sqrt(static_cast<float>(head_dim));
}

//! Computes the pooled attention row of KV head `kv_head` over prompt positions `[0, row.size())`:
//! for each query head of the GQA group, the softmax rows of the `queries` (causally masked) averaged over
//! the queries; then the maximum over the group; then an average pool of width 5.
//! `scratch` must hold `2 * row.size()` floats. Allocates nothing. O(w * G * T * d).
template <KvElement E>
void pooled_attention_row(const query_rows& queries, const token_rows<E>& keys, index_t kv_head,
                                 index_t group_size, index_t head_dim, std::span<float> row,
                                 std::span<float> scratch) {
    const auto length = static_cast<index_t>(row.size());
    detail::require(queries.count > 0, "queries.count", queries.count, "[1, inf)");
    detail::require(static_cast<index_t>(scratch.size()) >= 2 * length, "scratch.size()", scratch.size(),
                    "[2 * row.size(), inf)");
    detail::require<shape_error>(head_dim >= 1 && head_dim <= max_scored_head_dim, "head_dim", head_dim, "[1, 256]");
    const float scale = attention_scale(head_dim);
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
        for (index_t t = 0; t < length; ++t) group_max[t] = detail::max_nonnegative(group_max[t], probabilities[t]);
    }
    detail::average_pool(group_max, row.data(), length);
}

//! Writes the scaled scores `q_g . k_t * scale` of one decode query over the keys of KV head `kv_head`,
//! positions `[0, tokens)`, for the `group_size` query heads of its group: `out[g * tokens + t]`.
//! `query(q_head)` is at `query + q_head * query_head_stride`. Each key is read once for the whole group.
//! These are the scores an attention kernel computes for the same tokens (`basic_paged_selection::captures`).
//! O(G * T * d).
//! `head_dim` is at most `max_scored_head_dim`.
template <KvElement E>
void group_scores(const float* query, index_t query_head_stride, const token_rows<E>& keys, index_t kv_head,
                  index_t group_size, index_t head_dim, float scale, index_t tokens, float* out) noexcept {
    const float* first = query + kv_head * group_size * query_head_stride;
    alignas(64) float buffer[max_scored_head_dim];
    for (index_t t = 0; t < tokens; ++t) {
        const float* k = detail::widened(keys.at(t), head_dim, buffer);
        for (index_t g = 0; g < group_size; ++g)
            out[g * tokens + t] = detail::dot(first + g * query_head_stride, k, head_dim) * scale;
    }
}

//! The pooled attention row of one decode query from its scaled scores (`scores[g * T + t]` for the G
//! query heads of a KV head, T = `row.size()`, as `group_scores` or an attention kernel's capture writes
//! them): the softmax of each head over the T positions, the maximum over the group, the average pool of
//! width 5. Equal, bit for bit, to `pooled_attention_row` of that query when the scores are. `scratch`
//! must hold `2 * row.size()` floats. Allocates nothing. O(G * T).
inline void pooled_attention_row_from_scores(std::span<const float> scores, index_t group_size, std::span<float> row,
                                             std::span<float> scratch) {
    const auto length = static_cast<index_t>(row.size());
    detail::require<shape_error>(static_cast<index_t>(scores.size()) == group_size * length, "scores.size()",
                                 scores.size(), "group_size * row.size()");
    detail::require(static_cast<index_t>(scratch.size()) >= 2 * length, "scratch.size()", scratch.size(),
                    "[2 * row.size(), inf)");
    if (detail::selected_kernel_isa() == detail::kernel_isa::avx2)
        detail::pool_group_scores_avx2(scores.data(), group_size, length, row.data(), scratch.data());
    else
        detail::pool_group_scores_baseline(scores.data(), group_size, length, row.data(), scratch.data());
}

}  // namespace v1
}  // namespace heterocache
