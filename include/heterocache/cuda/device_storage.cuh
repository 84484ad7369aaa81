#pragma once
//! \file
//! The CUDA storage tier: the hot tier in device memory, the cold tier in pinned host memory, and the two
//! ways selected tokens move cold -> hot (gather on the host into pinned staging then `cudaMemcpyAsync`, or
//! a zero-copy gather kernel that reads the pinned cold tier in place).

#include <atomic>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "heterocache/concepts/retriever.hpp"
#include "heterocache/concepts/storage_tier.hpp"
#include "heterocache/cuda/config.cuh"
#include "heterocache/cuda/kernels/copy_tokens.cuh"
#include "heterocache/cuda/kernels/decode_attention.cuh"
#include "heterocache/storage/storage_plan.hpp"

namespace heterocache {
inline namespace v1 {
namespace cuda {

//! Pinned host memory a refresh is prepared in: the gathered keys and values (staged path) and the
//! per-token source, slot and position arrays (zero-copy path), for up to `capacity` tokens. Kernels read
//! the arrays in place (mapped memory), so a buffer must not be rewritten until the copy that reads it is
//! done (the asynchronous retriever double-buffers them).
template <KvElement T>
struct refresh_staging {
    index_t capacity = 0;
    pinned_array<T> keys, values;                  //!< `[token][head_dim]`, request order
    pinned_array<index_t> source, slot, position;  //!< per token

    refresh_staging() = default;
    refresh_staging(index_t tokens, index_t head_dim)
        : capacity(tokens), keys(static_cast<std::size_t>(tokens * head_dim)),
          values(static_cast<std::size_t>(tokens * head_dim)), source(static_cast<std::size_t>(tokens)),
          slot(static_cast<std::size_t>(tokens)), position(static_cast<std::size_t>(tokens)) {}
};

//! `StorageTier` on a CUDA device, with the layout of `host_storage` (storage/host_storage.hpp): hot tier per
//! layer `[slot][head_dim]` device arrays, row `r` owning `[hot_row_base, hot_row_base + capacity)`; the token
//! position of each slot in a device array; cold tier per layer `[row][position][head_dim]` in pinned host
//! memory, mapped so kernels can read it. Elements are `T` (fp32, fp16 or bf16); the float interface
//! converts (rounded to nearest even, as the host `from_float`). Each layer also keeps a CSR selection on the
//! device (`indptr` of `rows + 1`, `indices` of up to the layer's hot slots) for the attention kernel.
//!
//! The float interface inherited from `StorageTier` is host-driven and synchronous (one token per call):
//! right for prefill, tests and the host cache; the decode path uses the device calls (`copy_tokens` for
//! appends, `copy_staged`/`gather_zero_copy` for refreshes), which are asynchronous on a stream.
//! `hot_keys`/`hot_values` return device pointers: see `StorageTier` for why that is a semantic mismatch.
template <KvElement T = float>
class device_storage {
public:
    using element_type = T;

    device_storage() = default;
    device_storage(const device_storage&) = delete;
    device_storage& operator=(const device_storage&) = delete;

    //! Allocates every buffer (device and pinned). Throws `shape_error` on a bad plan, `cuda_error` when an
    //! allocation fails.
    void plan(const storage_plan& plan) {
        plan.shape.validate();
        ::heterocache::detail::require<shape_error>(plan.sequences >= 1, "sequences", plan.sequences, "[1, inf)");
        ::heterocache::detail::require<shape_error>(plan.max_tokens >= 1, "max_tokens", plan.max_tokens, "[1, inf)");
        const index_t rows = plan.rows_per_layer();
        ::heterocache::detail::require<shape_error>(static_cast<index_t>(plan.hot_capacity.size()) == plan.shape.layers * rows,
                                                    "hot_capacity.size()", plan.hot_capacity.size(),
                                                    "layers * sequences * kv_heads");
        head_dim_ = plan.shape.head_dim;
        kv_heads_ = plan.shape.kv_heads;
        group_size_ = plan.shape.group_size();
        rows_ = rows;
        max_tokens_ = plan.max_tokens;
        const auto layers = static_cast<std::size_t>(plan.shape.layers);
        row_base_.assign(layers * static_cast<std::size_t>(rows + 1), 0);
        layers_.clear();
        layers_.resize(layers);
        for (index_t layer = 0; layer < plan.shape.layers; ++layer) {
            index_t* base = row_base_.data() + layer * (rows + 1);
            for (index_t row = 0; row < rows; ++row) {
                const index_t capacity = plan.capacity(layer, row);
                ::heterocache::detail::require<shape_error>(capacity >= 0, "hot_capacity", capacity, "[0, inf)");
                base[row + 1] = base[row] + capacity;
            }
            const auto slots = static_cast<std::size_t>(base[rows]);
            layer_arrays& l = layers_[static_cast<std::size_t>(layer)];
            l.hot_keys = device_array<T>(slots * static_cast<std::size_t>(head_dim_));
            l.hot_values = device_array<T>(slots * static_cast<std::size_t>(head_dim_));
            l.hot_positions = device_array<index_t>(slots);
            l.indptr = device_array<index_t>(static_cast<std::size_t>(rows + 1));
            l.indices = device_array<index_t>(slots);
            const auto cold = static_cast<std::size_t>(rows * max_tokens_ * head_dim_);
            l.cold_keys = pinned_array<T>(cold);
            l.cold_values = pinned_array<T>(cold);
            std::memset(l.cold_keys.data(), 0, l.cold_keys.bytes());
            std::memset(l.cold_values.data(), 0, l.cold_values.bytes());
            check(cudaMemset(l.hot_keys.data(), 0, l.hot_keys.bytes()), "cudaMemset(hot keys)");
            check(cudaMemset(l.hot_values.data(), 0, l.hot_values.bytes()), "cudaMemset(hot values)");
            check(cudaMemset(l.hot_positions.data(), 0xff, l.hot_positions.bytes()), "cudaMemset(hot positions)");  // -1
            check(cudaMemset(l.indptr.data(), 0, l.indptr.bytes()), "cudaMemset(indptr)");  // empty selection
        }
        bounce_ = pinned_array<T>(static_cast<std::size_t>(2 * head_dim_));
        written_to_hot_ = written_to_cold_ = retrieved_ = 0;
    }

    //! First hot slot of `row` in `layer`.
    [[nodiscard]] index_t hot_row_base(index_t layer, index_t row) const noexcept { return row_base_[layer * (rows_ + 1) + row]; }
    [[nodiscard]] index_t hot_row_capacity(index_t layer, index_t row) const noexcept {
        return hot_row_base(layer, row + 1) - hot_row_base(layer, row);
    }
    [[nodiscard]] index_t hot_slots(index_t layer) const noexcept { return hot_row_base(layer, rows_); }
    //! Device pointer to the hot key slots of `layer`, `[slot][head_dim]`.
    [[nodiscard]] const T* hot_keys(index_t layer) const noexcept { return arrays(layer).hot_keys.data(); }
    [[nodiscard]] const T* hot_values(index_t layer) const noexcept { return arrays(layer).hot_values.data(); }
    [[nodiscard]] T* hot_keys(index_t layer) noexcept { return arrays(layer).hot_keys.data(); }
    [[nodiscard]] T* hot_values(index_t layer) noexcept { return arrays(layer).hot_values.data(); }
    //! Device array of the token position each hot slot of `layer` holds (-1 if never written).
    [[nodiscard]] index_t* hot_positions(index_t layer) noexcept { return arrays(layer).hot_positions.data(); }
    //! Token position held by a hot slot, read back synchronously (a debugging and test accessor).
    [[nodiscard]] index_t hot_position(index_t layer, index_t slot) const {
        index_t position = -1;
        check(cudaMemcpy(&position, arrays(layer).hot_positions.data() + slot, sizeof position, cudaMemcpyDeviceToHost),
              "cudaMemcpy(hot position)");
        return position;
    }

    //! Writes one token from host floats into a hot slot. Synchronous.
    void write_hot(index_t layer, index_t slot, const float* key, const float* value, index_t position) {
        store_hot(layer, slot, key, value, position);
        written_to_hot_.fetch_add(token_bytes(), std::memory_order_relaxed);
    }
    //! As `write_hot`, counted as bytes retrieved.
    void retrieve_to_hot(index_t layer, index_t slot, const float* key, const float* value, index_t position) {
        store_hot(layer, slot, key, value, position);
        retrieved_.fetch_add(token_bytes(), std::memory_order_relaxed);
    }

    //! Writes one token into the cold tier of `row` at `position` (host stores into pinned memory).
    void write_cold(index_t layer, index_t row, index_t position, const float* key, const float* value) noexcept {
        const std::size_t at = cold_offset(row, position);
        layer_arrays& l = arrays(layer);
        for (index_t c = 0; c < head_dim_; ++c) {
            l.cold_keys[at + static_cast<std::size_t>(c)] = detail::from_float<T>(key[c]);
            l.cold_values[at + static_cast<std::size_t>(c)] = detail::from_float<T>(value[c]);
        }
        written_to_cold_.fetch_add(token_bytes(), std::memory_order_relaxed);
    }
    //! Keys of `row` in the cold tier, `[position][head_dim]`: pinned host memory, also readable by kernels.
    [[nodiscard]] const T* cold_keys(index_t layer, index_t row) const noexcept {
        return arrays(layer).cold_keys.data() + cold_offset(row, 0);
    }
    [[nodiscard]] const T* cold_values(index_t layer, index_t row) const noexcept {
        return arrays(layer).cold_values.data() + cold_offset(row, 0);
    }
    //! Copies one cold token out as floats.
    void read_cold(index_t layer, index_t row, index_t position, float* key, float* value) const noexcept {
        const std::size_t at = cold_offset(row, position);
        const layer_arrays& l = arrays(layer);
        for (index_t c = 0; c < head_dim_; ++c) {
            key[c] = detail::to_float(l.cold_keys[at + static_cast<std::size_t>(c)]);
            value[c] = detail::to_float(l.cold_values[at + static_cast<std::size_t>(c)]);
        }
    }

    [[nodiscard]] transfer_counters counters() const noexcept {
        return {written_to_hot_.load(std::memory_order_relaxed), written_to_cold_.load(std::memory_order_relaxed),
                retrieved_.load(std::memory_order_relaxed)};
    }
    [[nodiscard]] index_t head_dim() const noexcept { return head_dim_; }
    [[nodiscard]] index_t rows_per_layer() const noexcept { return rows_; }
    [[nodiscard]] index_t max_tokens() const noexcept { return max_tokens_; }

    //! The device CSR selection of `layer` (what the attention kernel consumes).
    [[nodiscard]] device_selection<T> selection(index_t layer) const noexcept {
        const layer_arrays& l = arrays(layer);
        return {rows_, kv_heads_, group_size_, head_dim_, l.indptr.data(), l.indices.data(), l.hot_keys.data(),
                l.hot_values.data()};
    }
    //! Device arrays of the selection, for kernels that build it on the device (`indptr`: `rows + 1`,
    //! `indices`: `hot_slots(layer)`).
    [[nodiscard]] index_t* selection_indptr(index_t layer) noexcept { return arrays(layer).indptr.data(); }
    [[nodiscard]] index_t* selection_indices(index_t layer) noexcept { return arrays(layer).indices.data(); }
    //! Uploads a host-built selection of `layer` on `stream` (asynchronous when the spans are pinned).
    //! Throws `shape_error` when it does not fit the layer.
    void upload_selection(index_t layer, std::span<const index_t> indptr, std::span<const index_t> indices,
                          cudaStream_t stream = nullptr) {
        ::heterocache::detail::require<shape_error>(static_cast<index_t>(indptr.size()) == rows_ + 1, "indptr.size()",
                                                    indptr.size(), "rows + 1");
        ::heterocache::detail::require<shape_error>(static_cast<index_t>(indices.size()) <= hot_slots(layer),
                                                    "indices.size()", indices.size(), "[0, hot slots of the layer]");
        layer_arrays& l = arrays(layer);
        check(cudaMemcpyAsync(l.indptr.data(), indptr.data(), indptr.size_bytes(), cudaMemcpyHostToDevice, stream),
              "cudaMemcpyAsync(indptr)");
        if (!indices.empty())
            check(cudaMemcpyAsync(l.indices.data(), indices.data(), indices.size_bytes(), cudaMemcpyHostToDevice, stream),
                  "cudaMemcpyAsync(indices)");
    }

    //! Staged path, host half: gathers the request's cold tokens into `staging` (pinned), in request order.
    //! Throws `shape_error` when the request exceeds the staging capacity.
    void stage(const refresh_request& request, refresh_staging<T>& staging) const {
        check_capacity(request, staging);
        const layer_arrays& l = arrays(request.layer);
        const auto vector = static_cast<std::size_t>(head_dim_) * sizeof(T);
        index_t token = 0;
        for (const refresh_row& r : request.rows)
            for (const index_t position : r.positions) {
                const std::size_t at = cold_offset(r.row, position);
                const auto to = static_cast<std::size_t>(token * head_dim_);
                std::memcpy(staging.keys.data() + to, l.cold_keys.data() + at, vector);
                std::memcpy(staging.values.data() + to, l.cold_values.data() + at, vector);
                staging.position[static_cast<std::size_t>(token++)] = position;
            }
    }
    //! Staged path, device half: one `cudaMemcpyAsync` per row for keys, values and positions, from the
    //! staging buffer straight into the row's consecutive hot slots, on `stream`.
    void copy_staged(const refresh_request& request, const refresh_staging<T>& staging, cudaStream_t stream) {
        layer_arrays& l = arrays(request.layer);
        index_t token = 0;
        for (const refresh_row& r : request.rows) {
            const auto n = static_cast<index_t>(r.positions.size());
            if (n == 0) continue;
            const auto bytes = static_cast<std::size_t>(n * head_dim_) * sizeof(T);
            const auto from = static_cast<std::size_t>(token * head_dim_);
            const auto to = static_cast<std::size_t>(r.first_slot * head_dim_);
            check(cudaMemcpyAsync(l.hot_keys.data() + to, staging.keys.data() + from, bytes, cudaMemcpyHostToDevice, stream),
                  "cudaMemcpyAsync(staged keys)");
            check(cudaMemcpyAsync(l.hot_values.data() + to, staging.values.data() + from, bytes, cudaMemcpyHostToDevice,
                                  stream),
                  "cudaMemcpyAsync(staged values)");
            check(cudaMemcpyAsync(l.hot_positions.data() + r.first_slot, staging.position.data() + token,
                                  static_cast<std::size_t>(n) * sizeof(index_t), cudaMemcpyHostToDevice, stream),
                  "cudaMemcpyAsync(staged positions)");
            token += n;
        }
        retrieved_.fetch_add(static_cast<std::uint64_t>(token) * token_bytes(), std::memory_order_relaxed);
    }
    //! Zero-copy path: writes the request's per-token source, slot and position into `staging` and launches
    //! the gather kernel on `stream`, which reads the pinned cold tier in place (no host copy of K/V).
    void gather_zero_copy(const refresh_request& request, refresh_staging<T>& staging, cudaStream_t stream) {
        check_capacity(request, staging);
        index_t token = 0;
        for (const refresh_row& r : request.rows) {
            index_t slot = r.first_slot;
            for (const index_t position : r.positions) {
                const auto i = static_cast<std::size_t>(token++);
                staging.source[i] = r.row * max_tokens_ + position;
                staging.slot[i] = slot++;
                staging.position[i] = position;
            }
        }
        layer_arrays& l = arrays(request.layer);
        const token_copy copy{token, head_dim_, device_view(staging.source.data()), device_view(staging.slot.data()),
                              device_view(staging.position.data())};
        copy_tokens(copy, device_view(l.cold_keys.data()), device_view(l.cold_values.data()), l.hot_keys.data(),
                    l.hot_values.data(), l.hot_positions.data(), stream);
        retrieved_.fetch_add(static_cast<std::uint64_t>(token) * token_bytes(), std::memory_order_relaxed);
    }

private:
    struct layer_arrays {
        device_array<T> hot_keys, hot_values;
        device_array<index_t> hot_positions, indptr, indices;
        pinned_array<T> cold_keys, cold_values;
    };

    [[nodiscard]] layer_arrays& arrays(index_t layer) noexcept { return layers_[static_cast<std::size_t>(layer)]; }
    [[nodiscard]] const layer_arrays& arrays(index_t layer) const noexcept {
        return layers_[static_cast<std::size_t>(layer)];
    }
    [[nodiscard]] std::uint64_t token_bytes() const noexcept {
        return 2 * static_cast<std::uint64_t>(head_dim_) * sizeof(T);
    }
    [[nodiscard]] std::size_t cold_offset(index_t row, index_t position) const noexcept {
        return static_cast<std::size_t>((row * max_tokens_ + position) * head_dim_);
    }
    void check_capacity(const refresh_request& request, const refresh_staging<T>& staging) const {
        ::heterocache::detail::require<shape_error>(request.tokens() <= staging.capacity, "request.tokens()",
                                                    request.tokens(), "[0, staging capacity]");
    }
    void store_hot(index_t layer, index_t slot, const float* key, const float* value, index_t position) {
        for (index_t c = 0; c < head_dim_; ++c) {
            bounce_[static_cast<std::size_t>(c)] = detail::from_float<T>(key[c]);
            bounce_[static_cast<std::size_t>(head_dim_ + c)] = detail::from_float<T>(value[c]);
        }
        layer_arrays& l = arrays(layer);
        const auto bytes = static_cast<std::size_t>(head_dim_) * sizeof(T);
        const auto at = static_cast<std::size_t>(slot * head_dim_);
        check(cudaMemcpy(l.hot_keys.data() + at, bounce_.data(), bytes, cudaMemcpyHostToDevice), "cudaMemcpy(hot key)");
        check(cudaMemcpy(l.hot_values.data() + at, bounce_.data() + head_dim_, bytes, cudaMemcpyHostToDevice),
              "cudaMemcpy(hot value)");
        check(cudaMemcpy(l.hot_positions.data() + slot, &position, sizeof position, cudaMemcpyHostToDevice),
              "cudaMemcpy(hot position)");
    }

    index_t head_dim_ = 0, kv_heads_ = 0, group_size_ = 0, rows_ = 0, max_tokens_ = 0;
    std::vector<index_t> row_base_;
    std::vector<layer_arrays> layers_;
    pinned_array<T> bounce_;
    std::atomic<std::uint64_t> written_to_hot_{0}, written_to_cold_{0}, retrieved_{0};
};

// fp32 models the concept's syntax; fp16/bf16 cannot: their cold tier holds `T` too, where the concept's cold
// tier is fp32 (`cold_keys` returns `const float*`, scoring reads it in place). The memory space of the hot tier
// is not part of the concept either.
static_assert(StorageTier<device_storage<float>>);

}  // namespace cuda
}  // namespace v1
}  // namespace heterocache
