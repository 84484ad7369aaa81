#pragma once
//! \file
//! A model's head profile: the role, stability and cluster of every KV head (DESIGN.md section 2).

#include <cmath>
#include <vector>

#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! What the classifier decided about one KV head.
struct head_info {
    head_role role = head_role::volatile_;
    double stability = 0.0;  //!< S(h) in [0, 1]
    index_t pivot = -1;      //!< KV head index (same layer) of the cluster's pivot; the head itself for a pivot; -1 unclustered
};

//! Roles, stability and clusters of every KV head of a model, layer-major, plus the thresholds that made them.
struct head_profile {
    index_t layers = 0;
    index_t kv_heads = 0;
    double tau_stable = 0.5;  //!< stability threshold
    double tau_sim = 0.5;     //!< similarity threshold for neighbours
    index_t top_k = 0;        //!< size of the top-k sets the profile was measured with
    std::vector<head_info> heads;

    [[nodiscard]] head_info& at(index_t layer, index_t head) { return heads[static_cast<std::size_t>(layer * kv_heads + head)]; }
    [[nodiscard]] const head_info& at(index_t layer, index_t head) const {
        return heads[static_cast<std::size_t>(layer * kv_heads + head)];
    }
    //! Number of heads with `role`.
    [[nodiscard]] index_t count(head_role role) const noexcept {
        index_t n = 0;
        for (const auto& h : heads) n += h.role == role ? 1 : 0;
        return n;
    }
    //! Heads that keep the full KV in the hot tier (pivots and volatiles), `Nfull`.
    [[nodiscard]] index_t full_heads() const noexcept { return count(head_role::pivot) + count(head_role::volatile_); }

    //! Checks internal consistency and that it fits `shape`; throws `shape_error`/`invalid_argument_error`.
    void validate(const model_shape& shape) const {
        detail::require<shape_error>(layers == shape.layers, "profile.layers", layers, "the model's layer count");
        detail::require<shape_error>(kv_heads == shape.kv_heads, "profile.kv_heads", kv_heads, "the model's KV head count");
        validate();
    }
    //! Checks internal consistency: sizes, thresholds in [0,1], stability in [0,1], satellites point at pivots.
    void validate() const {
        detail::require<shape_error>(layers > 0, "profile.layers", layers, "[1, inf)");
        detail::require<shape_error>(kv_heads > 0, "profile.kv_heads", kv_heads, "[1, inf)");
        detail::require<shape_error>(static_cast<index_t>(heads.size()) == layers * kv_heads, "profile.heads.size()",
                                     heads.size(), "layers * kv_heads");
        detail::require(tau_stable >= 0.0 && tau_stable <= 1.0, "tau_stable", tau_stable, "[0, 1]");
        detail::require(tau_sim >= 0.0 && tau_sim <= 1.0, "tau_sim", tau_sim, "[0, 1]");
        detail::require(top_k >= 0, "top_k", top_k, "[0, inf)");
        for (index_t l = 0; l < layers; ++l) {
            for (index_t h = 0; h < kv_heads; ++h) {
                const head_info& info = at(l, h);
                detail::require(info.stability >= 0.0 && info.stability <= 1.0, "stability", info.stability, "[0, 1]");
                const bool clustered = is_pivot(info.role) || info.role == head_role::satellite;
                if (!clustered) {
                    detail::require(info.pivot == -1, "pivot", info.pivot, "-1 for an unclustered head");
                } else if (is_pivot(info.role)) {
                    detail::require(info.pivot == h, "pivot", info.pivot, "the pivot's own head index");
                } else {
                    detail::require(info.pivot >= 0 && info.pivot < kv_heads && is_pivot(at(l, info.pivot).role),
                                    "pivot", info.pivot, "the index of a pivot head in the same layer");
                }
            }
        }
    }
};

//! A profile in which every head has `role` (anchor or volatile): all-volatile is the full cache, all-anchor
//! compresses every head statically.
inline head_profile uniform_profile(const model_shape& shape, head_role role, double stability = 1.0) {
    shape.validate();
    detail::require(role == head_role::volatile_ || role == head_role::anchor, "role", role_name(role),
                    "anchor or volatile (clustered roles need a pivot)");
    head_profile profile{shape.layers, shape.kv_heads, 0.5, 0.5, 0,
                         std::vector<head_info>(static_cast<std::size_t>(shape.total_kv_heads()), {role, stability, -1})};
    return profile;
}

}  // namespace v1
}  // namespace heterocache
