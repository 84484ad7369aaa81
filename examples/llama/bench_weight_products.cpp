// The weight products of one decode step in the shape of SmolLM2-135M: the 7 matrices of each of the 30 layers
// (Q4_1, as the file of the README's demo stores them) and the Q8_0 output projection over the 49,152-token
// vocabulary, random codes, multiplied with one input vector, for each activation format. Each iteration also
// times a plain read (a sum) of the same weight bytes on the same threads, so the counter `of_read` is the
// products' weight bytes per second over the read's, measured beside them in the same run.
//
// Usage: heterocache-llama-weights-bench [Google Benchmark flags], e.g. --benchmark_repetitions=5
#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include "bench_read.hpp"
#include "quantized_matrix.hpp"

namespace {

namespace hc = heterocache;
using namespace hcllama;

constexpr std::size_t kLayers = 30, kEmbd = 576, kKv = 192, kFfn = 1536, kVocab = 49152;

// Random blocks of `rows` x `cols` weights of type t (Q4_1 or Q8_0), with small normal scales.
void append_random_rows(std::vector<std::uint8_t>& out, ggml_type t, std::size_t rows, std::size_t cols,
                        std::mt19937& rng) {
  std::normal_distribution<float> scale(0.0f, 0.01f);
  const std::size_t bytes = type_size(t);
  for (std::size_t b = 0; b < rows * cols / 32; ++b) {
    std::uint8_t block[34];
    for (std::size_t i = 0; i < bytes; ++i) block[i] = static_cast<std::uint8_t>(rng());
    const std::uint16_t d = fp32_to_fp16(scale(rng)), m = fp32_to_fp16(scale(rng));
    std::memcpy(block, &d, 2);
    if (t == ggml_type::q4_1) std::memcpy(block + 2, &m, 2);
    out.insert(out.end(), block, block + bytes);
  }
}

// The weights of one decode step, in one buffer (the order a step reads them), and their matrices.
struct step_weights {
  std::vector<std::uint8_t> bytes;
  std::vector<quantized_matrix> matrices;

  step_weights() {
    struct shape {
      ggml_type type;
      std::size_t rows, cols;
    };
    std::vector<shape> shapes;
    for (std::size_t l = 0; l < kLayers; ++l)
      for (shape s : {shape{ggml_type::q4_1, kEmbd, kEmbd}, {ggml_type::q4_1, kKv, kEmbd}, {ggml_type::q4_1, kKv, kEmbd},
                      {ggml_type::q4_1, kEmbd, kEmbd}, {ggml_type::q4_1, kFfn, kEmbd}, {ggml_type::q4_1, kFfn, kEmbd},
                      {ggml_type::q4_1, kEmbd, kFfn}})
        shapes.push_back(s);
    shapes.push_back({ggml_type::q8_0, kVocab, kEmbd});
    std::mt19937 rng(5);
    std::vector<std::size_t> offsets;
    for (const shape& s : shapes) {
      offsets.push_back(bytes.size());
      append_random_rows(bytes, s.type, s.rows, s.cols, rng);
    }
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      const std::size_t size = shapes[i].rows * shapes[i].cols / 32 * type_size(shapes[i].type);
      matrices.emplace_back("bench", shapes[i].type, shapes[i].rows, shapes[i].cols,
                            std::span<const std::uint8_t>(bytes.data() + offsets[i], size), nullptr);
    }
  }
};

const step_weights& weights() {
  static const step_weights w;
  return w;
}

void weight_products(benchmark::State& state) {
  const auto format = static_cast<activation_format>(state.range(0));
  const auto threads = static_cast<hc::index_t>(state.range(1));
  const step_weights& w = weights();
  hc::host_thread_pool pool(threads);
  matrix_multiplier mm(pool, best_isa(), format);
  std::vector<float> x(kFfn), y(kVocab);
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  for (float& v : x) v = normal(rng);
  const auto step = [&] {
    for (const quantized_matrix& m : w.matrices) mm.matvec(m, x.data(), y.data());
  };
  step();  // the first int8 product regroups the rows (once per matrix): not timed
  std::vector<std::uint64_t> sums(static_cast<std::size_t>(pool.size()), 0);
  double products_s = 0.0, read_s = 0.0;
  using clock = std::chrono::steady_clock;
  for (auto _ : state) {
    const auto t0 = clock::now();
    step();
    benchmark::DoNotOptimize(y.data());
    const auto t1 = clock::now();
    state.PauseTiming();
    const auto r0 = clock::now();
    benchmark::DoNotOptimize(hcllama::bench::read_all(pool, w.bytes.data(), w.bytes.size(), sums));
    const auto r1 = clock::now();
    state.ResumeTiming();
    products_s += std::chrono::duration<double>(t1 - t0).count();
    read_s += std::chrono::duration<double>(r1 - r0).count();
  }
  state.SetLabel(to_string(format));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(w.bytes.size()));
  state.counters["of_read"] = read_s / products_s;  // the products' weight bytes/s over the plain read's
}

}  // namespace

BENCHMARK(weight_products)
    ->ArgsProduct({{static_cast<int>(activation_format::fp32), static_cast<int>(activation_format::int16),
                    static_cast<int>(activation_format::int8)},
                   {1, 2}})
    ->ArgNames({"format", "threads"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
