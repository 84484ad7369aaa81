// The matrix kernels of quantized_matrix.hpp against a float64 reference over dequantize_row (the tested
// dequantization of gguf.cpp), on every instruction set this processor runs.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "quantized_matrix.hpp"

using namespace hcllama;

namespace {

constexpr ggml_type kTypes[] = {ggml_type::f32, ggml_type::f16, ggml_type::bf16,
                                ggml_type::q4_0, ggml_type::q4_1, ggml_type::q8_0};

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

std::vector<float> random_inputs(std::size_t count, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> x(count);
  for (auto& v : x) v = nd(rng);
  return x;
}

// A row's exact dot product with one input (float64 over the dequantized weights), and the scale the kernels'
// float32 rounding is measured against: the sum of |terms| the kernels add, which for the types with a block
// offset is sum |q d x| + |m x| (d * sum(q x) and m * sum(x) may cancel).
struct reference_dot {
  double value = 0, magnitude = 0;
};

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

void check_against_reference(const quantized_matrix& w, const std::vector<float>& x, std::size_t n,
                             const std::vector<float>& y) {
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t r = 0; r < w.rows(); ++r) {
      const reference_dot ref = reference(w, r, &x[t * w.cols()]);
      const double got = y[t * w.rows() + r];
      if (std::abs(got - ref.value) > kTolerance * ref.magnitude + 1e-30) {
        FAIL_CHECK(w.describe() << " row " << r << " input " << t << " of " << n << ": " << got << " vs " << ref.value
                                << " (magnitude " << ref.magnitude << ")");
        return;
      }
    }
}

std::vector<float> product(matrix_multiplier& mm, const quantized_matrix& w, const std::vector<float>& x,
                           std::size_t n) {
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

TEST_CASE("matvec and matmat match the float64 reference for every type, size and instruction set") {
  unsigned seed = 1;
  for (kernel_isa isa : supported_isas()) {
    heterocache::host_thread_pool mm_pool(2);
    matrix_multiplier mm(mm_pool, isa);
    for (ggml_type t : kTypes)
      for (std::size_t cols : test_cols(t))
        for (std::size_t rows : {std::size_t{1}, std::size_t{5}, std::size_t{17}}) {
          CAPTURE(to_string(isa));
          const test_matrix m(t, rows, cols, ++seed);
          for (std::size_t n : {1, 2, 3, 4, 5, 7, 9, 17}) {
            const std::vector<float> x = random_inputs(n * cols, ++seed);
            check_against_reference(m.w, x, n, product(mm, m.w, x, n));
          }
        }
  }
}

TEST_CASE("matmat of n = 1..130 inputs gives, for each input, the bits of matvec of that input alone") {
  for (kernel_isa isa : supported_isas())
    for (ggml_type t : kTypes) {
      CAPTURE(to_string(isa));
      heterocache::host_thread_pool mm_pool(3);
      matrix_multiplier mm(mm_pool, isa);
      const std::size_t cols = t == ggml_type::f32 || t == ggml_type::f16 || t == ggml_type::bf16 ? 45 : 64;
      const test_matrix m(t, 13, cols, 100 + static_cast<unsigned>(t));
      const std::vector<float> x = random_inputs(130 * cols, 7);
      std::vector<std::vector<float>> alone(130);
      for (std::size_t i = 0; i < 130; ++i) {
        alone[i].resize(m.w.rows());
        mm.matvec(m.w, &x[i * cols], alone[i].data());
      }
      for (std::size_t n = 1; n <= 130; ++n) {
        const std::vector<float> y = product(mm, m.w, x, n);
        if (n == 130) check_against_reference(m.w, x, n, y);
        for (std::size_t i = 0; i < n; ++i)
          if (std::memcmp(&y[i * m.w.rows()], alone[i].data(), m.w.rows() * sizeof(float)) != 0) {
            FAIL_CHECK(m.w.describe() << ": input " << i << " of " << n << " differs from its matvec");
            break;
          }
      }
    }
}

TEST_CASE("the results are the same bits whatever the thread count") {
  for (kernel_isa isa : supported_isas())
    for (ggml_type t : kTypes) {
      CAPTURE(to_string(isa));
      const test_matrix m(t, 131, 96, 200 + static_cast<unsigned>(t));
      for (std::size_t n : {1, 6, 64}) {
        const std::vector<float> x = random_inputs(n * 96, 9);
        heterocache::host_thread_pool one_pool(1);
        matrix_multiplier one(one_pool, isa);
        const std::vector<float> y1 = product(one, m.w, x, n);
        for (std::size_t threads : {2, 3}) {
          heterocache::host_thread_pool mm_pool(static_cast<heterocache::index_t>(threads));
          matrix_multiplier mm(mm_pool, isa);
          CHECK_MESSAGE(same_bits(product(mm, m.w, x, n), y1),
                        m.w.describe() << ", " << threads << " threads, n " << n);
        }
      }
    }
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
