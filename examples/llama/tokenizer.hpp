// Byte-level BPE tokenizer (GPT-2 style) built from GGUF metadata.
//
// Supports tokenizer.ggml.model == "gpt2" with the GPT-2 pre-tokenizer
// rules; the "smollm" pre-tokenizer (and other GPT-2 variants that first
// split every \p{N} character off) is implemented by hand, without a regex
// library. Control and user-defined tokens (e.g. <|im_start|>) are matched
// in the input text as single tokens. BPE runs in O(n log n) in the length
// of a word; bytes without a byte token in the vocabulary are dropped, as
// the Hugging Face reference tokenizer does (so decode(encode(x)) != x for
// a text holding one of them).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gguf.hpp"

namespace hcllama {

struct tokenizer_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct chat_message {
  std::string role;
  std::string content;
};

class tokenizer {
 public:
  explicit tokenizer(const gguf_file& f);

  // parse_special: recognise control/user-defined token strings in `text`.
  std::vector<std::int32_t> encode(std::string_view text, bool parse_special = true) const;
  std::string decode(const std::vector<std::int32_t>& ids) const;
  std::string token_text(std::int32_t id) const;  // decoded bytes of one token

  // Pre-tokenizer only (for tests): the pieces BPE runs on.
  std::vector<std::string> pre_tokenize(std::string_view text) const;

  std::size_t vocab_size() const noexcept { return tokens_.size(); }
  std::int32_t bos() const noexcept { return bos_; }
  std::int32_t eos() const noexcept { return eos_; }
  bool add_bos() const noexcept { return add_bos_; }
  bool is_special(std::int32_t id) const noexcept;
  std::int32_t find_token(std::string_view text) const noexcept;  // -1 if absent
  const std::string& pre_type() const noexcept { return pre_; }

  // ChatML (<|im_start|>role\ncontent<|im_end|>\n ...). When the first
  // message is not a system message, the model's default system prompt
  // (taken from tokenizer.chat_template when present) is inserted.
  std::string apply_chat_template(const std::vector<chat_message>& messages, bool add_generation_prompt = true) const;
  const std::string& default_system_prompt() const noexcept { return default_system_; }
  // Token ids that end a chat turn (eos and <|im_end|> if present).
  bool is_end_of_turn(std::int32_t id) const noexcept;

 private:
  void bpe_(const std::string& word, std::vector<std::int32_t>& out) const;
  void encode_plain_(std::string_view text, std::vector<std::int32_t>& out) const;

  std::vector<std::string> tokens_;
  std::vector<std::int32_t> types_;
  std::unordered_map<std::string, std::int32_t> token_to_id_;
  std::unordered_map<std::string, std::int32_t> merge_rank_;  // "a b" -> rank
  std::vector<std::pair<std::string, std::int32_t>> specials_;  // sorted longest first
  std::string byte_to_sym_[256];
  bool byte_known_[256] = {};  // byte_to_sym_[b] is in the vocabulary (else b is dropped, see bpe_)
  std::size_t max_merge_len_ = 0;  // longest "a b" merge string
  std::unordered_map<std::uint32_t, std::uint8_t> sym_to_byte_;
  std::int32_t bos_ = -1, eos_ = -1, im_end_ = -1;
  bool add_bos_ = false;
  bool split_digits_ = false;
  std::string pre_;
  std::string default_system_;
  mutable std::unordered_map<std::string, std::vector<std::int32_t>> cache_;
};

// Unicode helpers (exposed for tests).
bool is_letter(std::uint32_t cp) noexcept;
bool is_number(std::uint32_t cp) noexcept;
bool is_whitespace(std::uint32_t cp) noexcept;
// Decodes one UTF-8 code point at s[i]; invalid bytes decode as themselves
// (0x80..0xFF) with length 1. Returns the length.
std::size_t utf8_decode(std::string_view s, std::size_t i, std::uint32_t& cp) noexcept;
std::string utf8_encode(std::uint32_t cp);

}  // namespace hcllama
