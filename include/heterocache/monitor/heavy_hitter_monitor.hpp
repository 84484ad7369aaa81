#pragma once
//! \file
//! The H2O oracle as a monitor: each compressed head keeps its heavy hitters (most accumulated attention over
//! the whole prompt) within the prompt ends the cache protects, re-ranked as decoding goes on.

#include <algorithm>
#include <span>
#include <vector>

#include "heterocache/algorithm/group_attention.hpp"
#include "heterocache/concepts/drift_monitor.hpp"

namespace heterocache {
inline namespace v1 {

//! `DriftMonitor` of the H2O oracle (after Zhang et al., 2023): every compressed head (anchor or satellite) accumulates the
//! attention its own query group pays to each prompt position (`accumulate_group_attention`: softmax over the
//! prompt keys, mean over the group, one unit of mass per step), starting from the prefill scores of the
//! observation window; every `interval` steps its hot prompt tokens become the top-cap positions of that
//! accumulated ranking, within the prompt ends every compressed head keeps (`cache_options::prompt_recent`,
//! which `make_h2o_oracle_cache` sets to half the cap).
//!
//! An oracle, not H2O's cost model (`make_h2o_oracle_cache`, "h2o-oracle" in the tables): H2O only evicts,
//! so a token once dropped never returns, and it scores only the tokens it still holds. Here the full prompt
//! stays in the cold tier and the monitor scores every prompt position every step (reading the whole
//! prompt's keys, full attention's cost), so a token whose accumulated attention climbs back into the top-cap
//! is fetched again. H2O itself is `h2o_monitor` (`make_h2o_cache`). Decode tokens are the cache's own
//! window, not ranked.
//!
//! State: `T` floats per (layer, sequence, KV head), planned once. Cost per step: `G * T * d` multiply-adds
//! per compressed head, plus a refresh of `cap` tokens per head every `interval` steps. Under online profiling
//! the cache shows the monitor no decode step before profiling ends, so those steps are not accumulated (and
//! a prefill seen before `plan` starts the accumulation from zero).
class heavy_hitter_monitor {
public:
    heavy_hitter_monitor() = default;
    //! Re-ranks every `interval` decode steps (H2O: every step).
    explicit heavy_hitter_monitor(index_t interval) : interval_(interval) {
        detail::require(interval >= 1, "interval", interval, "[1, inf)");
    }

    void plan(const monitor_plan& plan) {
        shape_ = plan.shape;
        sequences_ = plan.sequences;
        max_prompt_ = plan.max_prompt_tokens;
        const auto streams = static_cast<std::size_t>(shape_.layers * sequences_);
        accumulated_.assign(streams * static_cast<std::size_t>(shape_.kv_heads * max_prompt_), 0.0f);
        steps_.assign(streams, 0);
        ranking_.assign(static_cast<std::size_t>(max_prompt_), 0.0f);
        scratch_.assign(static_cast<std::size_t>(max_prompt_), 0.0f);
    }

    //! Starts the head's accumulated attention from the prefill `scores`.
    void score_prompt(index_t layer, index_t seq, index_t head, std::span<float> scores) {
        if (!accumulated_.empty()) {  // planned (with online profiling, prefill comes before the plan)
            std::copy(scores.begin(), scores.end(), accumulated(layer, seq, head).begin());
            steps_[stream(layer, seq)] = 0;
        }
    }

    void observe(const monitor_context& context, drift_handler on_drift) {
        const index_t t = context.prompt_tokens;
        const bool refresh = ++steps_[stream(context.layer, context.sequence)] % interval_ == 0;
        const std::span<float> ranking(ranking_.data(), static_cast<std::size_t>(t));
        for (index_t head = 0; head < shape_.kv_heads; ++head) {
            if (keeps_full_kv(context.profile->at(context.layer, head).role)) continue;
            const std::span<float> mass = accumulated(context.layer, context.sequence, head).first(static_cast<std::size_t>(t));
            accumulate_group_attention_from_scores(context.prompt_scores(head), shape_.group_size(), mass, scratch_);
            if (!refresh) continue;
            std::copy(mass.begin(), mass.end(), ranking.begin());
            on_drift(head, ranking);  // the cache keeps the protected prompt ends first
        }
    }

    //! The accumulated attention of a head over prompt positions `[0, max_prompt_tokens)`.
    [[nodiscard]] std::span<const float> accumulated_attention(index_t layer, index_t seq, index_t head) const {
        return {accumulated_.data() + offset(layer, seq, head), static_cast<std::size_t>(max_prompt_)};
    }
    [[nodiscard]] index_t interval() const noexcept { return interval_; }

private:
    [[nodiscard]] std::size_t stream(index_t layer, index_t seq) const noexcept {
        return static_cast<std::size_t>(layer * sequences_ + seq);
    }
    [[nodiscard]] std::size_t offset(index_t layer, index_t seq, index_t head) const noexcept {
        const std::size_t slot = stream(layer, seq) * static_cast<std::size_t>(shape_.kv_heads) + static_cast<std::size_t>(head);
        return slot * static_cast<std::size_t>(max_prompt_);
    }
    [[nodiscard]] std::span<float> accumulated(index_t layer, index_t seq, index_t head) {
        return {accumulated_.data() + offset(layer, seq, head), static_cast<std::size_t>(max_prompt_)};
    }

    index_t interval_ = 1;
    model_shape shape_;
    index_t sequences_ = 0, max_prompt_ = 0;
    std::vector<float> accumulated_, ranking_, scratch_;
    std::vector<index_t> steps_;
};
template <>
struct monitor_traits<heavy_hitter_monitor> : monitor_traits_base {
    static constexpr bool scores_prompt = true;  // starts the accumulation
};
static_assert(DriftMonitor<heavy_hitter_monitor>);

}  // namespace v1
}  // namespace heterocache
