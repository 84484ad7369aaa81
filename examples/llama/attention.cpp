#include "attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "heterocache/attention/decode_attention.hpp"
#include "heterocache/attention/half_precision.hpp"
#include "heterocache/detail/vector_math.hpp"

namespace hcllama {

namespace {

// x86-64 builds get an AVX2+FMA clone picked at run time (no -march needed).
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(__clang__)
#define HCLLAMA_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define HCLLAMA_CLONES
#endif

namespace hd = heterocache::detail;

HCLLAMA_CLONES
void attend_slots_impl(const float* __restrict q, std::size_t group, std::size_t d, const float* __restrict k,
                       const float* __restrict v, const std::int64_t* slots, std::size_t n, float scale,
                       float* __restrict out, float* lse, float* __restrict s, const score_copy& capture) {
  // scores s[g][i] = scale * q_g . k[slots[i]], each key read once for the group
  for (std::size_t i = 0; i < n; ++i) {
    const float* kt = k + static_cast<std::size_t>(slots[i]) * d;
    for (std::size_t g = 0; g < group; ++g) {
      const float* qg = q + g * d;
      float lanes[8] = {};
      std::size_t c = 0;
      for (; c + 8 <= d; c += 8)
        for (std::size_t l = 0; l < 8; ++l) lanes[l] += qg[c + l] * kt[c + l];
      for (std::size_t l = 0; c < d; ++c, ++l) lanes[l] += qg[c] * kt[c];
      s[g * n + i] = hd::sum_lanes(lanes) * scale;
    }
  }
  // the scores the cache asked for (a pivot's, read by its drift monitor), before the softmax
  for (std::size_t g = 0; capture.to != nullptr && g < group; ++g)
    std::copy_n(s + g * n, std::min(n, capture.count), capture.to + g * capture.stride);
  // softmax numerators
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
  // out[g] = sum_i p[g][i] v[slots[i]], four values per pass over out
  for (std::size_t g = 0; g < group; ++g) std::fill(out + g * d, out + (g + 1) * d, 0.0f);
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float* v0 = v + static_cast<std::size_t>(slots[i]) * d;
    const float* v1 = v + static_cast<std::size_t>(slots[i + 1]) * d;
    const float* v2 = v + static_cast<std::size_t>(slots[i + 2]) * d;
    const float* v3 = v + static_cast<std::size_t>(slots[i + 3]) * d;
    for (std::size_t g = 0; g < group; ++g) {
      const float* p = s + g * n + i;
      const float w0 = p[0], w1 = p[1], w2 = p[2], w3 = p[3];
      float* o = out + g * d;
      for (std::size_t c = 0; c < d; ++c) o[c] += ((w0 * v0[c] + w1 * v1[c]) + w2 * v2[c]) + w3 * v3[c];
    }
  }
  for (; i < n; ++i) {
    const float* vt = v + static_cast<std::size_t>(slots[i]) * d;
    for (std::size_t g = 0; g < group; ++g) {
      const float w = s[g * n + i];
      float* o = out + g * d;
      for (std::size_t c = 0; c < d; ++c) o[c] += w * vt[c];
    }
  }
}

}  // namespace

void attend_slots(const float* q, std::size_t group, std::size_t head_dim, const float* k, const float* v,
                  const std::int64_t* slots, std::size_t n, float scale, float* out, float* lse, float* scratch,
                  const score_copy& capture) {
  if (n == 0) {
    std::fill(out, out + group * head_dim, 0.0f);
    if (lse)
      for (std::size_t g = 0; g < group; ++g) lse[g] = -std::numeric_limits<float>::infinity();
    return;
  }
  attend_slots_impl(q, group, head_dim, k, v, slots, n, scale, out, lse, scratch, capture);
}

selection_attention::selection_attention(std::size_t threads)
    : pool_(static_cast<heterocache::index_t>(std::max<std::size_t>(1, threads))) {}

void selection_attention::run(const heterocache::csr_selection& sel, const float* queries, float* output, float scale) {
  const std::size_t rows = static_cast<std::size_t>(sel.rows), G = static_cast<std::size_t>(sel.group_size),
                    d = static_cast<std::size_t>(sel.head_dim);
  std::size_t longest = 0;
  for (std::size_t r = 0; r < rows; ++r) longest = std::max(longest, static_cast<std::size_t>(sel.row_length(r)));
  const std::size_t chunks = longest >= min_split ? threads() : 1;
  const std::size_t per_chunk = (longest + chunks - 1) / chunks;
  const std::size_t tasks = rows * chunks;
  const std::size_t scratch_per_task = G * std::max<std::size_t>(per_chunk, 1);
  if (scratch_.size() < tasks * scratch_per_task) scratch_.resize(tasks * scratch_per_task);
  if (part_out_.size() < tasks * G * d) part_out_.resize(tasks * G * d);
  if (part_lse_.size() < tasks * G) part_lse_.resize(tasks * G);
  auto task = [&](heterocache::index_t t) {
    const std::size_t r = static_cast<std::size_t>(t) / chunks, c = static_cast<std::size_t>(t) % chunks;
    const std::size_t len = static_cast<std::size_t>(sel.row_length(static_cast<heterocache::index_t>(r)));
    const std::size_t b = std::min(len, c * per_chunk), e = std::min(len, b + per_chunk);
    const std::int64_t* slots = sel.indices.data() + sel.indptr[r] + b;
    float* out = chunks == 1 ? output + r * G * d : part_out_.data() + static_cast<std::size_t>(t) * G * d;
    score_copy capture;  // this chunk's share of the row's capture: tokens [b, min(e, capture.tokens))
    if (!sel.captures.empty() && sel.captures[r].scores != nullptr) {
      const auto tokens = static_cast<std::size_t>(sel.captures[r].tokens);
      if (b < tokens) capture = {sel.captures[r].scores + b, tokens, tokens - b};
    }
    attend_slots(queries + r * G * d, G, d, sel.keys, sel.values, slots, e - b, scale, out,
                 part_lse_.data() + static_cast<std::size_t>(t) * G,
                 scratch_.data() + static_cast<std::size_t>(t) * scratch_per_task, capture);
  };
  pool_.for_each(static_cast<heterocache::index_t>(tasks), task);
  if (chunks == 1) return;
  // exact merge of the chunks of each row, in chunk order
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t g = 0; g < G; ++g) {
      float* dst = output + (r * G + g) * d;
      const std::size_t t0 = r * chunks;
      std::copy_n(part_out_.data() + (t0 * G + g) * d, d, dst);
      float lse = part_lse_[t0 * G + g];
      for (std::size_t c = 1; c < chunks; ++c) {
        const std::size_t t = t0 + c;
        heterocache::merge_attention_states(dst, lse, part_out_.data() + (t * G + g) * d, part_lse_[t * G + g],
                                            static_cast<heterocache::index_t>(d), dst, lse);
      }
    }
}

void selection_attention::run(const kv_selection& sel, const float* queries, float* output, float scale) {
  std::visit(
      [&](const auto& s) {
        if constexpr (std::is_same_v<std::decay_t<decltype(s)>, heterocache::csr_selection>) {
          run(s, queries, output, scale);
        } else {
          const auto heads = static_cast<std::size_t>(s.rows * s.group_size);
          if (part_lse_.size() < heads) part_lse_.resize(heads);
          heterocache::decode_attention(s, queries, output, part_lse_.data(), scale, pool_, split_);
        }
      },
      sel);
}

}  // namespace hcllama
