// The instruction sets the engine's kernels are compiled for, and the run-time choice among them.
//
// The engine is built for the baseline of its target (no -march: the binaries run on any x86-64). Its hot
// kernels (the weights' products, the prefill and decode attention) are compiled once more for AVX2 + FMA +
// F16C and once for AVX-512 (F, BW, DQ, VL), each copy a function marked HCLLAMA_TARGET_AVX2 or
// HCLLAMA_TARGET_AVX512 around an always-inlined body, and the fastest copy this processor runs is chosen at
// run time. The processor is asked for instruction-set features, not for a model: GCC's
// target_clones("arch=haswell") is chosen only on that processor model, never on AMD or later Intel cores.
#pragma once

#include <vector>

// 1 when the x86 copies are compiled in (GCC or Clang on x86-64).
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define HCLLAMA_X86_DISPATCH 1
#define HCLLAMA_AVX2_FEATURES "avx2,fma,f16c"
#define HCLLAMA_AVX512_FEATURES "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"
#define HCLLAMA_TARGET_AVX2 __attribute__((target(HCLLAMA_AVX2_FEATURES)))
#define HCLLAMA_TARGET_AVX512 __attribute__((target(HCLLAMA_AVX512_FEATURES)))
// A target region: every function defined between HCLLAMA_BEGIN_AVX2 (or _AVX512) and HCLLAMA_END_TARGET,
// templates included, is compiled for that set (what a file of kernels included once per set needs).
#if defined(__clang__)
#define HCLLAMA_BEGIN_AVX2 \
  _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,f16c\"))), apply_to = function)")
#define HCLLAMA_BEGIN_AVX512                                                                                    \
  _Pragma(                                                                                                       \
      "clang attribute push(__attribute__((target(\"avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c\"))), " \
      "apply_to = function)")
#define HCLLAMA_END_TARGET _Pragma("clang attribute pop")
#else
#define HCLLAMA_BEGIN_AVX2 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c\")")
#define HCLLAMA_BEGIN_AVX512 \
  _Pragma("GCC push_options") _Pragma("GCC target(\"avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c\")")
#define HCLLAMA_END_TARGET _Pragma("GCC pop_options")
#endif
#else
#define HCLLAMA_X86_DISPATCH 0
#endif

namespace hcllama {

enum class kernel_isa { portable, avx2, avx512 };

// "portable", "avx2", "avx512".
const char* to_string(kernel_isa isa) noexcept;
// Compiled in, and this processor (and its operating system) has the instructions.
bool runs(kernel_isa isa) noexcept;
// The sets runs() accepts, portable first.
std::vector<kernel_isa> supported_isas();
// The last of supported_isas() (asked once).
kernel_isa best_isa() noexcept;

}  // namespace hcllama
