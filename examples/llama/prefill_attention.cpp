#include "prefill_attention.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <concepts>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "heterocache/detail/vector_math.hpp"

namespace hcllama {

namespace {

namespace hd = heterocache::detail;

// The tile kernel is compiled for each kernel_isa (kernel_isa.hpp; GCC only, the vector types below), the
// fastest one the processor runs picked at run time. Every helper below is always inlined into the kernel, so
// each copy compiles them for its ISA.
#if HCLLAMA_X86_DISPATCH && !defined(__clang__)
#define HCLLAMA_PREFILL_DISPATCH 1
#else
#define HCLLAMA_PREFILL_DISPATCH 0
#endif

constexpr std::size_t key_tile = prefill_attention::key_tile;
constexpr std::size_t max_query_tile = prefill_attention::max_query_tile;
constexpr std::size_t min_query_tile = prefill_attention::min_query_tile;

// Vectors of floats: GCC and Clang vector types, because plain loops over a block of sums are not reliably kept
// in registers (GCC 12 vectorizes the wrong loop of the micro-kernel and keeps its sums on the stack, 4x
// slower). Each kernel uses the vector of its target's registers (a wider one would be split, and spilled).
#if defined(__GNUC__)
using float4 = float __attribute__((vector_size(4 * sizeof(float))));
#if HCLLAMA_PREFILL_DISPATCH
using float8 = float __attribute__((vector_size(8 * sizeof(float))));
using float16 = float __attribute__((vector_size(16 * sizeof(float))));
#endif
#else
struct float4 {
  float lane[4];
  float4& operator+=(const float4& x) noexcept {
    for (int i = 0; i < 4; ++i) lane[i] += x.lane[i];
    return *this;
  }
  friend float4 operator*(float a, const float4& x) noexcept {
    float4 y;
    for (int i = 0; i < 4; ++i) y.lane[i] = a * x.lane[i];
    return y;
  }
};
#endif

// The micro-kernel's register block for one instruction set: `rows` rows by `vectors` vectors of sums, so that
// each loaded row segment of the right-hand matrix is reused by `rows` rows of the left-hand one (the sizes
// measured best on a Zen 5 core).
template <class Vector, std::size_t Rows, std::size_t Vectors>
struct kernel_shape {
  using vector = Vector;
  static constexpr std::size_t rows = Rows, vectors = Vectors, lanes = sizeof(Vector) / sizeof(float),
                               cols = lanes * Vectors;
  static_assert(min_query_tile % cols == 0 && max_query_tile % min_query_tile == 0,
                "a full query tile of either size is a whole number of register blocks");
};
using portable_shape = kernel_shape<float4, 4, 2>;  // 8 sums: SSE2 has 16 registers, NEON 32
#if HCLLAMA_PREFILL_DISPATCH
using avx2_shape = kernel_shape<float8, 6, 2>;     // 12 of the 16 ymm registers
using avx512_shape = kernel_shape<float16, 8, 2>;  // 16 of the 32 zmm registers
#endif

constexpr std::size_t round_up(std::size_t x, std::size_t multiple) noexcept {
  return (x + multiple - 1) / multiple * multiple;
}

// The left-hand operand of the micro-kernel: element (i, p) at data[i * row_stride + p * col_stride], so that
// the same kernel reads keys row by row and the transposed score tile column by column.
struct strided_matrix {
  const float* data;
  std::size_t row_stride, col_stride;
  const float* row(std::size_t i) const noexcept { return data + i * row_stride; }
};

// c[MR][NV lanes of V] = a[MR][k] b[k][NV lanes of V] (b and c row-major, row strides ldb and ldc), the sums held
// in registers over all of k. V is the shape's vector, or float for the last columns.
template <std::size_t MR, std::size_t NV, class V>
HETEROCACHE_ALWAYS_INLINE void multiply_block(std::size_t k, const strided_matrix& a, const float* __restrict b,
                                              std::size_t ldb, float* __restrict c, std::size_t ldc) noexcept {
  constexpr std::size_t lanes = sizeof(V) / sizeof(float);
  V sums[MR][NV] = {};
  for (std::size_t p = 0; p < k; ++p) {
    V bp[NV];
    for (std::size_t j = 0; j < NV; ++j) std::memcpy(&bp[j], b + p * ldb + j * lanes, sizeof(V));
    for (std::size_t r = 0; r < MR; ++r) {
      const float ar = a.data[r * a.row_stride + p * a.col_stride];
      for (std::size_t j = 0; j < NV; ++j) sums[r][j] += ar * bp[j];
    }
  }
  for (std::size_t r = 0; r < MR; ++r)
    for (std::size_t j = 0; j < NV; ++j) std::memcpy(c + r * ldc + j * lanes, &sums[r][j], sizeof(V));
}

// c[m][NV lanes of V] = a[m][k] b[k][NV lanes of V]: one column panel of b, reused by every row block of a.
template <std::size_t MR, std::size_t NV, class V>
HETEROCACHE_ALWAYS_INLINE void multiply_panel(std::size_t m, std::size_t k, const strided_matrix& a, const float* b,
                                              std::size_t ldb, float* c, std::size_t ldc) noexcept {
  std::size_t r = 0;
  for (; r + MR <= m; r += MR)
    multiply_block<MR, NV, V>(k, {a.row(r), a.row_stride, a.col_stride}, b, ldb, c + r * ldc, ldc);
  for (; r < m; ++r) multiply_block<1, NV, V>(k, {a.row(r), a.row_stride, a.col_stride}, b, ldb, c + r * ldc, ldc);
}

// c[m][n] = a[m][k] b[k][n] in Shape's register blocks (then single vectors, then single columns). Every element
// of c goes through the same sequence of operations whatever m and its place in the block, so no query row's
// result depends on the tile or block it is computed in.
template <class Shape>
HETEROCACHE_ALWAYS_INLINE void multiply(std::size_t m, std::size_t n, std::size_t k, const strided_matrix& a,
                                        const float* b, std::size_t ldb, float* c, std::size_t ldc) noexcept {
  using V = typename Shape::vector;
  std::size_t j = 0;
  for (; j + Shape::cols <= n; j += Shape::cols)
    multiply_panel<Shape::rows, Shape::vectors, V>(m, k, a, b + j, ldb, c + j, ldc);
  for (; j + Shape::lanes <= n; j += Shape::lanes) multiply_panel<Shape::rows, 1, V>(m, k, a, b + j, ldb, c + j, ldc);
  for (; j < n; ++j) multiply_panel<Shape::rows, 1, float>(m, k, a, b + j, ldb, c + j, ldc);
}

// The larger of two scores (no NaN), compared through ordered_bits: GCC vectorizes the integer compare, not a
// float one under its default -ftrapping-math.
HETEROCACHE_ALWAYS_INLINE float larger(float a, float b) noexcept {
  return hd::ordered_bits(b) > hd::ordered_bits(a) ? b : a;
}

// One thread's scratch for one task. Its query rows are token-major (row t * group + g), `cols` of them with
// the padding to a whole number of register blocks: the transposed score tile has the rows along the vector
// lanes, so the softmax of a key tile runs over all rows at once.
struct tile_scratch {
  float* queries_t;    // [head_dim][cols]: the queries transposed, times the softmax scale (padding zero)
  float* keys;         // [key_tile][head_dim]: a key tile widened (16-bit K/V only)
  float* values;       // [key_tile][head_dim]: a value tile widened (16-bit K/V only)
  float* scores_t;     // [key_tile][cols]: a tile's scores, then their exponentials
  float* tile_output;  // [rows][head_dim]: a tile's exponentials times its values
  float* output;       // [rows][head_dim]: the unnormalized output of the tiles so far
  float* row_max;      // [cols]: the running maximum score
  float* row_sum;      // [cols]: the running softmax denominator
  float* tile_sum;     // [cols]: a tile's share of it
  float* row_rescale;  // [cols]: what a tile's new maximum multiplies the row's output and denominator by
};

// Sizes of the parts of tile_scratch, each a whole number of 64-byte lines so that every part starts as
// aligned as the buffer.
struct scratch_sizes {
  std::size_t queries_t, kv_tile, scores_t, output, row_stats;  // kv_tile: keys, values; output: both outputs
  std::size_t total() const noexcept { return queries_t + 2 * kv_tile + scores_t + 2 * output + 4 * row_stats; }
};

// The most query rows of a task, padding included (every shape's register block divides a full query tile).
constexpr std::size_t most_cols(std::size_t group) noexcept { return group * max_query_tile; }

scratch_sizes sizes_for(std::size_t group, std::size_t head_dim) noexcept {
  constexpr std::size_t line = 16;
  const std::size_t cols = most_cols(group);
  return {round_up(head_dim * cols, line), round_up(key_tile * head_dim, line), round_up(key_tile * cols, line),
          round_up(cols * head_dim, line), round_up(cols, line)};
}

tile_scratch carve(float* base, const scratch_sizes& s) noexcept {
  tile_scratch t{};
  t.queries_t = base;
  t.keys = t.queries_t + s.queries_t;
  t.values = t.keys + s.kv_tile;
  t.scores_t = t.values + s.kv_tile;
  t.tile_output = t.scores_t + s.scores_t;
  t.output = t.tile_output + s.output;
  t.row_max = t.output + s.output;
  t.row_sum = t.row_max + s.row_stats;
  t.tile_sum = t.row_sum + s.row_stats;
  t.row_rescale = t.tile_sum + s.row_stats;
  return t;
}

// One task: the query tokens [first_token, first_token + tokens) of the block, for the G heads of one KV head.
struct tile_task {
  std::size_t kv_head, first_token, tokens;
};

std::size_t tile_count(std::size_t tokens, std::size_t query_tile) noexcept {
  return (tokens + query_tile - 1) / query_tile;
}

// The larger query tile (fewer passes over the keys: each key tile is read and each score tile exponentiated
// for more rows at once, about 10% faster) unless it leaves some of the threads without a task. Either size
// gives the same bits: no element's arithmetic depends on the tile it is computed in.
std::size_t query_tile_for(const prefill_block_shape& block, std::size_t threads) noexcept {
  return tile_count(block.tokens, max_query_tile) * block.kv_heads >= threads ? max_query_tile : min_query_tile;
}

// Task i of a block. The tiles with the most keys (the last ones) come first, so that the pool's threads,
// taking tasks in order as they free up, finish close together.
tile_task task_at(std::size_t i, const prefill_block_shape& block, std::size_t query_tile) noexcept {
  const std::size_t query_tiles = tile_count(block.tokens, query_tile);
  const std::size_t tile = query_tiles - 1 - i / block.kv_heads;
  const std::size_t first = tile * query_tile;
  return {i % block.kv_heads, first, std::min(query_tile, block.tokens - first)};
}

// queries_t[c][t * G + g] = scale * query (t, head kv_head * G + g)[c]; columns [rows, cols) zero.
HETEROCACHE_ALWAYS_INLINE void gather_queries(const prefill_block_shape& block, const tile_task& task,
                                              const float* __restrict queries, float scale, std::size_t cols,
                                              float* __restrict queries_t) noexcept {
  const std::size_t d = block.head_dim, width = block.group * d, token_stride = block.kv_heads * width;
  const std::size_t rows = task.tokens * block.group;
  for (std::size_t r = 0; r < rows; ++r) {
    const float* src = queries + (task.first_token + r / block.group) * token_stride + task.kv_head * width +
                       r % block.group * d;
    for (std::size_t c = 0; c < d; ++c) queries_t[c * cols + r] = src[c] * scale;
  }
  for (std::size_t c = 0; c < d; ++c) std::fill(queries_t + c * cols + rows, queries_t + (c + 1) * cols, 0.0f);
}

// The K/V rows [0, len) as fp32: the K/V itself when it is fp32, else widened into `widened`.
template <class E>
HETEROCACHE_ALWAYS_INLINE const float* fp32_rows(const E* __restrict rows, std::size_t len, std::size_t d,
                                                 float* __restrict widened) noexcept {
  if constexpr (std::same_as<E, float>) {
    return rows;
  } else {
    for (std::size_t i = 0; i < len * d; ++i) widened[i] = heterocache::to_float(rows[i]);
    return widened;
  }
}

// On a tile that reaches past the task's first query: -inf for the scores of keys after each row's position
// (key j0 + j is after the position of rows t * G + g with first_position + t < j0 + j, a prefix of the rows).
HETEROCACHE_ALWAYS_INLINE void mask_future_keys(float* __restrict scores_t, std::size_t len, std::size_t cols,
                                                std::size_t j0, std::size_t first_position,
                                                std::size_t group) noexcept {
  for (std::size_t j = 0; j < len; ++j) {
    if (j0 + j <= first_position) continue;  // visible to every row
    const std::size_t hidden = std::min(cols, (j0 + j - first_position) * group);
    std::fill(scores_t + j * cols, scores_t + j * cols + hidden, -std::numeric_limits<float>::infinity());
  }
}

// The online-softmax step of a key tile, all rows at once: the new running maximum of each row, the scores
// exponentiated against it (0 for a masked one), the denominator updated, and the factor for the row's earlier
// output in row_rescale. Every row sees key 0 in the first tile, so no maximum stays -inf past it.
HETEROCACHE_ALWAYS_INLINE void softmax_step(const tile_scratch& s, std::size_t len, std::size_t cols) noexcept {
  float* __restrict scores = s.scores_t;
  float* __restrict new_max = s.row_rescale;  // holds the new maximum until it becomes the rescale factor
  float* __restrict row_max = s.row_max;
  float* __restrict tile_sum = s.tile_sum;
  std::copy_n(row_max, cols, new_max);
  for (std::size_t j = 0; j < len; ++j)
    for (std::size_t r = 0; r < cols; ++r) new_max[r] = larger(new_max[r], scores[j * cols + r]);
  for (std::size_t r = 0; r < cols; ++r) {
    const float m = new_max[r];
    new_max[r] = hd::exp_nonpositive(row_max[r] - m);  // 0 on the first tile (running maximum -inf)
    row_max[r] = m;
  }
  std::fill(tile_sum, tile_sum + cols, 0.0f);
  for (std::size_t j = 0; j < len; ++j)
    for (std::size_t r = 0; r < cols; ++r) {
      const float e = hd::exp_nonpositive(scores[j * cols + r] - row_max[r]);
      scores[j * cols + r] = e;
      tile_sum[r] += e;
    }
  // The tile's terms summed on their own, then added: the rounding of a sum over T keys grows like that of
  // key_tile terms plus T / key_tile, not like that of T terms in a row. The same for the output below.
  for (std::size_t r = 0; r < cols; ++r) s.row_sum[r] = s.row_sum[r] * s.row_rescale[r] + tile_sum[r];
}

// output = output * rescale + tile_output, row by row.
HETEROCACHE_ALWAYS_INLINE void add_tile_output(const tile_scratch& s, std::size_t rows, std::size_t d) noexcept {
  for (std::size_t r = 0; r < rows; ++r) {
    float* __restrict out = s.output + r * d;
    const float* __restrict tile = s.tile_output + r * d;
    const float rescale = s.row_rescale[r];
    for (std::size_t c = 0; c < d; ++c) out[c] = out[c] * rescale + tile[c];
  }
}

// output rows / their denominators, scattered back to [token][query_head][head_dim].
HETEROCACHE_ALWAYS_INLINE void write_output(const prefill_block_shape& block, const tile_task& task,
                                            const tile_scratch& s, float* __restrict output) noexcept {
  const std::size_t d = block.head_dim, width = block.group * d, token_stride = block.kv_heads * width;
  for (std::size_t t = 0; t < task.tokens; ++t)
    for (std::size_t g = 0; g < block.group; ++g) {
      const std::size_t r = t * block.group + g;
      const float inv = 1.0f / s.row_sum[r];
      float* dst = output + (task.first_token + t) * token_stride + task.kv_head * width + g * d;
      for (std::size_t c = 0; c < d; ++c) dst[c] = s.output[r * d + c] * inv;
    }
}

// One task, alone: the key tiles up to its last query in order, each one scores (keys times the transposed
// queries), mask on the diagonal, softmax step, values.
template <heterocache::KvElement E, class Shape>
HETEROCACHE_ALWAYS_INLINE void attend_tile(const prefill_block_shape& block, const sequence_kv<E>& kv,
                                           const float* queries, float* output, const tile_task& task,
                                           const tile_scratch& s) {
  const std::size_t d = block.head_dim, rows = block.group * task.tokens, cols = round_up(rows, Shape::cols);
  const std::size_t first_position = block.first_position + task.first_token;
  const std::size_t end_position = first_position + task.tokens;  // one past the task's last query
  gather_queries(block, task, queries, 1.0f / std::sqrt(static_cast<float>(d)), cols, s.queries_t);
  std::fill(s.output, s.output + rows * d, 0.0f);
  std::fill(s.row_max, s.row_max + cols, -std::numeric_limits<float>::infinity());
  std::fill(s.row_sum, s.row_sum + cols, 0.0f);
  const E* keys = kv.keys + task.kv_head * kv.head_stride;
  const E* values = kv.values + task.kv_head * kv.head_stride;
  for (std::size_t j0 = 0; j0 < end_position; j0 += key_tile) {
    const std::size_t len = std::min(key_tile, end_position - j0);
    multiply<Shape>(len, cols, d, {fp32_rows(keys + j0 * d, len, d, s.keys), d, 1}, s.queries_t, cols, s.scores_t,
                    cols);
    if (j0 + len - 1 > first_position) mask_future_keys(s.scores_t, len, cols, j0, first_position, block.group);
    softmax_step(s, len, cols);
    multiply<Shape>(rows, d, len, {s.scores_t, 1, cols}, fp32_rows(values + j0 * d, len, d, s.values), d,
                    s.tile_output, d);
    add_tile_output(s, rows, d);
  }
  write_output(block, task, s, output);
}

template <heterocache::KvElement E>
using tile_kernel = void (*)(const prefill_block_shape&, const sequence_kv<E>&, const float*, float*,
                             const tile_task&, const tile_scratch&);

template <heterocache::KvElement E>
void attend_tile_portable(const prefill_block_shape& block, const sequence_kv<E>& kv, const float* queries,
                          float* output, const tile_task& task, const tile_scratch& s) {
  attend_tile<E, portable_shape>(block, kv, queries, output, task, s);
}

#if HCLLAMA_PREFILL_DISPATCH
template <heterocache::KvElement E>
HCLLAMA_TARGET_AVX2 void attend_tile_avx2(const prefill_block_shape& block,
                                                                const sequence_kv<E>& kv, const float* queries,
                                                                float* output, const tile_task& task,
                                                                const tile_scratch& s) {
  attend_tile<E, avx2_shape>(block, kv, queries, output, task, s);
}

template <heterocache::KvElement E>
HCLLAMA_TARGET_AVX512 void attend_tile_avx512(const prefill_block_shape& block,
                                                                  const sequence_kv<E>& kv, const float* queries,
                                                                  float* output, const tile_task& task,
                                                                  const tile_scratch& s) {
  attend_tile<E, avx512_shape>(block, kv, queries, output, task, s);
}
#endif

template <heterocache::KvElement E>
tile_kernel<E> kernel_for([[maybe_unused]] kernel_isa kernel) noexcept {
#if HCLLAMA_PREFILL_DISPATCH
  if (kernel == kernel_isa::avx512) return attend_tile_avx512<E>;
  if (kernel == kernel_isa::avx2) return attend_tile_avx2<E>;
#endif
  return attend_tile_portable<E>;
}

}  // namespace

prefill_attention::prefill_attention(heterocache::host_thread_pool& pool, kernel_isa kernel)
    : pool_(pool), kernel_(kernel) {
  if (!runs(kernel))
    throw std::invalid_argument(std::string("prefill_attention: this processor or build has no ") +
                                to_string(kernel) + " kernel");
}

std::size_t prefill_attention::scratch_floats_per_thread(std::size_t group, std::size_t head_dim) noexcept {
  return sizes_for(group, head_dim).total();
}

template <heterocache::KvElement E>
void prefill_attention::run(const prefill_block_shape& block, const sequence_kv<E>& kv, const float* queries,
                            float* output) {
  if (block.tokens == 0) return;
  const scratch_sizes sizes = sizes_for(block.group, block.head_dim);
  const auto threads = static_cast<std::size_t>(pool_.size());
  const std::size_t query_tile = query_tile_for(block, threads);
  const std::size_t tasks = tile_count(block.tokens, query_tile) * block.kv_heads;
  const std::size_t workers = std::min(threads, tasks);
  if (scratch_.size() < workers * sizes.total()) scratch_.resize(workers * sizes.total());
  const tile_kernel<E> attend = kernel_for<E>(kernel_);
  // Worker w owns scratch slot w and takes the next task until none is left: the scratch is per thread while
  // the tasks balance over the threads (each task's result does not depend on who computes it).
  std::atomic<std::size_t> next{0};
  pool_.for_each(static_cast<heterocache::index_t>(workers), [&](heterocache::index_t w) {
    const tile_scratch s = carve(scratch_.data() + static_cast<std::size_t>(w) * sizes.total(), sizes);
    for (std::size_t i = next.fetch_add(1, std::memory_order_relaxed); i < tasks;
         i = next.fetch_add(1, std::memory_order_relaxed))
      attend(block, kv, queries, output, task_at(i, block, query_tile), s);
  });
}

template void prefill_attention::run(const prefill_block_shape&, const sequence_kv<float>&, const float*, float*);
template void prefill_attention::run(const prefill_block_shape&, const sequence_kv<heterocache::fp16_t>&, const float*,
                                     float*);
template void prefill_attention::run(const prefill_block_shape&, const sequence_kv<heterocache::bf16_t>&, const float*,
                                     float*);

}  // namespace hcllama
