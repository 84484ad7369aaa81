#pragma once
//! \file
//! Ada-KV's budget: within a layer, heads get tokens by attention mass, with a safeguard floor.

#include <algorithm>
#include <cmath>
#include <functional>
#include <span>
#include <utility>
#include <vector>

#include "heterocache/budget/uniform_budget.hpp"
#include "heterocache/concepts/budget_policy.hpp"

namespace heterocache {
inline namespace v1 {

//! `AdaptiveBudgetPolicy` of Ada-KV (Feng et al., 2024). `Base` splits the budget over the layers and heads
//! as usual; then, once a layer's prefill scores are known, the layer's compressed heads share their total
//! `M` again: each first keeps its own `f = max(1, floor(alpha * M / n))` best positions (the safeguard floor,
//! `n` compressed heads in the layer), and the other `M - n*f` tokens go to the highest scores left over all
//! those heads together (ties to the lower head); a head's cap is `f` plus how many of them are its own. Scores
//! of different heads are comparable because each is an attention distribution. Full heads keep the whole
//! prompt and are left out. `share_layer` allocates `O(n * T)` (prefill time).
//!
//! So Ada-SnapKV is `ada_kv_budget<uniform_budget>` with all-anchor heads and `static_monitor`, and HeteroCache's
//! roles with an Ada-KV split are `ada_kv_budget<drift_weighted_budget>` with the default classifier and monitor.
template <BudgetPolicy Base = uniform_budget>
struct ada_kv_budget {
    double alpha = 0.2;  //!< safeguard: share of a layer's mean cap every head keeps, in [0, 1] (Ada-KV uses 0.2)
    Base base{};

    void prompt_caps(const head_profile& profile, double ratio, index_t prompt_tokens, std::span<index_t> caps) const {
        base.prompt_caps(profile, ratio, prompt_tokens, caps);
    }
    [[nodiscard]] index_t base_length(const head_profile& profile, double ratio, index_t prompt_tokens) const {
        return base.base_length(profile, ratio, prompt_tokens);
    }
    void require_feasible(const head_profile& profile, double ratio) const { base.require_feasible(profile, ratio); }

    //! The most a head may ever get: its layer's compressed total at `prompt_tokens`, at most `prompt_tokens`.
    //! Assumes `Base` gives a layer no more tokens for a shorter prompt (true of every shipped budget).
    void capacity_caps(const head_profile& profile, double ratio, index_t prompt_tokens, std::span<index_t> caps) const {
        base.prompt_caps(profile, ratio, prompt_tokens, caps);
        for (index_t layer = 0; layer < profile.layers; ++layer) {
            const std::span<index_t> layer_caps = caps.subspan(static_cast<std::size_t>(layer * profile.kv_heads),
                                                               static_cast<std::size_t>(profile.kv_heads));
            const index_t total = compressed_total(profile, layer, layer_caps);
            for (index_t head = 0; head < profile.kv_heads; ++head)
                if (!keeps_full_kv(profile.at(layer, head).role)) layer_caps[head] = std::min(total, prompt_tokens);
        }
    }

    //! Re-splits the caps of `layer`'s compressed heads by their `head_scores` (one span per KV head of the
    //! layer, one score per prompt position), keeping their sum.
    void share_layer(const head_profile& profile, double, index_t layer, std::span<const std::span<const float>> head_scores,
                     std::span<index_t> layer_caps) const {
        detail::require(alpha >= 0.0 && alpha <= 1.0, "alpha", alpha, "[0, 1]");
        detail::require<shape_error>(static_cast<index_t>(head_scores.size()) == profile.kv_heads &&
                                         static_cast<index_t>(layer_caps.size()) == profile.kv_heads,
                                     "head_scores.size()", head_scores.size(), "kv_heads of the profile");
        index_t compressed = 0;
        for (index_t head = 0; head < profile.kv_heads; ++head) compressed += keeps_full_kv(profile.at(layer, head).role) ? 0 : 1;
        if (compressed == 0) return;
        const index_t total = compressed_total(profile, layer, layer_caps);
        const auto floor_tokens = std::max<index_t>(
            1, static_cast<index_t>(std::floor(alpha * static_cast<double>(total) / static_cast<double>(compressed))));
        // Candidates: every score of a compressed head but its `floor_tokens` best, tagged with the head.
        std::vector<std::pair<float, index_t>> candidates;
        std::vector<float> sorted;
        for (index_t head = 0; head < profile.kv_heads; ++head) {
            if (keeps_full_kv(profile.at(layer, head).role)) continue;
            sorted.assign(head_scores[head].begin(), head_scores[head].end());
            const index_t keep = std::min(floor_tokens, static_cast<index_t>(sorted.size()));
            std::nth_element(sorted.begin(), sorted.begin() + keep, sorted.end(), std::greater<>());
            for (auto it = sorted.begin() + keep; it != sorted.end(); ++it) candidates.emplace_back(*it, head);
            layer_caps[head] = keep;
        }
        const auto shared = std::clamp<index_t>(total - compressed * floor_tokens, 0, static_cast<index_t>(candidates.size()));
        const auto higher = [](const std::pair<float, index_t>& a, const std::pair<float, index_t>& b) {
            return a.first != b.first ? a.first > b.first : a.second < b.second;
        };
        std::nth_element(candidates.begin(), candidates.begin() + shared, candidates.end(), higher);
        for (index_t i = 0; i < shared; ++i) ++layer_caps[candidates[static_cast<std::size_t>(i)].second];
    }

private:
    [[nodiscard]] static index_t compressed_total(const head_profile& profile, index_t layer, std::span<const index_t> layer_caps) {
        index_t total = 0;
        for (index_t head = 0; head < profile.kv_heads; ++head)
            if (!keeps_full_kv(profile.at(layer, head).role)) total += layer_caps[head];
        return total;
    }
};
static_assert(AdaptiveBudgetPolicy<ada_kv_budget<>>);

}  // namespace v1
}  // namespace heterocache
