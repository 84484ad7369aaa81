// What a downstream project writes: one include, one call. Exits non-zero if the library misbehaves.
#include <heterocache/heterocache.hpp>

#include <cstdio>

int main() {
    heterocache::model_shape shape{.layers = 30, .kv_heads = 3, .query_heads = 9, .head_dim = 64};
    shape.validate();
    if (shape.group_size() != 3) {
        std::puts("heterocache consumer: unexpected group size");
        return 1;
    }
    try {
        heterocache::model_shape{}.validate();
    } catch (const heterocache::shape_error&) {
        std::puts("heterocache consumer: ok");
        return 0;
    }
    std::puts("heterocache consumer: an empty shape was accepted");
    return 1;
}
