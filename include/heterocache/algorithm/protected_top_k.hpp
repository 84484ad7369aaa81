#pragma once
//! \file
//! Top-k selection that always keeps the first and the last positions (attention sinks, the recent window):
//! how compressed heads keep the prompt's start and its question whatever their scores say.

#include <algorithm>
#include <span>

#include "heterocache/algorithm/overlap.hpp"

namespace heterocache {
inline namespace v1 {

//! Prompt positions every compressed head of a cache keeps within its cap (`cache_options::prompt_sink`,
//! `cache_options::prompt_recent`).
struct protected_ends {
    index_t sink = 0;    //!< the first `sink` positions (attention sinks)
    index_t recent = 0;  //!< the last `recent` positions (the observation window: the question of a prompt)
};

//! Writes `out.size()` = k positions of `scores` into `out`, in ascending position order: first the sinks
//! `[0, min(sink, k))`, then as many of the last `recent` positions as still fit (the newest first), then the
//! highest scores of the positions between (`top_k_positions`, ties to the lower position). With
//! `ends = {0, 0}` it is `top_k_positions`. `scratch` must hold `scores.size()` entries. O(T).
inline void protected_top_k_positions(std::span<const float> scores, std::span<index_t> out, std::span<index_t> scratch,
                                      protected_ends ends) {
    const auto n = static_cast<index_t>(scores.size());
    const auto k = static_cast<index_t>(out.size());
    detail::require(k <= n, "k", k, "[0, number of scores]");
    detail::require(ends.sink >= 0 && ends.recent >= 0, "protected_ends", ends.sink < 0 ? ends.sink : ends.recent, "[0, inf)");
    const index_t sink = std::min({ends.sink, k, n});
    const index_t recent = std::min({ends.recent, k - sink, n - sink});
    const index_t middle_first = sink, middle_last = n - recent;  // the scored positions: [sink, n - recent)
    const index_t middle_k = k - sink - recent;
    for (index_t i = 0; i < sink; ++i) out[i] = i;
    const std::span<index_t> middle = out.subspan(static_cast<std::size_t>(sink), static_cast<std::size_t>(middle_k));
    top_k_positions(scores.subspan(static_cast<std::size_t>(middle_first), static_cast<std::size_t>(middle_last - middle_first)),
                    middle, scratch);
    for (index_t& p : middle) p += middle_first;
    for (index_t i = 0; i < recent; ++i) out[sink + middle_k + i] = middle_last + i;
}

}  // namespace v1
}  // namespace heterocache
