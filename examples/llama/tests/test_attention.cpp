#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "model.hpp"

using namespace hcllama;

namespace {
// Plain reference: softmax(q k^T * scale) v for one query head.
std::vector<float> naive(const float* q, std::size_t hd, const float* k, const float* v,
                         const std::vector<std::int32_t>& slots, float scale) {
  std::vector<double> s(slots.size());
  double mx = -1e300;
  for (std::size_t i = 0; i < slots.size(); ++i) {
    double acc = 0;
    for (std::size_t d = 0; d < hd; ++d) acc += double(q[d]) * k[std::size_t(slots[i]) * hd + d];
    s[i] = acc * scale;
    mx = std::max(mx, s[i]);
  }
  double sum = 0;
  for (auto& x : s) sum += (x = std::exp(x - mx));
  std::vector<float> out(hd, 0.0f);
  for (std::size_t i = 0; i < slots.size(); ++i)
    for (std::size_t d = 0; d < hd; ++d) out[d] += float(s[i] / sum) * v[std::size_t(slots[i]) * hd + d];
  return out;
}
// Normal random keys and values for `slots` slots and queries for `heads` query heads.
struct random_kvq {
  std::vector<float> k, v, q;
  random_kvq(std::size_t slots, std::size_t heads, std::size_t hd, unsigned seed)
      : k(slots * hd), v(slots * hd), q(heads * hd) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd;
    for (auto* data : {&k, &v, &q})
      for (auto& x : *data) x = nd(rng);
  }
};
}  // namespace

TEST_CASE("attend_selected matches a naive softmax attention for any selection") {
  const std::size_t hd = 64, group = 3, cap = 300;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  std::vector<float> k(cap * hd), v(cap * hd), q(group * hd);
  for (auto& x : k) x = nd(rng);
  for (auto& x : v) x = nd(rng);
  for (auto& x : q) x = nd(rng);
  std::vector<std::vector<std::int32_t>> selections;
  std::vector<std::int32_t> all(cap);
  for (std::size_t i = 0; i < cap; ++i) all[i] = std::int32_t(i);
  selections.push_back(all);
  selections.push_back({5});
  selections.push_back({0, 1, 2, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 200, 299});
  std::vector<std::int32_t> sparse;
  for (std::size_t i = 0; i < cap; i += 3) sparse.push_back(std::int32_t(i));
  selections.push_back(sparse);
  selections.push_back({});
  std::vector<float> scratch, out(group * hd);
  const float scale = 0.125f;
  for (const auto& sel : selections) {
    attend_selected(q.data(), group, hd, k.data(), v.data(), sel, scale, out.data(), scratch);
    for (std::size_t g = 0; g < group; ++g) {
      const auto ref = sel.empty() ? std::vector<float>(hd, 0.0f) : naive(&q[g * hd], hd, k.data(), v.data(), sel, scale);
      for (std::size_t d = 0; d < hd; ++d) REQUIRE(out[g * hd + d] == doctest::Approx(ref[d]).epsilon(1e-4));
    }
  }
}

TEST_CASE("selection_attention matches a naive softmax attention, split or not") {
  const std::size_t hd = 64, group = 3, rows = 3, per_row = 700;
  const random_kvq data(rows * per_row, rows * group, hd, 11);
  const auto& [k, v, q] = data;
  // row r attends a gappy subset of its own slots [r*per_row, (r+1)*per_row)
  std::vector<std::int64_t> indptr{0}, indices;
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t i = 0; i < per_row; ++i)
      if (i % 7 != 3 || r == 0) indices.push_back(static_cast<std::int64_t>(r * per_row + i));
    indptr.push_back(static_cast<std::int64_t>(indices.size()));
  }
  const heterocache::csr_selection sel{3, 3, 3, 64, indptr, indices, k.data(), v.data()};
  for (std::size_t threads : {1, 2, 3}) {
    selection_attention att(threads);
    att.min_split = 100;
    std::vector<float> out(rows * group * hd);
    att.run(sel, q.data(), out.data(), 0.125f);
    for (std::size_t r = 0; r < rows; ++r) {
      std::vector<std::int32_t> slots(indices.begin() + indptr[r], indices.begin() + indptr[r + 1]);
      for (std::size_t g = 0; g < group; ++g) {
        const auto ref = naive(&q[(r * group + g) * hd], hd, k.data(), v.data(), slots, 0.125f);
        for (std::size_t d = 0; d < hd; ++d)
          REQUIRE(out[(r * group + g) * hd + d] == doctest::Approx(ref[d]).epsilon(1e-4));
      }
    }
  }
}

TEST_CASE("selection_attention writes the scores the selection's captures ask for, split or not") {
  const std::size_t hd = 64, group = 3, rows = 2, per_row = 700, tokens = 500;
  const random_kvq data(rows * per_row, rows * group, hd, 13);
  const auto& [k, v, q] = data;
  std::vector<std::int64_t> indptr{0}, indices;
  for (std::size_t i = 0; i < rows * per_row; ++i) indices.push_back(static_cast<std::int64_t>(i));
  indptr.push_back(per_row), indptr.push_back(2 * per_row);
  for (std::size_t threads : {1, 2, 3}) {
    std::vector<float> captured(group * tokens + 1, std::nanf("")), out(rows * group * hd);
    const std::vector<heterocache::score_capture> captures{{}, {captured.data(), tokens}};
    const heterocache::csr_selection sel{2, 2, 3, 64, indptr, indices, k.data(), v.data(), captures};
    selection_attention att(threads);
    att.min_split = 100;
    att.run(sel, q.data(), out.data(), 0.125f);
    for (std::size_t g = 0; g < group; ++g)
      for (std::size_t i = 0; i < tokens; ++i) {
        double want = 0;
        for (std::size_t d = 0; d < hd; ++d) want += double(q[(group + g) * hd + d]) * k[(per_row + i) * hd + d];
        REQUIRE(captured[g * tokens + i] == doctest::Approx(want * 0.125).epsilon(1e-5));
      }
    CHECK(std::isnan(captured.back()));  // nothing past the capture
  }
}

TEST_CASE("sampling") {
  std::vector<float> l = {0.1f, 3.0f, -1.0f};
  CHECK(argmax(l) == 1);
  std::uint64_t s = 1;
  CHECK(sample_temperature(l, 0.0f, s) == 1);
  int counts[3] = {0, 0, 0};
  for (int i = 0; i < 2000; ++i) counts[sample_temperature(l, 1.0f, s)]++;
  CHECK(counts[1] > counts[0]);
  CHECK(counts[0] > counts[2]);
}
