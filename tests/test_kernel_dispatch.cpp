// The host attention kernel's two instruction-set copies (detail/isa_dispatch.hpp): the AVX2 copy chosen at
// run time gives bit-identical outputs, log-sum-exps and captured scores to the baseline copy, for fp32 and
// 16-bit K/V, over head dimensions with and without a vector tail, groups larger than a head tile, and row
// lengths around the block size. The copies compiled for head dimensions 64 and 128 equal the copy that reads
// the dimension at run time. The public entry points run the copy `selected_kernel_isa()` names.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <heterocache/attention/decode_attention.hpp>

#include "attention_reference.hpp"

namespace hc = heterocache;
using hc::index_t;

using testing_support::same_bits;

namespace {

//! One row of `length` random source tokens (out of `2 * length + 1` random K/V of element `E`) on pages of
//! `page_size` tokens of a shuffled pool, its queries and a capture of every score, run through the kernel
//! copy `isa`.
template <class E>
struct dispatch_case {
    index_t group, d, length, page_size;
    std::vector<float> source_keys, source_values, queries;
    testing_support::paged_kv<E> kv;

    dispatch_case(index_t group_, index_t d_, index_t length_, index_t page_size_, std::uint64_t seed)
        : group(group_), d(d_), length(length_), page_size(page_size_) {
        std::mt19937_64 rng(seed);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        const index_t source_tokens = 2 * length + 1;
        for (index_t i = 0; i < source_tokens * d; ++i) {
            source_keys.push_back(normal(rng));
            source_values.push_back(normal(rng));
        }
        const auto rows = testing_support::random_rows({length}, source_tokens, rng);
        for (index_t i = 0; i < group * d; ++i) queries.push_back(3.0f * normal(rng));
        kv = testing_support::paged_kv<E>(rows, source_keys.data(), source_values.data(), d, page_size, seed);
    }

    struct result {
        std::vector<float> output, lse, scores;
    };

    //! `head_dim_at_run_time`: the kernel copy that reads the head dimension at run time, even for 64 and 128.
    [[nodiscard]] result run(hc::detail::kernel_isa isa, bool head_dim_at_run_time = false) const {
        result r{std::vector<float>(static_cast<std::size_t>(group * d)), std::vector<float>(static_cast<std::size_t>(group)),
                 std::vector<float>(static_cast<std::size_t>(group * length))};
        const hc::detail::element_slots<E> source{kv.keys.data(), kv.values.data(), d};
        const hc::detail::attention_row<hc::detail::element_slots<E>> row{
            source,         kv.indices.data(), page_size,    0,         length,          group,  d,
            queries.data(), r.output.data(),   r.lse.data(), 0.125f,    r.scores.data(), length, length};
        if (head_dim_at_run_time)
            hc::detail::attend_row_for_head_dim<0>(row, isa);
        else
            hc::detail::attend_row(row, isa);
        return r;
    }
};

template <class E>
void check_copies_agree() {
    std::uint64_t seed = 11;
    for (const index_t d : {64, 100, 128})
        for (const index_t group : {1, 3, 12})
            for (const index_t length : {0, 1, 63, 64, 65, 1000})
                for (const index_t page_size : {1, 16}) {
                    CAPTURE(d);
                    CAPTURE(group);
                    CAPTURE(length);
                    CAPTURE(page_size);
                    const dispatch_case<E> c(group, d, length, page_size, ++seed);
                    const auto baseline = c.run(hc::detail::kernel_isa::baseline);
                    const auto avx2 = c.run(hc::detail::kernel_isa::avx2);
                    CHECK(same_bits(baseline.output, avx2.output));
                    CHECK(same_bits(baseline.lse, avx2.lse));
                    CHECK(same_bits(baseline.scores, avx2.scores));
                    if (length > 0) {  // and the copies compute attention: the output is a convex mix of values
                        CHECK(std::isfinite(baseline.lse[0]));
                        CHECK(std::abs(baseline.output[0]) <= 10.0f);
                    }
                }
}

template <class E>
void check_fixed_head_dims_agree() {
    std::uint64_t seed = 101;
    for (const hc::detail::kernel_isa isa : {hc::detail::kernel_isa::baseline, hc::detail::kernel_isa::avx2})
        for (const index_t d : {64, 128})
            for (const index_t group : {1, 4, 9})
                for (const index_t length : {1, 64, 70, 500})
                    for (const index_t page_size : {1, 16}) {
                        CAPTURE(d);
                        CAPTURE(group);
                        CAPTURE(length);
                        CAPTURE(page_size);
                        const dispatch_case<E> c(group, d, length, page_size, ++seed);
                        const auto fixed = c.run(isa);
                        const auto run_time = c.run(isa, true);
                        CHECK(same_bits(fixed.output, run_time.output));
                        CHECK(same_bits(fixed.lse, run_time.lse));
                        CHECK(same_bits(fixed.scores, run_time.scores));
                        CHECK(std::isfinite(fixed.lse[0]));
                    }
}

}  // namespace

TEST_CASE("the kernel compiled for head dimensions 64 and 128 equals the copy that reads it at run time") {
    SUBCASE("fp32") { check_fixed_head_dims_agree<float>(); }
    SUBCASE("fp16") { check_fixed_head_dims_agree<hc::fp16_t>(); }
    SUBCASE("bf16") { check_fixed_head_dims_agree<hc::bf16_t>(); }
}

TEST_CASE("the AVX2 copy of the attention kernel is bit-identical to the baseline copy") {
    if (!hc::detail::processor_has_avx2()) {
        MESSAGE("this build or processor has no AVX2 copy (" << hc::detail::kernel_isa_name() << "); nothing to compare");
        return;
    }
    SUBCASE("fp32") { check_copies_agree<float>(); }
    SUBCASE("fp16") { check_copies_agree<hc::fp16_t>(); }
    SUBCASE("bf16") { check_copies_agree<hc::bf16_t>(); }
}

TEST_CASE("decode_attention runs the copy the processor selects") {
    for (const index_t page_size : {1, 16}) {
        CAPTURE(page_size);
        const dispatch_case<float> c(3, 64, 300, page_size, 5);
        const auto selected = c.run(hc::detail::selected_kernel_isa());
        std::vector<float> output(selected.output.size()), lse(selected.lse.size()), scores(selected.scores.size());
        std::uint64_t stamp = 0;
        const hc::score_capture capture{scores.data(), c.length, &stamp, 7};
        const auto selection = c.kv.selection(c.group, {&capture, 1});
        hc::decode_attention(selection, c.queries.data(), output.data(), lse.data(), 0.125f);
        CHECK(same_bits(output, selected.output));
        CHECK(same_bits(lse, selected.lse));
        CHECK(same_bits(scores, selected.scores));
        CHECK(stamp == 7);
    }
    const std::string name = hc::detail::kernel_isa_name();
    CHECK((hc::detail::selected_kernel_isa() == hc::detail::kernel_isa::avx2) ==
          (name.find("avx2 (chosen") != std::string::npos));
}
