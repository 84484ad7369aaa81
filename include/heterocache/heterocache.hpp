#pragma once
//! \file
//! Umbrella header: the whole host library. Include fine-grained headers to save compile time.

#include "heterocache/config.hpp"
#include "heterocache/errors.hpp"
#include "heterocache/types.hpp"

#include "heterocache/concepts/budget_policy.hpp"
#include "heterocache/concepts/drift_monitor.hpp"
#include "heterocache/concepts/head_classifier.hpp"
#include "heterocache/concepts/kv_layout.hpp"
#include "heterocache/concepts/retriever.hpp"
#include "heterocache/concepts/storage_tier.hpp"

#include "heterocache/algorithm/median.hpp"
#include "heterocache/algorithm/overlap.hpp"
#include "heterocache/algorithm/pooled_attention.hpp"
#include "heterocache/algorithm/star_clustering.hpp"
#include "heterocache/attention/csr_selection.hpp"
#include "heterocache/attention/decode_attention.hpp"
#include "heterocache/budget/drift_weighted_budget.hpp"
#include "heterocache/budget/uniform_budget.hpp"
#include "heterocache/classifier/overlap_star_classifier.hpp"
#include "heterocache/layout/paged_kv_layout.hpp"
#include "heterocache/layout/strided_kv_layout.hpp"
#include "heterocache/monitor/pivot_overlap_monitor.hpp"
#include "heterocache/monitor/static_monitor.hpp"
#include "heterocache/profile/head_profile.hpp"
#include "heterocache/profile/profile_io.hpp"
#include "heterocache/profile/profiling_record.hpp"
#include "heterocache/retriever/async_retriever.hpp"
#include "heterocache/retriever/sync_retriever.hpp"
#include "heterocache/storage/host_storage.hpp"

#include "heterocache/kv_cache.hpp"
