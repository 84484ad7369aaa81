#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include <heterocache/algorithm/median.hpp>
#include <heterocache/algorithm/overlap.hpp>

using heterocache::index_t;

TEST_CASE("the overlap coefficient is the intersection over the smaller set") {
    const std::vector<index_t> x{1, 3, 5, 7}, y{3, 4, 5}, z{2, 4};
    CHECK(heterocache::overlap_coefficient(x, y) == doctest::Approx(2.0 / 3.0));
    CHECK(heterocache::overlap_coefficient(y, x) == doctest::Approx(2.0 / 3.0));
    CHECK(heterocache::overlap_coefficient(x, z) == 0.0);
    CHECK(heterocache::overlap_coefficient(y, z) == doctest::Approx(0.5));
    CHECK(heterocache::overlap_coefficient(x, x) == 1.0);
    CHECK(heterocache::overlap_coefficient(x, {}) == 0.0);
}

TEST_CASE("top-k positions are the highest scores in position order, ties to the lower position") {
    const std::vector<float> scores{0.1f, 0.9f, 0.3f, 0.9f, 0.5f, 0.0f};
    std::vector<index_t> out(3), scratch(scores.size());
    heterocache::top_k_positions(scores, out, scratch);
    CHECK(out == std::vector<index_t>{1, 3, 4});
    out.resize(1);
    heterocache::top_k_positions(scores, out, scratch);
    CHECK(out == std::vector<index_t>{1});  // 1 and 3 tie at 0.9: the lower position wins
    out.resize(7);
    CHECK_THROWS_AS(heterocache::top_k_positions(scores, out, scratch), heterocache::invalid_argument_error);
}

TEST_CASE("the median of odd and even counts") {
    std::vector<double> odd{0.9, 0.1, 0.5}, even{0.4, 0.1, 0.8, 0.2};
    CHECK(heterocache::median_in_place(odd) == 0.5);
    CHECK(heterocache::median_in_place(even) == doctest::Approx(0.3));
    CHECK(heterocache::median_in_place({}) == 0.0);
}
