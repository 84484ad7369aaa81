// Integration guide, "Save and reuse a model profile".
#include <filesystem>
#include <fstream>
#include <string>

#include <heterocache/heterocache.hpp>

#include "expect.hpp"
#include "planted_heads.hpp"

namespace hc = heterocache;
using hc::index_t;

int main() {
    planted::scenario scenario;
    scenario.sequences = 2;  // calibration prompts profiled together
    scenario.prompt_tokens = 256;
    scenario.steps = 16;
    const planted::model calibration(scenario);
    const hc::model_shape& shape = scenario.shape;
    const std::filesystem::path path = std::filesystem::temp_directory_path() / "heterocache-guide.profile";

    hc::cache_options options;
    options.sequences = scenario.sequences;
    options.max_prompt_tokens = scenario.prompt_tokens;
    options.max_new_tokens = scenario.steps;

    // [snippet save]
    // Calibration: a cache without a profile profiles online, over all of its sequences, during the first
    // `options.profiling_steps` decode steps; afterwards its profile holds every head's role.
    hc::kv_cache<> profiling(shape, options);
    planted::drive(profiling, calibration, [](index_t, index_t, const hc::paged_selection&, const float*) {});
    hc::save_profile(path, *profiling.profile());
    // [/snippet]

    // [snippet load]
    // Deployment: a cache constructed with a profile compresses from the prefill on and never profiles.
    const hc::head_profile profile = hc::load_profile(path);  // throws profile_format_error if malformed
    hc::kv_cache<> cache(shape, options, profile);
    // [/snippet]

    std::ifstream text(path);
    std::string header;
    std::getline(text, header);
    std::filesystem::remove(path);
    expect(header.rfind("# HeteroCache head profile", 0) == 0, "profiles are saved as commented text");
    expect(profile.heads.size() == profiling.profile()->heads.size(), "a loaded profile has every head");
    for (std::size_t i = 0; i < profile.heads.size(); ++i)
        expect(profile.heads[i].role == profiling.profile()->heads[i].role &&
                   profile.heads[i].stability == profiling.profile()->heads[i].stability &&
                   profile.heads[i].pivot == profiling.profile()->heads[i].pivot,
               "save_profile/load_profile round-trip every head exactly");
    cache.begin_sequence(0, scenario.prompt_tokens);
    expect(cache.prompt_caps(0).size() == profile.heads.size(),
           "a cache constructed with a profile sets a sequence's budgets when it begins, without profiling");
    cache.prefill(0, 0, calibration.tensor(), calibration.window(0, 0));
    expect(cache.resident_tokens() < shape.kv_heads * scenario.prompt_tokens,
           "a cache constructed with a profile compresses from the prefill on");
    return 0;
}
