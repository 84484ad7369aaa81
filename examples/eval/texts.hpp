// Real texts every Debian machine has, for heterocache-eval: the KL task's documents and the filler of the
// RULER-style tasks.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace hceval {

struct text_source {
  std::string name;  // short label, e.g. "GPL-3" or "libc6-copyright"
  std::string path;
  std::string text;
};

// The documents, in a fixed order: every regular file of /usr/share/common-licenses (links skipped), then the
// copyright files of packages that are Essential or Priority required on Debian 12 (debian_doc_packages),
// each sorted by name; files missing here are skipped. Throws std::runtime_error when there are none.
std::vector<text_source> debian_texts();

// The packages whose /usr/share/doc/PKG/copyright debian_texts reads (plain text on every Debian, slim images
// included: dpkg's path-exclude rules of those images keep the copyright files).
const std::vector<std::string>& debian_doc_packages();

// Sentences of the documents (whitespace collapsed, licence boilerplate lines such as separators dropped),
// in document order: the RULER tasks' haystack is a run of consecutive sentences from a seeded start.
std::vector<std::string> filler_sentences(const std::vector<text_source>& texts);

}  // namespace hceval
