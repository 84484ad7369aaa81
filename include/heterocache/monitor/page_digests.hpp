#pragma once
//! \file
//! Page digests of prompt keys (Quest's, DESIGN.md section 5.3): per page of positions, the channel-wise minimum
//! and maximum key, and the ranking of the prompt they bound for a query group.

#include <algorithm>
#include <cstddef>
#include <limits>
#include <span>
#include <vector>

#include "heterocache/algorithm/overlap.hpp"
#include "heterocache/errors.hpp"
#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! Quest's bound on `q . k` over a page whose keys lie channel-wise in `[min, max]`:
//! `sum_c max(q_c * min_c, q_c * max_c)` over `head_dim` channels. O(d).
inline float page_score_bound(const float* query, const float* min, const float* max, index_t head_dim) noexcept {
    float bound = 0.0f;
    for (index_t c = 0; c < head_dim; ++c) bound += std::max(query[c] * min[c], query[c] * max[c]);
    return bound;
}

//! The page digests of a fixed set of heads (slots `[0, slots)`, numbered by the owner): the prompt keys of a
//! slot are cut into pages of `page_tokens` positions, each summarized by its channel-wise minimum and maximum
//! key. A slot's digests are built once per prompt (`build`, from the cold tier) and rank the prompt for any
//! query group (`rank`, `rank_pages`). Planned once: two keys per page per slot, in fp32, stored channel-major
//! (for each channel, the minima of every page, then the maxima) so that a ranking runs across pages in SIMD
//! lanes and adds each page's channels in the order `page_score_bound` does: the same bounds to the bit.
class page_digests {
public:
    //! Room for `slots` heads of prompts up to `max_prompt_tokens`, pages of `page_tokens`, keys of `head_dim`.
    void plan(std::size_t slots, index_t max_prompt_tokens, index_t page_tokens, index_t head_dim) {
        detail::require(page_tokens >= 1, "page_tokens", page_tokens, "[1, inf)");
        page_tokens_ = page_tokens;
        head_dim_ = head_dim;
        max_pages_ = (max_prompt_tokens + page_tokens - 1) / page_tokens;
        digests_.assign(slots * slot_floats(), 0.0f);
        ready_.assign(slots, false);
        key_.assign(static_cast<std::size_t>(head_dim), 0.0f);
        low_.assign(static_cast<std::size_t>(head_dim), 0.0f);
        high_.assign(static_cast<std::size_t>(head_dim), 0.0f);
        bounds_.assign(static_cast<std::size_t>(2 * max_pages_), 0.0f);
    }
    [[nodiscard]] bool planned() const noexcept { return !ready_.empty(); }
    [[nodiscard]] index_t page_tokens() const noexcept { return page_tokens_; }
    //! Pages of a prompt of `prompt_tokens` positions (the last one may be shorter).
    [[nodiscard]] index_t pages(index_t prompt_tokens) const noexcept { return (prompt_tokens + page_tokens_ - 1) / page_tokens_; }
    //! The most pages of a planned prompt.
    [[nodiscard]] index_t max_pages() const noexcept { return max_pages_; }

    //! A new prompt in `slot`: its digests are built again before the next ranking.
    void invalidate(std::size_t slot) noexcept { ready_[slot] = false; }
    [[nodiscard]] bool ready(std::size_t slot) const noexcept { return ready_[slot]; }

    //! Builds the digests of `slot` over positions `[0, prompt_tokens)`; `key(position, out)` writes the key at
    //! a position as `head_dim` floats. O(T * d).
    template <class Key>
    void build(std::size_t slot, index_t prompt_tokens, Key&& key) {
        const index_t d = head_dim_;
        float* k = key_.data();
        float* low = low_.data();
        float* high = high_.data();
        for (index_t first = 0, page = 0; first < prompt_tokens; first += page_tokens_, ++page) {
            key(first, k);
            std::copy(k, k + d, low);
            std::copy(k, k + d, high);
            for (index_t p = first + 1; p < std::min(prompt_tokens, first + page_tokens_); ++p) {
                key(p, k);
                for (index_t c = 0; c < d; ++c) {
                    low[c] = std::min(low[c], k[c]);
                    high[c] = std::max(high[c], k[c]);
                }
            }
            for (index_t c = 0; c < d; ++c) {
                minima(slot, c)[page] = low[c];
                maxima(slot, c)[page] = high[c];
            }
        }
        ready_[slot] = true;
    }

    //! Writes to `scores[page]` (one entry per page, `pages(T)` of them) the largest `page_score_bound` of the
    //! page over the `group` queries at `queries + g * query_stride`. O(group * pages * d).
    void rank_pages(std::size_t slot, const float* queries, index_t query_stride, index_t group, std::span<float> scores) {
        const auto n = static_cast<index_t>(scores.size());
        detail::require<shape_error>(n <= max_pages_, "scores.size()", scores.size(), "[0, max_pages()]");
        float* best = scores.data();
        float* bound = bounds_.data();
        std::fill(best, best + n, -std::numeric_limits<float>::infinity());
        for (index_t g = 0; g < group; ++g) {
            const float* query = queries + g * query_stride;
            std::fill(bound, bound + n, 0.0f);
            for (index_t c = 0; c < head_dim_; ++c) {
                const float q = query[c];
                const float* low = minima(slot, c);
                const float* high = maxima(slot, c);
                for (index_t p = 0; p < n; ++p) bound[p] += std::max(q * low[p], q * high[p]);
            }
            for (index_t p = 0; p < n; ++p) best[p] = std::max(best[p], bound[p]);
        }
    }

    //! Writes to `ranking[p]` (one entry per prompt position) the score `rank_pages` gives the page of `p`.
    //! O(group * (T / page_tokens) * d + T).
    void rank(std::size_t slot, const float* queries, index_t query_stride, index_t group, std::span<float> ranking) {
        const auto t = static_cast<index_t>(ranking.size());
        const index_t n = pages(t);
        const std::span<float> scores(bounds_.data() + max_pages_, static_cast<std::size_t>(n));
        rank_pages(slot, queries, query_stride, group, scores);
        spread(scores, ranking);
    }
    //! Writes to `ranking[p]` the entry of `page_scores` of the page of `p`. O(T).
    void spread(std::span<const float> page_scores, std::span<float> ranking) const {
        const auto t = static_cast<index_t>(ranking.size());
        detail::require<shape_error>(static_cast<index_t>(page_scores.size()) == pages(t), "page_scores.size()",
                                     page_scores.size(), "the pages of ranking.size()");
        for (index_t first = 0, page = 0; first < t; first += page_tokens_, ++page)
            std::fill(ranking.begin() + first, ranking.begin() + std::min(t, first + page_tokens_),
                      page_scores[static_cast<std::size_t>(page)]);
    }

private:
    [[nodiscard]] std::size_t slot_floats() const noexcept { return static_cast<std::size_t>(2 * head_dim_ * max_pages_); }
    [[nodiscard]] float* minima(std::size_t slot, index_t channel) noexcept {
        return digests_.data() + slot * slot_floats() + static_cast<std::size_t>(2 * channel * max_pages_);
    }
    [[nodiscard]] float* maxima(std::size_t slot, index_t channel) noexcept { return minima(slot, channel) + max_pages_; }

    index_t page_tokens_ = 16, head_dim_ = 0, max_pages_ = 0;
    std::vector<float> digests_, key_, low_, high_;
    std::vector<float> bounds_;  //!< one query's bounds, then the group's best (`rank`), per page
    std::vector<bool> ready_;
};

//! The top `out.size()` positions of a prompt of `prompt_tokens` positions in pages of `page_tokens` (the last
//! one may be shorter) whose every position scores its page's `page_scores` entry, ascending: exactly what
//! `top_k_positions` gives over the positions' ranking (ties to the lower position), found from the pages
//! (O(pages + k), not O(T)). `scratch`: at least `2 * page_scores.size()` entries.
inline void top_positions_of_pages(std::span<const float> page_scores, index_t page_tokens, index_t prompt_tokens,
                                   std::span<index_t> out, std::span<index_t> scratch) {
    const auto n = static_cast<index_t>(page_scores.size());
    const auto k = static_cast<index_t>(out.size());
    detail::require(page_tokens >= 1, "page_tokens", page_tokens, "[1, inf)");
    detail::require<shape_error>(n == (prompt_tokens + page_tokens - 1) / page_tokens, "page_scores.size()", n,
                                 "the pages of prompt_tokens");
    detail::require(k <= prompt_tokens, "k", k, "[0, prompt_tokens]");
    detail::require(static_cast<index_t>(scratch.size()) >= 2 * n, "scratch.size()", scratch.size(), "[2 * pages, inf)");
    if (k == 0) return;
    // The first m pages in the order (score descending, page ascending) hold at least k positions: every page
    // but the last has page_tokens of them.
    const index_t m = std::min(n, (k + page_tokens - 1) / page_tokens + 1);
    const std::span<index_t> chosen = scratch.first(static_cast<std::size_t>(m));
    top_k_positions(page_scores, chosen, scratch.subspan(static_cast<std::size_t>(m)));
    // Walk them in that order until k positions are taken.
    const std::span<index_t> order = scratch.subspan(static_cast<std::size_t>(m), static_cast<std::size_t>(m));
    std::copy(chosen.begin(), chosen.end(), order.begin());
    std::sort(order.begin(), order.end(), [&](index_t a, index_t b) {
        const float sa = page_scores[static_cast<std::size_t>(a)], sb = page_scores[static_cast<std::size_t>(b)];
        return sa > sb || (sa == sb && a < b);
    });
    const auto page_size = [&](index_t page) { return std::min(page_tokens, prompt_tokens - page * page_tokens); };
    index_t remaining = k, taken = 0, last_count = 0;
    while (remaining > 0) {  // the first m pages of the order hold k positions
        last_count = std::min(remaining, page_size(order[static_cast<std::size_t>(taken++)]));
        remaining -= last_count;
    }
    const index_t last_page = order[static_cast<std::size_t>(taken - 1)];
    // The pages taken, by position; the last one taken keeps its lowest last_count positions.
    std::sort(order.begin(), order.begin() + taken);
    index_t written = 0;
    for (index_t i = 0; i < taken; ++i) {
        const index_t page = order[static_cast<std::size_t>(i)];
        const index_t count = page == last_page ? last_count : page_size(page);
        for (index_t j = 0; j < count; ++j) out[static_cast<std::size_t>(written++)] = page * page_tokens + j;
    }
}

}  // namespace v1
}  // namespace heterocache
