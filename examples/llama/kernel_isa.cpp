#include "kernel_isa.hpp"

namespace hcllama {

const char* to_string(kernel_isa isa) noexcept {
  switch (isa) {
    case kernel_isa::portable: return "portable";
    case kernel_isa::avx2: return "avx2";
    case kernel_isa::avx512: return "avx512";
  }
  return "?";
}

bool runs(kernel_isa isa) noexcept {
  switch (isa) {
    case kernel_isa::portable: return true;
#if HCLLAMA_X86_DISPATCH
    case kernel_isa::avx2:
#if defined(__clang__)
      // Clang's __builtin_cpu_supports has no "f16c"; every processor with AVX2 has it.
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#endif
    case kernel_isa::avx512:
      return runs(kernel_isa::avx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#endif
    default: return false;
  }
}

std::vector<kernel_isa> supported_isas() {
  std::vector<kernel_isa> out;
  for (kernel_isa isa : {kernel_isa::portable, kernel_isa::avx2, kernel_isa::avx512})
    if (runs(isa)) out.push_back(isa);
  return out;
}

kernel_isa best_isa() noexcept {
  static const kernel_isa best = supported_isas().back();
  return best;
}

}  // namespace hcllama
