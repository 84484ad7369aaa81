// Continuous batching: slots that start, idle and end at different times, reused by later sequences.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <vector>

#include <heterocache/heterocache.hpp>

#include "cache_runs.hpp"
#include "attention_reference.hpp"
#include "planted_heads.hpp"

namespace hc = heterocache;
using hc::index_t;
using testing_support::options_for;
using testing_support::small_scenario;

namespace {

//! An engine with `slots` sequence slots over the planted model's sequences: a slot's K/V memory
//! (`[layer][slot][head][token][d]`) receives the K/V of the planted sequence it serves when that sequence
//! begins, as an engine writes a sequence's K/V into the slot it gives it. Each sequence decodes at its own
//! pace: `own_step[seq]` of its decode tokens so far.
class batching_engine {
public:
    batching_engine(const planted::model& m, index_t slots) : m_(m), slots_(slots) {
        const auto& s = m.spec();
        tokens_ = s.prompt_tokens + s.steps;
        keys_.assign(static_cast<std::size_t>(s.shape.layers * slots * s.shape.kv_heads * tokens_ * s.shape.head_dim), 0.0f);
        values_.assign(keys_.size(), 0.0f);
        queries_.assign(static_cast<std::size_t>(slots * s.shape.query_heads * s.shape.head_dim), 0.0f);
    }
    [[nodiscard]] hc::strided_kv_tensor<float> tensor() const {
        const auto& sh = m_.spec().shape;
        return hc::make_head_major_tensor(keys_.data(), values_.data(), slots_, sh.kv_heads, tokens_, sh.head_dim);
    }
    //! Writes planted sequence `seq`'s K/V into `slot`.
    void load(index_t slot, index_t seq) {
        const auto& sh = m_.spec().shape;
        const auto from = m_.tensor(), to = tensor();
        const auto bytes = static_cast<std::size_t>(tokens_ * sh.head_dim) * sizeof(float);
        for (index_t layer = 0; layer < sh.layers; ++layer)
            for (index_t head = 0; head < sh.kv_heads; ++head) {
                std::memcpy(const_cast<float*>(to.key(layer, slot, head, 0)), from.key(layer, seq, head, 0), bytes);
                std::memcpy(const_cast<float*>(to.value(layer, slot, head, 0)), from.value(layer, seq, head, 0), bytes);
            }
    }
    //! The decode queries of this step: slot `slot` serving `seq` at its step `step`.
    float* query(index_t slot) { return queries_.data() + slot * m_.spec().shape.query_heads * m_.spec().shape.head_dim; }
    void set_query(index_t slot, index_t seq, index_t step, index_t layer) {
        const auto& sh = m_.spec().shape;
        std::memcpy(query(slot), m_.decode_query(step, layer, seq, 0), static_cast<std::size_t>(sh.query_heads * sh.head_dim) * sizeof(float));
    }
    [[nodiscard]] hc::decode_queries queries() const {
        const auto& sh = m_.spec().shape;
        return {queries_.data(), sh.query_heads * sh.head_dim, sh.head_dim};
    }

private:
    const planted::model& m_;
    index_t slots_, tokens_ = 0;
    std::vector<float> keys_, values_, queries_;
};

//! Attention outputs of one sequence, `[step][layer][query_head][d]`.
using sequence_outputs = std::vector<float>;

//! Runs sequence `seq` of the planted model alone through a one-slot cache made by `make`.
template <class Make>
sequence_outputs run_alone(const planted::model& m, index_t seq, Make&& make) {
    const auto& s = m.spec();
    const auto& sh = s.shape;
    batching_engine engine(m, 1);
    engine.load(0, seq);
    auto cache = make(index_t{1});
    const auto kv = engine.tensor();
    cache.begin_sequence(0, s.prompt_tokens);
    for (index_t layer = 0; layer < sh.layers; ++layer) cache.prefill(layer, 0, kv, m.window(layer, seq));
    sequence_outputs outputs;
    std::vector<float> out(static_cast<std::size_t>(sh.query_heads * sh.head_dim)), lse(static_cast<std::size_t>(sh.query_heads));
    for (index_t step = 0; step < s.steps; ++step)
        for (index_t layer = 0; layer < sh.layers; ++layer) {
            engine.set_query(0, seq, step, layer);
            const auto selection = cache.begin_layer(layer, kv, std::vector<index_t>{s.prompt_tokens + step});
            hc::decode_attention(selection, engine.query(0), out.data(), lse.data(), hc::attention_scale(sh.head_dim));
            cache.end_layer(layer, engine.queries(), hc::score_source::captured);
            outputs.insert(outputs.end(), out.begin(), out.end());
        }
    return outputs;
}

//! Serves the planted model's sequences through `slots` slots of one cache, on a random schedule (seeded):
//! a free slot takes the next waiting sequence at random steps, a live sequence idles (-1) at random steps,
//! and a sequence ends once it has decoded all its steps, freeing its slot. Returns every sequence's outputs.
template <class Cache>
std::map<index_t, sequence_outputs> run_batched(Cache& cache, const planted::model& m, index_t slots, std::uint64_t seed,
                                                index_t& max_live) {
    const auto& s = m.spec();
    const auto& sh = s.shape;
    batching_engine engine(m, slots);
    const auto kv = engine.tensor();
    std::mt19937_64 rng(seed);
    std::vector<index_t> serving(static_cast<std::size_t>(slots), -1), steps(static_cast<std::size_t>(slots), 0);
    std::map<index_t, sequence_outputs> outputs;
    index_t next = 0, finished = 0;
    const index_t per_head = sh.query_heads * sh.head_dim;
    std::vector<float> out(static_cast<std::size_t>(slots * per_head)), lse(static_cast<std::size_t>(slots * sh.query_heads));
    std::vector<index_t> tokens(static_cast<std::size_t>(slots));
    max_live = 0;
    while (finished < s.sequences) {
        for (index_t slot = 0; slot < slots; ++slot) {  // free slots take waiting sequences, now and then
            if (serving[slot] >= 0 || next >= s.sequences || rng() % 3 == 0) continue;
            engine.load(slot, next);
            cache.begin_sequence(slot, s.prompt_tokens);
            for (index_t layer = sh.layers; layer-- > 0;) cache.prefill(layer, slot, kv, m.window(layer, next));  // any order
            serving[slot] = next++;
            steps[slot] = 0;
        }
        index_t live = 0;
        for (index_t slot = 0; slot < slots; ++slot) {
            const bool steps_now = serving[slot] >= 0 && rng() % 4 != 0;  // a live sequence idles now and then
            tokens[slot] = steps_now ? s.prompt_tokens + steps[slot] : -1;
            live += serving[slot] >= 0;
        }
        max_live = std::max(max_live, live);
        for (index_t layer = 0; layer < sh.layers; ++layer) {
            for (index_t slot = 0; slot < slots; ++slot)
                if (tokens[slot] >= 0) engine.set_query(slot, serving[slot], steps[slot], layer);
            const auto selection = cache.begin_layer(layer, kv, tokens);
            for (index_t slot = 0; slot < slots; ++slot)
                if (tokens[slot] < 0) CHECK(selection.row_pages(slot * sh.kv_heads) == 0);  // idle rows are empty
            hc::decode_attention(selection, engine.queries().base, out.data(), lse.data(), hc::attention_scale(sh.head_dim));
            cache.end_layer(layer, engine.queries(), hc::score_source::captured);
            for (index_t slot = 0; slot < slots; ++slot)
                if (tokens[slot] >= 0) {
                    auto& mine = outputs[serving[slot]];
                    mine.insert(mine.end(), out.begin() + slot * per_head, out.begin() + (slot + 1) * per_head);
                }
        }
        for (index_t slot = 0; slot < slots; ++slot) {
            if (tokens[slot] < 0) continue;
            if (++steps[slot] < s.steps) continue;
            cache.end_sequence(slot);
            serving[slot] = -1;
            ++finished;
        }
    }
    return outputs;
}

}  // namespace

TEST_CASE("with 4 slots and 1 in use, online profiling completes after profiling_steps and the cache compresses") {
    const auto s = small_scenario();
    const planted::model m(s);
    auto o = options_for(s, 0.4);
    o.sequences = 4;
    o.profile_from_window = false;  // profiles the first decode steps
    hc::kv_cache<> cache(s.shape, o);
    batching_engine engine(m, 4);
    engine.load(2, 0);  // slot 2 only
    const auto kv = engine.tensor();
    cache.begin_sequence(2, s.prompt_tokens);
    for (index_t layer = 0; layer < s.shape.layers; ++layer) cache.prefill(layer, 2, kv, m.window(layer, 0));
    const index_t uncompressed = cache.resident_tokens();
    for (index_t step = 0; step < o.profiling_steps; ++step) {
        CHECK_FALSE(cache.profile().has_value());
        for (index_t layer = 0; layer < s.shape.layers; ++layer) {
            engine.set_query(2, 0, step, layer);
            (void)cache.begin_layer(layer, kv, std::vector<index_t>{-1, -1, s.prompt_tokens + step, -1});
            cache.end_layer(layer, engine.queries());
        }
    }
    REQUIRE(cache.profile().has_value());
    CHECK(static_cast<double>(cache.resident_tokens()) <
          0.5 * static_cast<double>(uncompressed + s.shape.total_kv_heads() * o.profiling_steps));
}

TEST_CASE("a sequence that ends before profiling completes holds nothing up; the next completes it") {
    const auto s = small_scenario();
    const planted::model m(s);
    auto o = options_for(s, 0.4);
    o.sequences = 2;
    o.profile_from_window = false;  // profiles the first decode steps
    hc::kv_cache<> cache(s.shape, o);
    batching_engine engine(m, 2);
    const auto kv = engine.tensor();
    for (const index_t slot : {0, 1}) {
        engine.load(slot, 0);
        cache.begin_sequence(slot, s.prompt_tokens);
        for (index_t layer = 0; layer < s.shape.layers; ++layer) cache.prefill(layer, slot, kv, m.window(layer, 0));
    }
    for (index_t step = 0; step < o.profiling_steps; ++step) {
        if (step == 2) cache.end_sequence(0);  // slot 0 leaves after two steps
        for (index_t layer = 0; layer < s.shape.layers; ++layer) {
            engine.set_query(1, 0, step, layer);
            const index_t first = step < 2 ? s.prompt_tokens + step : -1;
            (void)cache.begin_layer(layer, kv, std::vector<index_t>{first, s.prompt_tokens + step});
            cache.end_layer(layer, engine.queries());
        }
    }
    CHECK(cache.profile().has_value());
}

TEST_CASE("continuous batching with a loaded profile: every sequence decodes exactly as it does alone") {
    planted::scenario s = small_scenario();
    s.sequences = 7;
    s.steps = 12;
    const planted::model m(s);
    const auto profile = testing_support::planted_profile(m);
    auto o = options_for(s, 0.45);
    o.decode_window = 6;
    o.decode_sink = 2;
    const auto make = [&](index_t slots) {
        auto with = o;
        with.sequences = slots;
        return hc::kv_cache<>(s.shape, with, profile);
    };
    for (const std::uint64_t seed : {1u, 2u, 3u}) {
        CAPTURE(seed);
        auto cache = make(3);
        index_t max_live = 0;
        const auto batched = run_batched(cache, m, 3, seed, max_live);
        CHECK(max_live >= 2);
        REQUIRE(static_cast<index_t>(batched.size()) == s.sequences);
        for (index_t seq = 0; seq < s.sequences; ++seq) {
            CAPTURE(seq);
            CHECK(testing_support::same_bits(batched.at(seq), run_alone(m, seq, make)));
        }
        CHECK(cache.resident_tokens() == 0);  // every sequence ended: every page is back
        for (index_t slot = 0; slot < 3; ++slot) CHECK(cache.prompt_tokens(slot) == 0);
    }
}

TEST_CASE("continuous batching with online profiling: the profile found once serves later sequences") {
    planted::scenario s = small_scenario();
    s.sequences = 6;
    s.steps = 12;
    const planted::model m(s);
    auto o = options_for(s, 0.45);
    o.sequences = 3;
    for (const std::uint64_t seed : {4u, 5u}) {
        CAPTURE(seed);
        hc::kv_cache<> cache(s.shape, o);
        index_t max_live = 0;
        const auto batched = run_batched(cache, m, 3, seed, max_live);
        REQUIRE(static_cast<index_t>(batched.size()) == s.sequences);
        REQUIRE(cache.profile().has_value());
        // Once the profile exists, a sequence is compressed from its prefill: as a cache loaded with that profile.
        const auto profile = *cache.profile();
        const auto make = [&](index_t slots) {
            auto with = o;
            with.sequences = slots;
            return hc::kv_cache<>(s.shape, with, profile);
        };
        CHECK(testing_support::same_bits(batched.at(s.sequences - 1), run_alone(m, s.sequences - 1, make)));
        CHECK(cache.resident_tokens() == 0);
    }
}
