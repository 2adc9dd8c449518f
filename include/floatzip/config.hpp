// floatzip: compile-time configuration shared by host and device code.
#pragma once

#include <bit>

// Functions that run unchanged in the CUDA kernel and in the CPU executor that mirrors it.
#if defined(__CUDACC__)
#define FLOATZIP_HD __host__ __device__ __forceinline__
#else
#define FLOATZIP_HD inline
#endif

namespace floatzip {

// The serialized formats are little-endian and the bitstream loads rely on it.
static_assert(std::endian::native == std::endian::little, "floatzip requires a little-endian host");

inline constexpr int kVersionMajor = 0;
inline constexpr int kVersionMinor = 1;
inline constexpr int kVersionPatch = 0;

}  // namespace floatzip
