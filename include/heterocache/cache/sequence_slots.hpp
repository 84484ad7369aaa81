#pragma once
//! \file
//! `sequence_slots`: the life of every sequence slot (idle, prefilling layer by layer, decoding) and of every
//! layer's decode step (DESIGN.md section 3.1, "Step API"), with the checks the step API makes.

#include <cstdint>
#include <vector>

#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! Per slot: its prompt length (0: idle) and which layers are prefilled; per layer: how many decode steps
//! began (`step`), whether the last one awaits its end, and which slots step in it. The `require_*` checks
//! throw `shape_error` naming the argument; nothing here allocates after `plan`.
class sequence_slots {
public:
    void plan(index_t layers, index_t slots) {
        layers_ = layers;
        slots_ = slots;
        prompt_tokens_.assign(static_cast<std::size_t>(slots), 0);
        prefilled_layers_.assign(static_cast<std::size_t>(slots), 0);
        prefilled_.assign(static_cast<std::size_t>(layers * slots), false);
        stepping_.assign(static_cast<std::size_t>(layers * slots), false);
        step_.assign(static_cast<std::size_t>(layers), 0);
        awaiting_end_.assign(static_cast<std::size_t>(layers), false);
    }

    //! A sequence of `prompt_tokens` tokens now lives in `seq`, no layer prefilled.
    void begin(index_t seq, index_t prompt_tokens) {
        prompt_tokens_[static_cast<std::size_t>(seq)] = prompt_tokens;
        prefilled_layers_[static_cast<std::size_t>(seq)] = 0;
        for (index_t layer = 0; layer < layers_; ++layer) prefilled_[at(layer, seq)] = stepping_[at(layer, seq)] = false;
    }
    //! `seq` is idle again.
    void end(index_t seq) { begin(seq, 0); }
    void mark_prefilled(index_t layer, index_t seq) {
        prefilled_[at(layer, seq)] = true;
        ++prefilled_layers_[static_cast<std::size_t>(seq)];
    }

    //! Counts a new decode step of `layer` in which the slots `stepping(seq)` says step; returns its number.
    template <class Stepping>
    std::uint64_t begin_step(index_t layer, Stepping&& stepping) {
        for (index_t seq = 0; seq < slots_; ++seq) stepping_[at(layer, seq)] = stepping(seq);
        awaiting_end_[static_cast<std::size_t>(layer)] = true;
        return ++step_[static_cast<std::size_t>(layer)];
    }
    void end_step(index_t layer) { awaiting_end_[static_cast<std::size_t>(layer)] = false; }

    [[nodiscard]] index_t slots() const noexcept { return slots_; }
    //! Prompt length of the sequence in `seq`, 0 when the slot is idle.
    [[nodiscard]] index_t prompt_tokens(index_t seq) const noexcept { return prompt_tokens_[static_cast<std::size_t>(seq)]; }
    [[nodiscard]] bool live(index_t seq) const noexcept { return prompt_tokens(seq) > 0; }
    [[nodiscard]] bool prefilled(index_t layer, index_t seq) const noexcept { return prefilled_[at(layer, seq)]; }
    //! Whether `seq` steps in `layer`'s current decode step.
    [[nodiscard]] bool stepping(index_t layer, index_t seq) const noexcept { return stepping_[at(layer, seq)]; }
    //! Decode steps `layer` has begun (the number the current step's captures are stamped with).
    [[nodiscard]] std::uint64_t step(index_t layer) const noexcept { return step_[static_cast<std::size_t>(layer)]; }

    void require_slot(index_t seq) const {
        detail::require<shape_error>(seq >= 0 && seq < slots_, "seq", seq, "[0, sequences)");
    }
    void require_idle(index_t seq) const {
        require_slot(seq);
        detail::require<shape_error>(!live(seq), "seq", seq, "an idle slot (end_sequence(seq) first)");
    }
    void require_live(index_t seq) const {
        require_slot(seq);
        detail::require<shape_error>(live(seq), "seq", seq, "a slot with a sequence (begin_sequence first)");
    }
    //! `seq` lives and every layer is prefilled.
    void require_decoding(index_t seq) const {
        require_live(seq);
        detail::require<shape_error>(prefilled_layers_[static_cast<std::size_t>(seq)] == layers_, "seq", seq,
                                     "a sequence prefilled on every layer");
    }
    void require_layer(index_t layer) const {
        detail::require<shape_error>(layer >= 0 && layer < layers_, "layer", layer, "[0, layers)");
    }
    //! `layer` is valid and its last decode step awaits (`awaiting`) or has had (`!awaiting`) its end.
    void require_step(index_t layer, bool awaiting) const {
        require_layer(layer);
        detail::require<shape_error>(awaiting_end_[static_cast<std::size_t>(layer)] == awaiting, "layer", layer,
                                     awaiting ? "a layer begun with begin_layer"
                                              : "a layer whose last begin_layer was ended (end_layer)");
    }

private:
    [[nodiscard]] std::size_t at(index_t layer, index_t seq) const noexcept { return static_cast<std::size_t>(layer * slots_ + seq); }

    index_t layers_ = 0, slots_ = 0;
    std::vector<index_t> prompt_tokens_, prefilled_layers_;
    std::vector<bool> prefilled_, stepping_, awaiting_end_;
    std::vector<std::uint64_t> step_;
};

}  // namespace v1
}  // namespace heterocache
