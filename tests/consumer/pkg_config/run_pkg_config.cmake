#[[
Installs HeteroCache into a scratch prefix and builds the consumer the way a Makefile user would:

  c++ -std=c++20 main.cpp $(pkg-config --cflags --libs heterocache)

with PKG_CONFIG_PATH pointing into the prefix, then runs it. Run with `cmake -P`; inputs as -D variables:

  INSTALL_FROM    a HeteroCache build directory to install
  PREFIX          install prefix (wiped first)
  BINARY_DIR      where the consumer is built (wiped first)
  SOURCE          the consumer's main.cpp
  CXX_COMPILER    C++ compiler to use
  PKG_CONFIG      the pkg-config executable
  VERSION         the version pkg-config must report
  CONFIG          build configuration (may be empty)
]]
cmake_minimum_required(VERSION 3.20)

function(run)
    string(JOIN " " printable ${ARGN})
    message(STATUS "+ ${printable}")
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
    if(NOT result EQUAL 0)
        message(FATAL_ERROR "command failed (${result}): ${printable}\n${output}")
    endif()
    string(STRIP "${output}" output)
    set(output "${output}" PARENT_SCOPE)
endfunction()

set(config_args "")
if(CONFIG)
    set(config_args --config "${CONFIG}")
endif()

file(REMOVE_RECURSE "${PREFIX}" "${BINARY_DIR}")
file(MAKE_DIRECTORY "${BINARY_DIR}")
run("${CMAKE_COMMAND}" --install "${INSTALL_FROM}" --prefix "${PREFIX}" ${config_args})

# Only the scratch prefix may provide the module.
set(ENV{PKG_CONFIG_PATH} "${PREFIX}/share/pkgconfig")
set(ENV{PKG_CONFIG_LIBDIR} "${PREFIX}/share/pkgconfig")
run("${PKG_CONFIG}" --modversion heterocache)
if(NOT output STREQUAL VERSION)
    message(FATAL_ERROR "pkg-config reports heterocache ${output}, expected ${VERSION}")
endif()
run("${PKG_CONFIG}" --cflags --libs heterocache)
message(STATUS "pkg-config --cflags --libs heterocache: ${output}")
separate_arguments(flags UNIX_COMMAND "${output}")

set(program "${BINARY_DIR}/heterocache_consumer")
run("${CXX_COMPILER}" -std=c++20 "${SOURCE}" ${flags} -o "${program}")
run("${program}")
message(STATUS "${output}")
