#pragma once
//! \file
//! CUDA backend basics: errors that carry the CUDA error string, device detection, and the RAII owners
//! of device, pinned host, stream and event handles every other `cuda/` header builds on.

#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include "heterocache/config.hpp"
#include "heterocache/errors.hpp"
#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {
namespace cuda {

//! A CUDA runtime call failed. `code()` is the runtime's error; the message names the call and the
//! runtime's own description (`cudaGetErrorString`).
class cuda_error : public error {
public:
    cuda_error(cudaError_t code, std::string_view call)
        : error("heterocache: CUDA call '" + std::string(call) + "' failed: " + cudaGetErrorName(code) + ": " +
                cudaGetErrorString(code)),
          code_(code) {}
    [[nodiscard]] cudaError_t code() const noexcept { return code_; }

private:
    cudaError_t code_;
};

//! Throws `cuda_error` unless `code` is `cudaSuccess`. `call` names what was called, for the message.
inline void check(cudaError_t code, std::string_view call) {
    if (code != cudaSuccess) throw cuda_error(code, call);
}

//! Throws `cuda_error` if the last kernel launch on this thread failed to launch.
inline void check_launch(std::string_view kernel) { check(cudaPeekAtLastError(), kernel); }

//! Whether at least one CUDA device is usable. Never throws: no driver, no device or an
//! insufficient driver all read as "no device".
inline bool device_present() noexcept {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        (void)cudaGetLastError();  // clear the sticky "no device" error so later calls start clean
        return false;
    }
    return count > 0;
}

//! Compute capability of the current device as `major * 10 + minor` (80 for A100, 90 for H100/H200).
inline int current_compute_capability() {
    int device = 0;
    check(cudaGetDevice(&device), "cudaGetDevice");
    int major = 0, minor = 0;
    check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute(major)");
    check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute(minor)");
    return major * 10 + minor;
}

//! Streaming multiprocessors of the current device.
inline int current_multiprocessors() {
    int device = 0;
    check(cudaGetDevice(&device), "cudaGetDevice");
    int count = 0;
    check(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute(SMs)");
    return count;
}

namespace detail {

//! Owner of one allocation made by `Allocator` (device or pinned host memory). Move-only.
template <class T, class Allocator>
class owned_array {
public:
    owned_array() = default;
    //! Allocates `count` elements (none for 0). Throws `cuda_error` when the allocation fails.
    explicit owned_array(std::size_t count) : count_(count) {
        if (count > 0) data_ = static_cast<T*>(Allocator::allocate(count * sizeof(T)));
    }
    owned_array(owned_array&& other) noexcept
        : data_(std::exchange(other.data_, nullptr)), count_(std::exchange(other.count_, 0)) {}
    owned_array& operator=(owned_array&& other) noexcept {
        if (this != &other) {
            release();
            data_ = std::exchange(other.data_, nullptr);
            count_ = std::exchange(other.count_, 0);
        }
        return *this;
    }
    owned_array(const owned_array&) = delete;
    owned_array& operator=(const owned_array&) = delete;
    ~owned_array() { release(); }

    [[nodiscard]] T* data() noexcept { return data_; }
    [[nodiscard]] const T* data() const noexcept { return data_; }
    [[nodiscard]] std::size_t size() const noexcept { return count_; }
    [[nodiscard]] std::size_t bytes() const noexcept { return count_ * sizeof(T); }
    T& operator[](std::size_t i) noexcept { return data_[i]; }  // host memory only
    const T& operator[](std::size_t i) const noexcept { return data_[i]; }

private:
    void release() noexcept {
        if (data_ != nullptr) Allocator::release(data_);
        data_ = nullptr;
        count_ = 0;
    }
    T* data_ = nullptr;
    std::size_t count_ = 0;
};

//! Device memory (`cudaMalloc`).
struct device_allocator {
    static void* allocate(std::size_t bytes) {
        void* p = nullptr;
        check(cudaMalloc(&p, bytes), "cudaMalloc");
        return p;
    }
    static void release(void* p) noexcept { (void)cudaFree(p); }
};

//! Page-locked, mapped into the device address space (so kernels may read it in place: zero-copy), and
//! portable across devices.
struct pinned_allocator {
    static void* allocate(std::size_t bytes) {
        void* p = nullptr;
        check(cudaHostAlloc(&p, bytes, cudaHostAllocMapped | cudaHostAllocPortable), "cudaHostAlloc");
        return p;
    }
    static void release(void* p) noexcept { (void)cudaFreeHost(p); }
};

}  // namespace detail

//! `count` elements of device memory (`cudaMalloc`), freed on destruction. Not host dereferenceable.
template <class T>
using device_array = detail::owned_array<T, detail::device_allocator>;

//! `count` elements of pinned, mapped host memory (`cudaHostAlloc`), freed on destruction.
template <class T>
using pinned_array = detail::owned_array<T, detail::pinned_allocator>;

//! The device address of mapped pinned memory (the same address under unified addressing).
template <class T>
T* device_view(T* pinned) {
    void* device = nullptr;
    check(cudaHostGetDevicePointer(&device, const_cast<void*>(static_cast<const void*>(pinned)), 0),
          "cudaHostGetDevicePointer");
    return static_cast<T*>(device);
}

//! An owned non-blocking stream (it does not synchronise with the legacy default stream).
class stream {
public:
    stream() { check(cudaStreamCreateWithFlags(&handle_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags"); }
    stream(const stream&) = delete;
    stream& operator=(const stream&) = delete;
    ~stream() { (void)cudaStreamDestroy(handle_); }
    [[nodiscard]] cudaStream_t get() const noexcept { return handle_; }
    void synchronize() const { check(cudaStreamSynchronize(handle_), "cudaStreamSynchronize"); }

private:
    cudaStream_t handle_ = nullptr;
};

//! An owned event without timing (the cheap kind used for stream ordering), or with timing on request.
class event {
public:
    explicit event(bool timing = false) {
        check(cudaEventCreateWithFlags(&handle_, timing ? cudaEventDefault : cudaEventDisableTiming),
              "cudaEventCreateWithFlags");
    }
    event(const event&) = delete;
    event& operator=(const event&) = delete;
    ~event() { (void)cudaEventDestroy(handle_); }
    [[nodiscard]] cudaEvent_t get() const noexcept { return handle_; }
    void record(cudaStream_t on) { check(cudaEventRecord(handle_, on), "cudaEventRecord"); }
    void synchronize() const { check(cudaEventSynchronize(handle_), "cudaEventSynchronize"); }

private:
    cudaEvent_t handle_ = nullptr;
};

//! The smaller and the larger of two indices, in host and device code alike.
HETEROCACHE_HOST_DEVICE constexpr index_t smaller(index_t a, index_t b) noexcept { return a < b ? a : b; }
HETEROCACHE_HOST_DEVICE constexpr index_t larger(index_t a, index_t b) noexcept { return a < b ? b : a; }

//! `ceil(a / b)` for positive `b`.
HETEROCACHE_HOST_DEVICE constexpr index_t ceil_div(index_t a, index_t b) noexcept { return (a + b - 1) / b; }

}  // namespace cuda
}  // namespace v1
}  // namespace heterocache
