#pragma once
// Test support: float64 two-pass softmax attention over a CSR selection, the reference the host kernels
// are held to.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <heterocache/attention/csr_selection.hpp>

namespace testing_support {

//! `out` `[query_head][d]` and `lse` `[query_head]` of every query head of `s` (rows * group_size heads),
//! queries `[query_head][d]`, scores scaled by `scale`. A row with no token leaves 0 and -inf.
inline void reference_attention(const heterocache::csr_selection& s, const float* queries, double scale,
                                std::vector<double>& out, std::vector<double>& lse) {
    using heterocache::index_t;
    const index_t d = s.head_dim, heads = s.rows * s.group_size;
    out.assign(static_cast<std::size_t>(heads * d), 0.0);
    lse.assign(static_cast<std::size_t>(heads), -std::numeric_limits<double>::infinity());
    std::vector<double> scores;
    for (index_t row = 0; row < s.rows; ++row)
        for (index_t g = 0; g < s.group_size; ++g) {
            const index_t qh = row * s.group_size + g;
            scores.clear();
            for (index_t i = s.indptr[row]; i < s.indptr[row + 1]; ++i) {
                double dot = 0.0;
                for (index_t c = 0; c < d; ++c) dot += static_cast<double>(queries[qh * d + c]) * s.keys[s.indices[i] * d + c];
                scores.push_back(dot * scale);
            }
            if (scores.empty()) continue;
            const double top = *std::max_element(scores.begin(), scores.end());
            double sum = 0.0;
            for (double x : scores) sum += std::exp(x - top);
            lse[static_cast<std::size_t>(qh)] = top + std::log(sum);
            for (std::size_t j = 0; j < scores.size(); ++j) {
                const double w = std::exp(scores[j] - top) / sum;
                const index_t slot = s.indices[s.indptr[row] + static_cast<index_t>(j)];
                for (index_t c = 0; c < d; ++c) out[static_cast<std::size_t>(qh * d + c)] += w * s.values[slot * d + c];
            }
        }
}

//! Whether two float vectors hold the same bits (the kernels promise bit-identical results).
inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

}  // namespace testing_support
