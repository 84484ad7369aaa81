// The matrix kernels of quantized_matrix.hpp against a float64 reference over dequantize_row (the tested
// dequantization of gguf.cpp), on every instruction set this processor runs, with fp32, int16 and int8
// activations.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "quantized_matrix.hpp"

using namespace hcllama;

namespace {

constexpr ggml_type kTypes[] = {ggml_type::f32, ggml_type::f16, ggml_type::bf16,
                                ggml_type::q4_0, ggml_type::q4_1, ggml_type::q8_0};
constexpr activation_format kFormats[] = {activation_format::fp32, activation_format::int16, activation_format::int8};

// The largest code of a quantized format.
float max_code(activation_format f) { return f == activation_format::int8 ? 127.0f : 32767.0f; }

bool is_float_type(ggml_type t) { return t == ggml_type::f32 || t == ggml_type::f16 || t == ggml_type::bf16; }

void put_u16(std::vector<std::uint8_t>& out, std::uint16_t v) {
  out.push_back(static_cast<std::uint8_t>(v & 0xFF));
  out.push_back(static_cast<std::uint8_t>(v >> 8));
}

// A block scale or offset: mostly ordinary values of either sign, often the edges (zero, negative zero,
// subnormal, the largest fp16).
std::uint16_t random_scale(std::mt19937& rng) {
  switch (std::uniform_int_distribution<int>(0, 9)(rng)) {
    case 0: return fp32_to_fp16(0.0f);
    case 1: return fp32_to_fp16(-0.0f);
    case 2: return static_cast<std::uint16_t>(std::uniform_int_distribution<int>(1, 0x3FF)(rng));  // subnormal
    case 3: return fp32_to_fp16(std::uniform_int_distribution<int>(0, 1)(rng) ? 65504.0f : -65504.0f);
    default: {
      const float mag = std::exp(std::uniform_real_distribution<float>(-9.0f, 0.0f)(rng));
      return fp32_to_fp16(std::uniform_int_distribution<int>(0, 1)(rng) ? mag : -mag);
    }
  }
}

// A quantized code byte: random, or an edge (all low bits, all high bits, both nibbles at their maximum).
std::uint8_t random_code(std::mt19937& rng) {
  constexpr std::uint8_t edges[] = {0x00, 0xFF, 0x0F, 0xF0, 0x80, 0x7F};
  const int pick = std::uniform_int_distribution<int>(0, 15)(rng);
  return pick < 6 ? edges[pick] : static_cast<std::uint8_t>(std::uniform_int_distribution<int>(0, 255)(rng));
}

// A float weight of the float types: ordinary values of either sign and the edges of their format.
float random_weight(std::mt19937& rng) {
  switch (std::uniform_int_distribution<int>(0, 11)(rng)) {
    case 0: return 0.0f;
    case 1: return -0.0f;
    case 2:  // an fp16 subnormal
      return std::ldexp(1.0f, -24) * static_cast<float>(std::uniform_int_distribution<int>(1, 1023)(rng));
    case 3: return 65504.0f;
    default: return std::normal_distribution<float>(0.0f, 1.0f)(rng);
  }
}

// rows x cols weights of type t as GGUF stores them.
std::vector<std::uint8_t> random_blocks(ggml_type t, std::size_t rows, std::size_t cols, std::mt19937& rng) {
  std::vector<std::uint8_t> out;
  for (std::size_t r = 0; r < rows; ++r) {
    if (t == ggml_type::f32 || t == ggml_type::f16 || t == ggml_type::bf16) {
      for (std::size_t c = 0; c < cols; ++c) {
        const float w = random_weight(rng);
        std::uint32_t bits;
        std::memcpy(&bits, &w, 4);
        if (t == ggml_type::f32)
          for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(bits >> (8 * i)));
        else if (t == ggml_type::f16) put_u16(out, fp32_to_fp16(w));
        else put_u16(out, static_cast<std::uint16_t>(bits >> 16));
      }
      continue;
    }
    for (std::size_t b = 0; b < cols / 32; ++b) {
      put_u16(out, random_scale(rng));                       // d
      if (t == ggml_type::q4_1) put_u16(out, random_scale(rng));  // m
      const std::size_t codes = t == ggml_type::q8_0 ? 32 : 16;
      for (std::size_t i = 0; i < codes; ++i) out.push_back(random_code(rng));
    }
  }
  return out;
}

struct test_matrix {
  std::vector<std::uint8_t> blocks;
  quantized_matrix w;
  test_matrix(ggml_type t, std::size_t rows, std::size_t cols, unsigned seed) {
    std::mt19937 rng(seed);
    blocks = random_blocks(t, rows, cols, rng);
    w = quantized_matrix(std::string("test.") + to_string(t), t, rows, cols, blocks, nullptr);
  }
};

// Normal inputs; with `edges`, some blocks of 32 are the quantizers' edge cases: all zero, below FLT_MIN
// (dx underflows: codes 0), exact halves of the int8 or int16 dx (ties to even), one large value among small ones.
std::vector<float> random_inputs(std::size_t count, unsigned seed, bool edges = false) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> x(count);
  for (auto& v : x) v = nd(rng);
  if (edges)
    for (std::size_t b = 0; b + 32 <= count; b += 32) {
      float* block = &x[b];
      switch (std::uniform_int_distribution<int>(0, 7)(rng)) {
        case 0: std::fill(block, block + 32, 0.0f); break;
        case 1: for (int i = 0; i < 32; ++i) block[i] *= 1e-38f; break;
        case 2:  // dx = 1: values k + 0.5
          block[0] = 127.0f;
          for (int i = 1; i < 32; ++i) block[i] = static_cast<float>(std::uniform_int_distribution<int>(-126, 125)(rng)) + 0.5f;
          break;
        case 3: block[std::uniform_int_distribution<int>(0, 31)(rng)] = -1e4f; break;
        case 4:  // the int16 dx = 1: values k + 0.5
          block[0] = -32767.0f;
          for (int i = 1; i < 32; ++i)
            block[i] = static_cast<float>(std::uniform_int_distribution<int>(-32766, 32765)(rng)) + 0.5f;
          break;
        default: break;
      }
    }
  return x;
}

// A row's exact dot product with one input (float64 over the dequantized weights), and the scale the kernels'
// float32 rounding is measured against: the sum of |terms| the kernels add, which for the types with a block
// offset is sum |q d x| + |m x| (d * sum(q x) and m * sum(x) may cancel).
struct reference_dot {
  double value = 0, magnitude = 0;
};

// One input as the kernels of a quantized format f see it (quantized_matrix.hpp): per block of 32,
// dx = max|x| / C in float (C = 127 or 32767), codes nearest-even(x * (1 / dx)), dx = 0 below FLT_MIN;
// returned as the values qx * dx.
std::vector<float> quantized_input(const float* x, std::size_t cols, activation_format f) {
  const float c = max_code(f);
  std::vector<float> out(cols);
  for (std::size_t b = 0; b < cols / 32; ++b) {
    float amax = 0.0f;
    for (std::size_t i = 0; i < 32; ++i) amax = std::max(amax, std::abs(x[b * 32 + i]));
    float d = amax / c;
    const float inverse = d >= std::numeric_limits<float>::min() ? 1.0f / d : 0.0f;
    if (inverse == 0.0f) d = 0.0f;
    for (std::size_t i = 0; i < 32; ++i) {
      const float q = std::nearbyint(x[b * 32 + i] * inverse);
      REQUIRE(std::abs(q) <= c);
      out[b * 32 + i] = static_cast<float>(static_cast<double>(q) * d);  // exact: q has at most 16 bits
    }
  }
  return out;
}

reference_dot reference(const quantized_matrix& w, std::size_t r, const float* x) {
  std::vector<float> row(w.cols());
  w.dequantize_row(r, row.data());
  reference_dot ref;
  for (std::size_t c = 0; c < w.cols(); ++c) {
    ref.value += static_cast<double>(row[c]) * x[c];
    ref.magnitude += std::abs(static_cast<double>(row[c]) * x[c]);
  }
  if (w.type() == ggml_type::q4_0 || w.type() == ggml_type::q4_1) {
    ref.magnitude = 0;
    const std::uint8_t* blocks = w.row_data(r);
    const std::size_t bytes = type_size(w.type());
    for (std::size_t b = 0; b < w.cols() / 32; ++b) {
      std::uint16_t d16, m16;
      std::memcpy(&d16, blocks + b * bytes, 2);
      std::memcpy(&m16, blocks + b * bytes + 2, 2);
      const double d = fp16_to_fp32(d16), m = w.type() == ggml_type::q4_1 ? fp16_to_fp32(m16) : -8.0 * d;
      for (std::size_t i = 0; i < 32; ++i) {
        const double xi = x[b * 32 + i];
        ref.magnitude += std::abs((row[b * 32 + i] - m) * xi) + std::abs(m * xi);
      }
    }
  }
  return ref;
}

// The kernels keep fp32 sums over at most a few thousand terms in 8 or 16 lanes: well within 2^-16 of the
// magnitude of the terms.
constexpr double kTolerance = 1.0 / 65536;

// The reference of format f: the exact product with the inputs as the kernels of f take them (int16, int8:
// quantized for the 4- and 8-bit types).
void check_against_reference(const quantized_matrix& w, const std::vector<float>& x, std::size_t n,
                             const std::vector<float>& y, activation_format f = activation_format::fp32) {
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t r = 0; r < w.rows(); ++r) {
      const bool quantized_inputs = f != activation_format::fp32 && !is_float_type(w.type());
      const reference_dot ref = quantized_inputs ? reference(w, r, quantized_input(&x[t * w.cols()], w.cols(), f).data())
                                                 : reference(w, r, &x[t * w.cols()]);
      const double got = y[t * w.rows() + r];
      if (std::abs(got - ref.value) > kTolerance * ref.magnitude + 1e-30) {
        FAIL_CHECK(w.describe() << " row " << r << " input " << t << " of " << n << ", " << to_string(f)
                                << " activations: " << got << " vs " << ref.value << " (magnitude " << ref.magnitude << ")");
        return;
      }
    }
}

std::vector<float> product(matrix_multiplier& mm, const quantized_matrix& w, const std::vector<float>& x,
                           std::size_t n) {
  // the float types take fp32 inputs whatever the format
  std::vector<float> y(n * w.rows(), std::numeric_limits<float>::quiet_NaN());  // beta 0 must not read y
  mm.matmat(w, x.data(), n, y.data());
  return y;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Row lengths: quantized rows are whole blocks of 32 (none a multiple of 256); float rows any length.
std::vector<std::size_t> test_cols(ggml_type t) {
  if (t == ggml_type::f32 || t == ggml_type::f16 || t == ggml_type::bf16) return {1, 7, 31, 32, 33, 100, 577};
  return {32, 96, 160, 608};
}

}  // namespace

TEST_CASE("the run-time choice of kernels is the best this processor runs") {
  const std::vector<kernel_isa> isas = supported_isas();
  REQUIRE(!isas.empty());
  CHECK(isas.front() == kernel_isa::portable);
  CHECK(best_isa() == isas.back());
  MESSAGE("matrix kernels: " << std::string(to_string(best_isa())));
  heterocache::host_thread_pool one_thread(1);
  CHECK(matrix_multiplier(one_thread).isa() == best_isa());
}

TEST_CASE("matvec and matmat match the float64 reference for every type, size, instruction set and format") {
  unsigned seed = 1;
  for (kernel_isa isa : supported_isas())
    for (activation_format f : kFormats) {
      heterocache::host_thread_pool mm_pool(2);
      matrix_multiplier mm(mm_pool, isa, f);
      for (ggml_type t : kTypes)
        for (std::size_t cols : test_cols(t))
          for (std::size_t rows : {std::size_t{1}, std::size_t{5}, std::size_t{17}, std::size_t{32}}) {  // 32: regrouped
            CAPTURE(std::string(to_string(isa)));
            const test_matrix m(t, rows, cols, ++seed);
            for (std::size_t n : {1, 2, 3, 4, 5, 7, 9, 17}) {
              const std::vector<float> x = random_inputs(n * cols, ++seed, f != activation_format::fp32);
              check_against_reference(m.w, x, n, product(mm, m.w, x, n), f);
            }
          }
    }
}

TEST_CASE("quantized activations stay within half a step of the quantizer per input of the exact product") {
  // |y - w . x| <= sum over blocks j of dx_j / 2 * sum |w| over the block (the rounding of each input; a block
  // whose dx underflows: max|x| * sum |w|), plus the kernels' float32 rounding.
  unsigned seed = 900;
  for (kernel_isa isa : supported_isas())
    for (activation_format f : {activation_format::int16, activation_format::int8}) {
    heterocache::host_thread_pool mm_pool(2);
    matrix_multiplier mm(mm_pool, isa, f);
    const float c = max_code(f);
    for (ggml_type t : {ggml_type::q4_0, ggml_type::q4_1, ggml_type::q8_0}) {
      CAPTURE(std::string(to_string(isa)));
      CAPTURE(std::string(to_string(f)));
      const test_matrix m(t, 23, 576, ++seed);
      const std::size_t n = 4;
      const std::vector<float> x = random_inputs(n * 576, ++seed, true);
      const std::vector<float> y = product(mm, m.w, x, n);
      std::vector<float> row(576);
      double worst = 0;  // the largest error as a fraction of its bound
      for (std::size_t i = 0; i < n; ++i)
        for (std::size_t r = 0; r < m.w.rows(); ++r) {
          m.w.dequantize_row(r, row.data());
          const float* xi = &x[i * 576];
          const reference_dot exact = reference(m.w, r, xi);
          double bound = 0;
          for (std::size_t b = 0; b < 576 / 32; ++b) {
            float amax = 0;
            for (std::size_t k = 0; k < 32; ++k) amax = std::max(amax, std::abs(xi[b * 32 + k]));
            double row_mass = 0;
            for (std::size_t k = 0; k < 32; ++k) row_mass += std::abs(static_cast<double>(row[b * 32 + k]));
            // a block whose dx underflows loses its values whole
            bound += (amax / c >= std::numeric_limits<float>::min() ? amax / c / 2.0 : amax) * row_mass;
          }
          const double error = std::abs(y[i * m.w.rows() + r] - exact.value);
          const double allowed = bound * (1 + 1e-5) + 2 * kTolerance * exact.magnitude + 1e-30;
          if (error > allowed)
            FAIL_CHECK(m.w.describe() << " row " << r << " input " << i << ": error " << error << " against a bound of "
                                      << bound);
          if (bound > 0) worst = std::max(worst, error / bound);
        }
      CHECK(worst > 0.0);  // the quantization does change the products: the check above is not vacuous
    }
  }
}

TEST_CASE("matmat of n = 1..130 inputs gives, for each input, the bits of matvec of that input alone") {
  for (kernel_isa isa : supported_isas())
    for (activation_format f : kFormats)
    for (ggml_type t : kTypes) {
      CAPTURE(std::string(to_string(isa)));
      CAPTURE(std::string(to_string(f)));
      heterocache::host_thread_pool mm_pool(3);
      matrix_multiplier mm(mm_pool, isa, f);
      const std::size_t cols = t == ggml_type::f32 || t == ggml_type::f16 || t == ggml_type::bf16 ? 45 : 64;
      for (std::size_t rows : {13, 48}) {  // 48: rows regrouped by 16 for the int8 kernels
      const test_matrix m(t, rows, cols, 100 + static_cast<unsigned>(t) + static_cast<unsigned>(rows));
      const std::vector<float> x = random_inputs(130 * cols, 7);
      std::vector<std::vector<float>> alone(130);
      for (std::size_t i = 0; i < 130; ++i) {
        alone[i].resize(m.w.rows());
        mm.matvec(m.w, &x[i * cols], alone[i].data());
      }
      for (std::size_t n = 1; n <= 130; ++n) {
        const std::vector<float> y = product(mm, m.w, x, n);
        if (n == 130) check_against_reference(m.w, x, n, y, f);
        for (std::size_t i = 0; i < n; ++i)
          if (std::memcmp(&y[i * m.w.rows()], alone[i].data(), m.w.rows() * sizeof(float)) != 0) {
            FAIL_CHECK(m.w.describe() << ": input " << i << " of " << n << " differs from its matvec");
            break;
          }
      }
      }
    }
}

TEST_CASE("the results are the same bits whatever the thread count") {
  for (kernel_isa isa : supported_isas())
    for (activation_format f : kFormats)
    for (ggml_type t : kTypes) {
      CAPTURE(std::string(to_string(isa)));
      CAPTURE(std::string(to_string(f)));
      for (std::size_t rows : {131, 144}) {  // 144: 9 groups of 16 regrouped rows over 2 or 3 threads
      const test_matrix m(t, rows, 96, 200 + static_cast<unsigned>(t));
      for (std::size_t n : {1, 6, 64}) {
        const std::vector<float> x = random_inputs(n * 96, 9);
        heterocache::host_thread_pool one_pool(1);
        matrix_multiplier one(one_pool, isa, f);
        const std::vector<float> y1 = product(one, m.w, x, n);
        for (std::size_t threads : {2, 3}) {
          heterocache::host_thread_pool mm_pool(static_cast<heterocache::index_t>(threads));
          matrix_multiplier mm(mm_pool, isa, f);
          CHECK_MESSAGE(same_bits(product(mm, m.w, x, n), y1),
                        m.w.describe() << ", " << threads << " threads, n " << n);
        }
      }
      }
    }
}

TEST_CASE("rows regrouped by 16 for the int8 kernels: which matrices, the same weights, products as the reference") {
  // which matrices are regrouped: the 4- and 8-bit types with whole groups of 16 rows
  for (ggml_type t : kTypes) {
    const test_matrix whole(t, 32, 64, 400 + static_cast<unsigned>(t)), partial(t, 23, 64, 401);
    CHECK((whole.w.interleaved() != nullptr) == (t == ggml_type::q4_0 || t == ggml_type::q4_1 || t == ggml_type::q8_0));
    CHECK(partial.w.interleaved() == nullptr);
  }
  // the regrouped bytes hold each row's blocks: every d and every code found where the layout puts it
  for (ggml_type t : {ggml_type::q4_0, ggml_type::q4_1, ggml_type::q8_0}) {
    CAPTURE(std::string(to_string(t)));
    const test_matrix m(t, 48, 96, 410 + static_cast<unsigned>(t));
    const interleaved_rows* g = m.w.interleaved();
    REQUIRE(g != nullptr);
    CHECK(g == m.w.interleaved());  // built once
    CHECK(g->bytes() == m.w.bytes());
    CHECK(g->groups() == 3);
    const std::size_t file_codes = t == ggml_type::q4_1 ? 4 : 2, codes = t == ggml_type::q4_1 ? 64 : 32;
    for (std::size_t r = 0; r < 48; ++r)
      for (std::size_t j = 0; j < 3; ++j) {
        const std::uint8_t* in = m.w.row_data(r) + j * type_size(t);
        const std::uint8_t* out = g->block(r / 16, j);
        const std::size_t i = r % 16;
        CHECK(std::memcmp(out + 2 * i, in, 2) == 0);
        if (t == ggml_type::q4_1) CHECK(std::memcmp(out + 32 + 2 * i, in + 2, 2) == 0);
        for (std::size_t c = 0; c < (t == ggml_type::q8_0 ? 32u : 16u); ++c) {
          const std::uint8_t want = t == ggml_type::q8_0 ? static_cast<std::uint8_t>(in[file_codes + c] ^ 0x80)
                                                         : in[file_codes + c];
          if (out[codes + (c / 4 * 16 + i) * 4 + c % 4] != want) {
            FAIL_CHECK("row " << r << " block " << j << " code " << c << " misplaced");
            break;
          }
        }
      }
  }
  if (!interleaved_kernel_runs()) {
    MESSAGE("no AVX-512 VNNI on this processor: the regrouped rows' kernel is not run here");
    return;
  }
  // int8 products on them: within the kernels' rounding of the exact product of the quantized inputs
  unsigned seed = 500;
  heterocache::host_thread_pool pool(2);
  matrix_multiplier vnni(pool, kernel_isa::avx512, activation_format::int8);
  for (ggml_type t : {ggml_type::q4_0, ggml_type::q4_1, ggml_type::q8_0})
    for (std::size_t cols : test_cols(t))
      for (std::size_t n : {1, 4, 5, 11}) {
        const test_matrix m(t, 64, cols, ++seed);
        const std::vector<float> x = random_inputs(n * cols, ++seed, true);
        check_against_reference(m.w, x, n, product(vnni, m.w, x, n), activation_format::int8);
      }
}

namespace {
// This process's resident pages of mapped files (Linux: RssFile of /proc/self/status), or -1 where unknown.
long resident_file_kib() {
  std::ifstream status("/proc/self/status");
  std::string key;
  long kib = -1;
  while (status >> key)
    if (key == "RssFile:") {
      status >> kib;
      return kib;
    }
  return -1;
}
}  // namespace

TEST_CASE("a mapped file's matrix regrouped: its pages released, its rows and products unchanged") {
  std::mt19937 rng(600);
  const std::vector<std::uint8_t> raw = random_blocks(ggml_type::q8_0, 4096, 64, rng);  // 544 KiB: whole pages
  gguf_writer writer;
  writer.add("general.architecture", gguf_writer::string("test"));
  writer.add_tensor("w", ggml_type::q8_0, {64, 4096}, raw);
  const auto path = std::filesystem::temp_directory_path() / "hcllama_test_regrouped.gguf";
  {
    std::ofstream o(path, std::ios::binary);
    o.write(reinterpret_cast<const char*>(writer.bytes().data()), static_cast<std::streamsize>(writer.bytes().size()));
  }
  const gguf_file f = gguf_file::open(path.string());
  CHECK(f.mapped());
  const quantized_matrix w = quantized_matrix::from_gguf(f, f.tensor("w"));
  std::vector<float> before(4096 * 64), after(4096 * 64);
  for (std::size_t r = 0; r < 4096; ++r) w.dequantize_row(r, &before[r * 64]);
  const long resident = resident_file_kib();
  REQUIRE(w.interleaved() != nullptr);  // regroups and releases the file's pages of the tensor
  if (resident >= 0) CHECK(resident - resident_file_kib() >= 256);  // most of the 544 KiB gone from this process
  for (std::size_t r = 0; r < 4096; ++r) w.dequantize_row(r, &after[r * 64]);  // read again from the file
  CHECK(std::memcmp(before.data(), after.data(), before.size() * sizeof(float)) == 0);
  heterocache::host_thread_pool pool(2);
  matrix_multiplier mm(pool, best_isa(), activation_format::int8);
  const std::vector<float> x = random_inputs(3 * 64, 601);
  check_against_reference(w, x, 3, product(mm, w, x, 3), activation_format::int8);
  std::filesystem::remove(path);
}

TEST_CASE("activation formats: names, the default and the switch") {
  CHECK(std::string(to_string(activation_format::int8)) == "int8");
  CHECK(std::string(to_string(activation_format::int16)) == "int16");
  CHECK(parse_activation_format("fp32") == activation_format::fp32);
  CHECK(parse_activation_format("int16") == activation_format::int16);
  CHECK(parse_activation_format("int8") == activation_format::int8);
  CHECK(!parse_activation_format("Int8").has_value());
  CHECK(!parse_activation_format("").has_value());
  heterocache::host_thread_pool pool(1);
  matrix_multiplier mm(pool);
  CHECK(mm.activations() == activation_format::fp32);
  const test_matrix m(ggml_type::q4_1, 9, 64, 77);
  const std::vector<float> x = random_inputs(64, 78);
  const std::vector<float> as_fp32 = product(mm, m.w, x, 1);
  mm.set_activations(activation_format::int16);
  const std::vector<float> as_int16 = product(mm, m.w, x, 1);
  mm.set_activations(activation_format::int8);
  const std::vector<float> as_int8 = product(mm, m.w, x, 1);
  CHECK(!same_bits(as_int8, as_fp32));
  CHECK(!same_bits(as_int16, as_int8));
  check_against_reference(m.w, x, 1, as_fp32, activation_format::fp32);
  check_against_reference(m.w, x, 1, as_int16, activation_format::int16);
  check_against_reference(m.w, x, 1, as_int8, activation_format::int8);
}

TEST_CASE("the default kernels are the ones best_isa() names") {
  for (ggml_type t : kTypes) {
    const test_matrix m(t, 37, 256, 300 + static_cast<unsigned>(t));
    const std::vector<float> x = random_inputs(5 * 256, 11);
    heterocache::host_thread_pool two_threads(2);
    matrix_multiplier chosen(two_threads), named(two_threads, best_isa());
    CHECK(same_bits(product(chosen, m.w, x, 5), product(named, m.w, x, 5)));
  }
}

TEST_CASE("beta adds to the output; several products of one input equal their separate products") {
  const test_matrix q(ggml_type::q4_1, 40, 96, 400), k(ggml_type::q8_0, 9, 96, 401), v(ggml_type::f32, 11, 96, 402),
      z(ggml_type::q4_0, 3, 96, 403);
  const std::size_t n = 6;
  const std::vector<float> x = random_inputs(n * 96, 12);
  heterocache::host_thread_pool pool(2);
  matrix_multiplier mm(pool);
  SUBCASE("beta") {
    std::vector<float> y = product(mm, q.w, x, n), twice = y;
    mm.matmat(q.w, x.data(), n, twice.data(), 1.0f);
    for (std::size_t i = 0; i < y.size(); ++i) CHECK(twice[i] == doctest::Approx(2.0 * y[i]).epsilon(1e-6));
    std::vector<float> half = y;
    mm.matmat(q.w, x.data(), n, half.data(), 0.5f);
    for (std::size_t i = 0; i < y.size(); ++i) CHECK(half[i] == doctest::Approx(1.5 * y[i]).epsilon(1e-6));
  }
  SUBCASE("several products") {
    std::vector<float> yq(n * 40), yk(n * 9), yv(n * 11, 1.0f), yz(n * 3);
    const weight_product products[] = {
        {&q.w, yq.data()}, {&k.w, yk.data()}, {&v.w, yv.data(), 1.0f}, {&z.w, yz.data()}};
    mm.multiply(products, x.data(), n);
    CHECK(same_bits(yq, product(mm, q.w, x, n)));
    CHECK(same_bits(yk, product(mm, k.w, x, n)));
    CHECK(same_bits(yz, product(mm, z.w, x, n)));
    std::vector<float> yv_alone(n * 11, 1.0f);
    mm.matmat(v.w, x.data(), n, yv_alone.data(), 1.0f);
    CHECK(same_bits(yv, yv_alone));
  }
}

TEST_CASE("a matrix read from a GGUF file keeps the file's bytes alive and lends rows to the embedding") {
  std::mt19937 rng(5);
  const std::vector<std::uint8_t> blocks = random_blocks(ggml_type::q8_0, 7, 64, rng);
  quantized_matrix w;
  {
    gguf_writer gw;
    gw.add("general.architecture", gguf_writer::string("llama"));
    gw.add_tensor("token_embd.weight", ggml_type::q8_0, {64, 7}, blocks);
    const gguf_file f = gguf_file::from_bytes(gw.bytes());
    w = quantized_matrix::from_gguf(f, f.tensor("token_embd.weight"));
  }  // the file is gone, its bytes are not
  CHECK(w.rows() == 7);
  CHECK(w.cols() == 64);
  CHECK(w.bytes() == blocks.size());
  CHECK(std::memcmp(w.row_data(0), blocks.data(), blocks.size()) == 0);
  std::vector<float> row(64), want(64);
  w.dequantize_row(3, row.data());
  dequantize_row(ggml_type::q8_0, blocks.data() + 3 * w.row_bytes(), want.data(), 64);
  CHECK(row == want);
  CHECK_THROWS_AS(w.dequantize_row(7, row.data()), weight_error);
}

TEST_CASE("unsupported or inconsistent matrices are refused with the tensor, type and shape") {
  const std::vector<std::uint8_t> bytes(2 * 144);
  const auto message = [](auto&& make) {
    try {
      make();
    } catch (const weight_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string q4k =
      message([&] { quantized_matrix("blk.0.attn_q.weight", ggml_type::q4_k, 2, 256, bytes, nullptr); });
  CHECK(q4k.find("'blk.0.attn_q.weight' (Q4_K, 2 x 256)") != std::string::npos);
  const std::string size = message([&] { quantized_matrix("w", ggml_type::q4_1, 3, 64, bytes, nullptr); });
  CHECK(size.find("'w' (Q4_1, 3 x 64) holds 288 bytes") != std::string::npos);
  const std::string partial = message([&] { quantized_matrix("w", ggml_type::q8_0, 1, 48, bytes, nullptr); });
  CHECK(partial.find("not whole blocks of 32") != std::string::npos);
  const test_matrix a(ggml_type::q4_1, 4, 64, 1), b(ggml_type::q4_1, 4, 96, 2);
  std::vector<float> x(96), ya(4), yb(4);
  const weight_product products[] = {{&a.w, ya.data()}, {&b.w, yb.data()}};
  heterocache::host_thread_pool pool(1);
  matrix_multiplier mm(pool);
  const std::string mixed = message([&] { mm.multiply(products, x.data(), 1); });
  CHECK(mixed.find("do not take the same input") != std::string::npos);
}
