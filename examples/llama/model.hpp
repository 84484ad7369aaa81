// Minimal llama-architecture forward pass (SmolLM2-135M and similar models)
// with float32 weights dequantized from a GGUF file.
//
// The KV cache is kept behind a small interface so that a compressed cache
// (HeteroCache) can later decide which tokens each KV head attends to:
//   * kv_store owns K and V as [layer][kv_head][slot][head_dim] float, keys
//     stored after RoPE;
//   * for every decode step and layer an attention_policy fills a CSR
//     kv_selection: rows = KV heads, indptr has n_kv_head + 1 entries and
//     indices are token slots of kv_store;
//   * attend_selected() computes the attention of one KV head's query group
//     over the selected slots, reading every K/V row once for the whole group.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "gguf.hpp"

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
  float rms_eps = 1e-5f;
  std::size_t group() const noexcept { return n_head / n_head_kv; }
};

llama_config read_llama_config(const gguf_file& f);

struct layer_weights {
  std::vector<float> attn_norm, wq, wk, wv, wo;  // W: [out][in] row-major
  std::vector<float> ffn_norm, w_gate, w_up, w_down;
};

class llama_model {
 public:
  explicit llama_model(const gguf_file& f);
  const llama_config& config() const noexcept { return cfg_; }
  const std::vector<float>& token_embd() const noexcept { return tok_embd_; }
  const std::vector<float>& output_norm() const noexcept { return out_norm_; }
  const std::vector<float>& output() const noexcept { return output_.empty() ? tok_embd_ : output_; }
  const layer_weights& layer(std::size_t i) const { return layers_.at(i); }
  std::size_t weight_bytes() const noexcept;

 private:
  llama_config cfg_;
  std::vector<float> tok_embd_, out_norm_, output_;
  std::vector<layer_weights> layers_;
};

// K/V tensors owned by the engine: [layer][kv_head][slot][head_dim].
class kv_store {
 public:
  kv_store(std::size_t n_layer, std::size_t n_head_kv, std::size_t capacity, std::size_t head_dim);
  std::size_t n_layer() const noexcept { return n_layer_; }
  std::size_t n_head_kv() const noexcept { return n_head_kv_; }
  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t head_dim() const noexcept { return head_dim_; }
  std::size_t head_stride() const noexcept { return capacity_ * head_dim_; }  // floats
  std::size_t layer_stride() const noexcept { return n_head_kv_ * head_stride(); }
  float* k(std::size_t layer, std::size_t head) noexcept { return k_.data() + layer * layer_stride() + head * head_stride(); }
  float* v(std::size_t layer, std::size_t head) noexcept { return v_.data() + layer * layer_stride() + head * head_stride(); }
  const float* k(std::size_t layer, std::size_t head) const noexcept { return k_.data() + layer * layer_stride() + head * head_stride(); }
  const float* v(std::size_t layer, std::size_t head) const noexcept { return v_.data() + layer * layer_stride() + head * head_stride(); }
  std::size_t bytes() const noexcept { return (k_.size() + v_.size()) * sizeof(float); }

 private:
  std::size_t n_layer_, n_head_kv_, capacity_, head_dim_;
  std::vector<float> k_, v_;
};

// CSR selection of one layer: row h (a KV head) attends to slots
// indices[indptr[h] .. indptr[h+1]).
struct kv_selection {
  std::vector<std::int32_t> indptr;
  std::vector<std::int32_t> indices;
  std::size_t rows() const noexcept { return indptr.empty() ? 0 : indptr.size() - 1; }
};

// Decides which cached tokens every KV head attends to during decode.
class attention_policy {
 public:
  virtual ~attention_policy() = default;
  virtual const char* name() const noexcept = 0;
  // Called once per decode step and layer, after the new token's K/V were
  // written at slot n_tokens - 1. Must fill `out` for all KV heads.
  virtual void select(std::size_t layer, std::size_t n_tokens, const kv_store& kv, kv_selection& out) = 0;
};

// Attends to every cached token (the uncompressed baseline).
class full_attention_policy final : public attention_policy {
 public:
  const char* name() const noexcept override { return "full"; }
  void select(std::size_t layer, std::size_t n_tokens, const kv_store& kv, kv_selection& out) override;
};

// Attention of the `group` query heads that share one KV head over the
// selected slots. q: [group][head_dim]; k, v: one head of kv_store
// ([capacity][head_dim]); out: [group][head_dim]. scratch is resized as needed.
// Contiguous runs of slots are processed with BLAS so that every K/V row is
// read once for the whole group.
void attend_selected(const float* q, std::size_t group, std::size_t head_dim, const float* k, const float* v,
                     std::span<const std::int32_t> slots, float scale, float* out, std::vector<float>& scratch);

struct eval_progress {
  std::size_t done = 0;
  std::size_t total = 0;
};

class llama_context {
 public:
  // capacity: the most tokens this context can hold. policy: nullptr = full.
  llama_context(const llama_model& m, std::size_t capacity, std::shared_ptr<attention_policy> policy = nullptr);

  // Appends tokens and returns the logits of the last one. More than one
  // token takes the prefill path (blocked BLAS, full causal attention); one
  // token takes the decode path (the attention policy's selection).
  const std::vector<float>& eval(std::span<const std::int32_t> tokens,
                                 const std::function<void(const eval_progress&)>& progress = {});
  // Same, but always through the decode path one token at a time.
  const std::vector<float>& eval_decode(std::span<const std::int32_t> tokens);

  std::size_t n_past() const noexcept { return n_past_; }
  std::size_t capacity() const noexcept { return kv_.capacity(); }
  void reset() noexcept { n_past_ = 0; }
  const std::vector<float>& logits() const noexcept { return logits_; }
  kv_store& kv() noexcept { return kv_; }
  const kv_store& kv() const noexcept { return kv_; }
  attention_policy& policy() noexcept { return *policy_; }

  std::size_t prefill_block = 128;

 private:
  void prefill_block_(const std::int32_t* tokens, std::size_t n, bool want_logits);
  void decode_one_(std::int32_t token);
  void check_tokens_(std::span<const std::int32_t> tokens) const;
  void rope_(float* x, std::size_t n_heads, std::size_t pos) const;

  const llama_model& m_;
  kv_store kv_;
  std::shared_ptr<attention_policy> policy_;
  std::size_t n_past_ = 0;
  std::vector<float> rope_cos_, rope_sin_, rope_freq_;
  std::vector<float> logits_;
  // scratch
  std::vector<float> x_, xn_, q_, k_, v_, att_, ff_a_, ff_b_, scores_;
  kv_selection sel_;
};

// Sets the BLAS thread count (OpenBLAS); returns false if not supported.
bool set_blas_threads(int n) noexcept;

// Sampling helpers.
std::int32_t argmax(std::span<const float> logits);
std::int32_t sample_temperature(std::span<const float> logits, float temperature, std::uint64_t& rng_state);

}  // namespace hcllama
