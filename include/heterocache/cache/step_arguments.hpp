#pragma once
//! \file
//! The arguments of a `kv_cache` that are not policies: the memory its storage is bound to, and the decode
//! queries of a step (DESIGN.md section 3.1).

#include <optional>

#include "heterocache/concepts/kv_tensor.hpp"
#include "heterocache/storage/storage_plan.hpp"

namespace heterocache {
inline namespace v1 {

//! The memory a cache's storage tier is bound to: the engine's (`memory`, sized by `kv_cache::bytes_required`)
//! or, for empty spans, the tier's own; and optionally the engine tensor the cold tier reads in place of a
//! copy (`cold_alias`: the engine then holds the full KV once; its tensor must index tokens by position).
template <KvTensor Tensor>
struct storage_binding {
    storage_memory memory;
    std::optional<Tensor> cold_alias;
};

//! The decode queries of one step, one per (sequence slot, query head): `(seq, q_head)` at
//! `base + seq * sequence_stride + q_head * head_stride`, `head_dim` floats (`[seq][query_head][head_dim]`:
//! strides `query_heads * head_dim` and `head_dim`).
struct decode_queries {
    const float* base = nullptr;
    index_t sequence_stride = 0;
    index_t head_stride = 0;
};

}  // namespace v1
}  // namespace heterocache
