// Causal attention of a prefill block: n query tokens at positions p0 .. p0 + n - 1 of one sequence against
// the sequence's keys and values at positions 0 .. p0 + n - 1 (the block's own K/V already written).
//
// Tiled over keys and queries with an online softmax (a running maximum and denominator per query row, the
// output rescaled once per key tile), so memory does not grow with the context: scratch is a few tiles per
// thread, not a score row per query. GQA-native: a task is (KV head, tile of query tokens), and the G query
// heads of that KV head times the tile's tokens form the rows of one small matrix product against each key
// tile, so every key and value row is read once for all of them. Key tiles wholly after a tile's last query
// are skipped; the tiles on the diagonal are masked. Each task is computed alone and in a fixed order, so the
// output has the same bits whatever the thread count (and a query row's result does not depend on which block
// or tile it is in).
#pragma once

#include <cstddef>
#include <vector>

#include "heterocache/attention/host_thread_pool.hpp"
#include "heterocache/tensor/element.hpp"
#include "kernel_isa.hpp"

namespace hcllama {

// The queries one call attends: `tokens` tokens at positions first_position .. first_position + tokens - 1.
struct prefill_block_shape {
  std::size_t kv_heads = 0;
  std::size_t group = 0;  // query heads per KV head; query head kv_head * group + g reads KV head kv_head
  std::size_t head_dim = 0;
  std::size_t first_position = 0;  // p0
  std::size_t tokens = 0;          // n
};

// The keys and values of one sequence: KV head h's token t starts at element h * head_stride + t * head_dim of
// `keys` (and of `values`); token index == position. Elements are widened to fp32 as they are read.
template <heterocache::KvElement E>
struct sequence_kv {
  const E* keys = nullptr;
  const E* values = nullptr;
  std::size_t head_stride = 0;  // elements from one KV head's token 0 to the next KV head's
};

// Causal prefill attention over the threads of a pool (see the file comment). Holds its scratch, grown on the
// first call of a larger shape or pool and reused after: scratch_floats_per_thread(group, head_dim) floats per
// pool thread. Not thread-safe: run() from one thread at a time (the pool's own rule).
class prefill_attention {
 public:
  static constexpr std::size_t key_tile = 64;  // keys per tile
  // Query tokens per tile (times `group` query rows): the larger size unless it would leave threads idle.
  static constexpr std::size_t max_query_tile = 64, min_query_tile = 32;

  // The tile kernel is compiled for each kernel_isa (kernel_isa.hpp); results may differ in the last bits between
  // them (the portable one has no FMA), never between thread counts. Throws std::invalid_argument unless
  // runs(kernel).
  explicit prefill_attention(heterocache::host_thread_pool& pool, kernel_isa kernel = best_isa());
  kernel_isa kernel() const noexcept { return kernel_; }

  // output[t][query_head][head_dim] = softmax_j(q . k_j / sqrt(head_dim)) v_j over the keys j <= p0 + t, for
  // queries[t][query_head][head_dim] (t < block.tokens, query_head < kv_heads * group; both arrays dense, fp32).
  // Reads keys and values at positions < p0 + n only. Accumulates in fp32. Nothing to do when block.tokens == 0.
  // Preconditions: group, head_dim, kv_heads >= 1; output does not overlap queries or the K/V.
  template <heterocache::KvElement E>
  void run(const prefill_block_shape& block, const sequence_kv<E>& kv, const float* queries, float* output);

  static std::size_t scratch_floats_per_thread(std::size_t group, std::size_t head_dim) noexcept;

 private:
  heterocache::host_thread_pool& pool_;
  kernel_isa kernel_;
  std::vector<float> scratch_;
};

extern template void prefill_attention::run(const prefill_block_shape&, const sequence_kv<float>&, const float*,
                                            float*);
extern template void prefill_attention::run(const prefill_block_shape&, const sequence_kv<heterocache::fp16_t>&,
                                            const float*, float*);
extern template void prefill_attention::run(const prefill_block_shape&, const sequence_kv<heterocache::bf16_t>&,
                                            const float*, float*);

}  // namespace hcllama
