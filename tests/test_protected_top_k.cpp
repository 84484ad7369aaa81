#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include <heterocache/algorithm/protected_top_k.hpp>
#include <heterocache/errors.hpp>

namespace hc = heterocache;
using hc::index_t;

namespace {

//! The reference: the sinks, then the newest recent positions that fit, then the highest scores of the rest
//! by a stable sort (ties to the lower position), all in ascending order.
std::vector<index_t> reference(const std::vector<float>& scores, index_t k, index_t sink, index_t recent) {
    const auto n = static_cast<index_t>(scores.size());
    std::vector<index_t> kept;
    for (index_t i = 0; i < std::min({sink, k, n}); ++i) kept.push_back(i);
    const auto sinks = static_cast<index_t>(kept.size());
    for (index_t i = 0; i < recent && static_cast<index_t>(kept.size()) < k && n - 1 - i >= sinks; ++i) kept.push_back(n - 1 - i);
    const index_t middle_end = n - (static_cast<index_t>(kept.size()) - sinks);
    std::vector<index_t> middle(static_cast<std::size_t>(std::max<index_t>(0, middle_end - sinks)));
    std::iota(middle.begin(), middle.end(), sinks);
    std::stable_sort(middle.begin(), middle.end(), [&](index_t a, index_t b) { return scores[a] > scores[b]; });
    for (index_t i = 0; static_cast<index_t>(kept.size()) < k; ++i) kept.push_back(middle[i]);
    std::sort(kept.begin(), kept.end());
    return kept;
}

}  // namespace

TEST_CASE("protected top-k keeps the sinks and the recent window, then the best scores between") {
    std::mt19937 rng(7);
    std::uniform_int_distribution<int> digit(0, 9);  // many ties
    for (index_t n : {1, 2, 5, 16, 40, 129}) {
        std::vector<float> scores(static_cast<std::size_t>(n));
        for (auto& x : scores) x = static_cast<float>(digit(rng)) * 0.125f;
        std::vector<index_t> scratch(scores.size());
        for (index_t k = 0; k <= n; k += std::max<index_t>(1, n / 7))
            for (index_t sink : {0, 1, 4, 50})
                for (index_t recent : {0, 1, 3, 32, 200}) {
                    CAPTURE(n);
                    CAPTURE(k);
                    CAPTURE(sink);
                    CAPTURE(recent);
                    std::vector<index_t> out(static_cast<std::size_t>(k));
                    hc::protected_top_k_positions(scores, out, scratch, {sink, recent});
                    CHECK(out == reference(scores, k, sink, recent));
                }
    }
}

TEST_CASE("protected top-k without protected ends is top_k_positions; bad arguments are named") {
    const std::vector<float> scores{0.5f, 2.0f, 1.0f, 2.0f, 0.0f};
    std::vector<index_t> scratch(scores.size()), a(3), b(3);
    hc::protected_top_k_positions(scores, a, scratch, {});
    hc::top_k_positions(scores, b, scratch);
    CHECK(a == b);
    std::vector<index_t> too_many(6);
    CHECK_THROWS_AS(hc::protected_top_k_positions(scores, too_many, scratch, {}), hc::invalid_argument_error);
    CHECK_THROWS_AS(hc::protected_top_k_positions(scores, a, scratch, {-1, 0}), hc::invalid_argument_error);
}
