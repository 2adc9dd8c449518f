include(CMakeFindDependencyMacro)
find_dependency(Threads)
include("${CMAKE_CURRENT_LIST_DIR}/floatzip-targets.cmake")
# floatzip::cuda is installed only by builds that had a CUDA compiler.
if(EXISTS "${CMAKE_CURRENT_LIST_DIR}/floatzip-cuda-targets.cmake")
  find_dependency(CUDAToolkit)
  include("${CMAKE_CURRENT_LIST_DIR}/floatzip-cuda-targets.cmake")
endif()
