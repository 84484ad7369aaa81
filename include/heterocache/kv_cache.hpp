#pragma once
//! \file
//! `kv_cache`: the five policies composed into one KV cache (DESIGN.md section 3).

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "heterocache/algorithm/overlap.hpp"
#include "heterocache/algorithm/pooled_attention.hpp"
#include "heterocache/attention/csr_selection.hpp"
#include "heterocache/budget/drift_weighted_budget.hpp"
#include "heterocache/budget/uniform_budget.hpp"
#include "heterocache/cache_options.hpp"
#include "heterocache/classifier/overlap_star_classifier.hpp"
#include "heterocache/concepts/budget_policy.hpp"
#include "heterocache/concepts/drift_monitor.hpp"
#include "heterocache/concepts/head_classifier.hpp"
#include "heterocache/concepts/kv_layout.hpp"
#include "heterocache/concepts/retriever.hpp"
#include "heterocache/concepts/storage_tier.hpp"
#include "heterocache/layout/strided_kv_layout.hpp"
#include "heterocache/monitor/pivot_overlap_monitor.hpp"
#include "heterocache/monitor/static_monitor.hpp"
#include "heterocache/retriever/sync_retriever.hpp"
#include "heterocache/storage/host_storage.hpp"

namespace heterocache {
inline namespace v1 {

//! A head-wise compressed KV cache.
//!
//! Per decode step and layer the engine calls, in this order: `append` (the new token's K/V), `selection`
//! (the CSR selection to attend, after any refresh of this layer has landed), its attention kernel, then
//! `observe` (the decode query, for profiling and drift monitoring; a refresh it triggers takes effect from
//! the next step). `prefill` stores a prompt for one (layer, sequence).
//!
//! Without a profile the cache profiles online: every head keeps its full prompt until each
//! (layer, sequence) has observed `profiling_steps` decode queries; then heads are classified, budgets set
//! and the hot tier compacted (the only step that allocates). With a profile, the hot tier is planned at the
//! budgeted size and compression starts at prefill; a budget that cannot hold its full heads is a
//! `budget_error` at construction. Online, such a budget demotes full heads to anchors instead, most
//! stable first (`demote_until_feasible`), since decoding is already under way.
//!
//! Thread rules: one engine thread calls the cache; the retriever may use its own threads.
template <KvLayout Layout = strided_kv_layout, HeadClassifier Classifier = overlap_star_classifier,
          BudgetPolicy Budget = drift_weighted_budget, StorageTier Storage = host_storage,
          DriftMonitor Monitor = pivot_overlap_monitor, Retriever<Storage> Retriever = sync_retriever>
class kv_cache {
public:
    //! Plans every buffer. Throws `shape_error`, `invalid_argument_error` or `budget_error` on bad input.
    kv_cache(const model_shape& shape, const cache_options& options, std::optional<head_profile> profile = std::nullopt,
             Classifier classifier = {}, Budget budget = {}, Monitor monitor = {})
        : shape_(shape), options_(options), classifier_(std::move(classifier)), budget_(std::move(budget)),
          monitor_(std::move(monitor)), profile_(std::move(profile)) {
        shape_.validate();
        options_.validate();
        if (profile_) profile_->validate(shape_);
        else
            detail::require(options_.profiling_steps <= options_.max_new_tokens, "profiling_steps",
                            options_.profiling_steps, "[1, max_new_tokens] (online profiling observes that many decode steps)");
        plan();
    }
    kv_cache(const kv_cache&) = delete;
    kv_cache& operator=(const kv_cache&) = delete;

    //! Stores the prompt of `seq` for `layer`: tokens `[0, prompt_tokens)` of `kv`, scored by the observation
    //! window `window` (the last `window.count` prompt queries, `window.first_position` is set here).
    //! Prefilling layer 0 starts a new prompt for `seq`; other layers must give the same length.
    void prefill(index_t layer, index_t seq, const Layout& kv, index_t prompt_tokens, query_rows window) {
        check_stream(layer, seq);
        check_layout(kv);
        detail::require<shape_error>(prompt_tokens >= 1 && prompt_tokens <= options_.max_prompt_tokens, "prompt_tokens",
                                     prompt_tokens, "[1, max_prompt_tokens]");
        detail::require<shape_error>(window.count >= 1 && window.count <= prompt_tokens, "window.count", window.count,
                                     "[1, prompt_tokens]");
        detail::require<shape_error>(window.base != nullptr, "window.base", "null", "a pointer to the window queries");
        if (layer == 0) start_prompt(seq, prompt_tokens);
        detail::require<shape_error>(prompt_tokens == prompt_tokens_[seq], "prompt_tokens", prompt_tokens,
                                     "the length layer 0 of this sequence was prefilled with");
        retriever_.wait(layer);
        window.first_position = prompt_tokens - window.count;
        for (index_t head = 0; head < shape_.kv_heads; ++head) {
            const index_t row = seq * shape_.kv_heads + head;
            for (index_t t = 0; t < prompt_tokens; ++t)
                storage_.write_cold(layer, row, t, kv.key(layer, seq, head, t), kv.value(layer, seq, head, t));
            const std::span<float> scores = score_buffer(layer, seq, head, prompt_tokens);
            pooled_attention_row(window, cold_prompt_keys(layer, row), head, shape_.group_size(), shape_.head_dim, scores,
                                 scratch_);
            if (!profile_) record_top_k(layer, seq, head, 0, scores);  // profiles attention, not a monitor's rewrite
            monitor_.score_prompt(layer, seq, head, scores);
            decoded_[state_index(layer, seq, head)] = 0;
            if (!profile_) keep_whole_prompt(layer, seq, head);
        }
        if (profile_) select_layer(layer, seq);
        profiled_steps_[stream_index(layer, seq)] = 0;
        prefilled_[stream_index(layer, seq)] = true;
        dirty_[layer] = true;
    }

    //! Appends the decode token at `token` of `kv` (engine indexing) to every KV head of (`layer`, `seq`).
    //! It lands at position `prompt_tokens + decoded` in the cold tier and in the row's decode window.
    void append(index_t layer, index_t seq, const Layout& kv, index_t token) {
        check_prefilled(layer, seq);
        check_layout(kv);
        retriever_.wait(layer);
        for (index_t head = 0; head < shape_.kv_heads; ++head) {
            const index_t state = state_index(layer, seq, head);
            const index_t j = decoded_[state];
            detail::require<shape_error>(j < options_.max_new_tokens, "decode tokens", j + 1, "[1, max_new_tokens]");
            const index_t row = seq * shape_.kv_heads + head;
            const float* key = kv.key(layer, seq, head, token);
            const float* value = kv.value(layer, seq, head, token);
            const index_t position = prompt_tokens_[seq] + j;
            storage_.write_cold(layer, row, position, key, value);
            storage_.write_hot(layer, storage_.hot_row_base(layer, row) + prompt_capacity_[state] + decode_slot(j), key,
                               value, position);
            ++decoded_[state];
        }
        dirty_[layer] = true;
    }

    //! Sees the decode query of (`layer`, `seq`): `query` holds `query_heads` vectors `query_head_stride` floats
    //! apart. Feeds online profiling, then the drift monitor; a drift submits a refresh of the pivot's
    //! satellites to the retriever, effective from the next step. `scores` says whether the attention kernel
    //! of this step wrote the scores `selection(layer).captures` asked for (`decode_attention` does): then
    //! the monitor reads them instead of recomputing them from the cold keys. Saying `captured` when the
    //! kernel did not write them is an `invalid_argument_error` (the cache marks each capture as read).
    void observe(index_t layer, index_t seq, const float* query, index_t query_head_stride,
                 score_source scores = score_source::recompute) {
        check_prefilled(layer, seq);
        detail::require<shape_error>(query != nullptr, "query", "null", "a pointer to query_heads * head_dim floats");
        detail::require<shape_error>(query_head_stride >= shape_.head_dim, "query_head_stride", query_head_stride,
                                     "[head_dim, inf)");
        retriever_.wait(layer);
        if (!profile_) {
            profile_step(layer, seq, query, query_head_stride);
            return;
        }
        const index_t stream = stream_index(layer, seq);
        const std::span<refresh_row> rows(refresh_rows_.data() + stream * shape_.kv_heads,
                                          static_cast<std::size_t>(shape_.kv_heads));
        std::size_t used = 0;
        std::fill(refreshing_.begin(), refreshing_.end(), index_t{-1});
        const auto refresh_head = [&](index_t head, std::span<const float> ranking) {
            detail::require(head >= 0 && head < shape_.kv_heads && !keeps_full_kv(profile_->at(layer, head).role), "head",
                            head, "a compressed head (anchor or satellite) of the layer");
            detail::require<shape_error>(static_cast<index_t>(ranking.size()) == prompt_tokens_[seq], "ranking.size()",
                                         ranking.size(), "the prompt length");
            const index_t state = state_index(layer, seq, head);
            const std::span<index_t> positions(refresh_positions_.data() + refresh_offset_[state],
                                               static_cast<std::size_t>(prompt_count_[state]));
            top_k_positions(ranking, positions, index_scratch_);
            if (refreshing_[head] >= 0) return;  // asked twice in one step: the latest ranking wins, one row
            const index_t row = seq * shape_.kv_heads + head;
            refreshing_[head] = static_cast<index_t>(used);
            rows[used++] = {row, storage_.hot_row_base(layer, row), positions};
        };
        const auto prompt_keys = [&](index_t head) { return cold_prompt_keys(layer, seq * shape_.kv_heads + head); };
        const std::span<const score_capture> captured =
            scores == score_source::captured ? read_captures(layer, seq) : std::span<const score_capture>{};
        const monitor_context context{layer,        seq,   prompt_tokens_[seq], base_length_[seq], &*profile_,
                                      query,        query_head_stride,          prompt_keys,       captured};
        monitor_.observe(context, refresh_head);
        for (const score_capture& capture : captured)
            if (capture.scores != nullptr) *capture.scores = unwritten_score;  // read: the next step must rewrite it
        if (used > 0) retriever_.submit({layer, rows.first(used)});
    }

    //! The CSR selection `layer` attends now (rows `seq * kv_heads + head`). Waits for this layer's refresh.
    //! Its `captures` ask for the scores the drift monitor reads (a pivot's, over its prompt); empty when
    //! the monitor reads none.
    [[nodiscard]] basic_csr_selection<typename Storage::element_type> selection(index_t layer) {
        detail::require<shape_error>(layer >= 0 && layer < shape_.layers, "layer", layer, "[0, layers)");
        retriever_.wait(layer);
        if (dirty_[layer]) rebuild_selection(layer);
        const auto& indptr = indptr_[layer];
        return {rows_per_layer(),
                shape_.kv_heads,
                shape_.group_size(),
                shape_.head_dim,
                indptr,
                std::span<const index_t>(indices_[layer].data(), static_cast<std::size_t>(indptr.back())),
                storage_.hot_keys(layer),
                storage_.hot_values(layer),
                layer_captures(layer)};
    }

    //! The head profile in use; empty while online profiling is still observing.
    [[nodiscard]] const std::optional<head_profile>& profile() const noexcept { return profile_; }
    //! Hot prompt tokens of each head (`layer * kv_heads + head`) for `seq`; empty before a profile exists.
    [[nodiscard]] std::span<const index_t> prompt_caps(index_t seq) const {
        return caps_[static_cast<std::size_t>(seq)];
    }
    //! Tokens resident in the hot tier now, over every layer, sequence and head.
    [[nodiscard]] index_t resident_tokens() const {
        index_t total = 0;
        for (index_t layer = 0; layer < shape_.layers; ++layer)
            for (index_t seq = 0; seq < options_.sequences; ++seq)
                for (index_t head = 0; head < shape_.kv_heads; ++head) {
                    const index_t state = state_index(layer, seq, head);
                    total += prompt_count_[state] + std::min(decoded_[state], decode_capacity_);
                }
        return total;
    }
    //! Bytes of key and value resident in the hot tier now.
    [[nodiscard]] std::uint64_t resident_bytes() const {
        return static_cast<std::uint64_t>(resident_tokens()) * 2u * static_cast<std::uint64_t>(shape_.head_dim) *
               sizeof(typename Storage::element_type);
    }
    [[nodiscard]] const Storage& storage() const noexcept { return storage_; }
    [[nodiscard]] const model_shape& shape() const noexcept { return shape_; }
    [[nodiscard]] const cache_options& options() const noexcept { return options_; }
    //! Prompt length of `seq` (0 before its first prefill).
    [[nodiscard]] index_t prompt_tokens(index_t seq) const { return std::max<index_t>(prompt_tokens_[seq], 0); }

private:
    [[nodiscard]] index_t rows_per_layer() const noexcept { return options_.sequences * shape_.kv_heads; }
    [[nodiscard]] index_t stream_index(index_t layer, index_t seq) const noexcept { return layer * options_.sequences + seq; }
    [[nodiscard]] index_t state_index(index_t layer, index_t seq, index_t head) const noexcept {
        return stream_index(layer, seq) * shape_.kv_heads + head;
    }

    void plan() {
        const index_t t = options_.max_prompt_tokens;
        const index_t states = shape_.layers * rows_per_layer();
        decode_capacity_ = options_.decode_capacity();
        prompt_capacity_.assign(static_cast<std::size_t>(states), t);
        if (profile_) {
            std::vector<index_t> caps(profile_->heads.size());
            if constexpr (AdaptiveBudgetPolicy<Budget>) budget_.capacity_caps(*profile_, options_.budget_ratio, t, caps);
            else budget_.prompt_caps(*profile_, options_.budget_ratio, t, caps);
            for (index_t state = 0; state < states; ++state)
                prompt_capacity_[state] = caps[static_cast<std::size_t>(head_of_state(state))];
        } else {
            record_ = profiling_record(shape_.layers, shape_.kv_heads, options_.sequences, options_.profiling_steps,
                                       options_.profiling_top_k(t));
        }
        storage_plan plan{shape_, options_.sequences, t + options_.max_new_tokens, {}};
        plan.hot_capacity.resize(static_cast<std::size_t>(states));
        for (index_t state = 0; state < states; ++state) plan.hot_capacity[state] = prompt_capacity_[state] + decode_capacity_;
        storage_.plan(plan);
        prompt_count_.assign(static_cast<std::size_t>(states), 0);
        decoded_.assign(static_cast<std::size_t>(states), 0);
        online_ = !profile_;  // online profiling keeps every row's prefill scores until it classifies
        scores_.assign(static_cast<std::size_t>((online_ ? states : shape_.kv_heads) * t), 0.0f);
        head_scores_.assign(static_cast<std::size_t>(shape_.kv_heads), {});
        scratch_.assign(static_cast<std::size_t>(2 * t), 0.0f);
        ranking_.assign(static_cast<std::size_t>(t), 0.0f);
        index_scratch_.assign(static_cast<std::size_t>(t), 0);
        top_k_.assign(static_cast<std::size_t>(t), 0);
        prompt_tokens_.assign(static_cast<std::size_t>(options_.sequences), -1);
        caps_.assign(static_cast<std::size_t>(options_.sequences), {});
        base_length_.assign(static_cast<std::size_t>(options_.sequences), 0);
        profiled_steps_.assign(static_cast<std::size_t>(shape_.layers * options_.sequences), 0);
        prefilled_.assign(static_cast<std::size_t>(shape_.layers * options_.sequences), false);
        indptr_.assign(static_cast<std::size_t>(shape_.layers), std::vector<index_t>(static_cast<std::size_t>(rows_per_layer() + 1), 0));
        indices_.resize(static_cast<std::size_t>(shape_.layers));
        for (index_t layer = 0; layer < shape_.layers; ++layer)
            indices_[layer].assign(static_cast<std::size_t>(storage_hot_slots(layer)), 0);
        dirty_.assign(static_cast<std::size_t>(shape_.layers), true);
        monitor_.plan({shape_, options_.sequences, options_.max_prompt_tokens});  // sees every prefill
        if (profile_) plan_for_profile();
    }

    [[nodiscard]] index_t head_of_state(index_t state) const noexcept {
        const index_t layer = state / rows_per_layer();
        return layer * shape_.kv_heads + state % shape_.kv_heads;
    }
    [[nodiscard]] index_t storage_hot_slots(index_t layer) const {
        index_t slots = 0;
        for (index_t row = 0; row < rows_per_layer(); ++row) slots += prompt_capacity_[layer * rows_per_layer() + row] + decode_capacity_;
        return slots;
    }

    //! Plans what depends on the roles: refresh buffers and the retriever.
    void plan_for_profile() {
        refresh_rows_.assign(static_cast<std::size_t>(shape_.layers * rows_per_layer()), refresh_row{});
        refresh_offset_.assign(prompt_capacity_.size(), 0);
        index_t offset = 0, largest_request = 0;
        for (index_t stream = 0; stream < shape_.layers * options_.sequences; ++stream) {
            index_t request = 0;
            for (index_t head = 0; head < shape_.kv_heads; ++head) {
                const index_t state = stream * shape_.kv_heads + head;
                refresh_offset_[state] = offset;
                if (keeps_full_kv(profile_->heads[static_cast<std::size_t>(head_of_state(state))].role)) continue;
                offset += prompt_capacity_[state];
                request += prompt_capacity_[state];
            }
            largest_request = std::max(largest_request, request);
        }
        refresh_positions_.assign(static_cast<std::size_t>(offset), 0);
        refreshing_.assign(static_cast<std::size_t>(shape_.kv_heads), -1);
        retriever_.bind(storage_, {shape_.layers, shape_.head_dim, largest_request, shape_.layers * options_.sequences});
        plan_captures();
    }

    //! Plans a score buffer for every head whose scores the monitor reads (pivots, for the default one),
    //! each marked unwritten.
    void plan_captures() {
        const index_t states = shape_.layers * rows_per_layer();
        capture_offset_.assign(static_cast<std::size_t>(states), -1);
        index_t floats = 0;
        for (index_t state = 0; state < states; ++state) {
            if (!monitor_wants_scores(monitor_, profile_->heads[static_cast<std::size_t>(head_of_state(state))].role)) continue;
            capture_offset_[state] = floats;
            floats += shape_.group_size() * options_.max_prompt_tokens;
        }
        capture_scores_.assign(static_cast<std::size_t>(floats), 0.0f);
        for (index_t state = 0; state < states; ++state)
            if (capture_offset_[state] >= 0) capture_scores_[static_cast<std::size_t>(capture_offset_[state])] = unwritten_score;
        captures_.assign(static_cast<std::size_t>(states), score_capture{});
    }
    //! The capture requests of `layer`'s rows: each wanted head's buffer, over its whole prompt (the first
    //! `prompt_tokens` slots of a full head's row hold positions 0, 1, ... in order).
    [[nodiscard]] std::span<const score_capture> layer_captures(index_t layer) {
        if (capture_scores_.empty()) return {};
        const std::span<score_capture> rows(captures_.data() + layer * rows_per_layer(),
                                            static_cast<std::size_t>(rows_per_layer()));
        for (index_t row = 0; row < rows_per_layer(); ++row) {
            const index_t state = layer * rows_per_layer() + row;
            const index_t seq = row / shape_.kv_heads;
            const bool whole_prompt = prompt_tokens_[seq] > 0 && prompt_count_[state] == prompt_tokens_[seq];
            rows[row] = capture_offset_[state] >= 0 && whole_prompt
                            ? score_capture{capture_scores_.data() + capture_offset_[state], prompt_tokens_[seq]}
                            : score_capture{};
        }
        return rows;
    }
    //! The captures of (layer, seq), checked to have been written by this step's kernel.
    [[nodiscard]] std::span<const score_capture> read_captures(index_t layer, index_t seq) {
        if (capture_scores_.empty()) return {};
        const std::span<const score_capture> heads(captures_.data() + stream_index(layer, seq) * shape_.kv_heads,
                                                   static_cast<std::size_t>(shape_.kv_heads));
        for (index_t head = 0; head < shape_.kv_heads; ++head) {
            const score_capture& capture = heads[static_cast<std::size_t>(head)];
            if (capture.scores != nullptr && std::isnan(*capture.scores))
                throw invalid_argument_error("scores", "captured",
                                             "recompute, unless the attention kernel of this step wrote "
                                             "selection(layer).captures (head " + std::to_string(head) + " has none)");
        }
        return heads;
    }

    void start_prompt(index_t seq, index_t prompt_tokens) {
        prompt_tokens_[seq] = prompt_tokens;
        if (profile_) set_budget(seq);
    }
    void set_budget(index_t seq) {
        auto& caps = caps_[static_cast<std::size_t>(seq)];
        caps.resize(profile_->heads.size());
        budget_.prompt_caps(*profile_, options_.budget_ratio, prompt_tokens_[seq], caps);
        base_length_[seq] = budget_.base_length(*profile_, options_.budget_ratio, prompt_tokens_[seq]);
    }

    [[nodiscard]] key_rows cold_prompt_keys(index_t layer, index_t row) const noexcept {
        return {storage_.cold_keys(layer, row), shape_.head_dim};
    }
    [[nodiscard]] std::span<float> score_buffer(index_t layer, index_t seq, index_t head, index_t prompt_tokens) {
        const index_t row = online_ ? state_index(layer, seq, head) : head;
        return {scores_.data() + row * options_.max_prompt_tokens, static_cast<std::size_t>(prompt_tokens)};
    }

    //! Fills the hot prompt region of a row with the cold tokens at `positions` (ascending).
    void fill_prompt(index_t layer, index_t seq, index_t head, std::span<const index_t> positions) {
        const index_t row = seq * shape_.kv_heads + head;
        const index_t base = storage_.hot_row_base(layer, row);
        const float* keys = storage_.cold_keys(layer, row);
        const float* values = storage_.cold_values(layer, row);
        for (std::size_t k = 0; k < positions.size(); ++k) {
            const index_t p = positions[k];
            storage_.write_hot(layer, base + static_cast<index_t>(k), keys + p * shape_.head_dim,
                               values + p * shape_.head_dim, p);
        }
        prompt_count_[state_index(layer, seq, head)] = static_cast<index_t>(positions.size());
    }
    void keep_whole_prompt(index_t layer, index_t seq, index_t head) {
        const std::span<index_t> all(top_k_.data(), static_cast<std::size_t>(prompt_tokens_[seq]));
        std::iota(all.begin(), all.end(), index_t{0});
        fill_prompt(layer, seq, head, all);
    }
    //! Chooses the hot prompt tokens of every head of (layer, seq) from their prefill scores, after an
    //! adaptive budget has moved tokens between the heads.
    void select_layer(index_t layer, index_t seq) {
        const index_t t = prompt_tokens_[seq];
        if constexpr (AdaptiveBudgetPolicy<Budget>) {
            for (index_t head = 0; head < shape_.kv_heads; ++head)
                head_scores_[static_cast<std::size_t>(head)] = score_buffer(layer, seq, head, t);
            const std::span<index_t> layer_caps(caps_[static_cast<std::size_t>(seq)].data() + layer * shape_.kv_heads,
                                                static_cast<std::size_t>(shape_.kv_heads));
            budget_.share_layer(*profile_, options_.budget_ratio, layer, head_scores_, layer_caps);
        }
        for (index_t head = 0; head < shape_.kv_heads; ++head) select_prompt(layer, seq, head, score_buffer(layer, seq, head, t));
    }

    //! Chooses a head's hot prompt tokens by its role (DESIGN.md section 2, "Prefill").
    void select_prompt(index_t layer, index_t seq, index_t head, std::span<const float> scores) {
        const head_role role = profile_->at(layer, head).role;
        if (keeps_full_kv(role)) {
            keep_whole_prompt(layer, seq, head);
            if (role == head_role::pivot) {
                const std::span<index_t> reference(top_k_.data(), static_cast<std::size_t>(base_length_[seq]));
                top_k_positions(scores, reference, index_scratch_);
                monitor_.set_reference(layer, seq, head, reference);
            }
            return;
        }
        const index_t cap = caps_[static_cast<std::size_t>(seq)][static_cast<std::size_t>(layer * shape_.kv_heads + head)];
        detail::require<budget_error>(cap <= prompt_capacity_[state_index(layer, seq, head)], "cap", cap,
                                      "[1, the cap planned for max_prompt_tokens]");
        const std::span<index_t> chosen(top_k_.data(), static_cast<std::size_t>(cap));
        top_k_positions(scores, chosen, index_scratch_);
        fill_prompt(layer, seq, head, chosen);
    }

    void record_top_k(index_t layer, index_t seq, index_t head, index_t step, std::span<const float> scores) {
        const index_t k = options_.profiling_top_k(prompt_tokens_[seq]);
        top_k_positions(scores, record_.record(layer, head, seq, step, k), index_scratch_);
    }

    //! Online profiling: records each head's top-k set for this decode query; classifies when all are done.
    void profile_step(index_t layer, index_t seq, const float* query, index_t query_head_stride) {
        index_t& steps = profiled_steps_[stream_index(layer, seq)];
        if (steps >= options_.profiling_steps) return;
        const index_t t = prompt_tokens_[seq];
        const query_rows rows{query, 1, shape_.query_heads * query_head_stride, query_head_stride, t};
        const std::span<float> ranking(ranking_.data(), static_cast<std::size_t>(t));
        for (index_t head = 0; head < shape_.kv_heads; ++head) {
            pooled_attention_row(rows, cold_prompt_keys(layer, seq * shape_.kv_heads + head), head, shape_.group_size(),
                                 shape_.head_dim, ranking, scratch_);
            record_top_k(layer, seq, head, steps + 1, ranking);
        }
        ++steps;
        const bool done = std::all_of(profiled_steps_.begin(), profiled_steps_.end(),
                                      [&](index_t s) { return s >= options_.profiling_steps; });
        if (done) finish_profiling();
    }

    //! Classifies heads, sets budgets and compacts every row to its selection (DESIGN.md section 2).
    void finish_profiling() {
        profile_ = classifier_.classify(record_);
        profile_->validate(shape_);
        // Online profiling cannot fail mid-decode: a budget too small for the full heads demotes them.
        index_t shortest = options_.max_prompt_tokens;
        for (const index_t t : prompt_tokens_)
            if (t > 0) shortest = std::min(shortest, t);
        demote_until_feasible(*profile_, options_.budget_ratio, shortest);
        plan_for_profile();
        for (index_t seq = 0; seq < options_.sequences; ++seq) {
            if (prompt_tokens_[seq] < 0) continue;
            set_budget(seq);
            for (index_t layer = 0; layer < shape_.layers; ++layer) select_layer(layer, seq);
        }
        std::fill(dirty_.begin(), dirty_.end(), true);
    }

    //! Slot (within the decode region) of the `j`-th decode token: the first `decode_sink` stay, the rest
    //! cycle through a ring when `decode_window` is set.
    [[nodiscard]] index_t decode_slot(index_t j) const noexcept {
        if (options_.decode_window == 0 || j < decode_capacity_) return j;
        const index_t sink = options_.decode_sink;
        return sink + (j - sink) % (decode_capacity_ - sink);
    }

    void rebuild_selection(index_t layer) {
        auto& indptr = indptr_[layer];
        auto& indices = indices_[layer];
        index_t n = 0;
        for (index_t row = 0; row < rows_per_layer(); ++row) {
            const index_t state = layer * rows_per_layer() + row;
            const index_t base = storage_.hot_row_base(layer, row);
            indptr[row] = n;
            for (index_t k = 0; k < prompt_count_[state]; ++k) indices[n++] = base + k;
            const index_t decode_base = base + prompt_capacity_[state];
            const index_t decoded = decoded_[state];
            const index_t kept = std::min(decoded, decode_capacity_);
            const index_t sink = decoded > decode_capacity_ ? options_.decode_sink : kept;
            for (index_t j = 0; j < sink; ++j) indices[n++] = decode_base + j;
            for (index_t j = decoded - (kept - sink); j < decoded; ++j) indices[n++] = decode_base + decode_slot(j);
        }
        indptr[rows_per_layer()] = n;
        dirty_[layer] = false;
    }

    void check_stream(index_t layer, index_t seq) const {
        detail::require<shape_error>(layer >= 0 && layer < shape_.layers, "layer", layer, "[0, layers)");
        detail::require<shape_error>(seq >= 0 && seq < options_.sequences, "seq", seq, "[0, sequences)");
    }
    void check_prefilled(index_t layer, index_t seq) const {
        check_stream(layer, seq);
        detail::require<shape_error>(prefilled_[stream_index(layer, seq)], "seq", seq,
                                     "a sequence whose prompt was prefilled for this layer");
    }
    void check_layout(const Layout& kv) const {
        detail::require<shape_error>(kv.kv_heads() == shape_.kv_heads, "layout.kv_heads()", kv.kv_heads(),
                                     "the model's kv_heads");
        detail::require<shape_error>(kv.head_dim() == shape_.head_dim, "layout.head_dim()", kv.head_dim(),
                                     "the model's head_dim");
    }

    model_shape shape_;
    cache_options options_;
    Classifier classifier_;
    Budget budget_;
    Storage storage_;
    Monitor monitor_;
    Retriever retriever_;
    std::optional<head_profile> profile_;
    profiling_record record_;

    bool online_ = false;
    index_t decode_capacity_ = 0;
    std::vector<index_t> prompt_tokens_, base_length_, profiled_steps_;
    std::vector<std::vector<index_t>> caps_;
    std::vector<bool> prefilled_;
    std::vector<index_t> prompt_capacity_, prompt_count_, decoded_;  // per (layer, seq, head)
    std::vector<float> scores_, scratch_, ranking_;
    std::vector<std::span<const float>> head_scores_;
    std::vector<index_t> index_scratch_, top_k_;
    std::vector<refresh_row> refresh_rows_;
    std::vector<index_t> refresh_offset_, refresh_positions_, refreshing_;
    std::vector<std::vector<index_t>> indptr_, indices_;
    std::vector<bool> dirty_;
    //! Marks a capture buffer as not written since the monitor last read it.
    static constexpr float unwritten_score = std::numeric_limits<float>::quiet_NaN();
    std::vector<index_t> capture_offset_;  // per (layer, seq, head): into capture_scores_, or -1
    std::vector<float> capture_scores_;
    std::vector<score_capture> captures_;  // per (layer, seq, head), refreshed by layer_captures
};

//! The full cache: every head keeps every token (the ceiling every policy is measured against). Construct it
//! with `uniform_profile(shape, head_role::volatile_)` so that it never profiles.
template <KvLayout Layout = strided_kv_layout, StorageTier Storage = host_storage>
using full_kv_cache = kv_cache<Layout, fixed_role_classifier, uniform_budget, Storage, static_monitor, sync_retriever>;

}  // namespace v1
}  // namespace heterocache
