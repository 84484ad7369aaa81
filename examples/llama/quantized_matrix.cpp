#include "quantized_matrix.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>

#include "heterocache/detail/isa_dispatch.hpp"

#if HCLLAMA_X86_DISPATCH
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
// GCC 12's AVX-512 intrinsics read an undefined vector on purpose and warn about it where they are inlined, at
// their own lines in the header (GCC bug 105593): the warnings can only be silenced for the whole file.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#endif

namespace hcllama {

namespace {

[[noreturn]] void fail(const std::string& msg) { throw weight_error("weights: " + msg); }

#define HCLLAMA_UNROLL _Pragma("GCC unroll 16")

constexpr std::size_t kBlock = 32;     // weights per block of every type the kernels take (float types too)
constexpr std::size_t kMaxLanes = 16;  // the widest vector of any kernel (AVX-512)

// The quantized activations of one multiply (activation_format::int16 or int8; no codes when the products take
// fp32 inputs only): input t's codes at codes[t * cols] (of the format's code type), its block j's dx and
// dx * sum(qx) at scales[t * blocks + j] and sums[t * blocks + j].
struct input_codes {
  activation_format format = activation_format::fp32;
  const void* codes = nullptr;
  const float* scales = nullptr;
  const float* sums = nullptr;
};

// One thread's share of one product: rows [first, last) of the matrix at `data` for the n inputs x.
struct rows_job {
  ggml_type type;
  const std::uint8_t* data;
  std::size_t row_bytes, cols, first, last;
  const float* x;  // [n][cols]
  std::size_t n;
  const float* sums;  // sum(x) of input t's block j at sums[j * sums_stride + t] (types with an offset)
  std::size_t sums_stride;
  float* y;  // [n][ldy]
  std::size_t ldy;
  float beta;
  input_codes coded;  // the inputs of multiply_rows_coded
};

// The kernels of one instruction set.
struct kernel_table {
  std::size_t row_tile;  // rows one tile computes: the unit the rows are shared out in
  void (*multiply_rows)(const rows_job& job);
  void (*block_sums)(const float* x, std::size_t n, std::size_t cols, float* sums, std::size_t stride);
  void (*multiply_rows_coded)(const rows_job& job);  // the quantized types, from the job's codes
  void (*quantize_inputs)(activation_format f, const float* x, std::size_t cols, std::size_t first, std::size_t last,
                          void* codes, float* scales, float* sums);
};

HETEROCACHE_ALWAYS_INLINE std::uint16_t load_u16(const std::uint8_t* p) {
  std::uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// ---- portable C++: lanes the compiler may vectorize for the build's target -----------------------------
namespace portable {

constexpr std::size_t W = 8;
constexpr std::size_t kRows = 2, kTokens = 3;
struct vf {
  float v[W];
};

HETEROCACHE_ALWAYS_INLINE vf zero() { return {}; }
HETEROCACHE_ALWAYS_INLINE vf splat(float a) {
  vf r;
  for (std::size_t l = 0; l < W; ++l) r.v[l] = a;
  return r;
}
HETEROCACHE_ALWAYS_INLINE vf load(const float* p) {
  vf r;
  std::memcpy(r.v, p, sizeof r.v);
  return r;
}
HETEROCACHE_ALWAYS_INLINE void store(float* p, vf a) { std::memcpy(p, a.v, sizeof a.v); }
HETEROCACHE_ALWAYS_INLINE vf add(vf a, vf b) {
  for (std::size_t l = 0; l < W; ++l) a.v[l] += b.v[l];
  return a;
}
HETEROCACHE_ALWAYS_INLINE vf mul(vf a, vf b) {
  for (std::size_t l = 0; l < W; ++l) a.v[l] *= b.v[l];
  return a;
}
HETEROCACHE_ALWAYS_INLINE vf fmadd(vf a, vf b, vf c) {
  for (std::size_t l = 0; l < W; ++l) c.v[l] += a.v[l] * b.v[l];
  return c;
}
HETEROCACHE_ALWAYS_INLINE float reduce_add(vf a) {
  for (std::size_t half = W / 2; half > 0; half /= 2)
    for (std::size_t l = 0; l < half; ++l) a.v[l] += a.v[l + half];
  return a.v[0];
}
HETEROCACHE_ALWAYS_INLINE void nibbles(const std::uint8_t* p, vf* w) {
  for (std::size_t i = 0; i < 16; ++i) {
    w[i / W].v[i % W] = static_cast<float>(p[i] & 0x0F);
    w[(i + 16) / W].v[i % W] = static_cast<float>(p[i] >> 4);
  }
}
HETEROCACHE_ALWAYS_INLINE void signed_bytes(const std::uint8_t* p, vf* w) {
  for (std::size_t i = 0; i < 32; ++i) w[i / W].v[i % W] = static_cast<float>(static_cast<std::int8_t>(p[i]));
}
HETEROCACHE_ALWAYS_INLINE vf load_f16(const std::uint8_t* p) {
  vf r;
  dequantize_row(ggml_type::f16, p, r.v, W);
  return r;
}
HETEROCACHE_ALWAYS_INLINE vf load_bf16(const std::uint8_t* p) {
  vf r;
  dequantize_row(ggml_type::bf16, p, r.v, W);
  return r;
}
HETEROCACHE_ALWAYS_INLINE float half_at(const std::uint8_t* p) { return fp16_to_fp32(load_u16(p)); }

// Quantized activations: lane l of a dot product sums the products of codes l, l + 8, l + 16 and l + 24.
using fv = vf;
HETEROCACHE_ALWAYS_INLINE fv fzero() { return zero(); }
HETEROCACHE_ALWAYS_INLINE fv fsplat(float a) { return splat(a); }
HETEROCACHE_ALWAYS_INLINE fv fmul8(fv a, fv b) { return mul(a, b); }
HETEROCACHE_ALWAYS_INLINE fv fmadd8(fv a, fv b, fv c) {
  for (std::size_t l = 0; l < W; ++l) c.v[l] = std::fma(a.v[l], b.v[l], c.v[l]);  // rounded once, as the x86 sets
  return c;
}
HETEROCACHE_ALWAYS_INLINE float freduce(fv a) { return reduce_add(a); }
HETEROCACHE_ALWAYS_INLINE void fstore(float* p, fv v) { store(p, v); }
HETEROCACHE_ALWAYS_INLINE fv fbroadcast(const float* p) { return splat(*p); }
HETEROCACHE_ALWAYS_INLINE fv load8(const float* p, std::size_t count) {
  vf r{};
  std::memcpy(r.v, p, count * sizeof(float));
  return r;
}
HETEROCACHE_ALWAYS_INLINE void halves8(const std::uint8_t* p, std::size_t stride, std::size_t count, fv* first,
                                       fv* second) {
  *first = zero(), *second = zero();
  for (std::size_t k = 0; k < count; ++k) {
    first->v[k] = half_at(p + k * stride);
    second->v[k] = half_at(p + k * stride + 2);
  }
}

template <class Code, int MaxCode>
struct scalar_codes {
  using code = Code;
  struct wv {
    std::int32_t v[kBlock];
  };
  using xv = wv;
  HETEROCACHE_ALWAYS_INLINE static wv u4(const std::uint8_t* p) {
    wv r;
    for (std::size_t i = 0; i < 16; ++i) {
      r.v[i] = p[i] & 0x0F;
      r.v[i + 16] = p[i] >> 4;
    }
    return r;
  }
  HETEROCACHE_ALWAYS_INLINE static wv s8(const std::uint8_t* p) {
    wv r;
    for (std::size_t i = 0; i < kBlock; ++i) r.v[i] = static_cast<std::int8_t>(p[i]);
    return r;
  }
  HETEROCACHE_ALWAYS_INLINE static xv input(const code* p) {
    xv r;
    for (std::size_t i = 0; i < kBlock; ++i) r.v[i] = p[i];
    return r;
  }
  HETEROCACHE_ALWAYS_INLINE static fv dot_u4(wv w, xv x) {
    fv r;
    for (std::size_t l = 0; l < W; ++l) {
      std::int32_t s = 0;
      for (std::size_t i = l; i < kBlock; i += W) s += w.v[i] * x.v[i];
      r.v[l] = static_cast<float>(s);
    }
    return r;
  }
  HETEROCACHE_ALWAYS_INLINE static fv dot_s8(wv w, xv x) { return dot_u4(w, x); }
  HETEROCACHE_ALWAYS_INLINE static void quantize(const float* x, code* codes, float* scale, float* sum) {
    float amax = 0.0f;
    for (std::size_t i = 0; i < kBlock; ++i) amax = std::max(amax, std::abs(x[i]));
    float d = amax / static_cast<float>(MaxCode);
    const float inverse = d >= std::numeric_limits<float>::min() ? 1.0f / d : 0.0f;
    if (inverse == 0.0f) d = 0.0f;
    std::int32_t total = 0;
    for (std::size_t i = 0; i < kBlock; ++i) {
      const auto q = static_cast<std::int32_t>(std::nearbyint(x[i] * inverse));  // nearest, ties to even
      codes[i] = static_cast<code>(q);
      total += q;
    }
    *scale = d;
    *sum = d * static_cast<float>(total);
  }
};
using int16_codes = scalar_codes<std::int16_t, 32767>;
using int8_codes = scalar_codes<std::int8_t, 127>;

#include "quantized_kernels.inc"

}  // namespace portable

#if HCLLAMA_X86_DISPATCH

// The x86 kernels are compiled for their instruction set by a target region rather than a flag on the file,
// so every other function of the program stays on the build's baseline.
HCLLAMA_BEGIN_AVX2

// ---- AVX2 + FMA + F16C -----------------------------------------------------------------------------------
namespace avx2 {

constexpr std::size_t W = 8;
constexpr std::size_t kRows = 2, kTokens = 3;  // 6 sums, 2 offsets, 4 weights and 2 temporaries of 16 registers
using vf = __m256;

HETEROCACHE_ALWAYS_INLINE vf zero() { return _mm256_setzero_ps(); }
HETEROCACHE_ALWAYS_INLINE vf splat(float a) { return _mm256_set1_ps(a); }
HETEROCACHE_ALWAYS_INLINE vf load(const float* p) { return _mm256_loadu_ps(p); }
HETEROCACHE_ALWAYS_INLINE void store(float* p, vf a) { _mm256_storeu_ps(p, a); }
HETEROCACHE_ALWAYS_INLINE vf add(vf a, vf b) { return _mm256_add_ps(a, b); }
HETEROCACHE_ALWAYS_INLINE vf mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
HETEROCACHE_ALWAYS_INLINE vf fmadd(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
HETEROCACHE_ALWAYS_INLINE float reduce_add(vf a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
HETEROCACHE_ALWAYS_INLINE __m128i load8(const std::uint8_t* p) {
  return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
}
HETEROCACHE_ALWAYS_INLINE __m128i load16(const std::uint8_t* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}
// Each byte widened once to 32 bits, both of its nibbles taken from there.
HETEROCACHE_ALWAYS_INLINE void nibbles(const std::uint8_t* p, vf* w) {
  const __m256i low = _mm256_set1_epi32(0x0F);
  const __m256i first = _mm256_cvtepu8_epi32(load8(p)), second = _mm256_cvtepu8_epi32(load8(p + 8));
  w[0] = _mm256_cvtepi32_ps(_mm256_and_si256(first, low));
  w[1] = _mm256_cvtepi32_ps(_mm256_and_si256(second, low));
  w[2] = _mm256_cvtepi32_ps(_mm256_srli_epi32(first, 4));
  w[3] = _mm256_cvtepi32_ps(_mm256_srli_epi32(second, 4));
}
HETEROCACHE_ALWAYS_INLINE void signed_bytes(const std::uint8_t* p, vf* w) {
  HCLLAMA_UNROLL
  for (std::size_t k = 0; k < 4; ++k) w[k] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(load8(p + 8 * k)));
}
HETEROCACHE_ALWAYS_INLINE vf load_f16(const std::uint8_t* p) { return _mm256_cvtph_ps(load16(p)); }
HETEROCACHE_ALWAYS_INLINE vf load_bf16(const std::uint8_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load16(p)), 16));
}
HETEROCACHE_ALWAYS_INLINE float half_at(const std::uint8_t* p) { return _cvtsh_ss(load_u16(p)); }

#include "quantized_codes_avx2.inc"
#include "quantized_kernels.inc"

}  // namespace avx2
HCLLAMA_END_TARGET

HCLLAMA_BEGIN_AVX512

// ---- AVX-512F --------------------------------------------------------------------------------------------
namespace avx512 {

constexpr std::size_t W = 16;
constexpr std::size_t kRows = 4, kTokens = 4;  // 16 sums, 4 offsets, 2 weights and 2 temporaries of 32 registers
using vf = __m512;

HETEROCACHE_ALWAYS_INLINE vf zero() { return _mm512_setzero_ps(); }
HETEROCACHE_ALWAYS_INLINE vf splat(float a) { return _mm512_set1_ps(a); }
HETEROCACHE_ALWAYS_INLINE vf load(const float* p) { return _mm512_loadu_ps(p); }
HETEROCACHE_ALWAYS_INLINE void store(float* p, vf a) { _mm512_storeu_ps(p, a); }
HETEROCACHE_ALWAYS_INLINE vf add(vf a, vf b) { return _mm512_add_ps(a, b); }
HETEROCACHE_ALWAYS_INLINE vf mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
HETEROCACHE_ALWAYS_INLINE vf fmadd(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
HETEROCACHE_ALWAYS_INLINE float reduce_add(vf a) {
  // Halves folded in place (every lane ends up with the sum), which keeps the sums in one fixed order.
  a = _mm512_add_ps(a, _mm512_shuffle_f32x4(a, a, _MM_SHUFFLE(1, 0, 3, 2)));
  a = _mm512_add_ps(a, _mm512_shuffle_f32x4(a, a, _MM_SHUFFLE(2, 3, 0, 1)));
  a = _mm512_add_ps(a, _mm512_permute_ps(a, _MM_SHUFFLE(1, 0, 3, 2)));
  a = _mm512_add_ps(a, _mm512_permute_ps(a, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_cvtss_f32(a);
}
HETEROCACHE_ALWAYS_INLINE __m128i load16(const std::uint8_t* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}
// Each byte widened once to 32 bits, both of its nibbles taken from there.
HETEROCACHE_ALWAYS_INLINE void nibbles(const std::uint8_t* p, vf* w) {
  const __m512i codes = _mm512_cvtepu8_epi32(load16(p));
  w[0] = _mm512_cvtepi32_ps(_mm512_and_si512(codes, _mm512_set1_epi32(0x0F)));
  w[1] = _mm512_cvtepi32_ps(_mm512_srli_epi32(codes, 4));
}
HETEROCACHE_ALWAYS_INLINE void signed_bytes(const std::uint8_t* p, vf* w) {
  w[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(load16(p)));
  w[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(load16(p + 16)));
}
HETEROCACHE_ALWAYS_INLINE vf load_f16(const std::uint8_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
HETEROCACHE_ALWAYS_INLINE vf load_bf16(const std::uint8_t* p) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}
HETEROCACHE_ALWAYS_INLINE float half_at(const std::uint8_t* p) { return _cvtsh_ss(load_u16(p)); }

#include "quantized_codes_avx2.inc"
#include "quantized_kernels.inc"

}  // namespace avx512

HCLLAMA_END_TARGET

#endif  // HCLLAMA_X86_DISPATCH

const kernel_table& kernels(kernel_isa isa) noexcept {
#if HCLLAMA_X86_DISPATCH
  if (isa == kernel_isa::avx512) return avx512::table;
  if (isa == kernel_isa::avx2) return avx2::table;
#endif
  (void)isa;
  return portable::table;
}

bool has_offset(ggml_type t) noexcept { return t == ggml_type::q4_0 || t == ggml_type::q4_1; }
bool is_quantized(ggml_type t) noexcept { return has_offset(t) || t == ggml_type::q8_0; }

// Runs of tiles per thread a product is cut into (see matrix_multiplier::multiply).
constexpr std::size_t kSharesPerThread = 4;

std::size_t tiles_of(const quantized_matrix& w, const kernel_table& k) noexcept {
  return (w.rows() + k.row_tile - 1) / k.row_tile;
}

// Tiles [first_tile, last_tile) of the products' rows, counted across the products in order. A product whose
// type is quantized takes `codes` where it has them.
void multiply_tiles(const kernel_table& k, std::span<const weight_product> products, const float* x, std::size_t n,
                    const std::vector<float>& sums, std::size_t sums_stride, input_codes codes,
                    std::size_t first_tile, std::size_t last_tile) {
  std::size_t tile0 = 0;  // the first tile of product p
  for (const weight_product& p : products) {
    const quantized_matrix& w = *p.w;
    const std::size_t from = std::max(first_tile, tile0), to = std::min(last_tile, tile0 + tiles_of(w, k));
    if (from < to) {
      const rows_job job{w.type(), w.row_data(0), w.row_bytes(), w.cols(), (from - tile0) * k.row_tile,
                         std::min(w.rows(), (to - tile0) * k.row_tile), x, n, sums.data(), sums_stride, p.y, w.rows(),
                         p.beta, codes};
      if (codes.codes != nullptr && is_quantized(w.type())) k.multiply_rows_coded(job);
      else k.multiply_rows(job);
    }
    tile0 += tiles_of(w, k);
  }
}

}  // namespace

// ---- quantized_matrix ----------------------------------------------------------------------------------

bool quantized_matrix::supports(ggml_type t) noexcept {
  switch (t) {
    case ggml_type::f32: case ggml_type::f16: case ggml_type::bf16:
    case ggml_type::q4_0: case ggml_type::q4_1: case ggml_type::q8_0:
      return true;
    default:
      return false;
  }
}

quantized_matrix::quantized_matrix(std::string name, ggml_type type, std::size_t rows, std::size_t cols,
                                   std::span<const std::uint8_t> blocks, std::shared_ptr<const void> owner)
    : name_(std::move(name)), type_(type), rows_(rows), cols_(cols), data_(blocks.data()), owner_(std::move(owner)) {
  if (!supports(type))
    fail("tensor " + describe() + ": the matrix kernels take F32, F16, BF16, Q4_0, Q4_1 and Q8_0, not " +
         to_string(type));
  if (rows == 0 || cols == 0) fail("tensor " + describe() + " is empty");
  if (cols % block_size(type) != 0)
    fail("tensor " + describe() + ": rows of " + std::to_string(cols) + " weights are not whole blocks of " +
         std::to_string(block_size(type)));
  row_bytes_ = cols / block_size(type) * type_size(type);
  if (blocks.size() % row_bytes_ != 0 || blocks.size() / row_bytes_ != rows)
    fail("tensor " + describe() + " holds " + std::to_string(blocks.size()) + " bytes, not " +
         std::to_string(rows) + " rows of " + std::to_string(row_bytes_));
  if (interleaved_rows::fits(type, rows)) interleaved_ = std::make_shared<interleaved_state>();
}

struct quantized_matrix::interleaved_state {
  std::once_flag once;
  std::unique_ptr<const interleaved_rows> rows;
};

const interleaved_rows* quantized_matrix::interleaved() const {
  if (!interleaved_) return nullptr;
  std::call_once(interleaved_->once, [&] {
    interleaved_->rows = std::make_unique<const interleaved_rows>(*this);
    if (mapped_) release_mapped_pages({data_, bytes()});  // read again from the file if the other kernels need them
  });
  return interleaved_->rows.get();
}

quantized_matrix quantized_matrix::from_gguf(const gguf_file& f, const gguf_tensor_info& t) {
  quantized_matrix w(t.name, t.type, static_cast<std::size_t>(t.rows()), static_cast<std::size_t>(t.row_length()),
                     f.tensor_bytes(t), f.bytes_owner());
  w.mapped_ = f.mapped();
  return w;
}

void quantized_matrix::dequantize_row(std::size_t r, float* out) const {
  if (r >= rows_) fail("row " + std::to_string(r) + " of tensor " + describe() + " is out of range");
  hcllama::dequantize_row(type_, row_data(r), out, cols_);
}

std::string quantized_matrix::describe() const {
  return "'" + name_ + "' (" + to_string(type_) + ", " + std::to_string(rows_) + " x " + std::to_string(cols_) + ")";
}

// ---- matrix_multiplier ---------------------------------------------------------------------------------

const char* to_string(activation_format f) noexcept {
  switch (f) {
    case activation_format::int16: return "int16";
    case activation_format::int8: return "int8";
    default: return "fp32";
  }
}

std::optional<activation_format> parse_activation_format(std::string_view name) noexcept {
  if (name == "int16") return activation_format::int16;
  if (name == "int8") return activation_format::int8;
  if (name == "fp32") return activation_format::fp32;
  return std::nullopt;
}

matrix_multiplier::matrix_multiplier(heterocache::host_thread_pool& pool, kernel_isa isa, activation_format activations)
    : pool_(pool), isa_(isa), activations_(activations) {
  if (!runs(isa)) fail(std::string("the ") + to_string(isa) + " kernels do not run on this processor");
}

void matrix_multiplier::matvec(const quantized_matrix& w, const float* x, float* y, float beta) {
  matmat(w, x, 1, y, beta);
}

void matrix_multiplier::matmat(const quantized_matrix& w, const float* x, std::size_t n, float* y, float beta) {
  const weight_product p{&w, y, beta};
  multiply({&p, 1}, x, n);
}

bool matrix_multiplier::takes_codes_(ggml_type t) const noexcept {
  return activations_ != activation_format::fp32 && is_quantized(t);
}

void matrix_multiplier::compute_block_sums_(std::span<const weight_product> products, const float* x, std::size_t n) {
  if (std::none_of(products.begin(), products.end(),
                   [&](const weight_product& p) { return has_offset(p.w->type()) && !takes_codes_(p.w->type()); }))
    return;
  const std::size_t cols = products.front().w->cols();
  // Each tile loads the sums of its inputs as one vector: room for a whole vector after the last input.
  block_sums_stride_ = n + kMaxLanes;
  block_sums_.assign(cols / kBlock * block_sums_stride_, 0.0f);
  kernels(isa_).block_sums(x, n, cols, block_sums_.data(), block_sums_stride_);
}

bool matrix_multiplier::quantize_inputs_(std::span<const weight_product> products, const float* x, std::size_t n) {
  if (std::none_of(products.begin(), products.end(), [&](const weight_product& p) { return takes_codes_(p.w->type()); }))
    return false;
  const std::size_t cols = products.front().w->cols(), blocks = cols / kBlock;
  // grown, never shrunk: a decode step after a prefill block writes into the same buffers
  if (codes_.size() < n * cols) codes_.resize(n * cols);
  if (scales_.size() < n * blocks) scales_.resize(n * blocks), code_sums_.resize(n * blocks);
  const kernel_table& k = kernels(isa_);
  // A few inputs are quantized by the caller; a prefill block's are shared out.
  constexpr std::size_t kInputsPerShare = 16;
  const std::size_t shares = std::min(threads(), (n + kInputsPerShare - 1) / kInputsPerShare);
  if (shares <= 1) {
    k.quantize_inputs(activations_, x, cols, 0, n, codes_.data(), scales_.data(), code_sums_.data());
    return true;
  }
  pool_.for_each(static_cast<heterocache::index_t>(shares), [&](heterocache::index_t share) {
    const auto s = static_cast<std::size_t>(share);
    k.quantize_inputs(activations_, x, cols, n * s / shares, n * (s + 1) / shares, codes_.data(), scales_.data(),
                      code_sums_.data());
  });
  return true;
}

bool matrix_multiplier::multiply_interleaved_(std::span<const weight_product> products, std::size_t n) {
  if (isa_ != kernel_isa::avx512 || !interleaved_kernel_runs()) return false;
  std::size_t groups = 0;
  for (const weight_product& p : products) {
    if (!interleaved_rows::fits(p.w->type(), p.w->rows())) return false;
    groups += p.w->rows() / interleaved_rows::kGroupRows;
  }
  std::vector<const interleaved_rows*> rows;
  rows.reserve(products.size());
  for (const weight_product& p : products) rows.push_back(p.w->interleaved());
  const auto* codes = reinterpret_cast<const std::int8_t*>(codes_.data());
  const std::size_t cols = products.front().w->cols(), blocks = cols / kBlock;
  if (code_totals_.size() < n * blocks) code_totals_.resize(n * blocks);
  for (std::size_t b = 0; b < n * blocks; ++b) {  // input t's block j is b = t * blocks + j: codes b * 32 on
    std::int32_t total = 0;
    for (std::size_t i = 0; i < kBlock; ++i) total += codes[b * kBlock + i];
    code_totals_[b] = total;
  }
  const int8_inputs x{codes, scales_.data(), code_sums_.data(), code_totals_.data(), n};
  // shared out as the tiles below: equal runs of groups, kSharesPerThread per thread, to whichever thread is free
  const std::size_t shares = std::min(groups, threads() == 1 ? 1 : threads() * kSharesPerThread);
  pool_.for_each(static_cast<heterocache::index_t>(shares), [&](heterocache::index_t share) {
    const std::size_t s = static_cast<std::size_t>(share), first = groups * s / shares, last = groups * (s + 1) / shares;
    std::size_t group0 = 0;  // the first group of product p
    for (std::size_t p = 0; p < products.size(); ++p) {
      const std::size_t from = std::max(first, group0), to = std::min(last, group0 + rows[p]->groups());
      if (from < to) multiply_groups(*rows[p], from - group0, to - group0, x, products[p].y, rows[p]->rows(), products[p].beta);
      group0 += rows[p]->groups();
    }
  });
  return true;
}

void matrix_multiplier::multiply(std::span<const weight_product> products, const float* x, std::size_t n) {
  if (products.empty() || n == 0) return;
  for (const weight_product& p : products) {
    if (!p.w || !p.y) fail("a matrix product needs a matrix and an output");
    if (p.w->cols() != products.front().w->cols())
      fail("tensors " + products.front().w->describe() + " and " + p.w->describe() + " do not take the same input");
  }
  compute_block_sums_(products, x, n);
  const input_codes codes = quantize_inputs_(products, x, n)
                                ? input_codes{activations_, codes_.data(), scales_.data(), code_sums_.data()}
                                : input_codes{};
  if (codes.format == activation_format::int8 && multiply_interleaved_(products, n)) return;
  const kernel_table& k = kernels(isa_);
  // The tiles of all products shared out in equal runs, kSharesPerThread per thread, each to whichever thread is
  // free next (every row costs the same, but a thread of a shared machine may be held up: one share per thread
  // leaves the others waiting for it).
  std::size_t tiles = 0;
  for (const weight_product& p : products) tiles += tiles_of(*p.w, k);
  const std::size_t shares = std::min(tiles, threads() == 1 ? 1 : threads() * kSharesPerThread);
  pool_.for_each(static_cast<heterocache::index_t>(shares), [&](heterocache::index_t share) {
    const std::size_t s = static_cast<std::size_t>(share);
    multiply_tiles(k, products, x, n, block_sums_, block_sums_stride_, codes, tiles * s / shares,
                   tiles * (s + 1) / shares);
  });
}

}  // namespace hcllama
