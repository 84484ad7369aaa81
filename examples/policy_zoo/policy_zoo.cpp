// Policy zoo: the well-known KV-compression methods, each a composition of HeteroCache's policies
// (heterocache/baselines.hpp), side by side on synthetic heads with planted behaviour: the attention error
// of each against the full cache at the same budget, the prompt tokens it keeps hot, the bytes it fetches.
//
// Scenario: 4 layers x 8 KV heads (GQA 2), T = 1024, 64 decode steps. In each layer a group of 3 or 4 heads
// drifts together to new tokens every 16 steps; the other heads attend fixed tokens. The observation window
// is SnapKV's 32 queries. HeteroCache profiles online (full attention for the first 8 steps), so errors are
// averaged over the steps after that, for every method. DuoAttention uses a profile calibrated offline (one
// run of its stability-only classifier over the same scenario at r = 1), as DuoAttention does.
//
// Exit status 1 when a method at r = 1 differs from the full cache in any bit.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include <heterocache/heterocache.hpp>

#include "attention_error.hpp"
#include "planted_heads.hpp"

namespace hc = heterocache;
using hc::index_t;

namespace {

constexpr index_t profiling_steps = 8;

planted::scenario zoo_scenario() {
    planted::scenario s;
    s.shape = {4, 8, 16, 64};
    s.prompt_tokens = 1024;
    s.steps = 64;
    s.window = hc::snapkv_window;
    s.targets = 16;
    s.drift_period = 16;
    for (index_t layer = 0; layer < s.shape.layers; ++layer) {
        const index_t drifting = layer % 2 == 0 ? 4 : 3;  // heads [0, drifting) drift together as group 0
        for (index_t head = 0; head < s.shape.kv_heads; ++head)
            s.heads.push_back(head < drifting ? planted::head_plan{true, 0} : planted::head_plan{false, head});
    }
    return s;
}

hc::cache_options options_for(const planted::scenario& s, double r) {
    hc::cache_options o;
    o.max_prompt_tokens = s.prompt_tokens;
    o.max_new_tokens = s.steps;
    o.budget_ratio = r;
    o.profiling_steps = profiling_steps;
    return o;
}

//! Decode attention outputs of every (step, layer), `[query_head][d]` each.
template <class Cache>
std::vector<std::vector<float>> attention_outputs(Cache& cache, const planted::model& m) {
    const auto& sh = m.spec().shape;
    const float scale = 1.0f / std::sqrt(static_cast<float>(sh.head_dim));
    std::vector<std::vector<float>> outputs;
    std::vector<float> lse(static_cast<std::size_t>(sh.query_heads));
    planted::drive(cache, m, [&](index_t, index_t, const hc::paged_selection& s, const float* q) {
        std::vector<float> out(static_cast<std::size_t>(sh.query_heads * sh.head_dim));
        hc::decode_attention(s, q, out.data(), lse.data(), scale);
        outputs.push_back(std::move(out));
    });
    return outputs;
}

struct result {
    double mean_error = 0.0, worst_error = 0.0, hot_fraction = 0.0, fetched_mib = 0.0;
    bool identical = true;
};

template <class Cache>
result measure(Cache& cache, const planted::model& m, const std::vector<std::vector<float>>& reference) {
    const auto& s = m.spec();
    const auto outputs = attention_outputs(cache, m);
    result r;
    index_t counted = 0;
    for (std::size_t i = 0; i < outputs.size(); ++i) {
        r.identical = r.identical && std::memcmp(outputs[i].data(), reference[i].data(), sizeof(float) * outputs[i].size()) == 0;
        if (static_cast<index_t>(i) < profiling_steps * s.shape.layers) continue;
        const double e = planted::relative_error(outputs[i], reference[i]);
        r.mean_error += e, r.worst_error = std::max(r.worst_error, e), ++counted;
    }
    r.mean_error /= static_cast<double>(counted);
    const index_t heads = s.shape.total_kv_heads();
    r.hot_fraction = static_cast<double>(cache.resident_tokens() - heads * s.steps) / static_cast<double>(heads * s.prompt_tokens);
    r.fetched_mib = static_cast<double>(cache.storage().counters().retrieved) / (1024.0 * 1024.0);
    return r;
}

//! DuoAttention's offline step: its stability-only classifier over one calibration run at r = 1.
hc::head_profile calibrate_duo_attention(const planted::model& m) {
    auto o = options_for(m.spec(), 1.0);
    hc::kv_cache<hc::strided_kv_tensor<float>, hc::overlap_star_classifier, hc::uniform_budget, hc::host_storage, hc::static_monitor>
        calibration(m.spec().shape, o, std::nullopt, hc::overlap_star_classifier{0.5, 0.5, false});
    attention_outputs(calibration, m);
    return *calibration.profile();
}

//! Every method at ratio `r`, one row each: `row(name, result)`.
template <class Row>
void run_zoo(const planted::model& m, double r, const hc::head_profile& duo_profile,
             const std::vector<std::vector<float>>& reference, Row&& row) {
    const auto& sh = m.spec().shape;
    const auto o = options_for(m.spec(), r);
    // DuoAttention keeps its drifting heads whole; a budget too small for them demotes the most stable first.
    auto duo = duo_profile;
    hc::demote_until_feasible(duo, r);
    {
        auto c = hc::make_full_cache(sh, o);
        row("full", measure(c, m, reference));
    }
    {
        auto c = hc::make_streaming_llm_cache(sh, o);
        row("StreamingLLM", measure(c, m, reference));
    }
    {
        auto c = hc::make_h2o_cache(sh, o);
        row("H2O", measure(c, m, reference));
    }
    {
        auto c = hc::make_snapkv_cache(sh, o);
        row("SnapKV", measure(c, m, reference));
    }
    {
        auto c = hc::make_pyramidkv_cache(sh, o);
        row("PyramidKV", measure(c, m, reference));
    }
    {
        auto c = hc::make_ada_kv_cache(sh, o);
        row("Ada-KV (Ada-SnapKV)", measure(c, m, reference));
    }
    {
        auto c = hc::make_quest_cache(sh, o);
        row("Quest", measure(c, m, reference));
    }
    {
        auto c = hc::make_duo_attention_cache(sh, o, duo);
        row("DuoAttention-style", measure(c, m, reference));
    }
    {
        auto c = hc::make_heterocache_cache(sh, o);
        row("HeteroCache", measure(c, m, reference));
    }
    {
        auto c = hc::make_heterocache_ada_kv_cache(sh, o);
        row("HeteroCache + Ada-KV", measure(c, m, reference));
    }
}

}  // namespace

int main() {
    const planted::model model(zoo_scenario());
    const auto& s = model.spec();
    auto full = hc::make_full_cache(s.shape, options_for(s, 1.0));
    const auto reference = attention_outputs(full, model);
    const auto duo_profile = calibrate_duo_attention(model);

    int failures = 0;
    run_zoo(model, 1.0, duo_profile, reference, [&](const char* name, const result& r) {
        if (!r.identical) std::printf("%s at r = 1 differs from the full cache\n", name), ++failures;
    });
    std::printf("r = 1: %s\n\n", failures == 0 ? "every method reproduces the full cache bit for bit" : "MISMATCH");

    constexpr double ratio = 0.25;
    std::printf("Policy zoo: %lld layers x %lld KV heads (GQA %lld), T = %lld, %lld decode steps, r = %.2f\n",
                static_cast<long long>(s.shape.layers), static_cast<long long>(s.shape.kv_heads),
                static_cast<long long>(s.shape.group_size()), static_cast<long long>(s.prompt_tokens),
                static_cast<long long>(s.steps), ratio);
    std::printf("relative L2 error of the attention output vs the full cache, steps %lld..%lld\n\n",
                static_cast<long long>(profiling_steps), static_cast<long long>(s.steps - 1));
    std::printf("%-22s %12s %12s %12s %14s\n", "method", "mean error", "worst error", "hot prompt", "fetched MiB");
    run_zoo(model, ratio, duo_profile, reference, [&](const char* name, const result& r) {
        std::printf("%-22s %12.4f %12.4f %12.3f %14.2f\n", name, r.mean_error, r.worst_error, r.hot_fraction, r.fetched_mib);
    });
    return failures == 0 ? 0 : 1;
}
