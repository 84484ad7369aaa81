// The CUDA kernels against the host backend on fresh random inputs: decode attention over the same paged
// selection (fp32, fp16, bf16; page sizes 1 and 16; head dims 64 and 128; GQA), the merge of partial states,
// pooled attention rows, top-k, overlap and token copies.
#include "cuda_test.cuh"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <utility>

#include "heterocache/algorithm/overlap.hpp"
#include "heterocache/algorithm/pooled_attention.hpp"
#include "heterocache/attention/decode_attention.hpp"
#include "heterocache/cuda/element_traits.cuh"
#include "heterocache/cuda/kernels/copy_tokens.cuh"
#include "heterocache/cuda/kernels/decode_attention.cuh"
#include "heterocache/cuda/kernels/overlap.cuh"
#include "heterocache/cuda/kernels/pooled_attention.cuh"
#include "heterocache/cuda/kernels/top_k.cuh"

namespace {

using hc::index_t;
using hc::page_index_t;

//! The host arrays of a random paged selection: `rows` rows of random length (row 1 empty: no page), each on
//! pages drawn without repeats from a shuffled pool of `pages` pages, so a row's pages are scattered.
struct random_paged_selection {
    index_t pages = 0;
    std::vector<index_t> lengths;  //!< tokens of each row
    std::vector<page_index_t> indptr{0}, indices, last_page_len;
};

random_paged_selection make_paged_selection(std::mt19937& rng, index_t rows, index_t max_length, index_t page_size) {
    random_paged_selection s;
    std::uniform_int_distribution<index_t> length(1, max_length);
    for (index_t r = 0; r < rows; ++r) {
        s.lengths.push_back(r == 1 ? 0 : length(rng));
        s.pages += hcc::ceil_div(s.lengths.back(), page_size);
    }
    s.pages += 3;  // pages no row attends: the pool is larger than the selection, as a hot tier's is
    std::vector<page_index_t> pool(static_cast<std::size_t>(s.pages));
    std::iota(pool.begin(), pool.end(), 0);
    std::shuffle(pool.begin(), pool.end(), rng);
    for (const index_t n : s.lengths) {
        const index_t row_pages = hcc::ceil_div(n, page_size);
        s.indices.insert(s.indices.end(), pool.end() - row_pages, pool.end());
        pool.resize(pool.size() - static_cast<std::size_t>(row_pages));
        s.indptr.push_back(static_cast<page_index_t>(s.indices.size()));
        s.last_page_len.push_back(static_cast<page_index_t>(n == 0 ? 0 : n - (row_pages - 1) * page_size));
    }
    return s;
}

//! Device attention vs the host kernel on the same paged selection of the same (rounded) K/V. Returns the
//! worst relative error of the outputs and of the lse values.
template <hc::KvElement E>
std::pair<double, double> attention_error(std::mt19937& rng, index_t head_dim, index_t group, index_t max_length,
                                          index_t page_size, const hcc::attention_launch& launch) {
    const index_t sequences = 2, kv_heads = 3, rows = sequences * kv_heads;
    const random_paged_selection s = make_paged_selection(rng, rows, max_length, page_size);
    const auto elements = static_cast<std::size_t>(s.pages * page_size * head_dim);
    const std::vector<float> queries = random_floats(rng, static_cast<std::size_t>(rows * group * head_dim), 2.0f);
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    const auto heads = static_cast<std::size_t>(rows * group);
    std::vector<float> want(heads * static_cast<std::size_t>(head_dim)), want_lse(heads);
    // Both kernels read the K/V rounded to `E`.
    std::vector<E> keys(elements), values(elements);
    hc::from_floats(random_floats(rng, elements).data(), keys.data(), static_cast<index_t>(elements));
    hc::from_floats(random_floats(rng, elements).data(), values.data(), static_cast<index_t>(elements));
    const hc::basic_paged_selection<E> host{rows, kv_heads, group, head_dim, page_size, s.indptr.data(),
                                            s.indices.data(), s.last_page_len.data(), keys.data(), values.data(), {}};
    hc::decode_attention(host, queries.data(), want.data(), want_lse.data(), scale);

    const auto d_indptr = to_device(s.indptr), d_indices = to_device(s.indices);
    const auto d_last_page_len = to_device(s.last_page_len);
    const auto d_keys = to_device(keys), d_values = to_device(values);
    const auto d_queries = to_device(queries);
    auto d_out = poisoned<float>(want.size());
    auto d_lse = poisoned<float>(want_lse.size());
    const hcc::device_paged_selection<E> device{rows, kv_heads, group, head_dim, page_size, d_indptr.data(),
                                                d_indices.data(), d_last_page_len.data(), d_keys.data(),
                                                d_values.data(), {}};
    const hcc::decode_attention_plan plan =
        hcc::plan_decode_attention(rows, group, head_dim, *std::max_element(s.lengths.begin(), s.lengths.end()),
                                   launch, hcc::current_multiprocessors());
    auto workspace = poisoned<float>(plan.workspace_floats());
    hcc::decode_attention(plan, device, d_queries.data(), d_out.data(), d_lse.data(), scale, workspace.data());
    const std::vector<float> got = to_host(d_out), got_lse = to_host(d_lse);
    return {max_relative_error(got, want), max_relative_error(got_lse, want_lse, 1.0)};
}

template <hc::KvElement E>
void check_attention(double tolerance) {
    std::mt19937 rng = fresh_rng();
    // Short splits force many partial states per row; the device's own plan checks the tuned path.
    const hcc::attention_launch short_splits{128, 4, 64, 32};
    const hcc::attention_launch tuned = hcc::select_launch_params(hcc::current_compute_capability()).attention;
    for (const index_t page_size : {index_t{1}, index_t{16}})
        for (const index_t head_dim : {index_t{64}, index_t{128}})
            for (const index_t group : {index_t{1}, index_t{4}, index_t{9}})
                for (const auto& launch : {short_splits, tuned}) {
                    CAPTURE(page_size);
                    CAPTURE(head_dim);
                    CAPTURE(group);
                    const auto [output_error, lse_error] =
                        attention_error<E>(rng, head_dim, group, 700, page_size, launch);
                    CHECK(output_error <= tolerance);
                    CHECK(lse_error <= tolerance);
                }
}

}  // namespace

TEST_CASE("fp32 split-K decode attention matches the host kernel on the same paged selection") {
    check_attention<float>(1e-4);
}
TEST_CASE("fp16 split-K decode attention matches the host kernel within 1e-3") { check_attention<hc::fp16_t>(1e-3); }
TEST_CASE("bf16 split-K decode attention matches the host kernel within 1e-3") { check_attention<hc::bf16_t>(1e-3); }

TEST_CASE("merging two partial states on the device matches the host merge, empty sides included") {
    std::mt19937 rng = fresh_rng();
    const index_t heads = 40, head_dim = 128;
    const auto n = static_cast<std::size_t>(heads * head_dim);
    const std::vector<float> a = random_floats(rng, n), b = random_floats(rng, n);
    std::vector<float> lse_a = random_floats(rng, static_cast<std::size_t>(heads), 20.0f);
    std::vector<float> lse_b = random_floats(rng, static_cast<std::size_t>(heads), 20.0f);
    lse_a[3] = lse_b[5] = -std::numeric_limits<float>::infinity();
    lse_a[7] = lse_b[7] = -std::numeric_limits<float>::infinity();
    std::vector<float> want(n), want_lse(static_cast<std::size_t>(heads));
    for (index_t h = 0; h < heads; ++h)
        hc::merge_attention_states(a.data() + h * head_dim, lse_a[h], b.data() + h * head_dim, lse_b[h], head_dim,
                                   want.data() + h * head_dim, want_lse[h]);
    const auto da = to_device(a), db = to_device(b), dla = to_device(lse_a), dlb = to_device(lse_b);
    auto out = poisoned<float>(n);
    auto lse = poisoned<float>(static_cast<std::size_t>(heads));
    hcc::merge_attention_states(heads, head_dim, da.data(), dla.data(), db.data(), dlb.data(), out.data(), lse.data());
    CHECK(max_relative_error(to_host(out), want) <= 1e-5);
    CHECK(max_relative_error(to_host(lse), want_lse, 1.0) <= 1e-6);
}

TEST_CASE("pooled attention rows on the device match the host pooled_attention_row") {
    std::mt19937 rng = fresh_rng();
    const index_t kv_heads = 2, group = 3, query_heads = kv_heads * group, head_dim = 64, window = 5;
    const std::vector<index_t> lengths = {1000, 37, 5};  // (sequence, kv_head) rows; lengths differ
    const std::vector<index_t> heads_of = {1, 0, 1};
    const std::vector<index_t> first_positions = {995, 40, 0};  // prefill window, decode-time, masked
    std::vector<index_t> offsets{0};
    for (const index_t n : lengths) offsets.push_back(offsets.back() + n);
    const auto rows = static_cast<index_t>(lengths.size());
    std::vector<std::vector<float>> keys, queries;
    std::vector<float> want(static_cast<std::size_t>(offsets.back()));
    std::vector<hcc::device_array<float>> device_keys, device_queries;
    std::vector<hcc::scoring_row<float>> descriptors;
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    for (index_t r = 0; r < rows; ++r) {
        keys.push_back(random_floats(rng, static_cast<std::size_t>(lengths[r] * head_dim), 2.0f));
        queries.push_back(random_floats(rng, static_cast<std::size_t>(window * query_heads * head_dim), 2.0f));
        const hc::query_rows q{queries.back().data(), window, query_heads * head_dim, head_dim, first_positions[r]};
        const hc::token_rows<float> k{keys.back().data(), {0, head_dim, nullptr, 0, 0}};
        std::vector<float> scratch(static_cast<std::size_t>(2 * lengths[r]));
        hc::pooled_attention_row(q, k, heads_of[r], group, head_dim,
                                 std::span<float>(want.data() + offsets[r], static_cast<std::size_t>(lengths[r])), scratch);
        device_keys.push_back(to_device(keys.back()));
        device_queries.push_back(to_device(queries.back()));
        descriptors.push_back({device_keys.back().data(), head_dim,
                               device_queries.back().data() + heads_of[r] * group * head_dim, first_positions[r]});
    }
    const auto d_rows = to_device(descriptors);
    const auto d_offsets = to_device(offsets);
    const hcc::scoring_batch<float> batch{rows, group, head_dim, window, query_heads * head_dim, head_dim,
                                          d_rows.data(), d_offsets.data()};
    const hcc::scoring_plan plan{rows, group, window, *std::max_element(lengths.begin(), lengths.end()), offsets.back()};
    auto workspace = poisoned<float>(plan.workspace_floats());
    auto scores = poisoned<float>(want.size());
    hcc::pooled_attention_rows(plan, batch, scale, scores.data(), workspace.data());
    const std::vector<float> got = to_host(scores);
    const float top = *std::max_element(want.begin(), want.end());
    CHECK(max_relative_error(got, want, 1e-2 * top) <= 1e-4);
}

TEST_CASE("device top-k equals the host top_k_positions exactly, ties to the lower position") {
    std::mt19937 rng = fresh_rng();
    const std::vector<index_t> lengths = {5000, 1, 300, 0, 4096};
    const std::vector<index_t> ks = {1024, 1, 300, 0, 17};
    std::vector<index_t> offsets{0}, out_offsets{0};
    for (std::size_t r = 0; r < lengths.size(); ++r) {
        offsets.push_back(offsets.back() + lengths[r]);
        out_offsets.push_back(out_offsets.back() + ks[r]);
    }
    // Coarse values make many ties; signed zeros must tie too.
    std::uniform_int_distribution<int> level(-8, 8);
    std::vector<float> scores(static_cast<std::size_t>(offsets.back()));
    for (float& x : scores) x = static_cast<float>(level(rng)) / 8.0f;
    if (scores.size() > 10) scores[3] = -0.0f, scores[9] = 0.0f;
    std::vector<index_t> want(static_cast<std::size_t>(out_offsets.back()));
    for (std::size_t r = 0; r < lengths.size(); ++r) {
        std::vector<index_t> scratch(static_cast<std::size_t>(lengths[r]));
        hc::top_k_positions(std::span<const float>(scores.data() + offsets[r], static_cast<std::size_t>(lengths[r])),
                            std::span<index_t>(want.data() + out_offsets[r], static_cast<std::size_t>(ks[r])), scratch);
    }
    const auto d_scores = to_device(scores);
    const auto d_offsets = to_device(offsets), d_out_offsets = to_device(out_offsets);
    const hcc::top_k_plan plan = hcc::plan_top_k(static_cast<index_t>(lengths.size()), 5000, offsets.back(), 1024,
                                                 out_offsets.back());
    hcc::device_array<unsigned char> workspace(plan.workspace_bytes());
    auto positions = poisoned<index_t>(want.size());
    hcc::top_k_positions(plan, d_scores.data(), d_offsets.data(), d_out_offsets.data(), positions.data(), workspace.data());
    CHECK(to_host(positions) == want);
}

TEST_CASE("device overlap coefficients equal the host overlap_coefficient exactly") {
    std::mt19937 rng = fresh_rng();
    const index_t pairs = 12;
    std::vector<index_t> xi{0}, yi{0}, xs, ys;
    std::vector<double> want;
    std::bernoulli_distribution keep(0.3);
    for (index_t p = 0; p < pairs; ++p) {
        std::vector<index_t> x, y;
        for (index_t t = 0; t < 3000; ++t) {
            if (keep(rng)) x.push_back(t);
            if (keep(rng) || (p == 0 && !x.empty() && x.back() == t)) y.push_back(t);
        }
        if (p == 1) x.clear();  // an empty set gives 0
        want.push_back(hc::overlap_coefficient(x, y));
        xs.insert(xs.end(), x.begin(), x.end()), ys.insert(ys.end(), y.begin(), y.end());
        xi.push_back(static_cast<index_t>(xs.size())), yi.push_back(static_cast<index_t>(ys.size()));
    }
    const auto dxi = to_device(xi), dyi = to_device(yi), dxs = to_device(xs), dys = to_device(ys);
    auto out = poisoned<double>(want.size());
    hcc::overlap_coefficients(pairs, {dxi.data(), dxs.data()}, {dyi.data(), dys.data()}, out.data());
    CHECK(to_host(out) == want);
}

TEST_CASE("appending tokens converts to the slot type as the host does and records positions") {
    std::mt19937 rng = fresh_rng();
    const index_t tokens = 9, head_dim = 128, slots = 64;
    const std::vector<float> keys = random_floats(rng, static_cast<std::size_t>(tokens * head_dim));
    const std::vector<float> values = random_floats(rng, keys.size());
    std::vector<index_t> slot(static_cast<std::size_t>(tokens)), position(slot.size());
    for (index_t i = 0; i < tokens; ++i) slot[i] = 7 * i % slots, position[i] = 1000 + i;
    const auto dk = to_device(keys), dv = to_device(values);
    const auto ds = to_device(slot), dp = to_device(position);
    auto hot_k = poisoned<hc::bf16_t>(static_cast<std::size_t>(slots * head_dim));
    auto hot_v = poisoned<hc::bf16_t>(hot_k.size());
    auto hot_p = poisoned<index_t>(static_cast<std::size_t>(slots));
    hcc::copy_tokens(hcc::token_copy{tokens, head_dim, nullptr, ds.data(), dp.data()}, dk.data(), dv.data(),
                     hcc::device_elements(hot_k.data()), hcc::device_elements(hot_v.data()), hot_p.data());
    const std::vector<hc::bf16_t> got_k = to_host(hot_k), got_v = to_host(hot_v);
    const std::vector<index_t> got_p = to_host(hot_p);
    for (index_t i = 0; i < tokens; ++i) {
        CHECK(got_p[slot[i]] == position[i]);
        for (index_t c = 0; c < head_dim; ++c) {
            CHECK(got_k[slot[i] * head_dim + c] == hc::from_float<hc::bf16_t>(keys[i * head_dim + c]));
            CHECK(got_v[slot[i] * head_dim + c] == hc::from_float<hc::bf16_t>(values[i * head_dim + c]));
        }
    }
}
