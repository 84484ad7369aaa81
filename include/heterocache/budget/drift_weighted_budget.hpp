#pragma once
//! \file
//! The paper's budget: less stable heads get more tokens (DESIGN.md section 2, "Budget").

#include "heterocache/budget/budget_split.hpp"
#include "heterocache/concepts/budget_policy.hpp"

namespace heterocache {
inline namespace v1 {

//! Default `BudgetPolicy`: `cap_h = min(T, floor(B * w_h))` with `w_h` proportional to `(S_h + eps)^-p`
//! over the compressed heads, mean 1; tokens a head cannot use (cap at T) go to the others. `p = 1` is the
//! paper's `1 / (S + eps)`; `p = 0` splits uniformly.
struct drift_weighted_budget {
    double epsilon = 1e-2;  //!< keeps `1 / (S + eps)` finite for a head of stability 0
    double exponent = 1.0;  //!< `p`: how strongly a less stable head's cap grows, in [0, 8]

    void prompt_caps(const head_profile& profile, double ratio, index_t prompt_tokens, std::span<index_t> caps) const {
        detail::require(epsilon > 0.0, "epsilon", epsilon, "(0, inf)");
        detail::require(exponent >= 0.0 && exponent <= 8.0, "exponent", exponent, "[0, 8]");
        const double total = compressed_token_total(profile, ratio, prompt_tokens);
        split_prompt_budget(profile, total, prompt_tokens, caps,
                            [&](index_t i) { return std::pow(profile.heads[i].stability + epsilon, -exponent); });
    }
    [[nodiscard]] index_t base_length(const head_profile& profile, double ratio, index_t prompt_tokens) const {
        return mean_compressed_length(profile, ratio, prompt_tokens);
    }
    void require_feasible(const head_profile& profile, double ratio) const { require_feasible_budget(profile, ratio); }
};
static_assert(BudgetPolicy<drift_weighted_budget>);

}  // namespace v1
}  // namespace heterocache
