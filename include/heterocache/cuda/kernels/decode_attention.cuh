#pragma once
//! \file
//! Split-K decode attention on the device (flash-decoding) over the paged selection the host kernel reads
//! (`basic_paged_selection`, attention/paged_selection.hpp, with every array in device memory), and the
//! exact merge of partial `(output, log-sum-exp)` states. Same contract as the host `decode_attention` and
//! `merge_attention_states` (attention/decode_attention.hpp): one decode query per query head, rows
//! `seq * kv_heads + head`, GQA native (the G query heads of a row share every key and value read),
//! fp32 accumulation over fp32, fp16 or bf16 K/V, head dims 64 and 128.

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "heterocache/attention/paged_selection.hpp"
#include "heterocache/cuda/config.cuh"
#include "heterocache/cuda/element_traits.cuh"
#include "heterocache/cuda/kernels/element.cuh"
#include "heterocache/cuda/launch_policy.cuh"

namespace heterocache {
inline namespace v1 {
namespace cuda {

//! A paged selection whose arrays (`indptr`, `indices`, `last_page_len`, the page pools) all live in device
//! memory: what the device kernel consumes.
template <KvElement Element>
using device_paged_selection = basic_paged_selection<Element, device_memory>;

//! Query heads of a group one pass of the kernel keeps in registers (larger groups take several passes).
inline constexpr int attention_group_tile = 8;

//! Sizes fixed before a decode step: how many splits each row is cut into and the workspace they need.
//! The plan only shapes the work: a row longer than `max_row_tokens` is still attended whole (its last
//! split takes the rest), just with less parallelism.
struct decode_attention_plan {
    index_t rows = 0;
    index_t group_size = 0;
    index_t head_dim = 0;
    index_t max_row_tokens = 0;
    index_t splits = 1;        //!< blocks per row
    index_t split_tokens = 1;  //!< tokens per block (the last split of a row takes any excess)

    //! Floats of workspace `decode_attention` needs: a partial output and lse per (split, query head).
    [[nodiscard]] std::size_t workspace_floats() const noexcept {
        return static_cast<std::size_t>(splits * rows * group_size * (head_dim + 1));
    }
};

//! Plans a decode step of `rows` rows of at most `max_row_tokens` tokens on a device with
//! `multiprocessors` SMs: enough splits to keep `launch.blocks_per_multiprocessor` blocks per SM busy,
//! never shorter than `launch.min_split_tokens`. Throws `shape_error` for a head dim other than 64 or 128,
//! or non-positive rows or group size.
inline decode_attention_plan plan_decode_attention(index_t rows, index_t group_size, index_t head_dim,
                                                   index_t max_row_tokens, const attention_launch& launch,
                                                   int multiprocessors) {
    ::heterocache::detail::require<shape_error>(rows >= 1, "rows", rows, "[1, 2^31)");
    ::heterocache::detail::require<shape_error>(group_size >= 1, "group_size", group_size, "[1, inf)");
    ::heterocache::detail::require<shape_error>(head_dim == 64 || head_dim == 128, "head_dim", head_dim, "64 or 128");
    ::heterocache::detail::require<shape_error>(max_row_tokens >= 0, "max_row_tokens", max_row_tokens, "[0, inf)");
    decode_attention_plan plan{rows, group_size, head_dim, max_row_tokens};
    const index_t target_blocks = index_t{std::max(1, multiprocessors)} * launch.blocks_per_multiprocessor;
    const index_t by_occupancy = ceil_div(target_blocks, rows);
    const index_t by_length = larger(1, ceil_div(max_row_tokens, launch.min_split_tokens));
    const index_t splits = std::clamp<index_t>(smaller(by_occupancy, by_length), 1, 65535);
    plan.split_tokens = larger(1, ceil_div(max_row_tokens, splits));
    plan.splits = larger(1, ceil_div(max_row_tokens, plan.split_tokens));
    return plan;
}

namespace detail {

inline constexpr float log2_e = 1.4426950408889634f;
inline constexpr float ln_2 = 0.6931471805599453f;

__device__ inline float warp_sum(float x) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}

//! Merges `count` partial states of one query head: `lse_of(s)` (natural log, -inf for an empty part) and
//! `out_of(s)` (the part's normalised output element). Writes the merged element and, if `lse` is not
//! null, the merged lse. All parts empty gives 0 and -inf, as on the host.
template <class Lse, class Out>
__device__ inline void merge_element(index_t count, Lse lse_of, Out out_of, float* out, float* lse) {
    float top = -INFINITY;
    for (index_t s = 0; s < count; ++s) top = fmaxf(top, lse_of(s));
    if (top == -INFINITY) {
        *out = 0.0f;
        if (lse != nullptr) *lse = -INFINITY;
        return;
    }
    float total = 0.0f, sum = 0.0f;
    for (index_t s = 0; s < count; ++s) {
        const float weight = expf(lse_of(s) - top);
        total += weight;
        sum += weight * out_of(s);
    }
    *out = sum / total;
    if (lse != nullptr) *lse = top + logf(total);
}

//! One block per (row, split): each warp runs an online softmax over its share of the split's tokens for
//! up to `attention_group_tile` query heads (scores in base 2, the queries pre-scaled by scale * log2 e),
//! then the warps' states are merged through shared memory into the split's partial state.
template <int Threads, int TokensPerStep, int HeadDim, class Element>
__global__ void __launch_bounds__(Threads)
    split_decode_attention_kernel(device_paged_selection<Element> selection, const float* queries, float scale_log2,
                                  index_t splits, index_t split_tokens, float* partial_out, float* partial_lse) {
    constexpr int warps = Threads / 32;
    constexpr int vec = HeadDim / 32;  // elements of a head each lane owns
    __shared__ float shared_max[warps][attention_group_tile];
    __shared__ float shared_sum[warps][attention_group_tile];
    __shared__ float shared_acc[warps][attention_group_tile][HeadDim];

    const index_t row = blockIdx.x;
    const index_t split = blockIdx.y;
    const index_t group = selection.group_size;
    const index_t query_heads = selection.rows * group;
    const auto* keys = device_elements(selection.keys);
    const auto* values = device_elements(selection.values);
    // Tokens `[begin, end)` of the row, numbered as in the selection (token k in slot `selection.slot(row, k)`).
    const index_t row_length = selection.row_length(row);
    const index_t begin = smaller(row_length, split * split_tokens);
    const index_t end = split + 1 == splits ? row_length : smaller(row_length, begin + split_tokens);
    const int warp = static_cast<int>(threadIdx.x) / 32;
    const int lane = static_cast<int>(threadIdx.x) % 32;

    for (index_t first = 0; first < group; first += attention_group_tile) {
        const int heads = static_cast<int>(smaller(attention_group_tile, group - first));
        float q[attention_group_tile][vec];
        float maximum[attention_group_tile], denominator[attention_group_tile], acc[attention_group_tile][vec];
#pragma unroll
        for (int g = 0; g < attention_group_tile; ++g) {
            maximum[g] = -INFINITY;
            denominator[g] = 0.0f;
#pragma unroll
            for (int e = 0; e < vec; ++e) acc[g][e] = q[g][e] = 0.0f;
            if (g < heads) {
                const float* head_query = queries + (row * group + first + g) * HeadDim + lane * vec;
#pragma unroll
                for (int e = 0; e < vec; ++e) q[g][e] = head_query[e] * scale_log2;
            }
        }
        for (index_t t0 = begin + index_t{warp} * TokensPerStep; t0 < end; t0 += index_t{warps} * TokensPerStep) {
            const int n = static_cast<int>(smaller(TokensPerStep, end - t0));
            index_t slot[TokensPerStep];
            float k[TokensPerStep][vec], v[TokensPerStep][vec];
#pragma unroll
            for (int j = 0; j < TokensPerStep; ++j) {
                slot[j] = j < n ? selection.slot(row, t0 + j) : 0;
                if (j < n) {
                    load_floats<vec>(keys + slot[j] * HeadDim + lane * vec, k[j]);
                    load_floats<vec>(values + slot[j] * HeadDim + lane * vec, v[j]);
                } else {
#pragma unroll
                    for (int e = 0; e < vec; ++e) k[j][e] = v[j][e] = 0.0f;
                }
            }
#pragma unroll
            for (int g = 0; g < attention_group_tile; ++g) {
                if (g >= heads) continue;  // uniform across the warp
                float score[TokensPerStep];
                float step_max = -INFINITY;
#pragma unroll
                for (int j = 0; j < TokensPerStep; ++j) {
                    float dot = 0.0f;
#pragma unroll
                    for (int e = 0; e < vec; ++e) dot = fmaf(q[g][e], k[j][e], dot);
                    score[j] = warp_sum(dot);
                    if (j < n) step_max = fmaxf(step_max, score[j]);
                }
                const float new_max = fmaxf(maximum[g], step_max);
                const float correction = exp2f(maximum[g] - new_max);  // 0 on the first step (max was -inf)
                float step_sum = 0.0f;
#pragma unroll
                for (int e = 0; e < vec; ++e) acc[g][e] *= correction;
#pragma unroll
                for (int j = 0; j < TokensPerStep; ++j) {
                    const float p = j < n ? exp2f(score[j] - new_max) : 0.0f;
                    step_sum += p;
#pragma unroll
                    for (int e = 0; e < vec; ++e) acc[g][e] = fmaf(p, v[j][e], acc[g][e]);
                }
                denominator[g] = denominator[g] * correction + step_sum;
                maximum[g] = new_max;
            }
        }
#pragma unroll
        for (int g = 0; g < attention_group_tile; ++g) {
            if (g >= heads) continue;
            if (lane == 0) shared_max[warp][g] = maximum[g], shared_sum[warp][g] = denominator[g];
#pragma unroll
            for (int e = 0; e < vec; ++e) shared_acc[warp][g][lane * vec + e] = acc[g][e];
        }
        __syncthreads();
        for (int i = static_cast<int>(threadIdx.x); i < heads * HeadDim; i += Threads) {
            const int g = i / HeadDim, c = i % HeadDim;
            float top = -INFINITY;
#pragma unroll
            for (int w = 0; w < warps; ++w) top = fmaxf(top, shared_max[w][g]);
            float total = 0.0f, sum = 0.0f;
            if (top != -INFINITY) {
#pragma unroll
                for (int w = 0; w < warps; ++w) {
                    const float f = exp2f(shared_max[w][g] - top);
                    total = fmaf(shared_sum[w][g], f, total);
                    sum = fmaf(shared_acc[w][g][c], f, sum);
                }
            }
            const index_t state = split * query_heads + row * group + first + g;
            partial_out[state * HeadDim + c] = total > 0.0f ? sum / total : 0.0f;
            if (c == 0) partial_lse[state] = total > 0.0f ? (top + log2f(total)) * ln_2 : -INFINITY;
        }
        __syncthreads();
    }
}

//! One block per query head, one thread per element: merges the head's `splits` partial states.
template <int HeadDim>
__global__ void __launch_bounds__(HeadDim)
    merge_splits_kernel(index_t query_heads, index_t splits, const float* partial_out, const float* partial_lse,
                        float* output, float* lse) {
    const index_t head = blockIdx.x;
    const int c = static_cast<int>(threadIdx.x);
    merge_element(
        splits, [&](index_t s) { return partial_lse[s * query_heads + head]; },
        [&](index_t s) { return partial_out[(s * query_heads + head) * HeadDim + c]; }, output + head * HeadDim + c,
        c == 0 ? lse + head : nullptr);
}

//! Merges two states per query head (the host `merge_attention_states`, element-wise over heads). One block
//! per head, one thread per element (`blockDim.x >= head_dim`). A template only so that the header may be
//! included by several translation units.
template <class Float>
__global__ void merge_two_states_kernel(index_t head_dim, const Float* out_a, const Float* lse_a,
                                        const Float* out_b, const Float* lse_b, Float* out, Float* lse) {
    const index_t head = blockIdx.x;
    const index_t c = threadIdx.x;
    const index_t at = head * head_dim + c;
    const float a = lse_a[head], b = lse_b[head];
    // Every input is read before anything is written: `out`/`lse` may alias the `a` side, as on the host.
    const float xa = c < head_dim ? out_a[at] : 0.0f, xb = c < head_dim ? out_b[at] : 0.0f;
    __syncthreads();
    float merged = 0.0f, merged_lse = 0.0f;
    merge_element(
        2, [&](index_t s) { return s == 0 ? a : b; }, [&](index_t s) { return s == 0 ? xa : xb; }, &merged,
        &merged_lse);
    if (c < head_dim) out[at] = merged;
    if (c == 0) lse[head] = merged_lse;
}

template <int Threads, int TokensPerStep, int HeadDim, class Element>
void launch_decode_attention(const decode_attention_plan& plan, const device_paged_selection<Element>& selection,
                             const float* queries, float* output, float* lse, float scale, float* workspace,
                             cudaStream_t stream) {
    const index_t query_heads = plan.rows * plan.group_size;
    float* partial_out = workspace;
    float* partial_lse = workspace + plan.splits * query_heads * plan.head_dim;
    const dim3 grid(static_cast<unsigned>(plan.rows), static_cast<unsigned>(plan.splits));
    split_decode_attention_kernel<Threads, TokensPerStep, HeadDim, Element><<<grid, Threads, 0, stream>>>(
        selection, queries, scale * log2_e, plan.splits, plan.split_tokens, partial_out, partial_lse);
    check_launch("split_decode_attention_kernel");
    merge_splits_kernel<HeadDim><<<static_cast<unsigned>(query_heads), HeadDim, 0, stream>>>(
        query_heads, plan.splits, partial_out, partial_lse, output, lse);
    check_launch("merge_splits_kernel");
}

}  // namespace detail

//! Exact softmax attention of one decode query per query head over `selection`, on `stream`: token `k` of
//! row `r` is pool slot `selection.slot(r, k)`, as on the host. `queries`, `output`: device
//! `[sequence][query_head][head_dim]` floats; `lse`: device `[sequence][query_head]`, natural log of the
//! softmax denominator of the scaled scores. `workspace`: device floats, at least `plan.workspace_floats()`.
//! A row with no page gives output 0 and lse -inf. A row longer than the plan's `max_row_tokens` is attended
//! whole. Asynchronous; allocates nothing. `Threads` and `TokensPerStep` are the compile-time launch shape
//! (`attention_launch`); the defaults are those `select_launch_params` gives every supported architecture.
//! Writes no score captures: throws `shape_error` when the selection asks for any, and when its rows, group
//! size or head dim differ from the plan's or its page size is not positive.
template <int Threads = attention_launch{}.threads, int TokensPerStep = attention_launch{}.tokens_per_step,
          KvElement Element>
void decode_attention(const decode_attention_plan& plan, const device_paged_selection<Element>& selection,
                      const float* queries, float* output, float* lse, float scale, float* workspace,
                      cudaStream_t stream = nullptr) {
    ::heterocache::detail::require<shape_error>(selection.rows == plan.rows, "selection.rows", selection.rows,
                                                "the plan's rows");
    ::heterocache::detail::require<shape_error>(selection.group_size == plan.group_size, "selection.group_size",
                                                selection.group_size, "the plan's group size");
    ::heterocache::detail::require<shape_error>(selection.head_dim == plan.head_dim, "selection.head_dim",
                                                selection.head_dim, "the plan's head dim");
    ::heterocache::detail::require<shape_error>(selection.page_size >= 1, "selection.page_size", selection.page_size,
                                                "[1, inf)");
    ::heterocache::detail::require<shape_error>(selection.captures.empty(), "selection.captures.size()",
                                                selection.captures.size(), "0 (the device kernel writes no captures)");
    static_assert(valid(attention_launch{Threads, TokensPerStep}), "invalid attention launch parameters");
    if (plan.head_dim == 64)
        detail::launch_decode_attention<Threads, TokensPerStep, 64>(plan, selection, queries, output, lse,
                                                                                   scale, workspace, stream);
    else
        detail::launch_decode_attention<Threads, TokensPerStep, 128>(plan, selection, queries, output,
                                                                                    lse, scale, workspace, stream);
}

//! `merge_attention_states` for `heads` query heads at once, on `stream`: the state over the union of two
//! disjoint token sets. Device arrays `[head][head_dim]` and `[head]`; `out`/`lse` may alias the `a` side.
inline void merge_attention_states(index_t heads, index_t head_dim, const float* out_a, const float* lse_a,
                                   const float* out_b, const float* lse_b, float* out, float* lse,
                                   cudaStream_t stream = nullptr) {
    ::heterocache::detail::require<shape_error>(head_dim >= 1 && head_dim <= 1024, "head_dim", head_dim, "[1, 1024]");
    if (heads <= 0) return;
    const auto threads = static_cast<unsigned>(ceil_div(head_dim, 32) * 32);
    detail::merge_two_states_kernel<float><<<static_cast<unsigned>(heads), threads, 0, stream>>>(head_dim, out_a, lse_a, out_b,
                                                                                         lse_b, out, lse);
    check_launch("merge_two_states_kernel");
}

}  // namespace cuda
}  // namespace v1
}  // namespace heterocache
