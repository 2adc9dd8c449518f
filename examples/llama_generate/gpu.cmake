# llama_generate's GPU path (--device gpu): gpu_engine.cu with cuBLAS, on top of floatzip::cuda.
# Included by examples/CMakeLists.txt for the program and by tests/CMakeLists.txt for
# test_llama_gpu (the tests build without the examples too). The engine is compiled once, as an
# object library both link: nvcc for four architectures is the slowest step of a 2-core build.
if(TARGET floatzip::cuda AND NOT TARGET llama_generate_gpu_engine)
  add_library(llama_generate_gpu_engine OBJECT "${CMAKE_CURRENT_LIST_DIR}/gpu_engine.cu")
  target_link_libraries(llama_generate_gpu_engine PUBLIC floatzip::cuda CUDA::cublas)
  # As cuda/CMakeLists.txt: CMake before 3.26 has no C++20 level for nvcc, though nvcc 12+ has.
  if(NOT "cuda_std_20" IN_LIST CMAKE_CUDA_COMPILE_FEATURES)
    target_compile_options(llama_generate_gpu_engine
                           PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20>)
  endif()
endif()

# Adds the GPU engine to `target`, which must have been created (and not skipped) already.
function(llama_generate_add_gpu_path target)
  target_link_libraries(${target} PRIVATE llama_generate_gpu_engine)
  target_compile_definitions(${target} PRIVATE LLAMA_GENERATE_GPU)
  # One CUDA runtime in the process: the shared one floatzip::cuda links.
  set_target_properties(${target} PROPERTIES CUDA_RUNTIME_LIBRARY Shared)
endfunction()

# The test, when this file is included from tests/: the GPU path against the uncompressed weights
# on the GPU and against the CPU path, on the real models. Label gpu; it skips without a device.
if(CMAKE_CURRENT_SOURCE_DIR STREQUAL "${PROJECT_SOURCE_DIR}/tests")
  floatzip_add_test(test_llama_gpu SOURCES test_llama_gpu.cpp LABELS gpu
                    LIBS nlohmann_json::nlohmann_json xxhash::xxhash zstd::zstd CUDA)
  if(TARGET test_llama_gpu)
    llama_generate_add_gpu_path(test_llama_gpu)
  endif()
endif()
