# Findzstd: libzstd, the baseline codec of the benchmarks. Distributions ship a zstd CMake package,
# a pkg-config file or neither, under different target names; this module gives one name
# everywhere: the imported target zstd::zstd.
include("${CMAKE_CURRENT_LIST_DIR}/floatzip_find_c_library.cmake")
floatzip_find_c_library(zstd zstd.h zstd ZSTD_VERSION)
