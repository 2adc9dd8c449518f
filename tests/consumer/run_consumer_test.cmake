# cmake -P driver for the `package_consumer` test. Inputs (-D): FLOATZIP_SOURCE_DIR,
# FLOATZIP_BINARY_DIR (a configured, built floatzip), WORK_DIR, GENERATOR, CXX_COMPILER, CONFIG.
#  1. install floatzip to a fresh prefix, build tests/consumer with find_package, run it;
#  2. build tests/consumer with add_subdirectory of the source tree, run it.
cmake_minimum_required(VERSION 3.21)

foreach(var FLOATZIP_SOURCE_DIR FLOATZIP_BINARY_DIR WORK_DIR GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_consumer_test.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT CONFIG)
  set(CONFIG Release)
endif()

function(run_step description)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE status)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "package_consumer: ${description} failed (${status})")
  endif()
endfunction()

set(consumer_source "${FLOATZIP_SOURCE_DIR}/tests/consumer")
set(prefix "${WORK_DIR}/prefix")
file(REMOVE_RECURSE "${WORK_DIR}")

run_step("install" "${CMAKE_COMMAND}" --install "${FLOATZIP_BINARY_DIR}" --prefix "${prefix}"
         --config "${CONFIG}")

# CUDA is off in the subdirectory build: the consumer uses only the header-only library, and
# compiling the kernel for every architecture would make this test slow.
set(modes installed subdirectory)
set(installed_args "-DCMAKE_PREFIX_PATH=${prefix}")
set(subdirectory_args "-DFLOATZIP_SOURCE_DIR=${FLOATZIP_SOURCE_DIR}" -DFLOATZIP_CUDA=OFF)
foreach(mode IN LISTS modes)
  set(build_dir "${WORK_DIR}/${mode}")
  run_step("${mode}: configure" "${CMAKE_COMMAND}" -S "${consumer_source}" -B "${build_dir}" -G
           "${GENERATOR}" "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" "-DCMAKE_BUILD_TYPE=${CONFIG}"
           ${${mode}_args})
  run_step("${mode}: build" "${CMAKE_COMMAND}" --build "${build_dir}" --config "${CONFIG}")
  # Multi-config generators put the program in a per-config folder.
  find_program(consumer_program consumer PATHS "${build_dir}" "${build_dir}/${CONFIG}"
               NO_DEFAULT_PATH NO_CACHE REQUIRED)
  run_step("${mode}: run" "${consumer_program}")
  unset(consumer_program)
endforeach()
