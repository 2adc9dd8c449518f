# Findxxhash: xxHash, the section checksum of the container format. Debian's libxxhash-dev ships
# no CMake package. Provides the imported target xxhash::xxhash.
include("${CMAKE_CURRENT_LIST_DIR}/floatzip_find_c_library.cmake")
floatzip_find_c_library(xxhash xxhash.h xxhash XXH_VERSION)
