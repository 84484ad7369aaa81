// Integration guide, "Describe your KV memory": a paged KV cache with a page table.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include <heterocache/heterocache.hpp>

#include "expect.hpp"
#include "planted_heads.hpp"

namespace hc = heterocache;
using hc::index_t;

//! Whether two selections list the same K/V, token by token, in the same order.
bool same_kv(const hc::paged_selection& a, const hc::paged_selection& b) {
    if (a.rows != b.rows) return false;
    const auto bytes = sizeof(float) * static_cast<std::size_t>(a.head_dim);
    for (index_t row = 0; row < a.rows; ++row) {
        if (a.row_length(row) != b.row_length(row)) return false;
        for (index_t k = 0; k < a.row_length(row); ++k) {
            const index_t x = a.slot(row, k) * a.head_dim, y = b.slot(row, k) * b.head_dim;
            if (std::memcmp(a.keys + x, b.keys + y, bytes) != 0 || std::memcmp(a.values + x, b.values + y, bytes) != 0)
                return false;
        }
    }
    return true;
}

int main() {
    planted::scenario scenario;  // the engine's model: 2 layers, 3 KV heads, 6 query heads, head dim 64
    scenario.prompt_tokens = 200;
    scenario.steps = 8;
    const planted::model model(scenario);
    const hc::model_shape& shape = scenario.shape;
    const index_t seq = 0, kv_heads = shape.kv_heads, head_dim = shape.head_dim;
    const index_t tokens = scenario.prompt_tokens + scenario.steps;
    hc::cache_options options;
    options.max_prompt_tokens = scenario.prompt_tokens;
    options.max_new_tokens = scenario.steps;
    options.profiling_steps = 4;

    // The engine's paging: 16-token pages handed out in any order from a pool shared by all sequences.
    const index_t page_size = 16, max_pages = (tokens + page_size - 1) / page_size, num_pages = 2 * max_pages;
    std::vector<std::int32_t> free_pages(static_cast<std::size_t>(num_pages));
    std::iota(free_pages.begin(), free_pages.end(), 0);
    std::shuffle(free_pages.begin(), free_pages.end(), std::mt19937_64(7));
    const std::vector<std::int32_t> page_table(free_pages.begin(), free_pages.begin() + max_pages);
    const auto pool_elements = static_cast<std::size_t>(shape.layers * num_pages * page_size * kv_heads * head_dim);
    std::vector<float> key_pool(pool_elements), value_pool(pool_elements);

    // [snippet paged]
    // Per layer a pool [num_pages][page_size][kv_heads][head_dim] (the "NHD" layout of vLLM and FlashInfer),
    // the layers' pools back to back; page_table[seq * max_pages + p] (int32) is the page holding tokens
    // [p * page_size, (p + 1) * page_size) of sequence seq.
    const hc::paged_kv_tensor<float> paged{
        .keys = key_pool.data(),
        .values = value_pool.data(),
        .map = {.page_table = page_table.data(),
                .page_table_stride = max_pages,
                .page_size = page_size,
                .layer_stride = num_pages * page_size * kv_heads * head_dim,
                .kv_heads = kv_heads,
                .head_dim = head_dim},
        .heads = kv_heads,
        .dim = head_dim,
    };
    hc::kv_cache<hc::paged_kv_tensor<float>> cache(shape, options);
    // [/snippet]

    // The engine writes each token's K/V into its page (here: copied from the planted model's tensors).
    const hc::strided_kv_tensor<float> contiguous = model.tensor();
    const auto bytes = sizeof(float) * static_cast<std::size_t>(head_dim);
    for (index_t layer = 0; layer < shape.layers; ++layer)
        for (index_t head = 0; head < kv_heads; ++head)
            for (index_t t = 0; t < tokens; ++t) {
                std::memcpy(const_cast<float*>(paged.key(layer, seq, head, t)), contiguous.key(layer, seq, head, t), bytes);
                std::memcpy(const_cast<float*>(paged.value(layer, seq, head, t)), contiguous.value(layer, seq, head, t), bytes);
            }

    // The same cache over the contiguous tensors must select and hold exactly the same tokens.
    hc::kv_cache<> reference(shape, options);
    cache.begin_sequence(seq, scenario.prompt_tokens);
    reference.begin_sequence(seq, scenario.prompt_tokens);
    for (index_t layer = 0; layer < shape.layers; ++layer) {
        cache.prefill(layer, seq, paged, model.window(layer, seq));
        reference.prefill(layer, seq, contiguous, model.window(layer, seq));
    }
    for (index_t step = 0; step < scenario.steps; ++step) {
        const index_t new_tokens[] = {scenario.prompt_tokens + step};
        for (index_t layer = 0; layer < shape.layers; ++layer) {
            const hc::paged_selection a = cache.begin_layer(layer, paged, new_tokens);
            const hc::paged_selection b = reference.begin_layer(layer, contiguous, new_tokens);
            expect(same_kv(a, b), "a paged tensor selects and holds the K/V a contiguous one does");
            cache.end_layer(layer, model.queries(step, layer));
            reference.end_layer(layer, model.queries(step, layer));
        }
    }
    expect(cache.profile().has_value(), "the cache over a paged tensor profiles online as over a contiguous one");
    return 0;
}
