#pragma once
//! \file
//! Launch parameters as values (the CCCL tuning idiom): one plain struct per kernel family, a `constexpr`
//! selector from compute capability to those structs, and concepts that check a struct is usable.
//! The compile-time fields (threads, tokens per step) are template arguments of the kernels, so a test or
//! a tuner can launch a kernel with its own parameters; the run-time fields only size the grid.

#include <concepts>

#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {
namespace cuda {

//! Split-K decode attention (`kernels/decode_attention.cuh`).
struct attention_launch {
    int threads = 128;              //!< threads per (row, split) block; a multiple of 32, one warp walks a token stream
    int tokens_per_step = 4;        //!< tokens a warp scores before one online-softmax rescale
    int blocks_per_multiprocessor = 4;  //!< resident blocks aimed for when choosing how many splits a row gets
    index_t min_split_tokens = 256;     //!< fewer tokens per split would spend more on the merge than it saves
    friend constexpr bool operator==(const attention_launch&, const attention_launch&) = default;
};

//! Pooled attention-row scoring (`kernels/pooled_attention.cuh`).
struct scoring_launch {
    int threads = 128;        //!< threads per block; a multiple of 32
    int tokens_per_tile = 32;  //!< keys a block stages in shared memory at once
    int queries_per_tile = 8;   //!< queries a block stages in shared memory at once
    friend constexpr bool operator==(const scoring_launch&, const scoring_launch&) = default;
};

//! Element-wise kernels: copies, gathers, packing, overlap counts.
struct copy_launch {
    int threads = 256;
    friend constexpr bool operator==(const copy_launch&, const copy_launch&) = default;
};

//! Every kernel family's parameters for one architecture.
struct launch_params {
    attention_launch attention;
    scoring_launch scoring;
    copy_launch copy;
};

//! An attention launch struct whose values the kernels accept (checked at compile time where it is a constant).
template <class P>
concept AttentionLaunch = std::is_aggregate_v<P> && requires(const P& p) {
    { p.threads } -> std::convertible_to<int>;
    { p.tokens_per_step } -> std::convertible_to<int>;
    { p.blocks_per_multiprocessor } -> std::convertible_to<int>;
    { p.min_split_tokens } -> std::convertible_to<index_t>;
};
template <class P>
concept ScoringLaunch = std::is_aggregate_v<P> && requires(const P& p) {
    { p.threads } -> std::convertible_to<int>;
    { p.tokens_per_tile } -> std::convertible_to<int>;
    { p.queries_per_tile } -> std::convertible_to<int>;
};
template <class P>
concept CopyLaunch = std::is_aggregate_v<P> && requires(const P& p) {
    { p.threads } -> std::convertible_to<int>;
};
template <class P>
concept LaunchParams = requires(const P& p) {
    requires AttentionLaunch<std::remove_cvref_t<decltype(p.attention)>>;
    requires ScoringLaunch<std::remove_cvref_t<decltype(p.scoring)>>;
    requires CopyLaunch<std::remove_cvref_t<decltype(p.copy)>>;
};

//! Whether the values satisfy what the kernels assume (warps whole, shared memory within 48 KiB).
constexpr bool valid(const attention_launch& p) noexcept {
    return p.threads >= 32 && p.threads <= 1024 && p.threads % 32 == 0 && p.tokens_per_step >= 1 &&
           p.tokens_per_step <= 8 && p.blocks_per_multiprocessor >= 1 && p.min_split_tokens >= 1;
}
constexpr bool valid(const scoring_launch& p) noexcept {
    return p.threads >= 32 && p.threads % 32 == 0 && p.tokens_per_tile == 32 && p.queries_per_tile >= 1 &&
           (p.tokens_per_tile * p.queries_per_tile) % p.threads == 0 &&
           (p.tokens_per_tile + p.queries_per_tile) * (256 + 1) * 4 <= 48 * 1024;
}
constexpr bool valid(const copy_launch& p) noexcept { return p.threads >= 32 && p.threads <= 1024 && p.threads % 32 == 0; }

//! Launch parameters for compute capability `cc` (`major * 10 + minor`). Ampere (80, 86, 89) and Hopper (90)
//! differ only in how many blocks a split decode aims to keep resident: Hopper's larger L2 and
//! bandwidth favour more, shorter splits. The compile-time fields agree, so both share one kernel build.
constexpr launch_params select_launch_params(int cc) noexcept {
    launch_params p{};
    if (cc >= 90) p.attention.blocks_per_multiprocessor = 8;
    return p;
}

static_assert(LaunchParams<launch_params>);
static_assert(valid(select_launch_params(80).attention) && valid(select_launch_params(90).attention));
static_assert(valid(select_launch_params(80).scoring) && valid(select_launch_params(90).scoring));
static_assert(valid(select_launch_params(80).copy) && valid(select_launch_params(90).copy));

//! The compile-time part of a launch struct: the fields that are template arguments of a kernel.
constexpr attention_launch attention_shape(attention_launch p) noexcept {
    return {p.threads, p.tokens_per_step, attention_launch{}.blocks_per_multiprocessor, attention_launch{}.min_split_tokens};
}
static_assert(attention_shape(select_launch_params(80).attention) == attention_shape(select_launch_params(90).attention),
              "sm_80 and sm_90 are meant to share one decode-attention kernel build");

}  // namespace cuda
}  // namespace v1
}  // namespace heterocache
