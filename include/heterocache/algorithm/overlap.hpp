#pragma once
//! \file
//! Top-k position sets and the overlap coefficient (DESIGN.md section 2, "Overlap coefficient").

#include <algorithm>
#include <bit>
#include <cstdint>
#include <functional>
#include <cstddef>
#include <span>

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

//! Writes the positions of the `out.size()` highest `scores` into `out`, in ascending position order.
//! Ties go to the lower position, so the result is deterministic. `scratch` must hold `scores.size()`
//! entries (it lets the hot path run without allocating). Requires `out.size() <= scores.size()`.
//! O(T + k log k) expected.
inline void top_k_positions(std::span<const float> scores, std::span<index_t> out, std::span<index_t> scratch) {
    const auto n = static_cast<index_t>(scores.size());
    const auto k = static_cast<index_t>(out.size());
    detail::require(k <= n, "k", k, "[0, number of scores]");
    detail::require(static_cast<index_t>(scratch.size()) >= n, "scratch.size()", scratch.size(), "[scores.size(), inf)");
    detail::require(n <= index_t{0xffffffff}, "scores.size()", scores.size(), "[0, 2^32 - 1]");
    if (k == 0) return;
    // Each entry packs (score, position) into one integer whose order is the ranking: the score's bits made
    // monotonic in the high half, the position reversed in the low half (ties to the lower position). The
    // selection then compares plain integers instead of chasing indices into `scores`.
    constexpr std::uint32_t sign = 0x80000000u;
    for (index_t i = 0; i < n; ++i) {
        const auto bits = std::bit_cast<std::uint32_t>(scores[i] + 0.0f);  // + 0 makes -0 equal to +0
        const std::uint32_t monotonic = (bits & sign) != 0 ? ~bits : bits | sign;
        const std::uint64_t key = (std::uint64_t{monotonic} << 32) | (0xffffffffu - static_cast<std::uint32_t>(i));
        scratch[i] = std::bit_cast<index_t>(key ^ (std::uint64_t{1} << 63));  // signed order = unsigned order
    }
    std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.begin() + n, std::greater<>());
    for (index_t j = 0; j < k; ++j)
        out[j] = 0xffffffffu - static_cast<std::uint32_t>(std::bit_cast<std::uint64_t>(scratch[j]) & 0xffffffffu);
    std::sort(out.begin(), out.end());
}

}  // namespace v1
}  // namespace heterocache
