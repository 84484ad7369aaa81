#pragma once
//! \file
//! The worker threads the host kernels split their rows over: started once, reused by every call.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "heterocache/detail/function_ref.hpp"
#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! A fixed set of threads that run the iterations of a loop. `threads` counts the calling thread, which
//! works too: `host_thread_pool(1)` starts no thread and runs every loop inline. Threads start in the
//! constructor (the only allocation) and stop in the destructor; `for_each` allocates nothing.
//! Iterations go to whichever thread is free next, so a kernel that wants deterministic results computes
//! each iteration alone (the host attention kernels do: one row, one thread, a fixed order of sums).
//! A decode step calls `for_each` a few hundred times, a few microseconds of work each: so the workers, and
//! the caller waiting for them, spin for `spin_iterations` pause instructions (tens of microseconds) before
//! they sleep, and a loop that follows another soon starts without a wake-up through the kernel. Give a
//! program one pool per core set, not one per kernel: workers of several pools would spin against each other.
//! Thread rules: `for_each` from one thread at a time.
class host_thread_pool {
public:
    //! Starts `threads - 1` workers. Throws `invalid_argument_error` unless `threads >= 1`.
    explicit host_thread_pool(index_t threads) {
        detail::require(threads >= 1, "threads", threads, "[1, inf)");
        workers_.reserve(static_cast<std::size_t>(threads - 1));
        for (index_t i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
    }
    host_thread_pool(const host_thread_pool&) = delete;
    host_thread_pool& operator=(const host_thread_pool&) = delete;
    ~host_thread_pool() {
        {
            std::lock_guard lock(mutex_);
            stopping_.store(true, std::memory_order_release);
        }
        start_.notify_all();
        for (std::thread& worker : workers_) worker.join();
    }

    //! Threads that run iterations, the caller included.
    [[nodiscard]] index_t size() const noexcept { return static_cast<index_t>(workers_.size()) + 1; }

    //! Runs `body(i)` for every `i` in `[0, count)` and returns when all have finished. `body` must not
    //! throw (an escaping exception terminates). O(count) calls plus one wake-up of each worker.
    void for_each(index_t count, detail::function_ref<void(index_t)> body) {
        if (count <= 0) return;
        if (workers_.empty() || count == 1) {
            for (index_t i = 0; i < count; ++i) body(i);
            return;
        }
        {
            std::lock_guard lock(mutex_);
            body_ = &body;
            count_ = count;
            next_.store(0, std::memory_order_relaxed);
            busy_.store(workers_.size(), std::memory_order_relaxed);
            generation_.fetch_add(1, std::memory_order_release);
        }
        start_.notify_all();
        run(body, count);
        if (!spin_until([&] { return busy_.load(std::memory_order_acquire) == 0; })) {
            std::unique_lock lock(mutex_);
            done_.wait(lock, [&] { return busy_.load(std::memory_order_acquire) == 0; });
        }
        body_ = nullptr;
    }

    //! How long a worker, and the caller of `for_each`, spin before they sleep (pause instructions).
    static constexpr int spin_iterations = 2000;

private:
    static void pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        asm volatile("yield");
#endif
    }

    //! True as soon as `ready()`; false after spin_iterations pauses without it.
    template <class Ready>
    static bool spin_until(Ready ready) noexcept {
        for (int i = 0; i < spin_iterations; ++i) {
            if (ready()) return true;
            pause();
        }
        return ready();
    }

    void run(detail::function_ref<void(index_t)> body, index_t count) noexcept {
        for (index_t i = next_.fetch_add(1, std::memory_order_relaxed); i < count;
             i = next_.fetch_add(1, std::memory_order_relaxed))
            body(i);
    }

    void work() {
        std::uint64_t seen = 0;
        for (;;) {
            const auto started = [&] {
                return stopping_.load(std::memory_order_acquire) ||
                       generation_.load(std::memory_order_acquire) != seen;
            };
            if (!spin_until(started)) {
                std::unique_lock lock(mutex_);
                start_.wait(lock, started);
            }
            if (stopping_.load(std::memory_order_acquire)) return;
            // The loop's body and count were written before its generation (release) and are read after it
            // (acquire); they stay as they are until this worker has finished (busy_), so no lock is needed.
            seen = generation_.load(std::memory_order_acquire);
            run(*body_, count_);
            if (busy_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                std::lock_guard lock(mutex_);
                done_.notify_one();
            }
        }
    }

    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable start_, done_;
    const detail::function_ref<void(index_t)>* body_ = nullptr;
    index_t count_ = 0;
    std::atomic<index_t> next_{0};
    std::atomic<std::size_t> busy_{0};
    std::atomic<std::uint64_t> generation_{0};
    std::atomic<bool> stopping_{false};
};

}  // namespace v1
}  // namespace heterocache
