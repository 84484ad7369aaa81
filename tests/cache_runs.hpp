#pragma once
// Test support: runs a cache over a planted scenario and records what an engine would see.

#include <cmath>
#include <cstring>
#include <vector>

#include <heterocache/attention/decode_attention.hpp>
#include <heterocache/cache_options.hpp>
#include <heterocache/profile/head_profile.hpp>

#include "planted_heads.hpp"

namespace testing_support {

using heterocache::index_t;

//! A small planted scenario: 2 layers x 3 KV heads (GQA 2), d = 32, 160 prompt tokens, 40 decode steps.
inline planted::scenario small_scenario() {
    planted::scenario s;
    s.shape = {2, 3, 6, 32};
    s.prompt_tokens = 160;
    s.steps = 40;
    s.targets = 6;
    s.drift_period = 10;
    return s;
}

//! Options sized for `s` at kept fraction `r`, profiling online over 6 decode steps.
inline heterocache::cache_options options_for(const planted::scenario& s, double r) {
    heterocache::cache_options o;
    o.sequences = s.sequences;
    o.max_prompt_tokens = s.prompt_tokens;
    o.max_new_tokens = s.steps;
    o.budget_ratio = r;
    o.profiling_steps = 6;
    return o;
}

//! The positions the first `count` tokens of `row` of `layer` hold now, in row order (read through the row
//! table and the hot tier; -1: all of them). A row lists its prompt tokens first, in position order.
template <class Cache>
std::vector<index_t> row_positions(const Cache& cache, index_t layer, index_t row, index_t count = -1) {
    std::vector<index_t> positions;
    const index_t tokens = count < 0 ? cache.rows().length(layer, row) : count;
    for (index_t k = 0; k < tokens; ++k)
        positions.push_back(cache.storage().hot_position(layer, cache.rows().slot(layer, row, k)));
    return positions;
}

//! Attention outputs and log-sum-exps of every (step, layer), `[seq][query_head][d]` each.
struct attention_trace {
    std::vector<std::vector<float>> outputs, lses;
};

//! Drives `cache` over the planted model (`planted::drive`: the step API) and records `decode_attention` over
//! each layer's selection, of any element type. `after_layer(step, layer)` runs after each layer's
//! `end_layer` (for invariant checks). `scores`: whether
//! the monitor reads the scores `decode_attention` captured, or recomputes them.
template <class Cache, class AfterLayer>
attention_trace record_attention(Cache& cache, const planted::model& m, AfterLayer&& after_layer,
                                 heterocache::score_source scores = heterocache::score_source::recompute) {
    const auto& sh = m.spec().shape;
    const auto heads = static_cast<std::size_t>(m.spec().sequences * sh.query_heads);
    attention_trace trace;
    const float scale = 1.0f / std::sqrt(static_cast<float>(sh.head_dim));
    index_t last_step = -1, last_layer = -1;
    planted::drive(cache, m, [&](index_t step, index_t layer, const auto& s, const float* q) {  // any element type
        if (last_step >= 0) after_layer(last_step, last_layer);
        std::vector<float> out(heads * static_cast<std::size_t>(sh.head_dim)), lse(heads);
        heterocache::decode_attention(s, q, out.data(), lse.data(), scale);
        trace.outputs.push_back(std::move(out));
        trace.lses.push_back(std::move(lse));
        last_step = step, last_layer = layer;
    }, scores);
    if (last_step >= 0) after_layer(last_step, last_layer);
    return trace;
}

template <class Cache>
attention_trace record_attention(Cache& cache, const planted::model& m) {
    return record_attention(cache, m, [](index_t, index_t) {});
}

//! True when two traces are equal bit for bit.
inline bool identical(const attention_trace& a, const attention_trace& b) {
    if (a.outputs.size() != b.outputs.size()) return false;
    for (std::size_t i = 0; i < a.outputs.size(); ++i)
        if (std::memcmp(a.outputs[i].data(), b.outputs[i].data(), a.outputs[i].size() * sizeof(float)) != 0 ||
            std::memcmp(a.lses[i].data(), b.lses[i].data(), a.lses[i].size() * sizeof(float)) != 0)
            return false;
    return true;
}

//! The planted heads as a profile: drifting heads that share a group form a cluster (lowest head pivots),
//! a drifting head alone is volatile, a stable head is an anchor.
inline heterocache::head_profile planted_profile(const planted::model& m) {
    const auto& sh = m.spec().shape;
    heterocache::head_profile p{sh.layers, sh.kv_heads, 0.5, 0.5, 0, {}};
    for (index_t l = 0; l < sh.layers; ++l)
        for (index_t h = 0; h < sh.kv_heads; ++h) {
            const auto& plan = m.plan(l, h);
            index_t first = -1, members = 0;
            for (index_t o = 0; o < sh.kv_heads; ++o)
                if (m.plan(l, o).group == plan.group && m.plan(l, o).drifting) {
                    members += 1;
                    if (first < 0) first = o;
                }
            heterocache::head_info info{heterocache::head_role::anchor, 0.9, -1};
            if (plan.drifting) {
                info.stability = 0.2;
                if (members > 1) info = {first == h ? heterocache::head_role::pivot : heterocache::head_role::satellite, 0.2, first};
                else info.role = heterocache::head_role::volatile_;
            }
            p.heads.push_back(info);
        }
    return p;
}

}  // namespace testing_support
