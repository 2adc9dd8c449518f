// floatzip: the float formats a bundle can hold, and how each splits a value for the coder.
//
// Every format goes through the same coder: a value is split into ONE symbol byte, coded with
// the bundle's length-limited canonical Huffman code (the "exponent stream"), and raw planes
// stored verbatim: at most one raw byte per value and, for FP32, one 16-bit low half per value.
// The symbol holds the bits whose distribution is skewed in trained weights (the exponent and
// the mantissa bits nearest it), the raw planes the nearly uniform rest. format_traits<F> says
// how a value splits and merges back; the coder, the decoders and the GPU kernel are templates
// over F.
//
//   format         bytes  symbol (8 bits)                 raw byte            low half
//   bf16           2      exponent (bits 14..7)           sign, mantissa 6..0  -
//   fp16           2      exponent, mantissa 9..7 (14..7) sign, mantissa 6..0  -
//   fp32           4      exponent (bits 30..23)          sign, mantissa 22..16 mantissa 15..0
//   bf16_in_fp32   4      as bf16 of the high half        as bf16 of the high half (low half 0)
//   fp8_e4m3       1      the whole byte                  -                   -
//   fp8_e5m2       1      the whole byte                  -                   -
//
// Splits chosen by the ideal size (symbol entropy per tensor plus raw bits) on real weights
// (stories260K, bench/RESULTS.md): FP16's symbol byte must hold 3 bits beside its 5 exponent
// bits; the top 3 mantissa bits (bits 14..7, 13.5148 bits/value) and the sign with the top 2
// (bits 15..8, 13.5151) tie, and bits 14..7 are BF16's positions, so FP16 merges exactly as BF16
// does. For FP32, bits 30..23 (the exponent, 26.6075) beat bits 29..22 (27.5498), which trade the
// constant top exponent bit for a nearly uniform mantissa bit.
//
// bf16_in_fp32 is an FP32 tensor whose every value has its low 16 bits zero (BF16 values
// widened, common in FP32 checkpoints): coded exactly like BF16 of the high halves, decoded
// into 32-bit values with zero low halves. The encoder refuses a value with a non-zero low half.
//
// Values are little-endian bit patterns (value_type), never floating-point numbers: NaN
// payloads, infinities, subnormals and -0 round-trip exactly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>

#include "floatzip/bf16.hpp"
#include "floatzip/config.hpp"

namespace floatzip {

// The numbers are the bundle header's byte 7 (bundle_format.hpp): 0 = bf16 is what every bundle
// written before the other formats existed holds there. Never renumber.
enum class value_format : std::uint8_t {
  bf16 = 0,
  fp16 = 1,
  fp32 = 2,
  bf16_in_fp32 = 3,
  fp8_e4m3 = 4,
  fp8_e5m2 = 5,
};
inline constexpr unsigned kValueFormatCount = 6;

constexpr bool is_known(value_format f) noexcept {
  return static_cast<unsigned>(f) < kValueFormatCount;
}

// Bytes of one value in memory and in the decoded output: 2 2 4 4 1 1. 0 for an unknown format.
constexpr std::size_t value_bytes(value_format f) noexcept {
  switch (f) {
    case value_format::bf16:
    case value_format::fp16: return 2;
    case value_format::fp32:
    case value_format::bf16_in_fp32: return 4;
    case value_format::fp8_e4m3:
    case value_format::fp8_e5m2: return 1;
  }
  return 0;
}

// Whether the format stores one raw byte per value (all but the FP8 formats), and one 16-bit low
// half per value (FP32 only): which raw sections a bundle's segments have.
constexpr bool format_has_raw_byte(value_format f) noexcept {
  return is_known(f) && f != value_format::fp8_e4m3 && f != value_format::fp8_e5m2;
}
constexpr bool format_has_low_half(value_format f) noexcept { return f == value_format::fp32; }

// "bf16" "fp16" "fp32" "bf16-in-fp32" "fp8-e4m3" "fp8-e5m2", or "unknown".
constexpr std::string_view to_string(value_format f) noexcept {
  switch (f) {
    case value_format::bf16: return "bf16";
    case value_format::fp16: return "fp16";
    case value_format::fp32: return "fp32";
    case value_format::bf16_in_fp32: return "bf16-in-fp32";
    case value_format::fp8_e4m3: return "fp8-e4m3";
    case value_format::fp8_e5m2: return "fp8-e5m2";
  }
  return "unknown";
}

// How a value of format F splits into the coded symbol and the raw planes, and merges back.
// Every member is usable in CUDA device code. merge ignores the arguments of planes the format
// does not have; merge(symbol(v), raw_byte(v), low_half(v)) == v for every bit pattern v (for
// bf16_in_fp32: for every v with a zero low half).
template <value_format F>
struct format_traits;

template <>
struct format_traits<value_format::bf16> {
  using value_type = std::uint16_t;
  static constexpr value_format format = value_format::bf16;
  static constexpr bool has_raw_byte = true;
  static constexpr bool has_low_half = false;
  FLOATZIP_HD static constexpr std::uint8_t symbol(value_type v) { return bf16_exponent(v); }
  FLOATZIP_HD static constexpr std::uint8_t raw_byte(value_type v) { return bf16_sign_mantissa(v); }
  FLOATZIP_HD static constexpr value_type merge(std::uint8_t symbol, std::uint8_t raw_byte,
                                                std::uint16_t /*low_half*/) {
    return bf16_merge(symbol, raw_byte);
  }
};

// Same bit positions as BF16: symbol = bits 14..7 (5 exponent bits, the top 3 mantissa bits),
// raw byte = sign in bit 7, mantissa bits 6..0.
template <>
struct format_traits<value_format::fp16> {
  using value_type = std::uint16_t;
  static constexpr value_format format = value_format::fp16;
  static constexpr bool has_raw_byte = true;
  static constexpr bool has_low_half = false;
  FLOATZIP_HD static constexpr std::uint8_t symbol(value_type v) { return bf16_exponent(v); }
  FLOATZIP_HD static constexpr std::uint8_t raw_byte(value_type v) { return bf16_sign_mantissa(v); }
  FLOATZIP_HD static constexpr value_type merge(std::uint8_t symbol, std::uint8_t raw_byte,
                                                std::uint16_t /*low_half*/) {
    return bf16_merge(symbol, raw_byte);
  }
};

// The BF16 split of the high half, and the low half as a plane of its own.
template <>
struct format_traits<value_format::fp32> {
  using value_type = std::uint32_t;
  static constexpr value_format format = value_format::fp32;
  static constexpr bool has_raw_byte = true;
  static constexpr bool has_low_half = true;
  FLOATZIP_HD static constexpr std::uint8_t symbol(value_type v) {
    return bf16_exponent(static_cast<std::uint16_t>(v >> 16));
  }
  FLOATZIP_HD static constexpr std::uint8_t raw_byte(value_type v) {
    return bf16_sign_mantissa(static_cast<std::uint16_t>(v >> 16));
  }
  FLOATZIP_HD static constexpr std::uint16_t low_half(value_type v) {
    return static_cast<std::uint16_t>(v & 0xFFFFu);
  }
  FLOATZIP_HD static constexpr value_type merge(std::uint8_t symbol, std::uint8_t raw_byte,
                                                std::uint16_t low_half) {
    return (value_type{bf16_merge(symbol, raw_byte)} << 16) | low_half;
  }
};

// FP32 values with zero low halves: the BF16 split of the high half, nothing else stored.
template <>
struct format_traits<value_format::bf16_in_fp32> {
  using value_type = std::uint32_t;
  static constexpr value_format format = value_format::bf16_in_fp32;
  static constexpr bool has_raw_byte = true;
  static constexpr bool has_low_half = false;
  FLOATZIP_HD static constexpr std::uint8_t symbol(value_type v) {
    return bf16_exponent(static_cast<std::uint16_t>(v >> 16));
  }
  FLOATZIP_HD static constexpr std::uint8_t raw_byte(value_type v) {
    return bf16_sign_mantissa(static_cast<std::uint16_t>(v >> 16));
  }
  FLOATZIP_HD static constexpr value_type merge(std::uint8_t symbol, std::uint8_t raw_byte,
                                                std::uint16_t /*low_half*/) {
    return value_type{bf16_merge(symbol, raw_byte)} << 16;
  }
};

// FP8: the whole byte is the symbol (256 symbols at most, 2-3 bits of redundancy in weights).
template <value_format F>
struct fp8_traits {
  using value_type = std::uint8_t;
  static constexpr value_format format = F;
  static constexpr bool has_raw_byte = false;
  static constexpr bool has_low_half = false;
  FLOATZIP_HD static constexpr std::uint8_t symbol(value_type v) { return v; }
  FLOATZIP_HD static constexpr value_type merge(std::uint8_t symbol, std::uint8_t /*raw_byte*/,
                                                std::uint16_t /*low_half*/) {
    return symbol;
  }
};
template <>
struct format_traits<value_format::fp8_e4m3> : fp8_traits<value_format::fp8_e4m3> {};
template <>
struct format_traits<value_format::fp8_e5m2> : fp8_traits<value_format::fp8_e5m2> {};

// Calls fn.template operator()<F>() with F == f, a compile-time constant: the one place where a
// runtime format becomes a template argument. Precondition: is_known(f).
template <class Fn>
constexpr decltype(auto) visit_format(value_format f, Fn&& fn) {
  switch (f) {
    case value_format::fp16: return std::forward<Fn>(fn).template operator()<value_format::fp16>();
    case value_format::fp32: return std::forward<Fn>(fn).template operator()<value_format::fp32>();
    case value_format::bf16_in_fp32:
      return std::forward<Fn>(fn).template operator()<value_format::bf16_in_fp32>();
    case value_format::fp8_e4m3:
      return std::forward<Fn>(fn).template operator()<value_format::fp8_e4m3>();
    case value_format::fp8_e5m2:
      return std::forward<Fn>(fn).template operator()<value_format::fp8_e5m2>();
    default: return std::forward<Fn>(fn).template operator()<value_format::bf16>();
  }
}

}  // namespace floatzip
