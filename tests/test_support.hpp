// Shared helpers for floatzip's tests: generated inputs and the real models in ../shared/models.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "floatzip/container.hpp"
#include "floatzip/detail/file_io.hpp"
#include "floatzip/safetensors.hpp"
#include "test_paths.hpp"  // models_dir(), models_present(), models_absent_message()

namespace floatzip::test {

inline std::uint16_t float_to_bf16(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  if ((b & 0x7F800000u) == 0x7F800000u && (b & 0x007FFFFFu) != 0) {
    return static_cast<std::uint16_t>((b >> 16) | 0x40);  // quiet NaN, keep the sign
  }
  return static_cast<std::uint16_t>((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

// Heavy-tailed weights like a trained Llama matrix: Student-t (nu = 5) times `scale`.
inline std::vector<std::uint16_t> llama_like(std::size_t n, float scale, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::student_t_distribution<float> t(5.0f);
  std::vector<std::uint16_t> v(n);
  for (auto& x : v) x = float_to_bf16(t(rng) * scale);
  return v;
}

inline std::vector<std::uint16_t> uniform_bits(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint16_t> v(n);
  for (auto& x : v) x = static_cast<std::uint16_t>(rng());
  return v;
}

inline std::vector<std::uint16_t> all_bf16_patterns() {
  std::vector<std::uint16_t> v(65536);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::uint16_t>(i);
  return v;
}

// A BF16 model's tensors grouped as the container groups them: tensors sharing a
// "...layers.N." prefix form one bundle, every other tensor is a bundle of its own.
struct model_bundle {
  std::string name;
  std::vector<std::string> tensor_names;
  std::vector<std::vector<std::uint16_t>> tensors;
};

inline std::vector<model_bundle> load_bf16_bundles(const std::filesystem::path& file) {
  auto mapped = detail::mapped_file::open(file).value();
  const auto header =
      safetensors::parse_header(mapped.bytes(), mapped.size(), file.string()).value();
  const std::byte* data = mapped.bytes().data() + header.header_size();
  std::map<std::string, std::size_t> bundle_of_prefix;
  std::vector<model_bundle> bundles;
  for (const auto& t : header.tensors) {
    if (t.type != safetensors::dtype::bf16) continue;
    const std::string_view prefix = transformer_block_prefix(t.name);
    const std::string key = prefix.empty() ? t.name : std::string(prefix);
    auto [it, inserted] = bundle_of_prefix.emplace(key, bundles.size());
    if (inserted) bundles.push_back({key, {}, {}});
    model_bundle& b = bundles[it->second];
    std::vector<std::uint16_t> values(t.data.size() / 2);
    std::memcpy(values.data(), data + t.data.begin, t.data.size());
    b.tensor_names.push_back(t.name);
    b.tensors.push_back(std::move(values));
  }
  return bundles;
}

inline std::vector<std::filesystem::path> bf16_model_files() {
  std::vector<std::filesystem::path> files;
  if (!models_present()) return files;
  for (const auto& entry : std::filesystem::directory_iterator(models_dir())) {
    const std::string name = entry.path().filename().string();
    if (name.find(".bf16.safetensors") != std::string::npos) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

inline std::vector<std::span<const std::uint16_t>> spans_of(
    const std::vector<std::vector<std::uint16_t>>& tensors) {
  return {tensors.begin(), tensors.end()};
}

}  // namespace floatzip::test
