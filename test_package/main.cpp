// The smallest engine: one layer, two KV heads, every head compressed to half its prompt.
#include <heterocache/heterocache.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

namespace hc = heterocache;

int main() {
    const hc::model_shape shape{.layers = 1, .kv_heads = 2, .query_heads = 4, .head_dim = 8};
    const hc::index_t tokens = 17;  // 16 prompt tokens and one decode token
    hc::cache_options options;
    options.max_prompt_tokens = 16;
    options.max_new_tokens = 1;
    options.budget_ratio = 0.5;

    // The engine's K/V, `[layer][seq][kv_head][token][dim]`, and its queries, `[query_head][dim]`.
    std::vector<float> keys(static_cast<std::size_t>(shape.kv_heads * tokens * shape.head_dim));
    std::vector<float> values(keys.size());
    std::vector<float> query(static_cast<std::size_t>(shape.query_heads * shape.head_dim));
    for (std::size_t i = 0; i < keys.size(); ++i) {
        keys[i] = std::sin(0.37f * static_cast<float>(i));
        values[i] = std::cos(0.11f * static_cast<float>(i));
    }
    for (std::size_t i = 0; i < query.size(); ++i) query[i] = std::sin(0.5f * static_cast<float>(i));
    const auto kv = hc::make_head_major_tensor(keys.data(), values.data(), 1, shape.kv_heads, tokens, shape.head_dim);

    hc::kv_cache<> cache(shape, options, hc::uniform_profile(shape, hc::head_role::anchor));
    cache.begin_sequence(0, 16);
    cache.prefill(0, 0, kv, {query.data(), 1, 0, shape.head_dim, 0});
    const hc::index_t new_tokens[] = {16};
    const hc::paged_selection selection = cache.begin_layer(0, kv, new_tokens);

    std::vector<float> output(query.size()), lse(static_cast<std::size_t>(shape.query_heads));
    hc::decode_attention(selection, query.data(), output.data(), lse.data(), 1.0f / std::sqrt(8.0f));
    const bool ok = selection.row_length(0) == 9 && selection.row_length(1) == 9 && std::isfinite(lse[0]);
    const hc::index_t attended = selection.total_tokens();
    cache.end_layer(0, {query.data(), 0, shape.head_dim}, hc::score_source::captured);
    cache.end_sequence(0);
    std::printf("heterocache %d.%d.%d from Conan: %lld of 34 tokens attended: %s\n", HETEROCACHE_VERSION_MAJOR,
                HETEROCACHE_VERSION_MINOR, HETEROCACHE_VERSION_PATCH, static_cast<long long>(attended),
                ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
