#pragma once
// Test support: paged selections built by hand (FlashInfer's layout: rows of pages of a pool), and float64
// two-pass softmax attention over a paged selection, the reference the host kernels are held to.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include <heterocache/attention/paged_selection.hpp>
#include <heterocache/tensor/element.hpp>

namespace testing_support {

using heterocache::index_t;
using heterocache::page_index_t;

//! K/V laid out by hand in a pool of pages `[page][page_size][head_dim]`: row `r` holds the source tokens
//! `row_tokens[r]` (indices into source K/V `[token][head_dim]`; a token may appear in several rows, or twice
//! in one), in that order, on pages handed out in a shuffled order from a pool that also holds
//! `spare_pages` pages no row uses. A row without tokens has no pages (an empty row); a row whose length is
//! not a multiple of `page_size` ends on a partial page. Every slot no row holds (the rest of a partial last
//! page, the spare pages) is NaN, so a kernel that read one would give NaN.
template <heterocache::KvElement E = float>
struct paged_kv {
    index_t rows = 0, head_dim = 0, page_size = 1, pool_pages = 0;
    std::vector<page_index_t> indptr{0}, indices, last_page_len;
    std::vector<E> keys, values;

    paged_kv() = default;
    paged_kv(const std::vector<std::vector<index_t>>& row_tokens, const float* source_keys, const float* source_values,
             index_t d, index_t page_size_, std::uint64_t seed, index_t spare_pages = 2)
        : rows(static_cast<index_t>(row_tokens.size())), head_dim(d), page_size(page_size_) {
        index_t pages = spare_pages;
        for (const auto& tokens : row_tokens) pages += pages_for(static_cast<index_t>(tokens.size()));
        pool_pages = pages;
        std::vector<page_index_t> order(static_cast<std::size_t>(pages));
        std::iota(order.begin(), order.end(), page_index_t{0});
        std::mt19937_64 rng(seed);
        std::shuffle(order.begin(), order.end(), rng);
        const E nan = heterocache::from_float<E>(std::numeric_limits<float>::quiet_NaN());
        keys.assign(static_cast<std::size_t>(pages * page_size * d), nan);
        values.assign(keys.size(), nan);
        std::size_t next = 0;
        for (const auto& tokens : row_tokens) {
            const auto n = static_cast<index_t>(tokens.size());
            for (index_t p = 0; p < pages_for(n); ++p) indices.push_back(order[next++]);
            indptr.push_back(static_cast<page_index_t>(indices.size()));
            last_page_len.push_back(static_cast<page_index_t>(n == 0 ? 0 : n - (pages_for(n) - 1) * page_size));
            const index_t r = static_cast<index_t>(indptr.size()) - 2;
            for (index_t k = 0; k < n; ++k) {
                const index_t source = tokens[static_cast<std::size_t>(k)];
                heterocache::convert_elements(source_keys + source * d, keys.data() + slot(r, k) * d, d);
                heterocache::convert_elements(source_values + source * d, values.data() + slot(r, k) * d, d);
            }
        }
    }

    [[nodiscard]] index_t pages_for(index_t tokens) const { return (tokens + page_size - 1) / page_size; }
    //! Pool slot of token `k` of row `r` (what `basic_paged_selection::slot` computes).
    [[nodiscard]] index_t slot(index_t r, index_t k) const {
        return static_cast<index_t>(indices[static_cast<std::size_t>(indptr[static_cast<std::size_t>(r)] + k / page_size)]) *
                   page_size + k % page_size;
    }
    //! The selection of these rows (one sequence of `rows` KV heads), G = `group`.
    [[nodiscard]] heterocache::basic_paged_selection<E> selection(index_t group,
                                                                  std::span<const heterocache::score_capture> captures = {}) const {
        return {rows,           rows,           group,       head_dim,      page_size, indptr.data(),
                indices.data(), last_page_len.data(), keys.data(), values.data(), captures};
    }
    //! The same pages and slots with every element widened to float (exactly).
    [[nodiscard]] paged_kv<float> widened() const {
        paged_kv<float> w;
        w.rows = rows, w.head_dim = head_dim, w.page_size = page_size, w.pool_pages = pool_pages;
        w.indptr = indptr, w.indices = indices, w.last_page_len = last_page_len;
        w.keys.resize(keys.size());
        w.values.resize(values.size());
        heterocache::to_floats(keys.data(), w.keys.data(), static_cast<index_t>(keys.size()));
        heterocache::to_floats(values.data(), w.values.data(), static_cast<index_t>(values.size()));
        return w;
    }
};

//! Rows of `lengths[r]` consecutive source tokens each, the rows one after the other (no token shared).
inline std::vector<std::vector<index_t>> consecutive_rows(const std::vector<index_t>& lengths) {
    std::vector<std::vector<index_t>> rows;
    index_t next = 0;
    for (const index_t n : lengths) {
        rows.emplace_back(static_cast<std::size_t>(n));
        std::iota(rows.back().begin(), rows.back().end(), next);
        next += n;
    }
    return rows;
}

//! Rows of `lengths[r]` source tokens drawn at random from `[0, source_tokens)` (repeats within and across rows).
inline std::vector<std::vector<index_t>> random_rows(const std::vector<index_t>& lengths, index_t source_tokens,
                                                     std::mt19937_64& rng) {
    std::uniform_int_distribution<index_t> token(0, source_tokens - 1);
    std::vector<std::vector<index_t>> rows;
    for (const index_t n : lengths) {
        rows.emplace_back();
        for (index_t i = 0; i < n; ++i) rows.back().push_back(token(rng));
    }
    return rows;
}

//! `out` `[query_head][d]` and `lse` `[query_head]` of every query head of `s` (rows * group_size heads),
//! queries `[query_head][d]`, scores scaled by `scale`, in float64 with a two-pass softmax. Token `k` of row
//! `r` is read at pool slot `s.slot(r, k)` (16-bit elements widened exactly). A row with no token leaves 0
//! and -inf.
template <heterocache::KvElement E>
void reference_attention(const heterocache::basic_paged_selection<E>& s, const float* queries, double scale,
                         std::vector<double>& out, std::vector<double>& lse) {
    const index_t d = s.head_dim, heads = s.rows * s.group_size;
    out.assign(static_cast<std::size_t>(heads * d), 0.0);
    lse.assign(static_cast<std::size_t>(heads), -std::numeric_limits<double>::infinity());
    std::vector<double> scores;
    const auto element = [](const E* base, index_t slot, index_t head_dim, index_t c) {
        return static_cast<double>(heterocache::to_float(base[slot * head_dim + c]));
    };
    for (index_t row = 0; row < s.rows; ++row)
        for (index_t g = 0; g < s.group_size; ++g) {
            const index_t qh = row * s.group_size + g;
            scores.clear();
            for (index_t k = 0; k < s.row_length(row); ++k) {
                double dot = 0.0;
                for (index_t c = 0; c < d; ++c)
                    dot += static_cast<double>(queries[qh * d + c]) * element(s.keys, s.slot(row, k), d, c);
                scores.push_back(dot * scale);
            }
            if (scores.empty()) continue;
            const double top = *std::max_element(scores.begin(), scores.end());
            double sum = 0.0;
            for (double x : scores) sum += std::exp(x - top);
            lse[static_cast<std::size_t>(qh)] = top + std::log(sum);
            for (std::size_t j = 0; j < scores.size(); ++j) {
                const double w = std::exp(scores[j] - top) / sum;
                const index_t slot = s.slot(row, static_cast<index_t>(j));
                for (index_t c = 0; c < d; ++c) out[static_cast<std::size_t>(qh * d + c)] += w * element(s.values, slot, d, c);
            }
        }
}

//! Whether two float vectors hold the same bits (the kernels promise bit-identical results).
inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

}  // namespace testing_support
