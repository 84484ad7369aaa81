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
#include "heterocache/monitor/page_digests.hpp"

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
//! from the pivot's cold keys, O(G * T * d).
//!
//! A digest pivot (a pivot the demotion floor kept compressed, DESIGN.md section 5.3) holds top-cap tokens and
//! ranks its prompt from page digests instead: every position takes the largest `page_score_bound` of its page
//! over the query group (Quest's bound, the digests built from the cold keys once per prompt). Its check runs
//! at every step, with the step's own query when the engine passes it to `begin_layer` (`observe_current`;
//! else one step late, at `observe`): when the overlap of its top-B set with its reference falls below
//! `tau_stable` the reference becomes that set and the pivot and its satellites are refreshed from the
//! ranking in the same step. Its first check compares the page ranking with the prefill's exact reference,
//! so it usually refreshes at the first step. Cost per digest pivot and step: `G * (T / page_tokens) * d` (its
//! top-B set comes from the pages, `top_positions_of_pages`), and O(T) more at a refresh.
//! The state is planned once.
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
        if (plan.digest_page_tokens > 0) {
            digests_.plan(heads, max_prompt_, plan.digest_page_tokens, shape_.head_dim);
            page_scores_.assign(static_cast<std::size_t>(digests_.max_pages()), 0.0f);
            index_scratch_.resize(std::max(index_scratch_.size(), static_cast<std::size_t>(2 * digests_.max_pages())));
        }
    }

    //! Pivots read their attention scores over the prompt at every step.
    [[nodiscard]] bool reads_scores_of(head_role role) const noexcept { return role == head_role::pivot; }

    //! Sets a pivot's reference set (at prefill) and restarts the interval count of its (layer, sequence); a
    //! new prompt makes a digest pivot's digests stale.
    void set_reference(index_t layer, index_t seq, index_t head, std::span<const index_t> set) {
        detail::require<shape_error>(static_cast<index_t>(set.size()) <= max_prompt_, "set.size()", set.size(),
                                     "[0, max_prompt_tokens]");
        store_reference(head_slot(layer, seq, head), set);
        if (digests_.planned()) digests_.invalidate(head_slot(layer, seq, head));
        steps_[stream(layer, seq)] = 0;
    }

    //! Only digest pivots rank with the step's query: a profile without them gives `observe_current` nothing
    //! to do, and the cache skips it.
    [[nodiscard]] bool observes_current(const head_profile& profile) const noexcept {
        return profile.count(head_role::digest_pivot) > 0;
    }

    //! Digest pivots check their drift with the step's query, before it attends.
    void observe_current(const monitor_context& context, drift_handler on_drift) {
        for (index_t head = 0; head < shape_.kv_heads; ++head)
            if (context.profile->at(context.layer, head).role == head_role::digest_pivot) check_digest_pivot(context, head, on_drift);
    }

    void observe(const monitor_context& context, drift_handler on_drift) {
        if (!context.current_observed) observe_current(context, on_drift);
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
            refresh_cluster(context, head, /*include_pivot=*/false, ranking, on_drift);
        }
    }

    //! Pivot rankings computed so far (pooled row and top-k): at most one per pivot and step, fewer where
    //! the check was already decided.
    [[nodiscard]] std::uint64_t rankings() const noexcept { return rankings_; }
    //! Digest pivot checks so far (one per digest pivot and step) and how many found drift.
    [[nodiscard]] std::uint64_t digest_checks() const noexcept { return digest_checks_; }
    [[nodiscard]] std::uint64_t digest_drifts() const noexcept { return digest_drifts_; }

    [[nodiscard]] index_t interval() const noexcept { return interval_; }

private:
    enum class check_outcome { undecided, stable, drifted };

    //! A digest pivot's check at this step: its page ranking's top-B set against its reference; on drift the
    //! set becomes the reference and the pivot and its satellites are refreshed from the ranking.
    void check_digest_pivot(const monitor_context& context, index_t head, drift_handler on_drift) {
        detail::require(digests_.planned(), "digest_page_tokens", 0, "[1, 1024] for a profile with digest pivots");
        const index_t t = context.prompt_tokens, g = shape_.group_size();
        const std::size_t h = head_slot(context.layer, context.sequence, head);
        if (!digests_.ready(h))
            digests_.build(h, t, [&](index_t position, float* key) { context.prompt_key(head, position, key); });
        const float* query = context.query + head * g * context.query_head_stride;
        const std::span<float> pages(page_scores_.data(), static_cast<std::size_t>(digests_.pages(t)));
        digests_.rank_pages(h, query, context.query_head_stride, g, pages);
        const std::span<index_t> latest(latest_.data(), static_cast<std::size_t>(std::min(context.base_length, t)));
        top_positions_of_pages(pages, digests_.page_tokens(), t, latest, index_scratch_);
        ++digest_checks_;
        if (overlap_coefficient(latest, reference(h)) >= context.profile->tau_stable) return;
        ++digest_drifts_;
        store_reference(h, latest);
        const std::span<float> ranking(ranking_.data(), static_cast<std::size_t>(t));
        digests_.spread(pages, ranking);
        refresh_cluster(context, head, /*include_pivot=*/true, ranking, on_drift);
    }

    //! Asks for the refresh of `pivot`'s satellites from `ranking` (and of the pivot itself where it holds a
    //! selection, as a digest pivot does).
    void refresh_cluster(const monitor_context& context, index_t pivot, bool include_pivot, std::span<const float> ranking,
                         drift_handler on_drift) const {
        for (index_t member = 0; member < shape_.kv_heads; ++member) {
            const head_info& info = context.profile->at(context.layer, member);
            const bool satellite = info.role == head_role::satellite && info.pivot == pivot;
            if (satellite || (include_pivot && member == pivot)) on_drift(member, ranking);
        }
    }

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
    std::vector<float> ranking_, scratch_, page_scores_;
    std::vector<index_t> index_scratch_, latest_;
    page_digests digests_;  //!< of every head, planned only for a cache that makes digest pivots
    std::uint64_t rankings_ = 0, digest_checks_ = 0, digest_drifts_ = 0;
};
template <>
struct monitor_traits<pivot_overlap_monitor> : monitor_traits_base {
    static constexpr bool reads_scores = true;     // each pivot's scores over its prompt, every step
    static constexpr bool needs_reference = true;      // each pivot's top-B set at prefill
    static constexpr bool ranks_current_query = true;  // digest pivots check with the step's own query
};
static_assert(DriftMonitor<pivot_overlap_monitor>);

}  // namespace v1
}  // namespace heterocache
