#pragma once
//! \file
//! The paper's classifier: stability by median overlap, similarity graph, star clustering per layer.

#include <cmath>
#include <vector>

#include "heterocache/algorithm/median.hpp"
#include "heterocache/algorithm/overlap.hpp"
#include "heterocache/algorithm/star_clustering.hpp"
#include "heterocache/concepts/head_classifier.hpp"

namespace heterocache {
inline namespace v1 {

//! `S(h) = median over (sequence, decode step) of O(topk(h, t), topk(h, prefill))` (DESIGN.md section 2).
inline double head_stability(const profiling_record& record, index_t layer, index_t head, std::vector<double>& scratch) {
    scratch.clear();
    for (index_t s = 0; s < record.sequences(); ++s)
        for (index_t t = 1; t <= record.steps(); ++t)
            scratch.push_back(overlap_coefficient(record.set(layer, head, s, t), record.set(layer, head, s, 0)));
    return median_in_place(scratch);
}

//! Similarity of two heads of a layer: median over (sequence, step including prefill) of the overlap of
//! their top-k sets (the paper's variant; its code uses one step).
inline double head_similarity(const profiling_record& record, index_t layer, index_t a, index_t b,
                              std::vector<double>& scratch) {
    scratch.clear();
    for (index_t s = 0; s < record.sequences(); ++s)
        for (index_t t = 0; t <= record.steps(); ++t)
            scratch.push_back(overlap_coefficient(record.set(layer, a, s, t), record.set(layer, b, s, t)));
    return median_in_place(scratch);
}

//! Roles from stability alone: anchor when `S >= tau_stable`, volatile otherwise.
inline head_role unclustered_role(double stability, double tau_stable) noexcept {
    return stability >= tau_stable ? head_role::anchor : head_role::volatile_;
}

//! Default `HeadClassifier`: stability, similarity graph with threshold `tau_sim`, star clusters, four roles.
struct overlap_star_classifier {
    double tau_stable = 0.5;  //!< stability threshold in [0, 1]
    double tau_sim = 0.5;     //!< neighbour threshold in [0, 1]
    bool cluster = true;      //!< false gives the stability-only (DuoAttention-like) split: anchors and volatiles

    [[nodiscard]] head_profile classify(const profiling_record& record) const {
        detail::require(tau_stable >= 0.0 && tau_stable <= 1.0, "tau_stable", tau_stable, "[0, 1]");
        detail::require(tau_sim >= 0.0 && tau_sim <= 1.0, "tau_sim", tau_sim, "[0, 1]");
        const index_t n = record.kv_heads();
        head_profile profile{record.layers(), n, tau_stable, tau_sim, record.top_k(),
                             std::vector<head_info>(static_cast<std::size_t>(record.layers() * n))};
        std::vector<double> scratch;
        std::vector<double> similarity(static_cast<std::size_t>(n * n), 0.0);
        for (index_t layer = 0; layer < record.layers(); ++layer) {
            for (index_t h = 0; h < n; ++h) {
                head_info& info = profile.at(layer, h);
                info.stability = head_stability(record, layer, h, scratch);
                info.role = unclustered_role(info.stability, tau_stable);
            }
            if (!cluster) continue;
            for (index_t a = 0; a < n; ++a)
                for (index_t b = a + 1; b < n; ++b)
                    similarity[a * n + b] = similarity[b * n + a] = head_similarity(record, layer, a, b, scratch);
            const star_clusters clusters =
                make_star_clusters(n, [&](index_t a, index_t b) { return similarity[a * n + b] >= tau_sim; });
            for (index_t h = 0; h < n; ++h) {
                head_info& info = profile.at(layer, h);
                info.pivot = clusters.pivot_of[h];
                if (info.pivot == h) info.role = head_role::pivot;
                else if (info.pivot >= 0) info.role = head_role::satellite;
            }
        }
        return profile;
    }
};
static_assert(HeadClassifier<overlap_star_classifier>);

//! A `HeadClassifier` that gives every head the same role: `volatile_` is the full cache, `anchor`
//! compresses every head statically (the base of StreamingLLM/H2O/SnapKV-style baselines).
struct fixed_role_classifier {
    head_role role = head_role::volatile_;

    [[nodiscard]] head_profile classify(const profiling_record& record) const {
        detail::require(role == head_role::volatile_ || role == head_role::anchor, "role", role_name(role),
                        "anchor or volatile (clustered roles need a pivot)");
        head_profile profile{record.layers(), record.kv_heads(), 0.5, 0.5, record.top_k(),
                             std::vector<head_info>(static_cast<std::size_t>(record.layers() * record.kv_heads()))};
        std::vector<double> scratch;
        for (index_t layer = 0; layer < record.layers(); ++layer)
            for (index_t h = 0; h < record.kv_heads(); ++h)
                profile.at(layer, h) = {role, head_stability(record, layer, h, scratch), -1};
        return profile;
    }
};
static_assert(HeadClassifier<fixed_role_classifier>);

}  // namespace v1
}  // namespace heterocache
