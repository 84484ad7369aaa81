// Decode attention of the engine over a HeteroCache paged selection.
//
// One task computes one (row, chunk): the G query heads that share the row's
// KV head, over a run of whole pages of the row, so every key and value is
// read once for the whole group (GQA-shared reads) and each page is one
// contiguous [page_size][head_dim] block. Rows longer than `min_split` tokens
// are cut into as many chunks as the pool has threads, on page boundaries, and
// the partial results are merged exactly through their log-sum-exp. Hot pages
// of float, fp16 or bf16 (--kv-format): each key and value widened to fp32 as
// it is read, fp32 accumulation. Compiled once per kernel_isa (kernel_isa.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <variant>
#include <vector>

#include "heterocache/attention/host_thread_pool.hpp"
#include "heterocache/attention/paged_selection.hpp"
#include "heterocache/tensor/element.hpp"
#include "kernel_isa.hpp"

namespace hcllama {

// Where attend_pages copies the scaled scores of its first `count` tokens:
// to[g * stride + i] (nothing when `to` is null).
struct score_copy {
  float* to = nullptr;
  std::size_t stride = 0, count = 0;
};

// The first `tokens` tokens of a run of pages: token i at pool slot
// pages[i / page_size] * page_size + i % page_size (every page full but the last).
struct page_run {
  const heterocache::page_index_t* pages = nullptr;
  std::size_t page_size = 1;
  std::size_t tokens = 0;
};

// Attention of `group` query heads (q: [group][head_dim]) over the tokens of
// `run` in the pools k, v ([slot][head_dim]). Writes out: [group][head_dim]
// and, if lse is not null, the natural log of each head's softmax denominator
// (-inf for no token). scratch: at least group * run.tokens floats. The result
// depends on the tokens and page_size only, not on where the pages lie.
// Allocates nothing.
// E: float, heterocache::fp16_t or heterocache::bf16_t (widened to float as read; fp32 accumulation).
template <class E>
void attend_pages(const float* q, std::size_t group, std::size_t head_dim, const E* k, const E* v,
                  const page_run& run, float scale, float* out, float* lse, float* scratch,
                  const score_copy& capture = {});

// A layer's paged selection over hot pages of any element type the caches store.
using kv_selection = std::variant<heterocache::paged_selection, heterocache::basic_paged_selection<heterocache::fp16_t>,
                                  heterocache::basic_paged_selection<heterocache::bf16_t>>;

// Decode attention of one layer over a paged selection (rows = KV heads of one
// sequence). queries/output: [query_head][head_dim]. Writes and stamps
// (heterocache::mark_written) the scores the selection's captures ask for, so
// the cache's monitor need not recompute them.
class selection_attention {
 public:
  // Runs on the threads of `pool`, which it borrows (the pool must outlive it).
  explicit selection_attention(heterocache::host_thread_pool& pool);
  // E: float, heterocache::fp16_t or heterocache::bf16_t.
  template <class E>
  void run(const heterocache::basic_paged_selection<E>& sel, const float* queries, float* output, float scale);
  void run(const kv_selection& sel, const float* queries, float* output, float scale);
  std::size_t threads() const noexcept { return static_cast<std::size_t>(pool_.size()); }
  std::size_t min_split = 512;  // rows shorter than this are not split
  // The instruction set of the kernels (run throws std::invalid_argument for one this processor lacks); the
  // fastest by default, any other to test or time it.
  kernel_isa kernel = best_isa();

 private:
  // Splits every row into `chunks` runs of `chunk_tokens` tokens, a whole number of pages (the last runs
  // shorter or empty).
  struct chunking {
    std::size_t chunks = 1, chunk_tokens = 0;
  };
  template <class E>
  chunking plan_chunks(const heterocache::basic_paged_selection<E>& sel) const noexcept;
  void merge_chunks(std::size_t rows, std::size_t group, std::size_t head_dim, std::size_t chunks, float* output);

  heterocache::host_thread_pool& pool_;
  std::vector<float> scratch_, part_out_, part_lse_;
};

}  // namespace hcllama
