#pragma once
//! \file
//! The `Retriever` concept: moves selected tokens from the cold tier into hot slots.

#include <concepts>
#include <span>

#include "heterocache/concepts/storage_tier.hpp"

namespace heterocache {
inline namespace v1 {

//! One row to refill: hot slots `[first_slot, first_slot + positions.size())` receive the cold tokens at
//! `positions` (ascending) of row `row`.
struct refresh_row {
    index_t row = 0;
    index_t first_slot = 0;
    std::span<const index_t> positions;
};

//! A refresh of some rows of one layer. The memory it points at stays valid until `wait(layer)` returns.
struct refresh_request {
    index_t layer = 0;
    std::span<const refresh_row> rows;

    [[nodiscard]] index_t tokens() const noexcept {
        index_t n = 0;
        for (const auto& r : rows) n += static_cast<index_t>(r.positions.size());
        return n;
    }
};

//! Sizes a retriever plans for.
struct retriever_plan {
    index_t layers = 0;
    index_t head_dim = 0;
    index_t max_request_tokens = 0;  //!< largest `refresh_request::tokens()`
    index_t max_pending = 0;         //!< most requests submitted and not yet waited for
};

//! A retriever is bound to a storage tier, accepts refresh requests, and lets the engine wait for a layer's
//! refreshes just before that layer attends. A refresh submitted for a layer must be complete, all of it,
//! when `wait(layer)` returns; the hot slots of a layer must not be read between `submit` and `wait`.
template <class R, class S>
concept Retriever = StorageTier<S> && requires(R& retriever, S& storage, const retriever_plan& plan,
                                               const refresh_request& request, index_t layer) {
    { retriever.bind(storage, plan) } -> std::same_as<void>;
    { retriever.submit(request) } -> std::same_as<void>;
    { retriever.wait(layer) } -> std::same_as<void>;
};

namespace detail {

//! Type-erased gather/apply over a storage tier, so retrievers need not be templates.
struct storage_access {
    void* storage = nullptr;
    void (*gather)(void*, index_t layer, index_t row, index_t position, float* key, float* value) = nullptr;
    void (*apply)(void*, index_t layer, index_t slot, const float* key, const float* value, index_t position) = nullptr;

    template <StorageTier S>
    static storage_access of(S& s) noexcept {
        return {&s,
                [](void* p, index_t layer, index_t row, index_t position, float* key, float* value) {
                    static_cast<const S*>(p)->read_cold(layer, row, position, key, value);
                },
                [](void* p, index_t layer, index_t slot, const float* key, const float* value, index_t position) {
                    static_cast<S*>(p)->retrieve_to_hot(layer, slot, key, value, position);
                }};
    }
};

//! Gathers the tokens of `request` into `keys`/`values` (`[token][head_dim]`, request order).
inline void gather_request(const storage_access& access, const refresh_request& request, index_t head_dim, float* keys,
                           float* values) {
    for (const refresh_row& r : request.rows)
        for (const index_t position : r.positions) {
            access.gather(access.storage, request.layer, r.row, position, keys, values);
            keys += head_dim, values += head_dim;
        }
}

//! Writes gathered tokens into the hot slots the request names.
inline void apply_request(const storage_access& access, const refresh_request& request, index_t head_dim,
                          const float* keys, const float* values) {
    for (const refresh_row& r : request.rows) {
        index_t slot = r.first_slot;
        for (const index_t position : r.positions) {
            access.apply(access.storage, request.layer, slot++, keys, values, position);
            keys += head_dim, values += head_dim;
        }
    }
}

}  // namespace detail
}  // namespace v1
}  // namespace heterocache
