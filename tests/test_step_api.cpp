// The step API's contract: the sequence lifecycle, the checks every call makes before it changes anything, and
// the budget rules at the edges (short prompts, tiny budgets, profiles that keep every head full).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <heterocache/heterocache.hpp>

#include "cache_runs.hpp"
#include "planted_heads.hpp"

namespace hc = heterocache;
using hc::index_t;
using testing_support::options_for;
using testing_support::record_attention;
using testing_support::small_scenario;

namespace {

//! Runs `make()` and checks it throws `Error` naming `argument`, with the valid range in its message.
template <class Error = hc::invalid_argument_error, class Make>
void throws_naming(Make&& make, const char* argument) {
    try {
        make();
    } catch (const Error& e) {
        CHECK(e.argument() == argument);
        CHECK(std::string(e.what()).find("valid range") != std::string::npos);
        return;
    } catch (const std::exception& e) {
        FAIL("expected an error naming " << argument << ", got: " << e.what());
    }
    FAIL("expected an error naming " << argument);
}

//! A small cache and model for error cases: 2 layers, 3 KV heads, 64 prompt tokens, 4 decode steps.
struct small_setup {
    hc::model_shape shape{2, 3, 6, 32};
    hc::cache_options options = [] {
        hc::cache_options o;
        o.max_prompt_tokens = 64;
        o.max_new_tokens = 4;
        o.profiling_steps = 4;
        return o;
    }();
    planted::model model = [] {
        planted::scenario s;
        s.shape = {2, 3, 6, 32};
        s.prompt_tokens = 64;
        s.steps = 4;
        return planted::model(s);
    }();
};

//! The K/V and hot-tier state of a cache, to compare before and after a call that must change nothing.
template <class Cache>
std::vector<index_t> visible_state(const Cache& cache) {
    std::vector<index_t> state{cache.resident_tokens(), cache.prompt_tokens(0)};
    for (index_t layer = 0; layer < cache.shape().layers; ++layer)
        for (index_t row = 0; row < cache.rows().rows_per_layer(); ++row)
            state.insert(state.end(), {cache.rows().prompt_count(layer, row), cache.rows().decoded(layer, row)});
    const auto counters = cache.storage().counters();
    state.insert(state.end(), {static_cast<index_t>(counters.written_to_hot), static_cast<index_t>(counters.written_to_cold)});
    return state;
}

}  // namespace

TEST_CASE("bad shapes and options are typed errors naming the argument and its range") {
    const small_setup t;
    throws_naming([&] { hc::kv_cache<> c({2, 0, 6, 32}, t.options); }, "kv_heads");
    throws_naming([&] { hc::kv_cache<> c({0, 3, 6, 32}, t.options); }, "layers");
    throws_naming([&] { hc::kv_cache<> c({2, 3, 7, 32}, t.options); }, "query_heads");
    throws_naming([&] { hc::kv_cache<> c({2, 3, 6, 512}, t.options); }, "head_dim");
    for (double r : {0.0, 1.01, std::numeric_limits<double>::quiet_NaN()}) {
        auto bad = t.options;
        bad.budget_ratio = r;
        throws_naming([&] { hc::kv_cache<> c(t.shape, bad); }, "r");
    }
    auto bad = t.options;
    bad.max_prompt_tokens = 0;
    throws_naming([&] { hc::kv_cache<> c(t.shape, bad); }, "max_prompt_tokens");
    bad = t.options;
    bad.page_size = 0;
    throws_naming([&] { hc::kv_cache<> c(t.shape, bad); }, "page_size");
    bad = t.options;
    bad.profiling_steps = 5;  // more than max_new_tokens: online profiling of decode steps could never finish
    bad.profile_from_window = false;
    throws_naming([&] { hc::kv_cache<> c(t.shape, bad); }, "profiling_steps");
    throws_naming([&] { hc::kv_cache<> c(t.shape, t.options, hc::uniform_profile({3, 3, 6, 32}, hc::head_role::anchor)); },
                  "profile.layers");
}

TEST_CASE("sizes near the integer limits are typed errors, not overflows or bad_alloc") {
    const small_setup t;
    for (const index_t huge : {index_t{1} << 31, std::numeric_limits<index_t>::max() / 2, std::numeric_limits<index_t>::max()}) {
        CAPTURE(huge);
        auto o = t.options;
        o.max_prompt_tokens = huge;
        CHECK_THROWS_AS(hc::kv_cache<>(t.shape, o), hc::shape_error);
        o = t.options;
        o.max_new_tokens = huge;
        CHECK_THROWS_AS(hc::kv_cache<>(t.shape, o), hc::shape_error);
        o = t.options;
        o.sequences = huge;
        CHECK_THROWS_AS(hc::kv_cache<>(t.shape, o), hc::shape_error);
        o = t.options;
        o.decode_window = huge;  // a window longer than the decode tokens keeps them all
        CHECK_NOTHROW(hc::kv_cache<>(t.shape, o));
    }
    // Within the limits but more pages than 32-bit page ids can name: a shape_error too.
    auto o = t.options;
    o.max_prompt_tokens = hc::cache_options::max_tokens / 2;
    o.sequences = hc::cache_options::max_sequences;
    o.page_size = 1;
    CHECK_THROWS_AS((void)hc::kv_cache<>::bytes_required(t.shape, o), hc::shape_error);
}

TEST_CASE("every call checks its arguments and the sequence's state before it changes anything") {
    small_setup t;
    const auto kv = t.model.tensor();
    hc::kv_cache<> cache(t.shape, t.options);
    const std::vector<index_t> token{64};
    const auto queries = t.model.queries(0, 0);
    const auto unchanged = visible_state(cache);

    throws_naming<hc::shape_error>([&] { cache.prefill(0, 0, kv, t.model.window(0, 0)); }, "seq");  // no begin_sequence
    throws_naming<hc::shape_error>([&] { (void)cache.begin_layer(0, kv, token); }, "seq");
    throws_naming<hc::shape_error>([&] { cache.end_sequence(0); }, "seq");
    throws_naming<hc::shape_error>([&] { cache.begin_sequence(1, 64); }, "seq");  // one slot
    throws_naming<hc::shape_error>([&] { cache.begin_sequence(0, 65); }, "prompt_tokens");
    throws_naming<hc::shape_error>([&] { cache.begin_sequence(0, 0); }, "prompt_tokens");
    CHECK(visible_state(cache) == unchanged);

    cache.begin_sequence(0, 64);
    const auto begun = visible_state(cache);
    throws_naming<hc::shape_error>([&] { cache.begin_sequence(0, 64); }, "seq");  // in use
    throws_naming<hc::shape_error>([&] { cache.prefill(2, 0, kv, t.model.window(0, 0)); }, "layer");
    auto wrong_dim = kv;
    wrong_dim.dim = 16;
    throws_naming<hc::shape_error>([&] { cache.prefill(0, 0, wrong_dim, t.model.window(0, 0)); }, "kv.head_dim()");
    auto null_keys = kv;
    null_keys.keys = nullptr;
    throws_naming<hc::shape_error>([&] { cache.prefill(0, 0, null_keys, t.model.window(0, 0)); }, "kv.keys");
    auto no_window = t.model.window(0, 0);
    no_window.base = nullptr;
    throws_naming<hc::shape_error>([&] { cache.prefill(0, 0, kv, no_window); }, "window.base");
    auto long_window = t.model.window(0, 0);
    long_window.count = 65;
    throws_naming<hc::shape_error>([&] { cache.prefill(0, 0, kv, long_window); }, "window.count");
    CHECK(visible_state(cache) == begun);

    cache.prefill(0, 0, kv, t.model.window(0, 0));
    throws_naming<hc::shape_error>([&] { cache.prefill(0, 0, kv, t.model.window(0, 0)); }, "layer");  // twice
    // A stale layer: layer 1 was never prefilled for this sequence, so the sequence cannot decode yet.
    throws_naming<hc::shape_error>([&] { (void)cache.begin_layer(1, kv, token); }, "seq");
    cache.prefill(1, 0, kv, t.model.window(1, 0));
    const auto prefilled = visible_state(cache);
    throws_naming<hc::shape_error>([&] { (void)cache.begin_layer(0, kv, std::vector<index_t>{64, 65}); }, "new_tokens.size()");
    throws_naming<hc::shape_error>([&] { (void)cache.begin_layer(0, kv, std::vector<index_t>{-2}); }, "new_tokens[seq]");
    throws_naming<hc::shape_error>([&] { (void)cache.begin_layer(0, null_keys, token); }, "kv.keys");
    throws_naming<hc::shape_error>([&] { cache.end_layer(0, queries); }, "layer");  // no begin_layer
    throws_naming<hc::shape_error>([&] { (void)cache.begin_layer(0, kv, token, {nullptr, 192, 32}); }, "queries.base");
    throws_naming<hc::shape_error>([&] { (void)cache.begin_layer(0, kv, token, {queries.base, 192, 8}); },
                                   "queries.head_stride");
    CHECK(visible_state(cache) == prefilled);

    (void)cache.begin_layer(0, kv, token);
    throws_naming<hc::shape_error>([&] { (void)cache.begin_layer(0, kv, token); }, "layer");  // not ended
    throws_naming<hc::shape_error>([&] { cache.end_layer(0, {nullptr, 192, 32}); }, "queries.base");
    throws_naming<hc::shape_error>([&] { cache.end_layer(0, {queries.base, 192, 8}); }, "queries.head_stride");
    // The kernel of this step wrote nothing: saying it captured the scores is an error, not a silent misread.
    hc::kv_cache<> profiled(t.shape, t.options, testing_support::planted_profile(t.model));
    profiled.begin_sequence(0, 64);
    for (index_t layer = 0; layer < 2; ++layer) profiled.prefill(layer, 0, kv, t.model.window(layer, 0));
    (void)profiled.begin_layer(0, kv, token);
    throws_naming([&] { profiled.end_layer(0, queries, hc::score_source::captured); }, "scores");
    CHECK_NOTHROW(profiled.end_layer(0, queries, hc::score_source::recompute));

    cache.end_layer(0, queries);
    for (index_t step = 1; step < 4; ++step) {
        const std::vector<index_t> next{64 + step};
        (void)cache.begin_layer(0, kv, next);
        cache.end_layer(0, t.model.queries(step, 0));
    }
    throws_naming<hc::shape_error>([&] { (void)cache.begin_layer(0, kv, std::vector<index_t>{68}); }, "decode tokens");
    throws_naming<hc::shape_error>([&] { (void)cache.prompt_caps(1); }, "seq");
    throws_naming<hc::shape_error>([&] { (void)cache.prompt_tokens(-1); }, "seq");
}

TEST_CASE("a sequence ended and begun again in its slot starts from its new prompt only") {
    auto s = small_scenario();
    const planted::model m(s);
    const auto o = options_for(s, 0.5);
    const auto profile = testing_support::planted_profile(m);
    hc::kv_cache<> reused(s.shape, o, profile);
    // A first sequence of half the length runs a few steps, then ends.
    const auto kv = m.tensor();
    reused.begin_sequence(0, s.prompt_tokens / 2);
    for (index_t layer = 0; layer < s.shape.layers; ++layer) reused.prefill(layer, 0, kv, m.window(layer, 0));
    for (index_t step = 0; step < 3; ++step)
        for (index_t layer = 0; layer < s.shape.layers; ++layer) {
            (void)reused.begin_layer(layer, kv, std::vector<index_t>{s.prompt_tokens / 2 + step});
            reused.end_layer(layer, m.queries(step, layer));
        }
    reused.end_sequence(0);
    CHECK(reused.resident_tokens() == 0);
    CHECK(reused.prompt_tokens(0) == 0);
    // The slot then serves the scenario exactly as a fresh cache does.
    hc::kv_cache<> fresh(s.shape, o, profile);
    CHECK(testing_support::identical(record_attention(reused, m), record_attention(fresh, m)));
}

TEST_CASE("a profile whose every head keeps its full KV cannot meet r < 1: a budget_error at construction") {
    const small_setup t;
    auto o = t.options;
    o.budget_ratio = 0.5;
    try {
        hc::kv_cache<> c(t.shape, o, hc::uniform_profile(t.shape, hc::head_role::volatile_));
        FAIL("expected a budget_error");
    } catch (const hc::budget_error& e) {
        CHECK(e.argument() == "r");
        CHECK(std::string(e.what()).find("Nfull = 6") != std::string::npos);
    }
    auto one_compressed = hc::uniform_profile(t.shape, hc::head_role::volatile_);
    one_compressed.heads[0].role = hc::head_role::anchor;
    try {
        hc::kv_cache<> c(t.shape, o, one_compressed);
        FAIL("expected a budget_error");
    } catch (const hc::budget_error& e) {
        const std::string text = e.what();
        CHECK(text.find("r*N > Nfull") != std::string::npos);
        CHECK(text.find("Nfull = 5") != std::string::npos);
        CHECK(text.find("r*N = 3") != std::string::npos);
    }
    o.budget_ratio = 1.0;
    CHECK_NOTHROW(hc::kv_cache<>(t.shape, o, hc::uniform_profile(t.shape, hc::head_role::volatile_)));
}

TEST_CASE("a prompt too short for one token per compressed head keeps one each (a loaded profile, any length)") {
    // As the shipped SmolLM2 profile at r = 0.5: 44 of 90 heads full, so the compressed heads share only T
    // tokens; at T < 46 a head's share is below one token.
    const hc::model_shape shape{30, 3, 9, 32};
    hc::head_profile profile = hc::uniform_profile(shape, hc::head_role::anchor, 0.9);
    for (index_t i = 0; i < 44; ++i) profile.heads[static_cast<std::size_t>(i)] = {hc::head_role::volatile_, 0.1, -1};
    hc::cache_options o;
    o.max_prompt_tokens = 64;
    o.max_new_tokens = 2;
    o.budget_ratio = 0.5;
    std::vector<float> keys(static_cast<std::size_t>(30 * 3 * 66 * 32), 0.25f), values(keys.size(), 0.5f);
    std::vector<float> window(static_cast<std::size_t>(9 * 32), 0.1f);
    const auto kv = hc::make_head_major_tensor(keys.data(), values.data(), 1, 3, 66, 32);
    for (const index_t t : {1, 10, 45, 46, 64}) {
        CAPTURE(t);
        hc::kv_cache<> cache(shape, o, profile);
        cache.begin_sequence(0, t);
        for (index_t layer = 0; layer < shape.layers; ++layer) cache.prefill(layer, 0, kv, {window.data(), 1, 9 * 32, 32, 0});
        for (index_t head = 0; head < 90; ++head) {
            const index_t expected_min = head < 44 ? t : 1;
            CHECK(cache.prompt_caps(0)[static_cast<std::size_t>(head)] >= expected_min);
            CHECK(cache.rows().prompt_count(head / 3, head % 3) == cache.prompt_caps(0)[static_cast<std::size_t>(head)]);
        }
        // Over budget by at most one token per compressed head.
        CHECK(static_cast<double>(cache.resident_tokens()) <= 0.5 * 90.0 * static_cast<double>(t) + 46.0);
        std::vector<float> query(static_cast<std::size_t>(9 * 32), 0.1f);
        const auto selection = cache.begin_layer(0, kv, std::vector<index_t>{t});
        std::vector<float> out(query.size()), lse(9);
        hc::decode_attention(selection, query.data(), out.data(), lse.data(), 0.1f);
        CHECK_NOTHROW(cache.end_layer(0, {query.data(), 9 * 32, 32}, hc::score_source::captured));
    }
}

TEST_CASE("online profiling with r*T below one token per head completes without an error mid-decode") {
    planted::scenario s;
    s.shape = {2, 3, 6, 32};
    s.prompt_tokens = 4;
    s.window = 2;
    s.steps = 10;
    s.targets = 2;
    const planted::model m(s);
    auto o = options_for(s, 0.1);  // r*T = 0.4 tokens per head
    hc::kv_cache<> cache(s.shape, o);
    CHECK_NOTHROW(record_attention(cache, m));
    REQUIRE(cache.profile().has_value());
    CHECK(hc::budget_feasible(*cache.profile(), 0.1));
    for (index_t layer = 0; layer < 2; ++layer)
        for (index_t head = 0; head < 3; ++head) CHECK(cache.rows().prompt_count(layer, head) >= 1);
}
