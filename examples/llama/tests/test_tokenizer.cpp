#include <doctest/doctest.h>

#include "test_model_path.hpp"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <unordered_map>

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

// The BPE of the engine before it was made O(n log n), as the reference it must match: find the adjacent
// pair with the lowest merge rank, merge every occurrence of it left to right, repeat; symbols that are not
// tokens fall back to their bytes. Bytes without a byte token are dropped first (as the Hugging Face
// tokenizer does; before, they became the unknown token).
struct reference_bpe {
  std::unordered_map<std::string, std::int32_t> ids;
  std::unordered_map<std::string, std::int32_t> rank;
  std::string sym[256];

  explicit reference_bpe(const gguf_file& f) {
    const auto& toks = f.get("tokenizer.ggml.tokens").as_array();
    for (std::size_t i = 0; i < toks.size(); ++i) ids.emplace(toks[i].as_string(), static_cast<std::int32_t>(i));
    if (const auto* m = f.find("tokenizer.ggml.merges"))
      for (std::size_t i = 0; i < m->as_array().size(); ++i)
        rank.emplace(m->as_array()[i].as_string(), static_cast<std::int32_t>(i));
    for (int b = 0; b < 256; ++b) sym[b] = byte_symbol(b);
  }

  void word(const std::string& w, std::vector<std::int32_t>& out) const {
    std::vector<std::string> s;
    for (unsigned char b : w)
      if (ids.count(sym[b])) s.push_back(sym[b]);
    while (s.size() > 1) {
      std::int32_t best = INT32_MAX;
      std::size_t at = 0;
      for (std::size_t i = 0; i + 1 < s.size(); ++i)
        if (auto it = rank.find(s[i] + " " + s[i + 1]); it != rank.end() && it->second < best) best = it->second, at = i;
      if (best == INT32_MAX) break;
      const std::string a = s[at], b = s[at + 1];
      std::vector<std::string> next;
      for (std::size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) next.push_back(a + b), i += 2;
        else next.push_back(s[i]), ++i;
      }
      s.swap(next);
    }
    for (const auto& x : s) {
      if (auto it = ids.find(x); it != ids.end()) {
        out.push_back(it->second);
        continue;
      }
      for (std::size_t i = 0; i < x.size();) {
        std::uint32_t cp;
        const auto n = utf8_decode(x, i, cp);
        out.push_back(ids.at(x.substr(i, n)));
        i += n;
      }
    }
  }

  // encode(text, false) by the reference, on the tokenizer's own pre-tokenization
  std::vector<std::int32_t> encode(const tokenizer& t, const std::string& text) const {
    std::vector<std::int32_t> out;
    for (const auto& piece : t.pre_tokenize(text)) word(piece, out);
    return out;
  }
};

// A random vocabulary over a few letters: every byte token but those in `missing`, and merges of random
// pairs of tokens, some out of order (a merge ranked before the merge that makes one of its parts) and
// some whose result is not a token (a malformed file), so that every branch of the BPE is exercised.
gguf_file random_vocab(std::uint64_t seed, const std::string& letters, const std::set<int>& missing) {
  std::mt19937_64 rng(seed);
  gguf_array toks, types;
  std::set<std::string> have;
  auto add = [&](const std::string& t, int type) {
    toks.push_back(W::string(t));
    types.push_back(W::i32(type));
    have.insert(t);
  };
  add("<|endoftext|>", 3);
  for (int b = 0; b < 256; ++b)
    if (!missing.count(b)) add(byte_symbol(b), 1);
  std::vector<std::string> pool;
  for (unsigned char c : letters) pool.push_back(byte_symbol(c));
  std::vector<std::string> merges;
  std::set<std::string> merge_set;
  for (int k = 0; k < 120; ++k) {
    const std::string a = pool[rng() % pool.size()], b = pool[rng() % pool.size()];
    const std::string key = a + " " + b;
    if (merge_set.count(key)) continue;
    merge_set.insert(key);
    merges.push_back(key);
    if (std::find(pool.begin(), pool.end(), a + b) == pool.end()) pool.push_back(a + b);
    if (rng() % 10 != 0 && !have.count(a + b)) add(a + b, 1);  // 1 in 10: the result is not a token
  }
  for (std::size_t k = 0; k < merges.size() / 4; ++k) std::swap(merges[rng() % merges.size()], merges[rng() % merges.size()]);
  gguf_array m;
  for (const auto& x : merges) m.push_back(W::string(x));
  W w;
  w.add("tokenizer.ggml.model", W::string("gpt2"));
  w.add("tokenizer.ggml.pre", W::string("smollm"));
  w.add("tokenizer.ggml.tokens", W::array(gguf_type::string, toks));
  w.add("tokenizer.ggml.token_type", W::array(gguf_type::i32, types));
  w.add("tokenizer.ggml.merges", W::array(gguf_type::string, m));
  return gguf_file::from_bytes(w.bytes());
}

// Random and adversarial texts over `alphabet`: random strings, long runs of one or two symbols, repeats.
std::vector<std::string> test_texts(std::uint64_t seed, const std::string& alphabet, std::size_t count, std::size_t max_len) {
  std::mt19937_64 rng(seed);
  std::vector<std::string> out;
  for (std::size_t i = 0; i < count; ++i) {
    std::string s;
    const std::size_t n = rng() % (max_len + 1);
    switch (i % 4) {
      case 0:
      case 1:
        for (std::size_t k = 0; k < n; ++k) s += alphabet[rng() % alphabet.size()];
        break;
      case 2: {  // a run of one symbol, or of a short unit
        std::string unit;
        for (std::size_t k = 0, u = 1 + rng() % 3; k < u; ++k) unit += alphabet[rng() % alphabet.size()];
        while (s.size() < n) s += unit;
        break;
      }
      default: {  // a few symbols, mostly one
        const char a = alphabet[rng() % alphabet.size()], b = alphabet[rng() % alphabet.size()];
        for (std::size_t k = 0; k < n; ++k) s += rng() % 8 ? a : b;
      }
    }
    out.push_back(s);
  }
  return out;
}

std::string from_hex(const std::string& h) {
  std::string s;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) s += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  return s;
}

using hcllama::testing::model_path;

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
  // This vocabulary lacks the byte tokens of 21 bytes (0x04 0x06 0x13 0x14 0x16 0x1D 0xC0 0xC1 0xF1 0xF2
  // 0xF5..0xFF): they are dropped, as the Hugging Face tokenizer does; every other byte round-trips.
  const std::set<int> missing = {0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xC0, 0xC1, 0xF1, 0xF2, 0xF5, 0xF6, 0xF7,
                                 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF};
  for (int b = 0; b < 256; ++b) {
    const std::string s(1, static_cast<char>(b)), text = "x" + s + "y";
    CHECK_MESSAGE(t.decode(t.encode(text)) == (missing.count(b) ? "xy" : text), "byte " << b);
    CHECK_MESSAGE(t.encode(s).empty() == (missing.count(b) != 0), "byte " << b);
  }
  CHECK(t.encode("!\x04!") == t.encode("!!"));  // dropped before merging ("!!" is one token), as the reference does
  CHECK(t.encode("!!").size() == 1);
  CHECK(t.decode(t.encode("invalid utf-8: \xFF\xFE \xC3 \xE2\x82 end")) == "invalid utf-8:  \xC3 \xE2\x82 end");
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

TEST_CASE("BPE: the O(n log n) merge gives the reference's tokens on random vocabularies") {
  const std::string letters = "abcd!";
  const std::string alphabet = "abcd!\x04 1";  // 0x04 has no byte token: dropped; '!' merges across it
  for (std::uint64_t seed = 1; seed <= 12; ++seed) {
    const auto f = random_vocab(seed, letters, {0x04, 0xF5});
    const tokenizer t(f);
    const reference_bpe ref(f);
    int bad = 0;
    for (const auto& text : test_texts(seed * 7, alphabet, 300, 120)) {
      const auto got = t.encode(text, false), want = ref.encode(t, text);
      if (got != want && ++bad <= 3) CHECK_MESSAGE(got == want, "seed " << seed << " text '" << text << "'");
    }
    CHECK(bad == 0);
    // long words: one word without spaces of up to 3000 bytes
    for (const auto& text : test_texts(seed * 11, "abcd", 8, 3000)) CHECK(t.encode(text, false) == ref.encode(t, text));
  }
}

TEST_CASE("BPE: bytes without a byte token are dropped before merging") {
  const auto f = tiny_vocab();
  gguf_array toks, types;
  // the tiny vocabulary without the byte tokens of 0x04 and 0xFF
  const auto& a = f.get("tokenizer.ggml.tokens").as_array();
  const auto& ty = f.get("tokenizer.ggml.token_type").as_array();
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].as_string() == byte_symbol(0x04) || a[i].as_string() == byte_symbol(0xFF)) continue;
    toks.push_back(W::string(a[i].as_string()));
    types.push_back(W::i32(static_cast<std::int32_t>(ty[i].as_i64())));
  }
  toks.push_back(W::string("!!"));
  types.push_back(W::i32(1));
  W w;
  w.add("tokenizer.ggml.model", W::string("gpt2"));
  w.add("tokenizer.ggml.pre", W::string("smollm"));
  w.add("tokenizer.ggml.tokens", W::array(gguf_type::string, toks));
  w.add("tokenizer.ggml.token_type", W::array(gguf_type::i32, types));
  w.add("tokenizer.ggml.merges", W::array(gguf_type::string, {W::string("h e"), W::string("! !")}));
  const auto g = gguf_file::from_bytes(w.bytes());
  const tokenizer t(g);
  const std::int32_t bang2 = t.find_token("!!"), h = t.find_token("h"), e = t.find_token("e");
  REQUIRE(bang2 >= 0);
  CHECK(t.encode("\x04", false).empty());
  CHECK(t.encode("\xFF\x04\xFF", false).empty());
  // "!\x04!" is one pre-token (no letter, digit or space): the two '!' merge across the dropped byte
  CHECK(t.encode("!\x04!", false) == std::vector<std::int32_t>{bang2});
  CHECK(t.encode("!\xFF\xFF!", false) == std::vector<std::int32_t>{bang2});
  // "h\x04e" is three pre-tokens (h, \x04, e): nothing to merge across
  CHECK(t.encode("h\x04" "e", false) == std::vector<std::int32_t>{h, e});
  CHECK(t.decode(t.encode("a\x04" "b\xFF" "c")) == "abc");
}

TEST_CASE("BPE: a 40,000-byte word without spaces is fast") {
  const auto f = random_vocab(3, "abcd!", {});
  const tokenizer t(f);
  std::mt19937_64 rng(5);
  std::string word;
  for (int i = 0; i < 40000; ++i) word += "abcd"[rng() % 4];
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = t.encode(word, false);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(!ids.empty());
  CHECK(t.decode(ids) == word);
  CHECK_MESSAGE(s < 2.0, "40,000-byte word took " << s << " s");  // about 0.01 s; the quadratic merge took seconds
}

TEST_CASE("real model: the O(n log n) BPE matches the reference merge (needs HETEROCACHE_MODEL)") {
  const char* path = model_path();
  if (!path) {
    MESSAGE("HETEROCACHE_MODEL unset or missing: skipping");
    return;
  }
  const auto f = gguf_file::open(path);
  const tokenizer t(f);
  const reference_bpe ref(f);
  std::mt19937_64 rng(9);
  const std::vector<std::string> pools = {"abcdefghijklmnopqrstuvwxyz", "etaoinshr", "!#$%&()*+-./:;<=>?@[]^_{|}~",
                                          " \t\n\n", "0123456789", "\xC3\xA9\xC3\xBC\xE6\x97\xA5\xF0\x9F\x99\x82\x04\xC0\xFF"};
  int bad = 0;
  for (int i = 0; i < 400; ++i) {
    std::string text;
    for (int k = 0, parts = 1 + static_cast<int>(rng() % 6); k < parts; ++k) {
      const auto& p = pools[rng() % pools.size()];
      for (std::size_t n = 1 + rng() % 40; n > 0; --n) text += p[rng() % p.size()];
    }
    const auto got = t.encode(text, false), want = ref.encode(t, text);
    if (got != want && ++bad <= 3) CHECK_MESSAGE(got == want, "text '" << text << "'");
  }
  CHECK(bad == 0);
  for (const auto& text : test_texts(17, "abcdefghijklmnopqrstuvwxyz", 6, 3000)) CHECK(t.encode(text, false) == ref.encode(t, text));
}

TEST_CASE("real model: ids of the Hugging Face reference tokenizer (tests/tokenizer_reference.tsv, needs HETEROCACHE_MODEL)") {
  const char* path = model_path();
  if (!path) {
    MESSAGE("HETEROCACHE_MODEL unset or missing: skipping");
    return;
  }
  const auto fixture = std::filesystem::path(__FILE__).parent_path() / "tokenizer_reference.tsv";
  std::ifstream in(fixture);
  REQUIRE_MESSAGE(in.good(), "cannot read " << fixture.string());
  const auto f = gguf_file::open(path);
  const tokenizer t(f);
  std::size_t n = 0, bad = 0, dropped = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const auto tab = line.find('\t');
    REQUIRE(tab != std::string::npos);
    const std::string text = from_hex(line.substr(0, tab));
    std::vector<std::int32_t> want;
    std::stringstream ss(line.substr(tab + 1));
    for (std::string id; std::getline(ss, id, ',');) want.push_back(std::stoi(id));
    const auto got = t.encode(text);
    ++n;
    dropped += t.decode(got) != text;
    if (got != want && ++bad <= 5) CHECK_MESSAGE(got == want, "text (hex) " << line.substr(0, tab));
  }
  CHECK(n >= 400);
  CHECK(bad == 0);
  CHECK(dropped > 0);  // the fixture holds texts with bytes that have no token
}
