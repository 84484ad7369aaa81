#!/usr/bin/env bash
# The HeteroCache passkey demo on a real model (SmolLM2-135M-Instruct, Q4_1 GGUF).
#
# Fetches the model if absent (scripts/fetch-model.sh), builds the engine if
# needed (Release, in build/), then asks the model for a pass key hidden in
# about 4K tokens of filler: one prompt prefill, then 32 tokens decoded from
# that prompt state with the full KV cache and again with HeteroCache at
# r = 0.5. Prints both answers, hot-tier KV bytes, decode speed, the speedup,
# the peak RSS and the head-role map (about 20 s on 2 cores once built).
#
# usage: scripts/demo.sh [extra heterocache-llama arguments, e.g. --context 8192]
# env:   HETEROCACHE_MODEL (model file), BUILD_DIR (default build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILD_DIR="${BUILD_DIR:-build}"
ENGINE="$BUILD_DIR/examples/llama/heterocache-llama"
PROFILE="examples/llama/profiles/smollm2-135m-instruct.hcprofile"

# shellcheck source=scripts/install-deps.sh
source scripts/install-deps.sh
heterocache_install_dependencies

if [[ -z "${HETEROCACHE_MODEL:-}" || ! -f "${HETEROCACHE_MODEL}" ]]; then
  HETEROCACHE_MODEL="$(scripts/fetch-model.sh)"
fi
export HETEROCACHE_MODEL

if [[ ! -x "$ENGINE" ]] || [[ -n "$(find examples/llama include -newer "$ENGINE" -type f 2>/dev/null | head -n1)" ]]; then
  echo "demo.sh: building heterocache-llama (Release, $BUILD_DIR/) ..." >&2
  if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >&2
  fi
  cmake --build "$BUILD_DIR" --parallel "$(nproc)" --target heterocache-llama >&2
fi

args=(--passkey-demo --context 4096 --seed 42 --depth 0.5 --budget 0.5)
# a head profile measured offline on other text (see examples/llama/README.md); without it the
# cache profiles online during the first decode steps
if [[ -f "$PROFILE" ]]; then args+=(--profile "$PROFILE"); fi
exec "$ENGINE" "${args[@]}" "$@"
