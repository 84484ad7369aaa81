#pragma once
//! \file
//! Offset maps: where the key or value of `(layer, sequence, kv_head, token)` lives in an engine's tensor,
//! apart from what memory holds it (DESIGN.md section 3.1, "Engine memory"). Every function is
//! `HETEROCACHE_HOST_DEVICE`, so device kernels evaluate the engine's layout themselves.

#include <concepts>
#include <cstdint>

#include "heterocache/config.hpp"
#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! Where the tokens of one (layer, sequence, KV head) live, in elements from the tensor's base: token `t`
//! at `first + t * token_stride`, or, paged, at `first + pages[t / page_size] * page_stride +
//! (t % page_size) * token_stride`.
struct token_run_map {
    index_t first = 0;
    index_t token_stride = 0;
    const std::int32_t* pages = nullptr;  //!< null: the tokens are strided, not paged
    index_t page_size = 0;
    index_t page_stride = 0;

    //! Offset of token `token`.
    [[nodiscard]] HETEROCACHE_HOST_DEVICE index_t offset(index_t token) const noexcept {
        if (pages == nullptr) return first + token * token_stride;
        return first + static_cast<index_t>(pages[token / page_size]) * page_stride + (token % page_size) * token_stride;
    }
};

//! A tensor whose head dimension is contiguous and whose other dimensions have strides (in elements), such as
//! `[layer][seq][kv_head][token][dim]` or `[layer][seq][token][kv_head][dim]`.
struct strided_map {
    index_t layer_stride = 0;
    index_t sequence_stride = 0;
    index_t head_stride = 0;
    index_t token_stride = 0;

    [[nodiscard]] HETEROCACHE_HOST_DEVICE index_t offset(index_t layer, index_t seq, index_t head,
                                                         index_t token) const noexcept {
        return layer * layer_stride + seq * sequence_stride + head * head_stride + token * token_stride;
    }
    [[nodiscard]] HETEROCACHE_HOST_DEVICE token_run_map tokens(index_t layer, index_t seq, index_t head) const noexcept {
        return {offset(layer, seq, head, 0), token_stride, nullptr, 0, 0};
    }
};

//! The block layout of paged serving engines (vLLM, FlashInfer's "NHD"): per layer a pool
//! `[page][token_in_page][kv_head][dim]`, the layers' pools `layer_stride` elements apart;
//! `page_table[seq * page_table_stride + p]` is the pool page holding tokens `[p * page_size, (p + 1) *
//! page_size)` of sequence `seq`. The engine owns the pool and the page table.
struct paged_map {
    const std::int32_t* page_table = nullptr;
    index_t page_table_stride = 0;  //!< entries per sequence in `page_table`
    index_t page_size = 0;          //!< tokens per page
    index_t layer_stride = 0;       //!< elements between the pools of consecutive layers
    index_t kv_heads = 0;
    index_t head_dim = 0;

    [[nodiscard]] HETEROCACHE_HOST_DEVICE index_t offset(index_t layer, index_t seq, index_t head,
                                                         index_t token) const noexcept {
        return tokens(layer, seq, head).offset(token);
    }
    [[nodiscard]] HETEROCACHE_HOST_DEVICE token_run_map tokens(index_t layer, index_t seq, index_t head) const noexcept {
        const index_t token_stride = kv_heads * head_dim;
        return {layer * layer_stride + head * head_dim, token_stride, page_table + seq * page_table_stride, page_size,
                page_size * token_stride};
    }
};

//! An offset map: `offset(layer, seq, head, token)` of the first of `head_dim` contiguous elements, and the
//! same for every token of one (layer, seq, head) at once (`tokens`).
template <class M>
concept OffsetMap = requires(const M& map, index_t i) {
    { map.offset(i, i, i, i) } -> std::convertible_to<index_t>;
    { map.tokens(i, i, i) } -> std::same_as<token_run_map>;
};
static_assert(OffsetMap<strided_map> && OffsetMap<paged_map>);

}  // namespace v1
}  // namespace heterocache
