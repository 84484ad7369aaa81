// Integration guide, "Describe your KV memory": contiguous K/V tensors.
#include <cstddef>
#include <vector>

#include <heterocache/layout/strided_kv_layout.hpp>

#include "expect.hpp"

namespace hc = heterocache;
using hc::index_t;

int main() {
    const index_t layers = 2, sequences = 2, kv_heads = 3, tokens = 16, head_dim = 64;
    std::vector<float> keys(static_cast<std::size_t>(layers * sequences * kv_heads * tokens * head_dim));
    std::vector<float> values(keys.size());

    // [snippet head_major]
    // K and V shaped [layer][sequence][kv_head][token][head_dim], the layout of most reference code.
    const hc::strided_kv_layout head_major =
        hc::make_head_major_layout(keys.data(), values.data(), sequences, kv_heads, tokens, head_dim);
    // [/snippet]

    // [snippet token_major]
    // K and V shaped [layer][sequence][token][kv_head][head_dim]: give the strides (in floats) yourself.
    const hc::strided_kv_layout token_major{
        .keys = keys.data(),
        .values = values.data(),
        .strides = {.layer = sequences * tokens * kv_heads * head_dim,
                    .sequence = tokens * kv_heads * head_dim,
                    .token = kv_heads * head_dim,
                    .head = head_dim},
        .heads = kv_heads,
        .dim = head_dim,
    };
    // [/snippet]

    expect(head_major.key(1, 1, 2, 5) == keys.data() + (((1 * sequences + 1) * kv_heads + 2) * tokens + 5) * head_dim,
           "make_head_major_layout addresses [layer][sequence][kv_head][token][head_dim]");
    expect(token_major.value(1, 1, 2, 5) == values.data() + (((1 * sequences + 1) * tokens + 5) * kv_heads + 2) * head_dim,
           "the token-major strides address [layer][sequence][token][kv_head][head_dim]");
    expect(head_major.kv_heads() == kv_heads && token_major.head_dim() == head_dim, "layouts report their shape");
    return 0;
}
