// heterocache-llama: a minimal llama-architecture inference engine
// (SmolLM2-135M-Instruct) used to exercise HeteroCache on a real model.
//
//   heterocache-llama --model M.gguf --prompt "What is 2+2?"
//   heterocache-llama --model M.gguf --passkey-demo --context 4096
//   heterocache-llama --model M.gguf --tokens 1,2,3 --dump-logits out.f32 --max-new 8 --print-ids
#include <algorithm>
#include <chrono>
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
#include <vector>

#include "gguf.hpp"
#include "model.hpp"
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
  bool passkey = false;
  std::size_t context = 4096;
  std::optional<double> depth;
  std::string policy = "full";
  std::optional<double> budget;
  std::string tokens;
  std::string dump_logits;
  bool print_ids = false;
  bool tokenize_only = false;
  bool quiet = false;
};

void usage(std::FILE* out) {
  std::fputs(
      "usage: heterocache-llama --model PATH [options]\n"
      "  --model PATH        GGUF model file (default: $HETEROCACHE_MODEL)\n"
      "  --prompt TEXT       user prompt, wrapped in the chat template unless --raw\n"
      "  --system TEXT       system prompt (default: the model's own)\n"
      "  --raw               feed --prompt as is (special tokens still recognised)\n"
      "  --max-new N         tokens to generate (default 256; passkey demo 16)\n"
      "  --temperature T     0 = greedy (default), >0 = sampling\n"
      "  --seed S            random seed (sampling, passkey and depth)\n"
      "  --threads N         BLAS threads (default: all cores)\n"
      "  --passkey-demo      passkey retrieval over about --context tokens\n"
      "  --context N         passkey prompt length in tokens (default 4096)\n"
      "  --depth F           passkey depth in [0,1] (default: random)\n"
      "  --policy NAME       KV cache policy: full (others: not yet available)\n"
      "  --budget R          kept fraction of the KV cache (needs a compressing policy)\n"
      "  --tokens IDS        comma-separated prompt token ids instead of --prompt\n"
      "  --tokenize          print the prompt's token ids and exit\n"
      "  --dump-logits FILE  write the prompt's last-token logits (raw float32)\n"
      "  --print-ids         print the generated token ids\n"
      "  --quiet             no progress display\n",
      out);
}

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "heterocache-llama: error: %s\n", msg.c_str());
  std::exit(1);
}

template <class T>
T parse_num(const std::string& flag, const std::string& s) {
  try {
    std::size_t n = 0;
    T v;
    if constexpr (std::is_floating_point_v<T>) v = static_cast<T>(std::stod(s, &n));
    else if constexpr (std::is_signed_v<T>) v = static_cast<T>(std::stoll(s, &n));
    else {
      if (!s.empty() && s[0] == '-') throw std::invalid_argument("negative");
      v = static_cast<T>(std::stoull(s, &n));
    }
    if (n != s.size()) throw std::invalid_argument("trailing characters");
    return v;
  } catch (const std::exception&) {
    die("invalid value '" + s + "' for " + flag);
  }
}

options parse_args(int argc, char** argv) {
  options o;
  if (const char* m = std::getenv("HETEROCACHE_MODEL")) o.model = m;
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
    else if (a == "--max-new") o.max_new = parse_num<int>(a, next());
    else if (a == "--temperature") o.temperature = parse_num<float>(a, next());
    else if (a == "--seed") o.seed = parse_num<std::uint64_t>(a, next());
    else if (a == "--threads") o.threads = parse_num<int>(a, next());
    else if (a == "--passkey-demo") o.passkey = true;
    else if (a == "--context") o.context = parse_num<std::size_t>(a, next());
    else if (a == "--depth") o.depth = parse_num<double>(a, next());
    else if (a == "--policy") o.policy = next();
    else if (a == "--budget") o.budget = parse_num<double>(a, next());
    else if (a == "--tokens") o.tokens = next();
    else if (a == "--tokenize") o.tokenize_only = true;
    else if (a == "--dump-logits") o.dump_logits = next();
    else if (a == "--print-ids") o.print_ids = true;
    else if (a == "--quiet") o.quiet = true;
    else if (a == "--help" || a == "-h") {
      usage(stdout);
      std::exit(0);
    } else {
      usage(stderr);
      die("unknown argument '" + a + "'");
    }
  }
  if (o.model.empty()) die("no model given (use --model PATH or set HETEROCACHE_MODEL; scripts/fetch-model.sh downloads it)");
  if (o.policy != "full") die("KV cache policy '" + o.policy + "' is not yet available (only 'full')");
  if (o.budget && (*o.budget <= 0.0 || *o.budget > 1.0)) die("--budget must be in (0, 1]");
  if (o.budget && *o.budget < 1.0) die("--budget below 1 is not yet available (the 'full' policy keeps the whole cache)");
  if (o.temperature < 0) die("--temperature must be >= 0");
  if (o.depth && (*o.depth < 0.0 || *o.depth > 1.0)) die("--depth must be in [0, 1]");
  if (o.context < 64) die("--context must be at least 64");
  return o;
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

struct passkey_prompt {
  std::string text;
  std::string key;
  double depth = 0;
};

passkey_prompt build_passkey_prompt(const tokenizer& tok, std::size_t target_tokens, std::uint64_t seed,
                                    std::optional<double> depth) {
  std::mt19937_64 rng(seed);
  passkey_prompt p;
  p.key = std::to_string(std::uniform_int_distribution<int>(10000, 99999)(rng));
  p.depth = depth ? *depth : std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  const std::string intro =
      "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
      "I will quiz you about the important information there.\n\n";
  const std::string filler = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
  const std::string needle = "The pass key is " + p.key + ". Remember it. " + p.key + " is the pass key. ";
  const std::string question = "\n\nWhat is the pass key?";
  const std::string answer_prefix = "The pass key is";
  auto assemble = [&](std::size_t reps, std::size_t before) {
    std::string user = intro;
    for (std::size_t i = 0; i < before; ++i) user += filler;
    user += needle;
    for (std::size_t i = before; i < reps; ++i) user += filler;
    user += question;
    return tok.apply_chat_template({{"user", user}}, true) + answer_prefix;
  };
  const std::size_t overhead = tok.encode(assemble(0, 0)).size();
  const std::size_t per = std::max<std::size_t>(1, tok.encode(filler + filler).size() - tok.encode(filler).size());
  const std::size_t reps = target_tokens > overhead ? (target_tokens - overhead) / per : 0;
  const auto before = static_cast<std::size_t>(p.depth * static_cast<double>(reps) + 0.5);
  p.text = assemble(reps, std::min(before, reps));
  return p;
}

std::vector<std::int32_t> parse_ids(const std::string& s) {
  std::vector<std::int32_t> ids;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, ',');) {
    if (t.empty()) continue;
    ids.push_back(parse_num<std::int32_t>("--tokens", t));
  }
  return ids;
}

}  // namespace

int main(int argc, char** argv) {
  const options opt = parse_args(argc, argv);
  try {
    if (opt.threads > 0 && !set_blas_threads(opt.threads))
      std::fprintf(stderr, "heterocache-llama: warning: this BLAS cannot set its thread count\n");

    const auto t_load = clock_type::now();
    const gguf_file file = gguf_file::open(opt.model);
    const tokenizer tok(file);

    std::vector<std::int32_t> prompt;
    passkey_prompt pk;
    if (opt.passkey) {
      pk = build_passkey_prompt(tok, opt.context, opt.seed, opt.depth);
      prompt = tok.encode(pk.text);
    } else if (!opt.tokens.empty()) {
      prompt = parse_ids(opt.tokens);
    } else {
      if (opt.prompt.empty()) die("nothing to do: give --prompt, --tokens or --passkey-demo");
      std::string text = opt.prompt;
      if (!opt.raw) {
        std::vector<chat_message> msgs;
        if (!opt.system.empty()) msgs.push_back({"system", opt.system});
        msgs.push_back({"user", opt.prompt});
        text = tok.apply_chat_template(msgs, true);
      }
      prompt = tok.encode(text);
    }
    if (prompt.empty()) die("the prompt is empty");
    if (opt.tokenize_only) {
      for (std::size_t i = 0; i < prompt.size(); ++i) std::printf("%s%d", i ? "," : "", prompt[i]);
      std::printf("\n");
      return 0;
    }

    const llama_model model(file);
    const auto& cfg = model.config();
    if (!opt.quiet)
      std::fprintf(stderr, "loaded %s: %zu layers, %zu heads (%zu KV), head dim %zu, vocab %zu, %.0f MiB weights, %.2f s\n",
                   file.get_string("general.name", "model").c_str(), cfg.n_layer, cfg.n_head, cfg.n_head_kv, cfg.head_dim,
                   cfg.n_vocab, static_cast<double>(model.weight_bytes()) / (1 << 20), seconds_since(t_load));

    const int max_new = opt.max_new >= 0 ? opt.max_new : (opt.passkey ? 16 : 256);
    const std::size_t capacity = prompt.size() + static_cast<std::size_t>(max_new) + 1;
    if (capacity > cfg.n_ctx_train)
      std::fprintf(stderr, "heterocache-llama: warning: %zu tokens exceed the training context %zu\n", capacity,
                   cfg.n_ctx_train);
    llama_context ctx(model, capacity, std::make_shared<full_attention_policy>());

    // ---- prefill
    const bool progress = !opt.quiet && prompt.size() > 256;
    const auto t_pre = clock_type::now();
    ctx.eval(prompt, [&](const eval_progress& p) {
      if (!progress) return;
      const double s = seconds_since(t_pre);
      std::fprintf(stderr, "\rprefill %zu/%zu tokens (%3.0f%%) %.0f tok/s ", p.done, p.total,
                   100.0 * static_cast<double>(p.done) / static_cast<double>(p.total), static_cast<double>(p.done) / s);
      std::fflush(stderr);
    });
    const double prefill_s = seconds_since(t_pre);
    if (progress) std::fprintf(stderr, "\n");
    if (!opt.dump_logits.empty()) {
      std::ofstream o(opt.dump_logits, std::ios::binary);
      o.write(reinterpret_cast<const char*>(ctx.logits().data()),
              static_cast<std::streamsize>(ctx.logits().size() * sizeof(float)));
      if (!o) die("cannot write '" + opt.dump_logits + "'");
    }

    // ---- decode
    std::uint64_t rng = opt.seed;
    std::vector<std::int32_t> generated;
    std::string text;
    const bool stream = !opt.passkey && !opt.quiet;
    const auto t_dec = clock_type::now();
    std::size_t decode_steps = 0;
    for (int i = 0; i < max_new; ++i) {
      const std::int32_t next = sample_temperature(ctx.logits(), opt.temperature, rng);
      if (tok.is_end_of_turn(next)) break;
      generated.push_back(next);
      const std::string piece = tok.token_text(next);
      text += piece;
      if (stream) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      }
      if (i + 1 == max_new) break;
      ctx.eval(std::span<const std::int32_t>(&next, 1));
      ++decode_steps;
    }
    const double decode_s = seconds_since(t_dec);
    if (stream) std::printf("\n");

    if (opt.print_ids) {
      std::printf("generated_ids:");
      for (std::size_t i = 0; i < generated.size(); ++i) std::printf("%s%d", i ? "," : " ", generated[i]);
      std::printf("\n");
    }
    const double pre_tps = static_cast<double>(prompt.size()) / prefill_s;
    const double dec_tps = decode_steps ? static_cast<double>(decode_steps) / decode_s : 0.0;
    if (opt.passkey) {
      const bool found = text.find(pk.key) != std::string::npos;
      std::printf("passkey: %s depth: %.2f prompt tokens: %zu\n", pk.key.c_str(), pk.depth, prompt.size());
      std::printf("answer: %s\n", text.c_str());
      std::printf("match: %s\n", found ? "yes" : "no");
    }
    if (!opt.quiet || opt.passkey) {
      std::fprintf(opt.passkey ? stdout : stderr,
                   "policy: %s | prompt %zu tokens, prefill %.1f tok/s (%.2f s) | decode %zu tokens, %.1f tok/s | "
                   "KV %.0f MiB | peak RSS %.0f MiB\n",
                   ctx.policy().name(), prompt.size(), pre_tps, prefill_s, decode_steps, dec_tps,
                   static_cast<double>(ctx.kv().bytes()) / (1 << 20), peak_rss_mib());
    }
    return 0;
  } catch (const std::exception& e) {
    die(e.what());
  }
}
