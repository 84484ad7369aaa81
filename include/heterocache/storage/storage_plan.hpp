#pragma once
//! \file
//! Sizes a storage tier is planned with, and the byte counters it keeps.

#include <cstdint>
#include <vector>

#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! Everything a storage tier allocates at plan time; nothing is allocated after.
struct storage_plan {
    model_shape shape;
    index_t sequences = 0;
    index_t max_tokens = 0;                //!< cold-tier tokens per (layer, sequence, kv_head): prompt + decode
    std::vector<index_t> hot_capacity;     //!< hot slots per row, indexed `(layer * sequences + seq) * kv_heads + head`

    [[nodiscard]] index_t rows_per_layer() const noexcept { return sequences * shape.kv_heads; }
    [[nodiscard]] index_t capacity(index_t layer, index_t row) const {
        return hot_capacity[static_cast<std::size_t>(layer * rows_per_layer() + row)];
    }
};

//! Bytes moved by a storage tier since planning (keys and values together, counted as stored in the tier they
//! land in: a 16-bit hot tier counts 2 bytes per element).
struct transfer_counters {
    std::uint64_t written_to_hot = 0;   //!< bytes written into the hot tier from the engine (prefill, append)
    std::uint64_t written_to_cold = 0;  //!< bytes written into the cold tier
    std::uint64_t retrieved = 0;        //!< bytes moved cold -> hot by retrieval
};

}  // namespace v1
}  // namespace heterocache
