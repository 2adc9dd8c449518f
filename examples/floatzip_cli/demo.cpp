// floatzip demo: the whole job on a generated checkpoint, with no input needed.
#include <fmt/core.h>
#include <stdlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

// The benchmarks' generator, so that the demo's checkpoint is the kind bench/RESULTS.md measured.
#include "../../bench/llama_synth.hpp"
#include "cli.hpp"
#include "floatzip/container.hpp"
#include "floatzip/detail/parallel.hpp"
#include "floatzip/safetensors.hpp"

namespace floatzip::cli {
namespace {

namespace fs = std::filesystem;

// The demo's working directory: a fresh temporary one removed at the end, or the user's --keep.
class work_directory {
 public:
  work_directory(const work_directory&) = delete;
  work_directory& operator=(const work_directory&) = delete;
  static result<work_directory> create(const std::optional<std::string>& keep) {
    work_directory dir;
    std::error_code ec;
    if (keep) {
      fs::create_directories(*keep, ec);
      if (ec) return error{errc::io_error, "cannot create " + *keep + ": " + ec.message()};
      dir.path_ = *keep;
      return dir;
    }
    std::string name = (fs::temp_directory_path(ec) / "floatzip-demo.XXXXXX").string();
    if (ec || ::mkdtemp(name.data()) == nullptr)
      return error{errc::io_error, "cannot create a temporary directory in " +
                                       fs::temp_directory_path(ec).string()};
    dir.path_ = name;
    dir.remove_ = true;
    return dir;
  }
  work_directory(work_directory&& other) noexcept
      : path_(std::move(other.path_)), remove_(std::exchange(other.remove_, false)) {}
  ~work_directory() {
    if (!remove_) return;
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  work_directory() = default;
  fs::path path_;
  bool remove_ = false;
};

double gb_per_s(std::uint64_t bytes, double seconds) {
  return seconds > 0 ? double(bytes) / seconds / 1e9 : 0.0;
}

// Decodes every BF16 bundle into memory: the codec's throughput without file I/O. Best of
// `repeat` passes; pages of the container are already in the page cache after verification.
result<double> in_memory_decode_seconds(const container_reader& reader, unsigned threads,
                                        int repeat) {
  std::uint64_t largest = 0;
  for (const auto& b : reader.bundles())
    if (b.is_bf16()) largest = std::max(largest, b.value_count);
  std::vector<std::uint16_t> out(largest);
  std::vector<bundle_view> views;
  for (std::uint32_t b = 0; b < reader.bundles().size(); ++b) {
    if (!reader.bundles()[b].is_bf16()) continue;
    auto view = reader.bundle(b);
    if (!view) return view.error();
    views.push_back(*view);
  }
  double best = 0;
  for (int r = 0; r < repeat; ++r) {
    const stopwatch clock;
    for (const auto& v : views)
      if (error e = decompress(v, std::span(out).first(v.value_count()), {threads})) return e;
    const double s = clock.seconds();
    best = r == 0 ? s : std::min(best, s);
  }
  return best;
}

// Writes the checkpoint as a safetensors file, one tensor in memory at a time, each filled in
// slices of 1 Mi values spread over the threads. An interrupt abandons the file (nothing is left
// behind).
error write_llama_checkpoint(const fs::path& path, const bench::llama_dims& dims,
                             std::uint64_t seed, unsigned threads) {
  const std::vector<bench::llama_tensor_plan> plans = bench::llama_tensor_plans(dims, seed);
  std::vector<safetensors::tensor_spec> specs;
  specs.reserve(plans.size());
  for (const auto& plan : plans) specs.push_back({plan.name, safetensors::dtype::bf16, plan.shape});
  const std::vector<std::pair<std::string, std::string>> metadata = {
      {"format", "pt"},
      {"generator", "floatzip demo: Student-t weights (nu = 5), per-matrix scales 0.01-0.04"},
      {"seed", std::to_string(seed)}};
  std::vector<std::uint16_t> values;
  return safetensors::write_file(
      path, specs, metadata, [&](std::size_t i, std::span<std::byte> bytes) -> error {
        if (g_interrupted != 0) return error{errc::io_error, "interrupted"};
        constexpr std::size_t kSlice = std::size_t{1} << 20;
        values.resize(bytes.size() / 2);
        const std::size_t slices = (values.size() + kSlice - 1) / kSlice;
        detail::parallel_for(slices, detail::resolve_threads(threads), [&](std::size_t s) {
          const std::size_t first = s * kSlice;
          const std::size_t count = std::min(kSlice, values.size() - first);
          plans[i].fill(std::span(values).subspan(first, count), first);
        });
        std::memcpy(bytes.data(), values.data(), bytes.size());
        return {};
      });
}

bool same_bytes(const fs::path& a, const fs::path& b) {
  auto fa = detail::mapped_file::open(a);
  auto fb = detail::mapped_file::open(b);
  return fa && fb && fa->size() == fb->size() &&
         std::memcmp(fa->bytes().data(), fb->bytes().data(), fa->size()) == 0;
}

}  // namespace

int demo_command(const std::vector<std::string>& tokens) {
  const arguments args(
      tokens, {{"size-mb", 0, true}, {"seed", 0, true}, {"threads", 0, true}, {"keep", 0, true}});
  args.expect_positionals(0, 0, "no positional arguments");
  const std::uint64_t size_mb = args.unsigned_value("size-mb", 256, 1, 1'000'000);
  const std::uint64_t seed = args.unsigned_value("seed", 1, 0, ~std::uint64_t{0});
  const unsigned threads = static_cast<unsigned>(args.unsigned_value("threads", 0, 1, 4096));
  const unsigned used_threads = detail::resolve_threads(threads);

  auto dir = work_directory::create(args.value("keep"));
  if (!dir) return fail(dir.error());
  const fs::path original = dir->path() / "llama.safetensors";
  const fs::path compressed = dir->path() / "llama.fzip";
  const fs::path restored = dir->path() / "llama.restored.safetensors";

  const bench::llama_dims dims = bench::llama_dims_for_bytes(size_mb * 1'000'000);
  fmt::print(
      "floatzip demo: Llama-shaped checkpoint (Llama-7B proportions), hidden {}, {} layers, "
      "MLP {}, vocab {}\n  {:.1f} M BF16 weights: Student-t (nu = 5) at per-matrix scales "
      "0.01-0.04, seed {}; {} threads\n  files in {}{}\n\n",
      dims.hidden, dims.layers, dims.intermediate, dims.vocab, double(dims.value_count()) / 1e6,
      seed, used_threads, dir->path().string(), args.value("keep") ? "" : " (removed at exit)");
  std::fflush(stdout);

  const stopwatch generate_clock;
  if (error e = write_llama_checkpoint(original, dims, seed, threads)) return fail(e);
  const double generate_seconds = generate_clock.seconds();

  compress_options copts;
  copts.codec.threads = threads;
  container_totals totals;
  double compress_seconds = 0;
  {
    progress_bar bar("compress");
    copts.progress = [&](std::uint64_t done, std::uint64_t total) { bar.update(done, total); };
    const stopwatch clock;
    auto t = compress_file(original, compressed, copts);
    compress_seconds = clock.seconds();
    if (!t) return fail(t.error());
    totals = *t;
  }

  decompress_options dopts;
  dopts.codec.threads = threads;
  double decompress_seconds = 0;
  {
    progress_bar bar("decompress");
    dopts.progress = [&](std::uint64_t done, std::uint64_t total) { bar.update(done, total); };
    const stopwatch clock;
    if (error e = decompress_file(compressed, restored, dopts)) return fail(e);
    decompress_seconds = clock.seconds();
  }

  double verify_seconds = 0;
  {
    progress_bar bar("verify");
    dopts.progress = [&](std::uint64_t done, std::uint64_t total) { bar.update(done, total); };
    const stopwatch clock;
    if (error e = verify_file(original, compressed, dopts)) {
      bar.finish();
      fmt::print(stderr, "floatzip demo: verification FAILED\n");
      return fail(e);
    }
    verify_seconds = clock.seconds();
  }
  const bool restored_identical = same_bytes(original, restored);

  auto reader = container_reader::open(compressed);
  if (!reader) return fail(reader.error());
  auto decode_seconds = in_memory_decode_seconds(*reader, threads, 3);
  if (!decode_seconds) return fail(decode_seconds.error());

  const double bits = totals.bits_per_bf16_value();
  const double bound = totals.entropy_bound_bits_per_value();
  const double ideal = totals.huffman_ideal_bits_per_value();
  const std::uint64_t bf16_bytes = 2 * totals.bf16_values;
  fmt::print("  {:<34} {:>12}\n", "original (safetensors, BF16)",
             human_bytes(double(totals.original_bytes)));
  fmt::print("  {:<34} {:>12}\n", "compressed (.fzip)", human_bytes(double(totals.file_bytes)));
  fmt::print("  {:<34} {:>12.4f}   ({:.2f} % of the original)\n", "ratio", totals.ratio(),
             100 * totals.ratio());
  fmt::print("  {:<34} {:>12.3f}\n", "bits per BF16 weight", bits);
  fmt::print("  {:<34} {:>12.3f}   (exponent entropy {:.3f} bits + 8 raw bits)\n",
             "  entropy bound", bound, bound - 8);
  fmt::print("  {:<34} {:>12.3f}   (exponents Huffman-coded per tensor, no metadata)\n",
             "  unlimited-Huffman ideal", ideal);
  fmt::print("  {:<34} {:>+12.3f}   bits per weight (length limit, sync metadata, headers)\n",
             "  floatzip over the ideal", bits - ideal);
  fmt::print("  {:<34} {:>10.2f} s   {:.2f} GB/s\n", "generate checkpoint", generate_seconds,
             gb_per_s(totals.original_bytes, generate_seconds));
  fmt::print("  {:<34} {:>10.2f} s   {:.2f} GB/s\n", "compress   (file -> file)", compress_seconds,
             gb_per_s(totals.original_bytes, compress_seconds));
  fmt::print("  {:<34} {:>10.2f} s   {:.2f} GB/s\n", "decompress (file -> file)",
             decompress_seconds, gb_per_s(totals.original_bytes, decompress_seconds));
  fmt::print("  {:<34} {:>10.2f} s   {:.2f} GB/s of BF16 output\n",
             "decode     (in memory, best of 3)", *decode_seconds,
             gb_per_s(bf16_bytes, *decode_seconds));
  fmt::print(
      "  {:<34} {:>10.2f} s   {}\n", "verify (decode + compare)", verify_seconds,
      restored_identical ? "bit-identical, every checksum checked" : "restored file DIFFERS");
  return restored_identical ? kExitOk : kExitFailure;
}

}  // namespace floatzip::cli
