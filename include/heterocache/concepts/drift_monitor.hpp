#pragma once
//! \file
//! The `DriftMonitor` concept: when a representative head has drifted, and what its satellites should fetch.

#include <concepts>
#include <span>

#include "heterocache/detail/function_ref.hpp"
#include "heterocache/profile/head_profile.hpp"

namespace heterocache {
inline namespace v1 {

//! Sizes a monitor plans its state for.
struct monitor_plan {
    model_shape shape;
    index_t sequences = 0;  //!< sequence slots
    index_t max_prompt_tokens = 0;
    //! Tokens per page of the key digests digest pivots score from (`cache_options::digest_page_tokens`; 0:
    //! the cache makes no digest pivots).
    index_t digest_page_tokens = 0;
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
    //! This step's scaled scores `q_g . k_t / sqrt(d)` of the G query heads of a KV head over the prompt
    //! positions `[0, prompt_tokens)`, `scores[g * prompt_tokens + t]`: what the attention kernel captured
    //! (a head whose scores the monitor reads, `monitor_traits::reads_scores`), or computed from the cold
    //! keys on the spot (a second pass over the keys). Valid until the next call.
    detail::function_ref<std::span<const float>(index_t head)> prompt_scores;
    //! Copies the key of a KV head at a prompt position into `head_dim` floats (from the cold tier, widened).
    detail::function_ref<void(index_t head, index_t position, float* key)> prompt_key;
    //! In `observe`: this step's query was already seen by `observe_current`, before the attention.
    bool current_observed = false;
};

//! Called by a monitor to refresh the compressed head `head` (an anchor or a satellite) of the observed
//! (layer, sequence): its hot prompt tokens become the top-cap positions of `ranking` (one score per prompt
//! position, `ranking.size() == prompt_tokens`), fetched from the cold tier, effective from the next step.
using drift_handler = detail::function_ref<void(index_t head, std::span<const float> ranking)>;

//! What a monitor needs of the cache, declared by specializing this template (the way stdexec's `enable_*`
//! variables declare an opt-in): a type is a monitor only once it does. Derive the specialization from
//! `monitor_traits_base` and set what differs:
//! - `reads_scores`: it reads `prompt_scores` of the heads for which `reads_scores_of(role)` (a member) is
//!   true, so the cache asks the attention kernel to capture them;
//! - `needs_reference`: pivots get their reference top-B set at prefill (`set_reference(layer, seq, head,
//!   set)`);
//! - `scores_prompt`: it sees, and may rewrite, the prefill scores a compressed head's first selection is
//!   taken from (`score_prompt(layer, seq, head, scores)`); it also marks where its per-(layer, sequence)
//!   state starts over;
//! - `scoring`: how those prefill scores are computed (`prompt_scoring`; SnapKV's pooled window by default);
//! - `ranks_current_query`: it chooses tokens the current step attends from the current query (Quest, digest
//!   pivots), so when the engine passes the decode queries to `begin_layer` the cache calls
//!   `observe_current(context, on_drift)` there (before the attention: `prompt_scores` are recomputed) and
//!   lands its refreshes before it returns the selection; `observe` follows at `end_layer` as always, with
//!   `context.current_observed` set. Such a monitor may also have `bool observes_current(const head_profile&)`:
//!   false where a profile leaves it nothing to rank with the current query (pivot overlap without digest
//!   pivots), and the cache then skips the call at `begin_layer` (`observe` sees `current_observed` unset).
template <class M>
struct monitor_traits {
    static constexpr bool declared = false;
};

//! Base of a `monitor_traits` specialization: declared, needing nothing.
struct monitor_traits_base {
    static constexpr bool declared = true;
    static constexpr bool reads_scores = false;
    static constexpr bool needs_reference = false;
    static constexpr bool scores_prompt = false;
    static constexpr prompt_scoring scoring = prompt_scoring::pooled_window;
    static constexpr bool ranks_current_query = false;
};

//! A monitor decides which prompt tokens compressed heads hold over time: it plans its state (`plan`) and
//! sees every decode step of every (layer, sequence) (`observe`), asking for refreshes through the handler;
//! the hooks its `monitor_traits` declare are called at prefill. Fits the baselines: never (SnapKV,
//! PyramidKV, Ada-KV: static), positional scores (StreamingLLM: sink + recent), every step on the head's own
//! scores (H2O accumulated scores, Quest page digests), pivot drift (HeteroCache).
template <class M>
concept DriftMonitor =
    monitor_traits<M>::declared &&
    requires(M& monitor, const M& const_monitor, const monitor_plan& plan, const monitor_context& context,
             drift_handler on_drift, index_t i, std::span<const index_t> set, std::span<float> scores, head_role role) {
        { monitor.plan(plan) } -> std::same_as<void>;
        { monitor.observe(context, on_drift) } -> std::same_as<void>;
        requires !monitor_traits<M>::reads_scores || requires { { const_monitor.reads_scores_of(role) } -> std::convertible_to<bool>; };
        requires !monitor_traits<M>::needs_reference || requires { monitor.set_reference(i, i, i, set); };
        requires !monitor_traits<M>::scores_prompt || requires { monitor.score_prompt(i, i, i, scores); };
        requires !monitor_traits<M>::ranks_current_query || requires { monitor.observe_current(context, on_drift); };
    };

//! Whether monitor `M` reads the scores of heads with `role` (the cache then asks the kernel to capture them).
template <class M>
[[nodiscard]] constexpr bool monitor_reads_scores(const M& monitor, head_role role) {
    if constexpr (monitor_traits<M>::reads_scores) return monitor.reads_scores_of(role);
    else return false;
}

}  // namespace v1
}  // namespace heterocache
