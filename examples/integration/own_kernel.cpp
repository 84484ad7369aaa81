// Integration guide, "Your own attention kernel": consuming the CSR selection directly.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include <heterocache/heterocache.hpp>

#include "expect.hpp"
#include "planted_heads.hpp"

namespace hc = heterocache;
using hc::index_t;

// [snippet own_kernel]
// A var-len decode kernel over the selection. Row `seq * kv_heads + kv_head` is one variable-length KV
// sequence, read by the G query heads of that KV head (GQA: K/V are never expanded per query head).
// A paged kernel sees the hot tier as pages of one token: kv_indptr = indptr, kv_indices = indices,
// last_page_len = 1, K/V pools of shape [slot][head_dim].
void my_decode_attention(const hc::csr_selection& s, const float* queries, float* output, float scale) {
    const index_t d = s.head_dim;
    std::vector<float> scores;
    for (index_t row = 0; row < s.rows; ++row) {
        const index_t begin = s.indptr[row], end = s.indptr[row + 1];
        for (index_t g = 0; g < s.group_size; ++g) {
            const index_t q_head = row * s.group_size + g;  // == seq * query_heads + kv_head * G + g
            const float* q = queries + q_head * d;
            scores.assign(static_cast<std::size_t>(end - begin), 0.0f);
            float maximum = -std::numeric_limits<float>::infinity();
            for (index_t i = begin; i < end; ++i) {
                const float* k = s.keys + s.indices[i] * d;
                float dot = 0.0f;
                for (index_t c = 0; c < d; ++c) dot += q[c] * k[c];
                scores[static_cast<std::size_t>(i - begin)] = dot * scale;
                maximum = std::max(maximum, dot * scale);
            }
            if (!s.captures.empty() && s.captures[row].scores != nullptr) {  // scores the drift monitor reads
                const hc::score_capture& capture = s.captures[row];
                std::copy_n(scores.begin(), capture.tokens, capture.scores + g * capture.tokens);
            }
            float* o = output + q_head * d;
            std::fill(o, o + d, 0.0f);
            float denominator = 0.0f;
            for (index_t i = begin; i < end; ++i) {
                const float p = std::exp(scores[static_cast<std::size_t>(i - begin)] - maximum);
                const float* v = s.values + s.indices[i] * d;
                for (index_t c = 0; c < d; ++c) o[c] += p * v[c];
                denominator += p;
            }
            for (index_t c = 0; c < d; ++c) o[c] /= denominator;
        }
    }
}
// [/snippet]

int main() {
    planted::scenario scenario;
    scenario.sequences = 2;
    scenario.prompt_tokens = 256;
    scenario.steps = 16;
    const planted::model model(scenario);
    const hc::model_shape& shape = scenario.shape;
    hc::cache_options options;
    options.sequences = scenario.sequences;
    options.max_prompt_tokens = scenario.prompt_tokens;
    options.max_new_tokens = scenario.steps;
    options.profiling_steps = 4;
    hc::kv_cache<> cache(shape, options);

    const float scale = 1.0f / std::sqrt(static_cast<float>(shape.head_dim));
    const auto outputs = static_cast<std::size_t>(scenario.sequences * shape.query_heads * shape.head_dim);
    std::vector<float> mine(outputs), reference(outputs), lse(static_cast<std::size_t>(scenario.sequences * shape.query_heads));
    double worst = 0.0;
    planted::drive(cache, model, [&](index_t, index_t, const hc::csr_selection& selection, const float* queries) {
        my_decode_attention(selection, queries, mine.data(), scale);
        hc::csr_selection without_captures = selection;  // only my kernel writes the captures
        without_captures.captures = {};
        hc::decode_attention(without_captures, queries, reference.data(), lse.data(), scale);
        for (std::size_t i = 0; i < outputs; ++i)
            worst = std::max(worst, std::abs(static_cast<double>(mine[i]) - reference[i]) / (1.0 + std::abs(reference[i])));
    }, hc::score_source::captured);  // my kernel wrote the scores the selection asked for
    expect(worst < 1e-4, "a float var-len kernel over the selection matches decode_attention within 1e-4");
    return 0;
}
