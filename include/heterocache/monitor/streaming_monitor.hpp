#pragma once
//! \file
//! StreamingLLM as a monitor: attention sinks plus the most recent prompt tokens, fixed at prefill.

#include <span>

#include "heterocache/concepts/drift_monitor.hpp"

namespace heterocache {
inline namespace v1 {

//! Rewrites `scores` (one per prompt position) positionally so that the top-`cap` positions are the first
//! `min(sink, cap)` positions (the attention sinks) and then the most recent ones: a sink scores `T`,
//! any other position `t` scores `t`. Exact for `T < 2^24`.
inline void rank_sink_and_recent(std::span<float> scores, index_t sink) {
    detail::require(sink >= 0, "sink", sink, "[0, inf)");
    const auto length = static_cast<index_t>(scores.size());
    for (index_t t = 0; t < length; ++t) scores[t] = static_cast<float>(t < sink ? length : t);
}

//! `DriftMonitor` of StreamingLLM (Xiao et al., 2023): every compressed head keeps the first `sink` prompt
//! tokens and the most recent `cap - sink`, whatever it attends; nothing changes during decode. Decode tokens
//! are the cache's own window (`cache_options::decode_window` / `decode_sink`). Use with
//! `uniform_profile(shape, head_role::anchor)` and `uniform_budget` (StreamingLLM), or with a stability-only
//! classifier so that drifting heads stay full (DuoAttention-like).
struct streaming_monitor {
    index_t sink = 4;  //!< attention-sink tokens at the start of the prompt (StreamingLLM uses 4)

    void plan(const monitor_plan&) {}
    //! Rewrites the prefill scores positionally (`rank_sink_and_recent`).
    void score_prompt(index_t, index_t, index_t, std::span<float> scores) const { rank_sink_and_recent(scores, sink); }
    void observe(const monitor_context&, drift_handler) {}
};
template <>
struct monitor_traits<streaming_monitor> : monitor_traits_base {
    static constexpr bool scores_prompt = true;
};
static_assert(DriftMonitor<streaming_monitor>);

}  // namespace v1
}  // namespace heterocache
