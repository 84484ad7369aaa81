#pragma once
//! \file
//! Decode attention that splits long rows into chunks spread over a thread pool and merges them exactly, so
//! that a step with fewer rows than threads (batch 1: one row per KV head) still uses every thread.

#include <algorithm>
#include <atomic>
#include <vector>

#include "heterocache/attention/decode_attention.hpp"
#include "heterocache/tensor/element.hpp"

namespace heterocache {
inline namespace v1 {

class split_attention_workspace;

namespace detail {
template <class Selection, class Source>
void split_decode_attention(const Selection& selection, const Source& source, const float* queries, float* output,
                            float* lse, float scale, host_thread_pool& pool, split_attention_workspace& workspace);
}  // namespace detail

//! The buffers of the row-splitting `decode_attention`, reused from call to call: the partial state of
//! every chunk. They grow to the largest step seen (the only allocation; `reserve` does it up front, after
//! which no step allocates). One workspace per concurrent caller.
class split_attention_workspace {
public:
    //! Tokens per chunk when no size is given: long enough that the merge is negligible, short enough
    //! that a row of 8K tokens already feeds two threads.
    static constexpr index_t default_chunk_tokens = 4096;

    //! Rows longer than `chunk_tokens` are split into chunks of `chunk_tokens` tokens from the row's start
    //! (the last one shorter). Throws `invalid_argument_error` unless `chunk_tokens >= 64` (one block of
    //! the kernel).
    explicit split_attention_workspace(index_t chunk_tokens = default_chunk_tokens) : chunk_tokens_(chunk_tokens) {
        detail::require(chunk_tokens >= detail::attention_block_tokens, "chunk_tokens", chunk_tokens, "[64, inf)");
    }

    //! Tokens per chunk.
    [[nodiscard]] index_t chunk_tokens() const noexcept { return chunk_tokens_; }

    //! Sizes the buffers for steps of at most `rows` rows of at most `row_tokens` tokens each, with
    //! `group_size` query heads of `head_dim` per row, so that no such step allocates (a decode loop calls it
    //! once with its longest context). Throws `invalid_argument_error` on a negative argument.
    void reserve(index_t rows, index_t row_tokens, index_t group_size, index_t head_dim) {
        detail::require(rows >= 0, "rows", rows, "[0, inf)");
        detail::require(row_tokens >= 0, "row_tokens", row_tokens, "[0, inf)");
        detail::require(group_size >= 0, "group_size", group_size, "[0, inf)");
        detail::require(head_dim >= 0, "head_dim", head_dim, "[0, inf)");
        const auto chunks = static_cast<std::size_t>(rows * std::max<index_t>(1, (row_tokens + chunk_tokens_ - 1) / chunk_tokens_));
        first_chunk_.reserve(static_cast<std::size_t>(rows) + 1);
        pending_.reserve(static_cast<std::size_t>(rows));
        outputs_.reserve(chunks * static_cast<std::size_t>(group_size * head_dim));
        lses_.reserve(chunks * static_cast<std::size_t>(group_size));
    }

    //! Chunks row `row` of `selection` splits into (1 for a row of at most `chunk_tokens()` tokens,
    //! empty rows included).
    template <class Selection>
    [[nodiscard]] index_t chunks(const Selection& selection, index_t row) const noexcept {
        return std::max<index_t>(1, (selection.row_length(row) + chunk_tokens_ - 1) / chunk_tokens_);
    }

private:
    template <class Selection, class Source>
    friend void detail::split_decode_attention(const Selection&, const Source&, const float*, float*, float*, float,
                                               host_thread_pool&, split_attention_workspace&);

    //! Sizes the buffers for `selection`: `first_chunk()[row]` numbers the row's first chunk;
    //! each chunk has `group_size * head_dim` output floats and `group_size` log-sum-exps.
    template <class Selection>
    void prepare(const Selection& selection) {
        first_chunk_.resize(static_cast<std::size_t>(selection.rows) + 1);
        first_chunk_[0] = 0;
        for (index_t row = 0; row < selection.rows; ++row)
            first_chunk_[static_cast<std::size_t>(row) + 1] = first_chunk_[static_cast<std::size_t>(row)] + chunks(selection, row);
        const auto total = static_cast<std::size_t>(first_chunk_.back());
        outputs_.resize(total * static_cast<std::size_t>(selection.group_size * selection.head_dim));
        lses_.resize(total * static_cast<std::size_t>(selection.group_size));
        pending_.resize(static_cast<std::size_t>(selection.rows));
        for (std::size_t row = 0; row < pending_.size(); ++row) pending_[row] = first_chunk_[row + 1] - first_chunk_[row];
    }
    [[nodiscard]] const std::vector<index_t>& first_chunk() const noexcept { return first_chunk_; }
    //! Counts down the chunks of `row` still running; true for the call that finished the last one.
    [[nodiscard]] bool finish_chunk(index_t row) noexcept {
        return std::atomic_ref<index_t>(pending_[static_cast<std::size_t>(row)]).fetch_sub(1, std::memory_order_acq_rel) == 1;
    }
    [[nodiscard]] float* outputs() noexcept { return outputs_.data(); }
    [[nodiscard]] float* lses() noexcept { return lses_.data(); }

    index_t chunk_tokens_;
    std::vector<index_t> first_chunk_;
    std::vector<float> outputs_, lses_;
    std::vector<index_t> pending_;  //!< chunks of each row not finished yet (decremented through atomic_ref)
};

namespace detail {

//! The tokens `[begin, begin + chunk_tokens)` of a whole row (and its capture's columns there, rows still
//! `score_stride` apart), attended into `output`, `lse` (`group_size * head_dim` and `group_size` floats).
template <class Source>
attention_row<Source> chunk_of(attention_row<Source> row, index_t begin, index_t chunk_tokens, float* output,
                               float* lse) noexcept {
    row.first_token += begin;
    row.tokens = std::min(chunk_tokens, row.tokens - begin);
    row.output = output;
    row.lse = lse;
    if (row.scores != nullptr) {
        row.score_tokens = std::max<index_t>(0, std::min(row.tokens, row.score_tokens - begin));
        row.scores += begin;
    }
    return row;
}

template <class Selection, class Source>
void split_decode_attention(const Selection& selection, const Source& source, const float* queries, float* output,
                            float* lse, float scale, host_thread_pool& pool, split_attention_workspace& workspace) {
    check_selection(selection);
    workspace.prepare(selection);
    const std::vector<index_t>& first = workspace.first_chunk();
    const index_t group = selection.group_size, d = selection.head_dim;
    pool.for_each(first.back(), [&](index_t chunk) {
        const auto after = std::upper_bound(first.begin(), first.end(), chunk);
        const auto row = static_cast<index_t>(after - first.begin()) - 1;
        const index_t begin = first[static_cast<std::size_t>(row)], end = *after;
        const attention_row<Source> whole = selection_row(selection, source, row, queries, output, lse, scale);
        if (end - begin == 1) {  // a whole row: written in place
            attend_row(whole);
            mark_written(capture_of(selection, row));
            return;
        }
        const index_t c = workspace.chunk_tokens();
        attend_row(chunk_of(whole, (chunk - begin) * c, c, workspace.outputs() + chunk * group * d,
                            workspace.lses() + chunk * group));
        // The thread that finishes a row's last chunk merges the row's chunks, in chunk order
        // (merge_attention_states: exact, in double), so the result does not depend on which thread it is.
        if (!workspace.finish_chunk(row)) return;
        for (index_t g = 0; g < group; ++g) {
            const index_t head = row * group + g;
            float* out = output + head * d;
            float merged = workspace.lses()[begin * group + g];
            std::copy_n(workspace.outputs() + (begin * group + g) * d, d, out);
            for (index_t next = begin + 1; next < end; ++next)
                merge_attention_states(out, merged, workspace.outputs() + (next * group + g) * d,
                                       workspace.lses()[next * group + g], d, out, merged);
            lse[head] = merged;
        }
        mark_written(capture_of(selection, row));
    });
}

}  // namespace detail

//! `decode_attention` with long rows split over the threads of `pool`: a row longer than
//! `workspace.chunk_tokens()` is cut into chunks of that many tokens, each computed by one thread, and the
//! chunks' states are merged in order (`merge_attention_states`). Rows and chunks share the pool, so a
//! batch-1 step with fewer rows than threads keeps every thread busy. Same contract as `decode_attention`
//! (any element type; captures written; `shape_error` on a bad head_dim or capture). Deterministic: the
//! chunks depend on the selection and `chunk_tokens` only, so the result is bit-identical for any pool
//! size; a row of at most `chunk_tokens` tokens is bit-identical to `decode_attention`'s, a split row
//! agrees with it to float rounding. Allocates only when `workspace` grows (never after a `reserve` that
//! covers the step). O(total_tokens * G * d).
template <KvElement E>
void decode_attention(const basic_paged_selection<E>& selection, const float* queries, float* output, float* lse,
                      float scale, host_thread_pool& pool, split_attention_workspace& workspace) {
    detail::split_decode_attention(selection, detail::slots_of(selection), queries, output, lse, scale, pool, workspace);
}

}  // namespace v1
}  // namespace heterocache
