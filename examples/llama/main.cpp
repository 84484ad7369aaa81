// heterocache-llama: a minimal llama-architecture inference engine
// (SmolLM2-135M-Instruct) that attends through a HeteroCache kv_cache.
//
//   heterocache-llama --model M.gguf --prompt "What is 2+2?"
//   heterocache-llama --model M.gguf --passkey-demo --context 4096
//   heterocache-llama --model M.gguf --passkey-sweep --sweep-contexts 1024,2048
//   heterocache-llama --model M.gguf --tokens 1,2,3 --dump-logits out.f32 --max-new 8 --print-ids
#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cache.hpp"
#include "cli.hpp"
#include "gguf.hpp"
#include "heterocache/profile/profile_io.hpp"
#include "model.hpp"
#include "prompts.hpp"
#include "tokenizer.hpp"

using namespace hcllama;
using clock_type = std::chrono::steady_clock;

namespace {

struct options {
  std::string model;
  std::string prompt;
  std::string system;
  bool raw = false;
  int max_new = -1;  // -1: mode default
  float temperature = 0.0f;
  std::uint64_t seed = 42;
  int threads = 0;
  bool passkey = false, demo = false, sweep = false;
  int style = 1;
  std::size_t context = 4096;
  std::string context_text = "4096";  // as written (error messages)
  std::optional<double> depth;
  std::vector<std::size_t> sweep_contexts = {1024, 2048, 4096, 8192};
  std::vector<double> sweep_depths = {0, 0.25, 0.5, 0.75, 1};
  std::string policy = "full";
  kv_format format = kv_format::bf16;
  activation_format activations = activation_format::fp32;
  double rope_scale = 1.0;
  double budget = 0.5;
  std::size_t budget_tokens = 0;
  std::size_t window = 32;
  std::string profile, save_profile;
  std::vector<std::int32_t> tokens;
  std::string dump_logits, dump_final_logits;
  bool print_ids = false;
  bool tokenize_only = false;
  bool quiet = false;
  bool ignore_eos = false;
};

void usage(std::FILE* out) {
  std::fputs(
      "usage: heterocache-llama --model PATH [options]\n"
      "  --model PATH        GGUF model file (default: $HETEROCACHE_MODEL)\n"
      "  --prompt TEXT       user prompt, wrapped in the chat template unless --raw\n"
      "  --system TEXT       system prompt (default: the model's own)\n"
      "  --raw               feed --prompt as is (special tokens still recognised)\n"
      "  --max-new N         tokens to generate, >= 0 (default 256; passkey 12)\n"
      "  --temperature T     in [0, 100]: 0 = greedy (default), > 0 = sampling\n"
      "  --seed S            random seed in [0, 2^64 - 1] (sampling, passkey and depth)\n"
      "  --threads N         threads in [1, 1024] (weights, prefill and decode attention; default: all cores)\n"
      "  --policy NAME       KV cache: full | heterocache | streamingllm | h2o | snapkv | pyramidkv | adakv |\n"
      "                      quest | duo (default full; heterocache/baselines.hpp)\n"
      "  --kv-format F       the cache's hot-tier elements: bf16 (default) | fp16 | fp32 (fp32 accumulation;\n"
      "                      the cold tier, the engine's own K/V, is fp16)\n"
      "  --activations A     inputs of the 4- and 8-bit weights' products: fp32 (default) | int16 | int8 (as\n"
      "                      llama.cpp), the last two quantized per block of 32 for integer dot products\n"
      "                      (int8 the fastest: 1.5x decode, 2x prefill with AVX-512 VNNI; docs/engine.md)\n"
      "  --rope-scale F      linear RoPE scaling (position interpolation) by F in [1, 64], default 1: positions\n"
      "                      rotated as p / F, so F x the training context spans its angles (llama.cpp's\n"
      "                      --rope-scaling linear --rope-scale F)\n"
      "  --budget R          compressed policies: kept fraction r of the prompt KV, in (0, 1] (default 0.5)\n"
      "  --budget-tokens N   compressed policies: N >= 1 prompt tokens per KV head on average (r = N / prompt\n"
      "                      tokens, at most 1)\n"
      "  --profile FILE      heterocache, duo: load this head profile (no online profiling)\n"
      "  --save-profile FILE heterocache, duo: save the profile found online\n"
      "  --window W          observation window: last W >= 1 prompt queries per layer (default 32)\n"
      "  --passkey           one passkey retrieval run over about --context tokens with --policy\n"
      "  --passkey-demo      the same prompt with the full cache and with --policy heterocache\n"
      "  --passkey-sweep     passkey accuracy table over --sweep-contexts x --sweep-depths\n"
      "  --passkey-style N   0 chat+classic filler, 1 plain+classic (default), 2 chat+varied, 3 plain+varied\n"
      "  --context N         passkey prompt length in tokens, >= 64 (default 4096; the most is what fits in\n"
      "                      half the machine's memory, see below)\n"
      "  --depth F           passkey depth in [0, 1] (default: random)\n"
      "  --sweep-contexts L  comma-separated prompt lengths, each as --context (default 1024,2048,4096,8192)\n"
      "  --sweep-depths L    comma-separated depths in [0, 1] (default 0,0.25,0.5,0.75,1)\n"
      "  --tokens IDS        comma-separated prompt token ids (in [0, vocabulary size)) instead of --prompt\n"
      "  --tokenize          print the prompt's token ids and exit\n"
      "  --dump-logits FILE  write the prompt's last-token logits (raw float32)\n"
      "  --dump-final-logits FILE  write the logits after the last generated token (raw float32)\n"
      "  --print-ids         print the generated token ids\n"
      "  --ignore-eos        keep generating past the end of the turn\n"
      "  --quiet             no progress display\n"
      "Token counts: the prompt plus --max-new plus one must fit in half the machine's memory (or its cgroup\n"
      "limit) at the engine's KV bytes per token (a K/V row per layer and KV head in the engine's fp16 tensors,\n"
      "and at most an fp32 one in the cache's hot tier), e.g. about 175K tokens of SmolLM2-135M per 24 GiB. Beyond the\n"
      "model's training context (8192 for SmolLM2) times --rope-scale a warning is printed.\n",
      out);
}

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "heterocache-llama: error: %s\n", msg.c_str());
  std::exit(1);
}

// Token counts (--max-new, --window, ...): at most 2^31 - 1 as written. --context and --sweep-contexts have
// no bound as written: the memory check after the model is opened (context_limit) gives their range.
constexpr std::size_t max_tokens = INT_MAX;
const std::string context_expected = "an integer >= 64 (at most what fits in memory, see --help)";

options parse_args(int argc, char** argv) try {
  using cli::parse_int;
  using cli::parse_real;
  options o;
  if (const char* m = std::getenv("HETEROCACHE_MODEL")) o.model = m;
  bool budget_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value for " + a);
      return argv[++i];
    };
    if (a == "--model") o.model = next();
    else if (a == "--prompt") o.prompt = next();
    else if (a == "--system") o.system = next();
    else if (a == "--raw") o.raw = true;
    else if (a == "--max-new") o.max_new = parse_int<int>(a, next(), 0, INT_MAX);
    else if (a == "--temperature") o.temperature = static_cast<float>(parse_real(a, next(), 0.0, 100.0));
    else if (a == "--seed") o.seed = parse_int<std::uint64_t>(a, next(), 0, UINT64_MAX);
    else if (a == "--threads") o.threads = parse_int<int>(a, next(), 1, cli::max_threads);
    else if (a == "--passkey") o.passkey = true;
    else if (a == "--passkey-demo") o.passkey = o.demo = true;
    else if (a == "--passkey-sweep") o.passkey = o.sweep = true;
    else if (a == "--passkey-style") o.style = parse_int<int>(a, next(), 0, passkey_styles - 1);
    else if (a == "--context") {
      o.context_text = next();
      o.context = parse_int<std::size_t>(a, o.context_text, 64, SIZE_MAX, context_expected);
    }
    else if (a == "--depth") o.depth = parse_real(a, next(), 0.0, 1.0);
    else if (a == "--rope-scale") o.rope_scale = parse_real(a, next(), 1.0, llama_model::kMaxRopeScale);
    else if (a == "--sweep-contexts")
      o.sweep_contexts = cli::parse_int_list<std::size_t>(a, next(), 64, SIZE_MAX, context_expected);
    else if (a == "--sweep-depths") o.sweep_depths = cli::parse_real_list(a, next(), 0.0, 1.0);
    else if (a == "--policy") o.policy = next();
    else if (a == "--kv-format") {
      const std::string f = next();
      const auto format = parse_kv_format(f);
      if (!format) die("unknown --kv-format '" + f + "' (one of: fp32, fp16, bf16)");
      o.format = *format;
    }
    else if (a == "--activations") {
      const std::string f = next();
      const auto format = parse_activation_format(f);
      if (!format) die("unknown --activations '" + f + "' (one of: int16, int8, fp32)");
      o.activations = *format;
    }
    else if (a == "--budget") o.budget = parse_real(a, next(), 0.0, 1.0, true), budget_given = true;
    else if (a == "--budget-tokens") o.budget_tokens = parse_int<std::size_t>(a, next(), 1, max_tokens), budget_given = true;
    else if (a == "--profile") o.profile = next();
    else if (a == "--save-profile") o.save_profile = next();
    else if (a == "--window") o.window = parse_int<std::size_t>(a, next(), 1, max_tokens);
    else if (a == "--tokens") o.tokens = cli::parse_int_list<std::int32_t>(a, next(), 0, INT32_MAX);
    else if (a == "--tokenize") o.tokenize_only = true;
    else if (a == "--dump-logits") o.dump_logits = next();
    else if (a == "--dump-final-logits") o.dump_final_logits = next();
    else if (a == "--print-ids") o.print_ids = true;
    else if (a == "--quiet") o.quiet = true;
    else if (a == "--ignore-eos") o.ignore_eos = true;
    else if (a == "--help" || a == "-h") {
      usage(stdout);
      std::exit(0);
    } else {
      usage(stderr);
      die("unknown argument '" + a + "'");
    }
  }
  if (o.model.empty()) die("no model given (use --model PATH or set HETEROCACHE_MODEL; scripts/fetch-model.sh downloads it)");
  if (!is_policy_name(o.policy)) {
    std::string names;
    for (auto n : policy_names()) names += (names.empty() ? "" : ", ") + std::string(n);
    die("unknown --policy '" + o.policy + "' (one of: " + names + ")");
  }
  if (budget_given && o.policy == "full" && !o.demo) die("--budget needs a compressed --policy (the full cache keeps every token)");
  if ((!o.profile.empty() || !o.save_profile.empty()) && !policy_uses_profile(o.policy) && !o.demo)
    die("--profile/--save-profile need --policy heterocache or duo");
  if (o.demo && o.policy == "full") o.policy = "heterocache";
  // without --threads: every hardware thread (within the flag's range)
  if (o.threads == 0) o.threads = static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 1024u));
  return o;
} catch (const cli::arg_error& e) {
  die(e.what());
}

// The most tokens (prompt + generated + 1) a context may hold here: the KV cache must fit in half the usable
// memory (physical, or the cgroup's limit), at the engine's KV bytes per token (its kv_element tensors, and
// the cache's hot tier, at most fp32) plus 4 KiB for the rest (RoPE tables, ids and text).
cli::token_limit context_limit_of(const llama_config& c) {
  return cli::tokens_in_memory(2 * c.n_layer * c.n_head_kv * c.head_dim * (sizeof(kv_element) + sizeof(float)) + 4096,
                               max_tokens);
}

[[noreturn]] void die_range(const std::string& flag, const std::string& value, std::size_t lo, std::size_t hi,
                            const std::string& why) {
  die("invalid " + flag + " '" + value + "': out of range, expected an integer in " + cli::range_text(lo, hi) + why);
}

double peak_rss_mib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return -1;
}

double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

struct run_result {
  std::vector<std::int32_t> ids;
  std::string text;
  std::string answer;  // text up to the first end of turn (all of it when there is none)
  std::vector<float> prompt_logits, final_logits;
  double prefill_s = 0, decode_s = 0, steady_s = 0;
  std::size_t decode_steps = 0, steady_steps = 0;
  std::uint64_t resident_bytes = 0, resident_tokens = 0;
  double peak_rss_mib = 0;  // the process's, at the end of the run
  std::optional<heterocache::head_profile> profile;
  std::string policy;
};

// The prompt prefill of `ctx` (its first eval), with a progress line unless quiet; returns its seconds.
double prefill(llama_context& ctx, const std::vector<std::int32_t>& prompt, const options& opt,
               const std::string& label) {
  const bool progress = !opt.quiet && prompt.size() > 256;
  const auto t_pre = clock_type::now();
  ctx.eval(prompt, [&](const eval_progress& p) {
    if (!progress) return;
    const double s = seconds_since(t_pre);
    std::fprintf(stderr, "\r%sprefill %zu/%zu tokens (%3.0f%%) %.0f tok/s ", label.c_str(), p.done, p.total,
                 100.0 * static_cast<double>(p.done) / static_cast<double>(p.total), static_cast<double>(p.done) / s);
    std::fflush(stderr);
  });
  if (progress) std::fprintf(stderr, "\n");
  return seconds_since(t_pre);
}

// Generates up to max_new tokens from ctx's logits (the prompt's) through ctx's cache; stops at the end of
// the turn unless opt.ignore_eos or keep_going.
void decode(llama_context& ctx, const tokenizer& tok, const options& opt, int max_new, bool stream, bool keep_going,
            run_result& r) {
  r.prompt_logits = ctx.logits();
  std::uint64_t rng = opt.seed;
  bool ended = false;
  const auto t_dec = clock_type::now();
  for (int i = 0; i < max_new; ++i) {
    const std::int32_t next = sample_temperature(ctx.logits(), opt.temperature, rng);
    if (tok.is_end_of_turn(next)) {
      ended = true;
      if (!opt.ignore_eos && !keep_going) break;
    }
    r.ids.push_back(next);
    const std::string piece = tok.token_text(next);
    r.text += piece;
    if (!ended) r.answer += piece;
    if (stream) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
    if (i + 1 == max_new) break;
    const bool steady = ctx.cache()->profile().has_value();
    const auto t_step = clock_type::now();
    ctx.eval(std::span<const std::int32_t>(&next, 1));
    if (steady) r.steady_s += seconds_since(t_step), ++r.steady_steps;
    ++r.decode_steps;
  }
  r.decode_s = seconds_since(t_dec);
  if (stream) std::printf("\n");
  r.final_logits = ctx.logits();
  r.resident_bytes = ctx.cache()->resident_bytes();
  r.resident_tokens = ctx.cache()->resident_tokens();
  r.profile = ctx.cache()->profile();
  r.peak_rss_mib = peak_rss_mib();
}

// Prefills `prompt` and generates up to max_new tokens with the cache `cc`.
run_result generate(const llama_model& model, const tokenizer& tok, const std::vector<std::int32_t>& prompt,
                    const options& opt, const cache_config& cc, int max_new, bool stream, const std::string& label) {
  const std::size_t capacity = prompt.size() + static_cast<std::size_t>(std::max(max_new, 1)) + 1;
  llama_context ctx(model, capacity, make_cache_factory(model.config(), cc), static_cast<std::size_t>(opt.threads));
  ctx.window = opt.window;
  ctx.set_activations(opt.activations);
  run_result r;
  r.policy = cc.policy;
  r.prefill_s = prefill(ctx, prompt, opt, label);
  decode(ctx, tok, opt, max_new, stream, false, r);
  return r;
}

double tps(std::size_t n, double s) { return s > 0 ? static_cast<double>(n) / s : 0.0; }

void write_floats(const std::string& path, const std::vector<float>& v) {
  std::ofstream o(path, std::ios::binary);
  o.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
  if (!o) die("cannot write '" + path + "'");
}

std::string one_line(std::string s) {
  for (auto& ch : s)
    if (ch == '\n' || ch == '\r') ch = ' ';
  return s;
}

cache_config cache_for(const options& opt, const std::string& policy) {
  cache_config cc;
  cc.policy = policy;
  cc.format = opt.format;
  cc.budget = opt.budget;
  cc.budget_tokens = opt.budget_tokens;
  if (policy_uses_profile(policy) && !opt.profile.empty()) {
    try {
      cc.profile = heterocache::load_profile(opt.profile);
    } catch (const std::exception& e) {
      die(std::string("cannot load profile: ") + e.what());
    }
  }
  return cc;
}

// One run's summary line; `weights_read` is the bytes of weights each decode step reads.
void print_run(const run_result& r, std::size_t prompt_tokens, std::size_t weights_read) {
  std::printf("policy: %-11s | prompt %zu tokens, prefill %.1f tok/s (%.2f s) | decode %zu tokens, %.1f tok/s",
              r.policy.c_str(), prompt_tokens, tps(prompt_tokens, r.prefill_s), r.prefill_s, r.decode_steps,
              tps(r.decode_steps, r.decode_s));
  if (r.steady_steps != r.decode_steps) std::printf(" (%.1f tok/s after profiling)", tps(r.steady_steps, r.steady_s));
  std::printf(" | hot KV %.1f MiB, %llu tokens | weights read %.1f MiB per step | peak RSS %.0f MiB\n",
              static_cast<double>(r.resident_bytes) / (1 << 20), static_cast<unsigned long long>(r.resident_tokens),
              static_cast<double>(weights_read) / (1 << 20), r.peak_rss_mib);
}

int passkey_sweep(const options& opt, const llama_model& model, const tokenizer& tok) {
  const auto& contexts = opt.sweep_contexts;
  const auto& depths = opt.sweep_depths;
  const int max_new = opt.max_new >= 0 ? opt.max_new : 12;
  const cache_config cc = cache_for(opt, opt.policy);
  std::printf("passkey sweep: policy %s, style %d, seed %llu\n", opt.policy.c_str(), opt.style,
              static_cast<unsigned long long>(opt.seed));
  std::printf("%8s", "context");
  for (double d : depths) std::printf("  %5.0f%%", d * 100);
  std::printf("   found\n");
  std::fflush(stdout);
  int total_found = 0, total = 0;
  for (std::size_t n : contexts) {
    std::printf("%8zu", n);
    std::fflush(stdout);
    int found = 0;
    for (double d : depths) {
      const passkey_prompt pk = build_passkey_prompt(tok, n, opt.seed, d, opt.style);
      const auto prompt = tok.encode(pk.text);
      options quiet = opt;
      quiet.quiet = true;
      const run_result r = generate(model, tok, prompt, quiet, cc, max_new, false, "");
      const bool ok = r.text.find(pk.key) != std::string::npos;
      found += ok;
      std::printf("  %6s", ok ? "yes" : "no");
      std::fflush(stdout);
      if (!opt.quiet) std::fprintf(stderr, "[%zu @ %.2f: key %s, answer '%s']\n", n, d, pk.key.c_str(), one_line(r.text).c_str());
    }
    std::printf("   %d/%zu\n", found, depths.size());
    total_found += found, total += static_cast<int>(depths.size());
  }
  std::printf("total: %d/%d\n", total_found, total);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const options opt = parse_args(argc, argv);
  try {
    const auto t_load = clock_type::now();
    const gguf_file file = gguf_file::open(opt.model);
    const tokenizer tok(file);

    // Token counts against what fits in memory (checked before any prompt is built or memory is taken).
    cli::token_limit limit{max_tokens};
    try {
      limit = context_limit_of(read_llama_config(file));
    } catch (const std::exception&) {
      // not a llama model: loading it below says why
    }
    const int max_new = opt.max_new >= 0 ? opt.max_new : (opt.demo ? 32 : opt.passkey ? 12 : 256);
    const std::size_t reserve = static_cast<std::size_t>(std::max(max_new, 1)) + 1;  // as generate() sizes the context
    if (opt.passkey) {
      if (limit.tokens < 64 + reserve)
        die_range("--max-new", std::to_string(max_new), 0, limit.tokens > 65 ? limit.tokens - 65 : 0,
                  limit.why("a 64-token passkey prompt + --max-new + 1 tokens at most"));
      for (std::size_t n : opt.sweep ? opt.sweep_contexts : std::vector<std::size_t>{opt.context})
        if (n > limit.tokens - reserve)
          die_range(opt.sweep ? "--sweep-contexts" : "--context", opt.sweep ? std::to_string(n) : opt.context_text, 64,
                    limit.tokens - reserve,
                    limit.why("with --max-new " + std::to_string(max_new) + ", --context + --max-new + 1 tokens at most " +
                              std::to_string(limit.tokens)));
    }

    std::vector<std::int32_t> prompt;
    passkey_prompt pk;
    if (opt.passkey && !opt.sweep) {
      pk = build_passkey_prompt(tok, opt.context, opt.seed, opt.depth, opt.style);
      prompt = tok.encode(pk.text);
    } else if (!opt.tokens.empty()) {
      prompt = opt.tokens;
      for (auto id : prompt)
        if (static_cast<std::size_t>(id) >= tok.vocab_size())
          die("invalid --tokens id '" + std::to_string(id) + "': out of range, expected token ids in " +
              cli::range_text<std::size_t>(0, tok.vocab_size() - 1) + " (the model's vocabulary)");
    } else if (!opt.sweep) {
      if (opt.prompt.empty()) die("nothing to do: give --prompt, --tokens, --passkey, --passkey-demo or --passkey-sweep");
      std::string text = opt.prompt;
      if (!opt.raw) {
        std::vector<chat_message> msgs;
        if (!opt.system.empty()) msgs.push_back({"system", opt.system});
        msgs.push_back({"user", opt.prompt});
        text = tok.apply_chat_template(msgs, true);
      }
      prompt = tok.encode(text);
    }
    if (opt.tokenize_only) {  // an empty line for a text without tokens
      for (std::size_t i = 0; i < prompt.size(); ++i) std::printf("%s%d", i ? "," : "", prompt[i]);
      std::printf("\n");
      return 0;
    }
    if (!opt.sweep && prompt.empty())
      die("the prompt has no tokens (bytes without a token in the model's vocabulary are dropped)");
    if (!opt.sweep && prompt.size() + reserve > limit.tokens) {
      if (prompt.size() + 1 > limit.tokens)
        die("the prompt has " + std::to_string(prompt.size()) + " tokens, more than fit here: at most " +
            std::to_string(limit.tokens - 1) + limit.why("prompt + --max-new + 1 tokens at most " + std::to_string(limit.tokens)));
      die_range("--max-new", std::to_string(max_new), 0, limit.tokens - prompt.size() - 1,
                limit.why("with this " + std::to_string(prompt.size()) + "-token prompt, prompt + --max-new + 1 tokens at most " +
                          std::to_string(limit.tokens)));
    }

    llama_model model(file);
    model.set_rope_scale(opt.rope_scale);
    const auto& cfg = model.config();
    if (!opt.quiet)
      std::fprintf(stderr, "loaded %s: %zu layers, %zu heads (%zu KV), head dim %zu, vocab %zu, %.0f MiB weights, %.2f s, %d threads\n",
                   file.get_string("general.name", "model").c_str(), cfg.n_layer, cfg.n_head, cfg.n_head_kv, cfg.head_dim,
                   cfg.n_vocab, static_cast<double>(model.weight_bytes()) / (1 << 20), seconds_since(t_load), opt.threads);
    if (opt.sweep) return passkey_sweep(opt, model, tok);

    const auto reach = static_cast<std::size_t>(static_cast<double>(cfg.n_ctx_train) * opt.rope_scale);
    if (prompt.size() + static_cast<std::size_t>(max_new) + 1 > reach)
      std::fprintf(stderr, "heterocache-llama: warning: %zu tokens exceed the training context %zu%s\n",
                   prompt.size() + static_cast<std::size_t>(max_new) + 1, reach,
                   opt.rope_scale == 1.0 ? " (--rope-scale F interpolates the positions)" : " (times --rope-scale)");

    if (opt.demo) {
      std::printf("passkey demo: %zu prompt tokens, key %s at depth %.2f (style %d, seed %llu)\n", prompt.size(),
                  pk.key.c_str(), pk.depth, opt.style, static_cast<unsigned long long>(opt.seed));
      // One prefill; each cache then decodes from the same prompt state (llama_context::restart_decode), all
      // max_new tokens (past the end of the turn, so that both decode as many steps to time; the answer shown
      // is the text up to the end of the turn).
      std::vector<run_result> runs;
      const std::string budget_label =
          opt.budget_tokens > 0 ? std::to_string(opt.budget_tokens) + " tokens" : "r=" + std::to_string(opt.budget).substr(0, 4);
      const std::size_t capacity = prompt.size() + static_cast<std::size_t>(std::max(max_new, 1)) + 1;
      llama_context ctx(model, capacity, nullptr, static_cast<std::size_t>(opt.threads));
      ctx.window = opt.window;
      ctx.set_activations(opt.activations);
      ctx.keep_prefill_state = true;
      const double prefill_s = prefill(ctx, prompt, opt, "");
      for (const std::string& policy : {std::string("full"), opt.policy}) {
        const cache_config cc = cache_for(opt, policy);
        if (policy_uses_profile(policy) && !cc.profile && !opt.quiet)
          std::fprintf(stderr, "note: no --profile: %s profiles online during the first decode steps, which "
                               "still attend the full prompt\n", policy.c_str());
        ctx.restart_decode(make_cache_factory(model.config(), cc));
        run_result r;
        r.policy = policy;
        r.prefill_s = prefill_s;
        decode(ctx, tok, opt, max_new, false, true, r);
        runs.push_back(std::move(r));
      }
      std::printf("\none prefill of %zu tokens: %.1f tok/s (%.2f s); then %d tokens decoded by each cache from it\n\n",
                  prompt.size(), tps(prompt.size(), prefill_s), prefill_s, max_new);
      std::printf("%-24s %-8s %-11s %-13s %s\n", "cache", "correct", "hot KV MiB", "decode tok/s", "answer");
      for (const auto& r : runs) {
        const std::string name = r.policy == "full" ? "full" : r.policy + " " + budget_label;
        std::printf("%-24s %-8s %-11.1f %-13.1f %s\n", name.c_str(), r.answer.find(pk.key) != std::string::npos ? "yes" : "NO",
                    static_cast<double>(r.resident_bytes) / (1 << 20), tps(r.decode_steps, r.decode_s),
                    one_line(r.answer).c_str());
      }
      const double full_tps = tps(runs[0].decode_steps, runs[0].decode_s), hc_tps = tps(runs[1].decode_steps, runs[1].decode_s);
      std::printf("\n%s decodes %.2fx as fast as the full cache, from %.1f%% of its hot KV\n",
                  (runs[1].policy + " " + budget_label).c_str(), full_tps > 0 ? hc_tps / full_tps : 0.0,
                  runs[0].resident_bytes ? 100.0 * static_cast<double>(runs[1].resident_bytes) /
                                               static_cast<double>(runs[0].resident_bytes)
                                         : 0.0);
      std::printf("peak RSS %.0f MiB (one process: the weights' mapping, the engine's fp16 K/V and one cache's hot tier "
                  "at a time)\n", peak_rss_mib());
      const auto& hc = runs[1];
      if (hc.profile) {
        const auto& p = *hc.profile;
        std::printf("\nhead roles (P pivot, D digest pivot, S satellite, A anchor, V volatile; one letter per KV "
                    "head): %lld P, %lld D, %lld S, %lld A, %lld V\n%s",
                    static_cast<long long>(p.count(heterocache::head_role::pivot)),
                    static_cast<long long>(p.count(heterocache::head_role::digest_pivot)),
                    static_cast<long long>(p.count(heterocache::head_role::satellite)),
                    static_cast<long long>(p.count(heterocache::head_role::anchor)),
                    static_cast<long long>(p.count(heterocache::head_role::volatile_)), role_map(p).c_str());
        if (!opt.save_profile.empty()) heterocache::save_profile(opt.save_profile, p);
      }
      return runs[0].answer.find(pk.key) != std::string::npos ? 0 : 2;
    }

    const cache_config cc = cache_for(opt, opt.policy);
    const bool stream = !opt.passkey && !opt.quiet;
    const run_result r = generate(model, tok, prompt, opt, cc, max_new, stream, "");
    if (!opt.dump_logits.empty()) write_floats(opt.dump_logits, r.prompt_logits);
    if (!opt.dump_final_logits.empty()) write_floats(opt.dump_final_logits, r.final_logits);
    if (opt.print_ids) {
      std::printf("generated_ids:");
      for (std::size_t i = 0; i < r.ids.size(); ++i) std::printf("%s%d", i ? "," : " ", r.ids[i]);
      std::printf("\n");
    }
    if (opt.passkey) {
      std::printf("passkey: %s depth: %.2f prompt tokens: %zu\n", pk.key.c_str(), pk.depth, prompt.size());
      std::printf("answer: %s\n", one_line(r.text).c_str());
      std::printf("match: %s\n", r.text.find(pk.key) != std::string::npos ? "yes" : "no");
    }
    if (!opt.save_profile.empty()) {
      if (!r.profile) die("no profile to save: online profiling needs more decode steps (--max-new > 8)");
      heterocache::save_profile(opt.save_profile, *r.profile);
    }
    if (!opt.quiet || opt.passkey) {
      if (!opt.passkey) std::fflush(stdout);
      print_run(r, prompt.size(), model.decode_weight_bytes());
      if (r.profile && !opt.quiet && policy_uses_profile(opt.policy)) std::fputs(role_map(*r.profile).c_str(), stderr);
    }
    return 0;
  } catch (const std::bad_alloc&) {
    die("out of memory (std::bad_alloc): a smaller --context, --max-new or prompt needs less");
  } catch (const std::exception& e) {
    die(e.what());
  }
}
