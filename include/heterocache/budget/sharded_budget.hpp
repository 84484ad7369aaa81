#pragma once
//! \file
//! A budget policy for one tensor-parallel rank that gives the budgets of the unsharded cache.

#include <span>
#include <utility>
#include <vector>

#include "heterocache/budget/drift_weighted_budget.hpp"
#include "heterocache/concepts/budget_policy.hpp"
#include "heterocache/profile/profile_slice.hpp"

namespace heterocache {
inline namespace v1 {

//! `BudgetPolicy` of a rank that owns the KV heads `kv_heads` of every layer. Budgets are a property of
//! the whole model (`B` and the weights depend on every head), so it holds the full profile, lets `Budget`
//! compute the caps and base length over the whole model, and returns the rank's share: a rank's cache
//! keeps, head for head, what the unsharded cache keeps. The profile the rank's cache passes in must be
//! `slice_profile(full, kv_heads)` (checked). Calls allocate `O(layers * kv_heads)` (plan and prefill time).
//!
//! An `AdaptiveBudgetPolicy` (Ada-KV) moves tokens between the heads of a layer by their prefill scores,
//! which live on every rank; sharding it would need those scores gathered, so it is refused at compile time.
template <BudgetPolicy Budget = drift_weighted_budget>
class sharded_budget {
    static_assert(!AdaptiveBudgetPolicy<Budget>,
                  "sharded_budget: an adaptive budget shares tokens across a layer's heads on every rank; "
                  "it cannot be split per rank");

public:
    //! Throws like `slice_profile` when `kv_heads` is not a valid set for `full`.
    sharded_budget(head_profile full, std::vector<index_t> kv_heads, Budget budget = {})
        : full_(std::move(full)), heads_(std::move(kv_heads)), budget_(std::move(budget)) {
        static_cast<void>(slice_profile(full_, heads_));
    }

    void prompt_caps(const head_profile& rank_profile, double ratio, index_t prompt_tokens, std::span<index_t> caps) const {
        check_rank_profile(rank_profile);
        const auto count = static_cast<index_t>(heads_.size());
        detail::require<shape_error>(static_cast<index_t>(caps.size()) == full_.layers * count, "caps.size()",
                                     caps.size(), "layers * kv_heads of the rank");
        std::vector<index_t> full_caps(full_.heads.size());
        budget_.prompt_caps(full_, ratio, prompt_tokens, full_caps);
        for (index_t layer = 0; layer < full_.layers; ++layer)
            for (index_t i = 0; i < count; ++i)
                caps[static_cast<std::size_t>(layer * count + i)] =
                    full_caps[static_cast<std::size_t>(layer * full_.kv_heads + heads_[static_cast<std::size_t>(i)])];
    }
    [[nodiscard]] index_t base_length(const head_profile& rank_profile, double ratio, index_t prompt_tokens) const {
        check_rank_profile(rank_profile);
        return budget_.base_length(full_, ratio, prompt_tokens);
    }
    //! Feasible when the unsharded budget is: a rank may hold more full heads than its share.
    void require_feasible(const head_profile& rank_profile, double ratio) const {
        check_rank_profile(rank_profile);
        budget_.require_feasible(full_, ratio);
    }

    //! The unsharded profile the budgets are computed over.
    [[nodiscard]] const head_profile& full_profile() const noexcept { return full_; }
    //! The rank's KV heads, in the order of its cache's heads.
    [[nodiscard]] std::span<const index_t> kv_heads() const noexcept { return heads_; }
    //! The profile the rank's cache must be constructed with.
    [[nodiscard]] head_profile rank_profile() const { return slice_profile(full_, heads_); }

private:
    void check_rank_profile(const head_profile& rank_profile) const {
        const auto count = static_cast<index_t>(heads_.size());
        bool same = rank_profile.layers == full_.layers && rank_profile.kv_heads == count &&
                    static_cast<index_t>(rank_profile.heads.size()) == full_.layers * count;
        for (index_t layer = 0; same && layer < full_.layers; ++layer)
            for (index_t i = 0; same && i < count; ++i)
                same = rank_profile.at(layer, i).role == full_.at(layer, heads_[static_cast<std::size_t>(i)]).role &&
                       rank_profile.at(layer, i).stability == full_.at(layer, heads_[static_cast<std::size_t>(i)]).stability;
        detail::require(same, "profile", "a profile of " + std::to_string(rank_profile.kv_heads) + " KV heads",
                        "slice_profile(full profile, kv_heads) of this sharded_budget (" +
                            std::to_string(count) + " KV heads " + detail::head_list(heads_) + ")");
    }

    head_profile full_;
    std::vector<index_t> heads_;
    Budget budget_;
};
static_assert(BudgetPolicy<sharded_budget<>>);

}  // namespace v1
}  // namespace heterocache
