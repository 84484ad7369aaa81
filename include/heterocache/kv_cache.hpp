#pragma once
//! \file
//! `kv_cache`: the five policies composed into one KV cache (DESIGN.md sections 3 and 3.1).

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <new>
#include <stdexcept>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "heterocache/algorithm/group_attention.hpp"
#include "heterocache/algorithm/overlap.hpp"
#include "heterocache/algorithm/pooled_attention.hpp"
#include "heterocache/budget/drift_weighted_budget.hpp"
#include "heterocache/budget/uniform_budget.hpp"
#include "heterocache/cache/cache_plan.hpp"
#include "heterocache/cache/online_profiler.hpp"
#include "heterocache/cache/prompt_selector.hpp"
#include "heterocache/cache/refresh_plan.hpp"
#include "heterocache/cache/row_table.hpp"
#include "heterocache/cache/score_captures.hpp"
#include "heterocache/cache/sequence_slots.hpp"
#include "heterocache/cache/step_arguments.hpp"
#include "heterocache/cache/sequence_budgets.hpp"
#include "heterocache/cache_options.hpp"
#include "heterocache/classifier/overlap_star_classifier.hpp"
#include "heterocache/concepts/budget_policy.hpp"
#include "heterocache/concepts/drift_monitor.hpp"
#include "heterocache/concepts/head_classifier.hpp"
#include "heterocache/concepts/kv_tensor.hpp"
#include "heterocache/concepts/retriever.hpp"
#include "heterocache/concepts/storage_tier.hpp"
#include "heterocache/monitor/pivot_overlap_monitor.hpp"
#include "heterocache/monitor/static_monitor.hpp"
#include "heterocache/retriever/sync_retriever.hpp"
#include "heterocache/storage/host_storage.hpp"
#include "heterocache/tensor/kv_tensor.hpp"

namespace heterocache {
inline namespace v1 {

//! The storage a cache over `Tensor` gets by default: host tiers, the hot tier of the tensor's element type.
template <KvTensor Tensor>
using default_storage = basic_host_storage<typename Tensor::element_type, Tensor>;

//! A head-wise compressed KV cache over the engine's K/V tensors `Tensor` (DESIGN.md section 3.1, "Step API").
//!
//! A sequence slot's life: `begin_sequence(seq, prompt_tokens)`, `prefill(layer, seq, kv, window)` for every
//! layer (any order), decode steps, `end_sequence(seq)`; slots are reused (continuous batching) and idle slots
//! cost nothing. A decode step is two batch-wide calls per layer: `begin_layer(layer, kv, new_tokens)` appends
//! the new token of every stepping slot (`new_tokens[seq]`: where the engine wrote its K/V, -1 for a slot that
//! does not step), waits for this layer's refresh and returns the paged selection to attend (rows of slots
//! that do not step are empty); the engine's kernel attends it; `end_layer(layer, queries, scores)` profiles and
//! monitors drift for every stepping slot, and submits the refreshes it decides (effective from the next step).
//! An engine that has the step's queries before attention passes them to `begin_layer` too: a monitor that
//! ranks with the current query (Quest) then chooses this step's tokens with them.
//!
//! Without a profile the cache profiles online: every head keeps its full prompt until the first sequence
//! has observed `profiling_steps` queries on every layer (by default the last queries of each layer's
//! observation window, so heads are classified once the prompt is prefilled and compression starts at the
//! first decode step; `cache_options::profile_from_window`) (idle slots and sequences that end early hold
//! nothing up); then heads are classified from that sequence, full heads demoted until the budget can be met,
//! and every live sequence compacted to its selection (the only step that allocates). With a profile,
//! compression starts at prefill; a budget that cannot be met (`budget_feasible`) is a `budget_error` at
//! construction. Either way a prompt too short to give every compressed head a token gives each one.
//!
//! Every call checks its arguments before it changes anything, so a call that throws leaves the cache as it
//! was. Nothing allocates after construction but the end of online profiling. Thread rules: one engine
//! thread calls the cache; the retriever may use its own threads, the queue its pool.
template <KvTensor Tensor = strided_kv_tensor<float>, class Classifier = overlap_star_classifier,
          class Budget = drift_weighted_budget, class Storage = default_storage<Tensor>,
          class Monitor = pivot_overlap_monitor, class RetrieverPolicy = sync_retriever>
class kv_cache {
    static_assert(HeadClassifier<Classifier>, "kv_cache: Classifier does not model HeadClassifier (concepts/head_classifier.hpp)");
    static_assert(BudgetPolicy<Budget>, "kv_cache: Budget does not model BudgetPolicy (concepts/budget_policy.hpp)");
    static_assert(StorageTier<Storage>, "kv_cache: Storage does not model StorageTier (concepts/storage_tier.hpp)");
    static_assert(std::same_as<typename Storage::cold_tensor, Tensor>,
                  "kv_cache: Storage::cold_tensor must be the engine's Tensor (the tier reads the prompt from it)");
    static_assert(monitor_traits<Monitor>::declared,
                  "kv_cache: Monitor is not a declared drift monitor: specialize heterocache::monitor_traits<Monitor> "
                  "(concepts/drift_monitor.hpp)");
    static_assert(DriftMonitor<Monitor>, "kv_cache: Monitor lacks a member its monitor_traits declare (concepts/drift_monitor.hpp)");
    static_assert(Retriever<RetrieverPolicy, Storage>, "kv_cache: RetrieverPolicy does not model Retriever (concepts/retriever.hpp)");
    using traits = monitor_traits<Monitor>;

public:
    using tensor_type = Tensor;
    using storage_type = Storage;
    using queue_type = typename Storage::queue_type;
    using selection_type = basic_paged_selection<typename Storage::element_type, typename Storage::memory_space>;

    //! Plans every buffer and binds the storage tier. Throws `shape_error`, `invalid_argument_error` or
    //! `budget_error` on bad input, `allocation_error` when the memory is not there.
    kv_cache(const model_shape& shape, const cache_options& options, std::optional<head_profile> profile = std::nullopt,
             Classifier classifier = {}, Budget budget = {}, Monitor monitor = {}, storage_binding<Tensor> binding = {})
        : shape_(shape), options_(options), classifier_(std::move(classifier)), budget_(std::move(budget)),
          monitor_(std::move(monitor)), profile_(std::move(profile)) {
        const auto plan = cache_plan<Budget>::make(shape_, options_, profile_, budget_, binding.cold_alias.has_value());
        try {
            plan_cache(plan);
            storage_.bind(plan.storage, binding.memory, binding.cold_alias ? &*binding.cold_alias : nullptr);
        } catch (const std::bad_alloc&) {
            throw_allocation_error(plan);
        } catch (const std::length_error&) {
            throw_allocation_error(plan);
        }
    }
    kv_cache(const kv_cache&) = delete;
    kv_cache& operator=(const kv_cache&) = delete;

    //! Bytes the storage tier of a cache of these arguments needs (`storage_binding::memory`).
    [[nodiscard]] static storage_bytes bytes_required(const model_shape& shape, const cache_options& options,
                                                      const std::optional<head_profile>& profile = std::nullopt,
                                                      const Budget& budget = {}, bool cold_aliased = false) {
        return Storage{}.bytes_required(cache_plan<Budget>::make(shape, options, profile, budget, cold_aliased).storage);
    }

    //! Starts a sequence of `prompt_tokens` tokens in the idle slot `seq`: sets its budgets and gives its rows
    //! their hot pages. Throws `shape_error` for a bad slot, a slot in use or a bad length.
    void begin_sequence(index_t seq, index_t prompt_tokens) {
        slots_.require_idle(seq);
        detail::require<shape_error>(prompt_tokens >= 1 && prompt_tokens <= options_.max_prompt_tokens, "prompt_tokens",
                                     prompt_tokens, "[1, max_prompt_tokens]");
        auto sizes = options_;
        sizes.max_prompt_tokens = prompt_tokens;
        const std::vector<index_t> capacity = cache_plan<Budget>::prompt_capacity(shape_, sizes, profile_, budget_);
        rows_.allocate(seq, [&](index_t layer, index_t head) {
            return capacity[static_cast<std::size_t>(layer * shape_.kv_heads + head)] + options_.decode_capacity();
        });
        if (profile_) budgets_.set(budget_, *profile_, options_.budget_ratio, seq, prompt_tokens);
        else profiler_.begin(seq);
        slots_.begin(seq, prompt_tokens);
    }

    //! Ends the sequence in slot `seq` (waiting for its refreshes) and frees its pages. Throws `shape_error`
    //! for an idle slot.
    void end_sequence(index_t seq) {
        slots_.require_live(seq);
        for (index_t layer = 0; layer < shape_.layers; ++layer) retriever_.wait(layer);
        rows_.release(seq);
        budgets_.clear(seq);
        slots_.end(seq);
    }

    //! Stores the prompt of `seq` for `layer` (tokens `[0, prompt_tokens)` of `kv`) and chooses each head's hot
    //! tokens by its role, scored by the observation window `window` (the last `window.count` prompt queries;
    //! `window.first_position` is set here). Each layer once per sequence, in any order. On a queue with a pool
    //! the KV heads are scored on its threads (the same scores as inline) and the prompt stored in bulk there.
    void prefill(index_t layer, index_t seq, const Tensor& kv, query_rows window, queue_type q = {}) {
        slots_.require_layer(layer);
        slots_.require_live(seq);
        detail::require<shape_error>(!slots_.prefilled(layer, seq), "layer", layer,
                                     "a layer not prefilled yet for this sequence (begin_sequence starts a new one)");
        check_tensor(kv);
        const index_t t = slots_.prompt_tokens(seq);
        detail::require<shape_error>(window.count >= 1 && window.count <= t, "window.count", window.count, "[1, prompt_tokens]");
        detail::require<shape_error>(window.base != nullptr, "window.base", "null", "a pointer to the window queries");
        detail::require<shape_error>(window.head_stride >= shape_.head_dim, "window.head_stride", window.head_stride,
                                     "[head_dim, inf)");
        detail::require<shape_error>(shape_.head_dim <= max_scored_head_dim, "head_dim", shape_.head_dim,
                                     "[1, 256] (the observation window's scores)");
        retriever_.wait(layer);
        window.first_position = t - window.count;
        // The heads scored apart, over the queue's threads (each head alone, with its own scratch: the same
        // numbers whatever the threads).
        q.for_each(shape_.kv_heads, [&](index_t head) {
            score_window(window, kv.key_rows(layer, seq, head), head, selection_scoring(), prefill_scores(layer, seq, head, t),
                         head_scratch(head));
            if (separate_span_scores())
                score_window(window, kv.key_rows(layer, seq, head), head, *options_.span_scoring,
                             carried_share_scores(layer, seq, head, t), head_scratch(head));
        });
        for (index_t head = 0; head < shape_.kv_heads; ++head) {
            const std::span<float> scores = prefill_scores(layer, seq, head, t);
            if (!profile_) profiler_.record(layer, seq, head, 0, options_.profiling_top_k(t), scores);
            if constexpr (traits::scores_prompt) monitor_.score_prompt(layer, seq, head, scores);
        }
        const std::span<refresh_row> rows = choose_prompts(layer, seq, 0);
        storage_.store_prompt(layer, seq, kv, t, rows, q);
        for (const refresh_row& r : rows) rows_.set_prompt(layer, r.row, static_cast<index_t>(r.positions.size()));
        slots_.mark_prefilled(layer, seq);
        if (!profile_ && options_.profile_from_window &&
            profiler_.observe_window(layer, seq, t, options_.profiling_top_k(t), shape_, window,
                                     [&](index_t head) { return kv.key_rows(layer, seq, head); }))
            finish_profiling(seq, q);
    }

    //! Appends the new token of every slot with `new_tokens[seq] >= 0` (where the engine wrote its K/V in `kv`)
    //! to every KV head of `layer`, after this layer's pending refresh, and returns the selection to attend:
    //! rows of the slots with `new_tokens[seq] == -1` are empty. Call `end_layer(layer, ...)` before the next
    //! `begin_layer(layer, ...)`. O(rows) host work (plus the page ids of rows that enter a new page).
    [[nodiscard]] selection_type begin_layer(index_t layer, const Tensor& kv, std::span<const index_t> new_tokens,
                                             queue_type q = {}) {
        return begin_step(layer, kv, new_tokens, nullptr, q);
    }
    //! `begin_layer` given this step's decode queries as well (the same ones `end_layer` then takes). A monitor
    //! that ranks with the current query (`monitor_traits::ranks_current_query`: Quest) observes them here,
    //! and its refreshes land before the selection is returned, so this step attends the tokens this step's
    //! query chose (without them, it ranks at `end_layer` and its choice takes effect one step later); other
    //! monitors see the queries at `end_layer` as always. Throws `shape_error` for bad queries.
    [[nodiscard]] selection_type begin_layer(index_t layer, const Tensor& kv, std::span<const index_t> new_tokens,
                                             decode_queries queries, queue_type q = {}) {
        check_queries(queries);
        return begin_step(layer, kv, new_tokens, &queries, q);
    }

    //! Sees this step's decode queries of `layer` (every stepping slot's): online profiling, then the drift
    //! monitor, whose refreshes are submitted to the retriever (effective from the next step). `scores` says
    //! whether the attention kernel wrote the scores the selection's `captures` asked for (`decode_attention`
    //! does): then the monitor reads them instead of recomputing them from the cold keys. Saying `captured`
    //! when the kernel did not stamp them is an `invalid_argument_error`.
    void end_layer(index_t layer, decode_queries queries, score_source scores = score_source::recompute, queue_type q = {}) {
        slots_.require_step(layer, true);
        check_queries(queries);
        if (scores == score_source::captured) check_captured(layer);
        slots_.end_step(layer);
        const bool current_observed = current_observed_[static_cast<std::size_t>(layer)];
        current_observed_[static_cast<std::size_t>(layer)] = false;
        refreshes_.start(layer);
        index_t completed = -1;
        for (index_t seq = 0; seq < options_.sequences; ++seq) {
            if (!slots_.stepping(layer, seq)) continue;
            const float* query = queries.base + seq * queries.sequence_stride;
            if (profile_) {
                observe(layer, seq, query, queries.head_stride, scores,
                        current_observed ? observation::after_current : observation::after);
                continue;
            }
            const index_t t = slots_.prompt_tokens(seq);
            const bool done = profiler_.observe_step(layer, seq, t, options_.profiling_top_k(t), shape_, query, queries.head_stride,
                                                     [&](index_t head) { return storage_.cold_keys(layer, row(seq, head)); });
            if (done && completed < 0) completed = seq;
        }
        if (const refresh_request request = refreshes_.request(layer); !request.rows.empty()) retriever_.submit(request);
        if (completed >= 0) finish_profiling(completed, q);
    }

    //! Waits until the refreshes `end_layer(layer, ...)` submitted have landed in the hot tier (`begin_layer` does it
    //! itself): call it before reading a layer's hot tier between its `end_layer` and its next `begin_layer`.
    void wait_refreshes(index_t layer) {
        slots_.require_layer(layer);
        retriever_.wait(layer);
    }

    //! The head profile in use; empty while online profiling is still observing.
    [[nodiscard]] const std::optional<head_profile>& profile() const noexcept { return profile_; }
    //! Hot prompt tokens of each head (`layer * kv_heads + head`) for the sequence in `seq`; empty before a
    //! profile exists. Throws `shape_error` for a bad slot.
    [[nodiscard]] std::span<const index_t> prompt_caps(index_t seq) const {
        slots_.require_slot(seq);
        return profile_ && slots_.live(seq) ? budgets_.caps(seq) : std::span<const index_t>{};
    }
    //! Prompt length of the sequence in `seq` (0 for an idle slot). Throws `shape_error` for a bad slot.
    [[nodiscard]] index_t prompt_tokens(index_t seq) const {
        slots_.require_slot(seq);
        return slots_.prompt_tokens(seq);
    }
    //! Tokens resident in the hot tier now, over every layer, slot and head.
    [[nodiscard]] index_t resident_tokens() const noexcept {
        index_t total = 0;
        for (index_t layer = 0; layer < shape_.layers; ++layer)
            for (index_t r = 0; r < rows_.rows_per_layer(); ++r) total += rows_.length(layer, r);
        return total;
    }
    //! Bytes of key and value resident in the hot tier now.
    [[nodiscard]] std::uint64_t resident_bytes() const noexcept {
        return static_cast<std::uint64_t>(resident_tokens()) * 2u * static_cast<std::uint64_t>(shape_.head_dim) *
               sizeof(typename Storage::element_type);
    }
    //! The rows and pages (inspection).
    [[nodiscard]] const row_table& rows() const noexcept { return rows_; }
    [[nodiscard]] const Storage& storage() const noexcept { return storage_; }
    [[nodiscard]] const Monitor& monitor() const noexcept { return monitor_; }
    [[nodiscard]] const model_shape& shape() const noexcept { return shape_; }
    [[nodiscard]] const cache_options& options() const noexcept { return options_; }

private:
    //! `begin_layer`, with this step's decode queries or null (DESIGN.md section 3.1, "Step API").
    selection_type begin_step(index_t layer, const Tensor& kv, std::span<const index_t> new_tokens,
                              const decode_queries* queries, queue_type q) {
        slots_.require_step(layer, false);
        detail::require<shape_error>(static_cast<index_t>(new_tokens.size()) == options_.sequences, "new_tokens.size()",
                                     new_tokens.size(), "sequences (one entry per slot, -1 for a slot that does not step)");
        check_tensor(kv);
        for (index_t seq = 0; seq < options_.sequences; ++seq) {
            if (new_tokens[seq] == -1) continue;
            detail::require<shape_error>(new_tokens[seq] >= 0, "new_tokens[seq]", new_tokens[seq], "-1 or a token of kv");
            slots_.require_decoding(seq);
            detail::require<shape_error>(rows_.decoded(layer, row(seq, 0)) < options_.max_new_tokens, "decode tokens",
                                         rows_.decoded(layer, row(seq, 0)) + 1, "[1, max_new_tokens]");
        }
        retriever_.wait(layer);
        const std::uint64_t step = slots_.begin_step(layer, [&](index_t seq) { return new_tokens[seq] >= 0; });
        std::size_t n = 0;
        for (index_t seq = 0; seq < options_.sequences; ++seq)
            if (slots_.stepping(layer, seq)) {
                rows_.append_entries(layer, seq, new_tokens[seq], slots_.prompt_tokens(seq), entries_.data() + n);
                n += static_cast<std::size_t>(shape_.kv_heads);
            }
        storage_.append(layer, kv, std::span<const append_entry>(entries_.data(), n), q);
        for (std::size_t i = 0; i < n; ++i) rows_.advance(layer, entries_[i].row);
        if constexpr (traits::ranks_current_query)
            if (queries != nullptr && profile_ && observes_current()) rank_current_queries(layer, *queries);
        const auto stepping = [&](index_t seq) { return slots_.stepping(layer, seq); };
        const std::span<const score_capture> captures = captures_.requests(layer, step, [&](index_t r) {
            const index_t seq = r / shape_.kv_heads, t = slots_.prompt_tokens(seq);
            return stepping(seq) && rows_.prompt_count(layer, r) == t ? t : 0;  // a whole prompt, in position order
        });
        return storage_.selection(layer, rows_.selection(layer, shape_.group_size(), shape_.head_dim, stepping, captures), q);
    }
    //! Whether the monitor has anything to rank with the current query under this profile (a monitor may say
    //! it has not: `observes_current(profile)`, optional).
    [[nodiscard]] bool observes_current() const {
        if constexpr (requires { monitor_.observes_current(*profile_); }) return monitor_.observes_current(*profile_);
        else return true;
    }
    //! The monitor sees this step's queries of every stepping slot of `layer` before the selection is built
    //! (`observe_current`); its refreshes land now.
    void rank_current_queries(index_t layer, const decode_queries& queries) {
        refreshes_.start(layer);
        for (index_t seq = 0; seq < options_.sequences; ++seq)
            if (slots_.stepping(layer, seq))
                observe(layer, seq, queries.base + seq * queries.sequence_stride, queries.head_stride, score_source::recompute,
                        observation::current);
        if (const refresh_request request = refreshes_.request(layer); !request.rows.empty()) {
            retriever_.submit(request);
            retriever_.wait(layer);
        }
        current_observed_[static_cast<std::size_t>(layer)] = true;
    }
    void check_queries(const decode_queries& queries) const {
        detail::require<shape_error>(queries.base != nullptr, "queries.base", "null", "a pointer to the decode queries");
        detail::require<shape_error>(queries.head_stride >= shape_.head_dim, "queries.head_stride", queries.head_stride,
                                     "[head_dim, inf)");
    }

    [[nodiscard]] index_t rows_per_layer() const noexcept { return options_.sequences * shape_.kv_heads; }
    [[nodiscard]] index_t row(index_t seq, index_t head) const noexcept { return seq * shape_.kv_heads + head; }

    void plan_cache(const cache_plan<Budget>& plan) {
        // Digests only where digest pivots can be: a given profile without them needs none.
        const bool digest_pivots = profile_ ? profile_->count(head_role::digest_pivot) > 0
                                            : options_.pivot_demotion_mode() != pivot_demotion::to_anchors;
        if (digest_pivots)
            detail::require(options_.digest_pages() > 0, "digest_page_tokens", options_.digest_page_tokens,
                            "[1, 1024] for a profile with digest pivots, or demoted_pivots that makes them (their drift "
                            "is scored from page digests)");
        const index_t t = options_.max_prompt_tokens, slots = options_.sequences;
        rows_.plan(plan.rows, plan.row_capacity());
        selector_.plan(shape_.kv_heads, t, options_.decode_capacity(), options_.span_carry(),
                       options_.span_share());
        budgets_.plan(slots, shape_.total_kv_heads());
        if (!profile_)
            profiler_ = online_profiler(shape_.layers, shape_.kv_heads, slots, options_.profiling_steps, t,
                                        options_.profiling_top_k(t));
        slots_.plan(shape_.layers, slots);
        current_observed_.assign(static_cast<std::size_t>(shape_.layers), false);
        entries_.assign(static_cast<std::size_t>(rows_per_layer()), append_entry{});
        layer_scores_.assign(static_cast<std::size_t>(shape_.kv_heads * t), 0.0f);
        // the carried share's own scores, where they differ from the selection's: every (layer, slot) while
        // profiling online (the compaction that ends it selects every layer), else the layer being prefilled
        const index_t span_streams = !separate_span_scores() ? 0 : profile_ ? 1 : shape_.layers * slots;
        span_scores_.assign(static_cast<std::size_t>(span_streams * shape_.kv_heads * t), 0.0f);
        head_scores_.assign(static_cast<std::size_t>(shape_.kv_heads), {});
        scratch_.assign(static_cast<std::size_t>(2 * t * shape_.kv_heads), 0.0f);  // head_scratch of every head
        group_scores_.assign(static_cast<std::size_t>(shape_.group_size() * t), 0.0f);
        index_scratch_.assign(static_cast<std::size_t>(t), 0);
        monitor_.plan({shape_, slots, t, digest_pivots ? options_.digest_pages() : 0});  // sees every prefill
        if (profile_) plan_for_profile();
    }
    //! Plans what depends on the roles: refresh buffers, the retriever and the score captures.
    void plan_for_profile() {
        const std::vector<index_t> capacity = cache_plan<Budget>::prompt_capacity(shape_, options_, profile_, budget_);
        refreshes_.plan(shape_.layers, rows_per_layer(), [&](index_t layer, index_t r) -> index_t {
            const index_t head = r % shape_.kv_heads;
            return keeps_full_kv(profile_->at(layer, head).role) ? 0 : capacity[static_cast<std::size_t>(layer * shape_.kv_heads + head)];
        });
        retriever_.bind(storage_, {shape_.layers, refreshes_.max_request_tokens(), shape_.layers});
        captures_.plan(shape_.layers, rows_per_layer(), shape_.group_size(), options_.max_prompt_tokens,
                       [&](index_t layer, index_t r) {
                           return monitor_reads_scores(monitor_, profile_->at(layer, r % shape_.kv_heads).role);
                       });
    }

    //! How compressed heads score their first selection: `cache_options::selection_scoring`, else the monitor's
    //! `monitor_traits::scoring`.
    [[nodiscard]] prompt_scoring selection_scoring() const noexcept { return options_.selection_scoring.value_or(traits::scoring); }
    //! Whether the span carry's share is scored apart (`cache_options::span_scoring` set and not the selection's).
    [[nodiscard]] bool separate_span_scores() const noexcept {
        return options_.span_carry() > 0.0 && options_.span_scoring && *options_.span_scoring != selection_scoring();
    }
    //! The prefill scores of KV head `head` over the observation window by `scoring`. `scratch` holds
    //! `2 * max_prompt_tokens` floats.
    template <class Keys>
    void score_window(const query_rows& window, const Keys& keys, index_t head, prompt_scoring scoring,
                      std::span<float> scores, std::span<float> scratch) {
        if (scoring == prompt_scoring::pooled_window) {
            pooled_attention_row(window, keys, head, shape_.group_size(), shape_.head_dim, scores, scratch);
            return;
        }
        query_rows queries = window;
        if (scoring == prompt_scoring::last_query) {
            queries.base = window.query(window.count - 1, 0);
            queries.first_position += window.count - 1;
            queries.count = 1;
        }
        std::fill(scores.begin(), scores.end(), 0.0f);
        accumulate_group_attention(queries, keys, head, shape_.group_size(), shape_.head_dim, scores, scratch);
    }
    //! The scratch of KV head `head`'s prefill scores: `2 * max_prompt_tokens` floats of `scratch_` (the first
    //! head's is the one every other caller uses).
    [[nodiscard]] std::span<float> head_scratch(index_t head) noexcept {
        const auto size = static_cast<std::size_t>(2 * options_.max_prompt_tokens);
        return {scratch_.data() + static_cast<std::size_t>(head) * size, size};
    }
    //! Where the prefill scores of a head are kept: with the online profiler (when the cache profiles online,
    //! for the compaction that ends profiling), else for the layer being prefilled.
    [[nodiscard]] std::span<float> prefill_scores(index_t layer, index_t seq, index_t head, index_t prompt_tokens) {
        if (profiler_.planned()) return profiler_.prefill_scores(layer, seq, head, prompt_tokens);
        return {layer_scores_.data() + head * options_.max_prompt_tokens, static_cast<std::size_t>(prompt_tokens)};
    }
    //! The scores the span carry's share of a compressed head is taken from (before the carry): its own
    //! `span_scoring` scores where they are separate (kept as `prefill_scores` keeps the selection's), else the
    //! selection's.
    [[nodiscard]] std::span<float> carried_share_scores(index_t layer, index_t seq, index_t head, index_t prompt_tokens) {
        if (!separate_span_scores()) return prefill_scores(layer, seq, head, prompt_tokens);
        const index_t stream = profiler_.planned() ? layer * options_.sequences + seq : 0;
        return {span_scores_.data() + (stream * shape_.kv_heads + head) * options_.max_prompt_tokens,
                static_cast<std::size_t>(prompt_tokens)};
    }

    //! The hot prompt tokens of every head of (layer, seq) (`prompt_selector`), after an adaptive budget has
    //! moved tokens between the heads; `room` more positions follow each row's selection.
    std::span<refresh_row> choose_prompts(index_t layer, index_t seq, index_t room) {
        const index_t t = slots_.prompt_tokens(seq);
        const auto scores = [&](index_t head) { return prefill_scores(layer, seq, head, t); };
        if constexpr (AdaptiveBudgetPolicy<Budget>)
            if (profile_) {
                for (index_t head = 0; head < shape_.kv_heads; ++head) head_scores_[head] = scores(head);
                budget_.share_layer(*profile_, options_.budget_ratio, layer, head_scores_,
                                    budgets_.layer_caps(seq, layer, shape_.kv_heads));
            }
        return selector_.choose(
            layer, seq, t, profile_ ? &*profile_ : nullptr, rows_, scores,
            [&](index_t head) { return carried_share_scores(layer, seq, head, t); },
            [&](index_t head) { return budgets_.cap(seq, layer * shape_.kv_heads + head); }, options_.protected_prompt_ends(),
            budgets_.base_length(seq), room,
            [&](index_t head, std::span<const index_t> reference) {
                if constexpr (traits::needs_reference) monitor_.set_reference(layer, seq, head, reference);
            });
    }

    //! Classifies the heads from `seq`, plans for the roles and compacts every live sequence to its selection.
    void finish_profiling(index_t seq, queue_type q) {
        profile_ = profiler_.finish(classifier_, seq, options_.budget_ratio, options_.demotion_floor(),
                                    options_.pivot_demotion_mode());
        profile_->validate(shape_);
        plan_for_profile();
        for (index_t s = 0; s < options_.sequences; ++s) {
            if (!slots_.live(s)) continue;
            budgets_.set(budget_, *profile_, options_.budget_ratio, s, slots_.prompt_tokens(s));
            for (index_t layer = 0; layer < shape_.layers; ++layer)
                if (slots_.prefilled(layer, s)) compact(layer, s, q);
        }
    }
    //! Moves the rows of a prefilled (layer, seq) to their selection: prompt tokens chosen from the prefill
    //! scores, then the decode tokens they hold, fetched again from the cold tier behind them.
    void compact(index_t layer, index_t seq, queue_type q) {
        const index_t kept = rows_.kept_decode(layer, row(seq, 0)), decoded = rows_.decoded(layer, row(seq, 0));
        const std::span<refresh_row> rows = choose_prompts(layer, seq, kept);
        for (index_t head = 0; head < shape_.kv_heads; ++head) {
            const index_t prompt = static_cast<index_t>(rows[head].positions.size()) - kept;
            index_t* decode = selector_.decode_positions(head, prompt);
            for (index_t j = 0; j < kept; ++j) decode[j] = slots_.prompt_tokens(seq) + rows_.decode_number(j, decoded);
            rows_.resize_prompt(layer, rows[head].row, prompt);
        }
        storage_.refill(layer, {layer, rows}, q);
    }

    //! Where a monitor sees a step: before the attention (`observe_current`), after it (`observe`), or after
    //! it once it saw the step before.
    enum class observation { current, after, after_current };
    //! The drift monitor's view of one decode step of (layer, seq); refreshes go to `refreshes_`.
    void observe(index_t layer, index_t seq, const float* query, index_t head_stride, score_source scores,
                 observation point) {
        const index_t t = slots_.prompt_tokens(seq);
        const auto prompt_scores = [&](index_t head) -> std::span<const float> {
            const index_t r = row(seq, head);
            if (scores == score_source::captured)
                if (const auto written = captures_.read(layer, r, slots_.step(layer), t)) return *written;
            group_scores(query, head_stride, storage_.cold_keys(layer, r), head, shape_.group_size(), shape_.head_dim,
                         attention_scale(shape_.head_dim), t, group_scores_.data());
            return {group_scores_.data(), static_cast<std::size_t>(shape_.group_size() * t)};
        };
        const auto prompt_key = [&](index_t head, index_t position, float* key) {
            to_floats(storage_.cold_keys(layer, row(seq, head)).at(position), key, shape_.head_dim);
        };
        const auto refresh = [&](index_t head, std::span<const float> ranking) {
            detail::require(head >= 0 && head < shape_.kv_heads && !keeps_full_kv(profile_->at(layer, head).role), "head",
                            head, "a compressed head (anchor or satellite) of the layer");
            detail::require<shape_error>(static_cast<index_t>(ranking.size()) == t, "ranking.size()", ranking.size(),
                                         "the prompt length");
            const index_t r = row(seq, head);
            refreshes_.add(layer, r, rows_.pages(layer, r), rows_.prompt_count(layer, r), ranking,
                           options_.protected_prompt_ends(), index_scratch_);
        };
        const monitor_context context{layer, seq, t, budgets_.base_length(seq), &*profile_, query, head_stride,
                                      prompt_scores, prompt_key, point == observation::after_current};
        if constexpr (traits::ranks_current_query)
            if (point == observation::current) {
                monitor_.observe_current(context, refresh);
                return;
            }
        monitor_.observe(context, refresh);
    }
    //! Throws unless the kernel stamped every capture `begin_layer(layer)` asked for.
    void check_captured(index_t layer) const {
        for (index_t r = 0; r < rows_per_layer(); ++r)
            if (captures_.requested(layer, r) && !captures_.read(layer, r, slots_.step(layer), 0))
                throw invalid_argument_error("scores", "captured",
                                             "recompute, unless the attention kernel of this step wrote and stamped "
                                             "selection.captures (row " + std::to_string(r) + " has not)");
    }

    [[noreturn]] void throw_allocation_error(const cache_plan<Budget>& plan) const {
        const storage_bytes bytes = storage_.bytes_required(plan.storage);
        throw allocation_error("a kv_cache (its storage tier needs " + std::to_string(bytes.hot) + " hot and " +
                                   std::to_string(bytes.cold) + " cold bytes)",
                               bytes.hot + bytes.cold);
    }
    void check_tensor(const Tensor& kv) const {
        detail::require<shape_error>(kv.keys != nullptr && kv.values != nullptr, "kv.keys", "null",
                                     "the engine's key and value memory");
        detail::require<shape_error>(kv.kv_heads() == shape_.kv_heads, "kv.kv_heads()", kv.kv_heads(), "the model's kv_heads");
        detail::require<shape_error>(kv.head_dim() == shape_.head_dim, "kv.head_dim()", kv.head_dim(), "the model's head_dim");
    }

    model_shape shape_;
    cache_options options_;
    Classifier classifier_;
    Budget budget_;
    Storage storage_;
    Monitor monitor_;
    RetrieverPolicy retriever_;
    std::optional<head_profile> profile_;
    row_table rows_;
    sequence_budgets<Budget> budgets_;
    online_profiler profiler_;
    score_captures captures_;
    refresh_plan refreshes_;
    prompt_selector selector_;

    sequence_slots slots_;
    std::vector<append_entry> entries_;
    std::vector<float> layer_scores_, span_scores_, scratch_, group_scores_;
    std::vector<std::span<const float>> head_scores_;
    std::vector<index_t> index_scratch_;
    std::vector<bool> current_observed_;  //!< per layer: the monitor saw this step's queries at begin_layer
};

//! The full cache: every head keeps every token (the ceiling every policy is measured against). Construct it
//! with `make_full_cache`, or with `uniform_profile(shape, head_role::volatile_)` and `budget_ratio = 1`.
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
using full_kv_cache = kv_cache<Tensor, fixed_role_classifier, uniform_budget, Storage, static_monitor, sync_retriever>;

}  // namespace v1
}  // namespace heterocache
