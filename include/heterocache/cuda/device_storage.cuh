#pragma once
//! \file
//! The CUDA storage tier: the hot tier in device memory, the cold tier in pinned host memory, and the two
//! ways selected tokens move cold -> hot (gather on the host into pinned staging then `cudaMemcpyAsync`, or
//! a zero-copy gather kernel that reads the pinned cold tier in place).
//!
//! Not yet a `StorageTier` (concepts/storage_tier.hpp): it has no `bind`/`store_prompt`/`append`, no queue and
//! no aliased cold tier, so `kv_cache` cannot drive it. Moving it onto that contract (with
//! `cuda::stream_queue`) is a later issue's work; until then an engine drives it through the calls below.

#include <atomic>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "heterocache/attention/paged_selection.hpp"
#include "heterocache/cuda/config.cuh"
#include "heterocache/cuda/element_traits.cuh"
#include "heterocache/cuda/kernels/copy_tokens.cuh"
#include "heterocache/cuda/kernels/decode_attention.cuh"
#include "heterocache/storage/storage_plan.hpp"

namespace heterocache {
inline namespace v1 {
namespace cuda {

//! The sizes a `device_storage` allocates by.
struct device_storage_plan {
    model_shape shape;
    index_t sequences = 0;           //!< sequence slots; rows of a layer are `seq * kv_heads + head`
    index_t max_positions = 0;       //!< cold-tier positions per row
    index_t page_size = 16;          //!< tokens per hot page
    std::vector<index_t> hot_pages;  //!< pages of each layer's hot pool, `layers` entries

    [[nodiscard]] index_t rows_per_layer() const noexcept { return sequences * shape.kv_heads; }
};

//! Pinned host memory a refresh is prepared in: the gathered keys and values (staged path) and the
//! per-token source, slot and position arrays (zero-copy path), for up to `capacity` tokens. Kernels read
//! the arrays in place (mapped memory), so a buffer must not be rewritten until the copy that reads it is
//! done (the asynchronous retriever double-buffers them).
template <KvElement Element>
struct refresh_staging {
    index_t capacity = 0;
    pinned_array<Element> keys, values;            //!< `[token][head_dim]`, request order
    pinned_array<index_t> source, slot, position;  //!< per token

    refresh_staging() = default;
    refresh_staging(index_t tokens, index_t head_dim)
        : capacity(tokens), keys(static_cast<std::size_t>(tokens * head_dim)),
          values(static_cast<std::size_t>(tokens * head_dim)), source(static_cast<std::size_t>(tokens)),
          slot(static_cast<std::size_t>(tokens)), position(static_cast<std::size_t>(tokens)) {}
};

//! A device hot tier over a pinned cold tier, laid out as `basic_host_storage` (storage/host_storage.hpp) is:
//! hot tier per layer a pool of `plan.hot_pages[layer]` pages of `page_size` slots (`[page][page_size][head_dim]`
//! device arrays of `Element`, keys and values), with the token position of each slot in a device array;
//! cold tier per layer `[row][position][head_dim]` of `Element` in pinned host memory, mapped so kernels read
//! it in place. Each layer also keeps its paged selection in device memory (`upload_selection`, `selection`)
//! for the attention kernel. Refreshes take the host's `refresh_request` (a row's tokens on its pages).
//!
//! Host calls (`store_cold`, `stage`, `upload_selection`) run on the caller's thread; the device halves of a
//! refresh (`copy_staged`, `gather_zero_copy`) are asynchronous on a stream. An engine appends decode tokens
//! into `hot_keys`/`hot_values`/`hot_positions` with `copy_tokens`. Every buffer is allocated by `plan`.
template <KvElement Element = float>
class device_storage {
public:
    using element_type = Element;

    device_storage() = default;
    device_storage(const device_storage&) = delete;
    device_storage& operator=(const device_storage&) = delete;

    //! Allocates every buffer (device and pinned): hot slots zero, positions -1, selections empty, cold tier
    //! zero. Throws `shape_error` on a bad plan (sizes that overflow included), `cuda_error` when an
    //! allocation fails.
    void plan(const device_storage_plan& plan) {
        plan.shape.validate();
        ::heterocache::detail::require<shape_error>(plan.sequences >= 1, "sequences", plan.sequences, "[1, inf)");
        ::heterocache::detail::require<shape_error>(plan.max_positions >= 1, "max_positions", plan.max_positions,
                                                    "[1, inf)");
        ::heterocache::detail::require<shape_error>(plan.page_size >= 1, "page_size", plan.page_size, "[1, inf)");
        ::heterocache::detail::require<shape_error>(static_cast<index_t>(plan.hot_pages.size()) == plan.shape.layers,
                                                    "hot_pages.size()", plan.hot_pages.size(), "layers");
        head_dim_ = plan.shape.head_dim;
        kv_heads_ = plan.shape.kv_heads;
        group_size_ = plan.shape.group_size();
        rows_ = ::heterocache::detail::checked_product(plan.sequences, kv_heads_, "rows of a layer");
        max_positions_ = plan.max_positions;
        page_size_ = plan.page_size;
        const auto cold = static_cast<std::size_t>(::heterocache::detail::checked_product(
            ::heterocache::detail::checked_product(rows_, max_positions_, "cold tokens of a layer"), head_dim_,
            "cold elements of a layer", max_elements));
        layers_.clear();
        layers_.resize(static_cast<std::size_t>(plan.shape.layers));
        for (std::size_t layer = 0; layer < layers_.size(); ++layer) {
            const index_t pages = plan.hot_pages[layer];
            ::heterocache::detail::require<shape_error>(pages >= 0 && pages <= 0x7fffffff, "hot_pages", pages,
                                                        "[0, 2^31) (32-bit page ids)");
            const index_t slots = ::heterocache::detail::checked_product(pages, page_size_, "hot slots of a layer");
            const auto hot = static_cast<std::size_t>(
                ::heterocache::detail::checked_product(slots, head_dim_, "hot elements of a layer", max_elements));
            layer_arrays& l = layers_[layer];
            l.pages = pages;
            l.hot_keys = device_array<Element>(hot);
            l.hot_values = device_array<Element>(hot);
            l.hot_positions = device_array<index_t>(static_cast<std::size_t>(slots));
            l.indptr = device_array<page_index_t>(static_cast<std::size_t>(rows_ + 1));
            l.indices = device_array<page_index_t>(static_cast<std::size_t>(pages));
            l.last_page_len = device_array<page_index_t>(static_cast<std::size_t>(rows_));
            l.cold_keys = pinned_array<Element>(cold);
            l.cold_values = pinned_array<Element>(cold);
            std::memset(l.cold_keys.data(), 0, l.cold_keys.bytes());
            std::memset(l.cold_values.data(), 0, l.cold_values.bytes());
            check(cudaMemset(l.hot_keys.data(), 0, l.hot_keys.bytes()), "cudaMemset(hot keys)");
            check(cudaMemset(l.hot_values.data(), 0, l.hot_values.bytes()), "cudaMemset(hot values)");
            check(cudaMemset(l.hot_positions.data(), 0xff, l.hot_positions.bytes()), "cudaMemset(hot positions)");  // -1
            check(cudaMemset(l.indptr.data(), 0, l.indptr.bytes()), "cudaMemset(indptr)");  // every row empty
        }
        written_to_cold_ = retrieved_ = 0;
    }

    [[nodiscard]] index_t head_dim() const noexcept { return head_dim_; }
    [[nodiscard]] index_t rows_per_layer() const noexcept { return rows_; }
    [[nodiscard]] index_t max_positions() const noexcept { return max_positions_; }
    [[nodiscard]] index_t page_size() const noexcept { return page_size_; }
    //! Pages of `layer`'s hot pool.
    [[nodiscard]] index_t hot_pages(index_t layer) const noexcept { return arrays(layer).pages; }
    //! Slots of `layer`'s hot pool.
    [[nodiscard]] index_t hot_slots(index_t layer) const noexcept { return hot_pages(layer) * page_size_; }

    //! Device pointer to the hot key pool of `layer`, `[slot][head_dim]` (slot = page * page_size + offset).
    [[nodiscard]] const Element* hot_keys(index_t layer) const noexcept { return arrays(layer).hot_keys.data(); }
    [[nodiscard]] const Element* hot_values(index_t layer) const noexcept { return arrays(layer).hot_values.data(); }
    [[nodiscard]] Element* hot_keys(index_t layer) noexcept { return arrays(layer).hot_keys.data(); }
    [[nodiscard]] Element* hot_values(index_t layer) noexcept { return arrays(layer).hot_values.data(); }
    //! Device array of the token position each hot slot of `layer` holds (-1 if never written).
    [[nodiscard]] index_t* hot_positions(index_t layer) noexcept { return arrays(layer).hot_positions.data(); }
    //! Token position held by a hot slot, read back synchronously (a debugging and test accessor).
    [[nodiscard]] index_t hot_position(index_t layer, index_t slot) const {
        index_t position = -1;
        check(cudaMemcpy(&position, arrays(layer).hot_positions.data() + slot, sizeof position, cudaMemcpyDeviceToHost),
              "cudaMemcpy(hot position)");
        return position;
    }

    //! Copies `count` tokens (`[token][head_dim]` keys and values in host memory) into the cold tier of `row` of
    //! `layer`, positions `[first_position, first_position + count)`, exactly. Throws `shape_error` when they do
    //! not fit the row.
    void store_cold(index_t layer, index_t row, index_t first_position, index_t count, const Element* keys,
                    const Element* values) {
        ::heterocache::detail::require<shape_error>(row >= 0 && row < rows_, "row", row, "[0, rows)");
        ::heterocache::detail::require<shape_error>(first_position >= 0 && first_position <= max_positions_,
                                                    "first_position", first_position, "[0, max_positions]");
        ::heterocache::detail::require<shape_error>(count >= 0 && count <= max_positions_ - first_position, "count",
                                                    count, "[0, max_positions - first_position]");
        layer_arrays& l = arrays(layer);
        const std::size_t at = cold_offset(row, first_position);
        const std::size_t bytes = static_cast<std::size_t>(count * head_dim_) * sizeof(Element);
        if (bytes == 0) return;
        std::memcpy(l.cold_keys.data() + at, keys, bytes);
        std::memcpy(l.cold_values.data() + at, values, bytes);
        written_to_cold_.fetch_add(static_cast<std::uint64_t>(count) * token_bytes(), std::memory_order_relaxed);
    }
    //! Keys of `row` in the cold tier, `[position][head_dim]`: pinned host memory, also readable by kernels.
    [[nodiscard]] const Element* cold_keys(index_t layer, index_t row) const noexcept {
        return arrays(layer).cold_keys.data() + cold_offset(row, 0);
    }
    [[nodiscard]] const Element* cold_values(index_t layer, index_t row) const noexcept {
        return arrays(layer).cold_values.data() + cold_offset(row, 0);
    }

    //! Bytes moved since `plan`: `written_to_cold` by `store_cold`, `retrieved` by refreshes. `written_to_hot`
    //! is 0: the tier writes no engine token into the hot tier itself (an engine's `copy_tokens` is not counted).
    [[nodiscard]] transfer_counters counters() const noexcept {
        return {0, written_to_cold_.load(std::memory_order_relaxed), retrieved_.load(std::memory_order_relaxed)};
    }

    //! Uploads the paged selection of `layer` (host arrays, FlashInfer's layout: `indptr` of `rows + 1` page
    //! offsets, `indices` of page ids, `last_page_len` of `rows`) on `stream`: asynchronous when the spans are
    //! pinned, and they must then stay unchanged until the copy is done. Throws `shape_error` when the sizes do
    //! not fit the layer.
    void upload_selection(index_t layer, std::span<const page_index_t> indptr, std::span<const page_index_t> indices,
                          std::span<const page_index_t> last_page_len, cudaStream_t stream = nullptr) {
        ::heterocache::detail::require<shape_error>(static_cast<index_t>(indptr.size()) == rows_ + 1, "indptr.size()",
                                                    indptr.size(), "rows + 1");
        ::heterocache::detail::require<shape_error>(static_cast<index_t>(indices.size()) <= hot_pages(layer),
                                                    "indices.size()", indices.size(), "[0, hot pages of the layer]");
        ::heterocache::detail::require<shape_error>(static_cast<index_t>(last_page_len.size()) == rows_,
                                                    "last_page_len.size()", last_page_len.size(), "rows");
        layer_arrays& l = arrays(layer);
        check(cudaMemcpyAsync(l.indptr.data(), indptr.data(), indptr.size_bytes(), cudaMemcpyHostToDevice, stream),
              "cudaMemcpyAsync(indptr)");
        if (!indices.empty())
            check(cudaMemcpyAsync(l.indices.data(), indices.data(), indices.size_bytes(), cudaMemcpyHostToDevice, stream),
                  "cudaMemcpyAsync(indices)");
        if (!last_page_len.empty())
            check(cudaMemcpyAsync(l.last_page_len.data(), last_page_len.data(), last_page_len.size_bytes(),
                                  cudaMemcpyHostToDevice, stream),
                  "cudaMemcpyAsync(last_page_len)");
    }
    //! The device paged selection of `layer` (what the device `decode_attention` consumes): the last upload over
    //! the layer's pools, no captures.
    [[nodiscard]] device_paged_selection<Element> selection(index_t layer) const noexcept {
        const layer_arrays& l = arrays(layer);
        return {rows_,          kv_heads_,        group_size_,            head_dim_,         page_size_,
                l.indptr.data(), l.indices.data(), l.last_page_len.data(), l.hot_keys.data(), l.hot_values.data(),
                {}};
    }

    //! Staged path, host half: gathers the request's cold tokens into `staging` (pinned), in request order.
    //! Throws `shape_error` when the request exceeds the staging capacity.
    void stage(const refresh_request& request, refresh_staging<Element>& staging) const {
        check_capacity(request, staging);
        const layer_arrays& l = arrays(request.layer);
        const std::size_t vector = static_cast<std::size_t>(head_dim_) * sizeof(Element);
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
    //! Staged path, device half: one `cudaMemcpyAsync` each for keys, values and positions per run of the
    //! request's tokens that land in consecutive hot slots (a page, or pages that follow one another), from the
    //! staging buffer that `stage` filled, on `stream`.
    void copy_staged(const refresh_request& request, const refresh_staging<Element>& staging, cudaStream_t stream) {
        layer_arrays& l = arrays(request.layer);
        index_t token = 0;  // the request's token, in staging order
        for (const refresh_row& r : request.rows) {
            const auto count = static_cast<index_t>(r.positions.size());
            for (index_t k = 0; k < count;) {
                const index_t first_slot = slot_of(r, k);
                index_t run = 1;
                while (k + run < count && slot_of(r, k + run) == first_slot + run) ++run;
                const auto bytes = static_cast<std::size_t>(run * head_dim_) * sizeof(Element);
                const auto from = static_cast<std::size_t>(token * head_dim_);
                const auto to = static_cast<std::size_t>(first_slot * head_dim_);
                check(cudaMemcpyAsync(l.hot_keys.data() + to, staging.keys.data() + from, bytes, cudaMemcpyHostToDevice,
                                      stream),
                      "cudaMemcpyAsync(staged keys)");
                check(cudaMemcpyAsync(l.hot_values.data() + to, staging.values.data() + from, bytes,
                                      cudaMemcpyHostToDevice, stream),
                      "cudaMemcpyAsync(staged values)");
                check(cudaMemcpyAsync(l.hot_positions.data() + first_slot, staging.position.data() + token,
                                      static_cast<std::size_t>(run) * sizeof(index_t), cudaMemcpyHostToDevice, stream),
                      "cudaMemcpyAsync(staged positions)");
                token += run;
                k += run;
            }
        }
        retrieved_.fetch_add(static_cast<std::uint64_t>(token) * token_bytes(), std::memory_order_relaxed);
    }
    //! Zero-copy path: writes the request's per-token source, slot and position into `staging` and launches
    //! the gather kernel on `stream`, which reads the pinned cold tier in place (no host copy of K/V).
    //! Throws `shape_error` when the request exceeds the staging capacity.
    void gather_zero_copy(const refresh_request& request, refresh_staging<Element>& staging, cudaStream_t stream) {
        check_capacity(request, staging);
        index_t token = 0;
        for (const refresh_row& r : request.rows)
            for (index_t k = 0; k < static_cast<index_t>(r.positions.size()); ++k) {
                const index_t position = r.positions[static_cast<std::size_t>(k)];
                const auto i = static_cast<std::size_t>(token++);
                staging.source[i] = r.row * max_positions_ + position;
                staging.slot[i] = slot_of(r, k);
                staging.position[i] = position;
            }
        layer_arrays& l = arrays(request.layer);
        const token_copy copy{token, head_dim_, device_view(staging.source.data()), device_view(staging.slot.data()),
                              device_view(staging.position.data())};
        copy_tokens(copy, device_elements(device_view(l.cold_keys.data())),
                    device_elements(device_view(l.cold_values.data())), device_elements(l.hot_keys.data()),
                    device_elements(l.hot_values.data()), l.hot_positions.data(), stream);
        retrieved_.fetch_add(static_cast<std::uint64_t>(token) * token_bytes(), std::memory_order_relaxed);
    }

private:
    struct layer_arrays {
        index_t pages = 0;
        device_array<Element> hot_keys, hot_values;
        device_array<index_t> hot_positions;
        device_array<page_index_t> indptr, indices, last_page_len;
        pinned_array<Element> cold_keys, cold_values;
    };

    [[nodiscard]] layer_arrays& arrays(index_t layer) noexcept { return layers_[static_cast<std::size_t>(layer)]; }
    [[nodiscard]] const layer_arrays& arrays(index_t layer) const noexcept {
        return layers_[static_cast<std::size_t>(layer)];
    }
    [[nodiscard]] std::uint64_t token_bytes() const noexcept {
        return 2 * static_cast<std::uint64_t>(head_dim_) * sizeof(Element);
    }
    [[nodiscard]] std::size_t cold_offset(index_t row, index_t position) const noexcept {
        return static_cast<std::size_t>((row * max_positions_ + position) * head_dim_);
    }
    //! Hot slot of the `k`-th refreshed token of `r`: token `first_token + k` of the row on its pages.
    [[nodiscard]] index_t slot_of(const refresh_row& r, index_t k) const noexcept {
        const index_t token = r.first_token + k;
        return static_cast<index_t>(r.pages[token / page_size_]) * page_size_ + token % page_size_;
    }
    //! Most elements of one buffer: far from overflowing its bytes.
    static constexpr index_t max_elements = index_t{1} << 50;

    void check_capacity(const refresh_request& request, const refresh_staging<Element>& staging) const {
        ::heterocache::detail::require<shape_error>(request.tokens() <= staging.capacity, "request.tokens()",
                                                    request.tokens(), "[0, staging capacity]");
    }

    index_t head_dim_ = 0, kv_heads_ = 0, group_size_ = 0, rows_ = 0, max_positions_ = 0, page_size_ = 16;
    std::vector<layer_arrays> layers_;
    std::atomic<std::uint64_t> written_to_cold_{0}, retrieved_{0};
};

}  // namespace cuda
}  // namespace v1
}  // namespace heterocache
