// floatzip internals: the per-thread work of the GPU decode kernel, written once.
//
// The kernel (cuda/decode_kernel.cuh) and the CPU executor (cpu_executor.hpp) both call these
// functions; only the launch, the block-wide scan, the barriers and the shared-memory placement
// differ. Running the executor over a bundle therefore tests everything the kernel computes:
// segment boundaries, the chunk walk, output positions, the tiling of the staging buffer, the
// alignment of the wide stores and the merge of exponent and sign/mantissa bytes.
//
// One thread block decodes one sync group, in two phases:
//
//   phase 1  thread t takes a segment of the group's chunks (one chunk when chunks_per_group ==
//            threads per block), starts at its first codeword (chunk gap) and counts the
//            codewords that start before the segment's end boundary: walk_segment().
//   scan     an exclusive sum of the counts gives each thread the index of its first value in
//            the group; the block checks the counts and boundaries (block_fault()) before it
//            writes anything.
//   phase 2  threads decode their segment again, writing exponent bytes into a shared "stage",
//            then the whole block merges the stage with the sign/mantissa bytes into the output
//            with 16-byte stores (merge_tile_part()). A group larger than the stage is done in
//            several tiles; each thread's decoder state carries over from tile to tile.
//
// Output "slots": the stage is laid out so that 8 consecutive slots are one 16-byte-aligned
// store in the output. Slot s of a group holds its value s - lead, where lead is how far the
// group's first value lies past a 16-byte boundary of the output (in values). Tiles start at
// multiples of the stage size, itself a multiple of 8 slots.
//
// Stream reads use aligned 32-bit words counted from the stream section's start (a GPU cannot
// load unaligned words). A reader holds at most 64 bits and refills one word when fewer than
// TableBits remain, so it never loads more than 47 bits past the codeword it decodes; a segment
// never decodes a codeword that starts at or after min(its end boundary, stream_bits). Every
// load therefore lies within ceil(stream_bits / 8) + 8 bytes of the section start, inside the
// kStreamPaddingBytes padding the format guarantees.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "floatzip/bf16.hpp"
#include "floatzip/bundle_format.hpp"
#include "floatzip/config.hpp"
#include "floatzip/error.hpp"
#include "floatzip/gpu.hpp"
#include "floatzip/huffman.hpp"

namespace floatzip::detail {

inline constexpr std::uint32_t kSlotsPerStore = 8;  // BF16 values per 16-byte store
// A group's stream span must stay below this so that in-group offsets fit 32-bit registers.
inline constexpr std::uint64_t kMaxGroupBits = std::uint64_t{1} << 31;

// ---- instrumentation hook -----------------------------------------------------------------------
// The per-thread functions report their shared-memory accesses and stream refills to a probe. The
// kernel and the CPU executor pass no_probe, whose calls compile to nothing; the kernel cost model
// (bench/bench_gpu_model.cpp) passes a recorder and replays a warp's 32 threads in lockstep to
// count steps, active lanes and bank conflicts of this very code. Offsets are bytes from the start
// of the decode table or of the stage.
struct no_probe {
  FLOATZIP_HD void table_lookup(std::uint32_t /*byte_offset*/, unsigned /*bytes*/) const {}
  FLOATZIP_HD void stream_refill() const {}
  FLOATZIP_HD void stage_store(std::uint32_t /*byte_offset*/, unsigned /*bytes*/) const {}
  FLOATZIP_HD void stage_load(std::uint32_t /*byte_offset*/, unsigned /*bytes*/) const {}
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
FLOATZIP_HD void store_16_aligned(std::uint16_t* p, std::uint32_t w0, std::uint32_t w1,
                                  std::uint32_t w2, std::uint32_t w3) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<uint4*>(p) = make_uint4(w0, w1, w2, w3);
#else
  require_host_alignment(p, 16, "16-byte store");
  const std::uint32_t words[4] = {w0, w1, w2, w3};
  std::memcpy(p, words, sizeof words);
#endif
}

FLOATZIP_HD std::uint32_t byte_swap32(std::uint32_t v) {
  return (v >> 24) | ((v >> 8) & 0x0000FF00u) | ((v << 8) & 0x00FF0000u) | (v << 24);
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

// ---- the bit reader -----------------------------------------------------------------------------

// MSB-first reader over aligned big-endian 32-bit words of the stream. `bits` holds `valid`
// stream bits left-aligned, all lower bits zero; next_word * 32 is the stream position just past
// them.
struct stream_reader {
  const std::uint8_t* stream;
  std::uint64_t bits;
  std::uint64_t next_word;
  unsigned valid;

  FLOATZIP_HD void start(const std::uint8_t* stream_section, std::uint64_t bit_pos) {
    stream = stream_section;
    const std::uint64_t word = bit_pos >> 5;
    const std::uint64_t pair =
        (std::uint64_t{byte_swap32(load_u32_aligned(stream + word * 4))} << 32) |
        byte_swap32(load_u32_aligned(stream + word * 4 + 4));
    const unsigned skip = static_cast<unsigned>(bit_pos & 31);
    bits = pair << skip;
    valid = 64 - skip;
    next_word = word + 2;
  }

  // The table entry of the codeword at the front. Refilling only below TableBits keeps the
  // look-ahead short (see the file comment) and needs one load per 2-3 codewords.
  template <int TableBits, class Probe = no_probe>
  FLOATZIP_HD decode_entry peek(const decode_entry* table, Probe probe = {}) {
    if (valid < static_cast<unsigned>(TableBits)) {
      probe.stream_refill();
      bits |= std::uint64_t{byte_swap32(load_u32_aligned(stream + next_word * 4))} << (32 - valid);
      valid += 32;
      ++next_word;
    }
    const auto index = static_cast<std::uint32_t>(bits >> (64 - TableBits));
    probe.table_lookup(index * static_cast<std::uint32_t>(sizeof(decode_entry)),
                       sizeof(decode_entry));
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

// Phase 1 of one thread: counts the segment's codewords. Never decodes a codeword that starts at
// or past begin_bit + limit_bits.
template <int TableBits, class Probe = no_probe>
FLOATZIP_HD segment_walk walk_segment(const std::uint8_t* stream, const decode_entry* table,
                                      const thread_segment& s, Probe probe = {}) {
  segment_walk w;
  if (s.empty || s.limit_bits == 0) return w;
  stream_reader reader;
  reader.start(stream, s.begin_bit);
  std::uint32_t offset = 0;
  std::uint32_t count = 0;
  do {
    const unsigned length = entry_length(reader.peek<TableBits>(table, probe));
    reader.consume(length);
    offset += length;
    ++count;
  } while (offset < s.limit_bits);
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

// Where a block writes: its group's values go to out[first, first + values).
struct block_output {
  std::uint16_t* out;
  const std::uint8_t* sign_mantissa;
  std::uint64_t first;     // the group's first value
  std::uint32_t lead;      // slot of the group's first value, 0..7
  std::uint32_t slot_end;  // lead + the group's value count
};

// out_shift: (address of out[0] / 2) % 8, i.e. how many values out[0] lies past a 16-byte
// boundary. Precondition: values.valid.
FLOATZIP_HD block_output block_output_of(std::uint16_t* out, std::uint32_t out_shift,
                                         const device_bundle_view& v, const group_values& values) {
  block_output b;
  b.out = out;
  b.sign_mantissa = v.sign_mantissa;
  b.first = values.first;
  b.lead = static_cast<std::uint32_t>((values.first + out_shift) & (kSlotsPerStore - 1));
  b.slot_end = b.lead + static_cast<std::uint32_t>(values.end - values.first);
  return b;
}

// One thread's phase-2 state; it lives in registers across tiles.
struct thread_output {
  stream_reader reader;
  std::uint32_t next_slot;
  std::uint32_t end_slot;
};

// first_value: the thread's first value within the group (the exclusive scan of the counts).
FLOATZIP_HD thread_output start_output(const std::uint8_t* stream, const thread_segment& s,
                                       const block_output& b, std::uint32_t first_value,
                                       std::uint32_t count) {
  thread_output o;
  o.next_slot = b.lead + first_value;
  o.end_slot = o.next_slot + count;
  o.reader.stream = stream;
  o.reader.bits = 0;
  o.reader.next_word = 0;
  o.reader.valid = 0;
  if (count > 0) o.reader.start(stream, s.begin_bit);
  return o;
}

// Decodes the thread's values whose slots lie before tile_end_slot into stage[slot -
// tile_begin_slot]. Precondition: the earlier tiles were done, so next_slot >= tile_begin_slot.
template <int TableBits, class Probe = no_probe>
FLOATZIP_HD void decode_to_stage(thread_output& o, const decode_entry* table, std::uint8_t* stage,
                                 std::uint32_t tile_begin_slot, std::uint32_t tile_end_slot,
                                 Probe probe = {}) {
  const std::uint32_t stop = o.end_slot < tile_end_slot ? o.end_slot : tile_end_slot;
  std::uint8_t* dst = stage - tile_begin_slot;
  for (std::uint32_t slot = o.next_slot; slot < stop; ++slot) {
    const decode_entry e = o.reader.peek<TableBits>(table, probe);
    o.reader.consume(entry_length(e));
    probe.stage_store(slot - tile_begin_slot, 1);
    dst[slot] = entry_symbol(e);
  }
  if (o.next_slot < stop) o.next_slot = stop;
}

// Two BF16 values from the low 16 bits of each argument (lower address in the low byte), as one
// little-endian 32-bit word. Per value: w = ((s & 0x80) << 8) | (e << 7) | (s & 0x7F), done for
// both halves at once on the interleaved word [s0 e0 s1 e1].
FLOATZIP_HD std::uint32_t merge_two_values(std::uint32_t exponents, std::uint32_t sign_mantissas) {
  const std::uint32_t x = (sign_mantissas & 0xFFu) | ((exponents & 0xFFu) << 8) |
                          ((sign_mantissas & 0xFF00u) << 8) | ((exponents & 0xFF00u) << 16);
  return ((x & 0x00800080u) << 8) | ((x >> 1) & 0x7F807F80u) | (x & 0x007F007Fu);
}

// The 8 sign/mantissa bytes sm[pos .. pos + 8), little-endian, from one or two aligned 8-byte
// loads. Precondition: sm is 8-byte aligned and byte pos + 7 lies in the section (the section is
// padded to 16 bytes, so the second load stays inside it).
FLOATZIP_HD std::uint64_t load_sign_mantissa8(const std::uint8_t* sm, std::uint64_t pos) {
  const unsigned misalignment = static_cast<unsigned>(pos & 7);
  const std::uint64_t low = load_u64_aligned(sm + (pos - misalignment));
  if (misalignment == 0) return low;
  const std::uint64_t high = load_u64_aligned(sm + (pos - misalignment) + 8);
  return (low >> (8 * misalignment)) | (high << (64 - 8 * misalignment));
}

// Writes the values of slots [unit_slot, unit_slot + 8) that belong to the group. A full unit is
// one 16-byte store (slot alignment makes out + pos 16-byte aligned); the group's first and last
// unit may be partial and are written value by value.
template <class Probe = no_probe>
FLOATZIP_HD void merge_unit(const block_output& b, const std::uint8_t* stage,
                            std::uint32_t tile_begin_slot, std::uint32_t unit_slot,
                            Probe probe = {}) {
  const std::uint8_t* exponents = stage + (unit_slot - tile_begin_slot);
  if (unit_slot >= b.lead && unit_slot + kSlotsPerStore <= b.slot_end) {
    probe.stage_load(unit_slot - tile_begin_slot, 8);
    const std::uint64_t pos = b.first + (unit_slot - b.lead);
    const std::uint64_t e8 = load_u64_aligned(exponents);
    const std::uint64_t s8 = load_sign_mantissa8(b.sign_mantissa, pos);
    store_16_aligned(
        b.out + pos,
        merge_two_values(static_cast<std::uint32_t>(e8), static_cast<std::uint32_t>(s8)),
        merge_two_values(static_cast<std::uint32_t>(e8 >> 16),
                         static_cast<std::uint32_t>(s8 >> 16)),
        merge_two_values(static_cast<std::uint32_t>(e8 >> 32),
                         static_cast<std::uint32_t>(s8 >> 32)),
        merge_two_values(static_cast<std::uint32_t>(e8 >> 48),
                         static_cast<std::uint32_t>(s8 >> 48)));
    return;
  }
  const std::uint32_t lo = unit_slot > b.lead ? unit_slot : b.lead;
  const std::uint32_t hi =
      unit_slot + kSlotsPerStore < b.slot_end ? unit_slot + kSlotsPerStore : b.slot_end;
  probe.stage_load(lo - tile_begin_slot, hi - lo);
  for (std::uint32_t slot = lo; slot < hi; ++slot) {
    const std::uint64_t pos = b.first + (slot - b.lead);
    b.out[pos] = bf16_merge(exponents[slot - unit_slot], b.sign_mantissa[pos]);
  }
}

// Thread `thread`'s share of merging one tile: units thread, thread + threads, ... so that a
// warp's stores cover consecutive 16-byte words. tile_begin_slot is a multiple of 8.
template <class Probe = no_probe>
FLOATZIP_HD void merge_tile_part(const block_output& b, const std::uint8_t* stage,
                                 std::uint32_t tile_begin_slot, std::uint32_t tile_end_slot,
                                 unsigned thread, unsigned threads, Probe probe = {}) {
  const std::uint32_t end = tile_end_slot < b.slot_end ? tile_end_slot : b.slot_end;
  for (std::uint32_t unit = tile_begin_slot + thread * kSlotsPerStore; unit < end;
       unit += threads * kSlotsPerStore) {
    merge_unit(b, stage, tile_begin_slot, unit, probe);
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

inline std::uint32_t decode_table_bytes(int table_bits) {
  return static_cast<std::uint32_t>(sizeof(decode_entry)) << table_bits;
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

// The flat table the kernel indexes, built from the bundle's (validated) code lengths and
// checked entry by entry (check_kernel_decode_table).
inline result<std::vector<decode_entry>> build_kernel_decode_table(const bundle_view& bundle,
                                                                   int table_bits) {
  std::vector<decode_entry> table(std::size_t{1} << table_bits);
  build_decode_table(bundle.code(), table_bits, table);
  if (bundle.value_count() == 0) return table;  // never indexed
  if (error e = check_kernel_decode_table(table, table_bits)) return e;
  return table;
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
                                                  const decode_entry* table, int table_bits,
                                                  unsigned long long* status) {
  const bundle_layout& layout = bundle.layout();
  auto at = [&](std::uint64_t offset) {
    return reinterpret_cast<const std::uint8_t*>(base + offset);
  };
  device_bundle_view v;
  v.exponent_stream = at(layout.stream_offset);
  v.sign_mantissa = at(layout.sign_mantissa_offset);
  v.chunk_gaps = at(layout.chunk_gaps_offset);
  v.group_positions = reinterpret_cast<const std::uint64_t*>(base + layout.group_positions_offset);
  v.decode_table = table;
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
  if (v.exponent_stream == nullptr || v.sign_mantissa == nullptr || v.chunk_gaps == nullptr ||
      v.group_positions == nullptr || v.decode_table == nullptr) {
    return invalid("view has a null section pointer");
  }
  if (!aligned_to(v.exponent_stream, 16) || !aligned_to(v.sign_mantissa, 16) ||
      !aligned_to(v.group_positions, 16) || !aligned_to(v.decode_table, 16)) {
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

// validate_view plus the output buffer: what a launch needs.
inline error validate_launch(const device_bundle_view& v, const std::uint16_t* out,
                             std::uint64_t out_capacity) {
  using std::to_string;
  if (out_capacity < v.value_count) {
    return {errc::insufficient_space, "gpu decompress: output holds " + to_string(out_capacity) +
                                          " values, the bundle has " + to_string(v.value_count)};
  }
  if (v.value_count == 0) return {};
  if (out == nullptr || !aligned_to(out, 2)) {
    return {errc::invalid_argument, "gpu decompress: output pointer null or odd"};
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
// else the size of equal tiles that do; at least one store unit, a multiple of 8.
inline std::uint32_t stage_slots_for(const device_bundle_view& v, std::uint64_t max_stage_bytes) {
  // Every value takes at least one bit, which bounds a group whatever max_group_values says.
  const std::uint64_t group_bits = std::uint64_t{v.chunks_per_group} * v.chunk_bits;
  const std::uint64_t values = v.max_group_values < group_bits ? v.max_group_values : group_bits;
  const std::uint64_t needed = (values + 2 * kSlotsPerStore - 1) / kSlotsPerStore * kSlotsPerStore;
  std::uint64_t limit = max_stage_bytes / kSlotsPerStore * kSlotsPerStore;
  if (limit < kSlotsPerStore) limit = kSlotsPerStore;
  if (needed <= limit) return static_cast<std::uint32_t>(needed);
  // Equal tiles rather than full tiles and a small last one: a tile's decode takes as long as
  // its longest thread, and threads are only busy in the tiles their values fall into.
  const std::uint64_t tiles = (needed + limit - 1) / limit;
  const std::uint64_t per_tile = (needed + tiles - 1) / tiles;
  return static_cast<std::uint32_t>((per_tile + kSlotsPerStore - 1) / kSlotsPerStore *
                                    kSlotsPerStore);
}

// Shared memory of one block: the decode table, kScanStorageBytes for the block-wide scan (the
// kernel static_asserts that cub's storage fits), then the stage. Both fixed parts are multiples
// of 128 bytes, so the stage starts on bank 0: the cost model's bank arithmetic relies on it.
inline constexpr std::uint32_t kScanStorageBytes = 128;
inline constexpr std::uint32_t kernel_fixed_shared_bytes(int table_bits) {
  return (std::uint32_t{sizeof(decode_entry)} << table_bits) + kScanStorageBytes;
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

// The default stage is this fraction of a multiprocessor's shared memory: enough blocks to hide
// the latency of the dependent table look-ups. stage_slots_for then splits a group that does not
// fit into equal tiles, so the real block is often smaller.
inline constexpr std::uint32_t kTargetBlocksPerMultiprocessor = 4;
// Shared memory the runtime reserves per block (cudaDevAttrReservedSharedMemoryPerBlock is 1 KiB
// on sm_80..sm_90).
inline constexpr std::uint32_t kReservedSharedPerBlock = 1024;
inline constexpr std::uint32_t kMinDefaultStageBytes = 4096;

// The launch shape for stage_bytes as gpu_decode_options::stage_bytes (0: the default share of the
// multiprocessor). errc::invalid_argument when the table alone does not fit a block.
inline result<launch_shape> launch_shape_for(const device_bundle_view& v,
                                             const device_shared_limits& limits,
                                             std::uint32_t stage_bytes) {
  const std::uint32_t fixed = kernel_fixed_shared_bytes(v.table_bits);
  if (limits.per_block_optin < fixed + kSlotsPerStore) {
    return error{errc::invalid_argument,
                 "gpu decompress: the " + std::to_string(v.table_bits) +
                     "-bit decode table needs " + std::to_string(fixed) +
                     " bytes of shared memory per block, the device allows " +
                     std::to_string(limits.per_block_optin)};
  }
  std::uint64_t stage = stage_bytes;
  if (stage == 0) {
    const std::int64_t share =
        std::int64_t{limits.per_multiprocessor} / kTargetBlocksPerMultiprocessor -
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
