// Tests for floatzip/huffman.hpp: optimality of the length-limited code lengths against two
// independent exact references, the Kraft validation of untrusted lengths, canonical codes,
// the flat decode table and the nibble serialization.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <queue>
#include <random>
#include <vector>

#include "floatzip/huffman.hpp"

namespace floatzip {
namespace {

constexpr std::uint64_t kInfiniteCost = std::numeric_limits<std::uint64_t>::max();

std::vector<std::uint64_t> present_weights_descending(const symbol_histogram& freq) {
  std::vector<std::uint64_t> weights;
  for (const std::uint64_t count : freq) {
    if (count != 0) weights.push_back(count);
  }
  std::sort(weights.rbegin(), weights.rend());
  return weights;
}

// Reference 1: exhaustive search. An optimal code gives heavier symbols lengths no longer than
// lighter ones, so it suffices to enumerate non-decreasing length sequences over the weights
// sorted heaviest first, keeping those that satisfy Kraft (sum 2^-l <= 1).
std::uint64_t exhaustive_optimal_cost(const std::vector<std::uint64_t>& weights, int limit) {
  std::uint64_t best = kInfiniteCost;
  const std::uint64_t kraft_one = std::uint64_t{1} << limit;
  std::function<void(std::size_t, int, std::uint64_t, std::uint64_t)> extend =
      [&](std::size_t i, int min_length, std::uint64_t kraft, std::uint64_t cost) {
        if (i == weights.size()) {
          best = std::min(best, cost);
          return;
        }
        for (int length = min_length; length <= limit; ++length) {
          const std::uint64_t next_kraft = kraft + (kraft_one >> length);
          if (next_kraft > kraft_one) continue;
          extend(i + 1, length, next_kraft, cost + weights[i] * static_cast<std::uint64_t>(length));
        }
      };
  extend(0, 1, 0, 0);
  return best;
}

// Reference 2: dynamic programming over the levels of the code tree, exact for larger n. At depth
// d there are `slots` free nodes; k of them become leaves for the k heaviest remaining symbols and
// the rest split into 2 * (slots - k) nodes at depth d + 1. Slots beyond the number of remaining
// symbols can never be useful, so they are capped, which keeps the state space n * n * limit.
std::uint64_t level_dp_optimal_cost(const std::vector<std::uint64_t>& weights, int limit) {
  const int n = static_cast<int>(weights.size());
  std::vector<std::uint64_t> prefix(n + 1, 0);
  for (int i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + weights[i];
  // memo[(depth * (n + 1) + assigned) * (n + 1) + slots]
  std::vector<std::uint64_t> memo(static_cast<std::size_t>(limit + 2) * (n + 1) * (n + 1),
                                  kInfiniteCost - 1);
  std::function<std::uint64_t(int, int, int)> cost = [&](int depth, int assigned, int slots) {
    if (assigned == n) return std::uint64_t{0};
    if (depth > limit || slots == 0) return kInfiniteCost;
    std::uint64_t& cell =
        memo[(static_cast<std::size_t>(depth) * (n + 1) + assigned) * (n + 1) + slots];
    if (cell != kInfiniteCost - 1) return cell;
    std::uint64_t best = kInfiniteCost;
    for (int leaves = 0; leaves <= std::min(slots, n - assigned); ++leaves) {
      const int remaining = n - assigned - leaves;
      const std::uint64_t rest =
          cost(depth + 1, assigned + leaves, std::min(2 * (slots - leaves), remaining));
      if (rest == kInfiniteCost) continue;
      const std::uint64_t here =
          (prefix[assigned + leaves] - prefix[assigned]) * static_cast<std::uint64_t>(depth);
      best = std::min(best, here + rest);
    }
    cell = best;
    return best;
  };
  return cost(0, 0, 1);  // depth 0: the root, a single slot (a leaf there would be a 0-bit code)
}

// Reference for the unlimited code: heap-based Huffman returning (total bits, deepest leaf).
struct huffman_reference {
  std::uint64_t bits = 0;
  int max_depth = 0;
};
huffman_reference heap_huffman(const symbol_histogram& freq) {
  struct node {
    std::uint64_t weight;
    int depth;  // height of the subtree: the deepest leaf below it
  };
  auto heavier = [](const node& a, const node& b) { return a.weight > b.weight; };
  std::priority_queue<node, std::vector<node>, decltype(heavier)> heap(heavier);
  for (const std::uint64_t count : freq) {
    if (count != 0) heap.push({count, 0});
  }
  huffman_reference result;
  if (heap.size() == 1) return {heap.top().weight, 1};
  while (heap.size() > 1) {
    const node a = heap.top();
    heap.pop();
    const node b = heap.top();
    heap.pop();
    result.bits += a.weight + b.weight;
    heap.push({a.weight + b.weight, std::max(a.depth, b.depth) + 1});
  }
  if (!heap.empty()) result.max_depth = heap.top().depth;
  return result;
}

// Random histogram with `symbols` distinct present symbols at random positions. Skewed counts
// (a random power of two times a small factor) make deep unlimited codes likely, so the limit
// actually binds; `max_count` bounds the uniform ones.
symbol_histogram random_histogram(std::mt19937_64& rng, int symbols, bool skewed,
                                  std::uint64_t max_count = 1000) {
  std::array<int, kSymbolCount> order{};
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  symbol_histogram freq{};
  for (int i = 0; i < symbols; ++i) {
    if (skewed) {
      const int shift = static_cast<int>(rng() % 30);
      freq[order[i]] = (std::uint64_t{1} << shift) * (1 + rng() % 3);
    } else {
      freq[order[i]] = 1 + rng() % max_count;
    }
  }
  return freq;
}

int present_count(const code_lengths& lengths) {
  return static_cast<int>(
      std::count_if(lengths.begin(), lengths.end(), [](std::uint8_t l) { return l != 0; }));
}

int max_length_of(const code_lengths& lengths) {
  return *std::max_element(lengths.begin(), lengths.end());
}

// Checks every property a build_code_lengths result must have besides optimality.
void expect_valid_code(const symbol_histogram& freq, const code_lengths& lengths, int limit) {
  for (int s = 0; s < kSymbolCount; ++s) {
    EXPECT_EQ(freq[s] == 0, lengths[s] == 0) << "symbol " << s;
  }
  EXPECT_LE(max_length_of(lengths), limit);
  const error status = validate_code_lengths(lengths, limit, /*allow_empty=*/true);
  EXPECT_TRUE(status.ok()) << status.message;
}

TEST(BuildCodeLengths, MatchesExhaustiveSearchOnSmallHistograms) {
  std::mt19937_64 rng(12345);
  int checked = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const int limit = 2 + static_cast<int>(rng() % 5);                                // 2..6
    const int symbols = 2 + static_cast<int>(rng() % std::min(9, (1 << limit) - 1));  // 2..10
    const bool skewed = trial % 2 == 0;
    const symbol_histogram freq = random_histogram(rng, symbols, skewed, 20);
    const result<code_lengths> lengths = build_code_lengths(freq, limit);
    ASSERT_TRUE(lengths.has_value()) << lengths.error().message;
    expect_valid_code(freq, *lengths, limit);
    const std::uint64_t expected = exhaustive_optimal_cost(present_weights_descending(freq), limit);
    ASSERT_EQ(encoded_bits(freq, *lengths), expected)
        << "trial " << trial << " limit " << limit << " symbols " << symbols;
    ++checked;
  }
  EXPECT_EQ(checked, 3000);
}

TEST(BuildCodeLengths, MatchesLevelDpOnMediumHistograms) {
  std::mt19937_64 rng(777);
  for (int trial = 0; trial < 300; ++trial) {
    const int limit = 3 + static_cast<int>(rng() % 13);  // 3..15
    const int symbols = 2 + static_cast<int>(rng() % std::min(48, (1 << limit) - 1));
    const symbol_histogram freq = random_histogram(rng, symbols, /*skewed=*/trial % 3 != 0);
    const result<code_lengths> lengths = build_code_lengths(freq, limit);
    ASSERT_TRUE(lengths.has_value()) << lengths.error().message;
    expect_valid_code(freq, *lengths, limit);
    ASSERT_EQ(encoded_bits(freq, *lengths),
              level_dp_optimal_cost(present_weights_descending(freq), limit))
        << "trial " << trial << " limit " << limit << " symbols " << symbols;
  }
}

TEST(BuildCodeLengths, ReferencesAgreeWithEachOther) {
  // Guards the test itself: the two references are independent, so agreement makes a shared
  // mistake unlikely.
  std::mt19937_64 rng(99);
  for (int trial = 0; trial < 300; ++trial) {
    const int limit = 2 + static_cast<int>(rng() % 4);
    const int symbols = 2 + static_cast<int>(rng() % std::min(7, (1 << limit) - 1));
    const auto weights = present_weights_descending(random_histogram(rng, symbols, true));
    ASSERT_EQ(exhaustive_optimal_cost(weights, limit), level_dp_optimal_cost(weights, limit));
  }
}

TEST(BuildCodeLengths, GenerousLimitGivesUnlimitedHuffmanCost) {
  std::mt19937_64 rng(2024);
  int compared = 0;
  for (int trial = 0; trial < 200; ++trial) {
    const int symbols = 2 + static_cast<int>(rng() % 255);
    const symbol_histogram freq = random_histogram(rng, symbols, /*skewed=*/false, 100000);
    const huffman_reference reference = heap_huffman(freq);
    EXPECT_EQ(unlimited_huffman_bits(freq), reference.bits);
    if (reference.max_depth > kMaxCodeLength) continue;
    const result<code_lengths> lengths = build_code_lengths(freq, kMaxCodeLength);
    ASSERT_TRUE(lengths.has_value()) << lengths.error().message;
    expect_valid_code(freq, *lengths, kMaxCodeLength);
    EXPECT_EQ(encoded_bits(freq, *lengths), reference.bits) << "trial " << trial;
    ++compared;
  }
  EXPECT_GT(compared, 150);  // uniform counts up to 1e5 rarely need more than 15 bits
}

TEST(BuildCodeLengths, FibonacciCountsForceTheLimit) {
  // Fibonacci counts make the unlimited Huffman tree a chain: 24 symbols need 23-bit codes.
  symbol_histogram freq{};
  std::uint64_t a = 1, b = 1;
  for (int s = 0; s < 24; ++s) {
    freq[s * 10] = a;
    const std::uint64_t next = a + b;
    a = b;
    b = next;
  }
  ASSERT_EQ(heap_huffman(freq).max_depth, 23);
  const std::uint64_t unlimited = unlimited_huffman_bits(freq);
  std::uint64_t previous_cost = 0;
  for (int limit = kMaxCodeLength; limit >= 5; --limit) {
    const result<code_lengths> lengths = build_code_lengths(freq, limit);
    ASSERT_TRUE(lengths.has_value()) << lengths.error().message;
    expect_valid_code(freq, *lengths, limit);
    EXPECT_EQ(max_length_of(*lengths), limit);  // the limit binds
    const std::uint64_t cost = encoded_bits(freq, *lengths);
    EXPECT_GT(cost, unlimited);
    EXPECT_GE(cost, previous_cost);  // a tighter limit never helps
    EXPECT_EQ(cost, level_dp_optimal_cost(present_weights_descending(freq), limit));
    previous_cost = cost;
  }
}

TEST(BuildCodeLengths, NoSymbolGivesAllZeros) {
  const result<code_lengths> lengths = build_code_lengths(symbol_histogram{}, 12);
  ASSERT_TRUE(lengths.has_value());
  EXPECT_EQ(present_count(*lengths), 0);
}

TEST(BuildCodeLengths, OneSymbolGetsLengthOne) {
  for (int limit = 1; limit <= kMaxCodeLength; ++limit) {
    symbol_histogram freq{};
    freq[0x7f] = 123456;
    const result<code_lengths> lengths = build_code_lengths(freq, limit);
    ASSERT_TRUE(lengths.has_value());
    EXPECT_EQ((*lengths)[0x7f], 1);
    EXPECT_EQ(present_count(*lengths), 1);
    EXPECT_EQ(encoded_bits(freq, *lengths), 123456u);
  }
}

TEST(BuildCodeLengths, TwoSymbolsGetLengthOne) {
  symbol_histogram freq{};
  freq[3] = 1;
  freq[250] = 1000000;
  const result<code_lengths> lengths = build_code_lengths(freq, 1);
  ASSERT_TRUE(lengths.has_value());
  EXPECT_EQ((*lengths)[3], 1);
  EXPECT_EQ((*lengths)[250], 1);
  EXPECT_EQ(present_count(*lengths), 2);
}

TEST(BuildCodeLengths, AllSymbolsWithLimitEightAreAllLengthEight) {
  std::mt19937_64 rng(8);
  const symbol_histogram freq = random_histogram(rng, kSymbolCount, /*skewed=*/true);
  const result<code_lengths> lengths = build_code_lengths(freq, 8);
  ASSERT_TRUE(lengths.has_value()) << lengths.error().message;
  for (int s = 0; s < kSymbolCount; ++s) EXPECT_EQ((*lengths)[s], 8) << "symbol " << s;
}

TEST(BuildCodeLengths, AllSymbolsWithLimitFifteen) {
  std::mt19937_64 rng(15);
  for (const bool skewed : {false, true}) {
    const symbol_histogram freq = random_histogram(rng, kSymbolCount, skewed);
    const result<code_lengths> lengths = build_code_lengths(freq, kMaxCodeLength);
    ASSERT_TRUE(lengths.has_value()) << lengths.error().message;
    expect_valid_code(freq, *lengths, kMaxCodeLength);
    const huffman_reference reference = heap_huffman(freq);
    if (reference.max_depth <= kMaxCodeLength) {
      EXPECT_EQ(encoded_bits(freq, *lengths), reference.bits);
    } else {
      EXPECT_GT(encoded_bits(freq, *lengths), reference.bits);
      EXPECT_EQ(max_length_of(*lengths), kMaxCodeLength);
    }
  }
}

TEST(BuildCodeLengths, IsDeterministicUnderTies) {
  symbol_histogram freq{};
  for (int s = 0; s < 5; ++s) freq[40 + s] = 7;  // five equal counts: 2,2,2,3,3 in some order
  const result<code_lengths> first = build_code_lengths(freq, 8);
  const result<code_lengths> second = build_code_lengths(freq, 8);
  ASSERT_TRUE(first.has_value() && second.has_value());
  EXPECT_EQ(*first, *second);
  EXPECT_EQ(encoded_bits(freq, *first), 7u * (2 + 2 + 2 + 3 + 3));
}

TEST(BuildCodeLengths, RejectsMoreSymbolsThanTheLimitAllows) {
  symbol_histogram freq{};
  for (int s = 0; s < 5; ++s) freq[s] = 1;
  const result<code_lengths> lengths = build_code_lengths(freq, 2);
  ASSERT_FALSE(lengths.has_value());
  EXPECT_EQ(lengths.error().code, errc::invalid_argument);

  freq[4] = 0;  // exactly 2^2 symbols fit
  EXPECT_TRUE(build_code_lengths(freq, 2).has_value());

  symbol_histogram all{};
  all.fill(1);
  EXPECT_EQ(build_code_lengths(all, 7).error().code, errc::invalid_argument);
}

TEST(BuildCodeLengths, RejectsLimitOutsideTheFormat) {
  symbol_histogram freq{};
  freq[1] = freq[2] = 1;
  EXPECT_EQ(build_code_lengths(freq, 0).error().code, errc::invalid_argument);
  EXPECT_EQ(build_code_lengths(freq, kMaxCodeLength + 1).error().code, errc::invalid_argument);
  EXPECT_EQ(build_code_lengths(freq, -3).error().code, errc::invalid_argument);
}

TEST(BuildCodeLengths, RejectsTotalsThatCouldOverflow) {
  symbol_histogram freq{};
  freq[0] = std::uint64_t{1} << 62;
  freq[1] = 1;
  const result<code_lengths> lengths = build_code_lengths(freq, 12);
  ASSERT_FALSE(lengths.has_value());
  EXPECT_EQ(lengths.error().code, errc::too_large);

  freq[0] = (std::uint64_t{1} << 59);  // large but allowed
  freq[2] = 3;
  const result<code_lengths> large = build_code_lengths(freq, 12);
  ASSERT_TRUE(large.has_value()) << large.error().message;
  EXPECT_EQ((*large)[0], 1);
  EXPECT_EQ((*large)[1], 2);
  EXPECT_EQ((*large)[2], 2);
}

TEST(EncodedBits, SumsAndSaturates) {
  symbol_histogram freq{};
  code_lengths lengths{};
  freq[0] = 10;
  lengths[0] = 3;
  freq[9] = 4;
  lengths[9] = 5;
  EXPECT_EQ(encoded_bits(freq, lengths), 50u);
  freq[1] = std::uint64_t{1} << 63;
  lengths[1] = 2;
  EXPECT_EQ(encoded_bits(freq, lengths), std::numeric_limits<std::uint64_t>::max());
}

// ---- validation of untrusted lengths ----------------------------------------------------------

TEST(ValidateCodeLengths, AcceptsCompleteCodes) {
  code_lengths lengths{};
  lengths[0] = 1;
  lengths[1] = 2;
  lengths[2] = 3;
  lengths[3] = 3;
  EXPECT_TRUE(validate_code_lengths(lengths, 3, false).ok());
  code_lengths all{};
  all.fill(8);
  EXPECT_TRUE(validate_code_lengths(all, 8, false).ok());
}

TEST(ValidateCodeLengths, RejectsOverFull) {
  code_lengths lengths{};
  lengths[0] = 1;
  lengths[1] = 2;
  lengths[2] = 2;
  lengths[3] = 3;
  lengths[4] = 3;
  const error status = validate_code_lengths(lengths, 15, false);
  EXPECT_EQ(status.code, errc::bad_data);
  EXPECT_NE(status.message.find("Kraft sum 1.25 > 1 (over-full)"), std::string::npos)
      << status.message;

  // Over-full by the smallest possible amount: one extra 2^-15.
  code_lengths barely{};
  barely[0] = 1;
  for (int s = 1; s <= 14; ++s) barely[s] = static_cast<std::uint8_t>(s + 1);
  barely[15] = 15;
  ASSERT_TRUE(validate_code_lengths(barely, 15, false).ok());
  barely[16] = 15;
  const error over = validate_code_lengths(barely, 15, false);
  EXPECT_EQ(over.code, errc::bad_data);
  EXPECT_NE(over.message.find("1.000030517578125 > 1 (over-full)"), std::string::npos)
      << over.message;
}

TEST(ValidateCodeLengths, RejectsIncomplete) {
  code_lengths lengths{};
  lengths[10] = 1;
  lengths[11] = 2;
  const error status = validate_code_lengths(lengths, 15, false);
  EXPECT_EQ(status.code, errc::bad_data);
  EXPECT_NE(status.message.find("Kraft sum 0.75 < 1 (incomplete)"), std::string::npos)
      << status.message;

  // Missing only the smallest possible amount.
  code_lengths barely{};
  barely[0] = 1;
  for (int s = 1; s <= 14; ++s) barely[s] = static_cast<std::uint8_t>(s + 1);
  EXPECT_EQ(validate_code_lengths(barely, 15, false).code, errc::bad_data);
}

TEST(ValidateCodeLengths, RejectsTooLong) {
  code_lengths lengths{};
  lengths[0] = 1;
  lengths[0x7f] = 13;
  const error status = validate_code_lengths(lengths, 12, false);
  EXPECT_EQ(status.code, errc::bad_data);
  EXPECT_NE(status.message.find("symbol 0x7f length 13 exceeds limit 12"), std::string::npos)
      << status.message;

  // Lengths the nibble format cannot hold but a code_lengths array can.
  code_lengths huge{};
  huge[0xff] = 200;
  huge[0] = 1;
  const error huge_status = validate_code_lengths(huge, kMaxCodeLength, false);
  EXPECT_EQ(huge_status.code, errc::bad_data);
  EXPECT_NE(huge_status.message.find("symbol 0xff length 200 exceeds limit 15"), std::string::npos)
      << huge_status.message;
}

TEST(ValidateCodeLengths, SingleSymbolNeedsLengthOne) {
  code_lengths lengths{};
  lengths[0x42] = 1;
  EXPECT_TRUE(validate_code_lengths(lengths, 1, false).ok());
  EXPECT_TRUE(validate_code_lengths(lengths, 12, false).ok());
  lengths[0x42] = 2;
  const error status = validate_code_lengths(lengths, 12, false);
  EXPECT_EQ(status.code, errc::bad_data);
  EXPECT_NE(status.message.find("0x42"), std::string::npos) << status.message;
}

TEST(ValidateCodeLengths, EmptyOnlyWhenAllowed) {
  EXPECT_TRUE(validate_code_lengths(code_lengths{}, 12, true).ok());
  const error status = validate_code_lengths(code_lengths{}, 12, false);
  EXPECT_EQ(status.code, errc::bad_data);
  EXPECT_FALSE(status.message.empty());
}

TEST(ValidateCodeLengths, RejectsLimitOutsideTheFormat) {
  code_lengths lengths{};
  lengths[0] = lengths[1] = 1;
  EXPECT_EQ(validate_code_lengths(lengths, 0, false).code, errc::invalid_argument);
  EXPECT_EQ(validate_code_lengths(lengths, kMaxCodeLength + 1, false).code, errc::invalid_argument);
}

// ---- canonical codes and the decode table -----------------------------------------------------

// Random complete codes: repeatedly split a random leaf of a growing tree, which reaches shapes
// that optimal codes of real histograms do not (e.g. long thin branches next to wide ones).
code_lengths random_complete_lengths(std::mt19937_64& rng, int limit) {
  std::vector<int> depths = {1, 1};
  const int target = 2 + static_cast<int>(rng() % std::min<std::uint64_t>(255, (1u << limit) - 1));
  while (static_cast<int>(depths.size()) < target) {
    const std::size_t pick = rng() % depths.size();
    if (depths[pick] >= limit) {
      // Try a few others before giving up on growing further.
      bool split = false;
      for (std::size_t i = 0; i < depths.size(); ++i) {
        if (depths[i] < limit) {
          ++depths[i];
          depths.push_back(depths[i]);
          split = true;
          break;
        }
      }
      if (!split) break;
      continue;
    }
    ++depths[pick];
    depths.push_back(depths[pick]);
  }
  std::array<int, kSymbolCount> symbols{};
  std::iota(symbols.begin(), symbols.end(), 0);
  std::shuffle(symbols.begin(), symbols.end(), rng);
  code_lengths lengths{};
  for (std::size_t i = 0; i < depths.size(); ++i) {
    lengths[symbols[i]] = static_cast<std::uint8_t>(depths[i]);
  }
  return lengths;
}

void expect_canonical_and_prefix_free(const code_lengths& lengths) {
  const canonical_code code = make_canonical_code(lengths);
  EXPECT_EQ(code.length, lengths);
  EXPECT_EQ(code.max_length, max_length_of(lengths));
  std::vector<int> order;
  for (int s = 0; s < kSymbolCount; ++s) {
    if (lengths[s] != 0) order.push_back(s);
    if (lengths[s] == 0) {
      EXPECT_EQ(code.code[s], 0);
    }
  }
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    return lengths[a] != lengths[b] ? lengths[a] < lengths[b] : a < b;
  });
  // Canonical: each code is the previous plus one, shifted to the new length; the first is 0.
  std::uint32_t expected = 0;
  for (std::size_t i = 0; i < order.size(); ++i) {
    if (i > 0) {
      expected = (expected + 1) << (lengths[order[i]] - lengths[order[i - 1]]);
    }
    EXPECT_EQ(code.code[order[i]], expected) << "symbol " << order[i];
    EXPECT_LT(code.code[order[i]], 1u << lengths[order[i]]);
  }
  // Prefix-free: no code is a prefix of another.
  for (const int a : order) {
    for (const int b : order) {
      if (a == b || lengths[a] > lengths[b]) continue;
      EXPECT_NE(code.code[b] >> (lengths[b] - lengths[a]), code.code[a])
          << "code of " << a << " is a prefix of the code of " << b;
    }
  }
}

TEST(CanonicalCode, RandomCompleteCodesArePrefixFree) {
  std::mt19937_64 rng(4242);
  for (int trial = 0; trial < 300; ++trial) {
    const int limit = 1 + static_cast<int>(rng() % kMaxCodeLength);
    const code_lengths lengths = random_complete_lengths(rng, limit);
    ASSERT_TRUE(validate_code_lengths(lengths, limit, false).ok());
    expect_canonical_and_prefix_free(lengths);
  }
}

TEST(CanonicalCode, KnownExample) {
  // The DEFLATE RFC 1951 example: lengths (3,3,3,3,3,2,4,4) for A..H.
  code_lengths lengths{};
  const int example[] = {3, 3, 3, 3, 3, 2, 4, 4};
  for (int s = 0; s < 8; ++s) lengths['A' + s] = static_cast<std::uint8_t>(example[s]);
  ASSERT_TRUE(validate_code_lengths(lengths, 4, false).ok());
  const canonical_code code = make_canonical_code(lengths);
  const std::uint16_t expected[] = {0b010, 0b011, 0b100, 0b101, 0b110, 0b00, 0b1110, 0b1111};
  for (int s = 0; s < 8; ++s) EXPECT_EQ(code.code['A' + s], expected[s]) << char('A' + s);
  EXPECT_EQ(code.max_length, 4);
}

TEST(CanonicalCode, OneSymbolAndEmpty) {
  code_lengths one{};
  one[9] = 1;
  const canonical_code code = make_canonical_code(one);
  EXPECT_EQ(code.code[9], 0);
  EXPECT_EQ(code.max_length, 1);
  EXPECT_EQ(make_canonical_code(code_lengths{}).max_length, 0);
}

TEST(DecodeEntry, BitLayout) {
  const decode_entry entry = make_decode_entry(0xA5, 15);
  EXPECT_EQ(entry, 0x0FA5);
  EXPECT_EQ(entry_symbol(entry), 0xA5);
  EXPECT_EQ(entry_length(entry), 15u);
  EXPECT_EQ(entry >> 13, 0);
  static_assert(entry_length(make_decode_entry(0xFF, 1)) == 1);
  static_assert(entry_symbol(make_decode_entry(0x00, 7)) == 0);
}

// Writes bits MSB first into a vector of bytes.
class bit_writer {
 public:
  void put(std::uint32_t code, int length) {
    for (int i = length - 1; i >= 0; --i) {
      if (bit_count_ % 8 == 0) bytes_.push_back(0);
      if ((code >> i) & 1u) bytes_.back() |= static_cast<std::uint8_t>(0x80u >> (bit_count_ % 8));
      ++bit_count_;
    }
  }
  [[nodiscard]] const std::vector<std::uint8_t>& bytes() const { return bytes_; }
  [[nodiscard]] std::size_t bit_count() const { return bit_count_; }

 private:
  std::vector<std::uint8_t> bytes_;
  std::size_t bit_count_ = 0;
};

// The next `count` bits at `position`, MSB first, zero beyond the end of the stream.
std::uint32_t peek_bits(const std::vector<std::uint8_t>& bytes, std::size_t position, int count) {
  std::uint32_t value = 0;
  for (int i = 0; i < count; ++i) {
    const std::size_t bit = position + i;
    const std::uint32_t b = bit / 8 < bytes.size() ? (bytes[bit / 8] >> (7 - bit % 8)) & 1u : 0u;
    value = (value << 1) | b;
  }
  return value;
}

TEST(DecodeTable, EveryEntryDecodesItsCodeword) {
  std::mt19937_64 rng(31337);
  for (int trial = 0; trial < 200; ++trial) {
    const int limit = 1 + static_cast<int>(rng() % 12);
    const code_lengths lengths = random_complete_lengths(rng, limit);
    const int max_length = max_length_of(lengths);
    const int table_bits = max_length + static_cast<int>(rng() % 3);
    std::vector<decode_entry> table(std::size_t{1} << table_bits, 0xFFFF);
    build_decode_table(lengths, table_bits, table);
    const canonical_code code = make_canonical_code(lengths);
    // Every index resolves to the unique codeword that prefixes it.
    for (std::size_t index = 0; index < table.size(); ++index) {
      const decode_entry entry = table[index];
      const unsigned length = entry_length(entry);
      ASSERT_GE(length, 1u) << "index " << index;
      ASSERT_EQ(lengths[entry_symbol(entry)], length);
      EXPECT_EQ(index >> (table_bits - length), code.code[entry_symbol(entry)]);
      EXPECT_EQ(entry >> 13, 0);
    }
  }
}

TEST(DecodeTable, DecodesAnEncodedStream) {
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 50; ++trial) {
    const int limit = 8 + static_cast<int>(rng() % 8);  // 8..15: room for up to 256 symbols
    const symbol_histogram freq = random_histogram(rng, 2 + static_cast<int>(rng() % 200),
                                                   /*skewed=*/true);
    const result<code_lengths> built = build_code_lengths(freq, limit);
    ASSERT_TRUE(built.has_value()) << built.error().message;
    const code_lengths& lengths = *built;
    const canonical_code code = make_canonical_code(lengths);
    std::vector<std::uint8_t> present;
    for (int s = 0; s < kSymbolCount; ++s) {
      if (lengths[s] != 0) present.push_back(static_cast<std::uint8_t>(s));
    }
    std::vector<std::uint8_t> message(2000);
    bit_writer writer;
    for (std::uint8_t& symbol : message) {
      symbol = present[rng() % present.size()];
      writer.put(code.code[symbol], lengths[symbol]);
    }
    const int table_bits = code.max_length;
    std::vector<decode_entry> table(std::size_t{1} << table_bits);
    build_decode_table(lengths, table_bits, table);
    std::size_t position = 0;
    for (std::size_t i = 0; i < message.size(); ++i) {
      const decode_entry entry = table[peek_bits(writer.bytes(), position, table_bits)];
      ASSERT_EQ(entry_symbol(entry), message[i]) << "trial " << trial << " value " << i;
      position += entry_length(entry);
    }
    EXPECT_EQ(position, writer.bit_count());  // the stream was consumed exactly
  }
}

TEST(DecodeTable, OneSymbolFillsEveryEntry) {
  code_lengths lengths{};
  lengths[0xC3] = 1;
  std::vector<decode_entry> table(std::size_t{1} << 4);
  build_decode_table(lengths, 4, table);
  for (const decode_entry entry : table) {
    EXPECT_EQ(entry_symbol(entry), 0xC3);
    EXPECT_EQ(entry_length(entry), 1u);
  }
}

TEST(DecodeTable, EmptyCodeMarksEveryEntryInvalid) {
  std::vector<decode_entry> table(std::size_t{1} << 5, 0x1234);
  build_decode_table(code_lengths{}, 5, table);
  for (const decode_entry entry : table) EXPECT_EQ(entry_length(entry), 0u);
}

// ---- serialization ----------------------------------------------------------------------------

TEST(PackedCodeLengths, NibbleLayout) {
  code_lengths lengths{};
  lengths[0] = 3;
  lengths[1] = 5;
  lengths[254] = 15;
  lengths[255] = 1;
  std::array<std::uint8_t, kPackedCodeLengthsBytes> packed{};
  pack_code_lengths(lengths, packed);
  EXPECT_EQ(packed[0], 0x53);
  EXPECT_EQ(packed[127], 0x1F);
  for (int i = 1; i < 127; ++i) EXPECT_EQ(packed[i], 0) << i;
}

TEST(PackedCodeLengths, RoundTrip) {
  std::mt19937_64 rng(128);
  for (int trial = 0; trial < 100; ++trial) {
    code_lengths lengths{};
    for (std::uint8_t& length : lengths) length = static_cast<std::uint8_t>(rng() % 16);
    std::array<std::uint8_t, kPackedCodeLengthsBytes> packed{};
    pack_code_lengths(lengths, packed);
    EXPECT_EQ(unpack_code_lengths(packed), lengths);
  }
  // And from arbitrary bytes: unpack then pack reproduces them.
  std::array<std::uint8_t, kPackedCodeLengthsBytes> bytes{};
  for (std::uint8_t& b : bytes) b = static_cast<std::uint8_t>(rng());
  std::array<std::uint8_t, kPackedCodeLengthsBytes> repacked{};
  pack_code_lengths(unpack_code_lengths(bytes), repacked);
  EXPECT_EQ(repacked, bytes);
}

// ---- histogram statistics ---------------------------------------------------------------------

TEST(HistogramStats, EntropyOfKnownHistograms) {
  symbol_histogram freq{};
  EXPECT_EQ(entropy_bits_per_symbol(freq), 0.0);
  freq[5] = 42;
  EXPECT_EQ(entropy_bits_per_symbol(freq), 0.0);
  freq[6] = 42;
  EXPECT_DOUBLE_EQ(entropy_bits_per_symbol(freq), 1.0);
  freq[7] = 42;
  freq[8] = 42;
  EXPECT_DOUBLE_EQ(entropy_bits_per_symbol(freq), 2.0);
  symbol_histogram skewed{};
  skewed[0] = 2;
  skewed[1] = 1;
  skewed[2] = 1;
  EXPECT_DOUBLE_EQ(entropy_bits_per_symbol(skewed), 1.5);
  symbol_histogram uniform{};
  uniform.fill(3);
  EXPECT_NEAR(entropy_bits_per_symbol(uniform), 8.0, 1e-12);
}

TEST(HistogramStats, UnlimitedHuffmanBitsOfKnownHistograms) {
  symbol_histogram freq{};
  EXPECT_EQ(unlimited_huffman_bits(freq), 0u);
  freq[1] = 7;
  EXPECT_EQ(unlimited_huffman_bits(freq), 7u);  // one symbol: one bit each
  symbol_histogram skewed{};
  skewed[0] = 2;
  skewed[1] = 1;
  skewed[2] = 1;
  EXPECT_EQ(unlimited_huffman_bits(skewed), 6u);
  // The textbook example (CLRS 16.3): a:45 b:13 c:12 d:16 e:9 f:5 takes 224 bits.
  symbol_histogram textbook{};
  const std::uint64_t counts[] = {45, 13, 12, 16, 9, 5};
  for (int s = 0; s < 6; ++s) textbook['a' + s] = counts[s];
  EXPECT_EQ(unlimited_huffman_bits(textbook), 224u);
  // The ideal never exceeds the entropy bound by a bit per symbol, nor falls below it.
  const double entropy_total = entropy_bits_per_symbol(textbook) * 100.0;
  EXPECT_GE(224.0, entropy_total);
  EXPECT_LT(224.0, entropy_total + 100.0);
}

TEST(HistogramStats, UnlimitedHuffmanBitsSaturates) {
  symbol_histogram freq{};
  freq[0] = std::numeric_limits<std::uint64_t>::max() / 2;
  freq[1] = std::numeric_limits<std::uint64_t>::max() / 2;
  freq[2] = std::numeric_limits<std::uint64_t>::max() / 2;
  EXPECT_EQ(unlimited_huffman_bits(freq), std::numeric_limits<std::uint64_t>::max());
}

}  // namespace
}  // namespace floatzip
