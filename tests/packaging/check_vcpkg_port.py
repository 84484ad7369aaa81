#!/usr/bin/env python3
"""Checks the vcpkg manifest and overlay port without the vcpkg tool (which cannot be fetched offline).

What vcpkg would reject or get wrong, checked against the real CMake project:
  - vcpkg.json and ports/heterocache/vcpkg.json parse, carry the required fields, and their version is the
    CMake project version; the port depends on the helper ports its portfile calls;
  - every -D option the portfile passes is an option() of CMakeLists.txt, and every HETEROCACHE_BUILD_*
    option is turned OFF;
  - the portfile's CONFIG_PATH is where `cmake --install` really puts heterocacheConfig.cmake;
  - the find_package() and target names in `usage` are the installed config's;
  - the files the portfile installs exist.

Usage: check_vcpkg_port.py --source-dir DIR --install-from BUILD_DIR --prefix DIR --version X.Y.Z [--cmake CMAKE]
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
    return condition


def load_manifest(path, version):
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        check(False, f"{path}: not valid JSON: {e}")
        return {}
    check(isinstance(manifest, dict), f"{path}: the top level must be an object")
    check(manifest.get("name") == "heterocache", f"{path}: name is {manifest.get('name')!r}, expected 'heterocache'")
    check(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", str(manifest.get("name"))), f"{path}: name is not a valid port name")
    schemes = [key for key in ("version", "version-semver", "version-date", "version-string") if key in manifest]
    if check(len(schemes) == 1, f"{path}: needs exactly one version field, found {schemes}"):
        found = manifest[schemes[0]]
        check(found == version, f"{path}: {schemes[0]} is {found!r} but CMakeLists.txt says project version {version!r}")
    check(isinstance(manifest.get("description"), (str, list)), f"{path}: needs a description")
    check("license" in manifest, f"{path}: needs a license (an SPDX expression)")
    check(isinstance(manifest.get("dependencies", []), list), f"{path}: dependencies must be a list")
    return manifest


def dependency_names(manifest):
    return {d if isinstance(d, str) else d.get("name") for d in manifest.get("dependencies", [])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-dir", type=Path, required=True)
    parser.add_argument("--install-from", type=Path, required=True, help="a configured HeteroCache build directory")
    parser.add_argument("--prefix", type=Path, required=True, help="scratch install prefix (wiped)")
    parser.add_argument("--version", required=True, help="the CMake project version")
    parser.add_argument("--cmake", default="cmake")
    args = parser.parse_args()

    source = args.source_dir
    port = source / "ports" / "heterocache"
    load_manifest(source / "vcpkg.json", args.version)
    port_manifest = load_manifest(port / "vcpkg.json", args.version)

    portfile = (port / "portfile.cmake").read_text(encoding="utf-8")
    for helper, prefix in (("vcpkg-cmake", "vcpkg_cmake_"), ("vcpkg-cmake-config", "vcpkg_cmake_config_")):
        if re.search(rf"\b{prefix}\w+\(", portfile):
            check(helper in dependency_names(port_manifest), f"portfile calls {prefix}* but the port does not depend on {helper}")

    # -D options against the CMake project's option()s.
    cmakelists = (source / "CMakeLists.txt").read_text(encoding="utf-8")
    options = set(re.findall(r"^\s*option\(\s*(\w+)", cmakelists, re.MULTILINE))
    passed = dict(re.findall(r"-D(\w+)=(\w+)", portfile))
    for name in passed:
        check(name in options, f"portfile passes -D{name}, which is not an option() of CMakeLists.txt")
    for name in sorted(o for o in options if o.startswith("HETEROCACHE_BUILD_")):
        check(passed.get(name) == "OFF", f"portfile must pass -D{name}=OFF (found {passed.get(name)!r})")

    # Files the portfile installs.
    check("RENAME copyright" in portfile and (source / "LICENSE").is_file(), "portfile must install LICENSE as copyright")
    check((port / "usage").is_file(), "ports/heterocache/usage is missing")

    # CONFIG_PATH against a real install.
    match = re.search(r"vcpkg_cmake_config_fixup\(\s*CONFIG_PATH\s+(\S+?)\s*\)", portfile)
    if not check(match, "portfile has no vcpkg_cmake_config_fixup(CONFIG_PATH ...)"):
        return report()
    config_path = match.group(1)
    shutil.rmtree(args.prefix, ignore_errors=True)
    subprocess.run([args.cmake, "--install", str(args.install_from), "--prefix", str(args.prefix)], check=True,
                   stdout=subprocess.DEVNULL)
    configs = sorted(p for p in args.prefix.rglob("*") if p.name in ("heterocacheConfig.cmake", "heterocache-config.cmake"))
    if not check(len(configs) == 1, f"expected one installed heterocache config file, found {configs}"):
        return report()
    installed_dir = configs[0].parent.relative_to(args.prefix).as_posix()
    check(installed_dir == config_path,
          f"portfile says CONFIG_PATH {config_path} but cmake --install puts the config in {installed_dir}")
    package_name = re.sub(r"(-config|Config)\.cmake$", "", configs[0].name)
    imported = set()
    for targets_file in configs[0].parent.glob("*.cmake"):
        imported |= set(re.findall(r"add_library\(\s*(\S+)\s+\w+\s+IMPORTED", targets_file.read_text(encoding="utf-8")))
    check(imported, f"no imported target in {installed_dir}")

    # usage against the installed config.
    usage = (port / "usage").read_text(encoding="utf-8")
    found_packages = re.findall(r"find_package\(\s*(\S+)", usage)
    check(found_packages, "usage shows no find_package()")
    for name in found_packages:
        check(name == package_name, f"usage says find_package({name}) but the installed config is for {package_name}")
    linked = re.findall(r"target_link_libraries\(\s*\S+\s+(?:PRIVATE|PUBLIC|INTERFACE)\s+([^)]+)\)", usage)
    check(linked, "usage shows no target_link_libraries()")
    for target in " ".join(linked).split():
        check(target in imported, f"usage links {target}, which the installed config does not define ({sorted(imported)})")
    pc_names = re.findall(r"pkg-config --cflags --libs (\S+)", usage)
    for name in pc_names:
        check((args.prefix / "share" / "pkgconfig" / f"{name}.pc").is_file(), f"usage names pkg-config module {name}, not installed")
    return report()


def report():
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    if not failures:
        print("vcpkg manifest and port: ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
