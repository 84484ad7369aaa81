#include "model.hpp"

#include "cache.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <variant>

namespace hcllama {

namespace {

[[noreturn]] void fail(const std::string& msg) { throw model_error("model: " + msg); }

// Fails unless `sel` has `rows` rows of `group` query heads over `head_dim`-wide slots.
void check_selection(const decode_cache& cache, const kv_selection& sel, std::size_t rows, std::size_t group,
                     std::size_t head_dim) {
  const bool fits = std::visit(
      [&](const auto& s) {
        return static_cast<std::size_t>(s.rows) == rows && static_cast<std::size_t>(s.group_size) == group &&
               static_cast<std::size_t>(s.head_dim) == head_dim;
      },
      sel);
  if (!fits) fail(std::string("cache '") + cache.name() + "' returned a selection of the wrong shape");
}

std::size_t meta_size(const gguf_file& f, const std::string& key) {
  const gguf_value* v = f.find(key);
  if (!v) fail("missing metadata key '" + key + "'");
  const auto x = v->as_u64();
  if (x == 0 || x > (1u << 24)) fail("metadata '" + key + "' has an implausible value " + std::to_string(x));
  return static_cast<std::size_t>(x);
}

// The tensor `name` of `f`, checked to have the shape `dims` (dims[0] innermost).
const gguf_tensor_info& checked_tensor(const gguf_file& f, const std::string& name,
                                       const std::vector<std::uint64_t>& dims) {
  const gguf_tensor_info& t = f.tensor(name);
  if (t.dims != dims) {
    std::string want, got;
    for (auto d : dims) want += std::to_string(d) + " ";
    for (auto d : t.dims) got += std::to_string(d) + " ";
    fail("tensor '" + name + "' has shape [ " + got + "], expected [ " + want + "]");
  }
  return t;
}

// A norm vector, widened to float.
std::vector<float> load_vector(const gguf_file& f, const std::string& name, std::uint64_t length) {
  return f.to_float(checked_tensor(f, name, {length}));
}

// A weight matrix [rows][cols], in place in the file's bytes.
quantized_matrix load_matrix(const gguf_file& f, const std::string& name, std::uint64_t cols, std::uint64_t rows) {
  return quantized_matrix::from_gguf(f, checked_tensor(f, name, {cols, rows}));
}

void rmsnorm(const float* x, const float* w, float* y, std::size_t n, float eps) {
  double ss = 0;
  for (std::size_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float r = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (std::size_t i = 0; i < n; ++i) y[i] = x[i] * r * w[i];
}

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

}  // namespace

llama_config read_llama_config(const gguf_file& f) {
  const std::string arch = f.get_string("general.architecture", "");
  if (arch != "llama") fail("unsupported architecture '" + arch + "' (only 'llama')");
  llama_config c;
  c.n_layer = meta_size(f, arch + ".block_count");
  c.n_embd = meta_size(f, arch + ".embedding_length");
  c.n_ff = meta_size(f, arch + ".feed_forward_length");
  c.n_head = meta_size(f, arch + ".attention.head_count");
  c.n_head_kv = f.find(arch + ".attention.head_count_kv") ? meta_size(f, arch + ".attention.head_count_kv") : c.n_head;
  c.n_ctx_train = f.find(arch + ".context_length") ? meta_size(f, arch + ".context_length") : 2048;
  if (c.n_embd % c.n_head != 0) fail("embedding length is not a multiple of the head count");
  c.head_dim = f.find(arch + ".attention.key_length") ? meta_size(f, arch + ".attention.key_length") : c.n_embd / c.n_head;
  if (c.head_dim * c.n_head != c.n_embd) fail("head_dim * n_head != n_embd is not supported");
  if (c.n_head % c.n_head_kv != 0) fail("head count is not a multiple of the KV head count");
  c.rope_dim = f.find(arch + ".rope.dimension_count") ? meta_size(f, arch + ".rope.dimension_count") : c.head_dim;
  if (c.rope_dim > c.head_dim || c.rope_dim % 2 != 0) fail("invalid rope dimension count");
  c.rope_theta = static_cast<float>(f.get_f64(arch + ".rope.freq_base", 10000.0));
  c.rms_eps = static_cast<float>(f.get_f64(arch + ".attention.layer_norm_rms_epsilon", 1e-5));
  const auto& emb = f.tensor("token_embd.weight");
  if (emb.dims.size() != 2 || emb.dims[0] != c.n_embd) fail("token_embd.weight has an unexpected shape");
  c.n_vocab = static_cast<std::size_t>(emb.dims[1]);
  return c;
}

llama_model::llama_model(const gguf_file& f) : cfg_(read_llama_config(f)) {
  const std::uint64_t E = cfg_.n_embd, F = cfg_.n_ff, V = cfg_.n_vocab;
  const std::uint64_t Q = cfg_.n_head * cfg_.head_dim, KV = cfg_.n_head_kv * cfg_.head_dim;
  tok_embd_ = load_matrix(f, "token_embd.weight", E, V);
  out_norm_ = load_vector(f, "output_norm.weight", E);
  if (f.find_tensor("output.weight")) output_ = load_matrix(f, "output.weight", E, V);
  layers_.resize(cfg_.n_layer);
  for (std::size_t i = 0; i < cfg_.n_layer; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    auto& L = layers_[i];
    L.attn_norm = load_vector(f, p + "attn_norm.weight", E);
    L.wq = load_matrix(f, p + "attn_q.weight", E, Q);
    L.wk = load_matrix(f, p + "attn_k.weight", E, KV);
    L.wv = load_matrix(f, p + "attn_v.weight", E, KV);
    L.wo = load_matrix(f, p + "attn_output.weight", Q, E);
    L.ffn_norm = load_vector(f, p + "ffn_norm.weight", E);
    L.w_gate = load_matrix(f, p + "ffn_gate.weight", E, F);
    L.w_up = load_matrix(f, p + "ffn_up.weight", E, F);
    L.w_down = load_matrix(f, p + "ffn_down.weight", F, E);
  }
}

void llama_model::set_rope_scale(double factor) {
  if (!(factor >= 1.0 && factor <= kMaxRopeScale))
    fail("rope scale " + std::to_string(factor) + " out of range [1, " + std::to_string(static_cast<int>(kMaxRopeScale)) +
         "] (1: the file's own positions)");
  cfg_.rope_scale = static_cast<float>(factor);
}

namespace {
// Bytes of one layer's weights: its norms and matrices.
std::size_t layer_bytes(const layer_weights& L) noexcept {
  return (L.attn_norm.size() + L.ffn_norm.size()) * sizeof(float) + L.wq.bytes() + L.wk.bytes() + L.wv.bytes() +
         L.wo.bytes() + L.w_gate.bytes() + L.w_up.bytes() + L.w_down.bytes();
}
}  // namespace

std::size_t llama_model::weight_bytes() const noexcept {
  std::size_t n = tok_embd_.bytes() + (output_ ? output_->bytes() : 0) + out_norm_.size() * sizeof(float);
  for (const auto& L : layers_) n += layer_bytes(L);
  return n;
}

std::size_t llama_model::decode_weight_bytes() const noexcept {
  std::size_t n = output().bytes() + out_norm_.size() * sizeof(float);
  if (output_) n += tok_embd_.bytes() / std::max<std::size_t>(cfg_.n_vocab, 1);
  for (const auto& L : layers_) n += layer_bytes(L);
  return n;
}

kv_store::kv_store(std::size_t n_layer, std::size_t n_head_kv, std::size_t capacity, std::size_t head_dim)
    : n_layer_(n_layer), n_head_kv_(n_head_kv), capacity_(capacity), head_dim_(head_dim),
      k_(n_layer * n_head_kv * capacity * head_dim), v_(n_layer * n_head_kv * capacity * head_dim) {}

void kv_store::write(std::size_t layer, std::size_t head, std::size_t token, const float* key,
                     const float* value) noexcept {
  const auto d = static_cast<heterocache::index_t>(head_dim_);
  heterocache::from_floats(key, k(layer, head) + token * head_dim_, d);
  heterocache::from_floats(value, v(layer, head) + token * head_dim_, d);
}

llama_context::llama_context(const llama_model& m, std::size_t capacity, cache_factory factory, std::size_t threads)
    : m_(m), pool_(static_cast<heterocache::index_t>(std::max<std::size_t>(1, threads))), weights_(pool_), kv_(m.config().n_layer, m.config().n_head_kv, capacity, m.config().head_dim),
      factory_(factory ? std::move(factory) : make_cache_factory(m.config(), cache_config{})), attention_(pool_),
      prefill_attention_(pool_) {
  if (capacity == 0) fail("context capacity must be positive");
  const auto& c = m_.config();
  const std::size_t half = c.rope_dim / 2;
  rope_freq_.resize(half);
  for (std::size_t i = 0; i < half; ++i)
    rope_freq_[i] = static_cast<float>(std::pow(static_cast<double>(c.rope_theta), -2.0 * static_cast<double>(i) / static_cast<double>(c.rope_dim)));
  rope_cos_.resize(capacity * half);
  rope_sin_.resize(capacity * half);
  for (std::size_t p = 0; p < capacity; ++p)
    for (std::size_t i = 0; i < half; ++i) {
      const double a = static_cast<double>(p) / static_cast<double>(c.rope_scale) * static_cast<double>(rope_freq_[i]);
      rope_cos_[p * half + i] = static_cast<float>(std::cos(a));
      rope_sin_[p * half + i] = static_cast<float>(std::sin(a));
    }
  logits_.resize(c.n_vocab);
}

engine_kv_tensor llama_context::tensor() const {
  // kv_store is [layer][kv_head][token][head_dim], one sequence
  return heterocache::make_head_major_tensor(kv_.k(0, 0), kv_.v(0, 0), 1, static_cast<heterocache::index_t>(kv_.n_head_kv()),
                                             static_cast<heterocache::index_t>(kv_.capacity()),
                                             static_cast<heterocache::index_t>(kv_.head_dim()));
}

// GGUF llama models store Q/K rows permuted so that RoPE rotates adjacent
// pairs (x[2i], x[2i+1]) by pos * theta^(-2i/d).
void llama_context::rope_(float* x, std::size_t n_heads, std::size_t pos) const {
  const auto& c = m_.config();
  const std::size_t half = c.rope_dim / 2;
  const float* cs = rope_cos_.data() + pos * half;
  const float* sn = rope_sin_.data() + pos * half;
  for (std::size_t h = 0; h < n_heads; ++h) {
    float* xh = x + h * c.head_dim;
    for (std::size_t i = 0; i < half; ++i) {
      const float a = xh[2 * i], b = xh[2 * i + 1];
      xh[2 * i] = a * cs[i] - b * sn[i];
      xh[2 * i + 1] = a * sn[i] + b * cs[i];
    }
  }
}

void llama_context::check_tokens_(std::span<const std::int32_t> tokens) const {
  if (n_past_ + tokens.size() > kv_.capacity())
    fail("context is full: " + std::to_string(n_past_) + " + " + std::to_string(tokens.size()) + " tokens exceed the capacity " +
         std::to_string(kv_.capacity()));
  for (auto t : tokens)
    if (t < 0 || static_cast<std::size_t>(t) >= m_.config().n_vocab) fail("token id " + std::to_string(t) + " out of range");
}

const std::vector<float>& llama_context::eval(std::span<const std::int32_t> tokens,
                                              const std::function<void(const eval_progress&)>& progress) {
  if (tokens.empty()) fail("eval() needs at least one token");
  check_tokens_(tokens);
  if (!cache_) {
    prefill_(tokens, progress);
    return logits_;
  }
  for (auto t : tokens) decode_one_(t);
  return logits_;
}

void llama_context::prefill_(std::span<const std::int32_t> tokens, const std::function<void(const eval_progress&)>& progress) {
  const auto& c = m_.config();
  const std::size_t T = tokens.size(), QD = c.n_head * c.head_dim;
  window_count_ = std::max<std::size_t>(1, std::min(window, T));
  window_q_.assign(c.n_layer * window_count_ * QD, 0.0f);
  const std::size_t B = std::max<std::size_t>(1, prefill_block);
  for (std::size_t i = 0; i < T; i += B) {
    const std::size_t n = std::min(B, T - i);
    prefill_block_(tokens.data() + i, n, i + n == T, T);
    if (progress) progress({i + n, T});
  }
  prompt_tokens_ = T;
  cache_ = factory_(T, kv_.capacity() - T, tensor());
  prefill_cache(*cache_, heterocache::host_queue(pool_));
  if (keep_prefill_state) prompt_logits_ = logits_;
  else std::vector<float>().swap(window_q_);
}

void llama_context::restart_decode(cache_factory factory) {
  if (prompt_tokens_ == 0 || window_q_.empty()) fail("restart_decode needs a prompt prefilled with keep_prefill_state");
  cache_.reset();  // the old cache's hot tier goes before the new one is built
  factory_ = factory ? std::move(factory) : make_cache_factory(m_.config(), cache_config{});
  n_past_ = prompt_tokens_;
  cache_ = factory_(prompt_tokens_, kv_.capacity() - prompt_tokens_, tensor());
  prefill_cache(*cache_, heterocache::host_queue(pool_));
  logits_ = prompt_logits_;
}

void llama_context::prefill_cache(decode_cache& cache, heterocache::host_queue queue) const {
  const auto& c = m_.config();
  const std::size_t QD = c.n_head * c.head_dim;
  if (prompt_tokens_ == 0 || window_q_.empty()) fail("prefill_cache needs a prompt prefilled with keep_prefill_state");
  const engine_kv_tensor kv = tensor();
  cache.begin_sequence(prompt_tokens_);
  for (std::size_t l = 0; l < c.n_layer; ++l) {
    const heterocache::query_rows w{window_q_.data() + l * window_count_ * QD, static_cast<heterocache::index_t>(window_count_),
                                    static_cast<heterocache::index_t>(QD), static_cast<heterocache::index_t>(c.head_dim), 0};
    cache.prefill(l, kv, w, queue);
  }
}

void llama_context::decode_batch(std::span<decode_cache* const> caches, std::span<const std::int32_t> tokens,
                                 std::size_t step, std::size_t slot_stride, float* logits) {
  const auto& c = m_.config();
  const std::size_t B = caches.size();
  if (B == 0 || tokens.size() != B) fail("decode_batch: one token per stream");
  if (prompt_tokens_ == 0 || window_q_.empty()) fail("decode_batch needs a prompt prefilled with keep_prefill_state");
  if (step >= slot_stride || prompt_tokens_ + (B - 1) * slot_stride + step >= kv_.capacity())
    fail("decode_batch: the streams' decode slots exceed the context capacity");
  for (auto t : tokens)
    if (t < 0 || static_cast<std::size_t>(t) >= c.n_vocab) fail("token id " + std::to_string(t) + " out of range");
  const std::size_t E = c.n_embd, F = c.n_ff, hd = c.head_dim, H = c.n_head, Hkv = c.n_head_kv, G = c.group();
  const std::size_t QD = H * hd, KD = Hkv * hd;
  const std::size_t pos = prompt_tokens_ + step;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  x_.resize(B * E);
  xn_.resize(B * E);
  q_.resize(B * QD);
  k_.resize(B * KD);
  v_.resize(B * KD);
  att_.resize(B * QD);
  ff_a_.resize(B * F);
  ff_b_.resize(B * F);
  for (std::size_t b = 0; b < B; ++b) m_.token_embd().dequantize_row(static_cast<std::size_t>(tokens[b]), &x_[b * E]);
  const engine_kv_tensor kv = tensor();
  for (std::size_t l = 0; l < c.n_layer; ++l) {
    const auto& L = m_.layer(l);
    for (std::size_t b = 0; b < B; ++b) rmsnorm(&x_[b * E], L.attn_norm.data(), &xn_[b * E], E, c.rms_eps);
    weights_.multiply({{&L.wq, q_.data()}, {&L.wk, k_.data()}, {&L.wv, v_.data()}}, xn_.data(), B);
    for (std::size_t b = 0; b < B; ++b) {
      rope_(&q_[b * QD], H, pos);
      rope_(&k_[b * KD], Hkv, pos);
      const std::size_t slot = prompt_tokens_ + b * slot_stride + step;
      for (std::size_t h = 0; h < Hkv; ++h) {
        kv_.write(l, h, slot, &k_[b * KD + h * hd], &v_[b * KD + h * hd]);
      }
      decode_cache& cache = *caches[b];
      const kv_selection sel = cache.begin_layer(l, kv, slot, &q_[b * QD], hd);
      check_selection(cache, sel, Hkv, G, hd);
      attention_.run(sel, &q_[b * QD], &att_[b * QD], scale);
      cache.end_layer(l, &q_[b * QD], hd);
    }
    weights_.matmat(L.wo, att_.data(), B, x_.data(), 1.0f);
    for (std::size_t b = 0; b < B; ++b) rmsnorm(&x_[b * E], L.ffn_norm.data(), &xn_[b * E], E, c.rms_eps);
    weights_.multiply({{&L.w_gate, ff_a_.data()}, {&L.w_up, ff_b_.data()}}, xn_.data(), B);
    for (std::size_t i = 0; i < B * F; ++i) ff_a_[i] = silu(ff_a_[i]) * ff_b_[i];
    weights_.matmat(L.w_down, ff_a_.data(), B, x_.data(), 1.0f);
  }
  for (std::size_t b = 0; b < B; ++b) rmsnorm(&x_[b * E], m_.output_norm().data(), &xn_[b * E], E, c.rms_eps);
  weights_.matmat(m_.output(), xn_.data(), B, logits);
}

void llama_context::prefill_block_(const std::int32_t* tokens, std::size_t n, bool want_logits,
                                   std::size_t prompt_tokens) {
  const auto& c = m_.config();
  const std::size_t E = c.n_embd, F = c.n_ff, hd = c.head_dim, H = c.n_head, Hkv = c.n_head_kv, G = c.group();
  const std::size_t QD = H * hd, KD = Hkv * hd;
  const std::size_t p0 = n_past_;
  x_.resize(n * E);
  xn_.resize(n * E);
  q_.resize(n * QD);
  k_.resize(n * KD);
  v_.resize(n * KD);
  att_.resize(n * QD);
  ff_a_.resize(n * F);
  ff_b_.resize(n * F);

  for (std::size_t t = 0; t < n; ++t) m_.token_embd().dequantize_row(static_cast<std::size_t>(tokens[t]), &x_[t * E]);

  for (std::size_t l = 0; l < c.n_layer; ++l) {
    const auto& L = m_.layer(l);
    for (std::size_t t = 0; t < n; ++t) rmsnorm(&x_[t * E], L.attn_norm.data(), &xn_[t * E], E, c.rms_eps);
    weights_.multiply({{&L.wq, q_.data()}, {&L.wk, k_.data()}, {&L.wv, v_.data()}}, xn_.data(), n);
    for (std::size_t t = 0; t < n; ++t) {
      rope_(&q_[t * QD], H, p0 + t);
      rope_(&k_[t * KD], Hkv, p0 + t);
      if (const std::size_t pos = p0 + t, first = prompt_tokens - window_count_; pos >= first)
        std::memcpy(&window_q_[(l * window_count_ + (pos - first)) * QD], &q_[t * QD], QD * sizeof(float));
      for (std::size_t h = 0; h < Hkv; ++h) {
        kv_.write(l, h, p0 + t, &k_[t * KD + h * hd], &v_[t * KD + h * hd]);
      }
    }
    // causal attention of the block's queries over positions 0 .. p0 + n - 1, tiled (prefill_attention.hpp)
    prefill_attention_.run(prefill_block_shape{Hkv, G, hd, p0, n},
                           sequence_kv<kv_element>{kv_.k(l, 0), kv_.v(l, 0), kv_.head_stride()}, q_.data(), att_.data());
    weights_.matmat(L.wo, att_.data(), n, x_.data(), 1.0f);

    for (std::size_t t = 0; t < n; ++t) rmsnorm(&x_[t * E], L.ffn_norm.data(), &xn_[t * E], E, c.rms_eps);
    weights_.multiply({{&L.w_gate, ff_a_.data()}, {&L.w_up, ff_b_.data()}}, xn_.data(), n);
    for (std::size_t i = 0; i < n * F; ++i) ff_a_[i] = silu(ff_a_[i]) * ff_b_[i];
    weights_.matmat(L.w_down, ff_a_.data(), n, x_.data(), 1.0f);
  }
  n_past_ += n;
  if (want_logits) {
    rmsnorm(&x_[(n - 1) * E], m_.output_norm().data(), xn_.data(), E, c.rms_eps);
    weights_.matvec(m_.output(), xn_.data(), logits_.data());
  }
}

void llama_context::decode_one_(std::int32_t token) {
  const auto& c = m_.config();
  const std::size_t E = c.n_embd, F = c.n_ff, hd = c.head_dim, H = c.n_head, Hkv = c.n_head_kv, G = c.group();
  const std::size_t QD = H * hd, KD = Hkv * hd;
  const std::size_t pos = n_past_;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  x_.resize(E);
  xn_.resize(E);
  q_.resize(QD);
  k_.resize(KD);
  v_.resize(KD);
  att_.resize(QD);
  ff_a_.resize(F);
  ff_b_.resize(F);
  m_.token_embd().dequantize_row(static_cast<std::size_t>(token), x_.data());
  const engine_kv_tensor kv = tensor();
  for (std::size_t l = 0; l < c.n_layer; ++l) {
    const auto& L = m_.layer(l);
    rmsnorm(x_.data(), L.attn_norm.data(), xn_.data(), E, c.rms_eps);
    weights_.multiply({{&L.wq, q_.data()}, {&L.wk, k_.data()}, {&L.wv, v_.data()}}, xn_.data(), 1);
    rope_(q_.data(), H, pos);
    rope_(k_.data(), Hkv, pos);
    for (std::size_t h = 0; h < Hkv; ++h) {
      kv_.write(l, h, pos, &k_[h * hd], &v_[h * hd]);
    }
    const kv_selection sel = cache_->begin_layer(l, kv, pos, q_.data(), hd);
    check_selection(*cache_, sel, Hkv, G, hd);
    attention_.run(sel, q_.data(), att_.data(), scale);
    cache_->end_layer(l, q_.data(), hd);
    weights_.matvec(L.wo, att_.data(), x_.data(), 1.0f);
    rmsnorm(x_.data(), L.ffn_norm.data(), xn_.data(), E, c.rms_eps);
    weights_.multiply({{&L.w_gate, ff_a_.data()}, {&L.w_up, ff_b_.data()}}, xn_.data(), 1);
    for (std::size_t i = 0; i < F; ++i) ff_a_[i] = silu(ff_a_[i]) * ff_b_[i];
    weights_.matvec(L.w_down, ff_a_.data(), x_.data(), 1.0f);
  }
  n_past_ += 1;
  rmsnorm(x_.data(), m_.output_norm().data(), xn_.data(), E, c.rms_eps);
  weights_.matvec(m_.output(), xn_.data(), logits_.data());
}

std::int32_t argmax(std::span<const float> logits) {
  if (logits.empty()) fail("argmax of empty logits");
  return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

std::int32_t sample_temperature(std::span<const float> logits, float temperature, std::uint64_t& rng_state) {
  if (temperature <= 0.0f) return argmax(logits);
  const float mx = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    p[i] = std::exp(static_cast<double>(logits[i] - mx) / temperature);
    sum += p[i];
  }
  // splitmix64
  rng_state += 0x9E3779B97F4A7C15ull;
  std::uint64_t z = rng_state;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  const double u = static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0) * sum;
  double acc = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    acc += p[i];
    if (u < acc) return static_cast<std::int32_t>(i);
  }
  return argmax(logits);
}

}  // namespace hcllama
