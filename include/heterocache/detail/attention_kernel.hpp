#pragma once
//! \file
//! The host decode-attention row kernel shared by the fp32 and the 16-bit paths (internal).
//!
//! One call computes one row of a selection for all the query heads of its GQA group: every key and value is read once
//! and used by the whole group. Tokens go in blocks of `attention_block_tokens`: the scores of a block, one
//! rescale of the running state per block (online softmax), then the weighted values of the block summed
//! into a block partial that is added to the running total with Kahan compensation. fp32 throughout; the
//! error stays near `attention_block_tokens` ulp however long the row (tested against float64 at 32K).
//! Deterministic: the order of every sum depends on the selection only.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

#include "heterocache/attention/paged_selection.hpp"
#include "heterocache/detail/vector_math.hpp"
#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! Maximum head dimension of the host kernels (the accumulator lives on the stack).
inline constexpr index_t max_head_dim = 256;

namespace detail {

//! Tokens scored, then accumulated, together.
inline constexpr index_t attention_block_tokens = 64;
//! Query heads of a group processed in one pass over the row (larger groups take several passes).
inline constexpr index_t attention_head_tile = 8;

//! Asks the memory system for the `bytes` at `address` ahead of their use: a hint that keeps loads in
//! flight while the kernel computes (compilers without the builtin ignore it).
HETEROCACHE_ALWAYS_INLINE void prefetch(const void* address, std::size_t bytes) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    const char* first = static_cast<const char*>(address);
    for (std::size_t offset = 0; offset < bytes; offset += 64) __builtin_prefetch(first + offset);
#else
    (void)address, (void)bytes;
#endif
}

//! A row of a paged selection in the kernel's terms: tokens `[first_token, first_token + tokens)` of the row,
//! token `k` in slot `pages[k / page_size] * page_size + k % page_size`. `Source` gives a token's key and value
//! as `head_dim` floats: `const float* key(index_t slot, float* buffer)` returns either the stored floats or
//! `buffer`, filled; `prefetch(index_t slot, bool value)` hints that a slot's key (or value) is read soon.
//! Mark `prefetch` `HETEROCACHE_ALWAYS_INLINE`: GCC finds a function that only prefetches to be pure, and
//! unless it was inlined first it drops the calls as dead code (the fp32 kernel ran without its hints, 25 %
//! slower from memory, until this was found).
template <class Source>
struct attention_row {
    const Source& source;
    const page_index_t* pages;  //!< the row's pages
    index_t page_size;
    index_t first_token;  //!< first token of the row this call attends (a chunk of a split row starts later)
    index_t tokens;
    index_t group_size, head_dim;
    const float* queries;  //!< `group_size * head_dim`
    float* output;         //!< `group_size * head_dim`
    float* lse;            //!< `group_size`
    float scale;
    float* scores = nullptr;   //!< null, or the scaled scores of the first `score_tokens` tokens: `[g][token]`
    index_t score_tokens = 0;
    index_t score_stride = 0;  //!< floats between two heads' scores (`score_tokens` for a whole row's capture)
};

//! The slots of `count` consecutive tokens from token `first` of a row on `pages`: one division, then a walk
//! through the pages.
HETEROCACHE_ALWAYS_INLINE void page_slots(const page_index_t* pages, index_t page_size, index_t first, index_t count,
                                          index_t* slots) noexcept {
    if (count <= 0) return;
    index_t page = first / page_size, offset = first % page_size;
    for (index_t j = 0; j < count; ++j) {
        slots[j] = static_cast<index_t>(pages[page]) * page_size + offset;
        if (++offset == page_size) offset = 0, ++page;
    }
}

//! `sum += x` with the running compensation `carry` (Kahan).
HETEROCACHE_ALWAYS_INLINE void compensated_add(float& sum, float& carry, float x) noexcept {
    const float y = x - carry;
    const float t = sum + y;
    carry = (t - sum) - y;
    sum = t;
}

//! The running softmax state of up to `attention_head_tile` query heads.
struct attention_state {
    alignas(64) float total[attention_head_tile][max_head_dim];
    alignas(64) float carry[attention_head_tile][max_head_dim];
    alignas(64) float partial[attention_head_tile][max_head_dim];
    alignas(64) float weights[attention_head_tile][attention_block_tokens];
    float maximum[attention_head_tile];
    float denominator[attention_head_tile];
    float denominator_carry[attention_head_tile];
};

//! The kernel: heads `[first_head, first_head + heads)` of the row (at most `attention_head_tile`), for head
//! dimension `HeadDim` (0: `row.head_dim`, read at run time). Inlined into each instruction-set copy below.
template <index_t HeadDim, class Source>
HETEROCACHE_ALWAYS_INLINE void attend_heads_body(const attention_row<Source>& row, index_t first_head, index_t heads,
                                                 attention_state& st) noexcept {
    const index_t d = HeadDim > 0 ? HeadDim : row.head_dim;
    const float* q = row.queries + first_head * d;
    alignas(64) float buffers[token_tile][max_head_dim];  // tokens converted by a 16-bit source
    index_t block_slots[2][attention_block_tokens];          // this block's slots and the next one's
    for (index_t g = 0; g < heads; ++g) {
        st.maximum[g] = -std::numeric_limits<float>::infinity();
        st.denominator[g] = st.denominator_carry[g] = 0.0f;
        std::fill(st.total[g], st.total[g] + d, 0.0f);
        std::fill(st.carry[g], st.carry[g] + d, 0.0f);
    }
    page_slots(row.pages, row.page_size, row.first_token, std::min(attention_block_tokens, row.tokens), block_slots[0]);
    for (index_t begin = 0, block = 0; begin < row.tokens; begin += attention_block_tokens, block ^= 1) {
        const index_t n = std::min(attention_block_tokens, row.tokens - begin);
        const index_t next = begin + attention_block_tokens;  // the next block's keys, this block's values
        const index_t next_n = std::max<index_t>(0, std::min(attention_block_tokens, row.tokens - next));
        const index_t* slots = block_slots[block];
        const index_t* next_slots = block_slots[block ^ 1];
        page_slots(row.pages, row.page_size, row.first_token + next, next_n, block_slots[block ^ 1]);
        for (index_t j = 0; j < n; ++j) {
            if (j < next_n) row.source.prefetch(next_slots[j], false);
            row.source.prefetch(slots[j], true);
            const float* k = row.source.key(slots[j], buffers[0]);
            for (index_t g = 0; g < heads; ++g) st.weights[g][j] = dot(q + g * d, k, d) * row.scale;
        }
        if (row.scores != nullptr && begin < row.score_tokens) {  // a capture: the scores before the softmax
            const index_t kept = std::min(n, row.score_tokens - begin);
            for (index_t g = 0; g < heads; ++g)
                std::copy_n(st.weights[g], kept, row.scores + (first_head + g) * row.score_stride + begin);
        }
        for (index_t g = 0; g < heads; ++g) {
            float* w = st.weights[g];
            float block_max = w[0];
            for (index_t j = 1; j < n; ++j) block_max = std::max(block_max, w[j]);
            if (block_max > st.maximum[g]) {  // a new maximum: rescale what was summed so far, once per block
                const float rescale = std::exp(st.maximum[g] - block_max);
                for (index_t c = 0; c < d; ++c) st.total[g][c] *= rescale, st.carry[g][c] *= rescale;
                st.denominator[g] *= rescale, st.denominator_carry[g] *= rescale;
                st.maximum[g] = block_max;
            }
            const float m = st.maximum[g];
            for (index_t j = 0; j < n; ++j) w[j] = exp_nonpositive(w[j] - m);
            compensated_add(st.denominator[g], st.denominator_carry[g], sum(w, n));
            std::fill(st.partial[g], st.partial[g] + d, 0.0f);
        }
        index_t j = 0;
        for (; j + token_tile <= n; j += token_tile) {
            const float* v[token_tile];
            for (index_t t = 0; t < token_tile; ++t) v[t] = row.source.value(slots[j + t], buffers[t]);
            for (index_t g = 0; g < heads; ++g) {
                const float w[token_tile] = {st.weights[g][j], st.weights[g][j + 1], st.weights[g][j + 2],
                                             st.weights[g][j + 3]};
                axpy_tile(w, v, st.partial[g], d);
            }
        }
        for (; j < n; ++j) {
            const float* v = row.source.value(slots[j], buffers[0]);
            for (index_t g = 0; g < heads; ++g) axpy(st.weights[g][j], v, st.partial[g], d);
        }
        for (index_t g = 0; g < heads; ++g)
            for (index_t c = 0; c < d; ++c) compensated_add(st.total[g][c], st.carry[g][c], st.partial[g][c]);
    }
    for (index_t g = 0; g < heads; ++g) {
        float* out = row.output + (first_head + g) * d;
        const bool empty = st.denominator[g] == 0.0f;
        const float denominator = st.denominator[g];
        for (index_t c = 0; c < d; ++c) out[c] = empty ? 0.0f : st.total[g][c] / denominator;
        row.lse[first_head + g] =
            empty ? -std::numeric_limits<float>::infinity()
                  : static_cast<float>(static_cast<double>(st.maximum[g]) + std::log(static_cast<double>(st.denominator[g])));
    }
}

// Each copy wraps one head tile, not the whole row: with the tile loop inlined into the row function, GCC's
// code ran 25 % slower (an A/B at -march=x86-64-v3).

//! The copy compiled for the including program's target.
template <index_t HeadDim, class Source>
void attend_heads_baseline(const attention_row<Source>& row, index_t first_head, index_t heads,
                           attention_state& st) noexcept {
    attend_heads_body<HeadDim>(row, first_head, heads, st);
}

//! The copy compiled for AVX2 (isa_dispatch.hpp); bit-identical to the baseline copy.
template <index_t HeadDim, class Source>
HETEROCACHE_TARGET_AVX2 void attend_heads_avx2(const attention_row<Source>& row, index_t first_head, index_t heads,
                                               attention_state& st) noexcept {
    attend_heads_body<HeadDim>(row, first_head, heads, st);
}

//! `attend_row` with the head dimension fixed at compile time (`HeadDim`, which must equal `row.head_dim`)
//! or, for 0, read at run time.
template <index_t HeadDim, class Source>
void attend_row_for_head_dim(const attention_row<Source>& row, kernel_isa isa) noexcept {
    const bool avx2 = isa == kernel_isa::avx2 && processor_has_avx2();
    attention_state state;
    for (index_t first = 0; first < row.group_size; first += attention_head_tile) {
        const index_t heads = std::min(attention_head_tile, row.group_size - first);
        if (avx2)
            attend_heads_avx2<HeadDim>(row, first, heads, state);
        else
            attend_heads_baseline<HeadDim>(row, first, heads, state);
    }
}

//! Computes one row for its whole group with the copy `isa` (the AVX2 copy only where the processor has
//! it). The common head dimensions, 64 and 128, run a copy compiled for them: the compiler unrolls the
//! loops over a key, with the same operations in the same order (bit-identical results), in about 40 %
//! fewer instructions. Allocates nothing (about 30 KiB of stack).
template <class Source>
void attend_row(const attention_row<Source>& row, kernel_isa isa = selected_kernel_isa()) noexcept {
    switch (row.head_dim) {
        case 64: return attend_row_for_head_dim<64>(row, isa);
        case 128: return attend_row_for_head_dim<128>(row, isa);
        default: return attend_row_for_head_dim<0>(row, isa);
    }
}

}  // namespace detail
}  // namespace v1
}  // namespace heterocache
