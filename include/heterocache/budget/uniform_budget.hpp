#pragma once
//! \file
//! Every compressed head gets the same number of tokens.

#include "heterocache/budget/budget_split.hpp"
#include "heterocache/concepts/budget_policy.hpp"

namespace heterocache {
inline namespace v1 {

//! `BudgetPolicy` that gives every compressed head `B = (r*N - Nfull) * T / (N - Nfull)` tokens.
struct uniform_budget {
    void prompt_caps(const head_profile& profile, double ratio, index_t prompt_tokens, std::span<index_t> caps) const {
        const double total = compressed_token_total(profile, ratio, prompt_tokens);
        split_prompt_budget(profile, total, prompt_tokens, caps, [](index_t) { return 1.0; });
    }
    [[nodiscard]] index_t base_length(const head_profile& profile, double ratio, index_t prompt_tokens) const {
        return mean_compressed_length(profile, ratio, prompt_tokens);
    }
    void require_feasible(const head_profile& profile, double ratio) const { require_feasible_budget(profile, ratio); }
};
static_assert(BudgetPolicy<uniform_budget>);

}  // namespace v1
}  // namespace heterocache
