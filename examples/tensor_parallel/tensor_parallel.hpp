#pragma once
//! \file
//! Engine side of tensor parallelism over the planted model: a rank's view of the KV heads it owns and a
//! decode loop that drives one rank's `kv_cache`. Shared by the tensor_parallel example and its test.

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include <heterocache/attention/decode_attention.hpp>
#include <heterocache/tensor/kv_tensor.hpp>

#include "planted_heads.hpp"

namespace tensor_parallel {

using heterocache::index_t;

// [snippet head_subset_map]
// An offset map of your own: KV heads `heads` of a strided tensor, numbered 0 .. heads.size()-1 (a
// tensor-parallel rank's view of the heads it owns, where the engine keeps every head in one tensor).
struct head_subset_map {
    heterocache::strided_map full;
    const index_t* heads = nullptr;

    [[nodiscard]] index_t offset(index_t layer, index_t seq, index_t head, index_t token) const noexcept {
        return full.offset(layer, seq, heads[head], token);
    }
    [[nodiscard]] heterocache::token_run_map tokens(index_t layer, index_t seq, index_t head) const noexcept {
        return full.tokens(layer, seq, heads[head]);
    }
};

// A rank's K/V tensor: the engine's memory, seen through the rank's heads.
using rank_tensor = heterocache::kv_tensor<float, heterocache::host_memory, head_subset_map>;
// [/snippet]

//! The tensor of the rank that owns KV heads `heads` of the planted model (`heads` must outlive it).
inline rank_tensor rank_view(const planted::model& m, std::span<const index_t> heads) {
    const heterocache::strided_kv_tensor<float> full = m.tensor();
    return {full.keys, full.values, {full.map, heads.data()}, static_cast<index_t>(heads.size()), full.dim};
}

//! Attention outputs of the whole model, `[step][layer][seq][query_head][head_dim]`.
inline std::vector<float> make_outputs(const planted::model& m) {
    const auto& s = m.spec();
    return std::vector<float>(static_cast<std::size_t>(s.steps * s.shape.layers * s.sequences * s.shape.query_heads *
                                                        s.shape.head_dim));
}

//! Runs the planted model on the rank that owns KV heads `heads`, as an engine would: begin and prefill every
//! sequence, then per decode step and layer `begin_layer`, `decode_attention`, `end_layer`. The rank's query
//! heads are its KV heads' GQA groups, `[seq][heads.size() * G][d]` locally. It writes the outputs of its
//! query heads into `outputs` (laid out as `make_outputs`), where an engine would all-gather.
template <class Cache>
void run_rank(Cache& cache, const planted::model& m, std::span<const index_t> heads, std::span<float> outputs) {
    const auto& s = m.spec();
    const index_t g = s.shape.group_size(), d = s.shape.head_dim, hq = s.shape.query_heads;
    const auto local_q = static_cast<index_t>(heads.size()) * g;
    const rank_tensor kv = rank_view(m, heads);
    // Query head `q` of the rank is query head `global(q)` of the model.
    const auto global = [&](index_t q) { return heads[static_cast<std::size_t>(q / g)] * g + q % g; };

    std::vector<float> window(static_cast<std::size_t>(s.window * local_q * d));
    for (index_t seq = 0; seq < s.sequences; ++seq) {
        cache.begin_sequence(seq, s.prompt_tokens);
        for (index_t layer = 0; layer < s.shape.layers; ++layer) {
            const heterocache::query_rows full = m.window(layer, seq);
            for (index_t i = 0; i < s.window; ++i)
                for (index_t q = 0; q < local_q; ++q)
                    std::copy_n(full.query(i, global(q)), d, &window[static_cast<std::size_t>((i * local_q + q) * d)]);
            cache.prefill(layer, seq, kv, {window.data(), s.window, local_q * d, d, 0});
        }
    }

    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    std::vector<float> queries(static_cast<std::size_t>(s.sequences * local_q * d)), out(queries.size());
    std::vector<float> lse(static_cast<std::size_t>(s.sequences * local_q));
    std::vector<index_t> new_tokens(static_cast<std::size_t>(s.sequences));
    for (index_t step = 0; step < s.steps; ++step) {
        std::fill(new_tokens.begin(), new_tokens.end(), s.prompt_tokens + step);
        for (index_t layer = 0; layer < s.shape.layers; ++layer) {
            for (index_t seq = 0; seq < s.sequences; ++seq)
                for (index_t q = 0; q < local_q; ++q)
                    std::copy_n(m.decode_query(step, layer, seq, global(q)), d,
                                &queries[static_cast<std::size_t>((seq * local_q + q) * d)]);
            const auto selection = cache.begin_layer(layer, kv, new_tokens);
            heterocache::decode_attention(selection, queries.data(), out.data(), lse.data(), scale);
            cache.end_layer(layer, {queries.data(), local_q * d, d}, heterocache::score_source::captured);
            for (index_t seq = 0; seq < s.sequences; ++seq)
                for (index_t q = 0; q < local_q; ++q)
                    std::copy_n(&out[static_cast<std::size_t>((seq * local_q + q) * d)], d,
                                &outputs[static_cast<std::size_t>(
                                    (((step * s.shape.layers + layer) * s.sequences + seq) * hq + global(q)) * d)]);
        }
    }
}

}  // namespace tensor_parallel
