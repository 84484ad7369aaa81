// Integration guide, "A sequence's life": where an engine calls the cache, with the synchronous and the
// asynchronous retriever and with storage work on a thread pool (which must all give the same outputs).
#include <cmath>
#include <cstddef>
#include <vector>

#include <heterocache/heterocache.hpp>

#include "expect.hpp"
#include "planted_heads.hpp"

namespace hc = heterocache;
using hc::index_t;

// [snippet async]
// The default cache with its refreshes moved to a worker thread: only the Retriever parameter changes.
using async_cache = hc::kv_cache<hc::strided_kv_tensor<float>, hc::overlap_star_classifier, hc::drift_weighted_budget,
                                 hc::host_storage, hc::pivot_overlap_monitor, hc::async_retriever>;
// [/snippet]

//! Generates `scenario.steps` tokens of one sequence, the cache's bulk storage work on `queue`; returns every
//! attention output, [step][layer][query_head][head_dim].
template <class Cache>
std::vector<float> generate(Cache& cache, const planted::model& model, hc::host_queue queue = {}) {
    const planted::scenario& s = model.spec();
    const hc::model_shape& shape = s.shape;
    const index_t seq = 0, prompt_tokens = s.prompt_tokens, window_size = s.window;
    const hc::strided_kv_tensor<float> kv = model.tensor();  // the engine's K/V, written by its projections
    const auto prompt_queries = [&](index_t layer) { return model.window(layer, seq).base; };
    const float scale = 1.0f / std::sqrt(static_cast<float>(shape.head_dim));
    std::vector<float> out(static_cast<std::size_t>(shape.query_heads * shape.head_dim));
    std::vector<float> lse(static_cast<std::size_t>(shape.query_heads)), outputs;

    // [snippet prefill]
    // A sequence takes an idle slot; once the engine's own attention over the prompt has written every
    // layer's K/V, each layer is prefilled (in any order).
    cache.begin_sequence(seq, prompt_tokens);
    for (index_t layer = 0; layer < shape.layers; ++layer) {
        // The last `window_size` prompt queries of the layer, [w][query_head][head_dim]: they score which
        // prompt tokens each head keeps (1 as in the paper; SnapKV uses 32).
        const hc::query_rows window{.base = prompt_queries(layer),
                                    .count = window_size,
                                    .token_stride = shape.query_heads * shape.head_dim,
                                    .head_stride = shape.head_dim};
        cache.prefill(layer, seq, kv, window, queue);
    }
    // [/snippet]

    // [snippet decode]
    std::vector<index_t> new_tokens(static_cast<std::size_t>(cache.options().sequences), -1);  // -1: idle slot
    for (index_t step = 0; step < s.steps; ++step) {
        new_tokens[static_cast<std::size_t>(seq)] = prompt_tokens + step;  // where the engine wrote the K/V
        for (index_t layer = 0; layer < shape.layers; ++layer) {
            const float* q = model.decode_query(step, layer, seq, 0);  // [seq][query_head][head_dim]
            const hc::decode_queries queries{.base = q,
                                             .sequence_stride = shape.query_heads * shape.head_dim,
                                             .head_stride = shape.head_dim};
            // 1. Appends every stepping slot's new K/V, waits for this layer's refresh, returns what each
            //    (sequence, KV head) attends now (a monitor that ranks with the current query uses them first).
            const hc::paged_selection selection = cache.begin_layer(layer, kv, new_tokens, queries, queue);
            // 2. Attention over the selection: the reference kernel, or your own.
            hc::decode_attention(selection, q, out.data(), lse.data(), scale);
            // 3. Online profiling and drift monitoring, reading the scores decode_attention captured.
            cache.end_layer(layer, queries, hc::score_source::captured, queue);
            outputs.insert(outputs.end(), out.begin(), out.end());
        }
    }
    cache.end_sequence(seq);  // the slot is idle again
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
    options.sequences = 1;                               // slots; rows of a selection: sequences * kv_heads
    options.max_prompt_tokens = scenario.prompt_tokens;  // every buffer is planned for these sizes ...
    options.max_new_tokens = scenario.steps;             // ... so decode steps never allocate
    options.budget_ratio = 0.5;                          // r: keep half of the prompt KV
    options.profiling_steps = 8;                         // online profiling: classify from 8 queries (window, then decode)
    // [/snippet]

    // [snippet queue]
    // The cache's bulk storage work (prompt copies, appends, refills) spread over the engine's threads.
    hc::host_thread_pool pool(2);
    const hc::host_queue workers(pool);
    // [/snippet]

    hc::kv_cache<> cache(scenario.shape, options);
    hc::kv_cache<> pooled(scenario.shape, options);
    async_cache overlapped(scenario.shape, options);
    const std::vector<float> sync_outputs = generate(cache, model);
    expect(cache.profile().has_value(), "the cache has profiled itself after profiling_steps decode steps");
    expect(cache.storage().counters().retrieved > 0, "drifting pivots made the cache refresh satellites");
    expect(cache.resident_tokens() == 0, "a cache whose sequences ended holds nothing");
    expect(generate(overlapped, model) == sync_outputs,
           "the asynchronous retriever gives the synchronous one's outputs exactly");
    expect(generate(pooled, model, workers) == sync_outputs, "storage work on a thread pool gives the same outputs");

    cache.begin_sequence(0, scenario.prompt_tokens);
    for (index_t layer = 0; layer < scenario.shape.layers; ++layer) cache.prefill(layer, 0, model.tensor(), model.window(layer, 0));
    expect(cache.resident_tokens() < scenario.shape.total_kv_heads() * scenario.prompt_tokens,
           "a sequence that begins after profiling is compressed from its prefill on");
    return 0;
}
