// floatzip: the serialized bundle and a validating, non-owning view of it.
//
// A bundle is the unit of compression and of GPU decode: a list of BF16 tensors (typically one
// transformer block) sharing one Huffman code for their exponent bytes, one exponent stream and
// one run of raw sign/mantissa bytes. Its serialized form is self-describing; every section
// starts at a multiple of kSectionAlignment from the bundle's first byte, so a bundle copied or
// mapped to an aligned address can be handed to the GPU as it is.
//
// Layout (all integers little-endian):
//
//   offset  size  field
//   0       4     magic "FZB1"
//   4       2     format version (1)
//   6       1     max_code_length L, 1..15: no codeword is longer; decoders index tables by L bits
//   7       1     flags, must be 0
//   8       4     chunk_bytes: the exponent stream is cut into chunks of 8 * chunk_bytes bits
//   12      4     chunks_per_group: chunks per sync group (one GPU thread block)
//   16      8     value_count: BF16 values in the bundle, all tensors together
//   24      8     stream_bits: length of the exponent stream in bits
//   32      4     tensor_count
//   36      4     reserved, 0
//   40      8     total_bytes: size of the whole serialized bundle
//   48      16    reserved, 0
//   64      128   code lengths: symbol 2i in the low nibble of byte i, 2i+1 in the high nibble
//   192     8*T   value count of each tensor; tensor i's values start at the sum of those before
//   (align) V     sign/mantissa bytes, one per value, in value order, then zero padding
//   (align) 8*G   value position of each sync group: how many values precede its first codeword
//   (align) ⌈C/2⌉ chunk gaps: chunk c's first codeword starts gap(c) bits after 8*chunk_bytes*c;
//                 4 bits each, chunk 2i in the low nibble of byte i; gap < L
//   (align) S     exponent stream: ⌈stream_bits / 8⌉ bytes of MSB-first codewords, then at least
//                 kStreamPaddingBytes bytes of zero padding (see detail/bitstream.hpp)
//
// with C = ⌈stream_bits / (8 * chunk_bytes)⌉ chunks and G = ⌈C / chunks_per_group⌉ groups.
// A codeword belongs to the chunk in which its first bit lies. Group g begins at chunk
// g * chunks_per_group; its values are those whose codewords begin in its chunks.
//
// Why this metadata: any thread can start decoding at any chunk (the gap says where the first
// whole codeword starts) without decoding what precedes it, and a group's output position is
// known without counting its neighbours. Inside a group, GPU threads count their chunk's
// codewords and prefix-sum the counts; CPU threads decode whole groups. The cost is 4 bits per
// chunk and 64 bits per group: 0.011 bits per value at the defaults on typical weights.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "floatzip/detail/bitstream.hpp"
#include "floatzip/error.hpp"
#include "floatzip/huffman.hpp"

namespace floatzip {

inline constexpr std::uint32_t kBundleMagic = 0x31425A46;  // "FZB1" read as little-endian u32
inline constexpr std::uint16_t kBundleFormatVersion = 1;
inline constexpr std::size_t kBundleHeaderBytes = 64;
inline constexpr std::size_t kSectionAlignment = 16;
inline constexpr std::uint32_t kMinChunkBytes = 4;  // 32 bits >= kMaxCodeLength
inline constexpr std::uint32_t kMaxChunkBytes = 1u << 16;
inline constexpr std::uint32_t kMaxChunksPerGroup = 1u << 16;
// Bounds far above any real bundle that keep every size computation far from overflow.
inline constexpr std::uint64_t kMaxBundleValues = std::uint64_t{1} << 48;
inline constexpr std::uint32_t kMaxTensorsPerBundle = 1u << 24;

// Byte offsets and sizes of the sections, derived from the header fields alone.
struct bundle_layout {
  std::uint64_t tensor_counts_offset = 0;
  std::uint64_t sign_mantissa_offset = 0;
  std::uint64_t group_positions_offset = 0;
  std::uint64_t chunk_gaps_offset = 0;
  std::uint64_t stream_offset = 0;
  std::uint64_t stream_section_bytes = 0;
  std::uint64_t total_bytes = 0;
  std::uint64_t chunk_count = 0;
  std::uint64_t group_count = 0;
};

struct bundle_header {
  std::uint8_t max_code_length = 0;
  std::uint32_t chunk_bytes = 0;
  std::uint32_t chunks_per_group = 0;
  std::uint64_t value_count = 0;
  std::uint64_t stream_bits = 0;
  std::uint32_t tensor_count = 0;
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

// Precondition: the header fields are within the documented bounds (checked by parse_bundle or
// produced by the encoder), so nothing here overflows.
inline bundle_layout compute_layout(const bundle_header& h) noexcept {
  bundle_layout l;
  l.chunk_count = (h.stream_bits + h.chunk_bits() - 1) / h.chunk_bits();
  l.group_count = (l.chunk_count + h.chunks_per_group - 1) / h.chunks_per_group;
  l.tensor_counts_offset = kBundleHeaderBytes + kPackedCodeLengthsBytes;
  l.sign_mantissa_offset =
      align_up(l.tensor_counts_offset + std::uint64_t{h.tensor_count} * 8, kSectionAlignment);
  l.group_positions_offset = align_up(l.sign_mantissa_offset + h.value_count, kSectionAlignment);
  l.chunk_gaps_offset = align_up(l.group_positions_offset + l.group_count * 8, kSectionAlignment);
  l.stream_offset = align_up(l.chunk_gaps_offset + (l.chunk_count + 1) / 2, kSectionAlignment);
  l.stream_section_bytes =
      align_up((h.stream_bits + 7) / 8 + kStreamPaddingBytes, kSectionAlignment);
  l.total_bytes = l.stream_offset + l.stream_section_bytes;
  return l;
}

}  // namespace detail

// A validated, non-owning view of one serialized bundle. Cheap to copy; the bytes must outlive
// it. Obtain one from parse_bundle, which checks every field before any is used.
class bundle_view {
 public:
  bundle_view() = default;

  [[nodiscard]] const bundle_header& header() const noexcept { return header_; }
  [[nodiscard]] const bundle_layout& layout() const noexcept { return layout_; }
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return bytes_; }
  [[nodiscard]] std::uint64_t size_bytes() const noexcept { return layout_.total_bytes; }

  [[nodiscard]] std::uint64_t value_count() const noexcept { return header_.value_count; }
  [[nodiscard]] std::uint64_t stream_bits() const noexcept { return header_.stream_bits; }
  [[nodiscard]] int max_code_length() const noexcept { return header_.max_code_length; }
  [[nodiscard]] const code_lengths& code() const noexcept { return lengths_; }
  [[nodiscard]] std::uint64_t chunk_count() const noexcept { return layout_.chunk_count; }
  [[nodiscard]] std::uint64_t group_count() const noexcept { return layout_.group_count; }

  [[nodiscard]] std::uint32_t tensor_count() const noexcept { return header_.tensor_count; }
  // Values in tensor i. Precondition: i < tensor_count().
  [[nodiscard]] std::uint64_t tensor_value_count(std::uint32_t i) const noexcept {
    return detail::read_le64(bytes_.data() + layout_.tensor_counts_offset + std::uint64_t{i} * 8);
  }
  // Index of tensor i's first value in the decoded output. O(i).
  [[nodiscard]] std::uint64_t tensor_offset(std::uint32_t i) const noexcept {
    std::uint64_t offset = 0;
    for (std::uint32_t t = 0; t < i; ++t) offset += tensor_value_count(t);
    return offset;
  }

  [[nodiscard]] const std::uint8_t* sign_mantissa() const noexcept {
    return section(layout_.sign_mantissa_offset);
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

  std::span<const std::byte> bytes_;
  bundle_header header_;
  bundle_layout layout_;
  code_lengths lengths_{};
};

// Parses and validates a serialized bundle: header bounds, section sizes against the buffer
// (which may be longer than the bundle), code lengths (Kraft), tensor counts against
// value_count, chunk gaps, and group positions against the values their stream span can hold.
// The stream's codewords themselves are checked while decoding.
result<bundle_view> parse_bundle(std::span<const std::byte> bytes);

}  // namespace floatzip

#include "floatzip/detail/bundle_format.inl"
