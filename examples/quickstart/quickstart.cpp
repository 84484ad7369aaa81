// Quickstart: HeteroCache on synthetic Q/K/V with planted stable, drifting and redundant heads.
// Profiles online, prints the roles it found against the planted ones, the per-head budgets, and the
// decode attention error against the full cache. Exits 1 unless every role is recovered and the mean error
// after profiling stays below 0.15.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <heterocache/heterocache.hpp>

#include "attention_error.hpp"
#include "planted_heads.hpp"

namespace hc = heterocache;

namespace {

std::string planted_name(const planted::model& m, hc::index_t layer, hc::index_t head) {
    const auto& p = m.plan(layer, head);
    int members = 0;
    for (hc::index_t h = 0; h < m.spec().shape.kv_heads; ++h) members += m.plan(layer, h).group == p.group ? 1 : 0;
    return std::string(p.drifting ? "drifting" : "stable") + (members > 1 ? "+redundant" : "");
}

}  // namespace

int main() {
    planted::scenario scenario;
    scenario.shape = {6, 3, 9, 64};  // 6 layers, 3 KV heads, 9 query heads (GQA 3), head dim 64
    scenario.prompt_tokens = 1024;
    scenario.steps = 64;
    scenario.targets = 24;
    scenario.drift_period = 16;  // drifting heads move every 16 steps; pivots check every 5
    const planted::model model(scenario);

    hc::cache_options options;
    options.max_prompt_tokens = scenario.prompt_tokens;
    options.max_new_tokens = scenario.steps;
    options.budget_ratio = 0.5;
    options.profiling_steps = 8;
    // The planted heads drift during decoding only (their prompt windows all look at the prompt's focus), so
    // profile the first decode steps; a real model's window already shows it (the default profiles the window).
    options.profile_from_window = false;

    hc::kv_cache<> cache(scenario.shape, options);
    auto full = hc::make_full_cache(scenario.shape, options);

    const auto& sh = scenario.shape;
    const hc::index_t outputs = sh.query_heads * sh.head_dim;
    const float scale = 1.0f / std::sqrt(static_cast<float>(sh.head_dim));
    std::vector<float> out_full(static_cast<std::size_t>(outputs)), out_hc(out_full.size());
    std::vector<float> lse_full(static_cast<std::size_t>(sh.query_heads)), lse_hc(lse_full.size());
    std::vector<std::vector<float>> reference(static_cast<std::size_t>(scenario.steps * sh.layers));

    planted::drive(full, model, [&](hc::index_t step, hc::index_t layer, const hc::paged_selection& s, const float* q) {
        hc::decode_attention(s, q, out_full.data(), lse_full.data(), scale);
        reference[static_cast<std::size_t>(step * sh.layers + layer)] = out_full;
    });
    double worst_after_profiling = 0.0, sum_after_profiling = 0.0;
    hc::index_t counted = 0;
    planted::drive(cache, model, [&](hc::index_t step, hc::index_t layer, const hc::paged_selection& s, const float* q) {
        hc::decode_attention(s, q, out_hc.data(), lse_hc.data(), scale);
        if (step < options.profiling_steps) return;
        const double relative = planted::relative_error(out_hc, reference[static_cast<std::size_t>(step * sh.layers + layer)]);
        worst_after_profiling = std::max(worst_after_profiling, relative);
        sum_after_profiling += relative;
        ++counted;
    });

    const hc::head_profile& profile = *cache.profile();
    const auto caps = cache.prompt_caps(0);
    std::printf("HeteroCache quickstart: %lld layers x %lld KV heads, prompt %lld tokens, r = %.2f\n\n",
                static_cast<long long>(sh.layers), static_cast<long long>(sh.kv_heads),
                static_cast<long long>(scenario.prompt_tokens), options.budget_ratio);
    std::printf("layer head  planted              found      stability  hot prompt tokens\n");
    int agree = 0;
    for (hc::index_t l = 0; l < sh.layers; ++l)
        for (hc::index_t h = 0; h < sh.kv_heads; ++h) {
            const auto& info = profile.at(l, h);
            const std::string planted = planted_name(model, l, h);
            std::string found(hc::role_name(info.role));
            if (info.role == hc::head_role::satellite) found += "->" + std::to_string(info.pivot);
            const bool drifting_found = info.role == hc::head_role::pivot || info.role == hc::head_role::satellite ||
                                        info.role == hc::head_role::volatile_;
            const bool clustered = info.role == hc::head_role::pivot || info.role == hc::head_role::satellite;
            const bool redundant = planted.find("redundant") != std::string::npos;
            const bool match = drifting_found == model.plan(l, h).drifting && clustered == redundant;
            agree += match ? 1 : 0;
            std::printf("%5lld %4lld  %-19s  %-10s %9.3f  %6lld%s\n", static_cast<long long>(l), static_cast<long long>(h),
                        planted.c_str(), found.c_str(), info.stability,
                        static_cast<long long>(caps[static_cast<std::size_t>(l * sh.kv_heads + h)]), match ? "" : "   <- differs");
        }
    const double total_heads = static_cast<double>(sh.total_kv_heads());
    const double resident = static_cast<double>(cache.resident_tokens());
    const double full_tokens = static_cast<double>(full.resident_tokens());
    std::printf("\nroles recovered: %d of %lld heads\n", agree, static_cast<long long>(sh.total_kv_heads()));
    std::printf("anchors %lld, volatile %lld, pivots %lld, satellites %lld\n",
                static_cast<long long>(profile.count(hc::head_role::anchor)),
                static_cast<long long>(profile.count(hc::head_role::volatile_)),
                static_cast<long long>(profile.count(hc::head_role::pivot)),
                static_cast<long long>(profile.count(hc::head_role::satellite)));
    std::printf("hot tier: %.0f tokens resident vs %.0f for the full cache (%.3f of full; %.0f heads)\n", resident,
                full_tokens, resident / full_tokens, total_heads);
    std::printf("retrieved cold -> hot: %.1f KiB over %lld decode steps\n",
                static_cast<double>(cache.storage().counters().retrieved) / 1024.0, static_cast<long long>(scenario.steps));
    const double mean_after_profiling = sum_after_profiling / static_cast<double>(counted);
    std::printf("attention output error vs full cache after profiling (relative L2): mean %.2e, worst %.2e\n",
                mean_after_profiling, worst_after_profiling);
    return agree == sh.total_kv_heads() && mean_after_profiling < 0.15 ? 0 : 1;
}
