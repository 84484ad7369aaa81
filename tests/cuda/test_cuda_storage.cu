// The device storage tier and the CUDA asynchronous retriever against host_storage + sync_retriever: the same
// prompt and the same refreshes (rows on scattered pages, page sizes 1 and 16) leave byte-identical hot slots,
// by both transfer paths, and the attention kernel over the device selection equals the host kernel over the
// host one.
#include "cuda_test.cuh"

#include <algorithm>
#include <cstdint>
#include <numeric>

#include "heterocache/attention/decode_attention.hpp"
#include "heterocache/cuda/async_retriever.cuh"
#include "heterocache/cuda/device_storage.cuh"
#include "heterocache/retriever/sync_retriever.hpp"
#include "heterocache/storage/host_storage.hpp"
#include "heterocache/tensor/kv_tensor.hpp"

namespace {

using hc::index_t;
using hc::page_index_t;

constexpr hc::model_shape shape{2, 2, 8, 64};  // layers, kv heads, query heads, head dim
constexpr index_t sequences = 2, rows = sequences * shape.kv_heads, prompt = 300, capacity = 96;

//! The pages each row of each layer owns: drawn without repeats from a shuffled pool, with two pages to spare.
struct page_table {
    index_t page_size = 1;
    index_t pool_pages = 0;
    std::vector<std::vector<std::vector<page_index_t>>> pages;  // [layer][row] -> page ids

    page_table(std::mt19937& rng, index_t tokens_per_page) : page_size(tokens_per_page) {
        const index_t per_row = hcc::ceil_div(capacity, page_size);
        pool_pages = rows * per_row + 2;
        for (index_t layer = 0; layer < shape.layers; ++layer) {
            std::vector<page_index_t> pool(static_cast<std::size_t>(pool_pages));
            std::iota(pool.begin(), pool.end(), 0);
            std::shuffle(pool.begin(), pool.end(), rng);
            pages.emplace_back();
            for (index_t row = 0; row < rows; ++row)
                pages.back().emplace_back(pool.begin() + row * per_row, pool.begin() + (row + 1) * per_row);
        }
    }
    [[nodiscard]] const std::vector<page_index_t>& of(index_t layer, index_t row) const {
        return pages[static_cast<std::size_t>(layer)][static_cast<std::size_t>(row)];
    }
    [[nodiscard]] index_t slot(index_t layer, index_t row, index_t token) const {
        return index_t{of(layer, row)[static_cast<std::size_t>(token / page_size)]} * page_size + token % page_size;
    }
};

//! A host and a device storage planned alike over the same pages, holding the same random prompt.
struct storage_pair {
    std::mt19937 rng = fresh_rng();
    page_table table;
    std::vector<float> keys, values;  // [layer][seq][head][token][d]
    hc::host_storage host;
    hcc::device_storage<float> device;

    explicit storage_pair(index_t page_size)
        : table(rng, page_size),
          keys(random_floats(rng, static_cast<std::size_t>(shape.layers * rows * prompt * shape.head_dim))),
          values(random_floats(rng, keys.size())) {
        const std::vector<index_t> hot_pages(static_cast<std::size_t>(shape.layers), table.pool_pages);
        host.bind({shape, sequences, prompt, page_size, hot_pages, false}, {}, nullptr);
        device.plan({shape, sequences, prompt, page_size, hot_pages});
        const auto kv = hc::make_head_major_tensor(keys.data(), values.data(), sequences, shape.kv_heads, prompt,
                                                   shape.head_dim);
        for (index_t layer = 0; layer < shape.layers; ++layer)
            for (index_t seq = 0; seq < sequences; ++seq) {
                host.store_prompt(layer, seq, kv, prompt, {}, hc::host_queue{});
                for (index_t head = 0; head < shape.kv_heads; ++head)
                    device.store_cold(layer, seq * shape.kv_heads + head, 0, prompt, kv.key(layer, seq, head, 0),
                                      kv.value(layer, seq, head, 0));
            }
    }
};

//! A refresh of every row of `layer`: random ascending positions into the row's tokens from `skew * row` on
//! (so that with `skew > 0` runs start inside a page).
struct refresh {
    std::vector<std::vector<index_t>> positions;
    std::vector<hc::refresh_row> rows;
    hc::refresh_request request;
};

refresh make_refresh(std::mt19937& rng, const page_table& table, index_t layer, index_t skew) {
    refresh r;
    std::vector<index_t> all(static_cast<std::size_t>(prompt));
    for (index_t row = 0; row < rows; ++row) {
        std::iota(all.begin(), all.end(), 0);
        std::shuffle(all.begin(), all.end(), rng);
        std::vector<index_t> chosen(all.begin(), all.begin() + (capacity - skew * row - row));
        std::sort(chosen.begin(), chosen.end());
        r.positions.push_back(std::move(chosen));
    }
    for (index_t row = 0; row < rows; ++row)
        r.rows.push_back({row, table.of(layer, row).data(), skew * row, r.positions[static_cast<std::size_t>(row)]});
    r.request = {layer, r.rows};
    return r;
}

//! Keys (or values) of a device hot pool, after every stream is done.
std::vector<float> hot(const float* device, index_t slots) {
    std::vector<float> out(static_cast<std::size_t>(slots * shape.head_dim));
    hcc::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    hcc::check(cudaMemcpy(out.data(), device, out.size() * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
    return out;
}

void poison_hot(hcc::device_storage<float>& device, index_t layer) {
    const auto bytes = static_cast<std::size_t>(device.hot_slots(layer) * shape.head_dim) * sizeof(float);
    hcc::check(cudaMemset(device.hot_keys(layer), 0xff, bytes), "cudaMemset");
    hcc::check(cudaMemset(device.hot_values(layer), 0xff, bytes), "cudaMemset");
}

//! Whether the `head_dim` floats at `slot` of a device pool copy equal those the host tier holds there.
bool same_slot(const std::vector<float>& device, const float* host, index_t slot) {
    const auto at = device.begin() + slot * shape.head_dim;
    return std::equal(at, at + shape.head_dim, host);
}

void check_same_hot(const storage_pair& pair, index_t layer, const refresh& r) {
    const std::vector<float> keys = hot(pair.device.hot_keys(layer), pair.device.hot_slots(layer));
    const std::vector<float> values = hot(pair.device.hot_values(layer), pair.device.hot_slots(layer));
    for (const hc::refresh_row& row : r.rows)
        for (std::size_t j = 0; j < row.positions.size(); ++j) {
            const index_t slot = pair.table.slot(layer, row.row, row.first_token + static_cast<index_t>(j));
            CHECK(pair.device.hot_position(layer, slot) == row.positions[j]);
            CHECK(pair.host.hot_position(layer, slot) == row.positions[j]);
            CHECK(same_slot(keys, pair.host.hot_key(layer, slot), slot));
            CHECK(same_slot(values, pair.host.hot_value(layer, slot), slot));
        }
}

}  // namespace

TEST_CASE("device storage keeps what host storage keeps: the cold tier, empty hot slots, counters") {
    const storage_pair pair(16);
    for (index_t layer = 0; layer < shape.layers; ++layer)
        for (index_t row = 0; row < rows; ++row) {
            const hc::token_rows<float> host_keys = pair.host.cold_keys(layer, row);
            const float* device_keys = pair.device.cold_keys(layer, row);
            for (const index_t t : {index_t{0}, index_t{123}, prompt - 1})
                CHECK(std::equal(device_keys + t * shape.head_dim, device_keys + (t + 1) * shape.head_dim,
                                 host_keys.at(t)));
        }
    CHECK(pair.device.hot_slots(0) == pair.host.hot_slots(0));
    CHECK(pair.device.hot_position(0, 0) == -1);
    CHECK(pair.device.counters().written_to_cold == pair.host.counters().written_to_cold);
    CHECK(pair.device.counters().retrieved == 0);
}

TEST_CASE_TEMPLATE("a CUDA refresh leaves the same hot slots as the synchronous host refresh", Path,
                   std::integral_constant<hcc::transfer_path, hcc::transfer_path::staged>,
                   std::integral_constant<hcc::transfer_path, hcc::transfer_path::zero_copy>) {
    for (const index_t page_size : {index_t{1}, index_t{16}}) {
        CAPTURE(page_size);
        storage_pair pair(page_size);
        const hc::retriever_plan plan{shape.layers, capacity * rows, 4};
        hc::sync_retriever reference;
        reference.bind(pair.host, plan);
        hcc::stream compute;
        hcc::async_retriever<float> retriever(compute.get(), Path::value);
        retriever.bind(pair.device, plan);
        // Three refreshes for two buffers: the third reuses the first buffer once its copy is done.
        std::vector<refresh> refreshes;
        for (const index_t layer : {index_t{0}, index_t{1}, index_t{0}})
            refreshes.push_back(make_refresh(pair.rng, pair.table, layer, 3));
        poison_hot(pair.device, 0);
        poison_hot(pair.device, 1);
        for (const refresh& r : refreshes) {
            reference.submit(r.request);
            retriever.submit(r.request);
        }
        retriever.wait(0);
        retriever.wait(1);
        // Read through the compute stream only: what it sees after wait() is what attention would see.
        std::vector<float> seen(static_cast<std::size_t>(pair.device.hot_slots(0) * shape.head_dim));
        hcc::check(cudaMemcpyAsync(seen.data(), pair.device.hot_keys(0), seen.size() * sizeof(float),
                                   cudaMemcpyDeviceToHost, compute.get()),
                   "cudaMemcpyAsync");
        compute.synchronize();
        for (const hc::refresh_row& row : refreshes[2].rows)
            for (std::size_t j = 0; j < row.positions.size(); ++j) {
                const index_t slot = pair.table.slot(0, row.row, row.first_token + static_cast<index_t>(j));
                CHECK(same_slot(seen, pair.host.hot_key(0, slot), slot));
            }
        retriever.synchronize();
        check_same_hot(pair, 0, refreshes[2]);
        check_same_hot(pair, 1, refreshes[1]);
        CHECK(pair.device.counters().retrieved == pair.host.counters().retrieved);
    }
}

TEST_CASE("decode attention over the device selection equals the host kernel over the host selection") {
    storage_pair pair(16);
    const index_t layer = 1;
    const refresh r = make_refresh(pair.rng, pair.table, layer, 0);
    hc::sync_retriever reference;
    hcc::async_retriever<float> retriever(nullptr, hcc::transfer_path::zero_copy);
    const hc::retriever_plan plan{shape.layers, capacity * rows, 2};
    reference.bind(pair.host, plan);
    retriever.bind(pair.device, plan);
    reference.submit(r.request);
    retriever.submit(r.request);
    retriever.wait(layer);
    // Every row attends the tokens the refresh wrote, on the pages they fill.
    std::vector<page_index_t> indptr{0}, indices, last_page_len;
    for (const hc::refresh_row& row : r.rows) {
        const auto tokens = static_cast<index_t>(row.positions.size());
        const index_t pages = hcc::ceil_div(tokens, pair.table.page_size);
        indices.insert(indices.end(), row.pages, row.pages + pages);
        indptr.push_back(static_cast<page_index_t>(indices.size()));
        last_page_len.push_back(static_cast<page_index_t>(tokens - (pages - 1) * pair.table.page_size));
    }
    const hc::selection_table table{rows, shape.kv_heads, shape.group_size(), shape.head_dim, pair.table.page_size,
                                    indptr.data(), indices.data(), last_page_len.data(), true, {}};
    pair.device.upload_selection(layer, indptr, indices, last_page_len);
    const index_t group = shape.group_size();
    const std::vector<float> queries = random_floats(pair.rng, static_cast<std::size_t>(rows * group * shape.head_dim));
    std::vector<float> want(queries.size()), want_lse(static_cast<std::size_t>(rows * group));
    hc::decode_attention(pair.host.selection(layer, table, hc::host_queue{}), queries.data(), want.data(),
                         want_lse.data(), 0.125f);
    const auto d_queries = to_device(queries);
    auto out = poisoned<float>(want.size());
    auto lse = poisoned<float>(want_lse.size());
    const auto attention = hcc::plan_decode_attention(rows, group, shape.head_dim, capacity, hcc::attention_launch{},
                                                      hcc::current_multiprocessors());
    auto workspace = poisoned<float>(attention.workspace_floats());
    hcc::decode_attention(attention, pair.device.selection(layer), d_queries.data(), out.data(), lse.data(), 0.125f,
                          workspace.data());
    CHECK(max_relative_error(to_host(out), want) <= 1e-4);
    CHECK(max_relative_error(to_host(lse), want_lse, 1.0) <= 1e-4);
}
