// Decode-step attention of one layer, batch 1: full attention (a CSR selection of every token) against
// selections keeping r of every row, on one thread and on two; on two threads also with long rows split
// into chunks (`attention_split`: every thread busy although a layer has only Hkv rows).
#include <memory>
#include <string>

#include <benchmark/benchmark.h>

#include <heterocache/attention/decode_attention.hpp>
#include <heterocache/attention/half_precision.hpp>
#include <heterocache/attention/split_attention.hpp>

#include "bench_common.hpp"

namespace bench {
namespace {

void attention(benchmark::State& state, model shape, index_t context, double ratio, index_t threads, bool split) {
    const layer_data& data = layer(shape, context);
    const auto kept = static_cast<index_t>(ratio * static_cast<double>(context));
    const selection_arrays arrays(data, kept);
    const heterocache::csr_selection selection = arrays.view(data);
    std::vector<float> output(data.queries.size()), lse(static_cast<std::size_t>(shape.query_heads));
    heterocache::host_thread_pool pool(threads);
    heterocache::split_attention_workspace workspace;
    const float scale = 0.125f;
    for (auto _ : state) {
        if (split)
            heterocache::decode_attention(selection, data.queries.data(), output.data(), lse.data(), scale, pool, workspace);
        else if (threads == 1)
            heterocache::decode_attention(selection, data.queries.data(), output.data(), lse.data(), scale);
        else
            heterocache::decode_attention(selection, data.queries.data(), output.data(), lse.data(), scale, pool);
        benchmark::DoNotOptimize(output.data());
        benchmark::ClobberMemory();
    }
    const index_t tokens = selection.total_tokens();
    state.SetItemsProcessed(state.iterations() * tokens);  // tokens attended (each by the G heads of its row)
    state.SetBytesProcessed(state.iterations() * tokens * 2 * shape.head_dim * static_cast<index_t>(sizeof(float)));
    state.counters["tokens"] = static_cast<double>(tokens);
}

// The same step over 16-bit K/V (converted once here, outside the timing): half the bytes read.
template <class E>
void attention_half(benchmark::State& state, model shape, index_t context, double ratio) {
    const layer_data& data = layer(shape, context);
    const auto kept = static_cast<index_t>(ratio * static_cast<double>(context));
    const selection_arrays arrays(data, kept);
    std::vector<E> keys(data.keys.size()), values(data.values.size());
    heterocache::from_floats(data.keys.data(), keys.data(), static_cast<index_t>(keys.size()));
    heterocache::from_floats(data.values.data(), values.data(), static_cast<index_t>(values.size()));
    const heterocache::basic_csr_selection<E> selection{data.rows(),   shape.kv_heads, shape.group(), shape.head_dim,
                                                        arrays.indptr, arrays.indices, keys.data(),   values.data(), {}};
    std::vector<float> output(data.queries.size()), lse(static_cast<std::size_t>(shape.query_heads));
    for (auto _ : state) {
        heterocache::decode_attention(selection, data.queries.data(), output.data(), lse.data(), 0.125f);
        benchmark::DoNotOptimize(output.data());
        benchmark::ClobberMemory();
    }
    const index_t tokens = selection.total_tokens();
    state.SetItemsProcessed(state.iterations() * tokens);
    state.SetBytesProcessed(state.iterations() * tokens * 2 * shape.head_dim * static_cast<index_t>(sizeof(E)));
    state.counters["tokens"] = static_cast<double>(tokens);
}

// Registers the 16-bit rows of element type `E` as `type/<model>/<T>/rX/threads:1`.
template <class E>
void register_attention_half(const char* type) {
    for (const model& shape : models)
        for (const index_t context : contexts)
            for (const double ratio : {1.0, 0.25}) {
                const std::string id = name({type, shape.name, context_name(context), ratio_name(ratio), "threads:1"});
                benchmark::RegisterBenchmark(id.c_str(), attention_half<E>, shape, context, ratio)
                    ->UseRealTime()
                    ->Unit(benchmark::kMicrosecond);
            }
}

}  // namespace

void register_attention() {
    for (const model& shape : models)
        for (const index_t context : contexts)
            for (const index_t threads : {1, 2})
                for (const double ratio : {1.0, 0.5, 0.25, 0.1}) {
                    const std::string id = name({"attention", shape.name, context_name(context), ratio_name(ratio),
                                                 threads_name(threads)});
                    benchmark::RegisterBenchmark(id.c_str(), attention, shape, context, ratio, threads, false)
                        ->UseRealTime()
                        ->Unit(benchmark::kMicrosecond);
                }
    for (const model& shape : models)
        for (const index_t context : contexts)
            for (const double ratio : {1.0, 0.25}) {
                const std::string id =
                    name({"attention_split", shape.name, context_name(context), ratio_name(ratio), threads_name(2)});
                benchmark::RegisterBenchmark(id.c_str(), attention, shape, context, ratio, 2, true)
                    ->UseRealTime()
                    ->Unit(benchmark::kMicrosecond);
            }
    register_attention_half<heterocache::fp16_t>("attention_fp16");
    register_attention_half<heterocache::bf16_t>("attention_bf16");
}

}  // namespace bench
