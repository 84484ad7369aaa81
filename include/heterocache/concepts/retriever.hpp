#pragma once
//! \file
//! The `Retriever` concept: when and where a storage tier's refills run.

#include <concepts>

#include "heterocache/concepts/storage_tier.hpp"

namespace heterocache {
inline namespace v1 {

//! Sizes a retriever plans for.
struct retriever_plan {
    index_t layers = 0;
    index_t max_request_tokens = 0;  //!< largest `refresh_request::tokens()`
    index_t max_pending = 0;         //!< most requests submitted and not yet waited for
};

//! A retriever is bound to a storage tier, takes refresh requests (`submit`) and runs each as one `refill`
//! of the tier, on the caller's thread or beside it, and lets the engine wait for a layer's refreshes just
//! before that layer attends. A refresh submitted for a layer is complete, all of it, when `wait(layer)`
//! returns; the hot slots of a layer are not read between `submit` and `wait`.
template <class R, class S>
concept Retriever = StorageTier<S> && requires(R& retriever, S& storage, const retriever_plan& plan,
                                               const refresh_request& request, index_t layer) {
    { retriever.bind(storage, plan) } -> std::same_as<void>;
    { retriever.submit(request) } -> std::same_as<void>;
    { retriever.wait(layer) } -> std::same_as<void>;
};

namespace detail {

//! A storage tier's `refill` behind a function pointer, so retrievers need not be templates.
struct storage_refill {
    void* storage = nullptr;
    void (*run)(void*, const refresh_request&) = nullptr;

    template <StorageTier S>
    static storage_refill of(S& s) noexcept {
        return {&s, [](void* p, const refresh_request& request) {
                    static_cast<S*>(p)->refill(request.layer, request, typename S::queue_type{});
                }};
    }
    void operator()(const refresh_request& request) const { run(storage, request); }
};

}  // namespace detail
}  // namespace v1
}  // namespace heterocache
