#pragma once
//! \file
//! `cache_plan`: every size a `kv_cache` derives from its arguments, checked once (DESIGN.md section 3,
//! "Plan/run split").

#include <optional>
#include <vector>

#include "heterocache/budget/budget_split.hpp"
#include "heterocache/cache/row_table.hpp"
#include "heterocache/cache/sequence_budgets.hpp"
#include "heterocache/cache_options.hpp"
#include "heterocache/storage/storage_plan.hpp"

namespace heterocache {
inline namespace v1 {

//! The sizes of a cache of `shape` and `options`, with `profile` (or profiling online) split by `budget`:
//! the row table's layout, the most tokens a row of each (layer, head) holds (its largest prompt selection
//! plus its decode slots), and the storage plan. `make` throws `shape_error`, `invalid_argument_error` or
//! `budget_error` on bad arguments (a budget a loaded profile cannot meet among them).
template <BudgetPolicy Budget>
struct cache_plan {
    row_table::layout rows;
    std::vector<index_t> row_tokens;  //!< per `layer * kv_heads + head`
    storage_plan storage;

    [[nodiscard]] static cache_plan make(const model_shape& shape, const cache_options& options,
                                         const std::optional<head_profile>& profile, const Budget& budget,
                                         bool cold_aliased) {
        shape.validate();
        options.validate();
        if (profile) {
            profile->validate(shape);
            budget.require_feasible(*profile, options.budget_ratio);
        } else if (!options.profile_from_window) {
            detail::require(options.profiling_steps <= options.max_new_tokens, "profiling_steps", options.profiling_steps,
                            "[1, max_new_tokens] (online profiling observes that many decode steps)");
        }
        cache_plan plan;
        plan.rows = {shape.layers,        options.sequences,  shape.kv_heads, options.page_size, options.decode_capacity(),
                     options.decode_sink, options.decode_window > 0};
        plan.row_tokens = prompt_capacity(shape, options, profile, budget);
        for (index_t& tokens : plan.row_tokens) tokens += options.decode_capacity();
        plan.storage = {shape,
                        options.sequences,
                        options.max_prompt_tokens + options.max_new_tokens,
                        options.page_size,
                        row_table::pool_pages(plan.rows, plan.row_capacity()),
                        cold_aliased};
        return plan;
    }

    //! The most prompt tokens each head (`layer * kv_heads + head`) may hold, for planning: the whole longest
    //! prompt before a profile exists, else its largest cap.
    [[nodiscard]] static std::vector<index_t> prompt_capacity(const model_shape& shape, const cache_options& options,
                                                              const std::optional<head_profile>& profile,
                                                              const Budget& budget) {
        std::vector<index_t> capacity(static_cast<std::size_t>(shape.total_kv_heads()), options.max_prompt_tokens);
        if (profile)
            sequence_budgets<Budget>::capacity(budget, *profile, options.budget_ratio, options.max_prompt_tokens, capacity);
        return capacity;
    }

    //! `row_tokens` as the row table asks for them.
    [[nodiscard]] auto row_capacity() const {
        return [this](index_t layer, index_t head) {
            return row_tokens[static_cast<std::size_t>(layer * rows.kv_heads + head)];
        };
    }
};

}  // namespace v1
}  // namespace heterocache
