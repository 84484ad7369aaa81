// Times the causal attention of one prefill block (the last 128-token block of a T-token prompt) in the shape of
// SmolLM2-135M (3 KV heads, 3 query heads each, head_dim 64): the tiled kernel (prefill_attention) against the
// engine's GEMM-softmax-GEMM path it replaces (copied below from llama_context::prefill_block_ as it was, with
// OpenBLAS), run in alternation. Prints the median ms per block of each, their ratio, the ratio of their fastest
// runs, and the largest difference between their outputs.
//
// Usage: heterocache-llama-prefill-bench [threads (2)] [rounds (9)] [portable|avx2|avx512 (the fastest here)]
#include <cblas.h>

extern "C" void openblas_set_num_threads(int num_threads);  // OpenBLAS (the only BLAS this benchmark builds with)

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "model.hpp"
#include "prefill_attention.hpp"

using namespace hcllama;

namespace {

// The baseline, as in model.cpp: per KV head, one GEMM of the G x n queries against all T keys, a full softmax
// row per query (the keys after its position zeroed), one GEMM with the values.
class gemm_softmax_gemm {
 public:
  void run(const prefill_block_shape& b, const sequence_kv<float>& kv, const float* q, float* att) {
    const std::size_t hd = b.head_dim, G = b.group, n = b.tokens, T = b.first_position + n, QD = b.kv_heads * G * hd;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    qg_.resize(G * n * hd);
    og_.resize(G * n * hd);
    scores_.resize(G * n * T);
    for (std::size_t h = 0; h < b.kv_heads; ++h) {
      for (std::size_t g = 0; g < G; ++g)
        for (std::size_t t = 0; t < n; ++t)
          std::memcpy(&qg_[(g * n + t) * hd], &q[t * QD + (h * G + g) * hd], hd * sizeof(float));
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(G * n), int(T), int(hd), scale, qg_.data(), int(hd),
                  kv.keys + h * kv.head_stride, int(hd), 0.0f, scores_.data(), int(T));
      for (std::size_t g = 0; g < G; ++g)
        for (std::size_t t = 0; t < n; ++t) {
          float* row = &scores_[(g * n + t) * T];
          const std::size_t valid = b.first_position + t + 1;
          softmax_in_place(row, valid);
          std::fill(row + valid, row + T, 0.0f);
        }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(G * n), int(hd), int(T), 1.0f, scores_.data(), int(T),
                  kv.values + h * kv.head_stride, int(hd), 0.0f, og_.data(), int(hd));
      for (std::size_t g = 0; g < G; ++g)
        for (std::size_t t = 0; t < n; ++t)
          std::memcpy(&att[t * QD + (h * G + g) * hd], &og_[(g * n + t) * hd], hd * sizeof(float));
    }
  }

 private:
  // model.cpp's softmax: sum in double.
  static void softmax_in_place(float* row, std::size_t n) {
    const float mx = *std::max_element(row, row + n);
    double sum = 0;
    for (std::size_t i = 0; i < n; ++i) {
      row[i] = std::exp(row[i] - mx);
      sum += row[i];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (std::size_t i = 0; i < n; ++i) row[i] *= inv;
  }

  std::vector<float> qg_, og_, scores_;
};

double elapsed_ms(const std::function<void()>& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// Runs the contenders in alternation, `rounds` times after one warm-up round (first touch of the scratch, BLAS
// threads started), so that a change in the machine's load hits all of them alike. Returns each one's times.
// Pauses before each run: OpenBLAS's threads spin for a while after a call (about 0.1 s by default) and would take
// a core from the contender after the baseline, which in the engine runs after other kernels, not after BLAS.
std::vector<std::vector<double>> alternated_ms(std::size_t rounds,
                                               const std::vector<std::function<void()>>& contenders) {
  for (const auto& f : contenders) f();
  std::vector<std::vector<double>> ms(contenders.size());
  for (std::size_t r = 0; r < rounds; ++r)
    for (std::size_t i = 0; i < contenders.size(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      ms[i].push_back(elapsed_ms(contenders[i]));
    }
  return ms;
}

double fastest(const std::vector<double>& x) { return *std::min_element(x.begin(), x.end()); }

double median(std::vector<double> x) {
  std::nth_element(x.begin(), x.begin() + x.size() / 2, x.end());
  return x[x.size() / 2];
}

double max_abs_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, double(std::abs(a[i] - b[i])));
  return worst;
}

// The kernel named `name`, or none.
std::optional<kernel_isa> kernel_named(const char* name) {
  for (kernel_isa kernel : {kernel_isa::portable, kernel_isa::avx2, kernel_isa::avx512})
    if (std::strcmp(name, to_string(kernel)) == 0 && runs(kernel)) return kernel;
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t threads = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 2;
  const std::size_t rounds = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 9;
  const std::optional<kernel_isa> kernel = argc > 3 ? kernel_named(argv[3]) : best_isa();
  if (threads == 0 || rounds == 0 || !kernel) {
    std::fprintf(stderr, "usage: %s [threads >= 1] [rounds >= 1] [a kernel this processor runs]\n", argv[0]);
    return 2;
  }
  openblas_set_num_threads(static_cast<int>(threads));
  heterocache::host_thread_pool pool(static_cast<heterocache::index_t>(threads));
  prefill_attention tiled(pool, *kernel);
  gemm_softmax_gemm baseline;
  const std::size_t kv_heads = 3, group = 3, d = 64, n = 128, width = kv_heads * group * d;
  std::printf("prefill attention of one %zu-token block at the end of a T-token prompt: %zu KV heads x %zu, d = %zu, "
              "%zu threads, %zu alternated rounds, %s kernel (scratch %.0f KiB a thread, any T)\n",
              n, kv_heads, group, d, threads, rounds, to_string(tiled.kernel()),
              double(prefill_attention::scratch_floats_per_thread(group, d) * sizeof(float)) / 1024.0);
  double load[3] = {};
  getloadavg(load, 3);
  std::printf("load average %.2f %.2f %.2f; ms per block, medians (ratio of the fastest runs too)\n", load[0], load[1],
              load[2]);
  std::printf("%6s %14s %12s %8s %12s %13s %10s\n", "T", "gemm-sm-gemm", "tiled fp32", "ratio", "tiled bf16",
              "ratio (min)", "max |diff|");
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  for (std::size_t T : {1024, 4096, 8192}) {
    std::vector<float> keys(kv_heads * T * d), values(keys.size()), queries(n * width), out_base(n * width),
        out_tiled(n * width), out_tiled16(n * width);
    for (float& x : keys) x = normal(rng);
    for (float& x : values) x = normal(rng);
    for (float& x : queries) x = normal(rng);
    std::vector<heterocache::bf16_t> keys16(keys.size()), values16(keys.size());
    heterocache::from_floats(keys.data(), keys16.data(), static_cast<heterocache::index_t>(keys.size()));
    heterocache::from_floats(values.data(), values16.data(), static_cast<heterocache::index_t>(keys.size()));
    const prefill_block_shape block{kv_heads, group, d, T - n, n};
    const sequence_kv<float> kv{keys.data(), values.data(), T * d};
    const sequence_kv<heterocache::bf16_t> kv16{keys16.data(), values16.data(), T * d};
    const auto ms = alternated_ms(rounds, {[&] { baseline.run(block, kv, queries.data(), out_base.data()); },
                                           [&] { tiled.run(block, kv, queries.data(), out_tiled.data()); },
                                           [&] { tiled.run(block, kv16, queries.data(), out_tiled16.data()); }});
    const double base_ms = median(ms[0]), tiled_ms = median(ms[1]), bf16_ms = median(ms[2]);
    const double fastest_ratio = fastest(ms[0]) / fastest(ms[1]);
    std::printf("%6zu %14.2f %12.2f %7.2fx %12.2f %12.2fx %10.1e\n", T, base_ms, tiled_ms, base_ms / tiled_ms, bf16_ms,
                fastest_ratio, max_abs_difference(out_base, out_tiled));
  }
  return 0;
}
