#pragma once
//! \file
//! `sequence_budgets`: the hot prompt tokens of every head for each sequence slot, by its prompt length
//! (DESIGN.md section 2, "Budget").

#include <span>
#include <vector>

#include "heterocache/concepts/budget_policy.hpp"
#include "heterocache/profile/head_profile.hpp"

namespace heterocache {
inline namespace v1 {

//! Per sequence slot: the cap of every head (`layer * kv_heads + head`) and the base length `B` of its
//! pivots, from a `BudgetPolicy` over the profile at the slot's prompt length. An adaptive budget (Ada-KV)
//! later moves a layer's tokens between its heads (`layer_caps`); `capacity` bounds what a head may receive.
template <BudgetPolicy Budget>
class sequence_budgets {
public:
    void plan(index_t sequences, index_t heads) {
        caps_.assign(static_cast<std::size_t>(sequences), std::vector<index_t>(static_cast<std::size_t>(heads), 0));
        base_length_.assign(static_cast<std::size_t>(sequences), 0);
    }
    //! Sets the caps and base length of `seq` for a prompt of `prompt_tokens` tokens.
    void set(const Budget& budget, const head_profile& profile, double ratio, index_t seq, index_t prompt_tokens) {
        budget.prompt_caps(profile, ratio, prompt_tokens, caps_[static_cast<std::size_t>(seq)]);
        base_length_[static_cast<std::size_t>(seq)] = budget.base_length(profile, ratio, prompt_tokens);
    }
    //! Clears `seq` (its caps read as empty).
    void clear(index_t seq) noexcept { base_length_[static_cast<std::size_t>(seq)] = 0; }
    //! The most tokens each head may hold for a prompt of `prompt_tokens` tokens (its cap, or an adaptive
    //! budget's capacity), into `caps`.
    static void capacity(const Budget& budget, const head_profile& profile, double ratio, index_t prompt_tokens,
                         std::span<index_t> caps) {
        if constexpr (AdaptiveBudgetPolicy<Budget>) budget.capacity_caps(profile, ratio, prompt_tokens, caps);
        else budget.prompt_caps(profile, ratio, prompt_tokens, caps);
    }

    [[nodiscard]] index_t cap(index_t seq, index_t head) const noexcept {
        return caps_[static_cast<std::size_t>(seq)][static_cast<std::size_t>(head)];
    }
    [[nodiscard]] std::span<const index_t> caps(index_t seq) const noexcept { return caps_[static_cast<std::size_t>(seq)]; }
    //! The caps of the `kv_heads` heads of `layer` for `seq`, writable (an adaptive budget's share).
    [[nodiscard]] std::span<index_t> layer_caps(index_t seq, index_t layer, index_t kv_heads) noexcept {
        return std::span<index_t>(caps_[static_cast<std::size_t>(seq)]).subspan(static_cast<std::size_t>(layer * kv_heads),
                                                                             static_cast<std::size_t>(kv_heads));
    }
    [[nodiscard]] index_t base_length(index_t seq) const noexcept { return base_length_[static_cast<std::size_t>(seq)]; }

private:
    std::vector<std::vector<index_t>> caps_;
    std::vector<index_t> base_length_;
};

}  // namespace v1
}  // namespace heterocache
