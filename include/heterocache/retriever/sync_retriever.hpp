#pragma once
//! \file
//! The synchronous retriever: a refresh is complete when `submit` returns.

#include "heterocache/concepts/retriever.hpp"
#include "heterocache/storage/host_storage.hpp"

namespace heterocache {
inline namespace v1 {

//! Default `Retriever`: runs each refresh as one `refill` of the tier on the caller's thread.
class sync_retriever {
public:
    template <StorageTier S>
    void bind(S& storage, const retriever_plan& plan) {
        refill_ = detail::storage_refill::of(storage);
        max_tokens_ = plan.max_request_tokens;
    }
    //! Throws `shape_error` for a request larger than the plan's `max_request_tokens`.
    void submit(const refresh_request& request) {
        detail::require<shape_error>(request.tokens() <= max_tokens_, "request.tokens()", request.tokens(),
                                     "[0, max_request_tokens]");
        refill_(request);
    }
    void wait(index_t) noexcept {}

private:
    detail::storage_refill refill_;
    index_t max_tokens_ = 0;
};
static_assert(Retriever<sync_retriever, host_storage>);

}  // namespace v1
}  // namespace heterocache
