// The GPU part of `floatzip bench`: decode throughput of serialized bundles on the device, beside
// a device-to-device copy of the same number of BF16 bytes measured in the same run.
//
// Hook for the CUDA decoder: gpu_bench_none.cpp is built when the build has no floatzip::cuda
// target and reports that nothing was measured; a build with floatzip::cuda compiles
// gpu_bench_cuda.cpp instead (see examples/CMakeLists.txt), which implements the same function.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "floatzip/error.hpp"

namespace floatzip::cli {

struct gpu_decode_measurement {
  std::string device;          // e.g. "NVIDIA H100 80GB HBM3"
  double decode_gb_per_s = 0;  // BF16 output bytes per second, median of max(repeat, 5) runs
  double copy_gb_per_s = 0;    // device-to-device copy of the same number of BF16 bytes
};

// `bundles` are serialized BF16 bundles (compress_bundle output). Returns an error (never made-up
// figures) when there is no CUDA decoder in this build or no device.
result<gpu_decode_measurement> measure_gpu_decode(std::span<const std::vector<std::byte>> bundles,
                                                  int repeat);

}  // namespace floatzip::cli
