#pragma once
//! \file
//! The per-layer selection the cache hands the engine: which hot slots each (sequence, kv_head) row attends.

#include <cstdint>
#include <span>

#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! A request to the attention kernel for one CSR row: write the scaled scores `q . k * scale` of the row's
//! first `tokens` tokens, for each of the G query heads of its group, to `scores[g * tokens + j]` (the
//! layout `group_scores` writes). A cache asks for them where its drift monitor would otherwise recompute
//! them (a pivot's scores over its prompt), so monitoring costs no second pass over the keys.
struct score_capture {
    float* scores = nullptr;  //!< null: nothing to write for this row
    index_t tokens = 0;       //!< in `[0, row_length(row)]`
};

//! Whether the engine's attention kernel wrote the scores a selection's `captures` asked for this step
//! (told to `kv_cache::observe`).
enum class score_source : std::uint8_t {
    recompute,  //!< it did not: the drift monitor recomputes them from the cold-tier keys (a second pass)
    captured,   //!< it did, as `decode_attention` does: the monitor reads them
};

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
    //! Empty, or one request per row: scores the kernel should write while it attends (`decode_attention`
    //! does; a kernel that does not must say so to `kv_cache::observe`).
    std::span<const score_capture> captures;

    //! Number of tokens row `row` attends.
    [[nodiscard]] index_t row_length(index_t row) const noexcept { return indptr[row + 1] - indptr[row]; }
    //! Tokens attended over all rows.
    [[nodiscard]] index_t total_tokens() const noexcept { return indptr.empty() ? 0 : indptr[rows]; }
};

//! The selection of an fp32 hot tier.
using csr_selection = basic_csr_selection<float>;

}  // namespace v1
}  // namespace heterocache
