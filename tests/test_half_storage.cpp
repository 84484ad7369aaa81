// The 16-bit hot tier (`host_storage_fp16`, `host_storage_bf16`): attention equals the fp32 kernel on K/V
// rounded to 16 bits, the cold tier stays exact fp32, counters count 2-byte elements, and the selection is the
// fp32 cache's. And the host tier of every hot element type over a paged engine tensor stores tokens by
// position, whatever order the engine's page table lists its pages in. (test_kv_cache.cpp checks every hot slot and cold token of a compressing run for each element
// type.)
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <utility>
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
using async_heterocache = hc::kv_cache<hc::strided_kv_tensor<float>, hc::overlap_star_classifier, hc::drift_weighted_budget,
                                       storage_of<E>, hc::pivot_overlap_monitor, hc::async_retriever>;

//! The planted model of `s` with every key and value rounded to `E` and widened back: the K/V a 16-bit hot
//! tier holds, rounded here independently of the storage.
template <class E>
planted::model rounded_model(const planted::scenario& s) {
    planted::model m(s);
    const auto& sh = m.spec().shape;
    const index_t n = sh.layers * s.sequences * sh.kv_heads * (s.prompt_tokens + s.steps) * sh.head_dim;
    const auto tensor = m.tensor();  // head-major: one contiguous tensor each
    for (float* data : {const_cast<float*>(tensor.keys), const_cast<float*>(tensor.values)})
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

//! Per (step, layer): the length of every row of the selection, then the token position each row's tokens
//! hold, row by row (token `k` of row `r` in slot `selection.slot(r, k)`).
template <class Cache>
std::vector<std::vector<index_t>> selected_positions(Cache& cache, const planted::model& m) {
    std::vector<std::vector<index_t>> selections;
    planted::drive(cache, m, [&](index_t, index_t layer, const auto& selection, const float*) {
        std::vector<index_t> lengths, positions;
        for (index_t r = 0; r < selection.rows; ++r) {
            lengths.push_back(selection.row_length(r));
            for (index_t k = 0; k < selection.row_length(r); ++k)
                positions.push_back(cache.storage().hot_position(layer, selection.slot(r, k)));
        }
        selections.push_back(std::move(lengths));
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
    static_assert(std::same_as<typename storage_of<E>::cold_element, float>);
    static_assert(hc::StorageTier<storage_of<E>>);
    const index_t d = 8, tokens = 4;
    for (const index_t page_size : {1, 16}) {
        CAPTURE(page_size);
        // 1 layer, one sequence of 2 KV heads (rows), 4 positions per row; the engine's tensor [head][token][d].
        storage_of<E> storage;
        storage.bind({{1, 2, 2, d}, 1, tokens, page_size, {4}, false}, {}, nullptr);
        std::vector<float> keys(static_cast<std::size_t>(2 * tokens * d)), values(keys.size());
        for (std::size_t i = 0; i < keys.size(); ++i) {
            keys[i] = 1.0f + 0.001f * static_cast<float>(i);
            values[i] = -3.14159f * static_cast<float>(i % static_cast<std::size_t>(d));
        }
        const auto kv = hc::make_head_major_tensor(keys.data(), values.data(), 1, 2, tokens, d);
        const auto key = [&](index_t row, index_t t) { return keys.data() + (row * tokens + t) * d; };
        const auto value = [&](index_t row, index_t t) { return values.data() + (row * tokens + t) * d; };
        const std::vector<hc::page_index_t> pages{1, 3, 0, 2};  // row 1's pages, in any order
        // The prompt (3 tokens of both rows) goes to the cold tier; row 1's prefill selection is position 2.
        const std::vector<index_t> selected{2};
        const std::vector<hc::refresh_row> hot_rows{{1, pages.data(), 0, selected}};
        storage.store_prompt(0, 0, kv, 3, hot_rows, {});
        // Row 1's decode token (engine token 3, position 3) goes to the cold tier and to row token 1.
        const hc::index_t decode_slot = pages[1 / page_size] * page_size + 1 % page_size;
        const std::vector<hc::append_entry> entries{{1, 3, 3, decode_slot}};
        storage.append(0, kv, entries, {});
        // A refresh brings position 2 again into row token 2 (from the cold tier).
        const std::vector<hc::refresh_row> refresh{{1, pages.data(), 2, selected}};
        storage.refill(0, {0, refresh}, {});

        // The cold tier is exact fp32: every stored position of every row, bit for bit.
        for (index_t row = 0; row < 2; ++row)
            for (index_t t = 0; t < (row == 1 ? 4 : 3); ++t) {
                CHECK(std::memcmp(storage.cold_keys(0, row).at(t), key(row, t), sizeof(float) * static_cast<std::size_t>(d)) == 0);
                CHECK(std::memcmp(storage.cold_values(0, row).at(t), value(row, t), sizeof(float) * static_cast<std::size_t>(d)) == 0);
            }
        // The hot slots hold the rounded elements of the positions they name.
        const auto slot_of = [&](index_t k) { return pages[static_cast<std::size_t>(k / page_size)] * page_size + k % page_size; };
        const std::vector<std::pair<index_t, index_t>> hot{{slot_of(0), 2}, {slot_of(1), 3}, {slot_of(2), 2}};
        for (const auto& [slot, position] : hot) {
            CAPTURE(slot);
            CHECK(storage.hot_position(0, slot) == position);
            for (index_t c = 0; c < d; ++c) {
                const E k = storage.hot_key(0, slot)[c], v = storage.hot_value(0, slot)[c];
                const float kf = key(1, position)[c], vf = value(1, position)[c];
                CHECK(k == hc::from_float<E>(kf));
                CHECK(v == hc::from_float<E>(vf));
                CHECK(std::abs(hc::to_float(k) - kf) <= half_ulp<E> * std::abs(kf));
                CHECK(std::abs(hc::to_float(v) - vf) <= half_ulp<E> * std::abs(vf));
            }
        }
        index_t written = 0;
        for (index_t slot = 0; slot < storage.hot_slots(0); ++slot) written += storage.hot_position(0, slot) >= 0 ? 1 : 0;
        CHECK(written == 3);  // nothing else
        const auto token_bytes = static_cast<std::uint64_t>(2 * d);  // a token's key and value, per byte of element
        CHECK(storage.counters().written_to_hot == token_bytes * 2 * 2);  // the prefill selection and the append
        CHECK(storage.counters().retrieved == token_bytes * 2);           // the refresh, 2-byte elements
        CHECK(storage.counters().written_to_cold == token_bytes * 4 * 7);  // 6 prompt tokens and the append, fp32
        // The hot pool's keys and values take half the bytes of fp32 ones (64 pages: every region a multiple of
        // the 256-byte alignment); the cold tier is the same.
        const hc::storage_plan plan{{1, 2, 2, d}, 1, tokens, page_size, {64}, false};
        const hc::storage_bytes half = storage.bytes_required(plan), full = hc::host_storage{}.bytes_required(plan);
        const auto slots = static_cast<std::size_t>(64 * page_size);
        CHECK(half.cold == full.cold);
        CHECK(full.hot - half.hot == 2 * slots * static_cast<std::size_t>(d) * 2);
    }
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
        hc::heterocache_cache<hc::strided_kv_tensor<float>, storage_of<E>> half(shape, o, profile);
        hc::heterocache_cache<> fp32(shape, o, profile), reference(shape, o, profile);
        const auto got = record_attention(half, m);
        CHECK(testing_support::identical(got, record_attention(reference, rounded)));
        CHECK(worst_relative_error(got, record_attention(fp32, m), shape.head_dim) <= tolerance);
    }
    SUBCASE("HeteroCache profiled online") {
        hc::heterocache_cache<hc::strided_kv_tensor<float>, storage_of<E>> half(shape, o);
        hc::heterocache_cache<> reference(shape, o);
        CHECK(testing_support::identical(record_attention(half, m), record_attention(reference, rounded)));
    }
    SUBCASE("the full cache") {
        auto half = hc::make_full_cache<hc::strided_kv_tensor<float>, storage_of<E>>(shape, o);
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
        hc::heterocache_cache<hc::strided_kv_tensor<float>, storage_of<E>> half(shape, o);
        hc::heterocache_cache<> fp32(shape, o);
        check_same(half, fp32, m);
    }
    SUBCASE("H2O") {
        auto half = hc::make_h2o_cache<hc::strided_kv_tensor<float>, storage_of<E>>(shape, o);
        auto fp32 = hc::make_h2o_cache(shape, o);
        check_same(half, fp32, m);
    }
}

TEST_CASE_TEMPLATE("a host tier over a paged engine tensor stores every token by position, whatever the page order", E, float,
                   hc::fp16_t, hc::bf16_t) {
    // An engine pool `[page][token_in_page][kv_head][d]` of pages of 4 tokens, one sequence of 16 positions whose
    // page table lists the pool pages out of order. The tier copies the prompt (cold), the prefill selection and
    // a refresh (hot): each position must land as the engine's token at that position, for 1 KV head (whose
    // tokens in one page are back to back) and 2.
    for (const index_t kv_heads : {1, 2}) {
        for (const bool aliased : {false, true}) {
            CAPTURE(kv_heads);
            CAPTURE(aliased);
            const index_t d = 4, engine_page = 4, positions = 16, hot_page = 16;
            std::vector<float> keys(static_cast<std::size_t>(4 * engine_page * kv_heads * d)), values(keys.size());
            for (std::size_t i = 0; i < keys.size(); ++i) keys[i] = static_cast<float>(i), values[i] = -static_cast<float>(i);
            const std::vector<std::int32_t> table{0, 2, 1, 3};
            const hc::paged_kv_tensor<float> kv{keys.data(), values.data(), {table.data(), 4, engine_page, 0, kv_heads, d}, kv_heads, d};
            hc::basic_host_storage<E, hc::paged_kv_tensor<float>> storage;
            storage.bind({{1, kv_heads, kv_heads, d}, 1, positions, hot_page, {2 * kv_heads}, aliased}, {}, aliased ? &kv : nullptr);
            std::vector<index_t> all(static_cast<std::size_t>(positions));
            std::iota(all.begin(), all.end(), index_t{0});
            std::vector<std::vector<hc::page_index_t>> pages;
            for (index_t h = 0; h < kv_heads; ++h) pages.push_back({static_cast<hc::page_index_t>(2 * h + 1)});
            std::vector<hc::refresh_row> rows;
            for (index_t h = 0; h < kv_heads; ++h) rows.push_back({h, pages[static_cast<std::size_t>(h)].data(), 0, all});
            storage.store_prompt(0, 0, kv, positions, rows, {});
            // Positions whose hot slot or cold token does not hold the engine's token at that position.
            const auto wrong_positions = [&] {
                index_t wrong_cold = 0, wrong_hot = 0;
                for (index_t h = 0; h < kv_heads; ++h)
                    for (index_t t = 0; t < positions; ++t) {
                        const index_t slot = (2 * h + 1) * hot_page + t;
                        const auto bytes = sizeof(float) * static_cast<std::size_t>(d);
                        wrong_cold += std::memcmp(storage.cold_keys(0, h).at(t), kv.key(0, 0, h, t), bytes) == 0 &&
                                              std::memcmp(storage.cold_values(0, h).at(t), kv.value(0, 0, h, t), bytes) == 0
                                          ? 0
                                          : 1;
                        bool hot = storage.hot_position(0, slot) == t;
                        for (index_t c = 0; c < d; ++c)
                            hot = hot && storage.hot_key(0, slot)[c] == hc::from_float<E>(kv.key(0, 0, h, t)[c]) &&
                                  storage.hot_value(0, slot)[c] == hc::from_float<E>(kv.value(0, 0, h, t)[c]);
                        wrong_hot += hot ? 0 : 1;
                    }
                return std::pair{wrong_cold, wrong_hot};
            };
            const auto check_hot = [&] {
                const auto [wrong_cold, wrong_hot] = wrong_positions();
                CHECK(wrong_cold == 0);
                CHECK(wrong_hot == 0);
            };
            check_hot();
            storage.refill(0, {0, rows}, {});  // the same tokens again, from the cold tier
            check_hot();
        }
    }
}
