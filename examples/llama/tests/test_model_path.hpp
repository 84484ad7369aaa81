// The real model's path for the tests that need it: $HETEROCACHE_MODEL when that file exists, else null (the
// test then skips with a message).
#pragma once

#include <cstdlib>
#include <filesystem>

namespace hcllama::testing {

inline const char* model_path() {
  const char* path = std::getenv("HETEROCACHE_MODEL");
  return path && std::filesystem::exists(path) ? path : nullptr;
}

}  // namespace hcllama::testing
