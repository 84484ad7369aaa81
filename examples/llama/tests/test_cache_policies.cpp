// The engine's policy names (cache.hpp): every base name and its options build the cache they name; bad names
// and bad options are errors naming the policy.
#include <doctest/doctest.h>

#include <string>

#include "cache.hpp"
#include "heterocache/baselines.hpp"

using namespace hcllama;

namespace {

llama_config small_config() {
  llama_config c;
  c.n_layer = 2, c.n_head = 4, c.n_head_kv = 2, c.head_dim = 8, c.n_embd = 32;
  return c;
}

std::string build_error(const std::string& policy) {
  cache_config cc;
  cc.policy = policy;
  try {
    (void)make_decode_cache(small_config(), cc, 256, 8);
  } catch (const model_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("every policy name, with or without options, builds the cache it names") {
  for (const auto base : policy_names()) {
    for (const std::string suffix : {"", ":sink=2", ":recent=16", ":sink=0:recent=0"}) {
      const std::string name = std::string(base) + suffix;
      CAPTURE(name);
      CHECK(is_policy_name(name));
      cache_config cc;
      cc.policy = name;
      cc.budget = 0.25;
      const auto cache = make_decode_cache(small_config(), cc, 256, 8);
      CHECK(std::string(cache->name()) == std::string(base));
    }
  }
  for (const std::string name : {"heterocache-floor0.5", "heterocache-floor", "heterocache:floor=0.5:recent=64",
                                 "duo:floor=1", "heterocache-static:recent=8", "heterocache:weight=0",
                                 "heterocache:floor=1:weight=0.5", "heterocache-static:weight=2", "heterocache:carry=0.9",
                                 "snapkv:carry=0.5", "heterocache:score=mass", "snapkv:score=last:recent=1", "tova:score=pooled",
                                 "heterocache:span=last", "snapkv:carry=0.9:span=mass", "heterocache:span=pooled:score=last"}) {
    CAPTURE(name);
    CHECK(is_policy_name(name));
    cache_config cc;
    cc.policy = name;
    cc.budget = 0.25;
    CHECK_NOTHROW((void)make_decode_cache(small_config(), cc, 256, 8));
  }
  CHECK(policy_uses_profile("heterocache-floor0.5"));
  CHECK(policy_uses_profile("duo:recent=4"));
  CHECK_FALSE(policy_uses_profile("tova"));
}

TEST_CASE("bad policy names and options are rejected, naming the policy") {
  for (const std::string name : {"bogus", "snapkv:floor=0.5", "heterocache:recent=-1", "heterocache:recent=1.5",
                                 "heterocache:sink", "heterocache:depth=3", "heterocache-floor2", "heterocache-floorx",
                                 "heterocache:floor=1.5", "heterocache:weight=-1", "heterocache:weight=9",
                                 "snapkv:weight=0", "duo:weight=1", "heterocache:carry=1", "heterocache:carry=-0.1",
                                 "heterocache:score=mean", "snapkv:score=", "snapkv:score=1", "heterocache:span=first", "heterocache:span=",
                                 "", "full:"}) {
    CAPTURE(name);
    CHECK_FALSE(is_policy_name(name));
    CHECK(build_error(name).find("unknown cache policy '" + name + "'") != std::string::npos);
  }
}

TEST_CASE("heterocache's :digest option: digest pivots where no pivot stays by default, always with N > 0, never with 0") {
  // Two layers, each a pivot with one satellite (N = 4, Nfull = 2). At r = 0.7 the floor 0.75 demotes the more
  // stable pivot and one stays; at r = 0.25 both go.
  heterocache::head_profile profile{2, 2, 0.5, 0.5, 8,
                                    {{heterocache::head_role::pivot, 0.4, 0}, {heterocache::head_role::satellite, 0.2, 0},
                                     {heterocache::head_role::pivot, 0.6, 0}, {heterocache::head_role::satellite, 0.3, 0}}};
  const auto roles = [&](const std::string& policy, double r) {
    cache_config cc;
    cc.policy = policy;
    cc.budget = r;
    cc.profile = profile;
    CHECK_NOTHROW((void)make_decode_cache(small_config(), cc, 256, 8));
    return *effective_profile(small_config(), cc, 256);
  };
  using heterocache::head_role;
  const auto one_stays = roles("heterocache", 0.7);
  CHECK(one_stays.count(head_role::pivot) == 1);
  CHECK(one_stays.count(head_role::digest_pivot) == 0);
  CHECK(one_stays.at(1, 1).role == head_role::anchor);  // the demoted pivot's satellite went with it
  const auto none_stay = roles("heterocache", 0.25);
  CHECK(none_stay.count(head_role::digest_pivot) == 2);
  CHECK(none_stay.count(head_role::satellite) == 2);
  // At r = 0.3 feasibility alone demotes one pivot and the floor the other: one demotion to the floor judges the
  // profile as found (no pivot would stay: both become digest pivots, as the library's own call makes them), not
  // the profile a feasibility-only step left (one pivot, which a second step would make the only digest pivot).
  const auto floor_after_feasibility = roles("heterocache", 0.3);
  heterocache::head_profile reference = profile;
  heterocache::demote_until_feasible(reference, 0.3, heterocache::heterocache_min_compressed_share,
                                     heterocache::heterocache_pivot_demotion);
  CHECK(reference.count(head_role::digest_pivot) == 2);
  for (heterocache::index_t layer = 0; layer < 2; ++layer)
    for (heterocache::index_t head = 0; head < 2; ++head) {
      CAPTURE(layer);
      CAPTURE(head);
      CHECK(floor_after_feasibility.at(layer, head).role == reference.at(layer, head).role);
      CHECK(floor_after_feasibility.at(layer, head).pivot == reference.at(layer, head).pivot);
    }
  CHECK(roles("heterocache:digest=16", 0.7).count(head_role::digest_pivot) == 1);
  CHECK(roles("heterocache:digest=0", 0.25).count(head_role::digest_pivot) == 0);
  CHECK(roles("heterocache:digest=0", 0.25).count(head_role::anchor) == 4);
}
