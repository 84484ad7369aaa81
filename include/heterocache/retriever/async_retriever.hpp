#pragma once
//! \file
//! The asynchronous retriever: refreshes run on a worker thread beside the engine.

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "heterocache/concepts/retriever.hpp"
#include "heterocache/storage/host_storage.hpp"

namespace heterocache {
inline namespace v1 {

//! `Retriever` whose refreshes run beside the engine: `submit` only queues; a worker thread runs each
//! request as one `refill` of the tier, in submission order (the host model of "gather on a copy stream").
//! `wait(layer)` blocks until every refresh submitted for that layer is applied, whole. Destruction drains
//! every queued refresh, so no refresh is ever half-applied. Results equal `sync_retriever` byte for byte.
//! Thread rules: `submit` and `wait` from one engine thread.
class async_retriever {
public:
    async_retriever() = default;
    async_retriever(const async_retriever&) = delete;
    async_retriever& operator=(const async_retriever&) = delete;
    ~async_retriever() { stop(); }

    //! Starts the worker. Throws `shape_error` unless `plan.max_pending >= 1`.
    template <StorageTier S>
    void bind(S& storage, const retriever_plan& plan) {
        detail::require<shape_error>(plan.max_pending >= 1, "max_pending", plan.max_pending, "[1, inf)");
        stop();
        refill_ = detail::storage_refill::of(storage);
        max_tokens_ = plan.max_request_tokens;
        pending_.assign(static_cast<std::size_t>(plan.max_pending), refresh_request{});
        pending_head_ = pending_count_ = 0;
        submitted_.assign(static_cast<std::size_t>(plan.layers), 0);
        completed_.assign(static_cast<std::size_t>(plan.layers), 0);
        stopping_ = false;
        worker_ = std::thread([this] { work(); });
    }

    //! Queues `request`. Throws `shape_error` for a request larger than the plan's `max_request_tokens`, or
    //! when `max_pending` requests are queued already.
    void submit(const refresh_request& request) {
        detail::require<shape_error>(request.tokens() <= max_tokens_, "request.tokens()", request.tokens(),
                                     "[0, max_request_tokens]");
        {
            std::lock_guard lock(mutex_);
            detail::require<shape_error>(pending_count_ < pending_.size(), "pending refreshes", pending_count_ + 1,
                                         "[1, max_pending]");
            pending_[(pending_head_ + pending_count_) % pending_.size()] = request;
            ++pending_count_;
            ++submitted_[static_cast<std::size_t>(request.layer)];
        }
        changed_.notify_all();
    }

    void wait(index_t layer) {
        std::unique_lock lock(mutex_);
        const auto l = static_cast<std::size_t>(layer);
        if (l >= submitted_.size()) return;  // never bound: nothing was submitted
        changed_.wait(lock, [&] { return completed_[l] == submitted_[l]; });
    }

private:
    void work() {
        for (;;) {
            refresh_request request;
            {
                std::unique_lock lock(mutex_);
                changed_.wait(lock, [&] { return pending_count_ > 0 || stopping_; });
                if (pending_count_ == 0) return;  // stopping, and every queued refresh is applied
                request = pending_[pending_head_];
            }
            refill_(request);
            {
                std::lock_guard lock(mutex_);
                pending_head_ = (pending_head_ + 1) % pending_.size();
                --pending_count_;
                ++completed_[static_cast<std::size_t>(request.layer)];
            }
            changed_.notify_all();
        }
    }

    void stop() {
        if (!worker_.joinable()) return;
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        changed_.notify_all();
        worker_.join();
    }

    detail::storage_refill refill_;
    index_t max_tokens_ = 0;
    std::vector<refresh_request> pending_;
    std::size_t pending_head_ = 0, pending_count_ = 0;
    std::vector<std::uint64_t> submitted_, completed_;
    bool stopping_ = false;
    std::mutex mutex_;
    std::condition_variable changed_;
    std::thread worker_;
};
static_assert(Retriever<async_retriever, host_storage>);

}  // namespace v1
}  // namespace heterocache
