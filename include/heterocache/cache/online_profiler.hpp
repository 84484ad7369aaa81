#pragma once
//! \file
//! `online_profiler`: profiling without a calibration run (DESIGN.md section 2, "Profiling"; section 3.1,
//! "Online profiling completes per sequence"). Records every head's top-k sets at prefill and at its first
//! observations of each sequence (the last queries of the observation window, or the first decode steps), classifies the heads from the first sequence that completes, and demotes
//! full heads until the budget can be met.

#include <algorithm>
#include <span>
#include <vector>

#include "heterocache/algorithm/overlap.hpp"
#include "heterocache/algorithm/pooled_attention.hpp"
#include "heterocache/budget/budget_split.hpp"
#include "heterocache/concepts/head_classifier.hpp"
#include "heterocache/profile/profiling_record.hpp"

namespace heterocache {
inline namespace v1 {

//! The observations of online profiling, per sequence slot, and the prefill scores of every (layer, slot,
//! head) (the selections are taken from them once the profile exists). A sequence completes when every
//! layer has observed `steps` queries (window queries, then decode queries); slots that are idle, or end before completing, hold nothing
//! up. Planned once; `finish` allocates (once per cache).
class online_profiler {
public:
    online_profiler() = default;
    //! Room for `sequences` slots of `layers * kv_heads` heads, `steps` decode observations each, prompts of
    //! at most `max_prompt_tokens` and top-k sets of at most `max_top_k` positions.
    online_profiler(index_t layers, index_t kv_heads, index_t sequences, index_t steps, index_t max_prompt_tokens,
                    index_t max_top_k)
        : layers_(layers), kv_heads_(kv_heads), steps_(steps), max_prompt_(max_prompt_tokens),
          record_(layers, kv_heads, sequences, steps, max_top_k),
          scores_(static_cast<std::size_t>(layers * sequences * kv_heads * max_prompt_tokens), 0.0f),
          observed_(static_cast<std::size_t>(layers * sequences), 0),
          ranking_(static_cast<std::size_t>(max_prompt_tokens), 0.0f),
          scratch_(static_cast<std::size_t>(2 * max_prompt_tokens), 0.0f),
          index_scratch_(static_cast<std::size_t>(max_prompt_tokens), 0) {}

    //! Whether the cache profiles online (the profiler was planned).
    [[nodiscard]] bool planned() const noexcept { return !observed_.empty(); }
    //! Starts slot `seq` over: nothing observed.
    void begin(index_t seq) noexcept {
        for (index_t layer = 0; layer < layers_; ++layer) observed_[stream(layer, seq)] = 0;
    }
    //! Where the prefill scores of (`layer`, `seq`, `head`) are kept, `prompt_tokens` of them.
    [[nodiscard]] std::span<float> prefill_scores(index_t layer, index_t seq, index_t head, index_t prompt_tokens) noexcept {
        return {scores_.data() + (stream(layer, seq) * static_cast<std::size_t>(kv_heads_) + static_cast<std::size_t>(head)) *
                                     static_cast<std::size_t>(max_prompt_),
                static_cast<std::size_t>(prompt_tokens)};
    }
    //! Records the top-`k` set of `scores` as observation `step` (0: prefill) of a head.
    void record(index_t layer, index_t seq, index_t head, index_t step, index_t k, std::span<const float> scores) {
        top_k_positions(scores, record_.record(layer, head, seq, step, k), index_scratch_);
    }
    //! Observes one decode step of (`layer`, `seq`), if it still observes: records the top-`k` set of each head's
    //! pooled attention row of `query` (`[query_head]`, `head_stride` floats apart) over the prompt keys
    //! `keys(head)` (`token_rows`). Returns whether `seq` completed with it.
    template <class Keys>
    bool observe_step(index_t layer, index_t seq, index_t prompt_tokens, index_t k, const model_shape& shape,
                      const float* query, index_t head_stride, Keys&& keys) {
        return observe(layer, seq, prompt_tokens, k, shape, {query, 1, shape.query_heads * head_stride, head_stride, prompt_tokens},
                       keys);
    }
    //! Observes the last queries of the observation window `window` of (`layer`, `seq`) (positioned:
    //! `window.first_position` set) as its first steps, as many as it still observes; returns whether `seq`
    //! completed with them.
    template <class Keys>
    bool observe_window(index_t layer, index_t seq, index_t prompt_tokens, index_t k, const model_shape& shape,
                        const query_rows& window, Keys&& keys) {
        const index_t count = std::min(window.count, steps_ - observed(layer, seq));
        bool completed = false;
        for (index_t i = window.count - count; i < window.count; ++i) {
            query_rows one = window;
            one.base = window.query(i, 0), one.count = 1, one.first_position = window.first_position + i;
            completed = observe(layer, seq, prompt_tokens, k, shape, one, keys);
        }
        return completed;
    }
    //! Decode steps (layer, seq) has observed.
    [[nodiscard]] index_t observed(index_t layer, index_t seq) const noexcept { return observed_[stream(layer, seq)]; }
    //! Whether (layer, seq) still observes.
    [[nodiscard]] bool observing(index_t layer, index_t seq) const noexcept { return observed(layer, seq) < steps_; }
    //! Counts one decode step of (layer, seq).
    void step_done(index_t layer, index_t seq) noexcept { ++observed_[stream(layer, seq)]; }
    //! Whether every layer of `seq` has observed every step.
    [[nodiscard]] bool complete(index_t seq) const noexcept {
        for (index_t layer = 0; layer < layers_; ++layer)
            if (observing(layer, seq)) return false;
        return true;
    }
    //! Decode steps each sequence observes.
    [[nodiscard]] index_t steps() const noexcept { return steps_; }

    //! The profile `classifier` finds in the observations of `seq` (complete), demoted (most stable full
    //! heads first) until kept fraction `ratio` can be met with the compressed heads' mean cap at least
    //! `min_compressed_share * r * T` (pivots demoted as `pivots` says): online profiling never fails mid-decode.
    template <HeadClassifier Classifier>
    [[nodiscard]] head_profile finish(const Classifier& classifier, index_t seq, double ratio,
                                      double min_compressed_share = 0.0,
                                      pivot_demotion pivots = pivot_demotion::to_anchors) const {
        profiling_record one(layers_, kv_heads_, 1, steps_, record_.top_k());
        for (index_t layer = 0; layer < layers_; ++layer)
            for (index_t head = 0; head < kv_heads_; ++head)
                for (index_t step = 0; step <= steps_; ++step) {
                    const std::span<const index_t> set = record_.set(layer, head, seq, step);
                    const std::span<index_t> out = one.record(layer, head, 0, step, static_cast<index_t>(set.size()));
                    std::copy(set.begin(), set.end(), out.begin());
                }
        head_profile profile = classifier.classify(one);
        demote_until_feasible(profile, ratio, min_compressed_share, pivots);
        return profile;
    }

private:
    //! One observation (the query of `one`, at its position) of every head of (`layer`, `seq`).
    template <class Keys>
    bool observe(index_t layer, index_t seq, index_t prompt_tokens, index_t k, const model_shape& shape,
                 const query_rows& one, Keys&& keys) {
        if (!observing(layer, seq)) return false;
        const std::span<float> ranking(ranking_.data(), static_cast<std::size_t>(prompt_tokens));
        for (index_t head = 0; head < kv_heads_; ++head) {
            pooled_attention_row(one, keys(head), head, shape.group_size(), shape.head_dim, ranking, scratch_);
            record(layer, seq, head, observed(layer, seq) + 1, k, ranking);
        }
        step_done(layer, seq);
        return complete(seq);
    }
    [[nodiscard]] std::size_t stream(index_t layer, index_t seq) const noexcept {
        return static_cast<std::size_t>(layer * sequences() + seq);
    }
    [[nodiscard]] index_t sequences() const noexcept { return record_.sequences(); }

    index_t layers_ = 0, kv_heads_ = 0, steps_ = 0, max_prompt_ = 0;
    profiling_record record_;
    std::vector<float> scores_;
    std::vector<index_t> observed_;
    std::vector<float> ranking_, scratch_;
    std::vector<index_t> index_scratch_;
};

}  // namespace v1
}  // namespace heterocache
