// The engine's decode caches: every KV-compression method of heterocache/baselines.hpp (full, HeteroCache,
// StreamingLLM, H2O, SnapKV, PyramidKV, Ada-KV, Quest, DuoAttention-style) behind hcllama::decode_cache.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "model.hpp"

namespace hcllama {

// Every name --policy accepts, in the order tables list them.
std::span<const std::string_view> policy_names() noexcept;
bool is_policy_name(std::string_view name) noexcept;
// Also accepted (not in policy_names()): "heterocache-static", HeteroCache whose satellites are never refreshed
// (static_monitor; an ablation); any name followed by options ":sink=N", ":recent=N" (the prompt ends every
// compressed head keeps: cache_options::prompt_sink / prompt_recent, instead of the method's default) and, for
// heterocache, heterocache-static and duo, ":floor=A" (min_compressed_share A in [0, 1]; HeteroCache's default
// is heterocache::heterocache_min_compressed_share = 0.75, duo's 0); "heterocache-floor[A]" is
// "heterocache:floor=A" (A = 0.5 when left out); for heterocache ":digest=N": the floor makes every pivot it
// demotes a digest pivot scoring drift from pages of N prompt keys (0: an anchor, its satellites with it; left
// out, HeteroCache's default: digest pivots of heterocache::heterocache_digest_page_tokens where anchors would
// leave no pivot, heterocache::heterocache_pivot_demotion); for heterocache and heterocache-static ":weight=P": the budget's
// exponent (drift_weighted_budget::exponent in [0, 8]; heterocache::heterocache_budget_exponent = 0.5 by
// default, 1 the paper's). Example: "heterocache:recent=64:floor=0.5:digest=16:weight=1".
// True for the policies that use a head profile (heterocache, heterocache-static, duo): without one they
// profile online.
bool policy_uses_profile(std::string_view name) noexcept;

// Element type of a cache's hot tier (--kv-format): fp32, or 16 bits (heterocache::basic_host_storage over
// the engine's tensor: half the hot-tier bytes, attention accumulates in fp32). The cold tier is the engine's
// own K/V (kv_element, fp16).
enum class kv_format { fp32, fp16, bf16 };
// "fp32", "fp16" or "bf16"; empty for any other name.
std::optional<kv_format> parse_kv_format(std::string_view name) noexcept;

struct cache_config {
  std::string policy = "full";  // one of policy_names()
  kv_format format = kv_format::bf16;  // hot-tier element type (bf16: half the bytes a decode step reads)
  double budget = 0.5;          // r, kept fraction of the prompt KV (every policy but full)
  // Fixed budget in tokens per KV head on average (> 0 overrides `budget`: r = min(1, tokens / prompt tokens)).
  std::size_t budget_tokens = 0;
  // heterocache, duo: use this profile (no online profiling). duo keeps only its stabilities: heads below
  // tau_stable keep the full KV (volatile), the others are compressed (anchors), no clusters.
  std::optional<heterocache::head_profile> profile;
  long profiling_steps = 8;     // heterocache, duo, online profiling: decode steps observed before classifying
  // heterocache, duo with a profile: when r*N <= Nfull (pivots + volatiles), demote the most stable full heads
  // to anchors until the budget is feasible (heterocache::demote_until_feasible), instead of failing.
  bool demote_when_infeasible = true;
  // heterocache, duo with a profile: also demote full heads (most stable first) until the compressed heads'
  // mean cap B is at least min_compressed_share * r * T. 0 (unset): the policy name's ":floor=A", else the
  // method's default (HeteroCache 0.75, duo 0: only until feasible, which can leave a compressed head one token).
  double min_compressed_share = 0.0;
};

// The kept fraction r a config asks for with a prompt of `prompt_tokens` tokens.
double effective_ratio(const cache_config& cc, std::size_t prompt_tokens) noexcept;

heterocache::model_shape shape_of(const llama_config& c);

// The profile a config will run with for a prompt of `prompt_tokens` (after the duo conversion and any
// demotion); empty for profile-less policies and for online profiling.
std::optional<heterocache::head_profile> effective_profile(const llama_config& c, const cache_config& cc,
                                                           std::size_t prompt_tokens);

// Builds a cache for a prompt of `prompt_tokens` tokens and `max_new_tokens` decode tokens. With `cold_alias`
// the full and HeteroCache caches read their cold tier from that engine tensor (its tokens at their positions:
// the engine then holds the K/V once); without it, or for the other policies (the library's make_*_cache take
// no storage binding), the cache keeps its own copy of the prompt and decode K/V.
std::unique_ptr<decode_cache> make_decode_cache(const llama_config& c, const cache_config& cc, std::size_t prompt_tokens,
                                                std::size_t max_new_tokens,
                                                std::optional<engine_kv_tensor> cold_alias = std::nullopt);

// A cache_factory for llama_context: its caches alias the context's K/V where the policy allows.
cache_factory make_cache_factory(const llama_config& c, cache_config cc);

// One line per layer: "L07 P S A" (pivot/satellite/anchor/volatile = P/S/A/V, one letter per KV head).
std::string role_map(const heterocache::head_profile& p);

}  // namespace hcllama
