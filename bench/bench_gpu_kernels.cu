// The "raw BF16 loads" baseline of bench_gpu: a kernel that only reads the uncompressed BF16
// weights, as an inference kernel reading uncompressed weights would, with 16-byte loads spread
// over the whole GPU. What the decoder is compared against besides a device-to-device copy.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "bench_gpu_kernels.hpp"

namespace floatzip::bench {
namespace {

// Grid-stride 16-byte loads folded into one XOR per thread, written only when it equals a value
// the data cannot produce from a real run (so the compiler must keep every load, and the store
// almost never happens).
__global__ void raw_load_kernel(const uint4* __restrict__ words, std::size_t word_count,
                                unsigned* __restrict__ sink) {
  unsigned folded = 0;
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < word_count; i += stride) {
    const uint4 w = words[i];
    folded ^= w.x ^ w.y ^ w.z ^ w.w;
  }
  if (folded == 0x9E3779B9u) *sink = folded;
}

}  // namespace

cudaError_t launch_raw_load(const void* bf16_bytes, std::size_t byte_count, unsigned* sink,
                            int blocks, cudaStream_t stream) {
  raw_load_kernel<<<blocks, 256, 0, stream>>>(static_cast<const uint4*>(bf16_bytes),
                                              byte_count / sizeof(uint4), sink);
  return cudaGetLastError();
}

}  // namespace floatzip::bench
