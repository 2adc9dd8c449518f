// floatzip::cuda: the definitions behind floatzip/gpu.hpp. The kernel lives in decode_kernel.cuh;
// this file instantiates it for every value format and both compiled table widths, sizes its
// shared memory for the device, checks every argument before launching, and owns device bundles.
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

template <value_format F, int TableBits>
error allow_max_dynamic_shared(int per_block_optin) {
  auto* const kernel = &detail::decode_bundle_kernel<F, TableBits, kGpuThreadsPerBlock>;
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
    // Every format's kernels: a format's first launch must not need the attribute call either.
    for (unsigned f = 0; f < kValueFormatCount; ++f) {
      const error e = visit_format(static_cast<value_format>(f), [&]<value_format F>() -> error {
        if (error small = allow_max_dynamic_shared<F, kGpuTableBitsSmall>(per_block_optin)) {
          return small;
        }
        return allow_max_dynamic_shared<F, kGpuTableBitsLarge>(per_block_optin);
      });
      if (e) return e;
    }
    d.limits.per_multiprocessor = static_cast<std::uint32_t>(per_multiprocessor);
    d.limits.per_block_optin = static_cast<std::uint32_t>(per_block_optin);
    d.ready = true;
  }
  limits = d.limits;
  return {};
}

template <value_format F, int TableBits>
error launch_decode(const device_bundle_view& v, typename format_traits<F>::value_type* out,
                    cudaStream_t stream, const gpu_decode_options& options, int device,
                    const detail::device_shared_limits& limits) {
  constexpr unsigned kThreads = kGpuThreadsPerBlock;
  auto* const kernel = &detail::decode_bundle_kernel<F, TableBits, kThreads>;
  auto shape = detail::launch_shape_for(v, limits, options.stage_bytes);
  if (!shape) {
    return error{shape.error().code,
                 shape.error().message + " (device " + std::to_string(device) + ")"};
  }
  const auto out_shift = static_cast<std::uint32_t>(
      (reinterpret_cast<std::uintptr_t>(out) / value_bytes(F)) & (detail::slots_per_store(F) - 1));
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

error decompress(const device_bundle_view& view, std::byte* out, std::uint64_t out_bytes,
                 gpu_stream stream, const gpu_decode_options& options) {
  if (error e = detail::validate_launch(view, out, out_bytes)) return e;
  if (view.value_count == 0) return {};
  int device = 0;
  FLOATZIP_CUDA_CHECK(cudaGetDevice(&device));
  if (error e = detail::validate_launch_device(view, device)) return e;
  detail::device_shared_limits limits;
  if (error e = prepare_device(device, limits)) return e;
  return visit_format(view.format, [&]<value_format F>() -> error {
    auto* const values = reinterpret_cast<typename format_traits<F>::value_type*>(out);
    if (view.table_bits == kGpuTableBitsSmall) {
      return launch_decode<F, kGpuTableBitsSmall>(view, values, stream, options, device, limits);
    }
    return launch_decode<F, kGpuTableBitsLarge>(view, values, stream, options, device, limits);
  });
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
      format_(std::exchange(other.format_, value_format::bf16)),
      view_(std::exchange(other.view_, device_bundle_view{})),
      segment_views_(std::exchange(other.segment_views_, {})),
      segment_first_(std::exchange(other.segment_first_, {})),
      tensor_offsets_(std::exchange(other.tensor_offsets_, {0})) {}

device_bundle& device_bundle::operator=(device_bundle&& other) noexcept {
  if (this != &other) {
    device_bundle old(std::move(*this));
    device_memory_ = std::exchange(other.device_memory_, nullptr);
    device_bytes_ = std::exchange(other.device_bytes_, 0);
    format_ = std::exchange(other.format_, value_format::bf16);
    view_ = std::exchange(other.view_, device_bundle_view{});
    segment_views_ = std::exchange(other.segment_views_, {});
    segment_first_ = std::exchange(other.segment_first_, {});
    tensor_offsets_ = std::exchange(other.tensor_offsets_, {0});
  }
  return *this;
}

device_bundle::~device_bundle() {
  if (device_memory_ != nullptr) (void)cudaFree(device_memory_);
}

namespace {

constexpr std::uint64_t kStagingAlignment = 256;

// Where stage_bundle puts each part: the serialized bundle at 0 (its sections keep their 16-byte
// alignment), then one decode-table block per segment.
struct staging_plan {
  std::vector<bundle_view> segments;
  std::vector<int> table_bits;
  std::vector<std::uint64_t> table_offsets;
  std::uint64_t total = 0;
};

staging_plan plan_staging(const bundle_view& bundle) {
  staging_plan plan;
  (void)bundle.for_each_segment([&](const bundle_view& segment) -> error {
    plan.segments.push_back(segment);
    return {};
  });
  std::uint64_t cursor = align_up(bundle.size_bytes(), kStagingAlignment);
  for (const bundle_view& segment : plan.segments) {
    plan.table_bits.push_back(detail::gpu_table_bits(segment.max_code_length()));
    plan.table_offsets.push_back(cursor);
    cursor =
        align_up(cursor + detail::kernel_tables_bytes(plan.table_bits.back()), kStagingAlignment);
  }
  plan.total = cursor;
  return plan;
}

}  // namespace

std::uint64_t staging_bytes(const bundle_view& bundle) { return plan_staging(bundle).total; }

result<staged_bundle> stage_bundle(const bundle_view& bundle, void* device_memory,
                                   std::uint64_t capacity, unsigned long long* status,
                                   gpu_stream stream) {
  const staging_plan plan = plan_staging(bundle);
  if (capacity < plan.total) {
    return error{errc::insufficient_space,
                 "stage_bundle: the bundle needs " + std::to_string(plan.total) +
                     " bytes of device memory, got " + std::to_string(capacity)};
  }
  if (device_memory == nullptr ||
      reinterpret_cast<std::uintptr_t>(device_memory) % kStagingAlignment != 0) {
    return error{errc::invalid_argument,
                 "stage_bundle: device memory must be non-null and 256-byte aligned"};
  }
  // Every table is built and checked before anything is copied.
  std::vector<std::vector<std::uint32_t>> tables;
  for (std::size_t s = 0; s < plan.segments.size(); ++s) {
    auto table = detail::build_kernel_tables(plan.segments[s], plan.table_bits[s]);
    if (!table) return table.error();
    tables.push_back(std::move(*table));
  }
  int device = 0;
  FLOATZIP_CUDA_CHECK(cudaGetDevice(&device));
  detail::device_shared_limits limits;
  if (error e = prepare_device(device, limits)) {
    return error{e.code, "stage_bundle: " + e.message};
  }

  auto* base = static_cast<std::byte*>(device_memory);
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  // From pageable memory (the tables always, the bundle usually) each copy has taken its source
  // when it returns, so the vectors may go away before the stream gets there.
  FLOATZIP_CUDA_CHECK(cudaMemcpyAsync(base, bundle.bytes().data(), bundle.size_bytes(),
                                      cudaMemcpyHostToDevice, cuda_stream));
  staged_bundle staged;
  staged.format = bundle.format();
  staged.value_count = bundle.value_count();
  for (std::size_t s = 0; s < plan.segments.size(); ++s) {
    auto* device_tables = reinterpret_cast<std::uint32_t*>(base + plan.table_offsets[s]);
    FLOATZIP_CUDA_CHECK(cudaMemcpyAsync(device_tables, tables[s].data(),
                                        detail::kernel_tables_bytes(plan.table_bits[s]),
                                        cudaMemcpyHostToDevice, cuda_stream));
    device_bundle_view view = detail::make_device_bundle_view(plan.segments[s], base, device_tables,
                                                              plan.table_bits[s], status);
    view.device = device;
    if (plan.segments[s].value_count() != 0) {
      if (error e = detail::validate_view(view)) return error{e.code, "stage_bundle: " + e.message};
    }
    staged.segment_views.push_back(view);
    staged.segment_first_values.push_back(plan.segments[s].first_value() - bundle.first_value());
  }
  return result<staged_bundle>(std::move(staged));
}

result<device_bundle> device_bundle::upload(const bundle_view& bundle, gpu_stream stream) {
  // One allocation: what stage_bundle places, then the status word.
  const std::uint64_t status_offset = staging_bytes(bundle);
  const std::uint64_t total = status_offset + sizeof(unsigned long long);
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
  auto* status = reinterpret_cast<unsigned long long*>(
      static_cast<std::byte*>(owner.device_memory_) + status_offset);
  result<staged_bundle> staged =
      stage_bundle(bundle, owner.device_memory_, status_offset, status, stream);
  if (!staged) {
    error e = staged.error();
    return error{e.code, "device_bundle::upload: " + e.message};
  }
  FLOATZIP_CUDA_CHECK(
      cudaMemsetAsync(status, 0xFF, sizeof *status, static_cast<cudaStream_t>(stream)));
  owner.format_ = staged->format;
  owner.segment_views_ = std::move(staged->segment_views);
  owner.segment_first_ = std::move(staged->segment_first_values);
  if (!owner.segment_views_.empty()) owner.view_ = owner.segment_views_.front();

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
