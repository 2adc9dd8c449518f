// floatzip: the length-limited canonical Huffman code of one bundle's exponent bytes.
//
// One code per bundle covers the 256 possible exponent bytes ("symbols"). The encoder builds
// optimal code lengths under a length limit from the exponent histogram; the bundle header stores
// only the 256 lengths (one nibble each); the decoder rebuilds the same canonical codes and a flat
// decode table from them. Lengths read from a file are untrusted and go through
// `validate_code_lengths` before any code or table is built from them.
//
// Definitions live in detail/huffman.inl, included at the bottom.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "floatzip/config.hpp"
#include "floatzip/error.hpp"

namespace floatzip {

// Hard limit of the format. The bundle header stores each length in a nibble with 0 meaning
// "symbol absent", so 15 is the longest length it can express. A flat decode table indexed by
// 15 bits has 32 Ki entries; encoders for the GPU path choose a smaller limit (e.g. 12) so the
// table fits in shared memory.
inline constexpr int kMaxCodeLength = 15;
inline constexpr int kSymbolCount = 256;             // one symbol per exponent byte value
inline constexpr int kPackedCodeLengthsBytes = 128;  // two 4-bit lengths per byte

using code_lengths = std::array<std::uint8_t, kSymbolCount>;  // per symbol; 0 = symbol absent
using symbol_histogram = std::array<std::uint64_t, kSymbolCount>;

// Optimal length-limited code lengths (package-merge): no prefix code whose lengths are all
// <= max_length has a smaller total `encoded_bits(freq, lengths)`. Ties between equal
// frequencies are broken by symbol value, so the result is deterministic.
//   * max_length must lie in [1, kMaxCodeLength], else errc::invalid_argument.
//   * Symbols with freq 0 get length 0.
//   * No symbol present: all lengths 0.
//   * Exactly one symbol present: it gets length 1 (the one incomplete code the format allows).
//   * More present symbols than 2^max_length: errc::invalid_argument.
//   * Total frequency above UINT64_MAX: errc::too_large.
result<code_lengths> build_code_lengths(const symbol_histogram& freq, int max_length);

// Total encoded size sum(freq[s] * lengths[s]) in bits. Computed without overflow; a result that
// does not fit saturates at UINT64_MAX (it would take more than 2^60 symbols to get there).
std::uint64_t encoded_bits(const symbol_histogram& freq, const code_lengths& lengths);

// Checks untrusted lengths before anything is built from them. Accepts exactly:
//   * a complete code (Kraft sum == 1) with every length <= max_length;
//   * the one-symbol code: exactly one nonzero length, equal to 1;
//   * no symbol at all, only when allow_empty.
// Anything else is errc::bad_data with a message naming the symbol or the Kraft sum; a max_length
// outside [1, kMaxCodeLength] is errc::invalid_argument.
error validate_code_lengths(const code_lengths& lengths, int max_length, bool allow_empty);

// Canonical MSB-first codes: symbols ordered by (length, symbol value) receive consecutive code
// values, each code the previous one plus one, shifted left when the length grows (as in
// DEFLATE). code[s] holds symbol s's code right-aligned in length[s] bits; absent symbols have
// length 0 and code 0. max_length is the longest length present (0 for the empty code).
struct canonical_code {
  code_lengths length{};
  std::array<std::uint16_t, kSymbolCount> code{};
  int max_length = 0;
};

// Precondition: `lengths` passed validate_code_lengths. The one-symbol code gets code 0.
canonical_code make_canonical_code(const code_lengths& lengths);

// One entry of the flat decode table, indexed by the next `table_bits` bits of the stream read
// MSB first:
//
//   bit  15 14 13 | 12 11 10  9  8 | 7  6  5  4  3  2  1  0
//        0  0  0  |  code length   |  symbol (exponent byte)
//
//   bits 0-7   symbol decoded by the codeword at the front of the index
//   bits 8-12  length of that codeword in bits, 1..kMaxCodeLength; the decoder consumes this many
//   bits 13-15 always zero
//
// A length of 0 appears only in the table of the empty code and means "no codeword here": a
// decoder that meets it must report corruption.
using decode_entry = std::uint16_t;

FLOATZIP_HD constexpr decode_entry make_decode_entry(std::uint8_t symbol, unsigned length) {
  return static_cast<decode_entry>(symbol | ((length & 0x1Fu) << 8));
}
FLOATZIP_HD constexpr std::uint8_t entry_symbol(decode_entry e) {
  return static_cast<std::uint8_t>(e & 0xFFu);
}
FLOATZIP_HD constexpr unsigned entry_length(decode_entry e) { return (e >> 8) & 0x1Fu; }

// Fills table[0 .. 2^table_bits). A code of length l fills the 2^(table_bits - l) consecutive
// entries whose index starts with it. For the one-symbol code every entry decodes to that symbol
// with length 1, so a stream of zero bits decodes as expected and a set bit is not an error the
// table can see (the encoder only writes zero bits). For the empty code every entry is 0.
// Preconditions: `lengths` passed validate_code_lengths; every length <= table_bits <= 30;
// table.size() == 2^table_bits. Violations are caught by assert in debug builds; release builds
// never write outside `table` but leave its contents unspecified.
void build_decode_table(const code_lengths& lengths, int table_bits, std::span<decode_entry> table);

// Shannon entropy of the histogram in bits per symbol (0 for an empty or one-symbol histogram).
double entropy_bits_per_symbol(const symbol_histogram& freq);

// Total bits of a plain (unlimited-length) Huffman code over the histogram: the ideal that the
// length limit is measured against. One present symbol counts 1 bit per occurrence, matching
// build_code_lengths; none counts 0. Saturates at UINT64_MAX like encoded_bits.
std::uint64_t unlimited_huffman_bits(const symbol_histogram& freq);

// Serialized form in the bundle header: 128 bytes, byte i holds symbol 2i in its low nibble and
// symbol 2i+1 in its high nibble, each nibble the length with 0 meaning absent.
// Precondition of pack: every length <= kMaxCodeLength (true for build_code_lengths results and
// for anything validate_code_lengths accepted).
void pack_code_lengths(const code_lengths& lengths,
                       std::span<std::uint8_t, kPackedCodeLengthsBytes> packed);
// Never fails: every nibble is a length in 0..15. The result is untrusted until validated.
code_lengths unpack_code_lengths(std::span<const std::uint8_t, kPackedCodeLengthsBytes> packed);

}  // namespace floatzip

#include "floatzip/detail/huffman.inl"
