// Weight matrices kept as the GGUF file stores them, and the products of the forward pass on them.
//
// A quantized_matrix points at a tensor's blocks inside the file's bytes (the read-only mapping of
// gguf_file::open, shared, so the matrix keeps it alive): no dequantized copy exists. Its types:
// F32, F16, BF16, Q4_0, Q4_1, Q8_0.
//
// matrix_multiplier computes Y[n][rows] = X[n][cols] W^T (+ beta Y) straight from the blocks, with fp32
// accumulation, in one of three ways for the 4- and 8-bit types (activation_format):
//   fp32 activations (the default): per block of 32 weights, d * sum(q * x) (+ m * sum(x) for Q4_0/Q4_1,
//     sum(x) per block computed once per input vector), every code widened to fp32;
//   int16 or int8 activations: every input vector quantized once per product, per block of 32
//     values j, to dx = max|x| / C and codes qx = nearest-even(x * (1 / dx)), C = 32767 (int16) or 127
//     (int8; llama.cpp's Q8 activations); a block with dx below FLT_MIN has dx = 0 and codes 0. Then per
//     block of weights the integer sum(q * qx) (exact in 32 bits), times d * dx, plus m * dx * sum(qx) for
//     the types with an offset. Each input loses at most dx / 2 per value: the error of an output is at most
//     sum over the blocks of dx / 2 * sum |w| of the block (int16: about 2^-16 of the block's largest input).
// The float types (F32, F16, BF16) always take fp32 inputs. The kernels are compiled for AVX-512, AVX2+FMA
// and portable C++, the best one for this processor chosen at run time (the quantized-activation products of
// the AVX-512 set are 256 bits wide, as AVX2's). With int8 activations on a processor with AVX-512 VNNI, the
// products of matrices of whole groups of 16 rows run on the rows regrouped by interleaved_rows.hpp (16 rows
// per vector, built on the first such product; the file's pages of the matrix are then released), the same
// integer sums in another float order. Each output element is computed by one thread with one fixed
// order of operations, whatever the thread count, the number of input vectors or the element's place among
// them: a product of n inputs gives, for each input, the bits of the product of that input alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "gguf.hpp"
#include "interleaved_rows.hpp"
#include "kernel_isa.hpp"
#include "heterocache/attention/host_thread_pool.hpp"

namespace hcllama {

struct weight_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class quantized_matrix {
 public:
  // True for the types the kernels multiply with.
  static bool supports(ggml_type t) noexcept;

  quantized_matrix() = default;
  // `rows` rows of `cols` weights of type `type`, stored as GGUF stores them in `blocks` (rows * row_bytes
  // bytes, row after row), which `owner` keeps alive (null: the caller does). `name` is for error messages.
  // Throws weight_error for a type the kernels do not support, or a size that does not fit.
  quantized_matrix(std::string name, ggml_type type, std::size_t rows, std::size_t cols,
                   std::span<const std::uint8_t> blocks, std::shared_ptr<const void> owner);
  // The tensor `t` of `f` (dims[0] = cols, the other dims = rows), in place in f's bytes.
  static quantized_matrix from_gguf(const gguf_file& f, const gguf_tensor_info& t);

  const std::string& name() const noexcept { return name_; }
  ggml_type type() const noexcept { return type_; }
  std::size_t rows() const noexcept { return rows_; }
  std::size_t cols() const noexcept { return cols_; }
  std::size_t row_bytes() const noexcept { return row_bytes_; }
  std::size_t bytes() const noexcept { return rows_ * row_bytes_; }
  const std::uint8_t* row_data(std::size_t r) const noexcept { return data_ + r * row_bytes_; }
  // Row r widened to float (cols() floats): the embedding lookup.
  void dequantize_row(std::size_t r, float* out) const;
  // "'name' (Q4_1, 576 x 576)", for error messages.
  std::string describe() const;
  // The rows regrouped for the int8 kernels of interleaved_rows.hpp, built on the first call (by one thread,
  // whichever calls first; copies of this matrix share them); null when interleaved_rows::fits() does not hold.
  const interleaved_rows* interleaved() const;

 private:
  struct interleaved_state;
  std::string name_;
  ggml_type type_ = ggml_type::f32;
  std::size_t rows_ = 0, cols_ = 0, row_bytes_ = 0;
  const std::uint8_t* data_ = nullptr;
  std::shared_ptr<const void> owner_;
  std::shared_ptr<interleaved_state> interleaved_;  // null: not regroupable
  bool mapped_ = false;  // data_ is in a mapped file (from_gguf): its pages are released once regrouped
};

// How matrix_multiplier feeds the inputs of the 4- and 8-bit types to their kernels (see above).
enum class activation_format { fp32, int16, int8 };
// "fp32", "int16", "int8".
const char* to_string(activation_format f) noexcept;
// The format named `name` ("fp32", "int16" or "int8"), or none.
std::optional<activation_format> parse_activation_format(std::string_view name) noexcept;

// One product of matrix_multiplier::multiply: y[n][w.rows()] = x[n][w.cols()] w^T + beta * y.
// beta == 0 does not read y.
struct weight_product {
  const quantized_matrix* w = nullptr;
  float* y = nullptr;
  float beta = 0.0f;
};

// Runs the products on the threads of a pool (which it borrows: the pool must outlive it); one product at a
// time (from one thread, or one after the other).
class matrix_multiplier {
 public:
  // The pool's threads (the caller included) share the rows of every product; `isa` must be one of
  // supported_isas().
  explicit matrix_multiplier(heterocache::host_thread_pool& pool, kernel_isa isa = best_isa(),
                             activation_format activations = activation_format::fp32);

  std::size_t threads() const noexcept { return static_cast<std::size_t>(pool_.size()); }
  kernel_isa isa() const noexcept { return isa_; }
  activation_format activations() const noexcept { return activations_; }
  void set_activations(activation_format f) noexcept { activations_ = f; }

  // y[rows] = W x + beta * y (decode).
  void matvec(const quantized_matrix& w, const float* x, float* y, float beta = 0.0f);
  // y[n][rows] = x[n][cols] W^T + beta * y (prefill, a batch of streams).
  void matmat(const quantized_matrix& w, const float* x, std::size_t n, float* y, float beta = 0.0f);
  // Products of several matrices of the same input (Q, K and V; gate and up) in one pass over the threads,
  // the input's block sums computed once. Every w must have the same cols().
  void multiply(std::span<const weight_product> products, const float* x, std::size_t n);
  void multiply(std::initializer_list<weight_product> products, const float* x, std::size_t n) {
    multiply(std::span(products.begin(), products.size()), x, n);
  }

 private:
  void compute_block_sums_(std::span<const weight_product> products, const float* x, std::size_t n);
  // Quantizes x for the products that take codes; false when none does.
  bool quantize_inputs_(std::span<const weight_product> products, const float* x, std::size_t n);
  bool takes_codes_(ggml_type t) const noexcept;
  // The products on int8 codes by the kernels of interleaved_rows.hpp; false (nothing done) unless every
  // product's matrix has its rows regrouped and this processor runs them.
  bool multiply_interleaved_(std::span<const weight_product> products, std::size_t n);

  heterocache::host_thread_pool& pool_;
  kernel_isa isa_;
  activation_format activations_;
  std::vector<float> block_sums_;  // [block][input], block_sums_stride_ floats per block
  std::size_t block_sums_stride_ = 0;
  std::vector<std::int16_t> codes_;  // quantized activations: [input][cols] codes (int8 ones in its first half),
  std::vector<float> scales_;       // [input][block] dx,
  std::vector<float> code_sums_;    // [input][block] dx * sum(qx)
  std::vector<std::int32_t> code_totals_;  // [input][block] sum(qx) of int8 codes (the regrouped rows' kernels)
};

}  // namespace hcllama
