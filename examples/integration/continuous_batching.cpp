// Integration guide, "Continuous batching": sequences are admitted into the slots of one cache as slots free
// up, sit out steps and end at different times; every sequence's attention outputs must equal, bit for
// bit, those of a cache that ran it alone.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <span>
#include <vector>

#include <heterocache/heterocache.hpp>

#include "expect.hpp"
#include "planted_heads.hpp"

namespace hc = heterocache;
using hc::index_t;

//! A request the engine serves: the planted model's sequence `id` (its K/V and queries).
struct request {
    index_t id = 0;
    index_t prompt_tokens = 0;
    index_t new_tokens = 0;  //!< decode steps it runs
    index_t arrival = 0;     //!< engine step from which it waits for a slot
    index_t sits_out = -1;   //!< an engine step in which it does not step once admitted (-1: none)
};

//! The engine's K/V memory, one region per slot, [layer][slot][kv_head][token][head_dim]: its projections
//! write a sequence's K/V into the region of the slot the sequence runs in (here: copied from the model).
class slot_memory {
public:
    slot_memory(const planted::model& model, index_t slots)
        : model_(model), slots_(slots), tokens_(model.spec().prompt_tokens + model.spec().steps),
          keys_(static_cast<std::size_t>(model.spec().shape.layers * slots * model.spec().shape.kv_heads * tokens_ *
                                         model.spec().shape.head_dim)),
          values_(keys_.size()) {}

    [[nodiscard]] hc::strided_kv_tensor<float> tensor() const {
        const hc::model_shape& shape = model_.spec().shape;
        return hc::make_head_major_tensor(keys_.data(), values_.data(), slots_, shape.kv_heads, tokens_, shape.head_dim);
    }
    //! Writes tokens [first, first + count) of request `id` into the region of `slot`, at the same tokens.
    void write(index_t id, index_t slot, index_t first, index_t count) {
        const hc::model_shape& shape = model_.spec().shape;
        const hc::strided_kv_tensor<float> from = model_.tensor(), to = tensor();
        const auto bytes = sizeof(float) * static_cast<std::size_t>(count * shape.head_dim);  // head-major: tokens adjacent
        for (index_t layer = 0; layer < shape.layers; ++layer)
            for (index_t head = 0; head < shape.kv_heads; ++head) {
                std::memcpy(const_cast<float*>(to.key(layer, slot, head, first)), from.key(layer, id, head, first), bytes);
                std::memcpy(const_cast<float*>(to.value(layer, slot, head, first)), from.value(layer, id, head, first), bytes);
            }
    }

private:
    const planted::model& model_;
    index_t slots_, tokens_;
    std::vector<float> keys_, values_;
};

//! Serves `requests` with `cache` as a continuous-batching engine does: a request waits for an idle slot,
//! prefills, steps, and frees its slot when done. Returns each request's attention outputs,
//! [decode step][layer][query_head][head_dim].
std::vector<std::vector<float>> serve(hc::kv_cache<>& cache, const planted::model& model, std::span<const request> requests) {
    const hc::model_shape& shape = model.spec().shape;
    const index_t slots = cache.options().sequences, waiting = static_cast<index_t>(requests.size());
    const index_t query_floats = shape.query_heads * shape.head_dim;
    const float scale = 1.0f / std::sqrt(static_cast<float>(shape.head_dim));
    slot_memory memory(model, slots);
    const hc::strided_kv_tensor<float> kv = memory.tensor();
    std::vector<index_t> running(slots, -1), new_tokens(slots, -1);  // per slot: its request (-1: idle), its new token
    std::vector<index_t> decoded(waiting, 0);
    std::vector<bool> admitted(waiting, false);
    std::vector<float> queries(slots * query_floats), out(queries.size()), lse(slots * shape.query_heads);
    std::vector<std::vector<float>> outputs(waiting);
    for (index_t step = 0, finished = 0; finished < waiting; ++step) {
        // [snippet admit]
        // Admission: a waiting request takes an idle slot (the slot of a sequence that ended is reused).
        for (index_t i = 0; i < waiting; ++i) {
            const auto idle = std::find(running.begin(), running.end(), -1);
            if (admitted[i] || requests[i].arrival > step || idle == running.end()) continue;
            const index_t slot = idle - running.begin();
            memory.write(requests[i].id, slot, 0, requests[i].prompt_tokens);  // the engine's prefill wrote them
            cache.begin_sequence(slot, requests[i].prompt_tokens);
            for (index_t layer = 0; layer < shape.layers; ++layer)
                cache.prefill(layer, slot, kv, model.window(layer, requests[i].id));
            running[slot] = i;
            admitted[i] = true;
        }
        // [/snippet]
        // [snippet step]
        // A decode step: each slot whose sequence steps names the token its new K/V was written at, the
        // others -1; their rows of the selection are empty.
        for (index_t slot = 0; slot < slots; ++slot) {
            const index_t i = running[slot];
            const bool steps = i >= 0 && requests[i].sits_out != step;
            new_tokens[slot] = steps ? requests[i].prompt_tokens + decoded[i] : -1;
            if (steps) memory.write(requests[i].id, slot, new_tokens[slot], 1);
        }
        for (index_t layer = 0; layer < shape.layers; ++layer) {
            for (index_t slot = 0; slot < slots; ++slot)
                if (const index_t i = running[slot]; new_tokens[slot] >= 0)
                    std::copy_n(model.decode_query(decoded[i], layer, requests[i].id, 0), query_floats,
                                queries.begin() + slot * query_floats);
            const hc::paged_selection selection = cache.begin_layer(layer, kv, new_tokens);
            hc::decode_attention(selection, queries.data(), out.data(), lse.data(), scale);
            cache.end_layer(layer, {queries.data(), query_floats, shape.head_dim}, hc::score_source::captured);
            for (index_t slot = 0; slot < slots; ++slot)
                if (const index_t i = running[slot]; new_tokens[slot] >= 0)
                    outputs[i].insert(outputs[i].end(), out.begin() + slot * query_floats,
                                      out.begin() + (slot + 1) * query_floats);
        }
        // [/snippet]
        // [snippet retire]
        // A sequence that has generated its tokens ends: its slot is idle again, its hot pages free.
        for (index_t slot = 0; slot < slots; ++slot) {
            const index_t i = running[slot];
            if (new_tokens[slot] < 0 || ++decoded[i] < requests[i].new_tokens) continue;
            cache.end_sequence(slot);
            running[slot] = -1;
            ++finished;
        }
        // [/snippet]
    }
    return outputs;
}

int main() {
    planted::scenario scenario;
    scenario.sequences = 5;  // the requests' K/V and queries
    scenario.prompt_tokens = 128;
    scenario.steps = 24;
    const planted::model model(scenario);
    const hc::model_shape& shape = scenario.shape;

    hc::cache_options options;
    options.max_prompt_tokens = scenario.prompt_tokens;
    options.max_new_tokens = scenario.steps;
    options.profile_from_window = false;  // the planted heads drift during decoding only: profile decode steps
    options.sequences = scenario.sequences;
    hc::kv_cache<> calibration(shape, options);  // profiles online (profile_reuse.cpp)
    planted::drive(calibration, model, [](index_t, index_t, const hc::paged_selection&, const float*) {});
    const hc::head_profile profile = *calibration.profile();

    // Three slots for five requests: request 1 sits out a step, 3 and 4 wait until 1 and 2 have ended.
    const std::vector<request> requests{
        {.id = 0, .prompt_tokens = 128, .new_tokens = 24, .arrival = 0},
        {.id = 1, .prompt_tokens = 96, .new_tokens = 8, .arrival = 0, .sits_out = 3},
        {.id = 2, .prompt_tokens = 128, .new_tokens = 16, .arrival = 1},
        {.id = 3, .prompt_tokens = 64, .new_tokens = 12, .arrival = 2, .sits_out = 12},
        {.id = 4, .prompt_tokens = 112, .new_tokens = 20, .arrival = 4},
    };
    options.sequences = 3;
    hc::kv_cache<> batched(shape, options, profile);
    const std::vector<std::vector<float>> outputs = serve(batched, model, requests);
    expect(batched.storage().counters().retrieved > 0, "drifting pivots refreshed satellites in the batch");
    expect(batched.resident_tokens() == 0, "every slot is idle once every sequence has ended");

    options.sequences = 1;
    for (std::size_t i = 0; i < requests.size(); ++i) {
        const request alone_request{.id = requests[i].id,
                                    .prompt_tokens = requests[i].prompt_tokens,
                                    .new_tokens = requests[i].new_tokens};
        hc::kv_cache<> alone(shape, options, profile);
        const auto expected = serve(alone, model, std::span(&alone_request, 1));
        expect(outputs[i].size() == static_cast<std::size_t>(requests[i].new_tokens * shape.layers * shape.query_heads *
                                                             shape.head_dim),
               "every request ran all its decode steps");
        expect(outputs[i] == expected.front(),
               "a sequence in a continuous batch gets the attention outputs it gets alone, bit for bit");
    }
    return 0;
}
