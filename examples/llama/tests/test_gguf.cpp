#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "gguf.hpp"

using namespace hcllama;
using W = gguf_writer;

namespace {

std::vector<std::uint8_t> f16_bytes(float x) {
  const std::uint16_t h = fp32_to_fp16(x);
  return {static_cast<std::uint8_t>(h & 0xFF), static_cast<std::uint8_t>(h >> 8)};
}
void append(std::vector<std::uint8_t>& o, const std::vector<std::uint8_t>& x) { o.insert(o.end(), x.begin(), x.end()); }

std::vector<float> dequant(ggml_type t, const std::vector<std::uint8_t>& raw, std::vector<std::uint64_t> dims) {
  W w;
  w.add("general.architecture", W::string("test"));
  w.add_tensor("t", t, std::move(dims), raw);
  auto f = gguf_file::from_bytes(w.bytes());
  return f.to_float(f.tensor("t"));
}

}  // namespace

TEST_CASE("fp16 conversion") {
  CHECK(fp16_to_fp32(0x3C00) == 1.0f);
  CHECK(fp16_to_fp32(0xC000) == -2.0f);
  CHECK(fp16_to_fp32(0x3800) == 0.5f);
  CHECK(fp16_to_fp32(0x7BFF) == 65504.0f);
  CHECK(fp16_to_fp32(0x0001) == std::ldexp(1.0f, -24));
  CHECK(fp16_to_fp32(0x03FF) == std::ldexp(1023.0f, -24));
  CHECK(std::isinf(fp16_to_fp32(0x7C00)));
  CHECK(std::isnan(fp16_to_fp32(0x7E00)));
  CHECK(fp16_to_fp32(0x8000) == 0.0f);
  CHECK(std::signbit(fp16_to_fp32(0x8000)));
  // round trip of every finite half value
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7C00) == 0x7C00) continue;
    const auto back = fp32_to_fp16(fp16_to_fp32(static_cast<std::uint16_t>(h)));
    REQUIRE(back == h);
  }
  CHECK(fp32_to_fp16(1.0f + std::ldexp(1.0f, -11)) == 0x3C00);  // tie -> even
  CHECK(fp32_to_fp16(1e6f) == 0x7C00);
}

TEST_CASE("every metadata type round-trips") {
  W w;
  w.add("k.u8", W::u8(200));
  w.add("k.i8", W::i8(-100));
  w.add("k.u16", W::u16(60000));
  w.add("k.i16", W::i16(-30000));
  w.add("k.u32", W::u32(4000000000u));
  w.add("k.i32", W::i32(-2000000000));
  w.add("k.u64", W::u64(0xFFFFFFFFFFFFFFFFull));
  w.add("k.i64", W::i64(-9000000000000000000ll));
  w.add("k.f32", W::f32(1.5f));
  w.add("k.f64", W::f64(-2.25e300));
  w.add("k.bool", W::boolean(true));
  w.add("k.str", W::string("héllo \xE2\x9C\x93"));
  w.add("k.empty", W::string(""));
  w.add("k.arr_i32", W::array(gguf_type::i32, {W::i32(1), W::i32(-2), W::i32(3)}));
  w.add("k.arr_str", W::array(gguf_type::string, {W::string("a"), W::string(""), W::string("ccc")}));
  w.add("k.arr_empty", W::array(gguf_type::f32, {}));
  w.add("k.arr_arr", W::array(gguf_type::array, {W::array(gguf_type::u8, {W::u8(1), W::u8(2)}),
                                                 W::array(gguf_type::u8, {})}));
  w.add("k.arr_bool", W::array(gguf_type::boolean, {W::boolean(false), W::boolean(true)}));
  w.add("k.arr_f64", W::array(gguf_type::f64, {W::f64(0.125)}));
  const auto bytes = w.bytes();
  auto f = gguf_file::from_bytes(bytes);
  CHECK(f.version() == 3);
  CHECK(f.metadata().size() == 19);
  CHECK(f.get("k.u8").as_u64() == 200);
  CHECK(f.get("k.u8").type == gguf_type::u8);
  CHECK(f.get("k.i8").as_i64() == -100);
  CHECK(f.get("k.u16").as_u64() == 60000);
  CHECK(f.get("k.i16").as_i64() == -30000);
  CHECK(f.get("k.u32").as_u64() == 4000000000u);
  CHECK(f.get("k.i32").as_i64() == -2000000000);
  CHECK(f.get("k.u64").as_u64() == 0xFFFFFFFFFFFFFFFFull);
  CHECK_THROWS_AS(f.get("k.u64").as_i64(), gguf_error);
  CHECK(f.get("k.i64").as_i64() == -9000000000000000000ll);
  CHECK_THROWS_AS(f.get("k.i64").as_u64(), gguf_error);
  CHECK(f.get("k.f32").as_f64() == 1.5);
  CHECK(f.get("k.f64").as_f64() == -2.25e300);
  CHECK(f.get("k.bool").as_bool());
  CHECK(f.get("k.str").as_string() == "héllo \xE2\x9C\x93");
  CHECK(f.get("k.empty").as_string().empty());
  CHECK_THROWS_AS(f.get("k.str").as_u64(), gguf_error);
  CHECK_THROWS_AS(f.get("k.u8").as_string(), gguf_error);
  const auto& a = f.get("k.arr_i32");
  REQUIRE(a.is_array());
  CHECK(a.elem_type == gguf_type::i32);
  REQUIRE(a.as_array().size() == 3);
  CHECK(a.as_array()[1].as_i64() == -2);
  CHECK(f.get("k.arr_str").as_array()[2].as_string() == "ccc");
  CHECK(f.get("k.arr_empty").as_array().empty());
  const auto& aa = f.get("k.arr_arr").as_array();
  REQUIRE(aa.size() == 2);
  CHECK(aa[0].as_array()[1].as_u64() == 2);
  CHECK(aa[1].as_array().empty());
  CHECK(f.get("k.arr_bool").as_array()[1].as_bool());
  CHECK(f.get("k.arr_f64").as_array()[0].as_f64() == 0.125);
  CHECK(f.find("missing") == nullptr);
  CHECK_THROWS_AS(f.get("missing"), gguf_error);
  CHECK(f.get_u64("missing", 7) == 7);
  CHECK(f.get_string("k.str", "") == "héllo \xE2\x9C\x93");
  CHECK(f.tensors().empty());
}

TEST_CASE("version 2 files, alignment and offsets") {
  for (std::uint32_t version : {2u, 3u}) {
    for (std::uint64_t align : {32u, 64u, 1u, 8u}) {
      W w(version, align);
      w.add("x", W::string("abc"));
      std::vector<std::uint8_t> a(4 * 3), b(4 * 5);
      for (int i = 0; i < 3; ++i) { float v = float(i); std::memcpy(&a[4 * i], &v, 4); }
      for (int i = 0; i < 5; ++i) { float v = float(10 + i); std::memcpy(&b[4 * i], &v, 4); }
      w.add_tensor("a", ggml_type::f32, {3}, a);
      w.add_tensor("b", ggml_type::f32, {5, 1}, b);
      auto f = gguf_file::from_bytes(w.bytes());
      CHECK(f.version() == version);
      CHECK(f.alignment() == align);
      CHECK(f.data_offset() % align == 0);
      const auto& tb = f.tensor("b");
      CHECK(tb.offset % align == 0);
      CHECK(tb.n_elements == 5);
      CHECK(tb.rows() == 1);
      CHECK(f.to_float(tb) == std::vector<float>{10, 11, 12, 13, 14});
      CHECK(f.to_float(f.tensor("a")) == std::vector<float>{0, 1, 2});
    }
  }
}

TEST_CASE("dequantization of every supported type against hand-computed values") {
  SUBCASE("F32") {
    std::vector<std::uint8_t> raw(8);
    float v[2] = {-1.25f, 3.0f};
    std::memcpy(raw.data(), v, 8);
    CHECK(dequant(ggml_type::f32, raw, {2}) == std::vector<float>{-1.25f, 3.0f});
  }
  SUBCASE("F16") {
    std::vector<std::uint8_t> raw = {0x00, 0x3C, 0x00, 0xC0, 0x00, 0x38, 0x01, 0x00};
    CHECK(dequant(ggml_type::f16, raw, {4}) == std::vector<float>{1.0f, -2.0f, 0.5f, std::ldexp(1.0f, -24)});
  }
  SUBCASE("BF16") {
    std::vector<std::uint8_t> raw = {0x80, 0x3F, 0x40, 0xC0};
    CHECK(dequant(ggml_type::bf16, raw, {2}) == std::vector<float>{1.0f, -3.0f});
  }
  SUBCASE("Q4_0") {
    // d = 0.5; low nibble of byte j = j, high nibble = 15 - j
    std::vector<std::uint8_t> raw = f16_bytes(0.5f);
    for (int j = 0; j < 16; ++j) raw.push_back(static_cast<std::uint8_t>(j | ((15 - j) << 4)));
    auto x = dequant(ggml_type::q4_0, raw, {32});
    for (int j = 0; j < 16; ++j) {
      CHECK(x[j] == (j - 8) * 0.5f);
      CHECK(x[j + 16] == (15 - j - 8) * 0.5f);
    }
  }
  SUBCASE("Q4_1") {
    // two blocks: (d=0.25, m=-1) and (d=2, m=0.5), nibbles lo=j, hi=(j+3)%16
    std::vector<std::uint8_t> raw;
    for (auto [d, m] : {std::pair{0.25f, -1.0f}, std::pair{2.0f, 0.5f}}) {
      append(raw, f16_bytes(d));
      append(raw, f16_bytes(m));
      for (int j = 0; j < 16; ++j) raw.push_back(static_cast<std::uint8_t>(j | (((j + 3) % 16) << 4)));
    }
    auto x = dequant(ggml_type::q4_1, raw, {64});
    for (int j = 0; j < 16; ++j) {
      CHECK(x[j] == j * 0.25f - 1.0f);
      CHECK(x[j + 16] == ((j + 3) % 16) * 0.25f - 1.0f);
      CHECK(x[32 + j] == j * 2.0f + 0.5f);
      CHECK(x[48 + j] == ((j + 3) % 16) * 2.0f + 0.5f);
    }
  }
  SUBCASE("Q5_0") {
    // d = 1; qh bit j gives the fifth bit of element j (j < 16) and bit j+16 that of element j+16
    const std::uint32_t qh = 0xA5A50F0Fu;
    std::vector<std::uint8_t> raw = f16_bytes(1.0f);
    for (int i = 0; i < 4; ++i) raw.push_back(static_cast<std::uint8_t>(qh >> (8 * i)));
    for (int j = 0; j < 16; ++j) raw.push_back(static_cast<std::uint8_t>(j | ((15 - j) << 4)));
    auto x = dequant(ggml_type::q5_0, raw, {32});
    for (int j = 0; j < 16; ++j) {
      CHECK(x[j] == float(int(j | (((qh >> j) & 1) << 4)) - 16));
      CHECK(x[j + 16] == float(int((15 - j) | (((qh >> (j + 16)) & 1) << 4)) - 16));
    }
  }
  SUBCASE("Q5_1") {
    const std::uint32_t qh = 0x12345678u;
    std::vector<std::uint8_t> raw = f16_bytes(0.5f);
    append(raw, f16_bytes(-3.0f));
    for (int i = 0; i < 4; ++i) raw.push_back(static_cast<std::uint8_t>(qh >> (8 * i)));
    for (int j = 0; j < 16; ++j) raw.push_back(static_cast<std::uint8_t>(((j * 5) % 16) | ((j % 7) << 4)));
    auto x = dequant(ggml_type::q5_1, raw, {32});
    for (int j = 0; j < 16; ++j) {
      CHECK(x[j] == float(((j * 5) % 16) | (((qh >> j) & 1) << 4)) * 0.5f - 3.0f);
      CHECK(x[j + 16] == float((j % 7) | (((qh >> (j + 16)) & 1) << 4)) * 0.5f - 3.0f);
    }
  }
  SUBCASE("Q8_0") {
    std::vector<std::uint8_t> raw = f16_bytes(0.125f);
    for (int j = 0; j < 32; ++j) raw.push_back(static_cast<std::uint8_t>(static_cast<std::int8_t>(j * 8 - 128)));
    auto x = dequant(ggml_type::q8_0, raw, {32, 1});
    for (int j = 0; j < 32; ++j) CHECK(x[j] == (j * 8 - 128) * 0.125f);
  }
}

TEST_CASE("unsupported tensor types parse but do not dequantize") {
  W w;
  w.add_tensor("k", ggml_type::q6_k, {256}, std::vector<std::uint8_t>(type_size(ggml_type::q6_k)));
  auto f = gguf_file::from_bytes(w.bytes());
  CHECK(f.tensor("k").n_bytes == 210);
  CHECK_THROWS_AS(f.to_float(f.tensor("k")), gguf_error);
}

namespace {
std::vector<std::uint8_t> sample_file() {
  W w;
  w.add("general.architecture", W::string("llama"));
  w.add("arr", W::array(gguf_type::string, {W::string("x"), W::string("yy")}));
  w.add("n", W::u32(5));
  std::vector<std::uint8_t> q = f16_bytes(1.0f);
  append(q, f16_bytes(0.0f));
  q.resize(20, 0x21);
  w.add_tensor("w", ggml_type::q4_1, {32, 1}, q);
  w.add_tensor("v", ggml_type::f32, {2}, std::vector<std::uint8_t>(8, 0));
  return w.bytes();
}
template <class F>
void expect_gguf_error(const std::vector<std::uint8_t>& bytes, F&& check_msg) {
  try {
    (void)gguf_file::from_bytes(bytes);
    FAIL("expected a gguf_error");
  } catch (const gguf_error& e) {
    check_msg(std::string(e.what()));
  }
}
}  // namespace

TEST_CASE("truncated, corrupt and unknown-version files throw gguf_error") {
  const auto good = sample_file();
  REQUIRE_NOTHROW((void)gguf_file::from_bytes(good));

  SUBCASE("every truncation throws") {
    // the last tensor ends before the final padding: cut inside the data
    for (std::size_t n = 0; n + 24 < good.size(); ++n) {
      std::vector<std::uint8_t> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
      CHECK_THROWS_AS((void)gguf_file::from_bytes(cut), gguf_error);
    }
  }
  SUBCASE("bad magic") {
    auto b = good;
    b[0] = 'X';
    expect_gguf_error(b, [](const std::string& m) { CHECK(m.find("magic") != std::string::npos); });
  }
  SUBCASE("unknown versions") {
    for (std::uint32_t v : {0u, 1u, 4u, 99u, 0x03000000u}) {
      auto b = good;
      std::memcpy(&b[4], &v, 4);
      expect_gguf_error(b, [](const std::string& m) { CHECK(m.find("version") != std::string::npos); });
    }
  }
  SUBCASE("huge counts do not allocate") {
    auto b = good;
    const std::uint64_t huge = 0x7FFFFFFFFFFFFFFFull;
    std::memcpy(&b[8], &huge, 8);  // tensor count
    CHECK_THROWS_AS((void)gguf_file::from_bytes(b), gguf_error);
    b = good;
    std::memcpy(&b[16], &huge, 8);  // kv count
    CHECK_THROWS_AS((void)gguf_file::from_bytes(b), gguf_error);
    b = good;
    std::memcpy(&b[24], &huge, 8);  // first key length
    CHECK_THROWS_AS((void)gguf_file::from_bytes(b), gguf_error);
  }
  SUBCASE("huge array length") {
    W w;
    w.add("arr", W::array(gguf_type::u64, {W::u64(1)}));
    auto b = w.bytes();
    // header 24 + key (8+3) + type 4 + elem type 4 -> array length at 43
    const std::uint64_t huge = 1ull << 61;
    std::memcpy(&b[43], &huge, 8);
    expect_gguf_error(b, [](const std::string& m) { CHECK(m.find("array length") != std::string::npos); });
  }
  SUBCASE("unknown value type") {
    W w;
    w.add("a", W::u8(1));
    auto b = w.bytes();
    const std::uint32_t t = 13;
    std::memcpy(&b[24 + 9], &t, 4);
    expect_gguf_error(b, [](const std::string& m) { CHECK(m.find("value type") != std::string::npos); });
  }
  SUBCASE("invalid bool, unknown tensor type, bad dims, bad offset, bad alignment") {
    {
      W w;
      w.add("a", W::boolean(true));
      auto b = w.bytes();
      b[24 + 9 + 4] = 7;
      CHECK_THROWS_AS((void)gguf_file::from_bytes(b), gguf_error);
    }
    {
      W w;
      w.add_tensor("t", static_cast<ggml_type>(77), {4}, std::vector<std::uint8_t>(16));
      expect_gguf_error(w.bytes(), [](const std::string& m) { CHECK(m.find("unknown type") != std::string::npos); });
    }
    {
      W w;
      w.add_tensor("t", ggml_type::q8_0, {16}, std::vector<std::uint8_t>(34));
      expect_gguf_error(w.bytes(), [](const std::string& m) { CHECK(m.find("block size") != std::string::npos); });
    }
    {
      W w;
      w.add_tensor("t", ggml_type::f32, {1ull << 40, 1ull << 40}, {});
      CHECK_THROWS_AS((void)gguf_file::from_bytes(w.bytes()), gguf_error);
    }
    {
      W w;
      w.add_tensor("t", ggml_type::f32, {1, 1, 1, 1, 1}, std::vector<std::uint8_t>(4));
      CHECK_THROWS_AS((void)gguf_file::from_bytes(w.bytes()), gguf_error);
    }
    {
      W w(3, 32);
      w.add("general.alignment", W::u32(48));
      CHECK_THROWS_AS((void)gguf_file::from_bytes(w.bytes()), gguf_error);
    }
    {
      W w;
      w.add("dup", W::u8(1));
      w.add("dup", W::u8(2));
      CHECK_THROWS_AS((void)gguf_file::from_bytes(w.bytes()), gguf_error);
    }
  }
  SUBCASE("random corruption never crashes") {
    std::mt19937 rng(1234);
    for (int it = 0; it < 3000; ++it) {
      auto b = good;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int k = 0; k < flips; ++k) b[rng() % b.size()] = static_cast<std::uint8_t>(rng());
      try {
        auto f = gguf_file::from_bytes(b);
        for (const auto& t : f.tensors())
          if (can_dequantize(t.type) && t.n_elements < (1u << 20)) (void)f.to_float(t);
      } catch (const gguf_error&) {
      }
    }
  }
}

TEST_CASE("opening a missing file throws") {
  CHECK_THROWS_AS((void)gguf_file::open("/nonexistent/dir/model.gguf"), gguf_error);
}

TEST_CASE("mapped file matches the in-memory parse") {
  const auto bytes = sample_file();
  const auto path = std::filesystem::temp_directory_path() / "hcllama_test_sample.gguf";
  {
    std::ofstream o(path, std::ios::binary);
    o.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  auto f = gguf_file::open(path.string());
  CHECK(f.get("n").as_u64() == 5);
  CHECK(f.tensor("w").type == ggml_type::q4_1);
  auto x = f.to_float(f.tensor("w"));
  CHECK(x[0] == 1.0f);  // nibble 1 * d(1) + m(0)
  CHECK(x[16] == 2.0f);
  std::filesystem::remove(path);
}

TEST_CASE("regression inputs parse or throw cleanly") {
  namespace fs = std::filesystem;
  const fs::path dir = HCLLAMA_REGRESSION_DIR;
  if (!fs::exists(dir)) return;
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    std::vector<std::uint8_t> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ++n;
    try {
      auto f = gguf_file::from_bytes(b);
      for (const auto& t : f.tensors())
        if (can_dequantize(t.type) && t.n_elements < (1u << 24)) (void)f.to_float(t);
    } catch (const gguf_error&) {
    }
  }
  MESSAGE("replayed " << n << " regression inputs");
}
