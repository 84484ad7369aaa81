#include "tasks.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <stdexcept>

namespace hceval {

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

std::size_t rng::below(std::size_t n) {
  // rejection sampling: no modulo bias
  const std::uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  for (;;) {
    const std::uint64_t x = next();
    if (x < limit) return static_cast<std::size_t>(x % n);
  }
}

double rng::unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

std::uint64_t task_seed(split_kind split, std::uint64_t seed, std::string_view task, std::size_t context,
                        std::size_t index) {
  std::uint64_t s = 0x68657465726f6361ULL ^ static_cast<std::uint64_t>(split);
  std::uint64_t h = splitmix64(s);
  for (std::uint64_t field : {seed, fnv1a(task), static_cast<std::uint64_t>(context), static_cast<std::uint64_t>(index)}) {
    s = h ^ field;
    h = splitmix64(s);
  }
  return h;
}

const std::vector<std::string>& ruler_task_names() {
  static const std::vector<std::string> n = {"niah-words", "niah-numbers", "niah-uuids", "multivalue",
                                             "multiquery", "vartrack",     "cwe"};
  return n;
}

bool is_ruler_task(std::string_view name) {
  const auto& n = ruler_task_names();
  return std::find(n.begin(), n.end(), name) != n.end();
}

filler::filler(std::vector<std::string> s, const hcllama::tokenizer& tok) : sentences(std::move(s)) {
  if (sentences.empty()) throw std::runtime_error("no filler sentences");
  tokens.reserve(sentences.size());
  for (const auto& x : sentences) tokens.push_back(tok.encode(" " + x, false).size());
}

namespace {

// Keys of the needles (adjective-noun), values of niah-words, and the words of cwe: three disjoint lists.
const char* const key_adjectives[] = {
    "amber",  "brave",  "calm",   "dusty",  "eager",  "fancy",  "gentle", "hollow", "icy",    "jolly",
    "kind",   "lively", "mellow", "narrow", "odd",    "proud",  "quiet",  "rapid",  "silent", "tidy",
    "urban",  "vast",   "windy",  "young",  "zesty",  "bold",   "crisp",  "deep",   "early",  "faint",
    "grand",  "humble", "loyal",  "misty",  "noble",  "plain",  "rough",  "sandy",  "tender", "warm"};
const char* const key_nouns[] = {
    "harbor", "meadow", "lantern", "canyon", "orchard", "glacier", "village", "compass", "feather", "thunder",
    "island", "garden", "bridge",  "forest", "valley",  "castle",  "market",  "pillar",  "candle",  "anchor",
    "basket", "cellar", "desert",  "engine", "fountain", "galaxy", "helmet",  "jacket",  "kettle",  "ladder",
    "mirror", "needle", "oyster",  "parrot", "quarry",  "rocket",  "saddle",  "tunnel",  "violin",  "wagon"};
const char* const value_words[] = {
    "apricot", "blizzard", "cinnamon", "dolphin",  "eclipse", "flamingo", "gazelle",  "horizon",  "igloo",
    "jasmine", "kangaroo", "lemonade", "mushroom", "nectar",  "octopus",  "pelican",  "quartz",   "raspberry",
    "sapphire", "tornado", "umbrella", "volcano",  "walrus",  "xylophone", "yogurt",  "zeppelin", "avocado",
    "butterfly", "cactus", "dragonfly", "emerald", "falcon",  "giraffe",  "hedgehog", "iceberg",  "jellyfish",
    "koala",   "lighthouse", "marble", "nightingale", "orchid", "penguin", "raccoon",  "scorpion", "tulip",
    "unicorn", "vanilla",  "waterfall", "pumpkin", "hamster"};
const char* const cwe_words[] = {
    "table",  "chair",  "river",  "stone",  "cloud",  "bread",  "music",  "paper",  "glass",  "horse",
    "green",  "light",  "water",  "money",  "story",  "train",  "phone",  "plant",  "house",  "night",
    "sugar",  "sheep",  "smile",  "field",  "dream",  "clock",  "shirt",  "fruit",  "beach",  "truck",
    "heart",  "world",  "power",  "sound",  "voice",  "storm",  "space",  "metal",  "color",  "north",
    "south",  "earth",  "ocean",  "coast",  "grass",  "snake",  "tiger",  "eagle",  "whale",  "mouse",
    "apple",  "grape",  "lemon",  "onion",  "honey",  "juice",  "pizza",  "salad",  "toast",  "candy",
    "queen",  "king",   "pilot",  "nurse",  "judge",  "actor",  "baker",  "coach",  "guard",  "guide",
    "radio",  "video",  "movie",  "piano",  "drum",   "flute",  "guitar", "opera",  "dance",  "poem",
    "brick",  "fence",  "gate",   "roof",   "floor",  "wall",   "door",   "window", "stairs", "porch",
    "boat",   "ship",   "plane",  "wheel",  "road",   "street", "track",  "path",   "trail",  "lane",
    "winter", "summer", "spring", "autumn", "morning", "evening", "noon", "week",   "month",  "year",
    "red",    "blue",   "yellow", "purple", "orange", "silver", "golden", "black",  "white",  "brown",
    "cat",    "dog",    "bird",   "fish",   "frog",   "duck",   "goat",   "wolf",   "bear",   "deer",
    "book",   "pen",    "desk",   "lamp",   "bed",    "sofa",   "rug",    "cup",    "plate",  "spoon",
    "fork",   "knife",  "bowl",   "pan",    "pot",    "oven",   "sink",   "soap",   "towel",  "brush",
    "hill",   "lake",   "pond",   "cave",   "rock",   "sand",   "dust",   "mud",    "ice",    "snow",
    "rain",   "wind",   "fire",   "smoke",  "flame",  "spark",  "star",   "moon",   "sun",    "sky",
    "hand",   "foot",   "head",   "nose",   "ear",    "eye",    "mouth",  "tooth",  "hair",   "skin",
    "coin",   "card",   "gift",   "box",    "bag",    "key",    "lock",   "ring",   "rope",   "chain",
    "salt",   "rice",   "corn",   "bean",   "milk",   "cream",  "butter", "cheese", "meat",   "egg"};

template <class T, std::size_t N>
constexpr std::size_t count_of(const T (&)[N]) {
  return N;
}

std::string pick_key(rng& r, std::vector<std::string>& used) {
  for (;;) {
    std::string k = std::string(key_adjectives[r.below(count_of(key_adjectives))]) + "-" +
                    key_nouns[r.below(count_of(key_nouns))];
    if (std::find(used.begin(), used.end(), k) == used.end()) {
      used.push_back(k);
      return k;
    }
  }
}

std::string digits(rng& r, int n) {
  std::string s(1, static_cast<char>('1' + r.below(9)));
  while (static_cast<int>(s.size()) < n) s += static_cast<char>('0' + r.below(10));
  return s;
}

std::string uuid(rng& r) {
  static const char hex[] = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 32; ++i) {
    if (i == 8 || i == 12 || i == 16 || i == 20) s += '-';
    s += hex[r.below(16)];
  }
  return s;
}

std::string upper_name(rng& r, std::vector<std::string>& used) {
  for (;;) {
    std::string s;
    for (int i = 0; i < 5; ++i) s += static_cast<char>('A' + r.below(26));
    if (std::find(used.begin(), used.end(), s) == used.end()) {
      used.push_back(s);
      return s;
    }
  }
}

// intro + a run of consecutive filler sentences (from a seeded start, wrapping) with `inserts` placed at their
// depths (sorted by depth, each before the sentence at round(depth * n)), + tail, at most `target` tokens.
std::string haystack(const hcllama::tokenizer& tok, const filler& f, rng& r, std::size_t target,
                     const std::string& intro, std::vector<std::pair<double, std::string>> inserts,
                     const std::string& tail) {
  std::stable_sort(inserts.begin(), inserts.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  const std::size_t first = r.below(f.sentences.size());
  auto assemble = [&](std::size_t n) {
    std::string s = intro;
    std::size_t k = 0;
    for (std::size_t i = 0; i <= n; ++i) {
      while (k < inserts.size() && static_cast<std::size_t>(inserts[k].first * static_cast<double>(n) + 0.5) <= i) {
        if (!s.empty() && s.back() != '\n') s += ' ';
        s += inserts[k++].second;
      }
      if (i < n) {
        if (!s.empty() && s.back() != '\n') s += ' ';
        s += f.sentences[(first + i) % f.sentences.size()];
      }
    }
    return s + tail;
  };
  const std::size_t overhead = tok.encode(assemble(0)).size();
  std::size_t n = 0, total = overhead;
  while (total + f.tokens[(first + n) % f.sentences.size()] <= target) total += f.tokens[(first + n++) % f.sentences.size()];
  for (;;) {
    std::string s = assemble(n);
    const std::size_t t = tok.encode(s).size();
    if (n == 0 || t <= target) return s;
    // drop about the excess (sentences are about 20-60 tokens), at least one
    std::size_t drop = 1;
    for (std::size_t over = t - target, i = n; i > 0 && over > f.tokens[(first + i - 1) % f.sentences.size()]; --i, ++drop)
      over -= f.tokens[(first + i - 1) % f.sentences.size()];
    n -= std::min(n, drop);
  }
}

}  // namespace

std::size_t answer_tokens(const hcllama::tokenizer& tok, const std::vector<std::string>& values) {
  std::string a;
  for (const auto& v : values) a += (a.empty() ? " " : ", ") + v;
  return tok.encode(a + ".", false).size();
}

namespace {

// Depths of k inserts, one in each of k equal slices of the haystack (away from the slice edges).
std::vector<double> spread_depths(rng& r, std::size_t k) {
  std::vector<double> d;
  for (std::size_t i = 0; i < k; ++i) d.push_back((static_cast<double>(i) + 0.1 + 0.8 * r.unit()) / static_cast<double>(k));
  return d;
}

task_prompt niah(const hcllama::tokenizer& tok, const filler& f, rng& r, std::size_t context, const std::string& type) {
  std::vector<std::string> used;
  const std::string key = pick_key(r, used);
  std::string value;
  std::size_t max_new = 12;
  if (type == "word") value = value_words[r.below(count_of(value_words))], max_new = 8;
  else if (type == "number") value = digits(r, 7), max_new = 10;
  // a UUID is about one token per character: room for all of it, whatever the tokenizer makes of it
  else value = uuid(r), max_new = answer_tokens(tok, {value}) + 4;
  task_prompt p;
  p.depth = r.unit();
  const std::string what = "special magic " + type + " for " + key;
  p.text = haystack(tok, f, r, context,
                    "A special magic " + type + " is hidden within the following text. Make sure to memorize it. "
                    "I will quiz you about the " + type + " afterwards.\n\n",
                    {{p.depth, "The " + what + " is: " + value + "."}},
                    "\n\nWhat is the " + what + " mentioned in the provided text? The " + what +
                        " mentioned in the provided text is:");
  p.expected = {value};
  p.max_new = max_new;
  return p;
}

// The haystack of the tasks with several magic numbers (multivalue, multiquery): their intro, the inserts, and
// the question "What are <which>the special magic numbers for <keys> ...", answered "... are:".
std::string magic_numbers_haystack(const hcllama::tokenizer& tok, const filler& f, rng& r, std::size_t context,
                                   const std::vector<std::pair<double, std::string>>& ins, const std::string& which,
                                   const std::string& keys) {
  return haystack(tok, f, r, context,
                  "Some special magic numbers are hidden within the following text. Make sure to memorize them. "
                  "I will quiz you about the numbers afterwards.\n\n",
                  ins,
                  "\n\nWhat are " + which + "the special magic numbers for " + keys +
                      " mentioned in the provided text? The special magic numbers for " + keys +
                      " mentioned in the provided text are:");
}

task_prompt multivalue(const hcllama::tokenizer& tok, const filler& f, rng& r, std::size_t context) {
  std::vector<std::string> used;
  const std::string key = pick_key(r, used);
  task_prompt p;
  std::vector<std::pair<double, std::string>> ins;
  for (double d : spread_depths(r, 4)) {
    std::string v;
    do v = digits(r, 7);
    while (std::find(p.expected.begin(), p.expected.end(), v) != p.expected.end());
    p.expected.push_back(v);
    ins.emplace_back(d, "One of the special magic numbers for " + key + " is: " + v + ".");
  }
  p.text = magic_numbers_haystack(tok, f, r, context, ins, "all ", key);
  p.max_new = 44;
  return p;
}

task_prompt multiquery(const hcllama::tokenizer& tok, const filler& f, rng& r, std::size_t context) {
  std::vector<std::string> keys;
  std::vector<std::string> values;
  std::vector<std::pair<double, std::string>> ins;
  for (double d : spread_depths(r, 4)) {
    const std::string k = pick_key(r, keys);
    values.push_back(digits(r, 7));
    ins.emplace_back(d, "The special magic number for " + k + " is: " + values.back() + ".");
  }
  // two of the four keys, asked in haystack order
  std::vector<std::size_t> idx = {0, 1, 2, 3};
  r.shuffle(idx);
  std::sort(idx.begin(), idx.begin() + 2);
  task_prompt p;
  p.expected = {values[idx[0]], values[idx[1]]};
  const std::string both = keys[idx[0]] + " and " + keys[idx[1]];
  p.text = magic_numbers_haystack(tok, f, r, context, ins, "", both);
  // room for all four inserted values (the model often lists others before the asked ones), as RULER's
  // generous answer length allows
  p.max_new = answer_tokens(tok, values) + 4;
  return p;
}

task_prompt vartrack(const hcllama::tokenizer& tok, const filler& f, rng& r, std::size_t context) {
  // two chains of 4 hops (5 variables each); the first is asked, the other is a distractor
  constexpr std::size_t chains = 2, hops = 4;
  std::vector<std::string> names;
  std::vector<std::string> value(chains);
  std::vector<std::vector<std::string>> chain(chains);
  for (std::size_t c = 0; c < chains; ++c) {
    do value[c] = digits(r, 5);
    while (std::find(value.begin(), value.begin() + static_cast<std::ptrdiff_t>(c), value[c]) !=
           value.begin() + static_cast<std::ptrdiff_t>(c));
    for (std::size_t h = 0; h <= hops; ++h) chain[c].push_back(upper_name(r, names));
  }
  std::vector<std::pair<double, std::string>> ins;
  for (std::size_t c = 0; c < chains; ++c) {
    // the chain's statements in order, at increasing random depths
    std::vector<double> d;
    for (std::size_t h = 0; h <= hops; ++h) d.push_back(r.unit());
    std::sort(d.begin(), d.end());
    for (std::size_t h = 0; h <= hops; ++h)
      ins.emplace_back(d[h], "VAR " + chain[c][h] + " = " + (h == 0 ? value[c] : "VAR " + chain[c][h - 1]) + ".");
  }
  task_prompt p;
  p.expected = chain[0];
  p.text = haystack(tok, f, r, context,
                    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n", ins,
                    "\n\nQuestion: Find all variables that are assigned the value " + value[0] +
                        " in the text above. Answer: According to the chain(s) of variable assignment in the text "
                        "above, 5 variables are assigned the value " + value[0] + ", they are: VAR");
  p.max_new = 28;
  return p;
}

task_prompt cwe(const hcllama::tokenizer& tok, rng& r, std::size_t context) {
  std::vector<std::size_t> order(count_of(cwe_words));
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  r.shuffle(order);
  const std::string intro =
      "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones "
      "that appear most often.\n";
  const std::string tail =
      "\nQuestion: What are the 10 most common words in the above list? Answer: The top 10 words that appear most "
      "often in the list are:";
  // entries "N. word" take about 4 tokens; the 10 common words appear about 10x as often as the others
  const std::size_t overhead = tok.encode(intro + tail).size() + 8;
  auto build = [&](std::size_t entries) {
    const std::size_t pool = order.size() - 10;
    std::size_t fu = std::max<std::size_t>(1, entries / (100 + pool));
    std::size_t u = std::min(pool, entries > 100 * fu ? (entries - 100 * fu) / fu : 0);
    std::size_t fc = std::max<std::size_t>(2 * fu, (entries - std::min(entries, u * fu)) / 10);
    std::vector<std::size_t> list;
    for (std::size_t i = 0; i < 10; ++i) list.insert(list.end(), fc, order[i]);
    for (std::size_t i = 0; i < u; ++i) list.insert(list.end(), fu, order[10 + i]);
    rng shuffle_rng(r.state ^ 0x5bd1e995ULL);  // the same shuffle for every candidate length
    shuffle_rng.shuffle(list);
    std::string s = intro;
    for (std::size_t i = 0; i < list.size(); ++i) s += std::to_string(i + 1) + ". " + cwe_words[list[i]] + "\n";
    return s + tail;
  };
  // a first guess, rescaled by the measured tokens per entry, then shrunk until it fits
  std::size_t entries = context > overhead ? (context - overhead) / 4 : 20;
  std::string text = build(entries);
  std::size_t t = tok.encode(text).size();
  if (t > overhead && context > overhead)
    entries = std::max<std::size_t>(20, static_cast<std::size_t>(static_cast<double>(entries) *
                                                                 static_cast<double>(context - overhead) /
                                                                 static_cast<double>(t - overhead + 8)));
  for (;;) {
    text = build(entries);
    t = tok.encode(text).size();
    if (t <= context || entries <= 20) break;
    entries -= std::max<std::size_t>(1, (t - context) / 3 + 1);
  }
  task_prompt p;
  p.text = std::move(text);
  for (std::size_t i = 0; i < 10; ++i) p.expected.push_back(cwe_words[order[i]]);
  p.max_new = 40;
  return p;
}

}  // namespace

task_prompt make_ruler_prompt(std::string_view task, const hcllama::tokenizer& tok, const filler& fill,
                              std::size_t context, std::uint64_t seed) {
  rng r(seed);
  if (task == "niah-words") return niah(tok, fill, r, context, "word");
  if (task == "niah-numbers") return niah(tok, fill, r, context, "number");
  if (task == "niah-uuids") return niah(tok, fill, r, context, "uuid");
  if (task == "multivalue") return multivalue(tok, fill, r, context);
  if (task == "multiquery") return multiquery(tok, fill, r, context);
  if (task == "vartrack") return vartrack(tok, fill, r, context);
  if (task == "cwe") return cwe(tok, r, context);
  throw std::invalid_argument("unknown RULER task '" + std::string(task) + "'");
}

double unordered_score(const std::string& answer, const std::vector<std::string>& expected) {
  auto lower = [](std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  auto alnum = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  const std::string a = lower(answer);
  std::size_t found = 0;
  for (const auto& e0 : expected) {
    const std::string e = lower(e0);
    for (std::size_t p = a.find(e); p != std::string::npos; p = a.find(e, p + 1)) {
      const bool left = p == 0 || !alnum(a[p - 1]), right = p + e.size() >= a.size() || !alnum(a[p + e.size()]);
      if (left && right) {
        ++found;
        break;
      }
    }
  }
  return expected.empty() ? 0.0 : static_cast<double>(found) / static_cast<double>(expected.size());
}

}  // namespace hceval
