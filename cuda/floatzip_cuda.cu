// floatzip::cuda: the definitions behind floatzip/gpu.hpp. The kernel lives in decode_kernel.cuh;
// this file instantiates it for the compiled table widths, sizes its shared memory for the
// device, checks every argument before launching, and owns device bundles.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "decode_kernel.cuh"
#include "floatzip/detail/kernel_logic.hpp"
#include "floatzip/gpu.hpp"

namespace floatzip {
namespace {

static_assert(sizeof(gpu_stream) == sizeof(cudaStream_t));

error cuda_failure(const char* call, cudaError_t status) {
  return {errc::cuda_error,
          std::string(call) + ": " + cudaGetErrorName(status) + ": " + cudaGetErrorString(status)};
}

#define FLOATZIP_CUDA_CHECK(call)                                                      \
  do {                                                                                 \
    const cudaError_t floatzip_status_ = (call);                                       \
    if (floatzip_status_ != cudaSuccess) return cuda_failure(#call, floatzip_status_); \
  } while (false)

// ---- per-device preparation, once
// What a launch needs to know about the current device, queried once per device (at upload, or at
// the first launch on a device no bundle was uploaded to): the shared-memory limits, and the
// kernels' opt-in to more than 48 KiB of dynamic shared memory. Doing it once keeps launches free
// of cudaFuncSetAttribute (two host threads launching with different sizes raced on it) and of
// cudaFuncGetAttributes, whose lazy module loading is not allowed while a graph is captured.
struct prepared_device {
  bool ready = false;
  detail::device_shared_limits limits;
};

std::mutex g_devices_mutex;
std::vector<prepared_device> g_devices;

template <int TableBits>
error allow_max_dynamic_shared(int per_block_optin) {
  auto* const kernel = &detail::decode_bundle_kernel<TableBits, kGpuThreadsPerBlock>;
  cudaFuncAttributes attributes{};
  FLOATZIP_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
  const int dynamic = per_block_optin - static_cast<int>(attributes.sharedSizeBytes);
  if (dynamic > 48 * 1024) {
    FLOATZIP_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, dynamic));
  }
  return {};
}

// The limits of `device` (the current device), preparing it on first use.
error prepare_device(int device, detail::device_shared_limits& limits) {
  const std::lock_guard<std::mutex> lock(g_devices_mutex);
  if (device < 0) return {errc::cuda_error, "gpu decompress: negative device ordinal"};
  if (static_cast<std::size_t>(device) >= g_devices.size()) g_devices.resize(device + 1);
  prepared_device& d = g_devices[device];
  if (!d.ready) {
    int per_multiprocessor = 0;
    int per_block_optin = 0;
    FLOATZIP_CUDA_CHECK(cudaDeviceGetAttribute(
        &per_multiprocessor, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device));
    FLOATZIP_CUDA_CHECK(
        cudaDeviceGetAttribute(&per_block_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    if (error e = allow_max_dynamic_shared<kGpuTableBitsSmall>(per_block_optin)) return e;
    if (error e = allow_max_dynamic_shared<kGpuTableBitsLarge>(per_block_optin)) return e;
    d.limits.per_multiprocessor = static_cast<std::uint32_t>(per_multiprocessor);
    d.limits.per_block_optin = static_cast<std::uint32_t>(per_block_optin);
    d.ready = true;
  }
  limits = d.limits;
  return {};
}

template <int TableBits>
error launch_decode(const device_bundle_view& v, std::uint16_t* out, cudaStream_t stream,
                    const gpu_decode_options& options, int device,
                    const detail::device_shared_limits& limits) {
  constexpr unsigned kThreads = kGpuThreadsPerBlock;
  auto* const kernel = &detail::decode_bundle_kernel<TableBits, kThreads>;
  auto shape = detail::launch_shape_for(v, limits, options.stage_bytes);
  if (!shape) {
    return error{shape.error().code,
                 shape.error().message + " (device " + std::to_string(device) + ")"};
  }
  const auto out_shift = static_cast<std::uint32_t>((reinterpret_cast<std::uintptr_t>(out) >> 1) &
                                                    (detail::kSlotsPerStore - 1));
  // An error left by earlier asynchronous work (or an earlier failed call on this thread) would
  // otherwise surface from the cudaGetLastError below as this launch's.
  if (const cudaError_t earlier = cudaGetLastError(); earlier != cudaSuccess) {
    return {errc::cuda_error, std::string("gpu decompress: not launched: an earlier CUDA call or "
                                          "kernel on this thread had failed: ") +
                                  cudaGetErrorName(earlier) + ": " + cudaGetErrorString(earlier)};
  }
  kernel<<<static_cast<unsigned>(v.group_count), kThreads, shape->shared_bytes, stream>>>(
      v, out, out_shift, shape->stage_slots);
  if (const cudaError_t launched = cudaGetLastError(); launched != cudaSuccess) {
    return cuda_failure("gpu decompress: kernel launch", launched);
  }
  return {};
}

constexpr std::uint64_t align_up(std::uint64_t n, std::uint64_t a) { return (n + a - 1) / a * a; }

}  // namespace

error decompress(const device_bundle_view& view, std::uint16_t* out, std::uint64_t out_capacity,
                 gpu_stream stream, const gpu_decode_options& options) {
  if (error e = detail::validate_launch(view, out, out_capacity)) return e;
  if (view.value_count == 0) return {};
  int device = 0;
  FLOATZIP_CUDA_CHECK(cudaGetDevice(&device));
  if (error e = detail::validate_launch_device(view, device)) return e;
  detail::device_shared_limits limits;
  if (error e = prepare_device(device, limits)) return e;
  if (view.table_bits == kGpuTableBitsSmall) {
    return launch_decode<kGpuTableBitsSmall>(view, out, stream, options, device, limits);
  }
  return launch_decode<kGpuTableBitsLarge>(view, out, stream, options, device, limits);
}

int device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver or no device: not an error for the caller
    return 0;
  }
  return count;
}

// ---- device_bundle
// --------------------------------------------------------------------------------

device_bundle::device_bundle(device_bundle&& other) noexcept
    : device_memory_(std::exchange(other.device_memory_, nullptr)),
      device_bytes_(std::exchange(other.device_bytes_, 0)),
      view_(std::exchange(other.view_, device_bundle_view{})),
      tensor_offsets_(std::exchange(other.tensor_offsets_, {0})) {}

device_bundle& device_bundle::operator=(device_bundle&& other) noexcept {
  if (this != &other) {
    device_bundle old(std::move(*this));
    device_memory_ = std::exchange(other.device_memory_, nullptr);
    device_bytes_ = std::exchange(other.device_bytes_, 0);
    view_ = std::exchange(other.view_, device_bundle_view{});
    tensor_offsets_ = std::exchange(other.tensor_offsets_, {0});
  }
  return *this;
}

device_bundle::~device_bundle() {
  if (device_memory_ != nullptr) (void)cudaFree(device_memory_);
}

result<device_bundle> device_bundle::upload(const bundle_view& bundle, gpu_stream stream) {
  const int table_bits = detail::gpu_table_bits(bundle.max_code_length());
  auto table = detail::build_kernel_tables(bundle, table_bits);
  if (!table) return table.error();

  // One allocation: the serialized bundle (its sections keep their 16-byte alignment), the
  // decode table, the status word.
  const std::uint64_t table_offset = align_up(bundle.size_bytes(), 256);
  const std::uint64_t table_bytes = detail::kernel_tables_bytes(table_bits);
  const std::uint64_t status_offset = align_up(table_offset + table_bytes, 256);
  const std::uint64_t total = status_offset + sizeof(unsigned long long);

  int device = 0;
  FLOATZIP_CUDA_CHECK(cudaGetDevice(&device));
  detail::device_shared_limits limits;
  if (error e = prepare_device(device, limits)) {
    return error{e.code, "device_bundle::upload: " + e.message};
  }

  device_bundle owner;
  const cudaError_t allocated = cudaMalloc(&owner.device_memory_, total);
  if (allocated != cudaSuccess) {
    owner.device_memory_ = nullptr;
    (void)cudaGetLastError();
    return error{allocated == cudaErrorMemoryAllocation ? errc::too_large : errc::cuda_error,
                 "device_bundle::upload: cudaMalloc of " + std::to_string(total) +
                     " bytes: " + cudaGetErrorString(allocated)};
  }
  owner.device_bytes_ = total;
  auto* base = static_cast<std::byte*>(owner.device_memory_);
  auto* device_table = reinterpret_cast<std::uint32_t*>(base + table_offset);
  auto* status = reinterpret_cast<unsigned long long*>(base + status_offset);
  const auto cuda_stream = static_cast<cudaStream_t>(stream);

  FLOATZIP_CUDA_CHECK(cudaMemcpyAsync(base, bundle.bytes().data(), bundle.size_bytes(),
                                      cudaMemcpyHostToDevice, cuda_stream));
  // The table is pageable host memory: the copy has taken it when the call returns, so the
  // vector may go away before the stream gets there.
  FLOATZIP_CUDA_CHECK(cudaMemcpyAsync(device_table, table->data(), table_bytes,
                                      cudaMemcpyHostToDevice, cuda_stream));
  FLOATZIP_CUDA_CHECK(cudaMemsetAsync(status, 0xFF, sizeof *status, cuda_stream));

  owner.view_ = detail::make_device_bundle_view(bundle, base, device_table, table_bits, status);
  owner.view_.device = device;
  if (bundle.value_count() != 0) {
    if (error e = detail::validate_view(owner.view_))
      return error{e.code, "device_bundle::upload: " + e.message};
  }
  owner.tensor_offsets_.assign(bundle.tensor_count() + std::size_t{1}, 0);
  for (std::uint32_t t = 0; t < bundle.tensor_count(); ++t) {
    owner.tensor_offsets_[t + 1] = owner.tensor_offsets_[t] + bundle.tensor_value_count(t);
  }
  return result<device_bundle>(std::move(owner));
}

error device_bundle::check_decode_status(gpu_stream stream) const {
  if (view_.status == nullptr) return {};
  unsigned long long record = detail::kNoFault;
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  FLOATZIP_CUDA_CHECK(
      cudaMemcpyAsync(&record, view_.status, sizeof record, cudaMemcpyDeviceToHost, cuda_stream));
  FLOATZIP_CUDA_CHECK(cudaStreamSynchronize(cuda_stream));
  if (record == detail::kNoFault) return {};
  return detail::describe_fault(record);
}

error device_bundle::reset_decode_status(gpu_stream stream) {
  if (view_.status == nullptr) return {};
  FLOATZIP_CUDA_CHECK(cudaMemsetAsync(view_.status, 0xFF, sizeof(unsigned long long),
                                      static_cast<cudaStream_t>(stream)));
  return {};
}

}  // namespace floatzip
