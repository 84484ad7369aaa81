#!/usr/bin/env bash
# Installs the Debian packages the build, tests and demo need, when some are missing (as root, or via
# sudo). Sourced by scripts/test.sh and scripts/demo.sh; also runnable on its own.
set -euo pipefail

heterocache_packages=(cmake g++ make doctest-dev libbenchmark-dev libopenblas-dev pkg-config python3 python3-pip python3-venv)

heterocache_install_dependencies() {
    if ! command -v dpkg >/dev/null || ! command -v apt-get >/dev/null; then
        printf '\n==> no dpkg/apt-get: assuming cmake, a C++20 compiler, doctest and OpenBLAS are installed\n'
        return
    fi
    local missing=() package
    for package in "${heterocache_packages[@]}"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if ((${#missing[@]} == 0)); then
        return
    fi
    printf '\n==> installing %s\n' "${missing[*]}"
    local sudo=()
    if ((EUID != 0)); then
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    heterocache_install_dependencies
fi
