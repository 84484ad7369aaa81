#pragma once
//! \file
//! Vocabulary types shared by every policy: indices, head roles and the model shape.

#include <cstdint>
#include <string_view>

#include "heterocache/errors.hpp"

namespace heterocache {
inline namespace v1 {

//! Signed index type used for tokens, heads, layers and slots.
using index_t = std::int64_t;

//! The four roles of DESIGN.md section 2 ("Roles").
enum class head_role : std::uint8_t {
    anchor,     //!< stable, unclustered: keeps a static top-cap selection chosen at prefill
    volatile_,  //!< drifting, unclustered: keeps the full KV
    pivot,      //!< cluster representative: keeps the full KV and monitors drift
    satellite,  //!< cluster member: keeps top-cap tokens, refreshed when its pivot drifts
    //! a pivot demoted to fit a small budget (DESIGN.md section 5.3): keeps top-cap tokens like its satellites
    //! and scores drift from per-page key digests of its prompt instead of its full KV
    digest_pivot,
};

//! Whether a role keeps the full KV of its head in the hot tier.
constexpr bool keeps_full_kv(head_role role) noexcept {
    return role == head_role::volatile_ || role == head_role::pivot;
}
//! Whether a role represents a cluster (a pivot, holding its full KV or scoring from digests).
constexpr bool is_pivot(head_role role) noexcept { return role == head_role::pivot || role == head_role::digest_pivot; }

//! What a demoted pivot becomes (`demote_until_feasible`, `cache_options::digest_page_tokens`).
enum class pivot_demotion : std::uint8_t {
    to_anchors,        //!< an anchor, and its satellites anchors too (static from then on)
    to_digest_pivots,  //!< a `digest_pivot`: compressed, its cluster kept, drift scored from page digests
    //! `to_digest_pivots` where demoting to anchors would leave the profile no pivot at all (no drift tracked
    //! anywhere), `to_anchors` otherwise
    to_digest_pivots_if_none_stay,
};

//! How the prefill scores a compressed head's first selection is taken from are computed over the observation
//! window (the last prompt queries), per KV head:
enum class prompt_scoring {
    pooled_window,  //!< SnapKV: mean attention over the window, maximum over the query group, average pool of 5
    window_mass,    //!< H2O: attention accumulated over the window, mean over the query group, no pooling
    last_query,     //!< TOVA: attention of the last prompt query, mean over the query group, no pooling
};

//! Lower-case name of a role as used in profile files and printed maps.
constexpr std::string_view role_name(head_role role) noexcept {
    switch (role) {
        case head_role::anchor: return "anchor";
        case head_role::volatile_: return "volatile";
        case head_role::pivot: return "pivot";
        case head_role::satellite: return "satellite";
        case head_role::digest_pivot: return "digest-pivot";
    }
    return "unknown";
}

//! Attention shape of a model: `L` layers, `Hkv` KV heads, `G = Hq / Hkv` query heads per KV head, `d` head dim.
struct model_shape {
    index_t layers = 0;
    index_t kv_heads = 0;
    index_t query_heads = 0;
    index_t head_dim = 0;

    //! Query heads sharing one KV head (GQA group size).
    [[nodiscard]] constexpr index_t group_size() const noexcept { return kv_heads > 0 ? query_heads / kv_heads : 0; }
    //! Total number of KV heads `N = L * Hkv`.
    [[nodiscard]] constexpr index_t total_kv_heads() const noexcept { return layers * kv_heads; }

    //! Largest number of layers, of KV heads per layer, and of query heads per layer (far above any model;
    //! they keep every size derived from a shape within range).
    static constexpr index_t max_layers = index_t{1} << 16, max_kv_heads = index_t{1} << 16, max_query_heads = index_t{1} << 20;

    //! Throws `shape_error` naming the first field outside its range.
    void validate() const {
        detail::require<shape_error>(layers > 0 && layers <= max_layers, "layers", layers, "[1, 65536]");
        detail::require<shape_error>(kv_heads > 0 && kv_heads <= max_kv_heads, "kv_heads", kv_heads, "[1, 65536]");
        detail::require<shape_error>(query_heads > 0 && query_heads <= max_query_heads && query_heads % kv_heads == 0,
                                     "query_heads", query_heads, "a positive multiple of kv_heads, at most 2^20");
        detail::require<shape_error>(head_dim > 0 && head_dim <= 256, "head_dim", head_dim, "[1, 256]");
    }
};

}  // namespace v1
}  // namespace heterocache
