// floatzip internals: the CPU bundle decoder.
//
// Work unit: a sync group (its stream range, value range and output position are all in the
// metadata). One thread decodes up to kDecodeLanes groups at once, interleaved: a single Huffman
// stream is a chain of dependent table look-ups (load, then shift by the length it returns), so
// one stream leaves most of a core idle; independent streams fill it.
//
// The CPU table decodes up to two codewords per look-up (a "pair table"): exponent codes average
// under 3 bits, so the next max_code_length bits usually hold two whole codewords, and the chain
// of dependent look-ups halves. (The GPU kernel keeps the single-symbol table of huffman.hpp:
// its 16-bit entries fit shared memory twice as well.)
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
inline constexpr std::size_t kDecodeBatchSlack = 8;  // pair stores may write one byte past

// One entry of the CPU pair table, indexed by the next max_code_length bits of the stream:
//
//   bits  0-7   first symbol
//   bits  8-15  second symbol (meaningless when the count is 1)
//   bits 16-20  bits consumed by all symbols of the entry
//   bits 21-25  length of the first codeword alone
//   bits 26-27  symbol count: 1, or 2 when the second codeword also lies wholly in the index
//   bits 28-31  zero
using pair_entry = std::uint32_t;

constexpr std::uint32_t pair_symbols(pair_entry e) { return e & 0xFFFFu; }
constexpr unsigned pair_bits(pair_entry e) { return (e >> 16) & 0x1Fu; }
constexpr unsigned pair_first_length(pair_entry e) { return (e >> 21) & 0x1Fu; }
constexpr unsigned pair_count(pair_entry e) { return e >> 26; }

// Builds the pair table from a validated code. `single` is scratch for the one-symbol table.
inline void build_pair_table(const code_lengths& lengths, int table_bits,
                             std::span<decode_entry> single, std::span<pair_entry> pairs) {
  build_decode_table(lengths, table_bits, single);
  const std::uint32_t mask = (std::uint32_t{1} << table_bits) - 1;
  for (std::uint32_t i = 0; i <= mask; ++i) {
    const decode_entry first = single[i];
    const unsigned l1 = entry_length(first);
    pair_entry e = entry_symbol(first) | (l1 << 16) | (l1 << 21) | (1u << 26);
    if (l1 < static_cast<unsigned>(table_bits)) {
      const decode_entry second = single[(i << l1) & mask];
      const unsigned l2 = entry_length(second);
      if (l2 != 0 && l1 + l2 <= static_cast<unsigned>(table_bits)) {
        e = entry_symbol(first) | (std::uint32_t{entry_symbol(second)} << 8) | ((l1 + l2) << 16) |
            (l1 << 21) | (2u << 26);
      }
    }
    pairs[i] = e;
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
  const pair_entry* table;
  unsigned index_shift;  // 64 - max_code_length
  std::uint16_t* out;
};

inline error group_error(const decode_lane& lane, const char* what) {
  return {errc::bad_data, "bundle: exponent stream of group " + std::to_string(lane.group) + ": " +
                              what + " (at bit " + std::to_string(lane.bit) +
                              ", group ends at bit " + std::to_string(lane.end_bit) + ")"};
}

// Fast loop. Each round takes one 64-bit window per lane (>= 57 valid bits) and makes
// kLookups = floor(56 / TableBits) pair look-ups in it, producing 1 or 2 exponents each.
// Rounds continue while every lane can take a full round without exceeding its `target`
// exponents and has not passed its end bit; a lane at or before its end bit loads at most
// 8 bytes from byte end_bit / 8, inside the stream's padding.
// Returns false on overrun, with the lanes as they were before the failing round.
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
  const pair_entry* const table = ctx.table;
  std::uint64_t bit[Lanes];
  std::uint64_t end_bit[Lanes];
  std::uint8_t* out[Lanes];
  std::uint8_t* out_limit[Lanes];
  for (int l = 0; l < Lanes; ++l) {
    bit[l] = lanes[l].bit;
    end_bit[l] = lanes[l].end_bit;
    out[l] = exponents[l];
    // A round produces at most 2 * kLookups exponents.
    out_limit[l] = exponents[l] + (target[l] >= 2 * kLookups ? target[l] - 2 * kLookups : 0);
  }
  bool overrun = false;
  bool room = true;
  for (int l = 0; l < Lanes; ++l) room &= target[l] >= 2 * kLookups;
  while (room) {
    for (int l = 0; l < Lanes; ++l) {
      overrun |= bit[l] > end_bit[l];
      room &= out[l] <= out_limit[l];
    }
    if (overrun || !room) break;
    for (int l = 0; l < Lanes; ++l) {
      std::uint64_t window = stream_window(stream, bit[l]);
      std::uint8_t* o = out[l];
      unsigned consumed = 0;
      for (int s = 0; s < kLookups; ++s) {
        const pair_entry e = table[window >> (64 - TableBits)];
        const std::uint16_t both = static_cast<std::uint16_t>(pair_symbols(e));
        std::memcpy(o, &both, 2);
        o += pair_count(e);
        window <<= pair_bits(e);
        consumed += pair_bits(e);
      }
      out[l] = o;
      bit[l] += consumed;
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
    const pair_entry e = ctx.table[stream_window(ctx.stream, lane.bit) >> ctx.index_shift];
    exponents[i] = static_cast<std::uint8_t>(e & 0xFFu);
    lane.bit += pair_first_length(e);
  }
  return {};
}

inline void merge_values(const decode_context& ctx, std::uint64_t first,
                         const std::uint8_t* exponents, std::size_t count) {
  const std::uint8_t* sm = ctx.sign_mantissa + first;
  std::uint16_t* out = ctx.out + first;
  for (std::size_t i = 0; i < count; ++i) out[i] = bf16_merge(exponents[i], sm[i]);
}

// Decodes one batch (up to kDecodeBatch values) of every lane.
template <int Lanes, int TableBits>
error decode_batch(const decode_context& ctx, decode_lane* lanes,
                   std::uint8_t (*exponents)[kDecodeBatch + kDecodeBatchSlack]) {
  std::size_t target[Lanes];
  std::size_t produced[Lanes];
  for (int l = 0; l < Lanes; ++l) {
    target[l] = static_cast<std::size_t>(
        std::min<std::uint64_t>(kDecodeBatch, lanes[l].end_value - lanes[l].next_value));
  }
  if (!decode_rounds_fast<Lanes, TableBits>(ctx, lanes, exponents, target, produced)) {
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
    merge_values(ctx, lanes[l].next_value, exponents[l], target[l]);
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
  std::array<detail::pair_entry, std::size_t{1} << kMaxCodeLength> table;
  detail::build_pair_table(bundle.code(), table_bits,
                           std::span<decode_entry>(single.data(), table_size),
                           std::span<detail::pair_entry>(table.data(), table_size));
  const detail::decode_context ctx{bundle.exponent_stream(), bundle.sign_mantissa(), table.data(),
                                   static_cast<unsigned>(64 - table_bits), out.data()};

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
