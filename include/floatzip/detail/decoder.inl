// floatzip internals: the CPU bundle decoder.
//
// Work unit: a sync group (its stream range, value range and output position are all in the
// metadata). One thread decodes up to kLanes groups at once, interleaved symbol by symbol: a
// single Huffman stream is a chain of dependent table look-ups (load, then shift by the length
// it returns), so one stream leaves most of a core idle; independent streams fill it.
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
inline constexpr std::size_t kDecodeBatch = 2048;  // exponents per lane between merges

struct decode_lane {
  std::uint64_t group;
  std::uint64_t bit;        // next codeword
  std::uint64_t end_bit;    // where the group's codewords must end
  std::uint64_t next_value; // output index of the next value
  std::uint64_t end_value;
};

struct decode_context {
  const std::uint8_t* stream;
  const std::uint8_t* sign_mantissa;
  const decode_entry* table;
  unsigned index_shift;  // 64 - max_code_length
  std::uint16_t* out;
};

inline error group_error(const decode_lane& lane, const char* what) {
  return {errc::bad_data, "bundle: exponent stream of group " + std::to_string(lane.group) +
                              ": " + what + " (at bit " + std::to_string(lane.bit) + ", group ends at bit " +
                              std::to_string(lane.end_bit) + ")"};
}

// Fast loop: `steps` rounds, each decoding SymbolsPerWindow codewords from every lane out of one
// 64-bit window per lane. A window holds >= 57 valid bits and SymbolsPerWindow * L <= 56.
// Before each round a lane must not have passed its end bit; then its one load per round stays
// within end_bit / 8 + 8 bytes, inside the stream's padding.
// Returns false, leaving the lanes where they were before the failing round, on overrun.
//
// Everything the loop touches is copied into locals first: the exponent stores are byte stores,
// which may alias anything, and would otherwise force the compiler to reload the table pointer
// after every store. TableBits is a template parameter so the index shift is an immediate.
template <int Lanes, int SymbolsPerWindow, int TableBits>
bool decode_rounds_fast(const decode_context& ctx, decode_lane* lanes,
                        std::uint8_t (*exponents)[kDecodeBatch], std::size_t steps) {
  const std::uint8_t* const stream = ctx.stream;
  const decode_entry* const table = ctx.table;
  std::uint64_t bit[Lanes];
  std::uint64_t end_bit[Lanes];
  for (int l = 0; l < Lanes; ++l) {
    bit[l] = lanes[l].bit;
    end_bit[l] = lanes[l].end_bit;
  }
  bool overrun = false;
  std::size_t k = 0;
  for (std::size_t step = 0; step < steps; ++step) {
    for (int l = 0; l < Lanes; ++l) overrun |= bit[l] > end_bit[l];
    if (overrun) break;
    for (int l = 0; l < Lanes; ++l) {
      std::uint64_t window = stream_window(stream, bit[l]);
      unsigned consumed = 0;
      for (int s = 0; s < SymbolsPerWindow; ++s) {
        const decode_entry e = table[window >> (64 - TableBits)];
        const unsigned length = entry_length(e);
        exponents[l][k + s] = entry_symbol(e);
        window <<= length;
        consumed += length;
      }
      bit[l] += consumed;
    }
    k += SymbolsPerWindow;
  }
  for (int l = 0; l < Lanes; ++l) lanes[l].bit = bit[l];
  return !overrun;
}

// Careful loop: one codeword at a time with every bound checked.
inline error decode_tail(const decode_context& ctx, decode_lane& lane, std::uint8_t* exponents,
                         std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    if (lane.bit >= lane.end_bit) return group_error(lane, "codewords run out before the values");
    const decode_entry e = ctx.table[stream_window(ctx.stream, lane.bit) >> ctx.index_shift];
    exponents[i] = entry_symbol(e);
    lane.bit += entry_length(e);
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
template <int Lanes, int SymbolsPerWindow, int TableBits>
error decode_batch(const decode_context& ctx, decode_lane* lanes,
                   std::uint8_t (*exponents)[kDecodeBatch]) {
  std::size_t batch[Lanes];
  std::size_t common = kDecodeBatch;
  for (int l = 0; l < Lanes; ++l) {
    batch[l] = static_cast<std::size_t>(
        std::min<std::uint64_t>(kDecodeBatch, lanes[l].end_value - lanes[l].next_value));
    common = std::min(common, batch[l]);
  }
  const std::size_t steps = common / SymbolsPerWindow;
  std::size_t done = steps * SymbolsPerWindow;
  if (!decode_rounds_fast<Lanes, SymbolsPerWindow, TableBits>(ctx, lanes, exponents, steps)) {
    for (int l = 0; l < Lanes; ++l) {
      if (lanes[l].bit > lanes[l].end_bit) {
        return group_error(lanes[l], "codewords run past the group's end");
      }
    }
  }
  for (int l = 0; l < Lanes; ++l) {
    if (error e = decode_tail(ctx, lanes[l], exponents[l] + done, batch[l] - done)) return e;
    merge_values(ctx, lanes[l].next_value, exponents[l], batch[l]);
    lanes[l].next_value += batch[l];
  }
  return {};
}

template <int TableBits>
error decode_lanes(const decode_context& ctx, decode_lane* lanes, int lane_count) {
  constexpr int kSymbolsPerWindow = std::min(4, 56 / TableBits);
  alignas(64) std::uint8_t exponents[kDecodeLanes][kDecodeBatch];
  while (lane_count > 0) {
    error e;
    switch (lane_count) {
      case 4: e = decode_batch<4, kSymbolsPerWindow, TableBits>(ctx, lanes, exponents); break;
      case 3: e = decode_batch<3, kSymbolsPerWindow, TableBits>(ctx, lanes, exponents); break;
      case 2: e = decode_batch<2, kSymbolsPerWindow, TableBits>(ctx, lanes, exponents); break;
      default: e = decode_batch<1, kSymbolsPerWindow, TableBits>(ctx, lanes, exponents); break;
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
                                          " values, the bundle has " +
                                          std::to_string(value_count)};
  }
  if (value_count == 0) return {};

  const int table_bits = bundle.max_code_length();
  std::array<decode_entry, std::size_t{1} << kMaxCodeLength> table;
  build_decode_table(bundle.code(), table_bits,
                     std::span<decode_entry>(table.data(), std::size_t{1} << table_bits));
  const detail::decode_context ctx{bundle.exponent_stream(), bundle.sign_mantissa(), table.data(),
                                   static_cast<unsigned>(64 - table_bits), out.data()};

  constexpr std::uint64_t kMinValuesPerThread = std::uint64_t{1} << 18;
  const std::uint64_t groups = bundle.group_count();
  const std::uint64_t tasks = (groups + detail::kDecodeLanes - 1) / detail::kDecodeLanes;
  const unsigned threads = static_cast<unsigned>(std::min<std::uint64_t>(
      detail::resolve_threads(options.threads), std::max<std::uint64_t>(1, value_count / kMinValuesPerThread)));

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
    error e = detail::dispatch_table_bits(table_bits, [&]<int Bits>() {
      return detail::decode_lanes<Bits>(ctx, lanes, lane_count);
    });
    if (e && !error_taken.test_and_set()) {
      first_error = std::move(e);
      failed.store(true);
    }
  });
  return first_error;
}

}  // namespace floatzip
