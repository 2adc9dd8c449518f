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
//   bf16_in_fp16   2      as bf16 of the value as BF16    as bf16 of the value as BF16  -
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
// bf16_in_fp16 is an FP16 tensor whose every value is a BF16 value (weights trained in BF16 and
// saved as F16, common): such a value has at most 8 significant bits, so the 3 low mantissa bits
// of a normal FP16 value are zero, and fp16's split would store them raw. It is coded exactly
// like the BF16 value it equals (the same symbol and raw byte), and decoded by converting back.
// Every such F16 value is exact in BF16: normals (BF16 exponent = FP16 exponent + 112, mantissa
// = mantissa >> 3), subnormals (a BF16 value rounded to FP16's 2^-24 grid keeps at most 8
// significant bits; BF16 exponent 103 + the position of the top mantissa bit), +-0, +-infinity
// and NaNs whose 3 low mantissa bits are zero. The encoder refuses any other value.
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
  bf16_in_fp16 = 6,
};
inline constexpr unsigned kValueFormatCount = 7;

constexpr bool is_known(value_format f) noexcept {
  return static_cast<unsigned>(f) < kValueFormatCount;
}

// Bytes of one value in memory and in the decoded output: 2 2 4 4 1 1 2. 0 for an unknown format.
constexpr std::size_t value_bytes(value_format f) noexcept {
  switch (f) {
    case value_format::bf16:
    case value_format::fp16:
    case value_format::bf16_in_fp16: return 2;
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

// "bf16" "fp16" "fp32" "bf16-in-fp32" "fp8-e4m3" "fp8-e5m2" "bf16-in-fp16", or "unknown".
constexpr std::string_view to_string(value_format f) noexcept {
  switch (f) {
    case value_format::bf16: return "bf16";
    case value_format::fp16: return "fp16";
    case value_format::fp32: return "fp32";
    case value_format::bf16_in_fp32: return "bf16-in-fp32";
    case value_format::fp8_e4m3: return "fp8-e4m3";
    case value_format::fp8_e5m2: return "fp8-e5m2";
    case value_format::bf16_in_fp16: return "bf16-in-fp16";
  }
  return "unknown";
}

// How a value of format F splits into the coded symbol and the raw planes, and merges back.
// Every member is usable in CUDA device code. merge ignores the arguments of planes the format
// does not have; merge(symbol(v), raw_byte(v), low_half(v)) == v for every bit pattern v, but in
// the formats that cannot hold every pattern (bf16_in_fp32, bf16_in_fp16): there, for every v with
// unrepresentable(v) == 0, and merge gives some value for any other input (hostile data).
//
// Optional members, for formats whose exact split or merge is costly for a few rare values, so
// that the loops over values stay vectorised (the encoder and the CPU decoder use them; the GPU
// kernel merges through merge):
//   unrepresentable(v)       the bits of v the format cannot hold: non-zero refuses the value.
//   rare_split(v), common_symbol(v), common_raw_byte(v), common_unrepresentable(v),
//   kRareCommonSymbol:       the common_ split (and refusal) equals symbol / raw_byte
//                            (unrepresentable) for every v but those rare_split flags,
//                            and common_symbol(v) == kRareCommonSymbol exactly for those (so
//                            the encoder finds them 8 symbols at a time); common_symbol_of,
//                            common_raw_byte_of, common_unrepresentable_of(low, high): the
//                            same from a 16-bit value's two bytes (the encoder's loops).
//   rare_merge(symbol), common_merge(symbol, raw_byte): common_merge equals merge for every
//                            symbol but those rare_merge flags; rare_merge_bits(symbol) is
//                            non-zero exactly where rare_merge; common_merge_low/high(symbol,
//                            raw_byte): common_merge's two bytes (16-bit formats).
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
  FLOATZIP_HD static constexpr value_type unrepresentable(value_type v) { return v & 0xFFFFu; }
};

// FP16 values that are BF16 values: the BF16 split of the value as BF16 (see the top).
template <>
struct format_traits<value_format::bf16_in_fp16> {
  using value_type = std::uint16_t;
  static constexpr value_format format = value_format::bf16_in_fp16;
  static constexpr bool has_raw_byte = true;
  static constexpr bool has_low_half = false;

  // Position of the top set bit of a non-zero subnormal's 10-bit mantissa, 0..9.
  FLOATZIP_HD static constexpr unsigned top_bit(unsigned mantissa) {
    unsigned p = 0;
    for (unsigned b = 1; b < 10; ++b) p += (mantissa >> b) != 0 ? 1u : 0u;
    return p;
  }
  FLOATZIP_HD static constexpr std::uint8_t symbol(value_type v) {
    const unsigned magnitude = v & 0x7FFFu;
    const unsigned exponent = magnitude >> 10;
    if (exponent == 31) return 0xFF;  // infinity, NaN
    if (exponent != 0) return static_cast<std::uint8_t>(exponent + 112);
    if (magnitude == 0) return 0;
    return static_cast<std::uint8_t>(top_bit(magnitude) + 103);  // subnormal
  }
  FLOATZIP_HD static constexpr std::uint8_t raw_byte(value_type v) {
    const unsigned sign = (v >> 8) & 0x80u;
    const unsigned magnitude = v & 0x7FFFu;
    if ((magnitude >> 10) != 0 || magnitude == 0)
      return static_cast<std::uint8_t>(sign | ((magnitude >> 3) & 0x7Fu));
    // Subnormal: the 7 bits below the top set one.
    const unsigned p = top_bit(magnitude);
    const unsigned mantissa = p >= 7 ? magnitude >> (p - 7) : magnitude << (7 - p);
    return static_cast<std::uint8_t>(sign | (mantissa & 0x7Fu));
  }
  // The mantissa bits below the 8 significant ones BF16 holds: 3 for normals, infinities and
  // NaNs; for subnormals 2 (top bit 9), 1 (top bit 8), none below.
  // As a mask from t = min(magnitude >> 8, 4) (0: below 0x100, 1, 2-3: top bit 9, 4: normal)
  // with t | t >> 1 | t >> 2 = 0, 1, 3, 7: constant shifts and a min, which vectorise.
  FLOATZIP_HD static constexpr value_type unrepresentable(value_type v) {
    const auto high = static_cast<std::uint16_t>((v & 0x7FFFu) >> 8);
    const auto t = static_cast<std::uint16_t>(high < 4 ? high : 4);
    return static_cast<value_type>(v & (t | t >> 1 | t >> 2));
  }
  // From the BF16 exponent e and raw byte r: the BF16 significand t = 1.m as an FP16 mantissa
  // with its implicit bit (bit 10), moved by e - 113 binades: up into FP16's exponent field for
  // normals (e - 113 + 1 = FP16 exponent), down into the subnormal range below (a shift that
  // drops bits only for values FP16 cannot hold). e = 255 (infinity, NaN) counts as 143, which
  // gives FP16's exponent 31; e = 0 shifts everything out (+-0). Any pair gives a defined
  // value; the pairs the encoder writes give back exactly the FP16 value.
  FLOATZIP_HD static constexpr value_type merge(std::uint8_t symbol, std::uint8_t raw_byte,
                                                std::uint16_t /*low_half*/) {
    const std::uint32_t sign = (raw_byte & 0x80u) << 8;
    const std::uint32_t significand = (0x80u | (raw_byte & 0x7Fu)) << 3;
    const int binades = (symbol == 0xFF ? 143 : int{symbol}) - 113;
    const int down = -binades < 16 ? -binades : 16;
    const std::uint32_t magnitude = binades >= 0
                                        ? significand + (static_cast<std::uint32_t>(binades) << 10)
                                        : significand >> down;
    return static_cast<value_type>(sign | (magnitude & 0x7FFFu));
  }

  // The fast paths. Splits: every value but the non-zero subnormals (normals, infinities,
  // NaNs, +-0) with constant shifts, so that the encoder's loops vectorise. A subnormal's
  // common symbol is 112 (its zero exponent + 112), which no other value's is (normals give
  // 113..142, infinities and NaNs 255, +-0 0).
  static constexpr std::uint8_t kRareCommonSymbol = 112;
  FLOATZIP_HD static constexpr bool rare_split(value_type v) {
    return (v & 0x7C00u) == 0 && (v & 0x3FFu) != 0;
  }
  // Byte by byte, from the value's low byte and high byte (sign, exponent, mantissa bits 9..8),
  // with 8-bit arithmetic and all-ones byte masks for the selects only, so that the encoder's
  // loops vectorise in byte lanes (16 values per SSE2 operation; the same split in 16-bit lanes
  // took 0.25 against 0.14 ns per value, loop microbenchmark; GCC 12 turns ternaries on promoted
  // ints into wider, slower vector code).
  FLOATZIP_HD static constexpr std::uint8_t all_ones_if(bool b) {
    return static_cast<std::uint8_t>(-static_cast<std::uint8_t>(b));
  }
  FLOATZIP_HD static constexpr std::uint8_t common_symbol_of(std::uint8_t low, std::uint8_t high) {
    const auto exponent = static_cast<std::uint8_t>((high >> 2) & 0x1Fu);
    return static_cast<std::uint8_t>(((exponent + 112) | all_ones_if(exponent == 31)) &
                                     ~all_ones_if(((high & 0x7Fu) | low) == 0));
  }
  // unrepresentable(v) for every v but the rare ones: the 3 low mantissa bits of normals,
  // infinities and NaNs (+-0 has none).
  FLOATZIP_HD static constexpr std::uint8_t common_unrepresentable_of(std::uint8_t low,
                                                                      std::uint8_t high) {
    return static_cast<std::uint8_t>(low & 7u & ~all_ones_if((high & 0x7Cu) == 0));
  }
  FLOATZIP_HD static constexpr std::uint8_t common_raw_byte_of(std::uint8_t low,
                                                               std::uint8_t high) {
    return static_cast<std::uint8_t>((high & 0x80u) | ((high << 5) & 0x60u) | (low >> 3));
  }
  // The same of a whole value.
  FLOATZIP_HD static constexpr std::uint8_t common_symbol(value_type v) {
    return common_symbol_of(static_cast<std::uint8_t>(v), static_cast<std::uint8_t>(v >> 8));
  }
  FLOATZIP_HD static constexpr value_type common_unrepresentable(value_type v) {
    return common_unrepresentable_of(static_cast<std::uint8_t>(v),
                                     static_cast<std::uint8_t>(v >> 8));
  }
  FLOATZIP_HD static constexpr std::uint8_t common_raw_byte(value_type v) {
    return common_raw_byte_of(static_cast<std::uint8_t>(v), static_cast<std::uint8_t>(v >> 8));
  }
  // Merges: the FP16 normals (BF16 exponents 113..142) and +-0 byte by byte, with 8-bit
  // arithmetic only, so that the decoder's merge loop vectorises in byte lanes (16 values per
  // SSE2 operation; the same merge in 16-bit lanes took 0.25-0.29 ns per value against 0.17-0.19,
  // loop microbenchmark): from the BF16 exponent e and raw byte r = sign | m (7 bits), the FP16
  // value is sign | (e - 112) << 10 | m << 3, whose high byte is sign | (e - 112) << 2 | m >> 5
  // and low byte m << 3 (e - 112 = 1..30 for normals); +-0 (e = 0) keeps only the sign.
  // Written with & and masks, not && and ?: (which GCC 12 vectorises into slower code).
  FLOATZIP_HD static constexpr bool rare_merge(std::uint8_t symbol) {
    return (symbol != 0) & (static_cast<std::uint8_t>(symbol - 113) > 29);
  }
  // Non-zero exactly where rare_merge: (e - 113) above 29 as a max and a subtraction (one
  // unsigned byte compare is two operations in SSE2), and not for e = 0.
  FLOATZIP_HD static constexpr std::uint8_t rare_merge_bits(std::uint8_t symbol) {
    const auto above = static_cast<std::uint8_t>(symbol - 113);
    return static_cast<std::uint8_t>(((above > 29 ? above : 29) - 29) & ~all_ones_if(symbol == 0));
  }
  FLOATZIP_HD static constexpr std::uint8_t common_merge_low(std::uint8_t symbol,
                                                             std::uint8_t raw_byte) {
    return static_cast<std::uint8_t>((raw_byte << 3) & ~all_ones_if(symbol == 0));
  }
  FLOATZIP_HD static constexpr std::uint8_t common_merge_high(std::uint8_t symbol,
                                                              std::uint8_t raw_byte) {
    const auto exponent = static_cast<std::uint8_t>((symbol - 112) << 2);
    return static_cast<std::uint8_t>(
        (raw_byte & 0x80u) | ((exponent | ((raw_byte >> 5) & 3u)) & ~all_ones_if(symbol == 0)));
  }
  FLOATZIP_HD static constexpr value_type common_merge(std::uint8_t symbol, std::uint8_t raw_byte) {
    return static_cast<value_type>(common_merge_low(symbol, raw_byte) |
                                   common_merge_high(symbol, raw_byte) << 8);
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
    case value_format::bf16_in_fp16:
      return std::forward<Fn>(fn).template operator()<value_format::bf16_in_fp16>();
    default: return std::forward<Fn>(fn).template operator()<value_format::bf16>();
  }
}

namespace detail {

// Bit i set where byte i of `word` is not zero: the top bit of each byte of (low 7 bits + 0x7F)
// | byte (exact: no carry crosses a byte), the eight gathered into one byte by a multiplication.
// The encoder's and the decoder's rare-value passes (splits_rare_values, merges_rare_symbols)
// find a 64-value run's rare values with it, eight per word and no branch.
constexpr std::uint8_t nonzero_byte_bits(std::uint64_t word) {
  constexpr std::uint64_t kLow7 = 0x7F7F7F7F7F7F7F7Full;
  const std::uint64_t tops = (((word & kLow7) + kLow7) | word) & ~kLow7;
  return static_cast<std::uint8_t>((tops >> 7) * 0x0102040810204080ull >> 56);
}
static_assert(nonzero_byte_bits(0) == 0 && nonzero_byte_bits(~std::uint64_t{0}) == 0xFF &&
              nonzero_byte_bits(0x0080000100FF0000ull) == 0b01010100 &&
              nonzero_byte_bits(0x7F00000000000001ull) == 0b10000001);

}  // namespace detail

}  // namespace floatzip
