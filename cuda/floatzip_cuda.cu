// floatzip::cuda: the definitions behind floatzip/gpu.hpp. The kernel lives in decode_kernel.cuh;
// this file instantiates it for the compiled table widths, sizes its shared memory for the
// device, checks every argument before launching, and owns device bundles.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

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

// The default stage is this fraction of a multiprocessor's shared memory: enough blocks to hide
// the latency of the dependent table look-ups. stage_slots_for then splits a group that does not
// fit into equal tiles, so the real block is often smaller (on an H100, a Llama block's ~48,200
// values per group become two tiles of ~24 KiB, 33.5 KiB per block, and registers limit the
// kernel to 6 blocks per multiprocessor). A starting point until floatzip_bench_gpu's stage
// sweep has been run (bench/RESULTS.md).
constexpr int kTargetBlocksPerMultiprocessor = 4;
// Shared memory the runtime reserves per block (cudaDevAttrReservedSharedMemoryPerBlock is 1 KiB
// on sm_80..sm_90).
constexpr int kReservedSharedPerBlock = 1024;
constexpr std::uint32_t kMinDefaultStageBytes = 4096;

template <int TableBits>
error launch_decode(const device_bundle_view& v, std::uint16_t* out, cudaStream_t stream,
                    const gpu_decode_options& options) {
  constexpr unsigned kThreads = kGpuThreadsPerBlock;
  constexpr std::uint32_t kFixedShared = detail::kStageOffset<TableBits, kThreads>;
  auto* const kernel = &detail::decode_bundle_kernel<TableBits, kThreads>;

  int device = 0;
  int max_optin_shared = 0;
  int shared_per_multiprocessor = 0;
  FLOATZIP_CUDA_CHECK(cudaGetDevice(&device));
  FLOATZIP_CUDA_CHECK(
      cudaDeviceGetAttribute(&max_optin_shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  FLOATZIP_CUDA_CHECK(cudaDeviceGetAttribute(&shared_per_multiprocessor,
                                             cudaDevAttrMaxSharedMemoryPerMultiprocessor, device));
  if (max_optin_shared < static_cast<int>(kFixedShared + detail::kSlotsPerStore)) {
    return {errc::invalid_argument,
            "gpu decompress: the " + std::to_string(TableBits) + "-bit decode table needs " +
                std::to_string(kFixedShared) + " bytes of shared memory per block, device " +
                std::to_string(device) + " allows " + std::to_string(max_optin_shared)};
  }
  std::uint64_t stage_bytes = options.stage_bytes;
  if (stage_bytes == 0) {
    const int share = shared_per_multiprocessor / kTargetBlocksPerMultiprocessor -
                      kReservedSharedPerBlock - static_cast<int>(kFixedShared);
    stage_bytes = std::max<std::int64_t>(share, kMinDefaultStageBytes);
  }
  stage_bytes = std::min<std::uint64_t>(stage_bytes, max_optin_shared - kFixedShared);
  const std::uint32_t stage_slots = detail::stage_slots_for(v, stage_bytes);
  const std::uint32_t shared_bytes = kFixedShared + stage_slots;

  // Above 48 KiB a kernel must opt in. The call only records a per-function limit (no stream
  // work, no synchronisation), so it is allowed while a graph is being captured.
  if (shared_bytes > 48 * 1024) {
    FLOATZIP_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(shared_bytes)));
  }
  const auto out_shift = static_cast<std::uint32_t>((reinterpret_cast<std::uintptr_t>(out) >> 1) &
                                                    (detail::kSlotsPerStore - 1));
  kernel<<<static_cast<unsigned>(v.group_count), kThreads, shared_bytes, stream>>>(
      v, out, out_shift, stage_slots);
  FLOATZIP_CUDA_CHECK(cudaGetLastError());
  return {};
}

constexpr std::uint64_t align_up(std::uint64_t n, std::uint64_t a) { return (n + a - 1) / a * a; }

}  // namespace

error decompress(const device_bundle_view& view, std::uint16_t* out, std::uint64_t out_capacity,
                 gpu_stream stream, const gpu_decode_options& options) {
  if (error e = detail::validate_launch(view, out, out_capacity)) return e;
  if (view.value_count == 0) return {};
  if (view.table_bits == kGpuTableBitsSmall) {
    return launch_decode<kGpuTableBitsSmall>(view, out, stream, options);
  }
  return launch_decode<kGpuTableBitsLarge>(view, out, stream, options);
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
      segment_views_(std::exchange(other.segment_views_, {})),
      segment_first_(std::exchange(other.segment_first_, {})),
      tensor_offsets_(std::exchange(other.tensor_offsets_, {0})) {}

device_bundle& device_bundle::operator=(device_bundle&& other) noexcept {
  if (this != &other) {
    device_bundle old(std::move(*this));
    device_memory_ = std::exchange(other.device_memory_, nullptr);
    device_bytes_ = std::exchange(other.device_bytes_, 0);
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

result<device_bundle> device_bundle::upload(const bundle_view& bundle, gpu_stream stream) {
  // A decode table per segment (most bundles have one segment), built on the host.
  std::vector<bundle_view> segments;
  (void)bundle.for_each_segment([&](const bundle_view& segment) -> error {
    segments.push_back(segment);
    return {};
  });
  std::vector<std::vector<decode_entry>> tables;
  std::vector<int> table_bits;
  for (const bundle_view& segment : segments) {
    table_bits.push_back(detail::gpu_table_bits(segment.max_code_length()));
    auto table = detail::build_kernel_decode_table(segment, table_bits.back());
    if (!table) return table.error();
    tables.push_back(std::move(*table));
  }

  // One allocation: the serialized bundle (its sections keep their 16-byte alignment), the
  // decode tables, the status word.
  std::vector<std::uint64_t> table_offsets;
  std::uint64_t cursor = align_up(bundle.size_bytes(), 256);
  for (std::size_t s = 0; s < segments.size(); ++s) {
    table_offsets.push_back(cursor);
    cursor = align_up(cursor + detail::decode_table_bytes(table_bits[s]), 256);
  }
  const std::uint64_t status_offset = cursor;
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
  auto* base = static_cast<std::byte*>(owner.device_memory_);
  auto* status = reinterpret_cast<unsigned long long*>(base + status_offset);
  const auto cuda_stream = static_cast<cudaStream_t>(stream);

  FLOATZIP_CUDA_CHECK(cudaMemcpyAsync(base, bundle.bytes().data(), bundle.size_bytes(),
                                      cudaMemcpyHostToDevice, cuda_stream));
  for (std::size_t s = 0; s < segments.size(); ++s) {
    auto* device_table = reinterpret_cast<decode_entry*>(base + table_offsets[s]);
    // The tables are pageable host memory: the copy has taken them when the call returns, so
    // the vectors may go away before the stream gets there.
    FLOATZIP_CUDA_CHECK(cudaMemcpyAsync(device_table, tables[s].data(),
                                        detail::decode_table_bytes(table_bits[s]),
                                        cudaMemcpyHostToDevice, cuda_stream));
    const device_bundle_view view =
        detail::make_device_bundle_view(segments[s], base, device_table, table_bits[s], status);
    if (segments[s].value_count() != 0) {
      if (error e = detail::validate_view(view))
        return error{e.code, "device_bundle::upload: " + e.message};
    }
    owner.segment_views_.push_back(view);
    owner.segment_first_.push_back(segments[s].first_value() - bundle.first_value());
  }
  FLOATZIP_CUDA_CHECK(cudaMemsetAsync(status, 0xFF, sizeof *status, cuda_stream));
  owner.view_ = owner.segment_views_.front();

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
