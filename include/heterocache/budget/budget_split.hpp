#pragma once
//! \file
//! The shared arithmetic of budget policies: the base length and a weighted split of a token total.

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "heterocache/profile/head_profile.hpp"

namespace heterocache {
inline namespace v1 {

//! Checks `ratio` in (0, 1] and `prompt_tokens >= 1`, naming the argument on failure.
inline void validate_budget_arguments(double ratio, index_t prompt_tokens) {
    detail::require(ratio > 0.0 && ratio <= 1.0, "r", ratio, "(0, 1]");
    detail::require(prompt_tokens >= 1, "prompt_tokens", prompt_tokens, "[1, inf)");
}

//! Whether kept fraction `ratio` can be met with the full heads of `profile` (DESIGN.md section 2, "Budget"):
//! `r*N > Nfull` when some head is compressed (they share `(r*N - Nfull) * T` tokens), `r = 1` when every head
//! is full. It does not depend on the prompt length: a prompt too short to give every compressed head a token
//! still gives each one (`split_prompt_budget`), which exceeds the budget by at most `Nc` tokens.
inline bool budget_feasible(const head_profile& profile, double ratio) {
    detail::require(ratio > 0.0 && ratio <= 1.0, "r", ratio, "(0, 1]");
    const auto n = static_cast<double>(profile.heads.size());
    const auto n_full = static_cast<double>(profile.full_heads());
    return n == n_full ? ratio == 1.0 : ratio * n > n_full;
}

//! Throws `budget_error` unless `budget_feasible(profile, ratio)`, stating the condition with the profile's
//! numbers and the smallest r that meets it.
inline void require_feasible_budget(const head_profile& profile, double ratio) {
    if (budget_feasible(profile, ratio)) return;
    const auto n = static_cast<double>(profile.heads.size());
    const auto n_full = static_cast<double>(profile.full_heads());
    const std::string numbers = "N = " + detail::to_display(n) + " KV heads, of which Nfull = " +
                                detail::to_display(n_full) + " keep their full KV (pivots + volatiles)";
    if (n == n_full)
        throw budget_error("r", detail::to_display(ratio),
                           "1: every head of the profile keeps its full KV (" + numbers + "), so nothing can be dropped");
    throw budget_error("r", detail::to_display(ratio),
                       "r*N > Nfull, so that the compressed heads get a share of the prompt (" + numbers +
                           "; r*N = " + detail::to_display(ratio * n) + "): any r above " +
                           detail::to_display(n_full / n) + ", or a profile with fewer full heads");
}

//! Prompt tokens the compressed heads share: `r*N*T - Nfull*T` (DESIGN.md section 2, "Budget"), 0 when no
//! head is compressed. Throws `budget_error` unless `budget_feasible(profile, ratio)`.
inline double compressed_token_total(const head_profile& profile, double ratio, index_t prompt_tokens) {
    validate_budget_arguments(ratio, prompt_tokens);
    require_feasible_budget(profile, ratio);
    const auto n = static_cast<double>(profile.heads.size());
    const auto n_full = static_cast<double>(profile.full_heads());
    if (n == n_full) return 0.0;
    return (ratio * n - n_full) * static_cast<double>(prompt_tokens);
}

//! The compressed heads' mean cap over `r*T` (`(r*N - Nfull) / (N - Nfull) / r`): 1 when no head keeps its
//! full KV, 0 or less when the budget is infeasible or every head is full.
[[nodiscard]] inline double compressed_share(const head_profile& profile, double ratio) noexcept {
    const auto n = static_cast<double>(profile.heads.size());
    const auto n_full = static_cast<double>(profile.full_heads());
    if (n_full >= n) return 0.0;
    return (ratio * n - n_full) / (n - n_full) / ratio;
}

//! Graceful degradation for a budget too small for the full heads (DESIGN.md section 2, "Budget"): demotes
//! full heads, most stable first, until `budget_feasible(profile, ratio)` and the compressed heads' mean cap
//! is at least `min_compressed_share * r * T` (`compressed_share`; 0: feasibility only, which can leave a
//! compressed head a single token): a volatile head becomes an anchor, a pivot what `pivots` says (DESIGN.md
//! section 5.3). Returns the number of heads demoted.
inline index_t demote_until_feasible(head_profile& profile, double ratio, double min_compressed_share = 0.0,
                                     pivot_demotion pivots = pivot_demotion::to_anchors) {
    detail::require(min_compressed_share >= 0.0 && min_compressed_share <= 1.0, "min_compressed_share",
                    min_compressed_share, "[0, 1]");
    if (pivots == pivot_demotion::to_digest_pivots_if_none_stay) {
        // The same heads are demoted either way (a digest pivot keeps no full KV); only what pivots become differs.
        head_profile as_anchors = profile;
        const index_t demoted = demote_until_feasible(as_anchors, ratio, min_compressed_share, pivot_demotion::to_anchors);
        if (as_anchors.count(head_role::pivot) > 0 || profile.count(head_role::pivot) == 0) {
            profile = std::move(as_anchors);
            return demoted;
        }
        pivots = pivot_demotion::to_digest_pivots;
    }
    index_t demoted = 0;
    while (!budget_feasible(profile, ratio) ||
           (min_compressed_share > 0.0 && compressed_share(profile, ratio) < min_compressed_share)) {
        head_info* best = nullptr;
        for (auto& h : profile.heads)
            if (keeps_full_kv(h.role) && (best == nullptr || h.stability > best->stability)) best = &h;
        if (best == nullptr) break;
        const auto index = static_cast<index_t>(best - profile.heads.data());
        const index_t layer = index / profile.kv_heads, head = index % profile.kv_heads;
        if (best->role == head_role::pivot && pivots == pivot_demotion::to_digest_pivots) {
            best->role = head_role::digest_pivot;
        } else {
            if (best->role == head_role::pivot)
                for (index_t h = 0; h < profile.kv_heads; ++h)
                    if (profile.at(layer, h).pivot == head) profile.at(layer, h) = {head_role::anchor, profile.at(layer, h).stability, -1};
            *best = {head_role::anchor, best->stability, -1};
        }
        ++demoted;
    }
    return demoted;
}

//! Splits `total` tokens over the compressed heads in proportion to `weight(head)` (mean-normalized),
//! each capped at `prompt_tokens`; what a capped head cannot take goes to the others (water filling),
//! so the caps add up to `total` within one token per head. Every compressed head keeps at least one
//! token, so no attention is ever over an empty set. Full heads get `prompt_tokens`.
template <class Weight>
void split_prompt_budget(const head_profile& profile, double total, index_t prompt_tokens, std::span<index_t> caps,
                         Weight&& weight) {
    detail::require<shape_error>(caps.size() == profile.heads.size(), "caps.size()", caps.size(),
                                 "layers * kv_heads of the profile");
    const auto heads = static_cast<index_t>(profile.heads.size());
    std::vector<double> share(profile.heads.size(), 0.0);
    std::vector<bool> open(profile.heads.size(), false);
    for (index_t i = 0; i < heads; ++i) {
        const bool full = keeps_full_kv(profile.heads[i].role);
        caps[i] = full ? prompt_tokens : 0;
        open[i] = !full;
    }
    const auto t = static_cast<double>(prompt_tokens);
    double remaining = total;
    for (bool clipped = true; clipped;) {
        clipped = false;
        double weight_sum = 0.0;
        for (index_t i = 0; i < heads; ++i) weight_sum += open[i] ? weight(i) : 0.0;
        if (weight_sum <= 0.0) break;
        for (index_t i = 0; i < heads; ++i) {
            if (!open[i]) continue;
            share[i] = remaining * weight(i) / weight_sum;
            if (share[i] >= t) open[i] = false, caps[i] = prompt_tokens, remaining -= t, clipped = true;
        }
    }
    // floor(B * w_h) as DESIGN.md states it; the tolerance keeps a share that is T in exact arithmetic but
    // T - 1e-13 in floating point from losing a token (r = 1 must keep every token).
    constexpr double rounding_tolerance = 1e-6;
    for (index_t i = 0; i < heads; ++i)
        if (open[i])
            caps[i] = std::clamp<index_t>(static_cast<index_t>(std::floor(share[i] + rounding_tolerance)), 1, prompt_tokens);
}

//! `B = (r*N - Nfull) * T / (N - Nfull)`: the mean cap of a compressed head (T when every head is full).
inline index_t mean_compressed_length(const head_profile& profile, double ratio, index_t prompt_tokens) {
    const double total = compressed_token_total(profile, ratio, prompt_tokens);
    const auto compressed = static_cast<double>(profile.heads.size()) - static_cast<double>(profile.full_heads());
    if (compressed == 0.0) return prompt_tokens;
    return std::clamp<index_t>(static_cast<index_t>(std::floor(total / compressed)), 1, prompt_tokens);
}

}  // namespace v1
}  // namespace heterocache
