#include <doctest/doctest.h>

#include <vector>

#include <heterocache/algorithm/star_clustering.hpp>
#include <heterocache/classifier/overlap_star_classifier.hpp>

using heterocache::head_role;
using heterocache::index_t;

TEST_CASE("star clustering takes the head with most unassigned neighbours as pivot, repeatedly") {
    // Edges: 0-1, 1-2, 1-3, 4-5. Head 1 has 3 neighbours: pivot of {0, 2, 3}; then 4 (tie with 5) pivots 5.
    const std::vector<std::pair<int, int>> edges{{0, 1}, {1, 2}, {1, 3}, {4, 5}};
    const auto neighbours = [&](index_t a, index_t b) {
        for (auto [x, y] : edges)
            if ((x == a && y == b) || (x == b && y == a)) return true;
        return false;
    };
    const auto clusters = heterocache::make_star_clusters(7, neighbours);
    CHECK(clusters.pivot_of == std::vector<index_t>{1, 1, 1, 1, 4, 4, -1});
}

TEST_CASE("stability is the median overlap with the prefill set, and roles follow the paper's table") {
    // 1 layer, 4 heads, 1 sequence, 3 decode steps, sets of 4.
    heterocache::profiling_record record(1, 4, 1, 3, 4);
    const auto put = [&](index_t head, index_t step, std::vector<index_t> set) {
        auto out = record.record(0, head, 0, step, static_cast<index_t>(set.size()));
        std::copy(set.begin(), set.end(), out.begin());
    };
    // Head 0: stable (same set every step).  Head 1: drifts.  Heads 2 and 3: drift together.
    for (index_t t = 0; t <= 3; ++t) put(0, t, {0, 1, 2, 3});
    put(1, 0, {10, 11, 12, 13}), put(1, 1, {10, 20, 21, 22}), put(1, 2, {30, 31, 32, 33}), put(1, 3, {10, 11, 40, 41});
    for (index_t h : {2, 3}) {
        put(h, 0, {50, 51, 52, 53}), put(h, 1, {60, 61, 62, 63}), put(h, 2, {70, 71, 72, 73});
        put(h, 3, h == 2 ? std::vector<index_t>{50, 80, 81, 82} : std::vector<index_t>{50, 80, 81, 99});
    }
    std::vector<double> scratch;
    CHECK(heterocache::head_stability(record, 0, 0, scratch) == 1.0);
    CHECK(heterocache::head_stability(record, 0, 1, scratch) == doctest::Approx(0.25));  // overlaps 1/4, 0, 2/4
    CHECK(heterocache::head_similarity(record, 0, 2, 3, scratch) == 1.0);                // 1, 1, 1, 3/4
    CHECK(heterocache::head_similarity(record, 0, 0, 1, scratch) == 0.0);

    const auto profile = heterocache::overlap_star_classifier{}.classify(record);
    CHECK(profile.at(0, 0).role == head_role::anchor);
    CHECK(profile.at(0, 1).role == head_role::volatile_);
    CHECK(profile.at(0, 2).role == head_role::pivot);
    CHECK(profile.at(0, 3).role == head_role::satellite);
    CHECK(profile.at(0, 3).pivot == 2);
    CHECK_NOTHROW(profile.validate());

    heterocache::overlap_star_classifier stability_only;
    stability_only.cluster = false;
    const auto split = stability_only.classify(record);
    CHECK(split.at(0, 2).role == head_role::volatile_);
    CHECK(split.at(0, 3).role == head_role::volatile_);
}

TEST_CASE("classifier thresholds outside [0, 1] or NaN are rejected by name") {
    heterocache::profiling_record record(1, 1, 1, 1, 1);
    heterocache::overlap_star_classifier classifier;
    classifier.tau_stable = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_WITH_AS(classifier.classify(record), doctest::Contains("tau_stable"), heterocache::invalid_argument_error);
    classifier.tau_stable = 0.5;
    classifier.tau_sim = 1.5;
    CHECK_THROWS_WITH_AS(classifier.classify(record), doctest::Contains("[0, 1]"), heterocache::invalid_argument_error);
}
