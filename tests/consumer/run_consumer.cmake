#[[
Builds and runs one consumer project from scratch. Run with `cmake -P`; inputs as -D variables:

  SOURCE_DIR      the consumer project
  BINARY_DIR      its build directory (wiped first)
  GENERATOR       CMake generator to use
  CXX_COMPILER    C++ compiler to use
  CTEST_COMMAND   ctest, to run the consumer's own test
  CONFIG          build configuration (may be empty)
  INSTALL_FROM    optional: a HeteroCache build directory to install into PREFIX first
  PREFIX          optional: install prefix, searched through CMAKE_PREFIX_PATH
  REFUSED_VERSION optional: a version the consumer must fail to find (a different major version)
  CONFIGURE_ARGS  optional: extra arguments for configuring the consumer
]]
cmake_minimum_required(VERSION 3.20)

function(run)
    string(JOIN " " printable ${ARGN})
    message(STATUS "+ ${printable}")
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE result)
    if(NOT result EQUAL 0)
        message(FATAL_ERROR "command failed (${result}): ${printable}")
    endif()
endfunction()

set(config_args "")
if(CONFIG)
    set(config_args --config "${CONFIG}")
endif()

set(configure_args ${CONFIGURE_ARGS})
if(INSTALL_FROM)
    file(REMOVE_RECURSE "${PREFIX}")
    run("${CMAKE_COMMAND}" --install "${INSTALL_FROM}" --prefix "${PREFIX}" ${config_args})
    list(APPEND configure_args
         "-DCMAKE_PREFIX_PATH=${PREFIX}"
         "-DHETEROCACHE_EXPECTED_PREFIX=${PREFIX}"
         -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
endif()

set(configure "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -G "${GENERATOR}"
    "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" "-DCMAKE_BUILD_TYPE=${CONFIG}" ${configure_args})

if(REFUSED_VERSION)
    set(refused_dir "${BINARY_DIR}-refused-version")
    file(REMOVE_RECURSE "${refused_dir}")
    message(STATUS "+ configure expecting heterocache ${REFUSED_VERSION} to be refused")
    execute_process(COMMAND ${configure} -B "${refused_dir}" "-DHETEROCACHE_WANTED_VERSION=${REFUSED_VERSION}"
                    RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
    if(result EQUAL 0 OR NOT output MATCHES "compatible with requested version")
        message(FATAL_ERROR "find_package(heterocache ${REFUSED_VERSION}) was not refused as incompatible:\n${output}")
    endif()
endif()

file(REMOVE_RECURSE "${BINARY_DIR}")
run(${configure} -B "${BINARY_DIR}")
run("${CMAKE_COMMAND}" --build "${BINARY_DIR}" ${config_args})
run("${CTEST_COMMAND}" --test-dir "${BINARY_DIR}" ${config_args} --output-on-failure --no-tests=error)
