#pragma once
//! \file
//! A monitor that never reports drift: selections stay as chosen at prefill.

#include "heterocache/concepts/drift_monitor.hpp"

namespace heterocache {
inline namespace v1 {

//! `DriftMonitor` for static compression (SnapKV-like): satellites keep their prefill selection.
struct static_monitor {
    void plan(const monitor_plan&) {}
    //! Keeps the pooled attention scores (SnapKV-style selection).
    void score_prompt(index_t, index_t, index_t, std::span<float>) {}
    void set_reference(index_t, index_t, index_t, std::span<const index_t>) {}
    void observe(const monitor_context&, drift_handler) {}
};
static_assert(DriftMonitor<static_monitor>);

}  // namespace v1
}  // namespace heterocache
