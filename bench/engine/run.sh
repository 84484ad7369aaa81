#!/usr/bin/env bash
# Side-by-side decode/prefill speed of examples/llama (heterocache-llama) and llama.cpp
# (through its Python package llama-cpp-python) on the same GGUF file, 2 threads.
#
# usage:
#   bench/engine/run.sh --install          # once: private venv + llama-cpp-python built from source (CPU)
#   bench/engine/run.sh [bench.py options] # the benchmark (see bench/engine/README.md, or --help)
#   bench/engine/run.sh --quick            # 1K and 4K context, 1 round
#
# env: ENGINE_BENCH_VENV   the venv (default build/engine-bench-venv)
#      HETEROCACHE_MODEL   the GGUF file (default ~/.cache/heterocache/models/SmolLM2-135M-Instruct.Q4_1.gguf)
#      ENGINE_BENCH_JOBS   build jobs for the install (default: nproc)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

# The version this benchmark was run with (bench/engine/README.md); change it here only.
LLAMA_CPP_PYTHON_VERSION="0.3.36"
VENV="${ENGINE_BENCH_VENV:-build/engine-bench-venv}"
PY="$VENV/bin/python"

die() { echo "bench/engine/run.sh: error: $*" >&2; exit 1; }

install_venv() {
  local log="$VENV.install.log" jobs="${ENGINE_BENCH_JOBS:-$(nproc)}" start end
  command -v python3 >/dev/null || die "python3 not found"
  command -v cmake >/dev/null || die "cmake not found (llama.cpp is built from source): apt-get install cmake"
  command -v c++ >/dev/null || die "no C++ compiler (apt-get install build-essential)"
  mkdir -p "$(dirname "$VENV")"
  if [[ ! -x "$PY" ]]; then
    echo "creating the venv $VENV ..." >&2
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  fi
  "$PY" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  echo "installing llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION from the Python package index into $VENV:" >&2
  echo "  it compiles llama.cpp from source (CPU only, $jobs jobs; about 10-20 minutes on 2 cores)." >&2
  echo "  full log: $log" >&2
  start=$(date +%s)
  # CPU only, no BLAS, no GPU backend, nothing but the library; GGML_NATIVE (llama.cpp's default) builds
  # for this processor, as a user building it here would get.
  # --no-binary: always build from source, never a prebuilt wheel.
  set +e
  CMAKE_ARGS="-DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF" \
  CMAKE_BUILD_PARALLEL_LEVEL="$jobs" \
    "$PY" -m pip install --verbose --no-cache-dir --no-binary llama-cpp-python \
      "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >"$log" 2>&1 &
  local pid=$! last=""
  # progress: the build's [ NN%] lines (and pip's phases) as they come
  while kill -0 "$pid" 2>/dev/null; do
    sleep 15
    local line
    # ninja's "[N/M] ... -o FILE.o" (shown as "[N/M] FILE.o"), make's "[ NN%]", pip's phases
    line=$(grep -aE '^\s*\[[0-9]+/[0-9]+\]|^\s*\[ *[0-9]+%\]|Collecting|Building wheel|Installing collected|Successfully' "$log" 2>/dev/null \
             | tail -n1 | sed -E 's#^\s*(\[[0-9]+/[0-9]+\]).* -o ([^ ]*/)?([^ /]+) .*#\1 \3#' | cut -c1-110)
    if [[ -n "$line" && "$line" != "$last" ]]; then
      printf '  [%4ds] %s\n' "$(( $(date +%s) - start ))" "$line" >&2
      last="$line"
    fi
  done
  wait "$pid"
  local rc=$?
  set -e
  end=$(date +%s)
  if [[ $rc -ne 0 ]]; then
    tail -n 30 "$log" >&2
    die "pip install llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION failed (rc $rc); see $log"
  fi
  "$PY" -c 'import llama_cpp; print("llama_cpp", llama_cpp.__version__)' >&2 || die "llama_cpp does not import"
  echo "installed in $(( end - start )) s ($VENV)" >&2
}

if [[ "${1:-}" == "--install" ]]; then
  install_venv
  exit 0
fi
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  if [[ -x "$PY" ]]; then exec "$PY" bench/engine/bench.py --help; fi
  exit 0
fi

# Fail before anything runs when a piece is missing.
if [[ ! -x "$PY" ]] || ! "$PY" -c 'import llama_cpp' >/dev/null 2>&1; then
  die "no llama-cpp-python in $VENV. Install it first (once; builds llama.cpp from source, 10-20 minutes):
    bench/engine/run.sh --install"
fi
exec "$PY" bench/engine/bench.py --llama-cpp-python-pin "$LLAMA_CPP_PYTHON_VERSION" "$@"
