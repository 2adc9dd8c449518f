// floatzip: definitions for floatzip/huffman.hpp. Include that header, not this file.
#pragma once

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

namespace floatzip {
namespace detail {

inline constexpr std::uint64_t kU64Max = std::numeric_limits<std::uint64_t>::max();

constexpr std::uint64_t saturating_add(std::uint64_t a, std::uint64_t b) {
  return a > kU64Max - b ? kU64Max : a + b;
}

constexpr std::uint64_t saturating_mul(std::uint64_t a, std::uint64_t b) {
  return (b != 0 && a > kU64Max / b) ? kU64Max : a * b;
}

// A present symbol and its count; the sort key of both Huffman builders.
struct weighted_symbol {
  std::uint64_t weight;
  std::uint8_t symbol;
};

// Present symbols sorted by (count, symbol value) ascending; returns how many there are. Sorting
// by symbol value among equal counts makes the chosen optimal code independent of the sort
// implementation, so every build writes the same lengths for the same histogram.
inline int sorted_present_symbols(const symbol_histogram& freq,
                                  std::array<weighted_symbol, kSymbolCount>& out) {
  int n = 0;
  for (int s = 0; s < kSymbolCount; ++s) {
    if (freq[s] != 0) out[n++] = {freq[s], static_cast<std::uint8_t>(s)};
  }
  std::sort(out.begin(), out.begin() + n, [](const weighted_symbol& a, const weighted_symbol& b) {
    return a.weight != b.weight ? a.weight < b.weight : a.symbol < b.symbol;
  });
  return n;
}

inline std::string hex_symbol(int symbol) {
  char text[8];
  std::snprintf(text, sizeof text, "0x%02x", symbol);
  return text;
}

}  // namespace detail

// Package-merge (Larmore & Hirschberg) phrased as the coin collector's problem: every present
// symbol is a coin of each denomination 2^-1 .. 2^-max_length with numismatic value = its count.
// Picking the cheapest set of coins worth n-1 gives the optimal lengths: a symbol's length is the
// number of its coins picked. The lists are built from the smallest denomination up; the list of
// denomination 2^-d holds the n leaves merged with the pairs ("packages") of the list below.
//
// Within one list the leaves appear in sorted order, so the leaves among its first m items are
// always the m' lightest symbols. Recording, per list, which items are leaves is therefore enough
// to walk back from the final pick: no per-item leaf sets, and everything lives in fixed arrays
// (at most 2n - 1 <= 511 items per list, max_length <= 15 lists).
inline result<code_lengths> build_code_lengths(const symbol_histogram& freq, int max_length) {
  if (max_length < 1 || max_length > kMaxCodeLength) {
    return error{errc::invalid_argument, "build_code_lengths: max_length " +
                                             std::to_string(max_length) + " outside [1, " +
                                             std::to_string(kMaxCodeLength) + "]"};
  }
  std::array<detail::weighted_symbol, kSymbolCount> leaves{};
  const int n = detail::sorted_present_symbols(freq, leaves);

  code_lengths lengths{};
  if (n == 0) return lengths;
  if (n == 1) {
    lengths[leaves[0].symbol] = 1;
    return lengths;
  }
  if (n > (1 << max_length)) {
    return error{errc::invalid_argument, "build_code_lengths: " + std::to_string(n) +
                                             " symbols present but max_length " +
                                             std::to_string(max_length) + " allows at most " +
                                             std::to_string(1 << max_length)};
  }
  // A package of the 2^-d list can hold the same leaf once per deeper list, so its weight is at
  // most max_length * total < 16 * total. Refusing totals of 2^60 and above keeps every weight
  // exact in 64 bits.
  std::uint64_t total = 0;
  for (int i = 0; i < n; ++i) total = detail::saturating_add(total, leaves[i].weight);
  if (total > (detail::kU64Max >> 4)) {
    return error{errc::too_large, "build_code_lengths: total symbol count " +
                                      std::to_string(total) + " exceeds 2^60"};
  }

  constexpr int kMaxItems = 2 * kSymbolCount - 1;
  // Weights of the list one denomination smaller and of the current one, swapped per list. Two
  // more entries than a list holds: the merge reads the package past the last one before it
  // knows there is none.
  std::array<std::uint64_t, kMaxItems + 2> lists[2]{};
  std::uint64_t* below = lists[0].data();
  std::uint64_t* current = lists[1].data();
  // is_leaf[d][i]: item i of list d (d = 0 is the smallest denomination) is a leaf, not a package.
  std::array<std::array<bool, kMaxItems>, kMaxCodeLength> is_leaf{};
  // The leaves' weights, and one past them (read, never taken).
  std::array<std::uint64_t, kSymbolCount + 1> leaf_weight{};

  int below_count = n;
  for (int i = 0; i < n; ++i) {
    leaf_weight[i] = leaves[i].weight;
    below[i] = leaves[i].weight;
    is_leaf[0][i] = true;
  }
  for (int d = 1; d < max_length; ++d) {
    const int package_count = below_count / 2;  // an odd last item cannot be paired: dropped
    int leaf = 0, package = 0, count = 0;
    // Whether the next item is a leaf or a package is data, mispredicted as a branch about as
    // often as not: both candidates are loaded and one is selected.
    while (leaf < n || package < package_count) {
      const std::uint64_t leaf_w = leaf_weight[leaf];
      const std::uint64_t package_w = below[2 * package] + below[2 * package + 1];
      const bool take_leaf = (package == package_count) | ((leaf < n) & (leaf_w <= package_w));
      current[count] = take_leaf ? leaf_w : package_w;
      is_leaf[d][count] = take_leaf;
      leaf += take_leaf ? 1 : 0;
      package += take_leaf ? 0 : 1;
      ++count;
    }
    std::swap(below, current);
    below_count = count;
  }

  // Walk back from the pick of the largest denomination: its first 2n - 2 items. The packages
  // among the first m items of list d expand to the first 2 * packages items of list d - 1.
  // Each list in which the lightest `leaf_picks` leaves are picked adds one bit to each of them.
  std::array<int, kSymbolCount + 1> length_steps{};  // difference array over sorted leaf index
  int picked = 2 * n - 2;
  for (int d = max_length - 1; d >= 0 && picked > 0; --d) {
    int leaf_picks = 0;
    for (int i = 0; i < picked; ++i) leaf_picks += is_leaf[d][i] ? 1 : 0;
    ++length_steps[0];
    --length_steps[leaf_picks];
    picked = 2 * (picked - leaf_picks);
  }
  int length = 0;
  for (int i = 0; i < n; ++i) {
    length += length_steps[i];
    assert(length >= 1 && length <= max_length);
    lengths[leaves[i].symbol] = static_cast<std::uint8_t>(length);
  }
  return lengths;
}

inline std::uint64_t encoded_bits(const symbol_histogram& freq, const code_lengths& lengths) {
  std::uint64_t bits = 0;
  for (int s = 0; s < kSymbolCount; ++s) {
    bits = detail::saturating_add(bits, detail::saturating_mul(freq[s], lengths[s]));
  }
  return bits;
}

inline error validate_code_lengths(const code_lengths& lengths, int max_length, bool allow_empty) {
  if (max_length < 1 || max_length > kMaxCodeLength) {
    return error{errc::invalid_argument, "code lengths: max_length " + std::to_string(max_length) +
                                             " outside [1, " + std::to_string(kMaxCodeLength) +
                                             "]"};
  }
  // Kraft sum in units of 2^-kMaxCodeLength: at most 256 * 2^14, exact in 32 bits.
  constexpr std::uint32_t kKraftOne = 1u << kMaxCodeLength;
  std::uint32_t kraft = 0;
  int present = 0;
  int only_symbol = -1;
  for (int s = 0; s < kSymbolCount; ++s) {
    const int length = lengths[s];
    if (length == 0) continue;
    if (length > max_length) {
      return error{errc::bad_data, "code lengths: symbol " + detail::hex_symbol(s) + " length " +
                                       std::to_string(length) + " exceeds limit " +
                                       std::to_string(max_length)};
    }
    kraft += kKraftOne >> length;
    ++present;
    only_symbol = s;
  }
  if (present == 0) {
    if (allow_empty) return {};
    return error{errc::bad_data, "code lengths: no symbol present (empty code)"};
  }
  if (present == 1) {
    if (lengths[only_symbol] == 1) return {};
    return error{errc::bad_data, "code lengths: the only symbol " +
                                     detail::hex_symbol(only_symbol) + " has length " +
                                     std::to_string(lengths[only_symbol]) +
                                     "; a one-symbol code must have length 1"};
  }
  if (kraft != kKraftOne) {
    // A dyadic fraction with at most 15 fractional bits: %.17g prints it exactly for sums below
    // 100, which covers every code a decoder could be confused by.
    char sum_text[40];
    std::snprintf(sum_text, sizeof sum_text, "%.17g", static_cast<double>(kraft) / kKraftOne);
    return error{errc::bad_data,
                 std::string("code lengths: Kraft sum ") + sum_text +
                     (kraft > kKraftOne ? " > 1 (over-full)" : " < 1 (incomplete)")};
  }
  return {};
}

inline canonical_code make_canonical_code(const code_lengths& lengths) {
  canonical_code result;
  result.length = lengths;
  std::array<std::uint32_t, kMaxCodeLength + 1> count_of_length{};
  for (int s = 0; s < kSymbolCount; ++s) {
    const int length = lengths[s];
    assert(length <= kMaxCodeLength && "make_canonical_code: lengths not validated");
    if (length == 0 || length > kMaxCodeLength) continue;
    ++count_of_length[length];
    result.max_length = std::max(result.max_length, length);
  }
  // The first code of each length follows the last code of the previous length, one bit longer.
  std::array<std::uint32_t, kMaxCodeLength + 1> next_code{};
  std::uint32_t code = 0;
  for (int length = 1; length <= kMaxCodeLength; ++length) {
    code = (code + count_of_length[length - 1]) << 1;
    next_code[length] = code;
  }
  for (int s = 0; s < kSymbolCount; ++s) {
    const int length = lengths[s];
    if (length == 0 || length > kMaxCodeLength) continue;
    result.code[s] = static_cast<std::uint16_t>(next_code[length]++);
  }
  return result;
}

inline void build_decode_table(const code_lengths& lengths, int table_bits,
                               std::span<decode_entry> table) {
  assert(table_bits >= 0 && table_bits <= 30);
  assert(table.size() == (std::size_t{1} << table_bits));
  // Entries no codeword reaches keep length 0, which decoders treat as corruption. That is the
  // whole table for the empty code, and what a violated precondition leaves behind.
  std::fill(table.begin(), table.end(), decode_entry{0});
  if (table_bits < 0 || table_bits > 30) return;

  int present = 0;
  int only_symbol = -1;
  for (int s = 0; s < kSymbolCount; ++s) {
    if (lengths[s] != 0) {
      ++present;
      only_symbol = s;
    }
  }
  if (present == 1) {
    // The one-symbol code's single codeword is "0"; decoding "1" the same way costs nothing and
    // spares the kernel a branch.
    std::fill(table.begin(), table.end(),
              make_decode_entry(static_cast<std::uint8_t>(only_symbol), 1));
    return;
  }
  const canonical_code canonical = make_canonical_code(lengths);
  for (int s = 0; s < kSymbolCount; ++s) {
    const int length = canonical.length[s];
    if (length == 0) continue;
    assert(length <= table_bits && "build_decode_table: table_bits shorter than a code");
    if (length > table_bits || length > kMaxCodeLength) continue;
    const int spare_bits = table_bits - length;
    const std::size_t first = std::size_t{canonical.code[s]} << spare_bits;
    const std::size_t span_size = std::size_t{1} << spare_bits;
    assert(first + span_size <= table.size() && "build_decode_table: lengths not validated");
    if (first + span_size > table.size()) continue;
    std::fill_n(table.begin() + static_cast<std::ptrdiff_t>(first), span_size,
                make_decode_entry(static_cast<std::uint8_t>(s), static_cast<unsigned>(length)));
  }
}

inline double entropy_bits_per_symbol(const symbol_histogram& freq) {
  double total = 0;
  for (const std::uint64_t count : freq) total += static_cast<double>(count);
  if (total == 0) return 0;
  double bits = 0;
  for (const std::uint64_t count : freq) {
    if (count == 0) continue;
    const double p = static_cast<double>(count) / total;
    bits -= p * std::log2(p);
  }
  return bits;
}

namespace detail {

// Two-queue Huffman: with the leaves sorted, the merged nodes come out in non-decreasing weight
// order, so the two lightest nodes are always at the front of one of the two queues. The total
// code length equals the sum of the weights of all merged (internal) nodes. `leaves`: n >= 2
// weights in non-decreasing order, and one more readable entry (leaves[n], any value).
//
// Which queue a node comes from is data and mispredicted about half the time as a branch, so the
// choice is computed: both fronts are loaded and one is selected.
inline std::uint64_t huffman_bits_of_sorted(const std::uint64_t* leaves, int n) {
  std::array<std::uint64_t, kSymbolCount> merged{};
  int next_leaf = 0, merged_front = 0, merged_back = 0;
  auto pop_lightest = [&]() {
    const std::uint64_t leaf = leaves[next_leaf];
    const std::uint64_t node = merged[merged_front];
    const bool take_leaf = (next_leaf < n) & ((merged_front == merged_back) | (leaf <= node));
    next_leaf += take_leaf;
    merged_front += !take_leaf;
    return take_leaf ? leaf : node;
  };
  std::uint64_t bits = 0;
  for (int merges = 0; merges < n - 1; ++merges) {
    const std::uint64_t a = pop_lightest();
    const std::uint64_t b = pop_lightest();
    // Saturated weights only arise when the true total exceeds UINT64_MAX, and then so does the
    // answer: the root alone contributes the total.
    const std::uint64_t node = saturating_add(a, b);
    merged[merged_back++] = node;
    bits = saturating_add(bits, node);
  }
  return bits;
}

}  // namespace detail

// Only the weights matter (ties may go either way: the total is the same), so plain integers are
// sorted: the encoder's segment planning calls this for every candidate run, and with the 100-250
// symbols of FP8 and FP16 codes the sort of (weight, symbol) records was most of its time.
inline std::uint64_t unlimited_huffman_bits(const symbol_histogram& freq) {
  std::array<std::uint64_t, kSymbolCount + 1> leaves{};
  int n = 0;
  for (const std::uint64_t weight : freq) {
    if (weight != 0) leaves[n++] = weight;
  }
  if (n == 0) return 0;
  if (n == 1) return leaves[0];  // one bit per symbol, as build_code_lengths assigns
  std::sort(leaves.begin(), leaves.begin() + n);
  return detail::huffman_bits_of_sorted(leaves.data(), n);
}

inline void pack_code_lengths(const code_lengths& lengths,
                              std::span<std::uint8_t, kPackedCodeLengthsBytes> packed) {
  for (int i = 0; i < kPackedCodeLengthsBytes; ++i) {
    const std::uint8_t even = lengths[2 * i];
    const std::uint8_t odd = lengths[2 * i + 1];
    assert(even <= kMaxCodeLength && odd <= kMaxCodeLength && "pack_code_lengths: length > 15");
    packed[i] = static_cast<std::uint8_t>((even & 0x0F) | ((odd & 0x0F) << 4));
  }
}

inline code_lengths unpack_code_lengths(
    std::span<const std::uint8_t, kPackedCodeLengthsBytes> packed) {
  code_lengths lengths{};
  for (int i = 0; i < kPackedCodeLengthsBytes; ++i) {
    lengths[2 * i] = packed[i] & 0x0F;
    lengths[2 * i + 1] = packed[i] >> 4;
  }
  return lengths;
}

}  // namespace floatzip
