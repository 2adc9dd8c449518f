// floatzip's GPU API (floatzip/gpu.hpp) over host memory: upload copies the bundle as
// floatzip_cuda.cu does (same layout), decompress runs the kernel's logic with the CPU executor.
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "cuda_runtime.h"
#include "floatzip/cpu_executor.hpp"
#include "floatzip/detail/kernel_logic.hpp"
#include "floatzip/gpu.hpp"

namespace floatzip {
namespace {
constexpr std::uint64_t align_up(std::uint64_t n, std::uint64_t a) { return (n + a - 1) / a * a; }
}  // namespace

int emu_decompress_calls = 0;

error decompress(const device_bundle_view& view, std::byte* out, std::uint64_t out_bytes,
                 gpu_stream, const gpu_decode_options& options) {
  if (error e = detail::validate_launch(view, out, out_bytes)) return e;
  if (view.value_count == 0) return {};
  ++emu_decompress_calls;
  cpu_executor_options o;
  o.stage_bytes = options.stage_bytes == 0 ? 49088 : options.stage_bytes;  // the H100 default
  error e = execute_kernel_on_cpu(view, out, out_bytes, o);
  // The kernel reports corrupt groups through the status word only.
  if (e.code == errc::bad_data) return {};
  return e;
}

int device_count() noexcept { return 1; }

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

result<device_bundle> device_bundle::upload(const bundle_view& bundle, gpu_stream) {
  // As floatzip_cuda.cu: the bundle's bytes, a decode table per segment, the status word.
  std::vector<bundle_view> segments;
  (void)bundle.for_each_segment([&](const bundle_view& segment) -> error {
    segments.push_back(segment);
    return {};
  });
  std::vector<std::vector<std::uint32_t>> tables;
  std::vector<int> table_bits;
  std::vector<std::uint64_t> table_offsets;
  std::uint64_t cursor = align_up(bundle.size_bytes(), 256);
  for (const bundle_view& segment : segments) {
    table_bits.push_back(detail::gpu_table_bits(segment.max_code_length()));
    auto table = detail::build_kernel_tables(segment, table_bits.back());
    if (!table) return table.error();
    tables.push_back(std::move(*table));
    table_offsets.push_back(cursor);
    cursor = align_up(cursor + detail::kernel_tables_bytes(table_bits.back()), 256);
  }
  const std::uint64_t status_offset = cursor;
  const std::uint64_t total = status_offset + sizeof(unsigned long long);
  device_bundle owner;
  if (cudaMalloc(&owner.device_memory_, total) != cudaSuccess)
    return error{errc::too_large, "emu upload"};
  owner.device_bytes_ = total;
  auto* base = static_cast<std::byte*>(owner.device_memory_);
  auto* status = reinterpret_cast<unsigned long long*>(base + status_offset);
  std::memcpy(base, bundle.bytes().data(), bundle.size_bytes());
  std::memset(status, 0xFF, sizeof *status);
  for (std::size_t s = 0; s < segments.size(); ++s) {
    auto* device_table = reinterpret_cast<std::uint32_t*>(base + table_offsets[s]);
    std::memcpy(device_table, tables[s].data(), detail::kernel_tables_bytes(table_bits[s]));
    const device_bundle_view view =
        detail::make_device_bundle_view(segments[s], base, device_table, table_bits[s], status);
    if (segments[s].value_count() != 0) {
      if (error e = detail::validate_view(view))
        return error{e.code, "device_bundle::upload: " + e.message};
    }
    owner.segment_views_.push_back(view);
    owner.segment_first_.push_back(segments[s].first_value() - bundle.first_value());
  }
  owner.format_ = bundle.format();
  owner.view_ = owner.segment_views_.front();
  owner.tensor_offsets_.assign(bundle.tensor_count() + std::size_t{1}, 0);
  for (std::uint32_t t = 0; t < bundle.tensor_count(); ++t)
    owner.tensor_offsets_[t + 1] = owner.tensor_offsets_[t] + bundle.tensor_value_count(t);
  return result<device_bundle>(std::move(owner));
}

error device_bundle::check_decode_status(gpu_stream) const {
  if (view_.status == nullptr) return {};
  const unsigned long long record = *view_.status;
  if (record == detail::kNoFault) return {};
  return detail::describe_fault(record);
}

error device_bundle::reset_decode_status(gpu_stream) {
  if (view_.status != nullptr) *view_.status = detail::kNoFault;
  return {};
}
}  // namespace floatzip
