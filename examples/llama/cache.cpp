#include "cache.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <string>
#include <type_traits>

#include "heterocache/baselines.hpp"

namespace hcllama {

namespace hc = heterocache;

namespace {

constexpr std::array<std::string_view, 11> kPolicies = {"full",   "heterocache", "streamingllm", "h2o",  "snapkv", "pyramidkv",
                                                        "adakv",  "tova",        "quest",        "duo",  "h2o-oracle"};

// A cache of one sequence (slot 0) behind decode_cache.
template <class Cache>
class cache_adapter final : public decode_cache {
 public:
  template <class Make>
  cache_adapter(const char* name, Make&& make) : name_(name), cache_(make()) {}
  const char* name() const noexcept override { return name_; }
  void begin_sequence(std::size_t prompt_tokens) override { cache_.begin_sequence(0, idx(prompt_tokens)); }
  void prefill(std::size_t layer, const engine_kv_tensor& kv, const hc::query_rows& window,
               hc::host_queue queue) override {
    cache_.prefill(idx(layer), 0, kv, window, queue);
  }
  kv_selection begin_layer(std::size_t layer, const engine_kv_tensor& kv, std::size_t token, const float* query,
                           std::size_t head_stride) override {
    const hc::index_t new_token = idx(token);
    return cache_.begin_layer(idx(layer), kv, std::span<const hc::index_t>(&new_token, 1), queries(query, head_stride));
  }
  void end_layer(std::size_t layer, const float* query, std::size_t head_stride) override {
    // The engine's attention (selection_attention::run) wrote and stamped the scores the selection asked for.
    cache_.end_layer(idx(layer), queries(query, head_stride), hc::score_source::captured);
  }
  std::uint64_t resident_bytes() const override { return cache_.resident_bytes(); }
  std::uint64_t resident_tokens() const override { return static_cast<std::uint64_t>(cache_.resident_tokens()); }
  const std::optional<hc::head_profile>& profile() const override { return cache_.profile(); }
  hc::transfer_counters counters() const override { return cache_.storage().counters(); }

 private:
  static hc::index_t idx(std::size_t x) { return static_cast<hc::index_t>(x); }
  hc::decode_queries queries(const float* query, std::size_t head_stride) const {
    const hc::index_t stride = idx(head_stride);
    return {query, cache_.shape().query_heads * stride, stride};
  }
  const char* name_;
  Cache cache_;
};

// Wraps the cache `make()` returns.
template <class Make>
std::unique_ptr<decode_cache> adapt(const char* name, Make&& make) {
  return std::make_unique<cache_adapter<std::invoke_result_t<Make&>>>(name, std::forward<Make>(make));
}

// DuoAttention-style roles from a HeteroCache profile: stability only, no clusters.
heterocache::head_profile stability_only(heterocache::head_profile p) {
  for (auto& h : p.heads)
    h = {h.stability < p.tau_stable ? heterocache::head_role::volatile_ : heterocache::head_role::anchor, h.stability, -1};
  return p;
}

}  // namespace

std::span<const std::string_view> policy_names() noexcept { return kPolicies; }

namespace {

// A policy name: a base name, then any of ":sink=N", ":recent=N" (the prompt ends compressed heads keep,
// cache_options::prompt_sink / prompt_recent) and ":floor=A" (heterocache, duo: demote full heads until the
// compressed heads' mean cap is A*r*T; 0: only until the budget is feasible), ":carry=C" and ":share=S" (any
// policy: cache_options::prompt_span_carry, C in [0, 1), and prompt_span_share, S in [0, 1]), ":score=K"
// (any policy: cache_options::selection_scoring, K one of pooled, mass, last), ":span=K" (any policy with a span
// carry: cache_options::span_scoring, the same kinds). "heterocache-floor[A]" is
// "heterocache:floor=A" (A = 0.5 by default). Options left out are the method's defaults.
struct policy_spec {
  std::string base;
  long sink = hc::cache_options::method_default, recent = hc::cache_options::method_default;
  double floor = hc::cache_options::method_default;
  long digest = hc::cache_options::method_default;
  double weight = -1.0;  // heterocache's drift_weighted_budget::exponent (-1: the library's default)
  double carry = hc::cache_options::method_default;  // cache_options::prompt_span_carry
  double share = hc::cache_options::method_default;  // cache_options::prompt_span_share
  std::optional<hc::prompt_scoring> scoring;          // cache_options::selection_scoring (empty: the method's)
  std::optional<hc::prompt_scoring> span;             // cache_options::span_scoring (empty: the method's)
  // The demotion floor this policy runs with: the option, else the method's (HeteroCache's; 0 for duo).
  [[nodiscard]] double floor_share() const noexcept {
    if (floor >= 0.0) return floor;
    return base == "duo" ? 0.0 : hc::heterocache_min_compressed_share;
  }
  // Digest pages for heterocache (the option, else HeteroCache's), none for the others (their monitors score
  // no digests).
  [[nodiscard]] long digest_pages() const noexcept {
    if (base != "heterocache") return 0;
    return digest >= 0 ? digest : hc::heterocache_digest_page_tokens;
  }
  // What the floor makes of a pivot: for heterocache with ":digest=N" (N > 0) always a digest pivot, with
  // ":digest=0" an anchor, by default HeteroCache's choice (heterocache::heterocache_pivot_demotion); an
  // anchor for the others.
  [[nodiscard]] hc::pivot_demotion pivot_demotion() const noexcept {
    if (digest_pages() == 0) return hc::pivot_demotion::to_anchors;
    return digest > 0 ? hc::pivot_demotion::to_digest_pivots : hc::heterocache_pivot_demotion;
  }
};

std::optional<double> parse_number(std::string_view text) {
  try {
    std::size_t n = 0;
    const std::string s(text);
    const double a = std::stod(s, &n);
    if (n == s.size()) return a;
  } catch (...) {
  }
  return std::nullopt;
}

std::optional<policy_spec> parse_policy(std::string_view name) {
  policy_spec spec;
  const std::size_t colon = name.find(':');
  spec.base = std::string(name.substr(0, colon));
  constexpr std::string_view floor_prefix = "heterocache-floor";
  if (spec.base.rfind(floor_prefix, 0) == 0) {
    const std::string_view a = std::string_view(spec.base).substr(floor_prefix.size());
    const auto share = a.empty() ? std::optional<double>(0.5) : parse_number(a);
    if (!share || !(*share > 0.0 && *share <= 1.0)) return std::nullopt;
    spec.floor = *share, spec.base = "heterocache";
  }
  const bool profiled = spec.base == "heterocache" || spec.base == "heterocache-static" || spec.base == "duo";
  if (std::find(kPolicies.begin(), kPolicies.end(), spec.base) == kPolicies.end() && spec.base != "heterocache-static")
    return std::nullopt;
  for (std::size_t at = colon; at != std::string_view::npos;) {
    const std::size_t next = name.find(':', at + 1);
    const std::string_view option = name.substr(at + 1, next == std::string_view::npos ? std::string_view::npos : next - at - 1);
    at = next;
    const std::size_t eq = option.find('=');
    if (eq == std::string_view::npos) return std::nullopt;
    const std::string_view key = option.substr(0, eq);
    if (key == "score" || key == "span") {
      const std::string_view kind = option.substr(eq + 1);
      std::optional<hc::prompt_scoring>& scoring = key == "score" ? spec.scoring : spec.span;
      if (kind == "pooled") scoring = hc::prompt_scoring::pooled_window;
      else if (kind == "mass") scoring = hc::prompt_scoring::window_mass;
      else if (kind == "last") scoring = hc::prompt_scoring::last_query;
      else return std::nullopt;
      continue;
    }
    const auto value = parse_number(option.substr(eq + 1));
    if (!value) return std::nullopt;
    if (key == "floor" && profiled && *value >= 0.0 && *value <= 1.0) spec.floor = *value;
    else if ((key == "sink" || key == "recent") && *value >= 0.0 && *value <= 1e9 && *value == static_cast<long>(*value))
      (key == "sink" ? spec.sink : spec.recent) = static_cast<long>(*value);
    else if (key == "digest" && spec.base == "heterocache" && *value >= 0.0 && *value <= 1024 && *value == static_cast<long>(*value))
      spec.digest = static_cast<long>(*value);
    else if (key == "weight" && (spec.base == "heterocache" || spec.base == "heterocache-static") && *value >= 0.0 && *value <= 8.0)
      spec.weight = *value;
    else if (key == "carry" && *value >= 0.0 && *value < 1.0) spec.carry = *value;
    else if (key == "share" && *value >= 0.0 && *value <= 1.0) spec.share = *value;
    else return std::nullopt;
  }
  return spec;
}

}  // namespace

bool is_policy_name(std::string_view name) noexcept { return parse_policy(name).has_value(); }
bool policy_uses_profile(std::string_view name) noexcept {
  const auto spec = parse_policy(name);
  return spec && (spec->base == "heterocache" || spec->base == "heterocache-static" || spec->base == "duo");
}

double effective_ratio(const cache_config& cc, std::size_t prompt_tokens) noexcept {
  if (cc.policy == "full") return 1.0;
  if (cc.budget_tokens > 0 && prompt_tokens > 0)
    return std::min(1.0, static_cast<double>(cc.budget_tokens) / static_cast<double>(prompt_tokens));
  return cc.budget;
}

heterocache::model_shape shape_of(const llama_config& c) {
  return {static_cast<heterocache::index_t>(c.n_layer), static_cast<heterocache::index_t>(c.n_head_kv),
          static_cast<heterocache::index_t>(c.n_head), static_cast<heterocache::index_t>(c.head_dim)};
}

std::optional<heterocache::head_profile> effective_profile(const llama_config& c, const cache_config& cc,
                                                           std::size_t prompt_tokens) {
  if (!policy_uses_profile(cc.policy) || !cc.profile) return std::nullopt;
  const policy_spec spec = *parse_policy(cc.policy);
  heterocache::head_profile p = spec.base == "duo" ? stability_only(*cc.profile) : *cc.profile;
  p.validate(shape_of(c));
  const double r = effective_ratio(cc, prompt_tokens);
  const auto pivots = spec.pivot_demotion();
  // One demotion, to the floor if there is one (it implies feasibility): two in a row would see the first's
  // result, so a rule like pivot_demotion::to_digest_pivots_if_none_stay would judge a profile already demoted.
  const double share = cc.min_compressed_share > 0.0 ? cc.min_compressed_share : spec.floor_share();
  if (share > 0.0) heterocache::demote_until_feasible(p, r, share, pivots);
  else if (cc.demote_when_infeasible && !heterocache::budget_feasible(p, r)) heterocache::demote_until_feasible(p, r, 0.0, pivots);
  return p;
}

std::optional<kv_format> parse_kv_format(std::string_view name) noexcept {
  if (name == "fp32") return kv_format::fp32;
  if (name == "fp16") return kv_format::fp16;
  if (name == "bf16") return kv_format::bf16;
  return std::nullopt;
}

namespace {

// The cache of cc.policy over `Storage`, bound to `kv` (with kv.cold_alias, its cold tier reads the engine's K/V).
template <class Storage>
std::unique_ptr<decode_cache> make_policy_cache(const llama_config& c, const cache_config& cc, std::size_t prompt_tokens,
                                                const hc::cache_options& o, const hc::storage_binding<engine_kv_tensor>& kv) {
  using tensor = engine_kv_tensor;
  const auto shape = shape_of(c);
  const policy_spec spec = *parse_policy(cc.policy);
  const std::string& p = spec.base;
  hc::drift_weighted_budget budget = hc::heterocache_budget();
  if (spec.weight >= 0.0) budget.exponent = spec.weight;
  if (p == "full") return adapt("full", [&] { return hc::make_full_cache<tensor, Storage>(shape, o, kv); });
  if (p == "heterocache") {
    auto prof = effective_profile(c, cc, prompt_tokens);
    return adapt("heterocache", [&] { return hc::make_heterocache_cache<tensor, Storage>(shape, o, prof, kv, budget); });
  }
  if (p == "heterocache-static") {  // ablation: HeteroCache's roles and budget, satellites never refreshed
    using static_hc = hc::kv_cache<tensor, hc::overlap_star_classifier, hc::drift_weighted_budget, Storage,
                                   hc::static_monitor, hc::sync_retriever>;
    auto prof = effective_profile(c, cc, prompt_tokens);
    hc::cache_options ends = o;
    if (ends.digest_page_tokens == hc::cache_options::method_default) ends.digest_page_tokens = 0;  // no drift checks
    ends = hc::heterocache_defaults(ends);
    return adapt("heterocache-static", [&] { return static_hc(shape, ends, prof, {}, budget, {}, kv); });
  }
  if (p == "duo") {
    auto prof = effective_profile(c, cc, prompt_tokens);
    return adapt("duo", [&] {
      return hc::make_duo_attention_cache<tensor, Storage>(shape, o, prof, hc::streaming_llm_sink, hc::duo_tau_stable, kv);
    });
  }
  if (p == "streamingllm")
    return adapt("streamingllm",
                 [&] { return hc::make_streaming_llm_cache<tensor, Storage>(shape, o, hc::streaming_llm_sink, kv); });
  if (p == "h2o") return adapt("h2o", [&] { return hc::make_h2o_cache<tensor, Storage>(shape, o, kv); });
  if (p == "h2o-oracle")
    return adapt("h2o-oracle", [&] { return hc::make_h2o_oracle_cache<tensor, Storage>(shape, o, hc::h2o_interval, kv); });
  if (p == "tova") return adapt("tova", [&] { return hc::make_tova_cache<tensor, Storage>(shape, o, kv); });
  if (p == "snapkv") return adapt("snapkv", [&] { return hc::make_snapkv_cache<tensor, Storage>(shape, o, kv); });
  if (p == "pyramidkv")
    return adapt("pyramidkv", [&] { return hc::make_pyramidkv_cache<tensor, Storage>(shape, o, hc::pyramidkv_beta, kv); });
  if (p == "adakv") return adapt("adakv", [&] { return hc::make_ada_kv_cache<tensor, Storage>(shape, o, hc::ada_kv_alpha, kv); });
  if (p == "quest")
    return adapt("quest", [&] { return hc::make_quest_cache<tensor, Storage>(shape, o, hc::quest_page_tokens, kv); });
  throw model_error("unknown cache policy '" + p + "'");
}

}  // namespace

std::unique_ptr<decode_cache> make_decode_cache(const llama_config& c, const cache_config& cc, std::size_t prompt_tokens,
                                                std::size_t max_new_tokens, std::optional<engine_kv_tensor> cold_alias) {
  hc::cache_options o;
  o.sequences = 1;
  o.max_prompt_tokens = static_cast<hc::index_t>(prompt_tokens);
  o.max_new_tokens = static_cast<hc::index_t>(std::max<std::size_t>(max_new_tokens, 1));
  o.budget_ratio = effective_ratio(cc, prompt_tokens);
  o.profiling_steps = std::min<hc::index_t>(cc.profiling_steps, o.max_new_tokens);
  const std::optional<policy_spec> spec = parse_policy(cc.policy);
  if (!spec) {
    std::string names;
    for (auto n : kPolicies) names += (names.empty() ? "" : ", ") + std::string(n);
    throw model_error("unknown cache policy '" + cc.policy + "' (one of: " + names +
                      ", heterocache-static; options :sink=N, :recent=N, :floor=A for heterocache and duo, "
                      ":digest=N and :weight=P for heterocache, :carry=C, :share=S, :score=pooled|mass|last, :span=pooled|mass|last)");
  }
  o.prompt_sink = static_cast<hc::index_t>(spec->sink);
  o.prompt_recent = static_cast<hc::index_t>(spec->recent);
  o.min_compressed_share = cc.min_compressed_share > 0.0 ? cc.min_compressed_share : spec->floor;
  o.digest_page_tokens = static_cast<hc::index_t>(spec->digest_pages());
  o.demoted_pivots = spec->pivot_demotion();
  o.prompt_span_carry = spec->carry;
  o.prompt_span_share = spec->share;
  o.selection_scoring = spec->scoring;
  o.span_scoring = spec->span;
  const hc::storage_binding<engine_kv_tensor> kv{{}, std::move(cold_alias)};
  switch (cc.format) {
    case kv_format::fp16: return make_policy_cache<hc::basic_host_storage<hc::fp16_t, engine_kv_tensor>>(c, cc, prompt_tokens, o, kv);
    case kv_format::bf16: return make_policy_cache<hc::basic_host_storage<hc::bf16_t, engine_kv_tensor>>(c, cc, prompt_tokens, o, kv);
    case kv_format::fp32: break;
  }
  return make_policy_cache<hc::basic_host_storage<float, engine_kv_tensor>>(c, cc, prompt_tokens, o, kv);
}

cache_factory make_cache_factory(const llama_config& c, cache_config cc) {
  return [c, cc = std::move(cc)](std::size_t prompt_tokens, std::size_t max_new_tokens, const engine_kv_tensor& engine_kv) {
    return make_decode_cache(c, cc, prompt_tokens, max_new_tokens, engine_kv);
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
      out += r == heterocache::head_role::pivot          ? 'P'
             : r == heterocache::head_role::digest_pivot ? 'D'
             : r == heterocache::head_role::satellite    ? 'S'
             : r == heterocache::head_role::anchor       ? 'A'
                                                         : 'V';
    }
    out += '\n';
  }
  return out;
}

}  // namespace hcllama
