// floatzip CPU codec throughput and size, with memcpy and zstd as baselines in the same run.
//
//   floatzip_bench_codec [--synth_mb=256] [--models_dir=DIR] [Google Benchmark flags]
//
// Inputs: a synthetic Llama-shaped checkpoint (llama_synth.hpp) and every *.bf16.safetensors in
// the models directory (skipped with a message when absent). Each input is cut into bundles the
// way the container cuts it (one per transformer block, one per other tensor); every benchmark
// processes all bundles of its input per iteration and reports BF16 bytes per second.
//
//   memcpy/<input>/threads:N          copy of the same bytes, N threads each copying a slice
//   encode/<input>/threads:N          make_encode_plan + encode_bundle per bundle into one reused
//                                     buffer, encode_options::threads = N
//   encode_alloc/<input>/threads:N    compress_bundle per bundle (a new vector each)
//   decode/<input>/threads:N          decompress per bundle into one preallocated buffer
//   zstd1_compress/<input>/threads:N  ZSTD_compressCCtx level 1 per bundle, bundles on N threads
//   zstd_decompress/<input>/threads:N ZSTD_decompressDCtx per bundle, bundles on N threads
//   zstd19_ratio/<input>              level 19 vs level 1 vs floatzip size on a <= 16 MB sample
//   encode_format/<format>/<synth>/threads:N, decode_format/<format>/<synth>/threads:N
//                                     the same as encode and decode for the synthetic checkpoint
//                                     in every value format (see format_input), through the byte
//                                     API; bytes per second are of that format's values
//
// Counters (bits per weight unless named otherwise): bits_per_weight = the serialized bundles,
// everything included; entropy_bound = 8 + exponent entropy (per bundle, value-weighted);
// ideal = 8 + unlimited Huffman code, no metadata; overhead = bits_per_weight - ideal;
// ratio = compressed / BF16 size.
#include <benchmark/benchmark.h>
#include <zstd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "../tests/float_conversions.hpp"
#include "bench_data.hpp"
#include "floatzip/bundle_format.hpp"
#include "floatzip/decoder.hpp"
#include "floatzip/detail/parallel.hpp"
#include "floatzip/encoder.hpp"
#include "floatzip/value_format.hpp"

namespace {

using floatzip::bench::dataset;
using floatzip::bench::size_summary;

std::uint64_t g_synth_mb = 256;
std::filesystem::path g_models_dir = FLOATZIP_MODELS_DIR;
constexpr std::uint64_t kSynthSeed = 42;
constexpr std::uint64_t kRatioSampleBytes = std::uint64_t{16} << 20;

// One input with everything the timed loops need, built before any timing starts.
struct prepared_input {
  dataset data;
  std::vector<std::uint64_t> bundle_first;      // index of each bundle's first value in data.values
  std::vector<std::vector<std::byte>> bundles;  // floatzip, default options
  std::vector<floatzip::bundle_view> views;
  size_summary sizes;
  std::vector<std::vector<char>> zstd_frames;  // level 1, one per bundle
  std::uint64_t zstd_bytes = 0;
  std::vector<std::uint16_t> output;  // decode target, pages already touched
};

std::vector<std::function<dataset()>> g_loaders;
std::vector<std::string> g_input_names;
std::map<std::string, std::unique_ptr<prepared_input>> g_prepared;

void check_zstd(std::size_t code, const char* what) {
  if (ZSTD_isError(code)) {
    throw std::runtime_error(std::string(what) + ": " + ZSTD_getErrorName(code));
  }
}

prepared_input& input(std::size_t index) {
  const std::string& name = g_input_names[index];
  if (auto it = g_prepared.find(name); it != g_prepared.end()) return *it->second;
  // Only one large input is resident at a time: benchmarks run input by input.
  g_prepared.clear();
  auto p = std::make_unique<prepared_input>();
  p->data = g_loaders[index]();
  std::uint64_t first = 0;
  for (const auto& b : p->data.bundles) {
    p->bundle_first.push_back(first);
    first += b.all.size();
    p->bundles.push_back(floatzip::compress_bundle(b.tensors));
    p->views.push_back(floatzip::parse_bundle(p->bundles.back()).value());
    p->sizes.add(floatzip::bench::bounds_of(b), p->bundles.back().size());

    auto& frame = p->zstd_frames.emplace_back(ZSTD_compressBound(b.all.size_bytes()));
    const std::size_t n =
        ZSTD_compress(frame.data(), frame.size(), b.all.data(), b.all.size_bytes(), 1);
    check_zstd(n, "ZSTD_compress");
    frame.resize(n);
    p->zstd_bytes += n;
  }
  p->output.assign(p->data.values.size(), 0);
  // A benchmark of a wrong decoder is worthless: check the round trip once, untimed.
  for (std::size_t b = 0; b < p->views.size(); ++b) {
    auto out = std::span<std::uint16_t>(p->output).subspan(p->bundle_first[b]);
    if (auto e = floatzip::decompress(p->views[b], out)) throw floatzip::exception(e);
  }
  if (p->output != p->data.values) {
    throw std::runtime_error(name + ": decoded values differ from the input");
  }
  return *(g_prepared[name] = std::move(p));
}

void set_size_counters(benchmark::State& state, const size_summary& s) {
  state.counters["bits_per_weight"] = s.bits_per_weight();
  state.counters["entropy_bound"] = s.entropy_bound();
  state.counters["ideal"] = s.ideal();
  state.counters["overhead"] = s.overhead();
  state.counters["ratio"] = s.ratio();
}

void set_bytes(benchmark::State& state, const prepared_input& p) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(p.data.size_bytes()));
  state.counters["input_MB"] = static_cast<double>(p.data.size_bytes()) / 1e6;
  state.counters["bundles"] = static_cast<double>(p.data.bundles.size());
}

unsigned threads_arg(const benchmark::State& state) {
  return static_cast<unsigned>(state.range(0));
}

void bm_memcpy(benchmark::State& state, std::size_t index) {
  prepared_input& p = input(index);
  const unsigned threads = threads_arg(state);
  const std::size_t total = p.data.values.size();
  for (auto _ : state) {
    floatzip::detail::parallel_for(threads, threads, [&](std::size_t t) {
      const std::size_t begin = total * t / threads;
      const std::size_t end = total * (t + 1) / threads;
      std::memcpy(p.output.data() + begin, p.data.values.data() + begin, (end - begin) * 2);
    });
    benchmark::DoNotOptimize(p.output.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, p);
}

// Both passes into one reused buffer (make_encode_plan + encode_bundle), as a writer that owns
// its output memory does: the codec's own speed, like decode into a preallocated buffer.
void bm_encode(benchmark::State& state, std::size_t index) {
  prepared_input& p = input(index);
  floatzip::encode_options options;
  options.threads = threads_arg(state);
  std::uint64_t largest = 0;
  for (const auto& bundle : p.bundles) largest = std::max<std::uint64_t>(largest, bundle.size());
  std::vector<std::byte> buffer(largest);
  std::uint64_t compressed = 0;
  for (auto _ : state) {
    compressed = 0;
    for (const auto& b : p.data.bundles) {
      const floatzip::encode_plan plan = floatzip::make_encode_plan(b.tensors, options);
      if (plan.encoded_size() > buffer.size()) buffer.resize(plan.encoded_size());
      if (auto e = floatzip::encode_bundle(plan, buffer)) {
        state.SkipWithError(e.message.c_str());
        return;
      }
      compressed += plan.encoded_size();
      benchmark::DoNotOptimize(buffer.data());
    }
  }
  if (compressed != p.sizes.compressed_bytes) {
    state.SkipWithError("encoded size differs from compress_bundle's");
    return;
  }
  set_bytes(state, p);
  set_size_counters(state, p.sizes);
}

// compress_bundle: the same plus a fresh zeroed std::vector per bundle (allocation, page faults
// and zeroing of ~0.68 x the input).
void bm_encode_alloc(benchmark::State& state, std::size_t index) {
  prepared_input& p = input(index);
  floatzip::encode_options options;
  options.threads = threads_arg(state);
  std::uint64_t compressed = 0;
  for (auto _ : state) {
    compressed = 0;
    for (const auto& b : p.data.bundles) {
      const std::vector<std::byte> bundle = floatzip::compress_bundle(b.tensors, options);
      compressed += bundle.size();
      benchmark::DoNotOptimize(bundle.data());
    }
  }
  if (compressed != p.sizes.compressed_bytes) {
    state.SkipWithError("encoded size differs between thread counts");
    return;
  }
  set_bytes(state, p);
  set_size_counters(state, p.sizes);
}

void bm_decode(benchmark::State& state, std::size_t index) {
  prepared_input& p = input(index);
  floatzip::decode_options options;
  options.threads = threads_arg(state);
  for (auto _ : state) {
    for (std::size_t b = 0; b < p.views.size(); ++b) {
      auto out = std::span<std::uint16_t>(p.output).subspan(p.bundle_first[b]);
      if (auto e = floatzip::decompress(p.views[b], out, options)) {
        state.SkipWithError(e.message.c_str());
        return;
      }
    }
    benchmark::DoNotOptimize(p.output.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, p);
  set_size_counters(state, p.sizes);
}

void bm_zstd1_compress(benchmark::State& state, std::size_t index) {
  prepared_input& p = input(index);
  const unsigned threads = threads_arg(state);
  std::vector<ZSTD_CCtx*> contexts(threads);
  for (auto& c : contexts) c = ZSTD_createCCtx();
  std::vector<std::vector<char>> frames(p.data.bundles.size());
  for (std::size_t b = 0; b < frames.size(); ++b) {
    frames[b].resize(ZSTD_compressBound(p.data.bundles[b].all.size_bytes()));
  }
  std::vector<std::size_t> sizes(frames.size());
  // Bundles go to threads in fixed stripes so each thread owns one context.
  for (auto _ : state) {
    floatzip::detail::parallel_for(threads, threads, [&](std::size_t t) {
      for (std::size_t b = t; b < frames.size(); b += threads) {
        const auto& in = p.data.bundles[b].all;
        sizes[b] = ZSTD_compressCCtx(contexts[t], frames[b].data(), frames[b].size(), in.data(),
                                     in.size_bytes(), 1);
      }
    });
  }
  std::uint64_t total = 0;
  for (std::size_t s : sizes) {
    if (ZSTD_isError(s)) {
      state.SkipWithError(ZSTD_getErrorName(s));
      break;
    }
    total += s;
  }
  for (auto& c : contexts) ZSTD_freeCCtx(c);
  set_bytes(state, p);
  state.counters["ratio"] = static_cast<double>(total) / static_cast<double>(p.data.size_bytes());
  state.counters["bits_per_weight"] = 16.0 * state.counters["ratio"];
}

void bm_zstd_decompress(benchmark::State& state, std::size_t index) {
  prepared_input& p = input(index);
  const unsigned threads = threads_arg(state);
  std::vector<ZSTD_DCtx*> contexts(threads);
  for (auto& c : contexts) c = ZSTD_createDCtx();
  std::vector<std::size_t> sizes(p.zstd_frames.size());
  for (auto _ : state) {
    floatzip::detail::parallel_for(threads, threads, [&](std::size_t t) {
      for (std::size_t b = t; b < p.zstd_frames.size(); b += threads) {
        const auto& frame = p.zstd_frames[b];
        sizes[b] =
            ZSTD_decompressDCtx(contexts[t], p.output.data() + p.bundle_first[b],
                                p.data.bundles[b].all.size_bytes(), frame.data(), frame.size());
      }
    });
    benchmark::DoNotOptimize(p.output.data());
    benchmark::ClobberMemory();
  }
  for (std::size_t b = 0; b < sizes.size(); ++b) {
    if (sizes[b] != p.data.bundles[b].all.size_bytes()) {
      state.SkipWithError("zstd decompression failed");
      break;
    }
  }
  for (auto& c : contexts) ZSTD_freeDCtx(c);
  set_bytes(state, p);
  state.counters["ratio"] =
      static_cast<double>(p.zstd_bytes) / static_cast<double>(p.data.size_bytes());
}

// Level 19 is far too slow for the whole input; its ratio on a prefix shows what zstd's best can
// do, next to level 1 and floatzip (one bundle) on the same prefix.
void bm_zstd19_ratio(benchmark::State& state, std::size_t index) {
  prepared_input& p = input(index);
  const std::size_t sample_values =
      std::min<std::size_t>(p.data.values.size(), kRatioSampleBytes / 2);
  const std::span<const std::uint16_t> sample(p.data.values.data(), sample_values);
  std::vector<char> frame(ZSTD_compressBound(sample.size_bytes()));
  std::size_t level19 = 0;
  for (auto _ : state) {
    level19 = ZSTD_compress(frame.data(), frame.size(), sample.data(), sample.size_bytes(), 19);
  }
  const std::size_t level1 =
      ZSTD_compress(frame.data(), frame.size(), sample.data(), sample.size_bytes(), 1);
  if (ZSTD_isError(level19) || ZSTD_isError(level1)) {
    state.SkipWithError("zstd compression failed");
    return;
  }
  const double bytes = static_cast<double>(sample.size_bytes());
  const std::uint64_t fz = floatzip::compress_bundle(sample).size();
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(sample.size_bytes()));
  state.counters["sample_MB"] = bytes / 1e6;
  state.counters["zstd19_ratio"] = static_cast<double>(level19) / bytes;
  state.counters["zstd1_ratio"] = static_cast<double>(level1) / bytes;
  state.counters["floatzip_ratio"] = static_cast<double>(fz) / bytes;
}

// ---- every value format
// --------------------------------------------------------------------------

// The synthetic checkpoint in one value format: its BF16 values widened to FP32 with pseudo-random
// low mantissa bits (nearly uniform, as an FP32 checkpoint's are), then rounded to FP16 or
// quantised to FP8 with a per-tensor scale (tests/float_conversions.hpp); bf16_in_fp32 is the BF16
// values widened, bf16_in_fp16 the BF16 values rounded to FP16 (a BF16 checkpoint saved as F16),
// bf16 the values themselves.
struct format_input {
  floatzip::value_format format = floatzip::value_format::bf16;
  std::vector<std::vector<std::vector<std::byte>>> tensors;  // per bundle
  std::vector<std::vector<std::span<const std::byte>>> spans;
  std::vector<std::uint64_t> bundle_first_byte;
  std::vector<std::vector<std::byte>> bundles;
  std::vector<floatzip::bundle_view> views;
  std::uint64_t total_bytes = 0;
  std::uint64_t compressed_bytes = 0;
  std::vector<std::byte> output;  // decode target, pages already touched
};

std::unique_ptr<format_input> g_format_input;

std::vector<std::byte> convert_tensor(std::span<const std::uint16_t> bf16, std::uint64_t salt,
                                      floatzip::value_format f) {
  using floatzip::value_format;
  namespace test = floatzip::test;
  std::vector<float> wide(bf16.size());
  for (std::size_t i = 0; i < bf16.size(); ++i) {
    const std::uint32_t low = static_cast<std::uint32_t>(
        floatzip::bench::splitmix64_mix(salt + i * floatzip::bench::kGoldenGamma) & 0xFFFF);
    wide[i] = std::bit_cast<float>(std::uint32_t{bf16[i]} << 16 | low);
  }
  auto bytes_of = [](const auto& v) {
    std::vector<std::byte> out(v.size() * sizeof(v[0]));
    std::memcpy(out.data(), v.data(), out.size());
    return out;
  };
  switch (f) {
    case value_format::bf16: return bytes_of(std::vector<std::uint16_t>(bf16.begin(), bf16.end()));
    case value_format::fp16: {
      std::vector<std::uint16_t> v(wide.size());
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = test::float_to_fp16(wide[i]);
      return bytes_of(v);
    }
    case value_format::fp32: return bytes_of(wide);
    case value_format::bf16_in_fp32: {
      std::vector<std::uint32_t> v(bf16.size());
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = std::uint32_t{bf16[i]} << 16;
      return bytes_of(v);
    }
    case value_format::fp8_e4m3: return bytes_of(test::quantise_fp8(wide, test::fp8_kind::e4m3));
    case value_format::fp8_e5m2: return bytes_of(test::quantise_fp8(wide, test::fp8_kind::e5m2));
    case value_format::bf16_in_fp16: {
      std::vector<std::uint16_t> v(bf16.size());
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = test::bf16_to_fp16(bf16[i]);
      return bytes_of(v);
    }
  }
  return {};
}

format_input& format_data(std::size_t synth_index, floatzip::value_format f) {
  if (g_format_input && g_format_input->format == f) return *g_format_input;
  g_format_input.reset();
  const prepared_input& source = input(synth_index);
  auto p = std::make_unique<format_input>();
  p->format = f;
  std::uint64_t salt = 0;
  for (const auto& b : source.data.bundles) {
    auto& tensors = p->tensors.emplace_back();
    for (const auto& t : b.tensors) tensors.push_back(convert_tensor(t, salt += 1u << 30, f));
    p->spans.emplace_back(tensors.begin(), tensors.end());
    p->bundle_first_byte.push_back(p->total_bytes);
    for (const auto& t : tensors) p->total_bytes += t.size();
    p->bundles.push_back(floatzip::compress_bundle(f, p->spans.back()));
    p->views.push_back(floatzip::parse_bundle(p->bundles.back()).value());
    p->compressed_bytes += p->bundles.back().size();
  }
  p->output.assign(p->total_bytes, std::byte{0});
  for (std::size_t b = 0; b < p->views.size(); ++b) {
    auto out = std::span<std::byte>(p->output).subspan(p->bundle_first_byte[b]);
    if (auto e = floatzip::decompress(p->views[b], out)) throw floatzip::exception(e);
    std::uint64_t at = p->bundle_first_byte[b];
    for (const auto& t : p->tensors[b]) {
      if (std::memcmp(p->output.data() + at, t.data(), t.size()) != 0) {
        throw std::runtime_error(std::string(to_string(f)) + ": decoded values differ");
      }
      at += t.size();
    }
  }
  g_format_input = std::move(p);
  return *g_format_input;
}

void set_format_counters(benchmark::State& state, const format_input& p) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(p.total_bytes));
  state.counters["input_MB"] = static_cast<double>(p.total_bytes) / 1e6;
  state.counters["ratio"] =
      static_cast<double>(p.compressed_bytes) / static_cast<double>(p.total_bytes);
}

void bm_encode_format(benchmark::State& state, std::size_t synth_index, floatzip::value_format f) {
  format_input& p = format_data(synth_index, f);
  floatzip::encode_options options;
  options.threads = threads_arg(state);
  std::uint64_t largest = 0;
  for (const auto& bundle : p.bundles) largest = std::max<std::uint64_t>(largest, bundle.size());
  std::vector<std::byte> buffer(largest);
  for (auto _ : state) {
    for (const auto& spans : p.spans) {
      const floatzip::encode_plan plan = floatzip::make_encode_plan(f, spans, options);
      if (auto e = floatzip::encode_bundle(plan, buffer)) {
        state.SkipWithError(e.message.c_str());
        return;
      }
      benchmark::DoNotOptimize(buffer.data());
    }
  }
  set_format_counters(state, p);
}

void bm_decode_format(benchmark::State& state, std::size_t synth_index, floatzip::value_format f) {
  format_input& p = format_data(synth_index, f);
  floatzip::decode_options options;
  options.threads = threads_arg(state);
  for (auto _ : state) {
    for (std::size_t b = 0; b < p.views.size(); ++b) {
      auto out = std::span<std::byte>(p.output).subspan(p.bundle_first_byte[b]);
      if (auto e = floatzip::decompress(p.views[b], out, options)) {
        state.SkipWithError(e.message.c_str());
        return;
      }
    }
    benchmark::DoNotOptimize(p.output.data());
    benchmark::ClobberMemory();
  }
  set_format_counters(state, p);
}

void register_formats(const std::string& synth_name, std::size_t synth_index) {
  const int all = static_cast<int>(floatzip::detail::resolve_threads(0));
  for (unsigned i = 0; i < floatzip::kValueFormatCount; ++i) {
    const auto f = static_cast<floatzip::value_format>(i);
    const std::string suffix = std::string(to_string(f)) + "/" + synth_name;
    for (const bool encode : {true, false}) {
      auto* b = benchmark::RegisterBenchmark(
          ((encode ? "encode_format/" : "decode_format/") + suffix).c_str(),
          encode ? bm_encode_format : bm_decode_format, synth_index, f);
      b->ArgName("threads")->Arg(1);
      if (all > 1) b->Arg(all);
      b->UseRealTime()->Unit(benchmark::kMillisecond);
    }
  }
}

// small: the real models (< 2 MB), where 0.1 s per measurement is thousands of iterations.
void register_input(const std::string& name, bool small, std::function<dataset()> loader) {
  const std::size_t index = g_loaders.size();
  g_loaders.push_back(std::move(loader));
  g_input_names.push_back(name);
  const int all = static_cast<int>(floatzip::detail::resolve_threads(0));
  auto add = [&](const char* what, void (*fn)(benchmark::State&, std::size_t)) {
    auto* b = benchmark::RegisterBenchmark((std::string(what) + "/" + name).c_str(), fn, index);
    b->ArgName("threads")->Arg(1);
    if (all > 1) b->Arg(all);
    b->UseRealTime()->Unit(benchmark::kMillisecond);
    if (small) b->MinTime(0.1);
  };
  add("memcpy", bm_memcpy);
  add("encode", bm_encode);
  add("encode_alloc", bm_encode_alloc);
  add("decode", bm_decode);
  add("zstd1_compress", bm_zstd1_compress);
  add("zstd_decompress", bm_zstd_decompress);
  benchmark::RegisterBenchmark(("zstd19_ratio/" + name).c_str(), bm_zstd19_ratio, index)
      ->Iterations(1)
      ->Repetitions(1)  // level 19 takes ~10 s on 16 MB; its ratio does not vary
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

// Takes --synth_mb=N and --models_dir=DIR out of argv before Google Benchmark parses it.
void parse_own_flags(int& argc, char** argv) {
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with("--synth_mb=")) {
      g_synth_mb = std::strtoull(argv[i] + 11, nullptr, 10);
    } else if (arg.starts_with("--models_dir=")) {
      g_models_dir = argv[i] + 13;
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
}

}  // namespace

int main(int argc, char** argv) {
  parse_own_flags(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  if (g_synth_mb > 0) {
    // The name is known before generation: llama_dims_for_bytes fixes the size.
    const auto dims = floatzip::bench::llama_dims_for_bytes(g_synth_mb << 20);
    const std::uint64_t mb = (dims.value_count() * 2 + (1 << 19)) >> 20;
    const std::string name = "synth" + std::to_string(mb) + "MB";
    const std::size_t index = g_loaders.size();
    register_input(name, /*small=*/false, [] {
      return floatzip::bench::make_synthetic_dataset(g_synth_mb << 20, kSynthSeed);
    });
    register_formats(name, index);
  }
  const auto models = floatzip::bench::real_model_files(g_models_dir);
  if (models.empty()) {
    std::fprintf(stderr,
                 "floatzip_bench_codec: no *.bf16.safetensors in %s, skipping real models\n",
                 g_models_dir.c_str());
  }
  for (const auto& path : models) {
    std::string message;
    auto probe = floatzip::bench::load_safetensors_dataset(path, &message);
    if (!probe) {
      std::fprintf(stderr, "floatzip_bench_codec: skipping %s: %s\n", path.c_str(),
                   message.c_str());
      continue;
    }
    register_input(probe->name, /*small=*/true, [path] {
      std::string error_message;
      auto d = floatzip::bench::load_safetensors_dataset(path, &error_message);
      if (!d) throw std::runtime_error(error_message);
      return std::move(*d);
    });
  }
  benchmark::AddCustomContext("synthetic_input",
                              "Llama-7B-shaped, Student-t(5) weights at scales 0.01-0.04, seed " +
                                  std::to_string(kSynthSeed));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
