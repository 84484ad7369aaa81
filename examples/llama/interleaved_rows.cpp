#include "interleaved_rows.hpp"

#include <algorithm>
#include <cstring>

#include "heterocache/detail/isa_dispatch.hpp"
#include "kernel_isa.hpp"
#include "quantized_matrix.hpp"

#if HCLLAMA_X86_DISPATCH
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC bug 105593, as in quantized_matrix.cpp
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#endif

namespace hcllama {

namespace {

#define HCLLAMA_UNROLL _Pragma("GCC unroll 16")

constexpr std::size_t kBlock = 32;
constexpr std::size_t kG = interleaved_rows::kGroupRows;

// Where the codes of a regrouped block start: after the 16 d (and the 16 m of Q4_1).
constexpr std::size_t codes_offset(ggml_type t) noexcept { return t == ggml_type::q4_1 ? 4 * kG : 2 * kG; }
// Where the codes start inside one of the file's blocks.
constexpr std::size_t file_codes_offset(ggml_type t) noexcept { return t == ggml_type::q4_1 ? 4 : 2; }

}  // namespace

bool interleaved_rows::fits(ggml_type type, std::size_t rows) noexcept {
  return (type == ggml_type::q4_0 || type == ggml_type::q4_1 || type == ggml_type::q8_0) && rows > 0 &&
         rows % kG == 0;
}

interleaved_rows::interleaved_rows(const quantized_matrix& w)
    : type_(w.type()), rows_(w.rows()), cols_(w.cols()), block_bytes_(kG * type_size(w.type())) {
  if (!fits(type_, rows_))
    throw weight_error("weights: tensor " + w.describe() + " cannot be regrouped in 16 rows (Q4_0, Q4_1 and Q8_0, " +
                       "rows a multiple of 16)");
  const std::size_t blocks = cols_ / kBlock, file_block = type_size(type_);
  bytes_.resize(rows_ * w.row_bytes());
  const std::size_t codes = codes_offset(type_), file_codes = file_codes_offset(type_);
  const std::size_t steps = type_ == ggml_type::q8_0 ? 8 : 4;  // 4-byte steps of codes per block and row
  for (std::size_t g = 0; g < groups(); ++g)
    for (std::size_t j = 0; j < blocks; ++j) {
      std::uint8_t* out = bytes_.data() + (g * blocks + j) * block_bytes_;
      for (std::size_t i = 0; i < kG; ++i) {
        const std::uint8_t* in = w.row_data(g * kG + i) + j * file_block;
        std::memcpy(out + 2 * i, in, 2);                                            // d
        if (type_ == ggml_type::q4_1) std::memcpy(out + 2 * kG + 2 * i, in + 2, 2);  // m
        for (std::size_t s = 0; s < steps; ++s) {
          std::uint8_t* step = out + codes + (s * kG + i) * 4;
          std::memcpy(step, in + file_codes + 4 * s, 4);
          if (type_ == ggml_type::q8_0)
            for (std::size_t b = 0; b < 4; ++b) step[b] ^= 0x80;  // q + 128 as an unsigned byte
        }
      }
    }
}

#if HCLLAMA_X86_DISPATCH

bool interleaved_kernel_runs() noexcept {
  static const bool runs_here = runs(kernel_isa::avx512) && __builtin_cpu_supports("avx512vnni");
  return runs_here;
}

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")  // HCLLAMA_AVX512_FEATURES + VNNI
#endif

namespace {

constexpr std::size_t kInputs = 4;  // inputs per pass over a group's blocks: the codes unpacked once for them

// sum(q * qx) of block j for 16 rows: the 4-byte steps, each the same 4 input codes against 16 rows' codes, in
// two chains (exact integer sums: their order does not matter).
HETEROCACHE_ALWAYS_INLINE __m512i block_sums(const __m512i* codes, std::size_t steps, const std::int8_t* x) {
  __m512i even = _mm512_setzero_si512(), odd = _mm512_setzero_si512();
  HCLLAMA_UNROLL
  for (std::size_t s = 0; s < steps; s += 2) {
    std::int32_t a, b;
    std::memcpy(&a, x + 4 * s, 4);
    std::memcpy(&b, x + 4 * s + 4, 4);
    even = _mm512_dpbusd_epi32(even, codes[s], _mm512_set1_epi32(a));
    odd = _mm512_dpbusd_epi32(odd, codes[s + 1], _mm512_set1_epi32(b));
  }
  return _mm512_add_epi32(even, odd);
}

template <ggml_type Type, std::size_t N>
HETEROCACHE_ALWAYS_INLINE void multiply_group(const interleaved_rows& w, std::size_t g, const int8_inputs& x,
                                              std::size_t t0, float* y, std::size_t ldy, float beta) {
  constexpr std::size_t steps = 8;  // 4-byte steps of a block (Q4: 4 loads, each 2 steps: its low and high nibbles)
  const std::size_t cols = w.cols(), blocks = cols / kBlock;
  __m512 acc[N];
  HCLLAMA_UNROLL
  for (std::size_t t = 0; t < N; ++t) acc[t] = _mm512_setzero_ps();
  for (std::size_t j = 0; j < blocks; ++j) {
    const std::uint8_t* b = w.block(g, j);
    if (j + 2 < blocks) _mm_prefetch(reinterpret_cast<const char*>(b + 2 * w.block_bytes()), _MM_HINT_T0);
    const std::uint8_t* c = b + codes_offset(Type);
    __m512i codes[steps];
    if constexpr (Type == ggml_type::q8_0) {
      HCLLAMA_UNROLL
      for (std::size_t s = 0; s < 8; ++s) codes[s] = _mm512_loadu_si512(c + 64 * s);
    } else {
      const __m512i low = _mm512_set1_epi8(0x0F);
      HCLLAMA_UNROLL
      for (std::size_t s = 0; s < 4; ++s) {
        const __m512i v = _mm512_loadu_si512(c + 64 * s);
        codes[s] = _mm512_and_si512(v, low);                           // elements 4s..4s+3
        codes[s + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);  // elements 16+4s..16+4s+3
      }
    }
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)));
    HCLLAMA_UNROLL
    for (std::size_t t = 0; t < N; ++t) {
      const std::size_t i = (t0 + t) * blocks + j;
      __m512i sums = block_sums(codes, steps, x.codes + (t0 + t) * cols + j * kBlock);  // sum(u * qx)
      if constexpr (Type != ggml_type::q4_1)  // minus c * sum(qx): sum(q * qx)
        sums = _mm512_sub_epi32(sums, _mm512_set1_epi32((Type == ggml_type::q4_0 ? 8 : 128) * x.totals[i]));
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(d, _mm512_set1_ps(x.scales[i])), acc[t]);
      if constexpr (Type == ggml_type::q4_1) {
        const __m512 m = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2 * kG)));
        acc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(x.sums[i]), acc[t]);
      }
    }
  }
  for (std::size_t t = 0; t < N; ++t) {
    float* out = y + (t0 + t) * ldy + g * kG;
    if (beta == 0.0f) _mm512_storeu_ps(out, acc[t]);
    else _mm512_storeu_ps(out, _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_loadu_ps(out), acc[t]));
  }
}

template <ggml_type Type, std::size_t N = kInputs>
void multiply_group_of(std::size_t count, const interleaved_rows& w, std::size_t g, const int8_inputs& x,
                       std::size_t t0, float* y, std::size_t ldy, float beta) {
  if constexpr (N > 1)
    if (count < N) return multiply_group_of<Type, N - 1>(count, w, g, x, t0, y, ldy, beta);
  multiply_group<Type, N>(w, g, x, t0, y, ldy, beta);
}

template <ggml_type Type>
void multiply_groups_as(const interleaved_rows& w, std::size_t first, std::size_t last, const int8_inputs& x,
                        float* y, std::size_t ldy, float beta) {
  for (std::size_t g = first; g < last; ++g)
    for (std::size_t t0 = 0; t0 < x.n; t0 += kInputs)
      multiply_group_of<Type>(std::min(kInputs, x.n - t0), w, g, x, t0, y, ldy, beta);
}

}  // namespace

void multiply_groups(const interleaved_rows& w, std::size_t first, std::size_t last, const int8_inputs& x, float* y,
                     std::size_t ldy, float beta) {
  switch (w.type()) {
    case ggml_type::q4_0: return multiply_groups_as<ggml_type::q4_0>(w, first, last, x, y, ldy, beta);
    case ggml_type::q4_1: return multiply_groups_as<ggml_type::q4_1>(w, first, last, x, y, ldy, beta);
    default: return multiply_groups_as<ggml_type::q8_0>(w, first, last, x, y, ldy, beta);
  }
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else  // no x86 kernels compiled in

bool interleaved_kernel_runs() noexcept { return false; }
void multiply_groups(const interleaved_rows&, std::size_t, std::size_t, const int8_inputs&, float*, std::size_t,
                     float) {}

#endif

}  // namespace hcllama
