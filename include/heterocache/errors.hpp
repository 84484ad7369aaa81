#pragma once
//! \file
//! Typed errors. Every configuration or shape mistake throws one of these with a message
//! that names the argument, the value it had and the range that would be valid.

#include <charconv>
#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace heterocache {
inline namespace v1 {

//! Base of every error the library throws: bad input (`invalid_argument_error` and its kinds), a malformed
//! profile file, or resources the machine cannot give (`allocation_error`, a CUDA failure).
class error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

//! A scalar argument is outside its valid range (r outside (0,1], a NaN threshold, ...).
class invalid_argument_error : public error {
public:
    invalid_argument_error(std::string_view argument, std::string_view value, std::string_view valid_range)
        : error(std::string("heterocache: argument '") + std::string(argument) + "' = " + std::string(value) +
                " is invalid; valid range: " + std::string(valid_range)),
          argument_(argument) {}
    //! The name of the offending argument.
    [[nodiscard]] const std::string& argument() const noexcept { return argument_; }

private:
    std::string argument_;
};

//! Tensor shapes or counts disagree (zero heads, a layout whose head dim differs from the plan, ...).
class shape_error : public invalid_argument_error {
public:
    using invalid_argument_error::invalid_argument_error;
};

//! The budget cannot be met (for example r*N <= number of full heads).
class budget_error : public invalid_argument_error {
public:
    using invalid_argument_error::invalid_argument_error;
};

//! Memory for a plan could not be allocated (host or device): the sizes were valid, the machine has not got
//! the memory. Names what was being allocated and how many bytes.
class allocation_error : public error {
public:
    allocation_error(std::string_view what, std::size_t bytes)
        : error("heterocache: cannot allocate " + std::to_string(bytes) + " bytes for " + std::string(what)) {}
};

//! A profile file is malformed, truncated, or of an unknown version.
class profile_format_error : public error {
public:
    profile_format_error(std::size_t line, std::string_view what)
        : error("heterocache: profile line " + std::to_string(line) + ": " + std::string(what)), line_(line) {}
    //! 1-based line number where parsing failed (0 when the error is not tied to a line).
    [[nodiscard]] std::size_t line() const noexcept { return line_; }

private:
    std::size_t line_;
};

namespace detail {

//! Text of a value for an error message; floating point in the shortest form that reads back exactly.
template <class T>
std::string to_display(const T& value) {
    if constexpr (std::is_floating_point_v<T>) {
        char buffer[64];
        const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
        return std::string(buffer, result.ptr);
    } else {
        std::ostringstream out;
        out << value;
        return out.str();
    }
}

//! `a * b`, or a `shape_error` naming `what` when the product leaves `[0, limit]` (sizes computed at plan
//! time never overflow).
inline std::int64_t checked_product(std::int64_t a, std::int64_t b, std::string_view what,
                                    std::int64_t limit = std::numeric_limits<std::int64_t>::max()) {
    if (a < 0 || b < 0 || (a != 0 && b > limit / a))
        throw shape_error(what, to_display(a) + " * " + to_display(b), "a product of at most " + to_display(limit));
    return a * b;
}
//! `a + b`, or a `shape_error` naming `what` when the sum leaves `[0, limit]`.
inline std::int64_t checked_sum(std::int64_t a, std::int64_t b, std::string_view what,
                                std::int64_t limit = std::numeric_limits<std::int64_t>::max()) {
    if (a < 0 || b < 0 || a > limit - b)
        throw shape_error(what, to_display(a) + " + " + to_display(b), "a sum of at most " + to_display(limit));
    return a + b;
}

//! Throws `Error(argument, value, range)` unless `condition` holds.
template <class Error = invalid_argument_error, class T>
void require(bool condition, std::string_view argument, const T& value, std::string_view valid_range) {
    if (!condition) throw Error(argument, to_display(value), valid_range);
}

}  // namespace detail
}  // namespace v1
}  // namespace heterocache
