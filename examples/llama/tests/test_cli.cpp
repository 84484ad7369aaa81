// Command-line values (cli.hpp): every value parsed whole, checked against its range, errors that name
// the flag, the value and the range.
#include <doctest/doctest.h>

#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "cli.hpp"
#include "gguf.hpp"
#include "prompts.hpp"
#include "tokenizer.hpp"

using namespace hcllama::cli;

namespace {

// The error message of parsing `f`, or "" when it does not throw.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const arg_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("integers: whole values in range") {
  CHECK(parse_int<int>("--threads", "1", 1, max_threads) == 1);
  CHECK(parse_int<int>("--threads", "1024", 1, max_threads) == 1024);
  CHECK(parse_int<int>("--threads", "+8", 1, max_threads) == 8);
  CHECK(parse_int<std::size_t>("--context", "1e4", 64, SIZE_MAX) == 10000);
  CHECK(parse_int<std::size_t>("--context", "4096.0", 64, SIZE_MAX) == 4096);
  CHECK(parse_int<std::uint64_t>("--seed", "18446744073709551615", 0, UINT64_MAX) == UINT64_MAX);
  CHECK(parse_int<std::int32_t>("--tokens", "0", 0, INT32_MAX) == 0);
}

TEST_CASE("integers: out of range, wrapped or truncated values are refused with flag, value and range") {
  CHECK(error_of([] { parse_int<int>("--threads", "4294967298", 1, max_threads); }) ==
        "invalid --threads '4294967298': out of range, expected an integer in [1, 1024]");
  CHECK(error_of([] { parse_int<int>("--threads", "99999999999", 1, max_threads); }) ==
        "invalid --threads '99999999999': out of range, expected an integer in [1, 1024]");
  CHECK(error_of([] { parse_int<int>("--threads", "0", 1, max_threads); }) ==
        "invalid --threads '0': out of range, expected an integer in [1, 1024]");
  CHECK(error_of([] { parse_int<int>("--threads", "-5", 1, max_threads); }) ==
        "invalid --threads '-5': out of range, expected an integer in [1, 1024]");
  CHECK(error_of([] { parse_int<int>("--threads", "2.5", 1, max_threads); }) ==
        "invalid --threads '2.5': not an integer, expected an integer in [1, 1024]");
  CHECK(error_of([] { parse_int<std::uint64_t>("--seed", "-1", 0, UINT64_MAX); }) ==
        "invalid --seed '-1': out of range, expected an integer in [0, 18446744073709551615]");
  CHECK(error_of([] { parse_int<std::uint64_t>("--seed", "18446744073709551616", 0, UINT64_MAX); }) ==
        "invalid --seed '18446744073709551616': out of range, expected an integer in [0, 18446744073709551615]");
  CHECK(error_of([] { parse_int<std::size_t>("--context", "1e400", 64, SIZE_MAX, "an integer >= 64"); }) ==
        "invalid --context '1e400': out of range, expected an integer >= 64");
  CHECK(error_of([] { parse_int<std::size_t>("--context", "63", 64, SIZE_MAX, "an integer >= 64"); }) ==
        "invalid --context '63': out of range, expected an integer >= 64");
  // scientific and decimal notation: converted exactly (no rounding through a double), fractions refused
  CHECK(parse_int<std::uint64_t>("--seed", "9.007199254740993e15", 0, UINT64_MAX) == 9007199254740993ull);
  CHECK(parse_int<std::size_t>("--context", "2.5e3", 64, SIZE_MAX) == 2500);
  CHECK(parse_int<std::size_t>("--context", "0.0064e6", 64, SIZE_MAX) == 6400);
  CHECK(parse_int<int>("--max-new", "-0", 0, 10) == 0);
  CHECK(parse_int<std::uint64_t>("--seed", "-0", 0, UINT64_MAX) == 0);
  CHECK(error_of([] { parse_int<std::size_t>("--context", "4096.5", 64, SIZE_MAX); }) ==
        "invalid --context '4096.5': not an integer, expected an integer in [64, 18446744073709551615]");
  CHECK(error_of([] { parse_int<int>("--max-new", "1e-1", 0, 10); }) ==
        "invalid --max-new '1e-1': not an integer, expected an integer in [0, 10]");
  CHECK(error_of([] { parse_int<int>("--max-new", "1e99999999999999999999", 0, 10); }) ==
        "invalid --max-new '1e99999999999999999999': out of range, expected an integer in [0, 10]");
  CHECK(error_of([] { parse_int<int>("--max-new", "-1e12", 0, 10); }) ==
        "invalid --max-new '-1e12': out of range, expected an integer in [0, 10]");
  for (const char* bad : {"", " 8", "8 ", "8x", "0x10", "nan", "inf", "-", "+", "1e", "--8", "+-8", "1,2", "٣"})
    CHECK_MESSAGE(error_of([&] { parse_int<int>("--threads", bad, 1, max_threads); }) ==
                      "invalid --threads '" + std::string(bad) + "': not an integer, expected an integer in [1, 1024]",
                  "value '" << bad << "'");
}

TEST_CASE("reals: finite values in range") {
  CHECK(parse_real("--depth", "0", 0.0, 1.0) == 0.0);
  CHECK(parse_real("--depth", "1", 0.0, 1.0) == 1.0);
  CHECK(parse_real("--depth", ".25", 0.0, 1.0) == 0.25);
  CHECK(parse_real("--temperature", "7e-1", 0.0, 100.0) == doctest::Approx(0.7));
  CHECK(parse_real("--budget", "1", 0.0, 1.0, true) == 1.0);
  CHECK(error_of([] { parse_real("--budget", "0", 0.0, 1.0, true); }) ==
        "invalid --budget '0': out of range, expected a number in (0, 1]");
  for (const char* bad : {"nan", "NaN", "-nan", "inf", "-inf", "Infinity"})
    CHECK_MESSAGE(error_of([&] { parse_real("--depth", bad, 0.0, 1.0); }) ==
                      "invalid --depth '" + std::string(bad) + "': not a finite number, expected a number in [0, 1]",
                  "value '" << bad << "'");
  for (const char* bad : {"", " 0.5", "0.5 ", "0x1p-1", "1/2", "0.5.", "e1", "abc"})
    CHECK_MESSAGE(error_of([&] { parse_real("--depth", bad, 0.0, 1.0); }) ==
                      "invalid --depth '" + std::string(bad) + "': not a number, expected a number in [0, 1]",
                  "value '" << bad << "'");
  CHECK(error_of([] { parse_real("--depth", "1.5", 0.0, 1.0); }) == "invalid --depth '1.5': out of range, expected a number in [0, 1]");
  CHECK(error_of([] { parse_real("--depth", "-0.1", 0.0, 1.0); }) == "invalid --depth '-0.1': out of range, expected a number in [0, 1]");
  CHECK(error_of([] { parse_real("--temperature", "1e400", 0.0, 100.0); }) ==
        "invalid --temperature '1e400': out of range, expected a number in [0, 100]");
}

TEST_CASE("lists: every item checked, empty items skipped, an empty list refused") {
  CHECK(parse_int_list<std::size_t>("--sweep-contexts", "1024,,2048,", 64, 1 << 20) == std::vector<std::size_t>{1024, 2048});
  CHECK(parse_real_list("--sweep-depths", "0,0.5,1", 0.0, 1.0) == std::vector<double>{0, 0.5, 1});
  CHECK(error_of([] { parse_int_list<std::size_t>("--sweep-contexts", "1024,abc", 64, 1 << 20); }) ==
        "invalid --sweep-contexts 'abc': not an integer, expected an integer in [64, 1048576]");
  CHECK(error_of([] { parse_real_list("--sweep-depths", "0,nan", 0.0, 1.0); }) ==
        "invalid --sweep-depths 'nan': not a finite number, expected a number in [0, 1]");
  CHECK(error_of([] { parse_int_list<int>("--x", ",,", 0, 1); }) == "invalid --x ',,': an empty list");
  CHECK(error_of([] { parse_int_list<int>("--x", "", 0, 1); }) == "invalid --x '': an empty list");
}

TEST_CASE("memory limit of a context") {
  const auto l = tokens_in_memory(96 * 1024, 1u << 31);
  CHECK(l.tokens >= 1);
  CHECK(l.tokens <= (1u << 31));
  if (l.memory > 0) {
    CHECK(l.tokens == std::min<std::uint64_t>(1u << 31, l.memory / 2 / (96 * 1024)));
    CHECK(l.why("x").find("96.0 KiB per token") != std::string::npos);
  }
  CHECK(tokens_in_memory(0, 100).tokens == 100);
}

TEST_CASE("--model: a directory, a missing, an empty or a special file gives a clear error") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() /
                       ("hcllama-test-cli-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  fs::create_directories(dir);
  const fs::path empty = dir / "empty.gguf";
  std::ofstream(empty).close();
  auto message = [](const fs::path& p) -> std::string {
    try {
      (void)hcllama::gguf_file::open(p.string());
    } catch (const hcllama::gguf_error& e) {
      return e.what();
    }
    return "";
  };
  CHECK(message(dir) == "gguf: '" + dir.string() + "' is a directory, not a GGUF file");
  CHECK(message(empty) == "gguf: '" + empty.string() + "' is empty (0 bytes), not a GGUF file");
  CHECK(message(dir / "missing.gguf") == "gguf: cannot open '" + (dir / "missing.gguf").string() + "': no such file");
  CHECK(message("") == "gguf: no model path given (an empty path)");
  if (fs::exists("/dev/null"))
    CHECK(message("/dev/null") == "gguf: '/dev/null' is not a regular file (a device, FIFO or socket), not a GGUF file");
  fs::remove_all(dir);
}

TEST_CASE("passkey prompt: out-of-range depth and style are refused, not undefined behaviour") {
  hcllama::gguf_writer w;
  using W = hcllama::gguf_writer;
  hcllama::gguf_array toks;
  std::uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {  // the 256 byte symbols and no merges: a small tokenizer
    const bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    toks.push_back(W::string(hcllama::utf8_encode(keep ? static_cast<std::uint32_t>(b) : next++)));
  }
  w.add("tokenizer.ggml.model", W::string("gpt2"));
  w.add("tokenizer.ggml.tokens", W::array(hcllama::gguf_type::string, toks));
  const auto f = hcllama::gguf_file::from_bytes(w.bytes());
  const hcllama::tokenizer t(f);
  CHECK_THROWS_AS(hcllama::build_passkey_prompt(t, 200, 1, std::nan(""), 1), std::invalid_argument);
  CHECK_THROWS_AS(hcllama::build_passkey_prompt(t, 200, 1, 1.5, 1), std::invalid_argument);
  CHECK_THROWS_AS(hcllama::build_passkey_prompt(t, 200, 1, -0.1, 1), std::invalid_argument);
  CHECK_THROWS_AS(hcllama::build_passkey_prompt(t, 200, 1, 0.5, 4), std::invalid_argument);
  CHECK_THROWS_AS(hcllama::build_passkey_prompt(t, 200, 1, 0.5, -1), std::invalid_argument);
  const auto p = hcllama::build_passkey_prompt(t, 400, 1, 0.5, 1);
  CHECK(p.depth == 0.5);
  CHECK(p.text.find(p.key) != std::string::npos);
}
