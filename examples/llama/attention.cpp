#include "attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "heterocache/attention/decode_attention.hpp"
#include "heterocache/detail/vector_math.hpp"
#include "kernel_isa.hpp"

namespace hcllama {

namespace {

namespace hd = heterocache::detail;

// The phases of attend_pages_body are always inlined into it, and it into one copy per kernel_isa
// (kernel_isa.hpp), so that each copy compiles them for its instruction set.

// An element of the hot pages as float (bf16: a shift; fp16: the library's branch-free conversion, which the
// compiler vectorizes in each copy).
HETEROCACHE_ALWAYS_INLINE float widen(float x) noexcept { return x; }
HETEROCACHE_ALWAYS_INLINE float widen(heterocache::bf16_t x) noexcept { return heterocache::bf16_to_float(x.bits); }
HETEROCACHE_ALWAYS_INLINE float widen(heterocache::fp16_t x) noexcept { return heterocache::fp16_to_float(x.bits); }

// First pool slot of page `page` of `run`.
HETEROCACHE_ALWAYS_INLINE std::size_t page_slot(const page_run& run, std::size_t page) noexcept {
  return static_cast<std::size_t>(run.pages[page]) * run.page_size;
}

// s[g][i] = scale * q_g . k_i, each key read once for the group, a page (contiguous keys) at a time.
template <class E>
HETEROCACHE_ALWAYS_INLINE void page_scores(const float* __restrict q, std::size_t group, std::size_t d,
                                           const E* __restrict k, const page_run& run, float scale,
                                           float* __restrict s) noexcept {
  const std::size_t n = run.tokens;
  for (std::size_t first = 0, page = 0; first < n; first += run.page_size, ++page) {
    const E* keys = k + page_slot(run, page) * d;
    const std::size_t len = std::min(run.page_size, n - first);
    for (std::size_t t = 0; t < len; ++t) {
      const E* kt = keys + t * d;
      for (std::size_t g = 0; g < group; ++g) {
        const float* qg = q + g * d;
        float lanes[8] = {};
        std::size_t c = 0;
        for (; c + 8 <= d; c += 8)
          for (std::size_t l = 0; l < 8; ++l) lanes[l] += qg[c + l] * widen(kt[c + l]);
        for (std::size_t l = 0; c < d; ++c, ++l) lanes[l] += qg[c] * widen(kt[c]);
        s[g * n + first + t] = hd::sum_lanes(lanes) * scale;
      }
    }
  }
}

// Softmax of each head's scores in place; lse[g] = log of its denominator (if lse is not null).
HETEROCACHE_ALWAYS_INLINE void softmax_rows(float* __restrict s, std::size_t group, std::size_t n, float* lse) noexcept {
  for (std::size_t g = 0; g < group; ++g) {
    float* row = s + g * n;
    float mx = -std::numeric_limits<float>::infinity();
    for (std::size_t i = 0; i < n; ++i) mx = std::max(mx, row[i]);
    float lanes[8] = {};
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8)
      for (std::size_t l = 0; l < 8; ++l) {
        row[i + l] = hd::exp_nonpositive(row[i + l] - mx);
        lanes[l] += row[i + l];
      }
    for (std::size_t l = 0; i < n; ++i, ++l) {
      row[i] = hd::exp_nonpositive(row[i] - mx);
      lanes[l] += row[i];
    }
    const float sum = hd::sum_lanes(lanes);
    const float inv = 1.0f / sum;
    for (std::size_t j = 0; j < n; ++j) row[j] *= inv;
    if (lse) lse[g] = mx + std::log(sum);
  }
}

// out[g] = sum_i p[g][i] v_i, a page (contiguous values) at a time, four values per pass over out.
template <class E>
HETEROCACHE_ALWAYS_INLINE void page_values(const float* __restrict p, std::size_t group, std::size_t d,
                                           const E* __restrict v, const page_run& run,
                                           float* __restrict out) noexcept {
  const std::size_t n = run.tokens;
  std::fill(out, out + group * d, 0.0f);
  for (std::size_t first = 0, page = 0; first < n; first += run.page_size, ++page) {
    const E* values = v + page_slot(run, page) * d;
    const std::size_t len = std::min(run.page_size, n - first);
    std::size_t i = 0;
    for (; i + 4 <= len; i += 4) {
      const E* v0 = values + i * d;
      const E *v1 = v0 + d, *v2 = v1 + d, *v3 = v2 + d;
      for (std::size_t g = 0; g < group; ++g) {
        const float* w = p + g * n + first + i;
        const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
        float* o = out + g * d;
        for (std::size_t c = 0; c < d; ++c)
          o[c] += ((w0 * widen(v0[c]) + w1 * widen(v1[c])) + w2 * widen(v2[c])) + w3 * widen(v3[c]);
      }
    }
    for (; i < len; ++i) {
      const E* vt = values + i * d;
      for (std::size_t g = 0; g < group; ++g) {
        const float w = p[g * n + first + i];
        float* o = out + g * d;
        for (std::size_t c = 0; c < d; ++c) o[c] += w * widen(vt[c]);
      }
    }
  }
}

template <class E>
HETEROCACHE_ALWAYS_INLINE void attend_pages_body(const float* __restrict q, std::size_t group, std::size_t d,
                                                const E* __restrict k, const E* __restrict v,
                                                const page_run& run, float scale, float* __restrict out, float* lse,
                                                float* __restrict s, const score_copy& capture) {
  page_scores(q, group, d, k, run, scale, s);
  // the scores the cache asked for (a pivot's, read by its drift monitor), before the softmax
  for (std::size_t g = 0; capture.to != nullptr && g < group; ++g)
    std::copy_n(s + g * run.tokens, std::min(run.tokens, capture.count), capture.to + g * capture.stride);
  softmax_rows(s, group, run.tokens, lse);
  page_values(s, group, d, v, run, out);
}

template <class E>
using attend_pages_fn = void (*)(const float*, std::size_t, std::size_t, const E*, const E*, const page_run&, float,
                                 float*, float*, float*, const score_copy&);

#define HCLLAMA_ATTEND_PAGES_COPY(name, target)                                                                    \
  template <class E>                                                                                               \
  target void name(const float* q, std::size_t group, std::size_t d, const E* k, const E* v, const page_run& run,  \
                   float scale, float* out, float* lse, float* s, const score_copy& capture) {                     \
    attend_pages_body(q, group, d, k, v, run, scale, out, lse, s, capture);                                        \
  }
HCLLAMA_ATTEND_PAGES_COPY(attend_pages_portable, )
#if HCLLAMA_X86_DISPATCH
HCLLAMA_ATTEND_PAGES_COPY(attend_pages_avx2, HCLLAMA_TARGET_AVX2)
HCLLAMA_ATTEND_PAGES_COPY(attend_pages_avx512, HCLLAMA_TARGET_AVX512)
#endif
#undef HCLLAMA_ATTEND_PAGES_COPY

template <class E>
attend_pages_fn<E> attend_pages_for(kernel_isa isa) noexcept {
#if HCLLAMA_X86_DISPATCH
  if (isa == kernel_isa::avx512) return attend_pages_avx512<E>;
  if (isa == kernel_isa::avx2) return attend_pages_avx2<E>;
#endif
  (void)isa;
  return attend_pages_portable<E>;
}

// Row `row`'s share of its capture for a chunk that starts at token `begin`: tokens [begin, capture.tokens).
template <class E>
score_copy chunk_capture(const heterocache::basic_paged_selection<E>& sel, std::size_t row, std::size_t begin) noexcept {
  if (sel.captures.empty() || sel.captures[row].scores == nullptr) return {};
  const auto tokens = static_cast<std::size_t>(sel.captures[row].tokens);
  if (begin >= tokens) return {};
  return {sel.captures[row].scores + begin, tokens, tokens - begin};
}

}  // namespace

template <class E>
void attend_pages(const float* q, std::size_t group, std::size_t head_dim, const E* k, const E* v, const page_run& run,
                  float scale, float* out, float* lse, float* scratch, const score_copy& capture) {
  if (run.tokens == 0) {
    std::fill(out, out + group * head_dim, 0.0f);
    if (lse)
      for (std::size_t g = 0; g < group; ++g) lse[g] = -std::numeric_limits<float>::infinity();
    return;
  }
  static const attend_pages_fn<E> attend = attend_pages_for<E>(best_isa());
  attend(q, group, head_dim, k, v, run, scale, out, lse, scratch, capture);
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
    attend_pages(queries + r * G * d, G, d, sel.keys, sel.values, pages, scale, out,
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
