#pragma once
// The guide's snippets run as tests: a claim the guide makes that stops being true fails the test suite.
#include <cstdio>
#include <cstdlib>

inline void expect(bool condition, const char* claim) {
    if (condition) return;
    std::fprintf(stderr, "integration guide: not true any more: %s\n", claim);
    std::exit(1);
}
