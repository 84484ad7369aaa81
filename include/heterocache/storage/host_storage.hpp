#pragma once
//! \file
//! The host storage tier: hot and cold tiers in host memory, planned once; the hot tier in fp32, fp16 or bf16.

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "heterocache/concepts/storage_tier.hpp"
#include "heterocache/storage/kv_element.hpp"

namespace heterocache {
inline namespace v1 {

//! The host `StorageTier`. Hot tier: per layer, one slot array `[slot][head_dim]` of `HotElement` for keys and
//! one for values, each row owning the contiguous range `[hot_row_base, hot_row_base + capacity)`; tokens
//! written to it are converted from float (rounded to nearest even). Cold tier: fp32 whatever `HotElement`
//! (it is the source every refresh and every score reads, so no KV data is ever lost), per layer
//! `[row][position][head_dim]`, so a row's keys are contiguous for scoring. Byte counters count the bytes
//! stored (2 per element of a 16-bit hot tier) and are atomic, so a retriever thread may move data while the
//! engine thread reads the counters.
template <StorageElement HotElement>
class basic_host_storage {
public:
    using element_type = HotElement;

    basic_host_storage() = default;
    basic_host_storage(const basic_host_storage&) = delete;
    basic_host_storage& operator=(const basic_host_storage&) = delete;

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
            hot_keys_[layer].assign(slots * static_cast<std::size_t>(head_dim_), HotElement{});
            hot_values_[layer].assign(slots * static_cast<std::size_t>(head_dim_), HotElement{});
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
    [[nodiscard]] const HotElement* hot_keys(index_t layer) const noexcept { return hot_keys_[layer].data(); }
    [[nodiscard]] const HotElement* hot_values(index_t layer) const noexcept { return hot_values_[layer].data(); }
    //! Token position held by a hot slot (-1 if never written).
    [[nodiscard]] index_t hot_position(index_t layer, index_t slot) const noexcept { return hot_positions_[layer][slot]; }

    //! Writes one token's key and value from the engine into a hot slot.
    void write_hot(index_t layer, index_t slot, const float* key, const float* value, index_t position) noexcept {
        store_hot(layer, slot, key, value, position);
        written_to_hot_.fetch_add(token_bytes<HotElement>(), std::memory_order_relaxed);
    }
    //! Writes one token into a hot slot as retrieval from the cold tier (counted as bytes retrieved).
    void retrieve_to_hot(index_t layer, index_t slot, const float* key, const float* value, index_t position) noexcept {
        store_hot(layer, slot, key, value, position);
        retrieved_.fetch_add(token_bytes<HotElement>(), std::memory_order_relaxed);
    }

    //! Writes one token's key and value into the cold tier of `row` at `position`.
    void write_cold(index_t layer, index_t row, index_t position, const float* key, const float* value) noexcept {
        const std::size_t at = cold_offset(row, position);
        std::memcpy(cold_keys_[layer].data() + at, key, cold_vector_bytes());
        std::memcpy(cold_values_[layer].data() + at, value, cold_vector_bytes());
        written_to_cold_.fetch_add(token_bytes<float>(), std::memory_order_relaxed);
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
        std::memcpy(key, cold_keys_[layer].data() + at, cold_vector_bytes());
        std::memcpy(value, cold_values_[layer].data() + at, cold_vector_bytes());
    }

    [[nodiscard]] transfer_counters counters() const noexcept {
        return {written_to_hot_.load(std::memory_order_relaxed), written_to_cold_.load(std::memory_order_relaxed),
                retrieved_.load(std::memory_order_relaxed)};
    }
    [[nodiscard]] index_t head_dim() const noexcept { return head_dim_; }

private:
    [[nodiscard]] std::size_t cold_vector_bytes() const noexcept { return static_cast<std::size_t>(head_dim_) * sizeof(float); }
    //! Bytes of one token's key and value stored as `E`.
    template <class E>
    [[nodiscard]] std::uint64_t token_bytes() const noexcept {
        return 2 * static_cast<std::uint64_t>(head_dim_) * sizeof(E);
    }
    [[nodiscard]] std::size_t cold_offset(index_t row, index_t position) const noexcept {
        return static_cast<std::size_t>((row * max_tokens_ + position) * head_dim_);
    }
    void store_hot(index_t layer, index_t slot, const float* key, const float* value, index_t position) noexcept {
        const auto at = static_cast<std::size_t>(slot * head_dim_);
        from_floats(key, hot_keys_[layer].data() + at, head_dim_);
        from_floats(value, hot_values_[layer].data() + at, head_dim_);
        hot_positions_[layer][slot] = position;
    }

    index_t head_dim_ = 0, rows_ = 0, max_tokens_ = 0;
    std::vector<index_t> row_base_;
    std::vector<std::vector<HotElement>> hot_keys_, hot_values_;
    std::vector<std::vector<float>> cold_keys_, cold_values_;
    std::vector<std::vector<index_t>> hot_positions_;
    std::atomic<std::uint64_t> written_to_hot_{0}, written_to_cold_{0}, retrieved_{0};
};

//! The default storage: fp32 hot and cold tiers.
using host_storage = basic_host_storage<float>;
//! An fp16 hot tier over the fp32 cold tier: half the hot bytes, 10 mantissa bits (range up to 65504).
using host_storage_fp16 = basic_host_storage<fp16_t>;
//! A bf16 hot tier over the fp32 cold tier: half the hot bytes, fp32's range with 7 mantissa bits.
using host_storage_bf16 = basic_host_storage<bf16_t>;
static_assert(StorageTier<host_storage> && StorageTier<host_storage_fp16> && StorageTier<host_storage_bf16>);

}  // namespace v1
}  // namespace heterocache
