// What a pivot's drift check costs per query: the pooled attention row over its T prompt keys
// (one query, the G query heads of its group), then the top-B positions of that row, B = r * T.
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <heterocache/algorithm/overlap.hpp>
#include <heterocache/algorithm/pooled_attention.hpp>

#include "bench_common.hpp"

namespace bench {
namespace {

struct pivot_row {
    std::vector<float> row, scratch;
    std::vector<index_t> top, index_scratch;
    heterocache::query_rows query;
    heterocache::key_rows keys;

    pivot_row(const layer_data& data, double ratio)
        : row(static_cast<std::size_t>(data.context)),
          scratch(2 * row.size()),
          top(static_cast<std::size_t>(ratio * static_cast<double>(data.context))),
          index_scratch(row.size()),
          query{data.queries.data(), 1, data.shape.query_heads * data.shape.head_dim, data.shape.head_dim, data.context},
          keys{data.keys.data(), data.shape.head_dim} {}

    void score(const layer_data& data) {
        heterocache::pooled_attention_row(query, keys, 0, data.shape.group(), data.shape.head_dim, row, scratch);
    }
    void select() { heterocache::top_k_positions(row, top, index_scratch); }
};

void report(benchmark::State& state, const layer_data& data, bool keys_read) {
    state.SetItemsProcessed(state.iterations() * data.context);  // prompt positions ranked
    const index_t bytes = keys_read ? data.context * data.shape.head_dim * static_cast<index_t>(sizeof(float))
                                    : data.context * static_cast<index_t>(sizeof(float));
    state.SetBytesProcessed(state.iterations() * bytes);
}

void pooled_row(benchmark::State& state, model shape, index_t context) {
    const layer_data& data = layer(shape, context);
    pivot_row pivot(data, 0.5);
    for (auto _ : state) {
        pivot.score(data);
        benchmark::DoNotOptimize(pivot.row.data());
    }
    report(state, data, true);
}

void top_k(benchmark::State& state, model shape, index_t context, double ratio) {
    const layer_data& data = layer(shape, context);
    pivot_row pivot(data, ratio);
    pivot.score(data);
    for (auto _ : state) {
        pivot.select();
        benchmark::DoNotOptimize(pivot.top.data());
    }
    report(state, data, false);
}

void drift_check(benchmark::State& state, model shape, index_t context, double ratio) {
    const layer_data& data = layer(shape, context);
    pivot_row pivot(data, ratio);
    for (auto _ : state) {
        pivot.score(data);
        pivot.select();
        benchmark::DoNotOptimize(pivot.top.data());
    }
    report(state, data, true);
}

}  // namespace

void register_monitor() {
    for (const model& shape : models)
        for (const index_t context : contexts) {
            const std::string tokens = context_name(context);
            benchmark::RegisterBenchmark(name({"pooled_row", shape.name, tokens}).c_str(), pooled_row, shape, context)
                ->Unit(benchmark::kMicrosecond);
            for (const double ratio : kept_ratios) {
                const std::string kept = ratio_name(ratio);
                benchmark::RegisterBenchmark(name({"top_k", shape.name, tokens, kept}).c_str(), top_k, shape, context, ratio)
                    ->Unit(benchmark::kMicrosecond);
                benchmark::RegisterBenchmark(name({"drift_check", shape.name, tokens, kept}).c_str(), drift_check, shape,
                                             context, ratio)
                    ->Unit(benchmark::kMicrosecond);
            }
        }
}

}  // namespace bench
