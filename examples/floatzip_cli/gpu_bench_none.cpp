// `floatzip bench` in a build without the CUDA decoder: the GPU figures are reported as not
// measured.
#include "gpu_bench.hpp"

namespace floatzip::cli {

result<gpu_decode_measurement> measure_gpu_decode(std::span<const std::vector<std::byte>>, int) {
  return error{errc::cuda_error, "this build has no CUDA decoder (floatzip::cuda)"};
}

}  // namespace floatzip::cli
