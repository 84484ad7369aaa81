#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "prefill_attention.hpp"

using namespace hcllama;

namespace {

// One sequence's keys and values ([kv_head][capacity][head_dim], token index == position) and a block of queries
// ([token][query_head][head_dim]), normal random. Every position at or after the block's end holds NaN: the
// causal kernel must never read it.
template <heterocache::KvElement E>
struct sequence_data {
  prefill_block_shape block;
  std::size_t capacity;
  std::vector<E> keys, values;
  std::vector<float> queries;

  sequence_data(const prefill_block_shape& b, unsigned seed)
      : block(b), capacity(b.first_position + b.tokens + 5), keys(b.kv_heads * capacity * b.head_dim),
        values(keys.size()), queries(b.tokens * b.kv_heads * b.group * b.head_dim) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal;
    std::normal_distribution<float> sharp(0.0f, 2.0f);  // peaked softmax rows, not near-uniform ones
    const std::size_t end = b.first_position + b.tokens;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      const bool written = (i / b.head_dim) % capacity < end;
      keys[i] = heterocache::from_float<E>(written ? normal(rng) : std::numeric_limits<float>::quiet_NaN());
      values[i] = heterocache::from_float<E>(written ? normal(rng) : std::numeric_limits<float>::quiet_NaN());
    }
    for (float& q : queries) q = sharp(rng);
  }

  sequence_kv<E> kv() const { return {keys.data(), values.data(), capacity * block.head_dim}; }

  std::vector<float> attend(std::size_t threads, kernel_isa kernel = best_isa()) const {
    heterocache::host_thread_pool pool(static_cast<heterocache::index_t>(threads));
    prefill_attention attention(pool, kernel);
    std::vector<float> out(queries.size(), std::numeric_limits<float>::quiet_NaN());
    attention.run(block, kv(), queries.data(), out.data());
    return out;
  }

  // Causal softmax attention in float64, one full score row per query, over the K/V as stored.
  std::vector<double> reference() const {
    const std::size_t d = block.head_dim, heads = block.kv_heads * block.group;
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    std::vector<double> out(queries.size()), scores;
    for (std::size_t t = 0; t < block.tokens; ++t)
      for (std::size_t qh = 0; qh < heads; ++qh) {
        const float* q = &queries[(t * heads + qh) * d];
        const std::size_t base = qh / block.group * capacity * d, visible = block.first_position + t + 1;
        scores.assign(visible, 0.0);
        for (std::size_t j = 0; j < visible; ++j) {
          for (std::size_t c = 0; c < d; ++c) scores[j] += double(q[c]) * heterocache::to_float(keys[base + j * d + c]);
          scores[j] *= scale;
        }
        const double mx = *std::max_element(scores.begin(), scores.end());
        double sum = 0;
        for (double& s : scores) sum += (s = std::exp(s - mx));
        double* o = &out[(t * heads + qh) * d];
        for (std::size_t j = 0; j < visible; ++j)
          for (std::size_t c = 0; c < d; ++c) o[c] += scores[j] / sum * heterocache::to_float(values[base + j * d + c]);
      }
    return out;
  }
};

// The largest, over the output rows (one per token and query head), of max |out - ref| / max |ref|.
double max_relative_error(const std::vector<float>& out, const std::vector<double>& ref, std::size_t head_dim) {
  double worst = 0;
  for (std::size_t row = 0; row < out.size(); row += head_dim) {
    double err = 0, mag = 0;
    for (std::size_t c = row; c < row + head_dim; ++c) {
      const double diff = std::abs(out[c] - ref[c]);  // NaN where the kernel read past the block
      err = std::isnan(diff) ? std::numeric_limits<double>::infinity() : std::max(err, diff);
      mag = std::max(mag, std::abs(ref[c]));
    }
    worst = std::max(worst, err / mag);
  }
  return worst;
}

// The kernels this processor runs: the portable one, and the AVX2 and AVX-512 ones where it has them.
std::vector<kernel_isa> kernels_here() {
  std::vector<kernel_isa> here;
  for (kernel_isa kernel : {kernel_isa::portable, kernel_isa::avx2, kernel_isa::avx512})
    if (runs(kernel)) here.push_back(kernel);
  return here;
}

template <heterocache::KvElement E>
void check_against_reference(const prefill_block_shape& block) {
  const sequence_data<E> data(block, 42);
  const std::vector<double> ref = data.reference();
  for (kernel_isa kernel : kernels_here()) {
    const double err = max_relative_error(data.attend(2, kernel), ref, block.head_dim);
    const std::string kernel_name = to_string(kernel);
    CAPTURE(kernel_name);
    CAPTURE(block.group);
    CAPTURE(block.head_dim);
    CAPTURE(block.first_position);
    CAPTURE(block.tokens);
    CHECK(err <= 1e-5);
  }
}

}  // namespace

TEST_CASE("prefill attention matches a float64 causal softmax, fp32 and bf16 K/V, first and later blocks") {
  struct block_place {
    std::size_t first_position, tokens;
  };
  // p0 = 0 (the prompt's first block) and p0 > 0 (a later block), up to 4096 keys; tiles cut anywhere
  const block_place places[] = {{0, 1}, {4095, 1}, {0, 7}, {1000, 7}, {0, 128}, {3968, 128}};
  for (std::size_t group : {1, 3, 4})
    for (std::size_t head_dim : {64, 128})
      for (const block_place& place : places) {
        const prefill_block_shape block{2, group, head_dim, place.first_position, place.tokens};
        check_against_reference<float>(block);
        check_against_reference<heterocache::bf16_t>(block);
      }
}

TEST_CASE("prefill attention reads fp16 K/V and any head_dim") {
  check_against_reference<heterocache::fp16_t>({2, 3, 64, 200, 40});
  check_against_reference<float>({1, 2, 72, 90, 33});  // 72: columns after the last whole register block
  check_against_reference<float>({1, 1, 20, 5, 3});
}

TEST_CASE("prefill attention has the same bits whatever the thread count") {
  const sequence_data<float> data({3, 3, 64, 300, 128}, 7);
  for (kernel_isa kernel : kernels_here()) {
    const std::string kernel_name = to_string(kernel);
    CAPTURE(kernel_name);
    const std::vector<float> one = data.attend(1, kernel);
    for (std::size_t threads : {2, 3, 8}) {  // 8: more threads than tasks of the larger query tile, the smaller one
      const std::vector<float> many = data.attend(threads, kernel);
      CHECK(std::memcmp(one.data(), many.data(), one.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("prefill attention refuses a kernel this processor or build does not run") {
  heterocache::host_thread_pool pool(1);
  for (kernel_isa kernel : {kernel_isa::avx2, kernel_isa::avx512})
    if (!runs(kernel)) CHECK_THROWS_AS(prefill_attention(pool, kernel), std::invalid_argument);
  CHECK(runs(best_isa()));
}

TEST_CASE("a later block gives the rows of one big block's second half") {
  const std::size_t kv_heads = 2, group = 3, d = 64, half = 128, heads = kv_heads * group;
  const sequence_data<heterocache::bf16_t> whole({kv_heads, group, d, 0, 2 * half}, 3);
  sequence_data<heterocache::bf16_t> second = whole;
  second.block = {kv_heads, group, d, half, half};
  second.queries.assign(whole.queries.begin() + half * heads * d, whole.queries.end());
  for (kernel_isa kernel : kernels_here()) {
    const std::string kernel_name = to_string(kernel);
    CAPTURE(kernel_name);
    const std::vector<float> all = whole.attend(2, kernel), later = second.attend(2, kernel);
    double worst = 0;
    for (std::size_t i = 0; i < later.size(); ++i)
      worst = std::max(worst, double(std::abs(later[i] - all[half * heads * d + i])));
    CHECK(worst <= 1e-6);
  }
}

TEST_CASE("prefill attention of no token writes nothing") {
  const sequence_data<float> data({2, 3, 64, 10, 0}, 1);
  heterocache::host_thread_pool pool(2);
  prefill_attention attention(pool);
  std::vector<float> output(8, 5.0f);
  attention.run(data.block, data.kv(), data.queries.data(), output.data());
  CHECK(output == std::vector<float>(8, 5.0f));
}
