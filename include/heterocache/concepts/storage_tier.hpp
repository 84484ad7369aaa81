#pragma once
//! \file
//! The `StorageTier` concept: where KV bytes live (a hot and a cold tier) and how they move, in bulk, ordered
//! on a queue (DESIGN.md section 3.1, "Storage").

#include <concepts>
#include <span>

#include "heterocache/attention/paged_selection.hpp"
#include "heterocache/concepts/kv_tensor.hpp"
#include "heterocache/storage/storage_plan.hpp"
#include "heterocache/tensor/kv_tensor.hpp"

namespace heterocache {
inline namespace v1 {

//! The row table's half of a selection: the paged descriptor in host memory and the capture requests. A
//! storage tier adds its hot pools and returns the selection in its own memory space.
struct selection_table {
    index_t rows = 0;
    index_t kv_heads = 0;
    index_t group_size = 0;
    index_t head_dim = 0;
    index_t page_size = 0;
    const page_index_t* indptr = nullptr;
    const page_index_t* indices = nullptr;
    const page_index_t* last_page_len = nullptr;
    bool indices_changed = true;  //!< false when only `last_page_len` (and no page) changed since the last step
    std::span<const score_capture> captures;
};

//! A storage tier holds the hot tier (per layer a pool of pages, `page_size` slots of `head_dim` elements of
//! `element_type` each, for keys and for values, in `memory_space`) and the cold tier (every token of every
//! row by position, `cold_tensor::element_type`, host-accessible: its own copy, or the engine's own tensor
//! when it aliases it). The cache decides which slot holds what; the tier moves bytes, each bulk operation
//! ordered on a `queue_type`:
//! - `bytes_required(plan)`, then `bind(plan, memory, alias)`: sizes, then the memory (the engine's, or the
//!   tier's own for empty spans) and, with `plan.cold_aliased`, the engine tensor the cold tier reads;
//! - `store_prompt(layer, seq, kv, prompt_tokens, hot_rows, q)`: the prompt of every head of a (layer,
//!   sequence) into the cold tier (nothing to copy when it aliases `kv`), and the hot tokens of `hot_rows`
//!   (the prefill selection) from `kv`;
//! - `append(layer, kv, entries, q)`: the new token of every row of `entries` in one operation;
//! - `refill(layer, request, q)`: cold -> hot for every row of a request, runs of positions in bulk;
//! - `selection(layer, table, q)`: the selection of `layer` in the tier's memory space;
//! - `cold_keys(layer, row)`: a row's cold keys by position, for scoring.
//! Byte counters are the optional `StorageStats`.
template <class S>
concept StorageTier =
    KvElement<typename S::element_type> && MemorySpace<typename S::memory_space> &&
    KvTensor<typename S::cold_tensor> &&
    requires(S& s, const S& cs, const storage_plan& plan, storage_memory memory, const typename S::cold_tensor* alias,
             index_t i, const typename S::cold_tensor& kv, std::span<const append_entry> entries,
             const refresh_request& request, std::span<const refresh_row> rows, const selection_table& table,
             typename S::queue_type q) {
        { cs.bytes_required(plan) } -> std::same_as<storage_bytes>;
        { s.bind(plan, memory, alias) } -> std::same_as<void>;
        { s.store_prompt(i, i, kv, i, rows, q) } -> std::same_as<void>;
        { s.append(i, kv, entries, q) } -> std::same_as<void>;
        { s.refill(i, request, q) } -> std::same_as<void>;
        { s.selection(i, table, q) } -> std::same_as<basic_paged_selection<typename S::element_type, typename S::memory_space>>;
        { cs.cold_keys(i, i) } -> std::same_as<token_rows<typename S::cold_tensor::element_type>>;
    };

//! A storage tier that counts the bytes it moves.
template <class S>
concept StorageStats = requires(const S& s) {
    { s.counters() } -> std::same_as<transfer_counters>;
};

}  // namespace v1
}  // namespace heterocache
