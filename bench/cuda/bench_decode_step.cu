// Decode-step latency on synthetic Llama-3.1-8B shapes (32 layers, 32 query / 8 KV heads, d = 128, bf16 K/V)
// against context length: full attention (the split-K kernel over every token, on pages of 16: a fair
// flash-decoding baseline), the sparse selection at r = 0.5 and 0.25 with monitoring and retrieval amortized
// over an interval of 5 steps, and a naive unfused baseline (scores matrix, softmax, matmul). Then retrieval
// bandwidth (staged and zero-copy) against a plain cudaMemcpyAsync H2D measured in the same run.
//
//   heterocache_bench_cuda [max_context_k=256] [repeats=5]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <vector>

#include "heterocache/cuda/async_retriever.cuh"
#include "heterocache/cuda/element_traits.cuh"
#include "heterocache/cuda/kernels/decode_attention.cuh"
#include "heterocache/cuda/kernels/pooled_attention.cuh"
#include "heterocache/cuda/kernels/top_k.cuh"

namespace hc = heterocache;
namespace hcc = heterocache::cuda;
using hc::index_t;
using kv_t = __nv_bfloat16;

namespace {

constexpr index_t layers = 32, kv_heads = 8, group = 4, head_dim = 128, interval = 5;
constexpr index_t page_size = 16;  // the cache's default
// Pivots per layer in the reference profile of Llama-3.1-8B: 33 of 256 heads, about 1 per layer;
// satellites 196 of 256, about 6 per layer.
constexpr index_t pivots_per_layer = 1, satellites_per_layer = 6;

//! Milliseconds per call of `body`, the median of `repeats` timed runs after one warm-up.
double time_ms(int repeats, const std::function<void()>& body) {
    hcc::event start(true), stop(true);
    body();
    std::vector<float> times;
    for (int i = 0; i < repeats; ++i) {
        start.record(nullptr);
        body();
        stop.record(nullptr);
        stop.synchronize();
        float ms = 0;
        hcc::check(cudaEventElapsedTime(&ms, start.get(), stop.get()), "cudaEventElapsedTime");
        times.push_back(ms);
    }
    std::nth_element(times.begin(), times.begin() + static_cast<long>(times.size() / 2), times.end());
    return times[times.size() / 2];
}

__global__ void fill_kernel(kv_t* data, std::size_t n) {
    for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x)
        data[i] = __float2bfloat16(static_cast<float>((i * 2654435761u) % 1000) / 1000.0f - 0.5f);
}

// The naive baseline: one thread per (query head, token) score, a row softmax, one thread per output element.
__global__ void naive_scores(const float* q, const kv_t* k, index_t tokens, float* scores) {
    const index_t t = blockIdx.x * index_t{blockDim.x} + threadIdx.x, h = blockIdx.y;
    if (t >= tokens) return;
    const kv_t* key = k + ((h / group) * tokens + t) * head_dim;
    float dot = 0;
    for (index_t c = 0; c < head_dim; ++c) dot += q[h * head_dim + c] * __bfloat162float(key[c]);
    scores[h * tokens + t] = dot * 0.08838834764831845f;
}
__global__ void naive_softmax(float* scores, index_t tokens) {
    float* row = scores + blockIdx.x * tokens;
    __shared__ float shared[256];
    float m = -INFINITY;
    for (index_t t = threadIdx.x; t < tokens; t += 256) m = fmaxf(m, row[t]);
    shared[threadIdx.x] = m;
    __syncthreads();
    for (int s = 128; s > 0; s >>= 1) {
        if (threadIdx.x < s) shared[threadIdx.x] = fmaxf(shared[threadIdx.x], shared[threadIdx.x + s]);
        __syncthreads();
    }
    m = shared[0];
    __syncthreads();
    float sum = 0;
    for (index_t t = threadIdx.x; t < tokens; t += 256) sum += row[t] = expf(row[t] - m);
    shared[threadIdx.x] = sum;
    __syncthreads();
    for (int s = 128; s > 0; s >>= 1) {
        if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
        __syncthreads();
    }
    sum = shared[0];
    for (index_t t = threadIdx.x; t < tokens; t += 256) row[t] /= sum;
}
__global__ void naive_matmul(const float* probabilities, const kv_t* v, index_t tokens, float* out) {
    const index_t h = blockIdx.x, c = threadIdx.x;
    const kv_t* values = v + (h / group) * tokens * head_dim;
    float acc = 0;
    for (index_t t = 0; t < tokens; ++t) acc += probabilities[h * tokens + t] * __bfloat162float(values[t * head_dim + c]);
    out[h * head_dim + c] = acc;
}

}  // namespace

int main(int argc, char** argv) {
    if (!hcc::device_present()) {
        std::printf("no CUDA device: skipped\n");
        return 77;
    }
    const index_t max_k = argc > 1 ? std::atol(argv[1]) : 256;
    const int repeats = argc > 2 ? std::atoi(argv[2]) : 5;
    const int sms = hcc::current_multiprocessors();
    const auto launch = hcc::select_launch_params(hcc::current_compute_capability());
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    std::printf("%-8s %12s %12s %12s %12s %10s %10s\n", "context", "full_ms", "r0.5_ms", "r0.25_ms", "naive_ms",
                "x_r0.5", "x_r0.25");
    for (index_t context = 32 * 1024; context <= max_k * 1024; context *= 2) {
        // One layer's K/V ([kv_head][token][d]), reused by the 32 layers of a step: a layer at these lengths is
        // far larger than L2, so every layer reads from HBM just as 32 distinct layers would.
        const auto elements = static_cast<std::size_t>(kv_heads * context * head_dim);
        hcc::device_array<kv_t> keys(elements), values(elements);
        fill_kernel<<<1024, 256>>>(keys.data(), elements);
        fill_kernel<<<1024, 256>>>(values.data(), elements);
        std::vector<float> q(static_cast<std::size_t>(kv_heads * group * head_dim), 0.01f);
        hcc::device_array<float> queries(q.size()), out(q.size()), lse(static_cast<std::size_t>(kv_heads * group));
        hcc::check(cudaMemcpy(queries.data(), q.data(), queries.bytes(), cudaMemcpyHostToDevice), "cudaMemcpy");

        // Step cost of attention over `kept` tokens per head, packed on whole pages as the hot tier holds them
        // (the first `kept` tokens of each head's run of pages).
        const auto attention_ms = [&](index_t kept) {
            std::vector<hc::page_index_t> indptr{0}, indices, last_page_len;
            for (index_t h = 0; h < kv_heads; ++h) {
                for (index_t p = 0; p < kept / page_size; ++p)
                    indices.push_back(static_cast<hc::page_index_t>(h * context / page_size + p));
                indptr.push_back(static_cast<hc::page_index_t>(indices.size()));
                last_page_len.push_back(static_cast<hc::page_index_t>(page_size));
            }
            hcc::device_array<hc::page_index_t> d_indptr(indptr.size()), d_indices(indices.size()),
                d_last_page_len(last_page_len.size());
            hcc::check(cudaMemcpy(d_indptr.data(), indptr.data(), d_indptr.bytes(), cudaMemcpyHostToDevice), "cudaMemcpy");
            hcc::check(cudaMemcpy(d_indices.data(), indices.data(), d_indices.bytes(), cudaMemcpyHostToDevice), "cudaMemcpy");
            hcc::check(cudaMemcpy(d_last_page_len.data(), last_page_len.data(), d_last_page_len.bytes(),
                                  cudaMemcpyHostToDevice),
                       "cudaMemcpy");
            const hcc::device_paged_selection<hc::bf16_t> selection{
                kv_heads, kv_heads, group, head_dim, page_size, d_indptr.data(), d_indices.data(),
                d_last_page_len.data(), hcc::host_elements(keys.data()), hcc::host_elements(values.data()), {}};
            const auto plan = hcc::plan_decode_attention(kv_heads, group, head_dim, kept, launch.attention, sms);
            hcc::device_array<float> workspace(plan.workspace_floats());
            return time_ms(repeats, [&] {
                for (index_t l = 0; l < layers; ++l)
                    hcc::decode_attention(plan, selection, queries.data(), out.data(), lse.data(), scale, workspace.data());
            });
        };
        // Monitoring per layer every `interval` steps: score the pivot over the full prompt with the last
        // `interval` queries, rank it (top-k), and gather the satellites' new tokens (zero-copy from pinned).
        const auto monitor_ms = [&](double ratio) {
            const index_t cap = static_cast<index_t>(ratio * static_cast<double>(context));
            hcc::device_array<float> window(static_cast<std::size_t>(interval * kv_heads * group * head_dim));
            hcc::check(cudaMemset(window.data(), 0, window.bytes()), "cudaMemset");
            std::vector<hcc::scoring_row<kv_t>> rows;
            for (index_t p = 0; p < pivots_per_layer; ++p)
                rows.push_back({keys.data() + p * context * head_dim, head_dim, window.data() + p * group * head_dim,
                                context});
            std::vector<index_t> offsets{0, context}, out_offsets{0, cap};
            hcc::device_array<hcc::scoring_row<kv_t>> d_rows(rows.size());
            hcc::device_array<index_t> d_offsets(2), d_out_offsets(2), positions(static_cast<std::size_t>(cap));
            hcc::check(cudaMemcpy(d_rows.data(), rows.data(), d_rows.bytes(), cudaMemcpyHostToDevice), "cudaMemcpy");
            hcc::check(cudaMemcpy(d_offsets.data(), offsets.data(), 2 * sizeof(index_t), cudaMemcpyHostToDevice), "cudaMemcpy");
            hcc::check(cudaMemcpy(d_out_offsets.data(), out_offsets.data(), 2 * sizeof(index_t), cudaMemcpyHostToDevice),
                       "cudaMemcpy");
            const hcc::scoring_batch<kv_t> batch{pivots_per_layer, group, head_dim, interval,
                                                 kv_heads * group * head_dim, head_dim, d_rows.data(), d_offsets.data()};
            const hcc::scoring_plan scoring{pivots_per_layer, group, interval, context, context};
            hcc::device_array<float> scoring_workspace(scoring.workspace_floats()), scores(static_cast<std::size_t>(context));
            const auto top = hcc::plan_top_k(1, context, context, cap, cap);
            hcc::device_array<unsigned char> top_workspace(top.workspace_bytes());
            // Satellite refresh: cap tokens each, gathered from a pinned cold copy of the layer.
            const index_t moved = satellites_per_layer * cap / 8;  // about 1/8 of the selection changes on a drift
            hcc::pinned_array<kv_t> cold_k(static_cast<std::size_t>(moved * head_dim)), cold_v(cold_k.size());
            hcc::pinned_array<index_t> slots(static_cast<std::size_t>(moved));
            for (index_t i = 0; i < moved; ++i) slots[static_cast<std::size_t>(i)] = i;
            const hcc::token_copy copy{moved, head_dim, nullptr, hcc::device_view(slots.data()), nullptr};
            hcc::device_array<kv_t> hot_k(cold_k.size()), hot_v(cold_k.size());
            return time_ms(repeats, [&] {
                for (index_t l = 0; l < layers; ++l) {
                    hcc::pooled_attention_rows(scoring, batch, scale, scores.data(), scoring_workspace.data());
                    hcc::top_k_positions(top, scores.data(), d_offsets.data(), d_out_offsets.data(), positions.data(),
                                         top_workspace.data());
                    hcc::copy_tokens(copy, hcc::device_view(cold_k.data()), hcc::device_view(cold_v.data()), hot_k.data(),
                                     hot_v.data(), nullptr);
                }
            }) / interval;
        };
        const auto naive_ms = [&] {
            hcc::device_array<float> scores(static_cast<std::size_t>(kv_heads * group * context));
            return time_ms(repeats, [&] {
                for (index_t l = 0; l < layers; ++l) {
                    naive_scores<<<dim3(static_cast<unsigned>(hcc::ceil_div(context, 256)), kv_heads * group), 256>>>(
                        queries.data(), keys.data(), context, scores.data());
                    naive_softmax<<<kv_heads * group, 256>>>(scores.data(), context);
                    naive_matmul<<<kv_heads * group, head_dim>>>(scores.data(), values.data(), context, out.data());
                }
            });
        };
        // The sparse step attends r * T tokens per KV head: the average over heads of a budget at ratio r
        // (full pivots and volatiles, compressed anchors and satellites), which is what the budget guarantees.
        const double full = attention_ms(context);
        const double half = attention_ms(context / 2) + monitor_ms(0.5);
        const double quarter = attention_ms(context / 4) + monitor_ms(0.25);
        const double naive = naive_ms();
        std::printf("%-8lldK %12.3f %12.3f %12.3f %12.3f %10.2f %10.2f\n", static_cast<long long>(context / 1024), full,
                    half, quarter, naive, full / half, full / quarter);
        hcc::check(cudaGetLastError(), "benchmark kernels");
    }

    // Retrieval bandwidth: 64 MiB of tokens moved cold -> hot by each path, against a plain H2D copy.
    const index_t tokens = 64 * 1024 * 1024 / (2 * head_dim * static_cast<index_t>(sizeof(kv_t)));
    const hc::model_shape shape{1, 1, group, head_dim};
    hcc::device_storage<hc::bf16_t> storage;
    storage.plan({shape, 1, tokens, page_size, {tokens / page_size}});
    std::vector<index_t> positions(static_cast<std::size_t>(tokens));
    std::iota(positions.begin(), positions.end(), 0);
    std::vector<hc::page_index_t> pages(static_cast<std::size_t>(tokens / page_size));
    std::iota(pages.begin(), pages.end(), 0);
    const hc::refresh_row row{0, pages.data(), 0, positions};
    const hc::refresh_request request{0, std::span<const hc::refresh_row>(&row, 1)};
    const double bytes = static_cast<double>(tokens) * 2 * head_dim * sizeof(kv_t);
    std::printf("\n%-26s %10s\n", "transfer (64 MiB)", "GB/s");
    for (const auto path : {hcc::transfer_path::staged, hcc::transfer_path::zero_copy}) {
        hcc::async_retriever<hc::bf16_t> retriever(nullptr, path);
        retriever.bind(storage, {1, tokens, 2});
        const double ms = time_ms(repeats, [&] {
            retriever.submit(request);
            retriever.wait(0);
        });
        std::printf("%-26s %10.2f\n", path == hcc::transfer_path::staged ? "retriever staged" : "retriever zero-copy",
                    bytes / ms / 1e6);
    }
    hcc::pinned_array<kv_t> source(static_cast<std::size_t>(2 * tokens * head_dim));
    hcc::device_array<kv_t> target(source.size());
    const double ms = time_ms(repeats, [&] {
        hcc::check(cudaMemcpyAsync(target.data(), source.data(), source.bytes(), cudaMemcpyHostToDevice, nullptr),
                   "cudaMemcpyAsync");
    });
    std::printf("%-26s %10.2f\n", "cudaMemcpyAsync H2D", bytes / ms / 1e6);
    return 0;
}
