#include "tokenizer.hpp"

#include <algorithm>
#include <functional>

namespace hcllama {

namespace {
#include "unicode_tables.inc"

[[noreturn]] void fail(const std::string& msg) { throw tokenizer_error("tokenizer: " + msg); }

template <std::size_t N>
bool in_ranges(const std::uint32_t (&r)[N][2], std::uint32_t cp) noexcept {
  std::size_t lo = 0, hi = N;
  while (lo < hi) {
    const std::size_t mid = (lo + hi) / 2;
    if (cp < r[mid][0]) hi = mid;
    else if (cp > r[mid][1]) lo = mid + 1;
    else return true;
  }
  return false;
}

constexpr std::int32_t kTypeNormal = 1, kTypeControl = 3, kTypeUserDefined = 4;
// Marker for a byte that is not valid UTF-8 (never a letter/number/space).
constexpr std::uint32_t kInvalid = 0xFFFFFFFFu;
}  // namespace

bool is_letter(std::uint32_t cp) noexcept {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return in_ranges(kLetterRanges, cp);
}
bool is_number(std::uint32_t cp) noexcept {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_ranges(kNumberRanges, cp);
}
bool is_whitespace(std::uint32_t cp) noexcept {
  switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0x85: case 0xA0: case 0x1680:
    case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

std::size_t utf8_decode(std::string_view s, std::size_t i, std::uint32_t& cp) noexcept {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    cp = b0;
    return 1;
  }
  std::size_t len;
  std::uint32_t c, min;
  if ((b0 & 0xE0) == 0xC0) { len = 2; c = b0 & 0x1F; min = 0x80; }
  else if ((b0 & 0xF0) == 0xE0) { len = 3; c = b0 & 0x0F; min = 0x800; }
  else if ((b0 & 0xF8) == 0xF0) { len = 4; c = b0 & 0x07; min = 0x10000; }
  else { cp = kInvalid; return 1; }
  if (i + len > s.size()) { cp = kInvalid; return 1; }
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) { cp = kInvalid; return 1; }
    c = (c << 6) | (b & 0x3F);
  }
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) { cp = kInvalid; return 1; }
  cp = c;
  return len;
}

std::string utf8_encode(std::uint32_t cp) {
  std::string o;
  if (cp < 0x80) {
    o += static_cast<char>(cp);
  } else if (cp < 0x800) {
    o += static_cast<char>(0xC0 | (cp >> 6));
    o += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    o += static_cast<char>(0xE0 | (cp >> 12));
    o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    o += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    o += static_cast<char>(0xF0 | (cp >> 18));
    o += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    o += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return o;
}

tokenizer::tokenizer(const gguf_file& f) {
  const std::string model = f.get_string("tokenizer.ggml.model", "");
  if (model != "gpt2") fail("unsupported tokenizer model '" + model + "' (only byte-level BPE 'gpt2')");
  pre_ = f.get_string("tokenizer.ggml.pre", "default");
  // Pre-tokenizers that are GPT-2's regex preceded by an individual-digit split.
  static const char* const kDigitSplit[] = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"};
  split_digits_ = std::find_if(std::begin(kDigitSplit), std::end(kDigitSplit), [&](const char* s) { return pre_ == s; }) !=
                  std::end(kDigitSplit);
  if (!split_digits_ && pre_ != "default" && pre_ != "gpt-2" && pre_ != "gpt2")
    fail("unsupported pre-tokenizer '" + pre_ + "'");

  const auto& toks = f.get("tokenizer.ggml.tokens").as_array();
  if (toks.empty()) fail("empty vocabulary");
  tokens_.reserve(toks.size());
  for (const auto& t : toks) tokens_.push_back(t.as_string());
  types_.assign(tokens_.size(), kTypeNormal);
  if (const auto* tt = f.find("tokenizer.ggml.token_type")) {
    const auto& a = tt->as_array();
    if (a.size() != tokens_.size()) fail("token_type array size does not match the vocabulary");
    for (std::size_t i = 0; i < a.size(); ++i) types_[i] = static_cast<std::int32_t>(a[i].as_i64());
  }
  for (std::size_t i = 0; i < tokens_.size(); ++i) token_to_id_.emplace(tokens_[i], static_cast<std::int32_t>(i));
  if (const auto* m = f.find("tokenizer.ggml.merges")) {
    const auto& a = m->as_array();
    merge_rank_.reserve(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      const std::string& m = a[i].as_string();
      merge_rank_.emplace(m, static_cast<std::int32_t>(i));
      max_merge_len_ = std::max(max_merge_len_, m.size());
    }
  }
  auto id_key = [&](const char* key) -> std::int32_t {
    const auto* v = f.find(key);
    if (!v) return -1;
    const auto id = v->as_u64();
    return id < tokens_.size() ? static_cast<std::int32_t>(id) : -1;
  };
  bos_ = id_key("tokenizer.ggml.bos_token_id");
  eos_ = id_key("tokenizer.ggml.eos_token_id");
  if (const auto* v = f.find("tokenizer.ggml.add_bos_token")) add_bos_ = v->as_bool();
  im_end_ = find_token("<|im_end|>");

  for (std::size_t i = 0; i < tokens_.size(); ++i)
    if ((types_[i] == kTypeControl || types_[i] == kTypeUserDefined) && !tokens_[i].empty())
      specials_.emplace_back(tokens_[i], static_cast<std::int32_t>(i));
  std::stable_sort(specials_.begin(), specials_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });

  // GPT-2 byte <-> unicode mapping: printable bytes map to themselves, the
  // others to 256, 257, ... in byte order.
  std::uint32_t next = 256;
  for (std::uint32_t b = 0; b < 256; ++b) {
    const bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const std::uint32_t cp = keep ? b : next++;
    byte_to_sym_[b] = utf8_encode(cp);
    byte_known_[b] = token_to_id_.count(byte_to_sym_[b]) != 0;
    sym_to_byte_[cp] = static_cast<std::uint8_t>(b);
  }

  // Default system prompt of the chat template, e.g.
  // {{ '<|im_start|>system\nYou are ...<|im_end|>\n' }}
  const std::string tmpl = f.get_string("tokenizer.chat_template", "");
  const std::string open = "<|im_start|>system\n";
  if (auto p = tmpl.find(open); p != std::string::npos && p > 0 && tmpl[p - 1] == '\'') {
    const auto b = p + open.size();
    if (auto e = tmpl.find("<|im_end|>", b); e != std::string::npos) default_system_ = tmpl.substr(b, e - b);
  }
}

bool tokenizer::is_special(std::int32_t id) const noexcept {
  return id >= 0 && static_cast<std::size_t>(id) < types_.size() &&
         (types_[static_cast<std::size_t>(id)] == kTypeControl || types_[static_cast<std::size_t>(id)] == kTypeUserDefined);
}

bool tokenizer::is_end_of_turn(std::int32_t id) const noexcept { return id == eos_ || (im_end_ >= 0 && id == im_end_); }

std::int32_t tokenizer::find_token(std::string_view text) const noexcept {
  auto it = token_to_id_.find(std::string(text));
  return it == token_to_id_.end() ? -1 : it->second;
}

// GPT-2 pre-tokenizer:
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// optionally preceded by splitting off every \p{N} character on its own.
std::vector<std::string> tokenizer::pre_tokenize(std::string_view text) const {
  // decode once
  std::vector<std::uint32_t> cps;
  std::vector<std::size_t> off;
  for (std::size_t i = 0; i < text.size();) {
    std::uint32_t cp;
    const auto n = utf8_decode(text, i, cp);
    cps.push_back(cp);
    off.push_back(i);
    i += n;
  }
  off.push_back(text.size());
  std::vector<std::string> out;
  auto emit = [&](std::size_t a, std::size_t b) {
    if (b > a) out.emplace_back(text.substr(off[a], off[b] - off[a]));
  };
  auto L = [&](std::size_t i) { return is_letter(cps[i]); };
  auto N = [&](std::size_t i) { return is_number(cps[i]); };
  auto S = [&](std::size_t i) { return is_whitespace(cps[i]); };
  auto O = [&](std::size_t i) { return !L(i) && !N(i) && !S(i); };

  auto gpt2 = [&](std::size_t b, std::size_t e) {
    std::size_t i = b;
    while (i < e) {
      const std::uint32_t c = cps[i];
      if (c == '\'' && i + 1 < e) {
        const std::uint32_t c1 = cps[i + 1];
        const std::uint32_t c2 = i + 2 < e ? cps[i + 2] : 0;
        std::size_t len = 0;
        if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') len = 2;
        else if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) len = 3;
        if (len) {
          emit(i, i + len);
          i += len;
          continue;
        }
      }
      std::size_t j = i;
      const std::size_t k = (c == ' ' && i + 1 < e) ? i + 1 : i;  // optional leading space
      if (L(k)) {
        j = k;
        while (j < e && L(j)) ++j;
      } else if (N(k)) {
        j = k;
        while (j < e && N(j)) ++j;
      } else if (O(k)) {
        j = k;
        while (j < e && O(j)) ++j;
      } else {
        // whitespace: \s+(?!\S) | \s+
        j = i;
        while (j < e && S(j)) ++j;
        if (j < e && j - i > 1) --j;  // leave the last one for the next word
      }
      emit(i, j);
      i = j;
    }
  };

  if (!split_digits_) {
    gpt2(0, cps.size());
    return out;
  }
  std::size_t start = 0;
  for (std::size_t i = 0; i < cps.size(); ++i) {
    if (N(i)) {
      gpt2(start, i);
      emit(i, i + 1);
      start = i + 1;
    }
  }
  gpt2(start, cps.size());
  return out;
}

// Byte-level BPE of one pre-tokenized word, in O(n log n) for a word of n bytes.
//
// The result is that of the textbook loop "find the adjacent pair with the lowest merge rank, merge every
// occurrence of that pair left to right, repeat" (quadratic: 12 s for a 40,000-letter word), computed with
// a linked list of symbols and a min-heap of candidate pairs keyed by (rank, position). One subtlety keeps
// the two identical: every occurrence of the lowest-ranked pair is merged before any pair created by those
// merges is looked at, even one of a lower rank (a GGUF's merge list need not be ordered so that a merge's
// parts come before it), so the heap is drained one rank at a time.
//
// Bytes whose GPT-2 symbol is not in the vocabulary (SmolLM2 lacks 21 of them, e.g. 0x04, 0xC0, 0xF5..0xFF)
// are dropped before merging, as the model's reference tokenizer (Hugging Face `tokenizers`, BPE without an
// unknown token) does: their neighbours become adjacent and may merge (tests/tokenizer_reference.tsv holds
// that tokenizer's ids, written by tools/check_tokenizer.py).
void tokenizer::bpe_(const std::string& word, std::vector<std::int32_t>& out) const {
  if (auto it = cache_.find(word); it != cache_.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  // The word as byte symbols, with the bytes that have no symbol in the vocabulary dropped. Symbol i covers
  // text[off[i], off[i + 1]); a merged symbol covers consecutive ones, so it is (first symbol, symbol count).
  std::string text;
  std::vector<std::size_t> off;
  text.reserve(word.size() * 2);
  off.reserve(word.size() + 1);
  for (unsigned char b : word) {
    if (!byte_known_[b]) continue;
    off.push_back(text.size());
    text += byte_to_sym_[b];
  }
  const std::size_t n = off.size();
  off.push_back(text.size());

  std::vector<std::int32_t> ids;
  if (n > 0) {
    // Linked list of the current symbols, indexed by their first byte symbol; len 0: merged away.
    struct node {
      std::size_t len;
      std::ptrdiff_t prev, next;
    };
    std::vector<node> sym(n);
    for (std::size_t i = 0; i < n; ++i)
      sym[i] = {1, static_cast<std::ptrdiff_t>(i) - 1, i + 1 < n ? static_cast<std::ptrdiff_t>(i + 1) : -1};
    // A candidate merge of the adjacent symbols (left, left_len) and (left + left_len, right_len).
    struct candidate {
      std::int32_t rank;
      std::size_t left, left_len, right_len;
      bool operator>(const candidate& o) const noexcept { return rank != o.rank ? rank > o.rank : left > o.left; }
    };
    std::vector<candidate> heap;
    heap.reserve(n);
    const auto later = std::greater<candidate>();
    std::string key;
    auto consider = [&](std::ptrdiff_t l) {  // the pair (l, sym[l].next), if the merges have it
      if (l < 0 || sym[static_cast<std::size_t>(l)].next < 0) return;
      const auto a = static_cast<std::size_t>(l), b = static_cast<std::size_t>(sym[a].next);
      const std::size_t la = sym[a].len, lb = sym[b].len;
      if (off[b + lb] - off[a] + 1 > max_merge_len_) return;
      key.assign(text, off[a], off[b] - off[a]).append(" ").append(text, off[b], off[b + lb] - off[b]);
      if (auto it = merge_rank_.find(key); it != merge_rank_.end()) {
        heap.push_back({it->second, a, la, lb});
        std::push_heap(heap.begin(), heap.end(), later);
      }
    };
    auto valid = [&](const candidate& c) {
      return sym[c.left].len == c.left_len && sym[c.left].next == static_cast<std::ptrdiff_t>(c.left + c.left_len) &&
             sym[c.left + c.left_len].len == c.right_len;
    };
    for (std::size_t i = 0; i + 1 < n; ++i) consider(static_cast<std::ptrdiff_t>(i));
    std::vector<candidate> round;
    while (!heap.empty()) {
      // The lowest-ranked pair present now (entries left by earlier merges are skipped) ...
      std::pop_heap(heap.begin(), heap.end(), later);
      const candidate top = heap.back();
      heap.pop_back();
      if (!valid(top)) continue;
      // ... and its other occurrences, left to right: each entry of that rank is an occurrence as of now
      // (a merge of this pair cannot create another occurrence of it: the merged symbol is longer than both).
      round.assign(1, top);
      while (!heap.empty() && heap.front().rank == top.rank) {
        std::pop_heap(heap.begin(), heap.end(), later);
        round.push_back(heap.back());
        heap.pop_back();
      }
      for (const candidate& c : round) {
        if (!valid(c)) continue;  // overlapped by the occurrence just merged on its left
        node& l = sym[c.left];
        node& r = sym[c.left + c.left_len];
        l.len += r.len;
        l.next = r.next;
        if (r.next >= 0) sym[static_cast<std::size_t>(r.next)].prev = static_cast<std::ptrdiff_t>(c.left);
        r.len = 0;
        consider(l.prev);
        consider(static_cast<std::ptrdiff_t>(c.left));
      }
    }
    for (std::ptrdiff_t i = 0; i >= 0; i = sym[static_cast<std::size_t>(i)].next) {
      const auto a = static_cast<std::size_t>(i);
      key.assign(text, off[a], off[a + sym[a].len] - off[a]);
      if (auto it = token_to_id_.find(key); it != token_to_id_.end()) {
        ids.push_back(it->second);
        continue;
      }
      // A merge whose result is not in the vocabulary (a malformed file): fall back to the single bytes.
      for (std::size_t k = a; k < a + sym[a].len; ++k)
        ids.push_back(token_to_id_.at(text.substr(off[k], off[k + 1] - off[k])));
    }
  }
  // Long words are rarely seen twice: cache the short ones only (bounded memory).
  if (word.size() <= 256) {
    if (cache_.size() > 100000) cache_.clear();
    cache_.emplace(word, ids);
  }
  out.insert(out.end(), ids.begin(), ids.end());
}

void tokenizer::encode_plain_(std::string_view text, std::vector<std::int32_t>& out) const {
  for (const auto& piece : pre_tokenize(text)) bpe_(piece, out);
}

std::vector<std::int32_t> tokenizer::encode(std::string_view text, bool parse_special) const {
  std::vector<std::int32_t> out;
  if (add_bos_ && bos_ >= 0) out.push_back(bos_);
  if (!parse_special || specials_.empty()) {
    encode_plain_(text, out);
    return out;
  }
  std::size_t start = 0, i = 0;
  while (i < text.size()) {
    bool matched = false;
    for (const auto& [s, id] : specials_) {
      if (text.compare(i, s.size(), s) == 0) {
        encode_plain_(text.substr(start, i - start), out);
        out.push_back(id);
        i += s.size();
        start = i;
        matched = true;
        break;
      }
    }
    if (!matched) ++i;
  }
  encode_plain_(text.substr(start), out);
  return out;
}

std::string tokenizer::token_text(std::int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= tokens_.size()) fail("token id " + std::to_string(id) + " out of range");
  const std::string& t = tokens_[static_cast<std::size_t>(id)];
  if (is_special(id)) return t;
  std::string o;
  for (std::size_t i = 0; i < t.size();) {
    std::uint32_t cp;
    const auto n = utf8_decode(t, i, cp);
    auto it = sym_to_byte_.find(cp);
    if (it != sym_to_byte_.end()) o += static_cast<char>(it->second);
    else o.append(t, i, n);  // not a byte symbol: keep as is
    i += n;
  }
  return o;
}

std::string tokenizer::decode(const std::vector<std::int32_t>& ids) const {
  std::string o;
  for (auto id : ids) o += token_text(id);
  return o;
}

std::string tokenizer::apply_chat_template(const std::vector<chat_message>& messages, bool add_generation_prompt) const {
  std::string o;
  if (!messages.empty() && messages.front().role != "system" && !default_system_.empty())
    o += "<|im_start|>system\n" + default_system_ + "<|im_end|>\n";
  for (const auto& m : messages) o += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  if (add_generation_prompt) o += "<|im_start|>assistant\n";
  return o;
}

}  // namespace hcllama
