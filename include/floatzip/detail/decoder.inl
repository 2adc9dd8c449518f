// floatzip internals: the CPU bundle decoder.
//
// Work unit: a sync group (its stream range, value range and output position are all in the
// metadata). One thread decodes up to kDecodeLanes groups at once, interleaved: a single Huffman
// stream is a chain of dependent table look-ups (load, then shift by the length it returns), so
// one stream leaves most of a core idle; independent streams fill it.
//
// The CPU table decodes several codewords per look-up (a "multi-symbol table"): BF16 exponent
// codes average under 3 bits, so the next max_code_length bits (12 by default) usually hold four
// whole codewords, and the chain of dependent look-ups shrinks to about a quarter. Short codes
// get 64-bit entries of up to four symbols, the others (FP8, FP16) 32-bit entries of up to three,
// with a 13-bit index where the limit is 12 (see multi_entry). (The GPU kernel has tables of its
// own, in kernel_logic.hpp.)
//
// Exponents (symbols, in general) are decoded into a small per-lane byte buffer, then merged with
// the raw planes (the sign/mantissa bytes, for BF16) by a separate loop that the compiler
// vectorises (and that prefetches the next region). FP8 has no raw plane: its symbols are the
// values and go straight into the output instead. Only that merge depends on the value format
// (value_format.hpp): it is a template over the format, and so are the functions that call it;
// the Huffman loops are shared by every format. The format becomes a template argument once, in
// decompress (visit_format).
// Groups left over when fewer than kDecodeLanes remain (all of a small bundle's) are each cut
// at chunk starts into pieces that take the lanes instead: see "a lone sync group" below.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <string>
#include <type_traits>

#include "floatzip/bf16.hpp"
#include "floatzip/detail/parallel.hpp"

namespace floatzip {
namespace detail {

// Note: the Huffman table accessors (floatzip::entry_length, ...) are called qualified: a
// same-named helper that another part of detail:: declares before this header is included would
// otherwise hide them.

inline constexpr int kDecodeLanes = 4;
inline constexpr std::size_t kDecodeBatch = 2048;    // exponents per lane between merges
inline constexpr std::size_t kDecodeBatchSlack = 8;  // 4-byte stores may write 3 bytes past
inline constexpr std::size_t kMultiStoreSpill = 3;   // those 3 bytes

// The CPU multi-symbol tables, indexed by the next max_code_length bits of the stream. An entry
// holds the codewords at the front of its index, in turn, up to three (multi_entry) or four
// (wide_entry); every codeword after the first is taken only if it lies wholly within the index.
//
//   multi_entry (32 bits)                     wide_entry (64 bits)
//   bits  0-23  symbols, first in bits 0-7    bits  0-31  symbols, first in bits 0-7
//   bits 24-27  bits consumed by them         bits 56-59  bits consumed by them
//   bits 30-31  symbol count, 1..3            bits 62-63  symbol count - 1, 0..3
//   (all other bits zero, symbols beyond the count too)
//
// Why this layout: the fast loop stores an entry's low four bytes unconditionally and advances
// its output by the count field, one shift (for the wide entry, the one symbol every look-up
// makes is in the store's displacement instead); and `entry >> 24` (`>> 56`) can drive the window
// shift directly, since x86 and AArch64 shifts use only the low 6 bits of the count, where the
// symbol count is absent.
//
// Which: BF16 exponent codes average under 3 bits, so 12 bits often hold four whole codewords
// (3.75 per look-up on the synthetic checkpoint's codes, 2.95 with at most three), but the wide
// table is twice the size (32 KiB at 12 bits, against a 48 KiB L1 here), which made each look-up
// dearer: FP8 and FP16 codes (4-7 bits a codeword, 1.3-2.4 per look-up) decoded 5-7 % slower
// with it. use_wide_table picks it for short codes only.
using multi_entry = std::uint32_t;
using wide_entry = std::uint64_t;

template <class Entry>
struct entry_fields {
  static constexpr bool kWide = sizeof(Entry) == 8;
  static constexpr unsigned kUsedShift = kWide ? 56 : 24;
  static constexpr unsigned kCountShift = kUsedShift + 6;
  static constexpr unsigned kMaxSymbols = kWide ? 4 : 3;
  static constexpr unsigned kCountBias = kWide ? 1 : 0;  // count = field + kCountBias
};

template <class Entry>
constexpr unsigned multi_count(Entry e) {
  return static_cast<unsigned>(e >> entry_fields<Entry>::kCountShift) +
         entry_fields<Entry>::kCountBias;
}

// The wide table is instantiated for these index widths only (code limits of 11-13 bits; the
// default is 12): shorter limits leave little room for four codewords (and each width is another
// set of decode loops to compile: with 8-13, a decoder test's translation unit took up to 20 %
// longer), longer ones make a table larger than L1.
inline constexpr int kWideMinBits = 11;
inline constexpr int kWideMaxBits = 13;

// Whether a code's wide table pays: when four codewords of its average length under the code's
// own distribution (a codeword of length l taken with probability 2^-l: the index bits are close
// to uniform) fit the index with a bit to spare, i.e. 4 * sum(l * 2^-l) <= table_bits + 1.
// BF16 exponent codes are at 2.6-3.1 bits; FP16 and FP8 codes at 4 bits and more.
inline bool use_wide_table(const code_lengths& lengths, int table_bits) {
  if (table_bits < kWideMinBits || table_bits > kWideMaxBits) return false;
  std::uint64_t weighted = 0;  // sum(l * 2^(kMaxCodeLength - l))
  for (const std::uint8_t length : lengths) {
    if (length != 0) weighted += std::uint64_t{length} << (kMaxCodeLength - length);
  }
  return 4 * weighted <= (static_cast<std::uint64_t>(table_bits) + 1) << kMaxCodeLength;
}

// The index width of a segment's tables: the code's length limit, or one bit more for a narrow
// table of a limit under 13 bits. The index may be wider than every codeword (the tables then
// hold each codeword at the front of all 2^(index - length) indexes that start with it), and a
// 13-bit narrow table (32 KiB) holds more of the long codewords of FP8 per look-up than a 12-bit
// one: FP8 E4M3 decoded 1.09x as fast, E5M2 1.03x, FP16 the same (floatzip_bench_codec, 4
// rounds); one bit more again (64 KiB, over L1) was 0.9-0.95x. The wide table gets no extra bit:
// it is 32 KiB at 12 bits already.
inline constexpr int kNarrowMaxIndexBits = 13;
constexpr int table_index_bits(int max_code_length, bool wide) {
  return wide || max_code_length >= kNarrowMaxIndexBits ? max_code_length : max_code_length + 1;
}

// Builds a multi-symbol table (Entry: multi_entry or wide_entry) from a validated code, and the
// single-symbol table `single` that the careful tail loop uses. `scratch` holds 2^table_bits
// words (3/4 of them are used).
//
// Entry i is the first codeword's head (symbol, length, count 1) plus what the remaining
// w = table_bits - length bits of i decode to: up to two or three more codewords that lie wholly
// within them. Every part is constant over a block of indexes (a codeword of length l fills
// 2^(width - l) entries of a table of `width` bits), so the table is built block by block, with no
// look-up per entry: the fourth codeword of a v-bit remainder is a table fourth[v] of 2^v words,
// filled block by block; the third plus fourth, third[v], is the third codeword's head added to
// slices of fourth[v - length3] (a plain fill without a fourth); the entry's blocks after a first
// codeword are the second codeword's head added to slices of third[w - length2]; and the entries
// after every later first codeword of the same length are those of the first such block with the
// head swapped (the fields never carry, so adding the heads' difference is exact). Every loop
// over entries is a fill or a sequential add that the compiler vectorises. (Looking the later
// codewords of every entry up in turn, as an earlier builder did, was 9.5 % of the perf samples
// of a BF16 decode of the synthetic checkpoint, 258 segments of one table each; block by block,
// 1.7 %.)
//
// third[] and fourth[] hold 32-bit words in scratch (third[v] at [2^v, 2^(v+1)), v <= bits - 2;
// fourth[v] at 2^(bits-1) + [2^v, 2^(v+1)), v <= bits - 3): symbols 3 and 4 in bits 0-15, the bits
// consumed in bits 16-19, the count they add in bits 22-23, so that widen() moves them to the
// entry's fields with two shifts.
template <class Entry>
void build_multi_table(const code_lengths& lengths, int table_bits, std::span<decode_entry> single,
                       std::span<Entry> multi, std::span<std::uint32_t> scratch) {
  using fields = entry_fields<Entry>;
  floatzip::build_decode_table(lengths, table_bits, single);
  const unsigned bits = static_cast<unsigned>(table_bits);
  const std::uint32_t size = std::uint32_t{1} << table_bits;
  // The codeword at the front of a v-bit string j, v <= bits: single[j << (bits - v)], taken when
  // 1 <= length <= v (a length of 0 wraps to the largest unsigned).
  auto fits = [](unsigned length, unsigned v) { return length - 1u < v; };
  auto widen = [](std::uint32_t word) -> Entry {
    return static_cast<Entry>(Entry{word & 0xFFFFu} << 16 | Entry{word >> 16}
                                                                << fields::kUsedShift);
  };
  // Fills `t` (2^v words) with the codeword at the front of each v-bit string, its symbol
  // shifted by `symbol_shift`, plus tails(v - length)[...] of the bits after it when `tails` is
  // given (a codeword that fills the string has none).
  auto fill_level = [&](std::uint32_t* t, unsigned v, unsigned symbol_shift, auto&& tails) {
    for (std::uint32_t j = 0; j < (std::uint32_t{1} << v);) {
      const decode_entry e = single[j << (bits - v)];
      const unsigned length = floatzip::entry_length(e);
      if (!fits(length, v)) {
        t[j++] = 0;
        continue;
      }
      const std::uint32_t word = std::uint32_t{floatzip::entry_symbol(e)} << symbol_shift |
                                 length << 16 | std::uint32_t{1} << 22;
      const std::uint32_t n = std::uint32_t{1} << (v - length);
      const std::uint32_t* const rest = v == length ? nullptr : tails(v - length);
      if (rest == nullptr) {
        std::fill_n(t + j, n, word);
      } else {
        for (std::uint32_t k = 0; k < n; ++k) t[j + k] = word + rest[k];
      }
      j += n;
    }
  };
  std::uint32_t fourths_ready = 0;  // bit v: fourth[v] is in scratch
  std::uint32_t thirds_ready = 0;
  auto no_tails = [](unsigned) -> const std::uint32_t* { return nullptr; };
  auto fourth = [&](unsigned v) -> const std::uint32_t* {
    std::uint32_t* const t = scratch.data() + (size >> 1) + (std::uint32_t{1} << v);
    if ((fourths_ready >> v & 1u) == 0) {
      fourths_ready |= std::uint32_t{1} << v;
      fill_level(t, v, 8, no_tails);
    }
    return t;
  };
  auto third = [&](unsigned v) -> const std::uint32_t* {
    std::uint32_t* const t = scratch.data() + (std::uint32_t{1} << v);
    if ((thirds_ready >> v & 1u) == 0) {
      thirds_ready |= std::uint32_t{1} << v;
      if constexpr (fields::kMaxSymbols == 4) {
        fill_level(t, v, 0, fourth);
      } else {
        fill_level(t, v, 0, no_tails);
      }
    }
    return t;
  };
  constexpr std::uint32_t kNone = ~std::uint32_t{0};
  std::uint32_t first_block[kMaxCodeLength + 1];  // by w: the first block built, or kNone
  std::fill_n(first_block, kMaxCodeLength + 1, kNone);
  Entry first_head[kMaxCodeLength + 1] = {};  // and its head
  constexpr Entry kOneMore = Entry{1} << fields::kCountShift;
  for (std::uint32_t i = 0; i < size;) {
    const decode_entry first = single[i];
    const unsigned length = floatzip::entry_length(first);
    const Entry head = Entry{floatzip::entry_symbol(first)} | Entry{length} << fields::kUsedShift |
                       Entry{1u - fields::kCountBias} << fields::kCountShift;
    // A length of 0 is the empty code's table (nothing decodes); a length of `bits` fills one
    // entry and leaves no room for more codewords.
    if (length == 0 || length >= bits) {
      multi[i++] = head;
      continue;
    }
    const unsigned w = bits - length;
    const std::uint32_t block = std::uint32_t{1} << w;
    Entry* const out = multi.data() + i;
    if (first_block[w] != kNone) {
      const Entry* const model = multi.data() + first_block[w];
      const Entry swap = head - first_head[w];
      for (std::uint32_t r = 0; r < block; ++r) out[r] = model[r] + swap;
      i += block;
      continue;
    }
    first_block[w] = i;
    first_head[w] = head;
    for (std::uint32_t r = 0; r < block;) {
      const decode_entry second = single[r << length];
      const unsigned length2 = floatzip::entry_length(second);
      if (!fits(length2, w)) {
        out[r++] = head;
        continue;
      }
      const Entry pair = head + (Entry{floatzip::entry_symbol(second)} << 8 |
                                 Entry{length2} << fields::kUsedShift | kOneMore);
      const unsigned v = w - length2;
      if (v == 0) {
        out[r++] = pair;
        continue;
      }
      const std::uint32_t* const tails = third(v);
      const std::uint32_t n = std::uint32_t{1} << v;
      for (std::uint32_t k = 0; k < n; ++k) out[r + k] = static_cast<Entry>(pair + widen(tails[k]));
      r += n;
    }
    i += block;
  }
}

struct decode_lane {
  std::uint64_t group;
  std::uint64_t bit;         // next codeword
  std::uint64_t end_bit;     // where the group's codewords must end
  std::uint64_t next_value;  // output index of the next value
  std::uint64_t end_value;
};

struct decode_context {
  const std::uint8_t* stream;
  const std::uint8_t* raw_bytes;   // one per value; null for formats without
  const std::uint8_t* low_halves;  // u16 little-endian per value; null but for fp32
  const void* table;               // multi_entry or wide_entry, as the fast loops' Shape says
  const decode_entry* single;      // the same code, one symbol per entry
  unsigned index_shift;            // 64 - max_code_length
  std::byte* out;                  // value i at out + i * value_bytes (any alignment)
};

inline error group_error(const decode_lane& lane, const char* what) {
  return {errc::bad_data, "bundle: exponent stream of group " + std::to_string(lane.group) + ": " +
                              what + " (at bit " + std::to_string(lane.bit) +
                              ", group ends at bit " + std::to_string(lane.end_bit) + ")"};
}

// Fast loop. Each round takes one 64-bit window per lane (>= 57 valid bits) and makes
// kLookups = floor(56 / bits) multi-symbol look-ups in it, producing 1 to 3 or 4 exponents each
// (at most kRoundValues) from at most kRoundBits bits. Lane l's exponents go to out[l] on.
// Rounds continue while every lane has bit[l] <= bit_limit[l] and out[l] <= out_limit[l]; the
// caller sets out_limit[l] at least kRoundValues before the end of the lane's room, and a
// bit_limit no later than the lane's end bit, so a lane loads at most 8 bytes from byte
// end_bit / 8, inside the stream's padding. bit and out are advanced in place.
//
// Everything the loop touches is copied into locals first: the exponent stores may alias
// anything, and would otherwise force the compiler to reload the table pointer after every
// store. The table's shape is a template parameter so that the index shift is an immediate.
//
// Shape: the index width (bits), plus kWideShape for the wide table.
inline constexpr int kWideShape = 16;

template <int Shape>
struct round_shape {
  static constexpr int kBits = Shape % kWideShape;
  using entry = std::conditional_t<(Shape >= kWideShape), wide_entry, multi_entry>;
  static constexpr int kLookups = 56 / kBits;
  static constexpr std::size_t kRoundValues = entry_fields<entry>::kMaxSymbols * kLookups;
  static constexpr std::uint64_t kRoundBits = std::uint64_t{kLookups} * kBits;
};

template <int Lanes, int Shape>
void decode_rounds_fast(const std::uint8_t* const stream, const void* const table_bytes,
                        std::uint64_t* bit_io, const std::uint64_t* bit_limit_in,
                        std::uint8_t** out_io, std::uint8_t* const* out_limit_in) {
  using shape = round_shape<Shape>;
  using entry = typename shape::entry;
  using fields = entry_fields<entry>;
  constexpr int kLookups = shape::kLookups;
  const entry* const table = static_cast<const entry*>(table_bytes);
  std::uint64_t bit[Lanes];
  std::uint64_t bit_limit[Lanes];
  std::uint8_t* out[Lanes];
  std::uint8_t* out_limit[Lanes];
  for (int l = 0; l < Lanes; ++l) {
    bit[l] = bit_io[l];
    bit_limit[l] = bit_limit_in[l];
    out[l] = out_io[l];
    out_limit[l] = out_limit_in[l];
  }
  auto round = [&] {
    for (int l = 0; l < Lanes; ++l) {
      std::uint64_t window = stream_window(stream, bit[l]);
      std::uint8_t* o = out[l];
      // `e >> kUsedShift` is the bit count plus 64 times the count field: the shift ignores
      // the multiple of 64, and the sum of those multiples is 64 times the sum of the count
      // fields, by which o advances. (Wide entries: look-up s stores at o + s, the first symbol
      // of each look-up being in the store's displacement, and o moves on by kLookups after.)
      std::uint64_t consumed_plus = 0;
      for (int s = 0; s < kLookups; ++s) {
        const entry e = table[window >> (64 - shape::kBits)];
        const auto low = static_cast<std::uint32_t>(e);
        std::memcpy(o + s * fields::kCountBias, &low, 4);
        o += e >> fields::kCountShift;
        const std::uint64_t shift = e >> fields::kUsedShift;
        window <<= shift & 63u;
        consumed_plus += shift;
      }
      bit[l] += consumed_plus - 64 * static_cast<std::uint64_t>(o - out[l]);
      out[l] = o + kLookups * fields::kCountBias;
    }
  };
  // Far from the limits, two rounds per check.
  constexpr std::uint64_t kRoundBits = shape::kRoundBits;
  constexpr auto kRoundValues = static_cast<std::ptrdiff_t>(shape::kRoundValues);
  for (;;) {
    bool two = true;
    for (int l = 0; l < Lanes; ++l) {
      two &= (bit[l] + kRoundBits <= bit_limit[l]) & (out_limit[l] - out[l] >= kRoundValues);
    }
    if (two) {
      round();
      round();
      continue;
    }
    bool one = true;
    for (int l = 0; l < Lanes; ++l) one &= (bit[l] <= bit_limit[l]) & (out[l] <= out_limit[l]);
    if (!one) break;
    round();
  }
  for (int l = 0; l < Lanes; ++l) {
    bit_io[l] = bit[l];
    out_io[l] = out[l];
  }
}

// The fast loop over whole groups: lane l fills exponents[l] from produced[l] towards target[l]
// (advancing produced). Returns false on overrun (a lane past its end bit), with the lanes as
// they were after the overrunning round.
// `spill` is how far past target[l] the 4-byte symbol stores may write: kMultiStoreSpill, or 0
// where nothing beyond the target may be touched (symbols decoded straight into the output).
template <int Lanes, int Shape>
bool decode_group_rounds(const decode_context& ctx, decode_lane* lanes,
                         std::uint8_t* const* exponents, const std::size_t* target,
                         std::size_t* produced, std::size_t spill) {
  constexpr std::size_t kRoundValues = round_shape<Shape>::kRoundValues;
  const std::size_t reserve = kRoundValues + kMultiStoreSpill - spill;
  std::uint64_t bit[Lanes];
  std::uint64_t end_bit[Lanes];
  std::uint8_t* out[Lanes];
  std::uint8_t* out_limit[Lanes];
  for (int l = 0; l < Lanes; ++l) {
    if (target[l] - produced[l] < reserve) return true;
    bit[l] = lanes[l].bit;
    end_bit[l] = lanes[l].end_bit;
    out[l] = exponents[l] + produced[l];
    out_limit[l] = exponents[l] + (target[l] - reserve);
  }
  decode_rounds_fast<Lanes, Shape>(ctx.stream, ctx.table, bit, end_bit, out, out_limit);
  bool overrun = false;
  for (int l = 0; l < Lanes; ++l) {
    lanes[l].bit = bit[l];
    produced[l] = static_cast<std::size_t>(out[l] - exponents[l]);
    overrun |= bit[l] > end_bit[l];
  }
  return !overrun;
}

// Careful loop: one codeword at a time with every bound checked.
inline error decode_tail(const decode_context& ctx, decode_lane& lane, std::uint8_t* exponents,
                         std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    if (lane.bit >= lane.end_bit) return group_error(lane, "codewords run out before the values");
    const decode_entry e = ctx.single[stream_window(ctx.stream, lane.bit) >> ctx.index_shift];
    exponents[i] = floatzip::entry_symbol(e);
    lane.bit += floatzip::entry_length(e);
  }
  return {};
}

// Formats with a fast merge for all but rare symbols (value_format.hpp: bf16_in_fp16).
template <class Traits>
concept merges_rare_symbols = requires(std::uint8_t s) {
  Traits::rare_merge(s);
  Traits::rare_merge_bits(s);
  Traits::common_merge_low(s, s);
  Traits::common_merge_high(s, s);
};

// Merges `count` values (16-bit, no low half) through the format's common merge in one loop the
// compiler vectorises per run of 64, noting which symbols are rare; where one is, merges those
// again exactly. merge_values calls it per 64 values: on trained weights a rare symbol (an FP16
// subnormal, for bf16_in_fp16) is one value in a few hundred to a few thousand. (Runs of 16 with
// a test each were no faster in a loop microbenchmark at 0.03 % and 0.25 % rare symbols: the
// test's horizontal OR per 16 values costs about what the exact passes it saves do.) The two
// bytes of each value are computed and stored apart, so that the loop runs in byte lanes and
// interleaves them only for the store. The loop also stores each symbol's rare flag, and a run
// that holds a rare symbol gathers the flags into a 64-bit mask (8 per word, no branch) and
// merges only the values of its set bits: a branch per value of such a run mispredicted about
// once or twice per run, and on the synthetic checkpoint (a quarter of a percent subnormal) 15 %
// of runs hold one.
template <class Traits>
void merge_common_run(const std::uint8_t* symbols, const std::uint8_t* raw, std::size_t count,
                      std::byte* out) {
  using value_type = typename Traits::value_type;
  static_assert(!Traits::has_low_half && sizeof(value_type) == 2);
  constexpr std::size_t kRun = 64;
  for (std::size_t first = 0; first < count; first += kRun) {
    const std::size_t n = std::min(kRun, count - first);
    const std::uint8_t* const s = symbols + first;
    const std::uint8_t* const r = raw + first;
    auto* const out_bytes = reinterpret_cast<std::uint8_t*>(out) + 2 * first;
    alignas(8) std::uint8_t flags[kRun];
    // A byte flag, not a bool: GCC 12 vectorises no bool OR-reduction (nor one wider than the
    // loop's data).
    std::uint8_t rare = 0;
    for (std::size_t j = 0; j < n; ++j) {
      out_bytes[2 * j] = Traits::common_merge_low(s[j], r[j]);
      out_bytes[2 * j + 1] = Traits::common_merge_high(s[j], r[j]);
      flags[j] = Traits::rare_merge_bits(s[j]);
      rare |= flags[j];
    }
    if (rare == 0) continue;
    std::uint64_t hits = 0;  // bit j: s[j] is rare
    std::size_t w = 0;
    for (; w + 8 <= n; w += 8) {
      std::uint64_t word;
      std::memcpy(&word, flags + w, 8);
      hits |= std::uint64_t{nonzero_byte_bits(word)} << w;
    }
    for (; w < n; ++w) hits |= std::uint64_t{flags[w] != 0} << w;
    do {
      const auto j = static_cast<std::size_t>(std::countr_zero(hits));
      const value_type v = Traits::merge(s[j], r[j], 0);
      std::memcpy(out_bytes + 2 * j, &v, sizeof(value_type));
      hits &= hits - 1;
    } while (hits != 0);
  }
}

// Merges `count` symbols with their raw planes into the output from value `first` on, and
// meanwhile prefetches the raw planes and output lines of the `ahead_count` values from
// `ahead_first` on: the region that is merged next. Each lane's regions are touched in bursts of
// one batch (2 KiB of raw bytes read, 4 KiB of BF16 written) that jump between lanes, too short
// for the hardware prefetchers to follow, so without this every new line misses.
template <value_format F>
void merge_values(const decode_context& ctx, std::uint64_t first, const std::uint8_t* symbols,
                  std::size_t count, std::uint64_t ahead_first, std::size_t ahead_count) {
  using traits = format_traits<F>;
  using value_type = typename traits::value_type;
  constexpr std::size_t kValueBytes = sizeof(value_type);
  std::byte* const out = ctx.out + first * kValueBytes;
  const std::byte* const out_ahead = ctx.out + ahead_first * kValueBytes;
  if constexpr (!traits::has_raw_byte) {
    // FP8: the symbols are the values.
    std::memcpy(out, symbols, count);
    for (std::size_t i = 0; i < ahead_count; i += 64) __builtin_prefetch(out_ahead + i, 1);
    return;
  } else {
    const std::uint8_t* const raw = ctx.raw_bytes + first;
    const std::uint8_t* const raw_ahead = ctx.raw_bytes + ahead_first;
    const std::uint8_t* low = nullptr;
    const std::uint8_t* low_ahead = nullptr;
    if constexpr (traits::has_low_half) {
      low = ctx.low_halves + 2 * first;
      low_ahead = ctx.low_halves + 2 * ahead_first;
    }
    auto merge_one = [&](std::size_t j) __attribute__((always_inline)) {
      std::uint16_t low_half = 0;
      if constexpr (traits::has_low_half) std::memcpy(&low_half, low + 2 * j, 2);
      const value_type v = traits::merge(symbols[j], raw[j], low_half);
      std::memcpy(out + j * kValueBytes, &v, kValueBytes);
    };
    constexpr std::size_t kStep = 64;  // values per cache line of raw bytes
    std::size_t i = 0;
    for (; i + kStep <= count; i += kStep) {
      if (i < ahead_count) {
        __builtin_prefetch(raw_ahead + i);
        if constexpr (traits::has_low_half) {
          __builtin_prefetch(low_ahead + 2 * i);
          if (i + kStep / 2 < ahead_count) __builtin_prefetch(low_ahead + 2 * i + 64);
        }
        for (std::size_t line = 0; line < kStep * kValueBytes; line += 64) {
          if (i + line / kValueBytes < ahead_count) {
            __builtin_prefetch(out_ahead + i * kValueBytes + line, 1);
          }
        }
      }
      if constexpr (merges_rare_symbols<traits>) {
        merge_common_run<traits>(symbols + i, raw + i, kStep, out + i * kValueBytes);
      } else {
        for (std::size_t j = i; j < i + kStep; ++j) merge_one(j);
      }
    }
    if constexpr (merges_rare_symbols<traits>) {
      merge_common_run<traits>(symbols + i, raw + i, count - i, out + i * kValueBytes);
    } else {
      for (; i < count; ++i) merge_one(i);
    }
  }
}

// Decodes one batch (up to kDecodeBatch values) of every lane.
template <value_format F, int Lanes, int Shape>
error decode_batch(const decode_context& ctx, decode_lane* lanes,
                   std::uint8_t (*exponents)[kDecodeBatch + kDecodeBatchSlack]) {
  // FP8: the symbols are the values, so they are decoded straight into the output (no lane
  // buffer, no copy: 8-10 % faster), with no store past a lane's batch (the next group's values,
  // or the end of the output, lie there). A bigger batch was no faster (16384: same speed).
  constexpr bool kDirect = !format_traits<F>::has_raw_byte;
  std::uint8_t* dest[Lanes];
  std::size_t target[Lanes];
  std::size_t produced[Lanes] = {};
  for (int l = 0; l < Lanes; ++l) {
    if constexpr (kDirect) {
      dest[l] = reinterpret_cast<std::uint8_t*>(ctx.out) + lanes[l].next_value;
    } else {
      dest[l] = exponents[l];
    }
    target[l] = static_cast<std::size_t>(
        std::min<std::uint64_t>(kDecodeBatch, lanes[l].end_value - lanes[l].next_value));
  }
  constexpr std::size_t kSpill = kDirect ? 0 : kMultiStoreSpill;
  bool sound = decode_group_rounds<Lanes, Shape>(ctx, lanes, dest, target, produced, kSpill);
  if constexpr (Lanes > 1) {
    // The joint rounds stop when the first lane nears its target; the others lag behind it by
    // a random walk of tens of exponents, too many for the careful loop.
    for (int l = 0; sound && l < Lanes; ++l) {
      sound =
          decode_group_rounds<1, Shape>(ctx, lanes + l, dest + l, target + l, produced + l, kSpill);
    }
  }
  if (!sound) {
    for (int l = 0; l < Lanes; ++l) {
      if (lanes[l].bit > lanes[l].end_bit) {
        return group_error(lanes[l], "codewords run past the group's end");
      }
    }
  }
  for (int l = 0; l < Lanes; ++l) {
    if (error e = decode_tail(ctx, lanes[l], dest[l] + produced[l], target[l] - produced[l])) {
      return e;
    }
  }
  if constexpr (kDirect) {
    for (int l = 0; l < Lanes; ++l) lanes[l].next_value += target[l];
    return {};
  }
  for (int l = 0; l < Lanes; ++l) {
    // Merged next: the next lane's batch, or after the last lane, the first lane's next batch
    // (its next_value has already moved on).
    const decode_lane& ahead = lanes[(l + 1) % Lanes];
    const std::size_t ahead_count = static_cast<std::size_t>(
        std::min<std::uint64_t>(kDecodeBatch, ahead.end_value - ahead.next_value));
    merge_values<F>(ctx, lanes[l].next_value, exponents[l], target[l], ahead.next_value,
                    ahead_count);
    lanes[l].next_value += target[l];
  }
  return {};
}

template <value_format F, int Shape>
error decode_lanes(const decode_context& ctx, decode_lane* lanes, int lane_count) {
  alignas(64) std::uint8_t exponents[kDecodeLanes][kDecodeBatch + kDecodeBatchSlack];
  while (lane_count > 0) {
    error e;
    switch (lane_count) {
      case 4: e = decode_batch<F, 4, Shape>(ctx, lanes, exponents); break;
      case 3: e = decode_batch<F, 3, Shape>(ctx, lanes, exponents); break;
      case 2: e = decode_batch<F, 2, Shape>(ctx, lanes, exponents); break;
      default: e = decode_batch<F, 1, Shape>(ctx, lanes, exponents); break;
    }
    if (e) return e;
    // Retire finished lanes, checking that each consumed its codewords exactly.
    int kept = 0;
    for (int l = 0; l < lane_count; ++l) {
      if (lanes[l].next_value < lanes[l].end_value) {
        lanes[kept++] = lanes[l];
      } else if (lanes[l].bit != lanes[l].end_bit) {
        return group_error(lanes[l], "codewords do not end where the next group begins");
      }
    }
    lane_count = kept;
  }
  return {};
}

// ---- a lone sync group, cut between lanes ------------------------------------------------------
//
// A bundle with fewer groups than lanes (a small transformer block is one group) would decode on
// one lane, a single chain of dependent look-ups. Instead its group is cut at chunk starts into
// up to kDecodeLanes pieces, whose first codewords the chunk gaps give, decoded side by side.
// How many values each piece holds is not stored, so only the lead piece (the first) is merged
// into the output as it goes; the others decode into buffers of kPieceCapacity exponents and are
// placed once the lead's count is known. The cut is chosen so that a buffer holds its piece
// whatever the codewords (each takes at least the code's shortest length). Every piece must end
// exactly where the next begins and the counts must add up to the group's values: checks at
// least as strict as decoding the group whole.
inline constexpr std::size_t kPieceCapacity = 16384;

struct group_split {
  int pieces = 0;  // 2..kDecodeLanes, or 0 when the group is not cut
  std::uint64_t begin_bit[kDecodeLanes] = {};
  std::uint64_t end_bit[kDecodeLanes] = {};
};

// shortest_length: the code's shortest codeword (0 for the empty code, which is never cut).
inline group_split plan_group_split(const bundle_view& bundle, std::uint64_t g,
                                    unsigned shortest_length) {
  group_split split;
  const std::uint64_t chunks_per_group = bundle.header().chunks_per_group;
  const std::uint64_t chunk_bits = bundle.header().chunk_bits();
  const std::uint64_t first_chunk = g * chunks_per_group;
  const std::uint64_t chunks =
      std::min<std::uint64_t>(chunks_per_group, bundle.chunk_count() - first_chunk);
  if (chunks < 2 || shortest_length == 0) return split;
  const std::uint64_t helpers = std::min<std::uint64_t>(kDecodeLanes - 1, chunks - 1);
  // A helper piece of h chunks spans fewer than h * chunk_bits + max_code_length bits.
  const std::uint64_t fitting_chunks =
      (kPieceCapacity * shortest_length - static_cast<std::uint64_t>(bundle.max_code_length())) /
      chunk_bits;
  const std::uint64_t helper_chunks = std::min(chunks / (helpers + 1), fitting_chunks);
  if (helper_chunks == 0) return split;
  const std::uint64_t lead_chunks = chunks - helpers * helper_chunks;
  split.pieces = static_cast<int>(helpers) + 1;
  split.begin_bit[0] = bundle.group_begin_bit(g);
  for (int p = 1; p < split.pieces; ++p) {
    split.begin_bit[p] = bundle.chunk_start_bit(first_chunk + lead_chunks +
                                                static_cast<std::uint64_t>(p - 1) * helper_chunks);
    split.end_bit[p - 1] = split.begin_bit[p];
  }
  split.end_bit[split.pieces - 1] = bundle.group_end_bit(g);
  return split;
}

inline error piece_error(const decode_lane& group, std::uint64_t begin_bit, std::uint64_t end_bit,
                         std::uint64_t bit, const char* what) {
  return {errc::bad_data, "bundle: exponent stream of group " + std::to_string(group.group) +
                              ", piece from bit " + std::to_string(begin_bit) + " to " +
                              std::to_string(end_bit) + ": " + what + " (at bit " +
                              std::to_string(bit) + ")"};
}

template <value_format F, int Shape>
error decode_split_group(const decode_context& ctx, const decode_lane& group,
                         const group_split& split) {
  constexpr std::size_t kRoundValues = round_shape<Shape>::kRoundValues;
  constexpr std::uint64_t kRoundBits = round_shape<Shape>::kRoundBits;
  alignas(64) std::uint8_t lead_batch[kDecodeBatch + kDecodeBatchSlack];
  alignas(64) std::uint8_t helper_exponents[kDecodeLanes - 1][kPieceCapacity + kDecodeBatchSlack];

  const int pieces = split.pieces;
  const std::uint64_t group_values = group.end_value - group.next_value;
  std::uint64_t lead_merged = 0;  // the lead piece's values already in the output
  std::uint64_t bit[kDecodeLanes];
  std::uint8_t* begin[kDecodeLanes];
  std::uint8_t* out[kDecodeLanes];
  std::uint8_t* room_end[kDecodeLanes];  // the lead's: its batch, cut at the group's values
  bool done[kDecodeLanes] = {};
  for (int p = 0; p < pieces; ++p) {
    bit[p] = split.begin_bit[p];
    begin[p] = p == 0 ? lead_batch : helper_exponents[p - 1];
    out[p] = begin[p];
    room_end[p] =
        begin[p] + (p == 0 ? std::min<std::uint64_t>(kDecodeBatch, group_values) : kPieceCapacity);
  }
  auto failure = [&](int p, const char* what) {
    return piece_error(group, split.begin_bit[p], split.end_bit[p], bit[p], what);
  };
  auto flush_lead = [&] {
    const auto n = static_cast<std::size_t>(out[0] - begin[0]);
    merge_values<F>(ctx, group.next_value + lead_merged, begin[0], n, 0, 0);
    lead_merged += n;
    out[0] = begin[0];
    room_end[0] = begin[0] + std::min<std::uint64_t>(kDecodeBatch, group_values - lead_merged);
  };
  // Careful loop: one codeword at a time up to the piece's end bit.
  auto finish = [&](int p) -> error {
    while (bit[p] < split.end_bit[p]) {
      if (out[p] == room_end[p]) {
        if (p != 0) return failure(p, "more codewords than the piece can hold");
        flush_lead();
        if (out[0] == room_end[0]) return failure(p, "more codewords than the group has values");
      }
      const decode_entry e = ctx.single[stream_window(ctx.stream, bit[p]) >> ctx.index_shift];
      *out[p]++ = floatzip::entry_symbol(e);
      bit[p] += floatzip::entry_length(e);
    }
    if (bit[p] != split.end_bit[p]) {
      return failure(p, "a codeword runs past the start of the next piece");
    }
    if (p == 0) flush_lead();
    done[p] = true;
    return {};
  };

  for (;;) {
    // The pieces that can take a full round; the others are flushed or finished first.
    int active[kDecodeLanes];
    int n = 0;
    for (int p = 0; p < pieces; ++p) {
      if (done[p]) continue;
      if (p == 0 && static_cast<std::size_t>(room_end[0] - out[0]) < kRoundValues) flush_lead();
      if (split.end_bit[p] - bit[p] < kRoundBits ||
          static_cast<std::size_t>(room_end[p] - out[p]) < kRoundValues) {
        if (error e = finish(p)) return e;
        continue;
      }
      active[n++] = p;
    }
    if (n == 0) break;
    std::uint64_t lane_bit[kDecodeLanes];
    std::uint64_t lane_bit_limit[kDecodeLanes];
    std::uint8_t* lane_out[kDecodeLanes];
    std::uint8_t* lane_out_limit[kDecodeLanes];
    for (int i = 0; i < n; ++i) {
      const int p = active[i];
      lane_bit[i] = bit[p];
      lane_bit_limit[i] = split.end_bit[p] - kRoundBits;
      lane_out[i] = out[p];
      lane_out_limit[i] = room_end[p] - kRoundValues;
    }
    switch (n) {
      case 4:
        decode_rounds_fast<4, Shape>(ctx.stream, ctx.table, lane_bit, lane_bit_limit, lane_out,
                                     lane_out_limit);
        break;
      case 3:
        decode_rounds_fast<3, Shape>(ctx.stream, ctx.table, lane_bit, lane_bit_limit, lane_out,
                                     lane_out_limit);
        break;
      case 2:
        decode_rounds_fast<2, Shape>(ctx.stream, ctx.table, lane_bit, lane_bit_limit, lane_out,
                                     lane_out_limit);
        break;
      default:
        decode_rounds_fast<1, Shape>(ctx.stream, ctx.table, lane_bit, lane_bit_limit, lane_out,
                                     lane_out_limit);
        break;
    }
    for (int i = 0; i < n; ++i) {
      bit[active[i]] = lane_bit[i];
      out[active[i]] = lane_out[i];
    }
  }

  std::uint64_t total = lead_merged;
  for (int p = 1; p < pieces; ++p) total += static_cast<std::uint64_t>(out[p] - begin[p]);
  if (total != group_values) {
    decode_lane at = group;
    at.bit = group.end_bit;
    return group_error(at, ("the pieces hold " + std::to_string(total) + " codewords, not " +
                            std::to_string(group_values))
                               .c_str());
  }
  std::uint64_t position = group.next_value + lead_merged;
  for (int p = 1; p < pieces; ++p) {
    const auto count = static_cast<std::size_t>(out[p] - begin[p]);
    merge_values<F>(ctx, position, begin[p], count, 0, 0);
    position += count;
  }
  return {};
}

// Calls fn.template operator()<S>() with S == table_bits (+ kWideShape when `wide`), a
// compile-time constant. wide: only for kWideMinBits <= table_bits <= kWideMaxBits.
template <class Fn>
auto dispatch_table_shape(int table_bits, bool wide, Fn&& fn) {
  if (wide) {
    static_assert(kWideMinBits == 11 && kWideMaxBits == 13);
    switch (table_bits) {
      case 11: return fn.template operator()<kWideShape + 11>();
      case 12: return fn.template operator()<kWideShape + 12>();
      default: return fn.template operator()<kWideShape + 13>();
    }
  }
  switch (table_bits) {
    case 1: return fn.template operator()<1>();
    case 2: return fn.template operator()<2>();
    case 3: return fn.template operator()<3>();
    case 4: return fn.template operator()<4>();
    case 5: return fn.template operator()<5>();
    case 6: return fn.template operator()<6>();
    case 7: return fn.template operator()<7>();
    case 8: return fn.template operator()<8>();
    case 9: return fn.template operator()<9>();
    case 10: return fn.template operator()<10>();
    case 11: return fn.template operator()<11>();
    case 12: return fn.template operator()<12>();
    case 13: return fn.template operator()<13>();
    case 14: return fn.template operator()<14>();
    default: return fn.template operator()<15>();
  }
}

}  // namespace detail

namespace detail {

// Decodes one segment (or a bundle of one segment) of format F into value_count() values at
// `out` (room checked by the caller; any alignment).
template <value_format F>
error decompress_segment(const bundle_view& bundle, std::byte* out, const decode_options& options) {
  const std::uint64_t value_count = bundle.value_count();
  if (value_count == 0) return {};

  const bool wide = detail::use_wide_table(bundle.code(), bundle.max_code_length());
  const int table_bits = detail::table_index_bits(bundle.max_code_length(), wide);
  const std::size_t table_size = std::size_t{1} << table_bits;
  std::array<decode_entry, std::size_t{1} << kMaxCodeLength> single;
  std::array<std::uint32_t, std::size_t{1} << kMaxCodeLength> scratch;
  // One of the two tables: 2^15 narrow entries or 2^13 wide ones, 128 KiB either way.
  static_assert(sizeof(detail::wide_entry) << kWideMaxBits <= sizeof(detail::multi_entry)
                                                                  << kMaxCodeLength);
  alignas(64) std::byte table[sizeof(detail::multi_entry) << kMaxCodeLength];
  const std::span<decode_entry> single_span(single.data(), table_size);
  const std::span<std::uint32_t> scratch_span(scratch.data(), table_size);
  if (wide) {
    auto* const entries = reinterpret_cast<detail::wide_entry*>(table);
    detail::build_multi_table(bundle.code(), table_bits, single_span,
                              std::span<detail::wide_entry>(entries, table_size), scratch_span);
  } else {
    auto* const entries = reinterpret_cast<detail::multi_entry*>(table);
    detail::build_multi_table(bundle.code(), table_bits, single_span,
                              std::span<detail::multi_entry>(entries, table_size), scratch_span);
  }
  const detail::decode_context ctx{bundle.exponent_stream(),
                                   bundle.raw_bytes(),
                                   reinterpret_cast<const std::uint8_t*>(bundle.low_halves()),
                                   table,
                                   single.data(),
                                   static_cast<unsigned>(64 - table_bits),
                                   out};

  unsigned shortest_length = 0;
  for (const std::uint8_t length : bundle.code()) {
    if (length != 0 && (shortest_length == 0 || length < shortest_length)) shortest_length = length;
  }

  constexpr std::uint64_t kMinValuesPerThread = std::uint64_t{1} << 18;
  const std::uint64_t groups = bundle.group_count();
  const std::uint64_t tasks = (groups + detail::kDecodeLanes - 1) / detail::kDecodeLanes;
  const unsigned threads = static_cast<unsigned>(
      std::min<std::uint64_t>(detail::resolve_threads(options.threads),
                              std::max<std::uint64_t>(1, value_count / kMinValuesPerThread)));

  std::atomic<bool> failed{false};
  error first_error;
  std::atomic_flag error_taken;
  detail::parallel_for(tasks, threads, [&](std::size_t task) {
    if (failed.load(std::memory_order_relaxed)) return;
    detail::decode_lane lanes[detail::kDecodeLanes];
    int lane_count = 0;
    for (std::uint64_t g = task * detail::kDecodeLanes;
         g < groups && lane_count < detail::kDecodeLanes; ++g) {
      lanes[lane_count++] = {g, bundle.group_begin_bit(g), bundle.group_end_bit(g),
                             bundle.group_value_position(g), bundle.group_end_value(g)};
    }
    // Fewer groups than lanes (a small bundle, or the last groups of a large one): each group is
    // cut between the lanes in turn instead.
    const bool cut = lane_count < detail::kDecodeLanes;
    error e = detail::dispatch_table_shape(table_bits, wide, [&]<int Bits>() {
      if (!cut) return detail::decode_lanes<F, Bits>(ctx, lanes, lane_count);
      for (int l = 0; l < lane_count; ++l) {
        const detail::group_split split =
            detail::plan_group_split(bundle, lanes[l].group, shortest_length);
        error group_result = split.pieces > 1
                                 ? detail::decode_split_group<F, Bits>(ctx, lanes[l], split)
                                 : detail::decode_lanes<F, Bits>(ctx, lanes + l, 1);
        if (group_result) return group_result;
      }
      return error{};
    });
    if (e && !error_taken.test_and_set()) {
      first_error = std::move(e);
      failed.store(true);
    }
  });
  return first_error;
}

}  // namespace detail

namespace detail {

// Decodes every segment of the bundle into value_count() values of its format at `out`, whose
// room the caller has checked.
template <value_format F>
error decompress_all(const bundle_view& bundle, std::byte* out, const decode_options& options) {
  if (bundle.segment_count() == 1) return decompress_segment<F>(bundle, out, options);
  auto decode_one = [&](const bundle_view& segment, std::uint32_t s) -> error {
    std::byte* const segment_out =
        out + (segment.first_value() - bundle.first_value()) * value_bytes(F);
    if (error e = decompress_segment<F>(segment, segment_out, options))
      return {e.code, "segment " + std::to_string(s) + ": " + e.message};
    return {};
  };
  // Segments are independent: up to kConcurrentSegments of them are decoded concurrently, each
  // on the pool as well, so that idle threads help a big segment and the many small ones do not
  // each wait for a join. (segment(s) walks s records: quadratic, hence the bound; beyond it,
  // one after the other.) Nothing is allocated on the heap either way.
  constexpr std::uint32_t kConcurrentSegments = 256;
  if (bundle.segment_count() > kConcurrentSegments || bundle.is_segment()) {
    std::uint32_t index = 0;
    return bundle.for_each_segment(
        [&](const bundle_view& segment) -> error { return decode_one(segment, index++); });
  }
  std::atomic<bool> failed{false};
  error first_error;
  std::atomic_flag error_taken;
  parallel_for(bundle.segment_count(), resolve_threads(options.threads), [&](std::size_t s) {
    if (failed.load(std::memory_order_relaxed)) return;
    const auto index = static_cast<std::uint32_t>(s);
    error e = decode_one(bundle.segment(index), index);
    if (e && !error_taken.test_and_set()) {
      first_error = std::move(e);
      failed.store(true);
    }
  });
  return first_error;
}

// Checks the room (`out_count` elements of `element_bytes` bytes; 0: raw bytes, any format) and
// decodes.
inline error decompress_checked(const bundle_view& bundle, std::byte* out, std::size_t out_count,
                                std::size_t element_bytes, const decode_options& options) {
  const value_format format = bundle.format();
  const std::size_t width = value_bytes(format);
  if (element_bytes != 0 && element_bytes != width) {
    return {errc::invalid_argument,
            "decompress: the bundle holds " + std::string(to_string(format)) + " values of " +
                std::to_string(width) + " bytes, the output span has elements of " +
                std::to_string(element_bytes) + " bytes"};
  }
  const std::uint64_t value_count = bundle.value_count();
  if (element_bytes == 0 ? out_count / width < value_count : out_count < value_count) {
    const char* unit = element_bytes == 0 ? " bytes" : " values";
    const std::uint64_t need = element_bytes == 0 ? value_count * width : value_count;
    return {errc::insufficient_space, "decompress: output holds " + std::to_string(out_count) +
                                          unit + ", the bundle's " + std::to_string(value_count) +
                                          " values need " + std::to_string(need) + unit};
  }
  return visit_format(format,
                      [&]<value_format F>() { return decompress_all<F>(bundle, out, options); });
}

}  // namespace detail

inline error decompress(const bundle_view& bundle, std::span<std::byte> out,
                        const decode_options& options) {
  return detail::decompress_checked(bundle, out.data(), out.size(), 0, options);
}

inline error decompress(const bundle_view& bundle, std::span<std::uint16_t> out,
                        const decode_options& options) {
  return detail::decompress_checked(bundle, reinterpret_cast<std::byte*>(out.data()), out.size(),
                                    sizeof(std::uint16_t), options);
}

inline error decompress(const bundle_view& bundle, std::span<std::uint32_t> out,
                        const decode_options& options) {
  return detail::decompress_checked(bundle, reinterpret_cast<std::byte*>(out.data()), out.size(),
                                    sizeof(std::uint32_t), options);
}

inline error decompress(const bundle_view& bundle, std::span<std::uint8_t> out,
                        const decode_options& options) {
  return detail::decompress_checked(bundle, reinterpret_cast<std::byte*>(out.data()), out.size(),
                                    sizeof(std::uint8_t), options);
}

}  // namespace floatzip
