#include "cache.hpp"

#include <cstdio>

#include "heterocache/kv_cache.hpp"

namespace hcllama {

namespace {

template <class Cache>
class cache_adapter final : public decode_cache {
 public:
  cache_adapter(const char* name, const heterocache::model_shape& shape, const heterocache::cache_options& options,
                std::optional<heterocache::head_profile> profile)
      : name_(name), cache_(shape, options, std::move(profile)) {}
  const char* name() const noexcept override { return name_; }
  void prefill(std::size_t layer, const heterocache::strided_kv_layout& kv, std::size_t prompt_tokens,
               const heterocache::query_rows& window) override {
    cache_.prefill(idx(layer), 0, kv, idx(prompt_tokens), window);
  }
  void append(std::size_t layer, const heterocache::strided_kv_layout& kv, std::size_t token) override {
    cache_.append(idx(layer), 0, kv, idx(token));
  }
  heterocache::csr_selection selection(std::size_t layer) override { return cache_.selection(idx(layer)); }
  void observe(std::size_t layer, const float* query, std::size_t head_stride) override {
    cache_.observe(idx(layer), 0, query, idx(head_stride));
  }
  std::uint64_t resident_bytes() const override { return cache_.resident_bytes(); }
  const std::optional<heterocache::head_profile>& profile() const override { return cache_.profile(); }

 private:
  static heterocache::index_t idx(std::size_t x) { return static_cast<heterocache::index_t>(x); }
  const char* name_;
  Cache cache_;
};

}  // namespace

heterocache::model_shape shape_of(const llama_config& c) {
  return {static_cast<heterocache::index_t>(c.n_layer), static_cast<heterocache::index_t>(c.n_head_kv),
          static_cast<heterocache::index_t>(c.n_head), static_cast<heterocache::index_t>(c.head_dim)};
}

std::unique_ptr<decode_cache> make_decode_cache(const llama_config& c, const cache_config& cc, std::size_t prompt_tokens,
                                                std::size_t max_new_tokens) {
  const auto shape = shape_of(c);
  heterocache::cache_options o;
  o.sequences = 1;
  o.max_prompt_tokens = static_cast<heterocache::index_t>(prompt_tokens);
  o.max_new_tokens = static_cast<heterocache::index_t>(max_new_tokens);
  if (cc.policy == "full") {
    o.budget_ratio = 1.0;
    return std::make_unique<cache_adapter<heterocache::full_kv_cache<>>>(
        "full", shape, o, heterocache::uniform_profile(shape, heterocache::head_role::volatile_));
  }
  if (cc.policy == "heterocache") {
    o.budget_ratio = cc.budget;
    o.profiling_steps = cc.profiling_steps;
    return std::make_unique<cache_adapter<heterocache::kv_cache<>>>("heterocache", shape, o, cc.profile);
  }
  throw model_error("unknown cache policy '" + cc.policy + "' (full or heterocache)");
}

cache_factory make_cache_factory(const llama_config& c, cache_config cc) {
  return [c, cc = std::move(cc)](std::size_t prompt_tokens, std::size_t max_new_tokens) {
    return make_decode_cache(c, cc, prompt_tokens, max_new_tokens);
  };
}

std::string role_map(const heterocache::head_profile& p) {
  std::string out;
  char buf[16];
  for (heterocache::index_t l = 0; l < p.layers; ++l) {
    std::snprintf(buf, sizeof buf, "L%02lld", static_cast<long long>(l));
    out += buf;
    for (heterocache::index_t h = 0; h < p.kv_heads; ++h) {
      const auto r = p.at(l, h).role;
      out += ' ';
      out += r == heterocache::head_role::pivot       ? 'P'
             : r == heterocache::head_role::satellite ? 'S'
             : r == heterocache::head_role::anchor    ? 'A'
                                                      : 'V';
    }
    out += '\n';
  }
  return out;
}

}  // namespace hcllama
