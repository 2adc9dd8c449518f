// floatzip internals: the per-thread work of the GPU decode kernel, written once.
//
// The kernel (cuda/decode_kernel.cuh) and the CPU executor (cpu_executor.hpp) both call these
// functions; only the launch, the block-wide scan, the barriers and the shared-memory placement
// differ. Running the executor over a bundle therefore tests everything the kernel computes:
// segment boundaries, the chunk walk, output positions, the tiling of the staging buffer, the
// alignment of the wide stores and the merge of the symbols with the raw planes.
//
// Every value format (value_format.hpp) runs the same code: phase 1 and the decode into the
// stage only see symbol bytes, so they do not depend on the format; the merge is a template over
// it (format_traits<F>: the output's value_type, whether a raw byte and a low half per value
// exist) and so are the kernel and the executor, instantiated per format.
//
// One thread block decodes one sync group, in two phases:
//
//   phase 1  thread t takes a segment of the group's chunks (one chunk when chunks_per_group ==
//            threads per block), starts at its first codeword (chunk gap) and counts the
//            codewords that start before the segment's end boundary: walk_segment(), up to three
//            codewords per look-up of the multi-symbol table, two look-ups per refill check,
//            the last few codewords one by one.
//   scan     an exclusive sum of the counts gives each thread the index of its first value in
//            the group; the block checks the counts and boundaries (block_fault()) before it
//            writes anything.
//   phase 2  threads decode their segment again, the same way, writing exponent bytes into a
//            shared "stage" as aligned 32-bit words (decode_to_stage(); after a barrier each
//            thread's last partial word byte by byte, flush_stage_tail()), then the whole block
//            merges the stage with the raw planes (sign/mantissa bytes, FP32's low halves) into
//            the output with 16-byte stores (merge_tile_part()). A group larger than the stage is
//            done in several tiles; each thread's decoder state carries over from tile to tile.
//
// Output "slots": the stage is laid out so that U = slots_per_store(F) consecutive slots (8 for
// 16-bit formats, 4 for 32-bit ones, 16 for FP8) are one 16-byte-aligned store in the output.
// Slot s of a group holds its value s - lead, where lead is how far the group's first value lies
// past a 16-byte boundary of the output (in values). Tiles start at multiples of the stage size,
// itself a multiple of U slots (and of 4: the stage is written in 32-bit words).
//
// Stream reads use aligned 32-bit words counted from the stream section's start (a GPU cannot
// load unaligned words). A reader holds at most 64 bits and refills one word when fewer than
// 2 * TableBits (at most 30) remain, so it never loads more than 61 bits past the codeword it
// decodes next; a segment never decodes a codeword that starts at or after min(its end
// boundary, stream_bits). Every load therefore lies within ceil(stream_bits / 8) + 8 bytes of
// the section start, inside the kStreamPaddingBytes padding the format guarantees.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "floatzip/bf16.hpp"
#include "floatzip/bundle_format.hpp"
#include "floatzip/config.hpp"
#include "floatzip/error.hpp"
#include "floatzip/gpu.hpp"
#include "floatzip/huffman.hpp"
#include "floatzip/value_format.hpp"

namespace floatzip::detail {

// Values per 16-byte store of the output: a store unit of the stage is that many slots (16 for
// an unknown format, which validate_view refuses before anything uses it).
constexpr std::uint32_t slots_per_store(value_format f) {
  return is_known(f) ? 16 / static_cast<std::uint32_t>(value_bytes(f)) : 16;
}
inline constexpr std::uint32_t kMaxSlotsPerStore = 16;  // FP8
// A group's stream span must stay below this so that in-group offsets fit 32-bit registers.
inline constexpr std::uint64_t kMaxGroupBits = std::uint64_t{1} << 31;

// Loops that run a few iterations per thread (a segment's or tile's last codewords, a partial
// word or store unit): unrolled, their copies would be straight code every warp issues.
#if defined(__CUDA_ARCH__)
#define FLOATZIP_KERNEL_NO_UNROLL _Pragma("unroll 1")
#else
#define FLOATZIP_KERNEL_NO_UNROLL
#endif

// ---- instrumentation hook -----------------------------------------------------------------------
// The per-thread functions report each iteration of their loops, their shared-memory accesses
// and their stream refills to a probe. The kernel and the CPU executor pass no_probe, whose calls
// compile to nothing; the kernel cost model (bench/bench_gpu_model.cpp) passes a recorder and
// replays a warp's 32 threads in lockstep to count steps, active lanes and bank conflicts of this
// very code. Offsets are bytes from the start of the decode tables or of the stage.
enum class loop_kind : unsigned {
  walk_pair,      // phase 1, two multi-symbol look-ups per iteration (walk_pair_steps)
  walk_multi,     // phase 1, a multi-symbol look-up per step (walk_multi_steps)
  walk_single,    // phase 1, the segment's last codewords one by one (walk_single_steps)
  decode_pair,    // phase 2 (decode_pair_steps)
  decode_multi,   // phase 2 (decode_multi_steps)
  decode_single,  // phase 2 (decode_single_steps)
  merge,          // one whole store unit, 16 bytes of output (merge_aligned_units)
  flush,          // a thread's last partial stage word (flush_stage_tail)
  merge_partial,  // one value of the group's first or last store unit (merge_partial_unit)
  merge_shifted,  // one whole unit, raw planes not unit-aligned (merge_shifted_units)
};
inline constexpr unsigned kLoopKinds = 10;

struct no_probe {
  FLOATZIP_HD void step(loop_kind /*kind*/) const {}
  FLOATZIP_HD void table_lookup(std::uint32_t /*byte_offset*/, unsigned /*bytes*/) const {}
  FLOATZIP_HD void stream_refill() const {}
  FLOATZIP_HD void stage_store(std::uint32_t /*byte_offset*/, unsigned /*bytes*/) const {}
  FLOATZIP_HD void stage_load(std::uint32_t /*byte_offset*/, unsigned /*bytes*/) const {}
  // A whole store unit merged value by value through the traits (unit_merge's fallback).
  FLOATZIP_HD void merge_by_traits() const {}
};

// ---- loads and stores ---------------------------------------------------------------------------
// The device loads through typed pointers: alignment is a precondition, and a misaligned access
// would fault. The host (the CPU executor) goes through memcpy, which would hide a misaligned
// address, so it checks the alignment the device relies on and throws: that is how the tests
// prove the kernel's alignment arithmetic.

#if !defined(__CUDA_ARCH__)
inline void require_host_alignment(const void* p, std::uintptr_t alignment, const char* what) {
  if (reinterpret_cast<std::uintptr_t>(p) % alignment != 0) {
    throw std::logic_error(std::string("floatzip kernel logic: misaligned ") + what);
  }
}
#endif

FLOATZIP_HD std::uint32_t load_u32_aligned(const std::uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const std::uint32_t*>(p);
#else
  require_host_alignment(p, 4, "32-bit load");
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
#endif
}

FLOATZIP_HD std::uint64_t load_u64_aligned(const std::uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const std::uint64_t*>(p);
#else
  require_host_alignment(p, 8, "64-bit load");
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
#endif
}

// Stores four 32-bit words, lowest address first. Precondition: p is 16-byte aligned.
FLOATZIP_HD void store_16_aligned(void* p, std::uint32_t w0, std::uint32_t w1, std::uint32_t w2,
                                  std::uint32_t w3) {
#if defined(__CUDA_ARCH__)
  // One 16-byte store, said in PTX: NVVM split a uint4 store through the cast pointer into four
  // 4-byte ones. Device memory's generic addresses are its global ones.
  asm("st.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(w0), "r"(w1), "r"(w2), "r"(w3)
      : "memory");
#else
  require_host_alignment(p, 16, "16-byte store");
  const std::uint32_t words[4] = {w0, w1, w2, w3};
  std::memcpy(p, words, sizeof words);
#endif
}

// Stores one 32-bit word. Precondition: p is 4-byte aligned.
FLOATZIP_HD void store_u32_aligned(std::uint8_t* p, std::uint32_t v) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<std::uint32_t*>(p) = v;
#else
  require_host_alignment(p, 4, "32-bit store");
  std::memcpy(p, &v, sizeof v);
#endif
}

// One PRMT on the device.
FLOATZIP_HD std::uint32_t byte_swap32(std::uint32_t v) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(v, 0, 0x0123);
#else
  return (v >> 24) | ((v >> 8) & 0x0000FF00u) | ((v << 8) & 0x00FF0000u) | (v << 24);
#endif
}

// ---- bundle metadata through the view ----------------------------------------------------------

FLOATZIP_HD unsigned chunk_gap(const device_bundle_view& v, std::uint64_t chunk) {
  const std::uint8_t b = v.chunk_gaps[chunk >> 1];
  return (chunk & 1) != 0 ? b >> 4 : b & 0x0Fu;
}

FLOATZIP_HD std::uint64_t chunk_start_bit(const device_bundle_view& v, std::uint64_t chunk) {
  return chunk * v.chunk_bits + chunk_gap(v, chunk);
}

FLOATZIP_HD std::uint64_t group_value_position(const device_bundle_view& v, std::uint64_t group) {
  return load_u64_aligned(reinterpret_cast<const std::uint8_t*>(v.group_positions + group));
}

// ---- the decode tables
// --------------------------------------------------------------------------- The kernel's tables,
// built on the host from the bundle's code (build_kernel_tables) and copied into shared memory by
// every block, one after the other:
//
//   12-bit tables: multi_entry[4096] (16 KiB), then decode_entry[4096] (8 KiB)
//   15-bit tables: decode_entry[32768] (64 KiB); the single-symbol entries serve as one-symbol
//                  multi entries (a 32-bit multi table would take 128 KiB)
//
// A multi entry decodes, from the TableBits bits at the front of the stream, every whole codeword
// that fits in them, up to three:
//
//   bits  0-23  the symbols, the first codeword's in bits 0-7; bytes past the count are zero
//   bits 24-25  how many, 1..3
//   bits 26-27  zero
//   bits 28-31  their total length in bits, 1..TableBits (on top: one shift extracts it)
//
// The single-symbol entries (huffman.hpp's decode_entry) finish a segment or a tile exactly,
// where the next codewords belong to another thread or tile.
using multi_entry = std::uint32_t;

FLOATZIP_HD constexpr multi_entry make_multi_entry(std::uint32_t symbols, unsigned length,
                                                   unsigned count) {
  return symbols | (count << 24) | (length << 28);
}

// What one look-up decodes: symbols (first in the low byte), their total length, how many.
struct decoded_step {
  std::uint32_t symbols;
  unsigned length;
  unsigned count;
};

FLOATZIP_HD decoded_step decoded_step_of(multi_entry e) {
  return {e & 0x00FFFFFFu, e >> 28, (e >> 24) & 0x03u};
}
FLOATZIP_HD decoded_step decoded_step_of(decode_entry e) {
  return {entry_symbol(e), entry_length(e), 1};
}

inline constexpr bool kernel_has_multi_table(int table_bits) { return table_bits <= 12; }

inline constexpr std::uint32_t kernel_multi_table_bytes(int table_bits) {
  return kernel_has_multi_table(table_bits) ? std::uint32_t{sizeof(multi_entry)} << table_bits : 0;
}
inline constexpr std::uint32_t kernel_tables_bytes(int table_bits) {
  return kernel_multi_table_bytes(table_bits) + (std::uint32_t{sizeof(decode_entry)} << table_bits);
}

// The two tables of one width, over host or shared memory holding kernel_tables_bytes bytes.
template <int TableBits>
struct kernel_tables {
  using multi_type =
      std::conditional_t<kernel_has_multi_table(TableBits), multi_entry, decode_entry>;
  const multi_type* multi;
  const decode_entry* single;

  FLOATZIP_HD explicit kernel_tables(const void* base)
      : multi(static_cast<const multi_type*>(base)),
        single(reinterpret_cast<const decode_entry*>(static_cast<const std::uint8_t*>(base) +
                                                     kernel_multi_table_bytes(TableBits))) {}
};

// ---- the bit reader -----------------------------------------------------------------------------

// MSB-first reader over aligned big-endian 32-bit words of the stream. `bits` holds `valid`
// stream bits left-aligned, all lower bits zero; `next` is the word just past them.
struct stream_reader {
  const std::uint8_t* next;
  std::uint64_t bits;
  unsigned valid;

  FLOATZIP_HD void start(const std::uint8_t* stream_section, std::uint64_t bit_pos) {
    const std::uint8_t* word = stream_section + (bit_pos >> 5) * 4;
    const std::uint64_t pair = (std::uint64_t{byte_swap32(load_u32_aligned(word))} << 32) |
                               byte_swap32(load_u32_aligned(word + 4));
    const unsigned skip = static_cast<unsigned>(bit_pos & 31);
    bits = pair << skip;
    valid = 64 - skip;
    next = word + 8;
  }

  // Tops the buffer up to at least Bits bits (TableBits for one look-up, 2 * TableBits <= 30
  // for two): a word is loaded only when fewer remain, which bounds the look-ahead (see the file
  // comment). The pair loops check once per two look-ups.
  template <int Bits, class Probe>
  FLOATZIP_HD void refill(Probe probe) {
    static_assert(Bits <= 32, "one 32-bit word must fit the 64-bit buffer");
    if (valid < static_cast<unsigned>(Bits)) {
      probe.stream_refill();
      bits |= std::uint64_t{byte_swap32(load_u32_aligned(next))} << (32 - valid);
      valid += 32;
      next += 4;
    }
  }

  // The entry of `table` (2^TableBits entries) indexed by the front TableBits bits.
  template <int TableBits, class Entry, class Probe>
  FLOATZIP_HD Entry look_up(const Entry* table, const void* tables_base, Probe probe) const {
    const auto index = static_cast<std::uint32_t>(bits >> (64 - TableBits));
    probe.table_lookup(static_cast<std::uint32_t>(reinterpret_cast<const std::uint8_t*>(table) -
                                                  static_cast<const std::uint8_t*>(tables_base)) +
                           index * static_cast<std::uint32_t>(sizeof(Entry)),
                       sizeof(Entry));
    return table[index];
  }

  // Precondition: length <= valid, true for an entry of a table built for this TableBits.
  FLOATZIP_HD void consume(unsigned length) {
    bits <<= length;
    valid -= length;
  }
};

// ---- phase 1: segments and the chunk walk -------------------------------------------------------

// The stream span one thread decodes. Codewords that start in [begin_bit, begin_bit +
// limit_bits) are the thread's; the last of them must end exactly at expected_end_bit, where the
// next segment's first codeword starts.
struct thread_segment {
  std::uint64_t begin_bit = 0;
  std::uint64_t expected_end_bit = 0;
  std::uint32_t limit_bits = 0;
  bool empty = true;  // the thread has no chunk (group smaller than the block)
  bool valid = true;  // false: the chunk gap points past the stream
};

FLOATZIP_HD thread_segment thread_segment_of(const device_bundle_view& v, std::uint64_t group,
                                             unsigned thread, unsigned threads) {
  thread_segment s;
  const std::uint64_t first_chunk = group * v.chunks_per_group;
  const std::uint64_t chunks_left = v.chunk_count - first_chunk;
  const std::uint32_t chunks = chunks_left < v.chunks_per_group
                                   ? static_cast<std::uint32_t>(chunks_left)
                                   : v.chunks_per_group;
  const std::uint32_t per_thread = (v.chunks_per_group + threads - 1) / threads;
  const std::uint32_t c0 = thread * per_thread < chunks ? thread * per_thread : chunks;
  const std::uint32_t c1 = c0 + per_thread < chunks ? c0 + per_thread : chunks;
  if (c0 == c1) return s;
  s.empty = false;
  const std::uint64_t begin = chunk_start_bit(v, first_chunk + c0);
  const std::uint64_t boundary = (first_chunk + c1) * v.chunk_bits;
  const std::uint64_t limit = boundary < v.stream_bits ? boundary : v.stream_bits;
  s.begin_bit = begin;
  s.valid = begin <= limit;
  s.limit_bits = s.valid ? static_cast<std::uint32_t>(limit - begin) : 0;
  s.expected_end_bit =
      first_chunk + c1 < v.chunk_count ? chunk_start_bit(v, first_chunk + c1) : v.stream_bits;
  return s;
}

struct segment_walk {
  std::uint32_t count = 0;       // codewords that start in the segment
  std::uint32_t end_offset = 0;  // where the last of them ends, relative to begin_bit
};

// Phase 1's main loop: two multi-symbol steps per iteration and one refill check for both, while
// every codeword the two can decode starts within 2 * TableBits bits of offset, i.e. before the
// segment's limit.
template <int TableBits, class Probe>
FLOATZIP_HD void walk_pair_steps(stream_reader& reader, const kernel_tables<TableBits>& tables,
                                 std::uint32_t limit_bits, std::uint32_t& offset,
                                 std::uint32_t& count, Probe probe) {
  if (limit_bits < 2u * TableBits) return;
  const std::uint32_t last_start = limit_bits - 2 * TableBits;  // one compare an iteration
  while (offset <= last_start) {
    probe.step(loop_kind::walk_pair);
    reader.refill<2 * TableBits>(probe);
    const decoded_step first =
        decoded_step_of(reader.look_up<TableBits>(tables.multi, tables.multi, probe));
    reader.consume(first.length);
    probe.step(loop_kind::walk_pair);
    const decoded_step second =
        decoded_step_of(reader.look_up<TableBits>(tables.multi, tables.multi, probe));
    reader.consume(second.length);
    offset += first.length + second.length;
    count += first.count + second.count;
  }
}

// Then single multi-symbol steps while every codeword a step can decode starts inside the
// TableBits-bit window at offset, i.e. before the segment's limit.
template <int TableBits, class Probe>
FLOATZIP_HD void walk_multi_steps(stream_reader& reader, const kernel_tables<TableBits>& tables,
                                  std::uint32_t limit_bits, std::uint32_t& offset,
                                  std::uint32_t& count, Probe probe) {
  if (limit_bits < static_cast<std::uint32_t>(TableBits)) return;
  const std::uint32_t last_start = limit_bits - TableBits;  // one compare a step, no add
  FLOATZIP_KERNEL_NO_UNROLL
  while (offset <= last_start) {
    probe.step(loop_kind::walk_multi);
    reader.refill<TableBits>(probe);
    const decoded_step d =
        decoded_step_of(reader.look_up<TableBits>(tables.multi, tables.multi, probe));
    reader.consume(d.length);
    offset += d.length;
    count += d.count;
  }
}

// The segment's last codewords, one look-up each, up to the first that starts at the limit.
template <int TableBits, class Probe>
FLOATZIP_HD void walk_single_steps(stream_reader& reader, const kernel_tables<TableBits>& tables,
                                   std::uint32_t limit_bits, std::uint32_t& offset,
                                   std::uint32_t& count, Probe probe) {
  FLOATZIP_KERNEL_NO_UNROLL
  while (offset < limit_bits) {
    probe.step(loop_kind::walk_single);
    reader.refill<TableBits>(probe);
    const unsigned length =
        entry_length(reader.look_up<TableBits>(tables.single, tables.multi, probe));
    reader.consume(length);
    offset += length;
    ++count;
  }
}

// Phase 1 of one thread: counts the segment's codewords. Never decodes a codeword that starts at
// or past begin_bit + limit_bits.
template <int TableBits, class Probe = no_probe>
FLOATZIP_HD segment_walk walk_segment(const std::uint8_t* stream,
                                      const kernel_tables<TableBits>& tables,
                                      const thread_segment& s, Probe probe = {}) {
  segment_walk w;
  if (s.empty || s.limit_bits == 0) return w;
  stream_reader reader;
  reader.start(stream, s.begin_bit);
  std::uint32_t offset = 0;
  std::uint32_t count = 0;
  walk_pair_steps<TableBits>(reader, tables, s.limit_bits, offset, count, probe);
  walk_multi_steps<TableBits>(reader, tables, s.limit_bits, offset, count, probe);
  walk_single_steps<TableBits>(reader, tables, s.limit_bits, offset, count, probe);
  w.count = count;
  w.end_offset = offset;
  return w;
}

FLOATZIP_HD bool segment_consistent(const thread_segment& s, const segment_walk& w) {
  return s.empty || (s.valid && s.begin_bit + w.end_offset == s.expected_end_bit);
}

// ---- block-level checks -------------------------------------------------------------------------

// Why a block refused to write its group. Stable values: they are stored in the status word.
enum class kernel_fault : unsigned {
  none = 0,
  group_position = 1,  // the group's value positions are out of order or range
  chunk_boundary = 2,  // codewords do not end where the next chunk's first codeword starts
  value_count = 3,     // the group's codewords are not as many as its value positions say
};

struct group_values {
  std::uint64_t first = 0;  // index of the group's first value in the bundle
  std::uint64_t end = 0;
  bool valid = false;
};

FLOATZIP_HD group_values group_values_of(const device_bundle_view& v, std::uint64_t group) {
  group_values r;
  r.first = group_value_position(v, group);
  r.end = group + 1 < v.group_count ? group_value_position(v, group + 1) : v.value_count;
  // Group 0 must start at value 0: with every group's count checked against the next position,
  // that makes the groups tile [0, value_count) exactly, so no output value is left unwritten.
  r.valid = (group != 0 || r.first == 0) && r.first <= r.end && r.end <= v.value_count &&
            r.end - r.first < kMaxGroupBits;
  return r;
}

// Decided identically by every thread of the block after the scan.
FLOATZIP_HD kernel_fault block_fault(const group_values& values, std::uint32_t codeword_total,
                                     bool all_segments_consistent) {
  if (!values.valid) return kernel_fault::group_position;
  if (!all_segments_consistent) return kernel_fault::chunk_boundary;
  if (values.end - values.first != codeword_total) return kernel_fault::value_count;
  return kernel_fault::none;
}

FLOATZIP_HD unsigned long long fault_record(std::uint64_t group, kernel_fault fault) {
  return (static_cast<unsigned long long>(group) << 8) | static_cast<unsigned>(fault);
}
inline constexpr unsigned long long kNoFault = ~0ull;

// ---- phase 2: decode into the stage, merge into the output --------------------------------------

// Where a block writes: its group's values go to out[first, first + values), in the format's
// value type; each value merges its symbol (from the stage) with its raw byte (raw_bytes[pos],
// all formats but FP8) and its low half (low_halves[pos], FP32 only).
template <value_format F>
struct block_output {
  using traits = format_traits<F>;
  using value_type = typename traits::value_type;
  static constexpr std::uint32_t kUnit = slots_per_store(F);

  value_type* out;
  const std::uint8_t* raw_bytes;    // null when the format has none
  const std::uint16_t* low_halves;  // null when the format has none
  std::uint64_t first;              // the group's first value
  std::uint32_t lead;               // slot of the group's first value, 0..kUnit-1
  std::uint32_t slot_end;           // lead + the group's value count
};

// out_shift: (address of out[0] / value_bytes(F)) % slots_per_store(F), i.e. how many values
// out[0] lies past a 16-byte boundary. Precondition: values.valid.
template <value_format F>
FLOATZIP_HD block_output<F> block_output_of(typename format_traits<F>::value_type* out,
                                            std::uint32_t out_shift, const device_bundle_view& v,
                                            const group_values& values) {
  block_output<F> b;
  b.out = out;
  b.raw_bytes = v.raw_bytes;
  b.low_halves = v.low_halves;
  b.first = values.first;
  b.lead = static_cast<std::uint32_t>((values.first + out_shift) & (block_output<F>::kUnit - 1));
  b.slot_end = b.lead + static_cast<std::uint32_t>(values.end - values.first);
  return b;
}

// One thread's phase-2 state; it lives in registers across tiles.
//
// Decoded exponents reach the stage as aligned 32-bit words: they gather in stage_bits until a
// word is complete. The thread's first word may hold slots of the thread before it (bytes below
// begin_slot, garbage in stage_bits); it is stored whole all the same, and that thread, whose
// last word it is, writes its bytes of it byte by byte after a barrier (flush_stage_tail), when no
// whole-word store can overwrite them any more.
struct thread_output {
  stream_reader reader;
  std::uint32_t next_slot;   // slot of the next value to decode
  std::uint32_t end_slot;    // one past the thread's last slot
  std::uint32_t begin_slot;  // the thread's first slot
  std::uint32_t word_slot;   // slot of stage_bits' low byte, a multiple of 4
  std::uint32_t stage_bits;  // bytes of slots [word_slot, next_slot) (at most 3), low byte first
};

// lead: the block's (block_output::lead); first_value: the thread's first value within the
// group (the exclusive scan of the counts).
FLOATZIP_HD thread_output start_output(const std::uint8_t* stream, const thread_segment& s,
                                       std::uint32_t lead, std::uint32_t first_value,
                                       std::uint32_t count) {
  thread_output o;
  o.begin_slot = lead + first_value;
  o.next_slot = o.begin_slot;
  o.end_slot = o.begin_slot + count;
  o.word_slot = o.begin_slot & ~3u;
  o.stage_bits = 0;
  o.reader.next = stream;
  o.reader.bits = 0;
  o.reader.valid = 0;
  if (count > 0) o.reader.start(stream, s.begin_bit);
  return o;
}

// Appends `count` (1..3) decoded exponents and stores a completed word. stage_bits holds at
// most 3 bytes before and after the call, so one store always suffices.
template <class Probe>
FLOATZIP_HD void push_exponents(thread_output& o, std::uint8_t* stage,
                                std::uint32_t tile_begin_slot, std::uint32_t symbols,
                                unsigned count, Probe probe) {
  const unsigned pending = o.next_slot - o.word_slot;
  const std::uint64_t widened = std::uint64_t{symbols} << (8 * pending);
  const std::uint32_t word = o.stage_bits | static_cast<std::uint32_t>(widened);
  o.next_slot += count;
  if (pending + count >= 4) {
    probe.stage_store(o.word_slot - tile_begin_slot, 4);
    store_u32_aligned(stage + (o.word_slot - tile_begin_slot), word);
    o.stage_bits = static_cast<std::uint32_t>(widened >> 32);
    o.word_slot += 4;
  } else {
    o.stage_bits = word;
  }
}

// Phase 2's main loop: two multi-symbol steps per iteration and one refill check for both,
// while even six more values stay within `stop`.
template <int TableBits, class Probe>
FLOATZIP_HD void decode_pair_steps(thread_output& o, const kernel_tables<TableBits>& tables,
                                   std::uint8_t* stage, std::uint32_t tile_begin_slot,
                                   std::uint32_t stop, Probe probe) {
  if (stop < 6) return;
  const std::uint32_t last_slot = stop - 6;  // one compare an iteration, no add
  while (o.next_slot <= last_slot) {
    probe.step(loop_kind::decode_pair);
    o.reader.refill<2 * TableBits>(probe);
    const decoded_step first =
        decoded_step_of(o.reader.look_up<TableBits>(tables.multi, tables.multi, probe));
    o.reader.consume(first.length);
    push_exponents(o, stage, tile_begin_slot, first.symbols, first.count, probe);
    probe.step(loop_kind::decode_pair);
    const decoded_step second =
        decoded_step_of(o.reader.look_up<TableBits>(tables.multi, tables.multi, probe));
    o.reader.consume(second.length);
    push_exponents(o, stage, tile_begin_slot, second.symbols, second.count, probe);
  }
}

// Then single multi-symbol steps while even three more values stay within `stop`.
template <int TableBits, class Probe>
FLOATZIP_HD void decode_multi_steps(thread_output& o, const kernel_tables<TableBits>& tables,
                                    std::uint8_t* stage, std::uint32_t tile_begin_slot,
                                    std::uint32_t stop, Probe probe) {
  if (stop < 3) return;
  const std::uint32_t last_slot = stop - 3;  // one compare a step, no add
  FLOATZIP_KERNEL_NO_UNROLL
  while (o.next_slot <= last_slot) {
    probe.step(loop_kind::decode_multi);
    o.reader.refill<TableBits>(probe);
    const decoded_step d =
        decoded_step_of(o.reader.look_up<TableBits>(tables.multi, tables.multi, probe));
    o.reader.consume(d.length);
    push_exponents(o, stage, tile_begin_slot, d.symbols, d.count, probe);
  }
}

// The last values before `stop`, one look-up each, so that the reader stops exactly there.
template <int TableBits, class Probe>
FLOATZIP_HD void decode_single_steps(thread_output& o, const kernel_tables<TableBits>& tables,
                                     std::uint8_t* stage, std::uint32_t tile_begin_slot,
                                     std::uint32_t stop, Probe probe) {
  FLOATZIP_KERNEL_NO_UNROLL
  while (o.next_slot < stop) {
    probe.step(loop_kind::decode_single);
    o.reader.refill<TableBits>(probe);
    const decode_entry e = o.reader.look_up<TableBits>(tables.single, tables.multi, probe);
    o.reader.consume(entry_length(e));
    push_exponents(o, stage, tile_begin_slot, entry_symbol(e), 1, probe);
  }
}

// Decodes the thread's values whose slots lie before tile_end_slot into the stage (slot s at
// stage[s - tile_begin_slot]), whole words only; the last partial word waits for
// flush_stage_tail. Precondition: the earlier tiles were done, so next_slot >= tile_begin_slot.
// tile_begin_slot is a multiple of 8.
template <int TableBits, class Probe = no_probe>
FLOATZIP_HD void decode_to_stage(thread_output& o, const kernel_tables<TableBits>& tables,
                                 std::uint8_t* stage, std::uint32_t tile_begin_slot,
                                 std::uint32_t tile_end_slot, Probe probe = {}) {
  const std::uint32_t stop = o.end_slot < tile_end_slot ? o.end_slot : tile_end_slot;
  decode_pair_steps<TableBits>(o, tables, stage, tile_begin_slot, stop, probe);
  decode_multi_steps<TableBits>(o, tables, stage, tile_begin_slot, stop, probe);
  decode_single_steps<TableBits>(o, tables, stage, tile_begin_slot, stop, probe);
}

// After the barrier that follows decode_to_stage: the thread's last partial word of this tile,
// byte by byte (its bytes below begin_slot belong to the thread before, whose own flush or word
// writes them). Tiles end on whole words, so only the thread's last tile has one.
template <class Probe = no_probe>
FLOATZIP_HD void flush_stage_tail(const thread_output& o, std::uint8_t* stage,
                                  std::uint32_t tile_begin_slot, std::uint32_t tile_end_slot,
                                  Probe probe = {}) {
  if (o.word_slot < tile_begin_slot || o.word_slot >= tile_end_slot) return;
  const std::uint32_t first = o.word_slot > o.begin_slot ? o.word_slot : o.begin_slot;
  FLOATZIP_KERNEL_NO_UNROLL
  for (std::uint32_t slot = first; slot < o.next_slot; ++slot) {
    probe.step(loop_kind::flush);
    probe.stage_store(slot - tile_begin_slot, 1);
    stage[slot - tile_begin_slot] =
        static_cast<std::uint8_t>(o.stage_bits >> (8 * (slot - o.word_slot)));
  }
}

// __byte_perm: byte i of the result is byte (selector >> 4i) & 7 of the 8 bytes b:a (a's bytes
// 0-3, b's 4-7). One PRMT on the device.
FLOATZIP_HD std::uint32_t byte_perm(std::uint32_t a, std::uint32_t b, std::uint32_t selector) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(a, b, selector);
#else
  const std::uint64_t both = (std::uint64_t{b} << 32) | a;
  std::uint32_t r = 0;
  for (unsigned i = 0; i < 4; ++i) {
    r |= static_cast<std::uint32_t>((both >> (8 * ((selector >> (4 * i)) & 7))) & 0xFF) << (8 * i);
  }
  return r;
#endif
}

// Selectors of byte_perm(sign_mantissas, exponents, .) that interleave a pair of values into
// [s e s e]: the pair in bytes 0-1 of both words, or in bytes 2-3.
inline constexpr std::uint32_t kLowPair = 0x5140;
inline constexpr std::uint32_t kHighPair = 0x7362;

// Two BF16 values, as one little-endian 32-bit word, from a pair of exponent and sign/mantissa
// bytes of the two words (lower address in the lower byte; `pair` selects which). Per value:
// w = ((s & 0x80) << 8) | (e << 7) | (s & 0x7F), done for both at once on the interleaved word
// x = [s0 e0 s1 e1] (one PRMT) with two bit selects (a LOP3 each): bits 7-14 from x >> 1 (the
// exponent), bit 15 from x << 8 (the sign).
FLOATZIP_HD std::uint32_t merge_pair(std::uint32_t exponents, std::uint32_t sign_mantissas,
                                     std::uint32_t pair) {
  const std::uint32_t x = byte_perm(sign_mantissas, exponents, pair);
  constexpr std::uint32_t kExponentBits = 0x7F807F80u;
  constexpr std::uint32_t kSignBits = 0x80008000u;
  const std::uint32_t y = ((x >> 1) & kExponentBits) | (x & ~kExponentBits);
  return ((x << 8) & kSignBits) | (y & ~kSignBits);
}

// An FP32 value (bit pattern) rounded toward zero to FP16, as IEEE 754 and PTX's cvt.rz.f16.f32
// define it: magnitudes below FP16's range (FP32 subnormals included) give +-0, those below 2^-14
// an FP16 subnormal (the bits below 2^-24 dropped), finite ones from 65520 up the largest finite
// FP16 (0x7BFF), infinities infinity, NaNs the canonical NaN 0x7FFF. The host's model of the
// device's conversion (fp16x2_from_fp32_rz); the tests compare it with the x86 F16C conversion.
FLOATZIP_HD constexpr std::uint16_t fp16_from_fp32_rz(std::uint32_t f) {
  const auto sign = static_cast<std::uint16_t>((f >> 16) & 0x8000u);
  const std::uint32_t exponent = (f >> 23) & 0xFFu;
  const std::uint32_t mantissa = f & 0x7FFFFFu;
  if (exponent == 0xFF) return mantissa != 0 ? 0x7FFF : static_cast<std::uint16_t>(sign | 0x7C00u);
  if (exponent == 0) return sign;
  const int binade = static_cast<int>(exponent) - 127;
  if (binade > 15) return static_cast<std::uint16_t>(sign | 0x7BFFu);
  if (binade >= -14) {
    return static_cast<std::uint16_t>(sign | static_cast<std::uint32_t>(binade + 15) << 10 |
                                      mantissa >> 13);
  }
  // (1.mantissa) 2^binade in units of 2^-24: the 24-bit significand >> (-1 - binade), which
  // leaves nothing from a shift of 24 up.
  const int down = -1 - binade;
  return static_cast<std::uint16_t>(sign | (down < 24 ? (0x800000u | mantissa) >> down : 0u));
}

// Two FP32 values rounded toward zero to FP16 (fp16_from_fp32_rz) and packed: `high` into bits
// 16-31, `low` into bits 0-15. One cvt.rz.f16x2.f32 (F2FP) on the device from sm_80 on, two
// cvt.rz.f16.f32 before.
FLOATZIP_HD std::uint32_t fp16x2_from_fp32_rz(std::uint32_t high, std::uint32_t low) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  std::uint32_t packed;
  asm("cvt.rz.f16x2.f32 %0, %1, %2;"
      : "=r"(packed)
      : "f"(__uint_as_float(high)), "f"(__uint_as_float(low)));
  return packed;
#elif defined(__CUDA_ARCH__)
  unsigned short h;
  unsigned short l;
  asm("cvt.rz.f16.f32 %0, %1;" : "=h"(h) : "f"(__uint_as_float(high)));
  asm("cvt.rz.f16.f32 %0, %1;" : "=h"(l) : "f"(__uint_as_float(low)));
  return std::uint32_t{l} | std::uint32_t{h} << 16;
#else
  return std::uint32_t{fp16_from_fp32_rz(low)} | std::uint32_t{fp16_from_fp32_rz(high)} << 16;
#endif
}

// A word of two BF16 values as the two FP16 values they round to toward zero (the BF16 value is
// the high half of its FP32 value).
FLOATZIP_HD std::uint32_t narrow_bf16_pair(std::uint32_t bf16_pair) {
  return fp16x2_from_fp32_rz(bf16_pair & 0xFFFF0000u, bf16_pair << 16);
}

// Whether any of the 4 symbol bytes of `symbols` exceeds kNarrowMaxSymbol (142): bit 7 of a byte
// is set, and its low 7 bits plus 0x71 reach 0x80 (that is, they are 15 or more); the sum stays
// below 0x100, so no carry crosses into the next byte.
inline constexpr unsigned kNarrowMaxSymbol = 142;
FLOATZIP_HD std::uint32_t symbols_above_narrow(std::uint32_t symbols) {
  return ((symbols & 0x7F7F7F7Fu) + 0x71717171u) & symbols & 0x80808080u;
}

// The two values in the low 16 bits of each argument.
FLOATZIP_HD std::uint32_t merge_two_values(std::uint32_t exponents, std::uint32_t sign_mantissas) {
  return merge_pair(exponents, sign_mantissas, kLowPair);
}

// Bytes section[pos .. pos + 8), little-endian, from one or two aligned 8-byte loads.
// Precondition: section is 8-byte aligned and the 8-byte word holding byte pos + 7 lies in the
// section (sections are padded to 16 bytes, so the second load stays inside it).
FLOATZIP_HD std::uint64_t load_section8(const std::uint8_t* section, std::uint64_t pos) {
  const unsigned misalignment = static_cast<unsigned>(pos & 7);
  const std::uint64_t low = load_u64_aligned(section + (pos - misalignment));
  if (misalignment == 0) return low;
  const std::uint64_t high = load_u64_aligned(section + (pos - misalignment) + 8);
  return (low >> (8 * misalignment)) | (high << (64 - 8 * misalignment));
}

// Bytes section[pos .. pos + 4) from one or two aligned 4-byte loads; as load_section8.
FLOATZIP_HD std::uint32_t load_section4(const std::uint8_t* section, std::uint64_t pos) {
  const unsigned misalignment = static_cast<unsigned>(pos & 3);
  const std::uint32_t low = load_u32_aligned(section + (pos - misalignment));
  if (misalignment == 0) return low;
  const std::uint32_t high = load_u32_aligned(section + (pos - misalignment) + 4);
  return (low >> (8 * misalignment)) | (high << (32 - 8 * misalignment));
}

// How a format's traits merge a value, found at compile time by checking format_traits<F>::merge
// on every symbol and every raw byte (each against bytes with one bit set, none and all; the
// candidate shapes move each input bit to one output bit, so that finds any misplaced bit, and
// the kernel tests compare every 16-bit pattern with the CPU decoder): the whole-unit merges
// below use the wide form it amounts to, and fall back to merging value by value through the
// traits, so a changed split in value_format.hpp stays correct (only slower) without touching
// the kernel.
enum class merge_shape {
  bf16_split,     // high half (the value's, or FP32's top 16 bits) = bf16_merge(symbol, raw byte)
  byte_concat,    // 16-bit value = symbol << 8 | raw byte
  symbol_only,    // the value is its symbol (FP8)
  bf16_narrowed,  // 16-bit value = the BF16 value bf16_merge(symbol, raw byte) rounded toward zero
                  // to FP16, for every symbol up to kNarrowMaxSymbol (bf16_in_fp16)
  per_value,      // anything else: format_traits<F>::merge, one value at a time
};

template <class Traits>
constexpr bool merge_is(merge_shape shape, unsigned symbol, unsigned raw, unsigned low) {
  using traits = Traits;
  const auto s = static_cast<std::uint8_t>(symbol);
  const auto r = static_cast<std::uint8_t>(raw);
  const auto l = static_cast<std::uint16_t>(low);
  const std::uint32_t got = traits::merge(s, r, l);
  switch (shape) {
    case merge_shape::bf16_split:
      if (sizeof(typename traits::value_type) == 4) {
        return got == (std::uint32_t{bf16_merge(s, r)} << 16 | (traits::has_low_half ? l : 0u));
      }
      return got == bf16_merge(s, r);
    case merge_shape::byte_concat:
      return sizeof(typename traits::value_type) == 2 && got == (symbol << 8 | raw);
    case merge_shape::symbol_only: return got == symbol;
    case merge_shape::bf16_narrowed:
      return sizeof(typename traits::value_type) == 2 &&
             (symbol > kNarrowMaxSymbol ||
              got == fp16_from_fp32_rz(std::uint32_t{bf16_merge(s, r)} << 16));
    case merge_shape::per_value: break;
  }
  return true;
}

template <class Traits>
constexpr bool merge_has_shape(merge_shape shape) {
  constexpr unsigned kProbes[] = {0x00, 0xFF, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80};
  constexpr unsigned kLows[] = {0x0000, 0xFFFF, 0x8001, 0x1234};
  for (unsigned x = 0; x < 256; ++x) {
    for (const unsigned probe : kProbes) {
      const unsigned low = kLows[(x + probe) % 4];
      if (!merge_is<Traits>(shape, x, probe, low) || !merge_is<Traits>(shape, probe, x, low))
        return false;
    }
  }
  for (unsigned bit = 0; bit < 16; ++bit) {
    if (!merge_is<Traits>(shape, 0x5A, 0xA5, 1u << bit)) return false;
  }
  return true;
}

// bf16_narrowed is no bit permutation, so the probes above cannot find a wrong value: checked
// on every symbol it covers with every raw byte (143 x 256 pairs).
template <class Traits>
constexpr bool merge_is_bf16_narrowed() {
  for (unsigned symbol = 0; symbol <= kNarrowMaxSymbol; ++symbol) {
    for (unsigned raw = 0; raw < 256; ++raw) {
      if (!merge_is<Traits>(merge_shape::bf16_narrowed, symbol, raw, 0)) return false;
    }
  }
  return true;
}

template <class Traits>
constexpr merge_shape merge_shape_of() {
  if (!Traits::has_raw_byte) {
    return merge_has_shape<Traits>(merge_shape::symbol_only) ? merge_shape::symbol_only
                                                             : merge_shape::per_value;
  }
  if (merge_has_shape<Traits>(merge_shape::bf16_split)) return merge_shape::bf16_split;
  if (merge_has_shape<Traits>(merge_shape::byte_concat)) return merge_shape::byte_concat;
  if (sizeof(typename Traits::value_type) == 2 && merge_is_bf16_narrowed<Traits>()) {
    return merge_shape::bf16_narrowed;
  }
  return merge_shape::per_value;
}

// One whole store unit: the unit's symbols (from the stage, `symbols` aligned to the unit's
// size) merged with the raw planes at output position pos into one 16-byte store at out + pos
// (16-byte aligned: slot alignment). Aligned: pos is a multiple of the unit, so each raw plane is
// read with one aligned load (else two, funnel-shifted).
//   16-bit formats, 8 values: one 8-byte stage load, 8 raw bytes; BF16's split: 4 PRMT + 8 LOP3
//     (merge_pair), the byte concatenation: 4 PRMT.
//   32-bit formats, 4 values: one 4-byte stage load, 4 raw bytes, (FP32) 8 bytes of low halves;
//     the BF16 merge gives the high halves two at a time, a PRMT each joins one with its low half.
//   BF16-in-FP16 (bf16_narrowed), 8 values: BF16's merge, then each word of two BF16 values
//     rounded to FP16 by one F2FP (cvt.rz.f16x2.f32), exact for every symbol up to 142 (normals,
//     subnormals, zeros); a unit holding a larger symbol (infinity, NaN, or a symbol the encoder
//     never writes) merges value by value through the traits instead (merge_unit_by_traits),
//     found by 3 integer instructions per 4 symbols and one branch.
//   FP8, 16 values: the stage's 16 bytes as they are.
template <class Traits>
struct unit_merge {
  using traits = Traits;
  using value_type = typename traits::value_type;
  static constexpr merge_shape kShape = merge_shape_of<Traits>();

  // Two values of the units' bytes i and i + 1, as one 32-bit word, through the traits.
  FLOATZIP_HD static std::uint32_t merge_two_by_traits(std::uint64_t e8, std::uint64_t s8,
                                                       unsigned i) {
    const auto v0 = traits::merge(static_cast<std::uint8_t>(e8 >> (8 * i)),
                                  static_cast<std::uint8_t>(s8 >> (8 * i)), 0);
    const auto v1 = traits::merge(static_cast<std::uint8_t>(e8 >> (8 * i + 8)),
                                  static_cast<std::uint8_t>(s8 >> (8 * i + 8)), 0);
    return std::uint32_t{v0} | std::uint32_t{v1} << 16;
  }

  // The unit's 8 values of 16 bits, one by one through the traits, at out (16-byte aligned).
  FLOATZIP_HD static void merge_unit_by_traits(value_type* out, std::uint64_t e8,
                                               std::uint64_t s8) {
    store_16_aligned(out, merge_two_by_traits(e8, s8, 0), merge_two_by_traits(e8, s8, 2),
                     merge_two_by_traits(e8, s8, 4), merge_two_by_traits(e8, s8, 6));
  }

  template <bool Aligned, class Probe = no_probe>
  FLOATZIP_HD static void store(value_type* out, const std::uint8_t* symbols,
                                const std::uint8_t* raw, const std::uint16_t* low_halves,
                                std::uint64_t pos, Probe probe = {}) {
    if constexpr (sizeof(value_type) == 2) {
      const std::uint64_t e8 = load_u64_aligned(symbols);
      const std::uint64_t s8 = Aligned ? load_u64_aligned(raw + pos) : load_section8(raw, pos);
      const auto e_low = static_cast<std::uint32_t>(e8);
      const auto e_high = static_cast<std::uint32_t>(e8 >> 32);
      const auto s_low = static_cast<std::uint32_t>(s8);
      const auto s_high = static_cast<std::uint32_t>(s8 >> 32);
      if constexpr (kShape == merge_shape::bf16_split) {
        store_16_aligned(out + pos, merge_pair(e_low, s_low, kLowPair),
                         merge_pair(e_low, s_low, kHighPair), merge_pair(e_high, s_high, kLowPair),
                         merge_pair(e_high, s_high, kHighPair));
      } else if constexpr (kShape == merge_shape::byte_concat) {
        store_16_aligned(out + pos, byte_perm(s_low, e_low, kLowPair),
                         byte_perm(s_low, e_low, kHighPair), byte_perm(s_high, e_high, kLowPair),
                         byte_perm(s_high, e_high, kHighPair));
      } else if constexpr (kShape == merge_shape::bf16_narrowed) {
        if ((symbols_above_narrow(e_low) | symbols_above_narrow(e_high)) != 0) {
          probe.merge_by_traits();
          merge_unit_by_traits(out + pos, e8, s8);
        } else {
          store_16_aligned(out + pos, narrow_bf16_pair(merge_pair(e_low, s_low, kLowPair)),
                           narrow_bf16_pair(merge_pair(e_low, s_low, kHighPair)),
                           narrow_bf16_pair(merge_pair(e_high, s_high, kLowPair)),
                           narrow_bf16_pair(merge_pair(e_high, s_high, kHighPair)));
        }
      } else {
        merge_unit_by_traits(out + pos, e8, s8);
      }
    } else if constexpr (sizeof(value_type) == 4) {
      const std::uint32_t e4 = load_u32_aligned(symbols);
      const std::uint32_t s4 = Aligned ? load_u32_aligned(raw + pos) : load_section4(raw, pos);
      std::uint64_t l8 = 0;
      if constexpr (traits::has_low_half) {
        const auto* low_bytes = reinterpret_cast<const std::uint8_t*>(low_halves);
        l8 = Aligned ? load_u64_aligned(low_bytes + 2 * pos) : load_section8(low_bytes, 2 * pos);
      }
      const auto low01 = static_cast<std::uint32_t>(l8);
      const auto low23 = static_cast<std::uint32_t>(l8 >> 32);
      if constexpr (kShape == merge_shape::bf16_split) {
        const std::uint32_t high01 = merge_pair(e4, s4, kLowPair);
        const std::uint32_t high23 = merge_pair(e4, s4, kHighPair);
        if constexpr (traits::has_low_half) {
          // [low half, high half] of the word's first value (bytes 0-1 of both), of its second
          // (bytes 2-3).
          store_16_aligned(out + pos, byte_perm(low01, high01, 0x5410),
                           byte_perm(low01, high01, 0x7632), byte_perm(low23, high23, 0x5410),
                           byte_perm(low23, high23, 0x7632));
        } else {
          store_16_aligned(out + pos, high01 << 16, high01 & 0xFFFF0000u, high23 << 16,
                           high23 & 0xFFFF0000u);
        }
      } else {
        std::uint32_t w[4];
        for (unsigned i = 0; i < 4; ++i) {
          w[i] = traits::merge(static_cast<std::uint8_t>(e4 >> (8 * i)),
                               static_cast<std::uint8_t>(s4 >> (8 * i)),
                               static_cast<std::uint16_t>(l8 >> (16 * i)));
        }
        store_16_aligned(out + pos, w[0], w[1], w[2], w[3]);
      }
    } else {
      static_assert(sizeof(value_type) == 1, "values of 1, 2 or 4 bytes");
      const std::uint64_t low = load_u64_aligned(symbols);
      const std::uint64_t high = load_u64_aligned(symbols + 8);
      if constexpr (kShape == merge_shape::symbol_only) {
        store_16_aligned(out + pos, static_cast<std::uint32_t>(low),
                         static_cast<std::uint32_t>(low >> 32), static_cast<std::uint32_t>(high),
                         static_cast<std::uint32_t>(high >> 32));
      } else {
        std::uint32_t w[4] = {};
        for (unsigned i = 0; i < 16; ++i) {
          const std::uint64_t half = i < 8 ? low : high;
          w[i / 4] |=
              std::uint32_t{traits::merge(static_cast<std::uint8_t>(half >> (8 * (i % 8))), 0, 0)}
              << (8 * (i % 4));
        }
        store_16_aligned(out + pos, w[0], w[1], w[2], w[3]);
      }
    }
  }
};

// One whole store unit at slot `unit` (see unit_merge).
template <value_format F, bool Aligned, class Probe>
FLOATZIP_HD void merge_whole_unit(const block_output<F>& b, const std::uint8_t* stage,
                                  std::uint32_t tile_begin_slot, std::uint64_t base,
                                  std::uint32_t unit, Probe probe) {
  unit_merge<format_traits<F>>::template store<Aligned>(
      b.out, stage + (unit - tile_begin_slot), b.raw_bytes, b.low_halves, base + unit, probe);
}

// The loops over whole units, units thread, thread + threads, ... so that a warp's stores cover
// consecutive 16-byte words: one where the raw planes are unit-aligned (always, when the output is
// 16-byte aligned), one where they are not. Two functions, not one template, so that the cost
// model tells their loops apart in the SASS line info.
template <value_format F, class Probe>
FLOATZIP_HD void merge_aligned_units(const block_output<F>& b, const std::uint8_t* stage,
                                     std::uint64_t base, std::uint32_t begin, std::uint32_t end,
                                     std::uint32_t stride, std::uint32_t tile_begin_slot,
                                     Probe probe) {
  for (std::uint32_t unit = begin; unit < end; unit += stride) {
    probe.step(loop_kind::merge);
    probe.stage_load(unit - tile_begin_slot, block_output<F>::kUnit);
    merge_whole_unit<F, true>(b, stage, tile_begin_slot, base, unit, probe);
  }
}
template <value_format F, class Probe>
FLOATZIP_HD void merge_shifted_units(const block_output<F>& b, const std::uint8_t* stage,
                                     std::uint64_t base, std::uint32_t begin, std::uint32_t end,
                                     std::uint32_t stride, std::uint32_t tile_begin_slot,
                                     Probe probe) {
  for (std::uint32_t unit = begin; unit < end; unit += stride) {
    probe.step(loop_kind::merge_shifted);
    probe.stage_load(unit - tile_begin_slot, block_output<F>::kUnit);
    merge_whole_unit<F, false>(b, stage, tile_begin_slot, base, unit, probe);
  }
}

// Thread `thread`'s share of the tile's whole store units (all their slots in the group).
// tile_begin_slot is a multiple of the unit.
template <value_format F, class Probe = no_probe>
FLOATZIP_HD void merge_full_units(const block_output<F>& b, const std::uint8_t* stage,
                                  std::uint32_t tile_begin_slot, std::uint32_t tile_end_slot,
                                  unsigned thread, unsigned threads, Probe probe = {}) {
  constexpr std::uint32_t kUnit = block_output<F>::kUnit;
  // Unit 0 holds slots before the group's first value unless lead is 0; the unit holding
  // slot_end is partial unless slot_end is a multiple of the unit.
  const std::uint32_t first_full = b.lead == 0 ? 0 : kUnit;
  const std::uint32_t end_full = b.slot_end & ~(kUnit - 1);
  const std::uint32_t begin = tile_begin_slot > first_full ? tile_begin_slot : first_full;
  const std::uint32_t end = tile_end_slot < end_full ? tile_end_slot : end_full;
  // Output position of slot 0, modulo 2^64 (below 0 when lead > first): slot s is at base + s.
  // Units are multiples of kUnit, so base % kUnit is every unit's raw-plane misalignment.
  const std::uint64_t base = b.first - b.lead;
  const std::uint32_t first_unit = begin + thread * kUnit;
  const std::uint32_t stride = threads * kUnit;
  if (!format_traits<F>::has_raw_byte || (base & (kUnit - 1)) == 0) {
    merge_aligned_units(b, stage, base, first_unit, end, stride, tile_begin_slot, probe);
  } else {
    merge_shifted_units(b, stage, base, first_unit, end, stride, tile_begin_slot, probe);
  }
}

// The values of store unit unit_slot that belong to the group, one by one
// (format_traits<F>::merge): for the group's first and last unit when they are partial.
template <value_format F, class Probe = no_probe>
FLOATZIP_HD void merge_partial_unit(const block_output<F>& b, const std::uint8_t* stage,
                                    std::uint32_t tile_begin_slot, std::uint32_t unit_slot,
                                    Probe probe = {}) {
  using traits = format_traits<F>;
  constexpr std::uint32_t kUnit = block_output<F>::kUnit;
  const std::uint32_t lo = unit_slot > b.lead ? unit_slot : b.lead;
  const std::uint32_t hi = unit_slot + kUnit < b.slot_end ? unit_slot + kUnit : b.slot_end;
  FLOATZIP_KERNEL_NO_UNROLL
  for (std::uint32_t slot = lo; slot < hi; ++slot) {
    probe.step(loop_kind::merge_partial);
    probe.stage_load(slot - tile_begin_slot, 1);
    const std::uint64_t pos = b.first + (slot - b.lead);
    std::uint8_t raw_byte = 0;
    if constexpr (traits::has_raw_byte) raw_byte = b.raw_bytes[pos];
    std::uint16_t low_half = 0;
    if constexpr (traits::has_low_half) low_half = b.low_halves[pos];
    b.out[pos] = traits::merge(stage[slot - tile_begin_slot], raw_byte, low_half);
  }
}

// Thread `thread`'s share of merging one tile: the whole units (merge_full_units), and the
// group's partial first unit (thread 0) and partial last unit (thread 1, or 0 when the block has
// one thread or both are the same unit) when they lie in the tile.
template <value_format F, class Probe = no_probe>
FLOATZIP_HD void merge_tile_part(const block_output<F>& b, const std::uint8_t* stage,
                                 std::uint32_t tile_begin_slot, std::uint32_t tile_end_slot,
                                 unsigned thread, unsigned threads, Probe probe = {}) {
  constexpr std::uint32_t kUnit = block_output<F>::kUnit;
  merge_full_units(b, stage, tile_begin_slot, tile_end_slot, thread, threads, probe);
  const std::uint32_t last = b.slot_end & ~(kUnit - 1);
  const bool first_partial = b.lead != 0;
  const bool last_partial = (b.slot_end & (kUnit - 1)) != 0 && !(first_partial && last == 0);
  const unsigned last_thread = threads > 1 ? 1 : 0;
  if (first_partial && thread == 0 && tile_begin_slot == 0) {
    merge_partial_unit(b, stage, tile_begin_slot, 0, probe);
  }
  if (last_partial && thread == last_thread && last >= tile_begin_slot && last < tile_end_slot) {
    merge_partial_unit(b, stage, tile_begin_slot, last, probe);
  }
}

// Cooperative copy of `bytes` (a multiple of 16) from src to dst, 16 bytes per thread per step.
FLOATZIP_HD void copy_block_part(void* dst, const void* src, std::uint32_t bytes, unsigned thread,
                                 unsigned threads) {
  for (std::uint32_t offset = thread * 16; offset < bytes; offset += threads * 16) {
#if defined(__CUDA_ARCH__)
    *reinterpret_cast<uint4*>(static_cast<char*>(dst) + offset) =
        *reinterpret_cast<const uint4*>(static_cast<const char*>(src) + offset);
#else
    require_host_alignment(static_cast<char*>(dst) + offset, 16, "16-byte copy destination");
    require_host_alignment(static_cast<const char*>(src) + offset, 16, "16-byte copy source");
    std::memcpy(static_cast<char*>(dst) + offset, static_cast<const char*>(src) + offset, 16);
#endif
  }
}

// ---- host side: views, tables, launch checks ----------------------------------------------------

inline int gpu_table_bits(int max_code_length) {
  return max_code_length <= kGpuTableBitsSmall ? kGpuTableBitsSmall : kGpuTableBitsLarge;
}

// Every entry a decode loop may meet must consume at least one bit and at most table_bits: an
// entry of length 0 would stop a thread's walk from advancing and hang its block, one longer
// than table_bits would read past the look-ahead the stream padding covers.
inline error check_kernel_decode_table(std::span<const decode_entry> table, int table_bits) {
  for (std::size_t i = 0; i < table.size(); ++i) {
    const unsigned length = entry_length(table[i]);
    if (length == 0 || length > static_cast<unsigned>(table_bits)) {
      return error{errc::bad_data, "bundle: section code_lengths: decode table entry " +
                                       std::to_string(i) + " has length " + std::to_string(length) +
                                       " (table of " + std::to_string(table_bits) + " bits)"};
    }
  }
  return {};
}

// The multi-symbol entries of a checked single-symbol table: entry i decodes the codewords at the
// front of index i in turn, each looked up in `single` with the bits already decoded shifted out
// (zeros come in at the bottom, which a codeword that still fits in the window never reads).
inline std::vector<multi_entry> build_multi_table(std::span<const decode_entry> single,
                                                  int table_bits) {
  const std::uint32_t mask = (std::uint32_t{1} << table_bits) - 1;
  std::vector<multi_entry> multi(single.size());
  for (std::uint32_t i = 0; i < single.size(); ++i) {
    std::uint32_t symbols = 0;
    unsigned length = 0;
    unsigned count = 0;
    while (count < 3) {
      const decode_entry e = single[(i << length) & mask];
      if (length + entry_length(e) > static_cast<unsigned>(table_bits)) break;
      symbols |= std::uint32_t{entry_symbol(e)} << (8 * count);
      length += entry_length(e);
      ++count;
    }
    multi[i] = make_multi_entry(symbols, length, count);
  }
  return multi;
}

// The kernel's tables for the bundle (layout: see kernel_tables), as 32-bit words for the
// device copy: the single-symbol table built from the bundle's (validated) code lengths and
// checked entry by entry (check_kernel_decode_table), and the multi-symbol table derived from it.
inline result<std::vector<std::uint32_t>> build_kernel_tables(const bundle_view& bundle,
                                                              int table_bits) {
  std::vector<decode_entry> single(std::size_t{1} << table_bits);
  build_decode_table(bundle.code(), table_bits, single);
  if (bundle.value_count() != 0) {
    if (error e = check_kernel_decode_table(single, table_bits)) return e;
  }
  std::vector<std::uint32_t> words(kernel_tables_bytes(table_bits) / 4);
  auto* bytes = reinterpret_cast<std::uint8_t*>(words.data());
  if (kernel_has_multi_table(table_bits)) {
    const std::vector<multi_entry> multi = build_multi_table(single, table_bits);
    std::memcpy(bytes, multi.data(), multi.size() * sizeof(multi_entry));
  }
  std::memcpy(bytes + kernel_multi_table_bytes(table_bits), single.data(),
              single.size() * sizeof(decode_entry));
  return words;
}

// Largest number of values in one sync group (sizes the stage).
inline std::uint64_t max_group_values(const bundle_view& bundle) {
  std::uint64_t largest = 0;
  for (std::uint64_t g = 0; g < bundle.group_count(); ++g) {
    const std::uint64_t n = bundle.group_end_value(g) - bundle.group_value_position(g);
    if (n > largest) largest = n;
  }
  return largest;
}

// A view of `bundle` whose sections live at `base` (the bundle's bytes on the host, or their
// copy in device memory).
inline device_bundle_view make_device_bundle_view(const bundle_view& bundle, const std::byte* base,
                                                  const std::uint32_t* tables, int table_bits,
                                                  unsigned long long* status) {
  const bundle_layout& layout = bundle.layout();
  auto at = [&](std::uint64_t offset) {
    return reinterpret_cast<const std::uint8_t*>(base + offset);
  };
  device_bundle_view v;
  v.format = bundle.format();
  v.exponent_stream = at(layout.stream_offset);
  v.raw_bytes = format_has_raw_byte(v.format) ? at(layout.sign_mantissa_offset) : nullptr;
  v.low_halves = format_has_low_half(v.format)
                     ? reinterpret_cast<const std::uint16_t*>(base + layout.low_halves_offset)
                     : nullptr;
  v.chunk_gaps = at(layout.chunk_gaps_offset);
  v.group_positions = reinterpret_cast<const std::uint64_t*>(base + layout.group_positions_offset);
  v.decode_tables = tables;
  v.status = status;
  v.value_count = bundle.value_count();
  v.stream_bits = bundle.stream_bits();
  v.chunk_count = layout.chunk_count;
  v.group_count = layout.group_count;
  v.max_group_values = max_group_values(bundle);
  v.chunk_bits = static_cast<std::uint32_t>(bundle.header().chunk_bits());
  v.chunks_per_group = bundle.header().chunks_per_group;
  v.max_code_length = bundle.max_code_length();
  v.table_bits = table_bits;
  return v;
}

inline bool aligned_to(const void* p, std::uintptr_t alignment) {
  return reinterpret_cast<std::uintptr_t>(p) % alignment == 0;
}

// Everything the kernel assumes about a view of a non-empty bundle, checked on the host (at
// upload and before every launch).
inline error validate_view(const device_bundle_view& v) {
  using std::to_string;
  auto invalid = [](const std::string& what) {
    return error{errc::invalid_argument, "gpu decompress: " + what};
  };
  if (!is_known(v.format)) {
    return invalid("view.format " + to_string(static_cast<unsigned>(v.format)) +
                   " is not a value format");
  }
  if (v.exponent_stream == nullptr || v.chunk_gaps == nullptr || v.group_positions == nullptr ||
      v.decode_tables == nullptr) {
    return invalid("view has a null section pointer");
  }
  // A plane the format has must be there, one it has not must be absent: the kernel of the
  // view's format reads exactly the planes its traits name.
  const bool raw = format_has_raw_byte(v.format);
  const bool low = format_has_low_half(v.format);
  if ((v.raw_bytes != nullptr) != raw || (v.low_halves != nullptr) != low) {
    return invalid(std::string("view of a ") + std::string(to_string(v.format)) +
                   " bundle must have " + (raw ? "a" : "no") + " raw-byte plane and " +
                   (low ? "a" : "no") + " low-half plane");
  }
  if (!aligned_to(v.exponent_stream, 16) || (raw && !aligned_to(v.raw_bytes, 16)) ||
      (low && !aligned_to(v.low_halves, 16)) || !aligned_to(v.group_positions, 16) ||
      !aligned_to(v.decode_tables, 16)) {
    return invalid("view sections must be 16-byte aligned (upload the bundle with device_bundle)");
  }
  if (v.table_bits != kGpuTableBitsSmall && v.table_bits != kGpuTableBitsLarge) {
    return invalid("view.table_bits " + to_string(v.table_bits) + " not compiled (12 or 15)");
  }
  if (v.max_code_length < 1 || v.max_code_length > v.table_bits) {
    return invalid("view.max_code_length " + to_string(v.max_code_length) +
                   " not in [1, table_bits]");
  }
  if (v.chunk_bits < 8 * kMinChunkBytes || v.chunk_bits > 8 * kMaxChunkBytes ||
      v.chunk_bits % 8 != 0) {
    return invalid("view.chunk_bits " + to_string(v.chunk_bits) + " out of range");
  }
  if (v.chunks_per_group < 1 || v.chunks_per_group > kMaxChunksPerGroup) {
    return invalid("view.chunks_per_group " + to_string(v.chunks_per_group) + " out of range");
  }
  if (std::uint64_t{v.chunks_per_group} * v.chunk_bits >= kMaxGroupBits) {
    return invalid("chunks_per_group * chunk_bits = " +
                   to_string(std::uint64_t{v.chunks_per_group} * v.chunk_bits) +
                   " bits per group; the GPU decoder supports fewer than 2^31");
  }
  if (v.value_count > kMaxBundleValues || v.stream_bits < v.value_count ||
      v.stream_bits > v.value_count * static_cast<std::uint64_t>(v.max_code_length)) {
    return invalid("view.stream_bits " + to_string(v.stream_bits) + " impossible for " +
                   to_string(v.value_count) + " values");
  }
  const std::uint64_t chunks = (v.stream_bits + v.chunk_bits - 1) / v.chunk_bits;
  const std::uint64_t groups = (chunks + v.chunks_per_group - 1) / v.chunks_per_group;
  if (v.chunk_count != chunks || v.group_count != groups) {
    return invalid("view.chunk_count/group_count disagree with stream_bits");
  }
  if (groups > static_cast<std::uint64_t>(std::numeric_limits<int>::max())) {
    return invalid(to_string(groups) + " sync groups exceed the grid size limit");
  }
  return {};
}

// validate_view plus the output buffer of out_bytes bytes: what a launch needs.
inline error validate_launch(const device_bundle_view& v, const void* out,
                             std::uint64_t out_bytes) {
  using std::to_string;
  if (!is_known(v.format)) return validate_view(v);
  const std::uint64_t width = value_bytes(v.format);
  if (out_bytes / width < v.value_count) {
    return {errc::insufficient_space, "gpu decompress: output holds " + to_string(out_bytes) +
                                          " bytes, the bundle has " + to_string(v.value_count) +
                                          " " + std::string(to_string(v.format)) + " values (" +
                                          to_string(v.value_count * width) + " bytes)"};
  }
  if (v.value_count == 0) return {};
  if (out == nullptr || !aligned_to(out, width)) {
    return {errc::invalid_argument, "gpu decompress: output pointer null or not aligned to the " +
                                        to_string(width) + "-byte values of " +
                                        std::string(to_string(v.format))};
  }
  return validate_view(v);
}

// The device a launch runs on against the one the view's memory belongs to.
inline error validate_launch_device(const device_bundle_view& v, int current_device) {
  if (v.device < 0 || v.device == current_device) return {};
  return {errc::invalid_argument, "gpu decompress: the bundle was uploaded to device " +
                                      std::to_string(v.device) + ", the current device is " +
                                      std::to_string(current_device)};
}

// Stage size in slots: enough for the largest group in one tile if that fits max_stage_bytes,
// else the size of equal tiles that do; at least one store unit, a multiple of the unit (of
// slots_per_store(v.format) slots, itself a multiple of 4).
inline std::uint32_t stage_slots_for(const device_bundle_view& v, std::uint64_t max_stage_bytes) {
  const std::uint64_t unit = slots_per_store(v.format);
  // Every value takes at least one bit, which bounds a group whatever max_group_values says.
  const std::uint64_t group_bits = std::uint64_t{v.chunks_per_group} * v.chunk_bits;
  const std::uint64_t values = v.max_group_values < group_bits ? v.max_group_values : group_bits;
  const std::uint64_t needed = (values + 2 * unit - 1) / unit * unit;
  std::uint64_t limit = max_stage_bytes / unit * unit;
  if (limit < unit) limit = unit;
  if (needed <= limit) return static_cast<std::uint32_t>(needed);
  // Equal tiles rather than full tiles and a small last one: a tile's decode takes as long as
  // its longest thread, and threads are only busy in the tiles their values fall into.
  const std::uint64_t tiles = (needed + limit - 1) / limit;
  const std::uint64_t per_tile = (needed + tiles - 1) / tiles;
  return static_cast<std::uint32_t>((per_tile + unit - 1) / unit * unit);
}

// Shared memory of one block: the decode table, kScanStorageBytes for the block-wide scan (the
// kernel static_asserts that cub's storage fits), then the stage. Both fixed parts are multiples
// of 128 bytes, so the stage starts on bank 0: the cost model's bank arithmetic relies on it.
inline constexpr std::uint32_t kScanStorageBytes = 128;
inline constexpr std::uint32_t kernel_fixed_shared_bytes(int table_bits) {
  return kernel_tables_bytes(table_bits) + kScanStorageBytes;
}

// The shared-memory limits of a device (cudaDevAttrMaxSharedMemoryPerMultiprocessor and
// ...PerBlockOptin); H100 and H200: 228 KiB and 227 KiB.
struct device_shared_limits {
  std::uint32_t per_multiprocessor = 0;
  std::uint32_t per_block_optin = 0;
};

// How one launch over a view uses shared memory.
struct launch_shape {
  std::uint32_t stage_slots = 0;
  std::uint32_t shared_bytes = 0;  // dynamic shared memory per block
};

// The default stage holds the largest sync group in one tile, as long as the block then still
// fits this many times on a multiprocessor; larger groups are split into equal tiles of that
// size. One tile keeps every warp busy through phase 2 (with tiles, the warps whose values lie
// in other tiles idle, and with small tiles a warp's lanes split between tiles); the block count
// it leaves (3 on an H100 with 12-bit codes and the default chunks, 2 with 15-bit codes) is the
// price. The cost model (cmake/scripts/kernel_model.sh) shows both effects.
inline constexpr std::uint32_t kMinBlocksPerMultiprocessor = 2;
// Shared memory the runtime reserves per block (cudaDevAttrReservedSharedMemoryPerBlock is 1 KiB
// on sm_80..sm_90).
inline constexpr std::uint32_t kReservedSharedPerBlock = 1024;
inline constexpr std::uint32_t kMinDefaultStageBytes = 4096;

// The launch shape for stage_bytes as gpu_decode_options::stage_bytes (0: the default above).
// errc::invalid_argument when the tables alone do not fit a block.
inline result<launch_shape> launch_shape_for(const device_bundle_view& v,
                                             const device_shared_limits& limits,
                                             std::uint32_t stage_bytes) {
  const std::uint32_t fixed = kernel_fixed_shared_bytes(v.table_bits);
  if (limits.per_block_optin < fixed + kMaxSlotsPerStore) {
    return error{errc::invalid_argument,
                 "gpu decompress: the " + std::to_string(v.table_bits) +
                     "-bit decode tables need " + std::to_string(fixed) +
                     " bytes of shared memory per block, the device allows " +
                     std::to_string(limits.per_block_optin)};
  }
  std::uint64_t stage = stage_bytes;
  if (stage == 0) {
    const std::int64_t share =
        std::int64_t{limits.per_multiprocessor} / kMinBlocksPerMultiprocessor -
        kReservedSharedPerBlock - fixed;
    stage = share > std::int64_t{kMinDefaultStageBytes} ? static_cast<std::uint64_t>(share)
                                                        : kMinDefaultStageBytes;
  }
  if (stage > limits.per_block_optin - fixed) stage = limits.per_block_optin - fixed;
  launch_shape shape;
  shape.stage_slots = stage_slots_for(v, stage);
  shape.shared_bytes = fixed + shape.stage_slots;
  return shape;
}

inline error describe_fault(unsigned long long record) {
  const std::uint64_t group = record >> 8;
  const char* what = "unknown fault";
  switch (static_cast<kernel_fault>(record & 0xFF)) {
    case kernel_fault::group_position: what = "value position out of order or range"; break;
    case kernel_fault::chunk_boundary:
      what = "codewords do not end where the next chunk's first codeword starts";
      break;
    case kernel_fault::value_count:
      what = "number of codewords differs from the group's value positions";
      break;
    case kernel_fault::none: break;
  }
  return {errc::bad_data, "bundle: exponent stream of group " + std::to_string(group) + ": " +
                              what + " (GPU kernel)"};
}

}  // namespace floatzip::detail
