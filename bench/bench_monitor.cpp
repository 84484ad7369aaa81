// What drift monitoring adds to a decode step. One layer, batch 1, as HeteroCache holds it (a paged
// selection, pages of 16 tokens): row 0 is a pivot (it keeps its whole prompt of T tokens), the other rows
// keep r of theirs. Per step the pivot ranks its prompt by this step's attention (pooled row, radix top-k,
// overlap with its reference) until the check every `interval` = 5 steps is decided: a pivot whose reference
// is its current top set (`stable`) ranks at 3 steps of 5, one whose reference is elsewhere (`drifting`,
// refreshing its satellite at every check) at 4. One iteration is one step; the figures average over the
// interval.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <heterocache/algorithm/overlap.hpp>
#include <heterocache/algorithm/pooled_attention.hpp>
#include <heterocache/attention/decode_attention.hpp>
#include <heterocache/monitor/pivot_overlap_monitor.hpp>
#include <heterocache/tensor/kv_tensor.hpp>

#include "bench_common.hpp"

namespace bench {
namespace {

namespace hc = heterocache;

//! How the step gets the pivot's scores.
enum class monitoring {
    none,       //!< no monitor: the sparse step alone (the baseline)
    recompute,  //!< the monitor recomputes them from the pivot's keys
    captured,   //!< the attention kernel writes them, the monitor reads them
};

const char* monitoring_name(monitoring m) {
    return m == monitoring::none ? "none" : m == monitoring::recompute ? "recompute" : "captured";
}

//! Where the pivot's reference set lies against what the step's query attends.
enum class pivot_state {
    drifting,  //!< the first `kept` positions: the random scores rank elsewhere, so every check drifts
    stable,    //!< the step's own top set: every check is stable
};

const char* pivot_state_name(pivot_state p) { return p == pivot_state::stable ? "stable" : "drifting"; }

//! The layer's selection (row 0 whole, the others `kept` tokens, on pages as a kv_cache lays them out), a
//! planned monitor, and its profile. The pivot's cold keys (what `recompute` scores) are head 0 of the
//! layer's tensor.
struct monitored_layer {
    const layer_data& data;
    index_t kept;
    paged_rows rows;
    std::vector<float> captured, recomputed, output, lse;
    std::uint64_t stamp = 0;
    std::vector<hc::score_capture> captures;
    hc::head_profile profile;
    hc::pivot_overlap_monitor monitor;
    std::vector<index_t> reference;

    monitored_layer(const layer_data& layer, double ratio, pivot_state pivot = pivot_state::drifting)
        : data(layer),
          kept(static_cast<index_t>(ratio * static_cast<double>(layer.context))),
          rows(layer, pivot_rows(layer, kept)),
          captured(static_cast<std::size_t>(layer.shape.group() * layer.context)),
          recomputed(captured.size()),
          output(layer.queries.size()),
          lse(static_cast<std::size_t>(layer.shape.query_heads)),
          captures(static_cast<std::size_t>(layer.rows())),
          profile{1, layer.shape.kv_heads, 0.5, 0.5, 0, {}},
          reference(static_cast<std::size_t>(kept)) {
        captures[0] = {captured.data(), data.context, &stamp, 1};
        for (index_t head = 0; head < data.rows(); ++head)
            profile.heads.push_back(head == 0   ? hc::head_info{hc::head_role::pivot, 0.2, 0}
                                    : head == 1 ? hc::head_info{hc::head_role::satellite, 0.2, 0}
                                                : hc::head_info{hc::head_role::anchor, 0.9, -1});
        const model& m = data.shape;
        monitor.plan({{1, m.kv_heads, m.query_heads, m.head_dim}, 1, data.context});
        for (index_t i = 0; i < kept; ++i) reference[static_cast<std::size_t>(i)] = i;
        if (pivot == pivot_state::stable) {  // the query is the same at every step: so is its top set
            attend(true);
            std::vector<float> row(static_cast<std::size_t>(data.context)), scratch(2 * row.size());
            std::vector<index_t> index_scratch(row.size());
            hc::pooled_attention_row_from_scores(captured, m.group(), row, scratch);
            hc::top_k_positions(row, reference, index_scratch);
        }
        monitor.set_reference(0, 0, 0, reference);
    }

    //! Row 0 (the pivot) holds the whole prompt, the others `kept` tokens.
    static std::vector<index_t> pivot_rows(const layer_data& layer, index_t kept) {
        std::vector<index_t> tokens = uniform_rows(layer, kept);
        tokens[0] = layer.context;
        return tokens;
    }

    [[nodiscard]] hc::paged_selection selection(bool capture) const {
        return rows.selection(data.keys.data(), data.values.data(),
                              capture ? std::span<const hc::score_capture>(captures) : std::span<const hc::score_capture>{});
    }

    void attend(bool capture) {
        hc::decode_attention(selection(capture), data.queries.data(), output.data(), lse.data(),
                             hc::attention_scale(data.shape.head_dim));
    }

    //! One monitored step of the pivot: returns the number of satellite refreshes it asked for. Its scores are
    //! the kernel's capture, or computed from its cold keys as a kv_cache does for `score_source::recompute`.
    index_t observe(bool captured_scores) {
        const model& m = data.shape;
        const hc::strided_kv_tensor<float> cold = data.tensor();
        const auto prompt_scores = [&](index_t head) -> std::span<const float> {
            if (captured_scores) return captured;
            hc::group_scores(data.queries.data(), m.head_dim, cold.key_rows(0, 0, head), head, m.group(), m.head_dim,
                             hc::attention_scale(m.head_dim), data.context, recomputed.data());
            return recomputed;
        };
        const auto prompt_key = [&](index_t head, index_t position, float* key) {
            std::copy_n(cold.key(0, 0, head, position), m.head_dim, key);
        };
        const hc::monitor_context context{0, 0, data.context, kept, &profile, data.queries.data(), m.head_dim,
                                          prompt_scores, prompt_key};
        index_t refreshes = 0;
        monitor.observe(context, [&](index_t, std::span<const float>) { ++refreshes; });
        return refreshes;
    }
};

void report_step(benchmark::State& state, const monitored_layer& step) {
    const index_t tokens = step.selection(false).total_tokens();
    state.SetItemsProcessed(state.iterations() * tokens);  // tokens attended
    state.SetBytesProcessed(state.iterations() * tokens * 2 * step.data.shape.head_dim * static_cast<index_t>(sizeof(float)));
    state.counters["tokens"] = static_cast<double>(tokens);
}

void monitored_step(benchmark::State& state, model shape, index_t context, double ratio, monitoring how) {
    monitored_layer step(bench::layer(shape, context), ratio);
    index_t refreshes = 0;
    for (auto _ : state) {
        step.attend(how == monitoring::captured);
        if (how != monitoring::none) refreshes += step.observe(how == monitoring::captured);
        benchmark::DoNotOptimize(step.output.data());
        benchmark::ClobberMemory();
    }
    report_step(state, step);
    state.counters["refreshes"] = static_cast<double>(refreshes);
}

// The same two steps alternated in one loop, timed apart: the sparse step alone, then the step with the
// kernel capturing and the monitor reading the pivot's scores. `overhead` = monitored / plain - 1 over the
// run, robust to the machine's speed drifting between benchmarks.
void monitor_overhead(benchmark::State& state, model shape, index_t context, double ratio, pivot_state pivot) {
    monitored_layer step(bench::layer(shape, context), ratio, pivot);
    using clock = std::chrono::steady_clock;
    clock::duration plain{}, monitored{};
    for (auto _ : state) {
        const auto start = clock::now();
        step.attend(false);
        benchmark::ClobberMemory();
        const auto middle = clock::now();
        step.attend(true);
        benchmark::DoNotOptimize(step.observe(true));
        benchmark::ClobberMemory();
        plain += middle - start;
        monitored += clock::now() - middle;
    }
    state.counters["overhead"] = std::chrono::duration<double>(monitored) / std::chrono::duration<double>(plain) - 1.0;
    state.counters["rankings"] = static_cast<double>(step.monitor.rankings());
}

// The monitor's own work per step once the kernel captured the scores: the pooled row (softmax of G
// rows, group maximum, pool), the radix top-k and the overlap.
void pivot_rank(benchmark::State& state, model shape, index_t context, double ratio, pivot_state pivot) {
    monitored_layer step(bench::layer(shape, context), ratio, pivot);
    step.attend(true);
    for (auto _ : state) benchmark::DoNotOptimize(step.observe(true));
    state.SetItemsProcessed(state.iterations() * context);  // prompt positions ranked
    state.SetBytesProcessed(state.iterations() * shape.group() * context * static_cast<index_t>(sizeof(float)));
}

void top_k(benchmark::State& state, model shape, index_t context, double ratio) {
    monitored_layer step(bench::layer(shape, context), ratio);
    step.attend(true);
    std::vector<float> row(static_cast<std::size_t>(context)), scratch(static_cast<std::size_t>(2 * context));
    hc::pooled_attention_row_from_scores(step.captured, shape.group(), row, scratch);
    std::vector<index_t> top(static_cast<std::size_t>(step.kept)), index_scratch(row.size());
    for (auto _ : state) {
        hc::top_k_positions(row, top, index_scratch);
        benchmark::DoNotOptimize(top.data());
    }
    state.SetItemsProcessed(state.iterations() * context);
    state.SetBytesProcessed(state.iterations() * context * static_cast<index_t>(sizeof(float)));
}

}  // namespace

void register_monitor() {
    for (const model& shape : models)
        for (const index_t context : contexts) {
            const std::string tokens = context_name(context);
            for (const double ratio : kept_ratios) {
                const std::string kept = ratio_name(ratio);
                for (const monitoring how : {monitoring::none, monitoring::recompute, monitoring::captured})
                    benchmark::RegisterBenchmark(name({"monitored_step", shape.name, tokens, kept, monitoring_name(how)}).c_str(),
                                                 monitored_step, shape, context, ratio, how)
                        ->UseRealTime()
                        ->Unit(benchmark::kMicrosecond);
                for (const pivot_state pivot : {pivot_state::drifting, pivot_state::stable}) {
                    const std::string state_name = pivot_state_name(pivot);
                    benchmark::RegisterBenchmark(name({"monitor_overhead", shape.name, tokens, kept, state_name}).c_str(),
                                                 monitor_overhead, shape, context, ratio, pivot)
                        ->UseRealTime()
                        ->Unit(benchmark::kMicrosecond);
                    benchmark::RegisterBenchmark(name({"pivot_rank", shape.name, tokens, kept, state_name}).c_str(),
                                                 pivot_rank, shape, context, ratio, pivot)
                        ->UseRealTime()
                        ->Unit(benchmark::kMicrosecond);
                }
                benchmark::RegisterBenchmark(name({"top_k", shape.name, tokens, kept}).c_str(), top_k, shape, context, ratio)
                    ->UseRealTime()
                    ->Unit(benchmark::kMicrosecond);
            }
        }
}

}  // namespace bench
