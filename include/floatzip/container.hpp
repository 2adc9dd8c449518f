// floatzip: the .fzip container, a compressed safetensors file that decompresses byte for byte.
//
//   floatzip::compress_file("model.safetensors", "model.fzip");          // streaming, atomic
//   auto reader = floatzip::container_reader::open("model.fzip").value();  // validates the index
//   const auto* t = reader.find_tensor("model.layers.3.mlp.up_proj.weight");
//   auto view = reader.bundle(t->bundle).value();  // checksum verified on first touch
//   std::vector<std::uint16_t> block(view.value_count());
//   reader.decode_bundle(t->bundle, block);        // every tensor of layer 3
//   floatzip::decompress_file("model.fzip", "copy.safetensors");  // == model.safetensors
//
// Needs nlohmann/json.hpp and xxhash.h (both used header-only) on the include path, and libzstd
// (link zstd::zstd: the metadata section is a zstd frame).
//
// File layout (little-endian; bundles from byte 128 on, each at a multiple of 16 bytes, then the
// metadata section, written last so that compression streams; every byte between sections is
// zero, and every byte of the file is covered by a checksum or by that zero rule):
//
//   offset  size  field
//   0       8     magic 89 46 5A 49 50 0D 0A 1A ("\x89FZIP\r\n\x1A": binary, catches text-mode
//                 transfers and truncation at ^Z)
//   8       2     format version major (2): a reader refuses any other major version (files of
//                 format 1 get errc::unsupported_version: compress the original again)
//   10      2     format version minor: 0 when every bundle holds BF16 values (as in files of
//                 floatzip before other float formats), 1 when a bundle holds another format
//                 (field 'format' of the bundle record); a reader refuses a newer minor
//   12      4     flags: bit 0, compact index (below; set in every file floatzip writes now, clear
//                 in files of earlier versions, which readers still read); a reader refuses any
//                 other set bit (an earlier reader refuses compact files this way)
//   16      8     file_size: the size of this file; a reader refuses any other size
//   24      8     original_size: size of the safetensors file this decompresses to
//   32      8     metadata_offset (= the last bundle's end rounded up to 16; the section runs to
//                 the end of the file)
//   40      8     header_size: 8 + N, the original file's length field and JSON, verbatim
//   48      8     metadata_checksum: XXH3-64 of the stored metadata section
//   56      8     metadata_stored_size: bytes of the metadata section (one zstd frame)
//   64      8     index_size: bytes of the index inside the decoded metadata
//   72      8     metadata_decoded_checksum: XXH3-64 of the decoded metadata
//   80      8     bundles_offset (= 128): where bundle 0 starts
//   88      32    reserved, zero
//   120     8     XXH3-64 of bytes [0, 120)
//
//   metadata section: a zstd frame that decodes to exactly header_size + index_size bytes: the
//   original header (verbatim: length field and JSON) followed by the index section.
//
//   index section:
//   0       4     bundle_count B
//   4       4     tensor_count T (equals the number of tensors in the safetensors header)
//   8       4     gap_count G
//   12      4     dims_count D
//   16      8     names_bytes
//   24      4     grouping: the grouping_kind the file was written with
//   28      4     reserved, zero
//   32      80*B  bundle records, in file order
//   ..      56*T  tensor records, sorted by position in the original data section
//   ..      24*G  gap records, sorted likewise
//   ..      8*D   tensor dimensions (u64), referenced by the tensor records
//   ..      names tensor names (UTF-8, not terminated), referenced by the tensor records
//
//   bundle record (80 bytes)                  tensor record (56 bytes)
//   0   u64 file_offset (64-aligned)          0   u64 original_begin  (relative to the
//   8   u64 stored_bytes                      8   u64 original_end     data section)
//   16  u64 stored_checksum (XXH3-64)         16  u64 bundle_offset (values of a coded or
//   24  u64 decoded_bytes                             verbatim bundle, bytes of a raw one)
//   32  u64 decoded_checksum (XXH3-64 of the  24  u32 bundle
//           decoded bytes in bundle order)    28  u32 bundle_tensor (position in the bundle)
//   40  u64 value_count (values of `format`)  32  u32 name_offset   36  u32 name_size
//   48  f64 symbol entropy, bits per value    40  u32 dims_offset   44  u16 rank
//   56  u64 unlimited-Huffman symbol bits     46  u16 dtype (safetensors::dtype)
//   64  u32 kind (0 raw, 1 coded,             48  u32 header_order (position in the JSON)
//           2 values stored verbatim)         52  u32 bundle_count (pieces of a split tensor)
//   68  u32 tensor_count
//   72  u32 format (value_format; 0 for raw
//           bundles and in files of minor 0)
//   76  u32 reserved, zero
//                                             gap record (24 bytes)
//                                             0 u64 original_begin  8 u64 original_end
//                                             16 u32 bundle  20 u32 reserved, zero
//
//   compact index (flag bit 0): the same index header, with dims_count and names_bytes zero, then
//   the B bundle records, the T tensor records and the G gap records, each table stored column
//   by column (byte k of record r of a table of n records at offset k * n + r), and no dims or
//   names. A compact tensor record (24 bytes) keeps only what the safetensors header does not
//   say: 0 u64 bundle_offset, 8 u32 bundle, 12 u32 bundle_tensor, 16 u32 header_order, 20 u32
//   bundle_count; its name, dtype, shape and data offsets are those of header entry
//   header_order, each entry named by exactly one record. A reader expands a compact index into
//   the classic layout and checks it the same way. Why: the classic index repeats what the
//   header says and interleaves fields zstd would otherwise find alike; the compact one takes
//   495-1,140 bytes off the files made from the small models in ../shared/models (0.1-0.4 %).
//
// Bundles: each float tensor is coded in the value format of its dtype (container_format_of:
// BF16, F8_E4M3, F8_E5M2, F32 as bf16_in_fp32 when every value's low 16 bits are zero, else as
// fp32, and F16 as bf16_in_fp16 when every value is a BF16 value, else as fp16). The tensors of one
// format and one group (by default the first numbered name component, as in "...layers.N.": one
// transformer block; see grouping_kind) form one bundle compressed by compress_bundle (see
// bundle_format.hpp; the bundle's header records its format); the other tensors of a format are
// packed, in file order, into bundles of up to kPackedBundleValues values (a tensor at least that
// big is a bundle of its own). Tensors of different formats never share a bundle. A bundle that
// coding would not make smaller is stored as its values verbatim (kind verbatim, decoded by a
// copy), so no bundle is bigger than its raw bytes. Each tensor of another dtype, and each run of
// bytes of the data section that belongs to no tensor (a "gap": padding some writers leave), is
// stored verbatim as a raw bundle. Tensors and gaps tile the original data section exactly, so
// decompression writes the verbatim header followed by every tile at its original offset and
// reproduces the file.
//
// Per-bundle statistics (values, entropy, ideal size) are computed at compression time and kept
// in the index, so `floatzip info` reads no bundle.
//
// Untrusted input: open() checks the file header, both section checksums, every index field,
// and that the index agrees with the verbatim safetensors header, before it returns; a bundle's
// own checksum is checked the first time the bundle is touched, and a decoded bundle is checked
// against its decoded checksum. Declared sizes are checked against the file before anything is
// allocated: a bundle decodes to at most 8 times its stored size (FP8: at least one bit per
// value; the other formats keep at least one raw byte per value of 2 or 4 bytes), so nothing a
// hostile file declares makes a reader allocate more than 8 times the file's size.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "floatzip/bundle_format.hpp"
#include "floatzip/decoder.hpp"
#include "floatzip/detail/file_io.hpp"
#include "floatzip/encoder.hpp"
#include "floatzip/error.hpp"
#include "floatzip/safetensors.hpp"
#include "floatzip/value_format.hpp"

namespace floatzip {

inline constexpr std::array<std::byte, 8> kContainerMagic = {
    std::byte{0x89}, std::byte{'F'},  std::byte{'Z'},  std::byte{'I'},
    std::byte{'P'},  std::byte{'\r'}, std::byte{'\n'}, std::byte{0x1A}};
inline constexpr std::uint16_t kContainerVersionMajor = 2;
// The newest minor version this reader reads; writers write 0 for BF16-only files (readable by
// floatzip before other float formats) and 1 otherwise.
inline constexpr std::uint16_t kContainerVersionMinor = 1;
inline constexpr std::uint64_t kContainerAlignment = 16;  // of bundles (GPU section alignment)
inline constexpr std::uint64_t kContainerHeaderBytes = 128;
inline constexpr std::uint64_t kIndexHeaderBytes = 32;
inline constexpr std::uint64_t kBundleRecordBytes = 80;
inline constexpr std::uint64_t kTensorRecordBytes = 56;
inline constexpr std::uint64_t kGapRecordBytes = 24;
inline constexpr std::uint64_t kCompactTensorRecordBytes = 24;
// File header flags (field 'flags'). A reader refuses a file with any other bit set.
inline constexpr std::uint32_t kContainerFlagCompactIndex = 1;
inline constexpr std::uint32_t kContainerKnownFlags = kContainerFlagCompactIndex;
inline constexpr std::string_view kContainerExtension = ".fzip";
// Decoded index size a reader accepts: far above any real model's (56 bytes per tensor).
inline constexpr std::uint64_t kMaxIndexBytes = std::uint64_t{1} << 30;
// Float tensors outside a block group are packed into bundles of about this many values.
inline constexpr std::uint64_t kPackedBundleValues = std::uint64_t{1} << 20;

enum class bundle_kind : std::uint32_t {
  raw = 0,       // bytes stored verbatim (tensors of dtypes that are not coded, gaps)
  huffman = 1,   // a serialized bundle from compress_bundle (its format in its header)
  verbatim = 2,  // float tensors' values verbatim, in bundle order (coding would not shrink them)
  // The names of the BF16-only format; the numbers are what files store.
  bf16_huffman = huffman,
  bf16_raw = verbatim,
};

// The value format compression codes a tensor of dtype `type` in: BF16 -> bf16, F8_E4M3 ->
// fp8_e4m3, F8_E5M2 -> fp8_e5m2, F32 -> bf16_in_fp32 when `bf16_values` (every value's low 16
// bits are zero: low_halves_zero) else fp32, F16 -> bf16_in_fp16 when `bf16_values` (every value
// is a BF16 value: fp16_values_are_bf16) else fp16; nullopt for every other dtype (stored raw).
// holds_bf16_values says which.
constexpr std::optional<value_format> container_format_of(safetensors::dtype type,
                                                          bool bf16_values) noexcept {
  switch (type) {
    case safetensors::dtype::bf16: return value_format::bf16;
    case safetensors::dtype::f16:
      return bf16_values ? value_format::bf16_in_fp16 : value_format::fp16;
    case safetensors::dtype::f8_e4m3: return value_format::fp8_e4m3;
    case safetensors::dtype::f8_e5m2: return value_format::fp8_e5m2;
    case safetensors::dtype::f32:
      return bf16_values ? value_format::bf16_in_fp32 : value_format::fp32;
    default: return std::nullopt;
  }
}

// Whether every value of a tensor of dtype `type` with bytes `values` is a BF16 value, so that
// it is coded as BF16 (container_format_of): F32 with zero low halves, F16 whose mantissa bits
// below BF16's 8 significant ones are zero. One pass over the values; false for other dtypes.
inline bool holds_bf16_values(safetensors::dtype type, std::span<const std::byte> values) noexcept {
  if (type == safetensors::dtype::f32) return low_halves_zero(values);
  if (type == safetensors::dtype::f16) return fp16_values_are_bf16(values);
  return false;
}

// Whether a bundle of format `f` may hold a tensor of dtype `type` (F32 either F32 format, F16
// either F16 format).
constexpr bool dtype_holds_format(safetensors::dtype type, value_format f) noexcept {
  const auto as_is = container_format_of(type, false);
  const auto widened = container_format_of(type, true);
  return (as_is && *as_is == f) || (widened && *widened == f);
}

// Stored bits per value outside the Huffman-coded symbol: the raw planes of the format's split
// (8 for the raw byte, 16 for fp32's low half, none for FP8).
constexpr unsigned raw_plane_bits(value_format f) noexcept {
  return (format_has_raw_byte(f) ? 8u : 0u) + (format_has_low_half(f) ? 16u : 0u);
}

// How float tensors are grouped into bundles (a group is decoded as one unit: a transformer
// block); each format's tensors apart.
// Tensors in no group are packed, in file order, into shared bundles.
enum class grouping_kind : std::uint32_t {
  layers = 0,     // "...layers.N." (Llama and most decoder-only language models)
  automatic = 1,  // the first numbered component of any naming: "<anything>.<word>.N."
  diffusion = 2,  // transformer_blocks.N, single_transformer_blocks.N, down_blocks.N,
                  // up_blocks.N, blocks.N, layers.N
  experts = 3,    // MoE: "...experts.N." (each expert its own group), else layers.N
  pattern = 4,    // a user regular expression (ECMAScript): the first capture group, else the
                  // whole match, is the group
  none = 5,       // no groups: every float tensor is packed
};
inline constexpr std::uint32_t kGroupingKindCount = 6;

struct grouping {
  grouping_kind kind = grouping_kind::automatic;
  std::string pattern;  // for grouping_kind::pattern
};

// "auto", "layers", "diffusion", "experts", "none" or "regex:PATTERN"; errc::invalid_argument
// names what is wrong (including a regular expression that does not compile).
result<grouping> parse_grouping(std::string_view spec);
std::string_view grouping_name(grouping_kind kind) noexcept;

struct container_bundle {
  bundle_kind kind = bundle_kind::raw;
  value_format format = value_format::bf16;  // of a coded or verbatim bundle (bf16 for raw)
  std::uint64_t file_offset = 0;
  std::uint64_t stored_bytes = 0;
  std::uint64_t stored_checksum = 0;
  std::uint64_t decoded_bytes = 0;
  std::uint64_t decoded_checksum = 0;
  std::uint64_t value_count = 0;  // values of `format` (0 for raw bundles)
  // Float values (coded or verbatim) of any format.
  [[nodiscard]] bool has_values() const noexcept { return kind != bundle_kind::raw; }
  // BF16 values (coded or verbatim): what BF16-only users (llama_generate, the GPU loader) take.
  [[nodiscard]] bool is_bf16() const noexcept {
    return has_values() && format == value_format::bf16;
  }
  double exponent_entropy = 0;           // bits per value of the symbol (exponent) histogram
  std::uint64_t huffman_ideal_bits = 0;  // symbol bits, an unlimited Huffman code per tensor
  std::uint32_t tensor_count = 0;        // tensors in the bundle (0 for a gap's bundle)

  // Bits per value as stored, everything in the bundle counted.
  [[nodiscard]] double bits_per_value() const noexcept {
    return value_count == 0 ? 0.0 : 8.0 * double(stored_bytes) / double(value_count);
  }
  // The per-tensor ideal: the format's raw planes + an unlimited Huffman code of the symbols.
  [[nodiscard]] double huffman_ideal_bits_per_value() const noexcept {
    return value_count == 0
               ? 0.0
               : raw_plane_bits(format) + double(huffman_ideal_bits) / double(value_count);
  }
};

struct container_tensor {
  std::string name;
  safetensors::dtype type = safetensors::dtype::u8;
  std::vector<std::uint64_t> shape;
  safetensors::byte_range original;  // in the original data section
  std::uint32_t bundle = 0;          // the (first) bundle holding it
  std::uint32_t bundle_count = 1;    // consecutive bundles: > 1 for a tensor split into pieces
  std::uint32_t bundle_tensor = 0;   // position within the bundle
  std::uint64_t bundle_offset = 0;   // first value (coded or verbatim bundle) or byte (raw)
  std::uint32_t header_order = 0;    // position in the safetensors JSON

  [[nodiscard]] std::uint64_t size_bytes() const noexcept { return original.size(); }
};

struct container_gap {
  safetensors::byte_range original;
  std::uint32_t bundle = 0;
};

struct reader_options {
  // Check the section and bundle checksums. Turning this off is for fuzzing the validation
  // behind them and for data whose integrity is established some other way.
  bool verify_checksums = true;
  // Set, from another thread or a signal handler, to stop open() with errc::cancelled.
  const cancel_flag* cancel = nullptr;
};

// Totals of the coded and verbatim bundles of one value format.
struct format_totals {
  std::uint64_t bundle_count = 0;
  std::uint64_t values = 0;
  std::uint64_t original_bytes = 0;      // the values' bytes (values * value_bytes(format))
  std::uint64_t stored_bytes = 0;        // their bundles as stored
  double symbol_entropy_bits = 0;        // total over the values
  std::uint64_t huffman_ideal_bits = 0;  // symbol bits, an unlimited Huffman code per tensor

  [[nodiscard]] double bits_per_value() const noexcept {
    return values == 0 ? 0.0 : 8.0 * double(stored_bytes) / double(values);
  }
  [[nodiscard]] double ratio() const noexcept {
    return original_bytes == 0 ? 0.0 : double(stored_bytes) / double(original_bytes);
  }
  // The format's raw planes + the symbol entropy.
  [[nodiscard]] double entropy_bound_bits_per_value(value_format f) const noexcept {
    return values == 0 ? 0.0 : raw_plane_bits(f) + symbol_entropy_bits / double(values);
  }
  // The format's raw planes + an unlimited Huffman code of the symbols per tensor, no metadata.
  [[nodiscard]] double huffman_ideal_bits_per_value(value_format f) const noexcept {
    return values == 0 ? 0.0 : raw_plane_bits(f) + double(huffman_ideal_bits) / double(values);
  }
  format_totals& operator+=(const format_totals& o) noexcept;
};

// Totals over a container (or several: operator+=), as `floatzip info` prints them. The bf16_*
// fields and the BF16 figures are those of the BF16 bundles (formats[bf16]); `formats` has every
// value format's.
struct container_totals {
  std::uint64_t file_bytes = 0;      // .fzip bytes
  std::uint64_t original_bytes = 0;  // safetensors bytes it decompresses to
  std::uint64_t tensor_count = 0;
  std::uint64_t bundle_count = 0;
  std::uint64_t bf16_bundle_count = 0;
  std::uint64_t bf16_values = 0;
  std::uint64_t bf16_stored_bytes = 0;                     // BF16 bundles as stored
  std::uint64_t raw_bytes = 0;                             // raw bundles (other dtypes, gaps)
  double exponent_entropy_bits = 0;                        // total over all BF16 values
  std::uint64_t huffman_ideal_bits = 0;                    // total over all BF16 values
  std::array<format_totals, kValueFormatCount> formats{};  // indexed by value_format

  [[nodiscard]] const format_totals& of(value_format f) const noexcept {
    return formats[static_cast<std::size_t>(f)];
  }
  // Adds one bundle: raw bytes, or a coded or verbatim bundle to its format's totals (and, for
  // BF16, to the bf16_* fields). Counts it in bundle_count.
  void add_bundle(const container_bundle& b) noexcept;

  [[nodiscard]] double ratio() const noexcept {
    return original_bytes == 0 ? 0.0 : double(file_bytes) / double(original_bytes);
  }
  [[nodiscard]] double bits_per_bf16_value() const noexcept {
    return bf16_values == 0 ? 0.0 : 8.0 * double(bf16_stored_bytes) / double(bf16_values);
  }
  // The entropy bound: raw sign/mantissa byte + exponent entropy.
  [[nodiscard]] double entropy_bound_bits_per_value() const noexcept {
    return bf16_values == 0 ? 0.0 : 8.0 + exponent_entropy_bits / double(bf16_values);
  }
  // Raw sign/mantissa byte + an unlimited Huffman code of the exponents, no metadata.
  [[nodiscard]] double huffman_ideal_bits_per_value() const noexcept {
    return bf16_values == 0 ? 0.0 : 8.0 + double(huffman_ideal_bits) / double(bf16_values);
  }
  container_totals& operator+=(const container_totals& o) noexcept;
};

// A validated, memory-mapped .fzip file. Bundles are read (and their checksums checked) only
// when asked for. The query functions are safe to call from several threads at once.
class container_reader {
 public:
  static result<container_reader> open(const std::filesystem::path& path,
                                       const reader_options& options = {});
  // Over bytes the caller keeps alive (tests, fuzzing, files already in memory). `name` labels
  // error messages.
  static result<container_reader> from_bytes(std::span<const std::byte> bytes, std::string name,
                                             const reader_options& options = {});

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] std::uint64_t file_size() const noexcept { return bytes_.size(); }
  [[nodiscard]] std::uint64_t original_size() const noexcept { return original_size_; }
  // The original file's first 8 + N bytes, verbatim, and their parsed form.
  [[nodiscard]] std::span<const std::byte> original_header_bytes() const noexcept {
    return original_header_bytes_;
  }
  [[nodiscard]] const safetensors::header& original_header() const noexcept { return header_; }

  [[nodiscard]] std::span<const container_bundle> bundles() const noexcept { return bundles_; }
  // In order of position in the original data section.
  [[nodiscard]] std::span<const container_tensor> tensors() const noexcept { return tensors_; }
  [[nodiscard]] std::span<const container_gap> gaps() const noexcept { return gaps_; }
  [[nodiscard]] const container_tensor* find_tensor(std::string_view name) const noexcept;
  // Indices into tensors() of bundle b's tensors, in bundle order.
  [[nodiscard]] std::span<const std::uint32_t> bundle_tensors(std::uint32_t b) const noexcept;
  // Which values of tensor t bundle b holds: all of them, or for a tensor split into pieces
  // (t.bundle_count > 1) this bundle's piece. Precondition: b holds t.
  struct piece_range {
    std::uint64_t first = 0;   // index of the piece's first value in the tensor
    std::uint64_t values = 0;  // values in the piece
  };
  [[nodiscard]] piece_range tensor_piece(std::uint32_t b, const container_tensor& t) const noexcept;

  // The stored bytes of bundle b (64-byte aligned in the file), checksum verified on first use.
  [[nodiscard]] result<std::span<const std::byte>> bundle_bytes(std::uint32_t b) const;
  // A coded (kind huffman) bundle parsed and checked against the index, its format included
  // (verbatim bundles have no view: decode_bundle copies them).
  [[nodiscard]] result<bundle_view> bundle(std::uint32_t b) const;
  // Decodes coded or verbatim bundle b, of any format, into out[0 .. decoded_bytes): its values'
  // little-endian bytes, as in the original file. With check_decoded, the output is checked
  // against the decoded checksum recorded at compression time.
  error decode_bundle(std::uint32_t b, std::span<std::byte> out, const decode_options& options = {},
                      bool check_decoded = true) const;
  // The same for a bundle of 16-bit values (bf16, fp16) into out[0 .. value_count); another
  // format is errc::invalid_argument.
  error decode_bundle(std::uint32_t b, std::span<std::uint16_t> out,
                      const decode_options& options = {}, bool check_decoded = true) const;
  // Copies one tensor's original bytes into out (out.size() == tensor.size_bytes()). A tensor of
  // a coded bundle decodes the whole bundle into a temporary buffer: engines that need several
  // tensors of a block should call decode_bundle once instead.
  error read_tensor(const container_tensor& tensor, std::span<std::byte> out,
                    const decode_options& options = {}) const;

  // Checks every bundle (stored checksum, parse, decode, decoded checksum).
  error verify_all(const decode_options& options = {}) const;

  [[nodiscard]] container_totals totals() const noexcept;
  // The grouping rule the file was written with.
  [[nodiscard]] grouping_kind grouping_used() const noexcept { return grouping_; }
  // The file's format version minor: 0 for BF16-only files, 1 with other value formats.
  [[nodiscard]] std::uint16_t version_minor() const noexcept { return version_minor_; }
  // Whether the index is stored compact (flag kContainerFlagCompactIndex: every file floatzip
  // writes now) or in the classic layout of earlier files.
  [[nodiscard]] bool compact_index() const noexcept { return compact_index_; }

  // Drops mapped pages of bundle b from the resident set (streaming over a large file).
  void release_bundle(std::uint32_t b) const noexcept;

  // An error when the file shrank or was written since open() (by another process): the reader's
  // own calls then fail with it, but bytes a caller took from bundle_bytes() may read as zeros
  // past the file's new end. Never an error for from_bytes().
  [[nodiscard]] error check_unchanged() const { return file_.check_unchanged(); }

 private:
  error validate(const reader_options& options);
  error located(errc code, std::string_view section, const std::string& what) const;

  detail::mapped_file file_;  // empty for from_bytes
  std::span<const std::byte> bytes_;
  std::vector<std::byte> metadata_;  // the decoded metadata section: header, then index
  std::string name_;
  bool verify_checksums_ = true;
  std::uint64_t original_size_ = 0;
  std::span<const std::byte> original_header_bytes_;
  safetensors::header header_;
  std::vector<container_bundle> bundles_;
  std::vector<container_tensor> tensors_;
  std::vector<container_gap> gaps_;
  std::vector<std::uint32_t> bundle_tensor_first_;  // CSR: bundle b's tensors are
  std::vector<std::uint32_t> bundle_tensor_list_;   // list[first[b] .. first[b + 1])
  std::vector<std::uint64_t> bundle_piece_first_;   // per bundle: first value of its piece
  std::unique_ptr<std::atomic<bool>[]> bundle_verified_;
  grouping_kind grouping_ = grouping_kind::layers;
  std::uint16_t version_minor_ = 0;
  bool compact_index_ = false;
};

// ---- conversion ----------------------------------------------------------------------------

// Called with the original bytes processed so far and the total.
using progress_callback = std::function<void(std::uint64_t done, std::uint64_t total)>;

// Largest bundle compression writes by default, in values (2 GiB of BF16): a bigger tensor
// is split into pieces of consecutive bundles, a bigger group continues in another bundle, so
// that compression, decompression and verification hold one bundle of at most this size.
inline constexpr std::uint64_t kMaxBundleValuesDefault = std::uint64_t{1} << 30;

// The container writes 128-byte chunks, not encode_options' 64: the sync metadata costs 4 bits
// per chunk, and at 64 bytes that is the whole difference to ZipNN on large homogeneous files
// (0.6710 against 0.6706 on the 269 MB Llama-shaped checkpoint; 0.6703 at 128, see
// bench/RESULTS.md). The GPU decode time of 128-byte chunks is still to be measured: this is the
// one line to change back if it costs more than the 0.011 bits per weight it saves.
inline constexpr std::uint32_t kContainerChunkBytes = 128;

struct compress_options {
  encode_options codec{.chunk_bytes = kContainerChunkBytes};
  grouping group{};
  std::uint64_t max_bundle_values = kMaxBundleValuesDefault;
  bool sync = false;  // fsync the output before it is renamed into place
  progress_callback progress;
  // Whether a regular file (or symlink) at the output may be replaced; the output policy in
  // detail/file_io.hpp says what is never replaced. The directory functions take it as a
  // parameter instead.
  bool replace_existing = true;
  const cancel_flag* cancel = nullptr;  // set to stop with errc::cancelled, output removed
};

struct decompress_options {
  decode_options codec{};
  bool sync = false;
  progress_callback progress;
  bool replace_existing = true;  // as in compress_options
  const cancel_flag* cancel = nullptr;
};

// The "...layers.N." prefix that groups a tensor into a transformer-block bundle, or an empty
// view when the name has none.
std::string_view transformer_block_prefix(std::string_view tensor_name) noexcept;

// safetensors -> .fzip. Streams: one bundle's input and output are in memory at a time. The
// output appears at `output` only when complete; on any error nothing is left there. An output
// that is, contains or lies inside the input is refused, and so is one the output policy forbids
// replacing (detail/file_io.hpp). An input that shrinks or is written while it is read is an
// errc::io_error naming it.
result<container_totals> compress_file(const std::filesystem::path& input,
                                       const std::filesystem::path& output,
                                       const compress_options& options = {});

// .fzip -> safetensors, byte for byte. Same atomicity; streams with two bundles' outputs in
// memory, one being decoded while the other is checked against its checksum and written.
error decompress_file(const std::filesystem::path& input, const std::filesystem::path& output,
                      const decompress_options& options = {});

// Decodes every bundle of `compressed` and compares it with `original` bit for bit, after
// checking every checksum. The first difference is reported with its tensor and offset.
error verify_file(const std::filesystem::path& original, const std::filesystem::path& compressed,
                  const decompress_options& options = {});

// Sharded checkpoints and model directories: every *.safetensors file becomes a *.fzip file of
// the same stem; model.safetensors.index.json (validated against the shards) and every other
// regular file are copied verbatim. Decompression does the reverse. The output directory is
// built under a temporary name and renamed into place when complete. With `replace_existing`, an
// existing output directory is replaced only when it holds nothing but regular files of the names
// this conversion writes; no output may contain or lie inside the input.
result<container_totals> compress_directory(const std::filesystem::path& input,
                                            const std::filesystem::path& output,
                                            const compress_options& options = {},
                                            bool replace_existing = false);
error decompress_directory(const std::filesystem::path& input, const std::filesystem::path& output,
                           const decompress_options& options = {}, bool replace_existing = false);
error verify_directory(const std::filesystem::path& original,
                       const std::filesystem::path& compressed,
                       const decompress_options& options = {});

// Checks that the shard index of a model directory (when present) agrees with the shards'
// headers: every shard it names exists, the tensors of the shards are exactly those of its
// weight_map, each in the shard the map names, and no other safetensors (or .fzip) file of the
// directory holds a tensor of the same name (a loader could take either).
error validate_shard_index(const std::filesystem::path& directory);

}  // namespace floatzip

// Definitions: the format and the reader first, then the conversions built on them.
#include "floatzip/detail/container_format.inl"
//
#include "floatzip/detail/decompress_pipeline.inl"
//
#include "floatzip/detail/container_convert.inl"
