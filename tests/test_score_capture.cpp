// The attention kernel captures (writes and stamps) the scores a drift monitor reads, and the monitor reading
// them makes exactly the decisions it makes when it recomputes them from the cold keys.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <heterocache/algorithm/pooled_attention.hpp>
#include <heterocache/attention/decode_attention.hpp>
#include <heterocache/kv_cache.hpp>

#include "attention_reference.hpp"
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

//! One layer of 3 rows (G query heads each) over 200 source tokens; row r attends tokens [r * 60, r * 60 + 60 + r),
//! on pages of `page_size` tokens of a shuffled pool.
struct layer_fixture {
    index_t rows = 3, group = 3, d;
    std::mt19937_64 rng{5};
    std::vector<float> keys, values, queries;
    testing_support::paged_kv<> kv;

    layer_fixture(index_t head_dim, index_t page_size) : d(head_dim) {
        keys = random_floats(static_cast<std::size_t>(200 * d), rng);
        values = random_floats(static_cast<std::size_t>(200 * d), rng);
        queries = random_floats(static_cast<std::size_t>(rows * group * d), rng);
        std::vector<std::vector<index_t>> row_tokens(static_cast<std::size_t>(rows));
        for (index_t r = 0; r < rows; ++r)
            for (index_t j = 0; j < 60 + r; ++j) row_tokens[static_cast<std::size_t>(r)].push_back(r * 60 + j);
        kv = testing_support::paged_kv<>(row_tokens, keys.data(), values.data(), d, page_size, 11);
    }
    [[nodiscard]] hc::paged_selection selection(std::span<const hc::score_capture> captures) const {
        return kv.selection(group, captures);
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

TEST_CASE("decode_attention writes the captured scores, equal bit for bit to group_scores over the same keys, and stamps them") {
    for (const index_t page_size : {1, 16})
        for (const index_t d : {index_t{20}, index_t{64}}) {
            CAPTURE(page_size);
            CAPTURE(d);
            layer_fixture f(d, page_size);
            const index_t tokens = 50;  // the first 50 tokens of row 1: source tokens 60..109
            const float nan = std::numeric_limits<float>::quiet_NaN();  // any score left unwritten fails the memcmp
            std::vector<float> captured(static_cast<std::size_t>(f.group * tokens + 1), nan);
            const float sentinel = 12345.0f;
            captured.back() = sentinel;
            std::uint64_t stamp = 3, untouched = 5;
            const std::vector<hc::score_capture> captures{{nullptr, 0, &untouched, 9}, {captured.data(), tokens, &stamp, 9}, {}};
            std::vector<float> out(f.queries.size()), lse(static_cast<std::size_t>(f.rows * f.group));
            const float scale = hc::attention_scale(d);
            hc::decode_attention(f.selection(captures), f.queries.data(), out.data(), lse.data(), scale);

            std::vector<float> expected(static_cast<std::size_t>(f.group * tokens));
            // Row 1's query heads are heads 3..5, i.e. KV head 1 of a query block starting at queries.
            const hc::token_rows<float> row_keys{f.keys.data(), {60 * d, d, nullptr, 0, 0}};
            hc::group_scores(f.queries.data(), d, row_keys, 1, f.group, d, scale, tokens, expected.data());
            CHECK(std::memcmp(captured.data(), expected.data(), expected.size() * sizeof(float)) == 0);
            CHECK(captured.back() == sentinel);
            CHECK(stamp == 9);  // stamped with the capture's step once written
            // The same scores from the pool through the row's pages (a paged token run).
            const hc::token_rows<float> paged_keys{f.kv.keys.data(),
                                                   {0, d, f.kv.indices.data() + f.kv.indptr[1], page_size, page_size * d}};
            std::vector<float> from_pool(expected.size());
            hc::group_scores(f.queries.data(), d, paged_keys, 1, f.group, d, scale, tokens, from_pool.data());
            CHECK(testing_support::same_bits(from_pool, expected));

            // Capturing changes nothing else, and the pooled version writes (and stamps) the same.
            std::vector<float> plain_out(out.size()), plain_lse(lse.size());
            hc::decode_attention(f.selection({}), f.queries.data(), plain_out.data(), plain_lse.data(), scale);
            CHECK(std::memcmp(out.data(), plain_out.data(), out.size() * sizeof(float)) == 0);
            CHECK(std::memcmp(lse.data(), plain_lse.data(), lse.size() * sizeof(float)) == 0);
            std::vector<float> pooled(captured.size(), nan);
            std::uint64_t pooled_stamp = 0;
            const std::vector<hc::score_capture> pooled_captures{{}, {pooled.data(), tokens, &pooled_stamp, 10}, {}};
            hc::host_thread_pool pool(2);
            hc::decode_attention(f.selection(pooled_captures), f.queries.data(), out.data(), lse.data(), scale, pool);
            CHECK(std::memcmp(pooled.data(), expected.data(), expected.size() * sizeof(float)) == 0);
            CHECK(pooled_stamp == 10);
            CHECK(std::memcmp(out.data(), plain_out.data(), out.size() * sizeof(float)) == 0);
        }
}

TEST_CASE("mark_written stamps a capture with its step, and a capture without a stamp is left alone") {
    std::uint64_t stamp = 1;
    hc::mark_written({nullptr, 0, &stamp, 77});
    CHECK(stamp == 77);
    CHECK_NOTHROW(hc::mark_written({}));
}

TEST_CASE("a capture that does not fit its row is a shape_error naming it") {
    layer_fixture f(16, 16);
    std::vector<float> buffer(1000);
    std::vector<float> out(f.queries.size()), lse(static_cast<std::size_t>(f.rows * f.group));
    std::uint64_t stamp = 0;
    const std::vector<hc::score_capture> too_long{{buffer.data(), 61, &stamp, 1}, {}, {}};  // row 0 has 60 tokens
    CHECK_THROWS_WITH_AS(hc::decode_attention(f.selection(too_long), f.queries.data(), out.data(), lse.data(), 0.25f),
                         doctest::Contains("captures[row].tokens"), hc::shape_error);
    CHECK(stamp == 0);  // checked before anything is written
    const std::vector<hc::score_capture> too_few{{buffer.data(), 10}};
    CHECK_THROWS_WITH_AS(hc::decode_attention(f.selection(too_few), f.queries.data(), out.data(), lse.data(), 0.25f),
                         doctest::Contains("captures.size()"), hc::shape_error);
    const std::vector<hc::score_capture> fits{{buffer.data(), 60, &stamp, 1}, {}, {}};
    CHECK_NOTHROW(hc::decode_attention(f.selection(fits), f.queries.data(), out.data(), lse.data(), 0.25f));
    CHECK(stamp == 1);
}

TEST_CASE("the pooled row from scores equals pooled_attention_row of the same decode query, bit for bit") {
    std::mt19937_64 rng(9);
    const index_t t = 777, d = 48, group = 4, kv_head = 1;
    const auto keys = random_floats(static_cast<std::size_t>(t * d), rng);
    const auto query = random_floats(static_cast<std::size_t>(2 * group * d), rng);  // two KV heads' groups
    const hc::token_rows<float> rows{keys.data(), {0, d, nullptr, 0, 0}};
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
}

TEST_CASE("the selection asks for the pivots' scores over their whole prompt, and the kernel stamps each step's") {
    planted_pair pair;
    auto& [m, profile, options, cache, unused] = pair;
    const auto& sh = m.spec().shape;
    const float scale = hc::attention_scale(sh.head_dim);
    std::vector<float> out(static_cast<std::size_t>(sh.query_heads * sh.head_dim)), lse(static_cast<std::size_t>(sh.query_heads));
    std::vector<std::uint64_t> last_step(static_cast<std::size_t>(sh.layers), 0);
    index_t pivot_rows = 0;
    planted::drive(cache, m, [&](index_t, index_t layer, const hc::paged_selection& s, const float* q) {
        REQUIRE(static_cast<index_t>(s.captures.size()) == s.rows);
        for (index_t head = 0; head < sh.kv_heads; ++head) {
            const hc::score_capture& c = s.captures[static_cast<std::size_t>(head)];
            const bool pivot = profile.at(layer, head).role == hc::head_role::pivot;
            CHECK((c.scores != nullptr) == pivot);
            if (!pivot) continue;
            ++pivot_rows;
            CHECK(c.tokens == m.spec().prompt_tokens);
            REQUIRE(c.stamp != nullptr);
            CHECK(c.step > last_step[static_cast<std::size_t>(layer)]);  // a new step number every step
            CHECK(*c.stamp != c.step);  // not stamped before the kernel ran
        }
        hc::decode_attention(s, q, out.data(), lse.data(), scale);
        for (index_t head = 0; head < sh.kv_heads; ++head) {
            const hc::score_capture& c = s.captures[static_cast<std::size_t>(head)];
            if (c.scores == nullptr) continue;
            CHECK(*c.stamp == c.step);  // written and stamped by decode_attention
            last_step[static_cast<std::size_t>(layer)] = c.step;
        }
    }, hc::score_source::captured);
    CHECK(pivot_rows > 0);
}

TEST_CASE("the monitor reads the captured scores: scores reversed after the kernel change its decisions") {
    planted_pair pair;
    auto& [m, profile, options, honest, reversed] = pair;
    const auto& sh = m.spec().shape;
    const float scale = hc::attention_scale(sh.head_dim);
    const auto run = [&](hc::kv_cache<>& cache, bool reverse) {
        std::vector<float> out(static_cast<std::size_t>(sh.query_heads * sh.head_dim)), lse(static_cast<std::size_t>(sh.query_heads));
        std::vector<float> outputs;
        planted::drive(cache, m, [&](index_t, index_t, const hc::paged_selection& s, const float* q) {
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

TEST_CASE("end_layer(captured) when the kernel did not stamp this step's captures is an invalid_argument_error") {
    const planted::model m(testing_support::small_scenario());
    const hc::head_profile profile = testing_support::planted_profile(m);
    hc::kv_cache<> cache(m.spec().shape, testing_support::options_for(m.spec(), 0.5), profile);
    const auto kv = m.tensor();
    const index_t t = m.spec().prompt_tokens;
    const auto& sh = m.spec().shape;
    cache.begin_sequence(0, t);
    for (index_t layer = 0; layer < sh.layers; ++layer) cache.prefill(layer, 0, kv, m.window(layer, 0));
    std::vector<float> out(static_cast<std::size_t>(sh.query_heads * sh.head_dim)), lse(static_cast<std::size_t>(sh.query_heads));
    const float scale = hc::attention_scale(sh.head_dim);
    const std::vector<index_t> first{t}, second{t + 1}, third{t + 2};
    REQUIRE(profile.at(0, 0).role == hc::head_role::pivot);  // layer 0 asks for its pivot's scores

    (void)cache.begin_layer(0, kv, first);  // no kernel runs over it
    CHECK_THROWS_WITH_AS(cache.end_layer(0, m.queries(0, 0), hc::score_source::captured),
                         doctest::Contains("'scores' = captured"), hc::invalid_argument_error);
    CHECK_NOTHROW(cache.end_layer(0, m.queries(0, 0), hc::score_source::recompute));  // the throw changed nothing

    // A step whose kernel ran may say captured; the next step's stamps are stale until its kernel runs.
    const auto s = cache.begin_layer(0, kv, second);
    hc::decode_attention(s, m.decode_query(1, 0, 0, 0), out.data(), lse.data(), scale);
    CHECK_NOTHROW(cache.end_layer(0, m.queries(1, 0), hc::score_source::captured));
    (void)cache.begin_layer(0, kv, third);
    CHECK_THROWS_AS(cache.end_layer(0, m.queries(2, 0), hc::score_source::captured), hc::invalid_argument_error);
    CHECK_NOTHROW(cache.end_layer(0, m.queries(2, 0), hc::score_source::recompute));
}
