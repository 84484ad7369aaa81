#pragma once
//! \file
//! Engine side of tensor parallelism over the planted model: a rank's view of the KV heads it owns and a
//! decode loop that drives one rank's `kv_cache`. Shared by the tensor_parallel example and its test.

#include <cmath>
#include <cstring>
#include <span>
#include <vector>

#include <heterocache/attention/decode_attention.hpp>
#include <heterocache/concepts/kv_layout.hpp>

#include "planted_heads.hpp"

namespace tensor_parallel {

using heterocache::index_t;

//! A rank's `KvLayout`: KV heads `heads` of the engine's layout, numbered `0 .. heads.size()-1`. A real
//! tensor-parallel engine stores only its own heads and describes them directly; the planted model keeps
//! every head in one tensor, so each rank looks at its heads through this view.
template <heterocache::KvLayout Full>
struct head_subset_layout {
    Full full;
    std::span<const index_t> heads;

    [[nodiscard]] const float* key(index_t layer, index_t seq, index_t head, index_t token) const noexcept {
        return full.key(layer, seq, heads[static_cast<std::size_t>(head)], token);
    }
    [[nodiscard]] const float* value(index_t layer, index_t seq, index_t head, index_t token) const noexcept {
        return full.value(layer, seq, heads[static_cast<std::size_t>(head)], token);
    }
    [[nodiscard]] index_t kv_heads() const noexcept { return static_cast<index_t>(heads.size()); }
    [[nodiscard]] index_t head_dim() const noexcept { return full.head_dim(); }
};

using rank_layout = head_subset_layout<heterocache::strided_kv_layout>;

//! Attention outputs of the whole model, `[step][layer][seq][query_head][head_dim]`.
inline std::vector<float> make_outputs(const planted::model& m) {
    const auto& s = m.spec();
    return std::vector<float>(static_cast<std::size_t>(s.steps * s.shape.layers * s.sequences * s.shape.query_heads *
                                                        s.shape.head_dim));
}

//! Runs the planted model on the rank that owns KV heads `heads`, as an engine would: prefill every
//! (layer, sequence), then per decode step and layer append, select, `decode_attention`, observe. The
//! rank's query heads are its KV heads' GQA groups, `[seq][heads.size() * G][d]` locally. It writes the
//! outputs of its query heads into `outputs` (laid out as `make_outputs`), where an engine would all-gather.
template <class Cache>
void run_rank(Cache& cache, const planted::model& m, std::span<const index_t> heads, std::span<float> outputs) {
    const auto& s = m.spec();
    const index_t g = s.shape.group_size(), d = s.shape.head_dim, hq = s.shape.query_heads;
    const auto local_q = static_cast<index_t>(heads.size()) * g;
    const rank_layout layout{m.layout(), heads};
    // Query head `q` of the rank is query head `global(q)` of the model.
    const auto global = [&](index_t q) { return heads[static_cast<std::size_t>(q / g)] * g + q % g; };

    std::vector<float> window(static_cast<std::size_t>(s.window * local_q * d));
    for (index_t layer = 0; layer < s.shape.layers; ++layer)
        for (index_t seq = 0; seq < s.sequences; ++seq) {
            const heterocache::query_rows full = m.window(layer, seq);
            for (index_t i = 0; i < s.window; ++i)
                for (index_t q = 0; q < local_q; ++q)
                    std::memcpy(&window[static_cast<std::size_t>((i * local_q + q) * d)], full.query(i, global(q)),
                                sizeof(float) * static_cast<std::size_t>(d));
            cache.prefill(layer, seq, layout, s.prompt_tokens, {window.data(), s.window, local_q * d, d, 0});
        }

    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    std::vector<float> queries(static_cast<std::size_t>(s.sequences * local_q * d)), out(queries.size());
    std::vector<float> lse(static_cast<std::size_t>(s.sequences * local_q));
    for (index_t step = 0; step < s.steps; ++step)
        for (index_t layer = 0; layer < s.shape.layers; ++layer) {
            for (index_t seq = 0; seq < s.sequences; ++seq) {
                cache.append(layer, seq, layout, s.prompt_tokens + step);
                for (index_t q = 0; q < local_q; ++q)
                    std::memcpy(&queries[static_cast<std::size_t>((seq * local_q + q) * d)],
                                m.decode_query(step, layer, seq, global(q)), sizeof(float) * static_cast<std::size_t>(d));
            }
            heterocache::decode_attention(cache.selection(layer), queries.data(), out.data(), lse.data(), scale);
            for (index_t seq = 0; seq < s.sequences; ++seq) {
                for (index_t q = 0; q < local_q; ++q)
                    std::memcpy(&outputs[static_cast<std::size_t>((((step * s.shape.layers + layer) * s.sequences + seq) * hq +
                                                                   global(q)) * d)],
                                &out[static_cast<std::size_t>((seq * local_q + q) * d)], sizeof(float) * static_cast<std::size_t>(d));
                cache.observe(layer, seq, &queries[static_cast<std::size_t>(seq * local_q * d)], d);
            }
        }
}

}  // namespace tensor_parallel
