#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

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

// Rows of random keys and values (`lengths[r]` tokens each, the same whatever the page size) laid out in
// pools of `page_size`-token pages, the pages of all rows shuffled over the pool, as in a cache's hot tier.
struct paged_rows {
  std::size_t page_size;
  std::vector<heterocache::page_index_t> indptr{0}, indices, last_page_len;
  std::vector<float> k, v;                       // pools [page][page_size][hd]
  std::vector<std::vector<std::int32_t>> slots;  // pool slot of each token of each row

  paged_rows(const std::vector<std::size_t>& lengths, std::size_t tokens_per_page, std::size_t hd, unsigned seed,
             unsigned shuffle_seed)
      : page_size(tokens_per_page) {
    std::size_t pages = 0;
    for (std::size_t n : lengths) pages += (n + page_size - 1) / page_size;
    std::vector<heterocache::page_index_t> order(pages);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937(shuffle_seed));
    k.resize(pages * page_size * hd);
    v.resize(pages * page_size * hd);
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd;
    for (std::size_t n : lengths) {
      std::vector<std::int32_t> row;
      for (std::size_t t = 0; t < n; ++t) {
        if (t % page_size == 0) indices.push_back(order[indices.size()]);
        const auto slot = static_cast<std::size_t>(indices.back()) * page_size + t % page_size;
        for (std::size_t d = 0; d < hd; ++d) k[slot * hd + d] = nd(rng), v[slot * hd + d] = nd(rng);
        row.push_back(static_cast<std::int32_t>(slot));
      }
      slots.push_back(row);
      indptr.push_back(static_cast<heterocache::page_index_t>(indices.size()));
      last_page_len.push_back(static_cast<heterocache::page_index_t>(n == 0 ? 0 : (n - 1) % page_size + 1));
    }
  }

  heterocache::paged_selection selection(std::size_t group, std::size_t hd,
                                         std::span<const heterocache::score_capture> captures = {}) const {
    const auto rows = static_cast<heterocache::index_t>(slots.size());
    const auto index = [](std::size_t x) { return static_cast<heterocache::index_t>(x); };
    return {rows, rows, index(group), index(hd), index(page_size), indptr.data(), indices.data(),
            last_page_len.data(), k.data(), v.data(), captures};
  }
};

// The pools of `data` rounded to E (and data's floats made the values E holds, for the reference), and the
// selection over them.
template <class E>
struct rounded_pools {
  std::vector<E> k, v;
  explicit rounded_pools(paged_rows& data) : k(data.k.size()), v(data.v.size()) {
    for (std::size_t i = 0; i < data.k.size(); ++i) {
      k[i] = heterocache::from_float<E>(data.k[i]);
      v[i] = heterocache::from_float<E>(data.v[i]);
      data.k[i] = heterocache::to_float(k[i]);
      data.v[i] = heterocache::to_float(v[i]);
    }
  }
  heterocache::basic_paged_selection<E> selection(const paged_rows& data, std::size_t group, std::size_t hd) const {
    const heterocache::paged_selection f = data.selection(group, hd);
    return {f.rows,   f.kv_heads, f.group_size,    f.head_dim, f.page_size, f.indptr,
            f.indices, f.last_page_len, k.data(), v.data(),   f.captures};
  }
};

// out ([row][group][hd]) is, within 1e-4, the naive attention of each row's queries over its tokens of `data`
// (scale 0.125; zeros for an empty row).
void require_naive_attention(const paged_rows& data, const std::vector<float>& q, std::size_t group, std::size_t hd,
                             const std::vector<float>& out) {
  for (std::size_t r = 0; r < data.slots.size(); ++r)
    for (std::size_t g = 0; g < group; ++g) {
      const auto ref = data.slots[r].empty()
                           ? std::vector<float>(hd, 0.0f)
                           : naive(&q[(r * group + g) * hd], hd, data.k.data(), data.v.data(), data.slots[r], 0.125f);
      for (std::size_t d = 0; d < hd; ++d)
        REQUIRE(out[(r * group + g) * hd + d] == doctest::Approx(ref[d]).epsilon(1e-4));
    }
}

// Runs `sel` (rows of `group` query heads) on `threads` threads with every kernel this processor runs, rows of
// more than 100 tokens split, and requires each output to be the naive attention of `data`.
template <class Selection>
void require_naive_attention_every_kernel(const Selection& sel, const paged_rows& data, const std::vector<float>& q,
                                          std::size_t group, std::size_t hd, std::size_t threads) {
  heterocache::host_thread_pool pool(static_cast<heterocache::index_t>(threads));
  for (kernel_isa kernel : supported_isas()) {
    const std::string kernel_name = to_string(kernel);
    CAPTURE(kernel_name);
    selection_attention att(pool);
    att.min_split = 100;
    att.kernel = kernel;
    std::vector<float> out(data.slots.size() * group * hd, -1.0f);
    att.run(sel, q.data(), out.data(), 0.125f);
    require_naive_attention(data, q, group, hd, out);
  }
}

// Normal random queries for `heads` query heads.
std::vector<float> random_queries(std::size_t heads, std::size_t hd, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> q(heads * hd);
  for (auto& x : q) x = nd(rng);
  return q;
}
}  // namespace

TEST_CASE("selection_attention matches a naive softmax attention, split or not, for any page size") {
  const std::size_t hd = 64, group = 3;
  const std::vector<std::size_t> lengths{700, 611, 0, 5};  // split rows, an empty row, a row of part of a page
  const std::size_t rows = lengths.size();
  const std::vector<float> q = random_queries(rows * group, hd, 11);
  for (std::size_t page_size : {1, 16}) {
    const paged_rows data(lengths, page_size, hd, 5, 17);
    for (std::size_t threads : {1, 2, 3})
      require_naive_attention_every_kernel(data.selection(group, hd), data, q, group, hd, threads);
  }
}

TEST_CASE_TEMPLATE("selection_attention over 16-bit pages matches a naive attention over the widened values", E,
                   heterocache::bf16_t, heterocache::fp16_t) {
  // head dims of whole 8-float vectors (the x86 kernels widen keys and values once for the group) and not (the
  // portable kernel)
  for (const std::size_t hd : {std::size_t{64}, std::size_t{40}, std::size_t{12}}) {
    CAPTURE(hd);
    const std::size_t group = 3;
    const std::vector<std::size_t> lengths{700, 37, 0};
    const std::size_t rows = lengths.size();
    const std::vector<float> q = random_queries(rows * group, hd, 23);
    paged_rows data(lengths, 16, hd, 29, 31);
    const rounded_pools<E> pools(data);
    const heterocache::basic_paged_selection<E> sel = pools.selection(data, group, hd);
    for (std::size_t threads : {1, 2}) require_naive_attention_every_kernel(kv_selection{sel}, data, q, group, hd, threads);
  }
}

TEST_CASE_TEMPLATE("selection_attention matches a naive attention for every group size and head dim, every kernel", E,
                   float, heterocache::bf16_t, heterocache::fp16_t) {
  // group sizes of one, part of and more than one pass of the x86 kernels' head blocks; head dims of 2, 4, 8
  // and 16 vectors of 16 lanes, of 8 lanes only (48), of a widened copy only (40) and of none (20)
  for (const std::size_t group : {std::size_t{1}, std::size_t{2}, std::size_t{4}, std::size_t{5}, std::size_t{8}})
    for (const std::size_t hd : {16, 20, 32, 40, 48, 64, 128, 256}) {
      CAPTURE(group);
      CAPTURE(hd);
      const std::vector<std::size_t> lengths{173, 9, 1};  // whole blocks of 8 keys and a rest, a rest only
      const std::size_t rows = lengths.size();
      const std::vector<float> q = random_queries(rows * group, hd, 41);
      paged_rows data(lengths, 16, hd, 43, 47);
      const rounded_pools<E> pools(data);
      const heterocache::basic_paged_selection<E> sel = pools.selection(data, group, hd);
      require_naive_attention_every_kernel(sel, data, q, group, hd, 1);
    }
}

TEST_CASE("selection_attention refuses a kernel the processor does not run, naming it") {
  const paged_rows data({20}, 16, 64, 1, 2);
  const std::vector<float> q = random_queries(3, 64, 3);
  std::vector<float> out(3 * 64);
  heterocache::host_thread_pool pool(1);
  selection_attention att(pool);
  att.kernel = static_cast<kernel_isa>(7);  // no instruction set
  CHECK_THROWS_WITH_AS(att.run(data.selection(3, 64), q.data(), out.data(), 0.125f),
                       doctest::Contains("kernel = ?"), std::invalid_argument);
}

TEST_CASE("selection_attention does not depend on where the pages lie") {
  const std::size_t hd = 64, group = 3;
  const std::vector<std::size_t> lengths{900, 333};
  const std::vector<float> q = random_queries(lengths.size() * group, hd, 3);
  std::vector<std::vector<float>> outs;
  for (unsigned shuffle : {1u, 2u, 3u}) {
    const paged_rows data(lengths, 16, hd, 9, shuffle);
    heterocache::host_thread_pool pool(2);
    selection_attention att(pool);
    att.min_split = 100;
    outs.emplace_back(q.size());
    att.run(data.selection(group, hd), q.data(), outs.back().data(), 0.125f);
  }
  CHECK(outs[0] == outs[1]);
  CHECK(outs[0] == outs[2]);
}

TEST_CASE("selection_attention writes and stamps the scores the selection's captures ask for, split or not") {
  const std::size_t hd = 64, group = 3, rows = 2, per_row = 700, tokens = 500;  // 500: part of a page at the end
  const std::vector<float> q = random_queries(rows * group, hd, 13);
  std::vector<float> out(rows * group * hd);
  for (std::size_t page_size : {1, 16}) {
    const paged_rows data({per_row, per_row}, page_size, hd, 13, 29);
    for (std::size_t threads : {1, 2, 3}) {
      std::vector<float> captured(group * tokens + 1, std::nanf(""));
      std::uint64_t stamp = 0;
      const std::vector<heterocache::score_capture> captures{{}, {captured.data(), tokens, &stamp, 7}};
      heterocache::host_thread_pool pool(static_cast<heterocache::index_t>(threads));
      selection_attention att(pool);
      att.min_split = 100;
      att.run(data.selection(group, hd, captures), q.data(), out.data(), 0.125f);
      for (std::size_t g = 0; g < group; ++g)
        for (std::size_t i = 0; i < tokens; ++i) {
          const float* key = data.k.data() + static_cast<std::size_t>(data.slots[1][i]) * hd;
          double want = 0;
          for (std::size_t d = 0; d < hd; ++d) want += double(q[(group + g) * hd + d]) * key[d];
          REQUIRE(captured[g * tokens + i] == doctest::Approx(want * 0.125).epsilon(1e-5));
        }
      CHECK(std::isnan(captured.back()));  // nothing past the capture
      CHECK(stamp == 7);                   // marked written, with the step the cache asked for
    }
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
