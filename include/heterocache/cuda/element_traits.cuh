#pragma once
//! \file
//! The host element vocabulary (`float`, `fp16_t`, `bf16_t`: tensor/element.hpp) and CUDA's element types
//! (`float`, `__half`, `__nv_bfloat16`), one to one. Each pair has the same size, alignment and bits, so an
//! array of one is an array of the other: the library's descriptors carry host-typed pointers, and a kernel
//! reads them as CUDA types through `device_elements` (an engine holding CUDA-typed arrays hands them in
//! through `host_elements`). No element is converted or copied.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <concepts>
#include <type_traits>

#include "heterocache/config.hpp"
#include "heterocache/tensor/element.hpp"

namespace heterocache {
inline namespace v1 {
namespace cuda {

//! `element_traits<T>` for `T` a host element or its CUDA twin: `host_type` and `device_type` of the pair.
//! Empty for any other type.
template <class T>
struct element_traits {};
template <>
struct element_traits<float> {
    using host_type = float;
    using device_type = float;
};
template <>
struct element_traits<fp16_t> {
    using host_type = fp16_t;
    using device_type = __half;
};
template <>
struct element_traits<bf16_t> {
    using host_type = bf16_t;
    using device_type = __nv_bfloat16;
};
template <>
struct element_traits<__half> : element_traits<fp16_t> {};
template <>
struct element_traits<__nv_bfloat16> : element_traits<bf16_t> {};

//! The CUDA type with the bits of `T` (`T` itself when it is one).
template <class T>
using device_element_t = typename element_traits<T>::device_type;
//! The host element type with the bits of `T` (`T` itself when it is one).
template <class T>
using host_element_t = typename element_traits<T>::host_type;

//! The element types CUDA kernels compute on: the CUDA twins of the host `KvElement`s.
template <class T>
concept DeviceElement = requires { typename device_element_t<T>; } && std::same_as<T, device_element_t<T>>;

namespace detail {

template <KvElement E>
constexpr bool layout_compatible() noexcept {
    using D = device_element_t<E>;
    return sizeof(E) == sizeof(D) && alignof(E) == alignof(D) && std::is_trivially_copyable_v<E> &&
           std::is_trivially_copyable_v<D> && std::same_as<host_element_t<D>, E>;
}

}  // namespace detail

static_assert(detail::layout_compatible<float>() && detail::layout_compatible<fp16_t>() &&
                  detail::layout_compatible<bf16_t>(),
              "each host element must have the size and alignment of its CUDA twin, both trivially copyable");
static_assert(DeviceElement<float> && DeviceElement<__half> && DeviceElement<__nv_bfloat16> &&
              !DeviceElement<fp16_t> && !DeviceElement<bf16_t>);

//! The host-typed array at `elements` read as its CUDA twin (the same address).
template <KvElement E>
HETEROCACHE_HOST_DEVICE const device_element_t<E>* device_elements(const E* elements) noexcept {
    return reinterpret_cast<const device_element_t<E>*>(elements);
}
template <KvElement E>
HETEROCACHE_HOST_DEVICE device_element_t<E>* device_elements(E* elements) noexcept {
    return reinterpret_cast<device_element_t<E>*>(elements);
}

//! The CUDA-typed array at `elements` as the host element type (the same address), for the library's
//! descriptors.
template <DeviceElement D>
HETEROCACHE_HOST_DEVICE const host_element_t<D>* host_elements(const D* elements) noexcept {
    return reinterpret_cast<const host_element_t<D>*>(elements);
}
template <DeviceElement D>
HETEROCACHE_HOST_DEVICE host_element_t<D>* host_elements(D* elements) noexcept {
    return reinterpret_cast<host_element_t<D>*>(elements);
}

}  // namespace cuda
}  // namespace v1
}  // namespace heterocache
