// Chooses encode_options defaults: for max_code_length x chunk_bytes, the size overhead over the
// ideal (unlimited Huffman code, no metadata) split into its sources, and the 1-thread CPU decode
// speed, on a synthetic Llama-shaped checkpoint and on the real models.
//
//   floatzip_sweep_params [synth_mb=256] [models_dir]
//
// Prints Markdown tables (bench/RESULTS.md quotes them). Every bundle is round-tripped and
// compared with its input, so a setting that breaks the codec cannot produce a number.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_data.hpp"
#include "floatzip/bundle_format.hpp"
#include "floatzip/decoder.hpp"
#include "floatzip/encoder.hpp"

namespace {

using floatzip::bench::bundle_input;
using floatzip::bench::dataset;

constexpr int kCodeLengths[] = {10, 11, 12, 13, 15};
constexpr std::uint32_t kChunkBytes[] = {32, 64, 128, 256};
// The 0.05 bits/weight budget applies to bundles of at least 1M values. The real models are far
// smaller; their transformer blocks (50K-110K values) are shown apart from the tiny 1-D bundles
// (final norm), whose fixed ~300 bytes say nothing about the parameters.
constexpr std::uint64_t kLargeBundleValues = 1'000'000;
constexpr std::uint64_t kRealBlockValues = 32'768;

// Overhead sources in bits, summed over bundles.
struct overhead_parts {
  std::uint64_t values = 0;
  double ideal_bits = 0;    // 8 * values + unlimited Huffman bits
  double length_limit = 0;  // stream bits - unlimited Huffman bits
  double chunk_gaps = 0;    // the 4-bit chunk start offsets
  double group_positions = 0;
  double fixed = 0;         // header, code lengths, tensor counts, alignment, stream padding
  double worst_bundle = 0;  // largest per-bundle overhead, bits/weight

  [[nodiscard]] double per_weight(double bits) const {
    return values == 0 ? 0 : bits / static_cast<double>(values);
  }
  [[nodiscard]] double total() const {
    return per_weight(length_limit + chunk_gaps + group_positions + fixed);
  }
};

struct sweep_cell {
  overhead_parts large;  // bundles of at least the given size
  overhead_parts all;
  double decode_gbps = 0;  // BF16 output bytes per second, 1 thread, best of 3
  double values_per_chunk = 0;
};

void add(overhead_parts& parts, const bundle_input& input, const floatzip::bundle_view& view,
         std::uint64_t unlimited_bits) {
  const auto& layout = view.layout();
  const double n = static_cast<double>(view.value_count());
  const double gaps = 8.0 * static_cast<double>((layout.chunk_count + 1) / 2);
  const double groups = 64.0 * static_cast<double>(layout.group_count);
  const double limit =
      static_cast<double>(view.stream_bits()) - static_cast<double>(unlimited_bits);
  const double total = 8.0 * static_cast<double>(view.size_bytes());
  const double ideal = 8.0 * n + static_cast<double>(unlimited_bits);
  parts.values += input.all.size();
  parts.ideal_bits += ideal;
  parts.length_limit += limit;
  parts.chunk_gaps += gaps;
  parts.group_positions += groups;
  parts.fixed += total - ideal - limit - gaps - groups;
  parts.worst_bundle = std::max(parts.worst_bundle, (total - ideal) / n);
}

sweep_cell measure(const dataset& data, int max_code_length, std::uint32_t chunk_bytes,
                   std::uint64_t large_values, bool time_decode) {
  floatzip::encode_options options;
  options.max_code_length = max_code_length;
  options.chunk_bytes = chunk_bytes;
  sweep_cell cell;
  std::vector<std::vector<std::byte>> bundles;
  std::vector<floatzip::bundle_view> views;
  double stream_bits = 0;
  for (const auto& b : data.bundles) {
    bundles.push_back(floatzip::compress_bundle(b.tensors, options));
    views.push_back(floatzip::parse_bundle(bundles.back()).value());
    const std::uint64_t unlimited = floatzip::bench::bounds_of(b).huffman_bits;
    add(cell.all, b, views.back(), unlimited);
    if (b.all.size() >= large_values) add(cell.large, b, views.back(), unlimited);
    stream_bits += static_cast<double>(views.back().stream_bits());
  }
  cell.values_per_chunk = static_cast<double>(data.values.size()) * 8.0 * chunk_bytes / stream_bits;

  std::vector<std::uint16_t> out(data.values.size());
  floatzip::decode_options decode;
  decode.threads = 1;
  double best = 1e30;
  for (int run = 0; run < (time_decode ? 3 : 1); ++run) {
    const auto start = std::chrono::steady_clock::now();
    std::uint64_t first = 0;
    for (const auto& view : views) {
      if (auto e =
              floatzip::decompress(view, std::span<std::uint16_t>(out).subspan(first), decode)) {
        throw floatzip::exception(e);
      }
      first += view.value_count();
    }
    best = std::min(
        best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  if (out != data.values) throw std::runtime_error(data.name + ": round trip differs");
  cell.decode_gbps = static_cast<double>(data.size_bytes()) / best / 1e9;
  return cell;
}

void print_table(const dataset& data, std::uint64_t large_values, bool with_speed) {
  std::uint64_t large_count = 0;
  for (const auto& b : data.bundles) large_count += b.all.size() >= large_values ? 1 : 0;
  std::printf("\n### %s: %zu bundles (%llu of >= %llu values), %.1f MB BF16\n\n", data.name.c_str(),
              data.bundles.size(), static_cast<unsigned long long>(large_count),
              static_cast<unsigned long long>(large_values),
              static_cast<double>(data.size_bytes()) / 1e6);
  std::printf("Columns limit .. overhead and worst: bundles >= %llu values. all: every bundle.\n\n",
              static_cast<unsigned long long>(large_values));
  std::printf(
      "| L | chunk B | values/chunk | limit | chunk gaps | group pos | fixed | **overhead** | "
      "worst bundle | all bundles |%s\n",
      with_speed ? " decode 1T GB/s |" : "");
  std::printf("|---|---|---|---|---|---|---|---|---|---|%s\n", with_speed ? "---|" : "");
  double ideal = 0;
  for (int length : kCodeLengths) {
    for (std::uint32_t chunk : kChunkBytes) {
      const sweep_cell cell = measure(data, length, chunk, large_values, with_speed);
      const overhead_parts& p = cell.large;
      ideal = p.per_weight(p.ideal_bits);
      std::printf("| %d | %u | %.0f | %.4f | %.4f | %.4f | %.4f | **%.4f** | %.4f | %.4f |", length,
                  chunk, cell.values_per_chunk, p.per_weight(p.length_limit),
                  p.per_weight(p.chunk_gaps), p.per_weight(p.group_positions),
                  p.per_weight(p.fixed), p.total(), p.worst_bundle, cell.all.total());
      if (with_speed) std::printf(" %.2f |", cell.decode_gbps);
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  std::printf("\nideal (8 + unlimited Huffman) of those bundles: %.4f bits/weight\n", ideal);
}

}  // namespace

int main(int argc, char** argv) {
  const std::uint64_t synth_mb = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 256;
  const std::filesystem::path models_dir = argc > 2 ? argv[2] : FLOATZIP_MODELS_DIR;
  std::printf(
      "Overheads in bits per weight over the ideal (8 + unlimited Huffman, no metadata).\n"
      "limit = length-limited code vs unlimited; chunk gaps = 4 bits per chunk; group pos = "
      "64 bits per group of 256 chunks;\nfixed = header, code lengths, tensor counts, "
      "section alignment, stream padding. chunks_per_group = 256.\n");
  if (synth_mb > 0) {
    const dataset synth = floatzip::bench::make_synthetic_dataset(synth_mb << 20, 42);
    print_table(synth, kLargeBundleValues, /*with_speed=*/true);
  }
  const auto models = floatzip::bench::real_model_files(models_dir);
  if (models.empty()) {
    std::printf("\n(no *.bf16.safetensors in %s: real models skipped)\n", models_dir.c_str());
  }
  for (const auto& path : models) {
    std::string message;
    auto data = floatzip::bench::load_safetensors_dataset(path, &message);
    if (!data) {
      std::printf("\n(skipping %s: %s)\n", path.c_str(), message.c_str());
      continue;
    }
    print_table(*data, kRealBlockValues, /*with_speed=*/false);
  }
  return 0;
}
