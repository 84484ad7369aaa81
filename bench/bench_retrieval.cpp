// Retrieval's copy: a refresh of k = r * T positions of one row, cold tier to hot pages, as a retriever runs
// it (`host_storage::refill`). The cold tier aliases the engine's tensor (the layer's K/V, read in place);
// the row's hot pages (16 tokens each) come from the layer's pool as a kv_cache gives them.
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <heterocache/storage/host_storage.hpp>

#include "bench_common.hpp"

namespace bench {
namespace {

void refill(benchmark::State& state, model shape, index_t context, double ratio) {
    const layer_data& data = layer(shape, context);
    // A drifted pivot's top-k: positions spread over the row, ascending.
    std::vector<index_t> positions(static_cast<std::size_t>(context));
    for (index_t i = 0; i < context; ++i) positions[static_cast<std::size_t>(i)] = i;
    std::mt19937_64 rng(5);
    std::shuffle(positions.begin(), positions.end(), rng);
    positions.resize(static_cast<std::size_t>(ratio * static_cast<double>(context)));
    std::sort(positions.begin(), positions.end());
    const auto tokens = static_cast<index_t>(positions.size());

    std::vector<index_t> row_tokens(static_cast<std::size_t>(shape.kv_heads), 0);
    row_tokens[0] = tokens;  // only row 0 is refreshed: only it needs hot pages
    const paged_rows rows(data, row_tokens);
    const heterocache::strided_kv_tensor<float> engine = data.tensor();
    const heterocache::storage_plan plan{
        {1, shape.kv_heads, shape.query_heads, shape.head_dim}, 1, context, default_page_size, {rows.pool_pages()}, true};
    heterocache::host_storage storage;
    storage.bind(plan, {}, &engine);
    const heterocache::refresh_row row{0, rows.pages(0), 0, positions};
    const heterocache::refresh_request request{0, {&row, 1}};
    for (auto _ : state) {
        storage.refill(0, request, {});
        benchmark::DoNotOptimize(storage.hot_key(0, 0));
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * tokens);
    state.SetBytesProcessed(state.iterations() * tokens * 2 * shape.head_dim * static_cast<index_t>(sizeof(float)));
}

}  // namespace

void register_retrieval() {
    for (const model& shape : models)
        for (const index_t context : contexts)
            for (const double ratio : kept_ratios) {
                const std::string id = name({"refill", shape.name, context_name(context), ratio_name(ratio)});
                benchmark::RegisterBenchmark(id.c_str(), refill, shape, context, ratio)->Unit(benchmark::kMicrosecond);
            }
}

}  // namespace bench
