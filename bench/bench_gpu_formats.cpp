// Every value format on the GPU: the decode checked bit for bit against the CPU decoder, then
// timed against a device-to-device copy of the same output bytes, both measured in the same run.
//
//   floatzip_bench_gpu_formats [--mib N] [--runs R] [--json PATH]
//
// Per format, one bundle holding as many values as N MiB of BF16 (default 256: the output is
// several times the L2 cache of an H100/H200 for every format, so neither the decode nor the
// copy is served from it), made from the Llama-shaped block the other GPU benchmarks use, in
// each format as bench_gpu_inputs.hpp's make_format_input makes it.
// Correctness first: the output is poisoned, decoded by the GPU (device_bundle, std::byte API),
// read back and compared with the CPU decoder's output and with the original values; the
// kernel's status word must be clean. A format that fails makes the program exit 1 after the
// table. Timing: R rounds (default 50) of one decode and one cudaMemcpyAsync of the original
// values (uploaded once) into the same output buffer, interleaved, each between two CUDA events
// on one stream; the medians are reported, and their ratio (decode time / copy time).
// Without a CUDA device the program says so and exits 0.
#include <cuda_runtime.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "bench_gpu_inputs.hpp"
#include "float_conversions.hpp"
#include "floatzip/bundle_format.hpp"
#include "floatzip/decoder.hpp"
#include "floatzip/encoder.hpp"
#include "floatzip/gpu.hpp"
#include "floatzip/value_format.hpp"

namespace floatzip::bench {
namespace {

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "bench_gpu_formats: %s: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct format_result {
  value_format format;
  std::uint64_t values = 0;
  std::uint64_t output_bytes = 0;
  double bits_per_value = 0;
  bool correct = false;
  std::string problem;
  double decode_ms = 0;
  double copy_ms = 0;
};

format_result measure(const format_input& in, int runs, cudaStream_t stream) {
  format_result r;
  r.format = in.format;
  const std::vector<std::byte> bundle = compress_bundle(in.format, in.spans());
  const bundle_view host = parse_bundle(bundle).value();
  r.values = host.value_count();
  r.output_bytes = r.values * value_bytes(in.format);
  r.bits_per_value = 8.0 * static_cast<double>(bundle.size()) / static_cast<double>(r.values);

  std::vector<std::byte> original;
  original.reserve(r.output_bytes);
  for (const auto& t : in.tensors) original.insert(original.end(), t.begin(), t.end());
  std::vector<std::byte> cpu(r.output_bytes);
  if (const error e = decompress(host, std::span<std::byte>(cpu)); e || cpu != original) {
    r.problem = "the CPU decoder does not give the input back: " + e.message;
    return r;
  }

  auto device = device_bundle::upload(host, stream);
  if (!device) {
    r.problem = "upload: " + device.error().message;
    return r;
  }
  std::byte* out = nullptr;
  std::byte* copy_source = nullptr;
  check_cuda(cudaMalloc(&out, r.output_bytes), "cudaMalloc output");
  check_cuda(cudaMalloc(&copy_source, r.output_bytes), "cudaMalloc copy source");
  check_cuda(
      cudaMemcpyAsync(copy_source, original.data(), r.output_bytes, cudaMemcpyHostToDevice, stream),
      "upload original");
  // Correctness: a poisoned output, one decode, every byte against the CPU decoder's.
  check_cuda(cudaMemsetAsync(out, 0xA5, r.output_bytes, stream), "poison");
  if (const error e = decompress(*device, out, r.output_bytes, stream)) {
    r.problem = "decompress: " + e.message;
  } else {
    std::vector<std::byte> gpu(r.output_bytes);
    check_cuda(cudaMemcpyAsync(gpu.data(), out, r.output_bytes, cudaMemcpyDeviceToHost, stream),
               "read back");
    check_cuda(cudaStreamSynchronize(stream), "sync");
    const error status = device->check_decode_status(stream);
    if (status) {
      r.problem = "kernel status: " + status.message;
    } else if (gpu != cpu) {
      const auto at = std::mismatch(gpu.begin(), gpu.end(), cpu.begin()).first - gpu.begin();
      r.problem = "GPU output differs from the CPU decoder's at byte " + std::to_string(at);
    } else {
      r.correct = true;
    }
  }
  if (r.correct) {
    cudaEvent_t start = nullptr, stop = nullptr;
    check_cuda(cudaEventCreate(&start), "event");
    check_cuda(cudaEventCreate(&stop), "event");
    auto timed = [&](auto&& work) {
      check_cuda(cudaEventRecord(start, stream), "event");
      work();
      check_cuda(cudaEventRecord(stop, stream), "event");
      check_cuda(cudaEventSynchronize(stop), "event sync");
      float ms = 0;
      check_cuda(cudaEventElapsedTime(&ms, start, stop), "elapsed");
      return static_cast<double>(ms);
    };
    auto decode = [&] {
      if (const error e = decompress(*device, out, r.output_bytes, stream)) {
        std::fprintf(stderr, "bench_gpu_formats: decompress: %s\n", e.message.c_str());
        std::exit(1);
      }
    };
    auto copy = [&] {
      check_cuda(
          cudaMemcpyAsync(out, copy_source, r.output_bytes, cudaMemcpyDeviceToDevice, stream),
          "copy");
    };
    for (int i = 0; i < 3; ++i) {  // warm-up: first launches, clocks
      timed(decode);
      timed(copy);
    }
    std::vector<double> decode_ms, copy_ms;
    for (int i = 0; i < runs; ++i) {
      decode_ms.push_back(timed(decode));
      copy_ms.push_back(timed(copy));
    }
    r.decode_ms = median(decode_ms);
    r.copy_ms = median(copy_ms);
    (void)cudaEventDestroy(start);
    (void)cudaEventDestroy(stop);
    if (const error status = device->check_decode_status(stream)) {
      r.correct = false;
      r.problem = "kernel status after the timed runs: " + status.message;
    }
  }
  (void)cudaFree(out);
  (void)cudaFree(copy_source);
  return r;
}

int run_main(int argc, char** argv) {
  std::uint64_t mib = 256;
  int runs = 50;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--mib" && i + 1 < argc) {
      mib = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--runs" && i + 1 < argc) {
      runs = std::atoi(argv[++i]);
    } else if (arg == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--mib N] [--runs R] [--json PATH]\n", argv[0]);
      return 2;
    }
  }
  if (mib == 0 || runs < 1) {
    std::fprintf(stderr, "bench_gpu_formats: --mib and --runs must be positive\n");
    return 2;
  }
  if (!gpu_available()) {
    std::printf("bench_gpu_formats: no CUDA device, nothing to measure\n");
    return 0;
  }
  int device = 0;
  cudaDeviceProp prop{};
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_cuda(cudaGetDeviceProperties(&prop, device), "properties");
  int driver = 0, runtime = 0;
  (void)cudaDriverGetVersion(&driver);
  (void)cudaRuntimeGetVersion(&runtime);
  cudaStream_t stream = nullptr;
  check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");

  // About `mib` MiB of BF16, i.e. the same number of values for every format.
  const llama_block block = make_llama_block_values(mib << 20, 42);
  std::vector<format_result> results;
  for (unsigned f = 0; f < kValueFormatCount; ++f) {
    const auto format = static_cast<value_format>(f);
    results.push_back(measure(make_format_input(format, block), runs, stream));
    const format_result& r = results.back();
    std::fprintf(stderr, "bench_gpu_formats: %s %s\n", to_string(format).data(),
                 r.correct ? "correct" : r.problem.c_str());
  }
  (void)cudaStreamDestroy(stream);

  std::printf(
      "\n## bench_gpu_formats: %s (sm_%d%d, %d SMs), driver %d, runtime %d, %d runs, "
      "medians\n\n",
      prop.name, prop.major, prop.minor, prop.multiProcessorCount, driver, runtime, runs);
  std::printf(
      "| format | output MiB | bits/value | correct | decode ms | copy D2D ms | decode GB/s |"
      " copy GB/s | decode / copy time |\n|---|---|---|---|---|---|---|---|---|\n");
  nlohmann::json rows = nlohmann::json::array();
  bool all_correct = true;
  for (const format_result& r : results) {
    all_correct = all_correct && r.correct;
    const double gb = static_cast<double>(r.output_bytes) / 1e9;
    nlohmann::json row = {{"format", to_string(r.format)},  {"values", r.values},
                          {"output_bytes", r.output_bytes}, {"bits_per_value", r.bits_per_value},
                          {"correct", r.correct},           {"runs", runs}};
    if (!r.correct) {
      row["problem"] = r.problem;
      std::printf("| %s | %.1f | %.3f | NO: %s | | | | | |\n", to_string(r.format).data(),
                  static_cast<double>(r.output_bytes) / (1 << 20), r.bits_per_value,
                  r.problem.c_str());
    } else {
      row["decode_ms_median"] = r.decode_ms;
      row["copy_ms_median"] = r.copy_ms;
      row["decode_gbps"] = gb / (r.decode_ms / 1e3);
      row["copy_gbps"] = gb / (r.copy_ms / 1e3);
      row["decode_over_copy_time"] = r.decode_ms / r.copy_ms;
      std::printf("| %s | %.1f | %.3f | yes | %.3f | %.3f | %.1f | %.1f | %.3f |\n",
                  to_string(r.format).data(), static_cast<double>(r.output_bytes) / (1 << 20),
                  r.bits_per_value, r.decode_ms, r.copy_ms, gb / (r.decode_ms / 1e3),
                  gb / (r.copy_ms / 1e3), r.decode_ms / r.copy_ms);
    }
    rows.push_back(row);
  }
  if (!json_path.empty()) {
    const nlohmann::json j = {
        {"device", prop.name},
        {"compute_capability", std::to_string(prop.major) + "." + std::to_string(prop.minor)},
        {"driver_version", driver},
        {"runtime_version", runtime},
        {"block_mib_of_bf16", mib},
        {"results", rows},
        {"all_correct", all_correct}};
    std::FILE* file = std::fopen(json_path.c_str(), "w");
    if (file == nullptr) {
      std::fprintf(stderr, "bench_gpu_formats: cannot write %s\n", json_path.c_str());
      return 1;
    }
    const std::string text = j.dump(2);
    std::fwrite(text.data(), 1, text.size(), file);
    std::fclose(file);
  }
  return all_correct ? 0 : 1;
}

}  // namespace
}  // namespace floatzip::bench

int main(int argc, char** argv) { return floatzip::bench::run_main(argc, argv); }
