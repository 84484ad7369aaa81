#!/usr/bin/env bash
# Checks the example engine (examples/llama) against the float64 reference on the real model:
# fetches the model, installs numpy and gguf for python3 if missing, finds or builds
# heterocache-llama, runs tools/check_reference.py with fp32 and int16 activations (about two minutes).
#
# usage: scripts/check-model.sh [build_dir]
#   build_dir: build heterocache-llama there (configured Release if new); without it the
#   script uses build/ if it holds the engine, else configures and builds build/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
MODEL="${HETEROCACHE_MODEL:-}"
if [[ -z "$MODEL" || ! -f "$MODEL" ]]; then
  MODEL="$(scripts/fetch-model.sh)"
fi

BUILD_DIR="${1:-build}"
if ! "$PYTHON" -c 'import numpy, gguf' >/dev/null 2>&1; then
  # A virtual environment of our own: Debian's system python refuses pip installs (PEP 668).
  venv="$BUILD_DIR/python-tools"
  if [[ ! -x "$venv/bin/python" ]]; then
    echo "check-model.sh: installing numpy and gguf into $venv" >&2
    "$PYTHON" -m venv "$venv"
  fi
  PYTHON="$venv/bin/python"
  "$PYTHON" -c 'import numpy, gguf' >/dev/null 2>&1 || "$PYTHON" -m pip install --quiet numpy gguf
fi
ENGINE="$BUILD_DIR/examples/llama/heterocache-llama"
if [[ $# -ge 1 || ! -x "$ENGINE" ]]; then
  if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
  fi
  cmake --build "$BUILD_DIR" --parallel "$(nproc)" --target heterocache-llama
fi

# fp32 activations (the default) and int16 ones, both within 1e-3 of the reference with the same greedy
# tokens; int8 activations (llama.cpp's scheme) are not held to it (docs/engine.md gives their error).
"$PYTHON" tools/check_reference.py --engine "$ENGINE" --model "$MODEL" --activations fp32
exec "$PYTHON" tools/check_reference.py --engine "$ENGINE" --model "$MODEL" --activations int16 --tol 1e-3
