// Decode attention of the engine over a HeteroCache CSR selection.
//
// One task computes one (row, chunk): the G query heads that share the row's
// KV head, over a contiguous part of the row's slots, so every key and value
// is read once for the whole group (GQA-shared reads). Rows longer than
// `min_split` tokens are cut into as many chunks as the pool has threads and
// the partial results are merged exactly through their log-sum-exp. A 16-bit
// selection (--kv-format fp16|bf16) goes through the library's host kernel
// instead (each key and value widened to fp32 as read; rows longer than 4096
// tokens split into chunks over the pool, split_attention.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <variant>
#include <vector>

#include "heterocache/attention/csr_selection.hpp"
#include "heterocache/attention/host_thread_pool.hpp"
#include "heterocache/attention/split_attention.hpp"
#include "heterocache/tensor/element.hpp"

namespace hcllama {

// Where attend_slots copies the scaled scores of its first `count` slots:
// to[g * stride + i] (nothing when `to` is null).
struct score_copy {
  float* to = nullptr;
  std::size_t stride = 0, count = 0;
};

// Attention of `group` query heads (q: [group][head_dim]) over the keys/values
// at `slots` (k, v: [slot][head_dim]). Writes out: [group][head_dim] and, if
// lse is not null, the natural log of each head's softmax denominator.
// scratch: at least group * slots.size() floats. Allocates nothing.
void attend_slots(const float* q, std::size_t group, std::size_t head_dim, const float* k, const float* v,
                  const std::int64_t* slots, std::size_t n, float scale, float* out, float* lse, float* scratch,
                  const score_copy& capture = {});

// A layer's CSR selection over hot slots of any element type the caches store.
using kv_selection = std::variant<heterocache::csr_selection, heterocache::basic_csr_selection<heterocache::fp16_t>,
                                  heterocache::basic_csr_selection<heterocache::bf16_t>>;

// Decode attention of one layer over a CSR selection (rows = KV heads of one
// sequence). queries/output: [query_head][head_dim]. Writes the scores the
// selection's captures ask for, so the cache's monitor need not recompute them.
class selection_attention {
 public:
  explicit selection_attention(std::size_t threads);
  void run(const heterocache::csr_selection& sel, const float* queries, float* output, float scale);
  void run(const kv_selection& sel, const float* queries, float* output, float scale);
  std::size_t threads() const noexcept { return static_cast<std::size_t>(pool_.size()); }
  std::size_t min_split = 512;  // rows shorter than this are not split

 private:
  heterocache::host_thread_pool pool_;
  heterocache::split_attention_workspace split_;
  std::vector<float> scratch_, part_out_, part_lse_;
};

}  // namespace hcllama
