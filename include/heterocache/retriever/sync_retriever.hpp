#pragma once
//! \file
//! The synchronous retriever: a refresh is complete when `submit` returns.

#include <vector>

#include "heterocache/concepts/retriever.hpp"
#include "heterocache/storage/host_storage.hpp"

namespace heterocache {
inline namespace v1 {

//! Default `Retriever`: gathers into a staging buffer and applies on the caller's thread.
class sync_retriever {
public:
    template <StorageTier S>
    void bind(S& storage, const retriever_plan& plan) {
        access_ = detail::storage_access::of(storage);
        head_dim_ = plan.head_dim;
        max_tokens_ = plan.max_request_tokens;
        keys_.assign(static_cast<std::size_t>(max_tokens_ * head_dim_), 0.0f);
        values_.assign(keys_.size(), 0.0f);
    }
    void submit(const refresh_request& request) {
        detail::require<shape_error>(request.tokens() <= max_tokens_, "request.tokens()", request.tokens(),
                                     "[0, max_request_tokens]");
        detail::gather_request(access_, request, head_dim_, keys_.data(), values_.data());
        detail::apply_request(access_, request, head_dim_, keys_.data(), values_.data());
    }
    void wait(index_t) noexcept {}

private:
    detail::storage_access access_;
    index_t head_dim_ = 0, max_tokens_ = 0;
    std::vector<float> keys_, values_;
};
static_assert(Retriever<sync_retriever, host_storage>);

}  // namespace v1
}  // namespace heterocache
