#pragma once
//! \file
//! The paper's budget: less stable heads get more tokens (DESIGN.md section 2, "Budget").

#include "heterocache/budget/budget_split.hpp"
#include "heterocache/concepts/budget_policy.hpp"

namespace heterocache {
inline namespace v1 {

//! Default `BudgetPolicy`: `cap_h = min(T, floor(B * w_h))` with `w_h` proportional to `1 / (S_h + eps)`
//! over the compressed heads, mean 1; tokens a head cannot use (cap at T) go to the others.
struct drift_weighted_budget {
    double epsilon = 1e-2;  //!< keeps `1 / (S + eps)` finite for a head of stability 0

    void prompt_caps(const head_profile& profile, double ratio, index_t prompt_tokens, std::span<index_t> caps) const {
        detail::require(epsilon > 0.0, "epsilon", epsilon, "(0, inf)");
        const double total = compressed_token_total(profile, ratio, prompt_tokens);
        split_prompt_budget(profile, total, prompt_tokens, caps,
                            [&](index_t i) { return 1.0 / (profile.heads[i].stability + epsilon); });
    }
    [[nodiscard]] index_t base_length(const head_profile& profile, double ratio, index_t prompt_tokens) const {
        return mean_compressed_length(profile, ratio, prompt_tokens);
    }
    void require_feasible(const head_profile& profile, double ratio) const { require_feasible_budget(profile, ratio); }
};
static_assert(BudgetPolicy<drift_weighted_budget>);

}  // namespace v1
}  // namespace heterocache
