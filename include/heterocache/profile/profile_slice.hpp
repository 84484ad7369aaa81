#pragma once
//! \file
//! Tensor-parallel sharding of a head profile: the profile of the KV heads one rank owns.
//!
//! A tensor-parallel engine (Megatron-style head split) gives each rank a subset of the KV heads of every
//! layer, together with the query heads of their GQA groups. Each rank runs its own `kv_cache` over its
//! heads, with the slice of the model's profile and a `sharded_budget` so its budgets are the unsharded ones.

#include <algorithm>
#include <span>
#include <string>
#include <vector>

#include "heterocache/profile/head_profile.hpp"

namespace heterocache {
inline namespace v1 {

namespace detail {

inline std::string head_list(std::span<const index_t> heads) {
    std::string text = "{";
    for (std::size_t i = 0; i < heads.size(); ++i) text += (i > 0 ? ", " : "") + std::to_string(heads[i]);
    return text + "}";
}

//! Checks that `kv_heads` is a non-empty list of distinct heads in `[0, total)`.
inline void validate_head_list(std::span<const index_t> kv_heads, index_t total) {
    require<shape_error>(!kv_heads.empty(), "kv_heads.size()", kv_heads.size(), "[1, kv_heads of the model]");
    std::vector<bool> seen(static_cast<std::size_t>(total), false);
    for (const index_t head : kv_heads) {
        require<shape_error>(head >= 0 && head < total, "kv_heads", head_list(kv_heads),
                             "distinct heads in [0, " + std::to_string(total) + ")");
        require<shape_error>(!seen[static_cast<std::size_t>(head)], "kv_heads", head_list(kv_heads),
                             "distinct heads (" + std::to_string(head) + " appears twice)");
        seen[static_cast<std::size_t>(head)] = true;
    }
}

}  // namespace detail

//! The KV heads a rank owns under the Megatron split of `kv_heads` heads over `ranks` ranks: the contiguous
//! block `[rank * kv_heads / ranks, (rank + 1) * kv_heads / ranks)`. Its query heads are those heads' GQA
//! groups. Throws `shape_error` unless `ranks` divides `kv_heads` and `rank` is in `[0, ranks)`.
inline std::vector<index_t> tensor_parallel_heads(index_t kv_heads, index_t ranks, index_t rank) {
    detail::require<shape_error>(ranks >= 1 && kv_heads >= ranks && kv_heads % ranks == 0, "ranks", ranks,
                                 "a divisor of kv_heads = " + std::to_string(kv_heads));
    detail::require<shape_error>(rank >= 0 && rank < ranks, "rank", rank, "[0, ranks)");
    const index_t count = kv_heads / ranks;
    std::vector<index_t> heads(static_cast<std::size_t>(count));
    for (index_t i = 0; i < count; ++i) heads[static_cast<std::size_t>(i)] = rank * count + i;
    return heads;
}

//! The attention shape a rank sees: `kv_heads.size()` KV heads and their `G` query heads each.
inline model_shape slice_shape(const model_shape& shape, std::span<const index_t> kv_heads) {
    shape.validate();
    detail::validate_head_list(kv_heads, shape.kv_heads);
    const auto count = static_cast<index_t>(kv_heads.size());
    return {shape.layers, count, count * shape.group_size(), shape.head_dim};
}

//! The profile of the KV heads `kv_heads` of every layer: head `kv_heads[i]` of `profile` becomes head `i`,
//! with its role and stability; a satellite's `pivot` is renumbered the same way. Thresholds and `top_k`
//! are kept. O(layers * kv_heads).
//!
//! A cluster must stay on one rank (its pivot refreshes its satellites): when `kv_heads` holds a pivot
//! but not one of its satellites, or a satellite but not its pivot, this throws `invalid_argument_error`
//! naming the layer and both heads. Throws `shape_error` when a head is out of range or repeated.
inline head_profile slice_profile(const head_profile& profile, std::span<const index_t> kv_heads) {
    profile.validate();
    detail::validate_head_list(kv_heads, profile.kv_heads);
    std::vector<index_t> local(static_cast<std::size_t>(profile.kv_heads), -1);  // full head -> slice head
    for (std::size_t i = 0; i < kv_heads.size(); ++i) local[static_cast<std::size_t>(kv_heads[i])] = static_cast<index_t>(i);

    const auto count = static_cast<index_t>(kv_heads.size());
    head_profile slice{profile.layers, count, profile.tau_stable, profile.tau_sim, profile.top_k,
                       std::vector<head_info>(static_cast<std::size_t>(profile.layers * count))};
    for (index_t layer = 0; layer < profile.layers; ++layer) {
        for (index_t head = 0; head < profile.kv_heads; ++head) {
            const head_info& info = profile.at(layer, head);
            if (info.role != head_role::satellite) continue;
            const bool inside = local[static_cast<std::size_t>(head)] >= 0;
            if (inside == (local[static_cast<std::size_t>(info.pivot)] >= 0)) continue;
            throw invalid_argument_error(
                "kv_heads", detail::head_list(kv_heads),
                "a set that keeps every cluster on one rank; in layer " + std::to_string(layer) + " satellite " +
                    std::to_string(head) + (inside ? " is in it but its pivot " : " is not in it but its pivot ") +
                    std::to_string(info.pivot) + (inside ? " is not" : " is"));
        }
        for (index_t i = 0; i < count; ++i) {
            head_info info = profile.at(layer, kv_heads[static_cast<std::size_t>(i)]);
            if (info.pivot >= 0) info.pivot = local[static_cast<std::size_t>(info.pivot)];
            slice.at(layer, i) = info;
        }
    }
    return slice;
}

}  // namespace v1
}  // namespace heterocache
