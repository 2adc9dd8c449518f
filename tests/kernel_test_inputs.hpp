// Inputs shared by the kernel-logic tests (CPU executor) and the GPU tests: generated BF16 data,
// bundle geometries, and the real models in FLOATZIP_MODELS_DIR grouped into bundles the way the
// container groups them; the same for every value format (value_format.hpp): every bit pattern,
// FP32 specials, generated weights, and real weights in each format.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "float_conversions.hpp"
#include "floatzip/detail/file_io.hpp"
#include "floatzip/encoder.hpp"
#include "floatzip/safetensors.hpp"
#include "floatzip/value_format.hpp"
#include "format_test_data.hpp"
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

template <class T>
std::vector<T> concatenated(const std::vector<std::vector<T>>& tensors) {
  std::vector<T> all;
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

// ---- every value format -------------------------------------------------------------------------

template <value_format F>
using value_of = typename format_traits<F>::value_type;
template <value_format F>
using format_tensors = std::vector<std::vector<value_of<F>>>;

template <value_format F>
std::vector<std::byte> compress_format(const format_tensors<F>& tensors,
                                       const encode_options& options) {
  std::vector<std::span<const std::byte>> spans;
  spans.reserve(tensors.size());
  for (const auto& t : tensors) spans.push_back(std::as_bytes(std::span<const value_of<F>>(t)));
  return compress_bundle(F, spans, options);
}

// Every bit pattern of a 1- or 2-byte format (all 256 or 65,536); for BF16-in-FP32 every high
// half with a zero low half, for FP32 every high half with a pseudo-random low half, for
// BF16-in-FP16 every FP16 pattern that is a BF16 value (8,960 of 65,536). In order or shuffled.
template <value_format F>
std::vector<value_of<F>> all_patterns_of(bool shuffled) {
  using T = value_of<F>;
  std::vector<T> v(sizeof(T) == 1 ? 256 : 65536);
  std::mt19937 rng(5);
  for (std::size_t i = 0; i < v.size(); ++i) {
    if constexpr (sizeof(T) == 4) {
      v[i] = static_cast<T>(i << 16 | (format_traits<F>::has_low_half ? rng() & 0xFFFFu : 0u));
    } else {
      v[i] = static_cast<T>(i);
    }
  }
  if constexpr (F == value_format::bf16_in_fp16) {
    std::erase_if(v, [](T x) { return format_traits<F>::unrepresentable(x) != 0; });
  }
  if (shuffled) std::shuffle(v.begin(), v.end(), std::mt19937_64(7));
  return v;
}

// FP32 values that must come back bit for bit: both zeros and infinities, NaNs with payloads
// (quiet and signalling, both signs), subnormals, the normal extremes; then random subnormals and
// random NaN payloads.
inline std::vector<std::uint32_t> fp32_specials() {
  std::vector<std::uint32_t> v = {
      0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7FC00001,
      0x7FFFFFFF, 0xFFFFFFFF, 0x7F800001, 0xFF800001, 0x7FBFFFFF, 0x7FA5A5A5, 0xFFD00BAD,
      0x00000001, 0x80000001, 0x007FFFFF, 0x807FFFFF, 0x00400000, 0x00012345, 0x00800000,
      0x80800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x3F800000, 0xBF800000, 0x3F800001, 0x34000000};
  std::mt19937 rng(23);
  for (int i = 0; i < 400; ++i) {
    const std::uint32_t payload = rng() & 0x807FFFFFu;
    // Subnormals (exponent 0) and, with an all-ones exponent, NaNs (or infinity for payload 0).
    v.push_back(i % 2 == 0 ? payload : payload | 0x7F800000u);
  }
  return v;
}

// Student-t weights at a per-tensor scale in FP32 (full 23-bit mantissas).
inline std::vector<std::uint32_t> heavy_tailed_fp32(std::size_t n, std::uint64_t seed,
                                                    float scale = 0.02f) {
  std::mt19937_64 rng(seed);
  std::student_t_distribution<float> t(3.0f);
  std::vector<std::uint32_t> v(n);
  for (auto& x : v) x = std::bit_cast<std::uint32_t>(scale * t(rng));
  return v;
}

// Generated weights of format F: BF16 heavy_tailed patterns for the 16-bit formats (as FP16 bit
// patterns they give the same symbol statistics, which is what the kernel sees), FP32 Student-t
// weights, BF16 weights widened for BF16-in-FP32 and rounded to FP16 for BF16-in-FP16, and
// Student-t weights rounded to FP8 at a scale that uses the format's range.
template <value_format F>
std::vector<value_of<F>> weights_of(std::size_t n, std::uint64_t seed, float scale = 0.02f) {
  if constexpr (F == value_format::bf16 || F == value_format::fp16) {
    return heavy_tailed(n, seed, scale);
  } else if constexpr (F == value_format::fp32) {
    return heavy_tailed_fp32(n, seed, scale);
  } else if constexpr (F == value_format::bf16_in_fp32) {
    const std::vector<std::uint16_t> high = heavy_tailed(n, seed, scale);
    std::vector<std::uint32_t> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = std::uint32_t{high[i]} << 16;
    return v;
  } else if constexpr (F == value_format::bf16_in_fp16) {
    // The BF16 weights rounded to FP16 (a BF16 checkpoint saved as F16: subnormals included).
    std::vector<std::uint16_t> v = heavy_tailed(n, seed, scale);
    for (auto& x : v) x = bf16_to_fp16(x);
    return v;
  } else {
    std::mt19937_64 rng(seed);
    std::student_t_distribution<float> t(3.0f);
    std::vector<float> wide(n);
    for (auto& x : wide) x = scale * t(rng);
    return quantise_fp8(wide, F == value_format::fp8_e4m3 ? fp8_kind::e4m3 : fp8_kind::e5m2);
  }
}

template <value_format F>
struct format_model_bundle {
  std::string name;  // model: bundle key
  format_tensors<F> tensors;
};

// The real weights of format F (format_test_data.hpp: the models as they are, BF16 widened for
// BF16-in-FP32, FP32 and BF16 quantised per tensor for FP8), one bundle per transformer block
// and every other tensor alone, plus each model's tensors together as one more bundle; as typed
// values. Sets `skip_reason` when there are none.
template <value_format F>
std::vector<format_model_bundle<F>> format_model_bundles(std::string& skip_reason) {
  using T = value_of<F>;
  std::vector<format_model_bundle<F>> result;
  if (!models_present()) {
    skip_reason = models_absent_message();
    return result;
  }
  for (const format_model& model : real_models(F)) {
    format_tensors<F> whole_model;
    for (const format_bundle& bundle : model.bundles) {
      format_tensors<F> tensors;
      for (const auto& bytes : bundle.tensors) {
        std::vector<T> values(bytes.size() / sizeof(T));
        std::memcpy(values.data(), bytes.data(), values.size() * sizeof(T));
        whole_model.push_back(values);
        tensors.push_back(std::move(values));
      }
      result.push_back({model.label + ": " + bundle.name, std::move(tensors)});
    }
    if (!whole_model.empty()) {
      result.push_back({model.label + ": <whole file>", std::move(whole_model)});
    }
  }
  if (result.empty()) {
    skip_reason = "no models in " + models_dir().string() + " to make " +
                  std::string(to_string(F)) + " weights from";
  }
  return result;
}

}  // namespace floatzip::test
