// The engine's policy names (cache.hpp): every base name and its options build the cache they name; bad names
// and bad options are errors naming the policy.
#include <doctest/doctest.h>

#include <string>

#include "cache.hpp"

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
                                 "snapkv:carry=0.5", "heterocache:score=mass", "snapkv:score=last:recent=1", "tova:score=pooled"}) {
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
                                 "heterocache:score=mean", "snapkv:score=", "snapkv:score=1",
                                 "", "full:"}) {
    CAPTURE(name);
    CHECK_FALSE(is_policy_name(name));
    CHECK(build_error(name).find("unknown cache policy '" + name + "'") != std::string::npos);
  }
}
