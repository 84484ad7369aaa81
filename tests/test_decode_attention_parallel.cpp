#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <heterocache/attention/decode_attention.hpp>
#include <heterocache/attention/split_attention.hpp>
#include <heterocache/tensor/element.hpp>

#include "attention_reference.hpp"

using heterocache::index_t;
using testing_support::paged_kv;

namespace {

// Rows of different lengths, each on its own pages of one shuffled pool; row lengths cover the block edges
// of the kernel (and, on pages of 16, every offset of a partial last page).
struct long_problem {
    index_t rows, group, d;
    std::vector<float> keys, values, queries;  // source K/V [token][d], the rows' tokens one after the other
    std::vector<std::vector<index_t>> row_tokens;

    long_problem(std::vector<index_t> lengths, index_t group_size, index_t head_dim, float query_scale, std::uint64_t seed)
        : rows(static_cast<index_t>(lengths.size())), group(group_size), d(head_dim),
          row_tokens(testing_support::consecutive_rows(lengths)) {
        std::mt19937_64 rng(seed);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        index_t tokens = 0;
        for (index_t n : lengths) tokens += n;
        keys.resize(static_cast<std::size_t>(tokens * d));
        values.resize(keys.size());
        queries.resize(static_cast<std::size_t>(rows * group * d));
        for (auto& x : keys) x = normal(rng);
        for (auto& x : values) x = normal(rng) + 0.5f;  // a mean, so outputs do not cancel to near zero
        for (auto& x : queries) x = query_scale * normal(rng);
    }
    //! The rows on pages of `page_size` tokens, elements of type `E` (rounded to nearest even).
    template <heterocache::KvElement E = float>
    [[nodiscard]] paged_kv<E> paged(index_t page_size) const {
        return paged_kv<E>(row_tokens, keys.data(), values.data(), d, page_size, 17);
    }
    [[nodiscard]] std::size_t heads() const { return static_cast<std::size_t>(rows * group); }
};

// Float64, two-pass softmax.
template <heterocache::KvElement E>
void reference(const long_problem& p, const paged_kv<E>& kv, float scale, std::vector<double>& out, std::vector<double>& lse) {
    testing_support::reference_attention(kv.selection(p.group), p.queries.data(), scale, out, lse);
}

// Largest error of an output head relative to that head's largest reference value.
double worst_relative_error(const long_problem& p, const std::vector<float>& out, const std::vector<double>& ref) {
    double worst = 0.0;
    for (std::size_t h = 0; h < p.heads(); ++h) {
        double err = 0.0, norm = 0.0;
        for (index_t c = 0; c < p.d; ++c) {
            const std::size_t i = h * static_cast<std::size_t>(p.d) + static_cast<std::size_t>(c);
            err = std::max(err, std::abs(out[i] - ref[i]));
            norm = std::max(norm, std::abs(ref[i]));
        }
        if (norm > 0.0) worst = std::max(worst, err / norm);
    }
    return worst;
}

}  // namespace

TEST_CASE("fp32 decode attention over 32K tokens stays within 1e-5 of float64") {
    // Flat scores (small queries) make every token count, the hardest case for a long fp32 sum;
    // peaked scores (large queries) exercise the rescaling when the running maximum moves.
    for (const float query_scale : {0.05f, 2.0f}) {
        const long_problem p({32768, 32768 - 37}, 3, 64, query_scale, 21);
        for (const index_t page_size : {1, 16}) {
            CAPTURE(query_scale);
            CAPTURE(page_size);
            const paged_kv<> kv = p.paged(page_size);
            const float scale = 0.125f;
            std::vector<float> out(p.queries.size()), lse(p.heads());
            heterocache::decode_attention(kv.selection(p.group), p.queries.data(), out.data(), lse.data(), scale);
            std::vector<double> ref_out, ref_lse;
            reference(p, kv, scale, ref_out, ref_lse);
            CHECK(worst_relative_error(p, out, ref_out) <= 1e-5);
            for (std::size_t h = 0; h < p.heads(); ++h)
                CHECK(std::abs(lse[h] - ref_lse[h]) <= 1e-5 * std::max(1.0, std::abs(ref_lse[h])));
        }
    }
}

TEST_CASE("decode attention on a thread pool is bit-identical to the single-threaded call") {
    // Ten rows of lengths around the 64-token blocks and the 4-token tiles, one empty; G = 12 takes two
    // passes of 8 heads.
    const long_problem p({0, 1, 3, 63, 64, 65, 130, 257, 1000, 5}, 12, 40, 1.0f, 5);
    for (const index_t page_size : {1, 16}) {
        CAPTURE(page_size);
        const paged_kv<> kv = p.paged(page_size);
        const auto s = kv.selection(p.group);
        std::vector<float> out(p.queries.size()), lse(p.heads());
        heterocache::decode_attention(s, p.queries.data(), out.data(), lse.data(), 0.2f);
        std::vector<double> ref_out, ref_lse;
        reference(p, kv, 0.2f, ref_out, ref_lse);
        CHECK(worst_relative_error(p, out, ref_out) <= 1e-5);
        CHECK(std::isinf(lse[0]));
        for (const index_t threads : {1, 2, 4}) {
            CAPTURE(threads);
            heterocache::host_thread_pool pool(threads);
            std::vector<float> out_pool(out.size(), -1.0f), lse_pool(lse.size(), -1.0f);
            heterocache::decode_attention(s, p.queries.data(), out_pool.data(), lse_pool.data(), 0.2f, pool);
            CHECK(std::memcmp(out.data(), out_pool.data(), out.size() * sizeof(float)) == 0);
            CHECK(std::memcmp(lse.data(), lse_pool.data(), lse.size() * sizeof(float)) == 0);
        }
    }
}

TEST_CASE("fp16 and bf16 round trips are exact for representable values and round to nearest even") {
    using heterocache::bf16_to_float;
    using heterocache::float_to_bf16;
    using heterocache::float_to_fp16;
    using heterocache::fp16_to_float;
    // Every fp16 value converts to a float and back unchanged (NaNs stay NaN).
    for (std::uint32_t h = 0; h <= 0xffffu; ++h) {
        const float f = fp16_to_float(static_cast<std::uint16_t>(h));
        if (std::isnan(f)) {
            CHECK(std::isnan(fp16_to_float(float_to_fp16(f))));
            continue;
        }
        REQUIRE(float_to_fp16(f) == h);
        REQUIRE(float_to_bf16(bf16_to_float(static_cast<std::uint16_t>(h))) == h);
    }
    CHECK(fp16_to_float(0x3c00) == 1.0f);
    CHECK(fp16_to_float(0x0001) == std::ldexp(1.0f, -24));  // the smallest subnormal
    CHECK(float_to_fp16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // a tie rounds to the even 1.0
    CHECK(float_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);  // a tie rounds up to even
    CHECK(float_to_fp16(65520.0f) == 0x7c00);  // overflows to infinity
    CHECK(float_to_fp16(65519.0f) == 0x7bff);
    CHECK(float_to_fp16(std::ldexp(1.0f, -25)) == 0x0000);  // half the smallest subnormal: a tie, to 0
    CHECK(float_to_fp16(std::ldexp(1.5f, -25)) == 0x0001);
    CHECK(float_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3f80);  // a tie rounds to the even 1.0
    CHECK(float_to_bf16(-2.0f) == 0xc000);
}

namespace {

// The 16-bit path against the fp32 kernel on the same K/V rounded to `E` and widened back (the same pages).
template <class E>
void check_half_attention(double tolerance) {
    const long_problem p({200, 0, 77, 1500}, 4, 64, 1.0f, 9);
    for (const index_t page_size : {1, 16}) {
        CAPTURE(page_size);
        const paged_kv<E> kv = p.template paged<E>(page_size);
        const paged_kv<float> rounded = kv.widened();  // the same K/V, rounded to 16 bits and back
        const auto half = kv.selection(p.group);
        std::vector<float> out(p.queries.size()), lse(p.heads()), out32(out.size()), lse32(lse.size());
        heterocache::decode_attention(rounded.selection(p.group), p.queries.data(), out32.data(), lse32.data(), 0.125f);
        heterocache::decode_attention(half, p.queries.data(), out.data(), lse.data(), 0.125f);
        CHECK(std::memcmp(out.data(), out32.data(), out.size() * sizeof(float)) == 0);  // same kernel, same floats
        CHECK(std::memcmp(lse.data(), lse32.data(), lse.size() * sizeof(float)) == 0);
        heterocache::host_thread_pool pool(2);
        std::vector<float> out_pool(out.size()), lse_pool(lse.size());
        heterocache::decode_attention(half, p.queries.data(), out_pool.data(), lse_pool.data(), 0.125f, pool);
        CHECK(std::memcmp(out.data(), out_pool.data(), out.size() * sizeof(float)) == 0);
        CHECK(std::memcmp(lse.data(), lse_pool.data(), lse.size() * sizeof(float)) == 0);
        // The row-splitting kernel with chunks longer than every row splits nothing: the same bits again.
        std::fill(out_pool.begin(), out_pool.end(), 0.0f);
        heterocache::split_attention_workspace workspace(2048);
        heterocache::decode_attention(half, p.queries.data(), out_pool.data(), lse_pool.data(), 0.125f, pool, workspace);
        CHECK(std::memcmp(out.data(), out_pool.data(), out.size() * sizeof(float)) == 0);
        // Against the unrounded fp32 K/V, the error is that of the 16-bit rounding; the reference reads the
        // 16-bit pool widened too, exactly as the kernel does.
        std::vector<double> ref_out, ref_lse;
        reference(p, p.paged(page_size), 0.125f, ref_out, ref_lse);
        CHECK(worst_relative_error(p, out, ref_out) <= tolerance);
        reference(p, kv, 0.125f, ref_out, ref_lse);
        CHECK(worst_relative_error(p, out, ref_out) <= 1e-5);
    }
}

}  // namespace

TEST_CASE("decode attention over fp16 K/V matches the fp32 kernel on the converted values") {
    check_half_attention<heterocache::fp16_t>(2e-3);
}

TEST_CASE("decode attention over bf16 K/V matches the fp32 kernel on the converted values") {
    check_half_attention<heterocache::bf16_t>(2e-2);
}
