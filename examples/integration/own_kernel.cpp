// Integration guide, "Your own attention kernel": consuming the paged selection directly.
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
// A paged decode kernel over the selection (FlashInfer's paged_kv_t). Row `seq * kv_heads + kv_head` is one
// variable-length KV sequence, read by the G query heads of that KV head (GQA: K/V are never expanded per
// query head). Its tokens lie on the pages indices[indptr[row] .. indptr[row + 1]), every page full but the
// last, which holds last_page_len[row] tokens; the pools `keys`/`values` are [page][page_size][head_dim].
// A row without pages (a slot that does not step) gets output 0.
void my_decode_attention(const hc::paged_selection& s, const float* queries, float* output, float scale) {
    const index_t d = s.head_dim;
    std::vector<index_t> slots;  // pool slots of the row's tokens, in order
    std::vector<float> scores;
    for (index_t row = 0; row < s.rows; ++row) {
        slots.clear();
        for (index_t p = s.indptr[row]; p < s.indptr[row + 1]; ++p) {
            const index_t tokens = p + 1 < s.indptr[row + 1] ? s.page_size : s.last_page_len[row];
            for (index_t j = 0; j < tokens; ++j) slots.push_back(s.indices[p] * s.page_size + j);
        }
        const hc::score_capture capture = s.captures.empty() ? hc::score_capture{} : s.captures[row];
        for (index_t g = 0; g < s.group_size; ++g) {
            const index_t q_head = row * s.group_size + g;  // == seq * query_heads + kv_head * G + g
            const float* q = queries + q_head * d;
            scores.assign(slots.size(), 0.0f);
            float maximum = -std::numeric_limits<float>::infinity();
            for (std::size_t k = 0; k < slots.size(); ++k) {
                const float* key = s.keys + slots[k] * d;
                float dot = 0.0f;
                for (index_t c = 0; c < d; ++c) dot += q[c] * key[c];
                scores[k] = dot * scale;
                maximum = std::max(maximum, scores[k]);
            }
            if (capture.scores != nullptr)  // the scores the drift monitor reads: the row's first capture.tokens
                std::copy_n(scores.begin(), capture.tokens, capture.scores + g * capture.tokens);
            float* o = output + q_head * d;
            std::fill(o, o + d, 0.0f);
            float denominator = 0.0f;
            for (std::size_t k = 0; k < slots.size(); ++k) {
                const float p = std::exp(scores[k] - maximum);
                const float* value = s.values + slots[k] * d;
                for (index_t c = 0; c < d; ++c) o[c] += p * value[c];
                denominator += p;
            }
            if (denominator > 0.0f)
                for (index_t c = 0; c < d; ++c) o[c] /= denominator;
        }
        hc::mark_written(capture);  // stamps this step on the capture: end_layer may read it (score_source::captured)
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
    planted::drive(cache, model, [&](index_t, index_t, const hc::paged_selection& selection, const float* queries) {
        my_decode_attention(selection, queries, mine.data(), scale);
        hc::paged_selection without_captures = selection;  // only my kernel writes the captures
        without_captures.captures = {};
        hc::decode_attention(without_captures, queries, reference.data(), lse.data(), scale);
        for (std::size_t i = 0; i < outputs; ++i)
            worst = std::max(worst, std::abs(static_cast<double>(mine[i]) - reference[i]) / (1.0 + std::abs(reference[i])));
    }, hc::score_source::captured);  // my kernel wrote and stamped the scores the selection asked for
    expect(worst < 1e-4, "a float paged kernel over the selection matches decode_attention within 1e-4");
    expect(cache.storage().counters().retrieved > 0, "the drift monitor read my kernel's captures and refreshed satellites");
    return 0;
}
