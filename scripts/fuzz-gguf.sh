#!/usr/bin/env bash
# Fuzz the GGUF parser of examples/llama with libFuzzer (clang, ASan + UBSan).
#
# usage: scripts/fuzz-gguf.sh [seconds=60]
#   CXX (default clang++) must support -fsanitize=fuzzer.
# Builds examples/llama/fuzz/gguf_fuzz.cpp, writes a seed corpus of small valid
# GGUF files, runs for the given time (2 jobs at most) and copies any crashing,
# leaking or timing-out inputs into examples/llama/tests/gguf_regressions/,
# which the unit tests replay through the parser. Exit code 1 if any were found.
set -euo pipefail

SECONDS_TO_RUN="${1:-60}"
[[ "$SECONDS_TO_RUN" =~ ^[0-9]+$ ]] || { echo "fuzz-gguf.sh: seconds must be an integer" >&2; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/examples/llama"
REGRESSIONS="$SRC/tests/gguf_regressions"
CXX="${CXX:-clang++}"
command -v "$CXX" >/dev/null 2>&1 || { echo "fuzz-gguf.sh: $CXX not found (needs clang with libFuzzer)" >&2; exit 2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gguf-fuzz.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/corpus" "$WORK/artifacts" "$REGRESSIONS"

FLAGS=(-std=c++20 -g -O1 -fno-omit-frame-pointer -I "$SRC")
echo "fuzz-gguf.sh: building with $CXX" >&2
"$CXX" "${FLAGS[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  "$SRC/fuzz/gguf_fuzz.cpp" "$SRC/gguf.cpp" -o "$WORK/gguf_fuzz"
"$CXX" "${FLAGS[@]}" "$SRC/fuzz/make_seeds.cpp" "$SRC/gguf.cpp" -o "$WORK/make_seeds"
"$WORK/make_seeds" "$WORK/corpus"
# earlier regressions are good seeds too
find "$REGRESSIONS" -maxdepth 1 -type f ! -name '.*' ! -name '*.md' -exec cp {} "$WORK/corpus/" \; 2>/dev/null || true

echo "fuzz-gguf.sh: fuzzing for ${SECONDS_TO_RUN}s" >&2
set +e
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
"$WORK/gguf_fuzz" "$WORK/corpus" -max_total_time="$SECONDS_TO_RUN" -max_len=65536 -rss_limit_mb=2048 \
  -timeout=10 -artifact_prefix="$WORK/artifacts/" -print_final_stats=1 2>"$WORK/fuzz.log"
RC=$?
set -e
tail -n 15 "$WORK/fuzz.log" >&2

FOUND=0
for f in "$WORK"/artifacts/*; do
  [[ -f "$f" ]] || continue
  name="$(basename "$f")"
  cp "$f" "$REGRESSIONS/$name"
  echo "fuzz-gguf.sh: saved $REGRESSIONS/$name" >&2
  FOUND=$((FOUND + 1))
done
if [[ $FOUND -gt 0 || $RC -ne 0 ]]; then
  echo "fuzz-gguf.sh: $FOUND failing input(s) found (libFuzzer exit code $RC)" >&2
  exit 1
fi
echo "fuzz-gguf.sh: no failures in ${SECONDS_TO_RUN}s" >&2
