#pragma once
//! \file
//! The `DriftMonitor` concept: when a representative head has drifted, and what its satellites should fetch.

#include <concepts>
#include <span>

#include "heterocache/algorithm/pooled_attention.hpp"
#include "heterocache/attention/csr_selection.hpp"
#include "heterocache/detail/function_ref.hpp"
#include "heterocache/profile/head_profile.hpp"

namespace heterocache {
inline namespace v1 {

//! Sizes a monitor plans its state for.
struct monitor_plan {
    model_shape shape;
    index_t sequences = 0;
    index_t max_prompt_tokens = 0;
};

//! What a monitor sees at one decode step of one (layer, sequence).
struct monitor_context {
    index_t layer = 0;
    index_t sequence = 0;
    index_t prompt_tokens = 0;        //!< T of this sequence
    index_t base_length = 0;          //!< B: size of a pivot's reference set
    const head_profile* profile = nullptr;
    const float* query = nullptr;     //!< this step's decode query, `[query_head][head_dim]`
    index_t query_head_stride = 0;    //!< floats between query heads
    //! Cold-tier keys of a KV head of this (layer, sequence): prompt positions `[0, prompt_tokens)`.
    detail::function_ref<key_rows(index_t)> prompt_keys;
    //! Empty, or one entry per KV head of this (layer, sequence): where the attention kernel wrote this
    //! step's scaled scores of the head's G query heads over prompt positions `[0, prompt_tokens)`
    //! (`scores[g * prompt_tokens + t]`, the `group_scores` layout; `scores` null where none were asked
    //! for). A monitor reads them instead of recomputing them from `prompt_keys`.
    std::span<const score_capture> captured_scores;
};

//! Whether monitor `M` reads the attention scores of heads with `role` (it says so with a member
//! `bool wants_scores(head_role) const`; a monitor without one reads none). `kv_cache` asks the attention
//! kernel to capture them (`csr_selection::captures`).
template <class M>
[[nodiscard]] constexpr bool monitor_wants_scores(const M& monitor, head_role role) {
    if constexpr (requires { { monitor.wants_scores(role) } -> std::convertible_to<bool>; })
        return monitor.wants_scores(role);
    else
        return false;
}

//! Called by a monitor to refresh the compressed head `head` (an anchor or a satellite) of the observed
//! (layer, sequence): its hot prompt tokens become the top-cap positions of `ranking` (one score per prompt
//! position, `ranking.size() == prompt_tokens`), fetched from the cold tier, effective from the next step.
using drift_handler = detail::function_ref<void(index_t head, std::span<const float> ranking)>;

//! A monitor decides which prompt tokens compressed heads hold over time: it may rewrite the prefill
//! scores a head's initial selection is taken from (`score_prompt`), keeps per-head reference sets (set at
//! prefill for pivots), sees every decode query, and asks for refreshes. Fits the baselines: never
//! (SnapKV, PyramidKV, Ada-KV: static), positional scores (StreamingLLM: sink + recent), every step on
//! the head's own query (H2O accumulated scores, Quest page digests), pivot drift (HeteroCache).
template <class M>
concept DriftMonitor = requires(M& monitor, const monitor_plan& plan, const monitor_context& context, index_t i,
                                std::span<const index_t> set, std::span<float> scores, drift_handler on_drift) {
    { monitor.plan(plan) } -> std::same_as<void>;
    { monitor.score_prompt(i, i, i, scores) } -> std::same_as<void>;
    { monitor.set_reference(i, i, i, set) } -> std::same_as<void>;
    { monitor.observe(context, on_drift) } -> std::same_as<void>;
};

}  // namespace v1
}  // namespace heterocache
