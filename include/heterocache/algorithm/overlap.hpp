#pragma once
//! \file
//! Top-k position sets and the overlap coefficient (DESIGN.md section 2, "Overlap coefficient").

#include <algorithm>
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
    if (k == 0) return;
    for (index_t i = 0; i < n; ++i) scratch[i] = i;
    const auto higher = [&](index_t a, index_t b) { return scores[a] > scores[b] || (scores[a] == scores[b] && a < b); };
    std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.begin() + n, higher);
    std::copy(scratch.begin(), scratch.begin() + k, out.begin());
    std::sort(out.begin(), out.end());
}

}  // namespace v1
}  // namespace heterocache
