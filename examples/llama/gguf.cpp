#include "gguf.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define HCLLAMA_HAVE_MMAP 1
#endif

namespace hcllama {

namespace {

constexpr std::uint32_t kMagic = 0x46554747u;  // "GGUF" little-endian
constexpr int kMaxArrayDepth = 8;
constexpr std::uint32_t kMaxDims = 4;

[[noreturn]] void fail(const std::string& msg) { throw gguf_error("gguf: " + msg); }

class cursor {
 public:
  explicit cursor(std::span<const std::uint8_t> b) : b_(b) {}
  std::size_t pos() const noexcept { return pos_; }
  std::size_t left() const noexcept { return b_.size() - pos_; }
  void need(std::uint64_t n, const char* what) const {
    if (n > left())
      fail(std::string("truncated file while reading ") + what + " at offset " + std::to_string(pos_) +
           " (need " + std::to_string(n) + " bytes, " + std::to_string(left()) + " left)");
  }
  template <class T>
  T read(const char* what) {
    need(sizeof(T), what);
    T x;
    std::memcpy(&x, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return x;
  }
  std::string read_string(const char* what) {
    auto n = read<std::uint64_t>(what);
    need(n, what);
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), static_cast<std::size_t>(n));
    pos_ += static_cast<std::size_t>(n);
    return s;
  }
 private:
  std::span<const std::uint8_t> b_;
  std::size_t pos_ = 0;
};

// Smallest number of bytes one value of type t can occupy in the file.
std::size_t min_encoded_size(gguf_type t) {
  switch (t) {
    case gguf_type::u8: case gguf_type::i8: case gguf_type::boolean: return 1;
    case gguf_type::u16: case gguf_type::i16: return 2;
    case gguf_type::u32: case gguf_type::i32: case gguf_type::f32: return 4;
    case gguf_type::u64: case gguf_type::i64: case gguf_type::f64: return 8;
    case gguf_type::string: return 8;
    case gguf_type::array: return 12;
  }
  fail("unknown metadata value type " + std::to_string(static_cast<std::uint32_t>(t)));
}

gguf_type check_value_type(std::uint32_t raw) {
  if (raw > 12) fail("unknown metadata value type " + std::to_string(raw));
  return static_cast<gguf_type>(raw);
}

gguf_value read_value(cursor& c, gguf_type t, int depth) {
  gguf_value out;
  out.type = t;
  switch (t) {
    case gguf_type::u8: out.v = std::uint64_t{c.read<std::uint8_t>("u8 value")}; break;
    case gguf_type::u16: out.v = std::uint64_t{c.read<std::uint16_t>("u16 value")}; break;
    case gguf_type::u32: out.v = std::uint64_t{c.read<std::uint32_t>("u32 value")}; break;
    case gguf_type::u64: out.v = std::uint64_t{c.read<std::uint64_t>("u64 value")}; break;
    case gguf_type::i8: out.v = std::int64_t{c.read<std::int8_t>("i8 value")}; break;
    case gguf_type::i16: out.v = std::int64_t{c.read<std::int16_t>("i16 value")}; break;
    case gguf_type::i32: out.v = std::int64_t{c.read<std::int32_t>("i32 value")}; break;
    case gguf_type::i64: out.v = std::int64_t{c.read<std::int64_t>("i64 value")}; break;
    case gguf_type::f32: out.v = double{c.read<float>("f32 value")}; break;
    case gguf_type::f64: out.v = c.read<double>("f64 value"); break;
    case gguf_type::boolean: {
      auto b = c.read<std::uint8_t>("bool value");
      if (b > 1) fail("invalid bool value " + std::to_string(b));
      out.v = b != 0;
      break;
    }
    case gguf_type::string: out.v = c.read_string("string value"); break;
    case gguf_type::array: {
      if (depth >= kMaxArrayDepth) fail("arrays nested too deeply");
      auto et = check_value_type(c.read<std::uint32_t>("array element type"));
      auto n = c.read<std::uint64_t>("array length");
      const std::size_t min = min_encoded_size(et);
      if (n > c.left() / min)
        fail("array length " + std::to_string(n) + " exceeds the remaining file size");
      out.elem_type = et;
      gguf_array items;
      items.reserve(static_cast<std::size_t>(n));
      for (std::uint64_t i = 0; i < n; ++i) items.push_back(read_value(c, et, depth + 1));
      out.v = std::move(items);
      break;
    }
  }
  return out;
}

std::uint64_t mul_checked(std::uint64_t a, std::uint64_t b, const char* what) {
  std::uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail(std::string("overflow computing ") + what);
  return r;
}

}  // namespace

// ---------------------------------------------------------------- names ----

const char* to_string(gguf_type t) noexcept {
  switch (t) {
    case gguf_type::u8: return "u8";
    case gguf_type::i8: return "i8";
    case gguf_type::u16: return "u16";
    case gguf_type::i16: return "i16";
    case gguf_type::u32: return "u32";
    case gguf_type::i32: return "i32";
    case gguf_type::f32: return "f32";
    case gguf_type::boolean: return "bool";
    case gguf_type::string: return "string";
    case gguf_type::array: return "array";
    case gguf_type::u64: return "u64";
    case gguf_type::i64: return "i64";
    case gguf_type::f64: return "f64";
  }
  return "?";
}

const char* to_string(ggml_type t) noexcept {
  switch (t) {
    case ggml_type::f32: return "F32";
    case ggml_type::f16: return "F16";
    case ggml_type::q4_0: return "Q4_0";
    case ggml_type::q4_1: return "Q4_1";
    case ggml_type::q5_0: return "Q5_0";
    case ggml_type::q5_1: return "Q5_1";
    case ggml_type::q8_0: return "Q8_0";
    case ggml_type::q8_1: return "Q8_1";
    case ggml_type::q2_k: return "Q2_K";
    case ggml_type::q3_k: return "Q3_K";
    case ggml_type::q4_k: return "Q4_K";
    case ggml_type::q5_k: return "Q5_K";
    case ggml_type::q6_k: return "Q6_K";
    case ggml_type::q8_k: return "Q8_K";
    case ggml_type::i8: return "I8";
    case ggml_type::i16: return "I16";
    case ggml_type::i32: return "I32";
    case ggml_type::i64: return "I64";
    case ggml_type::f64: return "F64";
    case ggml_type::bf16: return "BF16";
  }
  return "?";
}

std::size_t block_size(ggml_type t) {
  switch (t) {
    case ggml_type::f32: case ggml_type::f16: case ggml_type::bf16: case ggml_type::i8:
    case ggml_type::i16: case ggml_type::i32: case ggml_type::i64: case ggml_type::f64:
      return 1;
    case ggml_type::q4_0: case ggml_type::q4_1: case ggml_type::q5_0: case ggml_type::q5_1:
    case ggml_type::q8_0: case ggml_type::q8_1:
      return 32;
    case ggml_type::q2_k: case ggml_type::q3_k: case ggml_type::q4_k: case ggml_type::q5_k:
    case ggml_type::q6_k: case ggml_type::q8_k:
      return 256;
  }
  fail("unknown tensor type " + std::to_string(static_cast<std::uint32_t>(t)));
}

std::size_t type_size(ggml_type t) {
  switch (t) {
    case ggml_type::f32: return 4;
    case ggml_type::f16: return 2;
    case ggml_type::bf16: return 2;
    case ggml_type::i8: return 1;
    case ggml_type::i16: return 2;
    case ggml_type::i32: return 4;
    case ggml_type::i64: return 8;
    case ggml_type::f64: return 8;
    case ggml_type::q4_0: return 2 + 16;
    case ggml_type::q4_1: return 2 + 2 + 16;
    case ggml_type::q5_0: return 2 + 4 + 16;
    case ggml_type::q5_1: return 2 + 2 + 4 + 16;
    case ggml_type::q8_0: return 2 + 32;
    case ggml_type::q8_1: return 4 + 4 + 32;
    case ggml_type::q2_k: return 256 / 16 + 256 / 4 + 2 + 2;
    case ggml_type::q3_k: return 256 / 8 + 256 / 4 + 12 + 2;
    case ggml_type::q4_k: return 2 + 2 + 12 + 256 / 2;
    case ggml_type::q5_k: return 2 + 2 + 12 + 256 / 8 + 256 / 2;
    case ggml_type::q6_k: return 256 / 2 + 256 / 4 + 256 / 16 + 2;
    case ggml_type::q8_k: return 4 + 256 + 256 / 16 * 2;
  }
  fail("unknown tensor type " + std::to_string(static_cast<std::uint32_t>(t)));
}

bool can_dequantize(ggml_type t) noexcept {
  switch (t) {
    case ggml_type::f32: case ggml_type::f16: case ggml_type::bf16: case ggml_type::q4_0:
    case ggml_type::q4_1: case ggml_type::q5_0: case ggml_type::q5_1: case ggml_type::q8_0:
      return true;
    default:
      return false;
  }
}

// ------------------------------------------------------------- fp16 --------

float fp16_to_fp32(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1Fu;
  std::uint32_t mant = h & 0x3FFu;
  std::uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do { ++e; mant <<= 1; } while ((mant & 0x400u) == 0);
      mant &= 0x3FFu;
      bits = sign | (static_cast<std::uint32_t>(127 - 15 - e) << 23) | (mant << 13);
    }
  } else if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else {
    bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

std::uint16_t fp32_to_fp16(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t absx = x & 0x7FFFFFFFu;
  if (absx >= 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7C00u | (absx > 0x7F800000u ? 0x200u : 0));
  if (absx >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // overflow -> inf
  if (absx < 0x38800000u) {  // subnormal or zero in half
    if (absx < 0x33000000u) return static_cast<std::uint16_t>(sign);
    const std::uint32_t e = absx >> 23;
    const std::uint32_t m = (absx & 0x7FFFFFu) | 0x800000u;
    // value = m * 2^(e-150); in units of the half subnormal step 2^-24: m >> (126 - e)
    const std::uint32_t shift = 126 - e;
    std::uint32_t r = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1);
    const std::uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return static_cast<std::uint16_t>(sign | r);
  }
  std::uint32_t r = ((absx >> 13) - ((127 - 15) << 10));
  const std::uint32_t rem = absx & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return static_cast<std::uint16_t>(sign | r);
}

// ------------------------------------------------------ dequantization -----

namespace {
inline std::uint16_t ld16(const std::uint8_t* p) {
  std::uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline float ldh(const std::uint8_t* p) { return fp16_to_fp32(ld16(p)); }
}  // namespace

void dequantize_row(ggml_type t, const std::uint8_t* src, float* dst, std::size_t n) {
  const std::size_t bs = block_size(t);
  if (n % bs != 0) fail("element count not a multiple of the block size of " + std::string(to_string(t)));
  const std::size_t nb = n / bs;
  if (n == 0) return;
  switch (t) {
    case ggml_type::f32:
      std::memcpy(dst, src, n * 4);
      return;
    case ggml_type::f16:
      for (std::size_t i = 0; i < n; ++i) dst[i] = ldh(src + 2 * i);
      return;
    case ggml_type::bf16:
      for (std::size_t i = 0; i < n; ++i)
        dst[i] = std::bit_cast<float>(static_cast<std::uint32_t>(ld16(src + 2 * i)) << 16);
      return;
    case ggml_type::q4_0:
      for (std::size_t b = 0; b < nb; ++b, src += 18, dst += 32) {
        const float d = ldh(src);
        const std::uint8_t* qs = src + 2;
        for (int j = 0; j < 16; ++j) {
          dst[j] = static_cast<float>((qs[j] & 0x0F) - 8) * d;
          dst[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
        }
      }
      return;
    case ggml_type::q4_1:
      for (std::size_t b = 0; b < nb; ++b, src += 20, dst += 32) {
        const float d = ldh(src);
        const float m = ldh(src + 2);
        const std::uint8_t* qs = src + 4;
        for (int j = 0; j < 16; ++j) {
          dst[j] = static_cast<float>(qs[j] & 0x0F) * d + m;
          dst[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
        }
      }
      return;
    case ggml_type::q5_0:
      for (std::size_t b = 0; b < nb; ++b, src += 22, dst += 32) {
        const float d = ldh(src);
        std::uint32_t qh;
        std::memcpy(&qh, src + 2, 4);
        const std::uint8_t* qs = src + 6;
        for (int j = 0; j < 16; ++j) {
          const int h0 = static_cast<int>((qh >> j) & 1u) << 4;
          const int h1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
          dst[j] = static_cast<float>(((qs[j] & 0x0F) | h0) - 16) * d;
          dst[j + 16] = static_cast<float>(((qs[j] >> 4) | h1) - 16) * d;
        }
      }
      return;
    case ggml_type::q5_1:
      for (std::size_t b = 0; b < nb; ++b, src += 24, dst += 32) {
        const float d = ldh(src);
        const float m = ldh(src + 2);
        std::uint32_t qh;
        std::memcpy(&qh, src + 4, 4);
        const std::uint8_t* qs = src + 8;
        for (int j = 0; j < 16; ++j) {
          const int h0 = static_cast<int>((qh >> j) & 1u) << 4;
          const int h1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
          dst[j] = static_cast<float>((qs[j] & 0x0F) | h0) * d + m;
          dst[j + 16] = static_cast<float>((qs[j] >> 4) | h1) * d + m;
        }
      }
      return;
    case ggml_type::q8_0:
      for (std::size_t b = 0; b < nb; ++b, src += 34, dst += 32) {
        const float d = ldh(src);
        for (int j = 0; j < 32; ++j) dst[j] = static_cast<float>(static_cast<std::int8_t>(src[2 + j])) * d;
      }
      return;
    default:
      fail(std::string("dequantization of tensor type ") + to_string(t) + " is not supported");
  }
}

// ----------------------------------------------------------- gguf_value ----

bool gguf_value::is_integer() const noexcept {
  switch (type) {
    case gguf_type::u8: case gguf_type::i8: case gguf_type::u16: case gguf_type::i16:
    case gguf_type::u32: case gguf_type::i32: case gguf_type::u64: case gguf_type::i64:
      return true;
    default:
      return false;
  }
}

std::uint64_t gguf_value::as_u64() const {
  if (auto* u = std::get_if<std::uint64_t>(&v)) return *u;
  if (auto* i = std::get_if<std::int64_t>(&v)) {
    if (*i < 0) fail("negative value where an unsigned integer was expected");
    return static_cast<std::uint64_t>(*i);
  }
  fail(std::string("expected an integer, found ") + to_string(type));
}

std::int64_t gguf_value::as_i64() const {
  if (auto* i = std::get_if<std::int64_t>(&v)) return *i;
  if (auto* u = std::get_if<std::uint64_t>(&v)) {
    if (*u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) fail("integer out of range");
    return static_cast<std::int64_t>(*u);
  }
  fail(std::string("expected an integer, found ") + to_string(type));
}

double gguf_value::as_f64() const {
  if (auto* d = std::get_if<double>(&v)) return *d;
  if (auto* u = std::get_if<std::uint64_t>(&v)) return static_cast<double>(*u);
  if (auto* i = std::get_if<std::int64_t>(&v)) return static_cast<double>(*i);
  fail(std::string("expected a number, found ") + to_string(type));
}

bool gguf_value::as_bool() const {
  if (auto* b = std::get_if<bool>(&v)) return *b;
  fail(std::string("expected a bool, found ") + to_string(type));
}

const std::string& gguf_value::as_string() const {
  if (auto* s = std::get_if<std::string>(&v)) return *s;
  fail(std::string("expected a string, found ") + to_string(type));
}

const gguf_array& gguf_value::as_array() const {
  if (auto* a = std::get_if<gguf_array>(&v)) return *a;
  fail(std::string("expected an array, found ") + to_string(type));
}

// ------------------------------------------------------------ gguf_file ----

gguf_file gguf_file::open(const std::string& path) {
  gguf_file f;
  // What the path is, before opening it (opening a FIFO would block; mapping a directory says "No such device").
  {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    if (path.empty()) fail("no model path given (an empty path)");
    if (st.type() == fs::file_type::not_found) fail("cannot open '" + path + "': no such file");
    if (ec) fail("cannot open '" + path + "': " + ec.message());
    if (st.type() == fs::file_type::directory) fail("'" + path + "' is a directory, not a GGUF file");
    if (st.type() != fs::file_type::regular)
      fail("'" + path + "' is not a regular file (a device, FIFO or socket), not a GGUF file");
  }
#ifdef HCLLAMA_HAVE_MMAP
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail("cannot open '" + path + "': " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    fail("cannot stat '" + path + "': " + std::strerror(e));
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    fail("'" + path + "' is empty (0 bytes), not a GGUF file");
  }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) fail("cannot map '" + path + "': " + std::strerror(errno));
  f.owner_ = std::shared_ptr<void>(p, [size](void* q) { ::munmap(q, size); });
  f.bytes_ = {static_cast<const std::uint8_t*>(p), size};
  f.mapped_ = true;
#else
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open '" + path + "': " + std::strerror(errno));
  in.seekg(0, std::ios::end);
  const auto size = static_cast<std::size_t>(in.tellg());
  in.seekg(0);
  if (size == 0) fail("'" + path + "' is empty (0 bytes), not a GGUF file");
  auto buf = std::make_shared<std::vector<std::uint8_t>>(size);
  if (!in.read(reinterpret_cast<char*>(buf->data()), static_cast<std::streamsize>(size)))
    fail("cannot read '" + path + "'");
  f.bytes_ = {buf->data(), buf->size()};
  f.owner_ = buf;
#endif
  try {
    f.parse();
  } catch (const gguf_error& e) {
    throw gguf_error(std::string(e.what()) + " (file '" + path + "')");
  }
  return f;
}

void release_mapped_pages(std::span<const std::uint8_t> bytes) noexcept {
#ifdef HCLLAMA_HAVE_MMAP
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = (reinterpret_cast<std::uintptr_t>(bytes.data()) + page - 1) / page * page;
  const auto end = (reinterpret_cast<std::uintptr_t>(bytes.data()) + bytes.size()) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);  // a hint: errors ignored
#else
  (void)bytes;
#endif
}

gguf_file gguf_file::from_bytes(std::span<const std::uint8_t> bytes) {
  gguf_file f;
  auto buf = std::make_shared<std::vector<std::uint8_t>>(bytes.begin(), bytes.end());
  f.bytes_ = {buf->data(), buf->size()};
  f.owner_ = buf;
  f.parse();
  return f;
}

gguf_file gguf_file::view_bytes(std::span<const std::uint8_t> bytes) {
  gguf_file f;
  f.bytes_ = bytes;
  f.parse();
  return f;
}

void gguf_file::parse() {
  cursor c(bytes_);
  const auto magic = c.read<std::uint32_t>("magic");
  if (magic != kMagic) fail("not a GGUF file (bad magic)");
  version_ = c.read<std::uint32_t>("version");
  if (version_ == 1) fail("GGUF version 1 is not supported (only versions 2 and 3)");
  if (version_ != 2 && version_ != 3) {
    if (__builtin_bswap32(version_) == 2 || __builtin_bswap32(version_) == 3)
      fail("big-endian GGUF files are not supported (byte-swapped version field)");
    fail("unsupported GGUF version " + std::to_string(version_) + " (only versions 2 and 3)");
  }
  const auto n_tensors = c.read<std::uint64_t>("tensor count");
  const auto n_kv = c.read<std::uint64_t>("metadata count");
  // Each metadata pair takes at least 8 (key length) + 4 (type) + 1 bytes,
  // each tensor info at least 8 + 4 + 4 + 8 bytes.
  if (n_kv > c.left() / 13) fail("metadata count " + std::to_string(n_kv) + " exceeds the file size");
  if (n_tensors > c.left() / 24) fail("tensor count " + std::to_string(n_tensors) + " exceeds the file size");

  kv_.reserve(static_cast<std::size_t>(n_kv));
  for (std::uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.read_string("metadata key");
    const auto t = check_value_type(c.read<std::uint32_t>("metadata value type"));
    gguf_value v = read_value(c, t, 0);
    if (!kv_index_.emplace(key, kv_.size()).second) fail("duplicate metadata key '" + key + "'");
    kv_.emplace_back(std::move(key), std::move(v));
  }

  alignment_ = 32;
  if (const gguf_value* a = find("general.alignment")) {
    if (a->type != gguf_type::u32) fail("general.alignment must be a u32");
    const auto al = a->as_u64();
    if (al == 0 || (al & (al - 1)) != 0) fail("general.alignment " + std::to_string(al) + " is not a power of two");
    alignment_ = al;
  }

  if (n_tensors > c.left() / 24) fail("tensor count " + std::to_string(n_tensors) + " exceeds the file size");
  tensors_.reserve(static_cast<std::size_t>(n_tensors));
  for (std::uint64_t i = 0; i < n_tensors; ++i) {
    gguf_tensor_info t;
    t.name = c.read_string("tensor name");
    const auto nd = c.read<std::uint32_t>("tensor dimension count");
    if (nd > kMaxDims) fail("tensor '" + t.name + "' has " + std::to_string(nd) + " dimensions (at most 4)");
    std::uint64_t ne = 1;
    for (std::uint32_t d = 0; d < nd; ++d) {
      const auto dim = c.read<std::uint64_t>("tensor dimension");
      if (dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        fail("tensor '" + t.name + "' has an invalid dimension");
      t.dims.push_back(dim);
      ne = mul_checked(ne, dim, "tensor element count");
    }
    const auto raw_type = c.read<std::uint32_t>("tensor type");
    t.type = static_cast<ggml_type>(raw_type);
    std::size_t bs, ts;
    try {
      bs = block_size(t.type);
      ts = type_size(t.type);
    } catch (const gguf_error&) {
      fail("tensor '" + t.name + "' has unknown type " + std::to_string(raw_type));
    }
    t.offset = c.read<std::uint64_t>("tensor offset");
    t.n_elements = ne;
    const std::uint64_t row = t.dims.empty() ? 1 : t.dims[0];
    if (row % bs != 0)
      fail("tensor '" + t.name + "': row length " + std::to_string(row) + " is not a multiple of the block size of " +
           to_string(t.type));
    t.n_bytes = mul_checked(ne / bs, ts, "tensor size");
    if (t.offset % alignment_ != 0) fail("tensor '" + t.name + "' data offset is not aligned");
    if (!tensor_index_.emplace(t.name, tensors_.size()).second) fail("duplicate tensor name '" + t.name + "'");
    tensors_.push_back(std::move(t));
  }

  const std::uint64_t pos = c.pos();
  data_offset_ = (pos + alignment_ - 1) / alignment_ * alignment_;
  if (data_offset_ < pos) fail("overflow computing the data offset");
  if (data_offset_ > bytes_.size() && !tensors_.empty()) fail("truncated file: data section missing");
  for (const auto& t : tensors_) {
    std::uint64_t end;
    if (__builtin_add_overflow(data_offset_, t.offset, &end) || __builtin_add_overflow(end, t.n_bytes, &end) ||
        end > bytes_.size())
      fail("truncated file: data of tensor '" + t.name + "' extends past the end of the file");
  }
}

const gguf_value* gguf_file::find(std::string_view key) const noexcept {
  auto it = kv_index_.find(std::string(key));
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const gguf_value& gguf_file::get(std::string_view key) const {
  if (auto* v = find(key)) return *v;
  fail("missing metadata key '" + std::string(key) + "'");
}

std::uint64_t gguf_file::get_u64(std::string_view key, std::uint64_t fallback) const {
  auto* v = find(key);
  return v ? v->as_u64() : fallback;
}

double gguf_file::get_f64(std::string_view key, double fallback) const {
  auto* v = find(key);
  return v ? v->as_f64() : fallback;
}

std::string gguf_file::get_string(std::string_view key, std::string fallback) const {
  auto* v = find(key);
  return v ? v->as_string() : fallback;
}

const gguf_tensor_info* gguf_file::find_tensor(std::string_view name) const noexcept {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const gguf_tensor_info& gguf_file::tensor(std::string_view name) const {
  if (auto* t = find_tensor(name)) return *t;
  fail("missing tensor '" + std::string(name) + "'");
}

std::span<const std::uint8_t> gguf_file::tensor_bytes(const gguf_tensor_info& t) const {
  return bytes_.subspan(static_cast<std::size_t>(data_offset_ + t.offset), static_cast<std::size_t>(t.n_bytes));
}

void gguf_file::to_float(const gguf_tensor_info& t, float* out) const {
  if (!can_dequantize(t.type))
    fail("tensor '" + t.name + "': dequantization of type " + to_string(t.type) + " is not supported");
  dequantize_row(t.type, tensor_bytes(t).data(), out, static_cast<std::size_t>(t.n_elements));
}

std::vector<float> gguf_file::to_float(const gguf_tensor_info& t) const {
  if (!can_dequantize(t.type))
    fail("tensor '" + t.name + "': dequantization of type " + to_string(t.type) + " is not supported");
  std::vector<float> out(static_cast<std::size_t>(t.n_elements));
  to_float(t, out.data());
  return out;
}

// ----------------------------------------------------------- gguf_writer ---

namespace {
template <class T>
void put(std::vector<std::uint8_t>& o, T x) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(&x);
  o.insert(o.end(), p, p + sizeof(T));
}
void put_string(std::vector<std::uint8_t>& o, const std::string& s) {
  put<std::uint64_t>(o, s.size());
  o.insert(o.end(), s.begin(), s.end());
}
void put_value(std::vector<std::uint8_t>& o, const gguf_value& v) {
  switch (v.type) {
    case gguf_type::u8: put<std::uint8_t>(o, static_cast<std::uint8_t>(v.as_u64())); break;
    case gguf_type::u16: put<std::uint16_t>(o, static_cast<std::uint16_t>(v.as_u64())); break;
    case gguf_type::u32: put<std::uint32_t>(o, static_cast<std::uint32_t>(v.as_u64())); break;
    case gguf_type::u64: put<std::uint64_t>(o, v.as_u64()); break;
    case gguf_type::i8: put<std::int8_t>(o, static_cast<std::int8_t>(v.as_i64())); break;
    case gguf_type::i16: put<std::int16_t>(o, static_cast<std::int16_t>(v.as_i64())); break;
    case gguf_type::i32: put<std::int32_t>(o, static_cast<std::int32_t>(v.as_i64())); break;
    case gguf_type::i64: put<std::int64_t>(o, v.as_i64()); break;
    case gguf_type::f32: put<float>(o, static_cast<float>(v.as_f64())); break;
    case gguf_type::f64: put<double>(o, v.as_f64()); break;
    case gguf_type::boolean: put<std::uint8_t>(o, v.as_bool() ? 1 : 0); break;
    case gguf_type::string: put_string(o, v.as_string()); break;
    case gguf_type::array: {
      put<std::uint32_t>(o, static_cast<std::uint32_t>(v.elem_type));
      const auto& a = v.as_array();
      put<std::uint64_t>(o, a.size());
      for (const auto& x : a) put_value(o, x);
      break;
    }
  }
}
}  // namespace

gguf_writer::gguf_writer(std::uint32_t version, std::uint64_t alignment) : version_(version), alignment_(alignment) {
  if (alignment != 32) kv_.emplace_back("general.alignment", u32(static_cast<std::uint32_t>(alignment)));
}

void gguf_writer::add(std::string key, gguf_value value) { kv_.emplace_back(std::move(key), std::move(value)); }

void gguf_writer::add_tensor(std::string name, ggml_type type, std::vector<std::uint64_t> dims,
                             std::vector<std::uint8_t> data) {
  tensors_.push_back({std::move(name), type, std::move(dims), std::move(data)});
}

std::vector<std::uint8_t> gguf_writer::bytes() const {
  std::vector<std::uint8_t> o;
  put<std::uint32_t>(o, kMagic);
  put<std::uint32_t>(o, version_);
  put<std::uint64_t>(o, tensors_.size());
  put<std::uint64_t>(o, kv_.size());
  for (const auto& [k, v] : kv_) {
    put_string(o, k);
    put<std::uint32_t>(o, static_cast<std::uint32_t>(v.type));
    put_value(o, v);
  }
  std::uint64_t off = 0;
  std::vector<std::uint64_t> offsets;
  for (const auto& t : tensors_) {
    put_string(o, t.name);
    put<std::uint32_t>(o, static_cast<std::uint32_t>(t.dims.size()));
    for (auto d : t.dims) put<std::uint64_t>(o, d);
    put<std::uint32_t>(o, static_cast<std::uint32_t>(t.type));
    put<std::uint64_t>(o, off);
    offsets.push_back(off);
    off += (t.data.size() + alignment_ - 1) / alignment_ * alignment_;
  }
  auto pad = [&] { while (o.size() % alignment_ != 0) o.push_back(0); };
  pad();
  for (const auto& t : tensors_) {
    o.insert(o.end(), t.data.begin(), t.data.end());
    pad();
  }
  return o;
}

gguf_value gguf_writer::u8(std::uint8_t x) { return {gguf_type::u8, gguf_type::u8, std::uint64_t{x}}; }
gguf_value gguf_writer::u16(std::uint16_t x) { return {gguf_type::u16, gguf_type::u8, std::uint64_t{x}}; }
gguf_value gguf_writer::u32(std::uint32_t x) { return {gguf_type::u32, gguf_type::u8, std::uint64_t{x}}; }
gguf_value gguf_writer::u64(std::uint64_t x) { return {gguf_type::u64, gguf_type::u8, x}; }
gguf_value gguf_writer::i8(std::int8_t x) { return {gguf_type::i8, gguf_type::u8, std::int64_t{x}}; }
gguf_value gguf_writer::i16(std::int16_t x) { return {gguf_type::i16, gguf_type::u8, std::int64_t{x}}; }
gguf_value gguf_writer::i32(std::int32_t x) { return {gguf_type::i32, gguf_type::u8, std::int64_t{x}}; }
gguf_value gguf_writer::i64(std::int64_t x) { return {gguf_type::i64, gguf_type::u8, x}; }
gguf_value gguf_writer::f32(float x) { return {gguf_type::f32, gguf_type::u8, double{x}}; }
gguf_value gguf_writer::f64(double x) { return {gguf_type::f64, gguf_type::u8, x}; }
gguf_value gguf_writer::boolean(bool x) { return {gguf_type::boolean, gguf_type::u8, x}; }
gguf_value gguf_writer::string(std::string x) { return {gguf_type::string, gguf_type::u8, std::move(x)}; }
gguf_value gguf_writer::array(gguf_type elem, gguf_array items) {
  for (const auto& it : items)
    if (it.type != elem) fail("array element type mismatch");
  return {gguf_type::array, elem, std::move(items)};
}

}  // namespace hcllama
