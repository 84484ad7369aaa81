#pragma once
//! \file
//! K/V element types: fp32, IEEE binary16 (`fp16_t`) and bfloat16 (`bf16_t`), one vocabulary for the engine's
//! tensors, the storage tiers and the host and CUDA kernels (cuda/element_traits.cuh maps them to `__half` and
//! `__nv_bfloat16`), with their conversions to and from float. 16-bit elements halve the bytes a tier holds and
//! a decode step reads; every kernel widens them to fp32 as it reads and accumulates in fp32.

#include <bit>
#include <concepts>
#include <cstdint>

#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! An IEEE 754 binary16 value (5 exponent bits, 10 mantissa bits), held by its bits. `==` compares bits.
struct fp16_t {
    std::uint16_t bits;
    friend bool operator==(fp16_t, fp16_t) = default;
};

//! A bfloat16 value (the upper half of a float: 8 exponent bits, 7 mantissa bits), held by its bits.
//! `==` compares bits.
struct bf16_t {
    std::uint16_t bits;
    friend bool operator==(bf16_t, bf16_t) = default;
};

// Layout-compatible with the 16-bit types of other libraries (CUDA's __half, __nv_bfloat16), so arrays can be
// handed over as they are.
static_assert(sizeof(fp16_t) == 2 && alignof(fp16_t) == 2);
static_assert(sizeof(bf16_t) == 2 && alignof(bf16_t) == 2);

//! The element types keys and values can be stored in.
template <class E>
concept KvElement = std::same_as<E, float> || std::same_as<E, fp16_t> || std::same_as<E, bf16_t>;

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

//! An element widened to float, exactly.
[[nodiscard]] inline float to_float(float e) noexcept { return e; }
[[nodiscard]] inline float to_float(fp16_t e) noexcept { return fp16_to_float(e.bits); }
[[nodiscard]] inline float to_float(bf16_t e) noexcept { return bf16_to_float(e.bits); }

//! `x` as an element of type `E`, rounded to nearest even (exact for `float`).
template <KvElement E>
[[nodiscard]] E from_float(float x) noexcept {
    if constexpr (std::same_as<E, fp16_t>) return {float_to_fp16(x)};
    else if constexpr (std::same_as<E, bf16_t>) return {float_to_bf16(x)};
    else return x;
}

//! Converts `n` floats to elements of type `E`, each rounded to nearest even.
template <KvElement E>
void from_floats(const float* in, E* out, index_t n) noexcept {
    for (index_t i = 0; i < n; ++i) out[i] = from_float<E>(in[i]);
}

//! Widens `n` elements to floats, exactly.
template <KvElement E>
void to_floats(const E* in, float* out, index_t n) noexcept {
    for (index_t i = 0; i < n; ++i) out[i] = to_float(in[i]);
}

//! Whether every `From` value is exactly a `To` value (the same type, or widening to float).
template <KvElement From, KvElement To>
inline constexpr bool converts_exactly = std::same_as<From, To> || std::same_as<To, float>;

//! Copies `n` elements of type `From` into elements of type `To`: bit for bit when the types are the same,
//! exactly when `To` is float, rounded to nearest even (through float) otherwise.
template <KvElement To, KvElement From>
void convert_elements(const From* in, To* out, index_t n) noexcept {
    if constexpr (std::same_as<From, To>) {
        for (index_t i = 0; i < n; ++i) out[i] = in[i];
    } else if constexpr (std::same_as<From, float>) {
        from_floats(in, out, n);
    } else {
        for (index_t i = 0; i < n; ++i) out[i] = from_float<To>(to_float(in[i]));
    }
}

}  // namespace v1
}  // namespace heterocache
