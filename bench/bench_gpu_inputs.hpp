// floatzip GPU benchmarks: the Llama-shaped transformer block that the GPU benchmarks time and
// the kernel cost model (bench_gpu_model.cpp) replays, generated identically for both, and the
// same block in every value format (the FP16 and FP8 conversions are the tests'
// float_conversions.hpp).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <thread>
#include <vector>

#include "float_conversions.hpp"
#include "floatzip/value_format.hpp"
#include "llama_synth.hpp"

namespace floatzip::bench {

// Runs fn(first, count) over [0, n) on all cores.
template <class Fn>
void parallel_slices(std::uint64_t n, Fn&& fn) {
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      const std::uint64_t first = n * t / threads;
      fn(first, n * (t + 1) / threads - first);
    });
  }
  for (auto& th : pool) th.join();
}

// One transformer block of Llama-7B proportions (two norms, q, k, v, o, gate, up, down) holding
// about target_bytes of BF16; `tensors` are spans into `values`.
struct llama_block {
  std::vector<std::uint16_t> values;
  std::vector<std::span<const std::uint16_t>> tensors;
};

inline llama_block make_llama_block_values(std::uint64_t target_bytes, std::uint64_t seed) {
  const double values = static_cast<double>(target_bytes) / 2;
  const double mlp_ratio = 11008.0 / 4096.0;
  auto round_32 = [](double x) {
    return std::max<std::uint64_t>(32, static_cast<std::uint64_t>(std::llround(x / 32)) * 32);
  };
  const std::uint64_t h = round_32(std::sqrt(values / (4 + 3 * mlp_ratio)));
  const std::uint64_t m = round_32(static_cast<double>(h) * mlp_ratio);
  struct tensor_spec {
    std::uint64_t count;
    bool norm;
  };
  const std::vector<tensor_spec> specs = {{h, true},      {h * h, false}, {h * h, false},
                                          {h * h, false}, {h * h, false}, {h, true},
                                          {m * h, false}, {m * h, false}, {h * m, false}};
  llama_block block;
  std::uint64_t total = 0;
  for (const auto& s : specs) total += s.count;
  block.values.resize(total);
  std::uint64_t offset = 0;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const std::uint64_t tensor_seed = splitmix64_mix(seed + (i + 1) * kGoldenGamma);
    const float scale = specs[i].norm ? 0.05f : detail::matrix_scale(tensor_seed);
    const float center = specs[i].norm ? 0.3f : 0.0f;
    std::uint16_t* dst = block.values.data() + offset;
    parallel_slices(specs[i].count, [&](std::uint64_t first, std::uint64_t count) {
      fill_student_t_bf16(std::span<std::uint16_t>(dst + first, count), center, scale, tensor_seed,
                          first);
    });
    block.tensors.emplace_back(dst, specs[i].count);
    offset += specs[i].count;
  }
  return block;
}

// One format's input: its values' little-endian bytes per tensor.
struct format_input {
  value_format format;
  std::vector<std::vector<std::byte>> tensors;

  [[nodiscard]] std::vector<std::span<const std::byte>> spans() const {
    return {tensors.begin(), tensors.end()};
  }
};

template <class T>
std::vector<std::byte> bytes_of(const std::vector<T>& values) {
  std::vector<std::byte> bytes(values.size() * sizeof(T));
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

// The FP32 weights behind every format's input: the block's BF16 values as high halves and
// pseudo-random low halves (the low mantissa bits of trained FP32 weights are close to uniform).
inline std::vector<std::uint32_t> fp32_weights(std::span<const std::uint16_t> bf16,
                                               std::uint64_t seed) {
  std::vector<std::uint32_t> v(bf16.size());
  parallel_slices(v.size(), [&](std::uint64_t first, std::uint64_t count) {
    for (std::uint64_t i = first; i < first + count; ++i) {
      const std::uint64_t h = splitmix64_mix(seed + (i + 1) * kGoldenGamma);
      v[i] = std::uint32_t{bf16[i]} << 16 | static_cast<std::uint32_t>(h & 0xFFFF);
    }
  });
  return v;
}

// The block's tensors in format f:
//   bf16           the block's values
//   fp32           fp32_weights: the BF16 values as high halves, pseudo-random low halves
//   fp16           those FP32 weights converted to FP16 (round to nearest even)
//   bf16-in-fp32   the BF16 values widened (zero low halves)
//   bf16-in-fp16   the BF16 values rounded to FP16 (a BF16 checkpoint saved as F16)
//   fp8-e4m3/e5m2  the FP32 weights quantised per tensor (largest magnitude to the largest
//                  finite value, round to nearest even), as FP8 checkpoints are made The block
//                  holds the same number of
// values whatever the format, so every format's output is about values * value_bytes(f).
inline format_input make_format_input(value_format f, const llama_block& block) {
  format_input in{f, {}};
  std::uint64_t seed = 1;
  for (const std::span<const std::uint16_t> t : block.tensors) {
    const std::size_t n = t.size();
    const std::vector<std::uint32_t> wide = fp32_weights(t, ++seed);
    switch (f) {
      case value_format::bf16:
        in.tensors.push_back(bytes_of(std::vector<std::uint16_t>(t.begin(), t.end())));
        break;
      case value_format::fp16: {
        std::vector<std::uint16_t> v(n);
        parallel_slices(n, [&](std::uint64_t first, std::uint64_t count) {
          for (std::uint64_t i = first; i < first + count; ++i) {
            v[i] = test::float_to_fp16(std::bit_cast<float>(wide[i]));
          }
        });
        in.tensors.push_back(bytes_of(v));
        break;
      }
      case value_format::fp32: in.tensors.push_back(bytes_of(wide)); break;
      case value_format::bf16_in_fp32: {
        std::vector<std::uint32_t> v(n);
        for (std::size_t i = 0; i < n; ++i) v[i] = std::uint32_t{t[i]} << 16;
        in.tensors.push_back(bytes_of(v));
        break;
      }
      case value_format::bf16_in_fp16: {
        std::vector<std::uint16_t> v(n);
        for (std::size_t i = 0; i < n; ++i) v[i] = test::bf16_to_fp16(t[i]);
        in.tensors.push_back(bytes_of(v));
        break;
      }
      case value_format::fp8_e4m3:
      case value_format::fp8_e5m2: {
        // quantise_fp8's per-tensor scale, the rounding on every core.
        const auto kind = f == value_format::fp8_e4m3 ? test::fp8_kind::e4m3 : test::fp8_kind::e5m2;
        float largest = 0;
        for (const std::uint32_t x : wide) {
          const float value = std::fabs(std::bit_cast<float>(x));
          if (std::isfinite(value)) largest = std::max(largest, value);
        }
        const double scale = largest > 0 ? test::fp8_max(kind) / largest : 1.0;
        std::vector<std::uint8_t> v(n);
        parallel_slices(n, [&](std::uint64_t first, std::uint64_t count) {
          for (std::uint64_t i = first; i < first + count; ++i) {
            v[i] = test::float_to_fp8(scale * std::bit_cast<float>(wide[i]), kind);
          }
        });
        in.tensors.push_back(bytes_of(v));
        break;
      }
    }
  }
  return in;
}

}  // namespace floatzip::bench
