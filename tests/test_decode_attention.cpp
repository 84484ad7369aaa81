// Decode attention over a paged selection (attention/decode_attention.hpp) against a float64 reference, the
// exact merge of partial states, the independence of the result from the page layout, and bad shapes.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <heterocache/attention/decode_attention.hpp>

#include "attention_reference.hpp"

using heterocache::index_t;
using testing_support::paged_kv;
using testing_support::same_bits;

namespace {

//! Four rows (G = 3, d = 64) of random lengths in [0, 120] (row 2 empty) over 300 random source tokens (a
//! token may repeat), laid out on pages of `page_size` tokens of a shuffled pool.
struct problem {
    index_t rows = 4, group = 3, d = 64, source_tokens = 300;
    std::vector<float> keys, values, queries;
    std::vector<std::vector<index_t>> row_tokens;

    explicit problem(std::uint64_t seed) {
        std::mt19937_64 rng(seed);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        keys.resize(static_cast<std::size_t>(source_tokens * d));
        values.resize(keys.size());
        queries.resize(static_cast<std::size_t>(rows * group * d));
        for (auto& x : keys) x = normal(rng);
        for (auto& x : values) x = normal(rng);
        for (auto& x : queries) x = 2.0f * normal(rng);
        std::uniform_int_distribution<index_t> length(0, 120);
        std::vector<index_t> lengths;
        for (index_t r = 0; r < rows; ++r) lengths.push_back(r == 2 ? 0 : length(rng));  // row 2 attends nothing
        row_tokens = testing_support::random_rows(lengths, source_tokens, rng);
    }
    [[nodiscard]] paged_kv<> paged(index_t page_size, std::uint64_t seed = 1) const {
        return paged_kv<>(row_tokens, keys.data(), values.data(), d, page_size, seed);
    }
    [[nodiscard]] std::size_t heads() const { return static_cast<std::size_t>(rows * group); }
};

}  // namespace

TEST_CASE("decode attention over a paged selection matches a float64 reference within 1e-5") {
    const problem p(7);
    for (const index_t page_size : {1, 16}) {
        CAPTURE(page_size);
        const paged_kv<> kv = p.paged(page_size);
        const auto s = kv.selection(p.group);
        REQUIRE(s.row_length(2) == 0);
        REQUIRE(s.row_pages(2) == 0);
        std::vector<float> out(p.queries.size()), lse(p.heads());
        heterocache::decode_attention(s, p.queries.data(), out.data(), lse.data(), 1.0f / std::sqrt(static_cast<float>(p.d)));
        std::vector<double> ref_out, ref_lse;
        testing_support::reference_attention(s, p.queries.data(), 1.0 / std::sqrt(static_cast<double>(p.d)), ref_out, ref_lse);
        for (index_t qh = 0; qh < p.rows * p.group; ++qh) {
            CAPTURE(qh);
            if (std::isinf(ref_lse[qh])) {  // the empty row: output 0, lse -inf
                CHECK(lse[qh] == -std::numeric_limits<float>::infinity());
                for (index_t c = 0; c < p.d; ++c) CHECK(out[qh * p.d + c] == 0.0f);
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
}

TEST_CASE("decode attention depends on the tokens a row lists only, not on the page size or the pool") {
    // The same rows on pages of 1, 16 and 7 tokens (partial last pages), each pool shuffled differently.
    const problem p(13);
    const float scale = 0.125f;
    std::vector<float> first_out, first_lse;
    for (const index_t page_size : {1, 16, 7}) {
        for (const std::uint64_t pool_seed : {2u, 3u}) {
            CAPTURE(page_size);
            CAPTURE(pool_seed);
            const paged_kv<> kv = p.paged(page_size, pool_seed);
            std::vector<float> out(p.queries.size()), lse(p.heads());
            heterocache::decode_attention(kv.selection(p.group), p.queries.data(), out.data(), lse.data(), scale);
            if (first_out.empty()) {
                first_out = out, first_lse = lse;
                continue;
            }
            CHECK(same_bits(out, first_out));
            CHECK(same_bits(lse, first_lse));
        }
    }
}

TEST_CASE("merging the states of two halves of a selection gives the state of the whole") {
    const problem p(11);
    for (const index_t page_size : {1, 16}) {
        CAPTURE(page_size);
        const paged_kv<> whole_kv = p.paged(page_size);
        // Split every row's tokens into a first half and a second half: two paged selections of their own.
        std::vector<std::vector<index_t>> first, second;
        for (const auto& tokens : p.row_tokens) {
            const auto mid = tokens.begin() + static_cast<std::ptrdiff_t>(tokens.size() / 2);
            first.emplace_back(tokens.begin(), mid);
            second.emplace_back(mid, tokens.end());
        }
        const paged_kv<> kv_a(first, p.keys.data(), p.values.data(), p.d, page_size, 5);
        const paged_kv<> kv_b(second, p.keys.data(), p.values.data(), p.d, page_size, 6);
        const std::size_t heads = p.heads();
        std::vector<float> out_w(p.queries.size()), out_a(out_w.size()), out_b(out_w.size()), lse_w(heads), lse_a(heads),
            lse_b(heads);
        const float scale = 0.125f;
        heterocache::decode_attention(whole_kv.selection(p.group), p.queries.data(), out_w.data(), lse_w.data(), scale);
        heterocache::decode_attention(kv_a.selection(p.group), p.queries.data(), out_a.data(), lse_a.data(), scale);
        heterocache::decode_attention(kv_b.selection(p.group), p.queries.data(), out_b.data(), lse_b.data(), scale);
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
}

TEST_CASE("decode attention rejects head dimensions the host kernel cannot hold, and pages of no token") {
    const problem p(3);
    const paged_kv<> kv = p.paged(16);
    std::vector<float> out(p.queries.size()), lse(p.heads());
    auto s = kv.selection(p.group);
    s.head_dim = 512;
    CHECK_THROWS_WITH_AS(heterocache::decode_attention(s, p.queries.data(), out.data(), lse.data(), 1.0f),
                         doctest::Contains("head_dim"), heterocache::shape_error);
    s = kv.selection(p.group);
    s.page_size = 0;
    CHECK_THROWS_WITH_AS(heterocache::decode_attention(s, p.queries.data(), out.data(), lse.data(), 1.0f),
                         doctest::Contains("page_size"), heterocache::shape_error);
    s = kv.selection(p.group);
    CHECK_NOTHROW(heterocache::decode_attention(s, p.queries.data(), out.data(), lse.data(), 1.0f));
}
