#pragma once
//! \file
//! `row_table`: which hot pages every row owns, how many of its tokens are prompt and decode tokens, and the
//! paged selection over them (DESIGN.md section 3.1, "Selection: planned at prefill, run per step").

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "heterocache/attention/paged_selection.hpp"
#include "heterocache/concepts/storage_tier.hpp"
#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! The rows of every layer (`seq * kv_heads + head`) and their hot pages. A row's tokens are numbered from 0:
//! its prompt selection first (`prompt_count` tokens, in position order), then its decode tokens in their
//! decode slots (`decode_slot`: in order, or, under a decode window, the first `decode_sink` fixed and the
//! rest a ring). Token `k` of a row lives in slot `pages[k / page_size] * page_size + k % page_size` of the
//! layer's hot pool.
//!
//! Pages come from a free list per layer, sized at `plan` for every slot's largest rows: `allocate` gives a
//! sequence's rows the pages their capacity needs when the sequence begins (they never change while it
//! lives: a refresh rewrites slots inside them), `release` returns them. The selection of a layer
//! (`selection`) is FlashInfer's descriptor over the rows: a step in which every row keeps its page count
//! only rewrites `last_page_len`, O(rows); a row that enters a new page (once every `page_size` decode
//! tokens), a prefill, a compaction or a slot that starts or stops stepping rewrites the page ids from that
//! row on, O(pages after it).
class row_table {
public:
    //! Sizes of the table.
    struct layout {
        index_t layers = 0;
        index_t sequences = 0;
        index_t kv_heads = 0;
        index_t page_size = 16;
        index_t decode_capacity = 0;  //!< hot decode slots of a row
        index_t decode_sink = 0;      //!< decode slots that stay once a decode window is full
        bool decode_window = false;   //!< whether decode tokens beyond `decode_capacity` replace older ones
    };

    //! Plans the table: a row of (layer, head) holds at most `capacity_tokens(layer, head)` tokens (its
    //! largest prompt selection plus `decode_capacity`). Allocates every buffer.
    template <class CapacityTokens>
    void plan(const layout& sizes, CapacityTokens&& capacity_tokens) {
        sizes_ = sizes;
        const index_t rows = rows_per_layer(), states = sizes.layers * rows;
        page_offset_.assign(static_cast<std::size_t>(states) + 1, 0);
        capacity_pages_.assign(static_cast<std::size_t>(states), 0);
        pool_pages_ = pool_pages(sizes, capacity_tokens);
        for (index_t layer = 0; layer < sizes.layers; ++layer)
            for (index_t row = 0; row < rows; ++row) {
                const index_t state = layer * rows + row;
                const index_t pages = pages_for(capacity_tokens(layer, row % sizes.kv_heads));
                capacity_pages_[static_cast<std::size_t>(state)] = pages;
                page_offset_[static_cast<std::size_t>(state) + 1] = page_offset_[static_cast<std::size_t>(state)] + pages;
            }
        pages_.assign(static_cast<std::size_t>(page_offset_.back()), 0);
        allocated_.assign(static_cast<std::size_t>(states), 0);
        prompt_.assign(static_cast<std::size_t>(states), 0);
        decoded_.assign(static_cast<std::size_t>(states), 0);
        used_pages_.assign(static_cast<std::size_t>(states), 0);
        free_.assign(static_cast<std::size_t>(sizes.layers), {});
        indptr_.assign(static_cast<std::size_t>(sizes.layers), std::vector<page_index_t>(static_cast<std::size_t>(rows) + 1, 0));
        last_page_len_.assign(static_cast<std::size_t>(sizes.layers), std::vector<page_index_t>(static_cast<std::size_t>(rows), 0));
        indices_.resize(static_cast<std::size_t>(sizes.layers));
        dirty_.assign(static_cast<std::size_t>(sizes.layers), true);
        for (index_t layer = 0; layer < sizes.layers; ++layer) {
            const auto pages = static_cast<std::size_t>(pool_pages_[static_cast<std::size_t>(layer)]);
            indices_[static_cast<std::size_t>(layer)].assign(pages, 0);
            auto& free = free_[static_cast<std::size_t>(layer)];
            free.resize(pages);
            for (std::size_t p = 0; p < pages; ++p) free[p] = static_cast<page_index_t>(pages - 1 - p);  // page 0 first
        }
    }

    //! Pages of each layer's hot pool for a table of `sizes` whose rows of (layer, head) hold at most
    //! `capacity_tokens(layer, head)` tokens: every slot's rows at once. Throws `shape_error` when a count
    //! leaves the 32-bit page ids.
    template <class CapacityTokens>
    [[nodiscard]] static std::vector<index_t> pool_pages(const layout& sizes, CapacityTokens&& capacity_tokens) {
        std::vector<index_t> pages(static_cast<std::size_t>(sizes.layers), 0);
        for (index_t layer = 0; layer < sizes.layers; ++layer) {
            index_t per_slot = 0;
            for (index_t head = 0; head < sizes.kv_heads; ++head)
                per_slot = detail::checked_sum(per_slot, pages_for(sizes, capacity_tokens(layer, head)), "hot pages");
            pages[static_cast<std::size_t>(layer)] =
                detail::checked_product(per_slot, sizes.sequences, "hot pages of a layer", index_t{0x7fffffff});
        }
        return pages;
    }
    //! Pages of each layer's hot pool.
    [[nodiscard]] const std::vector<index_t>& pool_pages() const noexcept { return pool_pages_; }
    [[nodiscard]] index_t rows_per_layer() const noexcept { return sizes_.sequences * sizes_.kv_heads; }
    [[nodiscard]] index_t page_size() const noexcept { return sizes_.page_size; }
    //! Pages for `tokens` tokens.
    [[nodiscard]] index_t pages_for(index_t tokens) const noexcept { return pages_for(sizes_, tokens); }
    [[nodiscard]] static index_t pages_for(const layout& sizes, index_t tokens) noexcept {
        return (tokens + sizes.page_size - 1) / sizes.page_size;
    }

    //! Gives every row of `seq` the pages for `tokens(layer, head)` tokens (at most its planned capacity).
    //! Throws `shape_error` when a layer's pool has too few free pages or a row asks for more than its
    //! capacity; then nothing changed.
    template <class Tokens>
    void allocate(index_t seq, Tokens&& tokens) {
        for (index_t layer = 0; layer < sizes_.layers; ++layer) {
            index_t needed = 0;
            for (index_t head = 0; head < sizes_.kv_heads; ++head) {
                const index_t pages = pages_for(tokens(layer, head));
                detail::require<shape_error>(pages <= capacity_pages_[state(layer, seq * sizes_.kv_heads + head)],
                                             "row tokens", tokens(layer, head), "[0, the row's planned capacity]");
                needed += pages;
            }
            const auto free = static_cast<index_t>(free_[static_cast<std::size_t>(layer)].size());
            if (needed > free)
                throw shape_error("hot pages of layer " + std::to_string(layer), std::to_string(needed),
                                  "[0, " + std::to_string(free) + "] (the free pages of the layer's pool)");
        }
        for (index_t layer = 0; layer < sizes_.layers; ++layer) {
            auto& free = free_[static_cast<std::size_t>(layer)];
            for (index_t head = 0; head < sizes_.kv_heads; ++head) {
                const std::size_t s = state(layer, seq * sizes_.kv_heads + head);
                const index_t pages = pages_for(tokens(layer, head));
                for (index_t p = 0; p < pages; ++p) {
                    pages_[static_cast<std::size_t>(page_offset_[s] + p)] = free.back();
                    free.pop_back();
                }
                allocated_[s] = pages;
                prompt_[s] = decoded_[s] = 0;
            }
            dirty_[static_cast<std::size_t>(layer)] = true;
        }
    }

    //! Returns the pages of every row of `seq` to their pools.
    void release(index_t seq) {
        for (index_t layer = 0; layer < sizes_.layers; ++layer) {
            auto& free = free_[static_cast<std::size_t>(layer)];
            for (index_t head = 0; head < sizes_.kv_heads; ++head) {
                const std::size_t s = state(layer, seq * sizes_.kv_heads + head);
                for (index_t p = allocated_[s]; p-- > 0;) free.push_back(pages_[static_cast<std::size_t>(page_offset_[s] + p)]);
                allocated_[s] = prompt_[s] = decoded_[s] = 0;
            }
            dirty_[static_cast<std::size_t>(layer)] = true;
        }
    }

    //! A new prompt selection of `count` tokens for a row, with no decode token yet (prefill).
    void set_prompt(index_t layer, index_t row, index_t count) noexcept {
        const std::size_t s = state(layer, row);
        prompt_[s] = count;
        decoded_[s] = 0;
        dirty_[static_cast<std::size_t>(layer)] = true;
    }
    //! A prompt selection of `count` tokens for a row that keeps its decode tokens (the caller moves them
    //! behind the new selection: `decode_number` says which decode token each slot holds).
    void resize_prompt(index_t layer, index_t row, index_t count) noexcept {
        prompt_[state(layer, row)] = count;
        dirty_[static_cast<std::size_t>(layer)] = true;
    }

    [[nodiscard]] index_t prompt_count(index_t layer, index_t row) const noexcept { return prompt_[state(layer, row)]; }
    //! Decode tokens appended to a row so far.
    [[nodiscard]] index_t decoded(index_t layer, index_t row) const noexcept { return decoded_[state(layer, row)]; }
    //! Decode tokens a row holds now.
    [[nodiscard]] index_t kept_decode(index_t layer, index_t row) const noexcept {
        return std::min(decoded(layer, row), sizes_.decode_capacity);
    }
    //! Tokens a row holds now.
    [[nodiscard]] index_t length(index_t layer, index_t row) const noexcept {
        return prompt_count(layer, row) + kept_decode(layer, row);
    }
    //! The row's pages (as many as `allocate` gave it).
    [[nodiscard]] const page_index_t* pages(index_t layer, index_t row) const noexcept {
        return pages_.data() + page_offset_[state(layer, row)];
    }
    //! Hot slot of token `token` of a row.
    [[nodiscard]] index_t slot(index_t layer, index_t row, index_t token) const noexcept {
        return static_cast<index_t>(pages(layer, row)[token / sizes_.page_size]) * sizes_.page_size + token % sizes_.page_size;
    }
    //! Decode slot of the row's `j`-th decode token (0-based): the first `decode_sink` stay, the rest cycle
    //! through a ring under a decode window.
    [[nodiscard]] index_t decode_slot(index_t j) const noexcept {
        if (!sizes_.decode_window || j < sizes_.decode_capacity) return j;
        const index_t sink = sizes_.decode_sink;
        return sink + (j - sink) % (sizes_.decode_capacity - sink);
    }
    //! Which decode token (0-based) decode slot `slot` of a row holds after `decoded` decode tokens.
    [[nodiscard]] index_t decode_number(index_t slot, index_t decoded) const noexcept {
        if (decoded <= sizes_.decode_capacity || slot < sizes_.decode_sink) return slot;
        const index_t ring = sizes_.decode_capacity - sizes_.decode_sink;
        const index_t laps = (decoded - 1 - slot) / ring;  // the latest decode token that went to this slot
        return slot + laps * ring;
    }
    //! Row token of the row's next decode token.
    [[nodiscard]] index_t next_decode_token(index_t layer, index_t row) const noexcept {
        return prompt_count(layer, row) + decode_slot(decoded(layer, row));
    }
    //! Counts one more decode token of a row (after it was stored at `next_decode_token`).
    void advance(index_t layer, index_t row) noexcept { ++decoded_[state(layer, row)]; }
    //! The append entries of the new token of every head of `seq` in `layer` (the engine's `token`, a sequence
    //! of `prompt_tokens` prompt tokens), into `out` (`kv_heads` entries); `advance` each once it is stored.
    void append_entries(index_t layer, index_t seq, index_t token, index_t prompt_tokens, append_entry* out) const noexcept {
        for (index_t head = 0; head < sizes_.kv_heads; ++head) {
            const index_t row = seq * sizes_.kv_heads + head;
            out[head] = {row, token, prompt_tokens + decoded(layer, row), slot(layer, row, next_decode_token(layer, row))};
        }
    }

    //! The paged descriptor of `layer` with the rows of the slots `stepping(seq)` is true of, the others empty.
    //! O(rows) when no row's page count changed since the last call, else O(rows + pages from the first row
    //! that changed). `captures` are passed through.
    template <class Stepping>
    [[nodiscard]] selection_table selection(index_t layer, index_t group_size, index_t head_dim, Stepping&& stepping,
                                            std::span<const score_capture> captures) {
        const index_t rows = rows_per_layer(), ps = sizes_.page_size;
        auto& indptr = indptr_[static_cast<std::size_t>(layer)];
        auto& indices = indices_[static_cast<std::size_t>(layer)];
        auto& last = last_page_len_[static_cast<std::size_t>(layer)];
        index_t first_changed = dirty_[static_cast<std::size_t>(layer)] ? 0 : rows;
        for (index_t row = 0; row < rows; ++row) {
            const std::size_t s = state(layer, row);
            const index_t tokens = stepping(row / sizes_.kv_heads) ? length(layer, row) : 0;
            const index_t pages = pages_for(tokens);
            last[static_cast<std::size_t>(row)] = static_cast<page_index_t>(tokens - std::max<index_t>(0, pages - 1) * ps);
            if (pages != used_pages_[s]) first_changed = std::min(first_changed, row), used_pages_[s] = pages;
        }
        for (index_t row = first_changed; row < rows; ++row) {
            const index_t pages = used_pages_[state(layer, row)];
            const index_t begin = indptr[static_cast<std::size_t>(row)];
            std::memcpy(indices.data() + begin, this->pages(layer, row), static_cast<std::size_t>(pages) * sizeof(page_index_t));
            indptr[static_cast<std::size_t>(row) + 1] = static_cast<page_index_t>(begin + pages);
        }
        dirty_[static_cast<std::size_t>(layer)] = false;
        return {rows,          sizes_.kv_heads, group_size,  head_dim, ps, indptr.data(), indices.data(), last.data(),
                first_changed < rows, captures};
    }

private:
    [[nodiscard]] std::size_t state(index_t layer, index_t row) const noexcept {
        return static_cast<std::size_t>(layer * rows_per_layer() + row);
    }

    layout sizes_;
    std::vector<index_t> page_offset_, capacity_pages_, pool_pages_;
    std::vector<page_index_t> pages_;  //!< every row's pages, at `page_offset_[state]`
    std::vector<index_t> allocated_, prompt_, decoded_, used_pages_;  // per (layer, row)
    std::vector<std::vector<page_index_t>> free_;                      // per layer
    std::vector<std::vector<page_index_t>> indptr_, indices_, last_page_len_;
    std::vector<bool> dirty_;
};

}  // namespace v1
}  // namespace heterocache
