#pragma once
//! \file
//! The per-layer selection the cache hands the engine: which hot pages each (sequence, kv_head) row attends,
//! as a FlashInfer-style paged descriptor (DESIGN.md section 3.1, "Selection").

#include <cstdint>
#include <span>

#include "heterocache/config.hpp"
#include "heterocache/tensor/element.hpp"
#include "heterocache/tensor/memory_space.hpp"
#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! Page ids, page offsets and page lengths of a selection (FlashInfer's `IdType`).
using page_index_t = std::int32_t;

//! A request to the attention kernel for one row: write the scaled scores `q . k * scale` of the row's first
//! `tokens` tokens, for each of the G query heads of its group, to `scores[g * tokens + j]` (the layout
//! `group_scores` writes), then `*stamp = step` (`mark_written`). A cache asks for them where its drift
//! monitor would otherwise recompute them (a pivot's scores over its prompt), so monitoring costs no second
//! pass over the keys; the stamp tells it which step wrote them.
struct score_capture {
    float* scores = nullptr;         //!< null: nothing to write for this row
    index_t tokens = 0;              //!< in `[0, row_length(row)]`
    std::uint64_t* stamp = nullptr;  //!< where the kernel wrapper writes `step` once the scores are written
    std::uint64_t step = 0;          //!< this step's number
};

//! The last act of a kernel wrapper for a row it wrote the capture of.
HETEROCACHE_HOST_DEVICE void mark_written(const score_capture& capture) noexcept {
    if (capture.stamp != nullptr) *capture.stamp = capture.step;
}

//! Whether the engine's attention kernel wrote the scores a selection's `captures` asked for this step
//! (told to `kv_cache::end_layer`).
enum class score_source : std::uint8_t {
    recompute,  //!< it did not: the drift monitor recomputes them from the cold-tier keys (a second pass)
    captured,   //!< it did (and stamped them), as `decode_attention` does: the monitor reads them
};

//! The paged selection of one layer, in FlashInfer's terms (`paged_kv_t`). Row `seq * kv_heads + head` is one
//! variable-length KV sequence read by the G query heads of that KV head: its pages are
//! `indices[indptr[row] .. indptr[row + 1])`, every page full but the last, which holds `last_page_len[row]`
//! tokens (a row without pages is empty: an idle slot). Token `k` of a row is slot
//! `indices[indptr[row] + k / page_size] * page_size + k % page_size` of the pools `keys`/`values`
//! (`[page][page_size][head_dim]`, one KV head per page). A row lists its prompt tokens first, in position
//! order (a full head: positions 0, 1, ...), then its decode tokens. Any paged var-len decode kernel consumes
//! it as it is (FlashInfer's paged decode with every row its own request and one KV head, or FlashAttention's
//! block table). `Element` is the hot tier's element type; every pointer is in `Space` (captures in host
//! memory). Valid until the next call that modifies the cache.
template <KvElement Element, MemorySpace Space = host_memory>
struct basic_paged_selection {
    using element_type = Element;
    using memory_space = Space;

    index_t rows = 0;
    index_t kv_heads = 0;
    index_t group_size = 0;  //!< query heads per KV head
    index_t head_dim = 0;
    index_t page_size = 0;   //!< tokens per page (16 by default, 1 allowed)
    const page_index_t* indptr = nullptr;         //!< `rows + 1` offsets into `indices`
    const page_index_t* indices = nullptr;        //!< pool pages
    const page_index_t* last_page_len = nullptr;  //!< `rows` entries, in `[1, page_size]` for a row with pages
    const Element* keys = nullptr;                //!< key pool `[page][page_size][head_dim]`
    const Element* values = nullptr;              //!< value pool, the same shape
    //! Empty, or one request per row: scores the kernel should write while it attends (`decode_attention`
    //! does; a kernel that does not must say so to `kv_cache::end_layer`).
    std::span<const score_capture> captures;

    //! Pages of row `row`.
    [[nodiscard]] HETEROCACHE_HOST_DEVICE index_t row_pages(index_t row) const noexcept { return indptr[row + 1] - indptr[row]; }
    //! Tokens row `row` attends.
    [[nodiscard]] HETEROCACHE_HOST_DEVICE index_t row_length(index_t row) const noexcept {
        const index_t pages = row_pages(row);
        return pages == 0 ? 0 : (pages - 1) * page_size + last_page_len[row];
    }
    //! Pool slot of token `k` of row `row`.
    [[nodiscard]] HETEROCACHE_HOST_DEVICE index_t slot(index_t row, index_t k) const noexcept {
        return static_cast<index_t>(indices[indptr[row] + k / page_size]) * page_size + k % page_size;
    }
    //! Tokens attended over all rows. O(rows).
    [[nodiscard]] index_t total_tokens() const noexcept {
        index_t total = 0;
        for (index_t row = 0; row < rows; ++row) total += row_length(row);
        return total;
    }
};

//! The selection of an fp32 hot tier in host memory.
using paged_selection = basic_paged_selection<float>;

}  // namespace v1
}  // namespace heterocache
