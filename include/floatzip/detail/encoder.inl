// floatzip internals: the CPU bundle encoder.
//
// Two passes over the input, both split into equal runs of values ("parts") that run on separate
// threads: pass 1 counts symbols (exponents, for BF16) per part; the code is built from the sum;
// since each part's encoded length is then known from its own histogram, every part knows the
// stream position it starts at, and pass 2 encodes all parts in parallel straight into the bundle.
// Neighbouring parts share a byte, and the writer stores whole 64-bit words, so each part (but the
// last) writes its final few bytes into a small private tail that is OR-ed into place after the
// join.
//
// Every value format goes through the same code: the functions that touch values are templates
// over the format (value_format.hpp), which splits each value into its symbol and raw planes in
// one vectorised loop per block (split_block); the coding loop only sees symbol bytes. The format
// becomes a template argument once, in make_encode_plan and encode_bundle (visit_format).
#pragma once

#include <algorithm>
#include <bit>
#include <concepts>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>

#include "floatzip/bf16.hpp"
#include "floatzip/detail/parallel.hpp"

namespace floatzip {

inline error validate(const encode_options& o) {
  using std::to_string;
  if (o.max_code_length < 1 || o.max_code_length > kMaxCodeLength) {
    return {errc::invalid_argument, "encode_options.max_code_length " +
                                        to_string(o.max_code_length) + " not in [1, " +
                                        to_string(kMaxCodeLength) + "]"};
  }
  if (o.chunk_bytes < kMinChunkBytes || o.chunk_bytes > kMaxChunkBytes) {
    return {errc::invalid_argument, "encode_options.chunk_bytes " + to_string(o.chunk_bytes) +
                                        " not in [" + to_string(kMinChunkBytes) + ", " +
                                        to_string(kMaxChunkBytes) + "]"};
  }
  if (o.chunks_per_group < 1 || o.chunks_per_group > kMaxChunksPerGroup) {
    return {errc::invalid_argument, "encode_options.chunks_per_group " +
                                        to_string(o.chunks_per_group) + " not in [1, " +
                                        to_string(kMaxChunksPerGroup) + "]"};
  }
  return {};
}

namespace detail {

// Value i of little-endian values at `values` (any alignment).
template <class T>
T load_value(const std::byte* values, std::size_t i) noexcept {
  T v;
  std::memcpy(&v, values + i * sizeof(T), sizeof v);
  return v;
}

// Calls fn(values, count, first_index) for the pieces of the concatenated tensors (of values of
// `value_size` bytes) in [begin, end); `values` points at the piece's first value.
template <class Fn>
void for_each_piece(std::span<const std::span<const std::byte>> tensors, std::size_t value_size,
                    std::uint64_t begin, std::uint64_t end, Fn&& fn) {
  std::uint64_t tensor_first = 0;
  for (const auto& t : tensors) {
    const std::uint64_t tensor_end = tensor_first + t.size() / value_size;
    const std::uint64_t lo = std::max(begin, tensor_first);
    const std::uint64_t hi = std::min(end, tensor_end);
    if (lo < hi) {
      fn(t.data() + (lo - tensor_first) * value_size, static_cast<std::size_t>(hi - lo), lo);
    }
    tensor_first = tensor_end;
    if (tensor_first >= end) break;
  }
}

// The format's optional members (value_format.hpp): whether it refuses some values, and whether
// it splits the rare values apart.
template <class Traits>
concept refuses_values = requires(typename Traits::value_type v) {
  Traits::unrepresentable(v);
};
template <class Traits>
concept splits_rare_values = requires(typename Traits::value_type v, std::uint8_t b) {
  Traits::rare_split(v);
  Traits::common_symbol_of(b, b);
  Traits::common_raw_byte_of(b, b);
  Traits::common_unrepresentable_of(b, b);
  { Traits::kRareCommonSymbol } -> std::convertible_to<std::uint8_t>;
};

// What the vectorised loops OR their refused bits into: the width of the lanes they compute in
// (GCC 12 vectorises no reduction wider than the loop's data): bytes for the formats that split
// rare values apart, which split byte by byte, else the value.
template <value_format F>
using refused_type = std::conditional_t<splits_rare_values<format_traits<F>>, std::uint8_t,
                                        typename format_traits<F>::value_type>;

// Byte b of value k of 16-bit values.
inline std::uint8_t value_byte(const std::byte* values, std::size_t k, unsigned b) noexcept {
  return static_cast<std::uint8_t>(values[2 * k + b]);
}

// The symbol of value k, as the vectorised loops compute it: exact but for the values
// rare_split flags, which fix_rare_splits redoes after the block.
template <value_format F>
std::uint8_t fast_symbol(const std::byte* values, std::size_t k) {
  using traits = format_traits<F>;
  if constexpr (splits_rare_values<traits>) {
    return traits::common_symbol_of(value_byte(values, k, 0), value_byte(values, k, 1));
  } else {
    return traits::symbol(load_value<typename traits::value_type>(values, k));
  }
}

// The bits of value k the format cannot hold (0 for formats that hold every pattern), as the
// vectorised loops compute them: exact but for the values fix_rare_splits redoes.
template <value_format F>
refused_type<F> refused_bits(const std::byte* values, std::size_t k) {
  using traits = format_traits<F>;
  if constexpr (splits_rare_values<traits>) {
    return traits::common_unrepresentable_of(value_byte(values, k, 0), value_byte(values, k, 1));
  } else if constexpr (refuses_values<traits>) {
    return traits::unrepresentable(load_value<typename traits::value_type>(values, k));
  } else {
    return 0;
  }
}

// Redoes the split of the rare values among values [first, first + count), whose fast symbols
// are symbols[0, count): those are exactly the values whose fast symbol is kRareCommonSymbol.
// Runs of 64 symbols are tested at once (a vectorised compare); in a run that holds one, each
// 8-byte word gives the bits of its bytes equal to kRareCommonSymbol without a branch, and the
// run's 64 bits are walked: one data-dependent branch per run and one per rare value. (Testing
// each word and then each byte with a branch mispredicted several times per such run: on the
// synthetic checkpoint, a quarter of a percent subnormal, 15 % of runs hold one, and that cost
// 0.15-0.35 ns per value of a 2-million-value loop microbenchmark, against 0.08-0.17 now.)
// Writes each rare value's raw byte too where raw_bytes is not null; returns the OR of their
// refused bits (unrepresentable).
template <value_format F>
typename format_traits<F>::value_type fix_rare_splits(const std::byte* values, std::size_t first,
                                                      std::size_t count, std::uint8_t* symbols,
                                                      std::uint8_t* raw_bytes) {
  using traits = format_traits<F>;
  typename traits::value_type refused = 0;
  if constexpr (splits_rare_values<traits>) {
    auto fix = [&](std::size_t k) {
      const auto v = load_value<typename traits::value_type>(values, first + k);
      symbols[k] = traits::symbol(v);
      if (raw_bytes != nullptr) raw_bytes[k] = traits::raw_byte(v);
      refused |= traits::unrepresentable(v);
    };
    constexpr std::uint64_t kPattern = 0x0101010101010101ull * traits::kRareCommonSymbol;
    constexpr std::size_t kRun = 64;
    std::size_t k = 0;
    for (; k + kRun <= count; k += kRun) {
      std::uint8_t any = 0;
      for (std::size_t j = k; j < k + kRun; ++j)
        any |= static_cast<std::uint8_t>(symbols[j] == traits::kRareCommonSymbol);
      if (any == 0) continue;
      std::uint64_t hits = 0;  // bit j: symbols[k + j] is the pattern
      for (std::size_t w = 0; w < kRun; w += 8) {
        std::uint64_t word;
        std::memcpy(&word, symbols + k + w, 8);
        // The bytes equal to the pattern are the zero bytes of word ^ kPattern.
        const auto matches = static_cast<std::uint8_t>(~nonzero_byte_bits(word ^ kPattern));
        hits |= std::uint64_t{matches} << w;
      }
      do {
        fix(k + static_cast<std::size_t>(std::countr_zero(hits)));
        hits &= hits - 1;
      } while (hits != 0);
    }
    for (; k < count; ++k) {
      if (symbols[k] == traits::kRareCommonSymbol) fix(k);
    }
  }
  return refused;
}

// Writes the symbols of values [first, first + count) to `symbols`, and returns the OR of the
// bits the format cannot hold (refused_bits: non-zero refuses the tensor; always 0 for the
// formats that hold every pattern). One simple loop the compiler vectorises (the OR-reduction in
// the values' own width: GCC 12 vectorises neither a bool reduction nor a wider one), then the
// rare values' symbols where the format has such.
template <value_format F>
std::uint32_t extract_symbols(const std::byte* values, std::size_t first, std::size_t count,
                              std::uint8_t* symbols) {
  refused_type<F> refused = 0;
  for (std::size_t k = 0; k < count; ++k) {
    symbols[k] = fast_symbol<F>(values, first + k);
    refused |= refused_bits<F>(values, first + k);
  }
  return refused | fix_rare_splits<F>(values, first, count, symbols, nullptr);
}

// Values per block whose symbols are extracted (vectorised) before they are counted.
inline constexpr std::size_t kHistogramBlock = 1024;

// Counts symbols one at a time, extracted a block at a time, into eight sub-histograms so that
// runs of equal symbols do not serialise on one counter. For short inputs; long ones take
// add_symbol_histogram's pair count. Returns extract_symbols' refused bits.
template <value_format F>
std::uint32_t add_symbol_histogram_single(const std::byte* values, std::size_t n,
                                          symbol_histogram& out) {
  std::array<std::array<std::uint32_t, kSymbolCount>, 8> sub{};
  alignas(64) std::uint8_t symbols[kHistogramBlock];
  std::uint32_t low = 0;
  std::size_t i = 0;
  while (i < n) {
    // Flush before a 32-bit counter could overflow.
    const std::size_t stop = i + std::min<std::size_t>(n - i, std::size_t{1} << 30);
    for (; i < stop;) {
      const std::size_t m = std::min(kHistogramBlock, stop - i);
      low |= extract_symbols<F>(values, i, m, symbols);
      std::size_t k = 0;
      for (; k + 8 <= m; k += 8) {
        for (int j = 0; j < 8; ++j) ++sub[j][symbols[k + j]];
      }
      for (; k < m; ++k) ++sub[0][symbols[k]];
      i += m;
    }
    for (int s = 0; s < kSymbolCount; ++s) {
      std::uint64_t total = 0;
      for (auto& h : sub) {
        total += h[s];
        h[s] = 0;
      }
      out[s] += total;
    }
  }
  return low;
}

// Counts symbols in pairs: one increment per two values, indexed by the two symbol bytes
// as one 16-bit load, so half the read-modify-writes of counting them singly. With ~30 exponents
// in use, the ~900 live counters sit in a few KiB of cache lines; equal neighbouring pairs (which
// would serialise on one counter) are rare. The 256 KiB table is kept per thread, all zero
// between calls: each use folds what it counted into row and column sums and clears it.
// Returns extract_symbols' refused bits (non-zero: a value the format cannot hold).
template <value_format F>
std::uint32_t add_symbol_histogram(const std::byte* v, std::size_t n, symbol_histogram& out) {
  constexpr std::size_t kMinPairCount = std::size_t{1} << 12;  // below: the fold would dominate
  // FP8 symbols use most of the 256 bytes: the pair table's live square would be most of its
  // 256 KiB, so sub-histograms in L1 count faster (measured: bench_codec encode_format).
  if (n < kMinPairCount || value_bytes(F) == 1) return add_symbol_histogram_single<F>(v, n, out);
  constexpr std::size_t kValueBytes = value_bytes(F);
  thread_local std::unique_ptr<std::uint32_t[]> storage;
  if (!storage) storage.reset(new std::uint32_t[kSymbolCount * kSymbolCount]());
  std::uint32_t* const pairs = storage.get();
  // Every counter touched lies in rows and columns [lowest, highest] of the exponents seen, a
  // ~30 x 30 square on trained weights: folding and clearing only that square keeps the fold
  // from costing more than the counting on a block of a million values.
  unsigned lowest = kSymbolCount - 1;
  unsigned highest = 0;
  auto fold = [&] {
    if (lowest > highest) return;
    const std::size_t width = highest - lowest + 1;
    std::array<std::uint64_t, kSymbolCount> first{};
    for (unsigned second = lowest; second <= highest; ++second) {
      std::uint32_t* row = pairs + second * kSymbolCount + lowest;
      std::uint64_t row_total = 0;
      for (std::size_t s = 0; s < width; ++s) {
        row_total += row[s];
        first[s] += row[s];
      }
      out[second] += row_total;
      std::memset(row, 0, width * sizeof row[0]);
    }
    for (std::size_t s = 0; s < width; ++s) out[lowest + s] += first[s];
    lowest = kSymbolCount - 1;
    highest = 0;
  };
  alignas(64) std::uint8_t exponents[kHistogramBlock];
  std::uint32_t low = 0;
  std::size_t i = 0;
  std::size_t since_fold = 0;
  for (; i + kHistogramBlock <= n; i += kHistogramBlock) {
    // Pass 1 is the first to read a bundle, usually from DRAM: ask for the block after next,
    // one request per cache line (the hardware prefetcher alone left the loads stalling).
    if (i + 3 * kHistogramBlock <= n) {
      for (std::size_t k = 0; k < kHistogramBlock * kValueBytes; k += 64) {
        __builtin_prefetch(v + (i + 2 * kHistogramBlock) * kValueBytes + k);
      }
    }
    // Extraction and the block's symbol range in one vectorised loop (two loops cost 15 % more
    // on BF16).
    // The OR-reductions in the loop's lane width (refused_type; not bool, not wider): GCC 12
    // vectorises neither a bool reduction nor one wider than the loop's data.
    std::uint8_t block_low = 0xFF;
    std::uint8_t block_high = 0;
    std::uint32_t block_refused = 0;
    if constexpr (splits_rare_values<format_traits<F>>) {
      // Three loops: GCC 12 vectorises the split with its OR-reduction, or the symbol range
      // beside a plain split, but not both in one loop; and the range must see the rare values'
      // symbols.
      refused_type<F> split_refused = 0;
      for (std::size_t k = 0; k < kHistogramBlock; ++k) {
        exponents[k] = fast_symbol<F>(v, i + k);
        split_refused |= refused_bits<F>(v, i + k);
      }
      block_refused = split_refused | fix_rare_splits<F>(v, i, kHistogramBlock, exponents, nullptr);
      for (std::size_t k = 0; k < kHistogramBlock; ++k) {
        block_low = std::min(block_low, exponents[k]);
        block_high = std::max(block_high, exponents[k]);
      }
    } else {
      refused_type<F> split_refused = 0;
      for (std::size_t k = 0; k < kHistogramBlock; ++k) {
        const std::uint8_t e = fast_symbol<F>(v, i + k);
        exponents[k] = e;
        block_low = std::min(block_low, e);
        block_high = std::max(block_high, e);
        split_refused |= refused_bits<F>(v, i + k);
      }
      block_refused = split_refused;
    }
    low |= block_refused;
    lowest = std::min<unsigned>(lowest, block_low);
    highest = std::max<unsigned>(highest, block_high);
    for (std::size_t k = 0; k < kHistogramBlock; k += 8) {
      std::uint64_t w;
      std::memcpy(&w, exponents + k, 8);
      ++pairs[w & 0xFFFF];
      ++pairs[(w >> 16) & 0xFFFF];
      ++pairs[(w >> 32) & 0xFFFF];
      ++pairs[w >> 48];
    }
    // A counter takes at most one increment per pair: fold before 2^32.
    since_fold += kHistogramBlock / 2;
    if (since_fold >= (std::size_t{1} << 31)) {
      fold();
      since_fold = 0;
    }
  }
  fold();
  return low | add_symbol_histogram_single<F>(v + i * kValueBytes, n - i, out);
}

// Where one chunk's first codeword starts, found while encoding.
struct chunk_start_record {
  std::uint64_t chunk;
  std::uint8_t gap;
  std::uint64_t value_index;  // index of the value whose codeword starts there
};

// Encoder tables, codes right-aligned, so appending one to a right-aligned bit accumulator is
// `acc = acc << length | code`: two operations on the chain of dependent updates. `pair_*` encode
// two consecutive exponents with one look-up, indexed by their two bytes as one little-endian
// 16-bit load (first exponent in the low byte). Codes and lengths sit in separate arrays so that
// each is one plain load, with no masking or shifting to take an entry apart; the lengths follow
// the codes in one allocation, so one register addresses both (pair_lengths_after). Single
// entries for symbols absent from the code are zero (length 0); pair entries are defined only
// for two present symbols (fill_encode_tables).
inline constexpr std::size_t kPairCount = std::size_t{kSymbolCount} * kSymbolCount;

struct encode_tables {
  std::array<std::uint32_t, kSymbolCount> code{};
  std::array<std::uint8_t, kSymbolCount> length{};
  const std::uint32_t* pair_code = nullptr;  // kPairCount codes, then kPairCount lengths
};

inline const std::uint8_t* pair_lengths_after(const std::uint32_t* pair_codes) {
  return reinterpret_cast<const std::uint8_t*>(pair_codes + kPairCount);
}

// The pair tables take 320 KiB. Only pairs of symbols present in the code are ever looked up
// (the code is built from the very values it encodes), so fill_encode_tables writes, for each
// present second symbol, the row of first symbols between the lowest and the highest present
// one, and nothing is ever cleared: entries outside those rows and columns may hold an earlier
// code's values, and are never read. A row shifts every first code by the same length, one loop the
// compiler vectorises; on FP8's ~200 present symbols that is a few microseconds, against 40,000
// scalar stores and as many to clear again when each entry was written singly (measured in
// bench/RESULTS.md). with_pairs false: only the single-symbol tables (tables.pair_code stays null).
inline void fill_encode_tables(const canonical_code& code, encode_tables& tables, bool with_pairs) {
  static_assert(2 * kMaxCodeLength <= 32, "a pair's code must fit 32 bits");
  unsigned lowest = kSymbolCount;
  unsigned highest = 0;
  for (unsigned s = 0; s < kSymbolCount; ++s) {
    tables.code[s] = code.length[s] == 0 ? 0 : code.code[s];
    tables.length[s] = code.length[s];
    if (code.length[s] != 0) {
      lowest = std::min(lowest, s);
      highest = s;
    }
  }
  if (!with_pairs || lowest > highest) return;
  // Codes, then the lengths as bytes (a quarter as many 32-bit words).
  thread_local std::unique_ptr<std::uint32_t[]> storage;
  if (!storage) storage.reset(new std::uint32_t[kPairCount + kPairCount / 4]);
  std::uint32_t* const codes = storage.get();
  auto* const lengths = reinterpret_cast<std::uint8_t*>(codes + kPairCount);
  const std::size_t width = highest - lowest + 1;
  const std::uint32_t* const first_code = tables.code.data() + lowest;
  const std::uint8_t* const first_length = tables.length.data() + lowest;
  for (unsigned second = lowest; second <= highest; ++second) {
    const unsigned second_length = tables.length[second];
    if (second_length == 0) continue;
    const std::uint32_t second_code = tables.code[second];
    std::uint32_t* const row = codes + (std::size_t{second} << 8) + lowest;
    std::uint8_t* const row_lengths = lengths + (std::size_t{second} << 8) + lowest;
    for (std::size_t i = 0; i < width; ++i) {
      row[i] = first_code[i] << second_length | second_code;
      row_lengths[i] = static_cast<std::uint8_t>(first_length[i] + second_length);
    }
  }
  tables.pair_code = codes;
}

// A part's last bytes, written aside so as not to race with the next part's first bytes.
struct part_tail {
  std::uint64_t offset = 0;  // stream byte where bytes[0] belongs
  std::uint64_t size = 0;
  std::array<std::uint8_t, 64> bytes{};
};

// A batch of codewords (one flush's) that reached a chunk boundary: noted by the encode loop,
// walked by record_chunk_starts once the block is done.
struct boundary_crossing {
  std::uint32_t first;  // the batch's first value, within the block
  std::uint32_t count;  // values in the batch
  std::uint64_t bit_after;
  std::uint64_t boundary;  // the first boundary the batch reached
};

// Walks a batch of at most eight codewords that ended at `bit_after`, recording each chunk
// boundary from `boundary` on that it reaches with where the first codeword at or after it starts.
inline void record_chunk_starts(const std::uint8_t* exponents, std::size_t count,
                                std::uint64_t bit_after, std::uint64_t first_index,
                                const std::uint8_t* length, std::uint64_t chunk_bits,
                                std::uint64_t end_bit, std::uint64_t boundary,
                                std::vector<chunk_start_record>& records) {
  // Codeword ends, counted without a branch per codeword: which codeword reaches the boundary
  // is data, and a branch on it was mispredicted about once per chunk.
  std::array<std::uint64_t, 8> ends;  // a batch is one flush's: eight values at most
  std::uint64_t bit = bit_after;
  for (std::size_t j = count; j-- > 0;) {
    ends[j] = bit;
    bit -= length[exponents[j]];
  }
  while (boundary <= bit_after && boundary < end_bit) {
    std::size_t before = 0;  // codewords ending before the boundary
    for (std::size_t j = 0; j < count; ++j) before += ends[j] < boundary;
    records.push_back({boundary / chunk_bits, static_cast<std::uint8_t>(ends[before] - boundary),
                       first_index + before + 1});
    boundary += chunk_bits;
  }
}

// Values are split in blocks of this many: symbols to a stack buffer, raw bytes and low halves
// straight to the bundle. One simple loop the compiler vectorises, then the codeword loop reads
// bytes that are already extracted.
inline constexpr std::size_t kEncodeBlock = 2048;

// Splits values [0, count) of `values`; raw_bytes / low_halves point at the first value's place
// in the planes (unused where the format has no such plane). low_halves: u16 little-endian.
template <value_format F>
void split_block(const std::byte* values, std::size_t count, std::uint8_t* symbols,
                 std::uint8_t* raw_bytes, std::uint8_t* low_halves) {
  using traits = format_traits<F>;
  using value_type = typename traits::value_type;
  static_assert(traits::has_raw_byte, "FP8 values are their own symbols: nothing to split");
  for (std::size_t i = 0; i < count; ++i) {
    if constexpr (splits_rare_values<traits>) {
      const std::uint8_t low = value_byte(values, i, 0);
      const std::uint8_t high = value_byte(values, i, 1);
      symbols[i] = traits::common_symbol_of(low, high);
      raw_bytes[i] = traits::common_raw_byte_of(low, high);
    } else {
      const auto v = load_value<value_type>(values, i);
      symbols[i] = traits::symbol(v);
      raw_bytes[i] = traits::raw_byte(v);
      if constexpr (traits::has_low_half) {
        const std::uint16_t low = traits::low_half(v);
        std::memcpy(low_halves + 2 * i, &low, 2);
      }
    }
  }
  (void)fix_rare_splits<F>(values, 0, count, symbols, raw_bytes);
}

// Encodes the values [begin, end), whose codewords occupy stream bits [first_bit, end_bit), into
// `stream` (the bundle's stream section), and writes their raw planes (raw_bytes and low_halves
// point at value `begin`'s place; null where the format has no such plane). Records every
// chunk boundary c * chunk_bits in [first_bit, end_bit) with where the first codeword at or after
// it starts. Unless `last_part`, stores stay 16 bytes clear of byte end_bit / 8; the bytes from
// there on go to `tail`.
//
// The hot loop keeps the bit writer's state in locals (a class member or a lambda capture would
// live in memory, reloaded after every store). The accumulator is right-aligned: its low `p` bits
// are pending, and what lies above them is stale and shifted out by the flush. Chunk boundaries
// are checked once per flush; a batch that reaches one is noted and, after the block, walked
// again to find the codeword that starts the chunk. What a flush follows is the Batch (see
// encode_segment for which one a segment takes).
enum class flush_batch {
  // Four single look-ups per flush: codes of at most 14 bits, no pair tables.
  four_singles,
  // Four pair look-ups (eight values) when their codewords fit beside the pending bits, else two
  // and two: codes of at most 14 bits whose eight codewords rarely exceed 56 bits, so that the
  // branch is predicted (BF16, FP16).
  up_to_four_pairs,
  // One pair look-up per flush: 15-bit codes.
  one_pair,
  // Three pair look-ups (six values) when their codewords fit beside the pending bits, else two
  // and one: codes of at most 14 bits whose six codewords rarely exceed 56 bits (FP8 E4M3).
  up_to_three_pairs,
};

template <value_format F, flush_batch Batch>
void encode_part(std::span<const std::span<const std::byte>> tensors, std::uint64_t begin,
                 std::uint64_t end, std::uint64_t first_bit, std::uint64_t end_bit,
                 std::uint64_t chunk_bits, const encode_tables& tables, std::uint8_t* stream,
                 std::uint8_t* raw_bytes, std::uint8_t* low_halves, bool last_part, part_tail& tail,
                 std::vector<chunk_start_record>& records) {
  constexpr std::size_t kValueBytes = value_bytes(F);
  constexpr std::size_t kFlushValues = Batch == flush_batch::one_pair ? 2 : 4;
  const std::uint32_t* const pair_code = tables.pair_code;
  const std::uint32_t* const code = tables.code.data();
  const std::uint8_t* const length = tables.length.data();
  // Bit position = base_bit + 8 * (out - base) + pending.
  std::uint8_t* base = stream + first_bit / 8;
  std::uint64_t base_bit = first_bit & ~std::uint64_t{7};
  std::uint8_t* out = base;
  std::uint64_t acc = 0;                                    // right-aligned pending bits
  unsigned pending = static_cast<unsigned>(first_bit & 7);  // bits in acc (zeros: not ours)
  const std::uint64_t main_end_byte = end_bit / 8 >= 24 ? end_bit / 8 - 24 : 0;
  const std::uint8_t* main_limit = last_part                       ? nullptr
                                   : main_end_byte > first_bit / 8 ? stream + main_end_byte
                                                                   : base;
  // Moves the writer from the stream to the private tail.
  auto divert_to_tail = [&](std::uint8_t*& o) {
    tail.offset = static_cast<std::uint64_t>(o - stream);
    base_bit += static_cast<std::uint64_t>(o - base) * 8;
    base = tail.bytes.data();
    o = base;
    main_limit = nullptr;
  };
  if (main_limit == base) divert_to_tail(out);

  std::uint64_t next_boundary = (first_bit + chunk_bits - 1) / chunk_bits * chunk_bits;
  if (next_boundary == first_bit) {
    records.push_back({first_bit / chunk_bits, 0, begin});
    next_boundary += chunk_bits;
  }
  // Room for one 16-bit load past an odd count.
  alignas(64) std::uint8_t exponents[kEncodeBlock + 8];
  // At most one crossing per flush, and a flush takes two values or more.
  std::array<boundary_crossing, kEncodeBlock / 2 + 1> crossings;
  for_each_piece(
      tensors, kValueBytes, begin, end,
      [&](const std::byte* values, std::size_t value_count, std::uint64_t first_index) {
        // Locals, so that nothing in the loop has its address taken (the byte stores may alias
        // anything reached through a reference, which would be reloaded after every store).
        const std::uint32_t* const pair_codes = pair_code;
        const std::uint32_t* const codes = code;
        const std::uint8_t* const lengths = length;
        std::uint8_t* const split_symbols = exponents;
        std::uint8_t* o = out;
        std::uint64_t a = acc;
        unsigned p = pending;
        std::uint64_t boundary = next_boundary;
        // Chunk boundaries are whole bytes and fewer than 8 bits are pending after a flush, so
        // "the stream reached the boundary" is "o reached the boundary's byte". That byte and
        // the point of the move to the tail are folded into one address, `check`, so the loop
        // makes one compare per flush. Addresses as integers: after a move to the tail, the
        // boundary's byte may lie before the tail's first byte.
        auto next_check = [&] {
          const auto o_addr = reinterpret_cast<std::uintptr_t>(o);
          const std::int64_t to_boundary =
              (static_cast<std::int64_t>(boundary) - static_cast<std::int64_t>(base_bit)) / 8 -
              (o - base);
          std::uintptr_t c = o_addr + static_cast<std::uintptr_t>(to_boundary);
          if (to_boundary < 0) c = o_addr;
          if (main_limit != nullptr) c = std::min(c, reinterpret_cast<std::uintptr_t>(main_limit));
          return c;
        };
        std::uintptr_t check = next_check();
        for (std::size_t block = 0; block < value_count; block += kEncodeBlock) {
          const std::size_t n = std::min(kEncodeBlock, value_count - block);
          const std::uint64_t block_index = first_index + block;
          const std::uint64_t plane_index = block_index - begin;
          // FP8 values are their own symbols: coded where they lie, not copied first.
          const std::uint8_t* exponent_bytes = split_symbols;
          if constexpr (format_traits<F>::has_raw_byte) {
            split_block<F>(values + block * kValueBytes, n, split_symbols,
                           raw_bytes == nullptr ? nullptr : raw_bytes + plane_index,
                           low_halves == nullptr ? nullptr : low_halves + 2 * plane_index);
          } else {
            exponent_bytes = reinterpret_cast<const std::uint8_t*>(values) + block;
          }
          std::size_t crossing_count = 0;
          // Flush: store the pending bits left-aligned in eight bytes, advance over the
          // complete ones. p <= 63: eight values only when p + their bits < 64, else four
          // values, 4 * 14 + 7 = 63 (one pair per flush above 14-bit codes); and
          // p >= 1 since every codeword has a bit. Then the one compare for the rare events. A
          // batch that reached a chunk boundary is only noted here, and walked after the block:
          // walking it in the loop (a call, about once per chunk) cost more than the rest of the
          // rare path together, mostly in registers spilled around the call.
          auto flush = [&](const std::uint8_t* batch_start, std::size_t batch)
              __attribute__((always_inline)) {
            store_be64(o, a << ((0u - p) & 63));  // 64 - p, as p is in [1, 63]
            o += p >> 3;
            p &= 7;
            if (reinterpret_cast<std::uintptr_t>(o) >= check) [[unlikely]] {
              if (main_limit != nullptr && o >= main_limit) divert_to_tail(o);
              const std::uint64_t bit_now = base_bit + static_cast<std::uint64_t>(o - base) * 8 + p;
              if (bit_now >= boundary) {
                crossings[crossing_count++] = {
                    static_cast<std::uint32_t>(batch_start - exponent_bytes),
                    static_cast<std::uint32_t>(batch), bit_now, boundary};
                // Past the boundaries record_chunk_starts will record for this batch.
                while (boundary <= bit_now && boundary < end_bit) boundary += chunk_bits;
              }
              check = next_check();
            }
          };
          // The loops walk a pointer and index both pair tables from one register: with the
          // writer's state, every value the loop carries then stays in a register (with an index
          // and two table pointers, GCC kept the output pointer and the pending count on the
          // stack, a store and a reload on the loop's chain every flush).
          const std::uint8_t* ex = exponent_bytes;
          if constexpr (Batch == flush_batch::up_to_four_pairs) {
            const std::uint8_t* const octets_end = exponent_bytes + n / 8 * 8;
            for (; ex < octets_end; ex += 8) {
              std::uint16_t e01, e23, e45, e67;
              std::memcpy(&e01, ex, 2);
              std::memcpy(&e23, ex + 2, 2);
              std::memcpy(&e45, ex + 4, 2);
              std::memcpy(&e67, ex + 6, 2);
              const unsigned l01 = pair_lengths_after(pair_codes)[e01];
              const unsigned l23 = pair_lengths_after(pair_codes)[e23];
              const unsigned l45 = pair_lengths_after(pair_codes)[e45];
              const unsigned l67 = pair_lengths_after(pair_codes)[e67];
              const unsigned l0123 = l01 + l23;
              const unsigned l4567 = l45 + l67;
              const std::uint64_t c0123 = std::uint64_t{pair_codes[e01]} << l23 | pair_codes[e23];
              const std::uint64_t c4567 = std::uint64_t{pair_codes[e45]} << l67 | pair_codes[e67];
              if (p + l0123 + l4567 < 64) [[likely]] {
                const unsigned l = l0123 + l4567;
                a = (a << l) | (c0123 << l4567) | c4567;
                p += l;
                flush(ex, 8);
              } else {
                a = (a << l0123) | c0123;
                p += l0123;
                flush(ex, 4);
                a = (a << l4567) | c4567;
                p += l4567;
                flush(ex + 4, 4);
              }
            }
          }
          if constexpr (Batch == flush_batch::up_to_three_pairs) {
            const std::uint8_t* const sextets_end = exponent_bytes + n / 6 * 6;
            for (; ex < sextets_end; ex += 6) {
              std::uint16_t e01, e23, e45;
              std::memcpy(&e01, ex, 2);
              std::memcpy(&e23, ex + 2, 2);
              std::memcpy(&e45, ex + 4, 2);
              const unsigned l01 = pair_lengths_after(pair_codes)[e01];
              const unsigned l23 = pair_lengths_after(pair_codes)[e23];
              const unsigned l45 = pair_lengths_after(pair_codes)[e45];
              const unsigned l0123 = l01 + l23;
              const std::uint64_t c0123 = std::uint64_t{pair_codes[e01]} << l23 | pair_codes[e23];
              const std::uint64_t c45 = pair_codes[e45];
              if (p + l0123 + l45 < 64) [[likely]] {
                const unsigned l = l0123 + l45;
                a = (a << l) | (c0123 << l45) | c45;
                p += l;
                flush(ex, 6);
              } else {
                a = (a << l0123) | c0123;
                p += l0123;
                flush(ex, 4);
                a = (a << l45) | c45;
                p += l45;
                flush(ex + 4, 2);
              }
            }
          }
          // What the loops above left, in whole flushes.
          const std::uint8_t* const whole_end =
              ex + static_cast<std::size_t>(exponent_bytes + n - ex) / kFlushValues * kFlushValues;
          if constexpr (Batch == flush_batch::four_singles) {
            // Four codewords of at most 14 bits joined in two independent halves, then appended
            // at once: p + 56 <= 63.
            for (; ex < whole_end; ex += 4) {
              const unsigned l0 = lengths[ex[0]], l1 = lengths[ex[1]];
              const unsigned l2 = lengths[ex[2]], l3 = lengths[ex[3]];
              const std::uint64_t c01 = std::uint64_t{codes[ex[0]]} << l1 | codes[ex[1]];
              const std::uint64_t c23 = std::uint64_t{codes[ex[2]]} << l3 | codes[ex[3]];
              const unsigned l23 = l2 + l3;
              const unsigned l = l0 + l1 + l23;
              a = (a << l) | (c01 << l23) | c23;
              p += l;
              flush(ex, 4);
            }
          } else if constexpr (Batch == flush_batch::one_pair) {
            for (; ex < whole_end; ex += 2) {
              std::uint16_t e01;
              std::memcpy(&e01, ex, 2);
              const unsigned l = pair_lengths_after(pair_codes)[e01];
              a = (a << l) | pair_codes[e01];
              p += l;
              flush(ex, 2);
            }
          } else {
            // Two pairs joined first, then appended at once: p + 56 <= 63.
            for (; ex < whole_end; ex += 4) {
              std::uint16_t e01, e23;
              std::memcpy(&e01, ex, 2);
              std::memcpy(&e23, ex + 2, 2);
              const unsigned l01 = pair_lengths_after(pair_codes)[e01];
              const unsigned l23 = pair_lengths_after(pair_codes)[e23];
              const unsigned l = l01 + l23;
              a = (a << l) | (std::uint64_t{pair_codes[e01]} << l23) | pair_codes[e23];
              p += l;
              flush(ex, 4);
            }
          }
          const std::uint8_t* const block_end = exponent_bytes + n;
          if (ex < block_end) {
            for (const std::uint8_t* e = ex; e < block_end; ++e) {
              const unsigned l = lengths[*e];
              a = (a << l) | codes[*e];
              p += l;
            }
            flush(ex, static_cast<std::size_t>(block_end - ex));
          }
          for (std::size_t c = 0; c < crossing_count; ++c) {
            const boundary_crossing& x = crossings[c];
            record_chunk_starts(exponent_bytes + x.first, x.count, x.bit_after,
                                block_index + x.first, length, chunk_bits, end_bit, x.boundary,
                                records);
          }
        }
        out = o;
        acc = a;
        pending = p;
        next_boundary = boundary;
      });
  store_be64(out, pending == 0 ? 0 : acc << (64 - pending));
  if (base == tail.bytes.data()) {
    tail.size = (end_bit + 7) / 8 - tail.offset;
  }
}

}  // namespace detail

inline symbol_histogram exponent_histogram(std::span<const std::uint16_t> values) {
  symbol_histogram h{};
  detail::add_symbol_histogram<value_format::bf16>(std::as_bytes(values).data(), values.size(), h);
  return h;
}

inline symbol_histogram symbol_histogram_of(value_format format,
                                            std::span<const std::byte> values) {
  symbol_histogram h{};
  if (!is_known(format)) return h;
  visit_format(format, [&]<value_format F>() {
    detail::add_symbol_histogram<F>(values.data(), values.size() / value_bytes(F), h);
  });
  return h;
}

inline bool low_halves_zero(std::span<const std::byte> fp32_values) noexcept {
  if (fp32_values.size() % 4 != 0) return false;
  const std::size_t n = fp32_values.size() / 4;
  constexpr std::size_t kBlock = 4096;  // stop early at a non-zero block
  for (std::size_t i = 0; i < n; i += kBlock) {
    const std::size_t m = std::min(kBlock, n - i);
    std::uint32_t low = 0;
    for (std::size_t k = 0; k < m; ++k) {
      low |= detail::load_value<std::uint32_t>(fp32_values.data(), i + k);
    }
    if ((low & 0xFFFFu) != 0) return false;
  }
  return true;
}

inline bool fp16_values_are_bf16(std::span<const std::byte> fp16_values) noexcept {
  if (fp16_values.size() % 2 != 0) return false;
  const std::size_t n = fp16_values.size() / 2;
  constexpr std::size_t kBlock = 8192;  // stop early at a refused block
  for (std::size_t i = 0; i < n; i += kBlock) {
    const std::size_t m = std::min(kBlock, n - i);
    std::uint32_t refused = 0;
    for (std::size_t k = 0; k < m; ++k) {
      refused |= format_traits<value_format::bf16_in_fp16>::unrepresentable(
          detail::load_value<std::uint16_t>(fp16_values.data(), i + k));
    }
    if (refused != 0) return false;
  }
  return true;
}

namespace detail {

// Bytes a segment of `values` values, `stream_bits` bits and a code spanning `symbol_span`
// symbols takes in a bundle: its record and its body.
inline std::uint64_t segment_bytes(value_format format, std::uint64_t values,
                                   std::uint64_t stream_bits, unsigned symbol_span,
                                   const encode_options& o) {
  return kSegmentRecordBytes + compute_segment_layout(format, 0, values, stream_bits, symbol_span,
                                                      o.chunk_bytes, o.chunks_per_group)
                                   .end_offset;
}

// encode_segment, pass 2 for one segment: its code lengths, raw planes, symbol codewords, chunk
// gaps and group positions, straight into place in the bundle at `base`.
template <value_format F>
error encode_segment(std::span<const std::span<const std::byte>> all_tensors, unsigned threads,
                     const bundle_header& h, const segment_plan& seg, std::byte* base) {
  using traits = format_traits<F>;
  const bundle_layout& layout = seg.layout;
  auto put_le = [&](std::uint64_t offset, auto value) {
    std::memcpy(base + offset, &value, sizeof value);
  };
  // Everything but the raw planes and the stream's codewords, which are written whole below,
  // starts as zero: alignment padding, the gap nibbles, stream padding.
  const std::uint64_t raw_end =
      layout.sign_mantissa_offset + (traits::has_raw_byte ? seg.value_count : 0);
  const std::uint64_t low_end =
      layout.low_halves_offset + (traits::has_low_half ? 2 * seg.value_count : 0);
  std::memset(base + layout.code_offset, 0, layout.sign_mantissa_offset - layout.code_offset);
  std::memset(base + raw_end, 0, layout.low_halves_offset - raw_end);
  std::memset(base + low_end, 0, layout.stream_offset - low_end);
  std::memset(base + layout.stream_offset + seg.stream_bits / 8, 0,
              layout.stream_section_bytes - seg.stream_bits / 8);
  auto* code_bytes = reinterpret_cast<std::uint8_t*>(base + layout.code_offset);
  code_bytes[0] = static_cast<std::uint8_t>(seg.first_symbol);
  code_bytes[1] = static_cast<std::uint8_t>(seg.symbol_span - 1);
  for (unsigned i = 0; i < seg.symbol_span; ++i) {
    const std::uint8_t length = seg.lengths[seg.first_symbol + i];
    code_bytes[2 + i / 2] |= static_cast<std::uint8_t>((i & 1) != 0 ? length << 4 : length);
  }
  if (seg.value_count == 0) return {};
  const auto tensors = all_tensors.subspan(seg.tensor_begin, seg.tensor_end - seg.tensor_begin);

  const canonical_code code = make_canonical_code(seg.lengths);
  encode_tables tables;
  // The batch per flush (measured with bench_codec encode_format, bench/RESULTS.md): pairs of
  // codewords halve the look-ups, and eight codewords per flush halve the flushes wherever eight
  // rarely exceed 56 bits (BF16's ~2.7 bits per value, FP16's and FP8 E5M2's ~5.6); FP8 E4M3's
  // ~6.6 bits would mispredict that branch, so it tries six. A segment too small to repay filling
  // its pair tables (about one entry per present symbol pair) codes singly.
  unsigned present = 0;
  for (const std::uint8_t length : seg.lengths) present += length != 0 ? 1 : 0;
  const flush_batch batch =
      h.max_code_length > 14                                           ? flush_batch::one_pair
      : seg.value_count < std::uint64_t{2} * present * seg.symbol_span ? flush_batch::four_singles
      : seg.stream_bits <= 6 * seg.value_count ? flush_batch::up_to_four_pairs
                                               : flush_batch::up_to_three_pairs;
  const bool pairs = batch != flush_batch::four_singles;
  fill_encode_tables(code, tables, pairs);

  // Pass 2: raw planes and symbol codewords straight into place.
  const std::size_t part_count = seg.part_value_begin.size() - 1;
  auto* raw_bytes = traits::has_raw_byte
                        ? reinterpret_cast<std::uint8_t*>(base + layout.sign_mantissa_offset)
                        : nullptr;
  auto* low_halves = traits::has_low_half
                         ? reinterpret_cast<std::uint8_t*>(base + layout.low_halves_offset)
                         : nullptr;
  auto* stream = reinterpret_cast<std::uint8_t*>(base + layout.stream_offset);
  std::vector<part_tail> part_tails(part_count);
  std::vector<std::vector<chunk_start_record>> part_records(part_count);
  const std::uint64_t chunk_bits = h.chunk_bits();
  parallel_for(part_count, threads, [&](std::size_t p) {
    const std::uint64_t begin = seg.part_value_begin[p];
    const std::uint64_t end = seg.part_value_begin[p + 1];
    const std::uint64_t first_bit = seg.part_first_bit[p];
    const std::uint64_t end_bit = seg.part_first_bit[p + 1];
    part_records[p].reserve((end_bit - first_bit) / chunk_bits + 2);
    const bool last = p + 1 == part_count;
    std::uint8_t* part_raw = raw_bytes == nullptr ? nullptr : raw_bytes + begin;
    std::uint8_t* part_low = low_halves == nullptr ? nullptr : low_halves + 2 * begin;
    auto run = [&]<flush_batch B>() {
      encode_part<F, B>(tensors, begin, end, first_bit, end_bit, chunk_bits, tables, stream,
                        part_raw, part_low, last, part_tails[p], part_records[p]);
    };
    switch (batch) {
      case flush_batch::four_singles: run.template operator()<flush_batch::four_singles>(); break;
      case flush_batch::up_to_four_pairs:
        run.template operator()<flush_batch::up_to_four_pairs>();
        break;
      case flush_batch::one_pair: run.template operator()<flush_batch::one_pair>(); break;
      case flush_batch::up_to_three_pairs:
        run.template operator()<flush_batch::up_to_three_pairs>();
        break;
    }
  });
  // A tail's bytes are the part's own, except a final partial byte that the next part wrote
  // first (with zeros where this part's bits go).
  for (std::size_t p = 0; p < part_count; ++p) {
    const part_tail& tail = part_tails[p];
    const bool shares_last_byte = seg.part_first_bit[p + 1] % 8 != 0;
    for (std::uint64_t i = 0; i < tail.size; ++i) {
      if (i + 1 == tail.size && shares_last_byte) {
        stream[tail.offset + i] |= tail.bytes[i];
      } else {
        stream[tail.offset + i] = tail.bytes[i];
      }
    }
  }

  auto* gaps = reinterpret_cast<std::uint8_t*>(base + layout.chunk_gaps_offset);
  // Records come in chunk order (parts in order, each in stream order): the next group's first
  // chunk is counted along rather than found by a division per chunk.
  std::uint64_t recorded = 0;
  std::uint64_t group = 0;
  std::uint64_t group_chunk = 0;  // group * chunks_per_group
  for (const auto& records : part_records) {
    for (const auto& r : records) {
      gaps[r.chunk >> 1] |= static_cast<std::uint8_t>((r.chunk & 1) != 0 ? r.gap << 4 : r.gap);
      while (group_chunk < r.chunk) {
        ++group;
        group_chunk += h.chunks_per_group;
      }
      if (r.chunk == group_chunk) {
        put_le(layout.group_positions_offset + group * 8, r.value_index);
      }
      ++recorded;
    }
  }
  if (recorded != layout.chunk_count) {  // an encoder bug, thrown by encode_bundle
    return {errc::bad_data, "floatzip encoder: recorded " + std::to_string(recorded) +
                                " chunk starts for " + std::to_string(layout.chunk_count) +
                                " chunks"};
  }
  return {};
}

inline constexpr std::size_t kMaxRunTensors = 64;

// The histogram of a growing run of tensors, with its present symbols kept in order of count,
// for the Huffman cost of every candidate run (plan_segments). unlimited_huffman_bits sorts the
// counts afresh; here the order of the run so far is repaired by insertion sort as a tensor joins
// (neighbouring tensors' counts mostly keep their order), a few hundred moves instead of a sort
// that mispredicted most of its ~1,500 comparisons on FP8's and FP16's ~200 symbols. The result
// is the same number: the Huffman cost depends only on the sorted counts.
class run_symbol_order {
 public:
  // The run is the one tensor of histogram `hist`.
  void start(const symbol_histogram& hist) {
    hist_ = hist;
    present_ = 0;
    for (int s = 0; s < kSymbolCount; ++s) {
      if (hist_[s] != 0) order_[present_++] = static_cast<std::uint8_t>(s);
    }
    std::sort(order_.begin(), order_.begin() + present_,
              [&](std::uint8_t a, std::uint8_t b) { return hist_[a] < hist_[b]; });
    for (int i = 0; i < present_; ++i) sorted_[i] = hist_[order_[i]];
  }

  // Adds a tensor's histogram to the run.
  void add(const symbol_histogram& hist) {
    for (int s = 0; s < kSymbolCount; ++s) {
      if (hist_[s] == 0 && hist[s] != 0) order_[present_++] = static_cast<std::uint8_t>(s);
      hist_[s] += hist[s];
    }
    for (int i = 0; i < present_; ++i) sorted_[i] = hist_[order_[i]];
    // Insertion sort, abandoned for a full sort past a budget of moves (tensors of unlike
    // shapes), so that no input makes it quadratic.
    constexpr int kMoveBudget = 4 * kSymbolCount;
    int moves = 0;
    for (int i = 1; i < present_; ++i) {
      const std::uint64_t w = sorted_[i];
      const std::uint8_t symbol = order_[i];
      int j = i;
      for (; j > 0 && sorted_[j - 1] > w; --j) {
        sorted_[j] = sorted_[j - 1];
        order_[j] = order_[j - 1];
      }
      sorted_[j] = w;
      order_[j] = symbol;
      moves += i - j;
      if (moves > kMoveBudget) {
        std::sort(order_.begin(), order_.begin() + present_,
                  [&](std::uint8_t a, std::uint8_t b) { return hist_[a] < hist_[b]; });
        for (int k = 0; k < present_; ++k) sorted_[k] = hist_[order_[k]];
        break;
      }
    }
  }

  // unlimited_huffman_bits of the run's histogram.
  [[nodiscard]] std::uint64_t huffman_bits() const {
    if (present_ == 0) return 0;
    if (present_ == 1) return sorted_[0];  // one bit per symbol, as build_code_lengths assigns
    return huffman_bits_of_sorted(sorted_.data(), present_);
  }

  // Symbols from the lowest to the highest present one (1 when none is present).
  [[nodiscard]] unsigned symbol_span() const {
    unsigned first = 0;
    while (first + 1 < kSymbolCount && hist_[first] == 0) ++first;
    unsigned last = kSymbolCount - 1;
    while (last > first && hist_[last] == 0) --last;
    return last - first + 1;
  }

 private:
  symbol_histogram hist_{};
  int present_ = 0;
  std::array<std::uint8_t, kSymbolCount> order_{};        // the present symbols, by count
  std::array<std::uint64_t, kSymbolCount + 1> sorted_{};  // their counts; one more readable
};

// Cuts tensors [0, n) into runs, each with a code of its own, so that the bundle is smallest:
// a run pays for its record, code lengths, alignment and stream padding (about 100 bytes), and
// gains where its tensors' exponents differ from their neighbours'. A run's size is estimated as
// its stream under an unlimited Huffman code (the length limit changes trained weights' streams
// by < 0.001 bits per value, and package-merge for every candidate run would cost more time than
// the encoding) plus its exact fixed costs (segment_bytes). The cuts are found by dynamic
// programming over the cut points; runs are limited to kMaxRunTensors
// tensors so the cost stays linear in the tensor count. Returns the first tensor of each run, then
// n.
inline std::vector<std::uint32_t> plan_segments(value_format format,
                                                std::span<const symbol_histogram> tensor_hist,
                                                std::span<const std::uint64_t> tensor_values,
                                                const encode_options& o) {
  const std::size_t n = tensor_hist.size();
  if (!o.adaptive_codes || n <= 1) return {0, static_cast<std::uint32_t>(n)};
  constexpr std::uint64_t kInfinite = ~std::uint64_t{0};
  std::vector<std::uint64_t> best(n + 1, kInfinite);
  std::vector<std::uint32_t> cut(n + 1, 0);
  best[0] = 0;
  run_symbol_order run;
  for (std::size_t end = 1; end <= n; ++end) {
    std::uint64_t values = 0;
    const std::size_t lowest = end > kMaxRunTensors ? end - kMaxRunTensors : 0;
    for (std::size_t begin = end; begin-- > lowest;) {
      if (begin + 1 == end) {
        run.start(tensor_hist[begin]);
      } else {
        run.add(tensor_hist[begin]);
      }
      values += tensor_values[begin];
      if (best[begin] == kInfinite) continue;
      const std::uint64_t total =
          best[begin] + segment_bytes(format, values, run.huffman_bits(), run.symbol_span(), o);
      if (total < best[end]) {
        best[end] = total;
        cut[end] = static_cast<std::uint32_t>(begin);
      }
    }
  }
  std::vector<std::uint32_t> starts;
  for (std::size_t end = n; end > 0; end = cut[end]) starts.push_back(cut[end]);
  std::reverse(starts.begin(), starts.end());
  starts.push_back(static_cast<std::uint32_t>(n));
  return starts;
}

}  // namespace detail

inline encode_plan make_encode_plan(value_format format,
                                    std::span<const std::span<const std::byte>> tensors,
                                    const encode_options& options) {
  using std::to_string;
  throw_if_error(validate(options));
  if (!is_known(format)) {
    throw exception({errc::invalid_argument, "compress_bundle: unknown value format " +
                                                 to_string(static_cast<unsigned>(format))});
  }
  const std::size_t value_size = value_bytes(format);
  encode_plan plan;
  plan.tensors_.assign(tensors.begin(), tensors.end());
  std::uint64_t value_count = 0;
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    if (tensors[t].size() % value_size != 0) {
      throw exception({errc::invalid_argument, "compress_bundle: tensor " + to_string(t) + " has " +
                                                   to_string(tensors[t].size()) +
                                                   " bytes, not a whole number of " +
                                                   std::string(to_string(format)) + " values of " +
                                                   to_string(value_size) + " bytes"});
    }
    value_count += tensors[t].size() / value_size;
  }
  if (value_count > kMaxBundleValues) {
    throw exception({errc::invalid_argument, "compress_bundle: more than 2^48 values"});
  }
  if (tensors.size() > kMaxTensorsPerBundle) {
    throw exception({errc::invalid_argument, "compress_bundle: more than 2^24 tensors"});
  }

  // Parts: runs of one tensor's values encoded on one thread each; a tensor is cut into one part
  // per thread, but never so small that thread start-up dominates.
  constexpr std::uint64_t kMinValuesPerPart = std::uint64_t{1} << 18;
  plan.threads_ = detail::resolve_threads(options.threads);
  struct part {
    std::uint32_t tensor;
    std::uint64_t begin;  // in the tensor
    std::uint64_t end;
  };
  std::vector<part> parts;
  std::vector<std::size_t> tensor_first_part(tensors.size() + 1, 0);
  for (std::uint32_t t = 0; t < tensors.size(); ++t) {
    tensor_first_part[t] = parts.size();
    const std::uint64_t n = tensors[t].size() / value_size;
    // An empty tensor has no part: a part writes the chunk start at its first bit.
    const std::uint64_t count =
        n == 0 ? 0
               : std::max<std::uint64_t>(
                     1, std::min<std::uint64_t>(plan.threads_, n / kMinValuesPerPart));
    for (std::uint64_t k = 0; k < count; ++k)
      parts.push_back({t, n * k / count, n * (k + 1) / count});
  }
  tensor_first_part[tensors.size()] = parts.size();

  // Pass 1: symbol histograms per part, then per tensor. bf16_in_fp32 and bf16_in_fp16 also
  // check, on the way, that they hold what they claim.
  std::vector<symbol_histogram> part_hist(parts.size(), symbol_histogram{});
  std::vector<std::uint32_t> part_low(parts.size(), 0);
  visit_format(format, [&]<value_format F>() {
    detail::parallel_for(parts.size(), plan.threads_, [&](std::size_t p) {
      const part& q = parts[p];
      part_low[p] = detail::add_symbol_histogram<F>(tensors[q.tensor].data() + q.begin * value_size,
                                                    q.end - q.begin, part_hist[p]);
    });
  });
  for (std::size_t p = 0; p < parts.size(); ++p) {
    if (part_low[p] != 0) {
      throw exception({errc::invalid_argument,
                       "compress_bundle: tensor " + to_string(parts[p].tensor) +
                           (format == value_format::bf16_in_fp16
                                ? " has values that are not BF16 values (mantissa bits below "
                                  "BF16's 8 significant ones are set): not bf16-in-fp16 (code it "
                                  "as fp16)"
                                : " has values whose low 16 bits are not zero: not bf16-in-fp32 "
                                  "(code it as fp32)")});
    }
  }
  std::vector<symbol_histogram> tensor_hist(tensors.size(), symbol_histogram{});
  std::vector<std::uint64_t> tensor_values(tensors.size());
  for (std::uint32_t t = 0; t < tensors.size(); ++t) {
    tensor_values[t] = tensors[t].size() / value_size;
    for (std::size_t p = tensor_first_part[t]; p < tensor_first_part[t + 1]; ++p)
      for (int s = 0; s < kSymbolCount; ++s) tensor_hist[t][s] += part_hist[p][s];
    for (int s = 0; s < kSymbolCount; ++s) plan.histogram_[s] += tensor_hist[t][s];
    plan.tensor_ideal_bits_ += unlimited_huffman_bits(tensor_hist[t]);
  }

  const std::vector<std::uint32_t> starts =
      detail::plan_segments(format, tensor_hist, tensor_values, options);
  bundle_header& h = plan.header_;
  h.format = format;
  h.max_code_length = static_cast<std::uint8_t>(options.max_code_length);
  h.chunk_bytes = options.chunk_bytes;
  h.chunks_per_group = options.chunks_per_group;
  h.value_count = value_count;
  h.tensor_count = static_cast<std::uint32_t>(tensors.size());
  h.segment_count = static_cast<std::uint32_t>(starts.size() - 1);
  std::uint64_t body = detail::first_segment_offset(h.tensor_count, h.segment_count);
  for (std::uint32_t s = 0; s < h.segment_count; ++s) {
    detail::segment_plan seg;
    seg.tensor_begin = starts[s];
    seg.tensor_end = starts[s + 1];
    symbol_histogram hist{};
    for (std::uint32_t t = seg.tensor_begin; t < seg.tensor_end; ++t) {
      seg.value_count += tensor_values[t];
      for (int k = 0; k < kSymbolCount; ++k) hist[k] += tensor_hist[t][k];
    }
    seg.lengths = build_code_lengths(hist, options.max_code_length).value();
    std::tie(seg.first_symbol, seg.symbol_span) = detail::code_symbol_range(seg.lengths);
    // Parts of the segment, with values counted from the segment's first.
    std::uint64_t first_value = 0;
    std::uint64_t first_bit = 0;
    // Pieces of tensors join into parts of at least kMinValuesPerPart values (all but the
    // last): the writer's tail handling assumes a part spans more than a few words.
    for (std::uint32_t t = seg.tensor_begin; t < seg.tensor_end; ++t) {
      for (std::size_t p = tensor_first_part[t]; p < tensor_first_part[t + 1]; ++p) {
        const std::uint64_t piece_begin = first_value + parts[p].begin;
        if (seg.part_value_begin.empty() ||
            piece_begin - seg.part_value_begin.back() >= kMinValuesPerPart) {
          seg.part_value_begin.push_back(piece_begin);
          seg.part_first_bit.push_back(first_bit);
        }
        first_bit += encoded_bits(part_hist[p], seg.lengths);
      }
      first_value += tensor_values[t];
    }
    if (seg.part_value_begin.empty()) {  // only empty tensors
      seg.part_value_begin.push_back(0);
      seg.part_first_bit.push_back(0);
    }
    seg.part_value_begin.push_back(first_value);
    seg.part_first_bit.push_back(first_bit);
    seg.stream_bits = first_bit;
    seg.layout = detail::compute_segment_layout(h.format, body, seg.value_count, seg.stream_bits,
                                                seg.symbol_span, h.chunk_bytes, h.chunks_per_group);
    body = seg.layout.end_offset;
    plan.segments_.push_back(std::move(seg));
  }
  h.stream_bits = plan.segments_.front().stream_bits;
  h.total_bytes = body;
  plan.layout_ = plan.segments_.front().layout;
  plan.layout_.tensor_counts_offset = kBundleHeaderBytes;
  plan.layout_.segment_records_offset = kBundleHeaderBytes + std::uint64_t{h.tensor_count} * 8;
  plan.layout_.total_bytes = body;
  return plan;
}

inline error encode_bundle(const encode_plan& plan, std::span<std::byte> out) {
  const bundle_header& h = plan.header_;
  if (out.size() < h.total_bytes) {
    return {errc::insufficient_space, "encode_bundle: output holds " + std::to_string(out.size()) +
                                          " bytes, the bundle needs " +
                                          std::to_string(h.total_bytes)};
  }
  std::byte* base = out.data();
  auto put_le = [&](std::uint64_t offset, auto value) {
    std::memcpy(base + offset, &value, sizeof value);
  };
  const std::uint64_t bodies = detail::first_segment_offset(h.tensor_count, h.segment_count);
  std::memset(base, 0, bodies);
  put_le(0, kBundleMagic);
  put_le(4, kBundleFormatVersion);
  put_le(6, h.max_code_length);
  put_le(7, static_cast<std::uint8_t>(h.format));
  put_le(8, h.chunk_bytes);
  put_le(12, h.chunks_per_group);
  put_le(16, h.value_count);
  put_le(24, h.tensor_count);
  put_le(28, h.segment_count);
  put_le(32, h.total_bytes);
  const std::size_t value_size = value_bytes(h.format);
  for (std::size_t t = 0; t < plan.tensors_.size(); ++t) {
    put_le(kBundleHeaderBytes + t * 8, std::uint64_t{plan.tensors_[t].size() / value_size});
  }
  const std::uint64_t records = kBundleHeaderBytes + std::uint64_t{h.tensor_count} * 8;
  for (std::size_t s = 0; s < plan.segments_.size(); ++s) {
    const auto& seg = plan.segments_[s];
    put_le(records + s * kSegmentRecordBytes, seg.value_count);
    put_le(records + s * kSegmentRecordBytes + 8, seg.stream_bits);
    put_le(records + s * kSegmentRecordBytes + 16, seg.layout.code_offset);
  }
  // Segments write disjoint sections: they are encoded concurrently, each on the pool as well,
  // so that idle threads help a big segment and small ones do not each wait for a join.
  std::vector<error> failures(plan.segments_.size());
  visit_format(h.format, [&]<value_format F>() {
    detail::parallel_for(plan.segments_.size(), plan.threads_, [&](std::size_t s) {
      failures[s] =
          detail::encode_segment<F>(plan.tensors_, plan.threads_, h, plan.segments_[s], base);
    });
  });
  for (const error& e : failures)
    if (e) throw std::logic_error(e.message);
  return {};
}

inline encode_plan make_encode_plan(std::span<const std::span<const std::uint16_t>> tensors,
                                    const encode_options& options) {
  std::vector<std::span<const std::byte>> bytes;
  bytes.reserve(tensors.size());
  for (const auto& t : tensors) bytes.push_back(std::as_bytes(t));
  return make_encode_plan(value_format::bf16, bytes, options);
}

inline std::vector<std::byte> compress_bundle(value_format format,
                                              std::span<const std::span<const std::byte>> tensors,
                                              const encode_options& options) {
  const encode_plan plan = make_encode_plan(format, tensors, options);
  std::vector<std::byte> bundle(plan.encoded_size());
  throw_if_error(encode_bundle(plan, bundle));
  return bundle;
}

inline std::vector<std::byte> compress_bundle(
    std::span<const std::span<const std::uint16_t>> tensors, const encode_options& options) {
  const encode_plan plan = make_encode_plan(tensors, options);
  std::vector<std::byte> bundle(plan.encoded_size());
  throw_if_error(encode_bundle(plan, bundle));
  return bundle;
}

inline std::vector<std::byte> compress_bundle(std::span<const std::uint16_t> tensor,
                                              const encode_options& options) {
  return compress_bundle(std::span<const std::span<const std::uint16_t>>(&tensor, 1), options);
}

}  // namespace floatzip
