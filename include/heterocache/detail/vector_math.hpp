#pragma once
//! \file
//! Small float kernels written so that a compiler vectorizes them at plain -O3 on any target (internal).
//!
//! No intrinsics: a reduction keeps `vector_lanes` independent partial sums (a compiler may not reorder a
//! single float sum, but it maps lane-wise sums onto SIMD registers), combined in a fixed order, so every
//! result is deterministic and the same on every machine with IEEE floats.

#include <bit>
#include <cstdint>

#include "heterocache/detail/isa_dispatch.hpp"
#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {
namespace detail {

//! Partial sums a reduction keeps: two SSE or one AVX register of floats.
inline constexpr index_t vector_lanes = 8;

//! Sums the lanes pairwise, in a fixed order.
HETEROCACHE_ALWAYS_INLINE float sum_lanes(const float (&lanes)[vector_lanes]) noexcept {
    return ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
}

//! `sum_c a[c] * b[c]` over `n` floats, lane-wise (see the file comment).
HETEROCACHE_ALWAYS_INLINE float dot(const float* __restrict a, const float* __restrict b, index_t n) noexcept {
    float lanes[vector_lanes] = {};
    index_t c = 0;
    for (; c + vector_lanes <= n; c += vector_lanes)
        for (index_t l = 0; l < vector_lanes; ++l) lanes[l] += a[c + l] * b[c + l];
    for (index_t l = 0; l < vector_lanes && c + l < n; ++l) lanes[l] += a[c + l] * b[c + l];  // tail: < 8
    return sum_lanes(lanes);
}

//! A float's bits as a signed integer in the same order as the float (a total order: -0 sorts just below
//! +0, NaNs at the ends). Its own inverse. Comparing these instead of floats lets GCC vectorize maxima
//! under its default -ftrapping-math.
inline std::int32_t ordered_bits(std::int32_t bits) noexcept { return bits ^ ((bits >> 31) & 0x7fffffff); }
inline std::int32_t ordered_bits(float x) noexcept { return ordered_bits(std::bit_cast<std::int32_t>(x)); }

//! Tokens `axpy_tile` adds at once.
inline constexpr index_t token_tile = 4;

//! `y[c] += w[0] * x[0][c] + ... + w[3] * x[3][c]` (summed left to right): one load and store of `y` for
//! `token_tile` vectors.
HETEROCACHE_ALWAYS_INLINE void axpy_tile(const float (&w)[token_tile], const float* const (&x)[token_tile], float* __restrict y,
                      index_t n) noexcept {
    const float* __restrict x0 = x[0];
    const float* __restrict x1 = x[1];
    const float* __restrict x2 = x[2];
    const float* __restrict x3 = x[3];
    for (index_t c = 0; c < n; ++c) y[c] += ((w[0] * x0[c] + w[1] * x1[c]) + w[2] * x2[c]) + w[3] * x3[c];
}

//! `sum_c x[c]` over `n` floats, lane-wise.
HETEROCACHE_ALWAYS_INLINE float sum(const float* x, index_t n) noexcept {
    float lanes[vector_lanes] = {};
    index_t c = 0;
    for (; c + vector_lanes <= n; c += vector_lanes)
        for (index_t l = 0; l < vector_lanes; ++l) lanes[l] += x[c + l];
    for (index_t l = 0; l < vector_lanes && c + l < n; ++l) lanes[l] += x[c + l];  // tail: < 8
    return sum_lanes(lanes);
}

//! `y[c] += alpha * x[c]` over `n` floats.
HETEROCACHE_ALWAYS_INLINE void axpy(float alpha, const float* __restrict x, float* __restrict y, index_t n) noexcept {
    for (index_t c = 0; c < n; ++c) y[c] += alpha * x[c];
}

//! `e^x` for `x <= 0`, within 2 ulp of `std::exp`; 0 below -87 (where float `e^x` is denormal).
//! Branch-free, so a loop over it vectorizes (the C library's `expf` is a call per element).
//! Method: `x = n ln2 + r` with `|r| <= ln2 / 2`, `e^r` by its Taylor polynomial of degree 7 (truncation
//! error below 1e-8 on that interval), times `2^n` assembled in the exponent bits.
HETEROCACHE_ALWAYS_INLINE float exp_nonpositive(float x) noexcept {
    constexpr float log2e = 1.44269504088896341f;
    constexpr float ln2_hi = 0.693145751953125f;  // ln 2 split so that n * ln2_hi is exact
    constexpr float ln2_lo = 1.428606765330187e-06f;
    constexpr float round_shift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    // The clamp compares bit patterns: a float compare would keep GCC (with its default -ftrapping-math)
    // from vectorizing. For x <= 0, `x < -87` exactly when its bits, unsigned, exceed those of -87.
    constexpr std::uint32_t lowest = std::bit_cast<std::uint32_t>(-87.0f);
    const bool underflow = std::bit_cast<std::uint32_t>(x) > lowest;
    const float clamped = std::bit_cast<float>(underflow ? lowest : std::bit_cast<std::uint32_t>(x));
    const float shifted = clamped * log2e + round_shift;
    const float n = shifted - round_shift;
    const std::int32_t exponent = std::bit_cast<std::int32_t>(shifted) - std::bit_cast<std::int32_t>(round_shift);
    const float r = (clamped - n * ln2_hi) - n * ln2_lo;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const float result = p * std::bit_cast<float>((exponent + 127) << 23);
    const std::uint32_t keep = 0u - static_cast<std::uint32_t>(!underflow);  // all ones, or 0 below -87
    return std::bit_cast<float>(std::bit_cast<std::uint32_t>(result) & keep);
}

}  // namespace detail
}  // namespace v1
}  // namespace heterocache
