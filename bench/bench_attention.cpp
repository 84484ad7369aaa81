// Decode-step attention of one layer, batch 1, over paged selections (pages of 16 tokens, the rows laid
// out as a kv_cache lays them out): full attention (every token of every row) against selections keeping r
// of every row, on one thread and on two; on two threads also with long rows split into chunks
// (`attention_split`: every thread busy although a layer has only Hkv rows). And the full step alternated
// with a plain read of the same K/V bytes (`attention_vs_read`).
#include <chrono>
#include <memory>
#include <string>
#include <tuple>

#include <benchmark/benchmark.h>

#include <heterocache/attention/decode_attention.hpp>
#include <heterocache/attention/split_attention.hpp>
#include <heterocache/tensor/element.hpp>

#include "bench_common.hpp"

namespace bench {
namespace {

//! One layer's step as an engine runs it: on one thread, rows over the pool, or rows split over the pool.
struct attention_step {
    const layer_data& data;
    paged_rows rows;
    heterocache::paged_selection selection;
    std::vector<float> output, lse;
    heterocache::host_thread_pool pool;
    heterocache::split_attention_workspace workspace;
    index_t threads;
    bool split;

    attention_step(const layer_data& layer, double ratio, index_t threads_, bool split_)
        : data(layer),
          rows(layer, uniform_rows(layer, static_cast<index_t>(ratio * static_cast<double>(layer.context)))),
          selection(rows.selection(layer.keys.data(), layer.values.data())),
          output(layer.queries.size()),
          lse(static_cast<std::size_t>(layer.shape.query_heads)),
          pool(threads_),
          threads(threads_),
          split(split_) {}

    void run() {
        const float scale = 0.125f;
        if (split)
            heterocache::decode_attention(selection, data.queries.data(), output.data(), lse.data(), scale, pool, workspace);
        else if (threads == 1)
            heterocache::decode_attention(selection, data.queries.data(), output.data(), lse.data(), scale);
        else
            heterocache::decode_attention(selection, data.queries.data(), output.data(), lse.data(), scale, pool);
        benchmark::DoNotOptimize(output.data());
        benchmark::ClobberMemory();
    }
};

void attention(benchmark::State& state, model shape, index_t context, double ratio, index_t threads, bool split) {
    attention_step step(layer(shape, context), ratio, threads, split);
    for (auto _ : state) step.run();
    const index_t tokens = step.selection.total_tokens();
    state.SetItemsProcessed(state.iterations() * tokens);  // tokens attended (each by the G heads of its row)
    state.SetBytesProcessed(state.iterations() * tokens * 2 * shape.head_dim * static_cast<index_t>(sizeof(float)));
    state.counters["tokens"] = static_cast<double>(tokens);
}

// The full step and a plain read (a sum, as `memory/read`) of the same K and V arrays on the same threads,
// alternated in one loop and timed apart. Counter `of_read` = read time / step time: the step's K/V read
// rate over the memory-read rate measured beside it, robust to the machine's speed drifting between
// benchmarks (the layer is far larger than the caches, so neither finds the other's data cached).
void attention_vs_read(benchmark::State& state, model shape, index_t context, index_t threads, bool split) {
    attention_step step(layer(shape, context), 1.0, threads, split);
    const layer_data& data = step.data;
    const auto floats = static_cast<index_t>(data.keys.size());
    std::vector<std::uint64_t> partial(static_cast<std::size_t>(threads));
    const auto read = [&](index_t t) {
        partial[static_cast<std::size_t>(t)] = sum_of_part(data.keys.data(), floats, threads, t) +
                                               sum_of_part(data.values.data(), floats, threads, t);
    };
    using clock = std::chrono::steady_clock;
    clock::duration attending{}, reading{};
    for (auto _ : state) {
        const auto start = clock::now();
        step.run();
        const auto middle = clock::now();
        step.pool.for_each(threads, read);
        benchmark::DoNotOptimize(partial.data());
        benchmark::ClobberMemory();
        attending += middle - start;
        reading += clock::now() - middle;
    }
    const double bytes = static_cast<double>(state.iterations()) * 2.0 * static_cast<double>(data.keys.size() * sizeof(float));
    const double step_seconds = std::chrono::duration<double>(attending).count();
    const double read_seconds = std::chrono::duration<double>(reading).count();
    state.counters["of_read"] = read_seconds / step_seconds;
    state.counters["step_GBps"] = bytes / step_seconds / 1e9;
    state.counters["read_GBps"] = bytes / read_seconds / 1e9;
    // Both passes read the K/V bytes: the rates of the whole loop.
    state.SetBytesProcessed(state.iterations() * 4 * static_cast<index_t>(data.keys.size() * sizeof(float)));
    state.SetItemsProcessed(state.iterations() * step.selection.total_tokens());
}

// The same step over 16-bit hot pools (converted once here, outside the timing): half the bytes read.
template <class E>
void attention_half(benchmark::State& state, model shape, index_t context, double ratio) {
    const layer_data& data = layer(shape, context);
    const paged_rows rows(data, uniform_rows(data, static_cast<index_t>(ratio * static_cast<double>(context))));
    std::vector<E> keys(data.keys.size()), values(data.values.size());
    heterocache::convert_elements(data.keys.data(), keys.data(), static_cast<index_t>(keys.size()));
    heterocache::convert_elements(data.values.data(), values.data(), static_cast<index_t>(values.size()));
    const heterocache::basic_paged_selection<E> selection = rows.selection(keys.data(), values.data());
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
    for (const model& shape : models)
        for (const index_t context : contexts)
            for (const auto& [threads, split, how] : {std::tuple{index_t{1}, false, "threads:1"},
                                                      std::tuple{index_t{2}, true, "threads:2/split"}}) {
                const std::string id = name({"attention_vs_read", shape.name, context_name(context), how});
                benchmark::RegisterBenchmark(id.c_str(), attention_vs_read, shape, context, threads, split)
                    ->UseRealTime()
                    ->Unit(benchmark::kMicrosecond);
            }
    register_attention_half<heterocache::fp16_t>("attention_fp16");
    register_attention_half<heterocache::bf16_t>("attention_bf16");
}

}  // namespace bench
