#include "attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "heterocache/algorithm/pooled_attention.hpp"
#include "heterocache/attention/decode_attention.hpp"
#include "heterocache/detail/vector_math.hpp"
#include "kernel_isa.hpp"

#if HCLLAMA_X86_DISPATCH
#include <immintrin.h>
#endif

namespace hcllama {

namespace {

namespace hd = heterocache::detail;

#define HCLLAMA_ATTEND_PAGES()                                                                                    \
  template <class E>                                                                                               \
  void attend_pages(const float* q, std::size_t group, std::size_t d, const E* k, const E* v, const page_run& run, \
                    float scale, float* out, float* lse, float* s, const score_copy& capture) {                    \
    attend_pages_body(q, group, d, k, v, run, scale, out, lse, s, capture);                                        \
  }

namespace portable {
#define HCLLAMA_ATTENTION_AVX512 0
#define HCLLAMA_ATTENTION_X86 0
#include "attention_kernels.inc"
#undef HCLLAMA_ATTENTION_X86
HCLLAMA_ATTEND_PAGES()
}  // namespace portable

#if HCLLAMA_X86_DISPATCH
#define HCLLAMA_ATTENTION_X86 1
HCLLAMA_BEGIN_AVX2
namespace avx2 {
#include "attention_kernels.inc"
HCLLAMA_ATTEND_PAGES()
}  // namespace avx2
HCLLAMA_END_TARGET
HCLLAMA_BEGIN_AVX512
namespace avx512 {
#undef HCLLAMA_ATTENTION_AVX512
#define HCLLAMA_ATTENTION_AVX512 1
#include "attention_kernels.inc"
HCLLAMA_ATTEND_PAGES()
}  // namespace avx512
HCLLAMA_END_TARGET
#undef HCLLAMA_ATTENTION_X86
#endif
#undef HCLLAMA_ATTENTION_AVX512
#undef HCLLAMA_ATTEND_PAGES

template <class E>
using attend_pages_fn = void (*)(const float*, std::size_t, std::size_t, const E*, const E*, const page_run&, float,
                                 float*, float*, float*, const score_copy&);


template <class E>
attend_pages_fn<E> attend_pages_for(kernel_isa isa) noexcept {
#if HCLLAMA_X86_DISPATCH
  if (isa == kernel_isa::avx512) return avx512::attend_pages<E>;
  if (isa == kernel_isa::avx2) return avx2::attend_pages<E>;
#endif
  (void)isa;
  return portable::attend_pages<E>;
}

// Row `row`'s share of its capture for a chunk that starts at token `begin`: tokens [begin, capture.tokens).
template <class E>
score_copy chunk_capture(const heterocache::basic_paged_selection<E>& sel, std::size_t row, std::size_t begin) noexcept {
  if (sel.captures.empty() || sel.captures[row].scores == nullptr) return {};
  const auto tokens = static_cast<std::size_t>(sel.captures[row].tokens);
  if (begin >= tokens) return {};
  return {sel.captures[row].scores + begin, tokens, tokens - begin};
}

// attend_pages with the kernel `attend`.
template <class E>
void attend_pages_with(attend_pages_fn<E> attend, const float* q, std::size_t group, std::size_t head_dim, const E* k,
                       const E* v, const page_run& run, float scale, float* out, float* lse, float* scratch,
                       const score_copy& capture) {
  if (run.tokens == 0) {
    std::fill(out, out + group * head_dim, 0.0f);
    if (lse)
      for (std::size_t g = 0; g < group; ++g) lse[g] = -std::numeric_limits<float>::infinity();
    return;
  }
  attend(q, group, head_dim, k, v, run, scale, out, lse, scratch, capture);
}

}  // namespace

template <class E>
void attend_pages(const float* q, std::size_t group, std::size_t head_dim, const E* k, const E* v, const page_run& run,
                  float scale, float* out, float* lse, float* scratch, const score_copy& capture) {
  static const attend_pages_fn<E> attend = attend_pages_for<E>(best_isa());
  attend_pages_with(attend, q, group, head_dim, k, v, run, scale, out, lse, scratch, capture);
}

selection_attention::selection_attention(heterocache::host_thread_pool& pool) : pool_(pool) {}

template <class E>
selection_attention::chunking selection_attention::plan_chunks(const heterocache::basic_paged_selection<E>& sel) const noexcept {
  const auto page_size = static_cast<std::size_t>(std::max<heterocache::index_t>(sel.page_size, 1));  // 0: no rows
  std::size_t longest = 0;
  for (heterocache::index_t r = 0; r < sel.rows; ++r)
    longest = std::max(longest, static_cast<std::size_t>(sel.row_length(r)));
  const std::size_t chunks = longest >= min_split ? threads() : 1;
  // Chunks of whole pages, so that a chunk's pages are whole contiguous blocks and its numbers do not depend
  // on where the row was cut.
  const std::size_t longest_pages = (longest + page_size - 1) / page_size;
  return {chunks, (longest_pages + chunks - 1) / chunks * page_size};
}

template <class E>
void selection_attention::run(const heterocache::basic_paged_selection<E>& sel, const float* queries, float* output,
                              float scale) {
  const std::size_t rows = static_cast<std::size_t>(sel.rows), G = static_cast<std::size_t>(sel.group_size),
                    d = static_cast<std::size_t>(sel.head_dim), page_size = static_cast<std::size_t>(sel.page_size);
  if (!runs(kernel))
    throw std::invalid_argument(std::string("selection_attention: kernel = ") + to_string(kernel) +
                                " does not run on this processor (it runs: " + to_string(best_isa()) + " and below)");
  const attend_pages_fn<E> attend = attend_pages_for<E>(kernel);
  const chunking plan = plan_chunks(sel);
  const std::size_t tasks = rows * plan.chunks;
  const std::size_t scratch_per_task = G * std::max<std::size_t>(plan.chunk_tokens, 1);
  if (scratch_.size() < tasks * scratch_per_task) scratch_.resize(tasks * scratch_per_task);
  if (part_out_.size() < tasks * G * d) part_out_.resize(tasks * G * d);
  if (part_lse_.size() < tasks * G) part_lse_.resize(tasks * G);
  auto task = [&](heterocache::index_t t) {
    const std::size_t r = static_cast<std::size_t>(t) / plan.chunks, c = static_cast<std::size_t>(t) % plan.chunks;
    const auto row = static_cast<heterocache::index_t>(r);
    const std::size_t len = static_cast<std::size_t>(sel.row_length(row));
    const std::size_t b = std::min(len, c * plan.chunk_tokens), e = std::min(len, b + plan.chunk_tokens);
    const page_run pages{sel.indices + sel.indptr[r] + b / page_size, page_size, e - b};
    float* out = plan.chunks == 1 ? output + r * G * d : part_out_.data() + static_cast<std::size_t>(t) * G * d;
    attend_pages_with(attend, queries + r * G * d, G, d, sel.keys, sel.values, pages, scale, out,
                 part_lse_.data() + static_cast<std::size_t>(t) * G,
                 scratch_.data() + static_cast<std::size_t>(t) * scratch_per_task, chunk_capture(sel, r, b));
  };
  pool_.for_each(static_cast<heterocache::index_t>(tasks), task);
  if (plan.chunks > 1) merge_chunks(rows, G, d, plan.chunks, output);
  // Every chunk of every row is written: the captures are complete.
  for (const heterocache::score_capture& capture : sel.captures) heterocache::mark_written(capture);
}

// Exact merge of the chunks of each row, in chunk order.
void selection_attention::merge_chunks(std::size_t rows, std::size_t group, std::size_t head_dim, std::size_t chunks,
                                       float* output) {
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t g = 0; g < group; ++g) {
      float* dst = output + (r * group + g) * head_dim;
      const std::size_t t0 = r * chunks;
      std::copy_n(part_out_.data() + (t0 * group + g) * head_dim, head_dim, dst);
      float lse = part_lse_[t0 * group + g];
      for (std::size_t c = 1; c < chunks; ++c) {
        const std::size_t t = t0 + c;
        heterocache::merge_attention_states(dst, lse, part_out_.data() + (t * group + g) * head_dim,
                                            part_lse_[t * group + g], static_cast<heterocache::index_t>(head_dim),
                                            dst, lse);
      }
    }
}

void selection_attention::run(const kv_selection& sel, const float* queries, float* output, float scale) {
  std::visit([&](const auto& s) { run(s, queries, output, scale); }, sel);
}

#define HCLLAMA_ATTENTION_INSTANCES(E)                                                                            \
  template void attend_pages(const float*, std::size_t, std::size_t, const E*, const E*, const page_run&, float,   \
                             float*, float*, float*, const score_copy&);                                           \
  template void selection_attention::run(const heterocache::basic_paged_selection<E>&, const float*, float*, float);
HCLLAMA_ATTENTION_INSTANCES(float)
HCLLAMA_ATTENTION_INSTANCES(heterocache::fp16_t)
HCLLAMA_ATTENTION_INSTANCES(heterocache::bf16_t)
#undef HCLLAMA_ATTENTION_INSTANCES

}  // namespace hcllama
