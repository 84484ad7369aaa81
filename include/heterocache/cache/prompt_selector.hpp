#pragma once
//! \file
//! `prompt_selector`: the hot prompt tokens of every head of a (layer, sequence), chosen from its prefill
//! scores by its role (DESIGN.md section 2, "Prefill").

#include <numeric>
#include <span>
#include <vector>

#include "heterocache/algorithm/overlap.hpp"
#include "heterocache/algorithm/protected_top_k.hpp"
#include "heterocache/cache/row_table.hpp"
#include "heterocache/profile/head_profile.hpp"
#include "heterocache/storage/storage_plan.hpp"

namespace heterocache {
inline namespace v1 {

//! Chooses, per KV head of one (layer, sequence), the positions its row's prompt tokens hold: the whole
//! prompt for a full head (and for every head before a profile exists), the top-cap positions of its scores
//! for a compressed head, its protected ends first (`protected_top_k_positions`); a pivot's reference set is the top-B of its scores. Each head's positions leave room
//! for the decode tokens a compaction moves behind them (`decode_positions`). Planned once; allocates nothing.
class prompt_selector {
public:
    void plan(index_t kv_heads, index_t max_prompt_tokens, index_t decode_capacity) {
        stride_ = max_prompt_tokens + decode_capacity;
        positions_.assign(static_cast<std::size_t>(kv_heads * stride_), 0);
        reference_.assign(static_cast<std::size_t>(max_prompt_tokens), 0);
        scratch_.assign(static_cast<std::size_t>(max_prompt_tokens), 0);
        rows_.assign(static_cast<std::size_t>(kv_heads), refresh_row{});
    }

    //! One refill row per head of (`layer`, `seq`), on the row table's pages: `scores(head)` are the head's
    //! prefill scores over the `prompt_tokens` positions, `cap(head)` a compressed head's cap, `ends` the positions it always keeps;
    //! `on_reference(head, set)` receives a pivot's (or digest pivot's) top-`base_length` set (with `profile` only). `room` more
    //! positions follow each row's selection (0, or the decode tokens of a compaction).
    template <class Scores, class Cap, class OnReference>
    std::span<refresh_row> choose(index_t layer, index_t seq, index_t prompt_tokens, const head_profile* profile,
                                  const row_table& rows, Scores&& scores, Cap&& cap, protected_ends ends,
                                  index_t base_length, index_t room, OnReference&& on_reference) {
        const auto heads = static_cast<index_t>(rows_.size());
        for (index_t head = 0; head < heads; ++head) {
            const head_role role = profile != nullptr ? profile->at(layer, head).role : head_role::volatile_;
            const bool whole = keeps_full_kv(role);
            const std::span<index_t> chosen(positions_.data() + head * stride_,
                                            static_cast<std::size_t>(whole ? prompt_tokens : cap(head)));
            const std::span<const float> head_scores = scores(head);
            if (whole) std::iota(chosen.begin(), chosen.end(), index_t{0});
            else protected_top_k_positions(head_scores, chosen, scratch_, ends);
            if (is_pivot(role)) {
                const std::span<index_t> reference(reference_.data(), static_cast<std::size_t>(base_length));
                top_k_positions(head_scores, reference, scratch_);
                on_reference(head, std::span<const index_t>(reference));
            }
            const index_t row = seq * heads + head;
            rows_[static_cast<std::size_t>(head)] = {row, rows.pages(layer, row), 0,
                                                     std::span<const index_t>(chosen.data(), chosen.size() + static_cast<std::size_t>(room))};
        }
        return rows_;
    }
    //! The `room` positions behind head `head`'s selection of `prompt` positions, for the caller to fill.
    [[nodiscard]] index_t* decode_positions(index_t head, index_t prompt) noexcept {
        return positions_.data() + head * stride_ + prompt;
    }

private:
    index_t stride_ = 0;
    std::vector<index_t> positions_, reference_, scratch_;
    std::vector<refresh_row> rows_;
};

}  // namespace v1
}  // namespace heterocache
