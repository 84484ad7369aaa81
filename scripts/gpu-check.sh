#!/usr/bin/env bash
# GPU check: builds HeteroCache with the CUDA backend, runs the CUDA tests and the CUDA benchmark, writes
# the full log to OUT_DIR/gpu-check.log and prints a short table last. Meant for a machine with a device
# (sized to finish under 8 minutes on an H200); without one the tests report skipped.
#
#   scripts/gpu-check.sh OUT_DIR
set -euo pipefail

if (($# != 1)); then
    printf 'usage: %s OUT_DIR\n' "$0" >&2
    exit 2
fi
out=$1
mkdir -p "$out"
out="$(cd "$out" && pwd)"
log_file="$out/gpu-check.log"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

nvcc=/usr/local/cuda/bin/nvcc
if [[ ! -x $nvcc ]]; then
    nvcc="$(command -v nvcc || true)"
fi
if [[ -z $nvcc ]]; then
    printf 'gpu-check: no nvcc found\n' | tee "$log_file"
    exit 1
fi

build="build-gpu-check"
started=$SECONDS
{
    nvidia-smi || true
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DHETEROCACHE_BUILD_EXAMPLES=OFF \
        -DHETEROCACHE_ENABLE_CUDA=ON "-DCMAKE_CUDA_COMPILER=$nvcc"
    cmake --build "$build" --parallel "$(nproc)" --target heterocache_test_cuda_kernels heterocache_test_cuda_storage \
        heterocache_bench_cuda
} >"$log_file" 2>&1 || {
    tail -n 40 "$log_file"
    printf 'gpu-check: build FAILED (log in %s)\n' "$log_file"
    exit 1
}
build_seconds=$((SECONDS - started))

tests_status=passed
ctest --test-dir "$build" --label-regex '^cuda$' --output-on-failure >>"$log_file" 2>&1 || tests_status=FAILED
tests_line="$(grep -E 'tests passed|tests failed' "$log_file" | tail -n 1)"

bench_status=ok
timeout 300 "$build/bench/cuda/heterocache_bench_cuda" 256 5 >"$out/bench.txt" 2>&1 || bench_status=FAILED
cat "$out/bench.txt" >>"$log_file"

printf '\n==> gpu-check (full log: %s)\n' "$log_file"
printf '%-12s %s\n' build "${build_seconds}s" tests "$tests_status: $tests_line" bench "$bench_status"
cat "$out/bench.txt"
[[ $tests_status == passed && $bench_status == ok ]]
