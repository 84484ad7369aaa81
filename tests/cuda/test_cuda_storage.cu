// The device storage tier and the CUDA asynchronous retriever against host_storage + sync_retriever:
// the same writes and refreshes leave byte-identical hot slots, by both transfer paths, and the attention
// kernel over the device selection equals the host kernel over the host one.
#include "cuda_test.cuh"

#include <algorithm>
#include <cstdint>
#include <numeric>

#include "heterocache/attention/decode_attention.hpp"
#include "heterocache/cuda/async_retriever.cuh"
#include "heterocache/cuda/device_storage.cuh"
#include "heterocache/retriever/sync_retriever.hpp"
#include "heterocache/storage/host_storage.hpp"

namespace {

using hc::index_t;

const hc::model_shape shape{2, 2, 8, 64};  // layers, kv heads, query heads, head dim
constexpr index_t sequences = 2, prompt = 300, capacity = 96;

hc::storage_plan make_plan() {
    hc::storage_plan plan{shape, sequences, prompt, {}};
    plan.hot_capacity.assign(static_cast<std::size_t>(shape.layers * sequences * shape.kv_heads), capacity);
    return plan;
}

//! Fills the cold tier of both storages with the same random prompt.
template <class Device>
void fill_cold(std::mt19937& rng, hc::host_storage& host, Device& device) {
    for (index_t layer = 0; layer < shape.layers; ++layer)
        for (index_t row = 0; row < sequences * shape.kv_heads; ++row)
            for (index_t t = 0; t < prompt; ++t) {
                const std::vector<float> k = random_floats(rng, 64), v = random_floats(rng, 64);
                host.write_cold(layer, row, t, k.data(), v.data());
                device.write_cold(layer, row, t, k.data(), v.data());
            }
}

//! A refresh of every row of `layer`: random ascending positions into the first slots of the row.
struct refresh {
    std::vector<std::vector<index_t>> positions;
    std::vector<hc::refresh_row> rows;
    hc::refresh_request request;
};

refresh make_refresh(std::mt19937& rng, const hc::host_storage& host, index_t layer) {
    refresh r;
    std::vector<index_t> all(static_cast<std::size_t>(prompt));
    for (index_t row = 0; row < sequences * shape.kv_heads; ++row) {
        std::iota(all.begin(), all.end(), 0);
        std::shuffle(all.begin(), all.end(), rng);
        std::vector<index_t> chosen(all.begin(), all.begin() + capacity - row);
        std::sort(chosen.begin(), chosen.end());
        r.positions.push_back(std::move(chosen));
    }
    for (index_t row = 0; row < sequences * shape.kv_heads; ++row)
        r.rows.push_back({row, host.hot_row_base(layer, row), r.positions[static_cast<std::size_t>(row)]});
    r.request = {layer, r.rows};
    return r;
}

template <class T>
std::vector<T> hot(const T* device, index_t slots) {
    std::vector<T> out(static_cast<std::size_t>(slots * shape.head_dim));
    hcc::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    hcc::check(cudaMemcpy(out.data(), device, out.size() * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
    return out;
}

void poison_hot(hcc::device_storage<float>& device, index_t layer) {
    const auto bytes = static_cast<std::size_t>(device.hot_slots(layer) * shape.head_dim) * sizeof(float);
    hcc::check(cudaMemset(device.hot_keys(layer), 0xff, bytes), "cudaMemset");
    hcc::check(cudaMemset(device.hot_values(layer), 0xff, bytes), "cudaMemset");
}

void check_same_hot(const hc::host_storage& host, const hcc::device_storage<float>& device, index_t layer,
                    const refresh& r) {
    const std::vector<float> keys = hot(device.hot_keys(layer), device.hot_slots(layer));
    const std::vector<float> values = hot(device.hot_values(layer), device.hot_slots(layer));
    for (const hc::refresh_row& row : r.rows)
        for (std::size_t j = 0; j < row.positions.size(); ++j) {
            const index_t slot = row.first_slot + static_cast<index_t>(j);
            CHECK(device.hot_position(layer, slot) == row.positions[j]);
            CHECK(std::equal(keys.begin() + slot * 64, keys.begin() + (slot + 1) * 64, host.hot_keys(layer) + slot * 64));
            CHECK(std::equal(values.begin() + slot * 64, values.begin() + (slot + 1) * 64, host.hot_values(layer) + slot * 64));
        }
}

//! A host and a device storage planned alike, holding the same random cold tier.
struct storage_pair {
    std::mt19937 rng = fresh_rng();
    hc::host_storage host;
    hcc::device_storage<float> device;
    storage_pair() {
        host.plan(make_plan());
        device.plan(make_plan());
        fill_cold(rng, host, device);
    }
};

}  // namespace

TEST_CASE("device storage keeps what host storage keeps: hot and cold tiers, positions, counters") {
    storage_pair pair;
    auto& [rng, host, device] = pair;
    for (index_t slot = 0; slot < 10; ++slot) {
        const std::vector<float> k = random_floats(rng, 64), v = random_floats(rng, 64);
        host.write_hot(1, slot * 3, k.data(), v.data(), slot + 5);
        device.write_hot(1, slot * 3, k.data(), v.data(), slot + 5);
        CHECK(device.hot_position(1, slot * 3) == slot + 5);
    }
    CHECK(hot(device.hot_keys(1), device.hot_slots(1)) ==
          std::vector<float>(host.hot_keys(1), host.hot_keys(1) + host.hot_slots(1) * 64));
    std::vector<float> a(64), b(64), c(64), d(64);
    host.read_cold(0, 3, 123, a.data(), b.data());
    device.read_cold(0, 3, 123, c.data(), d.data());
    CHECK(a == c);
    CHECK(b == d);
    CHECK(device.hot_position(0, 0) == -1);
    CHECK(host.counters().written_to_hot == device.counters().written_to_hot);
    CHECK(host.counters().written_to_cold == device.counters().written_to_cold);
}

TEST_CASE_TEMPLATE("a CUDA refresh leaves the same hot slots as the synchronous host refresh", Path,
                   std::integral_constant<hcc::transfer_path, hcc::transfer_path::staged>,
                   std::integral_constant<hcc::transfer_path, hcc::transfer_path::zero_copy>) {
    storage_pair pair;
    auto& [rng, host, device] = pair;
    const hc::retriever_plan plan{shape.layers, shape.head_dim, capacity * sequences * shape.kv_heads, 4};
    hc::sync_retriever reference;
    reference.bind(host, plan);
    hcc::stream compute;
    hcc::async_retriever<float> retriever(compute.get(), Path::value);
    retriever.bind(device, plan);
    // Three refreshes for two buffers: the third reuses the first buffer once its copy is done.
    std::vector<refresh> refreshes;
    for (const index_t layer : {index_t{0}, index_t{1}, index_t{0}}) refreshes.push_back(make_refresh(rng, host, layer));
    poison_hot(device, 0);
    poison_hot(device, 1);
    for (const refresh& r : refreshes) {
        reference.submit(r.request);
        retriever.submit(r.request);
    }
    retriever.wait(0);
    retriever.wait(1);
    // Read through the compute stream only: what it sees after wait() is what attention would see.
    std::vector<float> seen(static_cast<std::size_t>(device.hot_slots(0) * 64));
    hcc::check(cudaMemcpyAsync(seen.data(), device.hot_keys(0), seen.size() * sizeof(float), cudaMemcpyDeviceToHost,
                               compute.get()),
               "cudaMemcpyAsync");
    compute.synchronize();
    for (const hc::refresh_row& row : refreshes[2].rows)
        CHECK(std::equal(seen.begin() + row.first_slot * 64,
                         seen.begin() + (row.first_slot + static_cast<index_t>(row.positions.size())) * 64,
                         host.hot_keys(0) + row.first_slot * 64));
    retriever.synchronize();
    check_same_hot(host, device, 0, refreshes[2]);
    check_same_hot(host, device, 1, refreshes[1]);
    CHECK(device.counters().retrieved == host.counters().retrieved);
}

TEST_CASE("decode attention over the device selection equals the host kernel over the host selection") {
    storage_pair pair;
    auto& [rng, host, device] = pair;
    const refresh r = make_refresh(rng, host, 1);
    hc::sync_retriever reference;
    hcc::async_retriever<float> retriever(nullptr, hcc::transfer_path::zero_copy);
    const hc::retriever_plan plan{shape.layers, shape.head_dim, capacity * sequences * shape.kv_heads, 2};
    reference.bind(host, plan);
    retriever.bind(device, plan);
    reference.submit(r.request);
    retriever.submit(r.request);
    retriever.wait(1);
    std::vector<index_t> indptr{0}, indices;
    for (const hc::refresh_row& row : r.rows) {
        for (std::size_t j = 0; j < row.positions.size(); ++j) indices.push_back(row.first_slot + static_cast<index_t>(j));
        indptr.push_back(static_cast<index_t>(indices.size()));
    }
    device.upload_selection(1, indptr, indices);
    const index_t rows = sequences * shape.kv_heads, group = shape.group_size();
    const std::vector<float> queries = random_floats(rng, static_cast<std::size_t>(rows * group * 64));
    std::vector<float> want(queries.size()), want_lse(static_cast<std::size_t>(rows * group));
    const hc::csr_selection selection{rows, shape.kv_heads, group, 64, indptr, indices, host.hot_keys(1), host.hot_values(1), {}};
    hc::decode_attention(selection, queries.data(), want.data(), want_lse.data(), 0.125f);
    const auto d_queries = to_device(queries);
    auto out = poisoned<float>(want.size());
    auto lse = poisoned<float>(want_lse.size());
    const auto attention = hcc::plan_decode_attention(rows, group, 64, capacity, hcc::attention_launch{}, hcc::current_multiprocessors());
    auto workspace = poisoned<float>(attention.workspace_floats());
    hcc::decode_attention(attention, device.selection(1), d_queries.data(), out.data(), lse.data(), 0.125f, workspace.data());
    CHECK(max_relative_error(to_host(out), want) <= 1e-4);
    CHECK(max_relative_error(to_host(lse), want_lse, 1.0) <= 1e-4);
}
