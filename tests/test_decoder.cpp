// The CPU decoder's lone-group path: a sync group cut at chunk starts between the lanes
// (detail::plan_group_split / decode_split_group), its sizes, and what it makes of hostile
// chunk gaps and streams.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <thread>
#include <vector>

#include "floatzip/floatzip.hpp"

namespace floatzip {
namespace {

using values = std::vector<std::uint16_t>;

// BF16 weights with a heavy-tailed spread of exponents (Student-t, nu = 5), like trained layers.
values heavy_tailed(std::size_t n, float scale, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::student_t_distribution<float> t(5.0f);
  values v(n);
  for (auto& x : v) {
    const float f = t(rng) * scale;
    std::uint32_t b;
    std::memcpy(&b, &f, sizeof b);
    x = static_cast<std::uint16_t>(b >> 16);  // truncation is enough for test data
  }
  return v;
}

// Values where one exponent is 70 % of the data, so its codeword is 1 bit long: the helper
// pieces must then be cut shorter to fit their buffers.
values one_bit_exponent(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  values v(n);
  for (auto& x : v) {
    const std::uint64_t r = rng();
    const unsigned exponent = r % 10 < 7 ? 120u : 100u + static_cast<unsigned>((r >> 8) % 30);
    x = static_cast<std::uint16_t>(((r >> 40) & 0x8000u) | (exponent << 7) | ((r >> 20) & 0x7Fu));
  }
  return v;
}

std::vector<std::byte> encode(const values& v, const encode_options& options) {
  return compress_bundle(std::span<const std::uint16_t>(v), options);
}

// Decodes into a buffer of exactly value_count() values (a fresh allocation, so that the
// sanitizers see its end).
errc decode(std::span<const std::byte> bytes, values& out) {
  auto view = parse_bundle(bytes);
  if (!view.has_value()) return view.error().code;
  out.assign(view->value_count(), 0xDEAD);
  return decompress(*view, out, {.threads = 1}).code;
}

struct shape {
  std::size_t values;
  encode_options options;
};

class lone_group : public ::testing::TestWithParam<shape> {};

// One to three groups (fewer than the four lanes), so every group takes the cut path.
INSTANTIATE_TEST_SUITE_P(
    shapes, lone_group,
    ::testing::Values(shape{45000, {}}, shape{3000, {.chunk_bytes = 8, .chunks_per_group = 1024}},
                      shape{3000, {.chunk_bytes = 8, .chunks_per_group = 400}},
                      shape{100, {.chunk_bytes = 4, .chunks_per_group = 70}},
                      shape{7, {.chunk_bytes = 4, .chunks_per_group = 8}},
                      shape{60000, {.max_code_length = 15, .chunk_bytes = 32}},
                      shape{20000, {.max_code_length = 9, .chunk_bytes = 512}}),
    [](const auto& param_info) { return "shape" + std::to_string(param_info.index); });

TEST_P(lone_group, round_trips) {
  const values v = heavy_tailed(GetParam().values, 0.02f, 1);
  const auto bytes = encode(v, GetParam().options);
  auto view = parse_bundle(bytes).value();
  ASSERT_LT(view.group_count(), 4u);
  values out;
  ASSERT_EQ(decode(bytes, out), errc::ok);
  EXPECT_EQ(out, v);
}

TEST_P(lone_group, round_trips_with_one_bit_codewords) {
  const values v = one_bit_exponent(GetParam().values, 2);
  const auto bytes = encode(v, GetParam().options);
  values out;
  ASSERT_EQ(decode(bytes, out), errc::ok);
  EXPECT_EQ(out, v);
}

TEST(lone_group_plan, pieces_fit_their_buffers_and_cover_the_group) {
  for (const std::size_t n : {45000u, 120000u}) {
    for (const bool skewed : {false, true}) {
      const values v = skewed ? one_bit_exponent(n, 3) : heavy_tailed(n, 0.02f, 3);
      const auto bytes = encode(v, {});
      const auto view = parse_bundle(bytes).value();
      unsigned shortest = 99;
      for (const auto length : view.code()) {
        if (length != 0 && length < shortest) shortest = length;
      }
      for (std::uint64_t g = 0; g < view.group_count(); ++g) {
        const auto split = detail::plan_group_split(view, g, shortest);
        ASSERT_EQ(split.pieces, 4) << "group " << g;
        EXPECT_EQ(split.begin_bit[0], view.group_begin_bit(g));
        EXPECT_EQ(split.end_bit[3], view.group_end_bit(g));
        for (int p = 0; p < split.pieces; ++p) {
          EXPECT_LT(split.begin_bit[p], split.end_bit[p]);
          if (p > 0) {
            EXPECT_EQ(split.begin_bit[p], split.end_bit[p - 1]);
            // Whatever the codewords, the piece cannot hold more than its buffer.
            EXPECT_LE((split.end_bit[p] - split.begin_bit[p]) / shortest, detail::kPieceCapacity);
          }
        }
      }
    }
  }
}

TEST(lone_group_plan, tiny_groups_are_not_cut) {
  const values v = heavy_tailed(5, 0.02f, 4);
  const auto bytes = encode(v, {});
  const auto view = parse_bundle(bytes).value();
  ASSERT_EQ(view.chunk_count(), 1u);
  EXPECT_EQ(detail::plan_group_split(view, 0, 1).pieces, 0);
}

// Every chunk gap of a lone group set to every value the parser accepts: where the cut moves,
// the pieces no longer meet, or they still meet on a codeword boundary of the true stream and
// decode it unchanged. Either way no wrong value comes out silently.
TEST(lone_group_hostile, any_chunk_gap_gives_an_error_or_the_true_values) {
  const values v = heavy_tailed(3000, 0.02f, 5);
  const auto good = encode(v, {.chunk_bytes = 8, .chunks_per_group = 1024});
  const auto view = parse_bundle(good).value();
  ASSERT_EQ(view.group_count(), 1u);
  int errors = 0;
  for (std::uint64_t c = 1; c < view.chunk_count(); ++c) {
    for (unsigned gap = 0; gap < static_cast<unsigned>(view.max_code_length()); ++gap) {
      auto b = good;
      auto& byte = b[view.layout().chunk_gaps_offset + c / 2];
      const unsigned shift = (c & 1) != 0 ? 4 : 0;
      byte =
          static_cast<std::byte>((static_cast<unsigned>(byte) & ~(0xFu << shift)) | (gap << shift));
      values out;
      const errc e = decode(b, out);
      if (e == errc::ok) {
        ASSERT_EQ(out, v) << "chunk " << c << " gap " << gap;
      } else {
        ASSERT_EQ(e, errc::bad_data);
        ++errors;
      }
    }
  }
  EXPECT_GT(errors, 0);  // moved piece boundaries are caught
}

// Flipped stream bytes decode to something or fail, never outside the buffers (run under ASan).
TEST(lone_group_hostile, stream_byte_flips_stay_in_bounds) {
  for (const bool skewed : {false, true}) {
    const values v = skewed ? one_bit_exponent(3000, 6) : heavy_tailed(3000, 0.02f, 6);
    const auto good = encode(v, {.chunk_bytes = 8, .chunks_per_group = 1024});
    const auto view = parse_bundle(good).value();
    const std::uint64_t stream = view.layout().stream_offset;
    int errors = 0;
    for (std::uint64_t i = stream; i < good.size(); ++i) {
      for (const std::uint8_t mask : {0x01, 0x80, 0xFF}) {
        auto b = good;
        b[i] ^= std::byte{mask};
        values out;
        const errc e = decode(b, out);
        ASSERT_TRUE(e == errc::ok || e == errc::bad_data) << "byte " << i;
        if (e != errc::ok) ++errors;
      }
    }
    EXPECT_GT(errors, 0);
  }
}

// decompress_values: the same values as decompress() into a vector, whatever way its memory's
// pages are obtained, for a bundle with whole huge pages and a tail, one under a huge page, and
// an empty one; the buffer moves without losing or duplicating its memory.
TEST(decompress_values, equals_decompress_for_every_page_policy) {
  for (const std::size_t n : {std::size_t{1'500'000}, std::size_t{70'001}, std::size_t{0}}) {
    const values v = heavy_tailed(n, 0.02f, n);
    const auto bytes = encode(v, {});
    const auto view = parse_bundle(bytes).value();
    for (const unsigned threads : {1u, 2u}) {
      auto plain = decompress_values(view, {.threads = threads});
      ASSERT_TRUE(plain.has_value()) << plain.error().message;
      EXPECT_TRUE(std::equal(v.begin(), v.end(), plain->values().begin(), plain->values().end()));
      for (const auto policy :
           {detail::page_policy::first_touch, detail::page_policy::huge_pages,
            detail::page_policy::populate, detail::page_policy::populate_parallel,
            detail::page_policy::adaptive}) {
        auto got = detail::decompress_values(view, {.threads = threads}, policy);
        ASSERT_TRUE(got.has_value()) << got.error().message;
        value_buffer moved = std::move(*got);
        EXPECT_EQ(got->size(), 0u);
        ASSERT_EQ(moved.size(), n);
        EXPECT_TRUE(std::equal(v.begin(), v.end(), moved.values().begin()));
      }
    }
  }
}

// The adaptive policy after a slow huge page: the buffer that found it still decodes right, the
// process's next mappings ask for 4 KiB pages only until kRetryBytes of them were mapped, then
// huge pages are tried again.
TEST(decompress_values, adaptive_policy_turns_to_small_pages_after_a_slow_huge_page) {
  using gauge_type = detail::huge_page_gauge;
  gauge_type gauge;
  EXPECT_TRUE(gauge.want_huge(std::size_t{64} << 20));
  EXPECT_FALSE(gauge.record(gauge_type::kSlowSeconds / 2));
  EXPECT_TRUE(gauge.want_huge(std::size_t{64} << 20));
  EXPECT_TRUE(gauge.record(gauge_type::kSlowSeconds * 2));
  std::int64_t small = 0;
  while (!gauge.want_huge(std::size_t{48} << 20)) small += std::int64_t{48} << 20;
  EXPECT_GE(small, gauge_type::kRetryBytes);
  EXPECT_LT(small, gauge_type::kRetryBytes + (std::int64_t{48} << 20));
  EXPECT_TRUE(gauge.record(1.0));
  gauge.reset();
  EXPECT_TRUE(gauge.want_huge(1));

  // The process's gauge, as decompress_values sees it: slow, then a buffer of whole huge pages
  // gets none (huge_bytes() == 0) and decodes right; after a reset it asks for them again.
  const values v = heavy_tailed(3'000'000, 0.02f, 11);
  const auto bytes = encode(v, {});
  const auto view = parse_bundle(bytes).value();
  auto& process = gauge_type::process();
  process.reset();
  ASSERT_TRUE(process.record(1.0));
  auto memory = detail::page_memory::allocate(v.size() * 2, detail::page_policy::adaptive);
  ASSERT_TRUE(memory.has_value());
  EXPECT_EQ(memory->huge_bytes(), 0u);
  auto got = decompress_values(view, {.threads = 2});
  ASSERT_TRUE(got.has_value()) << got.error().message;
  EXPECT_TRUE(std::equal(v.begin(), v.end(), got->values().begin(), got->values().end()));
  process.reset();
  auto again = detail::page_memory::allocate(v.size() * 2, detail::page_policy::adaptive);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->huge_bytes(), v.size() * 2 / detail::kHugePageBytes * detail::kHugePageBytes);
}

// The adaptive policy's timer counts the faulting thread's CPU time, not time it spent off the
// CPU: a sleep (as a descheduled thread) adds almost nothing, work adds about its duration.
TEST(decompress_values, huge_page_timer_is_the_threads_cpu_time) {
  const double t0 = detail::thread_cpu_seconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const double slept = detail::thread_cpu_seconds() - t0;
  EXPECT_LT(slept, 0.010);
  const auto w0 = std::chrono::steady_clock::now();
  const double t1 = detail::thread_cpu_seconds();
  volatile std::uint64_t sink = 0;
  while (std::chrono::steady_clock::now() - w0 < std::chrono::milliseconds(30)) sink = sink + 1;
  const double worked = detail::thread_cpu_seconds() - t1;
  EXPECT_GT(worked, 0.001);  // at least a part of the 30 ms, however busy the machine
  EXPECT_LT(worked, 0.035);
}

// A corrupt stream is reported as by decompress(), not returned as values.
TEST(decompress_values, corrupt_stream_is_an_error) {
  const values v = heavy_tailed(300'000, 0.02f, 5);
  auto bytes = encode(v, {});
  const auto view0 = parse_bundle(bytes).value();
  const std::uint64_t stream = view0.layout().stream_offset;
  for (std::uint64_t i = 0; i < 64; ++i) bytes[stream + 100 + i] = std::byte{0xFF};
  auto got = decompress_values(parse_bundle(bytes).value(), {.threads = 1});
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().code, errc::bad_data);
}

// The CPU multi-symbol tables, built block by block, against the definition: entry i holds the
// codewords at the front of index i in turn, up to three (multi_entry) or four (wide_entry), each
// taken only if it lies wholly within the index (bits beyond it unknown). Every other bit is zero.
template <class Entry>
Entry reference_multi_entry(std::span<const decode_entry> single, unsigned bits, std::uint32_t i) {
  using fields = detail::entry_fields<Entry>;
  const std::uint32_t mask = (std::uint32_t{1} << bits) - 1;
  std::uint64_t symbols = 0;
  unsigned used = 0;
  unsigned count = 0;
  while (count < fields::kMaxSymbols) {
    const decode_entry next = single[(i << used) & mask];
    const unsigned length = entry_length(next);
    if (count > 0 && (length == 0 || used + length > bits)) break;
    symbols |= std::uint64_t{entry_symbol(next)} << (8 * count);
    used += length;
    ++count;
    if (used >= bits) break;
  }
  return static_cast<Entry>(symbols | (std::uint64_t{used} << fields::kUsedShift) |
                            (std::uint64_t{count - fields::kCountBias} << fields::kCountShift));
}

template <class Entry>
void expect_multi_table_matches(const code_lengths& lengths, int table_bits) {
  const std::size_t size = std::size_t{1} << table_bits;
  std::vector<decode_entry> single(size);
  std::vector<Entry> multi(size);
  std::vector<std::uint32_t> scratch(size);
  detail::build_multi_table<Entry>(lengths, table_bits, single, multi, scratch);
  for (std::uint32_t i = 0; i < size; ++i) {
    const Entry want = reference_multi_entry<Entry>(single, static_cast<unsigned>(table_bits), i);
    ASSERT_EQ(multi[i], want) << "entry " << i << ", " << table_bits << " bits, "
                              << sizeof(Entry) * 8 << "-bit entries";
  }
}

void expect_multi_tables_match(const code_lengths& lengths, int table_bits) {
  expect_multi_table_matches<detail::multi_entry>(lengths, table_bits);
  expect_multi_table_matches<detail::wide_entry>(lengths, table_bits);
}

TEST(multi_table, equals_its_definition_for_every_table_width_and_code_shape) {
  std::mt19937_64 rng(12);
  for (int max_length = 1; max_length <= kMaxCodeLength; ++max_length) {
    for (int shape = 0; shape < 4; ++shape) {
      // Geometric (short exponent-like codes), flat, and FP8-like long-tailed histograms.
      symbol_histogram freq{};
      const int symbols = shape == 0 ? 40 : shape == 1 ? 256 : shape == 2 ? 200 : 3;
      for (int s = 0; s < symbols; ++s) {
        const double weight = shape == 1 ? 1.0 + static_cast<double>(rng() % 4)
                                         : std::exp(-0.15 * s * (shape == 0 ? 3 : 1));
        freq[static_cast<std::size_t>((s * 37) % 256)] =
            1 + static_cast<std::uint64_t>(weight * 1e6) + rng() % 1000;
      }
      const result<code_lengths> lengths = build_code_lengths(freq, max_length);
      if (!lengths) continue;  // too many symbols for this length limit
      for (int table_bits = max_length; table_bits <= kMaxCodeLength; table_bits += 3) {
        expect_multi_tables_match(*lengths, table_bits);
      }
    }
  }
  code_lengths one{};
  one[7] = 1;
  expect_multi_tables_match(one, 1);
  expect_multi_tables_match(one, 12);
  expect_multi_tables_match(code_lengths{}, 12);  // the empty code
}

// Which table a segment decodes with: the wide one (four symbols a look-up) for BF16 exponent
// codes, the narrow one for the long codes of FP8 and FP16 and for limits outside 11-13 bits; and
// both decode the same values, whole groups and groups cut between the lanes (1 M values: 21
// groups, the last cut; one lane's worth: a lone group).
TEST(multi_table, wide_for_short_codes_only_and_both_decode_the_same) {
  const values v = heavy_tailed(1'000'000, 0.02f, 3);
  for (const int limit : {7, 8, 12, 13, 14}) {
    SCOPED_TRACE(limit);
    encode_options options;
    options.max_code_length = limit;
    const auto bytes = encode(v, options);
    const auto view = parse_bundle(bytes).value();
    const bool wide = detail::use_wide_table(view.code(), view.max_code_length());
    // These exponents average about 2.7 bits: four fit 12 and 13 bits, not 8; 7 and 14 are
    // outside the wide table's widths.
    EXPECT_EQ(wide, limit == 12 || limit == 13) << "BF16 exponents, a " << limit << "-bit limit";
    values out;
    ASSERT_EQ(decode(bytes, out), errc{});
    EXPECT_TRUE(out == v);
  }
  // FP8-like: 120 symbols of similar weight, 6-7 bits each.
  code_lengths flat{};
  for (int s = 0; s < 128; ++s) flat[static_cast<std::size_t>(s)] = 7;
  EXPECT_FALSE(detail::use_wide_table(flat, 12));
  // Four 3-bit codewords take 12 bits: wide at a 12-bit limit, narrow at 10.
  code_lengths three{};
  for (int s = 0; s < 8; ++s) three[static_cast<std::size_t>(s)] = 3;
  EXPECT_TRUE(detail::use_wide_table(three, 12));
  EXPECT_FALSE(detail::use_wide_table(three, 10));
}

}  // namespace
}  // namespace floatzip
