#include "texts.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace hceval {

namespace fs = std::filesystem;

const std::vector<std::string>& debian_doc_packages() {
  // Essential: yes or Priority: required in Debian 12 (present on every installation).
  static const std::vector<std::string> p = {"base-files", "bash",      "coreutils", "diffutils", "dpkg",
                                             "findutils",  "grep",      "gzip",      "libc6",     "login",
                                             "mawk",       "perl-base", "sed",       "tar",       "util-linux"};
  return p;
}

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

std::vector<text_source> debian_texts() {
  std::vector<text_source> out;
  std::error_code ec;
  std::vector<fs::path> licences;
  for (const auto& e : fs::directory_iterator("/usr/share/common-licenses", ec))
    if (e.is_regular_file() && !e.is_symlink()) licences.push_back(e.path());
  std::sort(licences.begin(), licences.end());
  for (const auto& f : licences) out.push_back({f.filename().string(), f.string(), read_file(f)});
  for (const auto& pkg : debian_doc_packages()) {
    const fs::path f = fs::path("/usr/share/doc") / pkg / "copyright";
    if (fs::is_regular_file(f, ec)) out.push_back({pkg + "-copyright", f.string(), read_file(f)});
  }
  if (out.empty())
    throw std::runtime_error(
        "no texts under /usr/share/common-licenses or /usr/share/doc/*/copyright (the kl task and the RULER tasks' "
        "filler need them: every Debian has them, base-files ships the licences)");
  return out;
}

std::vector<std::string> filler_sentences(const std::vector<text_source>& texts) {
  std::vector<std::string> out;
  for (const auto& t : texts) {
    // collapse whitespace; drop characters that are not printable ASCII (a few texts have UTF-8 names)
    std::string s;
    for (unsigned char c : t.text) {
      if (std::isspace(c)) {
        if (!s.empty() && s.back() != ' ') s += ' ';
      } else if (c >= 0x20 && c < 0x7f) {
        s += static_cast<char>(c);
      }
    }
    std::size_t start = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
      const bool end = (s[i] == '.' || s[i] == '?' || s[i] == '!') && (i + 1 == s.size() || s[i + 1] == ' ');
      if (!end) continue;
      std::string sent = s.substr(start, i + 1 - start);
      start = i + 2;
      while (!sent.empty() && sent.front() == ' ') sent.erase(sent.begin());
      // keep prose: 40..400 characters, mostly letters, no separators or markup lines
      if (sent.size() < 40 || sent.size() > 400) continue;
      std::size_t letters = 0;
      for (unsigned char c : sent) letters += std::isalpha(c) || c == ' ';
      if (letters * 10 < sent.size() * 9) continue;
      if (sent.find("--") != std::string::npos || sent.find("==") != std::string::npos ||
          sent.find("__") != std::string::npos || sent.find("http") != std::string::npos)
        continue;
      out.push_back(std::move(sent));
    }
  }
  return out;
}

}  // namespace hceval
