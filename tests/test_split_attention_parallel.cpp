// Decode attention with long rows split over a thread pool (attention/split_attention.hpp), over paged
// selections of pages of 1 and 16 tokens: equal to a float64 reference, bit-identical for any pool size,
// bit-identical to `decode_attention` on rows that fit one chunk, captures written and stamped as the unsplit
// kernel's, 16-bit K/V, no allocation after `reserve`, and bad arguments rejected.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <heterocache/attention/split_attention.hpp>

#include "allocation_counter.hpp"
#include "attention_reference.hpp"

namespace hc = heterocache;
using hc::index_t;

using testing_support::same_bits;

using testing_support::allocations;

namespace {

//! Rows of the given lengths over random tokens of one source (tokens repeat across rows), G = 3, d = 64, on
//! pages of `page_size` tokens of a shuffled pool.
struct split_problem {
    index_t rows, group = 3, d = 64, page_size;
    std::vector<float> keys, values, queries;  // source K/V [token][d]
    std::vector<std::vector<index_t>> row_tokens;
    testing_support::paged_kv<> kv;

    explicit split_problem(const std::vector<index_t>& lengths, index_t page_size_ = 16, std::uint64_t seed = 3)
        : rows(static_cast<index_t>(lengths.size())), page_size(page_size_) {
        std::mt19937_64 rng(seed);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        const index_t tokens = 2000;
        for (index_t i = 0; i < tokens * d; ++i) keys.push_back(normal(rng)), values.push_back(normal(rng) + 0.5f);
        for (index_t i = 0; i < rows * group * d; ++i) queries.push_back(2.0f * normal(rng));
        row_tokens = testing_support::random_rows(lengths, tokens, rng);
        kv = testing_support::paged_kv<>(row_tokens, keys.data(), values.data(), d, page_size, seed);
    }
    [[nodiscard]] hc::paged_selection selection(std::span<const hc::score_capture> captures = {}) const {
        return kv.selection(group, captures);
    }
    [[nodiscard]] std::size_t heads() const { return static_cast<std::size_t>(rows * group); }
};

struct attention_result {
    std::vector<float> output, lse;
};

template <class E>
attention_result split_run(const hc::basic_paged_selection<E>& s, const split_problem& p, index_t threads,
                           index_t chunk_tokens) {
    hc::host_thread_pool pool(threads);
    hc::split_attention_workspace workspace(chunk_tokens);
    attention_result r{std::vector<float>(p.heads() * static_cast<std::size_t>(p.d)), std::vector<float>(p.heads())};
    hc::decode_attention(s, p.queries.data(), r.output.data(), r.lse.data(), 0.125f, pool, workspace);
    return r;
}

// Row lengths around the chunk size 100: empty, shorter, equal, one more, many chunks. On pages of 16, the
// chunks of 100 tokens start inside pages.
const std::vector<index_t> lengths{0, 37, 100, 101, 250, 1000, 1999};

}  // namespace

TEST_CASE("split decode attention matches a float64 reference within 1e-5") {
    for (const index_t page_size : {1, 16}) {
        CAPTURE(page_size);
        const split_problem p(lengths, page_size);
        const auto s = p.selection();
        const attention_result r = split_run(s, p, 3, 100);
        std::vector<double> ref_out, ref_lse;
        testing_support::reference_attention(s, p.queries.data(), 0.125, ref_out, ref_lse);
        for (std::size_t h = 0; h < p.heads(); ++h) {
            CAPTURE(h);
            if (std::isinf(ref_lse[h])) {
                CHECK(r.lse[h] == -std::numeric_limits<float>::infinity());
                for (index_t c = 0; c < p.d; ++c) CHECK(r.output[h * static_cast<std::size_t>(p.d) + static_cast<std::size_t>(c)] == 0.0f);
                continue;
            }
            CHECK(std::abs(r.lse[h] - ref_lse[h]) <= 1e-5 * std::max(1.0, std::abs(ref_lse[h])));
            double err = 0.0, norm = 0.0;
            for (index_t c = 0; c < p.d; ++c) {
                const std::size_t i = h * static_cast<std::size_t>(p.d) + static_cast<std::size_t>(c);
                err = std::max(err, std::abs(r.output[i] - ref_out[i]));
                norm = std::max(norm, std::abs(ref_out[i]));
            }
            CHECK(err <= 1e-5 * norm);
        }
    }
}

TEST_CASE("split decode attention is bit-identical for any pool size, and to decode_attention on one-chunk rows") {
    for (const index_t page_size : {1, 16}) {
        CAPTURE(page_size);
        const split_problem p(lengths, page_size);
        const auto s = p.selection();
        const attention_result one = split_run(s, p, 1, 100);
        for (const index_t threads : {2, 3, 5}) {
            CAPTURE(threads);
            const attention_result many = split_run(s, p, threads, 100);
            CHECK(same_bits(one.output, many.output));
            CHECK(same_bits(one.lse, many.lse));
        }
        // With chunks longer than every row nothing is split: the plain kernel's bits.
        const attention_result whole = split_run(s, p, 2, 2048);
        attention_result plain{std::vector<float>(whole.output.size()), std::vector<float>(whole.lse.size())};
        hc::decode_attention(s, p.queries.data(), plain.output.data(), plain.lse.data(), 0.125f);
        CHECK(same_bits(whole.output, plain.output));
        CHECK(same_bits(whole.lse, plain.lse));
        // Split rows differ from the plain kernel by float rounding only, and do differ (so they were split).
        double worst = 0.0;
        for (std::size_t i = 0; i < one.output.size(); ++i)
            worst = std::max(worst, static_cast<double>(std::abs(one.output[i] - plain.output[i])));
        CHECK(worst <= 1e-5);
        CHECK(worst > 0.0);
    }
    // The split result does not depend on the page layout either: pages of 1 and of 16 give the same bits.
    const split_problem a(lengths, 1), b(lengths, 16);
    const attention_result ra = split_run(a.selection(), a, 3, 100), rb = split_run(b.selection(), b, 2, 100);
    CHECK(same_bits(ra.output, rb.output));
    CHECK(same_bits(ra.lse, rb.lse));
}

TEST_CASE("split decode attention writes and stamps the captured scores of split and whole rows, as the plain kernel does") {
    for (const index_t page_size : {1, 16}) {
        CAPTURE(page_size);
        const split_problem p({1000, 250, 0, 100}, page_size);
        // Chunks of 128: row 0 (1000 tokens) is split and captures 730 (the capture ends inside a chunk), row 1
        // (250 tokens) is split and captures all, row 3 (100 tokens) is one whole chunk and captures 90.
        // Row 2 (empty) asks for nothing.
        const std::size_t floats = 3 * 730 + 3 * 250 + 3 * 90;
        std::vector<float> split_scores(floats, -1.0f), plain_scores(floats, -2.0f);
        std::vector<std::uint64_t> split_stamps(4, 0), plain_stamps(4, 0);
        const auto captures = [](std::vector<float>& scores, std::vector<std::uint64_t>& stamps, std::uint64_t step) {
            return std::vector<hc::score_capture>{{scores.data(), 730, &stamps[0], step},
                                                  {scores.data() + 3 * 730, 250, &stamps[1], step},
                                                  {},
                                                  {scores.data() + 3 * 730 + 3 * 250, 90, &stamps[3], step}};
        };
        const auto split_captures = captures(split_scores, split_stamps, 41);
        const auto plain_captures = captures(plain_scores, plain_stamps, 42);
        hc::split_attention_workspace workspace(128);
        REQUIRE(workspace.chunks(p.selection(), 0) == 8);
        REQUIRE(workspace.chunks(p.selection(), 1) == 2);
        REQUIRE(workspace.chunks(p.selection(), 3) == 1);
        const attention_result split = split_run(p.selection(split_captures), p, 2, 128);
        attention_result plain{std::vector<float>(split.output.size()), std::vector<float>(split.lse.size())};
        hc::decode_attention(p.selection(plain_captures), p.queries.data(), plain.output.data(), plain.lse.data(), 0.125f);
        CHECK(same_bits(split_scores, plain_scores));  // every score written (no -1 left), in the [g][token] layout
        CHECK(split_stamps == std::vector<std::uint64_t>{41, 41, 0, 41});  // each row's stamp, once its scores are in
        CHECK(plain_stamps == std::vector<std::uint64_t>{42, 42, 0, 42});
        // And they are the scores: q . k * scale of the row's first tokens, checked against a direct dot product.
        const index_t g = 2, k = 129;  // row 0, query head 2, a token of the second chunk
        double dot = 0.0;
        const index_t token = p.row_tokens[0][static_cast<std::size_t>(k)];
        for (index_t c = 0; c < p.d; ++c)
            dot += static_cast<double>(p.queries[static_cast<std::size_t>(g * p.d + c)]) *
                   p.keys[static_cast<std::size_t>(token * p.d + c)];
        CHECK(split_scores[static_cast<std::size_t>(g * 730 + k)] == doctest::Approx(dot * 0.125).epsilon(1e-5));
    }
}

TEST_CASE("split decode attention over 16-bit K/V equals the fp32 path on the widened K/V") {
    for (const index_t page_size : {1, 16}) {
        CAPTURE(page_size);
        const split_problem p({700, 64, 300}, page_size);
        const testing_support::paged_kv<hc::bf16_t> half(p.row_tokens, p.keys.data(), p.values.data(), p.d, page_size, 8);
        const testing_support::paged_kv<float> widened = half.widened();
        const attention_result r = split_run(half.selection(p.group), p, 2, 128);
        const attention_result wide = split_run(widened.selection(p.group), p, 2, 128);
        CHECK(same_bits(r.output, wide.output));
        CHECK(same_bits(r.lse, wide.lse));
    }
}

TEST_CASE("split decode attention allocates nothing once the workspace is reserved for the longest step") {
    const split_problem p({1999, 1000, 37});
    hc::host_thread_pool pool(3);
    hc::split_attention_workspace workspace(100);
    workspace.reserve(p.rows, 1999, p.group, p.d);
    std::vector<float> output(p.heads() * static_cast<std::size_t>(p.d)), lse(p.heads());
    // Steps of growing rows, as in decode: every row length up to the reserved one, each row the first tokens
    // (a prefix of the pages) of the full problem's row. The descriptors are built before counting.
    struct descriptor {
        std::vector<hc::page_index_t> indptr{0}, indices, last_page_len;
    };
    std::vector<descriptor> steps;
    for (const index_t length : {150, 700, 1999}) {
        descriptor& step = steps.emplace_back();
        for (index_t r = 0; r < p.rows; ++r) {
            const index_t n = std::min(length, static_cast<index_t>(p.row_tokens[static_cast<std::size_t>(r)].size()));
            const index_t pages = (n + p.page_size - 1) / p.page_size;
            const auto first = p.kv.indices.begin() + p.kv.indptr[static_cast<std::size_t>(r)];
            step.indices.insert(step.indices.end(), first, first + pages);
            step.indptr.push_back(static_cast<hc::page_index_t>(step.indices.size()));
            step.last_page_len.push_back(static_cast<hc::page_index_t>(n - (pages - 1) * p.page_size));
        }
    }
    const long before = allocations.load();
    for (const descriptor& step : steps) {
        hc::paged_selection s = p.selection();
        s.indptr = step.indptr.data(), s.indices = step.indices.data(), s.last_page_len = step.last_page_len.data();
        hc::decode_attention(s, p.queries.data(), output.data(), lse.data(), 0.125f, pool, workspace);
    }
    CHECK(allocations.load() == before);
    CHECK(std::isfinite(lse[0]));  // the steps did attend
    // Without the reserve, the first step does allocate (the counter sees allocations at all).
    hc::split_attention_workspace fresh(100);
    hc::decode_attention(p.selection(), p.queries.data(), output.data(), lse.data(), 0.125f, pool, fresh);
    CHECK(allocations.load() > before);
}

TEST_CASE("split decode attention rejects a chunk shorter than a kernel block and a capture longer than its row") {
    CHECK_THROWS_WITH_AS(hc::split_attention_workspace(63), doctest::Contains("chunk_tokens"), hc::invalid_argument_error);
    hc::split_attention_workspace workspace;
    CHECK_THROWS_WITH_AS(workspace.reserve(4, -1, 3, 64), doctest::Contains("row_tokens"), hc::invalid_argument_error);
    const split_problem p({100});
    std::vector<float> scores(3 * 101);
    const std::vector<hc::score_capture> captures{{scores.data(), 101}};
    CHECK_THROWS_WITH_AS(split_run(p.selection(captures), p, 2, 64), doctest::Contains("captures[row].tokens"), hc::shape_error);
}
