#pragma once
//! \file
//! A paged view over engine K/V memory: page pools plus a per-sequence page table.

#include "heterocache/concepts/kv_layout.hpp"

namespace heterocache {
inline namespace v1 {

//! `KvLayout` over page pools shaped `[page][token_in_page][kv_head][head_dim]` per layer (the block layout
//! of the large serving engines). `page_table[seq * page_table_stride + p]` is the pool page that holds
//! tokens `[p * page_size, (p + 1) * page_size)` of sequence `seq`.
struct paged_kv_layout {
    const float* keys = nullptr;    //!< pool of layer 0; layer l starts `layer_stride` floats later
    const float* values = nullptr;
    const index_t* page_table = nullptr;
    index_t page_table_stride = 0;  //!< entries per sequence in `page_table`
    index_t page_size = 0;          //!< tokens per page
    index_t layer_stride = 0;       //!< floats between the pools of consecutive layers
    index_t heads = 0;
    index_t dim = 0;

    [[nodiscard]] const float* key(index_t layer, index_t seq, index_t head, index_t token) const noexcept {
        return keys + offset(layer, seq, head, token);
    }
    [[nodiscard]] const float* value(index_t layer, index_t seq, index_t head, index_t token) const noexcept {
        return values + offset(layer, seq, head, token);
    }
    [[nodiscard]] index_t kv_heads() const noexcept { return heads; }
    [[nodiscard]] index_t head_dim() const noexcept { return dim; }

private:
    [[nodiscard]] index_t offset(index_t layer, index_t seq, index_t head, index_t token) const noexcept {
        const index_t page = page_table[seq * page_table_stride + token / page_size];
        return layer * layer_stride + ((page * page_size + token % page_size) * heads + head) * dim;
    }
};
static_assert(KvLayout<paged_kv_layout>);

}  // namespace v1
}  // namespace heterocache
