// RULER-style synthetic tasks for heterocache-eval (after the task definitions of Hsieh et al., "RULER: What's
// the Real Context Size of Your Long-Context Language Models?", 2024; the generators, wording and word lists
// are this project's own). Every prompt is deterministic in (split, seed, task, context length, sample index):
// task_seed mixes them with splitmix64, and the generator draws from its own counter-free PRNG (no standard
// library distribution, whose output is implementation-defined).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer.hpp"

namespace hceval {

// splitmix64 and the generators' PRNG.
std::uint64_t splitmix64(std::uint64_t& state);
std::uint64_t fnv1a(std::string_view s);

struct rng {
  std::uint64_t state;
  explicit rng(std::uint64_t seed) : state(seed) {}
  std::uint64_t next() { return splitmix64(state); }
  std::size_t below(std::size_t n);  // uniform in [0, n), n > 0
  double unit();                     // uniform in [0, 1)
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }
};

enum class split_kind { test = 0, dev = 1 };

// The generator seed of one sample: dev and test seeds never coincide for the same (seed, task, context, index)
// (the split is mixed in first), and every field changes the seed.
std::uint64_t task_seed(split_kind split, std::uint64_t seed, std::string_view task, std::size_t context,
                        std::size_t index);

// niah-words, niah-numbers, niah-uuids, multivalue, multiquery, vartrack, cwe
const std::vector<std::string>& ruler_task_names();
bool is_ruler_task(std::string_view name);

// The filler: real sentences (texts.hpp) with their token counts, counted once.
struct filler {
  std::vector<std::string> sentences;
  std::vector<std::size_t> tokens;  // of " " + sentence
  filler(std::vector<std::string> s, const hcllama::tokenizer& tok);
};

struct task_prompt {
  std::string text;
  std::vector<std::string> expected;  // the values the answer should contain (any order)
  std::size_t max_new = 0;            // tokens generated
  double depth = -1;                  // single needle: its depth in [0, 1]; otherwise -1
};

// A prompt of at most `context` tokens (as tok.encode counts them) for `task`.
task_prompt make_ruler_prompt(std::string_view task, const hcllama::tokenizer& tok, const filler& fill,
                              std::size_t context, std::uint64_t seed);

// Tokens of the shortest answer that states every value once: " v1, v2, ... vn." (a task's max_new must leave
// at least this much room, or correct answers are cut short and scored wrong).
std::size_t answer_tokens(const hcllama::tokenizer& tok, const std::vector<std::string>& values);

// Fraction of `expected` found in `answer`, in any order, each as a whole word (case-insensitive; the
// characters either side of a match are not letters or digits).
double unordered_score(const std::string& answer, const std::vector<std::string>& expected);

}  // namespace hceval
