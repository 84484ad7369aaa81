// carry_scores_forward against its definition: out[p] = max over q <= p of decay^(p - q) * scores[q].
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include <heterocache/algorithm/span_carry.hpp>
#include <heterocache/errors.hpp>

namespace hc = heterocache;

namespace {

std::vector<float> reference(const std::vector<float>& scores, float decay) {
    std::vector<float> out(scores.size(), 0.0f);
    for (std::size_t p = 0; p < scores.size(); ++p)
        for (std::size_t q = 0; q <= p; ++q)
            out[p] = std::max(out[p], std::pow(decay, static_cast<float>(p - q)) * scores[q]);
    return out;
}

}  // namespace

TEST_CASE("carry_scores_forward is the largest decayed score at or before each position") {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (const float decay : {0.0f, 0.5f, 0.9f, 0.99f}) {
        CAPTURE(decay);
        std::vector<float> scores(300);
        for (float& s : scores) s = u(rng) < 0.05f ? u(rng) : 1e-4f * u(rng);  // a few peaks over a floor
        std::vector<float> out(scores.size(), -1.0f);
        hc::carry_scores_forward(scores, out, decay);
        const std::vector<float> want = reference(scores, decay);
        for (std::size_t p = 0; p < scores.size(); ++p) CHECK(out[p] == doctest::Approx(want[p]).epsilon(1e-5));
        std::vector<float> in_place = scores;  // aliasing: the same result
        hc::carry_scores_forward(in_place, in_place, decay);
        CHECK(in_place == out);
    }
}

TEST_CASE("carry_scores_forward names a bad decay and a size mismatch") {
    std::vector<float> s(4, 1.0f), out(4), short_out(3);
    CHECK_THROWS_WITH_AS(hc::carry_scores_forward(s, out, 1.0f), doctest::Contains("decay"), hc::invalid_argument_error);
    CHECK_THROWS_WITH_AS(hc::carry_scores_forward(s, out, -0.1f), doctest::Contains("decay"), hc::invalid_argument_error);
    CHECK_THROWS_AS(hc::carry_scores_forward(s, short_out, 0.5f), hc::shape_error);
}
