// The baselines by name (heterocache/baselines.hpp): each reproduces a selection checked by hand, and each
// reproduces the full cache bit for bit when the budget is the whole context.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>
#include <vector>

#include <heterocache/heterocache.hpp>

#include "attention_error.hpp"
#include "cache_runs.hpp"
#include "planted_heads.hpp"

namespace hc = heterocache;
using hc::head_role;
using hc::index_t;
using testing_support::options_for;
using testing_support::record_attention;
using testing_support::small_scenario;

namespace {


//! The planted roles without clusters: a drifting head is volatile, a stable one an anchor (DuoAttention's split).
hc::head_profile unclustered_profile(const planted::model& m) {
    auto profile = testing_support::planted_profile(m);
    for (auto& head : profile.heads)
        if (head.role == head_role::pivot || head.role == head_role::satellite) head = {head_role::volatile_, head.stability, -1};
    return profile;
}

// Each method as the tests build it: `make(model, options)`.
struct full_method {
    static auto make(const planted::model& m, const hc::cache_options& o) { return hc::make_full_cache(m.spec().shape, o); }
};
struct streaming_llm_method {
    static auto make(const planted::model& m, const hc::cache_options& o) { return hc::make_streaming_llm_cache(m.spec().shape, o); }
};
struct h2o_method {
    static auto make(const planted::model& m, const hc::cache_options& o) { return hc::make_h2o_cache(m.spec().shape, o); }
};
struct h2o_oracle_method {
    static auto make(const planted::model& m, const hc::cache_options& o) { return hc::make_h2o_oracle_cache(m.spec().shape, o); }
};
struct tova_method {
    static auto make(const planted::model& m, const hc::cache_options& o) { return hc::make_tova_cache(m.spec().shape, o); }
};
struct snapkv_method {
    static auto make(const planted::model& m, const hc::cache_options& o) { return hc::make_snapkv_cache(m.spec().shape, o); }
};
struct pyramidkv_method {
    static auto make(const planted::model& m, const hc::cache_options& o) { return hc::make_pyramidkv_cache(m.spec().shape, o); }
};
struct ada_kv_method {
    static auto make(const planted::model& m, const hc::cache_options& o) { return hc::make_ada_kv_cache(m.spec().shape, o); }
};
struct quest_method {
    static auto make(const planted::model& m, const hc::cache_options& o) { return hc::make_quest_cache(m.spec().shape, o); }
};
struct duo_attention_profiled_online {
    static auto make(const planted::model& m, const hc::cache_options& o) {
        return hc::make_duo_attention_cache(m.spec().shape, o);
    }
};
struct duo_attention_with_profile {
    static auto make(const planted::model& m, const hc::cache_options& o) {
        return hc::make_duo_attention_cache(m.spec().shape, o, unclustered_profile(m));
    }
};
struct heterocache_profiled_online {
    static auto make(const planted::model& m, const hc::cache_options& o) { return hc::make_heterocache_cache(m.spec().shape, o); }
};
struct heterocache_with_profile {
    static auto make(const planted::model& m, const hc::cache_options& o) {
        return hc::make_heterocache_cache(m.spec().shape, o, testing_support::planted_profile(m));
    }
};
struct heterocache_ada_kv_profiled_online {
    static auto make(const planted::model& m, const hc::cache_options& o) {
        return hc::make_heterocache_ada_kv_cache(m.spec().shape, o);
    }
};
struct heterocache_ada_kv_with_profile {
    static auto make(const planted::model& m, const hc::cache_options& o) {
        return hc::make_heterocache_ada_kv_cache(m.spec().shape, o, testing_support::planted_profile(m));
    }
};

//! Positions of the prompt tokens `row` of `layer` holds now, ascending.
template <class Cache>
std::vector<index_t> hot_prompt_positions(const Cache& cache, index_t layer, index_t row) {
    return testing_support::row_positions(cache, layer, row, cache.rows().prompt_count(layer, row));
}

//! The prompt positions row `row` of `selection` attends: its tokens that hold a prompt position.
template <class Cache, class Selection>
std::vector<index_t> attended_prompt_positions(const Cache& cache, index_t layer, const Selection& selection, index_t row) {
    std::vector<index_t> positions;
    for (index_t k = 0; k < selection.row_length(row); ++k) {
        const index_t p = cache.storage().hot_position(layer, selection.slot(row, k));
        if (p < cache.prompt_tokens(0)) positions.push_back(p);
    }
    return positions;
}

std::vector<index_t> range(index_t first, index_t last) {
    std::vector<index_t> out(static_cast<std::size_t>(last - first));
    std::iota(out.begin(), out.end(), first);
    return out;
}

//! A one-layer model with head dim 2 whose keys and queries a test writes by hand: K/V `[kv_head][token][2]`,
//! queries `[query_head][2]`. One sequence; the last token is the first decode token.
struct tiny_model {
    hc::model_shape shape;
    index_t tokens;
    std::vector<float> keys, values, window, decode;

    tiny_model(index_t kv_heads, index_t query_heads, index_t tokens_)
        : shape{1, kv_heads, query_heads, 2}, tokens(tokens_),
          keys(static_cast<std::size_t>(kv_heads * tokens * 2), 0.0f), values(keys.size(), 1.0f),
          window(static_cast<std::size_t>(query_heads * 2), 0.0f), decode(window.size(), 0.0f) {}
    void set_key(index_t head, index_t t, float x, float y) {
        keys[static_cast<std::size_t>((head * tokens + t) * 2)] = x;
        keys[static_cast<std::size_t>((head * tokens + t) * 2 + 1)] = y;
    }
    [[nodiscard]] hc::strided_kv_tensor<float> tensor() const {
        return hc::make_head_major_tensor(keys.data(), values.data(), 1, shape.kv_heads, tokens, 2);
    }
    [[nodiscard]] hc::query_rows window_rows() const { return {window.data(), 1, shape.query_heads * 2, 2, 0}; }
    [[nodiscard]] hc::cache_options options(index_t prompt_tokens, double r, index_t page_size = 16) const {
        hc::cache_options o;
        o.max_prompt_tokens = prompt_tokens;
        o.max_new_tokens = tokens - prompt_tokens;
        o.budget_ratio = r;
        o.page_size = page_size;
        return o;
    }
    //! Begins the sequence and prefills the layer with the window queries.
    template <class Cache>
    void prefill(Cache& cache, index_t prompt_tokens) const {
        cache.begin_sequence(0, prompt_tokens);
        cache.prefill(0, 0, tensor(), window_rows());
    }
    //! One decode step (the token after the prompt) with the decode queries, as an engine runs it: begin_layer
    //! (given the queries too when `queries_at_begin`), its attention kernel over the selection, end_layer.
    //! Returns the prompt positions each row attended.
    template <class Cache>
    std::vector<std::vector<index_t>> step(Cache& cache, index_t prompt_tokens, bool queries_at_begin = false) const {
        const std::vector<index_t> token{prompt_tokens};
        const hc::decode_queries queries{decode.data(), shape.query_heads * 2, 2};
        const auto selection = queries_at_begin ? cache.begin_layer(0, tensor(), token, queries) : cache.begin_layer(0, tensor(), token);
        std::vector<std::vector<index_t>> attended;
        for (index_t row = 0; row < shape.kv_heads; ++row) attended.push_back(attended_prompt_positions(cache, 0, selection, row));
        std::vector<float> out(decode.size()), lse(static_cast<std::size_t>(shape.query_heads));
        hc::decode_attention(selection, decode.data(), out.data(), lse.data(), hc::attention_scale(2));
        cache.end_layer(0, queries, hc::score_source::captured);
        return attended;
    }
};

//! One head, d = 2, `tokens` tokens: the window query (0, 20) attends key 9 = (0, 10), the decode query
//! (20, 0) key 5 = (10, 0).
tiny_model h2o_scene(index_t tokens) {
    tiny_model model(1, 1, tokens);
    model.set_key(0, 9, 0.0f, 10.0f);
    model.set_key(0, 5, 10.0f, 0.0f);
    model.window = {0.0f, 20.0f};
    model.decode = {20.0f, 0.0f};
    return model;
}

}  // namespace

TEST_CASE_TEMPLATE("every method with a budget of the whole context reproduces the full cache bit for bit", Method,
                   full_method, streaming_llm_method, h2o_method, h2o_oracle_method, tova_method, snapkv_method,
                   pyramidkv_method, ada_kv_method, quest_method, duo_attention_profiled_online, duo_attention_with_profile, heterocache_profiled_online,
                   heterocache_with_profile, heterocache_ada_kv_profiled_online, heterocache_ada_kv_with_profile) {
    const planted::model m(small_scenario());
    const auto o = options_for(m.spec(), 1.0);
    auto full = hc::make_full_cache(m.spec().shape, o);
    const auto expected = record_attention(full, m);
    for (const index_t page_size : {16, 1}) {  // the hot tier's page size changes nothing the kernel computes
        CAPTURE(page_size);
        auto paged = o;
        paged.page_size = page_size;
        auto cache = Method::make(m, paged);
        CHECK(testing_support::identical(record_attention(cache, m), expected));
        CHECK(cache.resident_tokens() == full.resident_tokens());
    }
}

TEST_CASE_TEMPLATE("every method at r = 0.25 keeps its budget and a finite attention", Method, streaming_llm_method,
                   h2o_method, h2o_oracle_method, tova_method, snapkv_method, pyramidkv_method, ada_kv_method, quest_method,
                   duo_attention_profiled_online, heterocache_profiled_online, heterocache_ada_kv_profiled_online) {
    const planted::model m(small_scenario());
    const auto& s = m.spec();
    const auto o = options_for(s, 0.25);
    auto full = hc::make_full_cache(s.shape, o);
    const auto expected = record_attention(full, m);
    auto cache = Method::make(m, o);
    const auto trace = record_attention(cache, m);
    REQUIRE(trace.outputs.size() == expected.outputs.size());
    double worst = 0.0;
    for (std::size_t i = 0; i < trace.outputs.size(); ++i)
        worst = std::max(worst, planted::relative_error(trace.outputs[i], expected.outputs[i]));
    CHECK(std::isfinite(worst));
    const index_t heads = s.shape.total_kv_heads();
    const index_t prompt_resident = cache.resident_tokens() - heads * s.steps;
    CHECK(static_cast<double>(prompt_resident) <= 0.25 * static_cast<double>(heads * s.prompt_tokens) + static_cast<double>(heads));
    REQUIRE(cache.profile().has_value());  // profiled online, the profile was demoted until the budget can be met
    CHECK(hc::budget_feasible(*cache.profile(), 0.25));
}

//! One head, d = 2, T = 16 (and one decode token). The window query (20, 0) attends key 2 = (10, 0) and, e^-7
//! less, key 13 = (9.5, 0); every other logit is over 87 lower and its softmax exactly 0. Pooled over width 5:
//! positions 0..4 score p(2)/5, positions 11..15 score p(13)/5, the rest 0.
tiny_model two_peaks_scene() {
    tiny_model model(1, 1, 17);
    model.set_key(0, 2, 10.0f, 0.0f);
    model.set_key(0, 13, 9.5f, 0.0f);
    model.window = {20.0f, 0.0f};
    return model;
}

TEST_CASE("SnapKV keeps the pooled neighbourhoods of the tokens the window attends, the hotter first") {
    // r = 7/16: cap 7. Top 7: 0..4, then 11 and 12.
    const tiny_model model = two_peaks_scene();
    for (const index_t page_size : {16, 1}) {
        CAPTURE(page_size);
        auto options = model.options(16, 7.0 / 16.0, page_size);
        options.prompt_recent = 0;  // the pooled scores alone (the factory's default keeps the 32-token window)
        auto cache = hc::make_snapkv_cache(model.shape, options);
        model.prefill(cache, 16);
        CHECK(hot_prompt_positions(cache, 0, 0) == std::vector<index_t>{0, 1, 2, 3, 4, 11, 12});
        CHECK(model.step(cache, 16)[0] == std::vector<index_t>{0, 1, 2, 3, 4, 11, 12});  // what the kernel attends
    }
    CHECK(hc::snapkv_window == 32);
}

TEST_CASE("A span carry keeps the tokens after the attended ones, for its share of the cap") {
    // The scene above, cap 7, with cache_options::prompt_span_carry = 0.9: carried, positions 5, 6 score 0.9 and
    // 0.81 of p(2)/5 and outrank 11, 12 (p(13)/5, e^-7 less).
    const tiny_model model = two_peaks_scene();
    const auto kept = [&](double carry, double share) {
        auto options = model.options(16, 7.0 / 16.0);
        options.prompt_recent = 0;
        options.prompt_span_carry = carry;
        options.prompt_span_share = share;
        auto cache = hc::make_snapkv_cache(model.shape, options);
        model.prefill(cache, 16);
        return hot_prompt_positions(cache, 0, 0);
    };
    CHECK(kept(0.9, 1.0) == std::vector<index_t>{0, 1, 2, 3, 4, 5, 6});  // the whole cap by the carried scores
    CHECK(kept(0.9, -1.0) == std::vector<index_t>{0, 1, 2, 3, 4, 5, 6});  // a bare cache's default share is 1
    // one seventh: 6 by the own scores (0..4, 11), then the best carried one left (5)
    CHECK(kept(0.9, 1.0 / 7.0 + 1e-9) == std::vector<index_t>{0, 1, 2, 3, 4, 5, 11});
    CHECK(kept(0.9, 0.0) == std::vector<index_t>{0, 1, 2, 3, 4, 11, 12});  // no share: the own scores
    CHECK(kept(0.0, 1.0) == std::vector<index_t>{0, 1, 2, 3, 4, 11, 12});  // no carry
    CHECK(kept(-1.0, -1.0) == std::vector<index_t>{0, 1, 2, 3, 4, 11, 12});  // SnapKV's default: none
    std::optional<hc::head_profile> no_profile;  // HeteroCache's factory fills in its own
    const hc::cache_options hetero = hc::heterocache_options(model.options(16, 0.5), no_profile);
    CHECK(hetero.span_carry() == hc::heterocache_prompt_span_carry);
    CHECK(hetero.span_share() == hc::heterocache_prompt_span_share);
    CHECK(hetero.span_scoring == hc::heterocache_span_scoring);
    auto pooled_span = model.options(16, 0.5);
    pooled_span.span_scoring = hc::prompt_scoring::pooled_window;  // an explicit choice is kept
    CHECK(hc::heterocache_options(pooled_span, no_profile).span_scoring == hc::prompt_scoring::pooled_window);
    auto bad = model.options(16, 0.5);
    bad.prompt_span_carry = 1.0;
    CHECK_THROWS_WITH_AS(hc::make_snapkv_cache(model.shape, bad), doctest::Contains("prompt_span_carry"),
                         hc::invalid_argument_error);
    bad.prompt_span_carry = 0.5;
    bad.prompt_span_share = 1.5;
    CHECK_THROWS_WITH_AS(hc::make_snapkv_cache(model.shape, bad), doctest::Contains("prompt_span_share"),
                         hc::invalid_argument_error);
}

TEST_CASE("A span carry scored apart carries what its own scoring attends: the last query's span, not the window's") {
    // One head, d = 2, T = 16: the first window query (20, 0) attends key 2 = (10, 0), the last one (0, 20) key
    // 11 = (0, 10), each with softmax exactly 1. Pooled (SnapKV): 1/2 each, averaged over 5: positions 0..4 and
    // 9..13 score 0.1. Cap 7 with carry 0.9 and share 3/7: four by the own scores (0..3, ties to the lower
    // position), three from the carried share's scores: pooled, the next 0.1s (4, 9, 10); by the last query, key
    // 11 and what follows it (11, 12, 13); by the window's mass (1 at 2 and 11, carried: 11, then 4 and 12 at 0.9).
    tiny_model model(1, 1, 17);
    model.set_key(0, 2, 10.0f, 0.0f);
    model.set_key(0, 11, 0.0f, 10.0f);
    const std::vector<float> window{20.0f, 0.0f, 0.0f, 20.0f};
    const auto kept = [&](std::optional<hc::prompt_scoring> span, double share) {
        auto options = model.options(16, 7.0 / 16.0);
        options.prompt_recent = 0;
        options.prompt_span_carry = 0.9;
        options.prompt_span_share = share;
        options.span_scoring = span;
        auto cache = hc::make_snapkv_cache(model.shape, options);
        cache.begin_sequence(0, 16);
        cache.prefill(0, 0, model.tensor(), hc::query_rows{window.data(), 2, 2, 2, 0});
        return hot_prompt_positions(cache, 0, 0);
    };
    const double share = 3.0 / 7.0 + 1e-9;
    CHECK(kept(std::nullopt, share) == std::vector<index_t>{0, 1, 2, 3, 4, 9, 10});  // a bare cache: the selection's
    CHECK(kept(hc::prompt_scoring::pooled_window, share) == std::vector<index_t>{0, 1, 2, 3, 4, 9, 10});
    CHECK(kept(hc::prompt_scoring::last_query, share) == std::vector<index_t>{0, 1, 2, 3, 11, 12, 13});
    CHECK(kept(hc::prompt_scoring::window_mass, share) == std::vector<index_t>{0, 1, 2, 3, 4, 11, 12});
    CHECK(kept(hc::prompt_scoring::last_query, 0.0) == std::vector<index_t>{0, 1, 2, 3, 4, 9, 10});  // no share
    auto bad = model.options(16, 0.5);
    bad.span_scoring = static_cast<hc::prompt_scoring>(3);
    CHECK_THROWS_WITH_AS(hc::make_snapkv_cache(model.shape, bad), doctest::Contains("span_scoring"),
                         hc::invalid_argument_error);
}

TEST_CASE("StreamingLLM keeps four sink tokens and the most recent ones, whatever the head attends") {
    tiny_model model(1, 1, 17);
    model.set_key(0, 8, 10.0f, 0.0f);
    model.window = {20.0f, 0.0f};
    model.decode = model.window;
    auto cache = hc::make_streaming_llm_cache(model.shape, model.options(16, 0.5));
    model.prefill(cache, 16);
    CHECK(hot_prompt_positions(cache, 0, 0) == std::vector<index_t>{0, 1, 2, 3, 12, 13, 14, 15});
    CHECK(model.step(cache, 16)[0] == std::vector<index_t>{0, 1, 2, 3, 12, 13, 14, 15});
    CHECK(hot_prompt_positions(cache, 0, 0) == std::vector<index_t>{0, 1, 2, 3, 12, 13, 14, 15});  // static
}

TEST_CASE("The H2O oracle brings in the token the decode queries pile their attention on, beside the recent window") {
    // One head, d = 2, T = 16, r = 0.25: cap 4, recent window 0.25 * 16 / 2 = 2 (positions 14, 15). The window
    // attends key 9 = (0, 10): pooled, positions 7..11 score 0.2. Prefill keeps 14, 15 and the first two of
    // 7..11. The decode query (20, 0) attends key 5 = (10, 0): one step adds 1 to position 5, which then
    // outranks 7..11.
    const tiny_model model = h2o_scene(17);
    for (const index_t page_size : {16, 1}) {
        CAPTURE(page_size);
        auto cache = hc::make_h2o_oracle_cache(model.shape, model.options(16, 0.25, page_size));
        model.prefill(cache, 16);
        CHECK(hot_prompt_positions(cache, 0, 0) == std::vector<index_t>{7, 8, 14, 15});
        CHECK(model.step(cache, 16)[0] == std::vector<index_t>{7, 8, 14, 15});  // the refresh lands for the next step
        CHECK(hot_prompt_positions(cache, 0, 0) == std::vector<index_t>{5, 7, 14, 15});
    }
}

TEST_CASE("H2O keeps the window's heavy hitters (unpooled) and its recent half, and evicts for good") {
    // The oracle's scene: the window attends key 9, the decode query key 5. H2O's prefill scores are the
    // window's attention itself (no pooling): position 9 has it all, every other position 0 (ties to the lower
    // position). Cap 4: recent 14, 15 (half the cap), heavy hitters 0 and 9. The decode step changes nothing.
    const tiny_model model = h2o_scene(18);
    auto cache = hc::make_h2o_cache(model.shape, model.options(16, 0.25));  // two decode tokens
    model.prefill(cache, 16);
    CHECK(hot_prompt_positions(cache, 0, 0) == std::vector<index_t>{0, 9, 14, 15});
    for (int step = 0; step < 2; ++step) CHECK(model.step(cache, 16 + step)[0] == std::vector<index_t>{0, 9, 14, 15});
    CHECK(cache.storage().counters().retrieved == 0);  // nothing fetched back from the cold tier
}

//! One head, d = 2, T = 16, and a window of two queries: the first attends key 3, the last key 11.
struct two_query_scene {
    tiny_model model{1, 1, 17};
    std::vector<float> queries{20.0f, 0.0f, 0.0f, 20.0f};
    two_query_scene() {
        model.set_key(0, 3, 10.0f, 0.0f);
        model.set_key(0, 11, 0.0f, 10.0f);
    }
    [[nodiscard]] hc::query_rows window() const { return {queries.data(), 2, 2, 2, 0}; }
};

TEST_CASE("TOVA keeps what the last prompt query attends, not the rest of the window") {
    // TOVA (cap 4 of 16) keeps position 15 (the last token), 11 and the lowest-positioned zeros; SnapKV over the
    // same window pools both neighbourhoods.
    const two_query_scene scene;
    const tiny_model& model = scene.model;
    const hc::query_rows window = scene.window();
    auto tova = hc::make_tova_cache(model.shape, model.options(16, 0.25));
    tova.begin_sequence(0, 16);
    tova.prefill(0, 0, model.tensor(), window);
    CHECK(hot_prompt_positions(tova, 0, 0) == std::vector<index_t>{0, 1, 11, 15});
    auto options = model.options(16, 0.25);
    options.prompt_recent = 0;
    auto snapkv = hc::make_snapkv_cache(model.shape, options);
    snapkv.begin_sequence(0, 16);
    snapkv.prefill(0, 0, model.tensor(), window);
    const auto kept = hot_prompt_positions(snapkv, 0, 0);
    CHECK(std::count_if(kept.begin(), kept.end(), [](index_t p) { return p <= 5; }) >= 1);  // key 3's neighbourhood
}

TEST_CASE("cache_options::selection_scoring replaces the monitor's prefill scoring, and nothing else") {
    const two_query_scene scene;  // TOVA's: the window's first query attends key 3, its last key 11
    const tiny_model& model = scene.model;
    const hc::query_rows window = scene.window();
    const auto kept = [&](auto make, index_t recent, std::optional<hc::prompt_scoring> scoring) {
        auto options = model.options(16, 0.25);
        options.prompt_recent = recent;
        options.selection_scoring = scoring;
        auto cache = make(model.shape, options);
        cache.begin_sequence(0, 16);
        cache.prefill(0, 0, model.tensor(), window);
        return hot_prompt_positions(cache, 0, 0);
    };
    const auto snapkv = [](const hc::model_shape& shape, const hc::cache_options& o) { return hc::make_snapkv_cache(shape, o); };
    const auto tova = [](const hc::model_shape& shape, const hc::cache_options& o) { return hc::make_tova_cache(shape, o); };
    const auto h2o = [](const hc::model_shape& shape, const hc::cache_options& o) { return hc::make_h2o_cache(shape, o); };
    const auto tova_kept = kept(tova, 1, std::nullopt), snapkv_kept = kept(snapkv, 0, std::nullopt);
    CHECK(tova_kept == std::vector<index_t>{0, 1, 11, 15});
    CHECK(snapkv_kept != tova_kept);
    // SnapKV told to score by the last query keeps TOVA's tokens; TOVA told to pool keeps SnapKV's.
    CHECK(kept(snapkv, 1, hc::prompt_scoring::last_query) == tova_kept);
    CHECK(kept(tova, 0, hc::prompt_scoring::pooled_window) == snapkv_kept);
    CHECK(kept(snapkv, 0, hc::prompt_scoring::pooled_window) == snapkv_kept);  // its own kind: unchanged
    // the window's mass, unpooled: keys 3 and 11 have it all, ties to the lower positions, as H2O's own
    CHECK(kept(snapkv, 1, hc::prompt_scoring::window_mass) == std::vector<index_t>{0, 3, 11, 15});
    CHECK(kept(h2o, 1, std::nullopt) == std::vector<index_t>{0, 3, 11, 15});
    auto bad = model.options(16, 0.25);
    bad.selection_scoring = static_cast<hc::prompt_scoring>(7);
    CHECK_THROWS_WITH_AS(hc::make_snapkv_cache(model.shape, bad), doctest::Contains("selection_scoring"),
                         hc::invalid_argument_error);
}

TEST_CASE_TEMPLATE("SnapKV, PyramidKV and Ada-KV keep the last snapkv_window prompt positions of every head", Method,
                   snapkv_method, pyramidkv_method, ada_kv_method) {
    // The planted heads attend their needles far from the prompt's end; every compressed head still holds the
    // observation window itself (the question of a prompt), whatever its scores, at r = 0.5 and 0.25.
    const planted::model m(small_scenario());
    const auto& s = m.spec();
    REQUIRE(s.prompt_tokens > 4 * hc::snapkv_window);
    for (const double r : {0.5, 0.25}) {
        CAPTURE(r);
        auto cache = Method::make(m, options_for(s, r));
        (void)record_attention(cache, m);
        const auto caps = cache.prompt_caps(0);
        for (index_t layer = 0; layer < s.shape.layers; ++layer)
            for (index_t head = 0; head < s.shape.kv_heads; ++head) {
                CAPTURE(layer);
                CAPTURE(head);
                const auto kept = hot_prompt_positions(cache, layer, head);
                const index_t cap = caps[static_cast<std::size_t>(layer * s.shape.kv_heads + head)];
                const index_t window = std::min(cap, hc::snapkv_window);
                REQUIRE(static_cast<index_t>(kept.size()) >= window);
                CHECK(std::vector<index_t>(kept.end() - window, kept.end()) == range(s.prompt_tokens - window, s.prompt_tokens));
            }
    }
}

TEST_CASE("Quest fetches the page whose key digest bounds the decode query's score highest") {
    // Two query heads on one KV head, T = 40, pages of 16: the digests give page bounds 2, 3, 1 (as in the
    // policy test); with r = 0.4 (cap 16) the second page is fetched after the first decode step.
    tiny_model model(1, 2, 41);
    for (index_t t = 0; t < 40; ++t) {
        if (t < 16) model.set_key(0, t, t == 5 ? 2.0f : 1.0f, t == 5 ? 0.0f : -1.0f);
        else if (t < 32) model.set_key(0, t, t == 20 ? 0.0f : -1.0f, t == 20 ? 3.0f : 1.0f);
        else model.set_key(0, t, 0.5f, 0.5f);
    }
    model.window = {1.0f, 0.0f, 1.0f, 0.0f};
    model.decode = {1.0f, 1.0f, -1.0f, 0.0f};
    auto cache = hc::make_quest_cache(model.shape, model.options(40, 0.4));
    model.prefill(cache, 40);
    CHECK(hot_prompt_positions(cache, 0, 0) != range(16, 32));  // the window alone does not point there
    SUBCASE("given the decode query at begin_layer, the step that query belongs to attends that page") {
        CHECK(model.step(cache, 40, true) == std::vector<std::vector<index_t>>{range(16, 32)});
        CHECK(hot_prompt_positions(cache, 0, 0) == range(16, 32));
    }
    SUBCASE("given it only at end_layer, the choice lands one step late") {
        CHECK(model.step(cache, 40) != std::vector<std::vector<index_t>>{range(16, 32)});
        CHECK(hot_prompt_positions(cache, 0, 0) == range(16, 32));
    }
}

TEST_CASE("Quest ranking at begin_layer: every step attends the pages its own query bounds highest") {
    // Two pages of 8 in one head, cap 8: the key (4, 0) sits in page 0 and (0, 4) in page 1; the decode query
    // alternates between (1, 0) and (0, 1), so each step's own page must be the one attended at that step.
    tiny_model model(1, 1, 20);
    for (index_t t = 0; t < 16; ++t) model.set_key(0, t, 0.0f, 0.0f);
    model.set_key(0, 3, 4.0f, 0.0f);
    model.set_key(0, 12, 0.0f, 4.0f);
    model.window = {0.0f, 0.0f};
    auto cache = hc::make_quest_cache(model.shape, model.options(16, 0.5, 8), 8);
    model.prefill(cache, 16);
    for (index_t step = 0; step < 4; ++step) {
        CAPTURE(step);
        model.decode = step % 2 == 0 ? std::vector<float>{1.0f, 0.0f} : std::vector<float>{0.0f, 1.0f};
        const std::vector<index_t> expected = step % 2 == 0 ? range(0, 8) : range(8, 16);
        CHECK(model.step(cache, 16 + step, true) == std::vector<std::vector<index_t>>{expected});
    }
}

//! One layer of three KV heads (G = 1, d = 2, T = 32, pages of 8): head 0 a digest pivot, head 1 its
//! satellite, head 2 an anchor; every head's keys are (4, 0) at position 3 and (0, 4) at position 20, zero
//! elsewhere, and the window query (1, 0) (so prefill keeps the neighbourhood of 3).
struct digest_pivot_scene {
    tiny_model model{3, 3, 40};
    hc::head_profile profile{1, 3, 0.5, 0.5, 0,
                             {{hc::head_role::digest_pivot, 0.9, 0}, {hc::head_role::satellite, 0.9, 0}, {hc::head_role::anchor, 0.9, -1}}};
    digest_pivot_scene() {
        for (index_t head = 0; head < 3; ++head) {
            model.set_key(head, 3, 4.0f, 0.0f);
            model.set_key(head, 20, 0.0f, 4.0f);
        }
        model.window = {1.0f, 0.0f, 1.0f, 0.0f, 1.0f, 0.0f};
    }
    [[nodiscard]] hc::cache_options options() const {
        auto o = model.options(32, 0.25);  // caps of 8, the reference set of B = 8
        o.prompt_sink = o.prompt_recent = 0;
        o.digest_page_tokens = 8;
        return o;
    }
    void set_query(float x, float y) { model.decode = {x, y, x, y, x, y}; }
};

std::vector<index_t> sorted(std::vector<index_t> v) {
    std::sort(v.begin(), v.end());
    return v;
}

TEST_CASE("A digest pivot scores drift from page digests with the step's query and moves its cluster in that step") {
    digest_pivot_scene scene;
    auto cache = hc::make_heterocache_cache(scene.model.shape, scene.options(), scene.profile);
    REQUIRE(cache.profile()->at(0, 0).role == hc::head_role::digest_pivot);  // nothing left to demote
    scene.model.prefill(cache, 32);
    const std::vector<index_t> prefilled = hot_prompt_positions(cache, 0, 2);
    CHECK(std::count(prefilled.begin(), prefilled.end(), 3) == 1);
    CHECK(std::count(prefilled.begin(), prefilled.end(), 20) == 0);
    CHECK(cache.resident_tokens() == 3 * 8);  // the digest pivot holds its cap, not its prompt
    SUBCASE("given the query at begin_layer, the step attends the page it bounds highest") {
        scene.set_query(0.0f, 1.0f);  // page 2 (positions 16-23) holds (0, 4)
        const auto attended = scene.model.step(cache, 32, true);
        CHECK(sorted(attended[0]) == range(16, 24));
        CHECK(sorted(attended[1]) == range(16, 24));
        CHECK(sorted(attended[2]) == prefilled);  // the anchor stays
        CHECK(cache.monitor().digest_drifts() == 1);
        (void)scene.model.step(cache, 33, true);  // the same query: no drift, nothing moves
        CHECK(cache.monitor().digest_checks() == 2);
        CHECK(cache.monitor().digest_drifts() == 1);
        scene.set_query(1.0f, 0.0f);  // back to page 0, which holds (4, 0)
        const auto back = scene.model.step(cache, 34, true);
        CHECK(sorted(back[0]) == range(0, 8));
        CHECK(sorted(back[1]) == range(0, 8));
        CHECK(cache.monitor().digest_drifts() == 2);
    }
    SUBCASE("given it only at end_layer, the move lands one step late") {
        scene.set_query(0.0f, 1.0f);
        const auto attended = scene.model.step(cache, 32);
        CHECK(sorted(attended[0]) != range(16, 24));
        CHECK(sorted(hot_prompt_positions(cache, 0, 1)) == range(16, 24));
        CHECK(cache.monitor().digest_drifts() == 1);
    }
    SUBCASE("without digests (digest_page_tokens = 0) such a profile is an invalid_argument_error") {
        auto o = scene.options();
        o.digest_page_tokens = 0;
        CHECK_THROWS_AS(hc::kv_cache<>(scene.model.shape, o, scene.profile), hc::invalid_argument_error);
    }
}

TEST_CASE("DuoAttention-style: drifting heads keep everything, stable heads sink + recent") {
    // Head 0 volatile (a "retrieval head"), head 1 anchor. T = 16, r = 0.75: the anchor gets (1.5 - 1) * 16 = 8.
    tiny_model model(2, 2, 17);
    auto profile = hc::uniform_profile(model.shape, head_role::anchor);
    profile.heads[0] = {head_role::volatile_, 0.1, -1};
    auto cache = hc::make_duo_attention_cache(model.shape, model.options(16, 0.75), profile);
    model.prefill(cache, 16);
    CHECK(hot_prompt_positions(cache, 0, 0) == range(0, 16));
    CHECK(hot_prompt_positions(cache, 0, 1) == std::vector<index_t>{0, 1, 2, 3, 12, 13, 14, 15});
}

TEST_CASE("HeteroCache roles with Ada-KV's budget: each layer's compressed total is the drift-weighted one") {
    const planted::model m(small_scenario());
    const auto& s = m.spec();
    const auto profile = testing_support::planted_profile(m);
    const auto o = options_for(s, 0.5);
    auto cache = hc::make_heterocache_ada_kv_cache(s.shape, o, profile);
    auto full = hc::make_full_cache(s.shape, o);
    const auto expected = record_attention(full, m);
    const auto trace = record_attention(cache, m);
    const hc::head_profile& roles = *cache.profile();  // after the demotion floor
    std::vector<index_t> base(roles.heads.size());
    hc::heterocache_budget().prompt_caps(roles, 0.5, s.prompt_tokens, base);
    const auto caps = cache.prompt_caps(0);
    for (index_t l = 0; l < s.shape.layers; ++l) {
        index_t shared = 0, weighted = 0;
        for (index_t h = 0; h < s.shape.kv_heads; ++h) {
            const auto i = static_cast<std::size_t>(l * s.shape.kv_heads + h);
            if (hc::keeps_full_kv(roles.heads[i].role)) {
                CHECK(caps[i] == s.prompt_tokens);
                continue;
            }
            shared += caps[i], weighted += base[i];
        }
        CHECK(shared == weighted);
    }
    double worst = 0.0;
    for (std::size_t i = 0; i < trace.outputs.size(); ++i)
        worst = std::max(worst, planted::relative_error(trace.outputs[i], expected.outputs[i]));
    CHECK(std::isfinite(worst));
}

TEST_CASE("online profiling measures attention, not the positions a monitor ranks prompt tokens by") {
    auto s = small_scenario();
    const planted::model m(s);
    const auto o = options_for(s, 0.5);
    using stability_only = hc::kv_cache<hc::strided_kv_tensor<float>, hc::overlap_star_classifier, hc::uniform_budget,
                                        hc::host_storage, hc::static_monitor>;
    using positional = hc::kv_cache<hc::strided_kv_tensor<float>, hc::overlap_star_classifier, hc::uniform_budget,
                                    hc::host_storage, hc::streaming_monitor>;
    hc::overlap_star_classifier classifier;
    classifier.cluster = false;
    stability_only reference(s.shape, o, std::nullopt, classifier);
    positional streaming(s.shape, o, std::nullopt, classifier);
    record_attention(reference, m);
    record_attention(streaming, m);
    REQUIRE(reference.profile().has_value());
    REQUIRE(streaming.profile().has_value());
    for (std::size_t i = 0; i < reference.profile()->heads.size(); ++i) {
        CHECK(streaming.profile()->heads[i].role == reference.profile()->heads[i].role);
        CHECK(streaming.profile()->heads[i].stability == reference.profile()->heads[i].stability);
    }
}

TEST_CASE("a profile whose budget cannot be met is a budget_error at construction; the full cache forces r = 1") {
    const planted::model m(small_scenario());
    const auto& s = m.spec();
    const auto profile = testing_support::planted_profile(m);  // a pivot and a volatile: Nfull = 2 of N = 6
    REQUIRE(profile.full_heads() == 2);
    CHECK_THROWS_WITH_AS(hc::make_heterocache_cache(s.shape, options_for(s, 1.0 / 3.0), profile),
                         doctest::Contains("r*N > Nfull"), hc::budget_error);
    CHECK_NOTHROW(hc::make_heterocache_cache(s.shape, options_for(s, 0.34), profile));
    // Every head full: only r = 1 is feasible.
    const auto all_full = hc::uniform_profile(s.shape, head_role::volatile_);
    CHECK_THROWS_AS(hc::full_kv_cache<>(s.shape, options_for(s, 0.5), all_full), hc::budget_error);
    CHECK_NOTHROW(hc::full_kv_cache<>(s.shape, options_for(s, 1.0), all_full));
    auto full = hc::make_full_cache(s.shape, options_for(s, 0.5));
    CHECK(full.options().budget_ratio == 1.0);
    const auto expected = record_attention(full, m);
    auto whole = hc::make_full_cache(s.shape, options_for(s, 1.0));
    CHECK(testing_support::identical(record_attention(whole, m), expected));
}

TEST_CASE("online profiling ends with the selection a cache given the profile it found makes at prefill") {
    // With a static monitor nothing is refreshed: once profiling ends, each compressed head's hot prompt tokens
    // are the top-cap positions of its prefill (window) scores, exactly what a cache constructed with that
    // profile keeps from its prefill on.
    const planted::model m(small_scenario());
    const auto& s = m.spec();
    using static_cache = hc::kv_cache<hc::strided_kv_tensor<float>, hc::overlap_star_classifier, hc::uniform_budget,
                                      hc::host_storage, hc::static_monitor>;
    for (const index_t page_size : {16, 1}) {
        CAPTURE(page_size);
        auto o = options_for(s, 0.25);
        o.page_size = page_size;
        hc::overlap_star_classifier classifier;
        classifier.cluster = false;
        static_cache online(s.shape, o, std::nullopt, classifier);
        record_attention(online, m);
        REQUIRE(online.profile().has_value());
        static_cache given(s.shape, o, *online.profile(), classifier);
        record_attention(given, m);
        index_t compressed = 0;
        for (index_t layer = 0; layer < s.shape.layers; ++layer)
            for (index_t head = 0; head < s.shape.kv_heads; ++head) {
                CAPTURE(layer);
                CAPTURE(head);
                CHECK(hot_prompt_positions(online, layer, head) == hot_prompt_positions(given, layer, head));
                if (!hc::keeps_full_kv(online.profile()->at(layer, head).role)) ++compressed;
            }
        CHECK(compressed > 0);
        CHECK(online.resident_tokens() == given.resident_tokens());
    }
}

TEST_CASE("HeteroCache's demotion floor: full heads demoted until the compressed heads' mean cap is half of r*T") {
    const planted::model m(small_scenario());
    const auto& s = m.spec();
    const auto profile = testing_support::planted_profile(m);
    const double r = 0.4;
    REQUIRE(hc::budget_feasible(profile, r));
    REQUIRE(hc::compressed_share(profile, r) < hc::heterocache_min_compressed_share);  // the floor has work to do
    auto with_digests = options_for(s, r);
    with_digests.demoted_pivots = hc::pivot_demotion::to_digest_pivots;  // every demoted pivot a digest pivot
    auto floored = hc::make_heterocache_cache(s.shape, with_digests, profile);
    REQUIRE(floored.profile().has_value());
    CHECK(hc::compressed_share(*floored.profile(), r) >= hc::heterocache_min_compressed_share);
    CHECK(floored.profile()->full_heads() < profile.full_heads());
    auto copy = profile;  // the library function, the most stable full heads first, pivots to digest pivots
    hc::demote_until_feasible(copy, r, hc::heterocache_min_compressed_share, hc::pivot_demotion::to_digest_pivots);
    CHECK(floored.profile()->heads.size() == copy.heads.size());
    for (std::size_t i = 0; i < copy.heads.size(); ++i) CHECK(floored.profile()->heads[i].role == copy.heads[i].role);
    CHECK(floored.profile()->count(hc::head_role::digest_pivot) > 0);  // a demoted pivot kept its cluster
    CHECK(floored.profile()->count(hc::head_role::satellite) == profile.count(hc::head_role::satellite));
    {
        auto as_anchors = options_for(s, r);
        as_anchors.demoted_pivots = hc::pivot_demotion::to_anchors;
        auto anchored = hc::make_heterocache_cache(s.shape, as_anchors, profile);
        auto expected = profile;
        hc::demote_until_feasible(expected, r, hc::heterocache_min_compressed_share);
        for (std::size_t i = 0; i < expected.heads.size(); ++i) CHECK(anchored.profile()->heads[i].role == expected.heads[i].role);
        CHECK(anchored.profile()->count(hc::head_role::digest_pivot) == 0);
        CHECK(anchored.profile()->count(hc::head_role::satellite) < profile.count(hc::head_role::satellite));
    }
    {
        // The default: digest pivots of 16 tokens per page where anchors would leave no pivot.
        CHECK(hc::heterocache_digest_page_tokens == 16);
        CHECK(hc::heterocache_pivot_demotion == hc::pivot_demotion::to_digest_pivots_if_none_stay);
        auto by_default = hc::make_heterocache_cache(s.shape, options_for(s, r), profile);
        auto expected = profile;
        hc::demote_until_feasible(expected, r, hc::heterocache_min_compressed_share, hc::heterocache_pivot_demotion);
        for (std::size_t i = 0; i < expected.heads.size(); ++i) CHECK(by_default.profile()->heads[i].role == expected.heads[i].role);
        CHECK(by_default.options().digest_page_tokens == 16);
        auto none_stay = profile;  // a budget so small that no pivot stays: every pivot a digest pivot
        hc::demote_until_feasible(none_stay, 0.02, hc::heterocache_min_compressed_share, hc::heterocache_pivot_demotion);
        CHECK(none_stay.count(hc::head_role::pivot) == 0);
        CHECK(none_stay.count(hc::head_role::digest_pivot) == profile.count(hc::head_role::pivot));
    }
    {
        auto refused = options_for(s, r);  // digest pivots asked for, no digests to score them with
        refused.demoted_pivots = hc::pivot_demotion::to_digest_pivots;
        refused.digest_page_tokens = 0;
        CHECK_THROWS_WITH_AS(hc::make_heterocache_cache(s.shape, refused, profile), doctest::Contains("digest_page_tokens"),
                             hc::invalid_argument_error);
        CHECK_THROWS_WITH_AS(hc::kv_cache<>(s.shape, refused), doctest::Contains("digest_page_tokens"),
                             hc::invalid_argument_error);  // online profiling would make them
    }
    auto options = options_for(s, r);
    options.min_compressed_share = 0.0;  // feasibility only: the profile as given
    auto unfloored = hc::make_heterocache_cache(s.shape, options, profile);
    CHECK(unfloored.profile()->full_heads() == profile.full_heads());
    options.min_compressed_share = 1.5;
    CHECK_THROWS_AS(hc::make_heterocache_cache(s.shape, options, profile), hc::invalid_argument_error);
}
