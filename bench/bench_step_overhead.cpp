// The host work of one decode step per layer at Llama-3.1-8B's attention shape (8 KV heads, 32 query heads,
// d = 128): the v2 step API, `begin_layer` + `end_layer` with no attention between them, against the v1
// contract's rebuild of the whole CSR index list, alternated in one loop over the same rows and timed apart.
//
// The cache holds a loaded synthetic profile at r = 0.5 (`synthetic_profile`), a static monitor (no drift
// work), a bf16 hot tier and a cold tier that aliases the engine's tensor; every sequence slot holds a prompt
// of T tokens (or, `staggered`, up to 15 fewer) and steps at every decode step. One iteration is one layer
// step; a run is `steps_per_run` decode steps over every layer, so each row enters a new page of 16 tokens
// twice in a run (and at every step with pages of 1 token): those steps rewrite the page ids from that row
// on, and are part of the mean (counters `page_steps`, `new_page_step_median_us`, `new_flat_step_median_us`).
// The `warm` series runs the v2 step alone, to tell what it does from what cold caches cost it.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <heterocache/kv_cache.hpp>

#include "bench_common.hpp"

namespace bench {
namespace {

namespace hc = heterocache;

constexpr model shape = llama8b;
constexpr index_t steps_per_run = 32;                   // decode steps a run measures: >= 2 * 16
// Decode tokens a slot takes before the benchmark starts it again (a new prefill): room for the warm-up step
// and 9 repetitions of a case and of its `warm` series.
constexpr index_t max_new_tokens = 20 * steps_per_run;

using engine_tensor = hc::strided_kv_tensor<float>;
using step_cache = hc::kv_cache<engine_tensor, hc::overlap_star_classifier, hc::drift_weighted_budget,
                                hc::host_storage_bf16, hc::static_monitor>;

//! One measured configuration. Batch 64 runs 2 layers instead of Llama's 32 (the cost of a layer step does not
//! depend on the number of layers; 32 layers at 32K would hold 136 GiB of bf16 hot tier). With `staggered`
//! prompts, slot `s` holds `context - s % page_size` tokens, so that rows enter new pages at different steps
//! (as under continuous batching) instead of all the rows of a head at the same step. Without `alternated`,
//! the v2 step runs alone, its caches warm from the previous step (`…/warm`), where it otherwise runs after
//! a rebuild that has streamed megabytes through the caches, as it would after an attention kernel.
struct step_case {
    index_t context = 0;
    index_t batch = 0;
    index_t page_size = 0;
    bool staggered = false;
    bool alternated = true;

    [[nodiscard]] index_t layers() const { return batch == 1 ? 32 : 2; }
    [[nodiscard]] index_t prompt_tokens(index_t seq) const { return context - (staggered ? seq % page_size : 0); }
    //! Whether `other` runs on the same cache (it differs at most in `alternated`).
    [[nodiscard]] bool same_cache(const step_case& other) const {
        return context == other.context && batch == other.batch && page_size == other.page_size &&
               staggered == other.staggered;
    }
};

//! Every tenth KV head in layer-major order (26 of Llama's 256) keeps its prompt whole: in even layers a
//! pivot, whose odd-numbered heads are its satellites; in odd layers a volatile head. The other heads are
//! anchors. Fewer layers take the first layers of the same pattern.
hc::head_profile synthetic_profile(index_t layers) {
    hc::head_profile profile{layers, shape.kv_heads, 0.5, 0.5, 0, {}};
    for (index_t layer = 0; layer < layers; ++layer) {
        index_t full = -1;
        for (index_t head = 0; head < shape.kv_heads; ++head)
            if ((layer * shape.kv_heads + head) % 10 == 0) full = head;
        const bool clustered = full >= 0 && layer % 2 == 0;
        for (index_t head = 0; head < shape.kv_heads; ++head) {
            if (head == full)
                profile.heads.push_back(clustered ? hc::head_info{hc::head_role::pivot, 0.3, head}
                                                  : hc::head_info{hc::head_role::volatile_, 0.1, -1});
            else if (clustered && head % 2 == 1)
                profile.heads.push_back({hc::head_role::satellite, 0.3, full});
            else
                profile.heads.push_back({hc::head_role::anchor, 0.9, -1});
        }
    }
    return profile;
}

//! The v1 contract's per-step host work, as its `kv_cache::rebuild_selection` did it (`git show
//! c5d0364:include/heterocache/kv_cache.hpp`): the CSR index list of a layer (one per layer) written again
//! from scratch at every step, one 64-bit hot slot per token, every row's prompt slots then its decode
//! slots, each row in its own region of the hot tier (its prompt capacity, then its decode capacity).
//! Without a decode window, as here, a row's decode slots are the first `kept_decode` of its decode region.
//! O(tokens) per layer step.
class v1_csr_rebuild {
public:
    //! Regions sized by the rows' prompt selections now (after prefill) and `decode_capacity`.
    v1_csr_rebuild(const hc::row_table& rows, index_t layers, index_t decode_capacity)
        : rows_(rows), indptr_(static_cast<std::size_t>(layers)), indices_(static_cast<std::size_t>(layers)) {
        const index_t per_layer = rows.rows_per_layer();
        base_.resize(static_cast<std::size_t>(layers * per_layer));
        prompt_capacity_.resize(base_.size());
        for (index_t layer = 0; layer < layers; ++layer) {
            index_t next = 0;
            for (index_t row = 0; row < per_layer; ++row) {
                const auto state = static_cast<std::size_t>(layer * per_layer + row);
                base_[state] = next;
                prompt_capacity_[state] = rows.prompt_count(layer, row);
                next += prompt_capacity_[state] + decode_capacity;
            }
            indptr_[static_cast<std::size_t>(layer)].resize(static_cast<std::size_t>(per_layer) + 1);
            indices_[static_cast<std::size_t>(layer)].resize(static_cast<std::size_t>(next));
        }
    }

    //! Rebuilds the index list of `layer` from its rows' lengths now. Returns the tokens it lists.
    index_t rebuild(index_t layer) {
        const index_t per_layer = rows_.rows_per_layer();
        index_t* indptr = indptr_[static_cast<std::size_t>(layer)].data();
        index_t* indices = indices_[static_cast<std::size_t>(layer)].data();
        index_t n = 0;
        for (index_t row = 0; row < per_layer; ++row) {
            const auto state = static_cast<std::size_t>(layer * per_layer + row);
            const index_t base = base_[state], prompt = rows_.prompt_count(layer, row), kept = rows_.kept_decode(layer, row);
            indptr[row] = n;
            for (index_t k = 0; k < prompt; ++k) indices[n++] = base + k;
            const index_t decode_base = base + prompt_capacity_[state];
            for (index_t j = 0; j < kept; ++j) indices[n++] = decode_base + j;
        }
        indptr[per_layer] = n;
        benchmark::DoNotOptimize(indices);
        benchmark::ClobberMemory();
        return n;
    }

private:
    const hc::row_table& rows_;
    std::vector<index_t> base_, prompt_capacity_;       // per (layer, row)
    std::vector<std::vector<index_t>> indptr_, indices_;  // per layer
};

//! The cache of one case, its engine tensor and the v1 baseline over its rows, kept from one repetition to
//! the next (prefill at 32K and batch 64 takes a while): the slots decode on, and start again once their
//! decode room runs out.
class step_bench {
public:
    explicit step_bench(const step_case& c)
        : case_(c),
          shape_{c.layers(), shape.kv_heads, shape.query_heads, shape.head_dim},
          options_(cache_options(c)),
          profile_(synthetic_profile(c.layers())),
          // The engine's K/V: one [head][token][d] block that every layer and sequence shares (zero strides),
          // indexed by position as the aliased cold tier requires. The step reads only the new tokens of it.
          keys_(static_cast<std::size_t>(shape.kv_heads * (c.context + max_new_tokens) * shape.head_dim)),
          values_(keys_.size()),
          engine_{keys_.data(), values_.data(),
                  hc::strided_map{0, 0, (c.context + max_new_tokens) * shape.head_dim, shape.head_dim},
                  shape.kv_heads, shape.head_dim},
          window_(static_cast<std::size_t>(shape.query_heads * shape.head_dim)),
          queries_(static_cast<std::size_t>(c.batch * shape.query_heads * shape.head_dim)),  // unread: static monitor
          hot_bytes_(step_cache::bytes_required(shape_, options_, profile_, {}, true).hot),
          cache_(shape_, options_, profile_, {}, {}, {}, {{}, engine_}),
          new_tokens_(static_cast<std::size_t>(c.batch), 0) {
        fill(keys_, 11);
        fill(values_, 12);
        fill(window_, 13);
        start_sequences();
        baseline_.emplace(cache_.rows(), c.layers(), options_.decode_capacity());
    }

    [[nodiscard]] const step_case& config() const { return case_; }

    //! `state.max_iterations` layer steps (whole decode steps), each the v2 step, then, `alternated`, the v1
    //! rebuild.
    void run(benchmark::State& state, bool alternated) {
        using clock = std::chrono::steady_clock;
        const index_t layers = case_.layers();
        if (cache_.rows().decoded(0, 0) + static_cast<index_t>(state.max_iterations) / layers > max_new_tokens) {
            for (index_t seq = 0; seq < case_.batch; ++seq) cache_.end_sequence(seq);
            start_sequences();
        }
        std::vector<layer_step> steps;
        steps.reserve(static_cast<std::size_t>(state.max_iterations));
        index_t layer = 0;
        for (auto _ : state) {
            const auto start = clock::now();
            step_layer(layer);
            const auto middle = clock::now();
            const index_t tokens = alternated ? baseline_->rebuild(layer) : 0;
            const auto end = clock::now();
            const double new_us = std::chrono::duration<double, std::micro>(middle - start).count();
            state.SetIterationTime(new_us * 1e-6);
            steps.push_back({new_us, std::chrono::duration<double, std::micro>(end - middle).count(),
                             pages_rewritten_by_step(layer), tokens});
            if (++layer == layers) {
                layer = 0;
                for (index_t& token : new_tokens_) ++token;
            }
        }
        report(state, steps, alternated);
    }

private:
    //! What one layer step took (microseconds) and did.
    struct layer_step {
        double new_us = 0, baseline_us = 0;
        index_t pages_rewritten = 0;  //!< page ids the v2 step rewrote (0: only `last_page_len` changed)
        index_t tokens = 0;           //!< indices the v1 rebuild wrote
    };

    //! Counters per layer step: means (every step counts, those that rewrite page ids included) and, robust
    //! to the machine's preemptions, medians: of every step, and of the v2 steps that rewrote page ids and of
    //! those that did not. The baseline's only when it ran.
    void report(benchmark::State& state, const std::vector<layer_step>& steps, bool alternated) const {
        const auto n = static_cast<double>(steps.size());
        double new_total = 0, baseline_total = 0, pages = 0, tokens = 0;
        std::vector<double> new_times, baseline_times, page_times, flat_times;
        for (const layer_step& s : steps) {
            new_total += s.new_us;
            baseline_total += s.baseline_us;
            new_times.push_back(s.new_us);
            baseline_times.push_back(s.baseline_us);
            (s.pages_rewritten > 0 ? page_times : flat_times).push_back(s.new_us);
            pages += static_cast<double>(s.pages_rewritten);
            tokens += static_cast<double>(s.tokens);
        }
        state.counters["new_us"] = new_total / n;
        state.counters["new_median_us"] = median(new_times);
        if (alternated) {
            state.counters["baseline_us"] = baseline_total / n;
            state.counters["baseline_median_us"] = median(baseline_times);
            state.counters["ratio"] = baseline_total / new_total;
            state.counters["tokens"] = tokens / n;
        }
        state.counters["page_steps"] = static_cast<double>(page_times.size()) / n;
        if (!page_times.empty()) state.counters["new_page_step_median_us"] = median(page_times);
        if (!flat_times.empty()) state.counters["new_flat_step_median_us"] = median(flat_times);
        state.counters["pages_rewritten"] = pages / n;
        state.counters["rows"] = static_cast<double>(cache_.rows().rows_per_layer());
        state.counters["layers"] = static_cast<double>(case_.layers());
        state.counters["hot_GiB"] = static_cast<double>(hot_bytes_) / (1u << 30);
    }
    static double median(std::vector<double>& values) {
        const auto middle = values.begin() + static_cast<std::ptrdiff_t>(values.size() / 2);
        std::nth_element(values.begin(), middle, values.end());
        return *middle;
    }

    static hc::cache_options cache_options(const step_case& c) {
        hc::cache_options options;
        options.sequences = c.batch;
        options.max_prompt_tokens = c.context;
        options.max_new_tokens = max_new_tokens;
        options.budget_ratio = 0.5;
        options.page_size = c.page_size;
        return options;
    }

    //! The v2 step of one layer: append every slot's new token and get the selection, then end the layer (the
    //! static monitor has nothing to do; no attention kernel ran, so no capture is claimed).
    void step_layer(index_t layer) {
        const step_cache::selection_type selection = cache_.begin_layer(layer, engine_, new_tokens_);
        benchmark::DoNotOptimize(selection.indptr);
        cache_.end_layer(layer, {queries_.data(), shape.query_heads * shape.head_dim, shape.head_dim});
    }

    //! Starts every slot on its prompt (prefilled on every layer from a one-query window), then runs one
    //! decode step untimed: the first step after a prefill writes every page id.
    void start_sequences() {
        const hc::query_rows window{window_.data(), 1, shape.query_heads * shape.head_dim, shape.head_dim, 0};
        for (index_t seq = 0; seq < case_.batch; ++seq) {
            cache_.begin_sequence(seq, case_.prompt_tokens(seq));
            for (index_t layer = 0; layer < case_.layers(); ++layer) cache_.prefill(layer, seq, engine_, window);
            new_tokens_[static_cast<std::size_t>(seq)] = case_.prompt_tokens(seq);
        }
        for (index_t layer = 0; layer < case_.layers(); ++layer) step_layer(layer);
        for (index_t& token : new_tokens_) ++token;
    }

    //! Page ids the last step of `layer` rewrote: those of every row from the first row that entered a new
    //! page on (0 when none did, and only `last_page_len` changed), as `row_table::selection` does.
    [[nodiscard]] index_t pages_rewritten_by_step(index_t layer) const {
        const hc::row_table& rows = cache_.rows();
        index_t pages = 0;
        bool rewriting = false;
        for (index_t row = 0; row < rows.rows_per_layer(); ++row) {
            const index_t length = rows.length(layer, row);
            rewriting = rewriting || (length - 1) % case_.page_size == 0;
            if (rewriting) pages += rows.pages_for(length);
        }
        return pages;
    }

    step_case case_;
    hc::model_shape shape_;
    hc::cache_options options_;
    hc::head_profile profile_;
    std::vector<float> keys_, values_;
    engine_tensor engine_;
    std::vector<float> window_, queries_;
    std::size_t hot_bytes_;
    step_cache cache_;
    std::vector<index_t> new_tokens_;
    std::optional<v1_csr_rebuild> baseline_;
};

void step_overhead(benchmark::State& state, step_case c) {
    static std::unique_ptr<step_bench> cached;  // one at a time: 32K at batch 64 holds 8.5 GiB
    if (!cached || !cached->config().same_cache(c)) {
        cached.reset();
        cached = std::make_unique<step_bench>(c);
    }
    cached->run(state, c.alternated);
}

}  // namespace

void register_step_overhead() {
    std::vector<step_case> cases;  // each `warm` case right after its alternated one, on the same cache
    for (const index_t page_size : {default_page_size, index_t{1}})
        for (const index_t batch : {1, 64})
            for (const index_t context : {2048, 8192, 32768}) {
                cases.push_back({context, batch, page_size});
                if (page_size == default_page_size) cases.push_back({context, batch, page_size, false, false});
            }
    for (const index_t context : {2048, 8192, 32768}) cases.push_back({context, 64, default_page_size, true});
    for (const step_case& c : cases) {
        std::string id = name({"step_overhead", shape.name, context_name(c.context), argument_name("batch", c.batch),
                               argument_name("page", c.page_size)});
        if (c.staggered) id += "/staggered";
        if (!c.alternated) id += "/warm";
        benchmark::RegisterBenchmark(id.c_str(), step_overhead, c)
            ->Iterations(steps_per_run * c.layers())
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
    }
}

}  // namespace bench
