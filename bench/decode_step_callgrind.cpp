// One decode step of SmolLM2-135M's attention (30 layers, 3 KV heads, 9 query heads, d = 64) at an 8K
// context over paged selections (pages of 16 tokens), for instruction counts under callgrind. Usage: heterocache-decode-step-callgrind <kept ratio>
// (1 = full attention). Only `decode_step` is meant to be counted:
//   valgrind --tool=callgrind --toggle-collect='*decode_step*' ./build/bench/heterocache-decode-step-callgrind 0.25
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <heterocache/attention/decode_attention.hpp>

#include "bench_common.hpp"

namespace {

constexpr heterocache::index_t layers = 30;

// Every layer reads the same synthetic K/V: instruction counts do not depend on the data.
[[gnu::noinline]] void decode_step(const heterocache::paged_selection& selection, const float* queries, float* output,
                                   float* lse) {
    for (heterocache::index_t layer = 0; layer < layers; ++layer)
        heterocache::decode_attention(selection, queries, output, lse, 0.125f);
}

}  // namespace

int main(int argc, char** argv) {
    const double ratio = argc > 1 ? std::atof(argv[1]) : 1.0;
    if (!(ratio > 0.0 && ratio <= 1.0)) {
        std::fprintf(stderr, "usage: %s <kept ratio in (0, 1]>\n", argv[0]);
        return 2;
    }
    const bench::layer_data& data = bench::layer(bench::smollm2, 8192);
    const bench::paged_rows rows(data, bench::uniform_rows(data, static_cast<heterocache::index_t>(ratio * 8192)));
    const heterocache::paged_selection selection = rows.selection(data.keys.data(), data.values.data());
    std::vector<float> output(data.queries.size()), lse(static_cast<std::size_t>(bench::smollm2.query_heads));
    decode_step(selection, data.queries.data(), output.data(), lse.data());
    std::printf("tokens per layer %lld, output[0] %g\n", static_cast<long long>(selection.total_tokens()),
                static_cast<double>(output[0]));
    return 0;
}
