#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <vector>

#include <heterocache/algorithm/overlap.hpp>
#include <heterocache/errors.hpp>
#include <heterocache/monitor/page_digests.hpp>

namespace hc = heterocache;
using hc::index_t;

TEST_CASE("page digests rank every page by page_score_bound of its own min/max keys, to the bit") {
    std::mt19937 rng(11);
    std::normal_distribution<float> normal;
    for (const index_t d : {1, 5, 64})
        for (const index_t page_tokens : {1, 3, 16})
            for (const index_t t : {1, 16, 47, 200}) {
                const index_t group = 3, slots = 2;
                std::vector<float> keys(static_cast<std::size_t>(slots * t * d));
                for (auto& x : keys) x = normal(rng);
                std::vector<float> queries(static_cast<std::size_t>(group * d));
                for (auto& x : queries) x = normal(rng);
                hc::page_digests digests;
                digests.plan(static_cast<std::size_t>(slots), 256, page_tokens, d);
                for (index_t s = 0; s < slots; ++s)
                    digests.build(static_cast<std::size_t>(s), t, [&](index_t p, float* out) {
                        std::copy_n(keys.begin() + (s * t + p) * d, d, out);
                    });
                const index_t pages = digests.pages(t);
                REQUIRE(pages == (t + page_tokens - 1) / page_tokens);
                for (index_t s = 0; s < slots; ++s) {
                    std::vector<float> scores(static_cast<std::size_t>(pages));
                    digests.rank_pages(static_cast<std::size_t>(s), queries.data(), d, group, scores);
                    std::vector<float> ranking(static_cast<std::size_t>(t));
                    digests.rank(static_cast<std::size_t>(s), queries.data(), d, group, ranking);
                    for (index_t page = 0; page < pages; ++page) {
                        // The reference: the page's channel-wise min and max, then the formula itself.
                        std::vector<float> low(static_cast<std::size_t>(d), 1e30f), high(static_cast<std::size_t>(d), -1e30f);
                        for (index_t p = page * page_tokens; p < std::min(t, (page + 1) * page_tokens); ++p)
                            for (index_t c = 0; c < d; ++c) {
                                low[c] = std::min(low[c], keys[(s * t + p) * d + c]);
                                high[c] = std::max(high[c], keys[(s * t + p) * d + c]);
                            }
                        float best = -1e30f;
                        for (index_t g = 0; g < group; ++g)
                            best = std::max(best, hc::page_score_bound(queries.data() + g * d, low.data(), high.data(), d));
                        CHECK(scores[page] == best);
                        for (index_t p = page * page_tokens; p < std::min(t, (page + 1) * page_tokens); ++p)
                            CHECK(ranking[p] == best);
                    }
                }
            }
}

TEST_CASE("the top positions of a paged ranking are top_k_positions over its positions, found from the pages") {
    std::mt19937 rng(5);
    std::uniform_int_distribution<int> level(0, 3);  // many tied pages
    for (const index_t page_tokens : {1, 4, 16})
        for (const index_t t : {1, 15, 16, 17, 100, 259}) {
            const index_t pages = (t + page_tokens - 1) / page_tokens;
            for (int trial = 0; trial < 4; ++trial) {
                std::vector<float> page_scores(static_cast<std::size_t>(pages));
                for (auto& x : page_scores) x = trial == 3 ? -0.0f : static_cast<float>(level(rng)) - 1.5f;
                if (trial == 3 && pages > 1) page_scores[1] = 0.0f;  // +0 ties -0
                std::vector<float> ranking(static_cast<std::size_t>(t));
                for (index_t p = 0; p < t; ++p) ranking[p] = page_scores[p / page_tokens];
                for (index_t k = 0; k <= t; k += std::max<index_t>(1, t / 23)) {
                    std::vector<index_t> expected(static_cast<std::size_t>(k)), got(static_cast<std::size_t>(k), -1);
                    std::vector<index_t> scratch(static_cast<std::size_t>(t));
                    hc::top_k_positions(ranking, expected, scratch);
                    std::vector<index_t> page_scratch(static_cast<std::size_t>(2 * pages));
                    hc::top_positions_of_pages(page_scores, page_tokens, t, got, page_scratch);
                    CHECK(got == expected);
                }
            }
        }
}

TEST_CASE("top_positions_of_pages names a bad argument") {
    const std::vector<float> page_scores{1.0f, 2.0f, 3.0f};
    std::vector<index_t> out(4), scratch(6), small(5);
    CHECK_NOTHROW(hc::top_positions_of_pages(page_scores, 16, 40, out, scratch));
    CHECK_THROWS_AS(hc::top_positions_of_pages(page_scores, 16, 60, out, scratch), hc::shape_error);   // 4 pages
    CHECK_THROWS_AS(hc::top_positions_of_pages(page_scores, 0, 40, out, scratch), hc::invalid_argument_error);
    CHECK_THROWS_AS(hc::top_positions_of_pages(page_scores, 16, 40, out, small), hc::invalid_argument_error);
    std::vector<index_t> too_many(41);
    CHECK_THROWS_AS(hc::top_positions_of_pages(page_scores, 16, 40, too_many, scratch), hc::invalid_argument_error);
    hc::page_digests digests;
    digests.plan(1, 40, 16, 2);
    std::vector<float> four(4);
    CHECK_THROWS_AS(digests.rank_pages(0, page_scores.data(), 2, 1, four), hc::shape_error);  // 3 pages at most
}
