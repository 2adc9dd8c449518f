// floatzip test and benchmark data: safetensors files of every float format made from real
// weights, for the container tests (tests/test_container.cpp, tests/test_cli.cpp) and the peer
// benchmark (bench/peers, through floatzip_format_files).
//
//   auto source = floatzip::format_files::read_tensors("stories260K.bf16.safetensors");
//   auto fp8 = floatzip::format_files::to_fp8_file(source, fp8_kind::e4m3);  // + "_scale" F32s
//   floatzip::format_files::write_safetensors("stories260K.f8_e4m3.safetensors", fp8);
//
// FP8 weights are made the way FP8 checkpoints are: each tensor is multiplied by a per-tensor
// scale that maps its largest magnitude to the format's largest finite value, then rounded to the
// nearest FP8 value (ties to an even code, saturating at the largest finite value); the inverse
// scale is kept as an F32 scalar tensor "<name>_scale" beside it. BF16-in-FP32 weights are BF16
// values widened to FP32 (low 16 bits zero), as many FP32 checkpoints of BF16-trained models are.
// F16 weights rounded from BF16 ones (f16-from-bf16: BF16 checkpoints saved as F16, every value a
// BF16 value) are made for every BF16 model, and F16 weights rounded from F32 where a model has
// F32 but no F16.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "../tests/float_conversions.hpp"
#include "floatzip/detail/file_io.hpp"
#include "floatzip/safetensors.hpp"

namespace floatzip::format_files {

// The conversions themselves (round to nearest even, FP8 saturating) are the tests' own, tested
// there (tests/float_conversions.hpp).
using test::bf16_to_float;
using test::fp8_kind;
using test::fp8_max;
using test::fp8_value;

struct tensor {
  std::string name;
  safetensors::dtype type = safetensors::dtype::bf16;
  std::vector<std::uint64_t> shape;
  std::vector<std::byte> data;  // little-endian element bytes

  [[nodiscard]] std::size_t count(std::size_t element_bytes) const noexcept {
    return data.size() / element_bytes;
  }
};

// Every tensor of a safetensors file, in the order of their data. Throws std::runtime_error.
inline std::vector<tensor> read_tensors(const std::filesystem::path& path) {
  auto mapped = detail::mapped_file::open(path);
  if (!mapped) throw std::runtime_error(mapped.error().message);
  const auto bytes = mapped->bytes();
  auto header = safetensors::parse_header(bytes, bytes.size(), path.string());
  if (!header) throw std::runtime_error(header.error().message);
  std::vector<tensor> out;
  for (std::size_t i : header->offset_order()) {
    const auto& info = header->tensors[i];
    tensor t{info.name, info.type, info.shape, {}};
    const std::byte* p = bytes.data() + header->header_size() + info.data.begin;
    t.data.assign(p, p + info.data.size());
    out.push_back(std::move(t));
  }
  return out;
}

// A safetensors file of the tensors, in this order, data packed without gaps.
inline std::vector<std::byte> safetensors_bytes(const std::vector<tensor>& tensors) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    header[t.name] = {{"dtype", std::string(safetensors::to_string(t.type))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // the data section 8-aligned, as writers do
  std::vector<std::byte> file(8 + json.size());
  const std::uint64_t n = json.size();
  std::memcpy(file.data(), &n, 8);
  std::memcpy(file.data() + 8, json.data(), json.size());
  for (const auto& t : tensors) file.insert(file.end(), t.data.begin(), t.data.end());
  return file;
}

inline void write_safetensors(const std::filesystem::path& path,
                              const std::vector<tensor>& tensors) {
  const auto bytes = safetensors_bytes(tensors);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  if (!out) throw std::runtime_error(path.string() + ": cannot write");
}

// The values of a BF16, F16 or F32 tensor as doubles (F16 through its exact value).
inline std::vector<double> float_values(const tensor& t) {
  std::vector<double> out;
  if (t.type == safetensors::dtype::bf16) {
    for (std::size_t i = 0; i < t.count(2); ++i) {
      std::uint16_t v;
      std::memcpy(&v, t.data.data() + 2 * i, 2);
      out.push_back(bf16_to_float(v));
    }
  } else if (t.type == safetensors::dtype::f32) {
    for (std::size_t i = 0; i < t.count(4); ++i) {
      float v;
      std::memcpy(&v, t.data.data() + 4 * i, 4);
      out.push_back(v);
    }
  } else if (t.type == safetensors::dtype::f16) {
    for (std::size_t i = 0; i < t.count(2); ++i) {
      std::uint16_t v;
      std::memcpy(&v, t.data.data() + 2 * i, 2);
      const int exponent = (v >> 10) & 0x1F;
      const int mantissa = v & 0x3FF;
      double m = exponent == 0    ? std::ldexp(mantissa, -24)
                 : exponent == 31 ? (mantissa == 0 ? std::numeric_limits<double>::infinity()
                                                   : std::numeric_limits<double>::quiet_NaN())
                                  : std::ldexp(1024 + mantissa, exponent - 25);
      out.push_back((v & 0x8000) != 0 ? -m : m);
    }
  } else {
    throw std::runtime_error(t.name + ": not a BF16, F16 or F32 tensor");
  }
  return out;
}

// The FP8 form of a float tensor and its F32 inverse scale ("<name>_scale", shape []).
inline std::pair<tensor, tensor> to_fp8(const tensor& t, fp8_kind kind) {
  const std::vector<double> values = float_values(t);
  double amax = 0;
  for (double v : values)
    if (std::isfinite(v)) amax = std::max(amax, std::fabs(v));
  const double scale = amax > 0 ? fp8_max(kind) / amax : 1.0;
  tensor q{t.name,
           kind == fp8_kind::e4m3 ? safetensors::dtype::f8_e4m3 : safetensors::dtype::f8_e5m2,
           t.shape, std::vector<std::byte>(values.size())};
  for (std::size_t i = 0; i < values.size(); ++i)
    q.data[i] = std::byte{test::float_to_fp8(values[i] * scale, kind)};
  const float inverse = static_cast<float>(1.0 / scale);
  tensor s{t.name + "_scale", safetensors::dtype::f32, {}, std::vector<std::byte>(4)};
  std::memcpy(s.data.data(), &inverse, 4);
  return {std::move(q), std::move(s)};
}

// A BF16 tensor widened to F32 (low 16 bits zero): bit-exact, the value unchanged.
inline tensor widened(const tensor& t) {
  if (t.type != safetensors::dtype::bf16) throw std::runtime_error(t.name + ": not BF16");
  tensor w{t.name, safetensors::dtype::f32, t.shape, std::vector<std::byte>(2 * t.data.size())};
  for (std::size_t i = 0; i < t.count(2); ++i) {
    // Little-endian: the BF16 bytes become the high half of the F32.
    w.data[4 * i + 2] = t.data[2 * i];
    w.data[4 * i + 3] = t.data[2 * i + 1];
  }
  return w;
}

// A float tensor rounded to F16 (to nearest even; beyond F16's range: infinities, as a cast does).
inline tensor to_f16(const tensor& t) {
  const std::vector<double> values = float_values(t);
  tensor h{t.name, safetensors::dtype::f16, t.shape, std::vector<std::byte>(2 * values.size())};
  for (std::size_t i = 0; i < values.size(); ++i) {
    const std::uint16_t v = test::float_to_fp16(static_cast<float>(values[i]));
    std::memcpy(h.data.data() + 2 * i, &v, 2);
  }
  return h;
}

inline std::vector<tensor> to_f16_file(const std::vector<tensor>& source) {
  std::vector<tensor> out;
  for (const auto& t : source) out.push_back(to_f16(t));
  return out;
}

// Every tensor of a BF16 model as FP8 with its scale beside it.
inline std::vector<tensor> to_fp8_file(const std::vector<tensor>& source, fp8_kind kind) {
  std::vector<tensor> out;
  for (const auto& t : source) {
    auto [q, s] = to_fp8(t, kind);
    out.push_back(std::move(q));
    out.push_back(std::move(s));
  }
  return out;
}

inline std::vector<tensor> widened_file(const std::vector<tensor>& source) {
  std::vector<tensor> out;
  for (const auto& t : source) out.push_back(widened(t));
  return out;
}

// One file of every float format the container codes, from the same model in BF16, F16 and F32
// (tensor names alike): tensor i takes, by i mod 7, BF16, F16, F32, BF16-in-F32, F8_E4M3 (+
// scale), F8_E5M2 (+ scale), the BF16 tensor rounded to F16 (BF16-in-F16); an I64 tensor that
// stays raw comes last.
inline std::vector<tensor> mixed_file(const std::vector<tensor>& bf16,
                                      const std::vector<tensor>& f16,
                                      const std::vector<tensor>& f32) {
  auto find = [](const std::vector<tensor>& in, const std::string& name) -> const tensor& {
    for (const auto& t : in)
      if (t.name == name) return t;
    throw std::runtime_error("mixed_file: tensor " + name + " missing from a source");
  };
  std::vector<tensor> out;
  for (std::size_t i = 0; i < bf16.size(); ++i) {
    const tensor& t = bf16[i];
    switch (i % 7) {
      case 0: out.push_back(t); break;
      case 1: out.push_back(find(f16, t.name)); break;
      case 2: out.push_back(find(f32, t.name)); break;
      case 3: out.push_back(widened(t)); break;
      case 6: out.push_back(to_f16(t)); break;
      default: {
        auto [q, s] = to_fp8(t, i % 7 == 4 ? fp8_kind::e4m3 : fp8_kind::e5m2);
        out.push_back(std::move(q));
        out.push_back(std::move(s));
      }
    }
  }
  tensor steps{"training_steps", safetensors::dtype::i64, {1}, std::vector<std::byte>(8)};
  const std::int64_t n = 123456789;
  std::memcpy(steps.data.data(), &n, 8);
  out.push_back(std::move(steps));
  return out;
}

}  // namespace floatzip::format_files
