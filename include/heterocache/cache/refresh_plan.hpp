#pragma once
//! \file
//! `refresh_plan`: the refresh request a decode step of one layer builds, in buffers planned once.

#include <algorithm>
#include <span>
#include <vector>

#include "heterocache/algorithm/protected_top_k.hpp"
#include "heterocache/storage/storage_plan.hpp"

namespace heterocache {
inline namespace v1 {

//! Per layer, the rows a monitor asked to refresh at this step and, per (layer, row), the positions each
//! receives (the top-cap positions of the monitor's ranking), kept until the retriever's `wait(layer)`
//! returns (a refresh runs while the next layers compute). One request per layer and step; a row asked
//! twice in a step keeps the latest ranking. No call after `plan` allocates.
class refresh_plan {
public:
    //! Plans for rows of which row `row` of `layer` holds at most `prompt_capacity(layer, row)` prompt tokens
    //! (0 for a row never refreshed).
    template <class PromptCapacity>
    void plan(index_t layers, index_t rows_per_layer, PromptCapacity&& prompt_capacity) {
        rows_per_layer_ = rows_per_layer;
        const auto states = static_cast<std::size_t>(layers * rows_per_layer);
        offset_.assign(states, 0);
        index_t total = 0;
        max_request_ = 0;
        for (index_t layer = 0; layer < layers; ++layer) {
            index_t request = 0;
            for (index_t row = 0; row < rows_per_layer; ++row) {
                const index_t capacity = prompt_capacity(layer, row);
                offset_[static_cast<std::size_t>(layer * rows_per_layer + row)] = total;
                total += capacity;
                request += capacity;
            }
            max_request_ = std::max(max_request_, request);
        }
        positions_.assign(static_cast<std::size_t>(total), 0);
        rows_.assign(states, refresh_row{});
        used_.assign(static_cast<std::size_t>(layers), 0);
        slot_of_row_.assign(static_cast<std::size_t>(rows_per_layer), -1);
    }

    //! Largest request a step can build.
    [[nodiscard]] index_t max_request_tokens() const noexcept { return max_request_; }

    //! Starts the request of `layer` for this step (empty).
    void start(index_t layer) noexcept {
        if (used_.empty()) return;  // not planned: nothing is refreshed before a profile exists
        used_[static_cast<std::size_t>(layer)] = 0;
        std::fill(slot_of_row_.begin(), slot_of_row_.end(), index_t{-1});
    }
    //! Asks that `row` of `layer` (on `pages`, `count` prompt tokens) receives the top-`count` positions of
    //! `ranking`, its protected `ends` first (`protected_top_k_positions`). `scratch` holds at least `ranking.size()` entries.
    void add(index_t layer, index_t row, const page_index_t* pages, index_t count, std::span<const float> ranking,
             protected_ends ends, std::span<index_t> scratch) {
        const auto state = static_cast<std::size_t>(layer * rows_per_layer_ + row);
        const std::span<index_t> positions(positions_.data() + offset_[state], static_cast<std::size_t>(count));
        protected_top_k_positions(ranking, positions, scratch, ends);
        index_t& slot = slot_of_row_[static_cast<std::size_t>(row)];
        if (slot >= 0) return;  // asked twice in one step: the latest ranking wins, one row
        index_t& used = used_[static_cast<std::size_t>(layer)];
        slot = used;
        rows_[static_cast<std::size_t>(layer * rows_per_layer_ + used++)] = {row, pages, 0, positions};
    }
    //! The request `layer` built since `start` (no rows when nothing was asked).
    [[nodiscard]] refresh_request request(index_t layer) const noexcept {
        if (used_.empty()) return {layer, {}};
        return {layer, std::span<const refresh_row>(rows_.data() + layer * rows_per_layer_,
                                                    static_cast<std::size_t>(used_[static_cast<std::size_t>(layer)]))};
    }

private:
    index_t rows_per_layer_ = 0, max_request_ = 0;
    std::vector<index_t> offset_, positions_;
    std::vector<refresh_row> rows_;
    std::vector<index_t> used_, slot_of_row_;
};

}  // namespace v1
}  // namespace heterocache
