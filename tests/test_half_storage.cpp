// The 16-bit hot tier (`host_storage_fp16`, `host_storage_bf16`): attention equals the fp32 kernel on K/V
// rounded to 16 bits, the cold tier stays exact fp32, counters count 2-byte elements, and the selection is the
// fp32 cache's. (test_kv_cache.cpp checks every hot slot and cold token of a compressing run for each element
// type.)
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstring>
#include <vector>

#include <heterocache/heterocache.hpp>

#include "cache_runs.hpp"
#include "planted_heads.hpp"

namespace hc = heterocache;
using hc::index_t;
using testing_support::options_for;
using testing_support::record_attention;

namespace {

template <class E>
using storage_of = hc::basic_host_storage<E>;
//! HeteroCache with an asynchronous retriever, so refreshes also move tokens into the 16-bit tier off-thread.
template <class E>
using async_heterocache = hc::kv_cache<hc::strided_kv_layout, hc::overlap_star_classifier, hc::drift_weighted_budget,
                                       storage_of<E>, hc::pivot_overlap_monitor, hc::async_retriever>;

//! The planted model of `s` with every key and value rounded to `E` and widened back: the K/V a 16-bit hot
//! tier holds, rounded here independently of the storage.
template <class E>
planted::model rounded_model(const planted::scenario& s) {
    planted::model m(s);
    const auto& sh = m.spec().shape;
    const index_t n = sh.layers * s.sequences * sh.kv_heads * (s.prompt_tokens + s.steps) * sh.head_dim;
    const auto layout = m.layout();  // head-major: one contiguous tensor each
    for (float* data : {const_cast<float*>(layout.keys), const_cast<float*>(layout.values)})
        for (index_t i = 0; i < n; ++i) data[i] = hc::to_float(hc::from_float<E>(data[i]));
    return m;
}

//! Largest error of an output head of `got` relative to the largest value of that head in `want`.
double worst_relative_error(const testing_support::attention_trace& got, const testing_support::attention_trace& want,
                            index_t head_dim) {
    REQUIRE(got.outputs.size() == want.outputs.size());
    double worst = 0.0;
    for (std::size_t i = 0; i < got.outputs.size(); ++i)
        for (std::size_t head = 0; head < got.outputs[i].size(); head += static_cast<std::size_t>(head_dim)) {
            double error = 0.0, norm = 0.0;
            for (std::size_t c = head; c < head + static_cast<std::size_t>(head_dim); ++c) {
                error = std::max(error, static_cast<double>(std::abs(got.outputs[i][c] - want.outputs[i][c])));
                norm = std::max(norm, static_cast<double>(std::abs(want.outputs[i][c])));
            }
            worst = std::max(worst, error / norm);
        }
    return worst;
}

//! Per (step, layer): the selection's `indptr`, then the token position of every selected slot.
template <class Cache>
std::vector<std::vector<index_t>> selected_positions(Cache& cache, const planted::model& m) {
    std::vector<std::vector<index_t>> selections;
    planted::drive(cache, m, [&](index_t, index_t layer, const auto& selection, const float*) {
        selections.emplace_back(selection.indptr.begin(), selection.indptr.end());
        std::vector<index_t> positions;
        for (const index_t slot : selection.indices) positions.push_back(cache.storage().hot_position(layer, slot));
        selections.push_back(std::move(positions));
    });
    return selections;
}

//! The error bound of one rounding to `E`, relative: half an ulp of 1.
template <class E>
constexpr double half_ulp = std::same_as<E, hc::fp16_t> ? 0x1p-11 : 0x1p-8;

}  // namespace

TEST_CASE_TEMPLATE("a 16-bit hot tier stores rounded elements, keeps the cold tier fp32 and counts 2-byte elements", E,
                   hc::fp16_t, hc::bf16_t) {
    static_assert(std::same_as<typename storage_of<E>::element_type, E>);
    static_assert(hc::StorageTier<storage_of<E>>);
    const index_t d = 8;
    storage_of<E> storage;
    storage.plan({{1, 2, 2, d}, 1, 4, {3, 3}});  // 1 layer, 2 rows of 3 hot slots, 4 tokens per row
    std::vector<float> key(static_cast<std::size_t>(d)), value(key.size());
    for (index_t c = 0; c < d; ++c) key[c] = 1.0f + 0.001f * static_cast<float>(c), value[c] = -3.14159f * static_cast<float>(c);
    storage.write_cold(0, 1, 2, key.data(), value.data());
    storage.write_hot(0, 4, key.data(), value.data(), 2);
    storage.retrieve_to_hot(0, 5, key.data(), value.data(), 2);

    std::vector<float> cold_key(key.size()), cold_value(key.size());
    storage.read_cold(0, 1, 2, cold_key.data(), cold_value.data());
    CHECK(std::memcmp(cold_key.data(), key.data(), key.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(cold_value.data(), value.data(), value.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(storage.cold_keys(0, 1) + 2 * d, key.data(), key.size() * sizeof(float)) == 0);
    for (const index_t slot : {4, 5}) {
        CHECK(storage.hot_position(0, slot) == 2);
        for (index_t c = 0; c < d; ++c) {
            const E k = storage.hot_keys(0)[slot * d + c], v = storage.hot_values(0)[slot * d + c];
            CHECK(k == hc::from_float<E>(key[c]));
            CHECK(v == hc::from_float<E>(value[c]));
            CHECK(std::abs(hc::to_float(k) - key[c]) <= half_ulp<E> * std::abs(key[c]));
            CHECK(std::abs(hc::to_float(v) - value[c]) <= half_ulp<E> * std::abs(value[c]));
        }
    }
    const auto token_bytes = static_cast<std::uint64_t>(2 * d);
    CHECK(storage.counters().written_to_hot == token_bytes * 2);
    CHECK(storage.counters().retrieved == token_bytes * 2);
    CHECK(storage.counters().written_to_cold == token_bytes * 4);
}

TEST_CASE_TEMPLATE("at r = 1 a 16-bit hot tier attends exactly as the fp32 kernel over K/V rounded to 16 bits", E,
                   hc::fp16_t, hc::bf16_t) {
    const planted::model m(testing_support::small_scenario());
    const planted::model rounded = rounded_model<E>(m.spec());
    const auto& shape = m.spec().shape;
    const auto o = options_for(m.spec(), 1.0);
    const auto profile = testing_support::planted_profile(m);
    // Against the fp32 cache the error is the 16-bit rounding, amplified by the softmax of the planted heads'
    // sharp scores (up to about 16): 1.3e-3 for fp16, 1.1e-2 for bf16 on this scenario.
    const double tolerance = 4 * half_ulp<E>;
    SUBCASE("HeteroCache with a profile") {
        hc::heterocache_cache<hc::strided_kv_layout, storage_of<E>> half(shape, o, profile);
        hc::heterocache_cache<> fp32(shape, o, profile), reference(shape, o, profile);
        const auto got = record_attention(half, m);
        CHECK(testing_support::identical(got, record_attention(reference, rounded)));
        CHECK(worst_relative_error(got, record_attention(fp32, m), shape.head_dim) <= tolerance);
    }
    SUBCASE("HeteroCache profiled online") {
        hc::heterocache_cache<hc::strided_kv_layout, storage_of<E>> half(shape, o);
        hc::heterocache_cache<> reference(shape, o);
        CHECK(testing_support::identical(record_attention(half, m), record_attention(reference, rounded)));
    }
    SUBCASE("the full cache") {
        auto half = hc::make_full_cache<hc::strided_kv_layout, storage_of<E>>(shape, o);
        auto fp32 = hc::make_full_cache(shape, o);
        auto reference = hc::make_full_cache(shape, o);
        const auto got = record_attention(half, m);
        CHECK(testing_support::identical(got, record_attention(reference, rounded)));
        CHECK(worst_relative_error(got, record_attention(fp32, m), shape.head_dim) <= tolerance);
        CHECK(half.resident_bytes() * 2 == fp32.resident_bytes());
    }
}

TEST_CASE_TEMPLATE("under compression a 16-bit cache selects the fp32 cache's tokens and moves half the hot bytes", E,
                   hc::fp16_t, hc::bf16_t) {
    const planted::model m(testing_support::small_scenario());
    const auto& shape = m.spec().shape;
    const auto o = options_for(m.spec(), 0.4);
    const auto check_same = [](auto& half, auto& fp32, const planted::model& model) {
        CHECK(selected_positions(half, model) == selected_positions(fp32, model));
        const hc::transfer_counters a = half.storage().counters(), b = fp32.storage().counters();
        CHECK(a.written_to_hot * 2 == b.written_to_hot);
        CHECK(a.retrieved * 2 == b.retrieved);
        CHECK(a.written_to_cold == b.written_to_cold);
        CHECK(half.resident_tokens() == fp32.resident_tokens());
        CHECK(half.resident_bytes() * 2 == fp32.resident_bytes());
    };
    SUBCASE("HeteroCache with the planted profile (pivots refresh their satellites)") {
        const auto profile = testing_support::planted_profile(m);
        async_heterocache<E> half(shape, o, profile);
        hc::heterocache_cache<> fp32(shape, o, profile);
        check_same(half, fp32, m);
        CHECK(half.storage().counters().retrieved > 0);
    }
    SUBCASE("HeteroCache profiled online") {
        hc::heterocache_cache<hc::strided_kv_layout, storage_of<E>> half(shape, o);
        hc::heterocache_cache<> fp32(shape, o);
        check_same(half, fp32, m);
    }
    SUBCASE("H2O") {
        auto half = hc::make_h2o_cache<hc::strided_kv_layout, storage_of<E>>(shape, o);
        auto fp32 = hc::make_h2o_cache(shape, o);
        check_same(half, fp32, m);
    }
}
