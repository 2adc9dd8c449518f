// floatzip: the serialized bundle and a validating, non-owning view of it.
//
// A bundle is the unit of compression and of decode: a list of tensors of one value format
// (value_format.hpp; typically one transformer block) decoded together into one output buffer.
// Its values are cut into one or more segments, each a run of whole tensors with its own Huffman
// code for the symbol bytes (the exponents, for BF16), its own symbol ("exponent") stream and its
// own raw planes (sign/mantissa bytes for BF16); the encoder picks the cut
// that makes the bundle smallest (a code per tensor where that pays, one code for the whole
// bundle where the tables would cost more than they save). Its serialized form is
// self-describing; every section starts at a multiple of kSectionAlignment from the bundle's first
// byte, so a bundle copied or mapped to an aligned address can be handed to the GPU as it is.
//
// Layout (all integers little-endian):
//
//   offset  size  field
//   0       4     magic "FZB2"
//   4       2     format version (2)
//   6       1     max_code_length L, 1..15: no codeword of any segment is longer; decoders index
//                 tables by L bits
//   7       1     value format (value_format.hpp): 0 bf16, 1 fp16, 2 fp32, 3 bf16_in_fp32,
//                 4 fp8_e4m3, 5 fp8_e5m2; any other value is refused. (Before the other formats,
//                 this byte was "flags, must be 0": every bundle written then reads as bf16.)
//   8       4     chunk_bytes: exponent streams are cut into chunks of 8 * chunk_bytes bits
//   12      4     chunks_per_group: chunks per sync group (one GPU thread block)
//   16      8     value_count: values (of the bundle's format) in the bundle, all tensors
//   24      4     tensor_count T
//   28      4     segment_count S, >= 1
//   32      8     total_bytes: size of the whole serialized bundle
//   40      8*T   value count of each tensor; tensor i's values start at the sum of those before
//   ..      24*S  segment records: u64 value_count, u64 stream_bits, u64 body_offset
//   then each segment's body, at its body_offset (16-aligned, in order, each right after the
//   previous one):
//   0       1     first_symbol F: the lowest symbol byte with a codeword
//   1       1     symbol_span N - 1: the code lengths of symbols F .. F + N - 1 follow (F + N <=
//                 256); every other symbol is absent
//   2       ⌈N/2⌉ code lengths: symbol F + 2i in the low nibble of byte i, F + 2i + 1 in the high
//   (align) V     raw bytes (for BF16 the sign/mantissa bytes), one per value, in value order,
//                 then zero padding; absent (0 bytes) for the FP8 formats
//   (align) 2*V   low halves, u16 per value, in value order: FP32 only (else absent)
//   (align) 8*G   value position of each sync group: how many values of the segment precede its
//                 first codeword
//   (align) ⌈C/2⌉ chunk gaps: chunk c's first codeword starts gap(c) bits after 8*chunk_bytes*c;
//                 4 bits each, chunk 2i in the low nibble of byte i; gap < L
//   (align) S     exponent stream: ⌈stream_bits / 8⌉ bytes of MSB-first codewords, then at least
//                 kStreamPaddingBytes bytes of zero padding (see detail/bitstream.hpp)
//
// with C = ⌈stream_bits / (8 * chunk_bytes)⌉ chunks and G = ⌈C / chunks_per_group⌉ groups, per
// segment. A segment's values are the next value_count values of the bundle; segments cover the
// bundle in order. A codeword belongs to the chunk in which its first bit lies. Group g begins at
// chunk g * chunks_per_group; its values are those whose codewords begin in its chunks.
//
// Why this metadata: any thread can start decoding at any chunk (the gap says where the first
// whole codeword starts) without decoding what precedes it, and a group's output position is
// known without counting its neighbours. Inside a group, GPU threads count their chunk's
// codewords and prefix-sum the counts; CPU threads decode whole groups. The cost is 4 bits per
// chunk and 64 bits per group: 0.011 bits per value at the defaults on typical weights, plus
// about 100 bytes per segment (record, code lengths, alignment, stream padding).
//
// Segment views: a segment is decoded exactly like a bundle of one segment, so bundle_view(s)
// of segments are what the decoders, the CPU executor and the GPU upload work on. A bundle of
// one segment is its own segment view.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>

#include "floatzip/detail/bitstream.hpp"
#include "floatzip/error.hpp"
#include "floatzip/huffman.hpp"
#include "floatzip/value_format.hpp"

namespace floatzip {

inline constexpr std::uint32_t kBundleMagic = 0x32425A46;    // "FZB2" read as little-endian u32
inline constexpr std::uint32_t kBundleMagicV1 = 0x31425A46;  // "FZB1": format 1, not read
inline constexpr std::uint16_t kBundleFormatVersion = 2;
inline constexpr std::size_t kBundleHeaderBytes = 40;
inline constexpr std::size_t kSegmentRecordBytes = 24;
inline constexpr std::size_t kSegmentCodeHeaderBytes = 2;  // first_symbol, symbol_span
inline constexpr std::size_t kSectionAlignment = 16;
inline constexpr std::uint32_t kMinChunkBytes = 4;  // 32 bits >= kMaxCodeLength
inline constexpr std::uint32_t kMaxChunkBytes = 1u << 16;
inline constexpr std::uint32_t kMaxChunksPerGroup = 1u << 16;
// Bounds far above any real bundle that keep every size computation far from overflow.
inline constexpr std::uint64_t kMaxBundleValues = std::uint64_t{1} << 48;
inline constexpr std::uint32_t kMaxTensorsPerBundle = 1u << 24;
inline constexpr std::uint32_t kMaxSegmentsPerBundle = 1u << 24;

// Byte offsets (from the bundle's first byte) and sizes of one segment's sections, derived from
// its record and code-length header alone. tensor_counts_offset and segment_records_offset are
// the bundle's.
struct bundle_layout {
  std::uint64_t tensor_counts_offset = 0;
  std::uint64_t segment_records_offset = 0;
  std::uint64_t code_offset = 0;           // the segment's first_symbol byte
  std::uint64_t sign_mantissa_offset = 0;  // the raw bytes (empty for FP8)
  std::uint64_t low_halves_offset = 0;     // the low halves (empty but for FP32)
  std::uint64_t group_positions_offset = 0;
  std::uint64_t chunk_gaps_offset = 0;
  std::uint64_t stream_offset = 0;
  std::uint64_t stream_section_bytes = 0;
  std::uint64_t total_bytes = 0;  // of the bundle
  std::uint64_t end_offset = 0;   // the segment's last byte + 1 (== total_bytes for the last)
  std::uint64_t chunk_count = 0;
  std::uint64_t group_count = 0;
};

// The header fields; value_count and stream_bits are a segment view's own (for a bundle of one
// segment, the bundle's).
struct bundle_header {
  value_format format = value_format::bf16;
  std::uint8_t max_code_length = 0;
  std::uint32_t chunk_bytes = 0;
  std::uint32_t chunks_per_group = 0;
  std::uint64_t value_count = 0;
  std::uint64_t stream_bits = 0;
  std::uint32_t tensor_count = 0;
  std::uint32_t segment_count = 0;
  std::uint64_t total_bytes = 0;

  [[nodiscard]] std::uint64_t chunk_bits() const noexcept { return std::uint64_t{chunk_bytes} * 8; }
};

namespace detail {

constexpr std::uint64_t align_up(std::uint64_t n, std::uint64_t a) noexcept {
  return (n + a - 1) / a * a;
}

inline std::uint64_t read_le64(const std::byte* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Offset of the first segment body.
constexpr std::uint64_t first_segment_offset(std::uint32_t tensors, std::uint32_t segments) {
  return align_up(kBundleHeaderBytes + std::uint64_t{tensors} * 8 +
                      std::uint64_t{segments} * kSegmentRecordBytes,
                  kSectionAlignment);
}

// The sections of a segment of format `format` whose body starts at `body`, holds `values` values
// and `stream_bits` bits, and whose code covers `symbol_span` symbols. Precondition: the fields
// are within the documented bounds, so nothing here overflows.
inline bundle_layout compute_segment_layout(value_format format, std::uint64_t body,
                                            std::uint64_t values, std::uint64_t stream_bits,
                                            unsigned symbol_span, std::uint32_t chunk_bytes,
                                            std::uint32_t chunks_per_group) noexcept {
  bundle_layout l;
  const std::uint64_t chunk_bits = std::uint64_t{chunk_bytes} * 8;
  l.chunk_count = (stream_bits + chunk_bits - 1) / chunk_bits;
  l.group_count = (l.chunk_count + chunks_per_group - 1) / chunks_per_group;
  l.code_offset = body;
  l.sign_mantissa_offset =
      align_up(body + kSegmentCodeHeaderBytes + (symbol_span + 1) / 2, kSectionAlignment);
  const std::uint64_t raw_bytes = format_has_raw_byte(format) ? values : 0;
  l.low_halves_offset = align_up(l.sign_mantissa_offset + raw_bytes, kSectionAlignment);
  const std::uint64_t low_bytes = format_has_low_half(format) ? 2 * values : 0;
  l.group_positions_offset = align_up(l.low_halves_offset + low_bytes, kSectionAlignment);
  l.chunk_gaps_offset = align_up(l.group_positions_offset + l.group_count * 8, kSectionAlignment);
  l.stream_offset = align_up(l.chunk_gaps_offset + (l.chunk_count + 1) / 2, kSectionAlignment);
  l.stream_section_bytes = align_up((stream_bits + 7) / 8 + kStreamPaddingBytes, kSectionAlignment);
  l.end_offset = l.stream_offset + l.stream_section_bytes;
  return l;
}

// The smallest symbol range holding every codeword (symbol 0 alone for the empty code).
inline std::pair<unsigned, unsigned> code_symbol_range(const code_lengths& lengths) noexcept {
  unsigned first = 0;
  while (first + 1 < kSymbolCount && lengths[first] == 0) ++first;
  unsigned last = kSymbolCount - 1;
  while (last > first && lengths[last] == 0) --last;
  if (lengths[first] == 0) return {0, 1};
  return {first, last - first + 1};
}

}  // namespace detail

// A validated, non-owning view of one serialized bundle, or of one segment of it. Cheap to copy;
// the bytes must outlive it. Obtain one from parse_bundle, which checks every field of every
// segment before any is used, and segment views from segment(s).
//
// The stream accessors (code, exponent_stream, chunk gaps, groups) describe one segment: the
// view's own for a segment view, the first segment's for a bundle view. decompress() decodes
// every segment of a bundle view; code that works on streams itself (the CPU executor, the GPU
// upload) takes segment views. The tensor accessors always describe the whole bundle.
class bundle_view {
 public:
  bundle_view() = default;

  [[nodiscard]] const bundle_header& header() const noexcept { return header_; }
  [[nodiscard]] const bundle_layout& layout() const noexcept { return layout_; }
  // The whole serialized bundle (also for a segment view).
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return bytes_; }
  [[nodiscard]] std::uint64_t size_bytes() const noexcept { return layout_.total_bytes; }

  // The format of every value in the bundle (its tensors all share it).
  [[nodiscard]] value_format format() const noexcept { return header_.format; }
  [[nodiscard]] std::uint64_t value_count() const noexcept { return header_.value_count; }
  [[nodiscard]] std::uint64_t stream_bits() const noexcept { return header_.stream_bits; }
  [[nodiscard]] int max_code_length() const noexcept { return header_.max_code_length; }
  [[nodiscard]] const code_lengths& code() const noexcept { return lengths_; }
  [[nodiscard]] std::uint64_t chunk_count() const noexcept { return layout_.chunk_count; }
  [[nodiscard]] std::uint64_t group_count() const noexcept { return layout_.group_count; }

  // Segments: a bundle view has segment_count() >= 1; a segment view reports 1 (itself).
  [[nodiscard]] std::uint32_t segment_count() const noexcept { return header_.segment_count; }
  [[nodiscard]] bool is_segment() const noexcept { return segment_index_ >= 0; }
  // Index of this view's first value in the bundle's output (0 for a bundle view).
  [[nodiscard]] std::uint64_t first_value() const noexcept { return first_value_; }
  // Segment s of a bundle view. O(s) to find its first value; the rest is O(1) since parse has
  // checked every field. Precondition: !is_segment() and s < segment_count().
  [[nodiscard]] bundle_view segment(std::uint32_t s) const;
  // Calls fn(segment view) for every segment in order, O(segment_count()) in all; stops at and
  // returns the first error fn returns.
  template <class Fn>
  error for_each_segment(Fn&& fn) const {
    if (is_segment()) return fn(*this);
    std::uint64_t first = 0;
    for (std::uint32_t s = 0; s < header_.segment_count; ++s) {
      const bundle_view v = segment_at(s, first);
      if (error e = fn(v)) return e;
      first += v.value_count();
    }
    return {};
  }

  [[nodiscard]] std::uint32_t tensor_count() const noexcept { return header_.tensor_count; }
  // Values in tensor i. Precondition: i < tensor_count().
  [[nodiscard]] std::uint64_t tensor_value_count(std::uint32_t i) const noexcept {
    return detail::read_le64(bytes_.data() + kBundleHeaderBytes + std::uint64_t{i} * 8);
  }
  // Index of tensor i's first value in the decoded output. O(i).
  [[nodiscard]] std::uint64_t tensor_offset(std::uint32_t i) const noexcept {
    std::uint64_t offset = 0;
    for (std::uint32_t t = 0; t < i; ++t) offset += tensor_value_count(t);
    return offset;
  }

  // The raw bytes, one per value (the sign/mantissa bytes of BF16); nullptr for the FP8 formats,
  // which have none.
  [[nodiscard]] const std::uint8_t* raw_bytes() const noexcept {
    return format_has_raw_byte(header_.format) ? section(layout_.sign_mantissa_offset) : nullptr;
  }
  [[nodiscard]] const std::uint8_t* sign_mantissa() const noexcept { return raw_bytes(); }
  // The low halves, one u16 per value (16-byte aligned from the bundle's first byte); nullptr
  // unless the format is fp32.
  [[nodiscard]] const std::uint16_t* low_halves() const noexcept {
    if (!format_has_low_half(header_.format)) return nullptr;
    return reinterpret_cast<const std::uint16_t*>(bytes_.data() + layout_.low_halves_offset);
  }
  [[nodiscard]] const std::uint8_t* exponent_stream() const noexcept {
    return section(layout_.stream_offset);
  }
  [[nodiscard]] const std::uint8_t* chunk_gaps() const noexcept {
    return section(layout_.chunk_gaps_offset);
  }
  [[nodiscard]] std::uint64_t group_value_position(std::uint64_t g) const noexcept {
    return detail::read_le64(bytes_.data() + layout_.group_positions_offset + g * 8);
  }
  [[nodiscard]] unsigned chunk_gap(std::uint64_t c) const noexcept {
    const std::uint8_t b = chunk_gaps()[c >> 1];
    return (c & 1) != 0 ? b >> 4 : b & 0x0Fu;
  }
  // Stream position of chunk c's first codeword (== stream_bits() for a chunk holding none).
  [[nodiscard]] std::uint64_t chunk_start_bit(std::uint64_t c) const noexcept {
    return c * header_.chunk_bits() + chunk_gap(c);
  }
  // Stream range [begin, end) and value range of sync group g.
  [[nodiscard]] std::uint64_t group_begin_bit(std::uint64_t g) const noexcept {
    return chunk_start_bit(g * header_.chunks_per_group);
  }
  [[nodiscard]] std::uint64_t group_end_bit(std::uint64_t g) const noexcept {
    return g + 1 < layout_.group_count ? group_begin_bit(g + 1) : header_.stream_bits;
  }
  [[nodiscard]] std::uint64_t group_end_value(std::uint64_t g) const noexcept {
    return g + 1 < layout_.group_count ? group_value_position(g + 1) : header_.value_count;
  }

 private:
  friend result<bundle_view> parse_bundle(std::span<const std::byte> bytes);
  [[nodiscard]] const std::uint8_t* section(std::uint64_t offset) const noexcept {
    return reinterpret_cast<const std::uint8_t*>(bytes_.data() + offset);
  }
  // The view of the segment whose record is number s, its first value known. No checks.
  [[nodiscard]] bundle_view segment_at(std::uint32_t s, std::uint64_t first_value) const noexcept;

  std::span<const std::byte> bytes_;
  bundle_header header_;
  bundle_layout layout_;
  code_lengths lengths_{};
  std::uint64_t first_value_ = 0;
  std::int64_t segment_index_ = -1;
};

// Parses and validates a serialized bundle: header bounds, section sizes against the buffer
// (which may be longer than the bundle), every segment's code lengths (Kraft), tensor and segment
// counts against value_count, chunk gaps, and group positions against the values their stream
// span can hold. The streams' codewords themselves are checked while decoding. A bundle of
// format 1 ("FZB1") is errc::unsupported_version.
result<bundle_view> parse_bundle(std::span<const std::byte> bytes);

}  // namespace floatzip

#include "floatzip/detail/bundle_format.inl"
