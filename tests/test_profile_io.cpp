#include <doctest/doctest.h>

#include <filesystem>
#include <sstream>
#include <string>

#include <heterocache/profile/profile_io.hpp>

using heterocache::head_role;

namespace {

heterocache::head_profile sample() {
    return {2, 3, 0.5, 0.45, 128,
            {{head_role::pivot, 0.1234567890123, 0}, {head_role::satellite, 0.2, 0}, {head_role::anchor, 1.0, -1},
             {head_role::volatile_, 0.0, -1}, {head_role::digest_pivot, 0.75, 1}, {head_role::satellite, 1.0 / 3.0, 1}}};
}

std::string text_of(const heterocache::head_profile& p) {
    std::ostringstream out;
    heterocache::write_profile(out, p);
    return out.str();
}

std::size_t error_line(const std::string& text) {
    std::istringstream in(text);
    try {
        (void)heterocache::read_profile(in);
    } catch (const heterocache::profile_format_error& e) {
        return e.line();
    }
    FAIL("expected a profile_format_error for:\n" << text);
    return 0;
}

std::string replace(std::string text, const std::string& from, const std::string& to) {
    const auto at = text.find(from);
    REQUIRE(at != std::string::npos);
    return text.replace(at, from.size(), to);
}

}  // namespace

TEST_CASE("a profile survives a save and load bit for bit") {
    const auto original = sample();
    const auto path = std::filesystem::temp_directory_path() / "heterocache_profile_roundtrip.txt";
    heterocache::save_profile(path, original);
    const auto loaded = heterocache::load_profile(path);
    std::filesystem::remove(path);
    CHECK(loaded.layers == original.layers);
    CHECK(loaded.kv_heads == original.kv_heads);
    CHECK(loaded.tau_stable == original.tau_stable);
    CHECK(loaded.tau_sim == original.tau_sim);
    CHECK(loaded.top_k == original.top_k);
    for (std::size_t i = 0; i < original.heads.size(); ++i) {
        CHECK(loaded.heads[i].role == original.heads[i].role);
        CHECK(loaded.heads[i].stability == original.heads[i].stability);  // exact: max_digits10
        CHECK(loaded.heads[i].pivot == original.heads[i].pivot);
    }
}

TEST_CASE("corrupt, truncated and unknown-version profiles are errors that name the line") {
    const std::string good = text_of(sample());
    // Line 1 is the comment, 2 the header, 3 layers, 4 kv_heads, 5 tau_stable, 6 tau_sim, 7 top_k, 8.. heads.
    CHECK(error_line(replace(good, "heterocache-profile 1", "heterocache-profile 2")) == 2);
    CHECK(error_line(replace(good, "layers 2", "layers two")) == 3);
    CHECK(error_line(replace(good, "kv_heads 3", "kv_heads 0")) == 4);
    CHECK(error_line(replace(good, "tau_stable 0.5", "tau_stable nan")) == 5);
    CHECK(error_line(replace(good, "tau_sim 0.45", "tau_sim 1.5")) == 6);
    CHECK(error_line(replace(good, "head 0 1 satellite", "head 0 1 moon")) == 9);
    CHECK(error_line(replace(good, "head 0 1 satellite 0.20000000000000001 0", "head 0 1 satellite 0.2")) == 9);
    CHECK(error_line(replace(good, "head 1 0", "head 1 1")) == 11);
    CHECK(error_line(replace(good, "end\n", "end\nextra\n")) == 15);
    CHECK(error_line(good.substr(0, good.find("head 1 2"))) == 13);  // truncated: names the missing line
    CHECK(error_line(good.substr(0, good.size() / 2)) > 0);
    CHECK(error_line("") == 1);
    CHECK(error_line(replace(good, "layers 2", "layers 99999999999999999999")) == 3);
    // A satellite whose pivot is not a pivot is inconsistent even though every line parses.
    CHECK_THROWS_AS((void)[&] {
        std::istringstream in(replace(good, "head 0 1 satellite 0.20000000000000001 0", "head 0 1 satellite 0.20000000000000001 2"));
        return heterocache::read_profile(in);
    }(), heterocache::profile_format_error);
}

TEST_CASE("a missing profile file is an error naming the path") {
    CHECK_THROWS_WITH_AS(heterocache::load_profile("/nonexistent/heterocache.profile"),
                         doctest::Contains("/nonexistent/heterocache.profile"), heterocache::profile_format_error);
}
