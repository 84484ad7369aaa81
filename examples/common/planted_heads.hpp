#pragma once
//! \file
//! Synthetic Q/K/V with planted head behaviour: stable heads attend one fixed set of prompt tokens for the
//! whole run, drifting heads move to a new set every few steps, and heads given the same group attend the
//! same positions (spatial redundancy). Used by the quickstart and the tests; deterministic for a seed on
//! every platform (own Gaussian sampler over std::mt19937_64).

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <random>
#include <vector>

#include <heterocache/algorithm/pooled_attention.hpp>
#include <heterocache/attention/paged_selection.hpp>
#include <heterocache/kv_cache.hpp>
#include <heterocache/tensor/kv_tensor.hpp>
#include <heterocache/types.hpp>

namespace planted {

using heterocache::index_t;

//! What one KV head is planted to do.
struct head_plan {
    bool drifting = false;  //!< moves its attention to a new set every `drift_period` steps
    index_t group = 0;      //!< heads of a layer with the same group attend the same positions
};

struct scenario {
    heterocache::model_shape shape{2, 3, 6, 64};
    index_t sequences = 1;
    index_t prompt_tokens = 256;
    index_t steps = 64;          //!< decode steps generated
    index_t window = 4;          //!< observation-window queries at prefill
    index_t targets = 6;         //!< positions a head attends at a time
    index_t drift_period = 4;    //!< steps between moves of a drifting head
    double boost = 8.0;          //!< target keys get `boost * u` added, u a unit "topic" direction of the head
    double sharpness = 2.0;      //!< query = sharpness * sqrt(d) * u: target scores ~ sharpness * boost, others ~ N(0, sharpness^2)
    std::vector<head_plan> heads;  //!< per (layer, kv_head); default: see `default_heads`
    std::uint64_t seed = 1;
};

//! Per layer: heads 0 and 1 drift together (one cluster), head 2 is stable alone; on odd layers head 1
//! drifts alone instead and heads 0 and 2 are stable on their own sets. Needs 3 KV heads.
inline std::vector<head_plan> default_heads(index_t layers) {
    std::vector<head_plan> heads;
    for (index_t l = 0; l < layers; ++l) {
        if (l % 2 == 0) heads.insert(heads.end(), {{true, 0}, {true, 0}, {false, 1}});
        else heads.insert(heads.end(), {{false, 0}, {true, 1}, {false, 2}});
    }
    return heads;
}

//! Generated tensors: K/V `[layer][seq][head][token][d]` for prompt + decode tokens, window queries
//! `[layer][seq][w][query_head][d]`, decode queries `[step][layer][seq][query_head][d]`.
//! Attention epochs: 0 is the prompt's focus (prefill window, and every step of a stable head); a drifting
//! head is in epoch `1 + step / drift_period` at decode step `step`.
class model {
public:
    explicit model(scenario s) : s_(std::move(s)) {
        if (s_.heads.empty()) s_.heads = default_heads(s_.shape.layers);
        tokens_ = s_.prompt_tokens + s_.steps;
        epochs_ = s_.steps / s_.drift_period + 2;
        const auto& sh = s_.shape;
        keys_.resize(static_cast<std::size_t>(sh.layers * s_.sequences * sh.kv_heads * tokens_ * sh.head_dim));
        values_.resize(keys_.size());
        for (auto& x : keys_) x = gaussian();
        for (auto& x : values_) x = gaussian();
        targets_.resize(static_cast<std::size_t>(sh.layers * s_.sequences * sh.kv_heads * epochs_ * s_.targets));
        std::uniform_int_distribution<index_t> position(0, s_.prompt_tokens - 1);
        for (auto& t : targets_) t = position(rng_);
        directions_.resize(static_cast<std::size_t>(sh.layers * s_.sequences * sh.kv_heads * epochs_ * sh.head_dim));
        for (index_t i = 0; i < static_cast<index_t>(directions_.size()); i += sh.head_dim) unit_vector(&directions_[i]);
        window_.resize(static_cast<std::size_t>(sh.layers * s_.sequences * s_.window * sh.query_heads * sh.head_dim));
        decode_.resize(static_cast<std::size_t>(s_.steps * sh.layers * s_.sequences * sh.query_heads * sh.head_dim));
        for (index_t l = 0; l < sh.layers; ++l)
            for (index_t q = 0; q < s_.sequences; ++q) {
                plant_keys(l, q);
                for (index_t i = 0; i < s_.window; ++i) fill_query(l, q, -1, window_query(l, q, i, 0));
                for (index_t step = 0; step < s_.steps; ++step) fill_query(l, q, step, decode_query(step, l, q, 0));
            }
    }

    [[nodiscard]] const scenario& spec() const noexcept { return s_; }
    //! The engine-side K/V tensors, `[layer][seq][head][token][d]`.
    [[nodiscard]] heterocache::strided_kv_tensor<float> tensor() const {
        return heterocache::make_head_major_tensor(keys_.data(), values_.data(), s_.sequences, s_.shape.kv_heads, tokens_,
                                                   s_.shape.head_dim);
    }
    //! Observation-window queries of (layer, seq) in the form `kv_cache::prefill` takes.
    [[nodiscard]] heterocache::query_rows window(index_t layer, index_t seq) const {
        const index_t head_stride = s_.shape.head_dim;
        return {window_query(layer, seq, 0, 0), s_.window, s_.shape.query_heads * head_stride, head_stride, 0};
    }
    //! Decode query of (step, layer, seq), `[query_head][d]`.
    [[nodiscard]] const float* decode_query(index_t step, index_t layer, index_t seq, index_t q_head) const {
        const auto& sh = s_.shape;
        return decode_.data() + (((step * sh.layers + layer) * s_.sequences + seq) * sh.query_heads + q_head) * sh.head_dim;
    }
    //! Decode queries of every sequence at (step, layer), in the form `kv_cache::end_layer` takes.
    [[nodiscard]] heterocache::decode_queries queries(index_t step, index_t layer) const {
        const auto& sh = s_.shape;
        return {decode_query(step, layer, 0, 0), sh.query_heads * sh.head_dim, sh.head_dim};
    }
    [[nodiscard]] const head_plan& plan(index_t layer, index_t head) const {
        return s_.heads[static_cast<std::size_t>(layer * s_.shape.kv_heads + head)];
    }
    //! Positions (layer, seq, head) attends in `epoch`.
    [[nodiscard]] const index_t* targets(index_t layer, index_t seq, index_t head, index_t epoch) const {
        const index_t group = plan(layer, head).group;
        return targets_.data() + (((layer * s_.sequences + seq) * s_.shape.kv_heads + group) * epochs_ + epoch) * s_.targets;
    }

private:
    float gaussian() {  // Box-Muller on raw 64-bit draws: identical on every standard library
        const double u1 = (static_cast<double>(rng_() >> 11) + 1.0) * 0x1.0p-53;
        const double u2 = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
        return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
    }
    void unit_vector(float* u) {
        double norm = 0.0;
        for (index_t c = 0; c < s_.shape.head_dim; ++c) {
            u[c] = gaussian();
            norm += static_cast<double>(u[c]) * u[c];
        }
        for (index_t c = 0; c < s_.shape.head_dim; ++c) u[c] = static_cast<float>(u[c] / std::sqrt(norm));
    }
    [[nodiscard]] const float* direction(index_t layer, index_t seq, index_t head, index_t epoch) const {
        return directions_.data() + (((layer * s_.sequences + seq) * s_.shape.kv_heads + head) * epochs_ + epoch) * s_.shape.head_dim;
    }
    [[nodiscard]] float* window_query(index_t layer, index_t seq, index_t i, index_t q_head) const {
        const auto& sh = s_.shape;
        return const_cast<float*>(window_.data()) +
               (((layer * s_.sequences + seq) * s_.window + i) * sh.query_heads + q_head) * sh.head_dim;
    }
    [[nodiscard]] float* decode_query(index_t step, index_t layer, index_t seq, index_t q_head) {
        return const_cast<float*>(static_cast<const model*>(this)->decode_query(step, layer, seq, q_head));
    }
    //! Adds each head's epoch direction to the keys of the positions it attends in that epoch.
    void plant_keys(index_t layer, index_t seq) {
        const index_t d = s_.shape.head_dim;
        for (index_t head = 0; head < s_.shape.kv_heads; ++head)
            for (index_t epoch = 0; epoch < epochs_; ++epoch) {
                const float* u = direction(layer, seq, head, epoch);
                const index_t* target = targets(layer, seq, head, epoch);
                for (index_t i = 0; i < s_.targets; ++i) {
                    float* k = const_cast<float*>(tensor().key(layer, seq, head, target[i]));
                    for (index_t c = 0; c < d; ++c) k[c] += static_cast<float>(s_.boost) * u[c];
                }
            }
    }
    //! Writes the queries of every query head of (layer, seq) at decode `step` (-1: prefill window) into `out`.
    void fill_query(index_t layer, index_t seq, index_t step, float* out) {
        const auto& sh = s_.shape;
        const index_t g = sh.group_size(), d = sh.head_dim;
        const auto scale = static_cast<float>(s_.sharpness * std::sqrt(static_cast<double>(d)));
        for (index_t head = 0; head < sh.kv_heads; ++head) {
            const index_t epoch = plan(layer, head).drifting && step >= 0 ? 1 + step / s_.drift_period : 0;
            const float* u = direction(layer, seq, head, epoch);
            for (index_t member = 0; member < g; ++member) {
                float* q = out + (head * g + member) * d;
                for (index_t c = 0; c < d; ++c) q[c] = scale * u[c] + 0.1f * gaussian();
            }
        }
    }

    scenario s_;
    index_t tokens_ = 0, epochs_ = 0;
    std::mt19937_64 rng_{s_.seed};
    std::vector<float> keys_, values_, window_, decode_, directions_;
    std::vector<index_t> targets_;
};

//! Runs `cache` through the scenario the way an engine would: begin every sequence, prefill every (layer,
//! sequence), then per decode step and layer: `begin_layer` with every sequence's new token and query, `attend(step,
//! layer, selection, queries)` (queries `[seq][query_head][d]`), `end_layer` with the queries (`scores`:
//! `score_source::captured` when `attend` runs `decode_attention`, which captures what the monitor reads).
template <class Cache, class Attend>
void drive(Cache& cache, const model& m, Attend&& attend,
           heterocache::score_source scores = heterocache::score_source::recompute) {
    const auto& s = m.spec();
    const auto kv = m.tensor();
    for (index_t seq = 0; seq < s.sequences; ++seq) cache.begin_sequence(seq, s.prompt_tokens);
    for (index_t layer = 0; layer < s.shape.layers; ++layer)
        for (index_t seq = 0; seq < s.sequences; ++seq) cache.prefill(layer, seq, kv, m.window(layer, seq));
    std::vector<index_t> tokens(static_cast<std::size_t>(s.sequences));
    for (index_t step = 0; step < s.steps; ++step) {
        std::fill(tokens.begin(), tokens.end(), s.prompt_tokens + step);  // where the engine wrote the new K/V
        for (index_t layer = 0; layer < s.shape.layers; ++layer) {
            const auto selection = cache.begin_layer(layer, kv, tokens, m.queries(step, layer));
            attend(step, layer, selection, m.decode_query(step, layer, 0, 0));
            cache.end_layer(layer, m.queries(step, layer), scores);
        }
    }
}

}  // namespace planted
