// The BF16 split is the base of the format: every one of the 65,536 bit patterns must survive
// split + merge, and the two bytes must mean what the format says they mean.
#include <gtest/gtest.h>

#include <bit>
#include <bitset>
#include <cmath>
#include <cstdint>

#include "floatzip/bf16.hpp"

namespace floatzip {
namespace {

constexpr std::uint32_t kPatternCount = 1u << 16;

float widen(std::uint16_t w) { return std::bit_cast<float>(std::uint32_t{w} << 16); }

TEST(Bf16, SplitMergeRoundTripsEveryPattern) {
  for (std::uint32_t i = 0; i < kPatternCount; ++i) {
    const auto w = static_cast<std::uint16_t>(i);
    ASSERT_EQ(bf16_merge(bf16_exponent(w), bf16_sign_mantissa(w)), w)
        << "pattern 0x" << std::hex << i;
  }
}

TEST(Bf16, MergeThenSplitReturnsBothBytes) {
  // Together with the round trip above: (exponent, sign/mantissa) is a bijection with BF16.
  for (std::uint32_t e = 0; e < 256; ++e) {
    for (std::uint32_t s = 0; s < 256; ++s) {
      const std::uint16_t w =
          bf16_merge(static_cast<std::uint8_t>(e), static_cast<std::uint8_t>(s));
      ASSERT_EQ(bf16_exponent(w), e) << "exponent " << e << " sign/mantissa " << s;
      ASSERT_EQ(bf16_sign_mantissa(w), s) << "exponent " << e << " sign/mantissa " << s;
    }
  }
}

TEST(Bf16, BytesCarryTheFloatFields) {
  // Checked against the float value rather than against the bit formulas themselves.
  for (std::uint32_t i = 0; i < kPatternCount; ++i) {
    const auto w = static_cast<std::uint16_t>(i);
    const float value = widen(w);
    const std::uint8_t exponent = bf16_exponent(w);
    const std::uint8_t sign_mantissa = bf16_sign_mantissa(w);
    ASSERT_EQ((sign_mantissa & 0x80u) != 0, std::signbit(value)) << "pattern 0x" << std::hex << i;
    if (exponent == 0xFF) {
      ASSERT_TRUE(std::isinf(value) || std::isnan(value)) << "pattern 0x" << std::hex << i;
      ASSERT_EQ(std::isnan(value), (sign_mantissa & 0x7Fu) != 0) << "pattern 0x" << std::hex << i;
    } else if (exponent == 0) {
      ASSERT_TRUE(value == 0.0f || std::fpclassify(value) == FP_SUBNORMAL)
          << "pattern 0x" << std::hex << i;
    } else {
      // A normal value's biased exponent is ilogb + 127; its mantissa is the top 7 fraction bits.
      ASSERT_EQ(std::ilogb(value) + 127, exponent) << "pattern 0x" << std::hex << i;
      const float fraction = std::ldexp(std::fabs(value), -std::ilogb(value)) - 1.0f;
      ASSERT_EQ(static_cast<std::uint32_t>(std::ldexp(fraction, 7)), sign_mantissa & 0x7Fu)
          << "pattern 0x" << std::hex << i;
    }
  }
}

TEST(Bf16, SpecialValuesKeepTheirBits) {
  // -0, +inf, -inf, a signalling NaN with payload, the largest subnormal, the largest finite value.
  for (const std::uint16_t w : {0x8000, 0x7F80, 0xFF80, 0x7F81, 0x007F, 0x7F7F}) {
    EXPECT_EQ(bf16_merge(bf16_exponent(w), bf16_sign_mantissa(w)), w)
        << "pattern 0x" << std::hex << w;
  }
  EXPECT_EQ(bf16_exponent(0x3F80), 127u);        // 1.0
  EXPECT_EQ(bf16_sign_mantissa(0xBFC0), 0xC0u);  // -1.5: sign set, top mantissa bit set
}

}  // namespace
}  // namespace floatzip
