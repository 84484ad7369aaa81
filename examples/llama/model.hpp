// Minimal llama-architecture forward pass (SmolLM2-135M and similar models)
// on the weights as the GGUF file stores them (quantized_matrix: the blocks in
// place in the file's read-only mapping, multiplied by matrix_multiplier with
// fp32 activations; only the norm vectors are widened to float).
//
// The engine owns K and V as [layer][kv_head][token][head_dim] fp16 (kv_store,
// keys after RoPE). The first eval() is the prompt prefill (blocks of tokens
// through the weights' matrix-matrix kernels, causal attention in tiles with an
// online softmax, prefill_attention.hpp); it keeps the last `window` queries of every layer, then
// builds the decode cache (cache_factory) and prefills it layer by layer with
// that observation window. Each decode step, per layer: write K/V,
// begin_layer (appends the token, returns the paged selection), attention over
// the selection (selection_attention, GQA-shared reads of the cache's hot
// pages), end_layer (profiling and drift monitoring from the captured scores).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention.hpp"
#include "gguf.hpp"
#include "prefill_attention.hpp"
#include "quantized_matrix.hpp"
#include "heterocache/algorithm/pooled_attention.hpp"
#include "heterocache/profile/head_profile.hpp"
#include "heterocache/queue/host_queue.hpp"
#include "heterocache/storage/storage_plan.hpp"
#include "heterocache/tensor/kv_tensor.hpp"

namespace hcllama {

struct model_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct llama_config {
  std::size_t n_layer = 0;
  std::size_t n_embd = 0;
  std::size_t n_ff = 0;
  std::size_t n_head = 0;
  std::size_t n_head_kv = 0;
  std::size_t head_dim = 0;
  std::size_t n_vocab = 0;
  std::size_t n_ctx_train = 0;
  std::size_t rope_dim = 0;
  float rope_theta = 10000.0f;
  // Linear RoPE scaling (position interpolation): position p is rotated by the angles of p / rope_scale. 1 (the
  // file's own positions) unless set_rope_scale() asks for more.
  float rope_scale = 1.0f;
  float rms_eps = 1e-5f;
  std::size_t group() const noexcept { return n_head / n_head_kv; }
};

llama_config read_llama_config(const gguf_file& f);

struct layer_weights {
  std::vector<float> attn_norm, ffn_norm;                 // [n_embd], widened to float
  quantized_matrix wq, wk, wv, wo, w_gate, w_up, w_down;  // [out][in], as the file stores them
};

// The weights of a GGUF file. The matrices point into the file's bytes and keep them alive (a share of
// gguf_file's mapping), so the model may outlive the gguf_file; one built from gguf_file::view_bytes needs
// the caller's buffer for as long as the model lives.
class llama_model {
 public:
  explicit llama_model(const gguf_file& f);
  const llama_config& config() const noexcept { return cfg_; }
  // Linear RoPE scaling by `factor` (position interpolation, llama.cpp's rope_freq_scale = 1 / factor): a context
  // of factor x the training context spans the angles the model was trained on. Set it before creating a
  // llama_context. Throws model_error unless factor is finite and in [1, kMaxRopeScale].
  void set_rope_scale(double factor);
  static constexpr double kMaxRopeScale = 64.0;  // the largest linear RoPE scale set_rope_scale() takes
  const quantized_matrix& token_embd() const noexcept { return tok_embd_; }  // [n_vocab][n_embd]
  const std::vector<float>& output_norm() const noexcept { return out_norm_; }
  // The output projection: output.weight, or the token embedding when the file ties them.
  const quantized_matrix& output() const noexcept { return output_ ? *output_ : tok_embd_; }
  const layer_weights& layer(std::size_t i) const { return layers_.at(i); }
  // Bytes of weights the model holds: the matrices' blocks and the norm vectors.
  std::size_t weight_bytes() const noexcept;
  // Bytes of weights one decode step reads: every layer's matrices and norms, the output projection and the
  // final norm, and one row of the token embedding when the output projection is not that embedding.
  std::size_t decode_weight_bytes() const noexcept;

 private:
  llama_config cfg_;
  quantized_matrix tok_embd_;
  std::optional<quantized_matrix> output_;
  std::vector<float> out_norm_;
  std::vector<layer_weights> layers_;
};

// The element of the engine's own K/V: fp16 (half of fp32's bytes, 10 mantissa bits; keys and values are
// computed in fp32 and rounded as they are written). Every read widens it to fp32.
using kv_element = heterocache::fp16_t;

// K/V tensors owned by the engine: [layer][kv_head][slot][head_dim] of kv_element.
class kv_store {
 public:
  kv_store(std::size_t n_layer, std::size_t n_head_kv, std::size_t capacity, std::size_t head_dim);
  std::size_t n_layer() const noexcept { return n_layer_; }
  std::size_t n_head_kv() const noexcept { return n_head_kv_; }
  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t head_dim() const noexcept { return head_dim_; }
  std::size_t head_stride() const noexcept { return capacity_ * head_dim_; }  // elements
  std::size_t layer_stride() const noexcept { return n_head_kv_ * head_stride(); }
  kv_element* k(std::size_t layer, std::size_t head) noexcept { return k_.data() + layer * layer_stride() + head * head_stride(); }
  kv_element* v(std::size_t layer, std::size_t head) noexcept { return v_.data() + layer * layer_stride() + head * head_stride(); }
  const kv_element* k(std::size_t layer, std::size_t head) const noexcept { return k_.data() + layer * layer_stride() + head * head_stride(); }
  const kv_element* v(std::size_t layer, std::size_t head) const noexcept { return v_.data() + layer * layer_stride() + head * head_stride(); }
  // Token `token` of KV head `head` of `layer`: its key and value (head_dim floats each), rounded to kv_element.
  void write(std::size_t layer, std::size_t head, std::size_t token, const float* key, const float* value) noexcept;
  std::size_t bytes() const noexcept { return (k_.size() + v_.size()) * sizeof(float); }

 private:
  std::size_t n_layer_, n_head_kv_, capacity_, head_dim_;
  std::vector<kv_element> k_, v_;
};

// kv_store as the library sees it (llama_context::tensor()): one sequence, token index == position.
using engine_kv_tensor = heterocache::strided_kv_tensor<kv_element>;

// The decode-time KV cache the engine attends through: a heterocache::kv_cache
// (or full_kv_cache) of one sequence behind a small virtual interface (see
// cache.hpp for the implementations). The engine keeps its own K/V in kv_store
// and describes it with engine_kv_tensor; the cache hands back, per layer and
// step, a paged selection of its hot pages (rows = KV heads), fp32 or 16-bit
// by the cache's storage.
class decode_cache {
 public:
  virtual ~decode_cache() = default;
  virtual const char* name() const noexcept = 0;
  // Starts the sequence: a prompt of `prompt_tokens` tokens, prefilled next on every layer.
  virtual void begin_sequence(std::size_t prompt_tokens) = 0;
  // Stores the prompt of `layer` (tokens [0, prompt_tokens) of kv), scored by the observation window.
  virtual void prefill(std::size_t layer, const engine_kv_tensor& kv, const heterocache::query_rows& window,
                       heterocache::host_queue queue) = 0;
  // Appends the decode token the engine wrote at `token` of kv to `layer` and returns the selection to attend
  // (valid until end_layer). `query` is this step's decode query of the layer ([query_head][head_dim], heads
  // `head_stride` floats apart): a policy that ranks with the current query (Quest) chooses this step's tokens
  // with it.
  virtual kv_selection begin_layer(std::size_t layer, const engine_kv_tensor& kv, std::size_t token,
                                   const float* query, std::size_t head_stride) = 0;
  // The decode query of `layer` ([query_head][head_dim], heads `head_stride` floats apart), after
  // selection_attention ran over begin_layer's selection (which wrote and stamped the scores its captures ask
  // for).
  virtual void end_layer(std::size_t layer, const float* query, std::size_t head_stride) = 0;
  virtual std::uint64_t resident_bytes() const = 0;
  // Tokens resident in the hot tier over all layers and KV heads (full heads' whole prompt included).
  virtual std::uint64_t resident_tokens() const = 0;
  // The head profile in use (empty while online profiling is still observing).
  virtual const std::optional<heterocache::head_profile>& profile() const = 0;
  // Bytes the storage tier has moved so far (into the hot tier, into the cold tier, cold -> hot).
  virtual heterocache::transfer_counters counters() const = 0;
};

// Builds the cache once the prompt length is known. `engine_kv` is the context's K/V: a cache may read its
// cold tier from it in place of a copy (the context writes decode tokens at their positions).
using cache_factory = std::function<std::unique_ptr<decode_cache>(std::size_t prompt_tokens, std::size_t max_new_tokens,
                                                                  const engine_kv_tensor& engine_kv)>;

struct eval_progress {
  std::size_t done = 0;
  std::size_t total = 0;
};

class llama_context {
 public:
  // capacity: the most tokens this context can hold. factory: builds the
  // decode cache at the prompt prefill (nullptr = heterocache::full_kv_cache).
  // threads: the threads of the weights' matrix products and of the prefill and
  // decode attention (one pool, the caller included).
  llama_context(const llama_model& m, std::size_t capacity, cache_factory factory = nullptr, std::size_t threads = 1);

  // Appends tokens and returns the logits of the last one. The first call is
  // the prompt prefill (blocks of tokens, full causal attention, then the decode
  // cache is built and prefilled); later calls go through the decode path one
  // token at a time (attention over the cache's selection).
  const std::vector<float>& eval(std::span<const std::int32_t> tokens,
                                 const std::function<void(const eval_progress&)>& progress = {});

  std::size_t n_past() const noexcept { return n_past_; }
  std::size_t capacity() const noexcept { return kv_.capacity(); }
  const std::vector<float>& logits() const noexcept { return logits_; }
  kv_store& kv() noexcept { return kv_; }
  const kv_store& kv() const noexcept { return kv_; }
  // The decode cache (null before the prompt prefill).
  decode_cache* cache() noexcept { return cache_.get(); }
  const decode_cache* cache() const noexcept { return cache_.get(); }
  engine_kv_tensor tensor() const;

  // After the prompt prefill, the prompt length and its last-token logits (see keep_prefill_state).
  std::size_t prompt_tokens() const noexcept { return prompt_tokens_; }
  const std::vector<float>& prompt_logits() const noexcept { return prompt_logits_; }

  // Builds nothing: starts the sequence of `cache` (any policy, built for prompt_tokens()) and prefills it
  // from the prompt K/V and the observation window kept at the prompt prefill. Needs keep_prefill_state. On
  // `queue` (by default the calling thread, not the context's pool, so that several caches may be prefilled on
  // threads of their own beside a decode, as examples/eval does); the context's own prefill and
  // restart_decode prefill their cache over the context's pool.
  void prefill_cache(decode_cache& cache, heterocache::host_queue queue = {}) const;
  // Starts the decode over from the end of the prompt with a new cache (one prompt prefill, several caches
  // decoded one after the other): drops the current cache, builds one with `factory` (nullptr: the full
  // cache) and prefills it with prefill_cache; n_past() is prompt_tokens() again and logits() the prompt's.
  // The next decode tokens overwrite the earlier ones' K/V. Needs keep_prefill_state.
  void restart_decode(cache_factory factory);

  // One decode step of several independent streams that share this context's prompt (one prompt prefill, many
  // policies): stream b attends through caches[b] (prefilled with prefill_cache), takes tokens[b] at position
  // prompt_tokens() + step and writes its K/V at slot prompt_tokens() + b * slot_stride + step of kv(). The
  // weights are read once for all streams (matrix-matrix products), and each stream's numbers are the ones it
  // would get alone (matrix_multiplier computes every output the same way). logits: [streams][n_vocab]. Does
  // not touch n_past() or cache(). Needs keep_prefill_state. A stream's decode token is not at its position in
  // kv(), so its cache must keep its own cold tier (make_decode_cache without a cold alias).
  void decode_batch(std::span<decode_cache* const> caches, std::span<const std::int32_t> tokens, std::size_t step,
                    std::size_t slot_stride, float* logits);

  // How the weights' products take their inputs (matrix_multiplier; fp32 by default).
  activation_format activations() const noexcept { return weights_.activations(); }
  void set_activations(activation_format f) noexcept { weights_.set_activations(f); }

  bool keep_prefill_state = false;  // keep the observation window and prompt logits after the prompt prefill
  std::size_t prefill_block = 128;
  std::size_t window = 32;     // observation window (last prompt queries per layer)

 private:
  void prefill_(std::span<const std::int32_t> tokens, const std::function<void(const eval_progress&)>& progress);
  void prefill_block_(const std::int32_t* tokens, std::size_t n, bool want_logits, std::size_t prompt_tokens);
  void decode_one_(std::int32_t token);
  void check_tokens_(std::span<const std::int32_t> tokens) const;
  void rope_(float* x, std::size_t n_heads, std::size_t pos) const;

  const llama_model& m_;
  // One pool for every kernel (the weights' products, the prefill and decode attention: they never overlap),
  // so that its spinning workers never compete with another pool's.
  heterocache::host_thread_pool pool_;
  matrix_multiplier weights_;
  kv_store kv_;
  cache_factory factory_;
  std::unique_ptr<decode_cache> cache_;
  selection_attention attention_;
  prefill_attention prefill_attention_;
  std::size_t n_past_ = 0;
  std::size_t window_count_ = 0;
  std::size_t prompt_tokens_ = 0;
  std::vector<float> prompt_logits_;
  std::vector<float> window_q_;  // [layer][window][n_head * head_dim]
  std::vector<float> rope_cos_, rope_sin_, rope_freq_;
  std::vector<float> logits_;
  // scratch
  std::vector<float> x_, xn_, q_, k_, v_, att_, ff_a_, ff_b_;
};

// Sampling helpers.
std::int32_t argmax(std::span<const float> logits);
std::int32_t sample_temperature(std::span<const float> logits, float temperature, std::uint64_t& rng_state);

}  // namespace hcllama
