#pragma once
//! \file
//! Star clustering of the heads of one layer (DESIGN.md section 2, "Profiling").

#include <vector>

#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! Result of star clustering over `n` heads: `pivot_of[h]` is `h` for a pivot, the pivot's index for a
//! satellite, and -1 for a head left unclustered.
struct star_clusters {
    std::vector<index_t> pivot_of;
};

//! Star clustering of `n` heads under a symmetric predicate `are_neighbours(i, j)` (never asked for i == j):
//! repeatedly takes the unassigned head with the most unassigned neighbours as a pivot (ties to the lower
//! index), its unassigned neighbours become satellites; stops when no unassigned head has a neighbour.
//! O(n^3) for n heads of a layer, which is tiny.
template <class Neighbours>
star_clusters make_star_clusters(index_t n, Neighbours&& are_neighbours) {
    detail::require<shape_error>(n >= 0, "n", n, "[0, inf)");
    star_clusters result{std::vector<index_t>(static_cast<std::size_t>(n), -1)};
    auto& pivot_of = result.pivot_of;
    const auto unassigned_neighbours = [&](index_t i) {
        index_t count = 0;
        for (index_t j = 0; j < n; ++j) count += (j != i && pivot_of[j] < 0 && are_neighbours(i, j)) ? 1 : 0;
        return count;
    };
    for (;;) {
        index_t best = -1;
        index_t best_count = 0;
        for (index_t i = 0; i < n; ++i) {
            if (pivot_of[i] >= 0) continue;
            const index_t count = unassigned_neighbours(i);
            if (count > best_count) best = i, best_count = count;
        }
        if (best < 0) break;
        pivot_of[best] = best;
        for (index_t j = 0; j < n; ++j)
            if (j != best && pivot_of[j] < 0 && are_neighbours(best, j)) pivot_of[j] = best;
    }
    return result;
}

}  // namespace v1
}  // namespace heterocache
