// Baseline kernels of bench_gpu, callable from host C++ (defined in bench_gpu_kernels.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace floatzip::bench {

// Reads byte_count bytes (a multiple of 16, 16-byte aligned) with `blocks` blocks of 256 threads.
cudaError_t launch_raw_load(const void* bf16_bytes, std::size_t byte_count, unsigned* sink,
                            int blocks, cudaStream_t stream);

}  // namespace floatzip::bench
