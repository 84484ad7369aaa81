#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include <heterocache/attention/decode_attention.hpp>
#include <heterocache/budget/sharded_budget.hpp>
#include <heterocache/budget/uniform_budget.hpp>
#include <heterocache/kv_cache.hpp>
#include <heterocache/profile/profile_slice.hpp>
#include <heterocache/tensor/kv_tensor.hpp>

#include "../examples/tensor_parallel/tensor_parallel.hpp"
#include "planted_heads.hpp"

namespace hc = heterocache;
using hc::head_role;
using hc::index_t;

namespace {

//! Layer 0: anchor, pivot 1 with satellite 2, volatile. Layer 1: anchor, volatile, satellite 2 of pivot 3.
hc::head_profile two_layer_profile() {
    return {2, 4, 0.5, 0.4, 16,
            {{head_role::anchor, 0.9, -1}, {head_role::pivot, 0.3, 1}, {head_role::satellite, 0.2, 1},
             {head_role::volatile_, 0.1, -1}, {head_role::anchor, 0.8, -1}, {head_role::volatile_, 0.15, -1},
             {head_role::satellite, 0.25, 3}, {head_role::pivot, 0.35, 3}}};
}

std::string message_of(const hc::head_profile& profile, std::vector<index_t> heads) {
    try {
        static_cast<void>(hc::slice_profile(profile, heads));
    } catch (const hc::invalid_argument_error& e) {
        return e.what();
    }
    return "";
}

//! The profile the planted plan implies: a group of several drifting heads is a cluster (pivot = lowest
//! head), a drifting head alone is volatile, a stable head an anchor.
hc::head_profile planted_profile(const planted::model& m) {
    const auto& shape = m.spec().shape;
    hc::head_profile profile = hc::uniform_profile(shape, head_role::anchor);
    for (index_t layer = 0; layer < shape.layers; ++layer)
        for (index_t head = 0; head < shape.kv_heads; ++head) {
            hc::head_info& info = profile.at(layer, head);
            if (!m.plan(layer, head).drifting) {
                info = {head_role::anchor, 0.9 - 0.1 * static_cast<double>(head), -1};
                continue;
            }
            index_t first = -1, members = 0;
            for (index_t other = 0; other < shape.kv_heads; ++other)
                if (m.plan(layer, other).group == m.plan(layer, head).group) {
                    members += 1;
                    if (first < 0) first = other;
                }
            if (members == 1) info = {head_role::volatile_, 0.1, -1};
            else info = {first == head ? head_role::pivot : head_role::satellite, 0.2 + 0.05 * static_cast<double>(head), first};
        }
    return profile;
}

using tensor_parallel::make_outputs;
using tensor_parallel::rank_tensor;
using tensor_parallel::run_rank;

}  // namespace

TEST_CASE("a slice keeps the roles of its heads and renumbers pivots") {
    const auto profile = two_layer_profile();
    const std::vector<index_t> heads{3, 1, 2};
    const hc::head_profile slice = hc::slice_profile(profile, heads);
    REQUIRE(slice.layers == 2);
    REQUIRE(slice.kv_heads == 3);
    CHECK(slice.tau_stable == profile.tau_stable);
    CHECK(slice.tau_sim == profile.tau_sim);
    CHECK(slice.top_k == profile.top_k);
    CHECK(slice.at(0, 0).role == head_role::volatile_);
    CHECK(slice.at(0, 1).role == head_role::pivot);
    CHECK(slice.at(0, 1).pivot == 1);
    CHECK(slice.at(0, 2).role == head_role::satellite);
    CHECK(slice.at(0, 2).pivot == 1);
    CHECK(slice.at(0, 2).stability == 0.2);
    CHECK(slice.at(1, 0).role == head_role::pivot);  // layer 1 head 3 ...
    CHECK(slice.at(1, 0).pivot == 0);                 // ... is now head 0
    CHECK(slice.at(1, 1).role == head_role::volatile_);
    CHECK(slice.at(1, 1).pivot == -1);
    CHECK(slice.at(1, 2).role == head_role::satellite);
    CHECK(slice.at(1, 2).pivot == 0);
    slice.validate(hc::slice_shape({2, 4, 8, 16}, heads));
}

TEST_CASE("slicing every head in order gives the profile back") {
    const auto profile = two_layer_profile();
    const std::vector<index_t> heads{0, 1, 2, 3};
    const hc::head_profile slice = hc::slice_profile(profile, heads);
    for (std::size_t i = 0; i < profile.heads.size(); ++i) {
        CHECK(slice.heads[i].role == profile.heads[i].role);
        CHECK(slice.heads[i].pivot == profile.heads[i].pivot);
    }
}

TEST_CASE("a slice that splits a cluster is an error naming the layer and heads") {
    const auto profile = two_layer_profile();
    // Heads {0, 1}: pivot 1 of layer 0 without its satellite 2.
    CHECK(message_of(profile, {0, 1}).find("in layer 0 satellite 2 is not in it but its pivot 1 is") != std::string::npos);
    // Heads {2, 3}: satellite 2 without its pivot.
    CHECK(message_of(profile, {2, 3}).find("in layer 0 satellite 2 is in it but its pivot 1 is not") != std::string::npos);
    // Heads {0, 3}: layer 0 is fine, layer 1 has pivot 3 without its satellite 2.
    CHECK(message_of(profile, {0, 3}).find("in layer 1 satellite 2 is not in it but its pivot 3 is") != std::string::npos);
    CHECK(message_of(profile, {0, 3}).find("'kv_heads' = {0, 3}") != std::string::npos);
}

TEST_CASE("a slice with no head, a head out of range or a repeated head is a shape error") {
    const auto profile = two_layer_profile();
    CHECK_THROWS_AS(hc::slice_profile(profile, std::vector<index_t>{}), hc::shape_error);
    CHECK_THROWS_AS(hc::slice_profile(profile, std::vector<index_t>{1, 2, 4}), hc::shape_error);
    CHECK_THROWS_AS(hc::slice_profile(profile, std::vector<index_t>{-1}), hc::shape_error);
    CHECK_THROWS_AS(hc::slice_profile(profile, std::vector<index_t>{1, 2, 1}), hc::shape_error);
}

TEST_CASE("the Megatron split gives each rank a contiguous block of KV heads") {
    CHECK(hc::tensor_parallel_heads(8, 4, 0) == std::vector<index_t>{0, 1});
    CHECK(hc::tensor_parallel_heads(8, 4, 3) == std::vector<index_t>{6, 7});
    CHECK(hc::tensor_parallel_heads(3, 1, 0) == std::vector<index_t>{0, 1, 2});
    CHECK_THROWS_AS(hc::tensor_parallel_heads(3, 2, 0), hc::shape_error);
    CHECK_THROWS_AS(hc::tensor_parallel_heads(4, 2, 2), hc::shape_error);
    const hc::model_shape rank = hc::slice_shape({30, 4, 12, 64}, hc::tensor_parallel_heads(4, 2, 1));
    CHECK(rank.kv_heads == 2);
    CHECK(rank.query_heads == 6);  // GQA groups stay with their KV head
    CHECK(rank.layers == 30);
    CHECK(rank.head_dim == 64);
}

TEST_CASE_TEMPLATE("a rank's budget is its heads' share of the unsharded budget", Budget, hc::drift_weighted_budget,
                   hc::uniform_budget) {
    const auto profile = two_layer_profile();
    std::vector<index_t> full(8);
    Budget{}.prompt_caps(profile, 0.6, 1000, full);
    const index_t base = Budget{}.base_length(profile, 0.6, 1000);
    const std::vector<index_t> heads{3, 1, 2};
    const hc::sharded_budget<Budget> sharded(profile, heads);
    const hc::head_profile slice = sharded.rank_profile();
    std::vector<index_t> caps(6);
    sharded.prompt_caps(slice, 0.6, 1000, caps);
    CHECK(caps == std::vector<index_t>{full[3], full[1], full[2], full[7], full[5], full[6]});
    CHECK(sharded.base_length(slice, 0.6, 1000) == base);
}

TEST_CASE("a rank whose own heads are mostly full still gets the unsharded budget") {
    // Heads {1, 2, 3} hold 4 full heads of 6: r = 0.55 gives r*N = 3.3 <= 4 over the rank alone, which a
    // plain budget rejects; over the model r*N = 4.4 > Nfull = 4.
    const auto profile = two_layer_profile();
    const std::vector<index_t> heads{1, 2, 3};
    const hc::head_profile slice = hc::slice_profile(profile, heads);
    std::vector<index_t> caps(6);
    CHECK_THROWS_AS(hc::drift_weighted_budget{}.prompt_caps(slice, 0.55, 100, caps), hc::budget_error);
    CHECK_THROWS_AS(hc::drift_weighted_budget{}.require_feasible(slice, 0.55), hc::budget_error);
    CHECK_NOTHROW(hc::sharded_budget<>(profile, heads).require_feasible(slice, 0.55));  // judged over the model
    CHECK_THROWS_AS(hc::sharded_budget<>(profile, heads).require_feasible(slice, 0.5), hc::budget_error);  // 4 <= 4
    hc::sharded_budget<>(profile, heads).prompt_caps(slice, 0.55, 100, caps);
    for (const index_t cap : caps) CHECK((cap >= 1 && cap <= 100));
}

TEST_CASE("a sharded budget refuses a profile that is not its slice") {
    const auto profile = two_layer_profile();
    const hc::sharded_budget<> sharded(profile, {0});
    std::vector<index_t> caps(2);
    CHECK_THROWS_AS(sharded.prompt_caps(hc::slice_profile(profile, std::vector<index_t>{1, 2, 3}), 0.5, 100, caps),
                    hc::invalid_argument_error);
    const auto other = hc::uniform_profile({2, 1, 1, 8}, head_role::volatile_);
    CHECK_THROWS_AS(static_cast<void>(sharded.base_length(other, 0.5, 100)), hc::invalid_argument_error);
    sharded.prompt_caps(sharded.rank_profile(), 0.7, 100, caps);
    CHECK_THROWS_AS(hc::sharded_budget<>(profile, {0, 3}), hc::invalid_argument_error);  // splits a cluster
}

TEST_CASE("ranks over disjoint KV heads reproduce the unsharded cache bit for bit") {
    planted::scenario scenario;
    scenario.shape = {2, 4, 8, 32};
    scenario.sequences = 2;
    scenario.prompt_tokens = 192;
    scenario.steps = 24;
    scenario.targets = 8;
    scenario.heads = {{false, 0}, {true, 1}, {false, 2}, {true, 1},  // layer 0: cluster {1, 3}, anchors 0 and 2
                      {true, 0}, {true, 1}, {true, 0}, {false, 2}};  // layer 1: cluster {0, 2}, volatile 1, anchor 3
    const planted::model model(scenario);
    const hc::head_profile profile = planted_profile(model);

    hc::cache_options options;
    options.sequences = scenario.sequences;
    options.max_prompt_tokens = scenario.prompt_tokens;
    options.max_new_tokens = scenario.steps;
    options.budget_ratio = 0.6;

    std::vector<index_t> every_head(4);
    std::iota(every_head.begin(), every_head.end(), index_t{0});
    std::vector<float> reference = make_outputs(model);
    hc::kv_cache<rank_tensor> single(scenario.shape, options, profile);
    run_rank(single, model, every_head, reference);
    REQUIRE(single.storage().counters().retrieved > 0);  // satellites were refreshed

    // Two ranks that interleave (heads out of order), and one rank with every head renumbered.
    for (const auto& split : {std::vector<std::vector<index_t>>{{0, 2}, {3, 1}}, {{3, 1, 2, 0}}}) {
        CAPTURE(split.front());
        std::vector<float> sharded = make_outputs(model);
        index_t resident = 0;
        for (const auto& heads : split) {
            hc::kv_cache<rank_tensor, hc::overlap_star_classifier, hc::sharded_budget<>> rank(
                hc::slice_shape(scenario.shape, heads), options, hc::slice_profile(profile, heads), {},
                hc::sharded_budget<>(profile, heads));
            run_rank(rank, model, heads, sharded);
            resident += rank.resident_tokens();
        }
        CHECK(sharded == reference);
        CHECK(resident == single.resident_tokens());
    }
}

TEST_CASE("a rank whose own heads are mostly full runs the unsharded budget in its cache") {
    // The cache-level form of the budget test above: heads {1, 2, 3} of `two_layer_profile` hold 4 full heads of
    // 6, so r = 0.55 is infeasible over the rank alone (r*N = 3.3 <= 4) but feasible over the model (4.4 > 4).
    // A rank's cache with `sharded_budget` must accept it and keep, head for head, what the unsharded cache keeps.
    planted::scenario scenario;
    scenario.shape = {2, 4, 8, 32};
    scenario.prompt_tokens = 128;
    scenario.steps = 12;
    scenario.heads = {{false, 0}, {true, 1}, {true, 1}, {true, 2}, {false, 0}, {true, 1}, {true, 2}, {true, 2}};
    const planted::model model(scenario);
    const hc::head_profile profile = two_layer_profile();
    hc::cache_options options;
    options.max_prompt_tokens = scenario.prompt_tokens;
    options.max_new_tokens = scenario.steps;
    options.budget_ratio = 0.55;

    std::vector<index_t> every_head(4);
    std::iota(every_head.begin(), every_head.end(), index_t{0});
    std::vector<float> reference = make_outputs(model);
    hc::kv_cache<rank_tensor> single(scenario.shape, options, profile);
    run_rank(single, model, every_head, reference);

    std::vector<float> sharded = make_outputs(model);
    index_t resident = 0;
    for (const std::vector<index_t>& heads : {std::vector<index_t>{0}, std::vector<index_t>{1, 2, 3}}) {
        CAPTURE(heads.size());
        using rank_cache = hc::kv_cache<rank_tensor, hc::overlap_star_classifier, hc::sharded_budget<>>;
        const auto make = [&] {
            return std::make_unique<rank_cache>(hc::slice_shape(scenario.shape, heads), options,
                                                hc::slice_profile(profile, heads), hc::overlap_star_classifier{},
                                                hc::sharded_budget<>(profile, heads));
        };
        REQUIRE_NOTHROW(static_cast<void>(make()));
        const auto rank = make();
        run_rank(*rank, model, heads, sharded);
        resident += rank->resident_tokens();
    }
    CHECK(sharded == reference);
    CHECK(resident == single.resident_tokens());
}
