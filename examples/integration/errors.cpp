// Integration guide, "Errors": typed exceptions at configuration time and the budget rules.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include <heterocache/heterocache.hpp>

#include "expect.hpp"

namespace hc = heterocache;

// [snippet errors]
// Every mistake in a shape, an option, a budget or a profile file throws a subclass of hc::error (itself a
// std::runtime_error) whose message names the argument, its value and the valid range.
std::unique_ptr<hc::kv_cache<>> make_cache(const hc::model_shape& shape, hc::cache_options options,
                                           const std::filesystem::path& profile_path) {
    const hc::head_profile profile = hc::load_profile(profile_path);  // profile_format_error: e.line()
    for (;;) {
        try {
            return std::make_unique<hc::kv_cache<>>(shape, options, profile);  // shape_error, invalid_argument_error
        } catch (const hc::budget_error&) {
            // r * N <= Nfull: the profile keeps more heads whole than r allows. Ask for more memory.
            if (options.budget_ratio >= 1.0) throw;
            options.budget_ratio = std::min(1.0, options.budget_ratio + 0.1);
        }
    }
}
// [/snippet]

int main() {
    const hc::model_shape shape{.layers = 2, .kv_heads = 4, .query_heads = 8, .head_dim = 16};
    hc::cache_options options;
    options.max_prompt_tokens = 64;
    options.max_new_tokens = 8;
    options.budget_ratio = 0.3;
    const auto path = std::filesystem::temp_directory_path() / "heterocache-guide-errors.profile";

    // Half of the heads keep their full KV: r = 0.3 is refused, make_cache backs off to r = 0.6.
    hc::head_profile profile = hc::uniform_profile(shape, hc::head_role::anchor);
    for (std::size_t i = 0; i < profile.heads.size(); i += 2) profile.heads[i].role = hc::head_role::volatile_;
    hc::save_profile(path, profile);
    expect(make_cache(shape, options, path)->options().budget_ratio > 0.5, "a budget_error names a budget that fits");

    try {
        static_cast<void>(make_cache({2, 3, 6, 16}, options, path));
        expect(false, "a profile of another model is refused");
    } catch (const hc::shape_error& e) {
        expect(e.argument() == "profile.kv_heads", "a shape_error names the argument");
    }

    std::ofstream(path) << "heterocache-profile 1\nlayers 2\nkv_heads four\n";
    try {
        static_cast<void>(make_cache(shape, options, path));
        expect(false, "a malformed profile is refused");
    } catch (const hc::profile_format_error& e) {
        expect(e.line() == 3, "a profile_format_error names the line");
    }

    // Every head full and r < 1: no budget can be met, refused when the cache is constructed.
    try {
        static_cast<void>(hc::kv_cache<>(shape, options, hc::uniform_profile(shape, hc::head_role::volatile_)));
        expect(false, "an all-volatile profile with r < 1 is refused");
    } catch (const hc::budget_error& e) {
        expect(e.argument() == "r", "a budget_error names r");
    }

    // A prompt too short for r to give every compressed head a token gives each one token.
    hc::kv_cache<> anchors(shape, options, hc::uniform_profile(shape, hc::head_role::anchor));
    anchors.begin_sequence(0, 2);
    const auto caps = anchors.prompt_caps(0);
    expect(std::all_of(caps.begin(), caps.end(), [](hc::index_t cap) { return cap == 1; }),
           "a short prompt keeps one token per compressed head");

    // A call that throws leaves the cache as it was.
    try {
        anchors.begin_sequence(0, 8);
        expect(false, "a slot in use is refused");
    } catch (const hc::shape_error& e) {
        expect(e.argument() == "seq" && anchors.prompt_tokens(0) == 2, "a refused call changes nothing");
    }

    options.budget_ratio = 1.5;
    try {
        static_cast<void>(hc::kv_cache<>(shape, options));
        expect(false, "r > 1 is refused");
    } catch (const hc::invalid_argument_error& e) {
        expect(std::string(e.what()).find("(0, 1]") != std::string::npos, "an error names the valid range");
    }
    std::filesystem::remove(path);
    return 0;
}
