// Tests for the GPU decoder (floatzip/gpu.hpp, cuda/): the real kernel against the CPU decoder on
// the kernel tests' inputs plus fresh random data, into outputs poisoned with the complement of
// the expected values and guarded by canaries; every store alignment; staging in tiles; corrupt
// device data reported; a bundle of more than 2 GiB of output; back-to-back bundles into one
// buffer; CUDA graph capture and replay; asynchronous upload from pinned memory; every value
// format (value_format.hpp) through the typed and the byte API, uploaded and staged.
// Every test skips when no CUDA device is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "floatzip/bundle_format.hpp"
#include "floatzip/cpu_executor.hpp"
#include "floatzip/decoder.hpp"
#include "floatzip/encoder.hpp"
#include "floatzip/gpu.hpp"
#include "floatzip/value_format.hpp"
#include "format_typed_tests.hpp"
#include "kernel_test_inputs.hpp"

namespace floatzip {
namespace {

using test::compress;
using test::concatenated;
using test::geometry;
using test::heavy_tailed;
using test::tensor_list;

#define ASSERT_CUDA(call)                                                            \
  do {                                                                               \
    const cudaError_t status_ = (call);                                              \
    ASSERT_EQ(status_, cudaSuccess) << #call << ": " << cudaGetErrorString(status_); \
  } while (false)

#define SKIP_WITHOUT_GPU()                                                                 \
  do {                                                                                     \
    if (!gpu_available()) GTEST_SKIP() << "no CUDA device: the GPU decoder is not tested"; \
  } while (false)

// Device memory for the tests; freed on scope exit.
template <class T>
class device_array {
 public:
  explicit device_array(std::size_t count) : count_(count) {
    if (cudaMalloc(&data_, count * sizeof(T)) != cudaSuccess) data_ = nullptr;
  }
  device_array(const device_array&) = delete;
  device_array& operator=(const device_array&) = delete;
  ~device_array() {
    if (data_ != nullptr) (void)cudaFree(data_);
  }
  [[nodiscard]] T* get() const { return data_; }
  [[nodiscard]] std::size_t size() const { return count_; }

 private:
  T* data_ = nullptr;
  std::size_t count_;
};

constexpr std::size_t kGuardValues = 64;
template <class T>
constexpr T kCanary = static_cast<T>(0x5EC0C0DEu);  // 0xC0DE for 16-bit values

// The host view of a bundle plus its device copy.
struct uploaded {
  std::vector<std::byte> bytes;
  bundle_view host;
  device_bundle device;
};

void upload(std::vector<std::byte> bytes, uploaded& u, cudaStream_t stream = nullptr) {
  u.bytes = std::move(bytes);
  auto view = parse_bundle(u.bytes);
  ASSERT_TRUE(view.has_value()) << view.error().message;
  u.host = *view;
  auto device = device_bundle::upload(u.host, stream);
  ASSERT_TRUE(device.has_value()) << device.error().message;
  u.device = std::move(*device);
}

// Decodes on the GPU into a buffer whose first value lies `shift` values past a 16-byte boundary,
// poisoned with ~expected, and checks every value, the canaries and the status word. T: the
// bundle's value type; through_bytes: through the std::byte API instead of the typed one.
template <class T>
void expect_gpu_decodes(const std::vector<std::byte>& bytes, const std::vector<T>& expected,
                        unsigned shift, const gpu_decode_options& options = {},
                        bool through_bytes = false) {
  uploaded u;
  upload(bytes, u);  // a copy: the caller's bytes stay
  if (testing::Test::HasFatalFailure()) return;
  ASSERT_EQ(u.device.value_count(), expected.size());
  ASSERT_EQ(value_bytes(u.device.format()), sizeof(T));

  const std::size_t n = expected.size();
  const std::size_t unit = 16 / sizeof(T);
  std::vector<T> host(n + 2 * kGuardValues + unit, kCanary<T>);
  const std::size_t begin = kGuardValues + shift;  // cudaMalloc memory is 256-byte aligned
  for (std::size_t i = 0; i < n; ++i) host[begin + i] = static_cast<T>(~expected[i]);
  device_array<T> buffer(host.size());
  ASSERT_NE(buffer.get(), nullptr);
  ASSERT_CUDA(
      cudaMemcpy(buffer.get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));

  const error e = through_bytes
                      ? decompress(u.device, reinterpret_cast<std::byte*>(buffer.get() + begin),
                                   n * sizeof(T), nullptr, options)
                      : decompress(u.device, buffer.get() + begin, n, nullptr, options);
  ASSERT_TRUE(e.ok()) << e.message;
  ASSERT_CUDA(cudaDeviceSynchronize());
  const error status = u.device.check_decode_status();
  ASSERT_TRUE(status.ok()) << status.message;
  ASSERT_CUDA(
      cudaMemcpy(host.data(), buffer.get(), host.size() * sizeof(T), cudaMemcpyDeviceToHost));

  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const T got = host[begin + i];
    if (got != expected[i] && ++mismatches <= 5) {
      ADD_FAILURE() << to_string(u.device.format()) << " value " << i << " of " << n << ": got "
                    << std::hex << std::uint32_t{got} << " expected " << std::uint32_t{expected[i]}
                    << (got == static_cast<T>(~expected[i]) ? " (never written)" : "");
    }
  }
  EXPECT_EQ(mismatches, 0u) << "shift " << shift;
  for (std::size_t i = 0; i < begin; ++i) ASSERT_EQ(host[i], kCanary<T>) << "before output " << i;
  for (std::size_t i = begin + n; i < host.size(); ++i) {
    ASSERT_EQ(host[i], kCanary<T>) << "after output " << i;
  }
}

// The kernel against the CPU decoder and the original values.
void expect_gpu_matches_cpu(const tensor_list& tensors, const encode_options& options,
                            unsigned shift) {
  const auto bytes = compress(tensors, options);
  const std::vector<std::uint16_t> expected = concatenated(tensors);
  std::vector<std::uint16_t> cpu(expected.size());
  ASSERT_TRUE(decompress(parse_bundle(bytes).value(), cpu).ok());
  ASSERT_EQ(cpu, expected);
  expect_gpu_decodes(bytes, expected, shift);
}

TEST(Gpu, DeviceIsReported) {
  SKIP_WITHOUT_GPU();
  int device = -1;
  ASSERT_CUDA(cudaGetDevice(&device));
  cudaDeviceProp prop{};
  ASSERT_CUDA(cudaGetDeviceProperties(&prop, device));
  std::printf("device %d: %s, sm_%d%d, %d SMs, %zu KiB shared per SM\n", device, prop.name,
              prop.major, prop.minor, prop.multiProcessorCount,
              prop.sharedMemPerMultiprocessor / 1024);
  EXPECT_GT(device_count(), 0);
}

TEST(Gpu, AllBf16PatternsAtEveryAlignment) {
  SKIP_WITHOUT_GPU();
  for (const bool shuffled : {false, true}) {
    const auto values = test::all_patterns(shuffled);
    for (const int max_length : {8, 12, 15}) {
      const auto bytes = compress({values}, geometry(max_length, 64, 256));
      for (unsigned shift = 0; shift < 8; ++shift) {
        SCOPED_TRACE("L " + std::to_string(max_length) + " shift " + std::to_string(shift));
        expect_gpu_decodes(bytes, values, shift);
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST(Gpu, EmptyBundleLaunchesNothing) {
  SKIP_WITHOUT_GPU();
  for (const tensor_list& tensors : {tensor_list{}, tensor_list{{}, {}}}) {
    uploaded u;
    upload(compress(tensors, {}), u);
    if (HasFatalFailure()) return;
    EXPECT_EQ(u.device.tensor_count(), tensors.size());
    EXPECT_TRUE(decompress(u.device, nullptr, 0, nullptr).ok());
  }
}

TEST(Gpu, OneValue) {
  SKIP_WITHOUT_GPU();
  for (const std::uint16_t v : {std::uint16_t{0}, std::uint16_t{0x8000}, std::uint16_t{0x7FC1}}) {
    for (unsigned shift = 0; shift < 8; ++shift) {
      expect_gpu_decodes(compress({{v}}, {}), std::vector<std::uint16_t>{v}, shift);
    }
  }
}

TEST(Gpu, OddSizesAndGeometries) {
  SKIP_WITHOUT_GPU();
  std::uint64_t seed = 11;
  for (const std::size_t n : test::odd_sizes()) {
    const auto values = heavy_tailed(n, ++seed);
    for (const auto& g : test::odd_geometries()) {
      SCOPED_TRACE("n " + std::to_string(n) + " chunk_bytes " + std::to_string(g.chunk_bytes) +
                   " chunks_per_group " + std::to_string(g.chunks_per_group));
      expect_gpu_matches_cpu({values}, g, static_cast<unsigned>(n % 8));
      if (HasFatalFailure()) return;
    }
  }
}

// Fresh data every run; the seed is printed so that a failure can be reproduced.
TEST(Gpu, FreshRandomData) {
  SKIP_WITHOUT_GPU();
  const std::uint64_t seed = std::random_device{}();
  std::printf("FreshRandomData seed %llu\n", static_cast<unsigned long long>(seed));
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 12; ++trial) {
    tensor_list tensors;
    const int count = 1 + static_cast<int>(rng() % 40);
    for (int t = 0; t < count; ++t) {
      const std::size_t n = rng() % 3 == 0 ? rng() % 300 : rng() % 200'000;
      if (trial % 4 == 3) {
        std::vector<std::uint16_t> bits(n);
        for (auto& b : bits) b = static_cast<std::uint16_t>(rng());
        tensors.push_back(std::move(bits));
      } else {
        tensors.push_back(
            heavy_tailed(n, rng(), 0.005f + 0.04f * static_cast<float>(rng() % 100) / 100));
      }
    }
    const encode_options options =
        trial % 2 == 0
            ? encode_options{}
            : geometry(8 + static_cast<int>(rng() % 8), 4 + static_cast<std::uint32_t>(rng() % 200),
                       1 + static_cast<std::uint32_t>(rng() % 1000));
    expect_gpu_matches_cpu(tensors, options, static_cast<unsigned>(rng() % 8));
    if (HasFatalFailure()) return;
  }
}

TEST(Gpu, StagingInTiles) {
  SKIP_WITHOUT_GPU();
  const auto values = heavy_tailed(1'000'003, 5);
  const auto bytes = compress({values}, {});
  for (const std::uint32_t stage : {8u, 40u, 1000u, 4096u, 20000u, 65536u, 200000u}) {
    SCOPED_TRACE("stage_bytes " + std::to_string(stage));
    gpu_decode_options options;
    options.stage_bytes = stage;
    expect_gpu_decodes(bytes, values, stage % 8, options);
    if (HasFatalFailure()) return;
  }
}

TEST(Gpu, ManyOddSizedTensors) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(9);
  tensor_list tensors;
  for (int i = 0; i < 300; ++i) {
    const std::size_t n = rng() % 4 == 0 ? rng() % 8 : rng() % 5000;
    tensors.push_back(heavy_tailed(n, rng(), 0.005f + 0.001f * static_cast<float>(i % 40)));
  }
  uploaded u;
  upload(compress(tensors, {}), u);
  if (HasFatalFailure()) return;
  ASSERT_EQ(u.device.tensor_count(), tensors.size());
  for (std::uint32_t t = 0; t < tensors.size(); ++t) {
    ASSERT_EQ(u.device.tensor_offset(t), u.host.tensor_offset(t));
    ASSERT_EQ(u.device.tensor_value_count(t), tensors[t].size());
  }
  for (unsigned shift = 0; shift < 8; ++shift) expect_gpu_matches_cpu(tensors, {}, shift);
}

TEST(Gpu, OneSymbolAndLongestCodes) {
  SKIP_WITHOUT_GPU();
  expect_gpu_matches_cpu({test::one_exponent(400'000, 2)}, {}, 3);
  expect_gpu_matches_cpu({test::fibonacci_exponents()}, geometry(15, 64, 256), 5);
}

TEST(Gpu, RealModels) {
  SKIP_WITHOUT_GPU();
  std::string skip_reason;
  const auto bundles = test::model_bundles(skip_reason);
  if (bundles.empty()) GTEST_SKIP() << skip_reason;
  for (const auto& bundle : bundles) {
    SCOPED_TRACE(bundle.name);
    expect_gpu_matches_cpu(bundle.tensors, {}, static_cast<unsigned>(bundle.name.size() % 8));
    if (HasFatalFailure()) return;
  }
}

TEST(Gpu, LaunchChecksReturnErrorsWithoutLaunching) {
  SKIP_WITHOUT_GPU();
  const auto values = heavy_tailed(10'000, 3);
  uploaded u;
  upload(compress({values}, {}), u);
  if (HasFatalFailure()) return;
  device_array<std::uint16_t> out(values.size() + 8);
  EXPECT_EQ(decompress(u.device, out.get(), values.size() - 1, nullptr).code,
            errc::insufficient_space);
  EXPECT_EQ(decompress(u.device, nullptr, values.size(), nullptr).code, errc::invalid_argument);
  auto* odd = reinterpret_cast<std::uint16_t*>(reinterpret_cast<char*>(out.get()) + 1);
  EXPECT_EQ(decompress(u.device, odd, values.size(), nullptr).code, errc::invalid_argument);
  device_bundle_view bad = u.device.view();
  bad.table_bits = 13;
  EXPECT_EQ(decompress(bad, out.get(), values.size(), nullptr).code, errc::invalid_argument);
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_TRUE(u.device.check_decode_status().ok());
}

// An error left pending by earlier work on this thread is reported as earlier, not as this
// launch's, and nothing is launched; the next call launches normally.
TEST(Gpu, EarlierErrorIsNotReportedAsThisLaunchs) {
  SKIP_WITHOUT_GPU();
  const auto values = heavy_tailed(10'000, 4);
  uploaded u;
  upload(compress({values}, {}), u);
  if (HasFatalFailure()) return;
  device_array<std::uint16_t> out(values.size());
  void* huge = nullptr;
  ASSERT_NE(cudaMalloc(&huge, std::size_t{1} << 62), cudaSuccess);  // leaves its error pending
  const error e = decompress(u.device, out.get(), out.size(), nullptr);
  EXPECT_EQ(e.code, errc::cuda_error);
  EXPECT_NE(e.message.find("earlier"), std::string::npos) << e.message;
  const error again = decompress(u.device, out.get(), out.size(), nullptr);
  ASSERT_TRUE(again.ok()) << again.message;
  std::vector<std::uint16_t> host(values.size());
  ASSERT_CUDA(cudaMemcpy(host.data(), out.get(), host.size() * 2, cudaMemcpyDeviceToHost));
  EXPECT_EQ(host, values);
}

TEST(Gpu, LaunchOnAnotherDeviceIsRefused) {
  SKIP_WITHOUT_GPU();
  const auto values = heavy_tailed(10'000, 5);
  uploaded u;
  upload(compress({values}, {}), u);
  if (HasFatalFailure()) return;
  int device = -1;
  ASSERT_CUDA(cudaGetDevice(&device));
  EXPECT_EQ(u.device.view().device, device);
  device_array<std::uint16_t> out(values.size());
  device_bundle_view elsewhere = u.device.view();
  elsewhere.device = device + 1;  // as if uploaded to another GPU
  EXPECT_EQ(decompress(elsewhere, out.get(), out.size(), nullptr).code, errc::invalid_argument);
}

// Host threads launching the same kernel with different stage sizes at once: the launch sets no
// function attribute any more, so nothing races.
TEST(Gpu, ConcurrentLaunchesWithDifferentStageSizes) {
  SKIP_WITHOUT_GPU();
  const auto values = heavy_tailed(300'000, 6);
  uploaded u;
  upload(compress({values}, {}), u);
  if (HasFatalFailure()) return;
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      cudaStream_t stream = nullptr;
      if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) {
        failures[t] = 1;
        return;
      }
      device_array<std::uint16_t> out(values.size());
      std::vector<std::uint16_t> host(values.size());
      gpu_decode_options options;
      options.stage_bytes = t % 2 == 0 ? 0 : 4096 * (t + 1);
      for (int i = 0; i < 20; ++i) {
        if (!decompress(u.device, out.get(), out.size(), stream, options).ok()) ++failures[t];
      }
      if (cudaStreamSynchronize(stream) != cudaSuccess ||
          cudaMemcpy(host.data(), out.get(), host.size() * 2, cudaMemcpyDeviceToHost) !=
              cudaSuccess ||
          host != values) {
        ++failures[t];
      }
      (void)cudaStreamDestroy(stream);
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
  EXPECT_TRUE(u.device.check_decode_status().ok());
}

// Device memory corrupted after the upload: the faulty groups are left unwritten, every other
// group is decoded, the lowest faulty group is reported (as the CPU executor's
// FaultyGroupsAloneAreLeftUnwritten proves for the same corruption).
TEST(Gpu, CorruptDeviceMetadataIsReported) {
  SKIP_WITHOUT_GPU();
  const auto values = heavy_tailed(400'000, 8);
  uploaded u;
  upload(compress({values}, {}), u);
  if (HasFatalFailure()) return;
  const std::uint64_t groups = u.host.group_count();
  ASSERT_GE(groups, 4u);
  const std::uint64_t g = groups / 2;
  auto* positions = const_cast<std::uint64_t*>(u.device.view().group_positions);
  const std::uint64_t corrupt = u.host.group_value_position(g) + 1;
  ASSERT_CUDA(cudaMemcpy(positions + g, &corrupt, 8, cudaMemcpyHostToDevice));

  device_array<std::uint16_t> out(values.size());
  std::vector<std::uint16_t> poison(values.size());
  for (std::size_t i = 0; i < values.size(); ++i)
    poison[i] = static_cast<std::uint16_t>(~values[i]);
  ASSERT_CUDA(cudaMemcpy(out.get(), poison.data(), values.size() * 2, cudaMemcpyHostToDevice));
  ASSERT_TRUE(decompress(u.device, out.get(), values.size(), nullptr).ok());
  const error status = u.device.check_decode_status();
  EXPECT_EQ(status.code, errc::bad_data);
  EXPECT_NE(status.message.find("group " + std::to_string(g - 1) + ":"), std::string::npos)
      << status.message;
  std::vector<std::uint16_t> host(values.size());
  ASSERT_CUDA(cudaMemcpy(host.data(), out.get(), values.size() * 2, cudaMemcpyDeviceToHost));
  // Both groups that use the moved position fail their count check.
  const std::uint64_t bad_first = u.host.group_value_position(g - 1);
  const std::uint64_t bad_end = u.host.group_value_position(g + 1);
  for (std::uint64_t i = 0; i < values.size(); ++i) {
    const bool in_bad_group = i >= bad_first && i < bad_end;
    ASSERT_EQ(host[i], in_bad_group ? poison[i] : values[i]) << "value " << i;
  }
  ASSERT_TRUE(u.device.reset_decode_status().ok());
  EXPECT_TRUE(u.device.check_decode_status().ok());
}

// More than 2 GiB of output: 64-bit value positions and byte offsets all the way through.
TEST(Gpu, BundleLargerThan2GiB) {
  SKIP_WITHOUT_GPU();
  constexpr std::uint64_t kValues = (std::uint64_t{1} << 30) + 12'345;  // 2 GiB + 24 KiB of BF16
  std::size_t free_bytes = 0, total_bytes = 0;
  ASSERT_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));
  if (free_bytes < 6 * (std::uint64_t{1} << 30)) {
    GTEST_SKIP() << "needs 6 GiB of free device memory, " << (free_bytes >> 20) << " MiB free";
  }
  // Cheap generation: an index hash picks a Llama-like exponent and the sign/mantissa bits.
  std::vector<std::uint16_t> values(kValues);
  for (std::uint64_t i = 0; i < kValues; ++i) {
    std::uint64_t h = (i + 0x9E3779B97F4A7C15ull) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
    const unsigned lz = static_cast<unsigned>(__builtin_clzll(h | 1));  // geometric, mostly 0..3
    const unsigned exponent = 120 - (lz < 20 ? lz : 20);
    values[i] = static_cast<std::uint16_t>((h & 0x807F) | (exponent << 7));
  }
  uploaded u;
  upload(compress_bundle(std::span<const std::uint16_t>(values)), u);
  if (HasFatalFailure()) return;
  device_array<std::uint16_t> out(kValues);
  ASSERT_NE(out.get(), nullptr);
  ASSERT_CUDA(cudaMemset(out.get(), 0xFF, kValues * 2));  // no value here is 0xFFFF
  ASSERT_TRUE(decompress(u.device, out.get(), kValues, nullptr).ok());
  ASSERT_CUDA(cudaDeviceSynchronize());
  ASSERT_TRUE(u.device.check_decode_status().ok());
  std::vector<std::uint16_t> host(kValues);
  ASSERT_CUDA(cudaMemcpy(host.data(), out.get(), kValues * 2, cudaMemcpyDeviceToHost));
  std::uint64_t first_mismatch = kValues;
  for (std::uint64_t i = 0; i < kValues && first_mismatch == kValues; ++i) {
    if (host[i] != values[i]) first_mismatch = i;
  }
  EXPECT_EQ(first_mismatch, kValues) << "first wrong value " << first_mismatch;
}

// Several bundles decoded one after another into one buffer on one stream, each result copied
// out on the same stream before the next decode overwrites it.
TEST(Gpu, BackToBackBundlesIntoOneBuffer) {
  SKIP_WITHOUT_GPU();
  cudaStream_t stream = nullptr;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::vector<tensor_list> inputs;
  std::vector<uploaded> bundles(6);
  std::uint64_t largest = 0;
  for (int b = 0; b < 6; ++b) {
    tensor_list tensors;
    for (int t = 0; t < 1 + b; ++t)
      tensors.push_back(heavy_tailed(30'000 + 77'777 * b + t, 100 * b + t));
    upload(compress(tensors, {}), bundles[b], stream);
    if (HasFatalFailure()) return;
    largest = std::max<std::uint64_t>(largest, bundles[b].device.value_count());
    inputs.push_back(std::move(tensors));
  }
  device_array<std::uint16_t> buffer(largest);
  std::vector<std::uint16_t*> results(6, nullptr);
  for (auto& r : results) ASSERT_CUDA(cudaMallocHost(&r, largest * 2));
  for (int round = 0; round < 3; ++round) {
    for (int b = 0; b < 6; ++b) {
      const std::uint64_t n = bundles[b].device.value_count();
      ASSERT_TRUE(decompress(bundles[b].device, buffer.get(), buffer.size(), stream).ok());
      ASSERT_CUDA(cudaMemcpyAsync(results[b], buffer.get(), n * 2, cudaMemcpyDeviceToHost, stream));
    }
    ASSERT_CUDA(cudaStreamSynchronize(stream));
    for (int b = 0; b < 6; ++b) {
      const auto expected = concatenated(inputs[b]);
      ASSERT_TRUE(std::equal(expected.begin(), expected.end(), results[b]))
          << "round " << round << " bundle " << b;
      ASSERT_TRUE(bundles[b].device.check_decode_status(stream).ok());
    }
  }
  for (auto* r : results) (void)cudaFreeHost(r);
  (void)cudaStreamDestroy(stream);
}

TEST(Gpu, GraphCaptureAndReplay) {
  SKIP_WITHOUT_GPU();
  cudaStream_t stream = nullptr;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const auto a_values = heavy_tailed(700'001, 41);
  const auto b_values = test::all_patterns(true);
  uploaded a, b;
  upload(compress({a_values}, {}), a, stream);
  upload(compress({b_values}, geometry(15, 64, 256)), b, stream);
  if (HasFatalFailure()) return;
  ASSERT_CUDA(cudaStreamSynchronize(stream));
  device_array<std::uint16_t> out_a(a_values.size()), out_b(b_values.size() + 3);

  cudaGraph_t graph = nullptr;
  ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  const error ea = decompress(a.device, out_a.get(), out_a.size(), stream);
  const error eb = decompress(b.device, out_b.get() + 3, b_values.size(), stream);  // unaligned
  ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
  ASSERT_TRUE(ea.ok()) << ea.message;
  ASSERT_TRUE(eb.ok()) << eb.message;
  cudaGraphExec_t exec = nullptr;
  ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));

  std::vector<std::uint16_t> host_a(a_values.size()), host_b(b_values.size());
  for (int replay = 0; replay < 4; ++replay) {
    ASSERT_CUDA(cudaMemsetAsync(out_a.get(), replay, out_a.size() * 2, stream));
    ASSERT_CUDA(cudaMemsetAsync(out_b.get(), replay + 1, out_b.size() * 2, stream));
    ASSERT_CUDA(cudaGraphLaunch(exec, stream));
    ASSERT_CUDA(cudaStreamSynchronize(stream));
    ASSERT_CUDA(cudaMemcpy(host_a.data(), out_a.get(), host_a.size() * 2, cudaMemcpyDeviceToHost));
    ASSERT_CUDA(
        cudaMemcpy(host_b.data(), out_b.get() + 3, host_b.size() * 2, cudaMemcpyDeviceToHost));
    ASSERT_EQ(host_a, a_values) << "replay " << replay;
    ASSERT_EQ(host_b, b_values) << "replay " << replay;
  }
  EXPECT_TRUE(a.device.check_decode_status(stream).ok());
  EXPECT_TRUE(b.device.check_decode_status(stream).ok());
  (void)cudaGraphExecDestroy(exec);
  (void)cudaGraphDestroy(graph);
  (void)cudaStreamDestroy(stream);
}

// The bundle's bytes in pinned memory: upload and decode are both queued on one stream before
// the host waits once.
TEST(Gpu, AsyncUploadFromPinnedMemory) {
  SKIP_WITHOUT_GPU();
  const auto values = heavy_tailed(2'000'003, 77);
  const auto bytes = compress({values}, {});
  std::byte* pinned = nullptr;
  ASSERT_CUDA(cudaMallocHost(&pinned, bytes.size()));
  std::memcpy(pinned, bytes.data(), bytes.size());
  cudaStream_t stream = nullptr;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  {
    const bundle_view host = parse_bundle(std::span<const std::byte>(pinned, bytes.size())).value();
    auto device = device_bundle::upload(host, stream);
    ASSERT_TRUE(device.has_value()) << device.error().message;
    device_bundle moved = std::move(*device);  // moving the owner keeps the device memory
    device_array<std::uint16_t> out(values.size());
    ASSERT_TRUE(decompress(moved, out.get(), out.size(), stream).ok());
    std::vector<std::uint16_t> result(values.size());
    ASSERT_CUDA(
        cudaMemcpyAsync(result.data(), out.get(), out.size() * 2, cudaMemcpyDeviceToHost, stream));
    ASSERT_CUDA(cudaStreamSynchronize(stream));
    EXPECT_EQ(result, values);
    EXPECT_TRUE(moved.check_decode_status(stream).ok());
  }
  (void)cudaStreamDestroy(stream);
  (void)cudaFreeHost(pinned);
}

// ---- every value format -------------------------------------------------------------------------
// The kernel instantiated per format (cuda/floatzip_cuda.cu), against the CPU decoder and the
// original values, through the typed and the byte API, uploaded and staged.

using test::compress_format;
using test::format_tensors;
using test::value_of;
using test::weights_of;

using test::all_formats;
using test::format_constant;
using test::format_name;

template <class C>
class GpuFormats : public testing::Test {};
TYPED_TEST_SUITE(GpuFormats, all_formats, format_name);

// The kernel of the bundle's format against the CPU decoder and the original values.
template <class T>
void expect_gpu_matches_cpu_decoder(const std::vector<std::byte>& bytes,
                                    const std::vector<T>& expected, unsigned shift,
                                    const gpu_decode_options& options = {}) {
  std::vector<T> cpu(expected.size());
  const error e = decompress(parse_bundle(bytes).value(), std::span<T>(cpu));
  ASSERT_TRUE(e.ok()) << e.message;
  ASSERT_TRUE(cpu == expected) << "the CPU decoder disagrees";
  expect_gpu_decodes(bytes, expected, shift, options);
}

TYPED_TEST(GpuFormats, EveryPatternAtEveryAlignment) {
  SKIP_WITHOUT_GPU();
  constexpr value_format F = TypeParam::value;
  using T = value_of<F>;
  for (const bool shuffled : {false, true}) {
    std::vector<T> values = test::all_patterns_of<F>(shuffled);
    if (sizeof(T) == 1 && shuffled) {
      const std::vector<T> once = values;
      for (int copy = 1; copy < 400; ++copy) values.insert(values.end(), once.begin(), once.end());
      std::shuffle(values.begin(), values.end(), std::mt19937_64(3));
    }
    for (const int max_length : {8, 12, 15}) {
      const auto bytes = compress_format<F>({values}, geometry(max_length, 64, 256));
      for (unsigned shift = 0; shift < 16 / sizeof(T); ++shift) {
        SCOPED_TRACE("L " + std::to_string(max_length) + " shift " + std::to_string(shift));
        expect_gpu_matches_cpu_decoder(bytes, values, shift);
        if (this->HasFatalFailure()) return;
      }
      expect_gpu_decodes(bytes, values, 0, {}, /*through_bytes=*/true);
    }
  }
}

TYPED_TEST(GpuFormats, OddSizesGeometriesAndTiles) {
  SKIP_WITHOUT_GPU();
  constexpr value_format F = TypeParam::value;
  constexpr unsigned kUnit = 16 / sizeof(value_of<F>);
  std::uint64_t seed = 31;
  for (const std::size_t n : test::odd_sizes()) {
    const auto values = weights_of<F>(n, ++seed);
    for (const auto& g : test::odd_geometries()) {
      SCOPED_TRACE("n " + std::to_string(n) + " chunk_bytes " + std::to_string(g.chunk_bytes) +
                   " chunks_per_group " + std::to_string(g.chunks_per_group));
      expect_gpu_matches_cpu_decoder(compress_format<F>({values}, g), values,
                                     static_cast<unsigned>(n % kUnit));
      if (this->HasFatalFailure()) return;
    }
  }
  const auto values = weights_of<F>(1'000'003, 5);
  const auto bytes = compress_format<F>({values}, {});
  for (const std::uint32_t stage : {16u, 48u, 4096u, 65536u}) {
    SCOPED_TRACE("stage_bytes " + std::to_string(stage));
    gpu_decode_options options;
    options.stage_bytes = stage;
    expect_gpu_decodes(bytes, values, stage % kUnit, options);
    if (this->HasFatalFailure()) return;
  }
}

TYPED_TEST(GpuFormats, RealWeights) {
  SKIP_WITHOUT_GPU();
  constexpr value_format F = TypeParam::value;
  std::string skip_reason;
  const auto bundles = test::format_model_bundles<F>(skip_reason);
  if (bundles.empty()) GTEST_SKIP() << skip_reason;
  for (const auto& bundle : bundles) {
    SCOPED_TRACE(bundle.name);
    expect_gpu_matches_cpu_decoder(
        compress_format<F>(bundle.tensors, {}), test::concatenated(bundle.tensors),
        static_cast<unsigned>(bundle.name.size() % (16 / sizeof(value_of<F>))));
    if (this->HasFatalFailure()) return;
  }
}

// stage_bundle carries the format to the launch; outputs of another width are refused before
// anything is launched, naming the format.
TYPED_TEST(GpuFormats, StagedBundleCarriesTheFormat) {
  SKIP_WITHOUT_GPU();
  constexpr value_format F = TypeParam::value;
  using T = value_of<F>;
  const auto values = weights_of<F>(300'001, 6);
  const auto bytes = compress_format<F>({values}, {});
  const bundle_view host = parse_bundle(bytes).value();
  device_array<std::byte> staging(staging_bytes(host) + sizeof(unsigned long long));
  ASSERT_NE(staging.get(), nullptr);
  auto* status = reinterpret_cast<unsigned long long*>(staging.get() + staging_bytes(host));
  ASSERT_CUDA(cudaMemset(status, 0xFF, sizeof *status));
  auto staged = stage_bundle(host, staging.get(), staging_bytes(host), status);
  ASSERT_TRUE(staged.has_value()) << staged.error().message;
  EXPECT_EQ(staged->format, F);
  for (const auto& view : staged->segment_views) EXPECT_EQ(view.format, F);

  device_array<std::uint32_t> out(values.size());  // room for any width
  auto expect_refused = [&](auto* typed) {
    using U = std::remove_pointer_t<decltype(typed)>;
    if (sizeof(U) == sizeof(T)) return;
    const error e = decompress(*staged, typed, values.size(), nullptr);
    EXPECT_EQ(e.code, errc::invalid_argument) << e.message;
    EXPECT_NE(e.message.find(std::string(to_string(F))), std::string::npos) << e.message;
  };
  expect_refused(reinterpret_cast<std::uint8_t*>(out.get()));
  expect_refused(reinterpret_cast<std::uint16_t*>(out.get()));
  expect_refused(reinterpret_cast<std::uint32_t*>(out.get()));
  auto* out_bytes = reinterpret_cast<std::byte*>(out.get());
  EXPECT_EQ(decompress(*staged, out_bytes, values.size() * sizeof(T) - 1, nullptr).code,
            errc::insufficient_space);

  std::vector<T> host_out(values.size());
  ASSERT_CUDA(cudaMemset(out.get(), 0, values.size() * sizeof(T)));
  ASSERT_TRUE(decompress(*staged, reinterpret_cast<T*>(out.get()), values.size(), nullptr).ok());
  ASSERT_CUDA(
      cudaMemcpy(host_out.data(), out.get(), values.size() * sizeof(T), cudaMemcpyDeviceToHost));
  EXPECT_TRUE(host_out == values);
  ASSERT_CUDA(cudaMemset(out.get(), 0, values.size() * sizeof(T)));
  ASSERT_TRUE(decompress(*staged, out_bytes, values.size() * sizeof(T), nullptr).ok());
  ASSERT_CUDA(
      cudaMemcpy(host_out.data(), out.get(), values.size() * sizeof(T), cudaMemcpyDeviceToHost));
  EXPECT_TRUE(host_out == values);
  unsigned long long record = 0;
  ASSERT_CUDA(cudaMemcpy(&record, status, sizeof record, cudaMemcpyDeviceToHost));
  EXPECT_EQ(record, ~0ull);
}

TEST(Gpu, Fp32SpecialsAtEveryAlignment) {
  SKIP_WITHOUT_GPU();
  const std::vector<std::uint32_t> specials = test::fp32_specials();
  std::vector<std::uint32_t> mixed = test::heavy_tailed_fp32(100'000, 4);
  std::mt19937_64 rng(8);
  for (const std::uint32_t s : specials) mixed[rng() % mixed.size()] = s;
  for (const auto& values : {specials, mixed}) {
    const auto bytes = compress_format<value_format::fp32>({values}, {});
    for (unsigned shift = 0; shift < 4; ++shift) {
      expect_gpu_matches_cpu_decoder(bytes, values, shift);
      if (this->HasFatalFailure()) return;
    }
  }
}

}  // namespace
}  // namespace floatzip
