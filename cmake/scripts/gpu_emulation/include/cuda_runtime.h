// A host-only stand-in for the parts of the CUDA runtime gpu_engine.cu uses: "device" memory is
// host memory, copies are memcpy, a kernel launch runs every thread of every block on the host.
// Kernels that use __syncthreads run each block's threads as std::threads meeting at a barrier;
// the others run their threads one after another. For checking the engine's plumbing only.
#pragma once
#include <barrier>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__
#define __shared__ static

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct emu_index {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local emu_index threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;
inline thread_local std::barrier<>* emu_block_barrier = nullptr;
inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }
inline float __uint_as_float(std::uint32_t u) { return std::bit_cast<float>(u); }

struct CUstream_st {
  int unused;
};
using cudaStream_t = CUstream_st*;
struct CUevent_st {
  int unused;
};
using cudaEvent_t = CUevent_st*;
enum cudaError_t { cudaSuccess = 0, cudaErrorMemoryAllocation = 2, cudaErrorInvalidValue = 1 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
constexpr unsigned cudaStreamNonBlocking = 1;
struct cudaDeviceProp {
  char name[256];
};

inline int emu_live_allocations = 0;
inline const char* cudaGetErrorName(cudaError_t) { return "cudaErrorEmu"; }
inline const char* cudaGetErrorString(cudaError_t) { return "emulated error"; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::strcpy(p->name, "host emulation");
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = new CUstream_st{};
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
// Poisoned with 0xFF bytes (a NaN pattern in floats) so a read of memory nobody wrote shows.
inline cudaError_t cudaMalloc(void** p, std::size_t bytes) {
  const std::size_t rounded = (bytes + 255) / 256 * 256;
  *p = std::aligned_alloc(256, rounded == 0 ? 256 : rounded);
  if (*p == nullptr) return cudaErrorMemoryAllocation;
  std::memset(*p, 0xFF, rounded);
  ++emu_live_allocations;
  return cudaSuccess;
}
template <class T>
cudaError_t cudaMalloc(T** p, std::size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
inline cudaError_t cudaFree(void* p) {
  if (p != nullptr) --emu_live_allocations;
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMallocHost(void** p, std::size_t bytes) { return cudaMalloc(p, bytes); }
inline cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }
inline cudaError_t cudaMemsetAsync(void* p, int v, std::size_t n, cudaStream_t = nullptr) {
  std::memset(p, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, std::size_t n, cudaMemcpyKind,
                                   cudaStream_t = nullptr) {
  std::memcpy(d, s, n);
  return cudaSuccess;
}
inline cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new CUevent_st{};
  return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) {
  *ms = 0.001f;
  return cudaSuccess;
}

namespace emu {
// 256 persistent host threads stand in for one block's threads in kernels with barriers.
class block_pool {
 public:
  static constexpr unsigned kThreads = 256;
  block_pool() {
    for (unsigned t = 0; t < kThreads; ++t)
      workers_.emplace_back([this, t] {
        for (;;) {
          start_.arrive_and_wait();
          if (stop_) return;
          emu_block_barrier = &block_;
          job_(t);
          done_.arrive_and_wait();
        }
      });
  }
  ~block_pool() {
    stop_ = true;
    start_.arrive_and_wait();
  }
  void run(const std::function<void(unsigned)>& job) {
    job_ = job;
    start_.arrive_and_wait();
    done_.arrive_and_wait();
  }

 private:
  std::barrier<> start_{kThreads + 1}, done_{kThreads + 1}, block_{kThreads};
  std::function<void(unsigned)> job_;
  bool stop_ = false;
  std::vector<std::jthread> workers_;
};
inline block_pool& pool() {
  static block_pool p;
  return p;
}

// Runs kernel(args...) for every thread of every block (x and y of the grid).
template <bool Barriers, class Kernel, class... Args>
void launch(dim3 grid, dim3 block, std::size_t, cudaStream_t, Kernel kernel, Args... args) {
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      auto body = [&](unsigned t) {
        threadIdx = {t, 0, 0};
        blockIdx = {bx, by, 0};
        blockDim = block;
        gridDim = grid;
        kernel(args...);
      };
      if constexpr (Barriers) {
        if (block.x != block_pool::kThreads) std::abort();
        pool().run(body);
      } else {
        for (unsigned t = 0; t < block.x; ++t) body(t);
      }
    }
}
}  // namespace emu
