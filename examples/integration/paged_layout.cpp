// Integration guide, "Describe your KV memory": a paged KV cache with a block table.
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include <heterocache/heterocache.hpp>

#include "expect.hpp"
#include "planted_heads.hpp"

namespace hc = heterocache;
using hc::index_t;

int main() {
    planted::scenario scenario;  // the engine's model: 2 layers, 3 KV heads, 6 query heads, head dim 64
    scenario.prompt_tokens = 200;
    scenario.steps = 8;
    const planted::model model(scenario);
    const hc::model_shape& shape = scenario.shape;
    const index_t sequences = 1, kv_heads = shape.kv_heads, head_dim = shape.head_dim;
    const index_t tokens = scenario.prompt_tokens + scenario.steps;
    hc::cache_options options;
    options.max_prompt_tokens = scenario.prompt_tokens;
    options.max_new_tokens = scenario.steps;
    options.profiling_steps = 4;

    // The engine's paging: 16-token pages handed out in any order from a pool shared by all sequences.
    const index_t page_size = 16, max_pages = (tokens + page_size - 1) / page_size, num_pages = 2 * max_pages;
    std::vector<index_t> block_table(static_cast<std::size_t>(sequences * max_pages));
    std::vector<index_t> free_pages(static_cast<std::size_t>(num_pages));
    std::iota(free_pages.begin(), free_pages.end(), index_t{0});
    std::shuffle(free_pages.begin(), free_pages.end(), std::mt19937_64(7));
    std::copy_n(free_pages.begin(), block_table.size(), block_table.begin());
    const auto pool_floats = static_cast<std::size_t>(shape.layers * num_pages * page_size * kv_heads * head_dim);
    std::vector<float> key_pool(pool_floats), value_pool(pool_floats);

    // [snippet paged]
    // Per layer a pool [num_pages][page_size][kv_heads][head_dim] (the "NHD" block layout of vLLM and
    // FlashInfer), the layers' pools back to back; block_table[seq * max_pages + p] is the page holding
    // tokens [p * page_size, (p + 1) * page_size) of sequence seq.
    const hc::paged_kv_layout paged{
        .keys = key_pool.data(),
        .values = value_pool.data(),
        .page_table = block_table.data(),
        .page_table_stride = max_pages,
        .page_size = page_size,
        .layer_stride = num_pages * page_size * kv_heads * head_dim,
        .heads = kv_heads,
        .dim = head_dim,
    };
    hc::kv_cache<hc::paged_kv_layout> cache(shape, options);
    // [/snippet]

    // The engine writes each token's K/V into its page (here: copied from the planted model's tensors).
    const hc::strided_kv_layout contiguous = model.layout();
    const auto bytes = sizeof(float) * static_cast<std::size_t>(head_dim);
    for (index_t layer = 0; layer < shape.layers; ++layer)
        for (index_t head = 0; head < kv_heads; ++head)
            for (index_t t = 0; t < tokens; ++t) {
                std::memcpy(const_cast<float*>(paged.key(layer, 0, head, t)), contiguous.key(layer, 0, head, t), bytes);
                std::memcpy(const_cast<float*>(paged.value(layer, 0, head, t)), contiguous.value(layer, 0, head, t), bytes);
            }

    // The same cache over the contiguous tensors must select and hold exactly the same tokens.
    hc::kv_cache<> reference(shape, options);
    for (index_t layer = 0; layer < shape.layers; ++layer) {
        cache.prefill(layer, 0, paged, scenario.prompt_tokens, model.window(layer, 0));
        reference.prefill(layer, 0, contiguous, scenario.prompt_tokens, model.window(layer, 0));
    }
    for (index_t step = 0; step < scenario.steps; ++step)
        for (index_t layer = 0; layer < shape.layers; ++layer) {
            cache.append(layer, 0, paged, scenario.prompt_tokens + step);
            reference.append(layer, 0, contiguous, scenario.prompt_tokens + step);
            const hc::csr_selection a = cache.selection(layer), b = reference.selection(layer);
            expect(std::equal(a.indptr.begin(), a.indptr.end(), b.indptr.begin(), b.indptr.end()),
                   "a paged layout selects what a contiguous one does");
            for (index_t i = 0; i < a.total_tokens(); ++i)
                expect(std::memcmp(a.keys + a.indices[i] * head_dim, b.keys + b.indices[i] * head_dim, bytes) == 0 &&
                           std::memcmp(a.values + a.indices[i] * head_dim, b.values + b.indices[i] * head_dim, bytes) == 0,
                       "a paged layout holds the same K/V as a contiguous one");
            cache.observe(layer, 0, model.decode_query(step, layer, 0, 0), head_dim);
            reference.observe(layer, 0, model.decode_query(step, layer, 0, 0), head_dim);
        }
    return 0;
}
