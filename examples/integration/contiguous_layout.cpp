// Integration guide, "Describe your KV memory": contiguous K/V tensors, their strides and element types.
#include <concepts>
#include <cstddef>
#include <vector>

#include <heterocache/heterocache.hpp>

#include "expect.hpp"

namespace hc = heterocache;
using hc::index_t;

int main() {
    const index_t layers = 2, sequences = 2, kv_heads = 3, tokens = 16, head_dim = 64;
    std::vector<float> keys(static_cast<std::size_t>(layers * sequences * kv_heads * tokens * head_dim));
    std::vector<float> values(keys.size());

    // [snippet head_major]
    // K and V shaped [layer][sequence][kv_head][token][head_dim], the layout of most reference code.
    const hc::strided_kv_tensor<float> head_major =
        hc::make_head_major_tensor(keys.data(), values.data(), sequences, kv_heads, tokens, head_dim);
    // K and V shaped [layer][sequence][token][kv_head][head_dim], as the K/V projections write them.
    const hc::strided_kv_tensor<float> token_major =
        hc::make_token_major_tensor(keys.data(), values.data(), sequences, kv_heads, tokens, head_dim);
    // [/snippet]

    // [snippet strides]
    // Any other order of the four outer dimensions is a matter of strides, in elements (head_dim contiguous):
    // here [sequence][layer][kv_head][token][head_dim], every sequence's layers together.
    const hc::strided_kv_tensor<float> sequence_major{
        .keys = keys.data(),
        .values = values.data(),
        .map = {.layer_stride = kv_heads * tokens * head_dim,
                .sequence_stride = layers * kv_heads * tokens * head_dim,
                .head_stride = tokens * head_dim,
                .token_stride = head_dim},
        .heads = kv_heads,
        .dim = head_dim,
    };
    // [/snippet]

    std::vector<hc::bf16_t> bf16_keys(keys.size()), bf16_values(keys.size());
    // [snippet element]
    // A bf16 engine: the tensor's element type is the default cache's hot-tier element type, and every
    // kernel widens to fp32 as it reads. A tensor in host or pinned memory serves the host storage tier.
    const hc::strided_kv_tensor<hc::bf16_t, hc::pinned_memory> bf16_tensor =
        hc::make_head_major_tensor<hc::bf16_t, hc::pinned_memory>(bf16_keys.data(), bf16_values.data(), sequences,
                                                                  kv_heads, tokens, head_dim);
    using bf16_cache = hc::kv_cache<hc::strided_kv_tensor<hc::bf16_t, hc::pinned_memory>>;
    // [/snippet]

    expect(head_major.key(1, 1, 2, 5) == keys.data() + (((1 * sequences + 1) * kv_heads + 2) * tokens + 5) * head_dim,
           "make_head_major_tensor addresses [layer][sequence][kv_head][token][head_dim]");
    expect(token_major.value(1, 1, 2, 5) == values.data() + (((1 * sequences + 1) * tokens + 5) * kv_heads + 2) * head_dim,
           "make_token_major_tensor addresses [layer][sequence][token][kv_head][head_dim]");
    expect(sequence_major.key(1, 1, 2, 5) == keys.data() + (((1 * layers + 1) * kv_heads + 2) * tokens + 5) * head_dim,
           "strides address any order of the outer dimensions");
    expect(head_major.key_rows(1, 1, 2).at(5) == head_major.key(1, 1, 2, 5),
           "key_rows walks the tokens of one (layer, sequence, KV head)");
    expect(head_major.kv_heads() == kv_heads && token_major.head_dim() == head_dim, "tensors report their shape");
    expect(bf16_tensor.key(1, 1, 2, 5) == bf16_keys.data() + (((1 * sequences + 1) * kv_heads + 2) * tokens + 5) * head_dim,
           "a bf16 tensor addresses its elements as a float one does");
    static_assert(std::same_as<bf16_cache::selection_type::element_type, hc::bf16_t>,
                  "the default cache over a bf16 tensor keeps a bf16 hot tier");
    return 0;
}
