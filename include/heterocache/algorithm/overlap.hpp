#pragma once
//! \file
//! Top-k position sets and the overlap coefficient (DESIGN.md section 2, "Overlap coefficient").

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstddef>
#include <span>

#include "heterocache/detail/vector_math.hpp"
#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! `O(X, Y) = |X ∩ Y| / min(|X|, |Y|)` for two sets given as ascending position lists.
//! Returns 0 when either set is empty. O(|X| + |Y|).
inline double overlap_coefficient(std::span<const index_t> x, std::span<const index_t> y) noexcept {
    const std::size_t smaller = std::min(x.size(), y.size());
    if (smaller == 0) return 0.0;
    std::size_t common = 0;
    for (std::size_t i = 0, j = 0; i < x.size() && j < y.size();) {
        if (x[i] < y[j]) {
            ++i;
        } else if (y[j] < x[i]) {
            ++j;
        } else {
            ++common, ++i, ++j;
        }
    }
    return static_cast<double>(common) / static_cast<double>(smaller);
}

namespace detail {

//! A float's bits as an unsigned integer in the same order as the float (-0 and +0 equal): the key the
//! radix selection ranks by.
inline std::uint32_t monotonic_bits(float score) noexcept {
    // + 0 makes -0 equal to +0; flipping the sign bit turns the signed order into the unsigned one.
    return static_cast<std::uint32_t>(ordered_bits(score + 0.0f)) ^ 0x80000000u;
}

//! Widest digit of one radix pass (a histogram of 2^11 counters).
inline constexpr int radix_digit_bits = 11;

}  // namespace detail

//! Writes the positions of the `out.size()` highest `scores` into `out`, in ascending position order.
//! Ties go to the lower position, so the result is deterministic. `scratch` must hold `scores.size()`
//! entries (it lets the hot path run without allocating). Requires `out.size() <= scores.size()`.
//! Method: a radix selection of the k-th highest score. The scores' order-preserving bit patterns go to
//! `scratch`; the bits they all share are skipped (attention scores share their sign and most of their
//! exponent), then histograms of at most 11 bits at a time narrow the candidates, kept at the front of
//! `scratch`, to that one value. One pass in position order then writes the positions above it and,
//! lowest positions first, as many equal to it as still fit. O(T), no sorting; 8 KiB of stack.
inline void top_k_positions(std::span<const float> scores, std::span<index_t> out, std::span<index_t> scratch) {
    const auto n = static_cast<index_t>(scores.size());
    const auto k = static_cast<index_t>(out.size());
    detail::require(k <= n, "k", k, "[0, number of scores]");
    detail::require(static_cast<index_t>(scratch.size()) >= n, "scratch.size()", scratch.size(), "[scores.size(), inf)");
    detail::require(n <= index_t{0xffffffff}, "scores.size()", scores.size(), "[0, 2^32 - 1]");
    if (k == 0) return;
    std::uint32_t lowest = 0xffffffffu, highest = 0;
    for (index_t i = 0; i < n; ++i) {
        const std::uint32_t key = detail::monotonic_bits(scores[i]);
        scratch[i] = key;
        lowest = std::min(lowest, key);
        highest = std::max(highest, key);
    }
    int shift = 32 - std::countl_zero(lowest ^ highest);  // the bits below `shift` are still undecided
    std::uint32_t prefix = shift == 32 ? 0 : highest & ~((std::uint32_t{1} << shift) - 1);  // the k-th key's bits so far
    index_t wanted = k;       // how many of the candidates still belong to the top k
    index_t candidates = n;   // keys that share `prefix`: `scratch[0, candidates)`
    std::uint32_t histogram[std::uint32_t{1} << detail::radix_digit_bits];
    while (shift > 0) {
        const int bits = std::min(shift, detail::radix_digit_bits);
        shift -= bits;
        const std::uint32_t mask = (std::uint32_t{1} << bits) - 1;
        std::fill(histogram, histogram + mask + 1, 0u);
        for (index_t i = 0; i < candidates; ++i) ++histogram[(static_cast<std::uint32_t>(scratch[i]) >> shift) & mask];
        std::uint32_t chosen = mask;  // the digit of the k-th highest: count down from the top digit
        for (index_t above = 0;; --chosen) {
            if (above + histogram[chosen] >= wanted) {
                wanted -= above;
                break;
            }
            above += histogram[chosen];
        }
        prefix |= chosen << shift;
        index_t kept = 0;
        for (index_t i = 0; i < candidates; ++i)
            if (((static_cast<std::uint32_t>(scratch[i]) >> shift) & mask) == chosen) scratch[kept++] = scratch[i];
        candidates = kept;
    }
    // `prefix` is now the k-th highest key, and `wanted` of the keys equal to it are in the top k.
    index_t written = 0;
    for (index_t i = 0; i < n && written < k; ++i) {
        const std::uint32_t key = detail::monotonic_bits(scores[i]);
        if (key > prefix) {
            out[written++] = i;
        } else if (key == prefix && wanted > 0) {
            out[written++] = i;
            --wanted;
        }
    }
}

}  // namespace v1
}  // namespace heterocache
