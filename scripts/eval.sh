#!/usr/bin/env bash
# Every KV-compression policy side by side on SmolLM2-135M-Instruct (examples/eval, heterocache-eval).
#
#   scripts/eval.sh            the whole matrix: results appended to docs/eval/results.csv (resumable: a rerun
#                              skips the rows already there), then docs/eval/results.md and the PNG plots
#   scripts/eval.sh --quick    CI check (a few minutes on 2 cores): passkey at 1K and KL over 32 positions after
#                              1K with every policy at r = 1 and 0.25, in a temporary CSV; fails unless every
#                              policy at r = 1 reproduces the full cache exactly (same hot tokens, same answers,
#                              identical logits, KL 0)
#   scripts/eval.sh ARGS...    any other arguments go to heterocache-eval (--subset small, --tasks, --budgets...)
#
# Environment: HETEROCACHE_MODEL (default: scripts/fetch-model.sh), BUILD_DIR (default build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILD_DIR="${BUILD_DIR:-build}"
HETEROCACHE_MODEL="${HETEROCACHE_MODEL:-$(scripts/fetch-model.sh)}"
export HETEROCACHE_MODEL

if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$BUILD_DIR" --parallel "$(nproc)" --target heterocache-eval
eval_bin="$BUILD_DIR/examples/eval/heterocache-eval"

if [[ ${1:-} == --quick ]]; then
    shift
    started=$SECONDS
    out="$(mktemp --suffix=.csv)"
    trap 'rm -f "$out"' EXIT
    "$eval_bin" --quick --out "$out" "$@"
    if command -v python3 >/dev/null; then
        python3 tools/eval_table.py --csv "$out" --out "${out%.csv}.md" >/dev/null
        sed -n '/^| policy | budget | hot/,/^$/p' "${out%.csv}.md"
        rm -f "${out%.csv}.md"
    fi
    echo "eval --quick: PASSED in $((SECONDS - started)) s"
    exit 0
fi

"$eval_bin" "$@"
if python3 -c 'import matplotlib' 2>/dev/null; then
    python3 tools/eval_table.py
    python3 tools/plot_eval.py
else
    python3 tools/eval_table.py
    echo "eval.sh: matplotlib missing (pip install matplotlib): no plots" >&2
fi
