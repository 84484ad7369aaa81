#pragma once
//! \file
//! The paper's drift monitor: pivots compare their top-B set with a reference every `interval` steps.

#include <algorithm>
#include <cstring>
#include <vector>

#include "heterocache/algorithm/median.hpp"
#include "heterocache/algorithm/overlap.hpp"
#include "heterocache/concepts/drift_monitor.hpp"

namespace heterocache {
inline namespace v1 {

//! Default `DriftMonitor` (DESIGN.md section 2, "Decode, drift and retrieval"): every `interval` decode steps
//! of a (layer, sequence), each pivot scores its last `interval` queries over its full prompt keys; when the
//! median overlap of their top-B sets with the reference falls below the profile's `tau_stable`, the
//! reference becomes the latest top-B set and every satellite of the pivot is refreshed from the latest ranking.
//! Cost per check: `interval * pivots * G * T * d` multiply-adds; the state is planned once.
class pivot_overlap_monitor {
public:
    pivot_overlap_monitor() = default;
    //! Checks every `interval` decode steps (the reference uses 5).
    explicit pivot_overlap_monitor(index_t interval) : interval_(interval) {
        detail::require(interval >= 1, "interval", interval, "[1, inf)");
    }

    void plan(const monitor_plan& plan) {
        shape_ = plan.shape;
        sequences_ = plan.sequences;
        max_prompt_ = plan.max_prompt_tokens;
        const auto streams = static_cast<std::size_t>(shape_.layers * sequences_);
        const auto heads = streams * static_cast<std::size_t>(shape_.kv_heads);
        query_stride_ = shape_.query_heads * shape_.head_dim;
        queries_.assign(streams * static_cast<std::size_t>(interval_ * query_stride_), 0.0f);
        steps_.assign(streams, 0);
        reference_.assign(heads * static_cast<std::size_t>(max_prompt_), 0);
        reference_size_.assign(heads, 0);
        ranking_.assign(static_cast<std::size_t>(max_prompt_), 0.0f);
        scratch_.assign(static_cast<std::size_t>(2 * max_prompt_), 0.0f);
        index_scratch_.assign(static_cast<std::size_t>(max_prompt_), 0);
        latest_.assign(static_cast<std::size_t>(max_prompt_), 0);
        overlaps_.assign(static_cast<std::size_t>(interval_), 0.0);
    }

    //! Keeps the pooled attention scores of the observation window (DESIGN.md section 2, "Prefill").
    void score_prompt(index_t, index_t, index_t, std::span<float>) {}

    //! Sets a pivot's reference set (at prefill) and restarts the interval count of its (layer, sequence).
    void set_reference(index_t layer, index_t seq, index_t head, std::span<const index_t> set) {
        detail::require<shape_error>(static_cast<index_t>(set.size()) <= max_prompt_, "set.size()", set.size(),
                                     "[0, max_prompt_tokens]");
        store_reference(head_slot(layer, seq, head), set);
        steps_[stream(layer, seq)] = 0;
    }

    void observe(const monitor_context& context, drift_handler on_drift) {
        const std::size_t s = stream(context.layer, context.sequence);
        float* ring = queries_.data() + s * static_cast<std::size_t>(interval_ * query_stride_);
        const index_t step = steps_[s]++;
        for (index_t q = 0; q < shape_.query_heads; ++q)
            std::memcpy(ring + (step % interval_) * query_stride_ + q * shape_.head_dim,
                        context.query + q * context.query_head_stride, sizeof(float) * shape_.head_dim);
        if ((step + 1) % interval_ != 0) return;
        const index_t t = context.prompt_tokens;
        const index_t b = std::min(context.base_length, t);
        const std::span<float> ranking(ranking_.data(), static_cast<std::size_t>(t));
        const std::span<index_t> latest(latest_.data(), static_cast<std::size_t>(b));
        for (index_t head = 0; head < shape_.kv_heads; ++head) {
            if (context.profile->at(context.layer, head).role != head_role::pivot) continue;
            const std::size_t h = head_slot(context.layer, context.sequence, head);
            const std::span<const index_t> reference(reference_.data() + h * max_prompt_,
                                                     static_cast<std::size_t>(reference_size_[h]));
            const key_rows keys = context.prompt_keys(head);
            for (index_t i = 0; i < interval_; ++i) {  // oldest first, so `ranking` ends as the latest query's
                const float* q = ring + ((step + 1 + i) % interval_) * query_stride_;
                const query_rows query{q, 1, query_stride_, shape_.head_dim, t};
                pooled_attention_row(query, keys, head, shape_.group_size(), shape_.head_dim, ranking, scratch_);
                top_k_positions(ranking, latest, index_scratch_);
                overlaps_[i] = overlap_coefficient(latest, reference);
            }
            if (median_in_place(overlaps_) >= context.profile->tau_stable) continue;
            store_reference(h, latest);
            for (index_t satellite = 0; satellite < shape_.kv_heads; ++satellite) {
                const head_info& info = context.profile->at(context.layer, satellite);
                if (info.role == head_role::satellite && info.pivot == head) on_drift(satellite, ranking);
            }
        }
    }

    [[nodiscard]] index_t interval() const noexcept { return interval_; }

private:
    void store_reference(std::size_t h, std::span<const index_t> set) {
        std::copy(set.begin(), set.end(), reference_.begin() + static_cast<std::ptrdiff_t>(h * max_prompt_));
        reference_size_[h] = static_cast<index_t>(set.size());
    }
    [[nodiscard]] std::size_t stream(index_t layer, index_t seq) const noexcept {
        return static_cast<std::size_t>(layer * sequences_ + seq);
    }
    [[nodiscard]] std::size_t head_slot(index_t layer, index_t seq, index_t head) const noexcept {
        return stream(layer, seq) * static_cast<std::size_t>(shape_.kv_heads) + static_cast<std::size_t>(head);
    }

    index_t interval_ = 5;
    model_shape shape_;
    index_t sequences_ = 0, max_prompt_ = 0, query_stride_ = 0;
    std::vector<float> queries_;
    std::vector<index_t> steps_;
    std::vector<index_t> reference_, reference_size_;
    std::vector<float> ranking_, scratch_;
    std::vector<index_t> index_scratch_, latest_;
    std::vector<double> overlaps_;
};
static_assert(DriftMonitor<pivot_overlap_monitor>);

}  // namespace v1
}  // namespace heterocache
