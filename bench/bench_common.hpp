#pragma once
// Shared by the benchmarks: model shapes, context lengths, and one layer of synthetic K/V built once per
// (shape, context) and reused by every kept ratio.

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <heterocache/attention/csr_selection.hpp>
#include <heterocache/detail/vector_math.hpp>
#include <heterocache/types.hpp>

namespace bench {

using heterocache::index_t;

struct model {
    const char* name;
    index_t kv_heads, query_heads, head_dim;
    [[nodiscard]] index_t group() const { return query_heads / kv_heads; }
};

inline constexpr model smollm2{"SmolLM2-135M", 3, 9, 64};
inline constexpr model llama8b{"Llama-3.1-8B", 8, 32, 128};
inline constexpr model models[] = {smollm2, llama8b};

// Contexts 4K..128K; the default run stops at `default_max_context` (bench_main.cpp filters the rest).
inline constexpr index_t contexts[] = {4096, 8192, 16384, 32768, 65536, 131072};
inline constexpr double kept_ratios[] = {0.5, 0.25, 0.1};

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
inline std::string threads_name(index_t threads) {
    std::string text = "threads:";
    text += std::to_string(threads);
    return text;
}

// The plain read the attention is measured against: the sum of part `part` of `parts` equal parts of
// `count` floats (the last part takes the rest), with the same vectorized sum the kernels use.
inline float sum_of_part(const float* data, index_t count, index_t parts, index_t part) {
    const index_t size = count / parts;
    return heterocache::detail::sum(data + part * size, part == parts - 1 ? count - part * size : size);
}

// Uniform floats in [-1, 1) from a xorshift generator: cheap enough to fill a GiB per case.
inline void fill(std::vector<float>& data, std::uint64_t seed) {
    std::uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
    for (float& x : data) {
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;
        x = static_cast<float>(static_cast<std::int32_t>(state >> 32)) * (1.0f / 2147483648.0f);
    }
}

// One layer, batch 1: the hot tier holds `context` slots per row, row after row. A selection that keeps
// `ratio` of every row attends the first `ratio * context` slots of each row, sorted: the layout of a
// compressed row (its hot slots are contiguous; the cache fills them in position order).
struct layer_data {
    model shape{};
    index_t context = 0;
    std::vector<float> keys, values, queries;

    [[nodiscard]] index_t rows() const { return shape.kv_heads; }
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

// The CSR arrays of a selection keeping `kept` tokens of every row.
struct selection_arrays {
    std::vector<index_t> indptr, indices;

    selection_arrays(const layer_data& data, index_t kept) {
        indptr.push_back(0);
        for (index_t row = 0; row < data.rows(); ++row) {
            for (index_t i = 0; i < kept; ++i) indices.push_back(row * data.context + i);
            indptr.push_back(static_cast<index_t>(indices.size()));
        }
    }
    [[nodiscard]] heterocache::csr_selection view(const layer_data& data) const {
        return {data.rows(), data.shape.kv_heads, data.shape.group(), data.shape.head_dim,
                indptr,      indices,             data.keys.data(),   data.values.data(), {}};
    }
};

}  // namespace bench
