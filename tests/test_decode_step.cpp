// A decode step as an engine runs it: the selection is a FlashInfer-style paged descriptor that a kernel
// reading only `indptr`, `indices`, `last_page_len` and the page size attends correctly, and a step
// (begin_layer, attention, end_layer) allocates nothing.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <set>
#include <vector>

#include <heterocache/heterocache.hpp>

#include "allocation_counter.hpp"
#include "cache_runs.hpp"
#include "planted_heads.hpp"

namespace hc = heterocache;
using hc::index_t;
using testing_support::options_for;
using testing_support::small_scenario;

using testing_support::allocations;

namespace {

//! Float64 attention of every query head over a paged selection, read the way FlashInfer's `paged_kv_t` is
//! read: row `r` has the pages `indices[indptr[r] .. indptr[r + 1])`, all full but the last, which holds
//! `last_page_len[r]` tokens; the token at offset `o` of page `p` is at `(p * page_size + o) * head_dim`.
template <class Selection>
std::vector<double> paged_reference(const Selection& s, const float* queries, double scale) {
    const index_t d = s.head_dim, ps = s.page_size;
    std::vector<double> out(static_cast<std::size_t>(s.rows * s.group_size * d), 0.0);
    for (index_t row = 0; row < s.rows; ++row) {
        const index_t first = s.indptr[row], pages = s.indptr[row + 1] - first;
        std::vector<index_t> slots;
        for (index_t p = 0; p < pages; ++p) {
            const index_t length = p + 1 < pages ? ps : s.last_page_len[row];
            for (index_t o = 0; o < length; ++o) slots.push_back(static_cast<index_t>(s.indices[first + p]) * ps + o);
        }
        for (index_t g = 0; g < s.group_size; ++g) {
            const float* q = queries + (row * s.group_size + g) * d;
            std::vector<double> scores;
            for (const index_t slot : slots) {
                double dot = 0.0;
                for (index_t c = 0; c < d; ++c) dot += static_cast<double>(q[c]) * hc::to_float(s.keys[slot * d + c]);
                scores.push_back(dot * scale);
            }
            if (scores.empty()) continue;
            const double top = *std::max_element(scores.begin(), scores.end());
            double sum = 0.0;
            for (const double x : scores) sum += std::exp(x - top);
            for (std::size_t j = 0; j < slots.size(); ++j)
                for (index_t c = 0; c < d; ++c)
                    out[static_cast<std::size_t>((row * s.group_size + g) * d + c)] +=
                        std::exp(scores[j] - top) / sum * hc::to_float(s.values[slots[j] * d + c]);
        }
    }
    return out;
}

}  // namespace

TEST_CASE("a kv_cache with 16-token pages feeds a paged kernel that reads only indptr, indices and last_page_len") {
    auto s = small_scenario();
    s.sequences = 2;
    const planted::model m(s);
    auto o = options_for(s, 0.45);
    o.page_size = 16;
    o.decode_window = 10;
    o.decode_sink = 2;
    hc::kv_cache<> cache(s.shape, o, testing_support::planted_profile(m));
    const auto& sh = s.shape;
    const float scale = hc::attention_scale(sh.head_dim);
    std::vector<float> out(static_cast<std::size_t>(s.sequences * sh.query_heads * sh.head_dim));
    std::vector<float> lse(static_cast<std::size_t>(s.sequences * sh.query_heads));
    double worst = 0.0;
    index_t checked_rows = 0;
    planted::drive(cache, m, [&](index_t step, index_t layer, const auto& selection, const float* queries) {
        CHECK(selection.page_size == 16);
        std::set<index_t> pages;  // no page serves two rows
        for (index_t row = 0; row < selection.rows; ++row) {
            const index_t count = selection.indptr[row + 1] - selection.indptr[row];
            CHECK(count >= 0);
            if (count > 0) CHECK((selection.last_page_len[row] >= 1 && selection.last_page_len[row] <= 16));
            for (index_t p = selection.indptr[row]; p < selection.indptr[row + 1]; ++p) CHECK(pages.insert(selection.indices[p]).second);
            const index_t tokens = count == 0 ? 0 : (count - 1) * 16 + selection.last_page_len[row];
            CHECK(tokens == cache.rows().length(layer, row));
            CHECK(tokens == cache.rows().prompt_count(layer, row) + std::min<index_t>(step + 1, 10));
            ++checked_rows;
        }
        hc::decode_attention(selection, queries, out.data(), lse.data(), scale);
        const std::vector<double> expected = paged_reference(selection, queries, scale);
        for (std::size_t i = 0; i < out.size(); ++i) worst = std::max(worst, std::abs(out[i] - expected[i]));
    }, hc::score_source::captured);
    CHECK(checked_rows > 0);
    CHECK(worst <= 1e-5);
}

TEST_CASE("a decode step allocates nothing: begin_layer, attention, end_layer with drift refreshes") {
    planted::scenario s;
    s.shape = {2, 3, 9, 64};
    s.prompt_tokens = 512;
    s.targets = 12;
    s.steps = 60;
    s.drift_period = 20;
    s.sequences = 2;
    const planted::model m(s);
    for (const bool digests : {false, true})  // the pivots as given, or all digest pivots (ranked at begin_layer)
    for (const bool async : {false, true}) {
        CAPTURE(digests);
        CAPTURE(async);
        auto o = options_for(s, 0.5);
        auto profile = testing_support::planted_profile(m);
        if (digests) {
            o.digest_page_tokens = 16;
            for (auto& head : profile.heads)
                if (head.role == hc::head_role::pivot) head.role = hc::head_role::digest_pivot;
        }
        hc::kv_cache<> sync_cache(s.shape, o, profile);
        hc::kv_cache<hc::strided_kv_tensor<float>, hc::overlap_star_classifier, hc::drift_weighted_budget, hc::host_storage,
                     hc::pivot_overlap_monitor, hc::async_retriever>
            async_cache(s.shape, o, profile);
        const auto& sh = s.shape;
        std::vector<float> out(static_cast<std::size_t>(s.sequences * sh.query_heads * sh.head_dim));
        std::vector<float> lse(static_cast<std::size_t>(s.sequences * sh.query_heads));
        long during_steps = 0;
        long before = 0;
        const auto attend = [&](index_t step, index_t layer, const auto& selection, const float* queries) {
            // Counts from the begin_layer of the previous layer to this one's: a whole step per layer.
            if (step > 0 || layer > 0) during_steps += allocations.load() - before;
            hc::decode_attention(selection, queries, out.data(), lse.data(), hc::attention_scale(sh.head_dim));
            before = allocations.load();
        };
        if (async) planted::drive(async_cache, m, attend, hc::score_source::captured);
        else planted::drive(sync_cache, m, attend, hc::score_source::captured);
        CHECK(during_steps == 0);
        CHECK((async ? async_cache.storage() : sync_cache.storage()).counters().retrieved > 0);  // refreshes ran
        if (digests) CHECK((async ? async_cache.monitor() : sync_cache.monitor()).digest_drifts() > 0);
    }
}

TEST_CASE("pivot_overlap_monitor ranks with the current query only for a profile with digest pivots") {
    planted::scenario s;
    s.shape = {2, 3, 9, 64};
    s.prompt_tokens = 256;
    const planted::model m(s);
    auto profile = testing_support::planted_profile(m);
    REQUIRE(profile.count(hc::head_role::pivot) > 0);
    CHECK_FALSE(hc::pivot_overlap_monitor{}.observes_current(profile));
    for (auto& head : profile.heads)
        if (head.role == hc::head_role::pivot) {
            head.role = hc::head_role::digest_pivot;
            break;
        }
    CHECK(hc::pivot_overlap_monitor{}.observes_current(profile));
}
