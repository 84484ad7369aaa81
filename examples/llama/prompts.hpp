// Prompts shared by heterocache-llama and heterocache-eval: the passkey retrieval prompt.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "tokenizer.hpp"

namespace hcllama {

struct passkey_prompt {
  std::string text;
  std::string key;
  double depth = 0;
};

// Passkey prompt styles (--passkey-style):
//   0 chat template, repeated classic filler ("The grass is green. ...")
//   1 no chat template (plain completion), classic filler
//   2 chat template, varied filler (sentences drawn from a fixed list)
//   3 no chat template, varied filler
inline constexpr int passkey_styles = 4;

inline constexpr std::size_t max_passkey_tokens = std::size_t{1} << 31;

// A prompt of at most `target_tokens` tokens hiding a 5-digit key (drawn from `seed`) at `depth` in [0, 1]
// (drawn from `seed` when empty), ending with the question and the answer prefix " The pass key is".
// Throws std::invalid_argument for a depth outside [0, 1] (NaN included), a style outside
// [0, passkey_styles), or more than max_passkey_tokens tokens.
passkey_prompt build_passkey_prompt(const tokenizer& tok, std::size_t target_tokens, std::uint64_t seed,
                                    std::optional<double> depth, int style);

}  // namespace hcllama
