#pragma once
//! \file
//! Accumulated (unpooled) attention of a KV head's query group: the mass H2O ranks heavy hitters by.

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>

#include "heterocache/algorithm/pooled_attention.hpp"
#include "heterocache/detail/vector_math.hpp"
#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! Adds to `accumulated` (one entry per position `[0, accumulated.size())`) the softmax rows of `queries`
//! (causally masked) of the `group_size` query heads of `kv_head`, each row weighted `1 / group_size`: one
//! query adds a mass of 1 in all. Unlike `pooled_attention_row` there is no maximum over the group and no
//! average pool, so the accumulated value of a position is the attention it received.
//! `scratch` must hold `accumulated.size()` floats; `head_dim` is at most `max_scored_head_dim`. Allocates
//! nothing. O(w * G * T * d).
template <KvElement E>
void accumulate_group_attention(const query_rows& queries, const token_rows<E>& keys, index_t kv_head,
                                       index_t group_size, index_t head_dim, std::span<float> accumulated,
                                       std::span<float> scratch) {
    const auto length = static_cast<index_t>(accumulated.size());
    detail::require(group_size >= 1, "group_size", group_size, "[1, inf)");
    detail::require(static_cast<index_t>(scratch.size()) >= length, "scratch.size()", scratch.size(),
                    "[accumulated.size(), inf)");
    detail::require<shape_error>(head_dim >= 1 && head_dim <= max_scored_head_dim, "head_dim", head_dim, "[1, 256]");
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    float* logits = scratch.data();
    for (index_t g = 0; g < group_size; ++g) {
        const index_t q_head = kv_head * group_size + g;
        for (index_t i = 0; i < queries.count; ++i) {
            const float* q = queries.query(i, q_head);
            const index_t visible = std::min(length, queries.first_position + i + 1);
            const double total = detail::softmax_numerators(q, keys, visible, head_dim, scale, logits);
            const auto weight = static_cast<float>(1.0 / (total * static_cast<double>(group_size)));
            for (index_t t = 0; t < visible; ++t) accumulated[t] += logits[t] * weight;
        }
    }
}

//! `accumulate_group_attention` of one decode query from its scaled scores (`scores[g * T + t]` for the G
//! query heads of a KV head over T = `accumulated.size()` positions, as `group_scores` or an attention
//! kernel's capture writes them). Equal, bit for bit, to `accumulate_group_attention` of that query when
//! the scores are. `scratch` must hold `accumulated.size()` floats. Allocates nothing. O(G * T).
inline void accumulate_group_attention_from_scores(std::span<const float> scores, index_t group_size,
                                                   std::span<float> accumulated, std::span<float> scratch) {
    const auto length = static_cast<index_t>(accumulated.size());
    detail::require(group_size >= 1, "group_size", group_size, "[1, inf)");
    detail::require<shape_error>(static_cast<index_t>(scores.size()) == group_size * length, "scores.size()",
                                 scores.size(), "group_size * accumulated.size()");
    detail::require(static_cast<index_t>(scratch.size()) >= length, "scratch.size()", scratch.size(),
                    "[accumulated.size(), inf)");
    float* logits = scratch.data();
    for (index_t g = 0; g < group_size; ++g) {
        const double total = detail::exponentiate_scores(scores.data() + g * length, logits, length);
        const auto weight = static_cast<float>(1.0 / (total * static_cast<double>(group_size)));
        for (index_t t = 0; t < length; ++t) accumulated[t] += logits[t] * weight;
    }
}

}  // namespace v1
}  // namespace heterocache
