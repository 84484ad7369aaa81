// The pivot monitor's decisions against a reference that ranks every step and takes the median at every
// check (DESIGN.md section 2, "Decode, drift and retrieval"), and the rankings it saves once a check is
// decided.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <random>
#include <vector>

#include <heterocache/algorithm/median.hpp>
#include <heterocache/algorithm/overlap.hpp>
#include <heterocache/algorithm/pooled_attention.hpp>
#include <heterocache/monitor/pivot_overlap_monitor.hpp>

namespace hc = heterocache;
using hc::index_t;

namespace {

constexpr index_t prompt = 300, base = 30, group = 3, head_dim = 8;

//! The check as the paper states it: every step ranks, every `interval` steps the median of the overlaps
//! decides. Returns the latest ranking when the pivot drifted.
struct reference_check {
    index_t interval;
    double tau;
    std::vector<index_t> reference;
    std::vector<double> overlaps;

    std::optional<std::vector<float>> step(const std::vector<float>& scores) {
        std::vector<float> ranking(static_cast<std::size_t>(prompt)), scratch(static_cast<std::size_t>(2 * prompt));
        hc::pooled_attention_row_from_scores(scores, group, ranking, scratch);
        std::vector<index_t> latest(static_cast<std::size_t>(base)), index_scratch(static_cast<std::size_t>(prompt));
        hc::top_k_positions(ranking, latest, index_scratch);
        overlaps.push_back(hc::overlap_coefficient(latest, reference));
        if (static_cast<index_t>(overlaps.size()) < interval) return std::nullopt;
        const double median = hc::median_in_place(overlaps);
        overlaps.clear();
        if (median >= tau) return std::nullopt;
        reference = latest;
        return ranking;
    }
};

//! One pivot's scores for a step whose top-`base` set shares about `kept` of `base` positions with `hot`:
//! those positions and `base - kept` others score high, the rest is noise.
std::vector<float> scores_sharing(const std::vector<index_t>& hot, index_t kept, std::mt19937_64& rng) {
    std::normal_distribution<float> noise(0.0f, 0.3f);
    std::vector<float> row(static_cast<std::size_t>(prompt));
    for (float& x : row) x = noise(rng);
    std::vector<index_t> shuffled = hot;
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    for (index_t i = 0; i < kept; ++i) row[static_cast<std::size_t>(shuffled[static_cast<std::size_t>(i)])] += 8.0f;
    std::uniform_int_distribution<index_t> position(0, prompt - 1);
    for (index_t added = kept; added < base;) {
        const index_t p = position(rng);
        if (std::find(hot.begin(), hot.end(), p) != hot.end() || row[static_cast<std::size_t>(p)] > 4.0f) continue;
        row[static_cast<std::size_t>(p)] += 8.0f;
        ++added;
    }
    std::vector<float> scores;
    for (index_t g = 0; g < group; ++g)
        for (float x : row) scores.push_back(x + noise(rng));
    return scores;
}

//! Head 0 is a pivot with satellite 1; head 2 is a second pivot without satellites.
struct monitored_layer {
    hc::head_profile profile{1, 3, 0.5, 0.5, base, {{hc::head_role::pivot, 0.2, 0}, {hc::head_role::satellite, 0.2, 0},
                                                    {hc::head_role::pivot, 0.2, 2}}};
    hc::pivot_overlap_monitor monitor;
    std::vector<float> query = std::vector<float>(static_cast<std::size_t>(3 * group * head_dim), 0.0f);

    explicit monitored_layer(index_t interval, const std::vector<index_t>& first_reference) : monitor(interval) {
        monitor.plan({{1, 3, 3 * group, head_dim}, 1, prompt});
        monitor.set_reference(0, 0, 0, first_reference);
        monitor.set_reference(0, 0, 2, first_reference);
    }

    //! One step with `scores` for pivot 0 and `other` for pivot 2; the satellites refreshed, with their ranking.
    //! The monitor reads the pivots' scores only (`reads_scores_of`), never a key.
    std::vector<std::pair<index_t, std::vector<float>>> step(std::vector<float>& scores, std::vector<float>& other) {
        const auto prompt_scores = [&](index_t head) -> std::span<const float> {
            REQUIRE((head == 0 || head == 2));
            return head == 0 ? scores : other;
        };
        const auto prompt_key = [](index_t, index_t, float*) { FAIL("the pivot monitor read a prompt key"); };
        const hc::monitor_context context{0, 0, prompt, base, &profile, query.data(), head_dim, prompt_scores, prompt_key};
        std::vector<std::pair<index_t, std::vector<float>>> refreshed;
        monitor.observe(context, [&](index_t head, std::span<const float> ranking) {
            refreshed.emplace_back(head, std::vector<float>(ranking.begin(), ranking.end()));
        });
        return refreshed;
    }
};

std::vector<index_t> first_positions(index_t n) {
    std::vector<index_t> positions(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) positions[static_cast<std::size_t>(i)] = i;
    return positions;
}

}  // namespace

TEST_CASE("the pivot monitor refreshes exactly when and with what a monitor ranking every step would") {
    for (const index_t interval : {1, 2, 3, 4, 5, 6}) {
        CAPTURE(interval);
        std::mt19937_64 rng(static_cast<std::uint64_t>(40 + interval));
        monitored_layer layer(interval, first_positions(base));
        reference_check pivot{interval, 0.5, first_positions(base), {}};
        std::vector<float> quiet = scores_sharing(first_positions(base), base, rng);  // pivot 2 never drifts
        std::uniform_int_distribution<index_t> kept(0, 4);
        index_t stable_checks = 0, drifts = 0;
        for (index_t step = 0; step < 240; ++step) {
            // Overlaps near tau on both sides: 0, 0.3, 0.45, 0.6 or 1 of the reference kept.
            const index_t shares[5] = {0, 9, 14, 18, base};
            std::vector<float> scores = scores_sharing(pivot.reference, shares[kept(rng)], rng);
            const auto expected = pivot.step(scores);
            const auto refreshed = layer.step(scores, quiet);
            if (expected) {
                ++drifts;
                REQUIRE(refreshed.size() == 1);
                CHECK(refreshed[0].first == 1);
                CHECK(refreshed[0].second == *expected);
            } else {
                CHECK(refreshed.empty());
                stable_checks += (step + 1) % interval == 0 ? 1 : 0;
            }
        }
        CHECK(drifts > 5);  // both outcomes were exercised
        CHECK(stable_checks > 5);
        if (interval >= 3)
            CHECK(layer.monitor.rankings() < 2 * 240);  // decided checks skipped rankings
        else
            CHECK(layer.monitor.rankings() == 2 * 240);  // a check of 1 or 2 steps is never decided early
    }
}

TEST_CASE("the pivot monitor reads the scores of pivots only and needs their reference set") {
    const hc::pivot_overlap_monitor monitor;
    CHECK(monitor.reads_scores_of(hc::head_role::pivot));
    for (const hc::head_role role : {hc::head_role::anchor, hc::head_role::volatile_, hc::head_role::satellite})
        CHECK_FALSE(monitor.reads_scores_of(role));
    CHECK(hc::monitor_reads_scores(monitor, hc::head_role::pivot));
    CHECK_FALSE(hc::monitor_reads_scores(monitor, hc::head_role::satellite));
    static_assert(hc::monitor_traits<hc::pivot_overlap_monitor>::reads_scores);
    static_assert(hc::monitor_traits<hc::pivot_overlap_monitor>::needs_reference);
    static_assert(!hc::monitor_traits<hc::pivot_overlap_monitor>::scores_prompt);
}

TEST_CASE("a decided check ranks no more: 3 of 5 steps for a stable pivot, 4 for a drifting one") {
    std::mt19937_64 rng(3);
    const std::vector<index_t> reference = first_positions(base);
    std::vector<float> stable = scores_sharing(reference, base, rng);
    std::vector<float> elsewhere = scores_sharing(reference, 0, rng);
    SUBCASE("interval 5") {
        monitored_layer layer(5, reference);
        index_t refreshes = 0;
        // Pivot 0 drifts once, then (its reference moved to `elsewhere`'s set) stays; pivot 2 always stable.
        for (index_t step = 0; step < 100; ++step) refreshes += static_cast<index_t>(layer.step(elsewhere, stable).size());
        CHECK(refreshes == 1);
        CHECK(layer.monitor.rankings() == 4 + 19 * 3 + 20 * 3);
    }
    SUBCASE("interval 1 ranks every step") {
        monitored_layer layer(1, reference);
        for (index_t step = 0; step < 10; ++step) (void)layer.step(stable, stable);
        CHECK(layer.monitor.rankings() == 20);
    }
}
