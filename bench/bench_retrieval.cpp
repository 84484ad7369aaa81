// Retrieval's gather: k = r * T positions of one cold row copied into a staging buffer through
// host_storage, as a retriever does (detail::gather_request).
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <heterocache/concepts/retriever.hpp>
#include <heterocache/storage/host_storage.hpp>

#include "bench_common.hpp"

namespace bench {
namespace {

void gather(benchmark::State& state, model shape, index_t context, double ratio) {
    const index_t d = shape.head_dim;
    heterocache::host_storage storage;
    heterocache::storage_plan plan{{1, shape.kv_heads, shape.query_heads, d}, 1, context, {}};
    plan.hot_capacity.assign(static_cast<std::size_t>(shape.kv_heads), 0);
    storage.plan(plan);
    std::vector<float> token(static_cast<std::size_t>(d));
    for (index_t position = 0; position < context; ++position) {
        fill(token, static_cast<std::uint64_t>(position));
        storage.write_cold(0, 0, position, token.data(), token.data());
    }
    // A drifted pivot's top-k: positions spread over the row, ascending.
    std::vector<index_t> positions(static_cast<std::size_t>(context));
    for (index_t i = 0; i < context; ++i) positions[static_cast<std::size_t>(i)] = i;
    std::mt19937_64 rng(5);
    std::shuffle(positions.begin(), positions.end(), rng);
    positions.resize(static_cast<std::size_t>(ratio * static_cast<double>(context)));
    std::sort(positions.begin(), positions.end());
    const heterocache::refresh_row row{0, 0, positions};
    const heterocache::refresh_request request{0, {&row, 1}};
    std::vector<float> keys(positions.size() * static_cast<std::size_t>(d)), values(keys.size());
    const auto access = heterocache::detail::storage_access::of(storage);
    for (auto _ : state) {
        heterocache::detail::gather_request(access, request, d, keys.data(), values.data());
        benchmark::DoNotOptimize(keys.data());
        benchmark::ClobberMemory();
    }
    const auto tokens = static_cast<index_t>(positions.size());
    state.SetItemsProcessed(state.iterations() * tokens);
    state.SetBytesProcessed(state.iterations() * tokens * 2 * d * static_cast<index_t>(sizeof(float)));
}

}  // namespace

void register_retrieval() {
    for (const model& shape : models)
        for (const index_t context : contexts)
            for (const double ratio : kept_ratios) {
                const std::string id = name({"gather", shape.name, context_name(context), ratio_name(ratio)});
                benchmark::RegisterBenchmark(id.c_str(), gather, shape, context, ratio)->Unit(benchmark::kMicrosecond);
            }
}

}  // namespace bench
