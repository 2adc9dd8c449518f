// floatzip internals: .fzip records, checksums and the validating reader (see container.hpp for
// the layout).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_map>

#ifndef XXH_INLINE_ALL
#define XXH_INLINE_ALL  // header-only use: no link dependency, private symbol names
#endif
#include <xxhash.h>
#include <zstd.h>

namespace floatzip {
namespace detail {

inline std::uint64_t xxh3_64(std::span<const std::byte> bytes) noexcept {
  return XXH3_64bits(bytes.data(), bytes.size());
}

// XXH3-64 over several pieces, equal to xxh3_64 of their concatenation.
class xxh3_stream {
 public:
  xxh3_stream() noexcept { XXH3_64bits_reset(&state_); }
  void update(std::span<const std::byte> bytes) noexcept {
    XXH3_64bits_update(&state_, bytes.data(), bytes.size());
  }
  [[nodiscard]] std::uint64_t digest() const noexcept { return XXH3_64bits_digest(&state_); }

 private:
  XXH3_state_t state_;
};

constexpr std::uint64_t align_container(std::uint64_t n) noexcept {
  return (n + kContainerAlignment - 1) / kContainerAlignment * kContainerAlignment;
}

// Little-endian field access at a byte offset. Readers are only called at offsets whose bounds
// were checked against the section size.
class field_writer {
 public:
  explicit field_writer(std::span<std::byte> out) noexcept : out_(out) {}
  void u16(std::size_t at, std::uint16_t v) noexcept { std::memcpy(out_.data() + at, &v, 2); }
  void u32(std::size_t at, std::uint32_t v) noexcept { std::memcpy(out_.data() + at, &v, 4); }
  void u64(std::size_t at, std::uint64_t v) noexcept { std::memcpy(out_.data() + at, &v, 8); }
  void f64(std::size_t at, double v) noexcept { u64(at, std::bit_cast<std::uint64_t>(v)); }

 private:
  std::span<std::byte> out_;
};

class field_reader {
 public:
  explicit field_reader(std::span<const std::byte> in) noexcept : in_(in) {}
  [[nodiscard]] std::uint16_t u16(std::size_t at) const noexcept { return load<std::uint16_t>(at); }
  [[nodiscard]] std::uint32_t u32(std::size_t at) const noexcept { return load<std::uint32_t>(at); }
  [[nodiscard]] std::uint64_t u64(std::size_t at) const noexcept { return load<std::uint64_t>(at); }
  [[nodiscard]] double f64(std::size_t at) const noexcept {
    return std::bit_cast<double>(load<std::uint64_t>(at));
  }

 private:
  template <class T>
  T load(std::size_t at) const noexcept {
    T v;
    std::memcpy(&v, in_.data() + at, sizeof v);
    return v;
  }
  std::span<const std::byte> in_;
};

struct container_header_fields {
  std::uint16_t version_major = kContainerVersionMajor;
  std::uint16_t version_minor = kContainerVersionMinor;
  std::uint32_t flags = 0;
  std::uint64_t file_size = 0;
  std::uint64_t original_size = 0;
  std::uint64_t metadata_offset = kContainerHeaderBytes;
  std::uint64_t header_size = 0;
  std::uint64_t metadata_checksum = 0;
  std::uint64_t metadata_stored_size = 0;
  std::uint64_t index_size = 0;
  std::uint64_t metadata_decoded_checksum = 0;
  std::uint64_t bundles_offset = 0;
};

inline std::array<std::byte, kContainerHeaderBytes> encode_container_header(
    const container_header_fields& h) {
  std::array<std::byte, kContainerHeaderBytes> out{};
  std::memcpy(out.data(), kContainerMagic.data(), kContainerMagic.size());
  field_writer w(out);
  w.u16(8, h.version_major);
  w.u16(10, h.version_minor);
  w.u32(12, h.flags);
  w.u64(16, h.file_size);
  w.u64(24, h.original_size);
  w.u64(32, h.metadata_offset);
  w.u64(40, h.header_size);
  w.u64(48, h.metadata_checksum);
  w.u64(56, h.metadata_stored_size);
  w.u64(64, h.index_size);
  w.u64(72, h.metadata_decoded_checksum);
  w.u64(80, h.bundles_offset);
  w.u64(120, xxh3_64(std::span<const std::byte>(out).first(120)));
  return out;
}

// Size of an index section with these counts; nullopt when it cannot fit in 64 bits.
inline std::optional<std::uint64_t> index_section_size(std::uint64_t bundles, std::uint64_t tensors,
                                                       std::uint64_t gaps, std::uint64_t dims,
                                                       std::uint64_t names_bytes) noexcept {
  // Counts are u32, so the fixed part stays below 2^40; only names_bytes can overflow.
  const std::uint64_t fixed = kIndexHeaderBytes + bundles * kBundleRecordBytes +
                              tensors * kTensorRecordBytes + gaps * kGapRecordBytes + dims * 8;
  if (names_bytes > std::numeric_limits<std::uint64_t>::max() - fixed) return std::nullopt;
  return fixed + names_bytes;
}

// Size of a compact index section (flag kContainerFlagCompactIndex) with these counts (u32, so
// no overflow).
constexpr std::uint64_t compact_index_section_size(std::uint64_t bundles, std::uint64_t tensors,
                                                   std::uint64_t gaps) noexcept {
  return kIndexHeaderBytes + bundles * kBundleRecordBytes + tensors * kCompactTensorRecordBytes +
         gaps * kGapRecordBytes;
}

// A compact index stores each table column by column: byte k of record r of a table of `count`
// records of `width` bytes is at k * count + r. zstd then sees runs of alike bytes (the high
// bytes of offsets, small counts, zeros) instead of interleaved records; on the small models of
// ../shared/models column order alone takes 11-13 % off the metadata section.
inline void records_to_columns(std::span<const std::byte> rows, std::size_t width,
                               std::span<std::byte> columns) noexcept {
  const std::size_t count = rows.size() / width;
  for (std::size_t r = 0; r < count; ++r)
    for (std::size_t k = 0; k < width; ++k) columns[k * count + r] = rows[r * width + k];
}

inline void columns_to_records(std::span<const std::byte> columns, std::size_t width,
                               std::span<std::byte> rows) noexcept {
  const std::size_t count = columns.size() / width;
  for (std::size_t r = 0; r < count; ++r)
    for (std::size_t k = 0; k < width; ++k) rows[r * width + k] = columns[k * count + r];
}

inline void write_bundle_record(field_writer& w, std::size_t at, const container_bundle& b) {
  w.u64(at + 0, b.file_offset);
  w.u64(at + 8, b.stored_bytes);
  w.u64(at + 16, b.stored_checksum);
  w.u64(at + 24, b.decoded_bytes);
  w.u64(at + 32, b.decoded_checksum);
  w.u64(at + 40, b.value_count);
  w.f64(at + 48, b.exponent_entropy);
  w.u64(at + 56, b.huffman_ideal_bits);
  w.u32(at + 64, static_cast<std::uint32_t>(b.kind));
  w.u32(at + 68, b.tensor_count);
  w.u32(at + 72, b.has_values() ? static_cast<std::uint32_t>(b.format) : 0);
}

inline void write_gap_record(field_writer& w, std::size_t at, const container_gap& g) {
  w.u64(at + 0, g.original.begin);
  w.u64(at + 8, g.original.end);
  w.u32(at + 16, g.bundle);
}

inline void write_index_header(field_writer& w, std::size_t bundles, std::size_t tensors,
                               std::size_t gaps, std::uint64_t dims, std::uint64_t names,
                               grouping_kind group) {
  w.u32(0, static_cast<std::uint32_t>(bundles));
  w.u32(4, static_cast<std::uint32_t>(tensors));
  w.u32(8, static_cast<std::uint32_t>(gaps));
  w.u32(12, static_cast<std::uint32_t>(dims));
  w.u64(16, names);
  w.u32(24, static_cast<std::uint32_t>(group));
}

// The index section in the classic layout (records row by row, names and shapes repeated from
// the header): what files without the compact-index flag hold, and what a compact index expands
// to before the reader checks it.
inline std::vector<std::byte> encode_index(std::span<const container_bundle> bundles,
                                           std::span<const container_tensor> tensors,
                                           std::span<const container_gap> gaps,
                                           grouping_kind group = grouping_kind::layers) {
  std::uint64_t dims = 0;
  std::uint64_t names = 0;
  for (const auto& t : tensors) {
    dims += t.shape.size();
    names += t.name.size();
  }
  const std::uint64_t size =
      *index_section_size(bundles.size(), tensors.size(), gaps.size(), dims, names);
  std::vector<std::byte> out(size);
  field_writer w(out);
  write_index_header(w, bundles.size(), tensors.size(), gaps.size(), dims, names, group);
  std::size_t at = kIndexHeaderBytes;
  for (const auto& b : bundles) {
    write_bundle_record(w, at, b);
    at += kBundleRecordBytes;
  }
  const std::size_t dims_at =
      at + tensors.size() * kTensorRecordBytes + gaps.size() * kGapRecordBytes;
  const std::size_t names_at = dims_at + dims * 8;
  std::uint32_t dims_cursor = 0;
  std::uint32_t names_cursor = 0;
  for (const auto& t : tensors) {
    w.u64(at + 0, t.original.begin);
    w.u64(at + 8, t.original.end);
    w.u64(at + 16, t.bundle_offset);
    w.u32(at + 24, t.bundle);
    w.u32(at + 28, t.bundle_tensor);
    w.u32(at + 32, names_cursor);
    w.u32(at + 36, static_cast<std::uint32_t>(t.name.size()));
    w.u32(at + 40, dims_cursor);
    w.u16(at + 44, static_cast<std::uint16_t>(t.shape.size()));
    w.u16(at + 46, static_cast<std::uint16_t>(t.type));
    w.u32(at + 48, t.header_order);
    w.u32(at + 52, t.bundle_count);
    for (std::uint64_t extent : t.shape) w.u64(dims_at + 8 * dims_cursor++, extent);
    std::memcpy(out.data() + names_at + names_cursor, t.name.data(), t.name.size());
    names_cursor += static_cast<std::uint32_t>(t.name.size());
    at += kTensorRecordBytes;
  }
  for (const auto& g : gaps) {
    write_gap_record(w, at, g);
    at += kGapRecordBytes;
  }
  return out;
}

// The index section in the compact layout (flag kContainerFlagCompactIndex; see container.hpp):
// tensor records without what the safetensors header says, every table column by column.
inline std::vector<std::byte> encode_compact_index(std::span<const container_bundle> bundles,
                                                   std::span<const container_tensor> tensors,
                                                   std::span<const container_gap> gaps,
                                                   grouping_kind group) {
  std::vector<std::byte> out(
      compact_index_section_size(bundles.size(), tensors.size(), gaps.size()));
  field_writer head(out);
  write_index_header(head, bundles.size(), tensors.size(), gaps.size(), 0, 0, group);
  std::size_t at = kIndexHeaderBytes;
  std::vector<std::byte> rows;
  const auto table = [&](std::size_t count, std::size_t width, const auto& write_row) {
    rows.assign(count * width, std::byte{0});
    field_writer w(rows);
    for (std::size_t r = 0; r < count; ++r) write_row(w, r * width, r);
    records_to_columns(rows, width, std::span(out).subspan(at, rows.size()));
    at += rows.size();
  };
  table(bundles.size(), kBundleRecordBytes, [&](field_writer& w, std::size_t row, std::size_t i) {
    write_bundle_record(w, row, bundles[i]);
  });
  table(tensors.size(), kCompactTensorRecordBytes,
        [&](field_writer& w, std::size_t row, std::size_t i) {
          const auto& t = tensors[i];
          w.u64(row + 0, t.bundle_offset);
          w.u32(row + 8, t.bundle);
          w.u32(row + 12, t.bundle_tensor);
          w.u32(row + 16, t.header_order);
          w.u32(row + 20, t.bundle_count);
        });
  table(gaps.size(), kGapRecordBytes, [&](field_writer& w, std::size_t row, std::size_t i) {
    write_gap_record(w, row, gaps[i]);
  });
  return out;
}

// Expands a compact index section into the classic layout, taking each tensor's name, dtype,
// shape and data offsets from the entry of the safetensors header its record names, so that the
// reader checks both layouts by the same code. Returns what is wrong (empty when nothing is).
inline std::string expand_compact_index(std::span<const std::byte> compact,
                                        const safetensors::header& header,
                                        std::vector<std::byte>& classic) {
  using std::to_string;
  if (compact.size() < kIndexHeaderBytes)
    return "section of " + to_string(compact.size()) + " bytes is shorter than its header";
  const field_reader head(compact);
  const std::uint32_t bundle_count = head.u32(0);
  const std::uint32_t tensor_count = head.u32(4);
  const std::uint32_t gap_count = head.u32(8);
  if (head.u32(12) != 0 || head.u64(16) != 0)
    return "fields 'dims_count' and 'names_bytes' of a compact index are not zero";
  if (compact_index_section_size(bundle_count, tensor_count, gap_count) != compact.size())
    return "fields 'bundle_count', 'tensor_count' and 'gap_count' do not add up to the compact "
           "section size of " +
           to_string(compact.size());
  if (tensor_count != header.tensors.size())
    return "field 'tensor_count' is " + to_string(tensor_count) +
           " but the safetensors header lists " + to_string(header.tensors.size());
  const auto bundle_columns = compact.subspan(kIndexHeaderBytes, bundle_count * kBundleRecordBytes);
  const auto tensor_columns = compact.subspan(kIndexHeaderBytes + bundle_columns.size(),
                                              tensor_count * kCompactTensorRecordBytes);
  const auto gap_columns =
      compact.subspan(kIndexHeaderBytes + bundle_columns.size() + tensor_columns.size());
  std::vector<std::byte> tensor_rows(tensor_columns.size());
  columns_to_records(tensor_columns, kCompactTensorRecordBytes, tensor_rows);
  const field_reader lean(tensor_rows);
  // Each header entry named once (as the classic check requires too), so the expansion holds
  // the header's names and shapes once: bounded by the header's size, whatever the file says.
  std::vector<bool> named(tensor_count, false);
  std::uint64_t dims = 0;
  std::uint64_t names = 0;
  for (std::uint32_t i = 0; i < tensor_count; ++i) {
    const std::uint32_t order = lean.u32(std::size_t{i} * kCompactTensorRecordBytes + 16);
    if (order >= tensor_count)
      return "tensor record " + to_string(i) + ": field 'header_order' is out of range";
    if (named[order])
      return "tensor record " + to_string(i) + ": field 'header_order' is used twice";
    named[order] = true;
    dims += header.tensors[order].shape.size();
    names += header.tensors[order].name.size();
  }
  const auto size = index_section_size(bundle_count, tensor_count, gap_count, dims, names);
  if (!size || dims > std::numeric_limits<std::uint32_t>::max() ||
      names > std::numeric_limits<std::uint32_t>::max())
    return "the header's names and shapes exceed what an index can reference";
  classic.assign(*size, std::byte{0});
  std::memcpy(classic.data(), compact.data(), kIndexHeaderBytes);
  field_writer w(classic);
  w.u32(12, static_cast<std::uint32_t>(dims));
  w.u64(16, names);
  std::size_t at = kIndexHeaderBytes;
  columns_to_records(bundle_columns, kBundleRecordBytes,
                     std::span(classic).subspan(at, bundle_columns.size()));
  at += bundle_columns.size();
  const std::size_t dims_at =
      at + std::size_t{tensor_count} * kTensorRecordBytes + gap_columns.size();
  const std::size_t names_at = dims_at + dims * 8;
  std::uint32_t dims_cursor = 0;
  std::uint32_t names_cursor = 0;
  for (std::uint32_t i = 0; i < tensor_count; ++i) {
    const std::size_t row = std::size_t{i} * kCompactTensorRecordBytes;
    const std::uint32_t order = lean.u32(row + 16);
    const auto& h = header.tensors[order];
    w.u64(at + 0, h.data.begin);
    w.u64(at + 8, h.data.end);
    w.u64(at + 16, lean.u64(row + 0));
    w.u32(at + 24, lean.u32(row + 8));
    w.u32(at + 28, lean.u32(row + 12));
    w.u32(at + 32, names_cursor);
    w.u32(at + 36, static_cast<std::uint32_t>(h.name.size()));
    w.u32(at + 40, dims_cursor);
    w.u16(at + 44, static_cast<std::uint16_t>(h.shape.size()));
    w.u16(at + 46, static_cast<std::uint16_t>(h.type));
    w.u32(at + 48, order);
    w.u32(at + 52, lean.u32(row + 20));
    for (std::uint64_t extent : h.shape) w.u64(dims_at + 8 * dims_cursor++, extent);
    std::memcpy(classic.data() + names_at + names_cursor, h.name.data(), h.name.size());
    names_cursor += static_cast<std::uint32_t>(h.name.size());
    at += kTensorRecordBytes;
  }
  columns_to_records(gap_columns, kGapRecordBytes,
                     std::span(classic).subspan(at, gap_columns.size()));
  return {};
}

inline bool all_zero(std::span<const std::byte> bytes) noexcept {
  return std::all_of(bytes.begin(), bytes.end(), [](std::byte b) { return b == std::byte{0}; });
}

// The metadata section: the original header and the index in one zstd frame. Level 19: the
// section is a few kilobytes to a few megabytes, written once per file.
inline std::vector<std::byte> compress_metadata(std::span<const std::byte> header,
                                                std::span<const std::byte> index) {
  std::vector<std::byte> plain(header.size() + index.size());
  if (!header.empty()) std::memcpy(plain.data(), header.data(), header.size());
  if (!index.empty()) std::memcpy(plain.data() + header.size(), index.data(), index.size());
  std::vector<std::byte> out(ZSTD_compressBound(plain.size()));
  const std::size_t n = ZSTD_compress(out.data(), out.size(), plain.data(), plain.size(), 19);
  if (ZSTD_isError(n))
    throw exception({errc::too_large, std::string("metadata: zstd: ") + ZSTD_getErrorName(n)});
  out.resize(n);
  return out;
}

}  // namespace detail

inline format_totals& format_totals::operator+=(const format_totals& o) noexcept {
  bundle_count += o.bundle_count;
  values += o.values;
  original_bytes += o.original_bytes;
  stored_bytes += o.stored_bytes;
  symbol_entropy_bits += o.symbol_entropy_bits;
  huffman_ideal_bits += o.huffman_ideal_bits;
  return *this;
}

inline void container_totals::add_bundle(const container_bundle& b) noexcept {
  ++bundle_count;
  if (!b.has_values()) {
    raw_bytes += b.stored_bytes;
    return;
  }
  auto& f = formats[static_cast<std::size_t>(b.format)];
  ++f.bundle_count;
  f.values += b.value_count;
  f.original_bytes += b.decoded_bytes;
  f.stored_bytes += b.stored_bytes;
  f.symbol_entropy_bits += b.exponent_entropy * double(b.value_count);
  f.huffman_ideal_bits += b.huffman_ideal_bits;
  if (b.format != value_format::bf16) return;
  ++bf16_bundle_count;
  bf16_values += b.value_count;
  bf16_stored_bytes += b.stored_bytes;
  exponent_entropy_bits += b.exponent_entropy * double(b.value_count);
  huffman_ideal_bits += b.huffman_ideal_bits;
}

inline container_totals& container_totals::operator+=(const container_totals& o) noexcept {
  for (std::size_t f = 0; f < formats.size(); ++f) formats[f] += o.formats[f];
  file_bytes += o.file_bytes;
  original_bytes += o.original_bytes;
  tensor_count += o.tensor_count;
  bundle_count += o.bundle_count;
  bf16_bundle_count += o.bf16_bundle_count;
  bf16_values += o.bf16_values;
  bf16_stored_bytes += o.bf16_stored_bytes;
  raw_bytes += o.raw_bytes;
  exponent_entropy_bits += o.exponent_entropy_bits;
  huffman_ideal_bits += o.huffman_ideal_bits;
  return *this;
}

// ---- container_reader ----------------------------------------------------------------------

inline result<container_reader> container_reader::open(const std::filesystem::path& path,
                                                       const reader_options& options) {
  auto mapped = detail::mapped_file::open(path);
  if (!mapped) return mapped.error();
  container_reader reader;
  reader.file_ = std::move(*mapped);
  reader.bytes_ = reader.file_.bytes();
  reader.name_ = path.string();
  if (error e = reader.validate(options)) return e;
  return reader;
}

inline result<container_reader> container_reader::from_bytes(std::span<const std::byte> bytes,
                                                             std::string name,
                                                             const reader_options& options) {
  container_reader reader;
  reader.bytes_ = bytes;
  reader.name_ = std::move(name);
  if (error e = reader.validate(options)) return e;
  return reader;
}

inline error container_reader::located(errc code, std::string_view section,
                                       const std::string& what) const {
  return {code, name_ + ": " + std::string(section) + ": " + what};
}

inline error container_reader::validate(const reader_options& options) {
  using std::to_string;
  verify_checksums_ = options.verify_checksums;
  const std::uint64_t size = bytes_.size();

  // ---- file header
  if (size < kContainerMagic.size() ||
      std::memcmp(bytes_.data(), kContainerMagic.data(), kContainerMagic.size()) != 0)
    return located(errc::unsupported_version, "file header",
                   "field 'magic' does not match: not a floatzip container");
  if (size < kContainerHeaderBytes)
    return located(errc::truncated, "file header",
                   "file of " + to_string(size) + " bytes is shorter than the " +
                       to_string(kContainerHeaderBytes) + "-byte header");
  const detail::field_reader head(bytes_);
  const std::uint16_t major = head.u16(8);
  const std::uint16_t minor = head.u16(10);
  version_minor_ = minor;
  if (major != kContainerVersionMajor || minor > kContainerVersionMinor)
    return located(errc::unsupported_version, "file header",
                   "field 'version' is " + to_string(major) + "." + to_string(minor) +
                       "; this reader supports " + to_string(kContainerVersionMajor) + "." +
                       to_string(kContainerVersionMinor) +
                       (major < kContainerVersionMajor
                            ? " (a file of an older floatzip: compress the original again)"
                            : ""));
  if (verify_checksums_ && detail::xxh3_64(bytes_.first(120)) != head.u64(120))
    return located(errc::checksum_mismatch, "file header", "field 'header checksum' mismatch");
  const std::uint32_t flags = head.u32(12);
  if ((flags & ~kContainerKnownFlags) != 0)
    return located(errc::unsupported_version, "file header",
                   "field 'flags' has unknown bits set (" + to_string(flags) + ")");
  compact_index_ = (flags & kContainerFlagCompactIndex) != 0;
  if (!detail::all_zero(bytes_.subspan(88, 32)))
    return located(errc::bad_data, "file header", "reserved bytes 88..119 are not zero");

  const std::uint64_t declared_size = head.u64(16);
  if (declared_size > size)
    return located(errc::truncated, "file header",
                   "field 'file_size' declares " + to_string(declared_size) +
                       " bytes but the file has " + to_string(size));
  if (declared_size < size)
    return located(errc::bad_data, "file header",
                   "field 'file_size' declares " + to_string(declared_size) +
                       " bytes but the file has " + to_string(size) + " (trailing bytes)");

  original_size_ = head.u64(24);
  const std::uint64_t metadata_offset = head.u64(32);
  const std::uint64_t header_size = head.u64(40);
  const std::uint64_t metadata_stored = head.u64(56);
  const std::uint64_t index_size = head.u64(64);
  const std::uint64_t bundles_offset = head.u64(80);
  if (bundles_offset != kContainerHeaderBytes)
    return located(errc::bad_data, "file header", "field 'bundles_offset' is not 128");
  if (metadata_offset < bundles_offset || metadata_offset % kContainerAlignment != 0 ||
      metadata_offset > size)
    return located(errc::bad_data, "file header",
                   "field 'metadata_offset' (" + to_string(metadata_offset) +
                       ") is not an aligned offset after the bundles");
  if (metadata_stored != size - metadata_offset)
    return located(errc::bad_data, "file header",
                   "field 'metadata_stored_size' (" + to_string(metadata_stored) +
                       ") does not reach the end of the file");
  if (header_size < 8 || header_size > safetensors::kMaxHeaderJsonBytes + 8)
    return located(errc::bad_data, "file header",
                   "field 'header_size' (" + to_string(header_size) + ") is out of range");
  // Every tensor takes at least ~50 bytes of JSON and at most 136 of index (+ 8 per dimension,
  // which the JSON spells too): this bounds what a hostile frame can make a reader allocate.
  if (index_size < kIndexHeaderBytes || index_size > kMaxIndexBytes ||
      index_size > 8 * header_size + (std::uint64_t{1} << 20))
    return located(errc::bad_data, "file header",
                   "field 'index_size' (" + to_string(index_size) + ") is out of range");
  if (original_size_ < header_size)
    return located(errc::bad_data, "file header",
                   "field 'original_size' is smaller than the safetensors header");
  const auto stored_metadata = bytes_.subspan(metadata_offset, metadata_stored);
  if (verify_checksums_ && detail::xxh3_64(stored_metadata) != head.u64(48))
    return located(errc::checksum_mismatch, "metadata section",
                   "field 'metadata_checksum' mismatch");
  // Decoded only to the declared size, which the limits above bound; a frame that decodes to
  // anything else is refused.
  {
    const unsigned long long content =
        ZSTD_getFrameContentSize(stored_metadata.data(), stored_metadata.size());
    if (content != header_size + index_size)
      return located(errc::bad_data, "metadata section",
                     "zstd frame does not declare 'header_size' + 'index_size' bytes");
    metadata_.resize(header_size + index_size);
    const std::size_t n = ZSTD_decompress(metadata_.data(), metadata_.size(),
                                          stored_metadata.data(), stored_metadata.size());
    if (ZSTD_isError(n) || n != metadata_.size())
      return located(errc::bad_data, "metadata section",
                     std::string("zstd frame does not decode: ") +
                         (ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong size"));
  }
  if (verify_checksums_ && detail::xxh3_64(metadata_) != head.u64(72))
    return located(errc::checksum_mismatch, "metadata section",
                   "field 'metadata_decoded_checksum' mismatch");
  const auto header_bytes = std::span<const std::byte>(metadata_).first(header_size);
  auto index_bytes = std::span<const std::byte>(metadata_).subspan(header_size, index_size);

  // ---- the verbatim safetensors header
  original_header_bytes_ = header_bytes;
  auto parsed = safetensors::parse_header(header_bytes, original_size_, name_ + " (embedded)",
                                          {options.cancel});
  if (!parsed) return parsed.error();
  header_ = std::move(*parsed);
  if (header_.header_size() != header_size)
    return located(errc::bad_data, "safetensors header section",
                   "field 'header_size' disagrees with the header's own length field");

  // ---- a compact index is expanded into the classic layout, then checked as one
  std::vector<std::byte> expanded_index;
  if (compact_index_) {
    if (const std::string what = detail::expand_compact_index(index_bytes, header_, expanded_index);
        !what.empty())
      return located(errc::bad_data, "index", what);
    index_bytes = expanded_index;
  }

  // ---- index: counts, then the size they imply, before anything is allocated
  const detail::field_reader index(index_bytes);
  const std::uint32_t bundle_count = index.u32(0);
  const std::uint32_t tensor_count = index.u32(4);
  const std::uint32_t gap_count = index.u32(8);
  const std::uint32_t dims_count = index.u32(12);
  const std::uint64_t names_bytes = index.u64(16);
  if (index.u32(24) >= kGroupingKindCount)
    return located(errc::bad_data, "index", "field 'grouping' is " + to_string(index.u32(24)));
  grouping_ = static_cast<grouping_kind>(index.u32(24));
  if (index.u32(28) != 0) return located(errc::bad_data, "index", "reserved field is not zero");
  const auto expected_index_size =
      detail::index_section_size(bundle_count, tensor_count, gap_count, dims_count, names_bytes);
  if (!expected_index_size || *expected_index_size != index_bytes.size())
    return located(errc::bad_data, "index",
                   "fields 'bundle_count', 'tensor_count', 'gap_count', 'dims_count' and "
                   "'names_bytes' do not add up to the section size of " +
                       to_string(index_size));
  if (tensor_count != header_.tensors.size())
    return located(errc::bad_data, "index",
                   "field 'tensor_count' is " + to_string(tensor_count) +
                       " but the safetensors header lists " + to_string(header_.tensors.size()));
  const std::uint64_t bundles_at = kIndexHeaderBytes;
  const std::uint64_t tensors_at = bundles_at + std::uint64_t{bundle_count} * kBundleRecordBytes;
  const std::uint64_t gaps_at = tensors_at + std::uint64_t{tensor_count} * kTensorRecordBytes;
  const std::uint64_t dims_at = gaps_at + std::uint64_t{gap_count} * kGapRecordBytes;
  const std::uint64_t names_at = dims_at + std::uint64_t{dims_count} * 8;

  // ---- bundle records: contiguous, aligned, inside the file, plausible sizes
  bundles_.resize(bundle_count);
  std::uint64_t cursor = bundles_offset;
  for (std::uint32_t b = 0; b < bundle_count; ++b) {
    const std::string section = "index: bundle " + to_string(b);
    const std::uint64_t at = bundles_at + std::uint64_t{b} * kBundleRecordBytes;
    auto& rec = bundles_[b];
    const std::uint32_t kind = index.u32(at + 64);
    if (kind > 2) return located(errc::bad_data, section, "field 'kind' is " + to_string(kind));
    rec.kind = static_cast<bundle_kind>(kind);
    // Files of minor version 0 hold BF16 only: there the field was reserved, zero.
    const std::uint32_t format = index.u32(at + 72);
    if (format >= kValueFormatCount || (format != 0 && (kind == 0 || version_minor_ == 0)))
      return located(errc::bad_data, section,
                     "field 'format' is " + to_string(format) +
                         (format >= kValueFormatCount ? " (no such value format)"
                          : kind == 0                 ? " in a raw bundle"
                                                      : " in a file of minor version 0"));
    rec.format = static_cast<value_format>(format);
    rec.file_offset = index.u64(at + 0);
    rec.stored_bytes = index.u64(at + 8);
    rec.stored_checksum = index.u64(at + 16);
    rec.decoded_bytes = index.u64(at + 24);
    rec.decoded_checksum = index.u64(at + 32);
    rec.value_count = index.u64(at + 40);
    rec.exponent_entropy = index.f64(at + 48);
    rec.huffman_ideal_bits = index.u64(at + 56);
    rec.tensor_count = index.u32(at + 68);
    if (index.u32(at + 76) != 0)
      return located(errc::bad_data, section, "reserved field is not zero");
    if (rec.file_offset != cursor)
      return located(errc::bad_data, section,
                     "field 'file_offset' is " + to_string(rec.file_offset) + ", expected " +
                         to_string(cursor));
    if (rec.file_offset > metadata_offset || rec.stored_bytes > metadata_offset - rec.file_offset)
      return located(errc::bad_data, section,
                     "field 'stored_bytes' (" + to_string(rec.stored_bytes) +
                         ") reaches beyond the bundles' end (the metadata section)");
    if (!detail::all_zero(bytes_.subspan(
            rec.file_offset + rec.stored_bytes,
            std::min(detail::align_container(rec.file_offset + rec.stored_bytes), metadata_offset) -
                rec.file_offset - rec.stored_bytes)))
      return located(errc::bad_data, section, "padding after the bundle is not zero");
    cursor = detail::align_container(rec.file_offset + rec.stored_bytes);
    if (rec.kind == bundle_kind::raw) {
      if (rec.decoded_bytes != rec.stored_bytes || rec.decoded_checksum != rec.stored_checksum ||
          rec.value_count != 0 || rec.exponent_entropy != 0 || rec.huffman_ideal_bits != 0 ||
          rec.tensor_count > 1)
        return located(errc::bad_data, section,
                       "fields of a raw bundle are inconsistent ('decoded_bytes', "
                       "'decoded_checksum', 'value_count', statistics or 'tensor_count')");
    } else if (rec.kind == bundle_kind::verbatim) {
      if (rec.decoded_bytes != rec.stored_bytes || rec.decoded_checksum != rec.stored_checksum ||
          rec.value_count > rec.stored_bytes ||
          rec.decoded_bytes != value_bytes(rec.format) * rec.value_count || rec.tensor_count == 0)
        return located(errc::bad_data, section,
                       "fields of a verbatim " + std::string(to_string(rec.format)) +
                           " bundle are inconsistent ('decoded_bytes', 'decoded_checksum', "
                           "'value_count' or 'tensor_count')");
      if (!(rec.exponent_entropy >= 0.0 && rec.exponent_entropy <= 8.0))
        return located(errc::bad_data, section, "field 'exponent_entropy' is not in [0, 8]");
      if (rec.huffman_ideal_bits > 8 * rec.value_count)
        return located(errc::bad_data, section, "field 'huffman_ideal_bits' exceeds 8 per value");
    } else {
      // A value of a format with a raw byte keeps that byte in the bundle, and an FP8 value
      // takes at least one bit of stream, so a bundle cannot hold more values than bytes (FP8:
      // than bits): this bounds every decode buffer by 8 times the file's size.
      const std::uint64_t most_values =
          raw_plane_bits(rec.format) == 0
              ? (rec.stored_bytes > UINT64_MAX / 8 ? UINT64_MAX : 8 * rec.stored_bytes)
              : rec.stored_bytes;
      if (rec.value_count > most_values)
        return located(errc::bad_data, section,
                       "field 'value_count' (" + to_string(rec.value_count) +
                           ") exceeds what 'stored_bytes' (" + to_string(rec.stored_bytes) +
                           ") can hold");
      if (rec.decoded_bytes != value_bytes(rec.format) * rec.value_count)
        return located(errc::bad_data, section,
                       "field 'decoded_bytes' is not " + std::to_string(value_bytes(rec.format)) +
                           " * value_count");
      if (!(rec.exponent_entropy >= 0.0 && rec.exponent_entropy <= 8.0))
        return located(errc::bad_data, section, "field 'exponent_entropy' is not in [0, 8]");
      if (rec.huffman_ideal_bits > 8 * rec.value_count)
        return located(errc::bad_data, section, "field 'huffman_ideal_bits' exceeds 8 per value");
      if (rec.tensor_count == 0)
        return located(errc::bad_data, section, "field 'tensor_count' is 0");
    }
  }
  if (cursor != metadata_offset)
    return located(errc::bad_data, "index",
                   "bundles end at " + to_string(cursor) + " but the metadata section starts at " +
                       to_string(metadata_offset));

  // ---- tensor records
  tensors_.resize(tensor_count);
  std::vector<std::uint32_t> header_slot(tensor_count, std::numeric_limits<std::uint32_t>::max());
  for (std::uint32_t i = 0; i < tensor_count; ++i) {
    if (i % 4096 == 0 && cancel_requested(options.cancel))
      return located(errc::cancelled, "index", "interrupted");
    const std::uint64_t at = tensors_at + std::uint64_t{i} * kTensorRecordBytes;
    auto& t = tensors_[i];
    std::string section = "index: tensor record " + to_string(i);
    const std::uint32_t name_offset = index.u32(at + 32);
    const std::uint32_t name_size = index.u32(at + 36);
    if (std::uint64_t{name_offset} + name_size > names_bytes)
      return located(errc::bad_data, section, "fields 'name_offset'/'name_size' outside the names");
    t.name.assign(reinterpret_cast<const char*>(index_bytes.data() + names_at + name_offset),
                  name_size);
    section = "index: tensor " + safetensors::detail::quoted(t.name);
    t.original = {index.u64(at + 0), index.u64(at + 8)};
    t.bundle_offset = index.u64(at + 16);
    t.bundle = index.u32(at + 24);
    t.bundle_tensor = index.u32(at + 28);
    const std::uint32_t dims_offset = index.u32(at + 40);
    const std::uint16_t rank = index.u16(at + 44);
    const std::uint16_t type = index.u16(at + 46);
    t.header_order = index.u32(at + 48);
    t.bundle_count = index.u32(at + 52);
    if (std::uint64_t{dims_offset} + rank > dims_count)
      return located(errc::bad_data, section, "fields 'dims_offset'/'rank' outside the dims");
    if (!safetensors::is_known_dtype(type))
      return located(errc::bad_data, section, "field 'dtype' is " + to_string(type));
    t.type = static_cast<safetensors::dtype>(type);
    t.shape.resize(rank);
    for (std::uint16_t d = 0; d < rank; ++d)
      t.shape[d] = index.u64(dims_at + (std::uint64_t{dims_offset} + d) * 8);
    if (t.bundle >= bundle_count)
      return located(errc::bad_data, section, "field 'bundle' is " + to_string(t.bundle));
    if (t.bundle_count == 0 || t.bundle_count > bundle_count - t.bundle)
      return located(errc::bad_data, section,
                     "field 'bundle_count' is " + to_string(t.bundle_count) + " from bundle " +
                         to_string(t.bundle) + " of " + to_string(bundle_count));
    if (t.header_order >= tensor_count)
      return located(errc::bad_data, section, "field 'header_order' is out of range");
    if (header_slot[t.header_order] != std::numeric_limits<std::uint32_t>::max())
      return located(errc::bad_data, section, "field 'header_order' is used twice");
    header_slot[t.header_order] = i;
    // The index must describe exactly the tensor the verbatim header describes.
    const auto& h = header_.tensors[t.header_order];
    if (h.name != t.name || h.type != t.type || h.shape != t.shape || h.data != t.original)
      return located(errc::bad_data, section,
                     "record disagrees with the safetensors header (name, dtype, shape or "
                     "data_offsets)");
    const auto& b = bundles_[t.bundle];
    if (t.bundle_count > 1) {
      // A float tensor split into pieces: consecutive bundles of its format holding it alone,
      // whose values add up to it.
      std::uint64_t values = 0;
      for (std::uint32_t k = t.bundle; k < t.bundle + t.bundle_count; ++k) {
        const auto& piece = bundles_[k];
        if (!piece.has_values() || !dtype_holds_format(t.type, piece.format) ||
            piece.format != b.format || piece.tensor_count != 1 || piece.value_count == 0 ||
            t.bundle_offset != 0 || t.bundle_tensor != 0)
          return located(errc::bad_data, section,
                         "field 'bundle_count': bundle " + to_string(k) +
                             " is not a piece of this " +
                             std::string(safetensors::to_string(t.type)) + " tensor");
        values += piece.value_count;
      }
      if (values != t.size_bytes() / value_bytes(b.format))
        return located(errc::bad_data, section,
                       "field 'bundle_count': its pieces hold " + to_string(values) +
                           " values, the tensor " +
                           to_string(t.size_bytes() / value_bytes(b.format)));
    } else if (b.has_values()) {
      if (!dtype_holds_format(t.type, b.format))
        return located(errc::bad_data, section,
                       "a " + std::string(safetensors::to_string(t.type)) + " tensor in a " +
                           std::string(to_string(b.format)) + " bundle");
      if (t.bundle_tensor >= b.tensor_count)
        return located(errc::bad_data, section, "field 'bundle_tensor' is out of range");
    } else if (t.bundle_offset != 0 || t.bundle_tensor != 0 || b.tensor_count != 1 ||
               b.decoded_bytes != t.size_bytes()) {
      return located(errc::bad_data, section, "does not match its raw bundle");
    }
  }

  // ---- gap records
  gaps_.resize(gap_count);
  for (std::uint32_t g = 0; g < gap_count; ++g) {
    const std::uint64_t at = gaps_at + std::uint64_t{g} * kGapRecordBytes;
    const std::string section = "index: gap " + to_string(g);
    auto& gap = gaps_[g];
    gap.original = {index.u64(at + 0), index.u64(at + 8)};
    gap.bundle = index.u32(at + 16);
    if (index.u32(at + 20) != 0)
      return located(errc::bad_data, section, "reserved field is not zero");
    if (gap.original.begin >= gap.original.end)
      return located(errc::bad_data, section, "empty or reversed byte range");
    if (gap.bundle >= bundle_count || bundles_[gap.bundle].kind != bundle_kind::raw ||
        bundles_[gap.bundle].tensor_count != 0 ||
        bundles_[gap.bundle].decoded_bytes != gap.original.size())
      return located(errc::bad_data, section, "field 'bundle' does not name a matching raw bundle");
  }

  // ---- tensors and gaps tile the original data section exactly, in order
  {
    std::uint64_t position = 0;
    std::size_t ti = 0;
    std::size_t gi = 0;
    while (ti < tensors_.size() || gi < gaps_.size()) {
      // At one position, empty tensors come first, then the tile that covers bytes.
      const bool take_tensor =
          ti < tensors_.size() &&
          (gi == gaps_.size() || tensors_[ti].original.begin < gaps_[gi].original.begin ||
           (tensors_[ti].original.begin == gaps_[gi].original.begin &&
            tensors_[ti].original.size() == 0));
      const safetensors::byte_range r = take_tensor ? tensors_[ti].original : gaps_[gi].original;
      if (r.begin != position)
        return located(
            errc::bad_data, "index",
            std::string(take_tensor ? "tensor " + safetensors::detail::quoted(tensors_[ti].name)
                                    : "gap " + to_string(gi)) +
                " starts at " + to_string(r.begin) + ", expected " + to_string(position) +
                " (records out of order or not tiling)");
      position = r.end;
      take_tensor ? ++ti : ++gi;
    }
    if (position != header_.data_size)
      return located(errc::bad_data, "index",
                     "tensors and gaps cover " + to_string(position) +
                         " bytes of a data section of " + to_string(header_.data_size));
  }

  // ---- each bundle's members: every raw bundle used once; BF16 members numbered 0..n-1 with
  //      offsets that are the running sum of their sizes
  bundle_tensor_first_.assign(std::size_t{bundle_count} + 1, 0);
  std::vector<std::uint32_t> uses(bundle_count, 0);
  for (const auto& t : tensors_)
    for (std::uint32_t k = t.bundle; k < t.bundle + t.bundle_count; ++k) ++uses[k];
  for (const auto& g : gaps_) ++uses[g.bundle];
  for (std::uint32_t b = 0; b < bundle_count; ++b) {
    const auto& rec = bundles_[b];
    const std::uint32_t expected = rec.kind == bundle_kind::raw ? 1 : rec.tensor_count;
    if (uses[b] != expected)
      return located(
          errc::bad_data, "index: bundle " + to_string(b),
          "is used by " + to_string(uses[b]) + " tensors or gaps, expected " + to_string(expected));
    bundle_tensor_first_[b + 1] =
        bundle_tensor_first_[b] + (rec.kind == bundle_kind::raw ? rec.tensor_count : expected);
  }
  bundle_tensor_list_.assign(bundle_tensor_first_.back(),
                             std::numeric_limits<std::uint32_t>::max());
  bundle_piece_first_.assign(bundle_count, 0);
  for (std::uint32_t i = 0; i < tensor_count; ++i) {
    const auto& t = tensors_[i];
    std::uint64_t piece_first = 0;
    for (std::uint32_t k = t.bundle; k < t.bundle + t.bundle_count; ++k) {
      auto& slot = bundle_tensor_list_[bundle_tensor_first_[k] + t.bundle_tensor];
      if (slot != std::numeric_limits<std::uint32_t>::max())
        return located(errc::bad_data, "index: tensor " + safetensors::detail::quoted(t.name),
                       "field 'bundle_tensor' is used twice in bundle " + to_string(k));
      slot = i;
      bundle_piece_first_[k] = piece_first;
      piece_first += bundles_[k].value_count;
    }
  }
  for (std::uint32_t b = 0; b < bundle_count; ++b) {
    if (!bundles_[b].has_values()) continue;
    std::uint64_t values = 0;
    for (std::uint32_t k = bundle_tensor_first_[b]; k < bundle_tensor_first_[b + 1]; ++k) {
      const auto& t = tensors_[bundle_tensor_list_[k]];
      if (t.bundle_offset != values)
        return located(errc::bad_data, "index: tensor " + safetensors::detail::quoted(t.name),
                       "field 'bundle_offset' is " + to_string(t.bundle_offset) + ", expected " +
                           to_string(values));
      values += t.bundle_count > 1 ? bundles_[b].value_count
                                   : t.size_bytes() / value_bytes(bundles_[b].format);
    }
    if (values != bundles_[b].value_count)
      return located(errc::bad_data, "index: bundle " + to_string(b),
                     "field 'value_count' is " + to_string(bundles_[b].value_count) +
                         " but its tensors hold " + to_string(values));
  }

  bundle_verified_ = std::make_unique<std::atomic<bool>[]>(bundle_count);
  return {};
}

inline container_reader::piece_range container_reader::tensor_piece(
    std::uint32_t b, const container_tensor& t) const noexcept {
  if (t.bundle_count <= 1) return {0, t.size_bytes() / value_bytes(bundles_[b].format)};
  return {bundle_piece_first_[b], bundles_[b].value_count};
}

inline const container_tensor* container_reader::find_tensor(std::string_view name) const noexcept {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

inline std::span<const std::uint32_t> container_reader::bundle_tensors(
    std::uint32_t b) const noexcept {
  if (b >= bundles_.size()) return {};
  return std::span<const std::uint32_t>(bundle_tensor_list_)
      .subspan(bundle_tensor_first_[b], bundle_tensor_first_[b + 1] - bundle_tensor_first_[b]);
}

inline result<std::span<const std::byte>> container_reader::bundle_bytes(std::uint32_t b) const {
  if (b >= bundles_.size())
    return error{errc::invalid_argument, name_ + ": bundle " + std::to_string(b) + " of " +
                                             std::to_string(bundles_.size()) + " requested"};
  const auto& rec = bundles_[b];
  const auto bytes = bytes_.subspan(rec.file_offset, rec.stored_bytes);
  if (verify_checksums_ && !bundle_verified_[b].load(std::memory_order_acquire)) {
    if (detail::xxh3_64(bytes) != rec.stored_checksum) {
      if (error e = check_unchanged()) return e;  // a shrunk file reads as zeros
      return located(errc::checksum_mismatch, "bundle " + std::to_string(b),
                     "field 'stored_checksum' mismatch");
    }
    bundle_verified_[b].store(true, std::memory_order_release);
  }
  return bytes;
}

inline result<bundle_view> container_reader::bundle(std::uint32_t b) const {
  auto bytes = bundle_bytes(b);
  if (!bytes) return bytes.error();
  const auto& rec = bundles_[b];
  const std::string section = "bundle " + std::to_string(b);
  if (rec.kind != bundle_kind::huffman)
    return error{errc::invalid_argument, name_ + ": " + section + " is a " +
                                             (rec.kind == bundle_kind::raw ? "raw" : "verbatim") +
                                             " bundle"};
  auto view = parse_bundle(*bytes);
  if (!view) return located(view.error().code, section, view.error().message);
  const auto members = bundle_tensors(b);
  if (view->format() != rec.format) {
    // The index says which dtype the values are for; a bundle of another format would decode
    // into values of another width or meaning.
    const std::string tensor =
        members.empty()
            ? std::string("no tensor")
            : "tensor " + safetensors::detail::quoted(tensors_[members[0]].name) + " (" +
                  std::string(safetensors::to_string(tensors_[members[0]].type)) + ")";
    return located(errc::bad_data, section,
                   "bundle header's format " + std::string(to_string(view->format())) +
                       " disagrees with the index's " + std::string(to_string(rec.format)) +
                       " for " + tensor);
  }
  if (view->size_bytes() != rec.stored_bytes || view->value_count() != rec.value_count ||
      view->tensor_count() != rec.tensor_count)
    return located(errc::bad_data, section,
                   "bundle header disagrees with the index ('stored_bytes', 'value_count' or "
                   "'tensor_count')");
  for (std::uint32_t k = 0; k < members.size(); ++k) {
    const auto& t = tensors_[members[k]];
    if (view->tensor_value_count(k) != tensor_piece(b, t).values)
      return located(errc::bad_data, section,
                     "value count of tensor " + std::to_string(k) + " disagrees with the index (" +
                         safetensors::detail::quoted(t.name) + ")");
  }
  return *view;
}

inline error container_reader::decode_bundle(std::uint32_t b, std::span<std::byte> out,
                                             const decode_options& options,
                                             bool check_decoded) const {
  if (b >= bundles_.size() || !bundles_[b].has_values())
    return {errc::invalid_argument,
            name_ + ": bundle " + std::to_string(b) + " is not a bundle of float values"};
  const auto& rec = bundles_[b];
  if (out.size() < rec.decoded_bytes)
    return {errc::insufficient_space, name_ + ": bundle " + std::to_string(b) + " needs " +
                                          std::to_string(rec.decoded_bytes) +
                                          " bytes of output, got " + std::to_string(out.size())};
  out = out.first(static_cast<std::size_t>(rec.decoded_bytes));
  if (rec.kind == bundle_kind::verbatim) {
    auto bytes = bundle_bytes(b);  // checksum verified: the stored bytes are the decoded ones
    if (!bytes) return bytes.error();
    if (!bytes->empty()) std::memcpy(out.data(), bytes->data(), bytes->size());
    return {};
  }
  auto view = bundle(b);
  if (!view) return view.error();
  if (error e = decompress(*view, out, options)) {
    if (error changed = check_unchanged()) return changed;
    return located(e.code, "bundle " + std::to_string(b), e.message);
  }
  if (check_decoded && verify_checksums_ && detail::xxh3_64(out) != rec.decoded_checksum) {
    if (error e = check_unchanged()) return e;
    return located(errc::checksum_mismatch, "bundle " + std::to_string(b),
                   "decoded values disagree with field 'decoded_checksum'");
  }
  return {};
}

inline error container_reader::decode_bundle(std::uint32_t b, std::span<std::uint16_t> out,
                                             const decode_options& options,
                                             bool check_decoded) const {
  if (b < bundles_.size() && bundles_[b].has_values() &&
      value_bytes(bundles_[b].format) != sizeof(std::uint16_t))
    return {errc::invalid_argument, name_ + ": bundle " + std::to_string(b) + " holds " +
                                        std::string(to_string(bundles_[b].format)) +
                                        " values, not 16-bit ones: decode it into bytes"};
  return decode_bundle(b, std::as_writable_bytes(out), options, check_decoded);
}

inline error container_reader::read_tensor(const container_tensor& tensor, std::span<std::byte> out,
                                           const decode_options& options) const {
  if (out.size() != tensor.size_bytes())
    return {errc::insufficient_space,
            name_ + ": tensor " + safetensors::detail::quoted(tensor.name) + " has " +
                std::to_string(tensor.size_bytes()) + " bytes, got " + std::to_string(out.size())};
  const auto& rec = bundles_[tensor.bundle];
  if (out.empty()) return {};  // an empty tensor: nothing to read (and no null memcpy)
  if (rec.kind == bundle_kind::raw) {
    auto bytes = bundle_bytes(tensor.bundle);
    if (!bytes) return bytes.error();
    std::memcpy(out.data(), bytes->data(), out.size());
    return check_unchanged();  // zeros, not the tensor, if the file shrank meanwhile
  }
  // One bundle at a time (a tensor split into pieces decodes piece by piece), into memory whose
  // pages the decoding threads fault in (decoder.hpp's decompress_values), not a zeroed vector
  // faulted in by this thread first.
  std::uint64_t largest = 0;
  for (std::uint32_t b = tensor.bundle; b < tensor.bundle + tensor.bundle_count; ++b)
    largest = std::max(largest, bundles_[b].decoded_bytes);
  auto memory =
      detail::page_memory::allocate(static_cast<std::size_t>(largest), detail::kValuesPagePolicy);
  if (!memory) return memory.error();
  detail::fault_in(*memory, detail::resolve_threads(options.threads), detail::kValuesPagePolicy);
  const std::uint64_t width = value_bytes(rec.format);
  for (std::uint32_t b = tensor.bundle; b < tensor.bundle + tensor.bundle_count; ++b) {
    const std::span<std::byte> decoded(reinterpret_cast<std::byte*>(memory->data()),
                                       static_cast<std::size_t>(bundles_[b].decoded_bytes));
    if (error e = decode_bundle(b, decoded, options)) return e;
    const piece_range piece = tensor_piece(b, tensor);
    std::memcpy(out.data() + width * piece.first, decoded.data() + width * tensor.bundle_offset,
                static_cast<std::size_t>(width * piece.values));
  }
  return {};
}

inline error container_reader::verify_all(const decode_options& options) const {
  std::vector<std::byte> values;
  for (std::uint32_t b = 0; b < bundles_.size(); ++b) {
    const auto& rec = bundles_[b];
    if (rec.kind == bundle_kind::raw) {
      auto bytes = bundle_bytes(b);
      if (!bytes) return bytes.error();
      if (verify_checksums_ && detail::xxh3_64(*bytes) != rec.decoded_checksum)
        return located(errc::checksum_mismatch, "bundle " + std::to_string(b),
                       "field 'decoded_checksum' mismatch");
    } else {
      values.resize(static_cast<std::size_t>(rec.decoded_bytes));
      if (error e = decode_bundle(b, values, options)) return e;
    }
    release_bundle(b);
  }
  return {};
}

inline container_totals container_reader::totals() const noexcept {
  container_totals t;
  t.file_bytes = file_size();
  t.original_bytes = original_size_;
  t.tensor_count = tensors_.size();
  for (const auto& b : bundles_) t.add_bundle(b);
  return t;
}

inline void container_reader::release_bundle(std::uint32_t b) const noexcept {
  if (b < bundles_.size()) file_.release(bundles_[b].file_offset, bundles_[b].stored_bytes);
}

}  // namespace floatzip
