// Integration guide, "A decode step": where an engine calls the cache, with the synchronous and the
// asynchronous retriever (which must give the same outputs).
#include <cmath>
#include <cstddef>
#include <vector>

#include <heterocache/heterocache.hpp>

#include "expect.hpp"
#include "planted_heads.hpp"

namespace hc = heterocache;
using hc::index_t;

// [snippet async]
// The default cache with its refreshes moved to worker threads: only the Retriever parameter changes.
using async_cache = hc::kv_cache<hc::strided_kv_layout, hc::overlap_star_classifier, hc::drift_weighted_budget,
                                 hc::host_storage, hc::pivot_overlap_monitor, hc::async_retriever>;
// [/snippet]

//! Generates `scenario.steps` tokens of one sequence; returns every attention output, [step][layer][q][d].
template <class Cache>
std::vector<float> generate(Cache& cache, const planted::model& model) {
    const planted::scenario& s = model.spec();
    const hc::model_shape& shape = s.shape;
    const index_t seq = 0, prompt_tokens = s.prompt_tokens, window_size = s.window;
    const hc::strided_kv_layout kv = model.layout();  // the engine's K/V tensors, written by its projections
    const auto prompt_queries = [&](index_t layer) { return model.window(layer, seq).base; };
    const float scale = 1.0f / std::sqrt(static_cast<float>(shape.head_dim));
    std::vector<float> out(static_cast<std::size_t>(shape.query_heads * shape.head_dim));
    std::vector<float> lse(static_cast<std::size_t>(shape.query_heads)), outputs;

    // [snippet prefill]
    // Prefill, once the engine's own attention over the prompt has written every layer's K/V.
    for (index_t layer = 0; layer < shape.layers; ++layer) {
        // The last `window_size` prompt queries of the layer, [w][query_head][head_dim]: they score which
        // prompt tokens each head keeps (1 as in the paper; SnapKV uses 32).
        const hc::query_rows window{.base = prompt_queries(layer),
                                    .count = window_size,
                                    .token_stride = shape.query_heads * shape.head_dim,
                                    .head_stride = shape.head_dim};
        cache.prefill(layer, seq, kv, prompt_tokens, window);
    }
    // [/snippet]

    // [snippet decode]
    for (index_t step = 0; step < s.steps; ++step) {
        const index_t token = prompt_tokens + step;  // where the engine wrote this token's K/V
        for (index_t layer = 0; layer < shape.layers; ++layer) {
            const float* q = model.decode_query(step, layer, seq, 0);     // [query_head][head_dim]
            cache.append(layer, seq, kv, token);                           // 1. the new token's K and V
            const hc::csr_selection selection = cache.selection(layer);   // 2. what each head attends now
            hc::decode_attention(selection, q, out.data(), lse.data(), scale);  // 3. or your own kernel
            cache.observe(layer, seq, q, shape.head_dim, hc::score_source::captured);  // 4. profiling, drift
            outputs.insert(outputs.end(), out.begin(), out.end());
        }
    }
    // [/snippet]
    return outputs;
}

int main() {
    planted::scenario scenario;
    scenario.prompt_tokens = 256;
    scenario.steps = 32;
    const planted::model model(scenario);

    // [snippet options]
    hc::cache_options options;
    options.sequences = 1;                               // rows of the selection: sequences * kv_heads
    options.max_prompt_tokens = scenario.prompt_tokens;  // every buffer is planned for these sizes ...
    options.max_new_tokens = scenario.steps;             // ... so decode steps never allocate
    options.budget_ratio = 0.5;                          // r: keep half of the prompt KV
    options.profiling_steps = 8;                         // online profiling: classify after 8 decode steps
    // [/snippet]

    hc::kv_cache<> cache(scenario.shape, options);
    async_cache overlapped(scenario.shape, options);
    const std::vector<float> sync_outputs = generate(cache, model);
    const std::vector<float> async_outputs = generate(overlapped, model);
    expect(cache.profile().has_value(), "the cache has profiled itself after profiling_steps decode steps");
    expect(cache.storage().counters().retrieved > 0, "drifting pivots made the cache refresh satellites");
    expect(sync_outputs == async_outputs, "the asynchronous retriever gives the synchronous one's outputs exactly");
    expect(cache.resident_tokens() < scenario.shape.total_kv_heads() * (scenario.prompt_tokens + scenario.steps),
           "the hot tier holds fewer tokens than the full cache");
    return 0;
}
