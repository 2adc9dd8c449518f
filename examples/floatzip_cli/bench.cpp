// floatzip bench: codec throughput on the BF16 bundles of a model file.
#include <fmt/core.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "cli.hpp"
#include "floatzip/container.hpp"
#include "floatzip/detail/parallel.hpp"
#include "gpu_bench.hpp"

namespace floatzip::cli {
namespace {

namespace fs = std::filesystem;

// One BF16 bundle's values, concatenated, and the sizes of its tensors.
struct bench_bundle {
  std::vector<std::uint16_t> values;
  std::vector<std::uint64_t> tensor_sizes;

  [[nodiscard]] std::vector<std::span<const std::uint16_t>> tensors() const {
    std::vector<std::span<const std::uint16_t>> out;
    std::uint64_t at = 0;
    for (std::uint64_t n : tensor_sizes) {
      out.emplace_back(values.data() + at, n);
      at += n;
    }
    return out;
  }
};

bool starts_with_container_magic(const detail::mapped_file& file) {
  return file.size() >= kContainerMagic.size() &&
         std::memcmp(file.bytes().data(), kContainerMagic.data(), kContainerMagic.size()) == 0;
}

// The BF16 bundles of a safetensors file, grouped as compression groups them.
result<std::vector<bench_bundle>> load_safetensors(const detail::mapped_file& file) {
  auto header = safetensors::parse_header(file.bytes(), file.size(), file.path().string());
  if (!header) return header.error();
  const auto plan = detail::plan_container(*header);
  const std::byte* data = file.bytes().data() + header->header_size();
  std::vector<bench_bundle> bundles;
  for (const auto& p : plan.bundles) {
    if (p.kind != bundle_kind::bf16_huffman) continue;
    bench_bundle b;
    for (std::uint32_t m : p.members) {
      const auto& t = plan.tensors[m];
      // The whole tensor, or this bundle's piece of a tensor split across bundles.
      const std::uint64_t bytes = p.piece_values != 0 ? 2 * p.piece_values : t.size_bytes();
      const std::size_t at = b.values.size();
      b.values.resize(at + bytes / 2);
      std::memcpy(b.values.data() + at, data + t.original.begin + 2 * p.piece_first, bytes);
      b.tensor_sizes.push_back(bytes / 2);
    }
    bundles.push_back(std::move(b));
  }
  return bundles;
}

// The BF16 bundles of a container, decoded.
result<std::vector<bench_bundle>> load_container(const fs::path& path) {
  auto reader = container_reader::open(path);
  if (!reader) return reader.error();
  std::vector<bench_bundle> bundles;
  for (std::uint32_t b = 0; b < reader->bundles().size(); ++b) {
    if (!reader->bundles()[b].is_bf16()) continue;
    bench_bundle bundle;
    bundle.values.resize(reader->bundles()[b].value_count);
    if (error e = reader->decode_bundle(b, bundle.values)) return e;
    for (std::uint32_t m : reader->bundle_tensors(b))
      bundle.tensor_sizes.push_back(reader->tensor_piece(b, reader->tensors()[m]).values);
    bundles.push_back(std::move(bundle));
  }
  return bundles;
}

template <class Work>
double best_seconds(int repeat, Work&& work) {
  double best = 0;
  for (int r = 0; r < repeat; ++r) {
    const stopwatch clock;
    work();
    const double s = clock.seconds();
    best = r == 0 ? s : std::min(best, s);
  }
  return best;
}

double gb_per_s(std::uint64_t bytes, double seconds) {
  return seconds > 0 ? double(bytes) / seconds / 1e9 : 0.0;
}

}  // namespace

int bench_command(const std::vector<std::string>& tokens) {
  const arguments args(tokens, {{"threads", 0, true}, {"repeat", 0, true}});
  args.expect_positionals(1, 1, "one model file (.safetensors or .fzip)");
  const fs::path input = args.positionals()[0];
  const unsigned threads =
      detail::resolve_threads(static_cast<unsigned>(args.unsigned_value("threads", 0, 1, 4096)));
  const int repeat = static_cast<int>(args.unsigned_value("repeat", 3, 1, 1000));

  auto file = detail::mapped_file::open(input);
  if (!file) return fail(file.error());
  auto loaded =
      starts_with_container_magic(*file) ? load_container(input) : load_safetensors(*file);
  if (!loaded) return fail(loaded.error());
  const std::vector<bench_bundle>& bundles = *loaded;
  if (bundles.empty()) return fail({errc::invalid_argument, input.string() + ": no BF16 tensors"});
  std::uint64_t values = 0;
  std::uint64_t largest = 0;
  for (const auto& b : bundles) {
    values += b.values.size();
    largest = std::max<std::uint64_t>(largest, b.values.size());
  }
  const std::uint64_t bf16_bytes = 2 * values;

  fmt::print("{}: {} BF16 bundles, {} values ({}); best of {} runs\n", input.string(),
             bundles.size(), values, human_bytes(double(bf16_bytes)), repeat);

  // Baseline in the same run: copying the same bytes once.
  std::vector<std::uint16_t> sink(largest);
  const double memcpy_seconds = best_seconds(repeat, [&] {
    for (const auto& b : bundles)
      std::memcpy(sink.data(), b.values.data(), b.values.size() * sizeof(std::uint16_t));
  });
  fmt::print("  memcpy of the BF16 bytes (1 thread): {:.2f} GB/s\n",
             gb_per_s(bf16_bytes, memcpy_seconds));

  std::vector<unsigned> thread_counts = {1};
  if (threads > 1) thread_counts.push_back(threads);
  std::vector<std::vector<std::byte>> encoded(bundles.size());
  std::uint64_t encoded_bytes = 0;
  fmt::print("  {:>7}  {:>15}  {:>15}\n", "threads", "encode GB/s", "decode GB/s");
  for (unsigned t : thread_counts) {
    encode_options eopts;
    eopts.threads = t;
    const double encode_seconds = best_seconds(repeat, [&] {
      for (std::size_t i = 0; i < bundles.size(); ++i) {
        const auto tensors = bundles[i].tensors();
        encoded[i] = compress_bundle(tensors, eopts);
      }
    });
    std::vector<bundle_view> views;
    encoded_bytes = 0;
    for (const auto& e : encoded) {
      auto view = parse_bundle(e);
      if (!view) return fail(view.error());
      views.push_back(*view);
      encoded_bytes += e.size();
    }
    error decode_error;
    const double decode_seconds = best_seconds(repeat, [&] {
      for (const auto& v : views)
        if (error e = decompress(v, std::span(sink).first(v.value_count()), {t})) decode_error = e;
    });
    if (decode_error) return fail(decode_error);
    fmt::print("  {:>7}  {:>15.2f}  {:>15.2f}\n", t, gb_per_s(bf16_bytes, encode_seconds),
               gb_per_s(bf16_bytes, decode_seconds));
  }
  fmt::print("  bundles: {:.3f} bits per BF16 weight, ratio {:.4f} (throughput is in BF16 bytes)\n",
             8.0 * double(encoded_bytes) / double(values),
             double(encoded_bytes) / double(bf16_bytes));

  // The GPU figures are medians, which need a few more runs than the CPU's best-of.
  const int gpu_runs = std::max(repeat, 5);
  auto gpu = measure_gpu_decode(encoded, gpu_runs);
  if (gpu)
    fmt::print(
        "  GPU {}: decode {:.1f} GB/s, device copy of the BF16 bytes {:.1f} GB/s "
        "(decode/copy time {:.2f}; median of {} runs)\n",
        gpu->device, gpu->decode_gb_per_s, gpu->copy_gb_per_s,
        gpu->copy_gb_per_s / gpu->decode_gb_per_s, gpu_runs);
  else
    fmt::print("  GPU: not measured ({})\n", gpu.error().message);
  return kExitOk;
}

}  // namespace floatzip::cli
