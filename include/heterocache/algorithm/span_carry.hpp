#pragma once
//! \file
//! Prefill scores carried forward along the prompt, so that the tokens after an attended token rank with it
//! (an extension of the prefill selection of DESIGN.md section 2, "Prefill"; measured in docs/eval/README.md,
//! "Span carry").

#include <algorithm>
#include <span>

#include "heterocache/errors.hpp"
#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! Writes `out[p] = max(scores[p], decay * out[p - 1])` (`out[0] = scores[0]`): the largest of
//! `decay^(p - q) * scores[q]` over `q <= p`. A value the question attends at its first token (a UUID, a
//! number, a name) is read token by token during decoding; with the carry its later tokens inherit the first
//! one's score, geometrically less, and a top-k over `out` keeps the span. `decay` in [0, 1); 0 copies the
//! scores. `out` may alias `scores`; both of the same size. O(T).
inline void carry_scores_forward(std::span<const float> scores, std::span<float> out, float decay) {
    detail::require(decay >= 0.0f && decay < 1.0f, "decay", decay, "[0, 1)");
    detail::require<shape_error>(out.size() == scores.size(), "out.size()", out.size(), "scores.size()");
    float carried = 0.0f;
    for (std::size_t p = 0; p < scores.size(); ++p) {
        carried = std::max(scores[p], decay * carried);
        out[p] = carried;
    }
}

}  // namespace v1
}  // namespace heterocache
