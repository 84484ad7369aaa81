#pragma once
//! \file
//! A monitor that never reports drift: selections stay as chosen at prefill.

#include "heterocache/concepts/drift_monitor.hpp"

namespace heterocache {
inline namespace v1 {

//! `DriftMonitor` for static compression (SnapKV-like): satellites keep their prefill selection.
//! It needs nothing of the cache: compressed heads keep the top positions of the pooled window scores.
struct static_monitor {
    void plan(const monitor_plan&) {}
    void observe(const monitor_context&, drift_handler) {}
};
template <>
struct monitor_traits<static_monitor> : monitor_traits_base {};
static_assert(DriftMonitor<static_monitor>);

}  // namespace v1
}  // namespace heterocache
