// Command-line values of heterocache-llama and heterocache-eval: each value is parsed whole and checked
// against its range; an error names the flag, the value and the valid range, e.g.
//
//   invalid --threads '4294967298': out of range, expected an integer in [1, 1024]
//   invalid --depth 'nan': not a finite number, expected a number in [0, 1]
//
// Integers are decimal digits with an optional sign (1e4, 4096.0 and 2.5e3 are accepted too: exact integers,
// converted without rounding; 2.5 and 1e-1 are not integers); reals are decimal or scientific notation, finite (nan, inf and hexadecimal are
// refused). Leading or trailing spaces, and anything after the number, are errors.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace hcllama::cli {

struct arg_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// --threads: 1 to 1024 threads, whatever the machine (a fixed range, so that a script runs the same
// everywhere; more threads than cores only oversubscribe them). Without the flag: every hardware thread.
inline constexpr int max_threads = 1024;

// "[lo, hi]", or "(lo, hi]" when lo is excluded.
template <class T>
std::string range_text(T lo, T hi, bool lo_open = false) {
  std::ostringstream o;
  o << (lo_open ? "(" : "[") << +lo << ", " << +hi << "]";
  return o.str();
}

namespace detail {

[[noreturn]] inline void bad(std::string_view flag, std::string_view value, std::string_view why, std::string_view expected) {
  throw arg_error("invalid " + std::string(flag) + " '" + std::string(value) + "': " + std::string(why) + ", expected " +
                  std::string(expected));
}

// strtod over the whole of `s` (finite or not); false when `s` is not a decimal/scientific real.
inline bool parse_double(std::string_view s, double& v) {
  if (s.empty()) return false;
  const char c0 = s[0];
  if (!(c0 == '+' || c0 == '-' || c0 == '.' || (c0 >= '0' && c0 <= '9'))) return false;  // no spaces, nan, inf
  for (char c : s)
    if (!((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.' || c == 'e' || c == 'E')) return false;  // no hex
  const std::string z(s);
  char* end = nullptr;
  v = std::strtod(z.c_str(), &end);
  return end == z.c_str() + z.size();
}

// An exact integer written in decimal or scientific notation ("1e4", "4096.0", "2.5e3"), as plain digits
// with a sign: false when the text is not such a number or not an integer ("2.5", "1e-1").
inline bool exact_integer_digits(std::string_view s, std::string& out) {
  std::string_view sign;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) sign = s.substr(0, 1), s.remove_prefix(1);
  std::string digits;
  std::size_t int_len = 0;
  bool point = false;
  std::size_t i = 0;
  for (; i < s.size() && ((s[i] >= '0' && s[i] <= '9') || (s[i] == '.' && !point)); ++i) {
    if (s[i] == '.') point = true;
    else digits += s[i], int_len += !point;
  }
  if (digits.empty()) return false;
  long long exp = 0;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    std::string_view e = s.substr(i + 1);
    if (!e.empty() && e[0] == '+') e.remove_prefix(1);
    const bool neg = !e.empty() && e[0] == '-';
    const auto r = std::from_chars(e.data(), e.data() + e.size(), exp);
    if (r.ptr != e.data() + e.size() || e.empty() || (r.ec != std::errc() && r.ec != std::errc::result_out_of_range))
      return false;
    if (r.ec == std::errc::result_out_of_range) exp = neg ? -100000 : 100000;
    exp = std::clamp(exp, -100000LL, 100000LL);
    i = s.size();
  }
  if (i != s.size()) return false;
  const auto first = digits.find_first_not_of('0');
  if (first == std::string::npos) return out = "0", true;
  digits.erase(0, first);
  const long long pt = static_cast<long long>(int_len) - static_cast<long long>(first) + exp;  // digits before the point
  if (pt <= 0) return false;                                                                     // 0 < |value| < 1
  if (pt > 40) return out = std::string(sign == "-" ? "-" : "") + std::string(40, '9') + "9", true;  // beyond any range
  const auto p = static_cast<std::size_t>(pt);
  if (digits.size() > p && digits.find_first_not_of('0', p) != std::string::npos) return false;  // a fraction
  digits.resize(p, '0');
  out = std::string(sign == "-" ? "-" : "") + digits;
  return true;
}

}  // namespace detail

// An integer of type T in [lo, hi]. `expected` describes the range in the error (default "an integer in [lo, hi]").
template <class T>
T parse_int(std::string_view flag, std::string_view value, T lo, T hi, std::string expected = {}) {
  static_assert(std::is_integral_v<T>);
  if (expected.empty()) expected = "an integer in " + range_text(lo, hi);
  std::string plain;
  if (!detail::exact_integer_digits(value, plain)) detail::bad(flag, value, "not an integer", expected);
  std::string_view s = plain;
  if constexpr (std::is_unsigned_v<T>)
    if (s[0] == '-') detail::bad(flag, value, "out of range", expected);  // ("-0" is "0")
  T v{};
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ptr != s.data() + s.size()) detail::bad(flag, value, "not an integer", expected);
  if (r.ec == std::errc::result_out_of_range || v < lo || v > hi) detail::bad(flag, value, "out of range", expected);
  return v;
}

// A finite real in [lo, hi], or (lo, hi] when lo_open.
inline double parse_real(std::string_view flag, std::string_view value, double lo, double hi, bool lo_open = false) {
  const std::string expected = "a number in " + range_text(lo, hi, lo_open);
  double v = 0;
  if (!detail::parse_double(value, v)) {
    std::string lower(value);
    for (auto& c : lower) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    const bool named = lower.find("nan") != std::string::npos || lower.find("inf") != std::string::npos;
    detail::bad(flag, value, named ? "not a finite number" : "not a number", expected);
  }
  if (!std::isfinite(v)) detail::bad(flag, value, "out of range", expected);  // 1e400 (nan and inf are refused above)
  if (v > hi || v < lo || (lo_open && v == lo)) detail::bad(flag, value, "out of range", expected);
  return v;
}

// Comma-separated values (empty items skipped; at least one value).
inline std::vector<std::string_view> split_list(std::string_view flag, std::string_view value) {
  std::vector<std::string_view> out;
  std::size_t b = 0;
  while (b <= value.size()) {
    const std::size_t e = std::min(value.find(',', b), value.size());
    if (e > b) out.push_back(value.substr(b, e - b));
    b = e + 1;
  }
  if (out.empty()) throw arg_error("invalid " + std::string(flag) + " '" + std::string(value) + "': an empty list");
  return out;
}

template <class T>
std::vector<T> parse_int_list(std::string_view flag, std::string_view value, T lo, T hi, const std::string& expected = {}) {
  std::vector<T> out;
  for (auto s : split_list(flag, value)) out.push_back(parse_int<T>(flag, s, lo, hi, expected));
  return out;
}

inline std::vector<double> parse_real_list(std::string_view flag, std::string_view value, double lo, double hi,
                                           bool lo_open = false) {
  std::vector<double> out;
  for (auto s : split_list(flag, value)) out.push_back(parse_real(flag, s, lo, hi, lo_open));
  return out;
}

// The memory this process may use: the machine's physical memory, or the cgroup's limit when lower
// (Linux containers). 0 when unknown.
inline std::uint64_t usable_memory_bytes() {
  std::uint64_t bytes = 0;
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGE_SIZE)
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page > 0) bytes = static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page);
#endif
#if defined(__linux__)
  if (std::ifstream in("/sys/fs/cgroup/memory.max"); in) {
    std::string s;
    in >> s;
    std::uint64_t lim = 0;
    const auto r = std::from_chars(s.data(), s.data() + s.size(), lim);
    if (r.ec == std::errc() && lim > 0 && (bytes == 0 || lim < bytes)) bytes = lim;
  }
#endif
  return bytes;
}

// The most tokens a context may hold here: `bytes_per_token` each, in half the usable memory (the rest for
// the weights, scratch and the system), and at most `cap`.
struct token_limit {
  std::size_t tokens = 0;
  std::uint64_t bytes_per_token = 0, memory = 0;  // memory 0: unknown (then tokens = cap)
  // " (WHAT: 94 KiB per token ..., in half of this machine's 23.5 GiB of memory)", or "" when memory is unknown
  std::string why(const std::string& what) const {
    if (memory == 0) return "";
    std::ostringstream o;
    o.setf(std::ios::fixed);
    o.precision(1);
    o << " (" << what << ": " << static_cast<double>(bytes_per_token) / 1024.0
      << " KiB per token for this model's KV cache and buffers, in half of this machine's "
      << static_cast<double>(memory) / 1073741824.0 << " GiB of memory)";
    return o.str();
  }
};

inline token_limit tokens_in_memory(std::uint64_t bytes_per_token, std::size_t cap) {
  token_limit l;
  l.memory = usable_memory_bytes();
  l.bytes_per_token = bytes_per_token;
  l.tokens = cap;
  if (l.memory > 0 && bytes_per_token > 0)
    l.tokens = static_cast<std::size_t>(std::min<std::uint64_t>(cap, l.memory / 2 / bytes_per_token));
  return l;
}

}  // namespace hcllama::cli
