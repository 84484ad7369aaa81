// The forward pass on the real model (needs HETEROCACHE_MODEL): the blocked prefill against the decode path,
// and one prefill decoded by several caches (llama_context::restart_decode) against fresh contexts.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
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

// The model file and the model read from it; null (with a message) when HETEROCACHE_MODEL is unset or missing.
struct real_model {
  explicit real_model(const char* path) : file(gguf_file::open(path)), model(file) {}
  gguf_file file;
  llama_model model;
};

std::unique_ptr<const real_model> open_real_model() {
  const char* path = model_path();
  if (!path) {
    MESSAGE("HETEROCACHE_MODEL unset or missing: skipping");
    return nullptr;
  }
  return std::make_unique<const real_model>(path);
}

cache_config streaming_half() {
  cache_config cc;
  cc.policy = "streamingllm";
  cc.budget = 0.5;
  return cc;
}

}  // namespace

TEST_CASE("a prompt prefilled in blocks gives the logits of a shorter prefill and token-by-token decode (fp32 cache)") {
  const std::unique_ptr<const real_model> real = open_real_model();
  if (!real) return;
  const llama_model& model = real->model;
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

TEST_CASE("quantized activations on the real model: int16 gives the fp32 logits, int8 close to them") {
  const std::unique_ptr<const real_model> real = open_real_model();
  if (!real) return;
  const llama_model& model = real->model;
  const std::vector<std::int32_t> ids = some_tokens(160, 5);
  const std::int32_t next = 1234;
  const auto logits = [&](activation_format f) {
    llama_context ctx(model, 162, nullptr, 2);
    ctx.set_activations(f);
    CHECK(ctx.activations() == f);
    std::vector<float> prefill = ctx.eval(ids);           // the matrix-matrix products
    const std::vector<float> decode = ctx.eval(std::span(&next, 1));  // the matrix-vector ones
    prefill.insert(prefill.end(), decode.begin(), decode.end());
    return prefill;
  };
  const std::vector<float> fp32 = logits(activation_format::fp32), int16 = logits(activation_format::int16),
                           int8 = logits(activation_format::int8);
  const double int16_error = max_relative_difference(int16, fp32), int8_error = max_relative_difference(int8, fp32);
  MESSAGE("max relative logit difference to fp32 activations: int16 " << int16_error << ", int8 " << int8_error);
  CHECK(int16_error > 0.0);  // the codes are used
  CHECK(int16_error < 2e-3);
  CHECK(int8_error < 0.1);
  CHECK(int16_error < int8_error);
}

TEST_CASE("restart_decode: one prefill, then each cache decodes as it would in a context of its own") {
  const std::unique_ptr<const real_model> real = open_real_model();
  if (!real) return;
  const llama_model& model = real->model;
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

TEST_CASE("--rope-scale: positions interpolated, position 0 unchanged, bad factors refused with the range") {
  const char* path = model_path();
  if (!path) {
    MESSAGE("HETEROCACHE_MODEL unset or missing: skipping");
    return;
  }
  const gguf_file file = gguf_file::open(path);
  const auto logits = [&](double factor, std::span<const std::int32_t> ids) {
    llama_model model(file);
    model.set_rope_scale(factor);
    CHECK(model.config().rope_scale == static_cast<float>(factor));
    llama_context ctx(model, ids.size() + 1, nullptr, 2);
    return ctx.eval(ids);
  };
  const std::vector<std::int32_t> ids = some_tokens(40, 9);
  // one token sits at position 0, which no scaling rotates
  CHECK(logits(4.0, std::span(ids).first(1)) == logits(1.0, std::span(ids).first(1)));
  // later positions rotate by other angles: the logits move
  const std::vector<float> plain = logits(1.0, ids), scaled = logits(2.0, ids);
  CHECK(max_relative_difference(scaled, plain) > 1e-3);
  CHECK(logits(1.0, ids) == plain);  // 1 is the file's own positions
  llama_model model(file);
  for (const double bad : {0.5, 0.0, -2.0, 65.0, std::nan("")}) {
    CAPTURE(bad);
    try {
      model.set_rope_scale(bad);
      FAIL("accepted");
    } catch (const model_error& e) {
      CHECK(std::string(e.what()).find("out of range [1, 64]") != std::string::npos);
    }
  }
  CHECK(model.config().rope_scale == 1.0f);
}
