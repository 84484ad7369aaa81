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

// A host storage with `layers` layers of `rows` rows (one sequence of `rows` KV heads), its cold tier filled by
// `store_prompt` from an engine tensor of recognisable values, and a hot pool of `hot_pages` pages of
// `page_size` tokens per layer.
struct filled_storage {
    hc::host_storage storage;
    index_t layers, rows, tokens, dim, page_size;
    std::vector<float> keys, values;  // the engine's tensor, [layer][head][token][dim]

    filled_storage(index_t layers_, index_t rows_, index_t tokens_, index_t dim_, index_t page_size_, index_t hot_pages)
        : layers(layers_), rows(rows_), tokens(tokens_), dim(dim_), page_size(page_size_) {
        const hc::storage_plan plan{{layers, rows, rows, dim}, 1, tokens, page_size,
                                    std::vector<index_t>(static_cast<std::size_t>(layers), hot_pages), false};
        storage.bind(plan, {}, nullptr);
        keys.resize(static_cast<std::size_t>(layers * rows * tokens * dim));
        values.resize(keys.size());
        for (std::size_t i = 0; i < keys.size(); ++i) keys[i] = static_cast<float>(i), values[i] = -static_cast<float>(i);
        const auto kv = hc::make_head_major_tensor(keys.data(), values.data(), 1, rows, tokens, dim);
        for (index_t l = 0; l < layers; ++l) storage.store_prompt(l, 0, kv, tokens, {}, {});
    }
    //! The pages `first_page, first_page + 1, ...` of a region of the pool.
    [[nodiscard]] std::vector<hc::page_index_t> pages_from(index_t first_page, index_t count) const {
        std::vector<hc::page_index_t> pages(static_cast<std::size_t>(count));
        std::iota(pages.begin(), pages.end(), static_cast<hc::page_index_t>(first_page));
        return pages;
    }
    // True when hot slot `slot` of `layer` holds cold token `position` of `row`, and the cold tier holds the
    // engine's token exactly.
    [[nodiscard]] bool holds(index_t layer, index_t row, index_t slot, index_t position) const {
        const std::size_t bytes = sizeof(float) * static_cast<std::size_t>(dim);
        const float* engine_key = keys.data() + ((layer * rows + row) * tokens + position) * dim;
        const float* engine_value = values.data() + ((layer * rows + row) * tokens + position) * dim;
        return storage.hot_position(layer, slot) == position &&
               std::memcmp(storage.hot_key(layer, slot), storage.cold_keys(layer, row).at(position), bytes) == 0 &&
               std::memcmp(storage.hot_value(layer, slot), storage.cold_values(layer, row).at(position), bytes) == 0 &&
               std::memcmp(storage.cold_keys(layer, row).at(position), engine_key, bytes) == 0 &&
               std::memcmp(storage.cold_values(layer, row).at(position), engine_value, bytes) == 0;
    }
    //! Slot of token `k` of a row on `pages`.
    [[nodiscard]] index_t slot(const std::vector<hc::page_index_t>& pages, index_t k) const {
        return static_cast<index_t>(pages[static_cast<std::size_t>(k / page_size)]) * page_size + k % page_size;
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
    using async_cache = hc::kv_cache<hc::strided_kv_tensor<float>, hc::overlap_star_classifier, hc::drift_weighted_budget,
                                     hc::host_storage, hc::pivot_overlap_monitor, hc::async_retriever>;
    for (const index_t page_size : {16, 1}) {
        CAPTURE(page_size);
        o.page_size = page_size;
        hc::kv_cache<> sync(s.shape, o);
        async_cache async(s.shape, o);
        const auto expected = testing_support::record_attention(sync, m);
        const auto actual = testing_support::record_attention(async, m);
        CHECK(testing_support::identical(expected, actual));
        CHECK(async.storage().counters().retrieved == sync.storage().counters().retrieved);
        CHECK(sync.storage().counters().retrieved > 0);  // the run did drift and refresh
    }
}

TEST_CASE("wait(layer) returns only when that layer's refresh is applied whole") {
    // Pages of 16 tokens: region j of the pool is pages [32 j, 32 j + 32), 512 slots.
    filled_storage f(2, 4, 512, 16, 16, 4 * 32);
    hc::async_retriever retriever;
    retriever.bind(f.storage, {2, 4 * 512, 8});
    std::vector<index_t> positions(512);
    std::iota(positions.begin(), positions.end(), index_t{0});
    std::vector<std::vector<hc::page_index_t>> regions;
    for (index_t j = 0; j < 4; ++j) regions.push_back(f.pages_from(j * 32, 32));
    for (int round = 0; round < 40; ++round) {
        // Alternate, per layer, between two mappings so a stale slot would show: row r -> region r or r + 1.
        const index_t layer = round % 2, shift = (round / 2) % 2;
        std::vector<hc::refresh_row> rows;
        for (index_t r = 0; r < 4; ++r) rows.push_back({r, regions[static_cast<std::size_t>((r + shift) % 4)].data(), 0, positions});
        retriever.submit({layer, rows});
        retriever.wait(layer);
        index_t wrong = 0;
        for (index_t r = 0; r < 4; ++r)
            for (index_t t = 0; t < 512; ++t)
                wrong += f.holds(layer, r, f.slot(regions[static_cast<std::size_t>((r + shift) % 4)], t), t) ? 0 : 1;
        CHECK(wrong == 0);
    }
}

TEST_CASE("destroying the asynchronous retriever drains every queued refresh, none half-applied") {
    for (const index_t page_size : {1, 16}) {
        CAPTURE(page_size);
        // 2 rows of 256 tokens; each refresh moves positions 50..149 of both rows, starting inside a page for
        // pages of 16 (row token 10 of row 0's pages, token 20 of row 1's).
        const index_t pages_per_row = 256 / page_size;
        filled_storage f(4, 2, 256, 8, page_size, 2 * pages_per_row);
        std::vector<index_t> positions(100);
        std::iota(positions.begin(), positions.end(), index_t{50});
        std::vector<hc::page_index_t> row0 = f.pages_from(pages_per_row, pages_per_row), row1 = f.pages_from(0, pages_per_row);
        std::reverse(row1.begin(), row1.end());  // pages in any order
        const std::vector<hc::refresh_row> rows{{0, row0.data(), 10, positions}, {1, row1.data(), 20, positions}};
        {
            hc::async_retriever retriever;
            retriever.bind(f.storage, {4, 200, 4});
            for (index_t layer = 0; layer < 4; ++layer) retriever.submit({layer, rows});
        }  // no wait: the destructor must finish all four
        CHECK(f.storage.counters().retrieved == 4u * 200u * 2u * 8u * sizeof(float));
        index_t wrong = 0;
        for (index_t layer = 0; layer < 4; ++layer)
            for (index_t i = 0; i < 100; ++i) {
                wrong += f.holds(layer, 0, f.slot(row0, 10 + i), 50 + i) ? 0 : 1;
                wrong += f.holds(layer, 1, f.slot(row1, 20 + i), 50 + i) ? 0 : 1;
            }
        CHECK(wrong == 0);
        // Nothing outside the refreshed tokens was written.
        index_t written = 0;
        for (index_t layer = 0; layer < 4; ++layer)
            for (index_t slot = 0; slot < f.storage.hot_slots(layer); ++slot) written += f.storage.hot_position(layer, slot) >= 0 ? 1 : 0;
        CHECK(written == 4 * 200);
    }
}

TEST_CASE("a refresh larger than the planned staging is a shape error, not an overflow") {
    filled_storage f(1, 1, 64, 4, 16, 4);
    std::vector<index_t> positions(10);
    std::iota(positions.begin(), positions.end(), index_t{0});
    const std::vector<hc::page_index_t> pages = f.pages_from(0, 1);
    const std::vector<hc::refresh_row> rows{{0, pages.data(), 0, positions}};
    hc::async_retriever async;
    async.bind(f.storage, {1, 8, 2});
    CHECK_THROWS_AS(async.submit({0, rows}), hc::shape_error);
    hc::sync_retriever sync;
    sync.bind(f.storage, {1, 8, 2});
    CHECK_THROWS_AS(sync.submit({0, rows}), hc::shape_error);
    CHECK(f.storage.counters().retrieved == 0);  // neither moved a byte
    hc::sync_retriever roomy;
    roomy.bind(f.storage, {1, 10, 2});
    CHECK_NOTHROW(roomy.submit({0, rows}));
    CHECK(f.holds(0, 0, 9, 9));
}
