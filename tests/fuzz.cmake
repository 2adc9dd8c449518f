# The container fuzzer: a libFuzzer target built with clang whatever compiler builds the rest,
# and two ctest tests labelled `fuzz`: `fuzz_seed_corpus` writes a seed corpus from the real
# models (FLOATZIP_MODELS_DIR) at test time, `fuzz_container` then fuzzes for a bounded time
# (FLOATZIP_FUZZ_SECONDS, 60 by default) under AddressSanitizer and UndefinedBehaviorSanitizer.
# Skipped with a message when no clang with libFuzzer is found.
set(FLOATZIP_FUZZ_SECONDS 60 CACHE STRING "Seconds the fuzz_container test fuzzes for")
option(FLOATZIP_FUZZ "Build the libFuzzer targets and their fuzz-labelled tests (needs clang)" ON)
if(NOT FLOATZIP_FUZZ)
  return()
endif()
find_program(FLOATZIP_FUZZ_CXX NAMES clang++-14 clang++ DOC "clang for the libFuzzer targets")

set(_fuzz_supported OFF)
if(FLOATZIP_FUZZ_CXX)
  set(_probe_dir "${CMAKE_CURRENT_BINARY_DIR}/fuzz_probe")
  file(WRITE "${_probe_dir}/probe.cpp"
       "#include <cstddef>\n#include <cstdint>\nextern \"C\" int LLVMFuzzerTestOneInput("
       "const std::uint8_t*, std::size_t) { return 0; }\n")
  execute_process(
    COMMAND "${FLOATZIP_FUZZ_CXX}" -fsanitize=fuzzer,address,undefined probe.cpp -o probe
    WORKING_DIRECTORY "${_probe_dir}" RESULT_VARIABLE _probe_result OUTPUT_QUIET ERROR_QUIET)
  if(_probe_result EQUAL 0)
    set(_fuzz_supported ON)
  endif()
endif()

if(NOT _fuzz_supported)
  message(STATUS "floatzip: no clang with libFuzzer (-fsanitize=fuzzer); fuzz tests skipped")
  return()
endif()

# Include directories of the header-only dependencies, for the clang command line.
set(_fuzz_includes "-I${PROJECT_SOURCE_DIR}/include")
foreach(_dep nlohmann_json::nlohmann_json xxhash::xxhash zstd::zstd)
  get_target_property(_dirs ${_dep} INTERFACE_INCLUDE_DIRECTORIES)
  if(_dirs)
    foreach(_dir IN LISTS _dirs)
      list(APPEND _fuzz_includes "-I${_dir}")
    endforeach()
  endif()
endforeach()

file(GLOB_RECURSE _fuzz_header_deps CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/include/floatzip/*")
set(_fuzz_dir "${CMAKE_CURRENT_BINARY_DIR}/fuzz")
set(_fuzz_binary "${_fuzz_dir}/fuzz_container")
add_custom_command(
  OUTPUT "${_fuzz_binary}"
  COMMAND "${CMAKE_COMMAND}" -E make_directory "${_fuzz_dir}"
  COMMAND "${FLOATZIP_FUZZ_CXX}" -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined
          -fno-sanitize-recover=undefined ${_fuzz_includes}
          "${CMAKE_CURRENT_SOURCE_DIR}/fuzz_container.cpp" -o "${_fuzz_binary}" -pthread
          "$<TARGET_FILE:zstd::zstd>"
  DEPENDS fuzz_container.cpp ${_fuzz_header_deps}
  COMMENT "Building the libFuzzer target fuzz_container with ${FLOATZIP_FUZZ_CXX}"
  VERBATIM)
add_custom_target(fuzz_container ALL DEPENDS "${_fuzz_binary}")

add_executable(fuzz_seeds fuzz_seeds.cpp)
target_link_libraries(fuzz_seeds PRIVATE floatzip::floatzip nlohmann_json::nlohmann_json
                                         xxhash::xxhash zstd::zstd)

# Seeds from the models, and an empty scratch corpus for the inputs the fuzzer finds new.
add_test(NAME fuzz_seed_corpus COMMAND fuzz_seeds "${FLOATZIP_MODELS_DIR_ABS}" "${_fuzz_dir}/seeds"
                                       "${_fuzz_dir}/scratch")
set_tests_properties(fuzz_seed_corpus PROPERTIES LABELS fuzz FIXTURES_SETUP fuzz_corpus)
# A crash, a leak, a sanitizer report or a timeout fails the test and leaves the input in
# ${_fuzz_dir}/crash-* (or leak-*, timeout-*) for reproduction: `fuzz_container FILE`.
add_test(NAME fuzz_container
         COMMAND "${_fuzz_binary}" -max_total_time=${FLOATZIP_FUZZ_SECONDS} -timeout=20
                 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1
                 "-artifact_prefix=${_fuzz_dir}/" "${_fuzz_dir}/scratch" "${_fuzz_dir}/seeds")
set_tests_properties(fuzz_container PROPERTIES LABELS fuzz FIXTURES_REQUIRED fuzz_corpus
                                               TIMEOUT 600)
