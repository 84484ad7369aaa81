#pragma once
//! \file
//! PyramidKV's budget: lower layers keep more tokens than upper ones, in an arithmetic progression.

#include "heterocache/budget/budget_split.hpp"
#include "heterocache/concepts/budget_policy.hpp"

namespace heterocache {
inline namespace v1 {

//! `BudgetPolicy` of PyramidKV (Cai et al., 2024): with `k` the mean cap of a compressed head, the top layer
//! gets `k / beta`, the bottom layer `2k - k / beta`, and the layers between decrease linearly, so the layers
//! keep `r*N*T` in all (within one token per head); heads of a layer share it uniformly. As a weight:
//! `w(l) = (2 - 1/beta) - (2 - 2/beta) * l / (L - 1)` (mean 1; one layer gets 1). Full heads keep the whole
//! prompt; what a layer cannot use (a cap above `T`) goes to the others (`split_prompt_budget`).
struct pyramid_budget {
    double beta = 20.0;  //!< mean cap over the top layer's cap, in [1, inf): 1 is uniform (PyramidKV uses 20)

    //! The weight of `layer` among `layers` (mean 1 over the layers).
    [[nodiscard]] double layer_weight(index_t layer, index_t layers) const {
        detail::require(beta >= 1.0, "beta", beta, "[1, inf)");
        if (layers <= 1) return 1.0;
        return (2.0 - 1.0 / beta) - (2.0 - 2.0 / beta) * static_cast<double>(layer) / static_cast<double>(layers - 1);
    }
    void prompt_caps(const head_profile& profile, double ratio, index_t prompt_tokens, std::span<index_t> caps) const {
        detail::require(beta >= 1.0, "beta", beta, "[1, inf)");
        const double total = compressed_token_total(profile, ratio, prompt_tokens);
        split_prompt_budget(profile, total, prompt_tokens, caps,
                            [&](index_t i) { return layer_weight(i / profile.kv_heads, profile.layers); });
    }
    [[nodiscard]] index_t base_length(const head_profile& profile, double ratio, index_t prompt_tokens) const {
        return mean_compressed_length(profile, ratio, prompt_tokens);
    }
    void require_feasible(const head_profile& profile, double ratio) const { require_feasible_budget(profile, ratio); }
};
static_assert(BudgetPolicy<pyramid_budget>);

}  // namespace v1
}  // namespace heterocache
