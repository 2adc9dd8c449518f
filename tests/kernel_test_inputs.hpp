// Inputs shared by the kernel-logic tests (CPU executor) and the GPU tests: generated BF16 data,
// bundle geometries, and the real models in FLOATZIP_MODELS_DIR grouped into bundles the way the
// container groups them.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "floatzip/detail/file_io.hpp"
#include "floatzip/encoder.hpp"
#include "floatzip/safetensors.hpp"
#include "test_paths.hpp"

namespace floatzip::test {

using tensor_list = std::vector<std::vector<std::uint16_t>>;

inline std::uint16_t float_to_bf16(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>(bits >> 16 | 0x40);
  bits += 0x7FFFu + ((bits >> 16) & 1);  // round to nearest even
  return static_cast<std::uint16_t>(bits >> 16);
}

// Llama-like weights: Student-t (3 degrees of freedom) at a per-tensor scale.
inline std::vector<std::uint16_t> heavy_tailed(std::size_t n, std::uint64_t seed,
                                               float scale = 0.02f) {
  std::mt19937_64 rng(seed);
  std::student_t_distribution<float> t(3.0f);
  std::vector<std::uint16_t> v(n);
  for (auto& x : v) x = float_to_bf16(scale * t(rng));
  return v;
}

inline std::vector<std::uint16_t> all_patterns(bool shuffled) {
  std::vector<std::uint16_t> v(65536);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::uint16_t>(i);
  if (shuffled) std::shuffle(v.begin(), v.end(), std::mt19937_64(7));
  return v;
}

// One exponent only: the one-symbol code, one bit per value.
inline std::vector<std::uint16_t> one_exponent(std::size_t n, std::uint64_t seed) {
  std::vector<std::uint16_t> values(n);
  std::mt19937_64 rng(seed);
  for (auto& v : values) v = static_cast<std::uint16_t>(0x3F80 | (rng() & 0x807F));
  return values;
}

// Fibonacci-like exponent counts: with max_code_length 15 the longest codes reach the limit.
inline std::vector<std::uint16_t> fibonacci_exponents() {
  std::vector<std::uint16_t> values;
  std::uint64_t a = 1, b = 1;
  std::mt19937 rng(4);
  for (unsigned e = 100; e < 122; ++e) {
    for (std::uint64_t i = 0; i < a; ++i) {
      values.push_back(static_cast<std::uint16_t>((e << 7) | (rng() & 0x807F)));
    }
    const std::uint64_t next = a + b;
    a = b;
    b = next;
  }
  std::shuffle(values.begin(), values.end(), rng);
  return values;
}

inline encode_options geometry(int max_code_length, std::uint32_t chunk_bytes,
                               std::uint32_t chunks_per_group) {
  encode_options o;
  o.max_code_length = max_code_length;
  o.chunk_bytes = chunk_bytes;
  o.chunks_per_group = chunks_per_group;
  return o;
}

inline std::vector<std::byte> compress(const tensor_list& tensors, const encode_options& options) {
  std::vector<std::span<const std::uint16_t>> spans(tensors.begin(), tensors.end());
  return compress_bundle(spans, options);
}

inline std::vector<std::uint16_t> concatenated(const tensor_list& tensors) {
  std::vector<std::uint16_t> all;
  for (const auto& t : tensors) all.insert(all.end(), t.begin(), t.end());
  return all;
}

// Sizes that end mid-chunk, on a chunk, mid-group and on a group (at the default geometry a
// chunk holds about 190 values and a group about 48,000).
inline const std::vector<std::size_t>& odd_sizes() {
  static const std::vector<std::size_t> sizes = {2,   3,   7,    8,    9,     15,    17,    189,
                                                 190, 191, 1000, 4097, 48611, 50000, 100003};
  return sizes;
}

// Geometries that give a thread one chunk, several chunks, or none; chunk sizes that are not a
// multiple of 32 bits; both table widths.
inline const std::vector<encode_options>& odd_geometries() {
  static const std::vector<encode_options> geometries = {
      geometry(12, 64, 256),   // the defaults: one chunk per thread
      geometry(12, 4, 1),      // smallest chunks, one chunk per group
      geometry(12, 5, 3),      // chunk bits not a multiple of 32
      geometry(12, 64, 512),   // two chunks per thread
      geometry(12, 16, 1000),  // four chunks per thread, the last thread short
      geometry(12, 64, 100),   // threads without chunks
      geometry(14, 8, 257),    // the large table
  };
  return geometries;
}

// The bundle a tensor belongs to: its name up to and including "layers.N." (a transformer
// block), or the whole name for any other tensor.
inline std::string bundle_key(const std::string& tensor_name) {
  for (std::size_t at = tensor_name.find("layers."); at != std::string::npos;
       at = tensor_name.find("layers.", at + 1)) {
    if (at > 0 && tensor_name[at - 1] != '.') continue;
    std::size_t end = at + 7;
    while (end < tensor_name.size() && tensor_name[end] >= '0' && tensor_name[end] <= '9') ++end;
    if (end > at + 7 && end < tensor_name.size() && tensor_name[end] == '.') {
      return tensor_name.substr(0, end + 1);
    }
  }
  return tensor_name;
}

struct model_bundle {
  std::string name;  // file: bundle key
  tensor_list tensors;
};

// The 16-bit tensors of every .safetensors file in FLOATZIP_MODELS_DIR (BF16 and F16 as they are,
// F32 cut to its top half), one bundle per "...layers.N." prefix, every other tensor alone, and
// the whole file as one more bundle. Sets `skip_reason` when there are no models.
inline std::vector<model_bundle> model_bundles(std::string& skip_reason) {
  const std::filesystem::path dir = models_dir();
  std::vector<model_bundle> result;
  if (!models_present()) {
    skip_reason = models_absent_message();
    return result;
  }
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".safetensors") files.push_back(entry.path());
  }
  if (files.empty()) {
    skip_reason = "no .safetensors files in " + dir.string();
    return result;
  }
  std::sort(files.begin(), files.end());
  for (const auto& path : files) {
    const std::string file_name = path.filename().string();
    auto file = detail::mapped_file::open(path);
    EXPECT_TRUE(file.has_value()) << file.error().message;
    if (!file) continue;
    auto header = safetensors::parse_header(file->bytes(), file->size(), file_name);
    EXPECT_TRUE(header.has_value()) << header.error().message;
    if (!header) continue;
    const std::byte* data = file->bytes().data() + header->header_size();
    std::map<std::string, tensor_list> bundles;
    tensor_list whole_file;
    for (const auto& t : header->tensors) {
      const std::byte* p = data + t.data.begin;
      const std::uint64_t n = t.element_count();
      std::vector<std::uint16_t> values(n);
      if (t.type == safetensors::dtype::bf16 || t.type == safetensors::dtype::f16) {
        std::memcpy(values.data(), p, n * 2);
      } else if (t.type == safetensors::dtype::f32) {
        for (std::uint64_t i = 0; i < n; ++i) {
          std::uint32_t bits;
          std::memcpy(&bits, p + i * 4, 4);
          values[i] = static_cast<std::uint16_t>(bits >> 16);
        }
      } else {
        continue;
      }
      bundles[bundle_key(t.name)].push_back(values);
      whole_file.push_back(std::move(values));
    }
    for (auto& [key, tensors] : bundles) {
      result.push_back({file_name + ": " + key, std::move(tensors)});
    }
    result.push_back({file_name + ": <whole file>", std::move(whole_file)});
  }
  return result;
}

}  // namespace floatzip::test
