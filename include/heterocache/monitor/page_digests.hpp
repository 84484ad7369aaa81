#pragma once
//! \file
//! Page digests of prompt keys (Quest's, DESIGN.md section 5.3): per page of positions, the channel-wise minimum
//! and maximum key, and the ranking of the prompt they bound for a query group.

#include <algorithm>
#include <cstddef>
#include <limits>
#include <span>
#include <vector>

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
//! query group (`rank`). Planned once: two keys per page per slot, in fp32.
class page_digests {
public:
    //! Room for `slots` heads of prompts up to `max_prompt_tokens`, pages of `page_tokens`, keys of `head_dim`.
    void plan(std::size_t slots, index_t max_prompt_tokens, index_t page_tokens, index_t head_dim) {
        detail::require(page_tokens >= 1, "page_tokens", page_tokens, "[1, inf)");
        page_tokens_ = page_tokens;
        head_dim_ = head_dim;
        max_pages_ = (max_prompt_tokens + page_tokens - 1) / page_tokens;
        digests_.assign(slots * static_cast<std::size_t>(2 * max_pages_ * head_dim), 0.0f);
        ready_.assign(slots, false);
        key_.assign(static_cast<std::size_t>(head_dim), 0.0f);
    }
    [[nodiscard]] bool planned() const noexcept { return !ready_.empty(); }
    [[nodiscard]] index_t page_tokens() const noexcept { return page_tokens_; }

    //! A new prompt in `slot`: its digests are built again before the next ranking.
    void invalidate(std::size_t slot) noexcept { ready_[slot] = false; }
    [[nodiscard]] bool ready(std::size_t slot) const noexcept { return ready_[slot]; }

    //! Builds the digests of `slot` over positions `[0, prompt_tokens)`; `key(position, out)` writes the key at
    //! a position as `head_dim` floats. O(T * d).
    template <class Key>
    void build(std::size_t slot, index_t prompt_tokens, Key&& key) {
        const index_t d = head_dim_;
        float* k = key_.data();
        for (index_t first = 0, page = 0; first < prompt_tokens; first += page_tokens_, ++page) {
            float* low = page_min(slot, page);
            float* high = low + d;
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
        }
        ready_[slot] = true;
    }

    //! Writes to `ranking[p]` (one entry per prompt position) the largest `page_score_bound` of the page of `p`
    //! over the `group` queries at `queries + g * query_stride`. O(group * (T / page_tokens) * d).
    void rank(std::size_t slot, const float* queries, index_t query_stride, index_t group, std::span<float> ranking) const {
        const auto t = static_cast<index_t>(ranking.size());
        for (index_t first = 0, page = 0; first < t; first += page_tokens_, ++page) {
            const float* low = page_min(slot, page);
            float best = -std::numeric_limits<float>::infinity();
            for (index_t g = 0; g < group; ++g)
                best = std::max(best, page_score_bound(queries + g * query_stride, low, low + head_dim_, head_dim_));
            std::fill(ranking.begin() + first, ranking.begin() + std::min(t, first + page_tokens_), best);
        }
    }

private:
    [[nodiscard]] const float* page_min(std::size_t slot, index_t page) const noexcept {
        return digests_.data() + (slot * static_cast<std::size_t>(max_pages_) + static_cast<std::size_t>(page)) *
                                     static_cast<std::size_t>(2 * head_dim_);
    }
    [[nodiscard]] float* page_min(std::size_t slot, index_t page) noexcept {
        return const_cast<float*>(static_cast<const page_digests&>(*this).page_min(slot, page));
    }

    index_t page_tokens_ = 16, head_dim_ = 0, max_pages_ = 0;
    std::vector<float> digests_, key_;
    std::vector<bool> ready_;
};

}  // namespace v1
}  // namespace heterocache
