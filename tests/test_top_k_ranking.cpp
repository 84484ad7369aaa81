#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <heterocache/algorithm/overlap.hpp>

using heterocache::index_t;

TEST_CASE("top-k positions equal a full sort by score, ties to the lower position, signs and zeros included") {
    std::mt19937_64 rng(17);
    std::uniform_int_distribution<int> level(-6, 6);  // few distinct values: many ties
    for (const index_t n : {1, 2, 10, 1000, 4099}) {
        std::vector<float> scores(static_cast<std::size_t>(n));
        for (auto& s : scores) {
            const int v = level(rng);
            s = v == 0 ? (rng() % 2 ? 0.0f : -0.0f) : static_cast<float>(v) * 0.25f;
        }
        std::vector<index_t> order(scores.size());
        for (index_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
        std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return scores[a] > scores[b]; });
        std::vector<index_t> scratch(scores.size());
        for (const index_t k : {index_t{0}, index_t{1}, n / 3, n}) {
            std::vector<index_t> expected(order.begin(), order.begin() + k), out(static_cast<std::size_t>(k));
            std::sort(expected.begin(), expected.end());
            heterocache::top_k_positions(scores, out, scratch);
            CHECK(out == expected);
        }
    }
}

TEST_CASE("top-k positions match a full sort on distinct, nearly equal and infinite scores") {
    std::mt19937_64 rng(29);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    for (const index_t n : {7, 2048, 70001}) {
        std::vector<float> scores(static_cast<std::size_t>(n));
        for (auto& s : scores) s = normal(rng);
        // Scores one ulp apart (they differ only in the last radix digit) and a few infinities.
        for (index_t i = 0; i + 1 < n; i += 97) scores[static_cast<std::size_t>(i + 1)] = std::nextafter(scores[static_cast<std::size_t>(i)], 1e9f);
        scores[0] = std::numeric_limits<float>::infinity();
        scores[static_cast<std::size_t>(n - 1)] = -std::numeric_limits<float>::infinity();
        std::vector<index_t> order(scores.size());
        for (index_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
        std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return scores[a] > scores[b]; });
        std::vector<index_t> scratch(scores.size());
        for (const index_t k : {index_t{1}, index_t{2}, n / 10, n / 2, n - 1, n}) {
            std::vector<index_t> expected(order.begin(), order.begin() + k), out(static_cast<std::size_t>(k));
            std::sort(expected.begin(), expected.end());
            heterocache::top_k_positions(scores, out, scratch);
            CHECK(out == expected);
        }
    }
}

namespace {

//! `top_k_positions` against the stable sort, for every `k` given.
void check_against_sort(const std::vector<float>& scores, std::initializer_list<index_t> ks) {
    const auto n = static_cast<index_t>(scores.size());
    std::vector<index_t> order(scores.size());
    for (index_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
    std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return scores[a] > scores[b]; });
    std::vector<index_t> scratch(scores.size());
    for (const index_t k : ks) {
        CAPTURE(n);
        CAPTURE(k);
        std::vector<index_t> expected(order.begin(), order.begin() + k), out(static_cast<std::size_t>(k));
        std::sort(expected.begin(), expected.end());
        heterocache::top_k_positions(scores, out, scratch);
        CHECK(out == expected);
    }
}

}  // namespace

TEST_CASE("top-k positions when every score is equal: the first k positions") {
    for (const index_t n : {1, 5, 1000}) check_against_sort(std::vector<float>(static_cast<std::size_t>(n), 0.125f), {1, n / 2, n});
}

TEST_CASE("top-k positions of a pooled attention row: a narrow band, ties at the k-th score across digits") {
    // Probabilities near 1/T that differ in their low mantissa bits only, quantized so that many are equal:
    // the k-th key is found after several digits among the candidates of the first one.
    std::mt19937_64 rng(31);
    std::uniform_int_distribution<int> step(0, 5000);
    for (const index_t n : {3000, 50000}) {
        std::vector<float> scores(static_cast<std::size_t>(n));
        for (auto& s : scores) s = (1.0f + static_cast<float>(step(rng)) * 1e-6f) / static_cast<float>(n);
        check_against_sort(scores, {1, 2, n / 10, n / 4, n / 2, n - 1});
    }
}
