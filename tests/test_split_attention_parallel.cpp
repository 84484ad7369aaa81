// Decode attention with long rows split over a thread pool (attention/split_attention.hpp): equal to a float64
// reference, bit-identical for any pool size, bit-identical to `decode_attention` on rows that fit one chunk,
// captures equal to the unsplit kernel's, 16-bit K/V, no allocation after `reserve`, and bad arguments
// rejected.
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

#include "attention_reference.hpp"

namespace hc = heterocache;
using hc::index_t;

// Every allocation of this test program is counted, so a test can assert that a call made none.
using testing_support::same_bits;

namespace {
std::atomic<long> allocations{0};
}  // namespace
// Out of line, so that GCC does not pair the malloc and free inside with the new and delete of callers.
[[gnu::noinline]] void* operator new(std::size_t size) {
    allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
    throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

//! Rows of the given lengths over random slots of one pool (slots repeat across rows), G = 3, d = 64.
struct split_problem {
    index_t rows, group = 3, d = 64;
    std::vector<float> keys, values, queries;
    std::vector<index_t> indptr{0}, indices;

    explicit split_problem(const std::vector<index_t>& lengths, std::uint64_t seed = 3)
        : rows(static_cast<index_t>(lengths.size())) {
        std::mt19937_64 rng(seed);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        const index_t slots = 2000;
        for (index_t i = 0; i < slots * d; ++i) keys.push_back(normal(rng)), values.push_back(normal(rng) + 0.5f);
        for (index_t i = 0; i < rows * group * d; ++i) queries.push_back(2.0f * normal(rng));
        std::uniform_int_distribution<index_t> slot(0, slots - 1);
        for (const index_t n : lengths) {
            for (index_t i = 0; i < n; ++i) indices.push_back(slot(rng));
            indptr.push_back(static_cast<index_t>(indices.size()));
        }
    }
    [[nodiscard]] hc::csr_selection selection(std::span<const hc::score_capture> captures = {}) const {
        return {rows, rows, group, d, indptr, indices, keys.data(), values.data(), captures};
    }
    [[nodiscard]] std::size_t heads() const { return static_cast<std::size_t>(rows * group); }
};

struct attention_result {
    std::vector<float> output, lse;
};

attention_result split_run(const hc::csr_selection& s, const split_problem& p, index_t threads, index_t chunk_tokens) {
    hc::host_thread_pool pool(threads);
    hc::split_attention_workspace workspace(chunk_tokens);
    attention_result r{std::vector<float>(p.heads() * static_cast<std::size_t>(p.d)), std::vector<float>(p.heads())};
    hc::decode_attention(s, p.queries.data(), r.output.data(), r.lse.data(), 0.125f, pool, workspace);
    return r;
}

// Row lengths around the chunk size 100: empty, shorter, equal, one more, many chunks.
const std::vector<index_t> lengths{0, 37, 100, 101, 250, 1000, 1999};

}  // namespace

TEST_CASE("split decode attention matches a float64 reference within 1e-5") {
    const split_problem p(lengths);
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

TEST_CASE("split decode attention is bit-identical for any pool size, and to decode_attention on one-chunk rows") {
    const split_problem p(lengths);
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

TEST_CASE("split decode attention writes the captured scores of every chunk, as the plain kernel does") {
    const split_problem p({1000, 250, 0});
    // Row 0 captures 730 of its 1000 tokens (the capture ends inside a chunk), row 1 all of its 250.
    std::vector<float> split_scores(3 * 730 + 3 * 250, -1.0f), plain_scores(split_scores.size(), -2.0f);
    const std::vector<hc::score_capture> split_captures{{split_scores.data(), 730}, {split_scores.data() + 3 * 730, 250}, {}};
    const std::vector<hc::score_capture> plain_captures{{plain_scores.data(), 730}, {plain_scores.data() + 3 * 730, 250}, {}};
    const attention_result split = split_run(p.selection(split_captures), p, 2, 128);
    attention_result plain{std::vector<float>(split.output.size()), std::vector<float>(split.lse.size())};
    hc::decode_attention(p.selection(plain_captures), p.queries.data(), plain.output.data(), plain.lse.data(), 0.125f);
    CHECK(same_bits(split_scores, plain_scores));  // every score written (no -1 left), in the [g][token] layout
}

TEST_CASE("split decode attention over 16-bit K/V equals the fp32 path on the widened K/V") {
    const split_problem p({700, 64, 300});
    std::vector<hc::bf16_t> keys(p.keys.size()), values(p.values.size());
    hc::from_floats(p.keys.data(), keys.data(), static_cast<index_t>(keys.size()));
    hc::from_floats(p.values.data(), values.data(), static_cast<index_t>(values.size()));
    split_problem widened = p;
    hc::to_floats(keys.data(), widened.keys.data(), static_cast<index_t>(keys.size()));
    hc::to_floats(values.data(), widened.values.data(), static_cast<index_t>(values.size()));
    const hc::basic_csr_selection<hc::bf16_t> half{p.rows, p.rows, p.group, p.d, p.indptr, p.indices, keys.data(), values.data(), {}};
    hc::host_thread_pool pool(2);
    hc::split_attention_workspace workspace(128);
    attention_result r{std::vector<float>(p.heads() * static_cast<std::size_t>(p.d)), std::vector<float>(p.heads())};
    hc::decode_attention(half, p.queries.data(), r.output.data(), r.lse.data(), 0.125f, pool, workspace);
    const attention_result wide = split_run(widened.selection(), widened, 2, 128);
    CHECK(same_bits(r.output, wide.output));
    CHECK(same_bits(r.lse, wide.lse));
}

TEST_CASE("split decode attention allocates nothing once the workspace is reserved for the longest step") {
    const split_problem p({1999, 1000, 37});
    hc::host_thread_pool pool(3);
    hc::split_attention_workspace workspace(100);
    workspace.reserve(p.rows, 1999, p.group, p.d);
    std::vector<float> output(p.heads() * static_cast<std::size_t>(p.d)), lse(p.heads());
    // Steps of growing rows, as in decode: every row length up to the reserved one.
    std::vector<index_t> indptr{0, 0, 0, 0};
    const long before = allocations.load();
    for (const index_t length : {150, 700, 1999}) {
        indptr = {0, length, length + std::min<index_t>(length, 1000), length + std::min<index_t>(length, 1000) + 37};
        const hc::csr_selection s{p.rows, p.rows, p.group, p.d, indptr, p.indices, p.keys.data(), p.values.data(), {}};
        hc::decode_attention(s, p.queries.data(), output.data(), lse.data(), 0.125f, pool, workspace);
    }
    CHECK(allocations.load() == before);
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
