// floatzip internals: the CPU bundle decoder.
//
// Work unit: a sync group (its stream range, value range and output position are all in the
// metadata). One thread decodes up to kDecodeLanes groups at once, interleaved: a single Huffman
// stream is a chain of dependent table look-ups (load, then shift by the length it returns), so
// one stream leaves most of a core idle; independent streams fill it.
//
// The CPU table decodes up to three codewords per look-up (a "multi-symbol table"): exponent
// codes average under 3 bits, so the next max_code_length bits (12 by default) usually hold three
// or more whole codewords, and the chain of dependent look-ups shrinks to about a third. Three
// symbols, their total length and their count still fit a 32-bit entry. (The GPU kernel keeps the
// single-symbol table of huffman.hpp: its 16-bit entries fit shared memory twice as well.)
//
// Exponents are decoded into a small per-lane byte buffer, then merged with the sign/mantissa
// bytes by a separate loop that the compiler vectorises.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <string>

#include "floatzip/bf16.hpp"
#include "floatzip/detail/parallel.hpp"

namespace floatzip {
namespace detail {

inline constexpr int kDecodeLanes = 4;
inline constexpr std::size_t kDecodeBatch = 2048;    // exponents per lane between merges
inline constexpr std::size_t kDecodeBatchSlack = 8;  // 4-byte stores may write 3 bytes past

// One entry of the CPU multi-symbol table, indexed by the next max_code_length bits of the stream:
//
//   bits  0-23  up to three symbols, first in bits 0-7 (the rest meaningless beyond the count)
//   bits 24-27  bits consumed by all symbols of the entry (<= max_code_length <= 15)
//   bits 28-29  zero
//   bits 30-31  symbol count, 1..3: every codeword after the first is taken only if it lies
//               wholly within the index
//
// Why this layout: the fast loop stores the entry's four bytes unconditionally and advances its
// output by the count, one shift; and `entry >> 24` can drive the window shift directly, since
// x86 and AArch64 shifts use only the low 6 bits of the count, where the symbol count is absent.
using multi_entry = std::uint32_t;

constexpr unsigned multi_count(multi_entry e) { return e >> 30; }

// Builds the multi-symbol table from a validated code, and the single-symbol table `single`
// that the careful tail loop uses.
inline void build_multi_table(const code_lengths& lengths, int table_bits,
                              std::span<decode_entry> single, std::span<multi_entry> multi) {
  build_decode_table(lengths, table_bits, single);
  const unsigned index_bits = static_cast<unsigned>(table_bits);
  const std::uint32_t mask = (std::uint32_t{1} << table_bits) - 1;
  for (std::uint32_t i = 0; i <= mask; ++i) {
    std::uint32_t symbols = 0;
    unsigned used = 0;
    unsigned count = 0;
    // The bits beyond the index are unknown, so appending zeros and looking the rest up again
    // is right exactly when the looked-up codeword ends inside the index.
    while (count < 3) {
      const decode_entry next = single[(i << used) & mask];
      const unsigned length = entry_length(next);
      if (count > 0 && (length == 0 || used + length > index_bits)) break;
      symbols |= std::uint32_t{entry_symbol(next)} << (8 * count);
      used += length;
      ++count;
      if (used >= index_bits) break;
    }
    multi[i] = symbols | (used << 24) | (count << 30);
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
  const std::uint8_t* sign_mantissa;
  const multi_entry* table;
  const decode_entry* single;  // the same code, one symbol per entry
  unsigned index_shift;        // 64 - max_code_length
  std::uint16_t* out;
};

inline error group_error(const decode_lane& lane, const char* what) {
  return {errc::bad_data, "bundle: exponent stream of group " + std::to_string(lane.group) + ": " +
                              what + " (at bit " + std::to_string(lane.bit) +
                              ", group ends at bit " + std::to_string(lane.end_bit) + ")"};
}

// Fast loop. Each round takes one 64-bit window per lane (>= 57 valid bits) and makes
// kLookups = floor(56 / TableBits) multi-symbol look-ups in it, producing 1 to 3 exponents each.
// Lane l's exponents go to exponents[l] from index produced[l] on, which the loop advances.
// Rounds continue while every lane can take a full round without exceeding its `target`
// exponents and has not passed its end bit; a lane at or before its end bit loads at most
// 8 bytes from byte end_bit / 8, inside the stream's padding.
// Returns false on overrun, with the lanes as they were after the overrunning round.
//
// Everything the loop touches is copied into locals first: the exponent stores may alias
// anything, and would otherwise force the compiler to reload the table pointer after every
// store. TableBits is a template parameter so that the index shift is an immediate.
template <int Lanes, int TableBits>
bool decode_rounds_fast(const decode_context& ctx, decode_lane* lanes,
                        std::uint8_t (*exponents)[kDecodeBatch + kDecodeBatchSlack],
                        const std::size_t* target, std::size_t* produced) {
  constexpr int kLookups = 56 / TableBits;
  const std::uint8_t* const stream = ctx.stream;
  const multi_entry* const table = ctx.table;
  std::uint64_t bit[Lanes];
  std::uint64_t end_bit[Lanes];
  std::uint8_t* out[Lanes];
  std::uint8_t* out_limit[Lanes];
  for (int l = 0; l < Lanes; ++l) {
    bit[l] = lanes[l].bit;
    end_bit[l] = lanes[l].end_bit;
    out[l] = exponents[l] + produced[l];
    // A round produces at most 3 * kLookups exponents.
    out_limit[l] = exponents[l] + (target[l] >= 3 * kLookups ? target[l] - 3 * kLookups : 0);
  }
  bool overrun = false;
  bool room = true;
  for (int l = 0; l < Lanes; ++l) room &= target[l] >= 3 * kLookups;
  while (room) {
    for (int l = 0; l < Lanes; ++l) {
      overrun |= bit[l] > end_bit[l];
      room &= out[l] <= out_limit[l];
    }
    if (overrun || !room) break;
    for (int l = 0; l < Lanes; ++l) {
      std::uint64_t window = stream_window(stream, bit[l]);
      std::uint8_t* o = out[l];
      // `e >> 24` is the bit count plus 64 times the symbol count: the shift ignores the
      // multiple of 64, and the sum of those multiples is 64 times the exponents produced.
      std::uint64_t consumed_plus = 0;
      for (int s = 0; s < kLookups; ++s) {
        const multi_entry e = table[window >> (64 - TableBits)];
        std::memcpy(o, &e, 4);
        o += multi_count(e);
        const unsigned shift = e >> 24;
        window <<= shift & 63u;
        consumed_plus += shift;
      }
      bit[l] += consumed_plus - 64 * static_cast<std::uint64_t>(o - out[l]);
      out[l] = o;
    }
  }
  for (int l = 0; l < Lanes; ++l) {
    lanes[l].bit = bit[l];
    produced[l] = static_cast<std::size_t>(out[l] - exponents[l]);
  }
  return !overrun;
}

// Careful loop: one codeword at a time with every bound checked.
inline error decode_tail(const decode_context& ctx, decode_lane& lane, std::uint8_t* exponents,
                         std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    if (lane.bit >= lane.end_bit) return group_error(lane, "codewords run out before the values");
    const decode_entry e = ctx.single[stream_window(ctx.stream, lane.bit) >> ctx.index_shift];
    exponents[i] = entry_symbol(e);
    lane.bit += entry_length(e);
  }
  return {};
}

// Merges `count` exponents with their sign/mantissa bytes into the output from value `first` on,
// and meanwhile prefetches the sign/mantissa bytes and output lines of the `ahead_count` values
// from `ahead_first` on: the region that is merged next. Each lane's regions are touched in
// bursts of one batch (2 KiB read, 4 KiB written) that jump between lanes, too short for the
// hardware prefetchers to follow, so without this every new line misses.
inline void merge_values(const decode_context& ctx, std::uint64_t first,
                         const std::uint8_t* exponents, std::size_t count,
                         std::uint64_t ahead_first, std::size_t ahead_count) {
  const std::uint8_t* sm = ctx.sign_mantissa + first;
  std::uint16_t* out = ctx.out + first;
  const std::uint8_t* sm_ahead = ctx.sign_mantissa + ahead_first;
  const std::uint16_t* out_ahead = ctx.out + ahead_first;
  constexpr std::size_t kStep = 64;  // values per cache line of sign/mantissa bytes
  std::size_t i = 0;
  for (; i + kStep <= count; i += kStep) {
    if (i < ahead_count) {
      __builtin_prefetch(sm_ahead + i);
      __builtin_prefetch(out_ahead + i, 1);
      if (i + kStep / 2 < ahead_count) __builtin_prefetch(out_ahead + i + kStep / 2, 1);
    }
    for (std::size_t j = i; j < i + kStep; ++j) out[j] = bf16_merge(exponents[j], sm[j]);
  }
  for (; i < count; ++i) out[i] = bf16_merge(exponents[i], sm[i]);
}

// Decodes one batch (up to kDecodeBatch values) of every lane.
template <int Lanes, int TableBits>
error decode_batch(const decode_context& ctx, decode_lane* lanes,
                   std::uint8_t (*exponents)[kDecodeBatch + kDecodeBatchSlack]) {
  std::size_t target[Lanes];
  std::size_t produced[Lanes] = {};
  for (int l = 0; l < Lanes; ++l) {
    target[l] = static_cast<std::size_t>(
        std::min<std::uint64_t>(kDecodeBatch, lanes[l].end_value - lanes[l].next_value));
  }
  bool sound = decode_rounds_fast<Lanes, TableBits>(ctx, lanes, exponents, target, produced);
  if constexpr (Lanes > 1) {
    // The joint rounds stop when the first lane nears its target; the others lag behind it by
    // a random walk of tens of exponents, too many for the careful loop.
    for (int l = 0; sound && l < Lanes; ++l) {
      sound =
          decode_rounds_fast<1, TableBits>(ctx, lanes + l, exponents + l, target + l, produced + l);
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
    if (error e = decode_tail(ctx, lanes[l], exponents[l] + produced[l], target[l] - produced[l])) {
      return e;
    }
  }
  for (int l = 0; l < Lanes; ++l) {
    // Merged next: the next lane's batch, or after the last lane, the first lane's next batch
    // (its next_value has already moved on).
    const decode_lane& ahead = lanes[(l + 1) % Lanes];
    const std::size_t ahead_count = static_cast<std::size_t>(
        std::min<std::uint64_t>(kDecodeBatch, ahead.end_value - ahead.next_value));
    merge_values(ctx, lanes[l].next_value, exponents[l], target[l], ahead.next_value, ahead_count);
    lanes[l].next_value += target[l];
  }
  return {};
}

template <int TableBits>
error decode_lanes(const decode_context& ctx, decode_lane* lanes, int lane_count) {
  alignas(64) std::uint8_t exponents[kDecodeLanes][kDecodeBatch + kDecodeBatchSlack];
  while (lane_count > 0) {
    error e;
    switch (lane_count) {
      case 4: e = decode_batch<4, TableBits>(ctx, lanes, exponents); break;
      case 3: e = decode_batch<3, TableBits>(ctx, lanes, exponents); break;
      case 2: e = decode_batch<2, TableBits>(ctx, lanes, exponents); break;
      default: e = decode_batch<1, TableBits>(ctx, lanes, exponents); break;
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

// Calls fn.template operator()<B>() with B == table_bits, a compile-time constant.
template <class Fn>
auto dispatch_table_bits(int table_bits, Fn&& fn) {
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

inline error decompress(const bundle_view& bundle, std::span<std::uint16_t> out,
                        const decode_options& options) {
  const std::uint64_t value_count = bundle.value_count();
  if (out.size() < value_count) {
    return {errc::insufficient_space, "decompress: output holds " + std::to_string(out.size()) +
                                          " values, the bundle has " + std::to_string(value_count)};
  }
  if (value_count == 0) return {};

  const int table_bits = bundle.max_code_length();
  const std::size_t table_size = std::size_t{1} << table_bits;
  std::array<decode_entry, std::size_t{1} << kMaxCodeLength> single;
  std::array<detail::multi_entry, std::size_t{1} << kMaxCodeLength> table;
  detail::build_multi_table(bundle.code(), table_bits,
                            std::span<decode_entry>(single.data(), table_size),
                            std::span<detail::multi_entry>(table.data(), table_size));
  const detail::decode_context ctx{bundle.exponent_stream(),
                                   bundle.sign_mantissa(),
                                   table.data(),
                                   single.data(),
                                   static_cast<unsigned>(64 - table_bits),
                                   out.data()};

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
    error e = detail::dispatch_table_bits(
        table_bits, [&]<int Bits>() { return detail::decode_lanes<Bits>(ctx, lanes, lane_count); });
    if (e && !error_taken.test_and_set()) {
      first_error = std::move(e);
      failed.store(true);
    }
  });
  return first_error;
}

}  // namespace floatzip
