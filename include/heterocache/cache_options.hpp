#pragma once
//! \file
//! Plan-time options of a `kv_cache`.

#include <algorithm>
#include <cmath>
#include <optional>

#include "heterocache/algorithm/protected_top_k.hpp"
#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! Everything the cache is planned with. Sizes are fixed here; the decode step allocates nothing.
struct cache_options {
    index_t sequences = 1;           //!< sequences sharing the cache (batch size)
    index_t max_prompt_tokens = 0;   //!< longest prompt any sequence will prefill
    index_t max_new_tokens = 0;      //!< most decode tokens any sequence will append
    double budget_ratio = 0.5;       //!< r, the kept fraction of the prompt KV, in (0, 1]
    index_t profiling_steps = 8;     //!< online profiling: queries observed before heads are classified ...
    //! ... taken from the last queries of the prefill's observation window (true: heads are classified when the
    //! prompt is prefilled, so compression starts at the first decode step), or from the first decode steps
    //! (false: those steps attend the whole prompt). A window shorter than `profiling_steps` leaves the rest
    //! to decode steps.
    bool profile_from_window = true;
    index_t top_k = 0;               //!< profiling top-k set size; 0 picks `clamp(T / 8, 8, 1024)` (DESIGN.md section 2)
    index_t decode_window = 0;       //!< 0 keeps every decode token; otherwise at most this many per head ...
    index_t decode_sink = 4;         //!< ... of which the first `decode_sink` decode tokens always stay
    index_t page_size = 16;          //!< tokens per hot page of the paged selection (1 gives one token per page)
    //! Prompt tokens every compressed head keeps within its cap, whatever its scores: the first `prompt_sink`
    //! (attention sinks) and the last `prompt_recent` (the observation window, where a prompt's question is).
    //! `method_default` (-1) lets a `make_*_cache` factory choose (baselines.hpp); a bare `kv_cache` reads it as 0.
    index_t prompt_sink = method_default;
    index_t prompt_recent = method_default;  //!< see `prompt_sink`
    //! The demotion floor: full heads (most stable first) are demoted to anchors until the compressed heads'
    //! mean cap is at least this share of `r*T` (`demote_until_feasible`), in a profile found online and in
    //! one a `make_*_cache` factory is given; 0 demotes only until the budget is feasible. `method_default`
    //! (-1) lets the factory choose (HeteroCache: `heterocache_min_compressed_share`); a bare `kv_cache`
    //! reads it as 0 (and never changes a profile it is given).
    double min_compressed_share = method_default;
    //! Tokens per page of a digest pivot's key digests: a pivot the demotion floor makes a digest pivot keeps
    //! its satellites and scores drift from the per-channel min/max keys of its prompt's pages of that many
    //! tokens (DESIGN.md section 5.3); 0 makes none (every demoted pivot an anchor, its satellites with it).
    //! `method_default` (-1) lets the factory choose (HeteroCache: `heterocache_digest_page_tokens`); a bare
    //! `kv_cache` reads it as 0.
    index_t digest_page_tokens = method_default;
    //! What the demotion floor makes of the pivots it demotes (`pivot_demotion`); empty: the method's choice
    //! (HeteroCache: `heterocache_pivot_demotion`, digest pivots only where no pivot would stay), else, and in
    //! a bare `kv_cache`, digest pivots wherever `digest_page_tokens > 0`. A mode that makes digest pivots needs
    //! `digest_page_tokens > 0` (the cache refuses it otherwise, naming `digest_page_tokens`).
    std::optional<pivot_demotion> demoted_pivots;
    //! Span carry: a compressed head takes part of its cap from its prefill scores carried forward,
    //! `s'(p) = max(s(p), c * s'(p - 1))` (`carry_scores_forward`; docs/eval/README.md, "Span carry"), so the
    //! tokens after an attended one (the rest of a value the answer copies token by token) stay hot with it;
    //! c in [0, 1), 0 ranks the scores as they are. `method_default` (-1) lets the factory choose (HeteroCache:
    //! `heterocache_prompt_span_carry`); a bare `kv_cache` reads it as 0.
    double prompt_span_carry = method_default;
    //! With a span carry: the share of a compressed head's cap (its protected ends aside) taken from the carried
    //! scores, after the rest from its own scores; in [0, 1]. `method_default` (-1) lets the factory choose
    //! (HeteroCache: `heterocache_prompt_span_share`); a bare `kv_cache` reads it as 1.
    double prompt_span_share = method_default;
    //! How compressed heads score the prompt over the observation window for their first selection; empty
    //! takes the monitor's (`monitor_traits::scoring`: the pooled window for HeteroCache and SnapKV, the window's
    //! attention mass for H2O, the last query for TOVA). On development prompts HeteroCache with `window_mass`
    //! had a lower KL than with its pooled window (r = 0.1: 0.136 against 0.179) but lost values copied token by
    //! token (UUID needles at r = 0.25: 3/10 against 8/10; docs/eval/README.md, "KL at small budgets").
    std::optional<prompt_scoring> selection_scoring;
    //! With a span carry: how the carried share's scores are computed over the observation window before they
    //! are carried forward (`prompt_scoring`); empty lets the factory choose (HeteroCache:
    //! `heterocache_span_scoring`); a bare `kv_cache` reads it as the selection's own (`selection_scoring`).
    //! `last_query` carries what the prompt's last query attends, the token the answer starts copying from, so
    //! a value the answer copies token by token stays hot (docs/eval/README.md, "Span scoring").
    std::optional<prompt_scoring> span_scoring;

    //! `prompt_sink` / `prompt_recent`: the value the method's factory picks.
    static constexpr index_t method_default = -1;

    //! Largest `max_prompt_tokens + max_new_tokens` (page ids and lengths of the selection are 32-bit).
    static constexpr index_t max_tokens = (index_t{1} << 30);
    //! Largest number of sequence slots.
    static constexpr index_t max_sequences = (index_t{1} << 20);

    //! Throws `invalid_argument_error`/`shape_error` naming the first bad field. The limits keep every size the
    //! cache derives from these fields within range (page ids are 32-bit).
    void validate() const {
        detail::require<shape_error>(sequences >= 1 && sequences <= max_sequences, "sequences", sequences, "[1, 2^20]");
        detail::require<shape_error>(max_prompt_tokens >= 1 && max_prompt_tokens <= max_tokens, "max_prompt_tokens",
                                     max_prompt_tokens, "[1, 2^30]");
        detail::require<shape_error>(max_new_tokens >= 0 && max_new_tokens <= max_tokens - max_prompt_tokens,
                                     "max_new_tokens", max_new_tokens, "[0, 2^30 - max_prompt_tokens]");
        detail::require(budget_ratio > 0.0 && budget_ratio <= 1.0, "r", budget_ratio, "(0, 1]");
        detail::require(profiling_steps >= 1, "profiling_steps", profiling_steps, "[1, inf)");
        detail::require(top_k >= 0, "top_k", top_k, "[0, inf) (0 = automatic)");
        detail::require(decode_window >= 0, "decode_window", decode_window, "[0, inf) (0 = unbounded)");
        detail::require(decode_sink >= 0 && (decode_window == 0 || decode_sink < decode_window), "decode_sink",
                        decode_sink, "[0, decode_window)");
        detail::require(page_size >= 1 && page_size <= 1024, "page_size", page_size, "[1, 1024]");
        detail::require(prompt_sink >= method_default, "prompt_sink", prompt_sink, "[0, inf) or -1 (the method's default)");
        detail::require(prompt_recent >= method_default, "prompt_recent", prompt_recent,
                        "[0, inf) or -1 (the method's default)");
        detail::require(min_compressed_share == method_default || (min_compressed_share >= 0.0 && min_compressed_share <= 1.0),
                        "min_compressed_share", min_compressed_share, "[0, 1] or -1 (the method's default)");
        detail::require(digest_page_tokens >= method_default && digest_page_tokens <= 1024, "digest_page_tokens",
                        digest_page_tokens, "[0, 1024] or -1 (the method's default)");
        detail::require(prompt_span_carry == method_default || (prompt_span_carry >= 0.0 && prompt_span_carry < 1.0),
                        "prompt_span_carry", prompt_span_carry, "[0, 1) or -1 (the method's default)");
        detail::require(prompt_span_share == method_default || (prompt_span_share >= 0.0 && prompt_span_share <= 1.0),
                        "prompt_span_share", prompt_span_share, "[0, 1] or -1 (the method's default)");
        if (demoted_pivots)
            detail::require(static_cast<int>(*demoted_pivots) <= 2, "demoted_pivots", static_cast<int>(*demoted_pivots),
                            "to_anchors (0), to_digest_pivots (1), to_digest_pivots_if_none_stay (2) or empty");
        if (selection_scoring)
            detail::require(static_cast<int>(*selection_scoring) >= 0 && static_cast<int>(*selection_scoring) <= 2,
                            "selection_scoring", static_cast<int>(*selection_scoring),
                            "pooled_window (0), window_mass (1), last_query (2) or empty (the monitor's)");
        if (span_scoring)
            detail::require(static_cast<int>(*span_scoring) >= 0 && static_cast<int>(*span_scoring) <= 2, "span_scoring",
                            static_cast<int>(*span_scoring),
                            "pooled_window (0), window_mass (1), last_query (2) or empty (the selection's)");
    }

    //! Top-k set size for a prompt of `prompt_tokens` tokens.
    [[nodiscard]] index_t profiling_top_k(index_t prompt_tokens) const noexcept {
        const index_t k = top_k > 0 ? top_k : std::clamp<index_t>(prompt_tokens / 8, 8, 1024);
        return std::min(k, prompt_tokens);
    }
    //! The prompt ends compressed heads keep (`method_default` read as 0).
    [[nodiscard]] protected_ends protected_prompt_ends() const noexcept {
        return {std::max<index_t>(prompt_sink, 0), std::max<index_t>(prompt_recent, 0)};
    }
    //! These options with `prompt_sink` / `prompt_recent` (and `min_compressed_share`, `digest_page_tokens`,
    //! `prompt_span_carry`, `prompt_span_share`) set to `sink` / `recent` (`share`, `digest_pages`,
    //! `span_carry_default`, `span_share_default`) where they are `method_default`.
    [[nodiscard]] cache_options with_method_defaults(index_t sink, index_t recent, double share = 0.0,
                                                     index_t digest_pages = 0, double span_carry_default = 0.0,
                                                     double span_share_default = 1.0) const noexcept {
        cache_options o = *this;
        if (o.prompt_span_carry == method_default) o.prompt_span_carry = span_carry_default;
        if (o.prompt_span_share == method_default) o.prompt_span_share = span_share_default;
        if (o.prompt_sink == method_default) o.prompt_sink = sink;
        if (o.prompt_recent == method_default) o.prompt_recent = recent;
        if (o.min_compressed_share == method_default) o.min_compressed_share = share;
        if (o.digest_page_tokens == method_default) o.digest_page_tokens = digest_pages;
        return o;
    }
    //! The demotion floor (`method_default` read as 0).
    [[nodiscard]] double demotion_floor() const noexcept { return std::max(min_compressed_share, 0.0); }
    //! Tokens per page of a digest pivot's key digests (`method_default` read as 0: no digest pivots).
    [[nodiscard]] index_t digest_pages() const noexcept { return std::max<index_t>(digest_page_tokens, 0); }
    //! The span carry (`method_default` read as 0: none).
    [[nodiscard]] double span_carry() const noexcept { return std::max(prompt_span_carry, 0.0); }
    //! The span carry's share of a cap (`method_default` read as 1).
    [[nodiscard]] double span_share() const noexcept { return prompt_span_share < 0.0 ? 1.0 : prompt_span_share; }
    //! What the demotion floor makes of a pivot: `demoted_pivots`, or digest pivots wherever there are digest pages.
    [[nodiscard]] pivot_demotion pivot_demotion_mode() const noexcept {
        return demoted_pivots.value_or(digest_pages() > 0 ? pivot_demotion::to_digest_pivots : pivot_demotion::to_anchors);
    }
    //! Hot slots a row reserves for decode tokens.
    [[nodiscard]] index_t decode_capacity() const noexcept {
        return decode_window > 0 ? std::min(decode_window, max_new_tokens) : max_new_tokens;
    }
};

}  // namespace v1
}  // namespace heterocache
