// floatzip: the BF16 split that makes weights compressible.
//
// BF16 is 1 sign bit, 8 exponent bits, 7 mantissa bits. The exponent byte carries 2.5-3.1 bits of
// entropy in trained weights and is entropy-coded; sign and mantissa are nearly uniform and are
// kept as one raw byte: sign in bit 7, mantissa in bits 0-6.
#pragma once

#include <cstdint>

#include "floatzip/config.hpp"

namespace floatzip {

// Exponent byte e = (w >> 7) & 0xFF.
FLOATZIP_HD constexpr std::uint8_t bf16_exponent(std::uint16_t w) {
  return static_cast<std::uint8_t>((w >> 7) & 0xFFu);
}

// Sign/mantissa byte s = ((w >> 8) & 0x80) | (w & 0x7F).
FLOATZIP_HD constexpr std::uint8_t bf16_sign_mantissa(std::uint16_t w) {
  return static_cast<std::uint8_t>(((w >> 8) & 0x80u) | (w & 0x7Fu));
}

// Rebuild w = ((s & 0x80) << 8) | (e << 7) | (s & 0x7F). Exact for all 65,536 patterns.
FLOATZIP_HD constexpr std::uint16_t bf16_merge(std::uint8_t exponent, std::uint8_t sign_mantissa) {
  return static_cast<std::uint16_t>(((sign_mantissa & 0x80u) << 8) | (unsigned{exponent} << 7) |
                                    (sign_mantissa & 0x7Fu));
}

}  // namespace floatzip
