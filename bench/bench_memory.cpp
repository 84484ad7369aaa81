// The bandwidth ceiling: reading (summing) and copying a buffer far larger than the caches.
#include <cstring>
#include <vector>

#include <benchmark/benchmark.h>

#include <heterocache/attention/host_thread_pool.hpp>

#include "bench_common.hpp"

namespace bench {
namespace {

constexpr index_t buffer_floats = index_t{64} << 20;  // 256 MiB

const std::vector<float>& source() {
    static const std::vector<float> data = [] {
        std::vector<float> v(static_cast<std::size_t>(buffer_floats));
        fill(v, 4);
        return v;
    }();
    return data;
}

// Sums the buffer's words, split into `threads` equal parts (sum_of_part).
void memory_read(benchmark::State& state, index_t threads) {
    const std::vector<float>& data = source();
    heterocache::host_thread_pool pool(threads);
    std::vector<std::uint64_t> partial(static_cast<std::size_t>(threads));
    for (auto _ : state) {
        pool.for_each(threads, [&](index_t t) {
            partial[static_cast<std::size_t>(t)] = sum_of_part(data.data(), buffer_floats, threads, t);
        });
        benchmark::DoNotOptimize(partial.data());
    }
    state.SetBytesProcessed(state.iterations() * buffer_floats * static_cast<index_t>(sizeof(float)));
    state.SetItemsProcessed(state.iterations() * buffer_floats);
}

// memcpy of the buffer; bytes/s counts the bytes copied (each is read once and written once).
void memory_copy(benchmark::State& state) {
    const std::vector<float>& data = source();
    std::vector<float> target(data.size(), 0.0f);
    for (auto _ : state) {
        std::memcpy(target.data(), data.data(), data.size() * sizeof(float));
        benchmark::DoNotOptimize(target.data());
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(state.iterations() * buffer_floats * static_cast<index_t>(sizeof(float)));
    state.SetItemsProcessed(state.iterations() * buffer_floats);
}

}  // namespace

void register_memory() {
    benchmark::RegisterBenchmark("memory/read/256MiB/threads:1", memory_read, index_t{1})->UseRealTime()->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("memory/read/256MiB/threads:2", memory_read, index_t{2})->UseRealTime()->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("memory/copy/256MiB", memory_copy)->UseRealTime()->Unit(benchmark::kMicrosecond);
}

}  // namespace bench
