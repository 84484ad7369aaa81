#pragma once
//! \file
//! Overlap coefficients of many pairs of position sets on the device: the host `overlap_coefficient`
//! (algorithm/overlap.hpp), `O(X, Y) = |X ∩ Y| / min(|X|, |Y|)`, for pair `p` = row `p` of two CSR sets.

#include <cub/block/block_reduce.cuh>

#include "heterocache/cuda/config.cuh"
#include "heterocache/cuda/launch_policy.cuh"

namespace heterocache {
inline namespace v1 {
namespace cuda {

//! Ascending position sets in CSR form (device arrays): set `p` is `positions[indptr[p] .. indptr[p+1])`.
struct device_position_sets {
    const index_t* indptr = nullptr;
    const index_t* positions = nullptr;
};

namespace detail {

//! One block per pair: each thread looks its elements of X up in Y (binary search), the block sums the
//! hits. Exact: the count is an integer and the division is the host's, in double.
template <int Threads>
__global__ void __launch_bounds__(Threads)
    overlap_kernel(device_position_sets x, device_position_sets y, double* coefficients) {
    using reduce = cub::BlockReduce<index_t, Threads>;
    __shared__ typename reduce::TempStorage temp;
    const index_t p = blockIdx.x;
    const index_t* xs = x.positions + x.indptr[p];
    const index_t* ys = y.positions + y.indptr[p];
    const index_t nx = x.indptr[p + 1] - x.indptr[p], ny = y.indptr[p + 1] - y.indptr[p];
    index_t common = 0;
    for (index_t i = threadIdx.x; i < nx; i += Threads) {
        index_t lo = 0, hi = ny;
        while (lo < hi) {
            const index_t mid = (lo + hi) / 2;
            if (ys[mid] < xs[i]) lo = mid + 1;
            else hi = mid;
        }
        common += (lo < ny && ys[lo] == xs[i]) ? 1 : 0;
    }
    common = reduce(temp).Sum(common);
    if (threadIdx.x == 0) {
        const index_t smaller = nx < ny ? nx : ny;
        coefficients[p] = smaller == 0 ? 0.0 : static_cast<double>(common) / static_cast<double>(smaller);
    }
}

}  // namespace detail

//! `coefficients[p] = O(x_p, y_p)` for `pairs` pairs (device arrays), on `stream`. Sets must be ascending
//! without repeats (as `top_k_positions` writes them). Asynchronous; allocates nothing.
template <int Threads = copy_launch{}.threads>
void overlap_coefficients(index_t pairs, const device_position_sets& x, const device_position_sets& y,
                          double* coefficients, cudaStream_t stream = nullptr) {
    static_assert(valid(copy_launch{Threads}), "invalid launch parameters");
    if (pairs <= 0) return;
    detail::overlap_kernel<Threads><<<static_cast<unsigned>(pairs), Threads, 0, stream>>>(x, y, coefficients);
    check_launch("overlap_kernel");
}

}  // namespace cuda
}  // namespace v1
}  // namespace heterocache
