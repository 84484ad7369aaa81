#pragma once
//! \file
//! Monitors that never report drift: selections stay as chosen at prefill, from prefill scores of the
//! method's kind (SnapKV, H2O, TOVA).

#include "heterocache/concepts/drift_monitor.hpp"

namespace heterocache {
inline namespace v1 {

//! `DriftMonitor` for compression decided once, at prefill: compressed heads keep the top positions of the
//! prefill scores `Scoring` computes over the observation window (`prompt_scoring`), plus the prompt ends
//! the cache protects (`cache_options::prompt_sink`, `prompt_recent`). It needs nothing of the cache and
//! does no work during decode.
template <prompt_scoring Scoring>
struct prefill_selection_monitor {
    void plan(const monitor_plan&) {}
    void observe(const monitor_context&, drift_handler) {}
};
template <prompt_scoring Scoring>
struct monitor_traits<prefill_selection_monitor<Scoring>> : monitor_traits_base {
    static constexpr prompt_scoring scoring = Scoring;
};

//! SnapKV's selection (Li et al., 2024): the pooled window attention.
using static_monitor = prefill_selection_monitor<prompt_scoring::pooled_window>;
//! H2O's selection (Zhang et al., 2023) as an eviction-only policy: the attention the window accumulated
//! (no pooling). H2O evicts for good and scores only the tokens it holds; in this cache a head's prompt slots
//! are fixed and decode tokens are kept apart (`cache_options::decode_window`), so H2O's rule never has to
//! evict during decode and its selection is the prefill's (`heavy_hitter_monitor` is the oracle that re-scores
//! the whole prompt every step).
using h2o_monitor = prefill_selection_monitor<prompt_scoring::window_mass>;
//! TOVA's selection (Oren et al., 2024): the attention of the current (last prompt) query, per KV head
//! (mean over its query group). TOVA evicts the lowest-attention token as each new one arrives; with decode
//! tokens kept apart that leaves the prefill's choice, as kvpress's TOVA press does.
using tova_monitor = prefill_selection_monitor<prompt_scoring::last_query>;

static_assert(DriftMonitor<static_monitor> && DriftMonitor<h2o_monitor> && DriftMonitor<tova_monitor>);

}  // namespace v1
}  // namespace heterocache
