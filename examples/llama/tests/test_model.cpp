// The forward pass on the real model (needs HETEROCACHE_MODEL): the blocked prefill against the decode path,
// and one prefill decoded by several caches (llama_context::restart_decode) against fresh contexts.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <vector>

#include "cache.hpp"
#include "model.hpp"
#include "test_model_path.hpp"

using namespace hcllama;

namespace {

using hcllama::testing::model_path;

// `n` token ids of the vocabulary's ordinary range (a fixed pseudo-random text).
std::vector<std::int32_t> some_tokens(std::size_t n, std::uint32_t seed) {
  std::vector<std::int32_t> ids(n);
  for (auto& id : ids) id = static_cast<std::int32_t>(1000 + (seed = seed * 1664525u + 1013904223u) % 20000u);
  return ids;
}

double max_relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return worst / scale;
}

cache_config streaming_half() {
  cache_config cc;
  cc.policy = "streamingllm";
  cc.budget = 0.5;
  return cc;
}

}  // namespace

TEST_CASE("a prompt prefilled in blocks gives the logits of a shorter prefill and token-by-token decode (fp32 cache)") {
  const char* path = model_path();
  if (!path) {
    MESSAGE("HETEROCACHE_MODEL unset or missing: skipping");
    return;
  }
  const gguf_file file = gguf_file::open(path);
  const llama_model model(file);
  cache_config fp32;
  fp32.format = kv_format::fp32;
  const std::vector<std::int32_t> ids = some_tokens(300, 7);  // three prefill blocks, the last one partial
  llama_context whole(model, 301, make_cache_factory(model.config(), fp32), 2);
  const std::vector<float> expected = whole.eval(ids);
  llama_context split(model, 301, make_cache_factory(model.config(), fp32), 2);
  split.eval(std::span(ids).first(200));
  const std::vector<float> got = split.eval(std::span(ids).subspan(200));
  CHECK(max_relative_difference(got, expected) < 1e-3);
}

TEST_CASE("restart_decode: one prefill, then each cache decodes as it would in a context of its own") {
  const char* path = model_path();
  if (!path) {
    MESSAGE("HETEROCACHE_MODEL unset or missing: skipping");
    return;
  }
  const gguf_file file = gguf_file::open(path);
  const llama_model model(file);
  const std::vector<std::int32_t> prompt = some_tokens(200, 11), forced = some_tokens(12, 13);
  const auto decode = [&](llama_context& ctx) {
    std::vector<std::vector<float>> logits{ctx.logits()};
    for (std::int32_t t : forced) logits.push_back(ctx.eval(std::span(&t, 1)));
    return logits;
  };
  const auto alone = [&](const cache_config& cc) {
    llama_context ctx(model, prompt.size() + forced.size() + 1, make_cache_factory(model.config(), cc), 2);
    ctx.eval(prompt);
    return decode(ctx);
  };
  const std::vector<std::vector<float>> full_alone = alone(cache_config{}), streaming_alone = alone(streaming_half());

  llama_context shared(model, prompt.size() + forced.size() + 1, nullptr, 2);
  shared.keep_prefill_state = true;
  shared.eval(prompt);
  CHECK(decode(shared) == full_alone);
  shared.restart_decode(make_cache_factory(model.config(), streaming_half()));
  CHECK(shared.n_past() == prompt.size());
  CHECK(decode(shared) == streaming_alone);
  shared.restart_decode(nullptr);  // the full cache again, after the other's decode tokens were written
  CHECK(decode(shared) == full_alone);
  CHECK(streaming_alone != full_alone);  // the caches differ, so the checks above tell them apart

  llama_context without_state(model, prompt.size() + 2, nullptr, 1);
  without_state.eval(prompt);
  CHECK_THROWS_AS(without_state.restart_decode(nullptr), model_error);
}
