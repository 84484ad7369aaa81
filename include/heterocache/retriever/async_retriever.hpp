#pragma once
//! \file
//! The asynchronous retriever: a gather thread and an apply thread with double-buffered staging.

#include <array>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "heterocache/concepts/retriever.hpp"
#include "heterocache/storage/host_storage.hpp"

namespace heterocache {
inline namespace v1 {

//! `Retriever` whose refreshes run beside the engine: `submit` only queues; a gather thread copies the
//! selected cold tokens into one of two staging buffers while an apply thread writes the other into the
//! hot tier (the host model of "gather into pinned staging, copy on a side stream"). `wait(layer)` blocks
//! until every refresh submitted for that layer is applied, whole. Destruction drains every queued
//! refresh, so no refresh is ever half-applied. Results equal `sync_retriever` byte for byte.
//! Thread rules: `submit` and `wait` from one engine thread.
class async_retriever {
public:
    async_retriever() = default;
    async_retriever(const async_retriever&) = delete;
    async_retriever& operator=(const async_retriever&) = delete;
    ~async_retriever() { stop(); }

    template <StorageTier S>
    void bind(S& storage, const retriever_plan& plan) {
        detail::require<shape_error>(plan.max_pending >= 1, "max_pending", plan.max_pending, "[1, inf)");
        stop();
        access_ = detail::storage_access::of(storage);
        head_dim_ = plan.head_dim;
        max_tokens_ = plan.max_request_tokens;
        for (staging& buffer : staging_) {
            buffer.keys.assign(static_cast<std::size_t>(max_tokens_ * head_dim_), 0.0f);
            buffer.values.assign(buffer.keys.size(), 0.0f);
            buffer.full = false;
        }
        pending_.assign(static_cast<std::size_t>(plan.max_pending), refresh_request{});
        pending_head_ = pending_count_ = 0;
        submitted_.assign(static_cast<std::size_t>(plan.layers), 0);
        completed_.assign(static_cast<std::size_t>(plan.layers), 0);
        stopping_ = gathering_done_ = false;
        gatherer_ = std::thread([this] { gather_loop(); });
        applier_ = std::thread([this] { apply_loop(); });
    }

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
    struct staging {
        std::vector<float> keys, values;
        refresh_request request;
        bool full = false;
    };

    void gather_loop() {
        for (std::uint64_t n = 0;; ++n) {
            staging& buffer = staging_[n % 2];
            refresh_request request;
            {
                std::unique_lock lock(mutex_);
                changed_.wait(lock, [&] { return (pending_count_ > 0 && !buffer.full) || (stopping_ && pending_count_ == 0); });
                if (pending_count_ == 0) {
                    gathering_done_ = true;
                    changed_.notify_all();
                    return;
                }
                request = pending_[pending_head_];
                pending_head_ = (pending_head_ + 1) % pending_.size();
                --pending_count_;
            }
            detail::gather_request(access_, request, head_dim_, buffer.keys.data(), buffer.values.data());
            {
                std::lock_guard lock(mutex_);
                buffer.request = request;
                buffer.full = true;
            }
            changed_.notify_all();
        }
    }

    void apply_loop() {
        for (std::uint64_t n = 0;; ++n) {
            staging& buffer = staging_[n % 2];
            {
                std::unique_lock lock(mutex_);
                changed_.wait(lock, [&] { return buffer.full || gathering_done_; });
                if (!buffer.full) return;  // every gathered request is applied: items are produced in order
            }
            detail::apply_request(access_, buffer.request, head_dim_, buffer.keys.data(), buffer.values.data());
            {
                std::lock_guard lock(mutex_);
                buffer.full = false;
                ++completed_[static_cast<std::size_t>(buffer.request.layer)];
            }
            changed_.notify_all();
        }
    }

    void stop() {
        if (!gatherer_.joinable()) return;
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        changed_.notify_all();
        gatherer_.join();
        applier_.join();
    }

    detail::storage_access access_;
    index_t head_dim_ = 0, max_tokens_ = 0;
    std::array<staging, 2> staging_;
    std::vector<refresh_request> pending_;
    std::size_t pending_head_ = 0, pending_count_ = 0;
    std::vector<std::uint64_t> submitted_, completed_;
    bool stopping_ = false, gathering_done_ = false;
    std::mutex mutex_;
    std::condition_variable changed_;
    std::thread gatherer_, applier_;
};
static_assert(Retriever<async_retriever, host_storage>);

}  // namespace v1
}  // namespace heterocache
