// The CPU codec: round trips, parallel equivalence, and hostile bundles.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "floatzip/cpu_executor.hpp"
#include "floatzip/floatzip.hpp"
#include "test_support.hpp"

namespace floatzip {
namespace {

using values = std::vector<std::uint16_t>;

// Encodes, parses, decodes into a poisoned buffer one value longer than needed, and checks
// the values and that the extra element was not touched.
void expect_round_trip(const std::vector<values>& tensors, const encode_options& options,
                       unsigned decode_threads = 0) {
  const auto spans = test::spans_of(tensors);
  const std::vector<std::byte> bytes = compress_bundle(spans, options);
  auto view = parse_bundle(bytes);
  ASSERT_TRUE(view.has_value()) << view.error().message;
  ASSERT_EQ(view->tensor_count(), tensors.size());
  std::uint64_t total = 0;
  for (const auto& t : tensors) total += t.size();
  ASSERT_EQ(view->value_count(), total);

  constexpr std::uint16_t kPoison = 0xDEAD;
  values out(total + 1, kPoison);
  const error e = decompress(*view, out, {.threads = decode_threads});
  ASSERT_TRUE(e.ok()) << e.message;
  EXPECT_EQ(out.back(), kPoison) << "decoder wrote past value_count";
  for (std::uint32_t t = 0; t < tensors.size(); ++t) {
    ASSERT_EQ(view->tensor_value_count(t), tensors[t].size());
    const std::uint64_t offset = view->tensor_offset(t);
    ASSERT_TRUE(std::equal(tensors[t].begin(), tensors[t].end(), out.begin() + offset))
        << "tensor " << t << " differs";
  }
}

void expect_round_trip(const values& v, const encode_options& options) {
  expect_round_trip(std::vector<values>{v}, options);
}

// Rebuilds the encoder's output by the plainest means, independent of the decoder (so that an
// encoder fault a matching decoder fault would hide still shows): every codeword appended bit by
// bit, most significant first, and each chunk's first codeword found by walking all codeword
// starts. Compares the stream, the sign/mantissa bytes, every chunk gap and group position.
void expect_segment_equal_to_plain_encoder(std::span<const std::uint16_t> segment_values,
                                           const bundle_view& segment);

void expect_equal_to_plain_encoder(const std::vector<values>& tensors,
                                   const encode_options& options) {
  const std::vector<std::byte> bytes = compress_bundle(test::spans_of(tensors), options);
  auto bundle = parse_bundle(bytes);
  ASSERT_TRUE(bundle.has_value()) << bundle.error().message;
  values all;
  for (const auto& t : tensors) all.insert(all.end(), t.begin(), t.end());
  // Each segment is checked on its own: its values under its own code.
  for (std::uint32_t s = 0; s < bundle->segment_count(); ++s) {
    const bundle_view seg = bundle->segment(s);
    SCOPED_TRACE("segment " + std::to_string(s));
    expect_segment_equal_to_plain_encoder(
        std::span<const std::uint16_t>(all).subspan(seg.first_value(), seg.value_count()), seg);
  }
}

void expect_segment_equal_to_plain_encoder(std::span<const std::uint16_t> segment_values,
                                           const bundle_view& segment) {
  const bundle_view* view = &segment;
  const canonical_code code = make_canonical_code(view->code());
  std::vector<std::uint8_t> stream((view->stream_bits() + 7) / 8, 0);
  std::vector<std::uint8_t> sign_mantissa;
  std::vector<std::uint64_t> starts;
  std::uint64_t bit = 0;
  {
    for (const std::uint16_t w : segment_values) {
      const std::uint8_t e = bf16_exponent(w);
      ASSERT_GT(code.length[e], 0) << "exponent " << int{e} << " has no code";
      starts.push_back(bit);
      for (int k = code.length[e] - 1; k >= 0; --k, ++bit) {
        if (((code.code[e] >> k) & 1u) != 0)
          stream[bit / 8] |= static_cast<std::uint8_t>(0x80u >> bit % 8);
      }
      sign_mantissa.push_back(bf16_sign_mantissa(w));
    }
  }
  ASSERT_EQ(bit, view->stream_bits());
  EXPECT_TRUE(std::equal(stream.begin(), stream.end(), view->exponent_stream()));
  EXPECT_TRUE(std::equal(sign_mantissa.begin(), sign_mantissa.end(), view->sign_mantissa()));
  const std::uint64_t chunk_bits = view->header().chunk_bits();
  const std::uint64_t chunks_per_group = view->header().chunks_per_group;
  std::size_t first = 0;  // index of the first codeword starting at or after the chunk
  for (std::uint64_t c = 0; c < view->chunk_count(); ++c) {
    while (first < starts.size() && starts[first] < c * chunk_bits) ++first;
    const std::uint64_t start = first < starts.size() ? starts[first] : view->stream_bits();
    ASSERT_EQ(view->chunk_start_bit(c), start) << "chunk " << c;
    if (c % chunks_per_group == 0) {
      ASSERT_EQ(view->group_value_position(c / chunks_per_group), first) << "chunk " << c;
    }
  }
}

class codec : public ::testing::TestWithParam<encode_options> {};

// Defaults, the longest codes, and metadata shapes that put chunk and group boundaries
// everywhere (tiny chunks, one chunk per group, odd group sizes).
INSTANTIATE_TEST_SUITE_P(
    options, codec,
    ::testing::Values(
        encode_options{}, encode_options{.max_code_length = 15, .chunk_bytes = 32},
        encode_options{.max_code_length = 8, .chunk_bytes = 4, .chunks_per_group = 1},
        encode_options{.max_code_length = 11, .chunk_bytes = 8, .chunks_per_group = 3},
        encode_options{
            .max_code_length = 14, .chunk_bytes = 256, .chunks_per_group = 7, .threads = 3}),
    [](const auto& param_info) { return "set" + std::to_string(param_info.index); });

TEST_P(codec, all_65536_bf16_patterns) {
  values v = test::all_bf16_patterns();
  expect_round_trip(v, GetParam());
  std::mt19937 rng(7);
  std::shuffle(v.begin(), v.end(), rng);
  expect_round_trip(v, GetParam());
}

TEST_P(codec, empty_bundle_and_empty_tensors) {
  expect_round_trip(std::vector<values>{}, GetParam());
  expect_round_trip(std::vector<values>{values{}}, GetParam());
  expect_round_trip(std::vector<values>{values{}, values{0x3F80}, values{}}, GetParam());
}

TEST_P(codec, one_value) {
  for (std::uint16_t w : {0x0000, 0x8000, 0x7F80, 0xFFFF, 0x7FC1, 0x0001, 0x3F80}) {
    expect_round_trip(values{w}, GetParam());
  }
}

TEST_P(codec, sizes_that_are_multiples_of_nothing) {
  for (std::size_t n : {2, 3, 5, 7, 63, 64, 65, 127, 1000, 4097, 65537, 300007}) {
    expect_round_trip(test::llama_like(n, 0.02f, n), GetParam());
  }
}

TEST_P(codec, one_distinct_exponent) {
  // All values share exponent 0x7E: a one-symbol code, one bit per value.
  values v(100003);
  std::mt19937 rng(3);
  for (auto& w : v) w = static_cast<std::uint16_t>((0x7Eu << 7) | (rng() & 0x807Fu));
  expect_round_trip(v, GetParam());
  expect_round_trip(values(5000, 0), GetParam());
}

TEST_P(codec, two_distinct_exponents) {
  values v(77777);
  std::mt19937 rng(4);
  for (auto& w : v)
    w = static_cast<std::uint16_t>(((rng() % 2 ? 0x80u : 0x10u) << 7) | (rng() & 0x7F));
  expect_round_trip(v, GetParam());
}

TEST_P(codec, all_256_exponents_uniform_random) {
  if (GetParam().max_code_length < 8) GTEST_SKIP() << "256 symbols need 8-bit codes";
  expect_round_trip(test::uniform_bits(200001, 11), GetParam());
}

TEST_P(codec, heavy_tailed_llama_like_many_tensors) {
  std::vector<values> tensors;
  std::size_t sizes[] = {4096, 1, 11008 * 3, 0, 4095, 64 * 64 + 3, 500000};
  for (std::size_t i = 0; i < std::size(sizes); ++i) {
    tensors.push_back(test::llama_like(sizes[i], 0.01f + 0.005f * i, 100 + i));
  }
  expect_round_trip(tensors, GetParam());
}

// Uniform exponents (8-bit codes) fill eight values' codewords to exactly 64 bits: the encoder's
// edge between one flush and two. Llama-like data mixes short and long codes.
TEST_P(codec, output_equals_a_plain_bit_by_bit_encoder) {
  std::vector<values> tensors;
  for (std::size_t i = 0; i < 4; ++i) {
    tensors.push_back(test::llama_like(70001 + 4096 * i, 0.01f + 0.01f * i, 300 + i));
  }
  if (GetParam().max_code_length >= 8) tensors.push_back(test::uniform_bits(50003, 12));
  tensors.push_back(test::llama_like(3, 0.02f, 310));
  expect_equal_to_plain_encoder(tensors, GetParam());
}

TEST_P(codec, real_models_per_transformer_block) {
  const auto files = test::bf16_model_files();
  if (files.empty()) GTEST_SKIP() << test::models_absent_message();
  for (const auto& file : files) {
    SCOPED_TRACE(file.string());
    for (const auto& bundle : test::load_bf16_bundles(file)) {
      SCOPED_TRACE(bundle.name);
      expect_round_trip(bundle.tensors, GetParam());
    }
  }
}

TEST(codec_parallel, encoder_output_does_not_depend_on_threads) {
  const values v = test::llama_like(3'000'001, 0.02f, 5);
  const std::span<const std::uint16_t> s(v);
  const auto one = compress_bundle(s, {.threads = 1});
  for (unsigned threads : {2u, 3u, 8u}) {
    EXPECT_EQ(compress_bundle(s, {.threads = threads}), one) << threads << " threads";
  }
}

TEST(codec_parallel, encode_into_a_dirty_reused_buffer) {
  // encode_bundle must write every byte it owns: fill the buffer with garbage first.
  for (std::size_t n : {0, 1, 999, 1'000'003}) {
    const values v = test::llama_like(n, 0.02f, n + 1);
    std::span<const std::uint16_t> s(v);
    const auto expected = compress_bundle(s, {.threads = 1});
    for (unsigned threads : {1u, 2u, 5u}) {
      const auto plan = make_encode_plan({&s, 1}, {.threads = threads});
      ASSERT_EQ(plan.encoded_size(), expected.size());
      std::vector<std::byte> buffer(expected.size() + 7, std::byte{0xA5});
      ASSERT_TRUE(encode_bundle(plan, buffer).ok());
      EXPECT_TRUE(std::equal(expected.begin(), expected.end(), buffer.begin()))
          << n << " values, " << threads << " threads";
      EXPECT_EQ(buffer.back(), std::byte{0xA5});
      std::vector<std::byte> small(expected.size() - 1);
      EXPECT_EQ(encode_bundle(plan, small).code, errc::insufficient_space);
    }
  }
}

TEST(codec_parallel, parallel_decode_equals_single_thread_decode) {
  const values v = test::llama_like(2'500'000, 0.03f, 6);
  const auto bytes = compress_bundle(std::span<const std::uint16_t>(v), {.chunks_per_group = 16});
  const auto view = parse_bundle(bytes).value();
  values single(v.size()), parallel(v.size());
  ASSERT_TRUE(decompress(view, single, {.threads = 1}).ok());
  for (unsigned threads : {2u, 4u, 7u}) {
    std::fill(parallel.begin(), parallel.end(), 0xDEAD);
    ASSERT_TRUE(decompress(view, parallel, {.threads = threads}).ok());
    EXPECT_EQ(parallel, single) << threads << " threads";
  }
  EXPECT_EQ(single, v);
}

TEST(codec_size, metadata_overhead_within_budget_on_a_million_values) {
  // The budget for everything beyond "unlimited Huffman exponent + raw byte" is 0.05 bits/value.
  const values v = test::llama_like(1 << 20, 0.02f, 9);
  const auto bytes = compress_bundle(std::span<const std::uint16_t>(v));
  const symbol_histogram h = exponent_histogram(v);
  const double ideal_bits = static_cast<double>(unlimited_huffman_bits(h)) + 8.0 * v.size();
  const double overhead = (static_cast<double>(bytes.size()) * 8 - ideal_bits) / v.size();
  EXPECT_LT(overhead, 0.05) << "bits per value beyond the ideal";
  EXPECT_GE(static_cast<double>(bytes.size()) * 8, ideal_bits);
}

TEST(codec_histogram, equals_a_plain_count_for_short_and_long_inputs) {
  // Long inputs are counted in pairs of exponents (with a per-thread table that must be left
  // clean for the next call); short ones singly. Sizes straddle both paths and odd remainders.
  std::uint64_t state = 12345;
  for (const std::size_t size :
       {std::size_t{0}, std::size_t{1}, std::size_t{4095}, std::size_t{4096},
        std::size_t{4096 + 1023}, std::size_t{65536 + 1}, std::size_t{3 * 65536 + 7}}) {
    values v(size);
    for (auto& x : v) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      x = static_cast<std::uint16_t>(state >> 48);
    }
    // Long runs of one value and one pair, which a counting bug would skew.
    for (std::size_t i = 0; i < size / 3; ++i) v[i] = i % 2 == 0 ? 0x3F80 : 0xBC00;
    symbol_histogram expected{};
    for (const auto x : v) ++expected[bf16_exponent(x)];
    for (int repeat = 0; repeat < 2; ++repeat) {
      EXPECT_EQ(exponent_histogram(v), expected) << size << " values, call " << repeat;
    }
  }
}

TEST(codec_errors, invalid_options_are_rejected) {
  const values v(10, 0x3F80);
  const std::span<const std::uint16_t> s(v);
  EXPECT_THROW(compress_bundle(s, {.max_code_length = 0}), exception);
  EXPECT_THROW(compress_bundle(s, {.max_code_length = 16}), exception);
  EXPECT_THROW(compress_bundle(s, {.chunk_bytes = 3}), exception);
  EXPECT_THROW(compress_bundle(s, {.chunks_per_group = 0}), exception);
  EXPECT_EQ(validate(encode_options{.chunk_bytes = 1u << 20}).code, errc::invalid_argument);
  // 256 distinct exponents cannot be coded in 7 bits.
  const values all = test::all_bf16_patterns();
  try {
    compress_bundle(std::span<const std::uint16_t>(all), {.max_code_length = 7});
    FAIL() << "expected an exception";
  } catch (const exception& e) {
    EXPECT_EQ(e.code(), errc::invalid_argument);
  }
}

TEST(codec_errors, output_too_small) {
  const values v = test::llama_like(1000, 0.02f, 1);
  const auto bytes = compress_bundle(std::span<const std::uint16_t>(v));
  const auto view = parse_bundle(bytes).value();
  values out(999);
  EXPECT_EQ(decompress(view, out).code, errc::insufficient_space);
}

// --- hostile bundles: every outcome is an error or a well-formed output, never a crash --------

// Decodes whatever parse_bundle accepts into an exactly-sized buffer (sanitizers watch it).
errc parse_and_decode(std::span<const std::byte> bytes) {
  auto view = parse_bundle(bytes);
  if (!view) {
    EXPECT_FALSE(view.error().message.empty());
    return view.error().code;
  }
  values out(view->value_count());
  return decompress(*view, out, {.threads = 2}).code;
}

std::vector<std::byte> small_bundle() {
  std::vector<values> tensors{test::llama_like(700, 0.02f, 2), test::llama_like(333, 0.04f, 3)};
  return compress_bundle(test::spans_of(tensors), {.chunk_bytes = 8, .chunks_per_group = 5});
}

TEST(codec_hostile, every_truncation_is_an_error) {
  const auto bytes = small_bundle();
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    // Copy so that the sanitizers see the end of the buffer.
    const std::vector<std::byte> cut(bytes.begin(), bytes.begin() + static_cast<long>(n));
    EXPECT_NE(parse_and_decode(cut), errc::ok) << "truncated to " << n << " bytes";
  }
  EXPECT_EQ(parse_and_decode(bytes), errc::ok);
}

TEST(codec_hostile, every_single_byte_flip_is_an_error_or_well_formed) {
  const auto bytes = small_bundle();
  int errors = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    for (std::uint8_t mask : {0x01, 0x10, 0x80, 0xFF}) {
      auto flipped = bytes;
      flipped[i] ^= std::byte{mask};
      if (parse_and_decode(flipped) != errc::ok) ++errors;
    }
  }
  // Flips in the raw sign/mantissa bytes and the padding decode fine; most others must not.
  EXPECT_GT(errors, 0);
}

TEST(codec_hostile, header_fields_are_checked) {
  const auto good = small_bundle();
  const auto view = parse_bundle(good).value();
  const std::size_t records = kBundleHeaderBytes + 8 * view.tensor_count();
  auto with = [&](std::size_t offset, auto value) {
    auto b = good;
    std::memcpy(b.data() + offset, &value, sizeof value);
    return parse_and_decode(b);
  };
  EXPECT_EQ(with(0, std::uint32_t{0x12345678}), errc::bad_data);    // magic
  EXPECT_EQ(with(0, kBundleMagicV1), errc::unsupported_version);    // format 1
  EXPECT_EQ(with(4, std::uint16_t{3}), errc::unsupported_version);  // version
  EXPECT_EQ(with(6, std::uint8_t{0}), errc::bad_data);              // max length
  EXPECT_EQ(with(6, std::uint8_t{16}), errc::bad_data);
  EXPECT_EQ(with(7, std::uint8_t{7}), errc::bad_data);  // value format: none is 7
  // bf16-in-fp16 has BF16's sections: the bundle parses and decodes (as FP16 values).
  EXPECT_EQ(with(7, std::uint8_t{6}), errc::ok);
  EXPECT_EQ(with(7, std::uint8_t{0xFF}), errc::bad_data);
  EXPECT_EQ(with(7, std::uint8_t{2}), errc::truncated);   // fp32: the low halves do not fit
  EXPECT_EQ(with(7, std::uint8_t{4}), errc::bad_data);    // fp8: no raw bytes, sizes disagree
  EXPECT_EQ(with(8, std::uint32_t{0}), errc::bad_data);   // chunk_bytes
  EXPECT_EQ(with(12, std::uint32_t{0}), errc::bad_data);  // chunks_per_group
  EXPECT_EQ(with(16, std::uint64_t{1} << 60), errc::too_large);     // value_count
  EXPECT_EQ(with(16, std::uint64_t{1} << 40), errc::bad_data);      // vs tensor counts
  EXPECT_EQ(with(24, std::uint32_t{0xFFFFFFFF}), errc::too_large);  // tensor_count
  EXPECT_EQ(with(28, std::uint32_t{0}), errc::bad_data);            // segment_count
  EXPECT_EQ(with(28, std::uint32_t{0xFFFFFFFF}), errc::bad_data);
  EXPECT_NE(with(28, view.segment_count() + 1), errc::ok);
  EXPECT_EQ(with(32, std::uint64_t{1} << 62), errc::truncated);  // total_bytes
  EXPECT_NE(with(32, view.size_bytes() - 16), errc::ok);
  EXPECT_EQ(with(records, std::uint64_t{1} << 40), errc::bad_data);  // segment values
  EXPECT_EQ(with(records + 8, std::uint64_t{0}), errc::bad_data);    // stream_bits
  EXPECT_EQ(with(records + 16, std::uint64_t{8}), errc::bad_data);   // body_offset
  EXPECT_EQ(with(records + 16, ~std::uint64_t{0}), errc::bad_data);
}

TEST(codec_hostile, bad_code_length_tables_are_rejected) {
  const auto good = small_bundle();
  const auto view = parse_bundle(good).value();
  const std::size_t body = view.segment(0).layout().code_offset;
  const auto first = static_cast<unsigned>(good[body]);
  const unsigned span = static_cast<unsigned>(good[body + 1]) + 1;
  ASSERT_GE(span, 4u);
  // Writes `lengths` of symbols first .. first + span - 1 into the segment's table.
  auto with_lengths = [&](const code_lengths& lengths) {
    auto b = good;
    for (unsigned i = 0; i < span; ++i) {
      auto& byte = b[body + 2 + i / 2];
      const auto l = static_cast<std::uint8_t>(lengths[first + i]);
      byte = (i & 1) != 0 ? (byte & std::byte{0x0F}) | std::byte(l << 4)
                          : (byte & std::byte{0xF0}) | std::byte(l);
    }
    return parse_and_decode(b);
  };
  code_lengths over_full{};
  over_full[first] = over_full[first + 1] = over_full[first + 2] = 1;
  EXPECT_EQ(with_lengths(over_full), errc::bad_data);
  code_lengths incomplete{};
  incomplete[first] = 1;
  incomplete[first + 1] = 2;
  EXPECT_EQ(with_lengths(incomplete), errc::bad_data);
  EXPECT_EQ(with_lengths(code_lengths{}), errc::bad_data);  // empty code, nonempty segment
  // The symbol range must stay inside the 256 exponent bytes.
  auto b = good;
  b[body] = std::byte{255};
  EXPECT_EQ(parse_and_decode(b), errc::bad_data);
  // An odd span's unused nibble, and padding after the table, must be zero.
  if (span % 2 != 0) {
    b = good;
    b[body + 2 + span / 2] |= std::byte{0x10};
    EXPECT_EQ(parse_and_decode(b), errc::bad_data);
  }
  if (view.segment(0).layout().sign_mantissa_offset > body + 2 + (span + 1) / 2) {
    b = good;
    b[body + 2 + (span + 1) / 2] = std::byte{1};
    EXPECT_EQ(parse_and_decode(b), errc::bad_data);
  }
  // A valid code that is not the one used: decodes to garbage or fails, never crashes.
  code_lengths flat{};
  for (unsigned i = 0; i < 4; ++i) flat[first + i] = 2;
  const errc e = with_lengths(flat);
  EXPECT_TRUE(e == errc::ok || e == errc::bad_data);
}

TEST(codec_hostile, inconsistent_sync_metadata_is_detected) {
  const values v = test::llama_like(5000, 0.02f, 8);
  const auto good =
      compress_bundle(std::span<const std::uint16_t>(v), {.chunk_bytes = 8, .chunks_per_group = 4});
  const auto view = parse_bundle(good).value();
  ASSERT_GT(view.group_count(), 3u);
  const std::uint64_t positions = view.layout().group_positions_offset;
  {
    auto b = good;  // group 2 claims one value more: its neighbour's stream no longer matches
    std::uint64_t p = view.group_value_position(2) + 1;
    std::memcpy(b.data() + positions + 16, &p, 8);
    EXPECT_EQ(parse_and_decode(b), errc::bad_data);
  }
  {
    auto b = good;  // group 1 placed after group 2
    std::uint64_t p = view.group_value_position(3);
    std::memcpy(b.data() + positions + 8, &p, 8);
    EXPECT_EQ(parse_and_decode(b), errc::bad_data);
  }
  {
    auto b = good;  // a chunk gap beyond the longest codeword
    b[view.layout().chunk_gaps_offset + 1] = std::byte{0xFF};
    EXPECT_EQ(parse_and_decode(b), errc::bad_data);
  }
}

}  // namespace
// --- codes per run of tensors (segments) ------------------------------------------------------

// Decodes with the CPU decoder and the kernel's logic on the CPU; both must give `expected`.
void expect_both_decoders(const std::vector<std::byte>& bytes, const values& expected) {
  const auto view = parse_bundle(bytes);
  ASSERT_TRUE(view.has_value()) << view.error().message;
  values out(view->value_count());
  ASSERT_FALSE(decompress(*view, out, {.threads = 2}));
  EXPECT_EQ(out, expected);
  values gpu_logic(view->value_count(), 0xDEAD);
  ASSERT_FALSE(execute_kernel_on_cpu(*view, gpu_logic));
  EXPECT_EQ(gpu_logic, expected);
}

values concatenation(const std::vector<values>& tensors) {
  values all;
  for (const auto& t : tensors) all.insert(all.end(), t.begin(), t.end());
  return all;
}

TEST(codec_segments, tensors_of_different_scales_get_codes_of_their_own) {
  // Exponent ranges far apart: one code for both wastes bits on every value.
  const std::vector<values> tensors{test::llama_like(20000, 1e-4f, 1),
                                    test::llama_like(30001, 4.0f, 2), test::all_bf16_patterns(),
                                    test::llama_like(7, 1e-4f, 3)};
  const auto adaptive = compress_bundle(test::spans_of(tensors));
  const auto single = compress_bundle(test::spans_of(tensors), {.adaptive_codes = false});
  EXPECT_GE(parse_bundle(adaptive).value().segment_count(), 2u);
  EXPECT_EQ(parse_bundle(single).value().segment_count(), 1u);
  EXPECT_LT(adaptive.size(), single.size());
  expect_both_decoders(adaptive, concatenation(tensors));
  expect_both_decoders(single, concatenation(tensors));
  expect_equal_to_plain_encoder(tensors, {});
}

TEST(codec_segments, alike_small_tensors_share_a_code) {
  // 200 small tensors of one distribution: a code each would cost far more than it saves.
  std::vector<values> tensors;
  for (int i = 0; i < 200; ++i) tensors.push_back(test::llama_like(64 + i % 5, 0.02f, 10 + i));
  const auto bytes = compress_bundle(test::spans_of(tensors));
  EXPECT_LE(parse_bundle(bytes).value().segment_count(), 4u);
  expect_both_decoders(bytes, concatenation(tensors));
}

TEST(codec_segments, odd_sizes_empty_tensors_and_small_geometries) {
  std::vector<values> tensors;
  for (int i = 0; i < 40; ++i) {
    const float scale = i % 3 == 0 ? 1e-3f : (i % 3 == 1 ? 0.5f : 64.0f);
    tensors.push_back(test::llama_like(i % 7 == 0 ? 0 : 1 + 97 * i % 3001, scale, 100 + i));
  }
  for (const encode_options& o :
       {encode_options{},
        encode_options{.max_code_length = 8, .chunk_bytes = 4, .chunks_per_group = 1},
        encode_options{
            .max_code_length = 15, .chunk_bytes = 8, .chunks_per_group = 3, .threads = 3}}) {
    const auto bytes = compress_bundle(test::spans_of(tensors), o);
    EXPECT_GE(parse_bundle(bytes).value().segment_count(), 2u);
    expect_both_decoders(bytes, concatenation(tensors));
    expect_equal_to_plain_encoder(tensors, o);
  }
}

TEST(codec_segments, hostile_segment_records) {
  const std::vector<values> tensors{test::llama_like(3000, 1e-4f, 1),
                                    test::llama_like(3000, 4.0f, 2)};
  const auto good = compress_bundle(test::spans_of(tensors), {.chunk_bytes = 8});
  const auto view = parse_bundle(good).value();
  ASSERT_EQ(view.segment_count(), 2u);
  const std::size_t records = kBundleHeaderBytes + 8 * view.tensor_count();
  auto with = [&](std::size_t offset, std::uint64_t value) {
    auto b = good;
    std::memcpy(b.data() + offset, &value, sizeof value);
    return parse_and_decode(b);
  };
  // Values moved from one segment to the other: the streams no longer match their counts.
  EXPECT_NE(with(records, 3001), errc::ok);
  EXPECT_EQ(with(records + kSegmentRecordBytes, 2999), errc::bad_data);
  // The second body where the first one is, or past the end.
  EXPECT_EQ(with(records + kSegmentRecordBytes + 16, view.segment(0).layout().code_offset),
            errc::bad_data);
  EXPECT_EQ(with(records + kSegmentRecordBytes + 16, view.size_bytes()), errc::bad_data);
  EXPECT_EQ(with(records + kSegmentRecordBytes + 8, 1), errc::bad_data);
}

}  // namespace floatzip
