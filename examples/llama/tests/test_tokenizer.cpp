#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <memory>

#include "gguf.hpp"
#include "tokenizer.hpp"

using namespace hcllama;
using W = gguf_writer;

namespace {

// GPT-2 byte -> unicode symbol (same rule as the tokenizer, written independently).
std::string byte_symbol(int b) {
  int n = 0;
  for (int x = 0; x < 256; ++x) {
    const bool keep = (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174);
    if (x == b) return utf8_encode(keep ? static_cast<std::uint32_t>(x) : static_cast<std::uint32_t>(256 + n));
    if (!keep) ++n;
  }
  return {};
}

// A tiny vocabulary: 3 control tokens, the 256 byte symbols and a few merges.
gguf_file tiny_vocab(const std::string& pre = "smollm") {
  gguf_array toks, types;
  auto add = [&](const std::string& t, int type) {
    toks.push_back(W::string(t));
    types.push_back(W::i32(type));
  };
  add("<|endoftext|>", 3);
  add("<|im_start|>", 3);
  add("<|im_end|>", 3);
  for (int b = 0; b < 256; ++b) add(byte_symbol(b), 1);
  add("he", 1);      // 259
  add("\xC4\xA0t", 1);   // "Ġt" 260
  add("\xC4\xA0the", 1); // "Ġthe" 261
  add("ll", 1);      // 262
  gguf_array merges = {W::string("h e"), W::string("\xC4\xA0 t"), W::string("\xC4\xA0t he"), W::string("l l")};
  W w;
  w.add("tokenizer.ggml.model", W::string("gpt2"));
  w.add("tokenizer.ggml.pre", W::string(pre));
  w.add("tokenizer.ggml.tokens", W::array(gguf_type::string, toks));
  w.add("tokenizer.ggml.token_type", W::array(gguf_type::i32, types));
  w.add("tokenizer.ggml.merges", W::array(gguf_type::string, merges));
  w.add("tokenizer.ggml.bos_token_id", W::u32(1));
  w.add("tokenizer.ggml.eos_token_id", W::u32(2));
  w.add("tokenizer.chat_template",
        W::string("{{ '<|im_start|>system\nYou are a test bot<|im_end|>\n' }}{% for m in messages %}...{% endfor %}"));
  return gguf_file::from_bytes(w.bytes());
}

std::vector<std::string> split(const tokenizer& t, const std::string& s) { return t.pre_tokenize(s); }

const char* const kRoundTrip[] = {
    "",
    "Hello world",
    "  leading and trailing  ",
    "tabs\tnew\nlines\r\n\n\n end",
    "digits 0123456789 and 3.14 and ½²",
    "don't we'll they've I'M",
    "naïve café Straße Ελληνικά русский 日本語 한국어 العربية עברית",
    "emoji 🙂👍🏽🇩🇪 ∑∫√",
    "<|im_start|>user\nhi<|im_end|>\n",
    "invalid utf-8: \xFF\xFE \xC3 \xE2\x82 end",
    "\xF0\x9F\x98",  // truncated 4-byte sequence
    "nul byte \0 inside",
};

}  // namespace

TEST_CASE("unicode classes") {
  CHECK(is_letter('a'));
  CHECK(is_letter(0x00E9));  // é
  CHECK(is_letter(0x65E5));  // 日
  CHECK_FALSE(is_letter('1'));
  CHECK(is_number('7'));
  CHECK(is_number(0x00BD));  // ½
  CHECK(is_number(0x0663));  // Arabic-Indic three
  CHECK_FALSE(is_number('x'));
  CHECK(is_whitespace(' '));
  CHECK(is_whitespace(0x3000));
  CHECK_FALSE(is_whitespace('_'));
  std::uint32_t cp = 0;
  CHECK(utf8_decode("\xE2\x82\xAC", 0, cp) == 3);
  CHECK(cp == 0x20AC);
  CHECK(utf8_decode("\xC0\x80", 0, cp) == 1);  // overlong
  CHECK(utf8_encode(0x1F642) == "\xF0\x9F\x99\x82");
}

TEST_CASE("pre-tokenizer follows the GPT-2 rules with individual digits") {
  const auto f = tiny_vocab();
  const tokenizer t(f);
  CHECK(t.pre_type() == "smollm");
  using V = std::vector<std::string>;
  CHECK(split(t, "Hello world") == V{"Hello", " world"});
  CHECK(split(t, "abc 123") == V{"abc", " ", "1", "2", "3"});
  CHECK(split(t, "x2y") == V{"x", "2", "y"});
  CHECK(split(t, "don't") == V{"don", "'t"});
  CHECK(split(t, "we'll they've I'M") == V{"we", "'ll", " they", "'ve", " I", "'", "M"});
  CHECK(split(t, "a  b") == V{"a", " ", " b"});
  CHECK(split(t, "a\nb") == V{"a", "\n", "b"});
  CHECK(split(t, "a \n\n b") == V{"a", " \n\n", " b"});
  CHECK(split(t, "end   ") == V{"end", "   "});
  CHECK(split(t, "hi!!! ??") == V{"hi", "!!!", " ??"});
  CHECK(split(t, "café ñ") == V{"café", " ñ"});
  CHECK(split(t, "日本語です") == V{"日本語です"});
  CHECK(split(t, "x ½") == V{"x", " ", "½"});
}

TEST_CASE("tiny vocabulary: BPE merges, specials, round trips") {
  const auto f = tiny_vocab();
  const tokenizer t(f);
  CHECK(t.vocab_size() == 263);
  CHECK(t.bos() == 1);
  CHECK(t.eos() == 2);
  CHECK(t.is_special(1));
  CHECK_FALSE(t.is_special(100));
  const std::int32_t sp = 3 + ' ';
  const std::int32_t T = 3 + 't';
  // "the the": t,h,e -> t,he ; Ġ,t,h,e -> Ġthe
  CHECK(t.encode("the the") == std::vector<std::int32_t>{T, 259, 261});
  CHECK(t.encode(" t") == std::vector<std::int32_t>{260});
  CHECK(t.encode("hello") == std::vector<std::int32_t>{259, 262, 3 + 'o'});  // he, ll, o
  CHECK(t.encode("<|im_start|>the<|im_end|>") == std::vector<std::int32_t>{1, T, 259, 2});
  CHECK(t.encode("<|im_start|>", false).size() == 12);
  CHECK(t.encode("a <|im_end|>") == std::vector<std::int32_t>{3 + 'a', sp, 2});
  CHECK(t.decode({1, T, 259, 2}) == "<|im_start|>the<|im_end|>");
  CHECK(t.is_end_of_turn(2));
  for (const char* s : kRoundTrip) {
    const std::string text = (std::string(s) == "nul byte \0 inside") ? std::string("nul byte \0 inside", 17) : s;
    CHECK(t.decode(t.encode(text)) == text);
    CHECK(t.decode(t.encode(text, false)) == text);
  }
  // every single byte round-trips
  for (int b = 0; b < 256; ++b) {
    const std::string s(1, static_cast<char>(b));
    CHECK(t.decode(t.encode(s)) == s);
  }
}

TEST_CASE("chat template (ChatML) with the template's default system prompt") {
  const auto f = tiny_vocab();
  const tokenizer t(f);
  CHECK(t.default_system_prompt() == "You are a test bot");
  CHECK(t.apply_chat_template({{"user", "Hi"}}) ==
        "<|im_start|>system\nYou are a test bot<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  CHECK(t.apply_chat_template({{"system", "S"}, {"user", "U"}}, false) ==
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n");
}

TEST_CASE("unsupported tokenizers throw") {
  W w;
  w.add("tokenizer.ggml.model", W::string("llama"));
  w.add("tokenizer.ggml.tokens", W::array(gguf_type::string, {W::string("a")}));
  const auto f = gguf_file::from_bytes(w.bytes());
  CHECK_THROWS_AS(tokenizer{f}, tokenizer_error);
  const auto g = tiny_vocab("some-unknown-pre");
  CHECK_THROWS_AS(tokenizer{g}, tokenizer_error);
}

TEST_CASE("real model tokenizer (needs HETEROCACHE_MODEL)") {
  const char* path = std::getenv("HETEROCACHE_MODEL");
  if (!path || !std::filesystem::exists(path)) {
    MESSAGE("HETEROCACHE_MODEL unset or missing: skipping the real-model tokenizer test");
    return;
  }
  const auto f = gguf_file::open(path);
  const tokenizer t(f);
  CHECK(t.vocab_size() == 49152);
  // ids checked against the Hugging Face tokenizers package (tools/check_tokenizer.py)
  CHECK(t.encode("Hello world") == std::vector<std::int32_t>{19556, 905});
  CHECK(t.encode("The pass key is 12345.") == std::vector<std::int32_t>{504, 1301, 1646, 314, 216, 33, 34, 35, 36, 37, 30});
  CHECK(t.encode("<|im_start|>user\nHéllo 日本<|im_end|>") ==
        std::vector<std::int32_t>{1, 4093, 198, 56, 2756, 31394, 17097, 241, 115, 40993, 2});
  CHECK(t.find_token("<|im_start|>") == 1);
  CHECK(t.default_system_prompt() == "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  // This vocabulary lacks the byte symbols of some bytes that never occur in
  // valid UTF-8 (0xC0, 0xC1, 0xF5..0xFF, ...), so those cannot round-trip.
  for (const char* s : kRoundTrip) {
    const std::string text = s;
    if (text.find('\xFF') != std::string::npos) continue;
    CHECK(t.decode(t.encode(text)) == text);
  }
  CHECK(t.decode(t.encode("truncated: \xC3 \xE2\x82 \xF0\x9F\x98")) == "truncated: \xC3 \xE2\x82 \xF0\x9F\x98");
  std::string long_text;
  for (int i = 0; i < 200; ++i) long_text += "Line " + std::to_string(i) + ": äöü ß — “quotes” ’ 🙂\n";
  CHECK(t.decode(t.encode(long_text)) == long_text);
}
