#!/usr/bin/env bash
# Checks the Conan recipe end to end: `conan create` exports the recipe, packages the headers and builds
# and runs test_package/ against the package. Everything happens in a throwaway CONAN_HOME with every
# remote removed, so it proves the recipe needs no remote. Conan itself comes from PATH, or from PyPI
# into a throwaway virtual environment (the only network access, and only when conan is missing).
#
#   bash scripts/check-packaging.sh            # uses `conan` from PATH if there is one
#   CONAN=/path/to/conan bash scripts/check-packaging.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '\n==> %s\n' "$*"; }

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
started=$SECONDS

conan="${CONAN:-$(command -v conan || true)}"
if [[ -z $conan ]]; then
    if ! python3 -m venv "$scratch/venv" >/dev/null 2>&1; then
        # Debian splits venv (and ensurepip) out of python3.
        log "installing python3-venv"
        sudo=()
        if ((EUID != 0)); then
            sudo=(sudo)
        fi
        "${sudo[@]}" apt-get update
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends python3-venv
        rm -rf "$scratch/venv"
        python3 -m venv "$scratch/venv"
    fi
    log "installing conan from PyPI into a throwaway venv"
    "$scratch/venv/bin/python" -m pip install --quiet --disable-pip-version-check conan
    conan="$scratch/venv/bin/conan"
fi

export CONAN_HOME="$scratch/conan-home"
log "$("$conan" --version), CONAN_HOME=$CONAN_HOME"
"$conan" profile detect
"$conan" remote remove '*' >/dev/null 2>&1 || true  # no remote: the recipe must need none

# conan create writes test_package/build and CMakeUserPresets.json next to the recipe: work on a copy.
mkdir "$scratch/source"
cp -R conanfile.py CMakeLists.txt LICENSE cmake include "$scratch/source/"
mkdir "$scratch/source/test_package"
cp test_package/conanfile.py test_package/CMakeLists.txt test_package/main.cpp "$scratch/source/test_package/"

# C++20 is required and compilers may default to an older standard (GCC 12 detects gnu17).
log "conan create"
"$conan" create "$scratch/source" --build=missing -s compiler.cppstd=20

printf '\nheterocache: Conan package checked in %ss\n' "$((SECONDS - started))"
