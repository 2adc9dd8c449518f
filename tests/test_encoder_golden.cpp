// The encoder's output is pinned: speed work on the encoder (tables, batching, planning) must
// leave every byte of every bundle as it was. The expected hashes are those of the bundles the
// encoder of commit d528cca (before the encoder speed work of bench/RESULTS.md, "CPU encode
// speed") wrote for the same inputs; a deliberate format change updates them, nothing else may.
#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <vector>

#include "floatzip/decoder.hpp"
#include "floatzip/encoder.hpp"
#include "floatzip/value_format.hpp"

namespace floatzip {
namespace {

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::uint64_t fnv1a(std::span<const std::byte> bytes, std::uint64_t h = 1469598103934665603ull) {
  for (const std::byte b : bytes) {
    h ^= static_cast<std::uint8_t>(b);
    h *= 1099511628211ull;
  }
  return h;
}

// A skewed symbol byte like a trained weight's: an exponent `center` minus two geometric draws
// (so a tensor's center sets its scale, and tensors of different centers get codes of their own),
// with `mantissa_bits` uniform bits below it and a uniform sign above, for FP8.
std::uint8_t skewed_symbol(std::uint64_t r, unsigned center, unsigned mantissa_bits) {
  const unsigned drop = std::countr_zero(r | (std::uint64_t{1} << 12)) +
                        std::countr_zero((r >> 16) | (std::uint64_t{1} << 12));
  const unsigned exponent = center > drop ? center - drop : 0;
  const unsigned mantissa = static_cast<unsigned>(r >> 32) & ((1u << mantissa_bits) - 1);
  return static_cast<std::uint8_t>(exponent << mantissa_bits | mantissa);
}

// Little-endian values of `count` values of format f around `center`.
std::vector<std::byte> make_tensor(value_format f, std::size_t count, unsigned center,
                                   std::uint64_t seed) {
  std::vector<std::byte> out(count * value_bytes(f));
  std::uint64_t state = seed;
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint64_t r = splitmix64(state);
    const auto sign = static_cast<unsigned>(r >> 63);
    std::byte* at = out.data() + i * value_bytes(f);
    if (value_bytes(f) == 1) {
      // 4 exponent and 3 mantissa bits under the sign (E5M2's code sees the same byte).
      const std::uint8_t v =
          static_cast<std::uint8_t>(sign << 7 | (skewed_symbol(r, center % 16, 3) & 0x7F));
      std::memcpy(at, &v, 1);
      continue;
    }
    // BF16's split (FP16 codes the same bit positions): symbol in bits 14..7.
    const std::uint16_t high = static_cast<std::uint16_t>(
        sign << 15 | skewed_symbol(r, center, 0) << 7 | (static_cast<unsigned>(r >> 40) & 0x7F));
    if (value_bytes(f) == 2) {
      std::memcpy(at, &high, 2);
    } else {
      const std::uint32_t low =
          f == value_format::fp32 ? static_cast<std::uint32_t>(r >> 8) & 0xFFFF : 0;
      const std::uint32_t v = std::uint32_t{high} << 16 | low;
      std::memcpy(at, &v, 4);
    }
  }
  return out;
}

struct pinned {
  value_format format;
  std::uint64_t hash;
};

TEST(encoder_golden, bundles_are_byte_identical_to_the_pinned_encoder) {
  // Sizes: empty, tiny, a few chunks, below and above the size that repays pair tables, and
  // tensors that two threads split into parts. Centers: alike neighbours share a code, unlike
  // ones get a segment of their own.
  const std::size_t sizes[] = {0, 1, 7, 1000, 70001, 300000, 600000};
  const unsigned centers[] = {120, 121, 118, 126, 110, 121, 119};
  struct option_set {
    int max_code_length;
    std::uint32_t chunk_bytes;
    std::uint32_t chunks_per_group;
    unsigned threads;
    bool adaptive;
  };
  const option_set option_sets[] = {
      {12, 64, 256, 1, true}, {12, 64, 256, 2, true}, {15, 64, 256, 2, true}, {14, 32, 7, 1, false},
      {11, 128, 1, 2, true},  {13, 16, 3, 1, true},   {9, 64, 256, 2, true}};
  const pinned expected[] = {
      {value_format::bf16, 0x150d6b010ffd42a8ull},
      {value_format::fp16, 0x3c98542d5d4a7c87ull},
      {value_format::fp32, 0x74da81359a2947c7ull},
      {value_format::bf16_in_fp32, 0x9a00f295ce2c899dull},
      {value_format::fp8_e4m3, 0x6c98944c1fb69204ull},
      {value_format::fp8_e5m2, 0x6cd56c1f0e667c37ull},
  };
  for (const pinned& p : expected) {
    std::vector<std::vector<std::byte>> tensors;
    for (std::size_t t = 0; t < std::size(sizes); ++t) {
      tensors.push_back(make_tensor(p.format, sizes[t], centers[t], 1000 + t));
    }
    std::vector<std::span<const std::byte>> spans(tensors.begin(), tensors.end());
    std::uint64_t h = 1469598103934665603ull;
    for (const option_set& o : option_sets) {
      encode_options options;
      options.max_code_length = o.max_code_length;
      options.chunk_bytes = o.chunk_bytes;
      options.chunks_per_group = o.chunks_per_group;
      options.threads = o.threads;
      options.adaptive_codes = o.adaptive;
      const std::vector<std::byte> bundle = compress_bundle(p.format, spans, options);
      h = fnv1a(bundle, h);
      // The pinned bytes are a bundle that decodes to the input.
      const auto view = parse_bundle(bundle);
      ASSERT_TRUE(view.has_value()) << view.error().message;
      std::vector<std::byte> decoded(view.value().value_count() * value_bytes(p.format));
      ASSERT_FALSE(decompress(view.value(), decoded));
      std::size_t at = 0;
      for (const auto& t : tensors) {
        if (t.empty()) continue;  // no bytes to compare, and memcmp may not get a null pointer
        ASSERT_EQ(std::memcmp(decoded.data() + at, t.data(), t.size()), 0) << to_string(p.format);
        at += t.size();
      }
    }
    char actual[32];
    std::snprintf(actual, sizeof actual, "0x%016llx", static_cast<unsigned long long>(h));
    EXPECT_EQ(h, p.hash) << to_string(p.format) << ": bundle bytes changed, hash " << actual;
  }
}

}  // namespace
}  // namespace floatzip
