#pragma once
//! \file
//! The host storage tier: hot and cold tiers in host memory, planned once.

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "heterocache/concepts/storage_tier.hpp"

namespace heterocache {
inline namespace v1 {

//! Default `StorageTier`. Hot tier: per layer, one slot array `[slot][head_dim]` for keys and one for values,
//! each row owning the contiguous range `[hot_row_base, hot_row_base + capacity)`. Cold tier: per layer
//! `[row][position][head_dim]`, so a row's keys are contiguous for scoring. Byte counters are atomic, so a
//! retriever thread may move data while the engine thread reads the counters.
class host_storage {
public:
    host_storage() = default;
    host_storage(const host_storage&) = delete;
    host_storage& operator=(const host_storage&) = delete;

    void plan(const storage_plan& plan) {
        plan.shape.validate();
        detail::require<shape_error>(plan.sequences >= 1, "sequences", plan.sequences, "[1, inf)");
        detail::require<shape_error>(plan.max_tokens >= 1, "max_tokens", plan.max_tokens, "[1, inf)");
        const index_t rows = plan.rows_per_layer();
        detail::require<shape_error>(static_cast<index_t>(plan.hot_capacity.size()) == plan.shape.layers * rows,
                                     "hot_capacity.size()", plan.hot_capacity.size(), "layers * sequences * kv_heads");
        head_dim_ = plan.shape.head_dim;
        rows_ = rows;
        max_tokens_ = plan.max_tokens;
        const auto layers = static_cast<std::size_t>(plan.shape.layers);
        row_base_.assign(layers * static_cast<std::size_t>(rows + 1), 0);
        hot_keys_.resize(layers), hot_values_.resize(layers), hot_positions_.resize(layers);
        cold_keys_.resize(layers), cold_values_.resize(layers);
        for (index_t layer = 0; layer < plan.shape.layers; ++layer) {
            index_t* base = row_base_.data() + layer * (rows + 1);
            for (index_t row = 0; row < rows; ++row) {
                const index_t capacity = plan.capacity(layer, row);
                detail::require<shape_error>(capacity >= 0, "hot_capacity", capacity, "[0, inf)");
                base[row + 1] = base[row] + capacity;
            }
            const auto slots = static_cast<std::size_t>(base[rows]);
            hot_keys_[layer].assign(slots * static_cast<std::size_t>(head_dim_), 0.0f);
            hot_values_[layer].assign(slots * static_cast<std::size_t>(head_dim_), 0.0f);
            hot_positions_[layer].assign(slots, -1);
            const auto cold = static_cast<std::size_t>(rows * max_tokens_ * head_dim_);
            cold_keys_[layer].assign(cold, 0.0f);
            cold_values_[layer].assign(cold, 0.0f);
        }
        written_to_hot_ = written_to_cold_ = retrieved_ = 0;
    }

    //! First hot slot of `row` in `layer`.
    [[nodiscard]] index_t hot_row_base(index_t layer, index_t row) const noexcept { return row_base_[layer * (rows_ + 1) + row]; }
    //! Hot slots planned for `row` in `layer`.
    [[nodiscard]] index_t hot_row_capacity(index_t layer, index_t row) const noexcept {
        return hot_row_base(layer, row + 1) - hot_row_base(layer, row);
    }
    //! Hot slots of a layer in all (the length of `hot_keys(layer)` in `head_dim` units).
    [[nodiscard]] index_t hot_slots(index_t layer) const noexcept { return hot_row_base(layer, rows_); }
    [[nodiscard]] const float* hot_keys(index_t layer) const noexcept { return hot_keys_[layer].data(); }
    [[nodiscard]] const float* hot_values(index_t layer) const noexcept { return hot_values_[layer].data(); }
    //! Token position held by a hot slot (-1 if never written).
    [[nodiscard]] index_t hot_position(index_t layer, index_t slot) const noexcept { return hot_positions_[layer][slot]; }

    //! Writes one token's key and value from the engine into a hot slot.
    void write_hot(index_t layer, index_t slot, const float* key, const float* value, index_t position) noexcept {
        store_hot(layer, slot, key, value, position);
        written_to_hot_.fetch_add(token_bytes(), std::memory_order_relaxed);
    }
    //! Writes one token into a hot slot as retrieval from the cold tier (counted as bytes retrieved).
    void retrieve_to_hot(index_t layer, index_t slot, const float* key, const float* value, index_t position) noexcept {
        store_hot(layer, slot, key, value, position);
        retrieved_.fetch_add(token_bytes(), std::memory_order_relaxed);
    }

    //! Writes one token's key and value into the cold tier of `row` at `position`.
    void write_cold(index_t layer, index_t row, index_t position, const float* key, const float* value) noexcept {
        const std::size_t at = cold_offset(row, position);
        std::memcpy(cold_keys_[layer].data() + at, key, vector_bytes());
        std::memcpy(cold_values_[layer].data() + at, value, vector_bytes());
        written_to_cold_.fetch_add(token_bytes(), std::memory_order_relaxed);
    }
    //! Keys of `row` in the cold tier, `[position][head_dim]`, contiguous.
    [[nodiscard]] const float* cold_keys(index_t layer, index_t row) const noexcept {
        return cold_keys_[layer].data() + cold_offset(row, 0);
    }
    [[nodiscard]] const float* cold_values(index_t layer, index_t row) const noexcept {
        return cold_values_[layer].data() + cold_offset(row, 0);
    }
    //! Copies one cold token out (a gather step of retrieval).
    void read_cold(index_t layer, index_t row, index_t position, float* key, float* value) const noexcept {
        const std::size_t at = cold_offset(row, position);
        std::memcpy(key, cold_keys_[layer].data() + at, vector_bytes());
        std::memcpy(value, cold_values_[layer].data() + at, vector_bytes());
    }

    [[nodiscard]] transfer_counters counters() const noexcept {
        return {written_to_hot_.load(std::memory_order_relaxed), written_to_cold_.load(std::memory_order_relaxed),
                retrieved_.load(std::memory_order_relaxed)};
    }
    [[nodiscard]] index_t head_dim() const noexcept { return head_dim_; }

private:
    [[nodiscard]] std::size_t vector_bytes() const noexcept { return static_cast<std::size_t>(head_dim_) * sizeof(float); }
    [[nodiscard]] std::uint64_t token_bytes() const noexcept { return 2 * vector_bytes(); }
    [[nodiscard]] std::size_t cold_offset(index_t row, index_t position) const noexcept {
        return static_cast<std::size_t>((row * max_tokens_ + position) * head_dim_);
    }
    void store_hot(index_t layer, index_t slot, const float* key, const float* value, index_t position) noexcept {
        const auto at = static_cast<std::size_t>(slot * head_dim_);
        std::memcpy(hot_keys_[layer].data() + at, key, vector_bytes());
        std::memcpy(hot_values_[layer].data() + at, value, vector_bytes());
        hot_positions_[layer][slot] = position;
    }

    index_t head_dim_ = 0, rows_ = 0, max_tokens_ = 0;
    std::vector<index_t> row_base_;
    std::vector<std::vector<float>> hot_keys_, hot_values_, cold_keys_, cold_values_;
    std::vector<std::vector<index_t>> hot_positions_;
    std::atomic<std::uint64_t> written_to_hot_{0}, written_to_cold_{0}, retrieved_{0};
};
static_assert(StorageTier<host_storage>);

}  // namespace v1
}  // namespace heterocache
