// The engine's decode attention (selection_attention over a paged selection) in the shape of SmolLM2-135M:
// every KV head of the 30 layers (90 rows, 3 query heads each, head_dim 64), each row `tokens` tokens in pages
// of 16 placed apart in the pool, as a decode step over the hot tier attends them. Each iteration also times a
// plain read (a sum) of the same pool bytes on the same threads, so the counter `of_read` is the attention's
// K/V bytes per second over the read's, measured beside it in the same run. `kernel` is the instruction set of
// the attention's kernels (1 AVX2, 2 AVX-512; one the processor lacks is skipped).
//
// Usage: heterocache-llama-decode-bench [Google Benchmark flags], e.g. --benchmark_repetitions=5
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include <benchmark/benchmark.h>

#include "attention.hpp"
#include "bench_read.hpp"
#include "kernel_isa.hpp"
#include "heterocache/tensor/element.hpp"

namespace {

using hcllama::selection_attention;
using hcllama::bench::read_all;
namespace hc = heterocache;

constexpr std::size_t kRows = 90, kGroup = 3, kHeadDim = 64, kPageSize = 16;

template <class E>
E element_of(float x) {
  if constexpr (std::is_same_v<E, float>) return x;
  else return hc::from_float<E>(x);
}

// The hot pages of kRows rows of `tokens` tokens each, the pages of all rows shuffled over the pool.
template <class E>
struct hot_pages {
  std::vector<E> k, v;
  std::vector<hc::page_index_t> indptr, indices, last_page_len;

  explicit hot_pages(std::size_t tokens) {
    const std::size_t pages_per_row = (tokens + kPageSize - 1) / kPageSize, pages = kRows * pages_per_row;
    k.resize(pages * kPageSize * kHeadDim);
    v.resize(k.size());
    std::mt19937 rng(7);
    std::normal_distribution<float> normal;
    for (std::size_t i = 0; i < k.size(); ++i) k[i] = element_of<E>(normal(rng)), v[i] = element_of<E>(normal(rng));
    // Runs of 8 pages stay together (a refresh writes a head's pages in runs), the runs shuffled.
    std::vector<hc::page_index_t> runs(pages / 8 + 1);
    std::iota(runs.begin(), runs.end(), 0);
    std::shuffle(runs.begin(), runs.end(), rng);
    std::vector<hc::page_index_t> order;
    for (hc::page_index_t run : runs)
      for (hc::page_index_t p = run * 8; p < run * 8 + 8; ++p)
        if (static_cast<std::size_t>(p) < pages) order.push_back(p);
    indptr.push_back(0);
    for (std::size_t r = 0; r < kRows; ++r) {
      for (std::size_t p = 0; p < pages_per_row; ++p) indices.push_back(order[r * pages_per_row + p]);
      indptr.push_back(static_cast<hc::page_index_t>(indices.size()));
      last_page_len.push_back(static_cast<hc::page_index_t>((tokens - 1) % kPageSize + 1));
    }
  }
  hc::basic_paged_selection<E> selection() const {
    const auto n = [](std::size_t x) { return static_cast<hc::index_t>(x); };
    return {n(kRows), n(kRows), n(kGroup), n(kHeadDim), n(kPageSize), indptr.data(), indices.data(),
            last_page_len.data(), k.data(), v.data(), {}};
  }
  std::size_t bytes() const noexcept { return 2 * k.size() * sizeof(E); }
};

template <class E>
void decode_attention(benchmark::State& state) {
  const auto tokens = static_cast<std::size_t>(state.range(0));
  const auto threads = static_cast<hc::index_t>(state.range(1));
  const auto kernel = static_cast<hcllama::kernel_isa>(state.range(2));
  if (!hcllama::runs(kernel)) {
    state.SkipWithError("this processor does not run the kernel");
    return;
  }
  const hot_pages<E> pages(tokens);
  const hc::basic_paged_selection<E> sel = pages.selection();
  hc::host_thread_pool pool(threads);
  selection_attention attention(pool);
  attention.kernel = kernel;
  std::vector<float> q(kRows * kGroup * kHeadDim), out(q.size());
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  for (float& x : q) x = normal(rng);
  std::vector<std::uint64_t> sums(static_cast<std::size_t>(pool.size()), 0);
  double attention_s = 0.0, read_s = 0.0;
  using clock = std::chrono::steady_clock;
  for (auto _ : state) {
    const auto t0 = clock::now();
    attention.run(sel, q.data(), out.data(), 0.125f);
    benchmark::DoNotOptimize(out.data());
    const auto t1 = clock::now();
    // The plain read of the same bytes (the K pool, then the V pool), outside the measured time.
    state.PauseTiming();
    const auto r0 = clock::now();
    benchmark::DoNotOptimize(read_all(pool, pages.k.data(), pages.bytes() / 2, sums) +
                             read_all(pool, pages.v.data(), pages.bytes() / 2, sums));
    const auto r1 = clock::now();
    state.ResumeTiming();
    attention_s += std::chrono::duration<double>(t1 - t0).count();
    read_s += std::chrono::duration<double>(r1 - r0).count();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(pages.bytes()));
  state.counters["of_read"] = read_s / attention_s;  // the attention's bytes/s over the plain read's
}

}  // namespace

// kernel: 1 avx2, 2 avx512 (kernel_isa; those this processor lacks are skipped)
constexpr auto kAvx2 = static_cast<std::int64_t>(hcllama::kernel_isa::avx2),
               kAvx512 = static_cast<std::int64_t>(hcllama::kernel_isa::avx512);
BENCHMARK(decode_attention<hc::bf16_t>)->ArgsProduct({{2048, 8192}, {1, 2}, {kAvx2, kAvx512}})
    ->ArgNames({"tokens", "threads", "kernel"})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(decode_attention<hc::fp16_t>)->ArgsProduct({{8192}, {1, 2}, {kAvx2, kAvx512}})
    ->ArgNames({"tokens", "threads", "kernel"})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(decode_attention<float>)->ArgsProduct({{8192}, {1, 2}, {kAvx2, kAvx512}})
    ->ArgNames({"tokens", "threads", "kernel"})->UseRealTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
