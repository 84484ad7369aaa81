#pragma once
//! \file
//! The `BudgetPolicy` concept: how many prompt tokens each head keeps in the hot tier.

#include <concepts>
#include <span>

#include "heterocache/profile/head_profile.hpp"

namespace heterocache {
inline namespace v1 {

//! A budget policy fills `caps[layer * kv_heads + head]` with each head's hot prompt tokens for a prompt of
//! `prompt_tokens` tokens at kept fraction `ratio` (full heads get the whole prompt), names the base length
//! `B` a pivot monitors its top-B set with, and says whether `ratio` can be met at all (`require_feasible`
//! throws `budget_error` when not: a cache with a loaded profile asks it at construction). Uniform, pyramid
//! (per layer) and Ada-KV (attention mass across the heads of a layer) fit: each is a different split of the
//! same total.
template <class B>
concept BudgetPolicy = requires(const B& budget, const head_profile& profile, double ratio, index_t prompt_tokens,
                                std::span<index_t> caps) {
    { budget.prompt_caps(profile, ratio, prompt_tokens, caps) } -> std::same_as<void>;
    { budget.base_length(profile, ratio, prompt_tokens) } -> std::convertible_to<index_t>;
    { budget.require_feasible(profile, ratio) } -> std::same_as<void>;
};

//! An adaptive budget also moves tokens between the heads of a layer once their prefill scores are known
//! (Ada-KV: by attention mass). `share_layer` rewrites `layer_caps` (the caps of the layer's heads for one
//! sequence) keeping their sum; `capacity_caps` gives the most each head may ever receive, for planning.
template <class B>
concept AdaptiveBudgetPolicy =
    BudgetPolicy<B> && requires(const B& budget, const head_profile& profile, double ratio, index_t i,
                                std::span<const std::span<const float>> head_scores, std::span<index_t> caps) {
        { budget.share_layer(profile, ratio, i, head_scores, caps) } -> std::same_as<void>;
        { budget.capacity_caps(profile, ratio, i, caps) } -> std::same_as<void>;
    };

}  // namespace v1
}  // namespace heterocache
