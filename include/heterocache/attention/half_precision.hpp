#pragma once
//! \file
//! 16-bit K/V storage for the host kernels: fp16 and bf16 conversions, and decode attention over 16-bit
//! slots (converted to fp32 as they are read, fp32 accumulation). Halves the bytes a decode step reads.

#include <bit>
#include <cstdint>
#include <span>

#include "heterocache/attention/decode_attention.hpp"

namespace heterocache {
inline namespace v1 {

//! How a 16-bit K/V element encodes a float.
enum class half_format : std::uint8_t {
    fp16,  //!< IEEE 754 binary16: 5 exponent bits, 10 mantissa bits
    bf16,  //!< bfloat16: the upper half of a float (8 exponent bits, 7 mantissa bits)
};

//! binary16 -> float, exact (subnormals, infinities and NaN included). Branch-free, so loops vectorize.
inline float fp16_to_float(std::uint16_t h) noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t magnitude = h & 0x7fffu;
    // Shifted into a float's exponent and mantissa, then scaled by 2^(127 - 15): right for normal and
    // subnormal halves alike. Infinity and NaN (exponent all ones) keep an all-ones exponent instead.
    const float scaled = std::bit_cast<float>(magnitude << 13) * 0x1p112f;
    const std::uint32_t special = (magnitude << 13) | 0x7f800000u;
    // A mask, not `?:`: GCC would turn the choice into a branch around the multiply and not vectorize.
    const std::uint32_t is_special = 0u - static_cast<std::uint32_t>(magnitude >= 0x7c00u);
    const std::uint32_t bits = (special & is_special) | (std::bit_cast<std::uint32_t>(scaled) & ~is_special);
    return std::bit_cast<float>(bits | sign);
}

//! float -> binary16, rounded to nearest even; overflow gives infinity, NaN stays NaN.
inline std::uint16_t float_to_fp16(float f) noexcept {
    const std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
    const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
    const std::uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);  // NaN
    if (magnitude >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
    if (magnitude < 0x38800000u) {  // below 2^-14: a subnormal half, rounded by the float adder
        const float rounded = std::bit_cast<float>(magnitude) + 0.5f;  // 0.5 = 2^-1: its ulp is 2^-24
        return static_cast<std::uint16_t>(sign | (std::bit_cast<std::uint32_t>(rounded) - 0x3f000000u));
    }
    const std::uint32_t odd = (magnitude >> 13) & 1u;
    const std::uint32_t rebased = magnitude - (std::uint32_t{112} << 23) + 0xfffu + odd;
    return static_cast<std::uint16_t>(sign | (rebased >> 13));
}

//! bfloat16 -> float, exact.
inline float bf16_to_float(std::uint16_t h) noexcept { return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16); }

//! float -> bfloat16, rounded to nearest even; NaN stays NaN.
inline std::uint16_t float_to_bf16(float f) noexcept {
    const std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x40u);  // quiet NaN
    return static_cast<std::uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

//! Converts `n` floats to `format`.
inline void to_half(half_format format, const float* in, std::uint16_t* out, index_t n) noexcept {
    if (format == half_format::fp16)
        for (index_t i = 0; i < n; ++i) out[i] = float_to_fp16(in[i]);
    else
        for (index_t i = 0; i < n; ++i) out[i] = float_to_bf16(in[i]);
}

//! Converts `n` elements of `format` to floats.
inline void from_half(half_format format, const std::uint16_t* in, float* out, index_t n) noexcept {
    if (format == half_format::fp16)
        for (index_t i = 0; i < n; ++i) out[i] = fp16_to_float(in[i]);
    else
        for (index_t i = 0; i < n; ++i) out[i] = bf16_to_float(in[i]);
}

//! A `csr_selection` whose hot slots hold 16-bit keys and values (`[slot][head_dim]` elements of `format`).
struct half_csr_selection {
    index_t rows = 0;
    index_t kv_heads = 0;
    index_t group_size = 0;
    index_t head_dim = 0;
    std::span<const index_t> indptr;
    std::span<const index_t> indices;
    const std::uint16_t* keys = nullptr;
    const std::uint16_t* values = nullptr;
    half_format format = half_format::bf16;
    std::span<const score_capture> captures;  //!< as `csr_selection::captures`

    [[nodiscard]] index_t row_length(index_t row) const noexcept { return indptr[row + 1] - indptr[row]; }
    [[nodiscard]] index_t total_tokens() const noexcept { return indptr.empty() ? 0 : indptr[rows]; }
};

namespace detail {

//! Keys and values converted to fp32 into the kernel's buffer as they are read (once per token, shared by
//! the G query heads of the row).
template <half_format Format>
struct half_slots {
    const std::uint16_t* keys;
    const std::uint16_t* values;
    index_t head_dim;
    [[nodiscard]] const float* key(index_t slot, float* buffer) const noexcept { return convert(keys, slot, buffer); }
    [[nodiscard]] const float* value(index_t slot, float* buffer) const noexcept { return convert(values, slot, buffer); }
    const float* convert(const std::uint16_t* base, index_t slot, float* buffer) const noexcept {
        from_half(Format, base + slot * head_dim, buffer, head_dim);
        return buffer;
    }
};

template <half_format Format>
void decode_attention_half(const half_csr_selection& selection, const float* queries, float* output, float* lse,
                           float scale, host_thread_pool* pool) {
    const half_slots<Format> source{selection.keys, selection.values, selection.head_dim};
    const auto attend = [&](index_t row) {
        attend_row(selection_row(selection, source, row, queries, output, lse, scale));
    };
    if (pool != nullptr)
        pool->for_each(selection.rows, attend);
    else
        for (index_t row = 0; row < selection.rows; ++row) attend(row);
}

}  // namespace detail

//! `decode_attention` over 16-bit K/V: the same kernel, each key and value converted to fp32 once as it is
//! read, fp32 accumulation. Matches the fp32 kernel run on the converted K/V to float rounding. Allocates
//! nothing. Throws `shape_error` unless `1 <= head_dim <= 256`.
inline void decode_attention(const half_csr_selection& selection, const float* queries, float* output, float* lse,
                             float scale, host_thread_pool* pool = nullptr) {
    detail::check_selection(selection);
    if (selection.format == half_format::fp16)
        detail::decode_attention_half<half_format::fp16>(selection, queries, output, lse, scale, pool);
    else
        detail::decode_attention_half<half_format::bf16>(selection, queries, output, lse, scale, pool);
}

}  // namespace v1
}  // namespace heterocache
