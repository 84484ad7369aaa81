#pragma once
//! \file
//! `prompt_selector`: the hot prompt tokens of every head of a (layer, sequence), chosen from its prefill
//! scores by its role (DESIGN.md section 2, "Prefill").

#include <algorithm>
#include <limits>
#include <numeric>
#include <span>
#include <vector>

#include "heterocache/algorithm/overlap.hpp"
#include "heterocache/algorithm/protected_top_k.hpp"
#include "heterocache/algorithm/span_carry.hpp"
#include "heterocache/cache/row_table.hpp"
#include "heterocache/profile/head_profile.hpp"
#include "heterocache/storage/storage_plan.hpp"

namespace heterocache {
inline namespace v1 {

//! Chooses, per KV head of one (layer, sequence), the positions its row's prompt tokens hold: the whole
//! prompt for a full head (and for every head before a profile exists), the top-cap positions of its scores
//! for a compressed head, its protected ends first (`protected_top_k_positions`); a pivot's reference set is the top-B of its scores. Each head's positions leave room
//! for the decode tokens a compaction moves behind them (`decode_positions`). With a span carry
//! (`cache_options::prompt_span_carry`) a compressed head takes `prompt_span_share` of its cap from its scores
//! carried forward (`carry_scores_forward`), the rest from its own; a pivot's reference set stays the top-B of
//! its own scores. Planned once; allocates
//! nothing.
class prompt_selector {
public:
    void plan(index_t kv_heads, index_t max_prompt_tokens, index_t decode_capacity, double span_carry = 0.0,
              double span_share = 1.0) {
        span_carry_ = static_cast<float>(span_carry);
        span_share_ = span_share;
        carried_.assign(span_carry > 0.0 ? static_cast<std::size_t>(max_prompt_tokens) : 0, 0.0f);
        stride_ = max_prompt_tokens + decode_capacity;
        positions_.assign(static_cast<std::size_t>(kv_heads * stride_), 0);
        reference_.assign(static_cast<std::size_t>(max_prompt_tokens), 0);
        scratch_.assign(static_cast<std::size_t>(max_prompt_tokens), 0);
        rows_.assign(static_cast<std::size_t>(kv_heads), refresh_row{});
    }

    //! One refill row per head of (`layer`, `seq`), on the row table's pages: `scores(head)` are the head's
    //! prefill scores over the `prompt_tokens` positions, `span_scores(head)` the scores its span carry's share
    //! is carried from (`cache_options::span_scoring`; the same as `scores(head)` unless scored apart), `cap(head)` a compressed head's cap, `ends` the positions it always keeps;
    //! `on_reference(head, set)` receives a pivot's (or digest pivot's) top-`base_length` set (with `profile` only). `room` more
    //! positions follow each row's selection (0, or the decode tokens of a compaction).
    template <class Scores, class SpanScores, class Cap, class OnReference>
    std::span<refresh_row> choose(index_t layer, index_t seq, index_t prompt_tokens, const head_profile* profile,
                                  const row_table& rows, Scores&& scores, SpanScores&& span_scores, Cap&& cap, protected_ends ends,
                                  index_t base_length, index_t room, OnReference&& on_reference) {
        const auto heads = static_cast<index_t>(rows_.size());
        for (index_t head = 0; head < heads; ++head) {
            const head_role role = profile != nullptr ? profile->at(layer, head).role : head_role::volatile_;
            const bool whole = keeps_full_kv(role);
            const std::span<index_t> chosen(positions_.data() + head * stride_,
                                            static_cast<std::size_t>(whole ? prompt_tokens : cap(head)));
            const std::span<const float> head_scores = scores(head);
            if (whole) std::iota(chosen.begin(), chosen.end(), index_t{0});
            else if (span_carry_ > 0.0f) choose_with_carry(head_scores, span_scores(head), chosen, ends);
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
    //! A compressed head's cap with a span carry: its protected ends and the top of its own scores first, then
    //! `span_share_` of the cap (less the ends) from `span_scores` carried forward, over the positions left,
    //! merged by position.
    void choose_with_carry(std::span<const float> scores, std::span<const float> span_scores, std::span<index_t> chosen,
                           protected_ends ends) {
        const auto cap = static_cast<index_t>(chosen.size());
        const index_t kept_ends = std::min(cap, ends.sink + ends.recent);
        const auto by_carry = std::min(cap - kept_ends, static_cast<index_t>(span_share_ * static_cast<double>(cap)));
        const std::span<index_t> own = chosen.first(static_cast<std::size_t>(cap - by_carry));
        protected_top_k_positions(scores, own, scratch_, ends);
        const std::span<float> carried(carried_.data(), scores.size());
        carry_scores_forward(span_scores, carried, span_carry_);
        for (const index_t p : own) carried[static_cast<std::size_t>(p)] = -std::numeric_limits<float>::infinity();
        const std::span<index_t> rest = chosen.subspan(own.size());
        top_k_positions(carried, rest, scratch_);
        const auto split = static_cast<std::ptrdiff_t>(own.size());
        std::copy(chosen.begin(), chosen.end(), scratch_.begin());  // merged through the scratch: no allocation
        std::merge(scratch_.begin(), scratch_.begin() + split, scratch_.begin() + split,
                   scratch_.begin() + static_cast<std::ptrdiff_t>(chosen.size()), chosen.begin());
    }

    index_t stride_ = 0;
    double span_share_ = 1.0;
    float span_carry_ = 0.0f;
    std::vector<index_t> positions_, reference_, scratch_;
    std::vector<float> carried_;
    std::vector<refresh_row> rows_;
};

}  // namespace v1
}  // namespace heterocache
