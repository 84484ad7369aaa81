#include "prompts.hpp"

#include <random>
#include <stdexcept>
#include <vector>

namespace hcllama {

namespace {

const char* const varied_sentences[] = {
    "The morning train left the station a few minutes late. ",
    "A small boat drifted slowly along the quiet river. ",
    "The library closes early on public holidays. ",
    "Fresh bread was cooling on the kitchen table. ",
    "The children played football in the park until sunset. ",
    "An old clock ticked steadily in the hallway. ",
    "The farmer checked the fence around the north field. ",
    "Rain tapped gently against the office windows. ",
    "The museum opened a new room for ancient maps. ",
    "A cat slept in a patch of warm sunlight. ",
    "The baker added a pinch of salt to the dough. ",
    "Snow covered the mountain road during the night. ",
    "The choir practised the same song three times. ",
    "A gardener planted tulips along the garden path. ",
    "The market was busy with people buying vegetables. ",
    "Two friends talked about their favourite books over tea. ",
};

}  // namespace

passkey_prompt build_passkey_prompt(const tokenizer& tok, std::size_t target_tokens, std::uint64_t seed,
                                    std::optional<double> depth, int style) {
  // The callers check their flags; these keep the arithmetic below defined whatever the caller passes.
  if (depth && !(*depth >= 0.0 && *depth <= 1.0))  // also NaN
    throw std::invalid_argument("passkey depth " + std::to_string(*depth) + " is not in [0, 1]");
  if (style < 0 || style >= passkey_styles)
    throw std::invalid_argument("passkey style " + std::to_string(style) + " is not in [0, " + std::to_string(passkey_styles - 1) + "]");
  if (target_tokens > max_passkey_tokens)
    throw std::invalid_argument("passkey prompt of " + std::to_string(target_tokens) + " tokens: at most " +
                                std::to_string(max_passkey_tokens));
  std::mt19937_64 rng(seed);
  passkey_prompt p;
  p.key = std::to_string(std::uniform_int_distribution<int>(10000, 99999)(rng));
  p.depth = depth ? *depth : std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  const bool chat = style == 0 || style == 2;
  const bool varied = style == 2 || style == 3;
  const std::string intro =
      "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
      "I will quiz you about the important information there.\n\n";
  const std::string classic = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
  // filler unit i (the varied filler is a fixed pseudo-random sequence of sentences)
  std::vector<std::string> units;
  auto unit = [&](std::size_t i) -> const std::string& {
    while (units.size() <= i) {
      if (!varied) {
        units.push_back(classic);
      } else {
        std::mt19937_64 r(seed * 1000003u + units.size());
        constexpr std::size_t n = sizeof(varied_sentences) / sizeof(varied_sentences[0]);
        units.push_back(std::string(varied_sentences[r() % n]) + varied_sentences[r() % n]);
      }
    }
    return units[i];
  };
  const std::string needle = "The pass key is " + p.key + ". Remember it. " + p.key + " is the pass key. ";
  const std::string question = "\n\nWhat is the pass key?";
  const std::string answer_prefix = chat ? "The pass key is" : " The pass key is";
  auto assemble = [&](std::size_t reps, std::size_t before) {
    std::string user = intro;
    for (std::size_t i = 0; i < before; ++i) user += unit(i);
    user += needle;
    for (std::size_t i = before; i < reps; ++i) user += unit(i);
    user += question;
    return chat ? tok.apply_chat_template({{"user", user}}, true) + answer_prefix : user + answer_prefix;
  };
  const std::size_t overhead = tok.encode(assemble(0, 0)).size();
  std::size_t per = 0;
  for (std::size_t i = 0; i < 8; ++i) per += tok.encode(unit(i)).size();
  per = std::max<std::size_t>(1, per / 8);
  std::size_t reps = target_tokens > overhead ? (target_tokens - overhead) / per : 0;
  // trim so that the prompt does not exceed the target
  for (;;) {
    const auto before = static_cast<std::size_t>(p.depth * static_cast<double>(reps) + 0.5);
    p.text = assemble(reps, std::min(before, reps));
    if (reps == 0 || tok.encode(p.text).size() <= target_tokens) break;
    --reps;
  }
  return p;
}

}  // namespace hcllama
