"""Conan 2 recipe for HeteroCache, a header-only C++20 library.

One package serves every configuration: the package id ignores settings, and the package holds only
headers. The recipe needs no remote: it has no requirements (Threads comes from the system).
"""

import os
import re

from conan import ConanFile
from conan.tools.build import check_min_cppstd
from conan.tools.cmake import CMake, CMakeToolchain, cmake_layout
from conan.tools.files import copy, load, rmdir

required_conan_version = ">=2.0"


class HeteroCacheConan(ConanFile):
    name = "heterocache"
    description = "Head-wise heterogeneous KV-cache compression for long-context LLM inference"
    license = "Apache-2.0"
    topics = ("llm", "inference", "kv-cache", "attention", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    exports_sources = "CMakeLists.txt", "LICENSE", "cmake/*", "include/*"
    no_copy_source = True

    def set_version(self):
        # The CMake project is the single source of the version.
        text = load(self, os.path.join(self.recipe_folder, "CMakeLists.txt"))
        self.version = re.search(r"project\(heterocache VERSION ([0-9.]+)", text).group(1)

    def layout(self):
        cmake_layout(self)

    def validate(self):
        check_min_cppstd(self, 20)

    def generate(self):
        toolchain = CMakeToolchain(self)
        for option in ("TESTS", "EXAMPLES", "BENCH"):
            toolchain.cache_variables[f"HETEROCACHE_BUILD_{option}"] = False
        toolchain.generate()

    def build(self):
        CMake(self).configure()  # nothing to compile: configuring generates the install rules

    def package(self):
        CMake(self).install()
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        # Consumers get CMake and pkg-config files generated from cpp_info (CMakeDeps, PkgConfigDeps).
        rmdir(self, os.path.join(self.package_folder, "share"))

    def package_id(self):
        self.info.clear()

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "heterocache")
        self.cpp_info.set_property("cmake_target_name", "heterocache::heterocache")
        self.cpp_info.set_property("pkg_config_name", "heterocache")
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        if self.settings.os in ("Linux", "FreeBSD"):
            self.cpp_info.system_libs = ["pthread"]
