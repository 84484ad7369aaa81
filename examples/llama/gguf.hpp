// GGUF (v2/v3) reader for the llama example engine.
//
// Parses the header, every metadata value type (including nested arrays),
// tensor infos, general.alignment and the data section, and dequantizes
// F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 tensors to float.
//
// Every count and length read from the file is bounded by the bytes that are
// left, so corrupt or truncated files give a gguf_error (a std::runtime_error)
// instead of a crash or a huge allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

namespace hcllama {

struct gguf_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Metadata value types (GGUF spec numbering).
enum class gguf_type : std::uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
  string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};
const char* to_string(gguf_type t) noexcept;

// Tensor element types (ggml numbering). Only the ones listed in
// is_supported() can be dequantized; others are still parsed if their size is known.
enum class ggml_type : std::uint32_t {
  f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9,
  q2_k = 10, q3_k = 11, q4_k = 12, q5_k = 13, q6_k = 14, q8_k = 15,
  i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, bf16 = 30,
};
const char* to_string(ggml_type t) noexcept;
// Elements per block and bytes per block; throws gguf_error for unknown types.
std::size_t block_size(ggml_type t);
std::size_t type_size(ggml_type t);
bool can_dequantize(ggml_type t) noexcept;

// Dequantize n elements (n must be a multiple of block_size(t)) from src.
void dequantize_row(ggml_type t, const std::uint8_t* src, float* dst, std::size_t n);

float fp16_to_fp32(std::uint16_t h) noexcept;
std::uint16_t fp32_to_fp16(float f) noexcept;  // round to nearest even

struct gguf_value;
using gguf_array = std::vector<gguf_value>;

struct gguf_value {
  gguf_type type = gguf_type::u8;
  gguf_type elem_type = gguf_type::u8;  // arrays only
  std::variant<std::uint64_t, std::int64_t, double, bool, std::string, gguf_array> v;

  bool is_array() const noexcept { return type == gguf_type::array; }
  bool is_string() const noexcept { return type == gguf_type::string; }
  bool is_integer() const noexcept;
  bool is_float() const noexcept { return type == gguf_type::f32 || type == gguf_type::f64; }

  // Conversions; throw gguf_error on a type mismatch or out-of-range value.
  std::uint64_t as_u64() const;
  std::int64_t as_i64() const;
  double as_f64() const;  // accepts integers too
  bool as_bool() const;
  const std::string& as_string() const;
  const gguf_array& as_array() const;
};

struct gguf_tensor_info {
  std::string name;
  ggml_type type = ggml_type::f32;
  std::vector<std::uint64_t> dims;  // dims[0] is the innermost (row length)
  std::uint64_t offset = 0;         // relative to the data section
  std::uint64_t n_elements = 0;
  std::uint64_t n_bytes = 0;
  std::uint64_t rows() const noexcept { return dims.empty() || dims[0] == 0 ? 0 : n_elements / dims[0]; }
  std::uint64_t row_length() const noexcept { return dims.empty() ? 1 : dims[0]; }
};

class gguf_file {
 public:
  // Memory-map a file (read-only).
  static gguf_file open(const std::string& path);
  // Parse a byte buffer; the bytes are copied (owned by the object).
  static gguf_file from_bytes(std::span<const std::uint8_t> bytes);
  // Parse a buffer without copying; the caller keeps it alive.
  static gguf_file view_bytes(std::span<const std::uint8_t> bytes);

  gguf_file(gguf_file&&) noexcept = default;
  gguf_file& operator=(gguf_file&&) noexcept = default;
  ~gguf_file() = default;

  std::uint32_t version() const noexcept { return version_; }
  std::uint64_t alignment() const noexcept { return alignment_; }
  std::uint64_t data_offset() const noexcept { return data_offset_; }
  std::size_t file_size() const noexcept { return bytes_.size(); }

  // Metadata in file order and by key.
  const std::vector<std::pair<std::string, gguf_value>>& metadata() const noexcept { return kv_; }
  const gguf_value* find(std::string_view key) const noexcept;
  const gguf_value& get(std::string_view key) const;  // throws if missing
  std::uint64_t get_u64(std::string_view key, std::uint64_t fallback) const;
  double get_f64(std::string_view key, double fallback) const;
  std::string get_string(std::string_view key, std::string fallback) const;

  const std::vector<gguf_tensor_info>& tensors() const noexcept { return tensors_; }
  const gguf_tensor_info* find_tensor(std::string_view name) const noexcept;
  const gguf_tensor_info& tensor(std::string_view name) const;  // throws if missing

  // Raw bytes of a tensor's data.
  std::span<const std::uint8_t> tensor_bytes(const gguf_tensor_info& t) const;
  // A share of the file's bytes (the mapping or the owned copy; null for view_bytes, whose caller keeps them
  // alive): what lets an object that points into tensor_bytes() outlive this gguf_file.
  std::shared_ptr<const void> bytes_owner() const noexcept { return owner_; }
  // True when the bytes are the file's read-only mapping (open() where the system maps files), which
  // release_mapped_pages() may drop.
  bool mapped() const noexcept { return mapped_; }
  // Whole tensor dequantized to float (row-major, dims[0] innermost).
  std::vector<float> to_float(const gguf_tensor_info& t) const;
  void to_float(const gguf_tensor_info& t, float* out) const;

 private:
  gguf_file() = default;
  void parse();
  bool mapped_ = false;

  std::shared_ptr<void> owner_;  // mapping or owned copy
  std::span<const std::uint8_t> bytes_;
  std::uint32_t version_ = 0;
  std::uint64_t alignment_ = 32;
  std::uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, gguf_value>> kv_;
  std::unordered_map<std::string, std::size_t> kv_index_;
  std::vector<gguf_tensor_info> tensors_;
  std::unordered_map<std::string, std::size_t> tensor_index_;
};

// Drops the whole pages inside `bytes` (a range of a mapped() file's bytes) from this process's memory: they
// are read again from the file when next touched. For a copy that has taken the bytes' place (the regrouped
// rows of interleaved_rows), so the weights are not held twice.
void release_mapped_pages(std::span<const std::uint8_t> bytes) noexcept;

// ---- Writer (used by the tests and the fuzz seed corpus) -------------------
// Builds a GGUF v3 byte image in memory.
class gguf_writer {
 public:
  explicit gguf_writer(std::uint32_t version = 3, std::uint64_t alignment = 32);
  void add(std::string key, gguf_value value);
  // data must hold exactly the bytes of the tensor (n_elements/block*type_size).
  void add_tensor(std::string name, ggml_type type, std::vector<std::uint64_t> dims,
                  std::vector<std::uint8_t> data);
  std::vector<std::uint8_t> bytes() const;

  static gguf_value u8(std::uint8_t x);
  static gguf_value i8(std::int8_t x);
  static gguf_value u16(std::uint16_t x);
  static gguf_value i16(std::int16_t x);
  static gguf_value u32(std::uint32_t x);
  static gguf_value i32(std::int32_t x);
  static gguf_value u64(std::uint64_t x);
  static gguf_value i64(std::int64_t x);
  static gguf_value f32(float x);
  static gguf_value f64(double x);
  static gguf_value boolean(bool x);
  static gguf_value string(std::string x);
  static gguf_value array(gguf_type elem, gguf_array items);

 private:
  std::uint32_t version_;
  std::uint64_t alignment_;
  std::vector<std::pair<std::string, gguf_value>> kv_;
  struct pending {
    std::string name;
    ggml_type type;
    std::vector<std::uint64_t> dims;
    std::vector<std::uint8_t> data;
  };
  std::vector<pending> tensors_;
};

}  // namespace hcllama
