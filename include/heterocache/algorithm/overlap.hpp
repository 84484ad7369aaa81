#pragma once
//! \file
//! Top-k position sets and the overlap coefficient (DESIGN.md section 2, "Overlap coefficient").

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstddef>
#include <span>
#include <utility>

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

//! A candidate of the radix selection: its key in the high 32 bits, its position in the low 32.
inline index_t pack_candidate(std::uint32_t key, index_t position) noexcept {
    return static_cast<index_t>((static_cast<std::uint64_t>(key) << 32) | static_cast<std::uint64_t>(position));
}
inline std::uint32_t candidate_key(index_t c) noexcept { return static_cast<std::uint32_t>(static_cast<std::uint64_t>(c) >> 32); }
inline index_t candidate_position(index_t c) noexcept { return static_cast<index_t>(static_cast<std::uint32_t>(c)); }

}  // namespace detail

//! Writes the positions of the `out.size()` highest `scores` into `out`, in ascending position order.
//! Ties go to the lower position, so the result is deterministic. `scratch` must hold `scores.size()`
//! entries (it lets the hot path run without allocating). Requires `out.size() <= scores.size()`.
//! Method: a radix selection of the k-th highest score. The scores' order-preserving bit patterns go to
//! `scratch`; the bits they all share are skipped (attention scores share their sign and most of their
//! exponent), and a histogram of the next (at most 11) bits gives the digit of the k-th highest. One pass
//! in position order then writes the positions whose digit is above it to `out` and keeps those equal to
//! it as candidates (key and position, at the front of `scratch`). Histograms of the candidates' next bits
//! narrow them to the k-th key; the candidates above it and, lowest positions first, as many equal to it as
//! still fit are merged into `out` by position. O(T), no sorting; 8 KiB of stack.
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
    index_t wanted = k;  // how many keys with the k-th key's bits so far belong to the top k
    std::uint32_t histogram[std::uint32_t{1} << detail::radix_digit_bits];
    // Fixes the next digit (at most 11 bits below `shift`) of the k-th highest of the `count` keys `key(i)`
    // that carry `prefix` above `shift`.
    const auto next_digit = [&](index_t count, auto key) {
        const int bits = std::min(shift, detail::radix_digit_bits);
        const std::uint32_t high = shift == 32 ? 0 : ~((std::uint32_t{1} << shift) - 1);
        shift -= bits;
        const std::uint32_t mask = (std::uint32_t{1} << bits) - 1;
        std::fill(histogram, histogram + mask + 1, 0u);
        for (index_t i = 0; i < count; ++i) {
            const std::uint32_t k_i = key(i);
            histogram[(k_i >> shift) & mask] += (k_i & high) == prefix ? 1u : 0u;
        }
        std::uint32_t chosen = mask;  // count down from the top digit
        for (index_t above = 0;; --chosen) {
            if (above + histogram[chosen] >= wanted) {
                wanted -= above;
                break;
            }
            above += histogram[chosen];
        }
        prefix |= chosen << shift;
        return std::pair{chosen, mask};
    };
    // The split: positions above the k-th key's first digit are in the top k, those equal to it candidates.
    index_t written = 0, candidates = 0;
    if (shift == 0) {  // all keys equal: every position is a candidate
        for (index_t i = 0; i < n; ++i) scratch[i] = detail::pack_candidate(highest, i);
        candidates = n;
    } else {
        const auto [chosen, mask] = next_digit(n, [&](index_t i) { return static_cast<std::uint32_t>(scratch[i]); });
        for (index_t i = 0; i < n; ++i) {
            const auto key = static_cast<std::uint32_t>(scratch[i]);
            const std::uint32_t digit = (key >> shift) & mask;
            if (digit > chosen) out[written++] = i;
            if (digit == chosen) scratch[candidates++] = detail::pack_candidate(key, i);  // candidates <= i
        }
    }
    while (shift > 0) (void)next_digit(candidates, [&](index_t i) { return detail::candidate_key(scratch[i]); });
    // `prefix` is now the k-th highest key and `wanted` of the candidates equal to it are in the top k.
    index_t chosen = 0;  // the candidates in the top k, in position order, to the front of `scratch`
    for (index_t i = 0; i < candidates; ++i) {
        const std::uint32_t key = detail::candidate_key(scratch[i]);
        const bool in = key > prefix || (key == prefix && wanted > 0);
        wanted -= key == prefix && wanted > 0 ? 1 : 0;
        if (in) scratch[chosen++] = detail::candidate_position(scratch[i]);
    }
    // Merge, from the back: `out[0, written)` and `scratch[0, chosen)` are ascending and disjoint.
    for (index_t to = written + chosen - 1, a = written - 1, b = chosen - 1; b >= 0; --to)
        out[to] = a >= 0 && out[a] > scratch[b] ? out[a--] : scratch[b--];
}

}  // namespace v1
}  // namespace heterocache
