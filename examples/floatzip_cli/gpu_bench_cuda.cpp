// `floatzip bench` on a GPU: decodes the bundles with floatzip::cuda and, in the same timed runs,
// copies the same number of BF16 bytes device to device, so the decode figure comes with the
// baseline it should be read against. Before anything is timed, every bundle's GPU output is
// checked bit for bit against the CPU decoder: a fast wrong decoder is not a result.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "floatzip/bundle_format.hpp"
#include "floatzip/decoder.hpp"
#include "floatzip/gpu.hpp"
#include "gpu_bench.hpp"

namespace floatzip::cli {
namespace {

// Fewer runs make the median meaningless; bench.cpp asks for at least this many too, so that
// the count it prints is the count measured here.
constexpr int kMinTimedRuns = 5;
// Every byte of the output buffer is set to this before each verification decode, so a value the
// kernel never writes reads back as 0xFFFF and disagrees with the CPU decoder (unless the CPU
// decoder also produced that NaN pattern there, which a real checkpoint does not have).
constexpr int kPoisonByte = 0xFF;

error cuda_failure(const char* call, cudaError_t status) {
  return {errc::cuda_error, std::string("floatzip bench: ") + call + ": " +
                                cudaGetErrorName(status) + ": " + cudaGetErrorString(status)};
}

#define FLOATZIP_BENCH_CUDA_CHECK(call)                                          \
  do {                                                                           \
    const cudaError_t bench_status_ = (call);                                    \
    if (bench_status_ != cudaSuccess) return cuda_failure(#call, bench_status_); \
  } while (false)

// Owners for what the measurement allocates, so that every early return frees it. Release
// errors are ignored: there is nothing left to report them to.
struct device_memory_free {
  void operator()(void* p) const noexcept { (void)cudaFree(p); }
};
struct stream_destroy {
  void operator()(cudaStream_t s) const noexcept { (void)cudaStreamDestroy(s); }
};
struct event_destroy {
  void operator()(cudaEvent_t e) const noexcept { (void)cudaEventDestroy(e); }
};
using device_memory = std::unique_ptr<void, device_memory_free>;
using stream_owner = std::unique_ptr<CUstream_st, stream_destroy>;
using event_owner = std::unique_ptr<CUevent_st, event_destroy>;

error with_bundle_context(std::size_t bundle, const error& e) {
  return {e.code, "floatzip bench: bundle " + std::to_string(bundle) + ": " + e.message};
}

std::string hex16(std::uint16_t v) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s = "0x0000";
  for (int i = 0; i < 4; ++i) s[5 - i] = kDigits[(v >> (4 * i)) & 0xF];
  return s;
}

// Median of the runs' milliseconds: one slow run (a clock change, another process) does not move
// it, unlike a mean, and unlike the minimum it is what a steady workload sees.
double median_ms(std::vector<float> ms) {
  std::sort(ms.begin(), ms.end());
  const std::size_t mid = ms.size() / 2;
  return ms.size() % 2 == 1 ? double(ms[mid]) : (double(ms[mid - 1]) + double(ms[mid])) / 2;
}

// The reason there is no device, for the message: the driver's answer when it gave one.
error no_device_error() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  (void)cudaGetLastError();  // clear the failure so later CUDA users in this process start clean
  std::string reason = "no CUDA device";
  if (status != cudaSuccess)
    reason += std::string(" (cudaGetDeviceCount: ") + cudaGetErrorName(status) + ": " +
              cudaGetErrorString(status) + ")";
  return {errc::cuda_error, reason};
}

}  // namespace

result<gpu_decode_measurement> measure_gpu_decode(std::span<const std::vector<std::byte>> bundles,
                                                  int repeat) {
  if (!gpu_available()) return no_device_error();
  const int runs = std::max(repeat, kMinTimedRuns);

  std::vector<bundle_view> views;
  std::uint64_t total_values = 0;
  std::uint64_t largest = 0;
  for (std::size_t i = 0; i < bundles.size(); ++i) {
    auto view = parse_bundle(bundles[i]);
    if (!view) return with_bundle_context(i, view.error());
    total_values += view->value_count();
    largest = std::max(largest, view->value_count());
    views.push_back(*view);
  }
  if (total_values == 0)
    return error{errc::invalid_argument, "floatzip bench: the bundles hold no BF16 values"};
  const std::uint64_t largest_bytes = largest * sizeof(std::uint16_t);
  const std::uint64_t total_bytes = total_values * sizeof(std::uint16_t);

  gpu_decode_measurement measured;
  int device = 0;
  cudaDeviceProp properties{};
  FLOATZIP_BENCH_CUDA_CHECK(cudaGetDevice(&device));
  FLOATZIP_BENCH_CUDA_CHECK(cudaGetDeviceProperties(&properties, device));
  measured.device = properties.name;

  // Declared before everything that uses it, so that it is destroyed last.
  cudaStream_t raw_stream = nullptr;
  FLOATZIP_BENCH_CUDA_CHECK(cudaStreamCreateWithFlags(&raw_stream, cudaStreamNonBlocking));
  const stream_owner stream_holder(raw_stream);
  const cudaStream_t stream = raw_stream;

  std::vector<device_bundle> uploaded;
  uploaded.reserve(views.size());
  for (std::size_t i = 0; i < views.size(); ++i) {
    auto bundle = device_bundle::upload(views[i], stream);
    if (!bundle) return with_bundle_context(i, bundle.error());
    uploaded.push_back(std::move(*bundle));
  }

  // One output buffer reused by every bundle, as an engine decoding block by block would; the
  // copy baseline reads from a second buffer of the same size into it.
  void* raw_output = nullptr;
  FLOATZIP_BENCH_CUDA_CHECK(cudaMalloc(&raw_output, largest_bytes));
  const device_memory output_holder(raw_output);
  void* raw_copy_source = nullptr;
  FLOATZIP_BENCH_CUDA_CHECK(cudaMalloc(&raw_copy_source, largest_bytes));
  const device_memory copy_source_holder(raw_copy_source);
  auto* const output = static_cast<std::uint16_t*>(raw_output);
  FLOATZIP_BENCH_CUDA_CHECK(cudaMemsetAsync(raw_copy_source, 0, largest_bytes, stream));

  // Warm-up and verification: each bundle decoded once into the poisoned buffer and compared
  // with the CPU decoder's output.
  std::vector<std::uint16_t> gpu_values(largest);
  std::vector<std::uint16_t> cpu_values(largest);
  for (std::size_t i = 0; i < uploaded.size(); ++i) {
    const std::uint64_t n = views[i].value_count();
    FLOATZIP_BENCH_CUDA_CHECK(cudaMemsetAsync(output, kPoisonByte, largest_bytes, stream));
    if (error e = decompress(uploaded[i], output, largest, stream))
      return with_bundle_context(i, e);
    FLOATZIP_BENCH_CUDA_CHECK(cudaMemcpyAsync(gpu_values.data(), output, n * sizeof(std::uint16_t),
                                              cudaMemcpyDeviceToHost, stream));
    FLOATZIP_BENCH_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (error e = uploaded[i].check_decode_status(stream)) return with_bundle_context(i, e);
    if (error e = floatzip::decompress(views[i], std::span(cpu_values).first(n)))
      return with_bundle_context(i, e);
    const auto first_difference =
        std::mismatch(cpu_values.begin(), cpu_values.begin() + n, gpu_values.begin());
    if (first_difference.first != cpu_values.begin() + n) {
      const auto at = first_difference.first - cpu_values.begin();
      std::uint64_t mismatches = 0;
      for (std::uint64_t v = 0; v < n; ++v) mismatches += cpu_values[v] != gpu_values[v];
      return with_bundle_context(
          i,
          {errc::bad_data,
           "GPU decode differs from the CPU decoder in " + std::to_string(mismatches) + " of " +
               std::to_string(n) + " values, first at value " + std::to_string(at) + " (GPU " +
               hex16(*first_difference.second) + ", CPU " + hex16(*first_difference.first) + ")"});
    }
  }

  const auto decode_all = [&]() -> error {
    for (std::size_t i = 0; i < uploaded.size(); ++i)
      if (error e = decompress(uploaded[i], output, largest, stream))
        return with_bundle_context(i, e);
    return {};
  };
  // The same bytes per call as the decodes write, bundle by bundle, into the same buffer.
  const auto copy_all = [&]() -> error {
    for (const bundle_view& view : views) {
      if (view.value_count() == 0) continue;
      FLOATZIP_BENCH_CUDA_CHECK(cudaMemcpyAsync(output, raw_copy_source,
                                                view.value_count() * sizeof(std::uint16_t),
                                                cudaMemcpyDeviceToDevice, stream));
    }
    return {};
  };
  if (error e = copy_all()) return e;  // the copy's warm-up; the decodes had theirs above

  cudaEvent_t raw_events[3] = {};
  event_owner event_holders[3];
  for (int k = 0; k < 3; ++k) {
    FLOATZIP_BENCH_CUDA_CHECK(cudaEventCreate(&raw_events[k]));
    event_holders[k].reset(raw_events[k]);
  }
  const cudaEvent_t started = raw_events[0];
  const cudaEvent_t decoded = raw_events[1];
  const cudaEvent_t copied = raw_events[2];

  std::vector<float> decode_ms;
  std::vector<float> copy_ms;
  for (int run = 0; run < runs; ++run) {
    FLOATZIP_BENCH_CUDA_CHECK(cudaEventRecord(started, stream));
    if (error e = decode_all()) return e;
    FLOATZIP_BENCH_CUDA_CHECK(cudaEventRecord(decoded, stream));
    if (error e = copy_all()) return e;
    FLOATZIP_BENCH_CUDA_CHECK(cudaEventRecord(copied, stream));
    FLOATZIP_BENCH_CUDA_CHECK(cudaEventSynchronize(copied));
    float ms = 0;
    FLOATZIP_BENCH_CUDA_CHECK(cudaEventElapsedTime(&ms, started, decoded));
    decode_ms.push_back(ms);
    FLOATZIP_BENCH_CUDA_CHECK(cudaEventElapsedTime(&ms, decoded, copied));
    copy_ms.push_back(ms);
  }
  // The timed decodes must have been as sound as the verified one.
  for (std::size_t i = 0; i < uploaded.size(); ++i)
    if (error e = uploaded[i].check_decode_status(stream)) return with_bundle_context(i, e);

  const double decode_median = median_ms(std::move(decode_ms));
  const double copy_median = median_ms(std::move(copy_ms));
  if (decode_median <= 0 || copy_median <= 0)
    return error{errc::cuda_error,
                 "floatzip bench: the timed GPU work took no measurable time (cudaEvent "
                 "resolution); nothing to report"};
  measured.decode_gb_per_s = double(total_bytes) / (decode_median * 1e-3) / 1e9;
  measured.copy_gb_per_s = double(total_bytes) / (copy_median * 1e-3) / 1e9;
  return measured;
}

#undef FLOATZIP_BENCH_CUDA_CHECK

}  // namespace floatzip::cli
