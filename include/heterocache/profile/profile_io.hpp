#pragma once
//! \file
//! Saving and loading head profiles in a small, versioned text format with a strict parser.
//!
//! Format, version 1 (one record per line, fields separated by single spaces; lines that are empty or
//! start with `#` are ignored):
//! ```
//! heterocache-profile 1
//! layers <L>
//! kv_heads <Hkv>
//! tau_stable <real in [0,1]>
//! tau_sim <real in [0,1]>
//! top_k <integer >= 0>
//! head <layer> <kv_head> <anchor|volatile|pivot|satellite> <stability in [0,1]> <pivot head or -1>
//! ...  exactly L * Hkv head lines, layer-major, in order
//! end
//! ```
//! Reals are written with enough digits to read back bit-identical. Anything else (unknown version, a
//! missing or extra field, a value out of range, lines out of order, truncation, text after `end`) is a
//! `profile_format_error` naming the line.

#include <charconv>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <istream>
#include <limits>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "heterocache/profile/head_profile.hpp"

namespace heterocache {
inline namespace v1 {

//! The format version `write_profile` produces and `read_profile` accepts.
inline constexpr int profile_format_version = 1;
//! Largest `layers * kv_heads` a profile file may declare (guards against corrupt sizes).
inline constexpr index_t max_profile_heads = index_t{1} << 20;

//! Writes `profile` in the text format above.
inline void write_profile(std::ostream& out, const head_profile& profile) {
    profile.validate();
    std::ostringstream text;
    text.precision(std::numeric_limits<double>::max_digits10);
    text << "# HeteroCache head profile: roles, stability and clusters of every KV head\n"
         << "heterocache-profile " << profile_format_version << "\n"
         << "layers " << profile.layers << "\nkv_heads " << profile.kv_heads << "\ntau_stable " << profile.tau_stable
         << "\ntau_sim " << profile.tau_sim << "\ntop_k " << profile.top_k << "\n";
    for (index_t l = 0; l < profile.layers; ++l)
        for (index_t h = 0; h < profile.kv_heads; ++h) {
            const head_info& info = profile.at(l, h);
            text << "head " << l << ' ' << h << ' ' << role_name(info.role) << ' ' << info.stability << ' ' << info.pivot
                 << '\n';
        }
    text << "end\n";
    out << text.str();
}

namespace detail {

//! Line-by-line reader that names the line of every error.
class profile_parser {
public:
    explicit profile_parser(std::istream& in) : in_(in) {}

    //! Next meaningful line split into fields; fails at end of input with `expected` in the message.
    std::vector<std::string_view> fields(std::string_view expected) {
        while (std::getline(in_, line_)) {
            ++number_;
            if (line_.empty() || line_.front() == '#') continue;
            return split(line_);
        }
        throw profile_format_error(number_ + 1, "truncated file: expected " + std::string(expected));
    }
    //! True when only blank and comment lines remain.
    bool at_end() {
        while (std::getline(in_, line_)) {
            ++number_;
            if (!line_.empty() && line_.front() != '#') return false;
        }
        return true;
    }
    [[noreturn]] void fail(const std::string& what) const { throw profile_format_error(number_, what); }

    void expect_count(const std::vector<std::string_view>& f, std::size_t count, std::string_view what) const {
        if (f.size() != count)
            fail("expected " + std::string(what) + " (" + std::to_string(count) + " fields), found " +
                 std::to_string(f.size()) + " fields");
    }
    void expect_word(std::string_view found, std::string_view word) const {
        if (found != word) fail("expected '" + std::string(word) + "', found '" + std::string(found) + "'");
    }
    index_t integer(std::string_view text, std::string_view name, index_t low, index_t high) const {
        index_t value = 0;
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (error != std::errc{} || end != text.data() + text.size())
            fail(std::string(name) + " = '" + std::string(text) + "' is not an integer");
        if (value < low || value > high)
            fail(std::string(name) + " = " + std::string(text) + " is outside [" + std::to_string(low) + ", " +
                 std::to_string(high) + "]");
        return value;
    }
    double real(std::string_view text, std::string_view name, double low, double high) const {
        double value = 0.0;
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (error != std::errc{} || end != text.data() + text.size())
            fail(std::string(name) + " = '" + std::string(text) + "' is not a real number");
        if (!(value >= low && value <= high))
            fail(std::string(name) + " = " + std::string(text) + " is outside [" + to_display(low) + ", " +
                 to_display(high) + "]");
        return value;
    }
    index_t keyed_integer(std::string_view key, index_t low, index_t high) {
        const auto f = fields(key);
        expect_count(f, 2, std::string(key) + " <integer>");
        expect_word(f[0], key);
        return integer(f[1], key, low, high);
    }
    double keyed_real(std::string_view key, double low, double high) {
        const auto f = fields(key);
        expect_count(f, 2, std::string(key) + " <real>");
        expect_word(f[0], key);
        return real(f[1], key, low, high);
    }

private:
    std::vector<std::string_view> split(std::string_view line) const {
        std::vector<std::string_view> out;
        std::size_t start = 0;
        for (std::size_t i = 0; i <= line.size(); ++i) {
            if (i < line.size() && line[i] != ' ') continue;
            if (i == start) fail("empty field (fields are separated by exactly one space, no trailing space)");
            out.push_back(line.substr(start, i - start));
            start = i + 1;
        }
        return out;
    }

    std::istream& in_;
    std::string line_;
    std::size_t number_ = 0;
};

inline head_role parse_role(const profile_parser& parser, std::string_view text) {
    for (const head_role role :
         {head_role::anchor, head_role::volatile_, head_role::pivot, head_role::satellite, head_role::digest_pivot})
        if (text == role_name(role)) return role;
    parser.fail("role '" + std::string(text) + "' is not one of anchor, volatile, pivot, satellite, digest-pivot");
}

}  // namespace detail

//! Reads a profile in the text format above. Throws `profile_format_error` naming the line on any defect.
inline head_profile read_profile(std::istream& in) {
    detail::profile_parser parser(in);
    {
        const auto f = parser.fields("the header 'heterocache-profile <version>'");
        parser.expect_count(f, 2, "the header 'heterocache-profile <version>'");
        parser.expect_word(f[0], "heterocache-profile");
        const index_t version = parser.integer(f[1], "version", 0, std::numeric_limits<int>::max());
        if (version != profile_format_version)
            parser.fail("unknown profile version " + std::to_string(version) + "; this library reads version " +
                        std::to_string(profile_format_version));
    }
    head_profile profile;
    profile.layers = parser.keyed_integer("layers", 1, max_profile_heads);
    profile.kv_heads = parser.keyed_integer("kv_heads", 1, max_profile_heads / profile.layers);
    profile.tau_stable = parser.keyed_real("tau_stable", 0.0, 1.0);
    profile.tau_sim = parser.keyed_real("tau_sim", 0.0, 1.0);
    profile.top_k = parser.keyed_integer("top_k", 0, std::numeric_limits<index_t>::max());
    profile.heads.resize(static_cast<std::size_t>(profile.layers * profile.kv_heads));
    for (index_t l = 0; l < profile.layers; ++l) {
        for (index_t h = 0; h < profile.kv_heads; ++h) {
            const std::string expected = "head " + std::to_string(l) + " " + std::to_string(h) + " ...";
            const auto f = parser.fields(expected);
            parser.expect_count(f, 6, "'head <layer> <kv_head> <role> <stability> <pivot>'");
            parser.expect_word(f[0], "head");
            parser.integer(f[1], "layer", l, l);
            parser.integer(f[2], "kv_head", h, h);
            head_info& info = profile.at(l, h);
            info.role = detail::parse_role(parser, f[3]);
            info.stability = parser.real(f[4], "stability", 0.0, 1.0);
            info.pivot = parser.integer(f[5], "pivot", -1, profile.kv_heads - 1);
        }
    }
    parser.expect_word(parser.fields("'end'").front(), "end");
    if (!parser.at_end()) parser.fail("unexpected content after 'end'");
    try {
        profile.validate();
    } catch (const error& e) {
        throw profile_format_error(0, std::string("inconsistent profile: ") + e.what());
    }
    return profile;
}

//! Writes `profile` to the file at `path` (replacing it). Throws `profile_format_error` if it cannot.
inline void save_profile(const std::filesystem::path& path, const head_profile& profile) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) throw profile_format_error(0, "cannot open '" + path.string() + "' for writing");
    write_profile(out, profile);
    if (!out.flush()) throw profile_format_error(0, "cannot write '" + path.string() + "'");
}

//! Reads the profile file at `path`. Throws `profile_format_error` if it cannot be opened or is malformed.
inline head_profile load_profile(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw profile_format_error(0, "cannot open '" + path.string() + "' for reading");
    return read_profile(in);
}

}  // namespace v1
}  // namespace heterocache
