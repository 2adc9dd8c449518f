// floatzip benchmarks: the inputs (synthetic and real checkpoints, cut into bundles the way the
// container cuts them) and the size statistics every benchmark reports.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "floatzip/detail/file_io.hpp"
#include "floatzip/encoder.hpp"
#include "floatzip/huffman.hpp"
#include "floatzip/safetensors.hpp"
#include "llama_synth.hpp"

namespace floatzip::bench {

// The tensors of one bundle, as spans into dataset::values (consecutive, so `all` covers them).
struct bundle_input {
  std::string name;
  std::vector<std::span<const std::uint16_t>> tensors;
  std::span<const std::uint16_t> all;
};

// A checkpoint's BF16 values in one buffer, bundle after bundle. One buffer makes the baselines
// (memcpy, zstd) see exactly the bytes floatzip sees, contiguous per bundle.
struct dataset {
  std::string name;
  std::vector<std::uint16_t> values;
  std::vector<bundle_input> bundles;

  [[nodiscard]] std::uint64_t size_bytes() const noexcept { return values.size() * 2; }
};

// "...layers.N." of a Hugging Face tensor name, or empty: the container's bundle grouping (every
// tensor of one transformer block shares a code; any other tensor is a bundle of its own).
inline std::string_view block_prefix(std::string_view name) noexcept {
  for (std::size_t at = name.find("layers."); at != std::string_view::npos;
       at = name.find("layers.", at + 1)) {
    if (at != 0 && name[at - 1] != '.') continue;
    std::size_t end = at + 7;
    while (end < name.size() && name[end] >= '0' && name[end] <= '9') ++end;
    if (end > at + 7 && end < name.size() && name[end] == '.') return name.substr(0, end + 1);
  }
  return {};
}

namespace detail {

struct named_values {
  std::string name;
  std::span<const std::uint16_t> values;
};

// Lays the groups out in `out.values`; groups[i] lists the tensors of bundle i.
inline void fill_dataset(dataset& out, const std::vector<std::string>& bundle_names,
                         const std::vector<std::vector<named_values>>& groups) {
  std::uint64_t total = 0;
  for (const auto& g : groups) {
    for (const auto& t : g) total += t.values.size();
  }
  out.values.resize(total);
  std::uint64_t at = 0;
  for (std::size_t b = 0; b < groups.size(); ++b) {
    bundle_input& bundle = out.bundles.emplace_back();
    bundle.name = bundle_names[b];
    const std::uint64_t first = at;
    for (const auto& t : groups[b]) {
      std::memcpy(out.values.data() + at, t.values.data(), t.values.size_bytes());
      bundle.tensors.emplace_back(out.values.data() + at, t.values.size());
      at += t.values.size();
    }
    bundle.all = std::span<const std::uint16_t>(out.values.data() + first, at - first);
  }
}

}  // namespace detail

inline dataset make_synthetic_dataset(std::uint64_t target_bytes, std::uint64_t seed) {
  const llama_checkpoint ckpt = make_llama_checkpoint(target_bytes, seed);
  dataset out;
  out.name = "synth" + std::to_string((ckpt.size_bytes() + (1 << 19)) >> 20) + "MB";
  std::vector<std::string> names;
  std::vector<std::vector<detail::named_values>> groups;
  for (const auto& block : ckpt.blocks) {
    names.push_back(block.name);
    auto& g = groups.emplace_back();
    for (const auto& t : block.tensors) g.push_back({t.name, t.values});
  }
  detail::fill_dataset(out, names, groups);
  return out;
}

// The BF16 tensors of a safetensors file, grouped as the container groups them (in order of first
// appearance). Other dtypes are left out: the container stores them raw. Returns the error
// message when the file cannot be read.
inline std::optional<dataset> load_safetensors_dataset(const std::filesystem::path& path,
                                                       std::string* error_message = nullptr) {
  auto file = floatzip::detail::mapped_file::open(path);
  if (!file.has_value()) {
    if (error_message) *error_message = file.error().message;
    return std::nullopt;
  }
  const auto bytes = file.value().bytes();
  auto header = safetensors::parse_header(bytes, bytes.size(), path.string());
  if (!header.has_value()) {
    if (error_message) *error_message = header.error().message;
    return std::nullopt;
  }
  const safetensors::header& h = header.value();
  // The data section may start at an odd address: copy into aligned storage first.
  std::vector<std::vector<std::uint16_t>> copies;
  std::vector<std::string> names;
  std::vector<std::vector<detail::named_values>> groups;
  for (std::size_t i : h.offset_order()) {
    const auto& t = h.tensors[i];
    if (t.type != safetensors::dtype::bf16 || t.element_count() == 0) continue;
    auto& copy = copies.emplace_back(t.element_count());
    std::memcpy(copy.data(), bytes.data() + h.header_size() + t.data.begin, t.size_bytes());
    const std::string_view prefix = block_prefix(t.name);
    const std::string key =
        prefix.empty() ? t.name : std::string(prefix.substr(0, prefix.size() - 1));
    std::size_t g = 0;
    while (g < names.size() && names[g] != key) ++g;
    if (g == names.size()) {
      names.push_back(key);
      groups.emplace_back();
    }
    groups[g].push_back({t.name, copy});
  }
  dataset out;
  out.name = path.filename().string();
  if (const auto dot = out.name.find(".safetensors"); dot != std::string::npos) {
    out.name.resize(dot);
  }
  detail::fill_dataset(out, names, groups);
  return out;
}

// The real models in FLOATZIP_MODELS_DIR that hold BF16 weights.
inline std::vector<std::filesystem::path> real_model_files(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.ends_with(".bf16.safetensors")) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// Exponent statistics of one bundle: the bounds its encoded size is measured against.
struct bundle_bounds {
  std::uint64_t values = 0;
  double entropy_bits = 0;         // values * exponent entropy (Shannon bound of the exponents)
  std::uint64_t huffman_bits = 0;  // unlimited Huffman code, no metadata: the "ideal"
};

inline bundle_bounds bounds_of(const bundle_input& bundle) {
  const symbol_histogram h = exponent_histogram(bundle.all);
  bundle_bounds b;
  b.values = bundle.all.size();
  b.entropy_bits = entropy_bits_per_symbol(h) * static_cast<double>(b.values);
  b.huffman_bits = unlimited_huffman_bits(h);
  return b;
}

// Sizes in bits per weight over a set of bundles; the +8 is the raw sign/mantissa byte.
struct size_summary {
  std::uint64_t values = 0;
  std::uint64_t compressed_bytes = 0;
  double entropy_bits = 0;
  double huffman_bits = 0;

  void add(const bundle_bounds& b, std::uint64_t bundle_bytes) {
    values += b.values;
    compressed_bytes += bundle_bytes;
    entropy_bits += b.entropy_bits;
    huffman_bits += static_cast<double>(b.huffman_bits);
  }
  [[nodiscard]] double bits_per_weight() const {
    return values == 0 ? 0
                       : 8.0 * static_cast<double>(compressed_bytes) / static_cast<double>(values);
  }
  [[nodiscard]] double entropy_bound() const {
    return values == 0 ? 0 : 8.0 + entropy_bits / static_cast<double>(values);
  }
  [[nodiscard]] double ideal() const {
    return values == 0 ? 0 : 8.0 + huffman_bits / static_cast<double>(values);
  }
  [[nodiscard]] double overhead() const { return bits_per_weight() - ideal(); }
  // Compressed size / BF16 size, as in ../shared/models/README.md (0.67 = a third saved).
  [[nodiscard]] double ratio() const { return bits_per_weight() / 16.0; }
};

}  // namespace floatzip::bench
