// floatzip internals: parse_bundle, the gatekeeper for untrusted bundle bytes.
#pragma once

#include <string>

namespace floatzip {

namespace detail {

inline error bundle_error(errc code, const std::string& what) {
  return error(code, "bundle: " + what);
}

inline std::uint32_t read_le32(const std::byte* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline std::uint16_t read_le16(const std::byte* p) noexcept {
  std::uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Code lengths of symbols first .. first + span - 1 from `packed` (two per byte, low nibble
// first); every other symbol absent.
inline code_lengths unpack_code_range(const std::byte* packed, unsigned first, unsigned span) {
  code_lengths lengths{};
  for (unsigned i = 0; i < span; ++i) {
    const auto byte = static_cast<std::uint8_t>(packed[i / 2]);
    lengths[first + i] = (i & 1) != 0 ? byte >> 4 : byte & 0x0F;
  }
  return lengths;
}

}  // namespace detail

inline bundle_view bundle_view::segment_at(std::uint32_t s,
                                           std::uint64_t first_value) const noexcept {
  const std::byte* record =
      bytes_.data() + layout_.segment_records_offset + std::uint64_t{s} * kSegmentRecordBytes;
  bundle_view v = *this;
  v.header_.value_count = detail::read_le64(record);
  v.header_.stream_bits = detail::read_le64(record + 8);
  const std::uint64_t body = detail::read_le64(record + 16);
  const auto first_symbol = static_cast<unsigned>(bytes_[body]);
  const unsigned span = static_cast<unsigned>(bytes_[body + 1]) + 1;
  v.layout_ = detail::compute_segment_layout(header_.format, body, v.header_.value_count,
                                             v.header_.stream_bits, span, header_.chunk_bytes,
                                             header_.chunks_per_group);
  v.layout_.tensor_counts_offset = layout_.tensor_counts_offset;
  v.layout_.segment_records_offset = layout_.segment_records_offset;
  v.layout_.total_bytes = layout_.total_bytes;
  v.lengths_ =
      detail::unpack_code_range(bytes_.data() + body + kSegmentCodeHeaderBytes, first_symbol, span);
  v.first_value_ = first_value;
  v.segment_index_ = s;
  v.header_.segment_count = 1;
  return v;
}

inline bundle_view bundle_view::segment(std::uint32_t s) const {
  std::uint64_t first = 0;
  for (std::uint32_t i = 0; i < s; ++i)
    first += detail::read_le64(bytes_.data() + layout_.segment_records_offset +
                               std::uint64_t{i} * kSegmentRecordBytes);
  return segment_at(s, first);
}

inline result<bundle_view> parse_bundle(std::span<const std::byte> bytes) {
  using detail::bundle_error;
  using std::to_string;
  if (bytes.size() >= 4 && detail::read_le32(bytes.data()) == kBundleMagicV1) {
    return bundle_error(errc::unsupported_version,
                        "header field magic: bundle format 1 (FZB1), this build reads format " +
                            to_string(kBundleFormatVersion) + "; compress the original file again");
  }
  if (bytes.size() < kBundleHeaderBytes) {
    return bundle_error(errc::truncated, "header: " + to_string(bytes.size()) +
                                             " bytes, need at least " +
                                             to_string(kBundleHeaderBytes));
  }
  const std::byte* p = bytes.data();
  if (detail::read_le32(p) != kBundleMagic) {
    return bundle_error(errc::bad_data, "header field magic: not a floatzip bundle");
  }
  const std::uint16_t version = detail::read_le16(p + 4);
  if (version != kBundleFormatVersion) {
    return bundle_error(errc::unsupported_version, "header field version: " + to_string(version) +
                                                       ", this build reads " +
                                                       to_string(kBundleFormatVersion));
  }
  bundle_header h;
  h.max_code_length = static_cast<std::uint8_t>(p[6]);
  const auto format_byte = static_cast<std::uint8_t>(p[7]);
  h.format = static_cast<value_format>(format_byte);
  h.chunk_bytes = detail::read_le32(p + 8);
  h.chunks_per_group = detail::read_le32(p + 12);
  h.value_count = detail::read_le64(p + 16);
  h.tensor_count = detail::read_le32(p + 24);
  h.segment_count = detail::read_le32(p + 28);
  h.total_bytes = detail::read_le64(p + 32);

  if (h.max_code_length < 1 || h.max_code_length > kMaxCodeLength) {
    return bundle_error(errc::bad_data,
                        "header field max_code_length: " + to_string(h.max_code_length) +
                            " not in [1, " + to_string(kMaxCodeLength) + "]");
  }
  if (!is_known(h.format)) {
    return bundle_error(errc::bad_data, "header field value_format: " + to_string(format_byte) +
                                            " is no known value format (0.." +
                                            to_string(kValueFormatCount - 1) + ")");
  }
  if (h.chunk_bytes < kMinChunkBytes || h.chunk_bytes > kMaxChunkBytes) {
    return bundle_error(errc::bad_data, "header field chunk_bytes: " + to_string(h.chunk_bytes) +
                                            " not in [" + to_string(kMinChunkBytes) + ", " +
                                            to_string(kMaxChunkBytes) + "]");
  }
  if (h.chunks_per_group < 1 || h.chunks_per_group > kMaxChunksPerGroup) {
    return bundle_error(errc::bad_data,
                        "header field chunks_per_group: " + to_string(h.chunks_per_group) +
                            " not in [1, " + to_string(kMaxChunksPerGroup) + "]");
  }
  if (h.value_count > kMaxBundleValues) {
    return bundle_error(errc::too_large,
                        "header field value_count: " + to_string(h.value_count) + " too large");
  }
  if (h.tensor_count > kMaxTensorsPerBundle) {
    return bundle_error(errc::too_large,
                        "header field tensor_count: " + to_string(h.tensor_count) + " too large");
  }
  if (h.segment_count < 1 || h.segment_count > kMaxSegmentsPerBundle) {
    return bundle_error(errc::bad_data,
                        "header field segment_count: " + to_string(h.segment_count) +
                            " not in [1, " + to_string(kMaxSegmentsPerBundle) + "]");
  }
  const std::uint64_t bodies = detail::first_segment_offset(h.tensor_count, h.segment_count);
  if (h.total_bytes < bodies || bytes.size() < bodies) {
    return bundle_error(errc::truncated, "header: total_bytes " + to_string(h.total_bytes) +
                                             " (buffer " + to_string(bytes.size()) +
                                             ") cannot hold the tensor and segment records");
  }
  if (bytes.size() < h.total_bytes) {
    return bundle_error(errc::truncated, "size: " + to_string(bytes.size()) +
                                             " bytes, header declares " + to_string(h.total_bytes));
  }
  for (std::uint64_t i = kBundleHeaderBytes + std::uint64_t{h.tensor_count} * 8 +
                         std::uint64_t{h.segment_count} * kSegmentRecordBytes;
       i < bodies; ++i) {
    if (p[i] != std::byte{0}) return bundle_error(errc::bad_data, "header padding: nonzero");
  }

  bundle_view view;
  view.bytes_ = bytes.first(h.total_bytes);
  view.header_ = h;
  view.layout_.tensor_counts_offset = kBundleHeaderBytes;
  view.layout_.segment_records_offset = kBundleHeaderBytes + std::uint64_t{h.tensor_count} * 8;
  view.layout_.total_bytes = h.total_bytes;

  std::uint64_t tensor_total = 0;
  for (std::uint32_t t = 0; t < h.tensor_count; ++t) {
    const std::uint64_t n = view.tensor_value_count(t);
    if (n > h.value_count - tensor_total) {
      return bundle_error(errc::bad_data, "section tensor_counts: tensor " + to_string(t) +
                                              " count " + to_string(n) +
                                              " exceeds the bundle's value_count");
    }
    tensor_total += n;
  }
  if (tensor_total != h.value_count) {
    return bundle_error(errc::bad_data, "section tensor_counts: sum " + to_string(tensor_total) +
                                            " != value_count " + to_string(h.value_count));
  }

  // Segments: records in order, bodies back to back from `bodies`, each validated like a bundle.
  std::uint64_t value_total = 0;
  std::uint64_t body = bodies;
  bundle_view first_segment;
  for (std::uint32_t s = 0; s < h.segment_count; ++s) {
    const std::string where = "segment " + to_string(s) + ": ";
    const std::byte* record =
        p + view.layout_.segment_records_offset + std::uint64_t{s} * kSegmentRecordBytes;
    const std::uint64_t values = detail::read_le64(record);
    const std::uint64_t stream_bits = detail::read_le64(record + 8);
    const std::uint64_t body_offset = detail::read_le64(record + 16);
    if (values > h.value_count - value_total) {
      return bundle_error(errc::bad_data, where + "value_count " + to_string(values) +
                                              " exceeds the bundle's value_count");
    }
    // Every codeword has 1..L bits, so the stream length pins the value count down.
    if (stream_bits < values || stream_bits > values * h.max_code_length) {
      return bundle_error(errc::bad_data, where + "stream_bits " + to_string(stream_bits) +
                                              " impossible for " + to_string(values) +
                                              " values of 1.." + to_string(h.max_code_length) +
                                              " bits");
    }
    if (body_offset != body || h.total_bytes - body < kSegmentCodeHeaderBytes) {
      return bundle_error(errc::bad_data, where + "body_offset " + to_string(body_offset) +
                                              ", expected " + to_string(body) +
                                              " inside total_bytes");
    }
    const auto first_symbol = static_cast<unsigned>(p[body]);
    const unsigned span = static_cast<unsigned>(p[body + 1]) + 1;
    if (first_symbol + span > kSymbolCount) {
      return bundle_error(errc::bad_data, where + "code symbols " + to_string(first_symbol) +
                                              " + " + to_string(span) + " exceed 256");
    }
    const bundle_layout l = detail::compute_segment_layout(h.format, body, values, stream_bits,
                                                           span, h.chunk_bytes, h.chunks_per_group);
    if (l.end_offset > h.total_bytes) {
      return bundle_error(errc::truncated, where + "sections end at " + to_string(l.end_offset) +
                                               ", past total_bytes " + to_string(h.total_bytes));
    }
    // Bytes between the code lengths and the sign/mantissa section, and an odd span's unused
    // high nibble, are zero: one encoding per bundle.
    const std::uint64_t code_end = body + kSegmentCodeHeaderBytes + (span + 1) / 2;
    for (std::uint64_t i = code_end; i < l.sign_mantissa_offset; ++i) {
      if (p[i] != std::byte{0}) return bundle_error(errc::bad_data, where + "padding: nonzero");
    }
    if (span % 2 != 0 && (static_cast<std::uint8_t>(p[code_end - 1]) >> 4) != 0) {
      return bundle_error(errc::bad_data, where + "code lengths: unused nibble is nonzero");
    }
    const bundle_view seg = view.segment_at(s, value_total);
    if (error e = validate_code_lengths(seg.lengths_, h.max_code_length, values == 0)) {
      return bundle_error(e.code, where + "section code_lengths: " + e.message);
    }
    if (values == 0) {
      for (std::uint8_t len : seg.lengths_) {
        if (len != 0) return bundle_error(errc::bad_data, where + "empty segment has a code");
      }
    }
    for (std::uint64_t c = 0; c < l.chunk_count; ++c) {
      const unsigned gap = seg.chunk_gap(c);
      if (gap >= h.max_code_length) {
        return bundle_error(errc::bad_data, where + "section chunk_gaps: chunk " + to_string(c) +
                                                " gap " + to_string(gap) + " >= max_code_length");
      }
      if (seg.chunk_start_bit(c) > stream_bits) {
        return bundle_error(errc::bad_data, where + "section chunk_gaps: chunk " + to_string(c) +
                                                " starts past the stream");
      }
    }
    if (l.chunk_count > 0 && seg.chunk_gap(0) != 0) {
      return bundle_error(errc::bad_data,
                          where + "section chunk_gaps: chunk 0 must start at bit 0");
    }
    for (std::uint64_t g = 0; g < l.group_count; ++g) {
      const std::uint64_t first = seg.group_value_position(g);
      const std::uint64_t end = seg.group_end_value(g);
      if ((g == 0 && first != 0) || first > end || end > values) {
        return bundle_error(errc::bad_data, where + "section group_positions: group " +
                                                to_string(g) + " value position " +
                                                to_string(first) + " out of order or range");
      }
      const std::uint64_t group_values = end - first;
      const std::uint64_t bits = seg.group_end_bit(g) - seg.group_begin_bit(g);
      if (group_values > bits || bits > group_values * h.max_code_length) {
        return bundle_error(errc::bad_data, where + "section group_positions: group " +
                                                to_string(g) + " claims " +
                                                to_string(group_values) + " values in " +
                                                to_string(bits) + " bits");
      }
    }
    if (s == 0) first_segment = seg;
    value_total += values;
    body = l.end_offset;
  }
  if (value_total != h.value_count) {
    return bundle_error(errc::bad_data, "segment records: values " + to_string(value_total) +
                                            " != value_count " + to_string(h.value_count));
  }
  if (body != h.total_bytes) {
    return bundle_error(errc::bad_data, "header field total_bytes: " + to_string(h.total_bytes) +
                                            ", the sections need " + to_string(body));
  }
  if (h.segment_count == 1) {
    // A bundle of one segment is its own segment view, but keeps the bundle's identity.
    first_segment.segment_index_ = -1;
    return first_segment;
  }
  // A bundle view's stream accessors describe its first segment.
  first_segment.header_.value_count = h.value_count;
  first_segment.header_.segment_count = h.segment_count;
  first_segment.segment_index_ = -1;
  return first_segment;
}

}  // namespace floatzip
