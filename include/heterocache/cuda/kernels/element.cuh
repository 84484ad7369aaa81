#pragma once
//! \file
//! What the kernels do with their element types (`DeviceElement`: fp32, `__half`, `__nv_bfloat16`):
//! conversions to and from float, and aligned vectors of them so a lane loads its share of a head in one
//! instruction (internal).

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <concepts>

#include "heterocache/cuda/element_traits.cuh"

namespace heterocache {
inline namespace v1 {
namespace cuda {
namespace detail {

__host__ __device__ inline float to_float(float x) { return x; }
__host__ __device__ inline float to_float(__half x) { return __half2float(x); }
__host__ __device__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

//! float -> `T`, rounded to nearest even (as the host `from_float`).
template <DeviceElement T>
__host__ __device__ inline T from_float(float x) {
    if constexpr (std::same_as<T, float>) return x;
    else if constexpr (std::same_as<T, __half>) return __float2half_rn(x);
    else return __float2bfloat16_rn(x);
}

//! `N` consecutive elements, aligned to their size so that one load or store moves them all.
template <class T, int N>
struct alignas(sizeof(T) * N) element_vector {
    T v[N];
};

//! Loads `N` elements at `p` (aligned to `N` elements) as floats.
template <int N, class T>
__device__ inline void load_floats(const T* p, float (&out)[N]) {
    const element_vector<T, N> packed = *reinterpret_cast<const element_vector<T, N>*>(p);
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = to_float(packed.v[i]);
}

}  // namespace detail
}  // namespace cuda
}  // namespace v1
}  // namespace heterocache
