#pragma once
//! \file
//! The median used for stability and similarity (DESIGN.md section 2, "Profiling").

#include <algorithm>
#include <span>

namespace heterocache {
inline namespace v1 {

//! Median of `values` (mean of the two middle values for an even count; 0 for none).
//! Reorders `values` in place. O(n) expected.
inline double median_in_place(std::span<double> values) noexcept {
    if (values.empty()) return 0.0;
    const auto mid = values.begin() + static_cast<std::ptrdiff_t>(values.size() / 2);
    std::nth_element(values.begin(), mid, values.end());
    const double upper = *mid;
    if (values.size() % 2 == 1) return upper;
    const double lower = *std::max_element(values.begin(), mid);
    return 0.5 * (lower + upper);
}

}  // namespace v1
}  // namespace heterocache
