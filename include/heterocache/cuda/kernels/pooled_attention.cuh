#pragma once
//! \file
//! The pooled attention row of KV heads on the device: the host `pooled_attention_row`
//! (algorithm/pooled_attention.hpp) for a batch of (sequence, kv_head) rows at once. For each query head of
//! the GQA group, the causally masked softmax rows of the queries averaged over the queries; the maximum
//! over the group; a zero-padded average pool of width 5 divided by 5.

#include <cub/block/block_reduce.cuh>
#include <cuda/functional>

#include <cmath>
#include <cstddef>

#include "heterocache/algorithm/pooled_attention.hpp"
#include "heterocache/cuda/config.cuh"
#include "heterocache/cuda/kernels/element.cuh"
#include "heterocache/cuda/launch_policy.cuh"

namespace heterocache {
inline namespace v1 {
namespace cuda {

//! One row to score: the prompt keys of one KV head and the queries of its sequence (device pointers). `T` is
//! a CUDA element type (host-typed keys go through `device_elements`).
template <DeviceElement T>
struct scoring_row {
    const T* keys = nullptr;         //!< key of position 0
    index_t key_stride = 0;          //!< elements between consecutive positions
    const float* queries = nullptr;  //!< query 0 of the group's first query head
    index_t first_position = 0;      //!< absolute position of query 0 (for the causal mask)
};

//! A batch of rows scored by one call. Row `r` scores positions `[0, offsets[r+1] - offsets[r])` into
//! `scores + offsets[r]`; query `i` of group member `g` is at `row.queries + i * query_token_stride +
//! g * query_head_stride`.
template <DeviceElement T>
struct scoring_batch {
    index_t rows = 0;
    index_t group_size = 0;
    index_t head_dim = 0;
    index_t query_count = 0;  //!< queries per row: the observation window (1 at decode, `interval` for a monitor)
    index_t query_token_stride = 0;
    index_t query_head_stride = 0;
    const scoring_row<T>* row = nullptr;  //!< device, `rows` entries
    const index_t* offsets = nullptr;     //!< device, `rows + 1` entries
};

//! Sizes of a scoring call: the longest row, all rows' positions together, and the workspace they need.
struct scoring_plan {
    index_t rows = 0;
    index_t group_size = 0;
    index_t query_count = 0;
    index_t max_row_length = 0;
    index_t total_length = 0;  //!< `offsets[rows]`

    [[nodiscard]] index_t queries_per_row() const noexcept { return group_size * query_count; }
    //! Floats of workspace: every query's scaled logits, then its softmax maximum and inverse denominator.
    [[nodiscard]] std::size_t workspace_floats() const noexcept {
        return static_cast<std::size_t>(queries_per_row() * (total_length + 2 * rows));
    }
};

namespace detail {

//! Logits of a block of `TokensPerTile` keys against every query of the row, staged through shared memory
//! (`[token][head_dim + 1]`, padded against bank conflicts). Masked (future) positions get -inf.
template <int Threads, int TokensPerTile, int QueriesPerTile, class T>
__global__ void __launch_bounds__(Threads) scoring_logits_kernel(scoring_batch<T> batch, float scale, float* logits) {
    extern __shared__ float shared[];
    const index_t r = blockIdx.y;
    const index_t length = batch.offsets[r + 1] - batch.offsets[r];
    const index_t t0 = index_t{blockIdx.x} * TokensPerTile;
    if (t0 >= length) return;  // uniform over the block
    const scoring_row<T> row = batch.row[r];
    const index_t d = batch.head_dim, pitch = d + 1;
    const index_t queries = batch.group_size * batch.query_count;
    float* keys = shared;
    float* query_tile = shared + TokensPerTile * pitch;
    float* row_logits = logits + queries * batch.offsets[r];
    for (index_t i = threadIdx.x; i < TokensPerTile * d; i += Threads) {
        const index_t t = i / d, c = i % d;
        keys[t * pitch + c] = t0 + t < length ? to_float(row.keys[(t0 + t) * row.key_stride + c]) : 0.0f;
    }
    for (index_t q0 = 0; q0 < queries; q0 += QueriesPerTile) {
        __syncthreads();  // the key tile is loaded, and the previous query tile is no longer read
        for (index_t i = threadIdx.x; i < QueriesPerTile * d; i += Threads) {
            const index_t q = q0 + i / d, c = i % d;
            const index_t g = q / batch.query_count, qi = q % batch.query_count;
            query_tile[(i / d) * pitch + c] =
                q < queries ? row.queries[qi * batch.query_token_stride + g * batch.query_head_stride + c] : 0.0f;
        }
        __syncthreads();
        for (index_t p = threadIdx.x; p < TokensPerTile * QueriesPerTile; p += Threads) {
            const index_t t = p % TokensPerTile, local_q = p / TokensPerTile, q = q0 + local_q;
            if (q >= queries || t0 + t >= length) continue;
            float dot = 0.0f;
            for (index_t c = 0; c < d; ++c) dot = fmaf(query_tile[local_q * pitch + c], keys[t * pitch + c], dot);
            const bool visible = t0 + t <= row.first_position + q % batch.query_count;
            row_logits[q * length + t0 + t] = visible ? dot * scale : -INFINITY;
        }
    }
}

//! Per (row, query): the maximum logit and `1 / (sum of exp(logit - max) * query_count)` (the sum in double,
//! as on the host).
template <int Threads, class T>
__global__ void __launch_bounds__(Threads)
    scoring_softmax_kernel(scoring_batch<T> batch, const float* logits, float* maxima, float* inverses) {
    using max_reduce = cub::BlockReduce<float, Threads>;
    using sum_reduce = cub::BlockReduce<double, Threads>;
    __shared__ union {
        typename max_reduce::TempStorage max;
        typename sum_reduce::TempStorage sum;
    } temp;
    __shared__ float block_max;
    const index_t r = blockIdx.y, q = blockIdx.x;
    const index_t length = batch.offsets[r + 1] - batch.offsets[r];
    const index_t queries = batch.group_size * batch.query_count;
    const float* l = logits + queries * batch.offsets[r] + q * length;
    float top = -INFINITY;
    for (index_t t = threadIdx.x; t < length; t += Threads) top = fmaxf(top, l[t]);
    top = max_reduce(temp.max).Reduce(top, ::cuda::maximum<>{});
    if (threadIdx.x == 0) block_max = top;
    __syncthreads();
    top = block_max;
    double sum = 0.0;
    for (index_t t = threadIdx.x; t < length; t += Threads) sum += static_cast<double>(expf(l[t] - top));
    sum = sum_reduce(temp.sum).Sum(sum);
    if (threadIdx.x == 0) {
        maxima[r * queries + q] = top;
        inverses[r * queries + q] =
            sum > 0.0 ? static_cast<float>(1.0 / (sum * static_cast<double>(batch.query_count))) : 0.0f;
    }
}

//! The group maximum of the query-averaged probabilities over a tile plus a halo of 2 on each side, then
//! the width-5 average pool of the tile.
template <int Threads, class T>
__global__ void __launch_bounds__(Threads) scoring_pool_kernel(scoring_batch<T> batch, const float* logits,
                                                               const float* maxima, const float* inverses,
                                                               float* scores) {
    constexpr index_t half = attention_pool_width / 2;
    __shared__ float group_max[Threads + 2 * half];
    const index_t r = blockIdx.y;
    const index_t length = batch.offsets[r + 1] - batch.offsets[r];
    const index_t t0 = index_t{blockIdx.x} * Threads;
    if (t0 >= length) return;  // uniform over the block
    const index_t queries = batch.group_size * batch.query_count;
    const float* row_logits = logits + queries * batch.offsets[r];
    for (index_t i = threadIdx.x; i < Threads + 2 * half; i += Threads) {
        const index_t t = t0 - half + i;
        float best = 0.0f;
        if (t >= 0 && t < length)
            for (index_t g = 0; g < batch.group_size; ++g) {
                float probability = 0.0f;
                for (index_t qi = 0; qi < batch.query_count; ++qi) {
                    const index_t q = g * batch.query_count + qi;
                    probability += expf(row_logits[q * length + t] - maxima[r * queries + q]) * inverses[r * queries + q];
                }
                best = fmaxf(best, probability);
            }
        group_max[i] = best;
    }
    __syncthreads();
    const index_t t = t0 + threadIdx.x;
    if (t >= length) return;
    float sum = 0.0f;
    for (index_t u = larger(0, t - half); u <= smaller(length - 1, t + half); ++u) sum += group_max[u - t0 + half];
    scores[batch.offsets[r] + t] = sum / static_cast<float>(attention_pool_width);
}

}  // namespace detail

//! Scores every row of `batch` into `scores` (device, `plan.total_length` floats), on `stream`.
//! `workspace`: device floats, at least `plan.workspace_floats()`. `scale` is the softmax scale
//! (1/sqrt(head_dim) on the host). Asynchronous; allocates nothing. Throws `shape_error` when the batch
//! does not match the plan or the head dim exceeds 256.
template <int Threads = scoring_launch{}.threads, int TokensPerTile = scoring_launch{}.tokens_per_tile,
          int QueriesPerTile = scoring_launch{}.queries_per_tile, DeviceElement T>
void pooled_attention_rows(const scoring_plan& plan, const scoring_batch<T>& batch, float scale, float* scores,
                           float* workspace, cudaStream_t stream = nullptr) {
    static_assert(valid(scoring_launch{Threads, TokensPerTile, QueriesPerTile}), "invalid scoring launch parameters");
    ::heterocache::detail::require<shape_error>(batch.rows == plan.rows, "batch.rows", batch.rows, "the plan's rows");
    ::heterocache::detail::require<shape_error>(batch.group_size == plan.group_size && batch.query_count == plan.query_count,
                                                "batch.group_size * batch.query_count",
                                                batch.group_size * batch.query_count, "the plan's queries per row");
    ::heterocache::detail::require<shape_error>(batch.head_dim >= 1 && batch.head_dim <= 256, "head_dim", batch.head_dim,
                                                "[1, 256]");
    if (plan.rows == 0 || plan.max_row_length == 0) return;
    const index_t queries = plan.queries_per_row();
    float* logits = workspace;
    float* maxima = logits + queries * plan.total_length;
    float* inverses = maxima + queries * plan.rows;
    const auto rows = static_cast<unsigned>(plan.rows);
    const auto shared_bytes =
        static_cast<std::size_t>((TokensPerTile + QueriesPerTile) * (batch.head_dim + 1)) * sizeof(float);
    detail::scoring_logits_kernel<Threads, TokensPerTile, QueriesPerTile, T>
        <<<dim3(static_cast<unsigned>(ceil_div(plan.max_row_length, TokensPerTile)), rows), Threads, shared_bytes,
           stream>>>(batch, scale, logits);
    check_launch("scoring_logits_kernel");
    detail::scoring_softmax_kernel<256, T>
        <<<dim3(static_cast<unsigned>(queries), rows), 256, 0, stream>>>(batch, logits, maxima, inverses);
    check_launch("scoring_softmax_kernel");
    detail::scoring_pool_kernel<256, T><<<dim3(static_cast<unsigned>(ceil_div(plan.max_row_length, 256)), rows), 256, 0,
                                          stream>>>(batch, logits, maxima, inverses, scores);
    check_launch("scoring_pool_kernel");
}

}  // namespace cuda
}  // namespace v1
}  // namespace heterocache
