// The policies the baselines are built from, each against a case computed by hand: StreamingLLM's
// positional ranking, H2O's accumulated attention, Quest's page bounds, PyramidKV's and Ada-KV's budgets.
#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>
#include <span>
#include <utility>
#include <vector>

#include <heterocache/algorithm/overlap.hpp>
#include <heterocache/algorithm/pooled_attention.hpp>
#include <heterocache/algorithm/protected_top_k.hpp>
#include <heterocache/budget/ada_kv_budget.hpp>
#include <heterocache/budget/drift_weighted_budget.hpp>
#include <heterocache/budget/pyramid_budget.hpp>
#include <heterocache/monitor/heavy_hitter_monitor.hpp>
#include <heterocache/monitor/quest_monitor.hpp>
#include <heterocache/monitor/streaming_monitor.hpp>

namespace hc = heterocache;
using hc::head_role;
using hc::index_t;

namespace {

//! Positions of the `k` highest `scores`, ascending (the cache's top-cap rule).
std::vector<index_t> top(const std::vector<float>& scores, index_t k) {
    std::vector<index_t> out(static_cast<std::size_t>(k)), scratch(scores.size());
    hc::top_k_positions(scores, out, scratch);
    return out;
}

hc::head_profile profile_of(index_t layers, index_t kv_heads, std::vector<head_role> roles) {
    hc::head_profile p{layers, kv_heads, 0.5, 0.5, 0, {}};
    for (const head_role role : roles) p.heads.push_back({role, 0.5, -1});
    return p;
}

//! Calls `monitor.observe` for one step of (layer 0, sequence 0) and returns each refreshed head's ranking.
//! `keys` are the cold prompt keys of every KV head, `[kv_head][token][head_dim]`; the context serves their
//! scaled scores (`group_scores`, what the cache computes when no kernel captured them) and their keys.
template <class Monitor>
std::vector<std::pair<index_t, std::vector<float>>> observe(Monitor& monitor, const hc::head_profile& profile,
                                                            index_t prompt_tokens, const std::vector<float>& query,
                                                            index_t head_dim, const std::vector<float>& keys) {
    const index_t group = static_cast<index_t>(query.size()) / head_dim / profile.kv_heads;
    const auto rows_of = [&](index_t head) {
        return hc::token_rows<float>{keys.data(), {head * prompt_tokens * head_dim, head_dim, nullptr, 0, 0}};
    };
    std::vector<float> scores(static_cast<std::size_t>(group * prompt_tokens));
    std::vector<std::pair<index_t, std::vector<float>>> refreshed;
    const auto prompt_scores = [&](index_t head) -> std::span<const float> {
        hc::group_scores(query.data(), head_dim, rows_of(head), head, group, head_dim, hc::attention_scale(head_dim),
                         prompt_tokens, scores.data());
        return scores;
    };
    const auto prompt_key = [&](index_t head, index_t position, float* key) {
        std::copy_n(rows_of(head).at(position), head_dim, key);
    };
    const auto on_drift = [&](index_t head, std::span<const float> ranking) {
        refreshed.emplace_back(head, std::vector<float>(ranking.begin(), ranking.end()));
    };
    const hc::monitor_context context{0, 0, prompt_tokens, prompt_tokens, &profile, query.data(), head_dim,
                                      prompt_scores, prompt_key};
    monitor.observe(context, on_drift);
    return refreshed;
}

}  // namespace

TEST_CASE("StreamingLLM's ranking keeps the attention sinks and the most recent prompt tokens") {
    std::vector<float> scores{0.9f, 0.0f, 0.7f, 0.3f, 0.8f, 0.1f, 0.6f, 0.2f, 0.0f, 0.5f};
    hc::streaming_monitor{2}.score_prompt(0, 0, 0, scores);
    CHECK(top(scores, 4) == std::vector<index_t>{0, 1, 8, 9});
    CHECK(top(scores, 3) == std::vector<index_t>{0, 1, 9});
    CHECK(top(scores, 1) == std::vector<index_t>{0});  // a cap below the sink keeps the first tokens
    hc::streaming_monitor{0}.score_prompt(0, 0, 0, scores);
    CHECK(top(scores, 3) == std::vector<index_t>{7, 8, 9});
    CHECK_THROWS_AS(hc::streaming_monitor{-1}.score_prompt(0, 0, 0, scores), hc::invalid_argument_error);
}

TEST_CASE("H2O accumulates its group's attention and ranks heavy hitters behind the protected recent window") {
    // One KV head, two query heads, d = 2, T = 6. Key 0 = (0, 10), key 3 = (10, 0), the others 0. Query head 0 is
    // (20, 0), query head 1 (0, 20): each puts all its softmax on one key (the other logits are 141 lower, so
    // they underflow to exactly 0), so each step adds 1/2 to position 3 and 1/2 to position 0.
    const hc::model_shape shape{1, 1, 2, 2};
    const auto profile = hc::uniform_profile(shape, head_role::anchor);
    std::vector<float> keys(12, 0.0f);
    keys[0 * 2 + 1] = 10.0f;
    keys[3 * 2 + 0] = 10.0f;
    const std::vector<float> query{20.0f, 0.0f, 0.0f, 20.0f};
    hc::heavy_hitter_monitor monitor(2);  // refresh every 2 steps
    monitor.plan({shape, 1, 6});
    // The cache keeps the protected prompt ends (make_h2o_oracle_cache: prompt_recent = half the cap, 2 of 4
    // here) first, then the ranking's best.
    const auto kept = [](const std::vector<float>& ranking) {
        std::vector<index_t> out(4), scratch(ranking.size());
        hc::protected_top_k_positions(ranking, out, scratch, {0, 2});
        return out;
    };

    const std::vector<float> prefill{0.1f, 0.5f, 0.2f, 0.05f, 0.1f, 0.05f};
    std::vector<float> scores = prefill;
    monitor.score_prompt(0, 0, 0, scores);
    CHECK(scores == prefill);  // the monitor starts from them and leaves them as they are
    CHECK(kept(scores) == std::vector<index_t>{1, 2, 4, 5});

    CHECK(observe(monitor, profile, 6, query, 2, keys).empty());  // step 1 of 2: accumulates only
    const auto refreshed = observe(monitor, profile, 6, query, 2, keys);
    // accumulated = prefill + 2 steps = {0.1 + 1, 0.5, 0.2, 0.05 + 1, 0.1, 0.05}
    const std::vector<float> accumulated{0.1f + 0.5f + 0.5f, 0.5f, 0.2f, 0.05f + 0.5f + 0.5f, 0.1f, 0.05f};
    const auto held = monitor.accumulated_attention(0, 0, 0);
    CHECK(std::vector<float>(held.begin(), held.begin() + 6) == accumulated);
    REQUIRE(refreshed.size() == 1);
    CHECK(refreshed[0].first == 0);
    CHECK(refreshed[0].second == accumulated);  // the accumulated ranking itself
    CHECK(kept(refreshed[0].second) == std::vector<index_t>{0, 3, 4, 5});  // the heavy hitters replace 1 and 2

    SUBCASE("a new prompt restarts the accumulation") {
        std::vector<float> fresh(6, 0.0f);
        monitor.score_prompt(0, 0, 0, fresh);
        const auto restarted = monitor.accumulated_attention(0, 0, 0);
        CHECK(std::all_of(restarted.begin(), restarted.begin() + 6, [](float x) { return x == 0.0f; }));
    }
    SUBCASE("full heads are neither scored nor refreshed") {
        CHECK(observe(monitor, hc::uniform_profile(shape, head_role::volatile_), 6, query, 2, keys).empty());
    }
}

TEST_CASE("Quest scores pages by the channel-wise bound of their key digests and refreshes every step") {
    // One KV head, two query heads, d = 2, T = 40, pages of 16: [0, 16), [16, 32), [32, 40).
    const hc::model_shape shape{1, 1, 2, 2};
    const auto profile = hc::uniform_profile(shape, head_role::anchor);
    std::vector<float> keys;
    for (index_t t = 0; t < 40; ++t) {
        if (t < 16) keys.insert(keys.end(), {t == 5 ? 2.0f : 1.0f, t == 5 ? 0.0f : -1.0f});  // min (1, -1), max (2, 0)
        else if (t < 32) keys.insert(keys.end(), {t == 20 ? 0.0f : -1.0f, t == 20 ? 3.0f : 1.0f});  // min (-1, 1), max (0, 3)
        else keys.insert(keys.end(), {0.5f, 0.5f});  // min = max = (0.5, 0.5)
    }
    // Query head 0 = (1, 1): pages bound 2 + 0 = 2, 0 + 3 = 3, 0.5 + 0.5 = 1.
    // Query head 1 = (-1, 0): pages bound -1, 1, -0.5. The group's maximum: 2, 3, 1.
    const std::vector<float> query{1.0f, 1.0f, -1.0f, 0.0f};
    CHECK(hc::page_score_bound(query.data(), keys.data(), keys.data() + 10, 2) == 2.0f);
    hc::quest_monitor monitor;
    monitor.plan({shape, 1, 40});
    for (int step = 0; step < 2; ++step) {
        const auto refreshed = observe(monitor, profile, 40, query, 2, keys);
        REQUIRE(refreshed.size() == 1);
        std::vector<float> expected(40, 1.0f);
        std::fill(expected.begin(), expected.begin() + 16, 2.0f);
        std::fill(expected.begin() + 16, expected.begin() + 32, 3.0f);
        CHECK(refreshed[0].second == expected);
        std::vector<index_t> second_page(16);
        std::iota(second_page.begin(), second_page.end(), index_t{16});
        CHECK(top(refreshed[0].second, 16) == second_page);
    }
    CHECK_THROWS_AS(hc::quest_monitor(0), hc::invalid_argument_error);
}

TEST_CASE("PyramidKV's layer budgets fall linearly from the bottom layer to the top, summing to r*N*T") {
    // L = 3, one head each, T = 100, r = 0.5: mean cap k = 50; beta = 2: top k/2 = 25, bottom 2k - k/2 = 75.
    const auto three = profile_of(3, 1, {head_role::anchor, head_role::anchor, head_role::anchor});
    std::vector<index_t> caps(3);
    hc::pyramid_budget{2.0}.prompt_caps(three, 0.5, 100, caps);
    CHECK(caps == std::vector<index_t>{75, 50, 25});
    hc::pyramid_budget{1.0}.prompt_caps(three, 0.5, 100, caps);
    CHECK(caps == std::vector<index_t>{50, 50, 50});  // beta = 1 is uniform
    hc::pyramid_budget{2.0}.prompt_caps(three, 1.0, 100, caps);
    CHECK(caps == std::vector<index_t>{100, 100, 100});
    CHECK(hc::pyramid_budget{2.0}.base_length(three, 0.5, 100) == 50);

    // 8 layers x 2 heads, one full head: decreasing per layer, uniform within one, the total kept.
    std::vector<head_role> roles(16, head_role::anchor);
    roles[3] = head_role::volatile_;
    const auto eight = profile_of(8, 2, roles);
    std::vector<index_t> many(16);
    hc::pyramid_budget{}.prompt_caps(eight, 0.3, 1000, many);
    CHECK(many[3] == 1000);
    CHECK(std::abs(static_cast<double>(std::accumulate(many.begin(), many.end(), index_t{0})) - 0.3 * 16 * 1000) <= 16);
    for (index_t l = 0; l < 8; ++l) {
        if (l != 1) CHECK(many[l * 2] == many[l * 2 + 1]);
        if (l > 0) CHECK(many[l * 2] < many[(l - 1) * 2]);
    }
    CHECK_THROWS_AS(hc::pyramid_budget{0.5}.prompt_caps(three, 0.5, 100, caps), hc::invalid_argument_error);
}

TEST_CASE("Ada-KV shares a layer's budget by attention mass above a safeguard floor") {
    // One layer: heads 0 and 1 compressed with 4 tokens each (M = 8, n = 2), head 2 full. T = 8.
    const auto profile = profile_of(1, 3, {head_role::anchor, head_role::anchor, head_role::volatile_});
    const std::vector<float> spread{0.2f, 0.2f, 0.2f, 0.2f, 0.1f, 0.1f, 0.0f, 0.0f};
    const std::vector<float> peaked{0.94f, 0.02f, 0.02f, 0.02f, 0.0f, 0.0f, 0.0f, 0.0f};
    const std::vector<float> full(8, 1.0f);  // a full head's scores take no part
    const std::vector<std::span<const float>> scores{spread, peaked, full};
    const auto shared = [&](double alpha) {
        std::vector<index_t> caps{4, 4, 8};
        hc::ada_kv_budget<>{alpha}.share_layer(profile, 0.5, 0, scores, caps);
        return caps;
    };
    // alpha = 0: floor max(1, 0) = 1 each (0.2 and 0.94); the 6 others go to 0.2 0.2 0.2 0.1 0.1 (head 0), 0.02 (head 1).
    CHECK(shared(0.0) == std::vector<index_t>{6, 2, 8});
    // alpha = 0.5: floor 0.5 * 8 / 2 = 2 each; the 4 others: 0.2 0.2 0.1 0.1, all head 0's.
    CHECK(shared(0.5) == std::vector<index_t>{6, 2, 8});
    // alpha = 0.75: floor 3 each; the 2 others: 0.2 and 0.1, both head 0's (head 1 has only 0.02 left).
    CHECK(shared(0.75) == std::vector<index_t>{5, 3, 8});
    CHECK(shared(1.0) == std::vector<index_t>{4, 4, 8});  // floor 4 each: nothing left to share

    SUBCASE("ties between heads go to the lower head") {
        const std::vector<float> flat(8, 0.125f);
        const std::vector<std::span<const float>> even{flat, flat, full};
        std::vector<index_t> caps{3, 4, 8};
        hc::ada_kv_budget<>{0.0}.share_layer(profile, 0.5, 0, even, caps);
        CHECK(caps == std::vector<index_t>{6, 1, 8});
    }
    SUBCASE("planning gives each compressed head at most its layer's total") {
        const auto two = profile_of(2, 2, {head_role::volatile_, head_role::anchor, head_role::anchor, head_role::anchor});
        std::vector<index_t> caps(4), capacity(4);
        hc::ada_kv_budget<>{}.prompt_caps(two, 0.5, 90, caps);  // (0.5 * 4 - 1) * 90 = 90 over 3 heads
        CHECK(caps == std::vector<index_t>{90, 30, 30, 30});
        hc::ada_kv_budget<>{}.capacity_caps(two, 0.5, 90, capacity);
        CHECK(capacity == std::vector<index_t>{90, 30, 60, 60});
        CHECK(hc::ada_kv_budget<>{}.base_length(two, 0.5, 90) == 30);
    }
    SUBCASE("the base split comes from the wrapped policy") {
        auto weighted = profile_of(1, 2, {head_role::anchor, head_role::anchor});
        weighted.heads[0].stability = 0.99, weighted.heads[1].stability = 0.49;  // 1/(S + 0.01) = 1, 2
        std::vector<index_t> caps(2), base(2);
        hc::ada_kv_budget<hc::drift_weighted_budget>{}.prompt_caps(weighted, 0.5, 90, caps);
        hc::drift_weighted_budget{}.prompt_caps(weighted, 0.5, 90, base);
        CHECK(caps == base);
        CHECK(caps == std::vector<index_t>{30, 60});
    }
    CHECK_THROWS_AS(shared(1.5), hc::invalid_argument_error);
}
