// floatzip bench: codec throughput on the float bundles (every value format) of a model file.
#include <fmt/core.h>

#include <algorithm>
#include <array>
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

// One bundle's values (any value format), concatenated as bytes, and the sizes of its tensors.
struct bench_bundle {
  value_format format = value_format::bf16;
  std::vector<std::byte> bytes;
  std::vector<std::uint64_t> tensor_bytes;

  [[nodiscard]] std::vector<std::span<const std::byte>> tensors() const {
    std::vector<std::span<const std::byte>> out;
    std::uint64_t at = 0;
    for (std::uint64_t n : tensor_bytes) {
      out.emplace_back(bytes.data() + at, n);
      at += n;
    }
    return out;
  }
};

bool starts_with_container_magic(const detail::mapped_file& file) {
  return file.size() >= kContainerMagic.size() &&
         std::memcmp(file.bytes().data(), kContainerMagic.data(), kContainerMagic.size()) == 0;
}

// The float bundles of a safetensors file, grouped and formatted as compression does.
result<std::vector<bench_bundle>> load_safetensors(const detail::mapped_file& file) {
  auto header = safetensors::parse_header(file.bytes(), file.size(), file.path().string());
  if (!header) return header.error();
  const std::byte* data = file.bytes().data() + header->header_size();
  const auto plan = detail::plan_container(
      *header, {}, kMaxBundleValuesDefault,
      [&](const safetensors::tensor_info& info) -> std::optional<value_format> {
        return container_format_of(
            info.type, holds_bf16_values(info.type, {data + info.data.begin, info.size_bytes()}));
      });
  std::vector<bench_bundle> bundles;
  for (const auto& p : plan.bundles) {
    if (p.kind != bundle_kind::huffman) continue;
    bench_bundle b;
    b.format = p.format;
    const std::uint64_t width = value_bytes(p.format);
    for (std::uint32_t m : p.members) {
      const auto& t = plan.tensors[m];
      // The whole tensor, or this bundle's piece of a tensor split across bundles.
      const std::uint64_t bytes = p.piece_values != 0 ? width * p.piece_values : t.size_bytes();
      const std::byte* from = data + t.original.begin + width * p.piece_first;
      b.bytes.insert(b.bytes.end(), from, from + bytes);
      b.tensor_bytes.push_back(bytes);
    }
    bundles.push_back(std::move(b));
  }
  return bundles;
}

// The float bundles of a container, decoded.
result<std::vector<bench_bundle>> load_container(const fs::path& path) {
  auto reader = container_reader::open(path);
  if (!reader) return reader.error();
  std::vector<bench_bundle> bundles;
  for (std::uint32_t b = 0; b < reader->bundles().size(); ++b) {
    const auto& rec = reader->bundles()[b];
    if (!rec.has_values()) continue;
    bench_bundle bundle;
    bundle.format = rec.format;
    bundle.bytes.resize(rec.decoded_bytes);
    if (error e = reader->decode_bundle(b, bundle.bytes)) return e;
    for (std::uint32_t m : reader->bundle_tensors(b))
      bundle.tensor_bytes.push_back(value_bytes(rec.format) *
                                    reader->tensor_piece(b, reader->tensors()[m]).values);
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
  if (bundles.empty())
    return fail({errc::invalid_argument, input.string() + ": no float tensors to code"});
  std::uint64_t values = 0;
  std::uint64_t original_bytes = 0;
  std::uint64_t largest = 0;
  std::array<std::uint64_t, kValueFormatCount> format_values{};
  for (const auto& b : bundles) {
    const std::uint64_t n = b.bytes.size() / value_bytes(b.format);
    values += n;
    format_values[static_cast<std::size_t>(b.format)] += n;
    original_bytes += b.bytes.size();
    largest = std::max<std::uint64_t>(largest, b.bytes.size());
  }
  std::string formats;
  for (unsigned f = 0; f < kValueFormatCount; ++f)
    if (format_values[f] != 0)
      formats += fmt::format("{}{} {}", formats.empty() ? "" : ", ", format_values[f],
                             to_string(static_cast<value_format>(f)));

  fmt::print("{}: {} bundles, {} values ({}; {}); best of {} runs\n", input.string(),
             bundles.size(), values, formats, human_bytes(double(original_bytes)), repeat);

  // Baseline in the same run: copying the same bytes once.
  std::vector<std::byte> sink(largest);
  const double memcpy_seconds = best_seconds(repeat, [&] {
    for (const auto& b : bundles) std::memcpy(sink.data(), b.bytes.data(), b.bytes.size());
  });
  fmt::print("  memcpy of the values' bytes (1 thread): {:.2f} GB/s\n",
             gb_per_s(original_bytes, memcpy_seconds));

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
        encoded[i] = compress_bundle(bundles[i].format, tensors, eopts);
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
        if (error e = decompress(v, std::span(sink), {t})) decode_error = e;
    });
    if (decode_error) return fail(decode_error);
    fmt::print("  {:>7}  {:>15.2f}  {:>15.2f}\n", t, gb_per_s(original_bytes, encode_seconds),
               gb_per_s(original_bytes, decode_seconds));
  }
  fmt::print(
      "  bundles: {:.3f} bits per value, ratio {:.4f} (throughput is in bytes of the values)\n",
      8.0 * double(encoded_bytes) / double(values), double(encoded_bytes) / double(original_bytes));

  // The GPU decoder takes BF16 bundles.
  std::vector<std::vector<std::byte>> bf16_encoded;
  for (std::size_t i = 0; i < bundles.size(); ++i)
    if (bundles[i].format == value_format::bf16) bf16_encoded.push_back(encoded[i]);
  // The GPU figures are medians, which need a few more runs than the CPU's best-of.
  const int gpu_runs = std::max(repeat, 5);
  auto gpu = bf16_encoded.empty()
                 ? result<gpu_decode_measurement>(error{errc::invalid_argument, "no BF16 bundles"})
                 : measure_gpu_decode(bf16_encoded, gpu_runs);
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
