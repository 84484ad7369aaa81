// Tensor parallelism: two ranks (threads), each with its own kv_cache over half of the KV heads, reproduce
// the attention outputs of one cache over the whole model bit for bit. Exits non-zero if they differ.
//
// 1. Profile once: an online-profiling cache over the whole model classifies every head; the profile is
//    saved and loaded back, as a deployment would reuse it.
// 2. Reference: one cache over the whole model, constructed with that profile.
// 3. Ranks: rank r owns KV heads tensor_parallel_heads(Hkv, 2, r) of every layer and their query heads. Its
//    cache gets slice_profile(profile, heads) and a sharded_budget, so every head keeps what it keeps in
//    the reference.
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <numeric>
#include <thread>
#include <vector>

#include <heterocache/budget/sharded_budget.hpp>
#include <heterocache/heterocache.hpp>
#include <heterocache/profile/profile_slice.hpp>

#include "tensor_parallel.hpp"

namespace hc = heterocache;
using hc::index_t;

int main() {
    planted::scenario scenario;
    scenario.shape = {4, 4, 8, 64};  // 4 layers, 4 KV heads, 8 query heads (GQA 2), head dim 64
    scenario.prompt_tokens = 512;
    scenario.steps = 48;
    scenario.targets = 16;
    // Per layer, clusters stay inside one half: even layers {0,1} drift together, 2 and 3 are stable; odd
    // layers 0 is stable, 1 drifts alone, {2,3} drift together.
    for (index_t layer = 0; layer < scenario.shape.layers; ++layer) {
        if (layer % 2 == 0) scenario.heads.insert(scenario.heads.end(), {{true, 0}, {true, 0}, {false, 1}, {false, 2}});
        else scenario.heads.insert(scenario.heads.end(), {{false, 0}, {true, 1}, {true, 2}, {true, 2}});
    }
    const planted::model model(scenario);
    const hc::model_shape& shape = scenario.shape;

    hc::cache_options options;
    options.max_prompt_tokens = scenario.prompt_tokens;
    options.max_new_tokens = scenario.steps;
    options.budget_ratio = 0.5;

    // 1. Profile online, save, load.
    const auto profile_path = std::filesystem::temp_directory_path() / "heterocache-tensor-parallel.profile";
    {
        hc::kv_cache<> profiling(shape, options);
        planted::drive(profiling, model, [](index_t, index_t, const hc::paged_selection&, const float*) {});
        hc::save_profile(profile_path, *profiling.profile());
    }
    const hc::head_profile profile = hc::load_profile(profile_path);
    std::filesystem::remove(profile_path);

    // 2. The reference: one cache over every head.
    std::vector<index_t> every_head(static_cast<std::size_t>(shape.kv_heads));
    std::iota(every_head.begin(), every_head.end(), index_t{0});
    std::vector<float> reference = tensor_parallel::make_outputs(model);
    hc::kv_cache<tensor_parallel::rank_tensor> single(shape, options, profile);
    tensor_parallel::run_rank(single, model, every_head, reference);

    // 3. Two ranks, one thread each, writing their query heads into one output (the all-gather).
    constexpr index_t ranks = 2;
    // [snippet rank_cache]
    // A rank's cache: its own K/V tensor (here a view of its heads), the default classifier (unused: the
    // profile is given) and a budget computed over the whole model.
    using rank_cache = hc::kv_cache<tensor_parallel::rank_tensor, hc::overlap_star_classifier, hc::sharded_budget<>>;
    // [/snippet]
    std::vector<float> sharded = tensor_parallel::make_outputs(model);
    std::vector<index_t> resident(ranks, 0);
    std::vector<std::uint64_t> retrieved(ranks, 0);
    std::vector<std::exception_ptr> failures(ranks);
    std::vector<std::thread> threads;
    for (index_t rank = 0; rank < ranks; ++rank)
        threads.emplace_back([&, rank] {
            try {
                // [snippet rank_setup]
                // On rank `rank` of `ranks`: the KV heads it owns in every layer (their query heads come along),
                // the model shape it sees, the slice of the model's profile, and the unsharded budgets.
                const std::vector<index_t> heads = hc::tensor_parallel_heads(shape.kv_heads, ranks, rank);
                rank_cache cache(hc::slice_shape(shape, heads), options, hc::slice_profile(profile, heads), {},
                                 hc::sharded_budget<>(profile, heads));
                // [/snippet]
                tensor_parallel::run_rank(cache, model, heads, sharded);
                resident[static_cast<std::size_t>(rank)] = cache.resident_tokens();
                retrieved[static_cast<std::size_t>(rank)] = cache.storage().counters().retrieved;
            } catch (...) {
                failures[static_cast<std::size_t>(rank)] = std::current_exception();
            }
        });
    for (auto& thread : threads) thread.join();
    for (const auto& failure : failures)
        if (failure) std::rethrow_exception(failure);

    const bool identical = sharded == reference;
    const index_t rank_tokens = std::accumulate(resident.begin(), resident.end(), index_t{0});
    const std::uint64_t rank_bytes = std::accumulate(retrieved.begin(), retrieved.end(), std::uint64_t{0});
    const std::uint64_t single_bytes = single.storage().counters().retrieved;
    std::printf("HeteroCache tensor parallel: %lld layers x %lld KV heads over %lld ranks, prompt %lld, %lld steps\n",
                static_cast<long long>(shape.layers), static_cast<long long>(shape.kv_heads), static_cast<long long>(ranks),
                static_cast<long long>(scenario.prompt_tokens), static_cast<long long>(scenario.steps));
    std::printf("profile: anchors %lld, volatile %lld, pivots %lld, satellites %lld\n",
                static_cast<long long>(profile.count(hc::head_role::anchor)),
                static_cast<long long>(profile.count(hc::head_role::volatile_)),
                static_cast<long long>(profile.count(hc::head_role::pivot)),
                static_cast<long long>(profile.count(hc::head_role::satellite)));
    std::printf("hot tokens: single cache %lld, ranks %lld + %lld\n", static_cast<long long>(single.resident_tokens()),
                static_cast<long long>(resident[0]), static_cast<long long>(resident[1]));
    std::printf("retrieved cold -> hot after drift: single cache %.1f KiB, ranks %.1f KiB\n",
                static_cast<double>(single_bytes) / 1024.0, static_cast<double>(rank_bytes) / 1024.0);
    std::printf("attention outputs of the ranks vs the single cache: %s\n", identical ? "bit-identical" : "DIFFERENT");
    // Drift must have happened, or the refresh path would be untested.
    return identical && rank_tokens == single.resident_tokens() && rank_bytes == single_bytes && single_bytes > 0 ? 0 : 1;
}
