// The baseline of the engine's kernel benchmarks: a plain read of the bytes a kernel reads, on the same
// threads, timed beside it in the same run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>

#include "heterocache/attention/host_thread_pool.hpp"

namespace hcllama::bench {

// Sums the 64-bit words of `bytes` bytes at `data`, split over the pool's threads (one partial sum each in
// `sums`, pool.size() entries, so that the timed read allocates nothing).
inline std::uint64_t read_all(heterocache::host_thread_pool& pool, const void* data, std::size_t bytes,
                              std::span<std::uint64_t> sums) {
  const auto* words = static_cast<const std::uint64_t*>(data);
  const std::size_t count = bytes / sizeof(std::uint64_t), parts = static_cast<std::size_t>(pool.size());
  pool.for_each(static_cast<heterocache::index_t>(parts), [&](heterocache::index_t part) {
    const std::size_t p = static_cast<std::size_t>(part);
    std::uint64_t s = 0;
    for (std::size_t i = count * p / parts; i < count * (p + 1) / parts; ++i) s += words[i];
    sums[p] = s;
  });
  return std::accumulate(sums.begin(), sums.end(), std::uint64_t{0});
}

}  // namespace hcllama::bench
