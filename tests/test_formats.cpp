// Every value format through the coder: the traits' split and merge, and bundles of every format
// compressed and decompressed bit-exactly, on every 8- and 16-bit pattern, on FP32 special values,
// on real weights (../shared/models, converted where the format needs it), with their sizes
// against the ideal of each format's split.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "float_conversions.hpp"
#include "floatzip/decoder.hpp"
#include "floatzip/encoder.hpp"
#include "floatzip/value_format.hpp"
#include "format_test_data.hpp"
#include "test_support.hpp"

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
  EXPECT_EQ(kValueFormatCount, 7u);
  const value_format all[] = {value_format::bf16,        value_format::fp16,
                              value_format::fp32,        value_format::bf16_in_fp32,
                              value_format::fp8_e4m3,    value_format::fp8_e5m2,
                              value_format::bf16_in_fp16};
  const std::size_t bytes[] = {2, 2, 4, 4, 1, 1, 2};
  const char* names[] = {"bf16",     "fp16",     "fp32",        "bf16-in-fp32",
                         "fp8-e4m3", "fp8-e5m2", "bf16-in-fp16"};
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
  EXPECT_FALSE(is_known(static_cast<value_format>(7)));
  EXPECT_FALSE(is_known(static_cast<value_format>(255)));
  EXPECT_EQ(value_bytes(static_cast<value_format>(7)), 0u);
  EXPECT_EQ(to_string(static_cast<value_format>(7)), "unknown");
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

// The value of an FP16 pattern as an FP32 pattern (exact), computed apart from the traits.
std::uint32_t fp16_as_fp32_bits(std::uint16_t h) {
  const unsigned exponent = (h >> 10) & 31;
  const unsigned mantissa = h & 0x3FF;
  const bool negative = (h & 0x8000) != 0;
  float f;
  if (exponent == 31) {
    // Infinity or NaN with the payload in the top mantissa bits, as a widening conversion does.
    return (negative ? 0x80000000u : 0u) | 0x7F800000u | (std::uint32_t{mantissa} << 13);
  }
  f = exponent == 0
          ? std::ldexp(static_cast<float>(mantissa), -24)
          : std::ldexp(static_cast<float>(1024 + mantissa), static_cast<int>(exponent) - 25);
  return std::bit_cast<std::uint32_t>(negative ? -f : f);
}

// bf16_in_fp16: an FP16 value qualifies exactly when it is a BF16 value (its FP32 widening has
// zero low 16 bits); then its symbol and raw byte are BF16's of that value, and merge gives it
// back. Checked on all 65,536 patterns against an independent widening.
TEST(value_format, bf16_in_fp16_holds_exactly_the_bf16_values_of_every_pattern) {
  using T = format_traits<value_format::bf16_in_fp16>;
  unsigned qualifying = 0;
  unsigned subnormals = 0;
  for (std::uint32_t i = 0; i < (1u << 16); ++i) {
    const auto v = static_cast<std::uint16_t>(i);
    const std::uint32_t wide = fp16_as_fp32_bits(v);
    const bool is_bf16 = (wide & 0xFFFFu) == 0;
    ASSERT_EQ(T::unrepresentable(v) == 0, is_bf16) << std::hex << i;
    // The fast split equals the exact one wherever it does not flag the value.
    if (!T::rare_split(v)) {
      ASSERT_EQ(T::common_symbol(v), T::symbol(v)) << std::hex << i;
      ASSERT_EQ(T::common_raw_byte(v), T::raw_byte(v)) << std::hex << i;
    }
    ASSERT_EQ(T::common_symbol(v) == T::kRareCommonSymbol, T::rare_split(v)) << std::hex << i;
    if (!T::rare_split(v)) {
      ASSERT_EQ(T::common_unrepresentable(v), T::unrepresentable(v)) << std::hex << i;
    }
    if (!is_bf16) continue;
    ++qualifying;
    if ((v & 0x7C00) == 0 && (v & 0x3FF) != 0) ++subnormals;
    const auto high = static_cast<std::uint16_t>(wide >> 16);
    ASSERT_EQ(T::symbol(v), bf16_exponent(high)) << std::hex << i;
    ASSERT_EQ(T::raw_byte(v), bf16_sign_mantissa(high)) << std::hex << i;
    ASSERT_EQ(split_merge<value_format::bf16_in_fp16>(v), v) << std::hex << i;
  }
  // Per sign: 30 normal exponents x 128 mantissas, infinity and 127 NaNs, 0, and the non-zero
  // subnormals of at most 8 significant bits: 255 (top bit 0..7) + 128 (top bit 8, low bit 0)
  // + 128 (top bit 9, low 2 bits 0) = 511.
  EXPECT_EQ(subnormals, 2u * 511);
  EXPECT_EQ(qualifying, 2u * (30 * 128 + 128 + 1 + 511));
}

// Every (symbol, raw byte) pair, a bundle may hold any: merge is defined on all, the fast merge
// equals it where it does not flag the symbol, and the CPU decoder's merge loop equals merge on
// all (so hostile bytes decode the same on every path).
TEST(value_format, bf16_in_fp16_merges_every_symbol_and_raw_byte_pair_alike) {
  using T = format_traits<value_format::bf16_in_fp16>;
  std::vector<std::uint8_t> symbols(1u << 16);
  std::vector<std::uint8_t> raw(1u << 16);
  std::vector<std::uint16_t> expected(1u << 16);
  for (std::uint32_t i = 0; i < (1u << 16); ++i) {
    symbols[i] = static_cast<std::uint8_t>(i >> 8);
    raw[i] = static_cast<std::uint8_t>(i);
    expected[i] = T::merge(symbols[i], raw[i], 0);
    if (!T::rare_merge(symbols[i])) {
      ASSERT_EQ(T::common_merge(symbols[i], raw[i]), expected[i]) << std::hex << i;
    }
    // A symbol the encoder writes (the BF16 exponent of an FP16 value) gives the FP16 value of
    // BF16 value (symbol, raw) wherever FP16 holds it.
    const std::uint16_t b = bf16_merge(symbols[i], raw[i]);
    const std::uint16_t h = test::bf16_to_fp16(b);
    if ((std::uint32_t{b} << 16) == fp16_as_fp32_bits(h)) {
      ASSERT_EQ(expected[i], h) << std::hex << i;
    }
  }
  // The merge loop over runs of several lengths and offsets (its rare-symbol pass included).
  std::mt19937 rng(29);
  std::vector<std::uint32_t> order(1u << 16);
  for (std::uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  for (const bool shuffled : {false, true}) {
    if (shuffled) std::shuffle(order.begin(), order.end(), rng);
    std::vector<std::uint8_t> s(order.size());
    std::vector<std::uint8_t> r(order.size());
    for (std::size_t k = 0; k < order.size(); ++k) {
      s[k] = symbols[order[k]];
      r[k] = raw[order[k]];
    }
    std::vector<std::uint16_t> out(order.size() + 1, 0xA5A5);
    for (std::size_t at = 0; at < order.size();) {
      const std::size_t n = std::min<std::size_t>(order.size() - at, 1 + rng() % 200);
      detail::merge_common_run<T>(s.data() + at, r.data() + at, n,
                                  reinterpret_cast<std::byte*>(out.data() + at));
      at += n;
    }
    for (std::size_t k = 0; k < order.size(); ++k)
      ASSERT_EQ(out[k], expected[order[k]]) << std::hex << order[k];
    EXPECT_EQ(out.back(), 0xA5A5);
  }
}

// ---- bundles of every format --------------------------------------------------------------------

constexpr value_format kAllFormats[] = {value_format::bf16,        value_format::fp16,
                                        value_format::fp32,        value_format::bf16_in_fp32,
                                        value_format::fp8_e4m3,    value_format::fp8_e5m2,
                                        value_format::bf16_in_fp16};

using byte_tensor = std::vector<std::byte>;

template <class T>
byte_tensor bytes_of(const std::vector<T>& v) {
  byte_tensor out(v.size() * sizeof(T));
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

std::vector<std::span<const std::byte>> spans_of(const std::vector<byte_tensor>& tensors) {
  return {tensors.begin(), tensors.end()};
}

// Checks the raw planes of every segment against the traits, independently of the decoder.
template <value_format F>
void expect_planes(const bundle_view& bundle, std::span<const std::byte> all_values) {
  using traits = format_traits<F>;
  using V = typename traits::value_type;
  bundle.for_each_segment([&](const bundle_view& seg) -> error {
    const std::uint64_t first = seg.first_value();
    EXPECT_EQ(seg.raw_bytes() != nullptr, traits::has_raw_byte);
    EXPECT_EQ(seg.low_halves() != nullptr, traits::has_low_half);
    for (std::uint64_t i = 0; i < seg.value_count(); ++i) {
      V v;
      std::memcpy(&v, all_values.data() + (first + i) * sizeof(V), sizeof v);
      if constexpr (traits::has_raw_byte) {
        if (seg.raw_bytes()[i] != traits::raw_byte(v)) {
          ADD_FAILURE() << to_string(F) << ": raw byte of value " << first + i;
          return {};
        }
      }
      if constexpr (traits::has_low_half) {
        if (seg.low_halves()[i] != traits::low_half(v)) {
          ADD_FAILURE() << to_string(F) << ": low half of value " << first + i;
          return {};
        }
      }
    }
    return {};
  });
}

// Compresses, parses, checks the planes, and decodes through the span of bytes (at an odd address,
// so unaligned), the span of the format's width and decompress_values; every output is poisoned
// one value past the end, which must stay untouched.
void expect_round_trip(value_format f, const std::vector<byte_tensor>& tensors,
                       const encode_options& options = {}, unsigned decode_threads = 0) {
  SCOPED_TRACE(std::string(to_string(f)));
  const std::vector<std::byte> bytes = compress_bundle(f, spans_of(tensors), options);
  auto view = parse_bundle(bytes);
  ASSERT_TRUE(view.has_value()) << view.error().message;
  ASSERT_EQ(view->format(), f);
  byte_tensor all;
  for (const auto& t : tensors) all.insert(all.end(), t.begin(), t.end());
  const std::size_t width = value_bytes(f);
  ASSERT_EQ(view->value_count(), all.size() / width);
  ASSERT_EQ(view->tensor_count(), tensors.size());
  visit_format(f, [&]<value_format F>() { expect_planes<F>(*view, all); });
  const decode_options dopt{.threads = decode_threads};

  constexpr std::byte kPoison{0xA5};
  std::vector<std::byte> out(all.size() + width + 1, kPoison);
  const std::span<std::byte> odd(out.data() + 1, all.size() + width);
  error e = decompress(*view, odd, dopt);
  ASSERT_TRUE(e.ok()) << e.message;
  ASSERT_TRUE(std::equal(all.begin(), all.end(), odd.begin())) << "byte-span decode differs";
  EXPECT_EQ(out[0], kPoison);
  for (std::size_t i = all.size(); i < odd.size(); ++i) ASSERT_EQ(odd[i], kPoison);

  auto typed = [&]<class T>(T) {
    std::vector<T> values(all.size() / sizeof(T) + 1, T(0x5A5A5A5Au));
    const error te = decompress(*view, std::span<T>(values), dopt);
    ASSERT_TRUE(te.ok()) << te.message;
    ASSERT_EQ(std::memcmp(values.data(), all.data(), all.size()), 0) << "typed decode differs";
    EXPECT_EQ(values.back(), T(0x5A5A5A5Au));
  };
  if (width == 1) typed(std::uint8_t{});
  if (width == 2) typed(std::uint16_t{});
  if (width == 4) typed(std::uint32_t{});

  auto buffer = decompress_values(*view, dopt);
  ASSERT_TRUE(buffer.has_value()) << buffer.error().message;
  EXPECT_EQ(buffer->format(), f);
  EXPECT_EQ(buffer->size(), all.size() / width);
  ASSERT_EQ(buffer->bytes().size(), all.size());
  EXPECT_TRUE(std::equal(all.begin(), all.end(), buffer->bytes().begin()));
  EXPECT_EQ(buffer->values().empty(), width != 2 || all.empty());
}

// Options that reach every decoder path: many small chunks and groups (several lanes, lone groups
// cut between lanes), 15-bit codes (the encoder's one-pair flush), single-symbol 1-bit codes,
// several segments, one thread and two.
const encode_options kOptionSets[] = {
    {},
    {.max_code_length = 15, .chunk_bytes = 4, .chunks_per_group = 1, .threads = 2},
    {.max_code_length = 8, .chunk_bytes = 8, .chunks_per_group = 3, .threads = 1},
    {.max_code_length = 12, .chunk_bytes = 16, .chunks_per_group = 7, .adaptive_codes = false},
};

std::vector<std::uint32_t> every_pattern(unsigned bits) {
  std::vector<std::uint32_t> v(std::size_t{1} << bits);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::uint32_t>(i);
  return v;
}

template <class T>
byte_tensor narrowed(const std::vector<std::uint32_t>& v, unsigned shift = 0) {
  std::vector<T> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<T>(v[i] << shift);
  return bytes_of(out);
}

TEST(formats, every_8_bit_pattern_of_fp8_round_trips) {
  for (const value_format f : {value_format::fp8_e4m3, value_format::fp8_e5m2}) {
    const byte_tensor all = narrowed<std::uint8_t>(every_pattern(8));
    // Alone, repeated (a bundle of many chunks), shuffled, and next to a skewed tensor.
    std::vector<std::uint32_t> shuffled;
    for (int r = 0; r < 40; ++r) {
      const auto p = every_pattern(8);
      shuffled.insert(shuffled.end(), p.begin(), p.end());
    }
    std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(7));
    std::vector<std::uint32_t> skewed(5000);
    std::mt19937 rng(3);
    for (auto& x : skewed) x = 0x30 + (rng() % 7) * (rng() % 3);
    for (const auto& o : kOptionSets) {
      expect_round_trip(f, {all}, o);
      expect_round_trip(f, {narrowed<std::uint8_t>(shuffled), all, narrowed<std::uint8_t>(skewed)},
                        o);
    }
  }
}

TEST(formats, every_16_bit_pattern_of_bf16_and_fp16_round_trips) {
  const auto patterns = every_pattern(16);
  auto shuffled = patterns;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(11));
  for (const value_format f : {value_format::bf16, value_format::fp16}) {
    for (const auto& o : kOptionSets) {
      expect_round_trip(f, {narrowed<std::uint16_t>(patterns)}, o);
      expect_round_trip(f, {narrowed<std::uint16_t>(shuffled), byte_tensor{}}, o, 1);
    }
  }
}

TEST(formats, bf16_through_the_byte_api_equals_the_uint16_api) {
  std::mt19937 rng(5);
  std::student_t_distribution<float> t(5.0f);
  std::vector<std::uint16_t> v(100000);
  for (auto& x : v) x = test::float_to_bf16(t(rng) * 0.02f);
  const std::span<const std::byte> bytes[] = {std::as_bytes(std::span(v))};
  EXPECT_EQ(compress_bundle(value_format::bf16, bytes), compress_bundle(v));
}

TEST(formats, fp32_special_values_and_random_bits_round_trip) {
  std::vector<std::uint32_t> v = {
      0x00000000u, 0x80000000u,                            // +-0
      0x7F800000u, 0xFF800000u,                            // +-inf
      0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0x7FBFFFFFu,  // NaNs: quiet, signalling, payloads
      0xFFFFFFFFu, 0x7FFFFFFFu, 0xFFA5A5A5u, 0x7F812345u,
      0x00000001u, 0x80000001u, 0x007FFFFFu, 0x807FFFFFu,  // subnormals
      0x00400000u, 0x00012345u, 0x00800000u, 0x80800000u,  // and the smallest normals
      0x7F7FFFFFu, 0xFF7FFFFFu, 0x3F800000u, 0xBF800000u};
  std::mt19937_64 rng(17);
  for (int i = 0; i < 300000; ++i) v.push_back(static_cast<std::uint32_t>(rng()));
  std::student_t_distribution<float> t(5.0f);
  for (int i = 0; i < 300000; ++i) v.push_back(std::bit_cast<std::uint32_t>(t(rng) * 0.03f));
  for (const auto& o : kOptionSets) {
    expect_round_trip(value_format::fp32, {bytes_of(v)}, o);
  }
  // Every high half (all 65,536 patterns, NaNs and infinities among them) with varied low halves.
  std::vector<std::uint32_t> highs(1u << 16);
  for (std::uint32_t h = 0; h < highs.size(); ++h)
    highs[h] = h << 16 | static_cast<std::uint32_t>(rng() & 0xFFFF);
  expect_round_trip(value_format::fp32, {bytes_of(highs)});
}

TEST(formats, bf16_in_fp32_round_trips_and_refuses_low_bits) {
  const auto patterns = every_pattern(16);
  const byte_tensor widened = narrowed<std::uint32_t>(patterns, 16);
  for (const auto& o : kOptionSets) expect_round_trip(value_format::bf16_in_fp32, {widened}, o);
  // The same coding as BF16 of the high halves: same stream, half the output width.
  const auto b16 =
      compress_bundle(value_format::bf16,
                      std::vector<std::span<const std::byte>>{narrowed<std::uint16_t>(patterns)});
  const auto b32 =
      compress_bundle(value_format::bf16_in_fp32, std::vector<std::span<const std::byte>>{widened});
  ASSERT_EQ(b16.size(), b32.size());
  EXPECT_TRUE(std::equal(b16.begin() + 8, b16.end(), b32.begin() + 8));  // all but the format byte

  EXPECT_TRUE(low_halves_zero(widened));
  EXPECT_TRUE(low_halves_zero({}));
  EXPECT_FALSE(low_halves_zero(std::span(widened).first(widened.size() - 1)));
  for (const std::size_t at : {std::size_t{0}, std::size_t{5000}, patterns.size() - 1}) {
    for (const std::uint8_t low : {std::uint8_t{1}, std::uint8_t{0x80}}) {
      for (const std::size_t byte : {std::size_t{0}, std::size_t{1}}) {
        byte_tensor bad = widened;
        bad[at * 4 + byte] = std::byte{low};
        EXPECT_FALSE(low_halves_zero(bad));
        const std::vector<std::span<const std::byte>> tensors = {widened, bad};
        try {
          (void)compress_bundle(value_format::bf16_in_fp32, tensors);
          ADD_FAILURE() << "accepted a non-zero low half at value " << at;
        } catch (const exception& e) {
          EXPECT_EQ(e.code(), errc::invalid_argument);
          EXPECT_NE(std::string(e.what()).find("tensor 1"), std::string::npos) << e.what();
        }
        // fp32 takes the same values.
        expect_round_trip(value_format::fp32, {bad});
      }
    }
  }
}

// Every FP16 pattern that is a BF16 value round-trips through bf16_in_fp16 (alone, shuffled,
// beside an empty tensor), coded exactly as BF16 codes those values; every other pattern is
// refused, naming the tensor, and fp16_values_are_bf16 says so first.
TEST(formats, bf16_in_fp16_round_trips_every_bf16_value_and_refuses_the_rest) {
  using T = format_traits<value_format::bf16_in_fp16>;
  std::vector<std::uint32_t> holds;
  std::vector<std::uint16_t> refused;
  for (std::uint32_t i = 0; i < (1u << 16); ++i) {
    if ((fp16_as_fp32_bits(static_cast<std::uint16_t>(i)) & 0xFFFFu) == 0) {
      holds.push_back(i);
    } else {
      refused.push_back(static_cast<std::uint16_t>(i));
    }
  }
  auto shuffled = holds;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(13));
  const byte_tensor all = narrowed<std::uint16_t>(holds);
  for (const auto& o : kOptionSets) {
    expect_round_trip(value_format::bf16_in_fp16, {all}, o);
    expect_round_trip(value_format::bf16_in_fp16,
                      {narrowed<std::uint16_t>(shuffled), byte_tensor{}}, o, 1);
  }
  EXPECT_TRUE(fp16_values_are_bf16(all));
  EXPECT_TRUE(fp16_values_are_bf16({}));
  EXPECT_FALSE(fp16_values_are_bf16(std::span(all).first(all.size() - 1)));

  // The same bundle as BF16 of the same values, but the format byte (byte 7).
  std::vector<std::uint16_t> as_bf16(holds.size());
  for (std::size_t i = 0; i < holds.size(); ++i)
    as_bf16[i] =
        static_cast<std::uint16_t>(fp16_as_fp32_bits(static_cast<std::uint16_t>(holds[i])) >> 16);
  const auto b16 = compress_bundle(value_format::bf16,
                                   std::vector<std::span<const std::byte>>{bytes_of(as_bf16)});
  const auto b16in16 =
      compress_bundle(value_format::bf16_in_fp16, std::vector<std::span<const std::byte>>{all});
  ASSERT_EQ(b16.size(), b16in16.size());
  EXPECT_EQ(b16in16[7], std::byte{6});
  EXPECT_TRUE(std::equal(b16.begin() + 8, b16.end(), b16in16.begin() + 8));

  // Each refused pattern, alone and as the last value of a second tensor of trained-looking
  // values (the vectorised loops and the tails both check). fp16 takes them all.
  ASSERT_EQ(refused.size(), (1u << 16) - holds.size());
  std::mt19937 rng(19);
  std::vector<std::uint16_t> big(5000);
  for (auto& x : big) x = static_cast<std::uint16_t>(holds[rng() % holds.size()]);
  for (std::size_t k = 0; k < refused.size(); ++k) {
    const std::uint16_t v = refused[k];
    ASSERT_NE(T::unrepresentable(v), 0) << std::hex << v;
    const std::vector<std::uint16_t> one = {v};
    const byte_tensor alone = bytes_of(one);
    ASSERT_FALSE(fp16_values_are_bf16(alone)) << std::hex << v;
    std::vector<std::span<const std::byte>> tensors = {alone};
    byte_tensor with;
    if (k % 97 == 0) {  // a sample with the big tensor: 5000 values per call
      big[k % big.size()] = v;
      with = bytes_of(big);
      tensors = {all, with};
    }
    try {
      (void)compress_bundle(value_format::bf16_in_fp16, tensors);
      ADD_FAILURE() << "accepted 0x" << std::hex << v;
    } catch (const exception& e) {
      ASSERT_EQ(e.code(), errc::invalid_argument);
      ASSERT_NE(std::string(e.what()).find(tensors.size() == 2 ? "tensor 1" : "tensor 0"),
                std::string::npos)
          << e.what();
      ASSERT_NE(std::string(e.what()).find("not bf16-in-fp16"), std::string::npos) << e.what();
    }
    if (k % 97 == 0) big[k % big.size()] = static_cast<std::uint16_t>(holds[k % holds.size()]);
  }
  expect_round_trip(
      value_format::fp16,
      {narrowed<std::uint16_t>(std::vector<std::uint32_t>(refused.begin(), refused.end()))});
}

TEST(formats, encoder_refuses_bad_arguments) {
  const byte_tensor odd(7);
  auto code_of = [](auto&& fn) {
    try {
      fn();
    } catch (const exception& e) {
      return e.code();
    }
    return errc::ok;
  };
  for (const value_format f : {value_format::bf16, value_format::fp16, value_format::fp32,
                               value_format::bf16_in_fp32, value_format::bf16_in_fp16}) {
    EXPECT_EQ(
        code_of([&] { (void)compress_bundle(f, std::vector<std::span<const std::byte>>{odd}); }),
        errc::invalid_argument)
        << to_string(f);
  }
  EXPECT_EQ(code_of([&] {
              (void)compress_bundle(value_format::fp8_e4m3,
                                    std::vector<std::span<const std::byte>>{odd});
            }),
            errc::ok);
  EXPECT_EQ(code_of([&] {
              (void)compress_bundle(static_cast<value_format>(7),
                                    std::vector<std::span<const std::byte>>{odd});
            }),
            errc::invalid_argument);
}

// n values of format f, every byte `fill` (but the low halves of bf16_in_fp32, which are zero,
// and the 3 low bits of bf16_in_fp16's values).
byte_tensor constant_values(value_format f, std::size_t n, std::byte fill) {
  byte_tensor v(n * value_bytes(f), fill);
  if (f == value_format::bf16_in_fp32) {
    for (std::size_t i = 0; i < v.size(); i += 4) v[i] = v[i + 1] = std::byte{0};
  }
  if (f == value_format::bf16_in_fp16) {  // normals: the 3 low mantissa bits zero
    for (std::size_t i = 0; i < v.size(); i += 2) v[i] &= std::byte{0xF8};
  }
  return v;
}

TEST(formats, decompress_refuses_the_wrong_width_and_too_little_room) {
  for (const value_format f : kAllFormats) {
    SCOPED_TRACE(std::string(to_string(f)));
    const std::size_t width = value_bytes(f);
    const byte_tensor values = constant_values(f, 1000, std::byte{0x11});
    const auto bytes = compress_bundle(f, std::vector<std::span<const std::byte>>{values});
    const bundle_view view = parse_bundle(bytes).value();
    std::vector<std::uint8_t> u8(4000);
    std::vector<std::uint16_t> u16(4000);
    std::vector<std::uint32_t> u32(4000);
    const error e8 = decompress(view, std::span(u8));
    const error e16 = decompress(view, std::span(u16));
    const error e32 = decompress(view, std::span(u32));
    EXPECT_EQ(e8.code, width == 1 ? errc::ok : errc::invalid_argument) << e8.message;
    EXPECT_EQ(e16.code, width == 2 ? errc::ok : errc::invalid_argument) << e16.message;
    EXPECT_EQ(e32.code, width == 4 ? errc::ok : errc::invalid_argument) << e32.message;
    for (const error* e : {&e8, &e16, &e32}) {
      if (!e->ok()) {
        EXPECT_NE(e->message.find(to_string(f)), std::string::npos) << e->message;
        EXPECT_NE(e->message.find(std::to_string(width) + " bytes"), std::string::npos)
            << e->message;
      }
    }
    std::vector<std::byte> small(values.size() - 1);
    EXPECT_EQ(decompress(view, std::span(small)).code, errc::insufficient_space);
    std::vector<std::byte> exact(values.size());
    EXPECT_TRUE(decompress(view, std::span(exact)).ok());
    EXPECT_EQ(exact, values);
  }
}

TEST(formats, parse_refuses_unknown_formats_and_mismatched_sections) {
  for (const value_format f : kAllFormats) {
    SCOPED_TRACE(std::string(to_string(f)));
    const byte_tensor values = constant_values(f, 3000, std::byte{0x3C});
    const auto good = compress_bundle(f, std::vector<std::span<const std::byte>>{values});
    ASSERT_TRUE(parse_bundle(good).has_value());
    for (unsigned byte = 0; byte < 256; ++byte) {
      auto b = good;
      b[7] = static_cast<std::byte>(byte);
      const auto parsed = parse_bundle(b);
      const auto other = static_cast<value_format>(byte);
      if (!is_known(other)) {
        ASSERT_FALSE(parsed.has_value()) << byte;
        EXPECT_EQ(parsed.error().code, errc::bad_data);
        EXPECT_NE(parsed.error().message.find("value_format"), std::string::npos);
      } else if (format_has_raw_byte(other) != format_has_raw_byte(f) ||
                 format_has_low_half(other) != format_has_low_half(f)) {
        // Other sections than the bundle holds: their sizes disagree with total_bytes.
        EXPECT_FALSE(parsed.has_value()) << to_string(other);
      } else {
        // The same sections (bf16 / fp16 / bf16_in_fp32, or the two FP8 formats): a bundle of
        // the other format, decoded as such.
        ASSERT_TRUE(parsed.has_value()) << to_string(other);
        EXPECT_EQ(parsed->format(), other);
      }
    }
  }
}

TEST(formats, symbol_histogram_of_counts_the_traits_symbols) {
  std::mt19937_64 rng(23);
  std::vector<std::byte> values(40000 * 4 + 3);
  for (auto& b : values) b = static_cast<std::byte>(rng());
  for (const value_format f : kAllFormats) {
    visit_format(f, [&]<value_format F>() {
      using traits = format_traits<F>;
      using V = typename traits::value_type;
      for (const std::size_t n : {std::size_t{0}, std::size_t{100}, std::size_t{9000}}) {
        symbol_histogram expected{};
        for (std::size_t i = 0; i < n; ++i) {
          V v;
          std::memcpy(&v, values.data() + i * sizeof(V), sizeof v);
          ++expected[traits::symbol(v)];
        }
        // A trailing partial value is ignored.
        const std::size_t partial = sizeof(V) - 1;
        EXPECT_EQ(symbol_histogram_of(F, std::span(values).first(n * sizeof(V) + partial)),
                  expected)
            << to_string(F) << " " << n;
      }
    });
  }
}

// The conversions that make FP8 and FP16 test data (float_conversions.hpp) round as the formats
// define: to nearest, ties to even, FP8 saturating.
TEST(formats, test_data_conversions_round_to_nearest_even) {
  using test::float_to_fp8;
  using test::fp8_kind;
  for (const fp8_kind k : {fp8_kind::e4m3, fp8_kind::e5m2}) {
    for (unsigned b = 0; b < 256; ++b) {
      const double v = test::fp8_value(static_cast<std::uint8_t>(b), k);
      if (std::isnan(v)) continue;
      if (b == 0x80) continue;  // -0 comes back as -0 (0x80) too, checked below
      ASSERT_EQ(float_to_fp8(v, k), b) << "pattern " << b;
    }
  }
  // Between every two neighbouring finite values: the midpoint goes to the even code, anything
  // nearer one side to that side, of either sign.
  for (const fp8_kind k : {fp8_kind::e4m3, fp8_kind::e5m2}) {
    const unsigned top = k == fp8_kind::e4m3 ? 0x7E : 0x7B;
    for (unsigned c = 0; c < top; ++c) {
      const double v = test::fp8_value(static_cast<std::uint8_t>(c), k);
      const double next = test::fp8_value(static_cast<std::uint8_t>(c + 1), k);
      ASSERT_LT(v, next) << "pattern " << c;  // codes are ordered like their values
      const double mid = (v + next) / 2;
      EXPECT_EQ(float_to_fp8(mid, k), c % 2 == 0 ? c : c + 1) << "pattern " << c;
      EXPECT_EQ(float_to_fp8(-mid, k), (c % 2 == 0 ? c : c + 1) | 0x80u) << "pattern " << c;
      EXPECT_EQ(float_to_fp8(std::nextafter(mid, 0.0), k), c) << "pattern " << c;
      EXPECT_EQ(float_to_fp8(std::nextafter(mid, 1e9), k), c + 1) << "pattern " << c;
    }
  }
  EXPECT_EQ(float_to_fp8(-0.0, fp8_kind::e4m3), 0x80);
  EXPECT_EQ(float_to_fp8(1.0, fp8_kind::e4m3), 0x38);
  EXPECT_EQ(float_to_fp8(1.0625, fp8_kind::e4m3), 0x38);  // tie: to the even mantissa 0
  EXPECT_EQ(float_to_fp8(1.1875, fp8_kind::e4m3), 0x3A);  // tie: to the even mantissa 2
  EXPECT_EQ(float_to_fp8(1.07, fp8_kind::e4m3), 0x39);
  EXPECT_EQ(float_to_fp8(448.0, fp8_kind::e4m3), 0x7E);
  EXPECT_EQ(float_to_fp8(470.0, fp8_kind::e4m3), 0x7E);  // saturates
  EXPECT_EQ(float_to_fp8(-1e9, fp8_kind::e4m3), 0xFE);
  EXPECT_EQ(float_to_fp8(std::ldexp(1.0, -9), fp8_kind::e4m3), 0x01);     // smallest subnormal
  EXPECT_EQ(float_to_fp8(std::ldexp(1.0, -10), fp8_kind::e4m3), 0x00);    // tie: to even (0)
  EXPECT_EQ(float_to_fp8(std::ldexp(0.875, -6), fp8_kind::e4m3), 0x07);   // largest subnormal
  EXPECT_EQ(float_to_fp8(std::ldexp(0.9375, -6), fp8_kind::e4m3), 0x08);  // tie: up to 2^-6
  EXPECT_EQ(float_to_fp8(1.0, fp8_kind::e5m2), 0x3C);
  EXPECT_EQ(float_to_fp8(1.125, fp8_kind::e5m2), 0x3C);  // tie: to even
  EXPECT_EQ(float_to_fp8(57344.0, fp8_kind::e5m2), 0x7B);
  EXPECT_EQ(float_to_fp8(1e9, fp8_kind::e5m2), 0x7B);  // saturates
  EXPECT_EQ(float_to_fp8(INFINITY, fp8_kind::e5m2), 0x7C);
  EXPECT_EQ(float_to_fp8(std::ldexp(1.0, -16), fp8_kind::e5m2), 0x01);
  EXPECT_EQ(test::float_to_fp16(1.0f), 0x3C00);
  EXPECT_EQ(test::float_to_fp16(-2.0f), 0xC000);
  EXPECT_EQ(test::float_to_fp16(65504.0f), 0x7BFF);
  EXPECT_EQ(test::float_to_fp16(65519.0f), 0x7BFF);
  EXPECT_EQ(test::float_to_fp16(65520.0f), 0x7C00);  // tie: to even, which overflows
  EXPECT_EQ(test::float_to_fp16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(test::float_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // tie: to even
  EXPECT_EQ(test::float_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
}

// ---- real weights and sizes
// ----------------------------------------------------------------------

double entropy_bits(const symbol_histogram& h) {
  double n = 0;
  for (const auto c : h) n += static_cast<double>(c);
  double bits = 0;
  for (const auto c : h) {
    if (c != 0) bits -= static_cast<double>(c) * std::log2(static_cast<double>(c) / n);
  }
  return bits;
}

// Raw bits per value beside the symbol.
double raw_bits(value_format f) {
  return 8.0 * static_cast<double>(value_bytes(f) - 1) - (f == value_format::bf16_in_fp32 ? 16 : 0);
}

struct size_figures {
  std::uint64_t values = 0;
  double bits = 0;           // the bundles, everything included
  double huffman_ideal = 0;  // unlimited Huffman code per tensor, no metadata, + raw bits
  double entropy_ideal = 0;  // symbol entropy per tensor + raw bits
};

// Sizes as the container writes bundles (128-byte chunks, kContainerChunkBytes).
size_figures measure(value_format f,
                     std::span<const std::vector<std::span<const std::byte>>> bundles,
                     const encode_options& options = {.chunk_bytes = kContainerChunkBytes}) {
  size_figures s;
  for (const auto& tensors : bundles) {
    const encode_plan plan = make_encode_plan(f, tensors, options);
    s.values += plan.header().value_count;
    s.bits += 8.0 * static_cast<double>(plan.encoded_size());
    s.huffman_ideal += static_cast<double>(plan.tensor_huffman_ideal_bits());
    for (const auto& t : tensors) s.entropy_ideal += entropy_bits(symbol_histogram_of(f, t));
  }
  const double raw = raw_bits(f) * static_cast<double>(s.values);
  s.huffman_ideal += raw;
  s.entropy_ideal += raw;
  return s;
}

void print(const char* what, value_format f, const size_figures& s) {
  const double n = static_cast<double>(s.values);
  std::printf(
      "  %-12s %-58s %9llu values: %.4f bits/value, Huffman ideal %.4f (+%.4f), entropy "
      "ideal %.4f (+%.4f)\n",
      std::string(to_string(f)).c_str(), what, static_cast<unsigned long long>(s.values),
      s.bits / n, s.huffman_ideal / n, (s.bits - s.huffman_ideal) / n, s.entropy_ideal / n,
      (s.bits - s.entropy_ideal) / n);
}

TEST(formats, real_weights_round_trip_in_every_format) {
  if (!test::models_present()) GTEST_SKIP() << test::models_absent_message();
  for (const value_format f : kAllFormats) {
    const auto models = test::real_models(f);
    ASSERT_FALSE(models.empty()) << "no model in " << test::models_dir() << " gives "
                                 << to_string(f);
    for (const auto& m : models) {
      SCOPED_TRACE(m.label);
      std::vector<std::vector<std::span<const std::byte>>> spans;
      for (const auto& b : m.bundles) {
        expect_round_trip(f, b.tensors);
        spans.push_back(b.spans());
      }
      const size_figures s = measure(f, spans);
      print(m.label.c_str(), f, s);
      // Small models: a few hundred thousand values, so the fixed costs per bundle and segment
      // (about 100 bytes each) weigh; the limit for tensors of a million values and more is the
      // test below.
      EXPECT_LT(s.bits - s.huffman_ideal, 0.25 * static_cast<double>(s.values));
    }
  }
}

// Real BF16 weights saved as F16 (rounded: subnormals included): bf16_in_fp16 holds every value
// (the container picks it), round-trips, and is smaller than fp16's split of the same bytes by
// about the 3 zero mantissa bits fp16 stores raw.
TEST(formats, real_bf16_weights_saved_as_fp16_code_smaller_as_bf16_in_fp16) {
  if (!test::models_present()) GTEST_SKIP() << test::models_absent_message();
  const auto models = test::real_models(value_format::bf16_in_fp16);
  ASSERT_FALSE(models.empty());
  std::uint64_t subnormals = 0;
  for (const auto& m : models) {
    SCOPED_TRACE(m.label);
    std::vector<std::vector<std::span<const std::byte>>> spans;
    for (const auto& b : m.bundles) {
      for (const auto& t : b.tensors) {
        ASSERT_TRUE(fp16_values_are_bf16(t)) << b.name;
        for (std::size_t i = 0; i + 1 < t.size(); i += 2) {
          const unsigned v = std::to_integer<unsigned>(t[i]) | std::to_integer<unsigned>(t[i + 1])
                                                                   << 8;
          subnormals += (v & 0x7C00) == 0 && (v & 0x3FF) != 0;
        }
      }
      expect_round_trip(value_format::fp16, b.tensors);
      spans.push_back(b.spans());
    }
    const size_figures in16 = measure(value_format::bf16_in_fp16, spans);
    const size_figures f16 = measure(value_format::fp16, spans);
    print(m.label.c_str(), value_format::bf16_in_fp16, in16);
    print(m.label.c_str(), value_format::fp16, f16);
    const double n = static_cast<double>(in16.values);
    EXPECT_LT(in16.bits / n, f16.bits / n - 2.0) << "bits per value";
  }
  // The rounding made subnormals (BF16 weights below 2^-14), and they round-tripped above.
  EXPECT_GT(subnormals, 0u);
}

// Student-t (nu = 5) weights at a scale of 0.02, a million and more per tensor, in format f the
// way real checkpoints of that format come about (FP8: per-tensor scale).
byte_tensor generated_weights(value_format f, std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::student_t_distribution<float> t(5.0f);
  std::vector<float> w(n);
  for (auto& x : w) x = t(rng) * 0.02f;
  switch (f) {
    case value_format::bf16: {
      std::vector<std::uint16_t> v(n);
      for (std::size_t i = 0; i < n; ++i) v[i] = test::float_to_bf16(w[i]);
      return bytes_of(v);
    }
    case value_format::fp16: {
      std::vector<std::uint16_t> v(n);
      for (std::size_t i = 0; i < n; ++i) v[i] = test::float_to_fp16(w[i]);
      return bytes_of(v);
    }
    case value_format::fp32: return bytes_of(w);
    case value_format::bf16_in_fp32: {
      std::vector<std::uint32_t> v(n);
      for (std::size_t i = 0; i < n; ++i) v[i] = std::uint32_t{test::float_to_bf16(w[i])} << 16;
      return bytes_of(v);
    }
    case value_format::fp8_e4m3: return bytes_of(test::quantise_fp8(w, test::fp8_kind::e4m3));
    case value_format::fp8_e5m2: return bytes_of(test::quantise_fp8(w, test::fp8_kind::e5m2));
    case value_format::bf16_in_fp16: {
      std::vector<std::uint16_t> v(n);
      for (std::size_t i = 0; i < n; ++i) v[i] = test::bf16_to_fp16(test::float_to_bf16(w[i]));
      return bytes_of(v);
    }
  }
  return {};
}

TEST(formats, million_value_tensors_are_within_0_05_bits_of_the_ideal) {
  for (const value_format f : kAllFormats) {
    const byte_tensor one = generated_weights(f, std::size_t{1} << 20, 101);
    const byte_tensor two = generated_weights(f, 3'000'000, 202);
    const std::vector<std::vector<std::span<const std::byte>>> bundles = {{one}, {two}, {one, two}};
    for (const auto& b : bundles) {
      const size_figures s = measure(f, std::span(&b, 1));
      print("generated Student-t(5) x 0.02", f, s);
      const double n = static_cast<double>(s.values);
      EXPECT_LT((s.bits - s.huffman_ideal) / n, 0.05) << to_string(f);
    }
    expect_round_trip(f, {one, two});
  }
}

}  // namespace
}  // namespace floatzip
