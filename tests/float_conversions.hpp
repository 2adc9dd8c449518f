// Float conversions that make test and benchmark inputs of every value format from real BF16 /
// FP32 weights: FP32 -> FP16 and FP32 -> FP8 (E4M3, E5M2) with round-to-nearest-even, and the
// per-tensor scaling FP8 checkpoints use. Depends only on the standard library (the benchmarks
// include it too).
//
// FP8 follows the OCP 8-bit floating point specification (as in PyTorch's float8_e4m3fn and
// float8_e5m2):
//   E4M3: bias 7, no infinities; S.1111.111 is NaN, so the largest finite value is S.1111.110 =
//         448; subnormals m/8 * 2^-6.
//   E5M2: bias 15, IEEE-like: S.11111.00 is infinity, S.11111.{01,10,11} NaN; largest finite
//         57344; subnormals m/4 * 2^-14.
// Conversions to FP8 saturate (a finite value beyond the largest finite one becomes it), as
// quantising converters do; FP16 overflows to infinity, as IEEE conversion does.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

namespace floatzip::test {

// The bit pattern (without sign) of the value nearest |x| in a binary format of `mantissa_bits`
// stored mantissa bits, exponent bias `bias`, and largest finite magnitude pattern
// `max_finite_bits`, ties to even. Returns max_finite_bits + 1 when |x| rounds beyond the
// largest finite value. Precondition: x is finite.
inline std::uint32_t round_to_minifloat(double x, int mantissa_bits, int bias,
                                        std::uint32_t max_finite_bits) {
  const double a = std::fabs(x);
  if (a == 0) return 0;
  const int min_exponent = 1 - bias;  // of the normal numbers
  int e = std::ilogb(a);              // a = 1.f * 2^e
  e = std::max(e, min_exponent);      // below: subnormal, quantum 2^(min_exponent - m)
  const double quantum = std::ldexp(1.0, e - mantissa_bits);
  // a / quantum is exact (a power-of-two scale) and nearbyint rounds ties to even in the default
  // rounding mode. The multiple r of the quantum is the pattern relative to exponent e: at the
  // top of a binade, r = 2^(m+1) carries into the next exponent, which the sum below does too.
  const auto r = static_cast<std::uint64_t>(std::nearbyint(a / quantum));
  // Pattern = (biased exponent << m) + mantissa: for the subnormal range (e == min_exponent,
  // r < 2^m) the biased exponent is 0 and the pattern is r; for normals it is
  // ((e + bias) << m) + r - 2^m, which equals (e + bias - 1) << m + r, also across the carry.
  const std::uint64_t pattern = (static_cast<std::uint64_t>(e + bias - 1) << mantissa_bits) + r;
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(pattern, max_finite_bits + 1ull));
}

// FP32 -> FP16, round to nearest even; overflow gives infinity; NaN stays a (quiet) NaN.
inline std::uint16_t float_to_fp16(float f) {
  const std::uint32_t b = std::bit_cast<std::uint32_t>(f);
  const auto sign = static_cast<std::uint16_t>((b >> 16) & 0x8000u);
  if (std::isnan(f)) return static_cast<std::uint16_t>(sign | 0x7E00u);
  if (std::isinf(f)) return static_cast<std::uint16_t>(sign | 0x7C00u);
  const std::uint32_t p = round_to_minifloat(f, 10, 15, 0x7BFF);
  return static_cast<std::uint16_t>(sign | std::min<std::uint32_t>(p, 0x7C00u));
}

enum class fp8_kind { e4m3, e5m2 };

inline double fp8_max(fp8_kind k) { return k == fp8_kind::e4m3 ? 448.0 : 57344.0; }

// A double (exactly: no double rounding through float) -> FP8, round to nearest even, saturating to
// the largest finite value; NaN -> NaN; infinity -> infinity for E5M2, the largest finite value
// for E4M3 (which has none).
inline std::uint8_t float_to_fp8(double f, fp8_kind k) {
  const std::uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  const bool e4m3 = k == fp8_kind::e4m3;
  if (std::isnan(f)) return static_cast<std::uint8_t>(sign | (e4m3 ? 0x7F : 0x7E));
  if (std::isinf(f) && !e4m3) return static_cast<std::uint8_t>(sign | 0x7C);
  const std::uint32_t max_bits = e4m3 ? 0x7E : 0x7B;
  const std::uint32_t p =
      std::isinf(f) ? max_bits : round_to_minifloat(f, e4m3 ? 3 : 2, e4m3 ? 7 : 15, max_bits);
  return static_cast<std::uint8_t>(sign | std::min(p, max_bits));
}

// The value of an FP8 pattern (NaN for NaN patterns, +-inf for E5M2's infinities).
inline double fp8_value(std::uint8_t bits, fp8_kind k) {
  const bool e4m3 = k == fp8_kind::e4m3;
  const int m_bits = e4m3 ? 3 : 2;
  const int bias = e4m3 ? 7 : 15;
  const double sign = (bits & 0x80) != 0 ? -1.0 : 1.0;
  const unsigned e = (bits & 0x7Fu) >> m_bits;
  const unsigned m = bits & ((1u << m_bits) - 1);
  if (e4m3 && (bits & 0x7F) == 0x7F) return std::nan("");
  if (!e4m3 && e == 31) return m == 0 ? sign * INFINITY : std::nan("");
  if (e == 0) return sign * std::ldexp(m, 1 - bias - m_bits);
  return sign * std::ldexp(double((1u << m_bits) | m), int(e) - bias - m_bits);
}

// A tensor quantised to FP8 as FP8 checkpoints are: scaled so that its largest magnitude maps to
// the format's largest finite value (the per-tensor scale such a checkpoint stores beside it),
// then rounded to nearest even with saturation.
inline std::vector<std::uint8_t> quantise_fp8(std::span<const float> values, fp8_kind k) {
  float amax = 0;
  for (const float v : values) {
    if (std::isfinite(v)) amax = std::max(amax, std::fabs(v));
  }
  const double scale = amax > 0 ? fp8_max(k) / amax : 1.0;
  std::vector<std::uint8_t> out(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    out[i] = float_to_fp8(values[i] * scale, k);
  }
  return out;
}

inline float bf16_to_float(std::uint16_t b) { return std::bit_cast<float>(std::uint32_t{b} << 16); }

// BF16 -> FP16, round to nearest even, as a BF16 checkpoint saved as F16 is: exact in FP16's
// normal range, rounded to 2^-24 below it (a subnormal of at most 8 significant bits, or +-0),
// infinity beyond 65504.
inline std::uint16_t bf16_to_fp16(std::uint16_t b) { return float_to_fp16(bf16_to_float(b)); }

}  // namespace floatzip::test
