#pragma once
//! \file
//! Quest as a monitor: pages of prompt keys summarized by per-channel min/max digests, the pages with the
//! highest upper-bound score fetched every step.

#include <span>
#include <vector>

#include "heterocache/concepts/drift_monitor.hpp"
#include "heterocache/monitor/page_digests.hpp"

namespace heterocache {
inline namespace v1 {

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
//! State: two keys per page per (layer, sequence, KV head) (`page_digests`), planned once. Cost per step:
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
        digests_.plan(static_cast<std::size_t>(shape_.layers * sequences_ * shape_.kv_heads), plan.max_prompt_tokens,
                      page_tokens_, shape_.head_dim);
        ranking_.assign(static_cast<std::size_t>(plan.max_prompt_tokens), 0.0f);
    }

    //! Keeps the observation window's scores for the first step; the head's page digests are rebuilt for the
    //! new prompt at the next decode step.
    void score_prompt(index_t layer, index_t seq, index_t head, std::span<float>) {
        if (digests_.planned()) digests_.invalidate(slot(layer, seq, head));
    }

    //! Ranks the pages with the step's query before it attends (the engine passed it to `begin_layer`).
    void observe_current(const monitor_context& context, drift_handler on_drift) { rank(context, on_drift); }
    //! Ranks the pages after the attention, unless `observe_current` did at this step (then nothing is left).
    void observe(const monitor_context& context, drift_handler on_drift) {
        if (!context.current_observed) rank(context, on_drift);
    }

    [[nodiscard]] index_t page_tokens() const noexcept { return page_tokens_; }

private:
    [[nodiscard]] std::size_t slot(index_t layer, index_t seq, index_t head) const noexcept {
        return static_cast<std::size_t>((layer * sequences_ + seq) * shape_.kv_heads + head);
    }
    void rank(const monitor_context& context, drift_handler on_drift) {
        const index_t g = shape_.group_size();
        const std::span<float> ranking(ranking_.data(), static_cast<std::size_t>(context.prompt_tokens));
        for (index_t head = 0; head < shape_.kv_heads; ++head) {
            if (keeps_full_kv(context.profile->at(context.layer, head).role)) continue;
            const std::size_t s = slot(context.layer, context.sequence, head);
            if (!digests_.ready(s))
                digests_.build(s, context.prompt_tokens, [&](index_t position, float* key) { context.prompt_key(head, position, key); });
            digests_.rank(s, context.query + head * g * context.query_head_stride, context.query_head_stride, g, ranking);
            on_drift(head, ranking);
        }
    }

    index_t page_tokens_ = 16;
    model_shape shape_;
    index_t sequences_ = 0;
    page_digests digests_;
    std::vector<float> ranking_;
};
template <>
struct monitor_traits<quest_monitor> : monitor_traits_base {
    static constexpr bool scores_prompt = true;        // a new prompt makes the head's digests stale
    static constexpr bool ranks_current_query = true;  // the step's own query picks its pages
};
static_assert(DriftMonitor<quest_monitor>);

}  // namespace v1
}  // namespace heterocache
