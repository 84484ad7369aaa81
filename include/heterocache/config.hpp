#pragma once
//! \file
//! Library-wide configuration: version, namespace and host/device annotations.

#define HETEROCACHE_VERSION_MAJOR 0
#define HETEROCACHE_VERSION_MINOR 1
#define HETEROCACHE_VERSION_PATCH 0

//! Marks functions usable from both host and device code. Plain `inline` without nvcc,
//! so the core headers never need CUDA (DESIGN.md section 3, "Backends").
#if defined(__CUDACC__)
#define HETEROCACHE_HOST_DEVICE __host__ __device__ inline
#else
#define HETEROCACHE_HOST_DEVICE inline
#endif
