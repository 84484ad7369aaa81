#pragma once
// Shared by the CUDA tests: a doctest main that skips without a device, device/host copies, NaN poison,
// seeded random inputs and tolerance checks.

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "heterocache/cuda/config.cuh"

namespace hc = heterocache;
namespace hcc = heterocache::cuda;

//! Exit code CTest's SKIP_RETURN_CODE maps to "skipped".
inline constexpr int skip_exit_code = 77;

int main(int argc, char** argv) {
    if (!hcc::device_present()) {
        std::printf("no CUDA device: skipped\n");
        return skip_exit_code;
    }
    doctest::Context context(argc, argv);
    return context.run();
}

//! A device copy of `host`.
template <class T>
hcc::device_array<T> to_device(const std::vector<T>& host) {
    hcc::device_array<T> device(host.size());
    if (!host.empty())
        hcc::check(cudaMemcpy(device.data(), host.data(), device.bytes(), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
    return device;
}

//! The device array's contents, after every preceding operation on every stream finished.
template <class T>
std::vector<T> to_host(const hcc::device_array<T>& device) {
    hcc::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    std::vector<T> host(device.size());
    if (!host.empty())
        hcc::check(cudaMemcpy(host.data(), device.data(), device.bytes(), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    return host;
}

//! `count` device elements filled with the all-ones byte pattern: NaN for floats, -1 for indices, so an
//! element the kernel forgot to write shows.
template <class T>
hcc::device_array<T> poisoned(std::size_t count) {
    hcc::device_array<T> device(count);
    if (count > 0) hcc::check(cudaMemset(device.data(), 0xff, device.bytes()), "cudaMemset poison");
    return device;
}

//! `n` floats uniform in [-spread, spread), from a fresh seed reported on failure.
inline std::vector<float> random_floats(std::mt19937& rng, std::size_t n, float spread = 1.0f) {
    std::uniform_real_distribution<float> dist(-spread, spread);
    std::vector<float> out(n);
    for (float& x : out) x = dist(rng);
    return out;
}

//! A seed that differs each run (fresh random inputs), logged so a failure can be replayed.
inline std::mt19937 fresh_rng() {
    const unsigned seed = std::random_device{}();
    MESSAGE("seed " << seed);
    return std::mt19937(seed);
}

//! Largest `|got - want| / max(|want|, floor)` over the arrays; NaN anywhere gives infinity.
inline double max_relative_error(const std::vector<float>& got, const std::vector<float>& want, double floor = 1e-3) {
    REQUIRE(got.size() == want.size());
    double worst = 0.0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        if (std::isnan(got[i]) != std::isnan(want[i])) return std::numeric_limits<double>::infinity();
        if (std::isnan(want[i]) || got[i] == want[i]) continue;  // equal infinities included
        const double e = std::abs(double{got[i]} - double{want[i]}) / std::max(std::abs(double{want[i]}), floor);
        worst = std::max(worst, e);
    }
    return worst;
}
