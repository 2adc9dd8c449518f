// Real weights in every value format, for tests: the models of ../shared/models as they are (BF16,
// F16, F32) and converted the way real checkpoints of the other formats come about: BF16 widened
// to FP32 (bf16_in_fp32), BF16 rounded to FP16 (bf16_in_fp16: a BF16 checkpoint saved as F16),
// FP32 and BF16 weights quantised to FP8 with a per-tensor scale (float_conversions.hpp). Tensors
// are grouped into bundles as the container groups them.
#pragma once

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "float_conversions.hpp"
#include "floatzip/container.hpp"
#include "floatzip/detail/file_io.hpp"
#include "floatzip/safetensors.hpp"
#include "floatzip/value_format.hpp"
#include "test_paths.hpp"

namespace floatzip::test {

// One bundle's tensors as little-endian value bytes of one format.
struct format_bundle {
  std::string name;
  std::vector<std::vector<std::byte>> tensors;

  [[nodiscard]] std::vector<std::span<const std::byte>> spans() const {
    return {tensors.begin(), tensors.end()};
  }
  [[nodiscard]] std::uint64_t value_count(value_format f) const {
    std::uint64_t n = 0;
    for (const auto& t : tensors) n += t.size() / value_bytes(f);
    return n;
  }
};

// A model of one format: its source file and how it was made, and its bundles.
struct format_model {
  std::string label;  // "stories260K.f32 -> fp8-e4m3 (per-tensor scale)"
  std::vector<format_bundle> bundles;
};

namespace detail_formats {

template <class T>
std::vector<std::byte> bytes_of(const std::vector<T>& values) {
  std::vector<std::byte> out(values.size() * sizeof(T));
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// The float tensors of `file` (BF16, F16 widened exactly, F32) converted by `convert` (float
// values -> bytes of the target format), grouped by transformer block; other dtypes skipped.
template <class Convert>
std::vector<format_bundle> convert_model(const std::filesystem::path& file, safetensors::dtype only,
                                         Convert&& convert) {
  auto mapped = floatzip::detail::mapped_file::open(file).value();
  const auto header =
      safetensors::parse_header(mapped.bytes(), mapped.size(), file.string()).value();
  const std::byte* data = mapped.bytes().data() + header.header_size();
  std::map<std::string, std::size_t> bundle_of_prefix;
  std::vector<format_bundle> bundles;
  for (const auto& t : header.tensors) {
    if (t.type != only) continue;
    const std::byte* p = data + t.data.begin;
    const std::uint64_t bytes = t.data.size();
    const std::string_view prefix = transformer_block_prefix(t.name);
    const std::string key = prefix.empty() ? t.name : std::string(prefix);
    auto [it, inserted] = bundle_of_prefix.emplace(key, bundles.size());
    if (inserted) bundles.push_back({key, {}});
    bundles[it->second].tensors.push_back(convert(p, bytes));
  }
  return bundles;
}

// The BF16 values of a tensor's bytes, each through `convert` (widened or rounded to another
// format's bits of type Out), as bytes.
template <class Out, class Convert>
std::vector<std::byte> convert_bf16_values(const std::byte* p, std::uint64_t bytes,
                                           Convert convert) {
  std::vector<Out> out(bytes / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    std::uint16_t b;
    std::memcpy(&b, p + 2 * i, 2);
    out[i] = convert(b);
  }
  return bytes_of(out);
}

inline std::vector<float> floats_of(const std::byte* p, std::uint64_t bytes,
                                    safetensors::dtype type) {
  if (type == safetensors::dtype::f32) {
    std::vector<float> v(bytes / 4);
    std::memcpy(v.data(), p, bytes);
    return v;
  }
  std::vector<std::uint16_t> b(bytes / 2);
  std::memcpy(b.data(), p, bytes);
  std::vector<float> v(b.size());
  for (std::size_t i = 0; i < b.size(); ++i) v[i] = bf16_to_float(b[i]);
  return v;
}

inline std::vector<std::filesystem::path> files_ending(std::string_view suffix) {
  std::vector<std::filesystem::path> files;
  if (!models_present()) return files;
  for (const auto& entry : std::filesystem::directory_iterator(models_dir())) {
    if (entry.path().filename().string().ends_with(suffix)) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace detail_formats

// Every real model available in format f (empty when the models folder is absent).
inline std::vector<format_model> real_models(value_format f) {
  using namespace detail_formats;
  using safetensors::dtype;
  std::vector<format_model> models;
  auto as_is = [](const std::byte* p, std::uint64_t n) { return std::vector<std::byte>(p, p + n); };
  auto stem = [](const std::filesystem::path& p) {
    std::string s = p.filename().string();
    return s.substr(0, s.size() - std::string_view(".safetensors").size());
  };
  switch (f) {
    case value_format::bf16:
      for (const auto& file : files_ending(".bf16.safetensors"))
        models.push_back({stem(file), convert_model(file, dtype::bf16, as_is)});
      break;
    case value_format::fp16:
      for (const auto& file : files_ending(".f16.safetensors"))
        models.push_back({stem(file), convert_model(file, dtype::f16, as_is)});
      break;
    case value_format::fp32:
      for (const auto& file : files_ending(".f32.safetensors"))
        models.push_back({stem(file), convert_model(file, dtype::f32, as_is)});
      break;
    case value_format::bf16_in_fp32:
      for (const auto& file : files_ending(".bf16.safetensors")) {
        models.push_back({stem(file) + " widened to fp32",
                          convert_model(file, dtype::bf16, [](const std::byte* p, std::uint64_t n) {
                            return convert_bf16_values<std::uint32_t>(
                                p, n, [](std::uint16_t b) { return std::uint32_t{b} << 16; });
                          })});
      }
      break;
    case value_format::bf16_in_fp16:
      for (const auto& file : files_ending(".bf16.safetensors")) {
        models.push_back({stem(file) + " rounded to fp16",
                          convert_model(file, dtype::bf16, [](const std::byte* p, std::uint64_t n) {
                            return convert_bf16_values<std::uint16_t>(p, n, bf16_to_fp16);
                          })});
      }
      break;
    case value_format::fp8_e4m3:
    case value_format::fp8_e5m2: {
      const fp8_kind kind = f == value_format::fp8_e4m3 ? fp8_kind::e4m3 : fp8_kind::e5m2;
      const std::string to = " quantised to " + std::string(to_string(f)) + " (per-tensor scale)";
      for (const auto& file : files_ending(".f32.safetensors")) {
        models.push_back(
            {stem(file) + to,
             convert_model(file, dtype::f32, [kind](const std::byte* p, std::uint64_t n) {
               return bytes_of(quantise_fp8(floats_of(p, n, dtype::f32), kind));
             })});
      }
      for (const auto& file : files_ending(".bf16.safetensors")) {
        models.push_back(
            {stem(file) + to,
             convert_model(file, dtype::bf16, [kind](const std::byte* p, std::uint64_t n) {
               return bytes_of(quantise_fp8(floats_of(p, n, dtype::bf16), kind));
             })});
      }
      break;
    }
  }
  return models;
}

}  // namespace floatzip::test
