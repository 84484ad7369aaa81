#pragma once
// Shared by the benchmarks: model shapes, context lengths, one layer of synthetic K/V built once per
// (shape, context) and reused by every kept ratio, and the paged selections over it, laid out as a kv_cache
// lays out its rows.

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <heterocache/attention/paged_selection.hpp>
#include <heterocache/cache/row_table.hpp>
#include <heterocache/cache_options.hpp>
#include <heterocache/detail/vector_math.hpp>
#include <heterocache/tensor/kv_tensor.hpp>
#include <heterocache/types.hpp>

namespace bench {

using heterocache::index_t;

struct model {
    const char* name;
    index_t kv_heads, query_heads, head_dim;
    [[nodiscard]] constexpr index_t group() const { return query_heads / kv_heads; }
};

inline constexpr model smollm2{"SmolLM2-135M", 3, 9, 64};
inline constexpr model llama8b{"Llama-3.1-8B", 8, 32, 128};
inline constexpr model models[] = {smollm2, llama8b};

// Contexts 4K..128K; a run without --benchmark_filter skips 32K and more (bench_main.cpp).
inline constexpr index_t contexts[] = {4096, 8192, 16384, 32768, 65536, 131072};
inline constexpr double kept_ratios[] = {0.5, 0.25, 0.1};

// Tokens per hot page of the selections: a kv_cache's default.
inline constexpr index_t default_page_size = heterocache::cache_options{}.page_size;

// Benchmark names like "attention/SmolLM2-135M/8K/r0.25" (built by appending: GCC 12 warns wrongly on
// some chains of operator+).
inline std::string name(std::initializer_list<std::string_view> parts) {
    std::string joined;
    for (const std::string_view part : parts) {
        if (!joined.empty()) joined += '/';
        joined += part;
    }
    return joined;
}
inline std::string context_name(index_t tokens) {
    std::string text = std::to_string(tokens / 1024);
    text += 'K';
    return text;
}
inline std::string ratio_name(double ratio) {
    if (ratio >= 1.0) return "full";
    std::string text = "r";
    text += std::to_string(ratio).substr(0, 4);
    return text;
}
// "key:value", as Google Benchmark names its own arguments ("threads:2", "batch:64").
inline std::string argument_name(std::string_view key, index_t value) {
    std::string text(key);
    text += ':';
    text += std::to_string(value);
    return text;
}
inline std::string threads_name(index_t threads) { return argument_name("threads", threads); }

// The plain read the attention is measured against: a sum of the raw 64-bit words of part `part` of `parts`
// equal parts of `count` floats (the last part takes the rest), in four independent integer sums, so that no
// add waits on another (a float sum is bound by the adds' latency below memory speed on the baseline x86-64
// these benchmarks are built for: 12-15 GB/s on one core of a machine whose memory gives 25).
inline std::uint64_t sum_of_part(const float* data, index_t count, index_t parts, index_t part) {
    const index_t size = count / parts, begin = part * size, end = part == parts - 1 ? count : begin + size;
    const auto* words = reinterpret_cast<const std::uint64_t*>(data + begin);
    const auto n = static_cast<std::size_t>(end - begin) * sizeof(float) / sizeof(std::uint64_t);
    std::uint64_t s[4] = {};
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (std::size_t l = 0; l < 4; ++l) s[l] += words[i + l];
    for (; i < n; ++i) s[0] += words[i];
    return s[0] + s[1] + s[2] + s[3];
}

// Uniform floats in [-1, 1) from a xorshift generator: cheap enough to fill a GiB per case.
inline void fill(std::vector<float>& data, std::uint64_t seed) {
    std::uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
    for (float& x : data) {
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;
        x = static_cast<float>(static_cast<std::int32_t>(state >> 32)) * (1.0f / 2147483648.0f);
    }
}

// One layer, batch 1: `context` tokens of every KV head, `[head][token][head_dim]`, and one decode query per
// query head. The same arrays are the engine's tensor (`tensor()`: head-major, what a cold tier reads by
// position) and, for the hand-built selections, the hot pools `[page][page_size][head_dim]`: a pool of
// `kv_heads * context` slots.
struct layer_data {
    model shape{};
    index_t context = 0;
    std::vector<float> keys, values, queries;

    [[nodiscard]] index_t rows() const { return shape.kv_heads; }
    [[nodiscard]] index_t pool_slots() const { return shape.kv_heads * context; }
    [[nodiscard]] heterocache::strided_kv_tensor<float> tensor() const {
        return heterocache::make_head_major_tensor(keys.data(), values.data(), 1, shape.kv_heads, context, shape.head_dim);
    }
};

inline const layer_data& layer(const model& shape, index_t context) {
    static std::unique_ptr<layer_data> cached;  // one at a time: the 128K Llama layer is 1 GiB
    if (!cached || std::string_view(cached->shape.name) != shape.name || cached->context != context) {
        cached.reset();
        cached = std::make_unique<layer_data>();
        cached->shape = shape;
        cached->context = context;
        const auto slots = static_cast<std::size_t>(shape.kv_heads * context * shape.head_dim);
        cached->keys.resize(slots);
        cached->values.resize(slots);
        cached->queries.resize(static_cast<std::size_t>(shape.query_heads * shape.head_dim));
        fill(cached->keys, 1);
        fill(cached->values, 2);
        fill(cached->queries, 3);
    }
    return *cached;
}

// The rows of one layer, batch 1, as a kv_cache lays them out (its heterocache::row_table, pages of
// `default_page_size`): row (KV head) h holds `row_tokens[h]` tokens, packed in position order on pages taken
// from the layer's pool in row order (row 0 from page 0), so the rows' pages follow each other through the
// pool.
class paged_rows {
public:
    paged_rows(const layer_data& data, const std::vector<index_t>& row_tokens) {
        const model& m = data.shape;
        if (static_cast<index_t>(row_tokens.size()) != m.kv_heads) throw std::invalid_argument("paged_rows: one count per KV head");
        const auto tokens = [&](index_t, index_t head) { return row_tokens[static_cast<std::size_t>(head)]; };
        table_.plan({1, 1, m.kv_heads, default_page_size, 0, 0, false}, tokens);
        if (table_.pool_pages()[0] * default_page_size > data.pool_slots())
            throw std::invalid_argument("paged_rows: the rows need more slots than the layer's pool holds");
        table_.allocate(0, tokens);
        for (index_t head = 0; head < m.kv_heads; ++head) table_.set_prompt(0, head, tokens(0, head));
        view_ = table_.selection(0, m.group(), m.head_dim, [](index_t) { return true; }, {});
    }
    paged_rows(const paged_rows&) = delete;
    paged_rows& operator=(const paged_rows&) = delete;

    // The selection of every row over the pools `keys`/`values`, asking the kernel for `captures`.
    template <heterocache::KvElement E>
    [[nodiscard]] heterocache::basic_paged_selection<E> selection(const E* keys, const E* values,
                                                                 std::span<const heterocache::score_capture> captures = {}) const {
        return {view_.rows,   view_.kv_heads, view_.group_size,    view_.head_dim, view_.page_size,
                view_.indptr, view_.indices,  view_.last_page_len, keys,           values,
                captures};
    }
    // The pages of row `row`.
    [[nodiscard]] const heterocache::page_index_t* pages(index_t row) const { return table_.pages(0, row); }
    // Pages the rows take from the pool.
    [[nodiscard]] index_t pool_pages() const { return table_.pool_pages()[0]; }

private:
    heterocache::row_table table_;
    heterocache::selection_table view_;
};

// Every row keeps `kept` tokens.
inline std::vector<index_t> uniform_rows(const layer_data& data, index_t kept) {
    return std::vector<index_t>(static_cast<std::size_t>(data.rows()), kept);
}

}  // namespace bench
