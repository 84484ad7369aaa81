#pragma once
//! \file
//! The `HeadClassifier` concept: turns profiling observations into a head profile.

#include <concepts>

#include "heterocache/profile/head_profile.hpp"
#include "heterocache/profile/profiling_record.hpp"

namespace heterocache {
inline namespace v1 {

//! A classifier decides every head's role, stability and cluster from a `profiling_record`.
//! Baselines fit as classifiers that ignore part of the record: all-full (full cache), all-anchor
//! (StreamingLLM, H2O, SnapKV, PyramidKV, Ada-KV, Quest keep every head compressed), stability only
//! (DuoAttention-like: anchors vs volatiles, no clusters).
template <class C>
concept HeadClassifier = requires(const C& classifier, const profiling_record& record) {
    { classifier.classify(record) } -> std::same_as<head_profile>;
};

}  // namespace v1
}  // namespace heterocache
