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

}  // namespace detail

inline result<bundle_view> parse_bundle(std::span<const std::byte> bytes) {
  using detail::bundle_error;
  using std::to_string;
  if (bytes.size() < kBundleHeaderBytes + kPackedCodeLengthsBytes) {
    return bundle_error(errc::truncated,
                        "header: " + to_string(bytes.size()) + " bytes, need at least " +
                            to_string(kBundleHeaderBytes + kPackedCodeLengthsBytes));
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
  const auto flags = static_cast<std::uint8_t>(p[7]);
  h.chunk_bytes = detail::read_le32(p + 8);
  h.chunks_per_group = detail::read_le32(p + 12);
  h.value_count = detail::read_le64(p + 16);
  h.stream_bits = detail::read_le64(p + 24);
  h.tensor_count = detail::read_le32(p + 32);
  const std::uint32_t reserved32 = detail::read_le32(p + 36);
  h.total_bytes = detail::read_le64(p + 40);

  if (h.max_code_length < 1 || h.max_code_length > kMaxCodeLength) {
    return bundle_error(errc::bad_data,
                        "header field max_code_length: " + to_string(h.max_code_length) +
                            " not in [1, " + to_string(kMaxCodeLength) + "]");
  }
  if (flags != 0 || reserved32 != 0) {
    return bundle_error(errc::unsupported_version,
                        "header field flags/reserved: nonzero (written by a newer floatzip?)");
  }
  for (std::size_t i = 48; i < kBundleHeaderBytes; ++i) {
    if (p[i] != std::byte{0}) {
      return bundle_error(errc::unsupported_version, "header reserved bytes: nonzero");
    }
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
  // Every codeword has 1..L bits, so the stream length pins the value count down.
  if (h.stream_bits < h.value_count || h.stream_bits > h.value_count * h.max_code_length) {
    return bundle_error(errc::bad_data, "header field stream_bits: " + to_string(h.stream_bits) +
                                            " impossible for " + to_string(h.value_count) +
                                            " values of 1.." + to_string(h.max_code_length) +
                                            " bits");
  }
  const bundle_layout layout = detail::compute_layout(h);
  if (h.total_bytes != layout.total_bytes) {
    return bundle_error(errc::bad_data, "header field total_bytes: " + to_string(h.total_bytes) +
                                            ", the sections need " + to_string(layout.total_bytes));
  }
  if (bytes.size() < layout.total_bytes) {
    return bundle_error(errc::truncated, "size: " + to_string(bytes.size()) +
                                             " bytes, header declares " +
                                             to_string(layout.total_bytes));
  }

  bundle_view view;
  view.bytes_ = bytes.first(layout.total_bytes);
  view.header_ = h;
  view.layout_ = layout;
  view.lengths_ = unpack_code_lengths(std::span<const std::uint8_t, kPackedCodeLengthsBytes>(
      reinterpret_cast<const std::uint8_t*>(p + kBundleHeaderBytes), kPackedCodeLengthsBytes));
  if (error e = validate_code_lengths(view.lengths_, h.max_code_length, h.value_count == 0)) {
    return bundle_error(e.code, "section code_lengths: " + e.message);
  }
  if (h.value_count == 0) {
    for (std::uint8_t len : view.lengths_) {
      if (len != 0)
        return bundle_error(errc::bad_data, "section code_lengths: empty bundle has a code");
    }
  }

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

  for (std::uint64_t c = 0; c < layout.chunk_count; ++c) {
    const unsigned gap = view.chunk_gap(c);
    if (gap >= h.max_code_length) {
      return bundle_error(errc::bad_data, "section chunk_gaps: chunk " + to_string(c) + " gap " +
                                              to_string(gap) + " >= max_code_length");
    }
    if (view.chunk_start_bit(c) > h.stream_bits) {
      return bundle_error(errc::bad_data,
                          "section chunk_gaps: chunk " + to_string(c) + " starts past the stream");
    }
  }
  if (layout.chunk_count > 0 && view.chunk_gap(0) != 0) {
    return bundle_error(errc::bad_data, "section chunk_gaps: chunk 0 must start at bit 0");
  }

  for (std::uint64_t g = 0; g < layout.group_count; ++g) {
    const std::uint64_t first = view.group_value_position(g);
    const std::uint64_t end = view.group_end_value(g);
    if ((g == 0 && first != 0) || first > end || end > h.value_count) {
      return bundle_error(errc::bad_data, "section group_positions: group " + to_string(g) +
                                              " value position " + to_string(first) +
                                              " out of order or range");
    }
    const std::uint64_t values = end - first;
    const std::uint64_t bits = view.group_end_bit(g) - view.group_begin_bit(g);
    if (values > bits || bits > values * h.max_code_length) {
      return bundle_error(errc::bad_data, "section group_positions: group " + to_string(g) +
                                              " claims " + to_string(values) + " values in " +
                                              to_string(bits) + " bits");
    }
  }
  return view;
}

}  // namespace floatzip
