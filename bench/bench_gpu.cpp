// GPU decode throughput of floatzip beside two baselines measured in the same run, on the same
// output size and the same device:
//
//   decode/<data>/<MiB>          decompress() of one bundle: GB/s of BF16 output
//   decode/<data>/<MiB>/stage:K  the same with gpu_decode_options::stage_bytes = K KiB
//   copy_d2d/<MiB>               cudaMemcpyAsync device-to-device of the raw BF16 bytes
//   raw_bf16_load/<MiB>          a kernel that only loads the raw BF16 bytes (16-byte loads)
//
// Data: "llama" is one Llama-7B-proportioned transformer block (q, k, v, o, gate, up, down and
// two norms) of Student-t(5) weights at per-matrix scales of 0.01-0.04 (bench/llama_synth.hpp);
// "real" draws values independently from the BF16 value histogram of the real models in
// FLOATZIP_MODELS_DIR (skipped when absent).
//
// Times come from CUDA events around one pass over a rotation of several copies of the bundle
// (and of the output buffers, and of the raw bytes for the baselines), enough copies that the
// pass touches at least four times the L2 cache, so that the L2 does not flatter any figure.
// After the run a summary table gives GB/s and decode time / copy time per size, ready for
// bench/RESULTS.md. Without a CUDA device the program says so and exits 0.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "bench_gpu_inputs.hpp"
#include "bench_gpu_kernels.hpp"
#include "floatzip/bundle_format.hpp"
#include "floatzip/detail/file_io.hpp"
#include "floatzip/encoder.hpp"
#include "floatzip/gpu.hpp"
#include "floatzip/safetensors.hpp"
#include "llama_synth.hpp"
#include "nlohmann/json.hpp"

namespace floatzip::bench {
namespace {

constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "bench_gpu: %s: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
  }
}

// ---- inputs
// ----------------------------------------------------------------------------------------

struct host_input {
  std::string dataset;
  std::vector<std::uint16_t> values;
  std::vector<std::byte> bundle;
};

// One transformer block of Llama-7B proportions holding about target_bytes of BF16.
host_input make_llama_block(std::uint64_t target_bytes, std::uint64_t seed,
                            const encode_options& options = {}) {
  llama_block block = make_llama_block_values(target_bytes, seed);
  host_input in;
  in.dataset = "llama";
  in.bundle = compress_bundle(block.tensors, options);
  in.values = std::move(block.values);
  return in;
}

// The BF16 value histogram of the real models, or nothing when there are none.
std::optional<std::vector<std::uint64_t>> real_model_histogram() {
  const std::filesystem::path dir = FLOATZIP_MODELS_DIR;
  if (!std::filesystem::is_directory(dir)) return std::nullopt;
  std::vector<std::uint64_t> histogram(65536, 0);
  std::uint64_t seen = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    auto file = floatzip::detail::mapped_file::open(entry.path());
    if (!file) continue;
    auto header = safetensors::parse_header(file->bytes(), file->size(), entry.path().string());
    if (!header) continue;
    const std::byte* data = file->bytes().data() + header->header_size();
    for (const auto& t : header->tensors) {
      if (t.type != safetensors::dtype::bf16) continue;
      for (std::uint64_t i = 0; i < t.element_count(); ++i) {
        std::uint16_t v;
        std::memcpy(&v, data + t.data.begin + 2 * i, 2);
        ++histogram[v];
        ++seen;
      }
    }
  }
  if (seen == 0) return std::nullopt;
  return histogram;
}

// About target_bytes of BF16 drawn independently from the real models' value histogram.
std::optional<host_input> make_real_statistics(std::uint64_t target_bytes, std::uint64_t seed) {
  static const auto histogram = real_model_histogram();
  if (!histogram) return std::nullopt;
  std::vector<double> cdf(65536);
  double running = 0;
  for (std::size_t v = 0; v < cdf.size(); ++v)
    cdf[v] = running += static_cast<double>((*histogram)[v]);
  for (double& c : cdf) c /= running;
  host_input in;
  in.dataset = "real";
  in.values.resize(target_bytes / 2);
  parallel_slices(in.values.size(), [&](std::uint64_t first, std::uint64_t count) {
    for (std::uint64_t i = first; i < first + count; ++i) {
      const double u =
          static_cast<double>(splitmix64_mix(seed + (i + 1) * kGoldenGamma) >> 11) * 0x1p-53;
      const auto it = std::upper_bound(cdf.begin(), cdf.end(), u);
      in.values[i] = static_cast<std::uint16_t>(std::min<std::ptrdiff_t>(it - cdf.begin(), 65535));
    }
  });
  in.bundle = compress_bundle(std::span<const std::uint16_t>(in.values));
  return in;
}

// ---- device fixture: rotating copies
// ---------------------------------------------------------------

struct device_fixture {
  std::string key;
  std::string dataset;
  std::uint64_t value_count = 0;
  double bits_per_value = 0;
  std::vector<device_bundle> bundles;   // copies of one bundle
  std::vector<std::uint16_t*> outputs;  // one output buffer per copy
  std::vector<std::uint16_t*> raw;      // the uncompressed BF16 values, one copy per bundle
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  unsigned* sink = nullptr;
  int raw_load_blocks = 0;

  ~device_fixture() {
    for (auto* p : outputs) (void)cudaFree(p);
    for (auto* p : raw) (void)cudaFree(p);
    if (sink != nullptr) (void)cudaFree(sink);
    if (start != nullptr) (void)cudaEventDestroy(start);
    if (stop != nullptr) (void)cudaEventDestroy(stop);
    if (stream != nullptr) (void)cudaStreamDestroy(stream);
  }
  [[nodiscard]] std::uint64_t output_bytes() const { return value_count * 2; }
  [[nodiscard]] std::size_t copies() const { return bundles.size(); }
};

std::unique_ptr<device_fixture> g_fixture;

int l2_bytes() {
  int device = 0, l2 = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device), "L2 size");
  return l2;
}

// The fixture for (dataset, size), built on first use; the previous one is released first so
// that only one size occupies device memory.
device_fixture* fixture_for(const std::string& dataset, std::uint64_t size_bytes) {
  const std::string key = dataset + "/" + std::to_string(size_bytes);
  if (g_fixture && g_fixture->key == key) return g_fixture.get();
  g_fixture.reset();
  // llama: the encoder's defaults (12-bit codes, 64-byte chunks); llama_L15: codes up to 15
  // bits (the 15-bit table); llama_c128: 128-byte chunks.
  encode_options options;
  if (dataset == "llama_L15") options.max_code_length = 15;
  if (dataset == "llama_c128") options.chunk_bytes = 128;
  std::optional<host_input> in =
      dataset.starts_with("llama")
          ? std::optional<host_input>(make_llama_block(size_bytes, 42, options))
          : make_real_statistics(size_bytes, 43);
  if (!in) return nullptr;
  auto f = std::make_unique<device_fixture>();
  f->key = key;
  f->dataset = dataset;
  const bundle_view host = parse_bundle(in->bundle).value();
  f->value_count = host.value_count();
  f->bits_per_value = 8.0 * static_cast<double>(host.size_bytes()) /
                      static_cast<double>(std::max<std::uint64_t>(1, host.value_count()));
  const std::uint64_t copies = std::max<std::uint64_t>(
      2, (4 * static_cast<std::uint64_t>(l2_bytes()) + f->output_bytes() - 1) / f->output_bytes());
  check_cuda(cudaStreamCreateWithFlags(&f->stream, cudaStreamNonBlocking), "stream");
  check_cuda(cudaEventCreate(&f->start), "event");
  check_cuda(cudaEventCreate(&f->stop), "event");
  check_cuda(cudaMalloc(&f->sink, sizeof(unsigned)), "cudaMalloc sink");
  for (std::uint64_t c = 0; c < copies; ++c) {
    auto device = device_bundle::upload(host, f->stream);
    if (!device) {
      std::fprintf(stderr, "bench_gpu: upload: %s\n", device.error().message.c_str());
      std::exit(1);
    }
    f->bundles.push_back(std::move(*device));
    std::uint16_t* out = nullptr;
    std::uint16_t* raw = nullptr;
    check_cuda(cudaMalloc(&out, f->output_bytes() + 16), "cudaMalloc output");
    check_cuda(cudaMalloc(&raw, f->output_bytes() + 16), "cudaMalloc raw");
    check_cuda(cudaMemcpyAsync(raw, in->values.data(), f->output_bytes(), cudaMemcpyHostToDevice,
                               f->stream),
               "upload raw");
    f->outputs.push_back(out);
    f->raw.push_back(raw);
  }
  int device = 0, sms = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "SM count");
  f->raw_load_blocks = sms * 8;

  // The figures are only worth having for a correct decode: check one copy bit for bit.
  check_cuda(cudaMemsetAsync(f->outputs[0], 0xFF, f->output_bytes(), f->stream), "memset");
  const error e = decompress(f->bundles[0], f->outputs[0], f->value_count, f->stream);
  if (e) {
    std::fprintf(stderr, "bench_gpu: decompress: %s\n", e.message.c_str());
    std::exit(1);
  }
  std::vector<std::uint16_t> check(f->value_count);
  check_cuda(cudaMemcpyAsync(check.data(), f->outputs[0], f->output_bytes(), cudaMemcpyDeviceToHost,
                             f->stream),
             "read back");
  check_cuda(cudaStreamSynchronize(f->stream), "sync");
  if (check != in->values || !f->bundles[0].check_decode_status(f->stream).ok()) {
    std::fprintf(stderr, "bench_gpu: %s: GPU decode differs from the input\n", key.c_str());
    std::exit(1);
  }
  g_fixture = std::move(f);
  return g_fixture.get();
}

// ---- measurement
// -------------------------------------------------------------------------------------

struct measurement {
  double seconds = 0;  // per pass over all copies
  std::uint64_t bytes = 0;
  double bits_per_value = 0;
};
std::map<std::string, measurement> g_results;

// Times `pass` (one launch per copy) with CUDA events; records the mean under `name`.
template <class Pass>
void run_timed(benchmark::State& state, device_fixture* f, const std::string& name, Pass&& pass) {
  pass();  // warm-up: first-launch costs, attribute setting
  check_cuda(cudaStreamSynchronize(f->stream), "warm-up");
  double total = 0;
  std::uint64_t passes = 0;
  for (auto _ : state) {
    check_cuda(cudaEventRecord(f->start, f->stream), "event");
    pass();
    check_cuda(cudaEventRecord(f->stop, f->stream), "event");
    check_cuda(cudaEventSynchronize(f->stop), "event sync");
    float ms = 0;
    check_cuda(cudaEventElapsedTime(&ms, f->start, f->stop), "elapsed");
    state.SetIterationTime(ms / 1e3);
    total += ms / 1e3;
    ++passes;
  }
  const std::uint64_t bytes = f->output_bytes() * f->copies();
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes * passes));
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(bytes) / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.counters["copies"] = static_cast<double>(f->copies());
  state.counters["MiB"] = static_cast<double>(f->output_bytes()) / kMiB;
  if (passes > 0) g_results[name] = {total / static_cast<double>(passes), bytes, f->bits_per_value};
}

void bm_decode(benchmark::State& state, const std::string& dataset, std::uint64_t size,
               std::uint32_t stage_bytes, const std::string& name) {
  device_fixture* f = fixture_for(dataset, size);
  if (f == nullptr) {
    state.SkipWithError("no real models found (FLOATZIP_MODELS_DIR)");
    return;
  }
  state.counters["bits/value"] = f->bits_per_value;
  gpu_decode_options options;
  options.stage_bytes = stage_bytes;
  run_timed(state, f, name, [&] {
    for (std::size_t c = 0; c < f->copies(); ++c) {
      const error e = decompress(f->bundles[c], f->outputs[c], f->value_count, f->stream, options);
      if (e) {
        std::fprintf(stderr, "bench_gpu: decompress: %s\n", e.message.c_str());
        std::exit(1);
      }
    }
  });
}

void bm_copy(benchmark::State& state, std::uint64_t size, const std::string& name) {
  device_fixture* f = fixture_for("llama", size);
  run_timed(state, f, name, [&] {
    for (std::size_t c = 0; c < f->copies(); ++c) {
      check_cuda(cudaMemcpyAsync(f->outputs[c], f->raw[c], f->output_bytes(),
                                 cudaMemcpyDeviceToDevice, f->stream),
                 "copy");
    }
  });
}

void bm_raw_load(benchmark::State& state, std::uint64_t size, const std::string& name) {
  device_fixture* f = fixture_for("llama", size);
  run_timed(state, f, name, [&] {
    for (std::size_t c = 0; c < f->copies(); ++c) {
      check_cuda(launch_raw_load(f->raw[c], f->output_bytes() / 16 * 16, f->sink,
                                 f->raw_load_blocks, f->stream),
                 "raw load");
    }
  });
}

const std::vector<std::uint64_t> kSizesMiB = {16, 64, 256, 1024};
// About 8, 6, 4, 3, 2 and 1 tiles for the llama block's groups of ~48,200 values.
const std::vector<std::uint32_t> kStageSweepKiB = {6, 8, 12, 16, 24, 48};

std::string decode_name(const std::string& dataset, std::uint64_t mib, std::uint32_t stage_kib) {
  std::string name = "decode/" + dataset + "/" + std::to_string(mib);
  if (stage_kib != 0) name += "/stage:" + std::to_string(stage_kib);
  return name;
}

void register_benchmarks() {
  auto add = [](const std::string& name, auto fn) {
    benchmark::RegisterBenchmark(name.c_str(), fn)->UseManualTime()->Unit(benchmark::kMicrosecond);
  };
  for (const std::uint64_t mib : kSizesMiB) {
    const std::uint64_t size = mib * kMiB;
    // The llama fixture serves decode and both baselines, then the real-statistics one.
    add(decode_name("llama", mib, 0),
        [=, name = decode_name("llama", mib, 0)](benchmark::State& s) {
          bm_decode(s, "llama", size, 0, name);
        });
    if (mib >= 256) {
      // The encoder variants, beside the defaults above.
      for (const char* variant : {"llama_L15", "llama_c128"}) {
        const std::string name = decode_name(variant, mib, 0);
        add(name, [=](benchmark::State& s) { bm_decode(s, variant, size, 0, name); });
      }
    }
    if (mib == 256) {
      for (const std::uint32_t kib : kStageSweepKiB) {
        add(decode_name("llama", mib, kib),
            [=, name = decode_name("llama", mib, kib)](benchmark::State& s) {
              bm_decode(s, "llama", size, kib * 1024, name);
            });
      }
    }
    const std::string copy = "copy_d2d/" + std::to_string(mib);
    add(copy, [=](benchmark::State& s) { bm_copy(s, size, copy); });
    const std::string load = "raw_bf16_load/" + std::to_string(mib);
    add(load, [=](benchmark::State& s) { bm_raw_load(s, size, load); });
    add(decode_name("real", mib, 0), [=, name = decode_name("real", mib, 0)](benchmark::State& s) {
      bm_decode(s, "real", size, 0, name);
    });
  }
}

// Component i of a benchmark name split at '/': decode/<data>/<MiB>[/stage:K].
std::string path_part(const std::string& name, std::size_t i) {
  std::size_t begin = 0;
  for (std::size_t k = 0; k < i; ++k) begin = name.find('/', begin) + 1;
  const std::size_t end = name.find('/', begin);
  return name.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

double gbps(const measurement& m) { return static_cast<double>(m.bytes) / m.seconds / 1e9; }

void print_summary() {
  int device = 0;
  cudaDeviceProp prop{};
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_cuda(cudaGetDeviceProperties(&prop, device), "properties");
  int driver = 0, runtime = 0;
  (void)cudaDriverGetVersion(&driver);
  (void)cudaRuntimeGetVersion(&runtime);
  std::printf("\n## bench_gpu summary: %s (sm_%d%d, %d SMs, %d MiB L2), driver %d, runtime %d\n\n",
              prop.name, prop.major, prop.minor, prop.multiProcessorCount,
              prop.l2CacheSize / static_cast<int>(kMiB), driver, runtime);
  std::printf(
      "| data | BF16 MiB | bits/value | decode GB/s | copy D2D GB/s | raw BF16 load GB/s |"
      " decode / copy time | decode / raw-load time |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (const std::uint64_t mib : kSizesMiB) {
    const auto copy = g_results.find("copy_d2d/" + std::to_string(mib));
    const auto load = g_results.find("raw_bf16_load/" + std::to_string(mib));
    for (const char* dataset : {"llama", "real"}) {
      const auto decode = g_results.find(decode_name(dataset, mib, 0));
      if (decode == g_results.end() || copy == g_results.end() || load == g_results.end()) {
        continue;
      }
      const measurement& d = decode->second;
      std::printf("| %s | %llu | %.3f | %.1f | %.1f | %.1f | %.3f | %.3f |\n", dataset,
                  static_cast<unsigned long long>(mib), d.bits_per_value, gbps(d),
                  gbps(copy->second), gbps(load->second), d.seconds / copy->second.seconds,
                  d.seconds / load->second.seconds);
    }
  }
  std::printf("\nstage sweep, llama 256 MiB:\n\n| stage KiB | decode GB/s |\n|---|---|\n");
  for (const std::uint32_t kib : kStageSweepKiB) {
    const auto it = g_results.find(decode_name("llama", 256, kib));
    if (it != g_results.end()) std::printf("| %u | %.1f |\n", kib, gbps(it->second));
  }
  const auto automatic = g_results.find(decode_name("llama", 256, 0));
  if (automatic != g_results.end()) std::printf("| auto | %.1f |\n", gbps(automatic->second));

  // FLOATZIP_BENCH_GPU_JSON=path: the same figures as JSON, every GB/s and every ratio to the
  // copy and raw-load baselines of the same size, for bench/results/.
  if (const char* path = std::getenv("FLOATZIP_BENCH_GPU_JSON"); path != nullptr && *path != 0) {
    nlohmann::json j;
    j["device"] = prop.name;
    j["compute_capability"] = std::to_string(prop.major) + "." + std::to_string(prop.minor);
    j["multiprocessors"] = prop.multiProcessorCount;
    j["driver_version"] = driver;
    j["runtime_version"] = runtime;
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& [name, m] : g_results) {
      nlohmann::json row = {{"name", name},
                            {"gbps", gbps(m)},
                            {"seconds_per_pass", m.seconds},
                            {"bytes_per_pass", m.bytes}};
      if (name.starts_with("decode/")) {
        row["bits_per_value"] = m.bits_per_value;
        const std::string mib = path_part(name, 2);
        const auto copy = g_results.find("copy_d2d/" + mib);
        const auto load = g_results.find("raw_bf16_load/" + mib);
        if (copy != g_results.end()) row["time_over_copy"] = m.seconds / copy->second.seconds;
        if (load != g_results.end()) row["time_over_raw_load"] = m.seconds / load->second.seconds;
      }
      rows.push_back(row);
    }
    j["results"] = rows;
    std::FILE* file = std::fopen(path, "w");
    if (file == nullptr) {
      std::fprintf(stderr, "bench_gpu: cannot write %s\n", path);
      std::exit(1);
    }
    const std::string text = j.dump(2);
    std::fwrite(text.data(), 1, text.size(), file);
    std::fclose(file);
    std::printf("\nwrote %s\n", path);
  }
}

}  // namespace
}  // namespace floatzip::bench

int main(int argc, char** argv) {
  if (!floatzip::gpu_available()) {
    std::printf("bench_gpu: no CUDA device, nothing to measure\n");
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  floatzip::bench::register_benchmarks();
  benchmark::RunSpecifiedBenchmarks();
  floatzip::bench::print_summary();
  floatzip::bench::g_fixture.reset();
  benchmark::Shutdown();
  return 0;
}
