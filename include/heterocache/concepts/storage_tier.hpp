#pragma once
//! \file
//! The `StorageTier` concept: where KV bytes live (a hot and a cold tier) and how they move.

#include <concepts>

#include "heterocache/storage/storage_plan.hpp"

namespace heterocache {
inline namespace v1 {

//! A storage tier owns the hot tier (per-row slot ranges, `head_dim` elements of type `element_type` of key
//! and of value per slot, plus the token position each slot holds) and the cold tier (every token written, by
//! position). Tokens come in and go out as floats; the tier converts them to `element_type` for the hot tier.
//! Rows are `seq * kv_heads + head`. All sizes come from `plan()`; no other call allocates.
template <class S>
concept StorageTier = requires(S& s, const S& cs, const storage_plan& plan, index_t i, const float* data, float* out) {
    typename S::element_type;
    { s.plan(plan) } -> std::same_as<void>;
    { cs.hot_row_base(i, i) } -> std::convertible_to<index_t>;
    { cs.hot_keys(i) } -> std::same_as<const typename S::element_type*>;
    { cs.hot_values(i) } -> std::same_as<const typename S::element_type*>;
    { cs.hot_position(i, i) } -> std::convertible_to<index_t>;
    { s.write_hot(i, i, data, data, i) } -> std::same_as<void>;
    { s.write_cold(i, i, i, data, data) } -> std::same_as<void>;
    { cs.cold_keys(i, i) } -> std::same_as<const float*>;
    { cs.cold_values(i, i) } -> std::same_as<const float*>;
    { cs.read_cold(i, i, i, out, out) } -> std::same_as<void>;
    { s.retrieve_to_hot(i, i, data, data, i) } -> std::same_as<void>;
    { cs.counters() } -> std::same_as<transfer_counters>;
};

}  // namespace v1
}  // namespace heterocache
