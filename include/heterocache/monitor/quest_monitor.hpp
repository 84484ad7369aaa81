#pragma once
//! \file
//! Quest as a monitor: pages of prompt keys summarized by per-channel min/max digests, the pages with the
//! highest upper-bound score fetched every step.

#include <algorithm>
#include <limits>
#include <span>
#include <vector>

#include "heterocache/concepts/drift_monitor.hpp"

namespace heterocache {
inline namespace v1 {

//! Quest's bound on `q . k` over a page whose keys lie channel-wise in `[min, max]`:
//! `sum_c max(q_c * min_c, q_c * max_c)` over `head_dim` channels. O(d).
inline float page_score_bound(const float* query, const float* min, const float* max, index_t head_dim) noexcept {
    float bound = 0.0f;
    for (index_t c = 0; c < head_dim; ++c) bound += std::max(query[c] * min[c], query[c] * max[c]);
    return bound;
}

//! `DriftMonitor` of Quest (Tang et al., 2024): the prompt keys of each head are cut into pages of
//! `page_tokens` positions, each summarized by its channel-wise minimum and maximum key (built from the
//! cold tier at the first decode step after a prefill). Every step, for every compressed head, each page
//! scores the largest `page_score_bound` over the head's query group, every position takes its page's score,
//! and the head is refreshed from that ranking: its top-cap positions are the best pages, whole, in score
//! order (the last one cut at the cap; ties to the lower position). The full KV stays in the cold tier.
//! As in Quest, the pages a step attends are ranked with that step's query when the engine passes its decode
//! queries to `kv_cache::begin_layer` (`ranks_current_query`); an engine that passes them only to `end_layer`
//! gets the ranking one step late (and its first decode step attends the prefill selection, the observation
//! window's scores). Use with `uniform_profile(shape, head_role::anchor)`.
//!
//! State: two keys per page per (layer, sequence, KV head), planned once. Cost per step:
//! `G * (T / page_tokens) * d` per compressed head, plus a refresh of `cap` tokens.
class quest_monitor {
public:
    quest_monitor() = default;
    //! Pages of `page_tokens` prompt positions (Quest uses 16).
    explicit quest_monitor(index_t page_tokens) : page_tokens_(page_tokens) {
        detail::require(page_tokens >= 1, "page_tokens", page_tokens, "[1, inf)");
    }

    void plan(const monitor_plan& plan) {
        shape_ = plan.shape;
        sequences_ = plan.sequences;
        max_pages_ = (plan.max_prompt_tokens + page_tokens_ - 1) / page_tokens_;
        const auto heads = static_cast<std::size_t>(shape_.layers * sequences_ * shape_.kv_heads);
        digests_.assign(heads * static_cast<std::size_t>(2 * max_pages_ * shape_.head_dim), 0.0f);
        digest_ready_.assign(heads, false);
        ranking_.assign(static_cast<std::size_t>(plan.max_prompt_tokens), 0.0f);
        key_.assign(static_cast<std::size_t>(shape_.head_dim), 0.0f);
    }

    //! Keeps the observation window's scores for the first step; the head's page digests are rebuilt for the
    //! new prompt at the next decode step.
    void score_prompt(index_t layer, index_t seq, index_t head, std::span<float>) {
        if (!digest_ready_.empty()) digest_ready_[slot(layer, seq, head)] = false;  // planned
    }

    void observe(const monitor_context& context, drift_handler on_drift) {
        const index_t t = context.prompt_tokens, g = shape_.group_size();
        const index_t pages = (t + page_tokens_ - 1) / page_tokens_;
        const std::span<float> ranking(ranking_.data(), static_cast<std::size_t>(t));
        for (index_t head = 0; head < shape_.kv_heads; ++head) {
            if (keeps_full_kv(context.profile->at(context.layer, head).role)) continue;
            const std::size_t s = slot(context.layer, context.sequence, head);
            if (!digest_ready_[s]) build_digests(s, context, head);
            for (index_t page = 0; page < pages; ++page) {
                float best = -std::numeric_limits<float>::infinity();
                for (index_t member = 0; member < g; ++member)
                    best = std::max(best, page_score_bound(context.query + (head * g + member) * context.query_head_stride,
                                                           page_min(s, page), page_max(s, page), shape_.head_dim));
                std::fill(ranking.begin() + page * page_tokens_, ranking.begin() + std::min(t, (page + 1) * page_tokens_), best);
            }
            on_drift(head, ranking);
        }
    }

    [[nodiscard]] index_t page_tokens() const noexcept { return page_tokens_; }

private:
    [[nodiscard]] std::size_t slot(index_t layer, index_t seq, index_t head) const noexcept {
        return static_cast<std::size_t>((layer * sequences_ + seq) * shape_.kv_heads + head);
    }
    [[nodiscard]] float* page_min(std::size_t s, index_t page) noexcept {
        return digests_.data() + (s * static_cast<std::size_t>(max_pages_) + static_cast<std::size_t>(page)) *
                                     static_cast<std::size_t>(2 * shape_.head_dim);
    }
    [[nodiscard]] float* page_max(std::size_t s, index_t page) noexcept { return page_min(s, page) + shape_.head_dim; }

    void build_digests(std::size_t s, const monitor_context& context, index_t head) {
        const index_t d = shape_.head_dim, prompt_tokens = context.prompt_tokens;
        float* key = key_.data();
        for (index_t first = 0, page = 0; first < prompt_tokens; first += page_tokens_, ++page) {
            float* low = page_min(s, page);
            float* high = page_max(s, page);
            context.prompt_key(head, first, key);
            std::copy(key, key + d, low);
            std::copy(key, key + d, high);
            for (index_t p = first + 1; p < std::min(prompt_tokens, first + page_tokens_); ++p) {
                context.prompt_key(head, p, key);
                for (index_t c = 0; c < d; ++c) {
                    low[c] = std::min(low[c], key[c]);
                    high[c] = std::max(high[c], key[c]);
                }
            }
        }
        digest_ready_[s] = true;
    }

    index_t page_tokens_ = 16;
    model_shape shape_;
    index_t sequences_ = 0, max_pages_ = 0;
    std::vector<float> digests_, ranking_, key_;
    std::vector<bool> digest_ready_;
};
template <>
struct monitor_traits<quest_monitor> : monitor_traits_base {
    static constexpr bool scores_prompt = true;        // a new prompt makes the head's digests stale
    static constexpr bool ranks_current_query = true;  // the step's own query picks its pages
};
static_assert(DriftMonitor<quest_monitor>);

}  // namespace v1
}  // namespace heterocache
