#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <heterocache/algorithm/pooled_attention.hpp>

using heterocache::index_t;

namespace {
// Softmax of scaled scores, computed by hand in double.
std::vector<double> softmax(const std::vector<double>& scores) {
    double top = scores[0], sum = 0.0;
    for (double s : scores) top = std::max(top, s);
    std::vector<double> p;
    for (double s : scores) sum += std::exp(s - top);
    for (double s : scores) p.push_back(std::exp(s - top) / sum);
    return p;
}
}  // namespace

TEST_CASE("a pooled attention row is the group max of mean softmax rows, average-pooled over width 5") {
    // d = 1, so q.k is a product; scale 1/sqrt(1) = 1. Two query heads per KV head, KV head 1 of 2.
    const std::vector<float> keys{0.0f, 1.0f, 2.0f, -1.0f, 0.5f, 3.0f, 0.0f};  // 7 positions
    // queries [token][q_head][d=1]: 4 query heads (2 KV heads x G=2); KV head 1 uses q_heads 2, 3.
    const std::vector<float> queries{9.0f, 9.0f, 1.0f, -1.0f,   // query 0 at position 5
                                     9.0f, 9.0f, 0.5f, 2.0f};   // query 1 at position 6
    const heterocache::query_rows q{queries.data(), 2, 4, 1, 5};
    const heterocache::token_rows<float> k{keys.data(), {0, 1, nullptr, 0, 0}};  // token t at keys[t]
    std::vector<float> row(7), scratch(14);
    heterocache::pooled_attention_row(q, k, 1, 2, 1, row, scratch);

    std::vector<double> group_max(7, 0.0);
    for (int g = 0; g < 2; ++g) {
        std::vector<double> mean(7, 0.0);
        for (int i = 0; i < 2; ++i) {
            const double qv = queries[static_cast<std::size_t>(i * 4 + 2 + g)];
            const int visible = 5 + i + 1;  // causal: query at position 5 sees 0..5, at 6 sees 0..6
            std::vector<double> scores;
            for (int t = 0; t < visible; ++t) scores.push_back(qv * keys[static_cast<std::size_t>(t)]);
            const auto p = softmax(scores);
            for (int t = 0; t < visible; ++t) mean[static_cast<std::size_t>(t)] += p[static_cast<std::size_t>(t)] / 2.0;
        }
        for (int t = 0; t < 7; ++t) group_max[static_cast<std::size_t>(t)] = std::max(group_max[static_cast<std::size_t>(t)], mean[static_cast<std::size_t>(t)]);
    }
    for (int t = 0; t < 7; ++t) {
        double sum = 0.0;
        for (int u = t - 2; u <= t + 2; ++u)
            if (u >= 0 && u < 7) sum += group_max[static_cast<std::size_t>(u)];
        CHECK(row[static_cast<std::size_t>(t)] == doctest::Approx(sum / 5.0).epsilon(1e-6));
    }
}

TEST_CASE("pooled attention rows reject an empty query set and a short scratch buffer") {
    const std::vector<float> keys(4, 1.0f), queries(2, 1.0f);
    std::vector<float> row(4), scratch(8), small(7);
    const heterocache::token_rows<float> k{keys.data(), {0, 1, nullptr, 0, 0}};  // token t at keys[t]
    CHECK_THROWS_AS(heterocache::pooled_attention_row({queries.data(), 0, 1, 1, 3}, k, 0, 1, 1, row, scratch),
                    heterocache::invalid_argument_error);
    CHECK_THROWS_AS(heterocache::pooled_attention_row({queries.data(), 1, 1, 1, 3}, k, 0, 1, 1, row, small),
                    heterocache::invalid_argument_error);
}

TEST_CASE("pooled attention reads keys of any element type and layout: 16-bit keys as their widened floats, pages as runs") {
    // T = 40 keys of d = 8, rounded to bf16; the same keys widened to float, strided; and the widened keys on
    // pages of 16 tokens listed out of order (token t of page p at pool slot p * 16 + t % 16).
    const index_t t = 40, d = 8, group = 2;
    std::vector<float> floats(static_cast<std::size_t>(t * d)), queries(static_cast<std::size_t>(group * d));
    for (std::size_t i = 0; i < floats.size(); ++i) floats[i] = std::sin(0.37f * static_cast<float>(i));
    for (std::size_t i = 0; i < queries.size(); ++i) queries[i] = 2.0f * std::cos(0.11f * static_cast<float>(i));
    std::vector<heterocache::bf16_t> half(floats.size());
    heterocache::from_floats(floats.data(), half.data(), static_cast<index_t>(half.size()));
    std::vector<float> widened(floats.size());
    heterocache::to_floats(half.data(), widened.data(), static_cast<index_t>(widened.size()));
    const std::vector<std::int32_t> pages{2, 0, 1};
    std::vector<float> pool(static_cast<std::size_t>(3 * 16 * d));
    for (index_t k = 0; k < t; ++k)
        std::copy_n(widened.data() + k * d, d, pool.data() + (pages[static_cast<std::size_t>(k / 16)] * 16 + k % 16) * d);

    const heterocache::query_rows q{queries.data(), 1, group * d, d, t - 1};
    std::vector<float> scratch(static_cast<std::size_t>(2 * t)), from_half(static_cast<std::size_t>(t)),
        from_floats(from_half.size()), from_pages(from_half.size());
    heterocache::pooled_attention_row(q, heterocache::token_rows<heterocache::bf16_t>{half.data(), {0, d, nullptr, 0, 0}}, 0,
                                      group, d, from_half, scratch);
    heterocache::pooled_attention_row(q, heterocache::token_rows<float>{widened.data(), {0, d, nullptr, 0, 0}}, 0, group, d,
                                      from_floats, scratch);
    heterocache::pooled_attention_row(q, heterocache::token_rows<float>{pool.data(), {0, d, pages.data(), 16, 16 * d}}, 0,
                                      group, d, from_pages, scratch);
    CHECK(from_half == from_floats);
    CHECK(from_pages == from_floats);
    double mass = 0.0;
    for (const float x : from_floats) mass += x;
    CHECK(mass > 0.0);  // a real attention row, not zeros
}
