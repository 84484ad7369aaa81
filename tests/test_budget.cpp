#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <heterocache/budget/drift_weighted_budget.hpp>
#include <heterocache/budget/uniform_budget.hpp>

using heterocache::head_role;
using heterocache::index_t;

namespace {
heterocache::head_profile make_profile(std::vector<heterocache::head_info> heads) {
    const auto n = static_cast<index_t>(heads.size());
    return {1, n, 0.5, 0.5, 8, std::move(heads)};
}
}  // namespace

TEST_CASE("drift-weighted budget matches the formula by hand") {
    // N = 4: one volatile (full), three compressed with S = 0.99, 0.49, 0.24; eps = 0.01.
    const auto profile = make_profile({{head_role::volatile_, 0.1, -1},
                                       {head_role::anchor, 0.99, -1},
                                       {head_role::anchor, 0.49, -1},
                                       {head_role::anchor, 0.24, -1}});
    // B = (r*N - Nfull) * T / Nc = (0.5*4 - 1) * 1000 / 3 = 333.33
    // 1/(S+eps) = 1, 2, 4 -> w = 3*{1,2,4}/7 -> caps = floor(B*w) = floor(1000*{1,2,4}/7) = 142, 285, 571
    std::vector<index_t> caps(4);
    heterocache::drift_weighted_budget{}.prompt_caps(profile, 0.5, 1000, caps);
    CHECK(caps == std::vector<index_t>{1000, 142, 285, 571});
    CHECK(heterocache::drift_weighted_budget{}.base_length(profile, 0.5, 1000) == 333);
}

TEST_CASE("the exponent of the drift weights: 0 splits uniformly, 0.5 by hand, out of range named") {
    const auto profile = make_profile({{head_role::volatile_, 0.1, -1},
                                       {head_role::anchor, 0.99, -1},
                                       {head_role::anchor, 0.24, -1},
                                       {head_role::anchor, 0.03, -1}});
    std::vector<index_t> caps(4), uniform(4);
    heterocache::drift_weighted_budget{.exponent = 0.0}.prompt_caps(profile, 0.5, 1000, caps);
    heterocache::uniform_budget{}.prompt_caps(profile, 0.5, 1000, uniform);
    CHECK(caps == uniform);
    CHECK(caps == std::vector<index_t>{1000, 333, 333, 333});
    // (S + eps)^-0.5 = 1, 2, 5 -> caps = floor(1000 * {1, 2, 5} / 8) = 125, 250, 625
    heterocache::drift_weighted_budget{.exponent = 0.5}.prompt_caps(profile, 0.5, 1000, caps);
    CHECK(caps == std::vector<index_t>{1000, 125, 250, 625});
    for (const double bad : {-0.5, 8.5, std::numeric_limits<double>::quiet_NaN()}) {
        CAPTURE(bad);
        try {
            heterocache::drift_weighted_budget{.exponent = bad}.prompt_caps(profile, 0.5, 1000, caps);
            FAIL("expected an error naming the exponent");
        } catch (const heterocache::invalid_argument_error& e) {
            CHECK(e.argument() == "exponent");
            CHECK(std::string(e.what()).find("[0, 8]") != std::string::npos);
        }
    }
}

TEST_CASE("a head whose share exceeds the context is capped and the rest goes to the others") {
    // Nc = 3, total (0.8*3)*100 = 240. Weights 1, 1, 8 (S = 0.99, 0.99, 0.115): head 2 would get 192 > 100.
    const auto profile = make_profile({{head_role::anchor, 0.99, -1}, {head_role::anchor, 0.99, -1},
                                       {head_role::anchor, 0.115, -1}});
    std::vector<index_t> caps(3);
    heterocache::drift_weighted_budget{}.prompt_caps(profile, 0.8, 100, caps);
    CHECK(caps == std::vector<index_t>{70, 70, 100});
}

TEST_CASE_TEMPLATE("budgets sum to r*N*T within one token per head", Budget, heterocache::drift_weighted_budget,
                   heterocache::uniform_budget) {
    std::vector<heterocache::head_info> heads;
    for (int i = 0; i < 30; ++i) {
        const head_role role = i % 7 == 0 ? head_role::pivot : i % 11 == 0 ? head_role::volatile_ : head_role::anchor;
        heads.push_back({role, (i * 37 % 100) / 100.0, role == head_role::pivot ? 0 : -1});
    }
    heterocache::head_profile profile{30, 1, 0.5, 0.5, 8, heads};
    for (double r : {0.25, 0.5, 0.9, 1.0})
        for (index_t t : {64, 1000, 8192}) {
            std::vector<index_t> caps(30);
            Budget{}.prompt_caps(profile, r, t, caps);
            const auto total = static_cast<double>(std::accumulate(caps.begin(), caps.end(), index_t{0}));
            CHECK(std::abs(total - r * 30.0 * static_cast<double>(t)) <= 30.0);
            for (index_t c : caps) CHECK((c >= 1 && c <= t));
        }
}

TEST_CASE("r*N <= Nfull is a budget error stating the condition with r, N, Nfull and the smallest r") {
    const auto profile = make_profile({{head_role::volatile_, 0.1, -1}, {head_role::volatile_, 0.1, -1},
                                       {head_role::anchor, 0.9, -1}, {head_role::anchor, 0.9, -1}});
    std::vector<index_t> caps(4);
    for (const index_t t : {1, 100, 100000}) {  // the condition does not depend on the prompt length
        CAPTURE(t);
        try {
            heterocache::drift_weighted_budget{}.prompt_caps(profile, 0.5, t, caps);
            FAIL("expected a budget_error");
        } catch (const heterocache::budget_error& e) {
            const std::string what = e.what();
            CHECK(e.argument() == "r");
            CHECK(what.find("r*N > Nfull") != std::string::npos);
            CHECK(what.find("N = 4") != std::string::npos);
            CHECK(what.find("Nfull = 2") != std::string::npos);
            CHECK(what.find("r*N = 2") != std::string::npos);
            CHECK(what.find("any r above 0.5") != std::string::npos);  // Nfull / N
        }
        CHECK_THROWS_AS(heterocache::compressed_token_total(profile, 0.5, t), heterocache::budget_error);
        CHECK_THROWS_AS(heterocache::compressed_token_total(profile, 0.25, t), heterocache::budget_error);
        CHECK_THROWS_AS(heterocache::require_feasible_budget(profile, 0.5), heterocache::budget_error);
    }
    CHECK_FALSE(heterocache::budget_feasible(profile, 0.5));
    CHECK(heterocache::budget_feasible(profile, 0.505));
    CHECK_NOTHROW(heterocache::require_feasible_budget(profile, 0.505));
    // Each policy says so too (the check a kv_cache makes at construction).
    CHECK_THROWS_AS(heterocache::drift_weighted_budget{}.require_feasible(profile, 0.5), heterocache::budget_error);
    CHECK_THROWS_AS(heterocache::uniform_budget{}.require_feasible(profile, 0.5), heterocache::budget_error);
    CHECK_NOTHROW(heterocache::drift_weighted_budget{}.require_feasible(profile, 0.505));
    CHECK_NOTHROW(heterocache::uniform_budget{}.require_feasible(profile, 0.505));
    CHECK_NOTHROW(heterocache::drift_weighted_budget{}.prompt_caps(profile, 0.505, 100, caps));
    // A budget error is a heterocache::error, a std::runtime_error (no longer a std::invalid_argument).
    CHECK_THROWS_AS(heterocache::require_feasible_budget(profile, 0.5), heterocache::invalid_argument_error);
    CHECK_THROWS_AS(heterocache::require_feasible_budget(profile, 0.5), heterocache::error);
    CHECK_THROWS_AS(heterocache::require_feasible_budget(profile, 0.5), std::runtime_error);
    CHECK(std::is_base_of_v<std::runtime_error, heterocache::error>);
    CHECK_FALSE(std::is_base_of_v<std::invalid_argument, heterocache::budget_error>);
}

TEST_CASE("a prompt too short for the compressed heads' share still gives every compressed head one token") {
    // N = 4, Nfull = 2, r = 0.505: the compressed heads share (2.02 - 2) * T = 2 tokens at T = 100 (one each),
    // 0.2 at T = 10 and 0.02 at T = 1: less than a token each, yet every compressed head keeps one.
    const auto profile = make_profile({{head_role::volatile_, 0.1, -1}, {head_role::volatile_, 0.1, -1},
                                       {head_role::anchor, 0.9, -1}, {head_role::anchor, 0.2, -1}});
    for (const index_t t : {1, 2, 10, 100}) {
        CAPTURE(t);
        CHECK(heterocache::compressed_token_total(profile, 0.505, t) ==
              doctest::Approx((0.505 * 4.0 - 2.0) * static_cast<double>(t)));
        std::vector<index_t> caps(4);
        heterocache::drift_weighted_budget{}.prompt_caps(profile, 0.505, t, caps);
        CHECK(caps == std::vector<index_t>{t, t, 1, 1});
        heterocache::uniform_budget{}.prompt_caps(profile, 0.505, t, caps);
        CHECK(caps == std::vector<index_t>{t, t, 1, 1});
        CHECK(heterocache::uniform_budget{}.base_length(profile, 0.505, t) == 1);
    }
}

TEST_CASE("a profile whose every head is full needs r = 1, and says so") {
    const auto profile = make_profile({{head_role::volatile_, 0.1, -1}, {head_role::pivot, 0.2, 1}});
    CHECK(heterocache::budget_feasible(profile, 1.0));
    CHECK(heterocache::compressed_token_total(profile, 1.0, 50) == 0.0);
    std::vector<index_t> caps(2);
    heterocache::drift_weighted_budget{}.prompt_caps(profile, 1.0, 50, caps);
    CHECK(caps == std::vector<index_t>{50, 50});
    CHECK(heterocache::drift_weighted_budget{}.base_length(profile, 1.0, 50) == 50);
    for (const double r : {0.99, 0.5, 0.01}) {
        CAPTURE(r);
        CHECK_FALSE(heterocache::budget_feasible(profile, r));
        try {
            heterocache::compressed_token_total(profile, r, 50);
            FAIL("expected a budget_error");
        } catch (const heterocache::budget_error& e) {
            const std::string what = e.what();
            CHECK(e.argument() == "r");
            CHECK(what.find("every head of the profile keeps its full KV") != std::string::npos);
            CHECK(what.find("N = 2") != std::string::npos);
            CHECK(what.find("Nfull = 2") != std::string::npos);
        }
    }
}

TEST_CASE("r outside (0, 1] or NaN is rejected by name") {
    const auto profile = make_profile({{head_role::anchor, 0.9, -1}});
    std::vector<index_t> caps(1);
    for (double r : {0.0, -0.5, 1.5, std::numeric_limits<double>::quiet_NaN()})
        CHECK_THROWS_WITH_AS(heterocache::uniform_budget{}.prompt_caps(profile, r, 10, caps), doctest::Contains("'r'"),
                             heterocache::invalid_argument_error);
    CHECK_THROWS_WITH_AS(heterocache::uniform_budget{}.prompt_caps(profile, 0.5, 0, caps),
                         doctest::Contains("prompt_tokens"), heterocache::invalid_argument_error);
}

TEST_CASE("a budget too small for the full heads demotes them, most stable first, clusters whole") {
    // N = 6: a volatile (S 0.3), a pivot (S 0.4) with one satellite, and three anchors. Nfull = 2.
    heterocache::head_profile profile{2, 3, 0.5, 0.5, 8,
                                      {{head_role::volatile_, 0.3, -1}, {head_role::pivot, 0.4, 1}, {head_role::satellite, 0.2, 1},
                                       {head_role::anchor, 0.9, -1}, {head_role::anchor, 0.8, -1}, {head_role::anchor, 0.7, -1}}};
    CHECK_FALSE(heterocache::budget_feasible(profile, 0.3));  // r*N = 1.8 < 2
    CHECK(heterocache::demote_until_feasible(profile, 0.3) == 1);  // the pivot (S 0.4) goes first
    CHECK(profile.at(0, 1).role == head_role::anchor);
    CHECK(profile.at(0, 2).role == head_role::anchor);  // its satellite is released too
    CHECK(profile.at(0, 2).pivot == -1);
    CHECK(profile.at(0, 0).role == head_role::volatile_);
    CHECK_NOTHROW(profile.validate());
    CHECK(heterocache::budget_feasible(profile, 0.3));
    CHECK(heterocache::demote_until_feasible(profile, 0.3) == 0);  // feasible already: nothing more demoted
}

TEST_CASE("to_digest_pivots_if_none_stay: digest pivots only where anchors would leave no pivot") {
    // Two layers of three: layer 0 a pivot (S 0.4) with a satellite and an anchor, layer 1 a pivot (S 0.6) with a
    // satellite and an anchor. N = 6, Nfull = 2.
    const heterocache::head_profile two_clusters{
        2, 3, 0.5, 0.5, 8,
        {{head_role::pivot, 0.4, 0}, {head_role::satellite, 0.2, 0}, {head_role::anchor, 0.9, -1},
         {head_role::pivot, 0.6, 0}, {head_role::satellite, 0.3, 0}, {head_role::anchor, 0.8, -1}}};
    using heterocache::pivot_demotion;
    // The profile to_digest_pivots_if_none_stay makes at r, checked against the one `same_as` makes.
    const auto demoted_like = [&](double r, pivot_demotion same_as, index_t demotions) {
        auto chosen = two_clusters, expected = two_clusters;
        CHECK(heterocache::demote_until_feasible(chosen, r, 0.0, pivot_demotion::to_digest_pivots_if_none_stay) == demotions);
        CHECK(heterocache::demote_until_feasible(expected, r, 0.0, same_as) == demotions);
        for (std::size_t i = 0; i < expected.heads.size(); ++i) CHECK(chosen.heads[i].role == expected.heads[i].role);
        return chosen;
    };
    SUBCASE("one pivot stays (r*N = 1.8 leaves room for one full head): anchors, as to_anchors makes them") {
        const auto p = demoted_like(0.3, pivot_demotion::to_anchors, 1);
        CHECK(p.at(1, 0).role == head_role::anchor);  // the more stable pivot went, its satellite with it
        CHECK(p.at(1, 1).role == head_role::anchor);
        CHECK(p.at(0, 0).role == head_role::pivot);
        CHECK(p.count(head_role::digest_pivot) == 0);
    }
    SUBCASE("no pivot would stay (r*N = 0.6): both become digest pivots and keep their satellites") {
        const auto p = demoted_like(0.1, pivot_demotion::to_digest_pivots, 2);
        CHECK(p.count(head_role::digest_pivot) == 2);
        CHECK(p.count(head_role::satellite) == 2);
        CHECK(p.at(0, 1).pivot == 0);
        CHECK_NOTHROW(p.validate());
    }
    SUBCASE("a profile without pivots is demoted as to_anchors demotes it") {
        heterocache::head_profile volatiles = make_profile({{head_role::volatile_, 0.1, -1}, {head_role::volatile_, 0.4, -1}});
        CHECK(heterocache::demote_until_feasible(volatiles, 0.01, 0.0, pivot_demotion::to_digest_pivots_if_none_stay) == 2);
        CHECK(volatiles.count(head_role::anchor) == 2);
    }
    SUBCASE("nothing to demote: the profile stays as it is") {
        const auto p = demoted_like(0.9, pivot_demotion::to_anchors, 0);
        for (std::size_t i = 0; i < p.heads.size(); ++i) CHECK(p.heads[i].role == two_clusters.heads[i].role);
    }
}

TEST_CASE("demotion stops at r*N > Nfull, whatever the prompt length, and demotes every full head for r < 1 alone") {
    // N = 4, all volatile (S 0.1, 0.4, 0.3, 0.2). r = 0.6: r*N = 2.4, so two heads must go (Nfull 2 < 2.4):
    // the most stable ones, S 0.4 then 0.3.
    heterocache::head_profile profile = make_profile({{head_role::volatile_, 0.1, -1}, {head_role::volatile_, 0.4, -1},
                                                      {head_role::volatile_, 0.3, -1}, {head_role::volatile_, 0.2, -1}});
    CHECK_FALSE(heterocache::budget_feasible(profile, 0.6));
    CHECK(heterocache::demote_until_feasible(profile, 0.6) == 2);
    CHECK(profile.heads[0].role == head_role::volatile_);
    CHECK(profile.heads[1].role == head_role::anchor);
    CHECK(profile.heads[2].role == head_role::anchor);
    CHECK(profile.heads[3].role == head_role::volatile_);
    CHECK(heterocache::budget_feasible(profile, 0.6));
    // An all-full profile at r = 1 is feasible as it is.
    heterocache::head_profile full = make_profile({{head_role::volatile_, 0.1, -1}, {head_role::volatile_, 0.4, -1}});
    CHECK(heterocache::demote_until_feasible(full, 1.0) == 0);
    // At a tiny r every full head goes, and the profile is then feasible (no head is full).
    CHECK(heterocache::demote_until_feasible(full, 0.01) == 2);
    CHECK(full.full_heads() == 0);
    CHECK(heterocache::budget_feasible(full, 0.01));
}

TEST_CASE("a budget of the whole context gives every head the whole context, whatever the rounding") {
    // The compressed heads of a real SmolLM2-135M profile (44 full heads besides): at T = 980, floor(B * w_h)
    // of one head came out 979 from floating-point rounding of a share that is exactly 980.
    const std::vector<double> stabilities{0.6489795918367347,0.76938775510204083,0.8387755102040817,0.53265306122448974,0.76122448979591839,0.72653061224489801,0.72244897959183674,0.74081632653061225,0.74285714285714288,0.82448979591836735,0.80408163265306132,0.7673469387755103,0.53673469387755102,0.53265306122448974,0.63673469387755111,0.57346938775510203,0.56938775510204076,0.69387755102040827,0.6612244897959183,0.65714285714285714,0.61224489795918369,0.70612244897959187,0.65102040816326534,0.57959183673469394,0.52653061224489806,0.47959183673469385,0.53265306122448974,0.64693877551020407,0.1163265306122449,0.48163265306122449,0.55102040816326525,0.45918367346938777,0.53265306122448974,0.50204081632653064,0.5714285714285714,0.74081632653061225,0.14489795918367349,0.68367346938775508,0.5,0.50612244897959191,0.35510204081632657,0.51428571428571423,0.41428571428571426,0.50816326530612244,0.60000000000000009,0.53673469387755102};
    std::vector<heterocache::head_info> heads;
    for (double s : stabilities) heads.push_back({head_role::anchor, s, -1});
    for (int i = 0; i < 44; ++i) heads.push_back({head_role::volatile_, 0.2, -1});
    heterocache::head_profile profile{30, 3, 0.5, 0.5, 8, heads};
    for (index_t t : {980, 1000, 1964, 3932, 7844}) {
        std::vector<index_t> caps(90);
        heterocache::drift_weighted_budget{}.prompt_caps(profile, 1.0, t, caps);
        for (index_t c : caps) CHECK(c == t);
    }
}
