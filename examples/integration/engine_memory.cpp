// Integration guide, "Engine-owned memory": the engine allocates the storage tier's memory, and the cold
// tier reads the engine's own K/V instead of keeping a copy. Both must give the outputs of a cache that
// allocates its own memory and copies the prompt.
#include <cmath>
#include <cstddef>
#include <new>
#include <optional>
#include <span>
#include <vector>

#include <heterocache/heterocache.hpp>

#include "expect.hpp"
#include "planted_heads.hpp"

namespace hc = heterocache;
using hc::index_t;

//! Memory an engine allocates for the cache (where it would carve it from its own pool), aligned as the
//! storage tier asks.
class engine_buffer {
public:
    explicit engine_buffer(std::size_t bytes)
        : data_(static_cast<std::byte*>(::operator new(bytes, alignment))), bytes_(bytes) {}
    engine_buffer(const engine_buffer&) = delete;
    engine_buffer& operator=(const engine_buffer&) = delete;
    ~engine_buffer() { ::operator delete(data_, alignment); }

    [[nodiscard]] std::span<std::byte> span() const noexcept { return {data_, bytes_}; }
    [[nodiscard]] bool holds(const void* p) const noexcept {
        const auto* byte = static_cast<const std::byte*>(p);
        return byte >= data_ && byte < data_ + bytes_;
    }

private:
    static constexpr std::align_val_t alignment{hc::storage_bytes::alignment};
    std::byte* data_;
    std::size_t bytes_;
};

//! Every attention output of the planted scenario, [step][layer][query_head][head_dim].
std::vector<float> attention_outputs(hc::kv_cache<>& cache, const planted::model& model) {
    const hc::model_shape& shape = model.spec().shape;
    const float scale = 1.0f / std::sqrt(static_cast<float>(shape.head_dim));
    std::vector<float> out(static_cast<std::size_t>(shape.query_heads * shape.head_dim)), outputs;
    std::vector<float> lse(static_cast<std::size_t>(shape.query_heads));
    planted::drive(cache, model, [&](index_t, index_t, const hc::paged_selection& selection, const float* queries) {
        hc::decode_attention(selection, queries, out.data(), lse.data(), scale);
        outputs.insert(outputs.end(), out.begin(), out.end());
    }, hc::score_source::captured);
    return outputs;
}

int main() {
    planted::scenario scenario;
    scenario.prompt_tokens = 256;
    scenario.steps = 32;
    const planted::model model(scenario);
    const hc::model_shape& shape = scenario.shape;
    const hc::strided_kv_tensor<float> kv = model.tensor();  // the engine's K/V: every token, by position
    hc::cache_options options;
    options.max_prompt_tokens = scenario.prompt_tokens;
    options.max_new_tokens = scenario.steps;
    options.profiling_steps = 8;

    // [snippet engine_memory]
    // The engine asks how much memory the cache's storage tier needs, allocates it where it keeps its own
    // buffers (hot: in the tier's memory space; cold: host-accessible) and hands it in: the cache allocates
    // no K/V memory of its own.
    const hc::storage_bytes bytes = hc::kv_cache<>::bytes_required(shape, options);
    const engine_buffer hot(bytes.hot), cold(bytes.cold);
    hc::kv_cache<> cache(shape, options, std::nullopt, {}, {}, {},
                         {.memory = {.hot = hot.span(), .cold = cold.span()}, .cold_alias = std::nullopt});
    // [/snippet]

    // [snippet cold_alias]
    // The engine's tensor holds every token of every sequence by position: the cold tier reads it in place
    // (no second copy of the full KV; cold bytes are 0). `new_tokens[seq]` must then be the token's position.
    constexpr bool cold_aliased = true;
    const hc::storage_bytes aliased_bytes = hc::kv_cache<>::bytes_required(shape, options, std::nullopt, {}, cold_aliased);
    const engine_buffer aliased_hot(aliased_bytes.hot);
    hc::kv_cache<> aliased(shape, options, std::nullopt, {}, {}, {},
                           {.memory = {.hot = aliased_hot.span(), .cold = {}}, .cold_alias = kv});
    // [/snippet]

    hc::kv_cache<> own(shape, options);  // allocates its memory and copies the prompt into its cold tier
    const std::vector<float> expected = attention_outputs(own, model);
    expect(own.storage().counters().retrieved > 0, "the run refreshes tokens from the cold tier");
    expect(attention_outputs(cache, model) == expected, "a cache in the engine's memory gives the same outputs");
    expect(hot.holds(cache.storage().hot_key(0, 0)), "the hot tier lives in the memory the engine handed in");
    expect(aliased_bytes.cold == 0 && aliased_bytes.hot == bytes.hot, "an aliased cold tier needs no cold bytes");
    expect(attention_outputs(aliased, model) == expected,
           "a cold tier that aliases the engine's K/V gives the outputs of one with its own copy");
    expect(aliased.storage().cold_aliased() && aliased.storage().counters().written_to_cold == 0,
           "an aliased cold tier copies nothing");
    expect(own.storage().counters().written_to_cold > 0, "a cold tier of its own copies the prompt");
    return 0;
}
