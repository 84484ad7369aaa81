#include "tokenizer.hpp"

#include <algorithm>
#include <climits>

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
    for (std::size_t i = 0; i < a.size(); ++i) merge_rank_.emplace(a[i].as_string(), static_cast<std::int32_t>(i));
  }
  auto id_key = [&](const char* key) -> std::int32_t {
    const auto* v = f.find(key);
    if (!v) return -1;
    const auto id = v->as_u64();
    return id < tokens_.size() ? static_cast<std::int32_t>(id) : -1;
  };
  bos_ = id_key("tokenizer.ggml.bos_token_id");
  eos_ = id_key("tokenizer.ggml.eos_token_id");
  unk_ = id_key("tokenizer.ggml.unknown_token_id");
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

void tokenizer::bpe_(const std::string& word, std::vector<std::int32_t>& out) const {
  if (auto it = cache_.find(word); it != cache_.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  std::vector<std::string> sym;
  sym.reserve(word.size());
  for (unsigned char b : word) sym.push_back(byte_to_sym_[b]);
  std::string key;
  while (sym.size() > 1) {
    std::int32_t best = INT32_MAX;
    std::size_t at = 0;
    for (std::size_t i = 0; i + 1 < sym.size(); ++i) {
      key.assign(sym[i]).append(" ").append(sym[i + 1]);
      auto it = merge_rank_.find(key);
      if (it != merge_rank_.end() && it->second < best) {
        best = it->second;
        at = i;
      }
    }
    if (best == INT32_MAX) break;
    // merge every occurrence of the best pair, left to right
    const std::string a = sym[at], b = sym[at + 1];
    std::vector<std::string> next;
    next.reserve(sym.size());
    for (std::size_t i = 0; i < sym.size();) {
      if (i + 1 < sym.size() && sym[i] == a && sym[i + 1] == b) {
        next.push_back(a + b);
        i += 2;
      } else {
        next.push_back(std::move(sym[i]));
        ++i;
      }
    }
    sym.swap(next);
  }
  std::vector<std::int32_t> ids;
  for (const auto& s : sym) {
    if (auto it = token_to_id_.find(s); it != token_to_id_.end()) {
      ids.push_back(it->second);
      continue;
    }
    // not in the vocabulary: fall back to its single bytes
    for (std::size_t i = 0; i < s.size();) {
      std::uint32_t cp;
      const auto n = utf8_decode(s, i, cp);
      auto it = token_to_id_.find(s.substr(i, n));
      if (it != token_to_id_.end()) ids.push_back(it->second);
      else if (unk_ >= 0) ids.push_back(unk_);
      i += n;
    }
  }
  if (cache_.size() > 100000) cache_.clear();
  cache_.emplace(word, ids);
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
