#pragma once
//! \file
//! The paper's drift monitor: pivots compare their top-B set with a reference every `interval` steps.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "heterocache/algorithm/median.hpp"
#include "heterocache/algorithm/pooled_attention.hpp"
#include "heterocache/algorithm/overlap.hpp"
#include "heterocache/concepts/drift_monitor.hpp"

namespace heterocache {
inline namespace v1 {

//! Default `DriftMonitor` (DESIGN.md section 2, "Decode, drift and retrieval"): at every decode step of a
//! (layer, sequence) each pivot ranks its prompt by the pooled attention row of that step's query and
//! measures the overlap of its top-B set with the reference; every `interval` steps, when the median of the
//! last `interval` overlaps falls below the profile's `tau_stable`, the reference becomes the latest top-B
//! set and every satellite of the pivot is refreshed from the latest ranking. (The same decisions as
//! scoring the `interval` queries together at the check, spread over the steps.) A pivot skips the ranking
//! once its check is decided: after `interval / 2 + 1` overlaps on one side of `tau_stable` the median is
//! on that side too. Over an interval of 5, a pivot that stays stable ranks at 3 steps and one that drifts
//! at 4 (the last step's ranking feeds the refresh); mixed overlaps take all 5.
//! The scores come from the attention kernel when it captured them (`monitor_context::prompt_scores`); then a
//! step costs O(G * T) per pivot (a softmax, the pool and a radix top-k). Otherwise the cache computes them
//! from the pivot's cold keys, O(G * T * d). The state is planned once.
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
        steps_.assign(streams, 0);
        reference_.assign(heads * static_cast<std::size_t>(max_prompt_), 0);
        reference_size_.assign(heads, 0);
        overlaps_.assign(heads * static_cast<std::size_t>(interval_), 0.0);
        ranking_.assign(static_cast<std::size_t>(max_prompt_), 0.0f);
        scratch_.assign(static_cast<std::size_t>(2 * max_prompt_), 0.0f);
        index_scratch_.assign(static_cast<std::size_t>(max_prompt_), 0);
        latest_.assign(static_cast<std::size_t>(max_prompt_), 0);
    }

    //! Pivots read their attention scores over the prompt at every step.
    [[nodiscard]] bool reads_scores_of(head_role role) const noexcept { return role == head_role::pivot; }

    //! Sets a pivot's reference set (at prefill) and restarts the interval count of its (layer, sequence).
    void set_reference(index_t layer, index_t seq, index_t head, std::span<const index_t> set) {
        detail::require<shape_error>(static_cast<index_t>(set.size()) <= max_prompt_, "set.size()", set.size(),
                                     "[0, max_prompt_tokens]");
        store_reference(head_slot(layer, seq, head), set);
        steps_[stream(layer, seq)] = 0;
    }

    void observe(const monitor_context& context, drift_handler on_drift) {
        const index_t phase = steps_[stream(context.layer, context.sequence)]++ % interval_;
        const bool last = phase == interval_ - 1;
        const index_t t = context.prompt_tokens;
        const index_t b = std::min(context.base_length, t);
        const index_t group = shape_.group_size();
        const double tau = context.profile->tau_stable;
        const std::span<float> ranking(ranking_.data(), static_cast<std::size_t>(t));
        const std::span<index_t> latest(latest_.data(), static_cast<std::size_t>(b));
        for (index_t head = 0; head < shape_.kv_heads; ++head) {
            if (context.profile->at(context.layer, head).role != head_role::pivot) continue;
            const std::size_t h = head_slot(context.layer, context.sequence, head);
            const std::span<double> overlaps(overlaps_.data() + h * static_cast<std::size_t>(interval_),
                                             static_cast<std::size_t>(interval_));
            const check_outcome known = outcome_so_far(overlaps.first(static_cast<std::size_t>(phase)), tau);
            // Rank only while this step can change the check, or at a drifting check (for its latest ranking).
            if (known == check_outcome::stable || (known == check_outcome::drifted && !last)) continue;
            pooled_attention_row_from_scores(context.prompt_scores(head), group, ranking, scratch_);
            top_k_positions(ranking, latest, index_scratch_);
            ++rankings_;
            overlaps[static_cast<std::size_t>(phase)] = overlap_coefficient(latest, reference(h));
            if (!last || (known == check_outcome::undecided && median_in_place(overlaps) >= tau)) continue;
            store_reference(h, latest);
            for (index_t satellite = 0; satellite < shape_.kv_heads; ++satellite) {
                const head_info& info = context.profile->at(context.layer, satellite);
                if (info.role == head_role::satellite && info.pivot == head) on_drift(satellite, ranking);
            }
        }
    }

    //! Pivot rankings computed so far (pooled row and top-k): at most one per pivot and step, fewer where
    //! the check was already decided.
    [[nodiscard]] std::uint64_t rankings() const noexcept { return rankings_; }

    [[nodiscard]] index_t interval() const noexcept { return interval_; }

private:
    enum class check_outcome { undecided, stable, drifted };

    //! What the check at the end of the interval decides, known from the overlaps of its first steps
    //! `earlier`: the median of the interval's `n` overlaps is at least `tau` once `n / 2 + 1` of them are
    //! (both middle values then are), and below it once `n / 2 + 1` are below. A decided outcome stays
    //! decided whatever the later entries hold (both sides cannot reach `n / 2 + 1`), so the entries of the
    //! steps it skipped are never read.
    [[nodiscard]] check_outcome outcome_so_far(std::span<const double> earlier, double tau) const noexcept {
        const auto above = static_cast<index_t>(std::count_if(earlier.begin(), earlier.end(), [&](double o) { return o >= tau; }));
        const index_t needed = interval_ / 2 + 1;
        if (above >= needed) return check_outcome::stable;
        if (static_cast<index_t>(earlier.size()) - above >= needed) return check_outcome::drifted;
        return check_outcome::undecided;
    }

    [[nodiscard]] std::span<const index_t> reference(std::size_t h) const noexcept {
        return {reference_.data() + h * static_cast<std::size_t>(max_prompt_), static_cast<std::size_t>(reference_size_[h])};
    }
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
    index_t sequences_ = 0, max_prompt_ = 0;
    std::vector<index_t> steps_;
    std::vector<index_t> reference_, reference_size_;
    std::vector<double> overlaps_;
    std::vector<float> ranking_, scratch_;
    std::vector<index_t> index_scratch_, latest_;
    std::uint64_t rankings_ = 0;
};
template <>
struct monitor_traits<pivot_overlap_monitor> : monitor_traits_base {
    static constexpr bool reads_scores = true;     // each pivot's scores over its prompt, every step
    static constexpr bool needs_reference = true;  // each pivot's top-B set at prefill
};
static_assert(DriftMonitor<pivot_overlap_monitor>);

}  // namespace v1
}  // namespace heterocache
