// libFuzzer target over the GGUF parser and dequantizer (scripts/fuzz-gguf.sh).
#include <cstddef>
#include <cstdint>
#include <span>

#include "gguf.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto f = hcllama::gguf_file::view_bytes(std::span<const std::uint8_t>(data, size));
    for (const auto& [k, v] : f.metadata()) {
      if (v.is_integer()) (void)v.as_u64();
    }
    for (const auto& t : f.tensors())
      if (hcllama::can_dequantize(t.type) && t.n_elements <= (1u << 20)) (void)f.to_float(t);
  } catch (const hcllama::gguf_error&) {
  }
  return 0;
}
