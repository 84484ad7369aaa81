#pragma once
//! \file
//! The per-layer selection the cache hands the engine: which hot slots each (sequence, kv_head) row attends.

#include <span>

#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! CSR selection of one layer. Row `seq * kv_heads + head` attends the hot slots
//! `indices[indptr[row] .. indptr[row + 1])`, in position order (prompt tokens, then decode tokens);
//! slot `s` holds its key at `keys + s * head_dim` and its value at `values + s * head_dim`.
//! Any var-len attention kernel that takes per-head token lists can consume it. Valid until the next
//! call that modifies the cache. `Element` is the hot tier's element type (`float`, or a 16-bit type of
//! storage/kv_element.hpp).
template <class Element>
struct basic_csr_selection {
    index_t rows = 0;
    index_t kv_heads = 0;
    index_t group_size = 0;  //!< query heads per KV head
    index_t head_dim = 0;
    std::span<const index_t> indptr;   //!< `rows + 1` offsets into `indices`
    std::span<const index_t> indices;  //!< hot-tier slots
    const Element* keys = nullptr;     //!< hot-tier key slots `[slot][head_dim]`
    const Element* values = nullptr;   //!< hot-tier value slots `[slot][head_dim]`

    //! Number of tokens row `row` attends.
    [[nodiscard]] index_t row_length(index_t row) const noexcept { return indptr[row + 1] - indptr[row]; }
    //! Tokens attended over all rows.
    [[nodiscard]] index_t total_tokens() const noexcept { return indptr.empty() ? 0 : indptr[rows]; }
};

//! The selection of an fp32 hot tier.
using csr_selection = basic_csr_selection<float>;

}  // namespace v1
}  // namespace heterocache
