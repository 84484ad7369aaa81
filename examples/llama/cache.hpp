// The engine's decode caches: heterocache::full_kv_cache (every head keeps
// every token) and heterocache::kv_cache (head-wise compression with online
// profiling, or a saved profile), both behind hcllama::decode_cache.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "model.hpp"

namespace hcllama {

struct cache_config {
  std::string policy = "full";  // "full" or "heterocache"
  double budget = 0.5;          // r, kept fraction of the prompt KV (heterocache)
  std::optional<heterocache::head_profile> profile;  // heterocache: use this profile (no online profiling)
  long profiling_steps = 8;     // heterocache, online profiling: decode steps observed before classifying
};

heterocache::model_shape shape_of(const llama_config& c);

// Builds a cache for a prompt of `prompt_tokens` tokens and `max_new_tokens` decode tokens.
std::unique_ptr<decode_cache> make_decode_cache(const llama_config& c, const cache_config& cc, std::size_t prompt_tokens,
                                                std::size_t max_new_tokens);

// A cache_factory for llama_context.
cache_factory make_cache_factory(const llama_config& c, cache_config cc);

// One line per layer: "L07 P S A" (pivot/satellite/anchor/volatile = P/S/A/V, one letter per KV head).
std::string role_map(const heterocache::head_profile& p);

}  // namespace hcllama
