#pragma once
//! \file
//! Top-k positions of many score rows on the device: the host `top_k_positions` (algorithm/overlap.hpp)
//! for a batch of rows. Each (score, position) pair is packed into one 64-bit key whose order is the
//! ranking (ties to the lower position), the keys of every row are radix-sorted descending at once
//! (`cub::DeviceSegmentedRadixSort`), the first k of each row are unpacked, and those positions are sorted
//! ascending (a second segmented sort).

#include <cub/device/device_segmented_radix_sort.cuh>

#include <cstddef>
#include <cstdint>

#include "heterocache/cuda/config.cuh"
#include "heterocache/cuda/launch_policy.cuh"

namespace heterocache {
inline namespace v1 {
namespace cuda {

//! Sizes of a top-k call and the workspace it needs (CUB's temporary storage included).
struct top_k_plan {
    index_t rows = 0;
    index_t max_row_length = 0;  //!< longest score row
    index_t total_length = 0;    //!< scores of all rows together
    index_t max_row_selected = 0;  //!< largest k of a row
    index_t total_selected = 0;  //!< positions written over all rows
    std::size_t sort_bytes = 0;  //!< CUB temporary storage (the larger of the two sorts)

    //! Bytes of workspace `top_k_positions` needs.
    [[nodiscard]] std::size_t workspace_bytes() const noexcept {
        return 2 * aligned(static_cast<std::size_t>(total_length) * sizeof(std::uint64_t)) +
               aligned(static_cast<std::size_t>(total_selected) * sizeof(index_t)) + aligned(sort_bytes);
    }
    //! `bytes` rounded up to 256, so every part of the workspace is aligned as `cudaMalloc` memory is.
    static constexpr std::size_t aligned(std::size_t bytes) noexcept { return (bytes + 255) / 256 * 256; }
};

//! Plans top-k over `rows` rows. Throws `shape_error` when a size is negative or exceeds what CUB's 32-bit
//! offsets address, and `cuda_error` if CUB cannot size its storage.
inline top_k_plan plan_top_k(index_t rows, index_t max_row_length, index_t total_length, index_t max_row_selected,
                             index_t total_selected) {
    constexpr index_t limit = 0x7fffffff;
    ::heterocache::detail::require<shape_error>(rows >= 1 && rows <= limit, "rows", rows, "[1, 2^31)");
    ::heterocache::detail::require<shape_error>(total_length >= 0 && total_length <= limit, "total_length",
                                                total_length, "[0, 2^31)");
    ::heterocache::detail::require<shape_error>(total_selected >= 0 && total_selected <= total_length,
                                                "total_selected", total_selected, "[0, total_length]");
    ::heterocache::detail::require<shape_error>(max_row_length >= 0 && max_row_length <= total_length,
                                                "max_row_length", max_row_length, "[0, total_length]");
    top_k_plan plan{rows, max_row_length, total_length, max_row_selected, total_selected};
    std::size_t descending = 0, ascending = 0;
    check(cub::DeviceSegmentedRadixSort::SortKeysDescending(nullptr, descending, static_cast<const std::uint64_t*>(nullptr),
                                                            static_cast<std::uint64_t*>(nullptr),
                                                            static_cast<int>(total_length), static_cast<int>(rows),
                                                            static_cast<const index_t*>(nullptr),
                                                            static_cast<const index_t*>(nullptr)),
          "cub::DeviceSegmentedRadixSort::SortKeysDescending (sizing)");
    check(cub::DeviceSegmentedRadixSort::SortKeys(nullptr, ascending, static_cast<const index_t*>(nullptr),
                                                  static_cast<index_t*>(nullptr), static_cast<int>(total_selected),
                                                  static_cast<int>(rows), static_cast<const index_t*>(nullptr),
                                                  static_cast<const index_t*>(nullptr), 0, 32),
          "cub::DeviceSegmentedRadixSort::SortKeys (sizing)");
    plan.sort_bytes = descending > ascending ? descending : ascending;
    return plan;
}

namespace detail {

//! The ranking key of a score and its position: the score's bits made monotonic in the high half, the
//! position reversed in the low half, so a larger key is a higher score or, on a tie, a lower position.
__device__ inline std::uint64_t ranking_key(float score, index_t position) {
    const std::uint32_t bits = __float_as_uint(score + 0.0f);  // + 0 makes -0 equal to +0
    const std::uint32_t monotonic = (bits & 0x80000000u) != 0 ? ~bits : bits | 0x80000000u;
    return (std::uint64_t{monotonic} << 32) | (0xffffffffu - static_cast<std::uint32_t>(position));
}

template <int Threads>
__global__ void __launch_bounds__(Threads)
    pack_ranking_keys_kernel(const float* scores, const index_t* offsets, std::uint64_t* keys) {
    const index_t r = blockIdx.y;
    const index_t begin = offsets[r], length = offsets[r + 1] - begin;
    const index_t t = index_t{blockIdx.x} * Threads + threadIdx.x;
    if (t < length) keys[begin + t] = ranking_key(scores[begin + t], t);
}

//! Unpacks the positions of the first `k` keys of each sorted row (k from the output offsets). A row asked
//! for more positions than it has scores gets -1 in the excess (the host throws; a kernel cannot).
template <int Threads>
__global__ void __launch_bounds__(Threads) unpack_top_positions_kernel(const std::uint64_t* sorted, const index_t* offsets,
                                                                       const index_t* out_offsets, index_t* positions) {
    const index_t r = blockIdx.y;
    const index_t k = out_offsets[r + 1] - out_offsets[r];
    const index_t j = index_t{blockIdx.x} * Threads + threadIdx.x;
    if (j >= k) return;
    const index_t length = offsets[r + 1] - offsets[r];
    positions[out_offsets[r] + j] =
        j < length ? index_t{0xffffffffu - static_cast<std::uint32_t>(sorted[offsets[r] + j] & 0xffffffffu)} : -1;
}

}  // namespace detail

//! Writes the positions of the `k_r = out_offsets[r+1] - out_offsets[r]` highest scores of each row `r`
//! (`scores[offsets[r] .. offsets[r+1])`) to `positions[out_offsets[r] ..]`, ascending; ties go to the
//! lower position, exactly as the host. All arrays are device memory; `k_r` must not exceed the row's
//! length. `workspace`: device memory of at least `plan.workspace_bytes()`, 256-byte aligned.
//! Asynchronous on `stream`; allocates nothing. Throws `cuda_error` if CUB fails.
template <int Threads = copy_launch{}.threads>
void top_k_positions(const top_k_plan& plan, const float* scores, const index_t* offsets, const index_t* out_offsets,
                     index_t* positions, void* workspace, cudaStream_t stream = nullptr) {
    static_assert(valid(copy_launch{Threads}), "invalid launch parameters");
    auto* bytes = static_cast<unsigned char*>(workspace);
    auto* keys = reinterpret_cast<std::uint64_t*>(bytes);
    bytes += top_k_plan::aligned(static_cast<std::size_t>(plan.total_length) * sizeof(std::uint64_t));
    auto* sorted = reinterpret_cast<std::uint64_t*>(bytes);
    bytes += top_k_plan::aligned(static_cast<std::size_t>(plan.total_length) * sizeof(std::uint64_t));
    auto* unsorted = reinterpret_cast<index_t*>(bytes);
    bytes += top_k_plan::aligned(static_cast<std::size_t>(plan.total_selected) * sizeof(index_t));
    void* temp = bytes;
    const auto rows = static_cast<unsigned>(plan.rows);
    if (plan.max_row_length > 0) {
        detail::pack_ranking_keys_kernel<Threads>
            <<<dim3(static_cast<unsigned>(ceil_div(plan.max_row_length, Threads)), rows), Threads, 0, stream>>>(
                scores, offsets, keys);
        check_launch("pack_ranking_keys_kernel");
        std::size_t temp_bytes = plan.sort_bytes;
        check(cub::DeviceSegmentedRadixSort::SortKeysDescending(temp, temp_bytes, keys, sorted,
                                                                static_cast<int>(plan.total_length),
                                                                static_cast<int>(plan.rows), offsets, offsets + 1, 0, 64,
                                                                stream),
              "cub::DeviceSegmentedRadixSort::SortKeysDescending");
    }
    if (plan.max_row_selected > 0) {
        detail::unpack_top_positions_kernel<Threads>
            <<<dim3(static_cast<unsigned>(ceil_div(plan.max_row_selected, Threads)), rows), Threads, 0, stream>>>(
                sorted, offsets, out_offsets, unsorted);
        check_launch("unpack_top_positions_kernel");
        std::size_t temp_bytes = plan.sort_bytes;
        check(cub::DeviceSegmentedRadixSort::SortKeys(temp, temp_bytes, unsorted, positions,
                                                      static_cast<int>(plan.total_selected), static_cast<int>(plan.rows),
                                                      out_offsets, out_offsets + 1, 0, 32, stream),
              "cub::DeviceSegmentedRadixSort::SortKeys");
    }
}

}  // namespace cuda
}  // namespace v1
}  // namespace heterocache
