#pragma once
//! \file
//! The well-known KV-compression methods, by name: each is a composition of this library's policies
//! (DESIGN.md section 3), given as a `kv_cache` alias and a `make_*_cache(shape, options, ...)` factory that
//! supplies the profile and policy settings the method needs. Every method compresses each KV head to its
//! budgeted cap of prompt tokens (decode tokens are kept per `cache_options::decode_window`); the full prompt
//! stays in the cold tier. Each takes the engine's tensor type (`strided_kv_tensor<float>` by default) and the
//! storage tier (`default_storage<Tensor>`, a hot tier of the tensor's element type; `host_storage_bf16` or
//! `host_storage_fp16` halve an fp32 engine's hot bytes), and, last, the memory binding (`storage_binding`:
//! engine-owned memory, or a cold tier that aliases the engine's tensor).
//!
//! | method        | classifier (roles)          | budget                           | monitor                |
//! |---------------|-----------------------------|----------------------------------|------------------------|
//! | full          | all volatile                | (none compressed)                | static                 |
//! | StreamingLLM  | all anchor                  | uniform                          | `streaming_monitor`    |
//! | H2O           | all anchor                  | uniform                          | `h2o_monitor`          |
//! | H2O oracle    | all anchor                  | uniform                          | `heavy_hitter_monitor` |
//! | SnapKV        | all anchor                  | uniform                          | `static_monitor`       |
//! | PyramidKV     | all anchor                  | `pyramid_budget`                 | `static_monitor`       |
//! | Ada-KV        | all anchor                  | `ada_kv_budget<uniform_budget>`  | `static_monitor`       |
//! | TOVA          | all anchor                  | uniform                          | `tova_monitor`         |
//! | Quest         | all anchor                  | uniform                          | `quest_monitor`        |
//! | DuoAttention  | stability only (no cluster) | uniform                          | `streaming_monitor`    |
//! | HeteroCache   | overlap + star clustering   | drift-weighted                   | pivot overlap          |
//!
//! The prompt ends a compressed head always keeps (`cache_options::prompt_sink` / `prompt_recent`; a factory
//! fills the ones left at `cache_options::method_default`): SnapKV, PyramidKV and Ada-KV the observation
//! window (`snapkv_window`), H2O and the H2O oracle half their cap of recent tokens, TOVA the last token,
//! HeteroCache `heterocache_prompt_sink` + `heterocache_prompt_recent` (and its demotion floor,
//! `heterocache_min_compressed_share`, with `heterocache_digest_page_tokens`); StreamingLLM and DuoAttention
//! rank by position anyway, Quest keeps none.

#include <optional>
#include <utility>

#include "heterocache/budget/ada_kv_budget.hpp"
#include "heterocache/budget/drift_weighted_budget.hpp"
#include "heterocache/budget/pyramid_budget.hpp"
#include "heterocache/budget/uniform_budget.hpp"
#include "heterocache/classifier/overlap_star_classifier.hpp"
#include "heterocache/kv_cache.hpp"
#include "heterocache/monitor/heavy_hitter_monitor.hpp"
#include "heterocache/monitor/pivot_overlap_monitor.hpp"
#include "heterocache/monitor/quest_monitor.hpp"
#include "heterocache/monitor/static_monitor.hpp"
#include "heterocache/monitor/streaming_monitor.hpp"

namespace heterocache {
inline namespace v1 {

//! Observation window SnapKV (and PyramidKV, Ada-KV) score the prompt with: pass the last this many prompt
//! queries as `prefill`'s `window`.
inline constexpr index_t snapkv_window = 32;
//! The methods' own settings, the factories' defaults.
inline constexpr index_t streaming_llm_sink = 4;   //!< attention-sink tokens of StreamingLLM (and DuoAttention)
inline constexpr index_t h2o_interval = 1;         //!< H2O re-ranks at every step
inline constexpr double pyramidkv_beta = 20.0;     //!< PyramidKV's mean cap over its top layer's cap
inline constexpr double ada_kv_alpha = 0.2;        //!< Ada-KV's safeguard share
inline constexpr index_t quest_page_tokens = 16;   //!< Quest's page size
inline constexpr double duo_tau_stable = 0.5;      //!< stability below which a DuoAttention-style head is full
inline constexpr index_t tova_recent = 1;          //!< TOVA keeps the last prompt token (as kvpress's press does)
//! HeteroCache's compressed heads keep the first `heterocache_prompt_sink` prompt tokens and the last
//! `heterocache_prompt_recent` (the question of a prompt), whatever their scores (docs/eval: tuned on
//! development prompts).
inline constexpr index_t heterocache_prompt_sink = 4;
inline constexpr index_t heterocache_prompt_recent = 32;
//! HeteroCache's demotion floor (`cache_options::min_compressed_share`): full heads are demoted until the
//! compressed heads' mean cap is three quarters of `r*T` (docs/eval: tuned on development prompts; 0.5 found
//! as many passkeys with a KL 1.4x to 1.6x higher, 0.9 and 1 lose the passkey at r <= 0.1).
inline constexpr double heterocache_min_compressed_share = 0.75;
//! How strongly HeteroCache's budget favours its less stable compressed heads: `drift_weighted_budget::exponent`
//! `p` of the weights `(S + eps)^-p`. The paper's `1 / (S + eps)` is `p = 1`; on development prompts `p = 0.5`
//! found as many passkeys with a lower KL (docs/eval/dev-weight.md): with 1 the least stable satellites got up
//! to 8 times the cap of the most stable anchors.
inline constexpr double heterocache_budget_exponent = 0.5;
//! HeteroCache's default budget policy: `drift_weighted_budget` with `heterocache_budget_exponent`.
[[nodiscard]] inline drift_weighted_budget heterocache_budget() noexcept {
    drift_weighted_budget budget;
    budget.exponent = heterocache_budget_exponent;
    return budget;
}
//! Tokens per page of HeteroCache's digest pivots (`cache_options::digest_page_tokens`; Quest's page size).
inline constexpr index_t heterocache_digest_page_tokens = 16;
//! What HeteroCache's demotion floor makes of the pivots it demotes (`cache_options::demoted_pivots`): digest
//! pivots (DESIGN.md section 5.3) where anchors would leave no pivot at all, so that some heads still track
//! drift (with SmolLM2's profile and the floor 0.75: at r <= 0.08, not at r >= 0.09). On development prompts
//! at 2K and r = 0.05 they found 63 % of 101 passkeys against 41 % as anchors (full cache 66 %, Quest 55 %) and
//! 63 % of 30 multi-key needles against 37 %, and lost no more than one sample on NIAH, multi-query and
//! multi-value, for about 95 KiB per step from the cold tier; at r = 0.1, where one pivot stays, they were
//! within a sample of the anchors on every task for 17x the cold-tier traffic (docs/eval/README.md, "Digest
//! pivots").
inline constexpr pivot_demotion heterocache_pivot_demotion = pivot_demotion::to_digest_pivots_if_none_stay;
//! HeteroCache's span carry (`cache_options::prompt_span_carry`, `prompt_span_share`): a quarter of each
//! compressed head's cap goes to the tokens after the ones its window attends, their scores carried forward
//! with decay 0.95. On development prompts at r = 0.25 it found 8/10 UUID needles (the full cache's 8/10;
//! without it 2/10) and more multi-query values (45 % against 40 %), the same passkeys and 7-digit needles,
//! for a KL 1.3x higher (0.070 against 0.054); a share of 0.1 found 6/10 for 1.05x, the whole cap 8/10 for
//! 1.5x (docs/eval/README.md, "Span carry").
inline constexpr double heterocache_prompt_span_carry = 0.95;
inline constexpr double heterocache_prompt_span_share = 0.25;
//! How HeteroCache scores its span carry's share (`cache_options::span_scoring`): by what the prompt's last
//! query attends, where the answer starts copying, not by the pooled window its selection uses. On development
//! prompts at 2K it found more of the values copied token by token at small budgets (variable tracking at
//! r = 0.1 / 0.05: 9 -> 14 % / 3 -> 9 %, Quest 14 / 9 %; UUID needles at r = 0.1: 40 -> 70 %; multi-value at
//! r = 0.05: 6 -> 22 %) and the same at r = 0.25 within a sample, for the same KL (0.069 / 0.191 / 0.309
//! against 0.072 / 0.180 / 0.314 at r = 0.25 / 0.1 / 0.05); fewer multi-query values at r = 0.1 (35 against
//! 45 %) (docs/eval/README.md, "Span scoring").
inline constexpr prompt_scoring heterocache_span_scoring = prompt_scoring::last_query;

//! `options` with HeteroCache's defaults where they are `method_default` (or, for `demoted_pivots` and
//! `span_scoring`, empty); nothing else changed.
[[nodiscard]] inline cache_options heterocache_defaults(const cache_options& options) {
    cache_options o = options.with_method_defaults(heterocache_prompt_sink, heterocache_prompt_recent,
                                                   heterocache_min_compressed_share, heterocache_digest_page_tokens,
                                                   heterocache_prompt_span_carry, heterocache_prompt_span_share);
    if (!o.demoted_pivots && o.digest_pages() > 0) o.demoted_pivots = heterocache_pivot_demotion;
    if (!o.span_scoring) o.span_scoring = heterocache_span_scoring;
    return o;
}

//! `heterocache_defaults(options)`, and `profile` (if any, and if its budget can be met: an infeasible one
//! stays a `budget_error` of the cache) demoted to the resulting floor.
[[nodiscard]] inline cache_options heterocache_options(const cache_options& options, std::optional<head_profile>& profile) {
    cache_options o = heterocache_defaults(options);
    o.validate();
    if (profile && o.demotion_floor() > 0.0 && budget_feasible(*profile, o.budget_ratio))
        demote_until_feasible(*profile, o.budget_ratio, o.demotion_floor(), o.pivot_demotion_mode());
    return o;
}

//! A cache in which every KV head is compressed (all anchors) by `Budget`, its tokens chosen by `Monitor`.
template <BudgetPolicy Budget, DriftMonitor Monitor, KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
using all_anchor_cache = kv_cache<Tensor, fixed_role_classifier, Budget, Storage, Monitor, sync_retriever>;

template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
using streaming_llm_cache = all_anchor_cache<uniform_budget, streaming_monitor, Tensor, Storage>;
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
using h2o_cache = all_anchor_cache<uniform_budget, h2o_monitor, Tensor, Storage>;
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
using h2o_oracle_cache = all_anchor_cache<uniform_budget, heavy_hitter_monitor, Tensor, Storage>;
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
using tova_cache = all_anchor_cache<uniform_budget, tova_monitor, Tensor, Storage>;
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
using snapkv_cache = all_anchor_cache<uniform_budget, static_monitor, Tensor, Storage>;
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
using pyramidkv_cache = all_anchor_cache<pyramid_budget, static_monitor, Tensor, Storage>;
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
using ada_kv_cache = all_anchor_cache<ada_kv_budget<uniform_budget>, static_monitor, Tensor, Storage>;
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
using quest_cache = all_anchor_cache<uniform_budget, quest_monitor, Tensor, Storage>;
//! Stability-only roles: drifting heads keep the full KV, stable heads keep sink + recent tokens.
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
using duo_attention_cache =
    kv_cache<Tensor, overlap_star_classifier, uniform_budget, Storage, streaming_monitor, sync_retriever>;
//! The paper's method with its defaults (DESIGN.md section 2).
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
using heterocache_cache = kv_cache<Tensor, overlap_star_classifier, drift_weighted_budget, Storage>;
//! HeteroCache's roles and drift monitor with Ada-KV's split of each layer's budget.
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
using heterocache_ada_kv_cache = kv_cache<Tensor, overlap_star_classifier, ada_kv_budget<drift_weighted_budget>,
                                          Storage, pivot_overlap_monitor, sync_retriever>;

//! The full cache (every head keeps every token): a `full_kv_cache<Tensor, Storage>`, at r = 1 whatever
//! `options.budget_ratio` says.
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
full_kv_cache<Tensor, Storage> make_full_cache(const model_shape& shape, const cache_options& options,
                                               storage_binding<Tensor> binding = {}) {
    cache_options whole = options;
    whole.budget_ratio = 1.0;  // every head keeps every token, whatever r the options carry
    return {shape, whole, uniform_profile(shape, head_role::volatile_), {}, {}, {}, std::move(binding)};
}

//! An all-anchor cache with the given budget and monitor.
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>, BudgetPolicy Budget, DriftMonitor Monitor>
all_anchor_cache<Budget, Monitor, Tensor, Storage> make_all_anchor_cache(const model_shape& shape,
                                                                         const cache_options& options, Budget budget,
                                                                         Monitor monitor, storage_binding<Tensor> binding = {}) {
    return all_anchor_cache<Budget, Monitor, Tensor, Storage>(shape, options, uniform_profile(shape, head_role::anchor),
                                                              fixed_role_classifier{head_role::anchor},
                                                              std::move(budget), std::move(monitor), std::move(binding));
}

//! StreamingLLM: the first `sink` prompt tokens and the most recent ones.
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
streaming_llm_cache<Tensor, Storage> make_streaming_llm_cache(const model_shape& shape, const cache_options& options,
                                                              index_t sink = streaming_llm_sink,
                                                              storage_binding<Tensor> binding = {}) {
    return make_all_anchor_cache<Tensor, Storage>(shape, options.with_method_defaults(0, 0), uniform_budget{},
                                                  streaming_monitor{sink}, std::move(binding));
}

//! The recent prompt tokens of H2O: half the mean cap (`r * max_prompt_tokens / 2`), the other half heavy hitters.
[[nodiscard]] inline index_t h2o_recent_tokens(const cache_options& options) noexcept {
    return static_cast<index_t>(options.budget_ratio * static_cast<double>(options.max_prompt_tokens) / 2.0);
}

//! H2O: heavy hitters by the attention the observation window accumulated plus the most recent prompt tokens,
//! half the mean cap each, evicted for good (`h2o_monitor`: nothing is fetched back, no work during decode).
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
h2o_cache<Tensor, Storage> make_h2o_cache(const model_shape& shape, const cache_options& options,
                                          storage_binding<Tensor> binding = {}) {
    return make_all_anchor_cache<Tensor, Storage>(shape, options.with_method_defaults(0, h2o_recent_tokens(options)),
                                                  uniform_budget{}, h2o_monitor{}, std::move(binding));
}

//! The H2O oracle: heavy hitters re-ranked every `interval` steps over the attention every prompt position has
//! accumulated, evicted tokens fetched back from the cold tier (`heavy_hitter_monitor`). It reads the whole
//! prompt's keys every step (full attention's cost): a reference, not a compression method.
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
h2o_oracle_cache<Tensor, Storage> make_h2o_oracle_cache(const model_shape& shape, const cache_options& options,
                                                        index_t interval = h2o_interval, storage_binding<Tensor> binding = {}) {
    return make_all_anchor_cache<Tensor, Storage>(shape, options.with_method_defaults(0, h2o_recent_tokens(options)),
                                                  uniform_budget{}, heavy_hitter_monitor(interval), std::move(binding));
}

//! TOVA: each compressed head keeps the top-cap positions of the last prompt query's attention (and that token).
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
tova_cache<Tensor, Storage> make_tova_cache(const model_shape& shape, const cache_options& options,
                                            storage_binding<Tensor> binding = {}) {
    return make_all_anchor_cache<Tensor, Storage>(shape, options.with_method_defaults(0, tova_recent), uniform_budget{},
                                                  tova_monitor{}, std::move(binding));
}

//! SnapKV: each head keeps the observation window itself (the last `snapkv_window` prompt tokens) and the
//! top positions of its pooled window attention.
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
snapkv_cache<Tensor, Storage> make_snapkv_cache(const model_shape& shape, const cache_options& options,
                                                storage_binding<Tensor> binding = {}) {
    return make_all_anchor_cache<Tensor, Storage>(shape, options.with_method_defaults(0, snapkv_window), uniform_budget{},
                                                  static_monitor{}, std::move(binding));
}

//! PyramidKV: SnapKV's selection with per-layer budgets decreasing from the bottom layer to the top.
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
pyramidkv_cache<Tensor, Storage> make_pyramidkv_cache(const model_shape& shape, const cache_options& options,
                                                      double beta = pyramidkv_beta, storage_binding<Tensor> binding = {}) {
    return make_all_anchor_cache<Tensor, Storage>(shape, options.with_method_defaults(0, snapkv_window), pyramid_budget{beta},
                                                  static_monitor{}, std::move(binding));
}

//! Ada-KV (Ada-SnapKV): SnapKV's selection with each layer's budget shared by attention mass.
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
ada_kv_cache<Tensor, Storage> make_ada_kv_cache(const model_shape& shape, const cache_options& options,
                                                double alpha = ada_kv_alpha, storage_binding<Tensor> binding = {}) {
    return make_all_anchor_cache<Tensor, Storage>(shape, options.with_method_defaults(0, snapkv_window),
                                                  ada_kv_budget<uniform_budget>{alpha}, static_monitor{}, std::move(binding));
}

//! Quest: the pages of `page_tokens` tokens with the highest key-digest bound for the current query.
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
quest_cache<Tensor, Storage> make_quest_cache(const model_shape& shape, const cache_options& options,
                                              index_t page_tokens = quest_page_tokens, storage_binding<Tensor> binding = {}) {
    return make_all_anchor_cache<Tensor, Storage>(shape, options.with_method_defaults(0, 0), uniform_budget{},
                                                  quest_monitor(page_tokens), std::move(binding));
}

//! DuoAttention-style: heads below `tau_stable` stability keep the full KV ("retrieval heads"), the others
//! sink + recent ("streaming heads"). Without `profile` the roles are profiled online.
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
duo_attention_cache<Tensor, Storage> make_duo_attention_cache(const model_shape& shape, const cache_options& options,
                                                              std::optional<head_profile> profile = std::nullopt,
                                                              index_t sink = streaming_llm_sink,
                                                              double tau_stable = duo_tau_stable,
                                                              storage_binding<Tensor> binding = {}) {
    return duo_attention_cache<Tensor, Storage>(shape, options.with_method_defaults(0, 0), std::move(profile),
                                                overlap_star_classifier{tau_stable, 0.5, false}, uniform_budget{},
                                                streaming_monitor{sink}, std::move(binding));
}

//! HeteroCache with its defaults (the paper's method, with the prompt ends, the demotion floor and the budget
//! exponent above); without `profile` the roles are profiled online. `budget`: how the compressed heads share
//! their tokens (`drift_weighted_budget::exponent`; `drift_weighted_budget{}` is the paper's `p = 1`).
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
heterocache_cache<Tensor, Storage> make_heterocache_cache(const model_shape& shape, const cache_options& options,
                                                          std::optional<head_profile> profile = std::nullopt,
                                                          storage_binding<Tensor> binding = {},
                                                          drift_weighted_budget budget = heterocache_budget()) {
    const cache_options o = heterocache_options(options, profile);
    return heterocache_cache<Tensor, Storage>(shape, o, std::move(profile), {}, budget, {}, std::move(binding));
}

//! HeteroCache's roles and drift monitor with Ada-KV's split of each layer's budget (safeguard `alpha`).
template <KvTensor Tensor = strided_kv_tensor<float>, class Storage = default_storage<Tensor>>
heterocache_ada_kv_cache<Tensor, Storage> make_heterocache_ada_kv_cache(const model_shape& shape,
                                                                        const cache_options& options,
                                                                        std::optional<head_profile> profile = std::nullopt,
                                                                        double alpha = ada_kv_alpha,
                                                                        storage_binding<Tensor> binding = {}) {
    const cache_options o = heterocache_options(options, profile);
    return heterocache_ada_kv_cache<Tensor, Storage>(shape, o, std::move(profile), overlap_star_classifier{},
                                                     ada_kv_budget<drift_weighted_budget>{alpha, heterocache_budget()}, pivot_overlap_monitor{},
                                                     std::move(binding));
}

}  // namespace v1
}  // namespace heterocache
