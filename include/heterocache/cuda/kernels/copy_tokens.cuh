#pragma once
//! \file
//! Token copies into hot slots on the device: appending decode tokens from the engine's buffers, and the
//! zero-copy gather of retrieval (the source is the pinned cold tier, read in place over the bus).
//! One kernel serves both: token `i` of a copy reads source token `source_token[i]` (or `i`) and writes hot
//! slot `slot[i]`, converting the element type if the two sides differ.

#include <algorithm>

#include "heterocache/cuda/config.cuh"
#include "heterocache/cuda/kernels/element.cuh"
#include "heterocache/cuda/launch_policy.cuh"

namespace heterocache {
inline namespace v1 {
namespace cuda {

//! Which tokens a copy moves (device-readable arrays: device memory or mapped pinned memory).
struct token_copy {
    index_t tokens = 0;
    index_t head_dim = 0;
    const index_t* source_token = nullptr;  //!< source token of each copied token; null reads token `i`
    const index_t* slot = nullptr;          //!< destination hot slot of each token
    const index_t* position = nullptr;      //!< token position recorded for each slot; null records none
};

namespace detail {

template <int Threads, class Source, class Destination>
__global__ void __launch_bounds__(Threads)
    copy_tokens_kernel(token_copy copy, const Source* source_keys, const Source* source_values,
                       Destination* hot_keys, Destination* hot_values, index_t* hot_positions) {
    const index_t d = copy.head_dim;
    const index_t elements = copy.tokens * d;
    for (index_t e = index_t{blockIdx.x} * Threads + threadIdx.x; e < elements; e += index_t{gridDim.x} * Threads) {
        const index_t i = e / d, c = e % d;
        const index_t from = (copy.source_token != nullptr ? copy.source_token[i] : i) * d + c;
        const index_t slot = copy.slot[i];
        hot_keys[slot * d + c] = from_float<Destination>(to_float(source_keys[from]));
        hot_values[slot * d + c] = from_float<Destination>(to_float(source_values[from]));
        if (c == 0 && hot_positions != nullptr && copy.position != nullptr) hot_positions[slot] = copy.position[i];
    }
}

}  // namespace detail

//! Copies `copy.tokens` tokens (`[token][head_dim]` keys and values at `source_*`) into the hot slots
//! `hot_*` (`[slot][head_dim]`), recording positions in `hot_positions` when both it and `copy.position` are
//! given. Sources may be device or mapped pinned memory (zero-copy). Elements are CUDA types (`DeviceElement`;
//! host-typed arrays go through `device_elements`). Asynchronous on `stream`.
template <int Threads = copy_launch{}.threads, DeviceElement Source, DeviceElement Destination>
void copy_tokens(const token_copy& copy, const Source* source_keys, const Source* source_values, Destination* hot_keys,
                 Destination* hot_values, index_t* hot_positions, cudaStream_t stream = nullptr) {
    static_assert(valid(copy_launch{Threads}), "invalid launch parameters");
    if (copy.tokens <= 0) return;
    const index_t blocks = std::min<index_t>(ceil_div(copy.tokens * copy.head_dim, Threads), 65535);
    detail::copy_tokens_kernel<Threads><<<static_cast<unsigned>(blocks), Threads, 0, stream>>>(
        copy, source_keys, source_values, hot_keys, hot_values, hot_positions);
    check_launch("copy_tokens_kernel");
}

}  // namespace cuda
}  // namespace v1
}  // namespace heterocache
