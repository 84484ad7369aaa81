// Weight matrices kept as the GGUF file stores them, and the products of the forward pass on them.
//
// A quantized_matrix points at a tensor's blocks inside the file's bytes (the read-only mapping of
// gguf_file::open, shared, so the matrix keeps it alive): no dequantized copy exists. Its types:
// F32, F16, BF16, Q4_0, Q4_1, Q8_0.
//
// matrix_multiplier computes Y[n][rows] = X[n][cols] W^T (+ beta Y) straight from the blocks, with fp32
// activations and fp32 accumulation (no quantized activations): per block of 32 weights,
// d * sum(q * x) (+ m * sum(x) for Q4_0/Q4_1, sum(x) per block computed once per input vector). The
// kernels are compiled for AVX-512, AVX2+FMA and portable C++, the best one for this processor chosen at
// run time. Each output element is computed by one thread with one fixed order of operations, whatever
// the thread count, the number of input vectors or the element's place among them: a product of n inputs
// gives, for each input, the bits of the product of that input alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "gguf.hpp"
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

 private:
  std::string name_;
  ggml_type type_ = ggml_type::f32;
  std::size_t rows_ = 0, cols_ = 0, row_bytes_ = 0;
  const std::uint8_t* data_ = nullptr;
  std::shared_ptr<const void> owner_;
};

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
  explicit matrix_multiplier(heterocache::host_thread_pool& pool, kernel_isa isa = best_isa());

  std::size_t threads() const noexcept { return static_cast<std::size_t>(pool_.size()); }
  kernel_isa isa() const noexcept { return isa_; }

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

  heterocache::host_thread_pool& pool_;
  kernel_isa isa_;
  std::vector<float> block_sums_;  // [block][input], block_sums_stride_ floats per block
  std::size_t block_sums_stride_ = 0;
};

}  // namespace hcllama
