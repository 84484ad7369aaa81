// The rows of a 4- or 8-bit weight matrix regrouped for integer dot products on int8 activations (VNNI).
//
// In the file a block of 32 weights of one row holds its scale(s) and its codes together. The kernel here
// multiplies 16 rows at once, one row per 32-bit lane of an AVX-512 vector: per block j of a group of 16
// rows it loads the 16 rows' d (and m) as one vector and their codes in 4-byte steps, each step's 4 codes of
// 16 rows one vector, each multiplied (vpdpbusd) with the same 4 activation codes broadcast. Layout, per group
// of 16 rows and block j (the same bytes as the file's 16 blocks, in another order):
//   d of the 16 rows (fp16), then m of the 16 rows (fp16, Q4_1 only), then the codes:
//   Q4_0 / Q4_1: for s in 0..3, for each row, the file's nibble bytes 4s..4s+3 of the block (low nibbles:
//     elements 4s..4s+3; high nibbles: elements 16+4s..16+4s+3);
//   Q8_0: for s in 0..7, for each row, codes 4s..4s+3 plus 128 (as unsigned bytes).
// The products take unsigned codes u (vpdpbusd: unsigned times signed bytes): u = q for Q4_1, u = q + 8 for
// Q4_0 (the file's nibble), u = q + 128 for Q8_0; sum(q * qx) = sum(u * qx) - c * sum(qx) in exact integers,
// c = 0, 8, 128. Per output (row, input) and block j, in this order whatever the thread, group or number of
// inputs:  acc += float(sum(q * qx)) * (d * dx), then for Q4_1 acc += m * (dx * sum(qx)); the output is acc
// (plus beta * y). int8 codes as quantized_matrix.hpp defines
// them (activation_format::int8).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "gguf.hpp"

namespace hcllama {

class quantized_matrix;

class interleaved_rows {
 public:
  static constexpr std::size_t kGroupRows = 16;

  // True when a matrix of this type and row count can be regrouped (Q4_0, Q4_1, Q8_0; rows a multiple of 16).
  static bool fits(ggml_type type, std::size_t rows) noexcept;
  // The regrouped copy of w (fits(w.type(), w.rows()) must hold).
  explicit interleaved_rows(const quantized_matrix& w);

  ggml_type type() const noexcept { return type_; }
  std::size_t rows() const noexcept { return rows_; }
  std::size_t cols() const noexcept { return cols_; }
  std::size_t groups() const noexcept { return rows_ / kGroupRows; }
  std::size_t block_bytes() const noexcept { return block_bytes_; }
  std::size_t bytes() const noexcept { return bytes_.size(); }
  // Block j of group g.
  const std::uint8_t* block(std::size_t g, std::size_t j) const noexcept {
    return bytes_.data() + (g * (cols_ / 32) + j) * block_bytes_;
  }

 private:
  ggml_type type_;
  std::size_t rows_, cols_, block_bytes_;
  std::vector<std::uint8_t> bytes_;
};

// The int8 codes of n inputs: input t's codes at codes[t * cols], its block j's dx, dx * sum(qx) and sum(qx)
// at scales[t * blocks + j], sums[t * blocks + j] and totals[t * blocks + j].
struct int8_inputs {
  const std::int8_t* codes;
  const float* scales;
  const float* sums;
  const std::int32_t* totals;
  std::size_t n;
};

// True when this processor runs the kernel below (AVX-512 F, BW, VL and VNNI).
bool interleaved_kernel_runs() noexcept;

// y[t][g * 16 + i] = row g * 16 + i of w . input t (+ beta * y) for the groups [first, last) and every input,
// y[t] at y + t * ldy. Requires interleaved_kernel_runs().
void multiply_groups(const interleaved_rows& w, std::size_t first, std::size_t last, const int8_inputs& x, float* y,
                     std::size_t ldy, float beta);

}  // namespace hcllama
