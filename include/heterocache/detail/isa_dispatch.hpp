#pragma once
//! \file
//! Run-time choice of the instruction set for the host kernels (internal).
//!
//! The library is header-only, so its kernels are compiled for whatever the including program targets:
//! on x86-64 that is SSE2 unless the engine passes `-march`. The hot kernels are therefore compiled twice
//! in every program: once for that baseline and once for AVX2 (`HETEROCACHE_TARGET_AVX2`), the second
//! chosen at run time when the processor has it. The AVX2 copy is built without FMA, and every kernel keeps
//! its sums in a fixed number of lanes (vector_math.hpp), so both copies give bit-identical results.
//!
//! The kernel bodies are marked `HETEROCACHE_ALWAYS_INLINE`, so each copy inlines the whole body and the
//! compiler vectorizes it for that copy's target. Define `HETEROCACHE_NO_ISA_DISPATCH` to compile the
//! baseline copy only (a build that targets AVX2 or later already, `-march=x86-64-v3` for one, compiles
//! one copy for that target and needs no dispatch).

#if defined(__GNUC__) || defined(__clang__)
#define HETEROCACHE_ALWAYS_INLINE [[gnu::always_inline]] inline
#else
#define HETEROCACHE_ALWAYS_INLINE inline
#endif

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) && !defined(__AVX2__) && \
    !defined(HETEROCACHE_NO_ISA_DISPATCH)
//! 1 when the kernels carry an AVX2 copy chosen at run time.
#define HETEROCACHE_ISA_DISPATCH 1
//! Compiles a function for AVX2 (no FMA: results stay bit-identical to the baseline copy).
#define HETEROCACHE_TARGET_AVX2 __attribute__((target("avx2")))
#else
#define HETEROCACHE_ISA_DISPATCH 0
#define HETEROCACHE_TARGET_AVX2
#endif

namespace heterocache {
inline namespace v1 {
namespace detail {

//! The instruction sets a host kernel can run with.
enum class kernel_isa : unsigned char {
    baseline,  //!< what the including program targets
    avx2,      //!< the AVX2 copy
};

//! Whether this processor (and its operating system) runs the AVX2 copy. Asked once.
inline bool processor_has_avx2() noexcept {
#if HETEROCACHE_ISA_DISPATCH
    static const bool has = __builtin_cpu_supports("avx2");
    return has;
#else
    return false;
#endif
}

//! The copy the kernels run: AVX2 when it is compiled in and the processor has it.
inline kernel_isa selected_kernel_isa() noexcept {
    return processor_has_avx2() ? kernel_isa::avx2 : kernel_isa::baseline;
}

//! A name for the copy the kernels run, for benchmark and log headers: "avx2 (chosen at run time)", or
//! "compiled target" when the build has a single copy.
inline const char* kernel_isa_name() noexcept {
    if (selected_kernel_isa() == kernel_isa::avx2) return "avx2 (chosen at run time)";
    return HETEROCACHE_ISA_DISPATCH ? "baseline (no avx2 on this processor)" : "compiled target (no run-time dispatch)";
}

}  // namespace detail
}  // namespace v1
}  // namespace heterocache
