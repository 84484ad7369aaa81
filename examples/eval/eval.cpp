// heterocache-eval: every KV-compression policy of heterocache/baselines.hpp side by side on the real model
// (SmolLM2-135M-Instruct through the examples/llama engine), at the same budgets, on the same prompts.
//
// One prompt prefill (full attention) per sample, reused for every policy x budget: the engine keeps the
// prompt K/V and the observation-window queries, each policy's cache is built fresh and prefilled from them,
// and the policies then decode side by side as independent streams of one batch (the weights are read once
// per step for all of them). A full-cache stream runs in every batch as the reference.
//
// Tasks (prompts generated deterministically from --split and --seed):
//   passkey      one 5-digit key in a filler haystack, at several lengths and depths
//   multikey     several "secret code for NAME" lines in the haystack, one asked
//   multineedle  four ordered secret numbers asked in one answer (attention has to move while decoding)
//   niah-words, niah-numbers, niah-uuids, multivalue, multiquery, vartrack, cwe
//                RULER-style synthetic tasks (tasks.hpp) over real filler sentences (texts.hpp)
//   kl           teacher-forced fidelity on real texts (the licences of /usr/share/common-licenses and the
//                copyright files of Debian's required packages, one sample each): mean KL(full || policy) and
//                top-1 agreement of the next-token distributions
//
// Rows go to a CSV (default docs/eval/results.csv); a rerun skips rows already there (key: task, split, sample,
// policy, budget). tools/eval_table.py and tools/plot_eval.py turn it into docs/eval/results.md and PNGs.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "cache.hpp"
#include "cli.hpp"
#include "gguf.hpp"
#include "heterocache/profile/profile_io.hpp"
#include "model.hpp"
#include "prompts.hpp"
#include "tasks.hpp"
#include "texts.hpp"
#include "tokenizer.hpp"

using namespace hcllama;
using clock_type = std::chrono::steady_clock;
namespace fs = std::filesystem;

#ifndef HCEVAL_DEFAULT_PROFILE
#define HCEVAL_DEFAULT_PROFILE "examples/llama/profiles/smollm2-135m-instruct.hcprofile"
#endif

namespace {

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "heterocache-eval: error: %s\n", msg.c_str());
  std::exit(1);
}

double seconds_since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }

std::vector<std::string> split(const std::string& s, char sep = ',') {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, sep);)
    if (!t.empty()) out.push_back(t);
  return out;
}

// Token counts as written: at most 2^31 - 1 (the memory check after the model is opened bounds the prompts).
constexpr std::size_t max_tokens = 2147483647;

// ---- options --------------------------------------------------------------------------------------------

struct budget_spec {
  std::string label;  // "r0.25", "t128", "r1"
  double ratio = 1.0;
  std::size_t tokens = 0;
};

budget_spec parse_budget(const std::string& s) {
  budget_spec b;
  const std::string expected = ", expected r<fraction> with the fraction in (0, 1] or t<tokens> with tokens in " +
                               cli::range_text<std::size_t>(1, max_tokens);
  if (s.empty()) die("invalid --budgets: an empty item" + expected);
  try {
    if (s[0] == 't') b.tokens = cli::parse_int<std::size_t>("--budgets", std::string_view(s).substr(1), 1, max_tokens);
    else b.ratio = cli::parse_real("--budgets", std::string_view(s).substr(s[0] == 'r' ? 1 : 0), 0.0, 1.0, true);
  } catch (const cli::arg_error& e) {
    const std::string m = e.what();  // "invalid --budgets 'X': WHY, expected ..."
    const auto p = m.find("': "), q = m.find(", expected");
    die("invalid --budgets '" + s + "': " + m.substr(p + 3, q - p - 3) + expected);
  }
  char buf[32];
  if (b.tokens) std::snprintf(buf, sizeof buf, "t%zu", b.tokens);
  else std::snprintf(buf, sizeof buf, "r%g", b.ratio);
  b.label = buf;
  return b;
}

struct options {
  std::string model, out = "docs/eval/results.csv", profile = HCEVAL_DEFAULT_PROFILE;
  std::vector<std::string> tasks = {"kl",         "passkey",    "multikey",   "multineedle", "niah-words", "niah-numbers",
                                    "niah-uuids", "multivalue", "multiquery", "vartrack",    "cwe"};
  hceval::split_kind split = hceval::split_kind::test;
  std::vector<std::string> policies;
  std::vector<budget_spec> budgets;
  kv_format format = kv_format::bf16;
  std::optional<kv_format> reference_format;  // the full reference's, when not `format`
  activation_format activations = activation_format::fp32;
  std::vector<std::size_t> passkey_contexts = {1024, 2048, 4096, 8192};
  std::vector<double> depths = {0, 0.25, 0.5, 0.75, 1};
  std::vector<std::size_t> needle_contexts = {2048, 4096};
  std::size_t needle_samples = 3;
  std::vector<std::size_t> ruler_contexts = {2048, 4096, 8192};
  std::size_t samples = 20;  // per RULER task and length
  std::size_t kl_prefix = 4096, kl_positions = 256;
  std::size_t kl_texts = 0;  // 0: every text long enough
  std::string dump_prompts;   // write the prompts there and exit
  std::uint64_t seed = 1;
  int threads = 0;
  double memory_gib = 6.0;
  double hc_floor = 0.0;
  std::size_t window = 32;
  bool check_exact = false, quiet = false;
};

void usage(std::FILE* f) {
  std::fputs(
      "usage: heterocache-eval [options]\n"
      "  --model PATH          GGUF model (default: $HETEROCACHE_MODEL)\n"
      "  --out CSV             results file, appended to and resumed (default docs/eval/results.csv)\n"
      "  --profile FILE        head profile for heterocache and duo (default: the saved SmolLM2 profile)\n"
      "  --tasks LIST          passkey,multikey,multineedle,kl and the RULER-style niah-words,niah-numbers,\n"
      "                        niah-uuids,multivalue,multiquery,vartrack,cwe (default: all)\n"
      "  --split S             test (default) or dev: prompts from separate seeds (dev for tuning, test to report)\n"
      "  --policies LIST       default: full and every baseline of heterocache/baselines.hpp\n"
      "  --budgets LIST        r<fraction> or t<tokens per head> (default r0.5,r0.25,r0.1,t128,t512)\n"
      "  --kv-format F         hot-tier elements of every cache, the full reference's included: bf16 (default),\n"
      "                        fp16 or fp32 (rows do not record it: give each format its own --out)\n"
      "  --activations A       inputs of the 4- and 8-bit weights' products: fp32 (default), int16 or int8 (every\n"
      "                        stream)\n"
      "  --reference-kv-format F  the full reference's hot-tier elements instead (e.g. fp32 with --kv-format bf16\n"
      "                        --policies full: the KL of the 16-bit hot tier itself)\n"
      "  --contexts LIST       passkey prompt lengths (default 1024,2048,4096,8192); also the RULER tasks'\n"
      "                        unless --ruler-contexts is given\n"
      "  --ruler-contexts L    RULER task prompt lengths (default 2048,4096,8192)\n"
      "  --samples N           samples per RULER task and length (default 20), and per multikey/multineedle\n"
      "                        length unless --needle-samples is given\n"
      "  --depths LIST         passkey depths (default 0,0.25,0.5,0.75,1)\n"
      "  --needle-contexts L   multikey/multineedle prompt lengths (default 2048,4096)\n"
      "  --needle-samples N    multikey/multineedle samples per length (default 3)\n"
      "  --kl-prefix N         teacher-forced KL: prefix tokens (default 4096)\n"
      "  --kl-positions N      teacher-forced KL: decode positions compared (default 256)\n"
      "  --kl-texts N          teacher-forced KL: at most the first N texts long enough (default: all)\n"
      "  --subset NAME         small: passkey 1K,4K at depths 0,0.5,1, one needle sample at 2K, RULER tasks\n"
      "                        2 samples at 2K, KL 2K x 128 over 4 texts\n"
      "  --quick               CI: passkey 1K at depth 0.5 and KL over 32 positions after 1K of the first text,\n"
      "                        budgets r1,r0.25,\n"
      "                        with --check-exact; writes a temporary CSV unless --out is given\n"
      "  --check-exact         fail (exit 3) unless every policy at r1 reproduces the full cache exactly\n"
      "                        (identical answers, KL 0, top-1 agreement 1, identical logits)\n"
      "  --seed S              prompt seed in [0, 2^64 - 1] (default 1)\n"
      "  --threads N           threads in [1, 1024] (default: all cores)\n"
      "  --memory-gib G        memory for the policies' caches per batch, in (0, the machine's memory] (default 6)\n"
      "  --hc-floor A          heterocache-floor (an extra policy, not in the default list; also\n"
      "                        heterocache-floorA): demote full heads until the compressed heads' mean cap is\n"
      "                        A * r * T (default 0.5)\n"
      "                        heterocache-static (extra, an ablation): HeteroCache without satellite refresh\n"
      "  --dump-prompts FILE   write every sample's prompt (decoded), expected values and max new tokens to FILE\n"
      "                        and exit (to read what the model is asked)\n"
      "  --quiet               no progress bar\n",
      f);
}

options parse(int argc, char** argv) try {
  using cli::parse_int;
  using cli::parse_int_list;
  using cli::parse_real;
  options o;
  if (const char* m = std::getenv("HETEROCACHE_MODEL")) o.model = m;
  bool quick = false, out_given = false, ruler_contexts_given = false, needle_samples_given = false,
       contexts_given = false, samples_given = false;
  std::string budgets = "r0.5,r0.25,r0.1,t128,t512", subset;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value for " + a);
      return argv[++i];
    };
    if (a == "--model") o.model = next();
    else if (a == "--out") o.out = next(), out_given = true;
    else if (a == "--profile") o.profile = next();
    else if (a == "--tasks") o.tasks = split(next());
    else if (a == "--policies") o.policies = split(next());
    else if (a == "--budgets") budgets = next();
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
    else if (a == "--reference-kv-format") {
      const std::string f = next();
      const auto format = parse_kv_format(f);
      if (!format) die("unknown --reference-kv-format '" + f + "' (one of: fp32, fp16, bf16)");
      o.reference_format = *format;
    }
    else if (a == "--split") {
      const std::string v = next();
      if (v == "test") o.split = hceval::split_kind::test;
      else if (v == "dev") o.split = hceval::split_kind::dev;
      else die("invalid --split '" + v + "' (test or dev)");
    }
    else if (a == "--contexts")
      o.passkey_contexts = parse_int_list<std::size_t>(a, next(), 64, max_tokens), contexts_given = true;
    else if (a == "--ruler-contexts")
      o.ruler_contexts = parse_int_list<std::size_t>(a, next(), 64, max_tokens), ruler_contexts_given = true;
    else if (a == "--samples") o.samples = parse_int<std::size_t>(a, next(), 1, 100000), samples_given = true;
    else if (a == "--depths") o.depths = cli::parse_real_list(a, next(), 0.0, 1.0);
    else if (a == "--needle-contexts") o.needle_contexts = parse_int_list<std::size_t>(a, next(), 64, max_tokens);
    else if (a == "--needle-samples")
      o.needle_samples = parse_int<std::size_t>(a, next(), 1, 100000), needle_samples_given = true;
    else if (a == "--kl-prefix") o.kl_prefix = parse_int<std::size_t>(a, next(), 64, max_tokens);
    else if (a == "--kl-positions") o.kl_positions = parse_int<std::size_t>(a, next(), 1, max_tokens);
    else if (a == "--kl-texts") o.kl_texts = parse_int<std::size_t>(a, next(), 1, 100000);
    else if (a == "--subset") subset = next();
    else if (a == "--quick") quick = true;
    else if (a == "--check-exact") o.check_exact = true;
    else if (a == "--seed") o.seed = parse_int<std::uint64_t>(a, next(), 0, UINT64_MAX);
    else if (a == "--threads") o.threads = parse_int<int>(a, next(), 1, cli::max_threads);
    else if (a == "--memory-gib") {
      // at most the machine's memory (or the cgroup's limit); 1 TiB where it is unknown
      const std::uint64_t mem = cli::usable_memory_bytes();
      o.memory_gib = parse_real(a, next(), 0.0, mem ? std::floor(static_cast<double>(mem) / 1073741824.0 * 10) / 10 : 1024.0, true);
    } else if (a == "--window") o.window = parse_int<std::size_t>(a, next(), 1, max_tokens);
    else if (a == "--hc-floor") o.hc_floor = parse_real(a, next(), 0.0, 1.0);
    else if (a == "--quiet") o.quiet = true;
    else if (a == "--dump-prompts") o.dump_prompts = next();
    else if (a == "--help" || a == "-h") usage(stdout), std::exit(0);
    else usage(stderr), die("unknown argument '" + a + "'");
  }
  if (!ruler_contexts_given && contexts_given) o.ruler_contexts = o.passkey_contexts;
  if (!needle_samples_given && samples_given) o.needle_samples = o.samples;
  if (quick) {
    o.tasks = {"passkey", "kl"};
    o.passkey_contexts = {1024};
    o.depths = {0.5};
    o.kl_prefix = 1024;
    o.kl_positions = 32;
    o.kl_texts = 1;
    budgets = "r1,r0.25";
    o.check_exact = true;
    if (!out_given) o.out = (fs::temp_directory_path() / ("heterocache-eval-quick-" + std::to_string(::getpid()) + ".csv")).string();
  }
  if (subset == "small") {
    o.passkey_contexts = {1024, 4096};
    o.depths = {0, 0.5, 1};
    o.needle_contexts = {2048};
    o.needle_samples = 1;
    o.ruler_contexts = {2048};
    o.samples = 2;
    o.kl_prefix = 2048;
    o.kl_positions = 128;
    o.kl_texts = 4;
  } else if (!subset.empty()) {
    die("unknown --subset '" + subset + "' (small)");
  }
  for (auto& b : split(budgets)) o.budgets.push_back(parse_budget(b));
  if (o.policies.empty())
    for (auto n : policy_names()) o.policies.emplace_back(n);
  for (auto& p : o.policies)
    if (!is_policy_name(p)) die("unknown policy '" + p + "'");
  for (auto& t : o.tasks)
    if (t != "passkey" && t != "multikey" && t != "multineedle" && t != "kl" && !hceval::is_ruler_task(t))
      die("unknown task '" + t + "'");
  if (o.model.empty()) die("no model (--model or HETEROCACHE_MODEL; scripts/fetch-model.sh downloads it)");
  // without --threads: every hardware thread (within the flag's range)
  if (o.threads == 0) o.threads = static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 1024u));
  return o;
} catch (const cli::arg_error& e) {
  die(e.what());
}

// ---- samples --------------------------------------------------------------------------------------------

struct sample {
  std::string task, split, id;
  std::size_t context = 0;  // target prompt length
  double depth = -1;
  std::vector<std::int32_t> prompt;
  std::vector<std::string> expected;  // generation: the values the answer must contain (in order, or any order)
  bool unordered = false;             // RULER tasks: any order, whole words (hceval::unordered_score)
  std::size_t max_new = 0;            // generation: tokens generated (the first from the prompt logits)
  std::vector<std::int32_t> forced;   // kl: tokens fed after the prompt
};

std::string five_digits(std::mt19937_64& rng) { return std::to_string(std::uniform_int_distribution<int>(10000, 99999)(rng)); }

// A plain-completion haystack of at most `target` tokens: intro, classic filler with `inserts` placed at their
// depths (in [0, 1], ascending), then `tail` (question and answer prefix).
std::string build_haystack(const tokenizer& tok, std::size_t target, const std::string& intro,
                           const std::vector<std::pair<double, std::string>>& inserts, const std::string& tail) {
  const std::string unit = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
  auto assemble = [&](std::size_t reps) {
    std::string s = intro;
    std::size_t k = 0;
    for (std::size_t i = 0; i <= reps; ++i) {
      while (k < inserts.size() && static_cast<std::size_t>(inserts[k].first * static_cast<double>(reps) + 0.5) <= i)
        s += inserts[k++].second;
      if (i < reps) s += unit;
    }
    for (; k < inserts.size(); ++k) s += inserts[k].second;
    return s + tail;
  };
  const std::size_t overhead = tok.encode(assemble(0)).size();
  const std::size_t per = std::max<std::size_t>(1, tok.encode(unit + unit + unit + unit).size() / 4);
  std::size_t reps = target > overhead ? (target - overhead) / per : 0;
  for (;;) {
    std::string s = assemble(reps);
    if (reps == 0 || tok.encode(s).size() <= target) return s;
    --reps;
  }
}

const char* split_name(hceval::split_kind s) { return s == hceval::split_kind::dev ? "dev" : "test"; }

std::vector<sample> make_samples(const options& o, const tokenizer& tok) {
  std::vector<sample> out;
  char buf[160];
  const bool test = o.split == hceval::split_kind::test;
  // The test split keeps the prompts these tasks always had (results stay comparable); dev draws its own seeds.
  auto dev_seed = [&](const char* task, std::size_t n, std::size_t i) { return hceval::task_seed(o.split, o.seed, task, n, i); };
  std::optional<std::vector<hceval::text_source>> texts;
  std::optional<hceval::filler> fill;
  auto get_texts = [&]() -> const std::vector<hceval::text_source>& {
    if (!texts) texts = hceval::debian_texts();
    return *texts;
  };
  for (const auto& task : o.tasks) {
    if (task == "passkey") {
      for (std::size_t n : o.passkey_contexts)
        for (double d : o.depths) {
          sample s;
          s.task = task, s.context = n, s.depth = d;
          std::snprintf(buf, sizeof buf, "pk-%zu-d%03.0f", n, d * 100);
          s.id = buf;
          const auto pk = build_passkey_prompt(
              tok, n, test ? o.seed * 1000 + n + static_cast<std::uint64_t>(std::lround(d * 100)) : dev_seed("passkey", n, static_cast<std::size_t>(d * 1000 + 0.5)),
              d, 1);
          s.prompt = tok.encode(pk.text);
          s.expected = {pk.key};
          s.max_new = 8;
          out.push_back(std::move(s));
        }
    } else if (task == "multikey") {
      static const char* const names[] = {"apple", "river", "violet", "falcon", "copper", "maple", "orbit", "canyon"};
      for (std::size_t n : o.needle_contexts)
        for (std::size_t i = 0; i < o.needle_samples; ++i) {
          std::mt19937_64 rng(test ? o.seed * 7919 + n * 31 + i : dev_seed("multikey", n, i));
          sample s;
          s.task = task, s.context = n;
          std::snprintf(buf, sizeof buf, "mk-%zu-s%zu", n, i);
          s.id = buf;
          std::vector<std::size_t> pick(8);
          for (std::size_t k = 0; k < 8; ++k) pick[k] = k;
          std::shuffle(pick.begin(), pick.end(), rng);
          std::vector<std::pair<double, std::string>> ins;
          std::vector<std::string> codes;
          for (std::size_t k = 0; k < 4; ++k) {
            const double depth = (static_cast<double>(k) + std::uniform_real_distribution<double>(0.1, 0.9)(rng)) / 4.0;
            codes.push_back(five_digits(rng));
            ins.emplace_back(depth, std::string("The secret code for ") + names[pick[k]] + " is " + codes.back() + ". ");
          }
          const std::size_t asked = std::uniform_int_distribution<std::size_t>(0, 3)(rng);
          s.depth = ins[asked].first;
          const std::string name = names[pick[asked]];
          s.prompt = tok.encode(build_haystack(
              tok, n,
              "There are several secret codes hidden inside a lot of irrelevant text. Find them and memorize them. "
              "I will quiz you about one of them.\n\n",
              ins, "\n\nWhat is the secret code for " + name + "? The secret code for " + name + " is"));
          s.expected = {codes[asked]};
          s.max_new = 8;
          out.push_back(std::move(s));
        }
    } else if (task == "multineedle") {
      static const char* const ordinal[] = {"first", "second", "third", "fourth"};
      for (std::size_t n : o.needle_contexts)
        for (std::size_t i = 0; i < o.needle_samples; ++i) {
          std::mt19937_64 rng(test ? o.seed * 104729 + n * 17 + i : dev_seed("multineedle", n, i));
          sample s;
          s.task = task, s.context = n;
          std::snprintf(buf, sizeof buf, "mn-%zu-s%zu", n, i);
          s.id = buf;
          std::vector<std::pair<double, std::string>> ins;
          for (std::size_t k = 0; k < 4; ++k) {
            const double depth = (static_cast<double>(k) + std::uniform_real_distribution<double>(0.1, 0.9)(rng)) / 4.0;
            s.expected.push_back(five_digits(rng));
            ins.emplace_back(depth, std::string("The ") + ordinal[k] + " secret number is " + s.expected.back() + ". ");
          }
          s.prompt = tok.encode(build_haystack(
              tok, n,
              "Four secret numbers are hidden inside a lot of irrelevant text, in order. Find them and memorize them. "
              "I will ask you to recite all four, in order.\n\n",
              ins, "\n\nWhat are the four secret numbers, in order? The first secret number is"));
          s.max_new = 48;
          out.push_back(std::move(s));
        }
    } else if (hceval::is_ruler_task(task)) {
      if (!fill) fill.emplace(hceval::filler_sentences(get_texts()), tok);
      for (std::size_t n : o.ruler_contexts)
        for (std::size_t i = 0; i < o.samples; ++i) {
          sample s;
          s.task = task, s.context = n;
          std::snprintf(buf, sizeof buf, "%s-%zu-s%zu", task.c_str(), n, i);
          s.id = buf;
          auto p = hceval::make_ruler_prompt(task, tok, *fill, n, hceval::task_seed(o.split, o.seed, task, n, i));
          s.depth = p.depth;
          s.prompt = tok.encode(p.text);
          s.expected = std::move(p.expected);
          s.max_new = p.max_new;
          s.unordered = true;
          out.push_back(std::move(s));
        }
    } else if (task == "kl") {
      // One sample per text long enough for the prefix and the forced positions, in debian_texts' order. The
      // test split reads each text's first prefix + positions tokens, dev its last (they overlap where a text is
      // shorter than twice that: KL compares against the full cache, there is no answer to tune on).
      const std::size_t need = o.kl_prefix + o.kl_positions;
      std::size_t taken = 0, too_short = 0;
      for (const auto& t : get_texts()) {
        if (o.kl_texts && taken >= o.kl_texts) break;
        // Only as much text as needed for test (about 3.2 characters per token for these texts; checked below).
        const std::string text = test ? t.text.substr(0, std::min(t.text.size(), need * 6 + 4096)) : t.text;
        const std::vector<std::int32_t> ids = tok.encode(text, false);
        if (ids.size() < need) {
          ++too_short;
          continue;
        }
        const std::size_t off = test ? 0 : ids.size() - need;
        sample s;
        s.task = task, s.context = o.kl_prefix;
        std::snprintf(buf, sizeof buf, "kl-%zu-x%zu-%s", o.kl_prefix, o.kl_positions, t.name.c_str());
        s.id = buf;
        s.prompt.assign(ids.begin() + static_cast<std::ptrdiff_t>(off), ids.begin() + static_cast<std::ptrdiff_t>(off + o.kl_prefix));
        s.forced.assign(ids.begin() + static_cast<std::ptrdiff_t>(off + o.kl_prefix), ids.begin() + static_cast<std::ptrdiff_t>(off + need));
        out.push_back(std::move(s));
        ++taken;
      }
      if (taken == 0) die("no text is long enough for --kl-prefix + --kl-positions (" + std::to_string(need) + " tokens)");
      if (too_short && !o.quiet)
        std::fprintf(stderr, "heterocache-eval: kl: %zu texts of %zu tokens, %zu shorter texts skipped\n", taken, need, too_short);
    }
  }
  std::set<std::string> ids;
  for (auto& s : out) {
    s.split = split_name(o.split);
    // Passkey samples are named (and seeded) by their depth in whole percents: two depths closer than that
    // would be one sample twice.
    if (!ids.insert(s.id).second) die(s.id + ": two samples of the same name (passkey --depths closer than 0.01?)");
    // A generation too short for the expected answer scores a correct model wrong (a generator's bug).
    if (!s.forced.empty() || s.expected.empty()) continue;
    if (const std::size_t need = hceval::answer_tokens(tok, s.expected); s.max_new < need)
      die(s.id + ": max_new " + std::to_string(s.max_new) + " leaves no room for the expected answer (" +
          std::to_string(need) + " tokens)");
  }
  return out;
}

// ---- CSV ------------------------------------------------------------------------------------------------

// kv_read_bytes: hot-tier bytes resident (decode_cache::resident_bytes(), keys and values) averaged over the
// decode steps, what each step's attention reads; cold_to_hot_bytes: bytes moved cold -> hot
// (decode_cache::counters().retrieved) during the decode, per decode step.
const char* const csv_header =
    "task,split,sample,policy,budget,context,depth,ratio,resident_tokens,hot_fraction,correct,score,kl,top1,"
    "max_logit_diff,same_as_full,kv_read_bytes,cold_to_hot_bytes,answer,expected,seconds,status";

// The length of the well-formed UTF-8 sequence at s[i] (1 to 4), or 0 if the bytes there are not one.
std::size_t utf8_sequence_length(const std::string& s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b = byte(i);
  if (b < 0x80) return 1;
  const std::size_t n = b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k)
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
  const unsigned char c = byte(i + 1);
  if ((b == 0xe0 && c < 0xa0) || (b == 0xed && c > 0x9f) || (b == 0xf0 && c < 0x90) || (b == 0xf4 && c > 0x8f)) return 0;
  return n;
}

// A CSV field: quoted, line breaks as spaces, and valid UTF-8 (a generated answer may stop inside a
// character, its byte tokens cut: each such byte becomes U+FFFD).
std::string csv_quote(const std::string& s) {
  std::string q = "\"";
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_sequence_length(s, i);
    if (n == 0) {
      q += "\xef\xbf\xbd";
      ++i;
      continue;
    }
    if (s[i] == '"') q += '"';
    q += (s[i] == '\n' || s[i] == '\r') ? std::string(" ") : s.substr(i, n);
    i += n;
  }
  return q + "\"";
}

std::set<std::string> read_done(const std::string& path) {
  std::set<std::string> done;
  std::ifstream in(path);
  std::string line;
  bool first = true;
  while (std::getline(in, line)) {
    if (first && !line.empty()) {
      first = false;
      if (line != csv_header)
        die("'" + path + "' has other columns than this heterocache-eval writes (an older version's file?): give a new "
            "--out (rows are resumed only from a file with the header\n  " + csv_header + ")");
      continue;
    }
    std::size_t p = 0;
    for (int i = 0; i < 5 && p != std::string::npos; ++i) p = line.find(',', p + 1);
    if (p != std::string::npos) done.insert(line.substr(0, p));
  }
  return done;
}

struct config {
  std::string policy;
  budget_spec budget;
  std::string budget_label() const { return policy == "full" ? "full" : budget.label; }
};

std::string row_key(const sample& s, const config& c) {
  return s.task + "," + s.split + "," + s.id + "," + c.policy + "," + c.budget_label();
}

// ---- progress -------------------------------------------------------------------------------------------

struct progress_bar {
  double total = 1, done = 0;
  clock_type::time_point start = clock_type::now();
  bool quiet = false;
  std::string label;
  void add(double units) {
    done += units;
    show();
  }
  void show() const {
    if (quiet) return;
    const double f = std::min(1.0, done / std::max(total, 1e-9));
    const double el = seconds_since(start);
    const double eta = f > 1e-3 ? el * (1.0 - f) / f : 0.0;
    char bar[31];
    const int w = static_cast<int>(f * 30);
    for (int i = 0; i < 30; ++i) bar[i] = i < w ? '#' : '.';
    bar[30] = 0;
    std::fprintf(stderr, "\r[%s] %5.1f%% %6.0fs elapsed, ETA %6.0fs  %-40.40s", bar, 100 * f, el, eta, label.c_str());
    std::fflush(stderr);
  }
};

// Work units (about seconds of one core-pair): prefill grows with T(1 + T/6000), a stream-step with T.
double prefill_units(std::size_t t) { return static_cast<double>(t) * (1.0 + static_cast<double>(t) / 6000.0) / 150.0; }
double step_units(std::size_t t, std::size_t streams) {
  return 0.05 + static_cast<double>(streams) * (0.01 + static_cast<double>(t) / 400000.0);
}

// ---- evaluation -----------------------------------------------------------------------------------------

double log_softmax_into(const float* logits, std::size_t n, std::vector<double>& out) {
  out.resize(n);
  const float mx = *std::max_element(logits, logits + n);
  double sum = 0;
  for (std::size_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i] - mx));
  const double lse = static_cast<double>(mx) + std::log(sum);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<double>(logits[i]) - lse;
  return lse;
}

struct stream_result {
  std::vector<std::int32_t> ids;
  bool stopped = false;
  double kl_sum = 0, max_diff = 0;
  std::size_t top1 = 0, positions = 0;
  std::uint64_t resident = 0;
  std::string status = "ok";
  // cost: resident hot bytes summed over the decode steps, cold -> hot bytes at the end of the prefill
  double resident_bytes_sum = 0;
  std::size_t cost_steps = 0;
  std::uint64_t retrieved_after_prefill = 0;
};

struct eval_state {
  const options& o;
  const llama_model& model;
  const tokenizer& tok;
  std::optional<heterocache::head_profile> profile;
  std::ofstream csv;
  progress_bar bar;
  int exact_failures = 0;
  double prefill_s = 0, build_s = 0, decode_s = 0;
};

std::string answer_text(const tokenizer& tok, const std::vector<std::int32_t>& ids) {
  std::string s;
  for (auto id : ids) {
    if (tok.is_end_of_turn(id)) break;
    s += tok.token_text(id);
  }
  for (auto& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

// Fraction of `expected` found in `answer`, each after the previous one.
double ordered_score(const std::string& answer, const std::vector<std::string>& expected) {
  std::size_t pos = 0, found = 0;
  for (const auto& e : expected) {
    const auto p = answer.find(e, pos);
    if (p == std::string::npos) continue;
    ++found;
    pos = p + e.size();
  }
  return expected.empty() ? 0.0 : static_cast<double>(found) / static_cast<double>(expected.size());
}

std::size_t bytes_per_stream(const llama_config& c, std::size_t t, std::size_t steps) {
  // cold tier (whole prompt, the engine's element) + hot tier (at most the whole prompt, at most fp32) + decode
  // tokens, K and V
  return 2 * c.n_layer * c.n_head_kv * c.head_dim * ((sizeof(kv_element) + sizeof(float)) * t + sizeof(float) * steps) +
         64 * t;
}

void run_sample(eval_state& st, const sample& s, const std::vector<config>& pending, double sample_units) {
  const auto& cfg = st.model.config();
  const std::size_t T = s.prompt.size();
  const bool kl = s.task == "kl";
  const std::size_t steps = kl ? s.forced.size() : s.max_new - 1;  // decode steps
  const std::size_t stride = steps + 1;
  const std::size_t budget_bytes = static_cast<std::size_t>(st.o.memory_gib * 1073741824.0);
  // The streams that fit in --memory-gib, one of them the prompt's own (at least one policy per chunk, however
  // small the budget: a budget below one stream runs the policies one at a time, never none).
  const std::size_t fitting_streams = budget_bytes / bytes_per_stream(cfg, T, stride);
  const std::size_t per_chunk =
      std::max<std::size_t>(1, std::min<std::size_t>(pending.size(), fitting_streams > 1 ? fitting_streams - 1 : 1));
  const std::size_t chunks = (pending.size() + per_chunk - 1) / per_chunk;
  const std::size_t max_streams = per_chunk + 1;

  const double pre_u = prefill_units(T);
  const auto t0 = clock_type::now();
  st.bar.label = s.id + " prefill " + std::to_string(T);
  st.bar.show();
  llama_context ctx(st.model, T + max_streams * stride + 1, nullptr, static_cast<std::size_t>(st.o.threads));
  ctx.keep_prefill_state = true;
  ctx.window = st.o.window;
  ctx.set_activations(st.o.activations);
  ctx.eval(s.prompt);
  const double prefill_s = seconds_since(t0);
  st.prefill_s += prefill_s;
  st.bar.add(pre_u);
  const double step_u_total = sample_units - pre_u;

  const std::size_t V = cfg.n_vocab;
  std::vector<double> lp_full, lp;
  for (std::size_t ch = 0; ch < chunks; ++ch) {
    const auto t_chunk = clock_type::now();
    const std::size_t first = ch * per_chunk, n = std::min(per_chunk, pending.size() - first);
    // stream 0: the full-cache reference; streams 1..n: pending[first + i]
    std::vector<std::unique_ptr<decode_cache>> caches(n + 1);
    std::vector<stream_result> res(n + 1);
    std::vector<const config*> conf(n + 1, nullptr);
    std::vector<cache_config> ccs(n + 1);
    for (std::size_t i = 0; i <= n; ++i) {
      cache_config& cc = ccs[i];
      cc.format = st.o.format;
      if (i == 0) {
        cc.policy = "full";
        if (st.o.reference_format) cc.format = *st.o.reference_format;
      } else {
        conf[i] = &pending[first + i - 1];
        cc.policy = conf[i]->policy;
        cc.budget = conf[i]->budget.ratio;
        cc.budget_tokens = conf[i]->budget.tokens;
        if (policy_uses_profile(cc.policy)) cc.profile = st.profile;
        if (cc.policy == "heterocache-floor") cc.min_compressed_share = st.o.hc_floor;  // 0: the name's default
      }
    }
    // Build and prefill the caches, several at a time (each reads the shared prompt K/V, writes only itself).
    const auto t_build = clock_type::now();
    std::vector<std::string> errors(n + 1);
    const auto build = [&](std::size_t i) {
      try {
        auto c = make_decode_cache(cfg, ccs[i], T, stride);
        ctx.prefill_cache(*c);
        res[i].resident = c->resident_tokens();
        res[i].retrieved_after_prefill = c->counters().retrieved;
        caches[i] = std::move(c);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    };
    {
      const std::size_t workers = std::min<std::size_t>(static_cast<std::size_t>(st.o.threads), n + 1);
      std::vector<std::thread> pool;
      for (std::size_t w = 1; w < workers; ++w)
        pool.emplace_back([&, w] {
          for (std::size_t i = w; i <= n; i += workers) build(i);
        });
      for (std::size_t i = 0; i <= n; i += workers) build(i);
      for (auto& t : pool) t.join();
    }
    if (!caches[0]) throw std::runtime_error("the full-cache reference: " + errors[0]);
    for (std::size_t i = 1; i <= n; ++i)
      if (!caches[i]) res[i].status = "error: " + errors[i];
    st.build_s += seconds_since(t_build);
    const auto t_decode = clock_type::now();
    std::vector<decode_cache*> live;
    std::vector<std::size_t> live_index;
    for (std::size_t i = 0; i <= n; ++i)
      if (caches[i]) live.push_back(caches[i].get()), live_index.push_back(i);
    const std::size_t B = live.size();
    std::vector<float> logits(B * V);
    std::vector<std::int32_t> tokens(B);
    // step -1: every stream starts from the prompt logits (the prefill is full attention)
    for (std::size_t b = 0; b < B; ++b) {
      std::copy(ctx.prompt_logits().begin(), ctx.prompt_logits().end(), logits.begin() + static_cast<std::ptrdiff_t>(b * V));
      auto& r = res[live_index[b]];
      if (!kl) r.ids.push_back(argmax(ctx.prompt_logits()));
    }
    const double unit_per_step = step_u_total / static_cast<double>(chunks) / static_cast<double>(std::max<std::size_t>(steps, 1));
    for (std::size_t j = 0; j < steps; ++j) {
      bool all_stopped = !kl;
      for (std::size_t b = 0; b < B; ++b) {
        auto& r = res[live_index[b]];
        tokens[b] = kl ? s.forced[j] : r.ids.back();
        if (!kl && !r.stopped && st.tok.is_end_of_turn(r.ids.back())) r.stopped = true;
        all_stopped = all_stopped && r.stopped;
      }
      if (all_stopped) break;
      st.bar.label = s.id + " batch " + std::to_string(ch + 1) + "/" + std::to_string(chunks) + " step " + std::to_string(j + 1);
      ctx.decode_batch(live, tokens, j, stride, logits.data());
      for (std::size_t b = 0; b < B; ++b) {
        auto& r = res[live_index[b]];
        r.resident_bytes_sum += static_cast<double>(live[b]->resident_bytes());
        ++r.cost_steps;
      }
      if (kl) {
        log_softmax_into(logits.data(), V, lp_full);
        const auto full_top = std::max_element(logits.begin(), logits.begin() + static_cast<std::ptrdiff_t>(V)) - logits.begin();
        for (std::size_t b = 0; b < B; ++b) {
          auto& r = res[live_index[b]];
          const float* lb = logits.data() + b * V;
          log_softmax_into(lb, V, lp);
          double k = 0, md = 0;
          for (std::size_t v = 0; v < V; ++v) {
            k += std::exp(lp_full[v]) * (lp_full[v] - lp[v]);
            md = std::max(md, static_cast<double>(std::fabs(lb[v] - logits[v])));
          }
          r.kl_sum += std::max(0.0, k);
          r.max_diff = std::max(r.max_diff, md);
          r.top1 += (std::max_element(lb, lb + V) - lb) == full_top;
          ++r.positions;
        }
      } else {
        for (std::size_t b = 0; b < B; ++b) {
          auto& r = res[live_index[b]];
          const float* lb = logits.data() + b * V;
          for (std::size_t v = 0; v < V; ++v)
            r.max_diff = std::max(r.max_diff, static_cast<double>(std::fabs(lb[v] - logits[v])));
          if (!r.stopped) r.ids.push_back(argmax(std::span<const float>(lb, V)));
        }
      }
      st.bar.add(unit_per_step);
    }
    // rows
    const double chunk_s = seconds_since(t_chunk);
    st.decode_s += seconds_since(t_decode);
    const std::string full_answer = kl ? "" : answer_text(st.tok, res[0].ids);
    for (std::size_t i = 1; i <= n; ++i) {
      const config& c = *conf[i];
      const auto& r = res[i];
      cache_config cc;
      cc.policy = c.policy, cc.budget = c.budget.ratio, cc.budget_tokens = c.budget.tokens;
      const double ratio = effective_ratio(cc, T);
      const double hot = static_cast<double>(r.resident) / static_cast<double>(cfg.n_layer * cfg.n_head_kv * T);
      std::string answer, expected;
      double score = 0, kl_mean = 0, top1 = 0;
      int correct = 0, same = 0;
      if (kl) {
        kl_mean = r.positions ? r.kl_sum / static_cast<double>(r.positions) : NAN;
        top1 = r.positions ? static_cast<double>(r.top1) / static_cast<double>(r.positions) : NAN;
        same = r.positions > 0 && r.top1 == r.positions;
      } else {
        answer = answer_text(st.tok, r.ids);
        for (auto& e : s.expected) expected += (expected.empty() ? "" : " ") + e;
        score = s.unordered ? hceval::unordered_score(answer, s.expected) : ordered_score(answer, s.expected);
        correct = score >= 1.0;
        same = answer == full_answer && r.status == "ok";
      }
      const bool ok = r.status == "ok";
      double kv_read = NAN, moved = NAN;
      if (ok && caches[i]) {
        if (r.cost_steps) {
          kv_read = r.resident_bytes_sum / static_cast<double>(r.cost_steps);
          moved = static_cast<double>(caches[i]->counters().retrieved - r.retrieved_after_prefill) / static_cast<double>(r.cost_steps);
        } else {  // no decode step (a one-token answer): what the next step would read
          kv_read = static_cast<double>(caches[i]->resident_bytes());
          moved = 0;
        }
      }
      char line[512];
      std::snprintf(line, sizeof line, "%s,%zu,%.2f,%.6g,%llu,%.6f,%d,%.4f,%.6g,%.6g,%.3g,%d,", row_key(s, c).c_str(), T, s.depth,
                    ratio, static_cast<unsigned long long>(r.resident), hot, ok ? correct : 0, ok ? score : 0.0,
                    ok ? (kl ? kl_mean : NAN) : NAN, ok ? (kl ? top1 : NAN) : NAN, ok ? r.max_diff : NAN, same);
      std::snprintf(line + std::strlen(line), sizeof line - std::strlen(line), "%.6g,%.6g,", kv_read, moved);
      st.csv << line << csv_quote(answer) << ',' << csv_quote(expected) << ',';
      // this row's share of the sample's wall time: the prefill split over all its rows, the batch over the batch's
      std::snprintf(line, sizeof line, "%.2f", prefill_s / static_cast<double>(pending.size()) + chunk_s / static_cast<double>(n));
      st.csv << line << ',' << csv_quote(r.status) << '\n';
      if (st.o.check_exact && c.policy != "full" && c.budget.tokens == 0 && c.budget.ratio == 1.0) {
        const bool exact = ok && same && r.resident == res[0].resident && r.max_diff == 0.0 && (!kl || kl_mean == 0.0);
        if (!exact) {
          ++st.exact_failures;
          std::fprintf(stderr, "\nEXACTNESS FAILURE: %s %s at r=1: status '%s', hot tokens %llu of %llu, same as full %d, "
                       "KL %.3g, max |logit diff| %.3g%s%s\n",
                       s.id.c_str(), c.policy.c_str(), r.status.c_str(), static_cast<unsigned long long>(r.resident),
                       static_cast<unsigned long long>(res[0].resident), same, kl_mean, r.max_diff,
                       kl ? "" : ", answer: ", kl ? "" : answer.c_str());
        }
      }
    }
    st.csv.flush();
  }
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  try {
    const gguf_file file = gguf_file::open(o.model);
    const tokenizer tok(file);
    const llama_model model(file);
    {
      // Every prompt (and the KL prefix with its forced tokens) must fit in memory: the engine's K/V and the
      // caches' hot tiers, as heterocache-llama counts them.
      const auto& c = model.config();
      const auto limit = cli::tokens_in_memory(2 * (2 * c.n_layer * c.n_head_kv * c.head_dim * sizeof(float)) + 4096, max_tokens);
      auto check = [&](const char* flag, std::size_t n, std::size_t extra) {
        if (n + extra > limit.tokens)
          die("invalid " + std::string(flag) + " '" + std::to_string(n) + "': out of range, expected an integer in " +
              cli::range_text<std::size_t>(64, limit.tokens > extra + 64 ? limit.tokens - extra : 64) +
              limit.why("prompt + decoded tokens at most " + std::to_string(limit.tokens)));
      };
      for (auto n : o.passkey_contexts) check("--contexts", n, 64);
      for (auto n : o.needle_contexts) check("--needle-contexts", n, 64);
      for (auto n : o.ruler_contexts) check("--ruler-contexts", n, 64);
      check("--kl-prefix", o.kl_prefix, o.kl_positions + 1);
    }
    eval_state st{o, model, tok, std::nullopt, {}, {}, 0};
    if (std::any_of(o.policies.begin(), o.policies.end(), [](const std::string& p) { return policy_uses_profile(p); })) {
      if (o.profile.empty()) std::fprintf(stderr, "heterocache-eval: note: no profile: heterocache/duo profile online\n");
      else st.profile = heterocache::load_profile(o.profile);
    }

    std::vector<config> configs;
    for (const auto& p : o.policies) {
      if (p == "full") configs.push_back({p, parse_budget("r1")});
      else
        for (const auto& b : o.budgets) configs.push_back({p, b});
    }
    const auto samples = make_samples(o, tok);
    if (!o.dump_prompts.empty()) {
      std::ofstream d(o.dump_prompts);
      for (const auto& s : samples) {
        d << "=== " << s.task << ' ' << s.split << ' ' << s.id << ": " << s.prompt.size() << " tokens, depth " << s.depth
          << ", max_new " << s.max_new << ", expected:";
        for (const auto& e : s.expected) d << ' ' << e;
        d << "\n" << tok.decode(s.prompt) << "\n";
        if (!s.forced.empty()) d << "--- forced:\n" << tok.decode(s.forced) << "\n";
      }
      std::fprintf(stderr, "heterocache-eval: %zu prompts -> %s\n", samples.size(), o.dump_prompts.c_str());
      return 0;
    }
    const std::set<std::string> done = read_done(o.out);
    const bool fresh = !fs::exists(o.out) || fs::file_size(o.out) == 0;
    if (const auto dir = fs::path(o.out).parent_path(); !dir.empty()) fs::create_directories(dir);
    st.csv.open(o.out, std::ios::app);
    if (!st.csv) die("cannot open '" + o.out + "'");
    if (fresh) st.csv << csv_header << '\n';

    std::vector<std::vector<config>> pending(samples.size());
    std::vector<double> units(samples.size(), 0.0);
    std::size_t rows = 0;
    for (std::size_t i = 0; i < samples.size(); ++i) {
      for (const auto& c : configs)
        if (!done.count(row_key(samples[i], c))) pending[i].push_back(c);
      if (pending[i].empty()) continue;
      rows += pending[i].size();
      const std::size_t T = samples[i].prompt.size();
      const std::size_t steps = samples[i].task == "kl" ? samples[i].forced.size() : samples[i].max_new - 1;
      units[i] = prefill_units(T) + static_cast<double>(steps) * step_units(T, pending[i].size() + 1);
      st.bar.total += units[i];
    }
    st.bar.quiet = o.quiet;
    std::fprintf(stderr, "heterocache-eval: %zu samples, %zu policy x budget configs, %zu rows to run (%zu already in %s), %d threads\n",
                 samples.size(), configs.size(), rows, done.size(), o.out.c_str(), o.threads);
    const auto t0 = clock_type::now();
    for (std::size_t i = 0; i < samples.size(); ++i)
      if (!pending[i].empty()) run_sample(st, samples[i], pending[i], units[i]);
    st.bar.done = st.bar.total;
    st.bar.label = "done";
    st.bar.show();
    std::fprintf(stderr, "\nheterocache-eval: %zu rows in %.1f s -> %s (prompt prefill %.1f s, cache build %.1f s, decode %.1f s)\n",
                 rows, seconds_since(t0), o.out.c_str(), st.prefill_s, st.build_s, st.decode_s);
    if (o.check_exact) {
      if (st.exact_failures > 0) {
        std::fprintf(stderr, "heterocache-eval: %d policy runs at r=1 differ from the full cache\n", st.exact_failures);
        return 3;
      }
      std::fprintf(stderr, "heterocache-eval: every policy at r=1 reproduces the full cache exactly\n");
    }
    return 0;
  } catch (const std::bad_alloc&) {
    die("out of memory (std::bad_alloc): smaller --contexts, --needle-contexts, --kl-prefix or --memory-gib need less");
  } catch (const std::exception& e) {
    die(e.what());
  }
}
