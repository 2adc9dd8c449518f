// Every value format through the coder: the traits' split and merge, and (below) bundles of every
// format compressed and decompressed bit-exactly, on every bit pattern and on real weights.
#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <limits>

#include "floatzip/value_format.hpp"

namespace floatzip {
namespace {

template <value_format F>
std::uint8_t raw_of(typename format_traits<F>::value_type v) {
  if constexpr (format_traits<F>::has_raw_byte) {
    return format_traits<F>::raw_byte(v);
  } else {
    return 0;
  }
}

template <value_format F>
std::uint16_t low_of(typename format_traits<F>::value_type v) {
  if constexpr (format_traits<F>::has_low_half) {
    return format_traits<F>::low_half(v);
  } else {
    return 0;
  }
}

template <value_format F>
typename format_traits<F>::value_type split_merge(typename format_traits<F>::value_type v) {
  using T = format_traits<F>;
  return T::merge(T::symbol(v), raw_of<F>(v), low_of<F>(v));
}

TEST(value_format, names_widths_and_planes) {
  EXPECT_EQ(kValueFormatCount, 6u);
  const value_format all[] = {value_format::bf16,     value_format::fp16,
                              value_format::fp32,     value_format::bf16_in_fp32,
                              value_format::fp8_e4m3, value_format::fp8_e5m2};
  const std::size_t bytes[] = {2, 2, 4, 4, 1, 1};
  const char* names[] = {"bf16", "fp16", "fp32", "bf16-in-fp32", "fp8-e4m3", "fp8-e5m2"};
  for (unsigned i = 0; i < kValueFormatCount; ++i) {
    EXPECT_EQ(static_cast<unsigned>(all[i]), i);
    EXPECT_TRUE(is_known(all[i]));
    EXPECT_EQ(value_bytes(all[i]), bytes[i]);
    EXPECT_EQ(to_string(all[i]), names[i]);
    visit_format(all[i], [&]<value_format F>() {
      EXPECT_EQ(F, all[i]);
      EXPECT_EQ(format_traits<F>::format, F);
      EXPECT_EQ(sizeof(typename format_traits<F>::value_type), bytes[i]);
      EXPECT_EQ(format_traits<F>::has_raw_byte, format_has_raw_byte(F));
      EXPECT_EQ(format_traits<F>::has_low_half, format_has_low_half(F));
    });
  }
  EXPECT_FALSE(is_known(static_cast<value_format>(6)));
  EXPECT_FALSE(is_known(static_cast<value_format>(255)));
  EXPECT_EQ(value_bytes(static_cast<value_format>(6)), 0u);
  EXPECT_EQ(to_string(static_cast<value_format>(6)), "unknown");
}

template <value_format F>
void expect_every_pattern_splits_and_merges() {
  using V = typename format_traits<F>::value_type;
  for (std::uint32_t i = 0; i <= std::numeric_limits<V>::max(); ++i) {
    const auto v = static_cast<V>(i);
    ASSERT_EQ(split_merge<F>(v), v) << to_string(F) << " pattern 0x" << std::hex << i;
  }
}

TEST(value_format, every_8_and_16_bit_pattern_splits_and_merges) {
  expect_every_pattern_splits_and_merges<value_format::bf16>();
  expect_every_pattern_splits_and_merges<value_format::fp16>();
  expect_every_pattern_splits_and_merges<value_format::fp8_e4m3>();
  expect_every_pattern_splits_and_merges<value_format::fp8_e5m2>();
}

TEST(value_format, fp32_splits_and_merges) {
  // Every high half with a few low halves, and every low half with a few high halves.
  for (std::uint32_t high = 0; high < (1u << 16); ++high) {
    for (const std::uint32_t low : {0u, 1u, 0x8000u, 0xFFFFu, high ^ 0x5A5Au}) {
      const std::uint32_t v = high << 16 | low;
      ASSERT_EQ(split_merge<value_format::fp32>(v), v) << std::hex << v;
    }
    const std::uint32_t widened = high << 16;
    ASSERT_EQ(split_merge<value_format::bf16_in_fp32>(widened), widened) << std::hex << widened;
  }
  // The symbol is the FP32 exponent, as for BF16.
  EXPECT_EQ(format_traits<value_format::fp32>::symbol(std::bit_cast<std::uint32_t>(1.0f)), 127);
  EXPECT_EQ(format_traits<value_format::fp32>::symbol(std::bit_cast<std::uint32_t>(-0.75f)), 126);
}

}  // namespace
}  // namespace floatzip
