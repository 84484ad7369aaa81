#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <heterocache/attention/decode_attention.hpp>

#include "attention_reference.hpp"

using heterocache::index_t;

namespace {

struct problem {
    index_t rows = 4, group = 3, d = 64, slots = 300;
    std::vector<float> keys, values, queries;
    std::vector<index_t> indptr, indices;

    explicit problem(std::uint64_t seed) {
        std::mt19937_64 rng(seed);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        keys.resize(static_cast<std::size_t>(slots * d));
        values.resize(keys.size());
        queries.resize(static_cast<std::size_t>(rows * group * d));
        for (auto& x : keys) x = normal(rng);
        for (auto& x : values) x = normal(rng);
        for (auto& x : queries) x = 2.0f * normal(rng);
        std::uniform_int_distribution<index_t> slot(0, slots - 1), length(0, 120);
        indptr.push_back(0);
        for (index_t r = 0; r < rows; ++r) {
            const index_t n = r == 2 ? 0 : length(rng);  // row 2 attends nothing
            for (index_t i = 0; i < n; ++i) indices.push_back(slot(rng));
            indptr.push_back(static_cast<index_t>(indices.size()));
        }
    }
    [[nodiscard]] heterocache::csr_selection selection() const {
        return {rows, rows, group, d, indptr, indices, keys.data(), values.data(), {}};
    }
};

}  // namespace

TEST_CASE("decode attention over a CSR selection matches a float64 reference within 1e-5") {
    const problem p(7);
    const auto s = p.selection();
    std::vector<float> out(p.queries.size()), lse(static_cast<std::size_t>(p.rows * p.group));
    heterocache::decode_attention(s, p.queries.data(), out.data(), lse.data(), 1.0f / std::sqrt(static_cast<float>(p.d)));
    std::vector<double> ref_out, ref_lse;
    testing_support::reference_attention(s, p.queries.data(), 1.0 / std::sqrt(static_cast<double>(p.d)), ref_out, ref_lse);
    for (index_t qh = 0; qh < p.rows * p.group; ++qh) {
        if (std::isinf(ref_lse[qh])) {
            CHECK(std::isinf(lse[qh]));
            CHECK(lse[qh] < 0.0f);
            continue;
        }
        CHECK(std::abs(lse[qh] - ref_lse[qh]) <= 1e-5 * std::max(1.0, std::abs(ref_lse[qh])));
        double err = 0.0, norm = 0.0;
        for (index_t c = 0; c < p.d; ++c) {
            err = std::max(err, std::abs(out[qh * p.d + c] - ref_out[qh * p.d + c]));
            norm = std::max(norm, std::abs(ref_out[qh * p.d + c]));
        }
        CHECK(err <= 1e-5 * norm);
    }
}

TEST_CASE("merging the states of two halves of a selection gives the state of the whole") {
    const problem p(11);
    const auto whole = p.selection();
    // Split every row's tokens into a first half and a second half: two CSR selections.
    std::vector<index_t> ptr_a{0}, ptr_b{0}, idx_a, idx_b;
    for (index_t row = 0; row < p.rows; ++row) {
        const index_t begin = p.indptr[row], end = p.indptr[row + 1], mid = begin + (end - begin) / 2;
        idx_a.insert(idx_a.end(), p.indices.begin() + begin, p.indices.begin() + mid);
        idx_b.insert(idx_b.end(), p.indices.begin() + mid, p.indices.begin() + end);
        ptr_a.push_back(static_cast<index_t>(idx_a.size()));
        ptr_b.push_back(static_cast<index_t>(idx_b.size()));
    }
    const heterocache::csr_selection a{p.rows, p.rows, p.group, p.d, ptr_a, idx_a, p.keys.data(), p.values.data(), {}};
    const heterocache::csr_selection b{p.rows, p.rows, p.group, p.d, ptr_b, idx_b, p.keys.data(), p.values.data(), {}};
    const std::size_t heads = static_cast<std::size_t>(p.rows * p.group);
    std::vector<float> out_w(p.queries.size()), out_a(out_w.size()), out_b(out_w.size()), lse_w(heads), lse_a(heads), lse_b(heads);
    const float scale = 0.125f;
    heterocache::decode_attention(whole, p.queries.data(), out_w.data(), lse_w.data(), scale);
    heterocache::decode_attention(a, p.queries.data(), out_a.data(), lse_a.data(), scale);
    heterocache::decode_attention(b, p.queries.data(), out_b.data(), lse_b.data(), scale);
    for (std::size_t qh = 0; qh < heads; ++qh) {
        std::vector<float> merged(static_cast<std::size_t>(p.d));
        float lse = 0.0f;
        heterocache::merge_attention_states(&out_a[qh * p.d], lse_a[qh], &out_b[qh * p.d], lse_b[qh], p.d, merged.data(), lse);
        if (std::isinf(lse_w[qh])) {
            CHECK(std::isinf(lse));
            continue;
        }
        CHECK(lse == doctest::Approx(lse_w[qh]).epsilon(1e-6));
        for (index_t c = 0; c < p.d; ++c) CHECK(merged[c] == doctest::Approx(out_w[qh * p.d + c]).epsilon(1e-5));
    }
}

TEST_CASE("decode attention rejects head dimensions the host kernel cannot hold") {
    const problem p(3);
    auto s = p.selection();
    s.head_dim = 512;
    std::vector<float> out(1), lse(1);
    CHECK_THROWS_WITH_AS(heterocache::decode_attention(s, p.queries.data(), out.data(), lse.data(), 1.0f),
                         doctest::Contains("head_dim"), heterocache::shape_error);
}
