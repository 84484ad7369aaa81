#pragma once
//! \file
//! `score_captures`: the buffers an attention kernel writes the scores a drift monitor reads into, each
//! stamped with the step that wrote it (DESIGN.md section 3.1, "kv_cache is orchestration only").

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "heterocache/attention/paged_selection.hpp"
#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! One buffer of `group_size * max_prompt_tokens` floats per (layer, row) whose scores are wanted, and one
//! stamp per (layer, row). `requests` gives the kernel, for one layer and step, a `score_capture` per row;
//! the kernel wrapper stamps each buffer it filled with that step (`mark_written`), and `read` returns a
//! buffer only when its stamp is the step asked about, so scores of an earlier step are never taken for this
//! one. Planned once; no call after `plan` allocates.
class score_captures {
public:
    //! Plans buffers for the (layer, row) pairs `wanted(layer, row)` is true of.
    template <class Wanted>
    void plan(index_t layers, index_t rows_per_layer, index_t group_size, index_t max_prompt_tokens, Wanted&& wanted) {
        rows_ = rows_per_layer;
        group_size_ = group_size;
        floats_per_buffer_ = group_size * max_prompt_tokens;
        const auto entries = static_cast<std::size_t>(layers * rows_per_layer);
        offset_.assign(entries, -1);
        index_t floats = 0;
        for (index_t layer = 0; layer < layers; ++layer)
            for (index_t row = 0; row < rows_per_layer; ++row) {
                if (!wanted(layer, row)) continue;
                offset_[static_cast<std::size_t>(layer * rows_per_layer + row)] = floats;
                floats += floats_per_buffer_;
            }
        scores_.assign(static_cast<std::size_t>(floats), 0.0f);
        stamps_.assign(entries, 0);
        requests_.assign(entries, score_capture{});
    }

    //! Whether any buffer is planned.
    [[nodiscard]] bool empty() const noexcept { return scores_.empty(); }

    //! The capture requests of `layer` at `step` (>= 1): row `row` asks for its first `tokens(row)` tokens where
    //! it has a buffer and `tokens(row) > 0`, for nothing otherwise. Empty when no buffer is planned. O(rows).
    template <class Tokens>
    [[nodiscard]] std::span<const score_capture> requests(index_t layer, std::uint64_t step, Tokens&& tokens) {
        if (empty()) return {};
        const std::span<score_capture> layer_requests(requests_.data() + layer * rows_, static_cast<std::size_t>(rows_));
        for (index_t row = 0; row < rows_; ++row) {
            const auto entry = static_cast<std::size_t>(layer * rows_ + row);
            const index_t count = offset_[entry] >= 0 ? tokens(row) : 0;
            layer_requests[static_cast<std::size_t>(row)] =
                count > 0 ? score_capture{scores_.data() + offset_[entry], count, &stamps_[entry], step} : score_capture{};
        }
        return layer_requests;
    }

    //! The scores of (`layer`, `row`) the kernel wrote at `step`, `group_size * tokens` floats, or nothing when
    //! the row has no buffer or it was not written at `step`.
    [[nodiscard]] std::optional<std::span<const float>> read(index_t layer, index_t row, std::uint64_t step,
                                                             index_t tokens) const noexcept {
        if (empty()) return std::nullopt;
        const auto entry = static_cast<std::size_t>(layer * rows_ + row);
        if (offset_[entry] < 0 || stamps_[entry] != step) return std::nullopt;
        return std::span<const float>(scores_.data() + offset_[entry],
                                      static_cast<std::size_t>(group_size_ * tokens));
    }

    //! Whether the last `requests(layer, ...)` asked row `row` for scores.
    [[nodiscard]] bool requested(index_t layer, index_t row) const noexcept {
        return !empty() && requests_[static_cast<std::size_t>(layer * rows_ + row)].scores != nullptr;
    }
    //! Whether (`layer`, `row`) has a buffer.
    [[nodiscard]] bool planned(index_t layer, index_t row) const noexcept {
        return !empty() && offset_[static_cast<std::size_t>(layer * rows_ + row)] >= 0;
    }

private:
    index_t rows_ = 0, group_size_ = 0, floats_per_buffer_ = 0;
    std::vector<index_t> offset_;
    std::vector<float> scores_;
    std::vector<std::uint64_t> stamps_;
    std::vector<score_capture> requests_;
};

}  // namespace v1
}  // namespace heterocache
