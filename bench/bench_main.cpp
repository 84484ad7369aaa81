// heterocache-bench: registers every benchmark, then runs Google Benchmark. Without a --benchmark_filter
// the run skips contexts of 32K and more (a few minutes and 1 GiB per case); pass
// --benchmark_filter=. (or any filter) to choose them.
#include <string_view>
#include <vector>

#include <benchmark/benchmark.h>

#include <heterocache/detail/isa_dispatch.hpp>

namespace bench {
void register_attention();
void register_monitor();
void register_retrieval();
void register_memory();
void register_step_overhead();
}  // namespace bench

int main(int argc, char** argv) {
    bench::register_memory();
    bench::register_attention();
    bench::register_monitor();
    bench::register_retrieval();
    bench::register_step_overhead();
    std::vector<char*> args(argv, argv + argc);
    bool filtered = false;
    for (std::string_view arg : args) filtered = filtered || arg.starts_with("--benchmark_filter");
    char short_run[] = "--benchmark_filter=-/(32|64|128)K";
    if (!filtered) args.push_back(short_run);
    int count = static_cast<int>(args.size());
    benchmark::AddCustomContext("heterocache_kernel", heterocache::detail::kernel_isa_name());
    benchmark::Initialize(&count, args.data());
    if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
