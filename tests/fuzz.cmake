# The fuzzers: libFuzzer targets built with clang whatever compiler builds the rest, and ctest
# tests labelled `fuzz`: `fuzz_seed_corpus` writes a seed corpus from the real models
# (FLOATZIP_MODELS_DIR) at test time, then `fuzz_container` (the .fzip reader and decoder) and
# `fuzz_safetensors_header` (the header and shard index JSON parsers) fuzz for a bounded time
# under AddressSanitizer and UndefinedBehaviorSanitizer. Skipped with a message when no clang
# with libFuzzer is found.
set(FLOATZIP_FUZZ_SECONDS 60 CACHE STRING "Seconds the fuzz_container test fuzzes for")
set(FLOATZIP_FUZZ_HEADER_SECONDS 20 CACHE STRING
    "Seconds the fuzz_safetensors_header test fuzzes for")
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
# floatzip_add_fuzzer(<name>): <name>.cpp built with clang into ${_fuzz_dir}/<name>.
function(floatzip_add_fuzzer name)
  set(binary "${_fuzz_dir}/${name}")
  add_custom_command(
    OUTPUT "${binary}"
    COMMAND "${CMAKE_COMMAND}" -E make_directory "${_fuzz_dir}"
    COMMAND "${FLOATZIP_FUZZ_CXX}" -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined
            -fno-sanitize-recover=undefined ${_fuzz_includes}
            "${CMAKE_CURRENT_SOURCE_DIR}/${name}.cpp" -o "${binary}" -pthread
            "$<TARGET_FILE:zstd::zstd>"
    DEPENDS ${name}.cpp ${_fuzz_header_deps}
    COMMENT "Building the libFuzzer target ${name} with ${FLOATZIP_FUZZ_CXX}"
    VERBATIM)
  add_custom_target(${name} ALL DEPENDS "${binary}")
endfunction()
floatzip_add_fuzzer(fuzz_container)
floatzip_add_fuzzer(fuzz_safetensors_header)

add_executable(fuzz_seeds fuzz_seeds.cpp)
target_link_libraries(fuzz_seeds PRIVATE floatzip::floatzip nlohmann_json::nlohmann_json
                                         xxhash::xxhash zstd::zstd)

# Seeds from the models, and an empty scratch corpus for the inputs the fuzzer finds new.
add_test(NAME fuzz_seed_corpus COMMAND fuzz_seeds "${FLOATZIP_MODELS_DIR_ABS}" "${_fuzz_dir}/seeds"
                                       "${_fuzz_dir}/scratch" "${_fuzz_dir}/header-scratch")
set_tests_properties(fuzz_seed_corpus PROPERTIES LABELS fuzz FIXTURES_SETUP fuzz_corpus)
# A crash, a leak, a sanitizer report or a timeout fails the test and leaves the input in
# ${_fuzz_dir}/crash-* (or leak-*, timeout-*) for reproduction: `fuzz_container FILE`.
add_test(NAME fuzz_container
         COMMAND "${_fuzz_dir}/fuzz_container" -max_total_time=${FLOATZIP_FUZZ_SECONDS} -timeout=20
                 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1
                 "-artifact_prefix=${_fuzz_dir}/" "${_fuzz_dir}/scratch" "${_fuzz_dir}/seeds")
set_tests_properties(fuzz_container PROPERTIES LABELS fuzz FIXTURES_REQUIRED fuzz_corpus
                                               TIMEOUT 600)
# The header parsers read only the seeds' JSON: inputs stay small, and a -timeout of 10 s and
# 512 MB catch what is not linear. Its new inputs go to a scratch folder of its own.
add_test(NAME fuzz_safetensors_header
         COMMAND "${_fuzz_dir}/fuzz_safetensors_header"
                 -max_total_time=${FLOATZIP_FUZZ_HEADER_SECONDS} -timeout=10 -rss_limit_mb=512
                 -max_len=16384 -print_final_stats=1
                 "-dict=${CMAKE_CURRENT_SOURCE_DIR}/fuzz_safetensors_header.dict"
                 "-artifact_prefix=${_fuzz_dir}/header-" "${_fuzz_dir}/header-scratch"
                 "${_fuzz_dir}/seeds")
set_tests_properties(fuzz_safetensors_header PROPERTIES LABELS fuzz
                                                        FIXTURES_REQUIRED fuzz_corpus TIMEOUT 600)
