#include <doctest/doctest.h>

#include <cstring>
#include <memory>
#include <numeric>
#include <vector>

#include <heterocache/heterocache.hpp>

#include "cache_runs.hpp"
#include "planted_heads.hpp"

namespace hc = heterocache;
using hc::index_t;

namespace {

// A host storage with one layer of `rows` rows, cold tokens filled with recognisable values.
struct filled_storage {
    hc::host_storage storage;
    index_t rows, tokens, dim;

    filled_storage(index_t layers, index_t rows_, index_t tokens_, index_t dim_) : rows(rows_), tokens(tokens_), dim(dim_) {
        hc::storage_plan plan{{layers, rows, rows, dim}, 1, tokens, std::vector<index_t>(static_cast<std::size_t>(layers * rows), tokens)};
        storage.plan(plan);
        std::vector<float> k(static_cast<std::size_t>(dim)), v(k.size());
        for (index_t l = 0; l < layers; ++l)
            for (index_t r = 0; r < rows; ++r)
                for (index_t t = 0; t < tokens; ++t) {
                    for (index_t c = 0; c < dim; ++c) {
                        k[static_cast<std::size_t>(c)] = static_cast<float>(((l * rows + r) * tokens + t) * dim + c);
                        v[static_cast<std::size_t>(c)] = -k[static_cast<std::size_t>(c)];
                    }
                    storage.write_cold(l, r, t, k.data(), v.data());
                }
    }
    // True when hot slot `slot` of `layer` holds cold token `position` of `row`.
    [[nodiscard]] bool holds(index_t layer, index_t row, index_t slot, index_t position) const {
        const std::size_t bytes = sizeof(float) * static_cast<std::size_t>(dim);
        return storage.hot_position(layer, slot) == position &&
               std::memcmp(storage.hot_keys(layer) + slot * dim, storage.cold_keys(layer, row) + position * dim, bytes) == 0 &&
               std::memcmp(storage.hot_values(layer) + slot * dim, storage.cold_values(layer, row) + position * dim, bytes) == 0;
    }
};

}  // namespace

TEST_CASE("the asynchronous retriever equals the synchronous one bit for bit over a randomized 1000-step run") {
    planted::scenario s;
    s.shape = {3, 3, 6, 32};
    s.sequences = 2;
    s.prompt_tokens = 192;
    s.steps = 1000;
    s.targets = 6;
    s.drift_period = 7;
    s.seed = 20261129;
    const planted::model m(s);
    hc::cache_options o;
    o.sequences = s.sequences;
    o.max_prompt_tokens = s.prompt_tokens;
    o.max_new_tokens = s.steps;
    o.budget_ratio = 0.5;
    o.decode_window = 64;
    o.profiling_steps = 6;
    using async_cache = hc::kv_cache<hc::strided_kv_layout, hc::overlap_star_classifier, hc::drift_weighted_budget,
                                     hc::host_storage, hc::pivot_overlap_monitor, hc::async_retriever>;
    hc::kv_cache<> sync(s.shape, o);
    async_cache async(s.shape, o);
    const auto expected = testing_support::record_attention(sync, m);
    const auto actual = testing_support::record_attention(async, m);
    CHECK(testing_support::identical(expected, actual));
    CHECK(async.storage().counters().retrieved == sync.storage().counters().retrieved);
    CHECK(sync.storage().counters().retrieved > 0);  // the run did drift and refresh
}

TEST_CASE("wait(layer) returns only when that layer's refresh is applied whole") {
    filled_storage f(2, 4, 512, 16);
    hc::async_retriever retriever;
    retriever.bind(f.storage, {2, 16, 4 * 512, 8});
    std::vector<index_t> positions(512);
    std::iota(positions.begin(), positions.end(), index_t{0});
    for (int round = 0; round < 40; ++round) {
        // Alternate, per layer, between two mappings so a stale slot would show: row r -> region r or r + 1.
        const index_t layer = round % 2, shift = (round / 2) % 2;
        std::vector<hc::refresh_row> rows;
        for (index_t r = 0; r < 4; ++r) rows.push_back({r, ((r + shift) % 4) * 512, positions});
        retriever.submit({layer, rows});
        retriever.wait(layer);
        index_t wrong = 0;
        for (index_t r = 0; r < 4; ++r)
            for (index_t t = 0; t < 512; ++t) wrong += f.holds(layer, r, ((r + shift) % 4) * 512 + t, t) ? 0 : 1;
        CHECK(wrong == 0);
    }
}

TEST_CASE("destroying the asynchronous retriever drains every queued refresh, none half-applied") {
    filled_storage f(4, 2, 256, 8);
    std::vector<index_t> positions(100);
    std::iota(positions.begin(), positions.end(), index_t{50});
    std::vector<hc::refresh_row> rows{{0, 10, positions}, {1, 256 + 20, positions}};
    {
        hc::async_retriever retriever;
        retriever.bind(f.storage, {4, 8, 200, 4});
        for (index_t layer = 0; layer < 4; ++layer) retriever.submit({layer, rows});
    }  // no wait: the destructor must finish all four
    CHECK(f.storage.counters().retrieved == 4u * 200u * 2u * 8u * sizeof(float));
    index_t wrong = 0;
    for (index_t layer = 0; layer < 4; ++layer)
        for (index_t i = 0; i < 100; ++i) {
            wrong += f.holds(layer, 0, 10 + i, 50 + i) ? 0 : 1;
            wrong += f.holds(layer, 1, 256 + 20 + i, 50 + i) ? 0 : 1;
        }
    CHECK(wrong == 0);
}

TEST_CASE("a refresh larger than the planned staging is a shape error, not an overflow") {
    filled_storage f(1, 1, 64, 4);
    std::vector<index_t> positions(10);
    std::iota(positions.begin(), positions.end(), index_t{0});
    const std::vector<hc::refresh_row> rows{{0, 0, positions}};
    hc::async_retriever async;
    async.bind(f.storage, {1, 4, 8, 2});
    CHECK_THROWS_AS(async.submit({0, rows}), hc::shape_error);
    hc::sync_retriever sync;
    sync.bind(f.storage, {1, 4, 8, 2});
    CHECK_THROWS_AS(sync.submit({0, rows}), hc::shape_error);
}
