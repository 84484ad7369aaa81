#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <utility>
#include <vector>

#include <heterocache/heterocache.hpp>

#include "cache_runs.hpp"
#include "planted_heads.hpp"

namespace hc = heterocache;
using hc::index_t;
using testing_support::options_for;
using testing_support::record_attention;
using testing_support::row_positions;
using testing_support::small_scenario;

namespace {

template <class Cache>
testing_support::attention_trace full_trace(const planted::model& m, const hc::cache_options& o) {
    auto full = hc::make_full_cache(m.spec().shape, o);
    return record_attention(full, m);
}

}  // namespace

using sync_cache = hc::kv_cache<>;
using async_cache = hc::kv_cache<hc::strided_kv_tensor<float>, hc::overlap_star_classifier, hc::drift_weighted_budget,
                                 hc::host_storage, hc::pivot_overlap_monitor, hc::async_retriever>;
using uniform_static_cache = hc::kv_cache<hc::strided_kv_tensor<float>, hc::overlap_star_classifier, hc::uniform_budget,
                                          hc::host_storage, hc::static_monitor, hc::sync_retriever>;
using every_step_cache = hc::kv_cache<hc::strided_kv_tensor<float>, hc::fixed_role_classifier, hc::uniform_budget,
                                      hc::host_storage, hc::pivot_overlap_monitor, hc::async_retriever>;

TEST_CASE_TEMPLATE("a budget of the whole context reproduces the full cache bit for bit", Cache, sync_cache, async_cache,
                   uniform_static_cache, every_step_cache) {
    const planted::model m(small_scenario());
    for (const index_t page_size : {16, 1, 7}) {
        CAPTURE(page_size);
        auto o = options_for(m.spec(), 1.0);
        o.page_size = page_size;
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
}

TEST_CASE("the asynchronous retriever gives the synchronous one's outputs bit for bit while satellites refresh") {
    auto s = small_scenario();
    s.sequences = 2;
    const planted::model m(s);
    for (const bool online : {false, true}) {
        CAPTURE(online);
        const auto o = options_for(s, 0.45);
        const auto profile = online ? std::nullopt : std::optional(testing_support::planted_profile(m));
        sync_cache sync(s.shape, o, profile);
        async_cache async(s.shape, o, profile);
        const auto expected = record_attention(sync, m, [](index_t, index_t) {}, hc::score_source::captured);
        CHECK(testing_support::identical(record_attention(async, m, [](index_t, index_t) {}, hc::score_source::captured),
                                         expected));
        CHECK(sync.storage().counters().retrieved > 0);
        CHECK(async.storage().counters().retrieved == sync.storage().counters().retrieved);
    }
}

TEST_CASE("the full cache path is within 1e-5 of a float64 attention reference") {
    const planted::model m(small_scenario());
    const auto& s = m.spec();
    const auto& sh = s.shape;
    const auto o = options_for(s, 1.0);
    hc::kv_cache<> cache(sh, o);
    const auto trace = record_attention(cache, m);
    const auto kv = m.tensor();
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
                    for (index_t c = 0; c < sh.head_dim; ++c) dot += static_cast<double>(q[c]) * kv.key(layer, 0, head, t)[c];
                    scores.push_back(dot / std::sqrt(static_cast<double>(sh.head_dim)));
                }
                const double top = *std::max_element(scores.begin(), scores.end());
                double sum = 0.0;
                for (double x : scores) sum += std::exp(x - top);
                std::vector<double> ref(static_cast<std::size_t>(sh.head_dim), 0.0);
                for (std::size_t t = 0; t < scores.size(); ++t)
                    for (index_t c = 0; c < sh.head_dim; ++c)
                        ref[static_cast<std::size_t>(c)] += std::exp(scores[t] - top) / sum * kv.value(layer, 0, head, static_cast<index_t>(t))[c];
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
    using storage = hc::basic_host_storage<E>;
    using cache_type = hc::kv_cache<hc::strided_kv_tensor<float>, hc::overlap_star_classifier, hc::drift_weighted_budget,
                                    storage, hc::pivot_overlap_monitor, hc::async_retriever>;
    const auto kv = m.tensor();
    for (const bool aliased : {false, true}) {
        CAPTURE(aliased);
        hc::storage_binding<hc::strided_kv_tensor<float>> binding;
        if (aliased) binding.cold_alias = kv;  // the cold tier reads the engine's own K/V
        cache_type cache(s.shape, o, std::nullopt, {}, {}, {}, binding);
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
            cache.wait_refreshes(layer);  // the refresh end_layer submitted runs beside us
            const auto& st = cache.storage();
            for (index_t seq = 0; seq < s.sequences; ++seq)
                for (index_t head = 0; head < s.shape.kv_heads; ++head) {
                    const index_t row = seq * s.shape.kv_heads + head;
                    const auto cold_keys = st.cold_keys(layer, row), cold_values = st.cold_values(layer, row);
                    for (index_t t = 0; t <= s.prompt_tokens + step; ++t) {
                        mismatches += std::memcmp(cold_keys.at(t), kv.key(layer, seq, head, t), bytes) != 0;
                        mismatches += std::memcmp(cold_values.at(t), kv.value(layer, seq, head, t), bytes) != 0;
                    }
                    const std::vector<index_t> positions = row_positions(cache, layer, row);
                    for (index_t k = 0; k < static_cast<index_t>(positions.size()); ++k) {
                        const index_t slot = cache.rows().slot(layer, row, k), p = positions[static_cast<std::size_t>(k)];
                        mismatches += !holds(st.hot_key(layer, slot), kv.key(layer, seq, head, p));
                        mismatches += !holds(st.hot_value(layer, slot), kv.value(layer, seq, head, p));
                        ++checked_slots;
                    }
                    CHECK(std::set<index_t>(positions.begin(), positions.end()).size() == positions.size());  // no token twice
                    // prompt tokens first, in position order
                    const auto prompt = static_cast<std::ptrdiff_t>(cache.rows().prompt_count(layer, row));
                    CHECK(std::is_sorted(positions.begin(), positions.begin() + prompt));
                }
        });
        CHECK(mismatches == 0);
        CHECK(checked_slots > 0);
        CHECK(cache.storage().cold_aliased() == aliased);
        CHECK((cache.storage().counters().written_to_cold == 0) == aliased);
    }
}

TEST_CASE("a cold tier that aliases the engine's K/V gives the outputs of one that copies it") {
    auto s = small_scenario();
    s.sequences = 2;
    const planted::model m(s);
    const auto o = options_for(s, 0.4);
    for (const bool online : {false, true}) {
        CAPTURE(online);
        const auto profile = online ? std::nullopt : std::optional(testing_support::planted_profile(m));
        hc::kv_cache<> copying(s.shape, o, profile);
        hc::kv_cache<> aliasing(s.shape, o, profile, {}, {}, {}, {{}, m.tensor()});
        CHECK(testing_support::identical(record_attention(aliasing, m), record_attention(copying, m)));
        CHECK(aliasing.storage().counters().written_to_cold == 0);
        CHECK(copying.storage().counters().written_to_cold > 0);
    }
}

TEST_CASE("memory the engine hands in is the memory the cache uses, and holds what the cache's own would") {
    const auto s = small_scenario();
    const planted::model m(s);
    const auto o = options_for(s, 0.5);
    const auto profile = testing_support::planted_profile(m);
    const hc::storage_bytes bytes = hc::kv_cache<>::bytes_required(s.shape, o, profile);
    CHECK(bytes.hot > 0);
    CHECK(bytes.cold > 0);
    CHECK(hc::kv_cache<>::bytes_required(s.shape, o, profile, {}, true).cold == 0);  // an aliased cold tier needs none
    hc::storage_buffers engine_memory(bytes);
    hc::kv_cache<> handed(s.shape, o, profile, {}, {}, {}, {engine_memory.memory(), {}});
    hc::kv_cache<> own(s.shape, o, profile);
    CHECK(testing_support::identical(record_attention(handed, m), record_attention(own, m)));
    const auto hot = engine_memory.memory().hot;
    const auto* first_key = reinterpret_cast<const std::byte*>(handed.storage().hot_key(0, 0));
    CHECK(first_key >= hot.data());
    CHECK(first_key < hot.data() + hot.size());
    SUBCASE("too little memory is an error naming the span") {
        hc::storage_buffers small({bytes.hot / 2, bytes.cold});
        CHECK_THROWS_AS(hc::kv_cache<>(s.shape, o, profile, {}, {}, {}, {small.memory(), {}}), hc::shape_error);
    }
}

TEST_CASE("a decode window keeps the sink and the most recent tokens") {
    auto s = small_scenario();
    s.steps = 30;
    const planted::model m(s);
    auto o = options_for(s, 1.0);
    o.decode_window = 8;
    o.decode_sink = 2;
    auto cache = hc::make_full_cache(s.shape, o);
    record_attention(cache, m);
    std::vector<index_t> positions = row_positions(cache, 1, 0);
    std::vector<index_t> decode(positions.begin() + s.prompt_tokens, positions.end());
    for (index_t& p : decode) p -= s.prompt_tokens;
    std::sort(decode.begin(), decode.end());
    CHECK(decode == std::vector<index_t>{0, 1, 24, 25, 26, 27, 28, 29});
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
        auto kv = m.tensor();
        kv.keys += seq * kv.map.sequence_stride;
        kv.values += seq * kv.map.sequence_stride;
        single.begin_sequence(0, s.prompt_tokens);
        for (index_t layer = 0; layer < sh.layers; ++layer) single.prefill(layer, 0, kv, m.window(layer, seq));
        std::vector<float> out(static_cast<std::size_t>(per_query)), lse(static_cast<std::size_t>(sh.query_heads));
        for (index_t step = 0; step < s.steps; ++step)
            for (index_t layer = 0; layer < sh.layers; ++layer) {
                const index_t token[] = {s.prompt_tokens + step};
                hc::decode_attention(single.begin_layer(layer, kv, token), m.decode_query(step, layer, seq, 0), out.data(),
                                     lse.data(), 1.0f / std::sqrt(static_cast<float>(sh.head_dim)));
                single.end_layer(layer, {m.decode_query(step, layer, seq, 0), per_query, sh.head_dim});
                const auto& expected = both.outputs[static_cast<std::size_t>(step * sh.layers + layer)];
                CHECK(std::memcmp(out.data(), expected.data() + seq * per_query, sizeof(float) * out.size()) == 0);
            }
    }
}

namespace {

// Prefills `cache` with every layer's observation window of `m`, on `queue`, then decodes `steps` steps
// inline; returns every row's hot positions after the prefill and every step's attention outputs.
template <class Cache>
std::pair<std::vector<std::vector<index_t>>, std::vector<float>> prefill_and_decode(Cache& cache, const planted::model& m,
                                                                                 hc::host_queue queue, index_t steps) {
    const auto& sh = m.spec().shape;
    const auto kv = m.tensor();
    const index_t t = m.spec().prompt_tokens, per_query = sh.query_heads * sh.head_dim;
    cache.begin_sequence(0, t);
    for (index_t layer = 0; layer < sh.layers; ++layer) cache.prefill(layer, 0, kv, m.window(layer, 0), queue);
    std::vector<std::vector<index_t>> positions;
    for (index_t layer = 0; layer < sh.layers; ++layer)
        for (index_t head = 0; head < sh.kv_heads; ++head) positions.push_back(row_positions(cache, layer, head));
    std::vector<float> outputs, out(static_cast<std::size_t>(per_query)), lse(static_cast<std::size_t>(sh.query_heads));
    for (index_t step = 0; step < steps; ++step)
        for (index_t layer = 0; layer < sh.layers; ++layer) {
            const index_t token[] = {t + step};
            hc::decode_attention(cache.begin_layer(layer, kv, token), m.decode_query(step, layer, 0, 0), out.data(),
                                 lse.data(), 1.0f / std::sqrt(static_cast<float>(sh.head_dim)));
            cache.end_layer(layer, {m.decode_query(step, layer, 0, 0), per_query, sh.head_dim});
            outputs.insert(outputs.end(), out.begin(), out.end());
        }
    return {positions, outputs};
}

}  // namespace

TEST_CASE("prefill on a queue's threads scores every head as inline: the same selection and attention, bit for bit") {
    auto s = small_scenario();
    s.steps = 6;
    const planted::model m(s);
    const auto o = options_for(s, 0.5);
    hc::host_thread_pool pool(3);
    // Two caches from `make`, one prefilled inline and one on the pool's threads.
    const auto require_same = [&](auto make) {
        auto inline_cache = make();
        auto threaded = make();
        const auto expected = prefill_and_decode(inline_cache, m, {}, s.steps);
        const auto got = prefill_and_decode(threaded, m, hc::host_queue(pool), s.steps);
        CHECK(got.first == expected.first);
        REQUIRE(got.second.size() == expected.second.size());
        CHECK(std::memcmp(got.second.data(), expected.second.data(), sizeof(float) * got.second.size()) == 0);
    };
    SUBCASE("HeteroCache (pooled window scores, a loaded profile)") {
        require_same([&] { return hc::kv_cache<>(s.shape, o, testing_support::planted_profile(m)); });
    }
    SUBCASE("H2O (accumulated window attention)") {
        require_same([&] { return hc::make_h2o_cache(s.shape, o); });
    }
}

TEST_CASE("online profiling recovers planted stable, drifting and redundant heads") {
    planted::scenario s;
    s.shape = {4, 3, 9, 64};
    s.prompt_tokens = 512;
    s.targets = 12;
    s.steps = 12;
    const planted::model m(s);
    auto o = options_for(s, 0.5);
    o.profile_from_window = false;  // the planted heads drift during decode only: profile the decode steps
    hc::kv_cache<> cache(s.shape, o);
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
    const std::vector<index_t> held = row_positions(cache, 0, 1);
    const std::set<index_t> kept(held.begin(), held.end());
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

TEST_CASE("a paged engine tensor gives the same cache as the contiguous one") {
    const auto s = small_scenario();
    const planted::model m(s);
    const auto& sh = s.shape;
    const index_t tokens = s.prompt_tokens + s.steps, page = 16, pages = (tokens + page - 1) / page;
    // Pool [layer][page][token][head][dim], pages handed out in reverse order to make the table matter.
    std::vector<float> keys(static_cast<std::size_t>(sh.layers * pages * page * sh.kv_heads * sh.head_dim)), values(keys.size());
    std::vector<std::int32_t> table(static_cast<std::size_t>(pages));
    for (index_t p = 0; p < pages; ++p) table[static_cast<std::size_t>(p)] = static_cast<std::int32_t>(pages - 1 - p);
    const hc::paged_kv_tensor<float> paged{keys.data(), values.data(),
                                           {table.data(), pages, page, pages * page * sh.kv_heads * sh.head_dim, sh.kv_heads, sh.head_dim},
                                           sh.kv_heads, sh.head_dim};
    const auto flat = m.tensor();
    for (index_t l = 0; l < sh.layers; ++l)
        for (index_t h = 0; h < sh.kv_heads; ++h)
            for (index_t t = 0; t < tokens; ++t) {
                std::memcpy(const_cast<float*>(paged.key(l, 0, h, t)), flat.key(l, 0, h, t), sizeof(float) * sh.head_dim);
                std::memcpy(const_cast<float*>(paged.value(l, 0, h, t)), flat.value(l, 0, h, t), sizeof(float) * sh.head_dim);
            }
    const auto o = options_for(s, 0.5);
    hc::kv_cache<> contiguous(sh, o);
    const auto expected = record_attention(contiguous, m);
    for (const bool aliased : {false, true}) {
        CAPTURE(aliased);
        hc::storage_binding<hc::paged_kv_tensor<float>> binding;
        if (aliased) binding.cold_alias = paged;
        hc::kv_cache<hc::paged_kv_tensor<float>> cache(sh, o, std::nullopt, {}, {}, {}, binding);
        std::vector<float> out(static_cast<std::size_t>(sh.query_heads * sh.head_dim)), lse(static_cast<std::size_t>(sh.query_heads));
        cache.begin_sequence(0, s.prompt_tokens);
        for (index_t l = 0; l < sh.layers; ++l) cache.prefill(l, 0, paged, m.window(l, 0));
        for (index_t step = 0; step < s.steps; ++step)
            for (index_t l = 0; l < sh.layers; ++l) {
                const index_t token[] = {s.prompt_tokens + step};
                hc::decode_attention(cache.begin_layer(l, paged, token), m.decode_query(step, l, 0, 0), out.data(), lse.data(),
                                     1.0f / std::sqrt(static_cast<float>(sh.head_dim)));
                cache.end_layer(l, m.queries(step, l));
                CHECK(out == expected.outputs[static_cast<std::size_t>(step * sh.layers + l)]);
            }
    }
}

TEST_CASE("online profiling ends by compacting every live sequence to what the found profile selects at prefill") {
    auto s = small_scenario();
    s.sequences = 2;
    s.steps = 6;  // exactly the profiling steps: no refresh after the compaction yet
    const planted::model m(s);
    for (const double r : {0.3, 0.5}) {
        CAPTURE(r);
        const auto o = options_for(s, r);
        hc::kv_cache<> online(s.shape, o);
        record_attention(online, m);
        REQUIRE(online.profile().has_value());
        hc::kv_cache<> loaded(s.shape, o, *online.profile());
        const auto kv = m.tensor();
        for (index_t seq = 0; seq < s.sequences; ++seq) {
            loaded.begin_sequence(seq, s.prompt_tokens);
            for (index_t layer = 0; layer < s.shape.layers; ++layer) loaded.prefill(layer, seq, kv, m.window(layer, seq));
        }
        index_t compressed = 0;
        for (index_t layer = 0; layer < s.shape.layers; ++layer)
            for (index_t row = 0; row < 2 * s.shape.kv_heads; ++row) {
                CAPTURE(layer);
                CAPTURE(row);
                const index_t prompt = loaded.rows().prompt_count(layer, row);
                REQUIRE(online.rows().prompt_count(layer, row) == prompt);
                const auto held = row_positions(online, layer, row), chosen = row_positions(loaded, layer, row);
                CHECK(std::equal(chosen.begin(), chosen.end(), held.begin()));  // the prompt part, in position order
                // then the decode tokens, moved behind the new selection
                for (index_t j = 0; j < s.steps; ++j) CHECK(held[static_cast<std::size_t>(prompt + j)] == s.prompt_tokens + j);
                compressed += prompt < s.prompt_tokens;
            }
        CHECK(compressed > 0);
    }
}

TEST_CASE("online profiling from the observation window classifies the heads at prefill: compression from the first step") {
    // Reference: the profile the classifier finds in the top-k sets of the pooled window row (step 0) and of
    // the last profiling_steps window queries, one by one (steps 1..), demoted until the budget can be met.
    auto s = small_scenario();
    s.window = 8;
    const planted::model m(s);
    auto o = options_for(s, 0.4);
    REQUIRE(o.profile_from_window);  // the default
    REQUIRE(o.profiling_steps < s.window);
    const index_t t = s.prompt_tokens, k = o.profiling_top_k(t);
    hc::profiling_record record(s.shape.layers, s.shape.kv_heads, 1, o.profiling_steps, k);
    std::vector<float> row(static_cast<std::size_t>(t)), scratch(static_cast<std::size_t>(2 * t));
    std::vector<index_t> index_scratch(static_cast<std::size_t>(t));
    const auto kv = m.tensor();
    for (index_t layer = 0; layer < s.shape.layers; ++layer)
        for (index_t head = 0; head < s.shape.kv_heads; ++head) {
            hc::query_rows window = m.window(layer, 0);
            window.first_position = t - window.count;
            for (index_t step = 0; step <= o.profiling_steps; ++step) {
                hc::query_rows rows = window;
                if (step > 0) {
                    const index_t i = window.count - o.profiling_steps + step - 1;
                    rows.base = window.query(i, 0), rows.count = 1, rows.first_position = window.first_position + i;
                }
                hc::pooled_attention_row(rows, kv.key_rows(layer, 0, head), head, s.shape.group_size(), s.shape.head_dim,
                                         row, scratch);
                hc::top_k_positions(row, record.record(layer, head, 0, step, k), index_scratch);
            }
        }
    hc::head_profile expected = hc::overlap_star_classifier{}.classify(record);
    hc::demote_until_feasible(expected, o.budget_ratio);

    hc::kv_cache<> cache(s.shape, o);
    const index_t heads = s.shape.total_kv_heads();
    cache.begin_sequence(0, t);
    for (index_t layer = 0; layer < s.shape.layers; ++layer) {
        CHECK_FALSE(cache.profile().has_value());
        cache.prefill(layer, 0, kv, m.window(layer, 0));
    }
    REQUIRE(cache.profile().has_value());  // before any decode step
    for (index_t i = 0; i < heads; ++i) {
        CAPTURE(i);
        CHECK(cache.profile()->heads[static_cast<std::size_t>(i)].role == expected.heads[static_cast<std::size_t>(i)].role);
        CHECK(cache.profile()->heads[static_cast<std::size_t>(i)].pivot == expected.heads[static_cast<std::size_t>(i)].pivot);
    }
    // The first decode step already attends the compressed selection: r * T per head on average (plus one
    // token per head for rounding), not the whole prompt.
    CHECK(static_cast<double>(cache.resident_tokens()) <= o.budget_ratio * static_cast<double>(heads * t) + static_cast<double>(heads));
}
