// The attention kernel captures the scores a drift monitor reads, and the monitor reading them makes
// exactly the decisions it makes when it recomputes them from the cold keys.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <heterocache/algorithm/pooled_attention.hpp>
#include <heterocache/attention/decode_attention.hpp>
#include <heterocache/kv_cache.hpp>

#include "cache_runs.hpp"

namespace hc = heterocache;
using hc::index_t;

namespace {

std::vector<float> random_floats(std::size_t n, std::mt19937_64& rng) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = normal(rng);
    return v;
}

//! One layer of 3 rows (G query heads each) over 200 slots; row r attends slots [r * 60, r * 60 + 60 + r).
struct layer_fixture {
    index_t rows = 3, group = 3, d;
    std::mt19937_64 rng{5};
    std::vector<float> keys, values, queries;
    std::vector<index_t> indptr{0}, indices;

    explicit layer_fixture(index_t head_dim) : d(head_dim) {
        keys = random_floats(static_cast<std::size_t>(200 * d), rng);
        values = random_floats(static_cast<std::size_t>(200 * d), rng);
        queries = random_floats(static_cast<std::size_t>(rows * group * d), rng);
        for (index_t r = 0; r < rows; ++r) {
            for (index_t j = 0; j < 60 + r; ++j) indices.push_back(r * 60 + j);
            indptr.push_back(static_cast<index_t>(indices.size()));
        }
    }
    [[nodiscard]] hc::csr_selection selection(std::span<const hc::score_capture> captures) const {
        return {rows, rows, group, d, indptr, indices, keys.data(), values.data(), captures};
    }
};

//! Two caches with the planted heads' profile (pivots and satellites included), fed the same model.
struct planted_pair {
    planted::model m{testing_support::small_scenario()};
    hc::head_profile profile = testing_support::planted_profile(m);
    hc::cache_options options = testing_support::options_for(m.spec(), 0.5);
    hc::kv_cache<> first{m.spec().shape, options, profile};
    hc::kv_cache<> second{m.spec().shape, options, profile};
};

}  // namespace

TEST_CASE("decode_attention writes the captured scores, equal bit for bit to group_scores over the same keys") {
    for (const index_t d : {index_t{20}, index_t{64}}) {
        layer_fixture f(d);
        const index_t tokens = 50;  // the first 50 tokens of row 1: slots 60..109
        const float nan = std::numeric_limits<float>::quiet_NaN();
        std::vector<float> captured(static_cast<std::size_t>(f.group * tokens + 1), nan);
        const float sentinel = 12345.0f;
        captured.back() = sentinel;
        const std::vector<hc::score_capture> captures{{}, {captured.data(), tokens}, {}};
        std::vector<float> out(f.queries.size()), lse(static_cast<std::size_t>(f.rows * f.group));
        const float scale = hc::attention_scale(d);
        hc::decode_attention(f.selection(captures), f.queries.data(), out.data(), lse.data(), scale);

        std::vector<float> expected(static_cast<std::size_t>(f.group * tokens));
        // Row 1's query heads are heads 3..5, i.e. KV head 1 of a query block starting at queries.
        hc::group_scores(f.queries.data(), d, {f.keys.data() + 60 * d, d}, 1, f.group, d, scale, tokens, expected.data());
        CHECK(std::memcmp(captured.data(), expected.data(), expected.size() * sizeof(float)) == 0);
        CHECK(captured.back() == sentinel);

        // Capturing changes nothing else, and the pooled version writes the same.
        std::vector<float> plain_out(out.size()), plain_lse(lse.size());
        hc::decode_attention(f.selection({}), f.queries.data(), plain_out.data(), plain_lse.data(), scale);
        CHECK(std::memcmp(out.data(), plain_out.data(), out.size() * sizeof(float)) == 0);
        std::vector<float> pooled(captured.size(), nan);
        const std::vector<hc::score_capture> pooled_captures{{}, {pooled.data(), tokens}, {}};
        hc::host_thread_pool pool(2);
        hc::decode_attention(f.selection(pooled_captures), f.queries.data(), out.data(), lse.data(), scale, pool);
        CHECK(std::memcmp(pooled.data(), expected.data(), expected.size() * sizeof(float)) == 0);
    }
}

TEST_CASE("a capture that does not fit its row is a shape_error naming it") {
    layer_fixture f(16);
    std::vector<float> buffer(1000);
    std::vector<float> out(f.queries.size()), lse(static_cast<std::size_t>(f.rows * f.group));
    const std::vector<hc::score_capture> too_long{{buffer.data(), 61}, {}, {}};  // row 0 has 60 tokens
    CHECK_THROWS_WITH_AS(hc::decode_attention(f.selection(too_long), f.queries.data(), out.data(), lse.data(), 0.25f),
                         doctest::Contains("captures[row].tokens"), hc::shape_error);
    const std::vector<hc::score_capture> too_few{{buffer.data(), 10}};
    CHECK_THROWS_WITH_AS(hc::decode_attention(f.selection(too_few), f.queries.data(), out.data(), lse.data(), 0.25f),
                         doctest::Contains("captures.size()"), hc::shape_error);
}

TEST_CASE("the pooled row from scores equals pooled_attention_row of the same decode query, bit for bit") {
    std::mt19937_64 rng(9);
    const index_t t = 777, d = 48, group = 4, kv_head = 1;
    const auto keys = random_floats(static_cast<std::size_t>(t * d), rng);
    const auto query = random_floats(static_cast<std::size_t>(2 * group * d), rng);  // two KV heads' groups
    const hc::key_rows rows{keys.data(), d};
    std::vector<float> direct(static_cast<std::size_t>(t)), scratch(static_cast<std::size_t>(2 * t));
    hc::pooled_attention_row({query.data(), 1, 2 * group * d, d, t}, rows, kv_head, group, d, direct, scratch);
    std::vector<float> scores(static_cast<std::size_t>(group * t)), from_scores(static_cast<std::size_t>(t));
    hc::group_scores(query.data(), d, rows, kv_head, group, d, hc::attention_scale(d), t, scores.data());
    hc::pooled_attention_row_from_scores(scores, group, from_scores, scratch);
    CHECK(std::memcmp(direct.data(), from_scores.data(), direct.size() * sizeof(float)) == 0);
    std::vector<float> short_scores(scores.begin(), scores.end() - 1);
    CHECK_THROWS_AS(hc::pooled_attention_row_from_scores(short_scores, group, from_scores, scratch), hc::shape_error);
}

TEST_CASE("a monitor reading the kernel's captured scores decides exactly as one that recomputes them") {
    planted_pair pair;
    auto& [m, profile, options, recomputing, capturing] = pair;
    const auto a = testing_support::record_attention(recomputing, m);
    const auto b = testing_support::record_attention(capturing, m, [](index_t, index_t) {}, hc::score_source::captured);
    CHECK(testing_support::identical(a, b));
    // Drift happened: satellites were refreshed, the same bytes in both.
    CHECK(recomputing.storage().counters().retrieved > 0);
    CHECK(recomputing.storage().counters().retrieved == capturing.storage().counters().retrieved);
    // The selection asks for the pivots' scores only, over their whole prompt.
    const hc::csr_selection s = capturing.selection(0);
    REQUIRE(static_cast<index_t>(s.captures.size()) == s.rows);
    for (index_t head = 0; head < m.spec().shape.kv_heads; ++head) {
        const bool pivot = profile.at(0, head).role == hc::head_role::pivot;
        CHECK((s.captures[static_cast<std::size_t>(head)].scores != nullptr) == pivot);
        if (pivot) CHECK(s.captures[static_cast<std::size_t>(head)].tokens == m.spec().prompt_tokens);
    }
}

TEST_CASE("the monitor reads the captured scores: scores reversed after the kernel change its decisions") {
    planted_pair pair;
    auto& [m, profile, options, honest, reversed] = pair;
    const auto& sh = m.spec().shape;
    const float scale = hc::attention_scale(sh.head_dim);
    const auto run = [&](hc::kv_cache<>& cache, bool reverse) {
        std::vector<float> out(static_cast<std::size_t>(sh.query_heads * sh.head_dim)), lse(static_cast<std::size_t>(sh.query_heads));
        std::vector<float> outputs;
        planted::drive(cache, m, [&](index_t, index_t, const hc::csr_selection& s, const float* q) {
            hc::decode_attention(s, q, out.data(), lse.data(), scale);
            outputs.insert(outputs.end(), out.begin(), out.end());
            if (reverse)
                for (const hc::score_capture& c : s.captures)
                    for (index_t i = 0; c.scores != nullptr && i < sh.group_size() * c.tokens; ++i) c.scores[i] = -c.scores[i];
        }, hc::score_source::captured);
        return outputs;
    };
    CHECK(run(honest, false) != run(reversed, true));
}

TEST_CASE("observe(captured) when no kernel wrote the captures is an invalid_argument_error") {
    const planted::model m(testing_support::small_scenario());
    const hc::head_profile profile = testing_support::planted_profile(m);
    hc::kv_cache<> cache(m.spec().shape, testing_support::options_for(m.spec(), 0.5), profile);
    const auto layout = m.layout();
    const index_t t = m.spec().prompt_tokens, d = m.spec().shape.head_dim;
    for (index_t layer = 0; layer < m.spec().shape.layers; ++layer) cache.prefill(layer, 0, layout, t, m.window(layer, 0));
    cache.append(0, 0, layout, t);
    (void)cache.selection(0);  // no kernel runs over it
    CHECK_THROWS_WITH_AS(cache.observe(0, 0, m.decode_query(0, 0, 0, 0), d, hc::score_source::captured),
                         doctest::Contains("'scores' = captured"), hc::invalid_argument_error);
    CHECK_NOTHROW(cache.observe(0, 0, m.decode_query(0, 0, 0, 0), d, hc::score_source::recompute));
}
