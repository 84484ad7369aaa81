#pragma once
//! \file
//! The observations a classifier works from: each head's top-k set at prefill and at each profiled
//! decode step, for every sequence (online profiling, or offline on calibration text).

#include <span>
#include <vector>

#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! Top-k position sets, indexed by (layer, kv_head, sequence, step); step 0 is the prefill set.
//! Storage is planned once; `set()` returns the writable slot of one observation.
class profiling_record {
public:
    profiling_record() = default;
    //! Plans room for `steps` decode observations after prefill, each a set of at most `top_k` positions.
    profiling_record(index_t layers, index_t kv_heads, index_t sequences, index_t steps, index_t top_k)
        : layers_(layers), kv_heads_(kv_heads), sequences_(sequences), steps_(steps), top_k_(top_k),
          sizes_(static_cast<std::size_t>(layers * kv_heads * sequences * (steps + 1)), 0),
          positions_(sizes_.size() * static_cast<std::size_t>(top_k)) {
        detail::require(steps >= 1, "profiling_steps", steps, "[1, inf)");
        detail::require(top_k >= 1, "top_k", top_k, "[1, inf)");
    }

    [[nodiscard]] index_t layers() const noexcept { return layers_; }
    [[nodiscard]] index_t kv_heads() const noexcept { return kv_heads_; }
    [[nodiscard]] index_t sequences() const noexcept { return sequences_; }
    //! Decode steps observed after prefill (step indices 1..steps()).
    [[nodiscard]] index_t steps() const noexcept { return steps_; }
    [[nodiscard]] index_t top_k() const noexcept { return top_k_; }

    //! The recorded ascending set of one observation.
    [[nodiscard]] std::span<const index_t> set(index_t layer, index_t head, index_t seq, index_t step) const {
        const std::size_t i = slot(layer, head, seq, step);
        return {positions_.data() + i * static_cast<std::size_t>(top_k_), static_cast<std::size_t>(sizes_[i])};
    }
    //! Room for one observation of `size <= top_k` positions; the caller fills it in ascending order.
    [[nodiscard]] std::span<index_t> record(index_t layer, index_t head, index_t seq, index_t step, index_t size) {
        detail::require(size >= 0 && size <= top_k_, "size", size, "[0, top_k]");
        const std::size_t i = slot(layer, head, seq, step);
        sizes_[i] = size;
        return {positions_.data() + i * static_cast<std::size_t>(top_k_), static_cast<std::size_t>(size)};
    }

private:
    [[nodiscard]] std::size_t slot(index_t layer, index_t head, index_t seq, index_t step) const noexcept {
        return static_cast<std::size_t>(((layer * kv_heads_ + head) * sequences_ + seq) * (steps_ + 1) + step);
    }

    index_t layers_ = 0, kv_heads_ = 0, sequences_ = 0, steps_ = 0, top_k_ = 0;
    std::vector<index_t> sizes_;
    std::vector<index_t> positions_;
};

}  // namespace v1
}  // namespace heterocache
