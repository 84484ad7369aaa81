#pragma once
//! \file
//! `host_queue`: where a bulk host operation runs, inline on the caller's thread or spread over a thread pool
//! (DESIGN.md section 3.1, "Queues"); a device tier orders its operations on a CUDA stream instead.

#include "heterocache/attention/host_thread_pool.hpp"

namespace heterocache {
inline namespace v1 {

//! A handle, cheap to copy: without a pool the work runs inline, in order; with one, the items of a bulk
//! operation are spread over its threads, and the call returns when all are done (host work is complete
//! when an operation returns, so no event is needed to order what follows). The pool must outlive the queue.
class host_queue {
public:
    //! Runs inline.
    host_queue() = default;
    //! Spreads bulk operations over `pool`.
    explicit host_queue(host_thread_pool& pool) noexcept : pool_(&pool) {}

    //! Runs `body(i)` for every `i` in `[0, count)`: in order inline, or over the pool's threads.
    void for_each(index_t count, detail::function_ref<void(index_t)> body) const {
        if (pool_ != nullptr && count > 1) {
            pool_->for_each(count, body);
            return;
        }
        for (index_t i = 0; i < count; ++i) body(i);
    }
    //! The pool, or null when inline.
    [[nodiscard]] host_thread_pool* pool() const noexcept { return pool_; }

private:
    host_thread_pool* pool_ = nullptr;
};

}  // namespace v1
}  // namespace heterocache
