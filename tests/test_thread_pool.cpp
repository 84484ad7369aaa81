#include <doctest/doctest.h>

#include <atomic>
#include <vector>

#include <heterocache/attention/host_thread_pool.hpp>

using heterocache::index_t;

TEST_CASE("a thread pool runs every iteration exactly once, call after call") {
    for (const index_t threads : {1, 2, 3, 8}) {
        heterocache::host_thread_pool pool(threads);
        CHECK(pool.size() == threads);
        for (const index_t count : {0, 1, 2, 7, 100}) {
            std::vector<std::atomic<int>> runs(static_cast<std::size_t>(count));
            for (int call = 0; call < 3; ++call)
                pool.for_each(count, [&](index_t i) { runs[static_cast<std::size_t>(i)].fetch_add(1); });
            for (const auto& r : runs) CHECK(r.load() == 3);
        }
    }
}

TEST_CASE("a thread pool needs at least one thread") {
    CHECK_THROWS_AS(heterocache::host_thread_pool(0), heterocache::invalid_argument_error);
}
