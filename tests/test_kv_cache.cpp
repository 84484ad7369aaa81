#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>
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


template <class Cache>
testing_support::attention_trace full_trace(const planted::model& m, const hc::cache_options& o) {
    Cache full(m.spec().shape, o, hc::uniform_profile(m.spec().shape, hc::head_role::volatile_));
    return record_attention(full, m);
}

}  // namespace

using sync_cache = hc::kv_cache<>;
using async_cache = hc::kv_cache<hc::strided_kv_layout, hc::overlap_star_classifier, hc::drift_weighted_budget,
                                 hc::host_storage, hc::pivot_overlap_monitor, hc::async_retriever>;
using uniform_static_cache = hc::kv_cache<hc::strided_kv_layout, hc::overlap_star_classifier, hc::uniform_budget,
                                          hc::host_storage, hc::static_monitor, hc::sync_retriever>;
using every_step_cache = hc::kv_cache<hc::strided_kv_layout, hc::fixed_role_classifier, hc::uniform_budget,
                                      hc::host_storage, hc::pivot_overlap_monitor, hc::async_retriever>;

TEST_CASE_TEMPLATE("a budget of the whole context reproduces the full cache bit for bit", Cache, sync_cache, async_cache,
                   uniform_static_cache, every_step_cache) {
    const planted::model m(small_scenario());
    const auto o = options_for(m.spec(), 1.0);
    const auto full = full_trace<hc::full_kv_cache<>>(m, o);
    SUBCASE("profiled online") {
        Cache cache(m.spec().shape, o);
        CHECK(testing_support::identical(record_attention(cache, m), full));
        REQUIRE(cache.profile().has_value());
    }
    SUBCASE("with a loaded profile") {
        Cache cache(m.spec().shape, o, testing_support::planted_profile(m));
        CHECK(testing_support::identical(record_attention(cache, m), full));
    }
}

TEST_CASE("the full cache path is within 1e-5 of a float64 attention reference") {
    const planted::model m(small_scenario());
    const auto& s = m.spec();
    const auto& sh = s.shape;
    const auto o = options_for(s, 1.0);
    hc::kv_cache<> cache(sh, o);
    const auto trace = record_attention(cache, m);
    const auto layout = m.layout();
    double worst = 0.0;
    for (index_t step = 0; step < s.steps; step += 7)
        for (index_t layer = 0; layer < sh.layers; ++layer) {
            const auto& out = trace.outputs[static_cast<std::size_t>(step * sh.layers + layer)];
            for (index_t qh = 0; qh < sh.query_heads; ++qh) {
                const index_t head = qh / sh.group_size();
                const float* q = m.decode_query(step, layer, 0, qh);
                std::vector<double> scores;
                for (index_t t = 0; t <= s.prompt_tokens + step; ++t) {
                    double dot = 0.0;
                    for (index_t c = 0; c < sh.head_dim; ++c) dot += static_cast<double>(q[c]) * layout.key(layer, 0, head, t)[c];
                    scores.push_back(dot / std::sqrt(static_cast<double>(sh.head_dim)));
                }
                const double top = *std::max_element(scores.begin(), scores.end());
                double sum = 0.0;
                for (double x : scores) sum += std::exp(x - top);
                std::vector<double> ref(static_cast<std::size_t>(sh.head_dim), 0.0);
                for (std::size_t t = 0; t < scores.size(); ++t)
                    for (index_t c = 0; c < sh.head_dim; ++c)
                        ref[static_cast<std::size_t>(c)] += std::exp(scores[t] - top) / sum * layout.value(layer, 0, head, static_cast<index_t>(t))[c];
                double err = 0.0, norm = 0.0;
                for (index_t c = 0; c < sh.head_dim; ++c) {
                    err = std::max(err, std::abs(out[static_cast<std::size_t>(qh * sh.head_dim + c)] - ref[static_cast<std::size_t>(c)]));
                    norm = std::max(norm, std::abs(ref[static_cast<std::size_t>(c)]));
                }
                worst = std::max(worst, err / norm);
            }
        }
    CHECK(worst <= 1e-5);
}

TEST_CASE_TEMPLATE("nothing is lost: every token ever written is byte-exact in the cold tier and every hot slot holds "
                   "it, rounded to the hot tier's element type", E, float, hc::fp16_t, hc::bf16_t) {
    auto s = small_scenario();
    s.sequences = 2;
    const planted::model m(s);
    auto o = options_for(s, 0.45);
    o.decode_window = 12;  // evicts decode tokens from the hot tier
    o.decode_sink = 3;
    hc::kv_cache<hc::strided_kv_layout, hc::overlap_star_classifier, hc::drift_weighted_budget, hc::basic_host_storage<E>,
                 hc::pivot_overlap_monitor, hc::async_retriever>
        cache(s.shape, o);
    const auto layout = m.layout();
    const std::size_t bytes = static_cast<std::size_t>(s.shape.head_dim) * sizeof(float);
    // A hot slot against the token it holds, element by element and bit for bit.
    const auto holds = [&](const E* slot, const float* token) {
        for (index_t c = 0; c < s.shape.head_dim; ++c) {
            const E rounded = hc::from_float<E>(token[c]);
            if (std::memcmp(slot + c, &rounded, sizeof(E)) != 0) return false;
        }
        return true;
    };
    index_t mismatches = 0, checked_slots = 0;
    record_attention(cache, m, [&](index_t step, index_t layer) {
        const auto& storage = cache.storage();
        for (index_t seq = 0; seq < s.sequences; ++seq)
            for (index_t head = 0; head < s.shape.kv_heads; ++head) {
                const index_t row = seq * s.shape.kv_heads + head;
                for (index_t t = 0; t <= s.prompt_tokens + step; ++t) {
                    mismatches += std::memcmp(storage.cold_keys(layer, row) + t * s.shape.head_dim, layout.key(layer, seq, head, t), bytes) != 0;
                    mismatches += std::memcmp(storage.cold_values(layer, row) + t * s.shape.head_dim, layout.value(layer, seq, head, t), bytes) != 0;
                }
            }
        const auto sel = cache.selection(layer);
        for (index_t row = 0; row < sel.rows; ++row) {
            const index_t seq = row / s.shape.kv_heads, head = row % s.shape.kv_heads;
            std::set<index_t> positions;
            for (index_t i = sel.indptr[row]; i < sel.indptr[row + 1]; ++i) {
                const index_t slot = sel.indices[i];
                const index_t p = storage.hot_position(layer, slot);
                positions.insert(p);
                mismatches += !holds(sel.keys + slot * s.shape.head_dim, layout.key(layer, seq, head, p));
                mismatches += !holds(sel.values + slot * s.shape.head_dim, layout.value(layer, seq, head, p));
                ++checked_slots;
            }
            CHECK(static_cast<index_t>(positions.size()) == sel.row_length(row));  // no token twice
        }
    });
    CHECK(mismatches == 0);
    CHECK(checked_slots > 0);
}

TEST_CASE("a decode window keeps the sink and the most recent tokens") {
    auto s = small_scenario();
    s.steps = 30;
    const planted::model m(s);
    auto o = options_for(s, 1.0);
    o.decode_window = 8;
    o.decode_sink = 2;
    hc::full_kv_cache<> cache(s.shape, o, hc::uniform_profile(s.shape, hc::head_role::volatile_));
    record_attention(cache, m);
    const auto sel = cache.selection(1);
    std::vector<index_t> decode_positions;
    for (index_t i = sel.indptr[0] + s.prompt_tokens; i < sel.indptr[1]; ++i)
        decode_positions.push_back(cache.storage().hot_position(1, sel.indices[i]) - s.prompt_tokens);
    CHECK(decode_positions == std::vector<index_t>{0, 1, 24, 25, 26, 27, 28, 29});
    CHECK(cache.resident_tokens() == s.shape.total_kv_heads() * (s.prompt_tokens + 8));
}

TEST_CASE("batched sequences give the same answers as one cache per sequence") {
    auto s = small_scenario();
    s.sequences = 2;
    const planted::model m(s);
    const auto profile = testing_support::planted_profile(m);
    const auto o = options_for(s, 0.4);
    hc::kv_cache<> batched(s.shape, o, profile);
    const auto both = record_attention(batched, m);

    const auto& sh = s.shape;
    const index_t per_query = sh.query_heads * sh.head_dim;
    for (index_t seq = 0; seq < 2; ++seq) {
        auto single_options = o;
        single_options.sequences = 1;
        hc::kv_cache<> single(sh, single_options, profile);
        auto layout = m.layout();
        layout.keys += seq * layout.strides.sequence;
        layout.values += seq * layout.strides.sequence;
        for (index_t layer = 0; layer < sh.layers; ++layer) single.prefill(layer, 0, layout, s.prompt_tokens, m.window(layer, seq));
        std::vector<float> out(static_cast<std::size_t>(per_query)), lse(static_cast<std::size_t>(sh.query_heads));
        for (index_t step = 0; step < s.steps; ++step)
            for (index_t layer = 0; layer < sh.layers; ++layer) {
                single.append(layer, 0, layout, s.prompt_tokens + step);
                hc::decode_attention(single.selection(layer), m.decode_query(step, layer, seq, 0), out.data(), lse.data(),
                                     1.0f / std::sqrt(static_cast<float>(sh.head_dim)));
                single.observe(layer, 0, m.decode_query(step, layer, seq, 0), sh.head_dim);
                const auto& expected = both.outputs[static_cast<std::size_t>(step * sh.layers + layer)];
                CHECK(std::memcmp(out.data(), expected.data() + seq * per_query, sizeof(float) * out.size()) == 0);
            }
    }
}

TEST_CASE("online profiling recovers planted stable, drifting and redundant heads") {
    planted::scenario s;
    s.shape = {4, 3, 9, 64};
    s.prompt_tokens = 512;
    s.targets = 12;
    s.steps = 12;
    const planted::model m(s);
    hc::kv_cache<> cache(s.shape, options_for(s, 0.5));
    record_attention(cache, m);
    REQUIRE(cache.profile().has_value());
    const auto expected = testing_support::planted_profile(m);
    for (index_t l = 0; l < s.shape.layers; ++l)
        for (index_t h = 0; h < s.shape.kv_heads; ++h) {
            CAPTURE(l);
            CAPTURE(h);
            CHECK(cache.profile()->at(l, h).role == expected.at(l, h).role);
            CHECK(cache.profile()->at(l, h).pivot == expected.at(l, h).pivot);
        }
}

TEST_CASE("satellites follow their pivot's drift with the tokens it now attends") {
    planted::scenario s;
    s.shape = {2, 3, 9, 64};
    s.prompt_tokens = 512;
    s.targets = 12;
    s.steps = 60;
    s.drift_period = 20;
    const planted::model m(s);
    const auto profile = testing_support::planted_profile(m);
    hc::kv_cache<> cache(s.shape, options_for(s, 0.5), profile);
    record_attention(cache, m);
    CHECK(cache.storage().counters().retrieved > 0);
    // Layer 0: head 0 pivots, head 1 is its satellite; at the end both attend the targets of epoch 1 + 59/20 = 3.
    const auto sel = cache.selection(0);
    std::set<index_t> kept;
    for (index_t i = sel.indptr[1]; i < sel.indptr[2]; ++i) kept.insert(cache.storage().hot_position(0, sel.indices[i]));
    const index_t* now = m.targets(0, 0, 1, 3);
    index_t found = 0;
    for (index_t i = 0; i < s.targets; ++i) found += kept.count(now[i]) ? 1 : 0;
    CHECK(found == s.targets);
    // The hot tier holds about r*N*T prompt tokens plus the decode tokens.
    const double prompt_resident = static_cast<double>(cache.resident_tokens() - s.shape.total_kv_heads() * s.steps);
    CHECK(std::abs(prompt_resident - 0.5 * static_cast<double>(s.shape.total_kv_heads() * s.prompt_tokens)) <=
          static_cast<double>(s.shape.total_kv_heads()));
}

TEST_CASE("online profiling under a budget too small for its full heads demotes the most stable ones") {
    auto s = small_scenario();
    const planted::model m(s);
    auto o = options_for(s, 0.2);  // the planted model has 3 full heads of 6: r*N = 1.2 < Nfull
    hc::kv_cache<> cache(s.shape, o);
    const auto trace = record_attention(cache, m);
    REQUIRE(cache.profile().has_value());
    const auto& profile = *cache.profile();
    CHECK(0.2 * 6.0 > static_cast<double>(profile.full_heads()));
    CHECK_NOTHROW(profile.validate());
    const double prompt_resident = static_cast<double>(cache.resident_tokens() - s.shape.total_kv_heads() * s.steps);
    CHECK(prompt_resident <= 0.2 * static_cast<double>(s.shape.total_kv_heads() * s.prompt_tokens) + 6.0);
    // Loaded, the same profile is an error at construction instead.
    CHECK_THROWS_AS(hc::kv_cache<>(s.shape, o, testing_support::planted_profile(m)), hc::budget_error);
}

TEST_CASE("a paged layout gives the same cache as the contiguous one") {
    const auto s = small_scenario();
    const planted::model m(s);
    const auto& sh = s.shape;
    const index_t tokens = s.prompt_tokens + s.steps, page = 16, pages = (tokens + page - 1) / page;
    // Pool [layer][page][token][head][dim], pages handed out in reverse order to make the table matter.
    std::vector<float> keys(static_cast<std::size_t>(sh.layers * pages * page * sh.kv_heads * sh.head_dim)), values(keys.size());
    std::vector<index_t> table(static_cast<std::size_t>(pages));
    for (index_t p = 0; p < pages; ++p) table[static_cast<std::size_t>(p)] = pages - 1 - p;
    const hc::paged_kv_layout paged{keys.data(), values.data(), table.data(), pages, page, pages * page * sh.kv_heads * sh.head_dim,
                                    sh.kv_heads, sh.head_dim};
    const auto flat = m.layout();
    for (index_t l = 0; l < sh.layers; ++l)
        for (index_t h = 0; h < sh.kv_heads; ++h)
            for (index_t t = 0; t < tokens; ++t) {
                std::memcpy(const_cast<float*>(paged.key(l, 0, h, t)), flat.key(l, 0, h, t), sizeof(float) * sh.head_dim);
                std::memcpy(const_cast<float*>(paged.value(l, 0, h, t)), flat.value(l, 0, h, t), sizeof(float) * sh.head_dim);
            }
    const auto o = options_for(s, 0.5);
    hc::kv_cache<> contiguous(sh, o);
    const auto expected = record_attention(contiguous, m);
    hc::kv_cache<hc::paged_kv_layout> cache(sh, o);
    std::vector<float> out(static_cast<std::size_t>(sh.query_heads * sh.head_dim)), lse(static_cast<std::size_t>(sh.query_heads));
    for (index_t l = 0; l < sh.layers; ++l) cache.prefill(l, 0, paged, s.prompt_tokens, m.window(l, 0));
    for (index_t step = 0; step < s.steps; ++step)
        for (index_t l = 0; l < sh.layers; ++l) {
            cache.append(l, 0, paged, s.prompt_tokens + step);
            hc::decode_attention(cache.selection(l), m.decode_query(step, l, 0, 0), out.data(), lse.data(),
                                 1.0f / std::sqrt(static_cast<float>(sh.head_dim)));
            cache.observe(l, 0, m.decode_query(step, l, 0, 0), sh.head_dim);
            CHECK(out == expected.outputs[static_cast<std::size_t>(step * sh.layers + l)]);
        }
}

TEST_CASE("bad shapes, budgets and calls are typed errors naming the argument and its range") {
    const hc::model_shape shape{2, 3, 6, 32};
    hc::cache_options o;
    o.max_prompt_tokens = 64;
    o.max_new_tokens = 4;
    o.profiling_steps = 4;
    const auto throws_naming = [](auto&& make, const char* argument) {
        try {
            make();
        } catch (const hc::invalid_argument_error& e) {
            CHECK(e.argument() == argument);
            CHECK(std::string(e.what()).find("valid range") != std::string::npos);
            return;
        }
        FAIL("expected an invalid_argument_error naming " << argument);
    };
    throws_naming([&] { hc::kv_cache<> c({2, 0, 6, 32}, o); }, "kv_heads");
    throws_naming([&] { hc::kv_cache<> c({0, 3, 6, 32}, o); }, "layers");
    throws_naming([&] { hc::kv_cache<> c({2, 3, 7, 32}, o); }, "query_heads");
    throws_naming([&] { hc::kv_cache<> c({2, 3, 6, 512}, o); }, "head_dim");
    for (double r : {0.0, 1.01, std::numeric_limits<double>::quiet_NaN()}) {
        auto bad = o;
        bad.budget_ratio = r;
        throws_naming([&] { hc::kv_cache<> c(shape, bad); }, "r");
    }
    {
        auto bad = o;
        bad.max_prompt_tokens = 0;
        throws_naming([&] { hc::kv_cache<> c(shape, bad); }, "max_prompt_tokens");
    }
    // A profile for another model, and a budget that cannot hold the full heads.
    throws_naming([&] { hc::kv_cache<> c(shape, o, hc::uniform_profile({3, 3, 6, 32}, hc::head_role::anchor)); }, "profile.layers");
    {
        auto all_full = hc::uniform_profile(shape, hc::head_role::volatile_);
        all_full.heads[0].role = hc::head_role::anchor;
        try {
            hc::kv_cache<> c(shape, o, all_full);
            FAIL("expected a budget_error");
        } catch (const hc::budget_error& e) {
            CHECK(std::string(e.what()).find("Nfull = 5") != std::string::npos);
        }
    }

    planted::scenario s;
    s.shape = shape;
    s.prompt_tokens = 64;
    s.steps = 4;
    const planted::model m(s);
    {
        auto too_few_steps = o;
        too_few_steps.profiling_steps = 5;  // more than max_new_tokens: online profiling could never finish
        throws_naming([&] { hc::kv_cache<> c(shape, too_few_steps); }, "profiling_steps");
    }
    hc::kv_cache<> cache(shape, o);
    const std::vector<float> query(static_cast<std::size_t>(shape.query_heads * shape.head_dim), 0.0f);
    throws_naming([&] { cache.append(0, 0, m.layout(), 64); }, "seq");  // before prefill
    throws_naming([&] { cache.prefill(0, 0, m.layout(), 65, m.window(0, 0)); }, "prompt_tokens");
    throws_naming([&] { cache.prefill(2, 0, m.layout(), 64, m.window(0, 0)); }, "layer");
    throws_naming([&] { cache.prefill(0, 1, m.layout(), 64, m.window(0, 0)); }, "seq");
    auto wrong_dim = m.layout();
    wrong_dim.dim = 16;
    throws_naming([&] { cache.prefill(0, 0, wrong_dim, 64, m.window(0, 0)); }, "layout.head_dim()");
    cache.prefill(0, 0, m.layout(), 64, m.window(0, 0));
    throws_naming([&] { cache.prefill(1, 0, m.layout(), 32, m.window(1, 0)); }, "prompt_tokens");  // layer 0 said 64
    throws_naming([&] { cache.observe(0, 0, query.data(), 8); }, "query_head_stride");
    for (index_t t = 0; t < 4; ++t) cache.append(0, 0, m.layout(), 64 + t);
    throws_naming([&] { cache.append(0, 0, m.layout(), 64); }, "decode tokens");  // past max_new_tokens
}
