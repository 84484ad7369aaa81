#pragma once
//! \file
//! The host storage tier: hot and cold tiers in host memory, bound once; the hot tier in fp32, fp16 or bf16.

#include <algorithm>
#include <atomic>
#include <cstring>
#include <optional>
#include <vector>

#include "heterocache/concepts/storage_tier.hpp"
#include "heterocache/queue/host_queue.hpp"
#include "heterocache/tensor/element.hpp"
#include "heterocache/tensor/kv_tensor.hpp"

namespace heterocache {
inline namespace v1 {

//! The host `StorageTier`. Hot tier: per layer a pool of `plan.hot_pages[layer]` pages of `page_size` slots,
//! one array for keys and one for values (`[page][page_size][head_dim]` of `HotElement`), plus the token
//! position each slot holds; tokens are converted to `HotElement` as they land (rounded to nearest even).
//! Cold tier, by position: either its own copy (`[layer][row][position][head_dim]` of the engine's element
//! type, copied exactly, so no KV data is ever lost) or, with `plan.cold_aliased`, the engine's own tensor
//! `ColdTensor`, read in place: the engine then holds the full KV once, and its tensor must index tokens by
//! position (the token of every `append` is its position). Every operation runs on the caller's thread or
//! over the queue's pool; none allocates after `bind`. Byte counters are atomic (`StorageStats`), so a
//! retriever thread may move data while the engine thread reads them.
template <KvElement HotElement, KvTensor ColdTensor = strided_kv_tensor<float>>
class basic_host_storage {
    static_assert(host_accessible_v<typename ColdTensor::memory_space>,
                  "basic_host_storage: the engine's tensor must be in host-accessible memory");

public:
    using element_type = HotElement;
    using memory_space = host_memory;
    using queue_type = host_queue;
    using cold_tensor = ColdTensor;
    using cold_element = typename ColdTensor::element_type;

    basic_host_storage() = default;
    basic_host_storage(const basic_host_storage&) = delete;
    basic_host_storage& operator=(const basic_host_storage&) = delete;

    //! Bytes of the hot pools (with their slot positions) and of the cold copy (0 when aliased).
    [[nodiscard]] storage_bytes bytes_required(const storage_plan& plan) const {
        check_plan(plan);
        storage_bytes bytes;
        for (const index_t pages : plan.hot_pages)
            bytes.hot = static_cast<std::size_t>(detail::checked_sum(static_cast<index_t>(bytes.hot),
                                                                     static_cast<index_t>(hot_layer_bytes(plan, pages)), "hot bytes"));
        if (!plan.cold_aliased)
            bytes.cold = static_cast<std::size_t>(detail::checked_product(
                plan.shape.layers, static_cast<index_t>(cold_layer_bytes(plan)), "cold bytes"));
        return bytes;
    }

    //! Binds the tier to `memory` (the tier allocates its own where a span is empty) and, with
    //! `plan.cold_aliased`, to the engine tensor `*alias`. Throws `shape_error` on a bad plan, a span smaller
    //! than `bytes_required` or misaligned, or a missing alias.
    void bind(const storage_plan& plan, storage_memory memory, const ColdTensor* alias = nullptr) {
        const storage_bytes bytes = bytes_required(plan);
        detail::require<shape_error>(!plan.cold_aliased || alias != nullptr, "alias", "null",
                                     "the engine tensor the cold tier reads (plan.cold_aliased is set)");
        if (plan.cold_aliased) {
            detail::require<shape_error>(alias->keys != nullptr && alias->values != nullptr, "alias.keys", "null",
                                         "the engine's key and value memory");
            detail::require<shape_error>(alias->kv_heads() == plan.shape.kv_heads && alias->head_dim() == plan.shape.head_dim,
                                         "alias.kv_heads()", alias->kv_heads(), "the model's kv_heads and head_dim");
        }
        if (memory.hot.empty() || (memory.cold.empty() && bytes.cold > 0)) {
            owned_ = storage_buffers({memory.hot.empty() ? bytes.hot : 0, memory.cold.empty() ? bytes.cold : 0});
            const storage_memory own = owned_.memory();
            if (memory.hot.empty()) memory.hot = own.hot;
            if (memory.cold.empty()) memory.cold = own.cold;
        }
        check_span(memory.hot, bytes.hot, "memory.hot");
        check_span(memory.cold, bytes.cold, "memory.cold");
        shape_ = plan.shape;
        rows_ = plan.rows_per_layer();
        max_positions_ = plan.max_positions;
        page_size_ = plan.page_size;
        alias_ = plan.cold_aliased ? std::optional<ColdTensor>(*alias) : std::nullopt;
        layers_.assign(static_cast<std::size_t>(shape_.layers), {});
        std::byte* hot = memory.hot.data();
        std::byte* cold = memory.cold.data();
        const std::size_t d = static_cast<std::size_t>(shape_.head_dim);
        for (index_t layer = 0; layer < shape_.layers; ++layer) {
            layer_memory& l = layers_[static_cast<std::size_t>(layer)];
            const index_t pages = plan.hot_pages[static_cast<std::size_t>(layer)];
            const std::size_t slots = static_cast<std::size_t>(pages * page_size_);
            l.slots = static_cast<index_t>(slots);
            l.hot_keys = carve<HotElement>(hot, slots * d);
            l.hot_values = carve<HotElement>(hot, slots * d);
            l.positions = carve<index_t>(hot, slots);
            std::fill(l.positions, l.positions + slots, index_t{-1});
            if (!alias_) {
                const std::size_t cold_elements = static_cast<std::size_t>(rows_ * max_positions_) * d;
                l.cold_keys = carve<cold_element>(cold, cold_elements);
                l.cold_values = carve<cold_element>(cold, cold_elements);
            }
        }
        written_to_hot_ = written_to_cold_ = retrieved_ = 0;
    }

    //! Copies the prompt `[0, prompt_tokens)` of every head of (`layer`, `seq`) from `kv` into the cold tier
    //! (with an aliased cold tier `kv` must be the tensor it reads, and nothing is copied), then fills the hot
    //! tokens of every row of `hot_rows` (rows of this sequence) from `kv` at the positions they name.
    void store_prompt(index_t layer, index_t seq, const ColdTensor& kv, index_t prompt_tokens,
                      std::span<const refresh_row> hot_rows, host_queue q) {
        if (alias_) {
            detail::require<shape_error>(kv.keys == alias_->keys && kv.values == alias_->values, "kv", "another tensor",
                                         "the engine tensor the cold tier aliases");
        } else {
            q.for_each(shape_.kv_heads, [&](index_t head) {
                const index_t row = seq * shape_.kv_heads + head;
                copy_tokens(kv.key_rows(layer, seq, head), prompt_tokens, cold_key(layer, row, 0));
                copy_tokens(kv.value_rows(layer, seq, head), prompt_tokens, cold_value(layer, row, 0));
            });
            written_to_cold_.fetch_add(static_cast<std::uint64_t>(prompt_tokens * shape_.kv_heads) *
                                           token_bytes<cold_element>(),
                                       std::memory_order_relaxed);
        }
        index_t tokens = 0;
        for (const refresh_row& r : hot_rows) tokens += static_cast<index_t>(r.positions.size());
        q.for_each(static_cast<index_t>(hot_rows.size()), [&](index_t i) {
            const refresh_row& r = hot_rows[static_cast<std::size_t>(i)];
            const index_t head = r.row % shape_.kv_heads;
            fill_row(layer, r, kv.key_rows(layer, seq, head), kv.value_rows(layer, seq, head));
        });
        written_to_hot_.fetch_add(static_cast<std::uint64_t>(tokens) * token_bytes<HotElement>(), std::memory_order_relaxed);
    }

    //! Stores the new token of every row of `entries`: into the cold tier at its position (unless aliased;
    //! then `token` must equal `position`) and into its hot slot. Throws `shape_error` for an aliased cold
    //! tier whose entry's token is not its position.
    void append(index_t layer, const ColdTensor& kv, std::span<const append_entry> entries, host_queue q) {
        if (alias_)
            for (const append_entry& e : entries)
                detail::require<shape_error>(e.token == e.position, "token", e.token,
                                             "the token's position (the cold tier reads the engine's tensor by position)");
        q.for_each(static_cast<index_t>(entries.size()), [&](index_t i) {
            const append_entry& e = entries[static_cast<std::size_t>(i)];
            const index_t seq = e.row / shape_.kv_heads, head = e.row % shape_.kv_heads;
            const cold_element* key = kv.key(layer, seq, head, e.token);
            const cold_element* value = kv.value(layer, seq, head, e.token);
            if (!alias_) {
                std::copy_n(key, shape_.head_dim, cold_key(layer, e.row, e.position));
                std::copy_n(value, shape_.head_dim, cold_value(layer, e.row, e.position));
            }
            store_hot(layer, e.slot, key, value, e.position, 1);
        });
        const auto n = static_cast<std::uint64_t>(entries.size());
        written_to_hot_.fetch_add(n * token_bytes<HotElement>(), std::memory_order_relaxed);
        if (!alias_) written_to_cold_.fetch_add(n * token_bytes<cold_element>(), std::memory_order_relaxed);
    }

    //! Copies the cold tokens every row of `request` names into its hot slots: each run of consecutive
    //! positions landing in consecutive slots of one page in one conversion. Rows go over the queue's pool.
    void refill(index_t layer, const refresh_request& request, host_queue q) {
        q.for_each(static_cast<index_t>(request.rows.size()), [&](index_t i) {
            const refresh_row& r = request.rows[static_cast<std::size_t>(i)];
            fill_row(layer, r, cold_keys(layer, r.row), cold_values(layer, r.row));
        });
        retrieved_.fetch_add(static_cast<std::uint64_t>(request.tokens()) * token_bytes<HotElement>(),
                             std::memory_order_relaxed);
    }

    //! The selection of `layer`: `table` (host memory) over this layer's pools. O(1).
    [[nodiscard]] basic_paged_selection<HotElement> selection(index_t layer, const selection_table& table, host_queue) const {
        const layer_memory& l = layers_[static_cast<std::size_t>(layer)];
        return {table.rows,    table.kv_heads, table.group_size,    table.head_dim, table.page_size,
                table.indptr,  table.indices,  table.last_page_len, l.hot_keys,     l.hot_values,
                table.captures};
    }

    //! Keys of `row` of `layer` in the cold tier, by position.
    [[nodiscard]] token_rows<cold_element> cold_keys(index_t layer, index_t row) const noexcept {
        if (alias_) return alias_->key_rows(layer, row / shape_.kv_heads, row % shape_.kv_heads);
        return {layers_[static_cast<std::size_t>(layer)].cold_keys, {cold_offset(row, 0), shape_.head_dim, nullptr, 0, 0}};
    }
    //! Values of `row` of `layer` in the cold tier, by position.
    [[nodiscard]] token_rows<cold_element> cold_values(index_t layer, index_t row) const noexcept {
        if (alias_) return alias_->value_rows(layer, row / shape_.kv_heads, row % shape_.kv_heads);
        return {layers_[static_cast<std::size_t>(layer)].cold_values, {cold_offset(row, 0), shape_.head_dim, nullptr, 0, 0}};
    }
    //! Whether the cold tier reads the engine's tensor rather than a copy.
    [[nodiscard]] bool cold_aliased() const noexcept { return alias_.has_value(); }

    //! Inspection: the key and value in hot slot `slot` of `layer`, and the position it holds (-1 if never
    //! written).
    [[nodiscard]] const HotElement* hot_key(index_t layer, index_t slot) const noexcept {
        return layers_[static_cast<std::size_t>(layer)].hot_keys + slot * shape_.head_dim;
    }
    [[nodiscard]] const HotElement* hot_value(index_t layer, index_t slot) const noexcept {
        return layers_[static_cast<std::size_t>(layer)].hot_values + slot * shape_.head_dim;
    }
    [[nodiscard]] index_t hot_position(index_t layer, index_t slot) const noexcept {
        return layers_[static_cast<std::size_t>(layer)].positions[slot];
    }
    //! Slots of `layer`'s hot pool.
    [[nodiscard]] index_t hot_slots(index_t layer) const noexcept { return layers_[static_cast<std::size_t>(layer)].slots; }

    [[nodiscard]] transfer_counters counters() const noexcept {
        return {written_to_hot_.load(std::memory_order_relaxed), written_to_cold_.load(std::memory_order_relaxed),
                retrieved_.load(std::memory_order_relaxed)};
    }

private:
    struct layer_memory {
        index_t slots = 0;
        HotElement* hot_keys = nullptr;
        HotElement* hot_values = nullptr;
        index_t* positions = nullptr;
        cold_element* cold_keys = nullptr;
        cold_element* cold_values = nullptr;
    };

    static void check_plan(const storage_plan& plan) {
        plan.shape.validate();
        detail::require<shape_error>(plan.sequences >= 1, "sequences", plan.sequences, "[1, inf)");
        detail::require<shape_error>(plan.max_positions >= 1, "max_positions", plan.max_positions, "[1, inf)");
        detail::require<shape_error>(plan.page_size >= 1, "page_size", plan.page_size, "[1, inf)");
        detail::require<shape_error>(static_cast<index_t>(plan.hot_pages.size()) == plan.shape.layers, "hot_pages.size()",
                                     plan.hot_pages.size(), "layers");
        for (const index_t pages : plan.hot_pages)
            detail::require<shape_error>(pages >= 0, "hot_pages", pages, "[0, inf)");
    }
    static std::size_t round_up(std::size_t bytes) noexcept {
        return (bytes + storage_bytes::alignment - 1) / storage_bytes::alignment * storage_bytes::alignment;
    }
    //! Bytes of one layer's hot pools and slot positions. Throws `shape_error` when they overflow.
    static std::size_t hot_layer_bytes(const storage_plan& plan, index_t pages) {
        const index_t slots = detail::checked_product(pages, plan.page_size, "hot slots of a layer");
        const index_t elements = detail::checked_product(slots, plan.shape.head_dim, "hot elements of a layer", max_elements);
        return 2 * round_up(static_cast<std::size_t>(elements) * sizeof(HotElement)) +
               round_up(static_cast<std::size_t>(slots) * sizeof(index_t));
    }
    //! Bytes of one layer's cold copy. Throws `shape_error` when they overflow.
    static std::size_t cold_layer_bytes(const storage_plan& plan) {
        const index_t rows = detail::checked_product(plan.sequences, plan.shape.kv_heads, "rows of a layer");
        const index_t tokens = detail::checked_product(rows, plan.max_positions, "cold tokens of a layer");
        const index_t elements = detail::checked_product(tokens, plan.shape.head_dim, "cold elements of a layer", max_elements);
        return 2 * round_up(static_cast<std::size_t>(elements) * sizeof(cold_element));
    }
    //! Most elements of one region: its bytes, and the sum over layers, stay far from overflow.
    static constexpr index_t max_elements = index_t{1} << 50;
    static void check_span(std::span<std::byte> span, std::size_t bytes, const char* name) {
        detail::require<shape_error>(span.size() >= bytes, name, span.size(), "[bytes_required(plan), inf) bytes");
        detail::require<shape_error>(bytes == 0 || reinterpret_cast<std::uintptr_t>(span.data()) % storage_bytes::alignment == 0,
                                     name, "a misaligned span", "a span aligned to storage_bytes::alignment");
    }
    //! The next `count` elements of `T` at `cursor`, which moves on by their bytes rounded up.
    template <class T>
    static T* carve(std::byte*& cursor, std::size_t count) noexcept {
        T* region = reinterpret_cast<T*>(cursor);
        cursor += round_up(count * sizeof(T));
        return region;
    }

    //! Bytes of one token's key and value stored as `E`.
    template <class E>
    [[nodiscard]] std::uint64_t token_bytes() const noexcept {
        return 2 * static_cast<std::uint64_t>(shape_.head_dim) * sizeof(E);
    }
    [[nodiscard]] index_t cold_offset(index_t row, index_t position) const noexcept {
        return (row * max_positions_ + position) * shape_.head_dim;
    }
    [[nodiscard]] cold_element* cold_key(index_t layer, index_t row, index_t position) noexcept {
        return layers_[static_cast<std::size_t>(layer)].cold_keys + cold_offset(row, position);
    }
    [[nodiscard]] cold_element* cold_value(index_t layer, index_t row, index_t position) noexcept {
        return layers_[static_cast<std::size_t>(layer)].cold_values + cold_offset(row, position);
    }
    //! Whether tokens `[position, position + count)` of `rows` lie back to back: a strided run with contiguous
    //! tokens, or a paged one whose tokens are contiguous within one page (pages may be anywhere).
    [[nodiscard]] bool contiguous(const token_rows<cold_element>& rows, index_t position, index_t count) const noexcept {
        if (count <= 1) return true;
        const token_run_map& map = rows.map;
        if (map.token_stride != shape_.head_dim) return false;
        return map.pages == nullptr || position / map.page_size == (position + count - 1) / map.page_size;
    }
    //! Copies `count` tokens of `rows` into `out` (`[token][head_dim]`), exactly.
    void copy_tokens(const token_rows<cold_element>& rows, index_t count, cold_element* out) const noexcept {
        if (contiguous(rows, 0, count)) {
            std::copy_n(rows.at(0), count * shape_.head_dim, out);
            return;
        }
        for (index_t t = 0; t < count; ++t) std::copy_n(rows.at(t), shape_.head_dim, out + t * shape_.head_dim);
    }
    //! Fills the hot tokens of `r` from `keys`/`values` (by position), a run of consecutive positions that
    //! lands in consecutive slots of one page at a time.
    void fill_row(index_t layer, const refresh_row& r, const token_rows<cold_element>& keys,
                  const token_rows<cold_element>& values) noexcept {
        const auto count = static_cast<index_t>(r.positions.size());
        for (index_t k = 0; k < count;) {
            const index_t token = r.first_token + k;
            const index_t slot = static_cast<index_t>(r.pages[token / page_size_]) * page_size_ + token % page_size_;
            const index_t position = r.positions[static_cast<std::size_t>(k)];
            const index_t room = std::min(page_size_ - token % page_size_, count - k);
            index_t run = 1;
            while (run < room && r.positions[static_cast<std::size_t>(k + run)] == position + run) ++run;
            if (contiguous(keys, position, run) && contiguous(values, position, run)) {
                store_hot(layer, slot, keys.at(position), values.at(position), position, run);
            } else {
                for (index_t j = 0; j < run; ++j)
                    store_hot(layer, slot + j, keys.at(position + j), values.at(position + j), position + j, 1);
            }
            k += run;
        }
    }
    //! Converts `count` back-to-back tokens into the hot slots from `slot` on.
    void store_hot(index_t layer, index_t slot, const cold_element* key, const cold_element* value, index_t position,
                   index_t count) noexcept {
        layer_memory& l = layers_[static_cast<std::size_t>(layer)];
        const index_t at = slot * shape_.head_dim, n = count * shape_.head_dim;
        convert_elements(key, l.hot_keys + at, n);
        convert_elements(value, l.hot_values + at, n);
        for (index_t j = 0; j < count; ++j) l.positions[slot + j] = position + j;
    }

    model_shape shape_;
    index_t rows_ = 0, max_positions_ = 0, page_size_ = 16;
    std::optional<ColdTensor> alias_;
    std::vector<layer_memory> layers_;
    storage_buffers owned_;
    std::atomic<std::uint64_t> written_to_hot_{0}, written_to_cold_{0}, retrieved_{0};
};

//! fp32 hot tier over an fp32 engine tensor with strides.
using host_storage = basic_host_storage<float>;
//! An fp16 hot tier over an fp32 engine tensor: half the hot bytes, 10 mantissa bits (range up to 65504).
using host_storage_fp16 = basic_host_storage<fp16_t>;
//! A bf16 hot tier over an fp32 engine tensor: half the hot bytes, fp32's range with 7 mantissa bits.
using host_storage_bf16 = basic_host_storage<bf16_t>;
static_assert(StorageTier<host_storage> && StorageTier<host_storage_fp16> && StorageTier<host_storage_bf16> &&
              StorageStats<host_storage>);

}  // namespace v1
}  // namespace heterocache
