// floatzip: decompressing bundles on an NVIDIA GPU.
//
//   auto host = floatzip::parse_bundle(bytes).value();            // validates every field
//   auto bundle = floatzip::device_bundle::upload(host, stream).value();   // once
//   ...
//   // before the transformer block runs, on the engine's stream: one kernel launch per code
//   // segment of the bundle (see bundle_format.hpp; most bundles have one or a few)
//   if (auto err = floatzip::decompress(bundle, weights, capacity, stream)) { ... }
//   // tensor i is weights[bundle.tensor_offset(i) .. + bundle.tensor_value_count(i))
//
// Every value format decodes on the GPU (value_format.hpp; the kernel is instantiated per
// format): the output is an array of the format's values, std::uint16_t for BF16 and FP16,
// std::uint32_t for FP32 and BF16-in-FP32, std::uint8_t for FP8 (a pointer of another width is
// errc::invalid_argument naming both), or std::byte with its size in bytes for any format.
//
// This header is plain C++: it declares the functions that floatzip::cuda (cuda/*.cu) defines and
// includes no CUDA header, so code that never calls them builds without the toolkit. A
// `gpu_stream` is a `cudaStream_t` (both are `CUstream_st*`); nullptr is the default stream.
//
// decompress() allocates nothing, never synchronises the host and is a kernel launch per segment
// (a device_bundle_view is one segment), so it may be captured in a CUDA graph. What it cannot
// check before the launch - the codewords of the exponent stream - the kernel checks per sync
// group: a group whose codewords disagree with its metadata is not written, and the first such
// group is recorded in a status word of the bundle that check_decode_status() reads back (that call
// does synchronise).
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "floatzip/bundle_format.hpp"
#include "floatzip/error.hpp"
#include "floatzip/huffman.hpp"
#include "floatzip/value_format.hpp"

struct CUstream_st;

namespace floatzip {

using gpu_stream = CUstream_st*;

// What the decode kernel receives, by value: a bundle's sections as device pointers plus the
// header fields they are read with. Trivially copyable; it owns nothing. Obtain one from
// device_bundle::view(). (The CPU executor, cpu_executor.hpp, builds the same struct over host
// memory.) The header fields are validated on the host before every launch; what the pointers
// point to is checked by the kernel as far as it is used, so a corrupt group is reported, never
// read or written out of bounds. The decode tables must be the ones floatzip builds for this
// bundle (every entry one or more codewords of 1..table_bits bits in all).
struct device_bundle_view {
  // The values' format: which kernel decodes the view and how wide its output values are.
  value_format format = value_format::bf16;
  const std::uint8_t* exponent_stream = nullptr;  // the symbol stream section, padding included
  // One raw byte per value (the sign/mantissa byte of BF16), section padding included; null for
  // formats without one (FP8).
  const std::uint8_t* raw_bytes = nullptr;
  // One low half per value (FP32 only; null for every other format).
  const std::uint16_t* low_halves = nullptr;
  const std::uint8_t* chunk_gaps = nullptr;        // 4 bits per chunk
  const std::uint64_t* group_positions = nullptr;  // first value of each sync group
  // The kernel's decode tables (detail::build_kernel_tables): for 12-bit tables the multi-symbol
  // table then the single-symbol one (huffman.hpp's entries), for 15-bit tables the latter alone.
  const std::uint32_t* decode_tables = nullptr;
  // First fault the kernel found, (group << 8) | kind; all ones when none. May be null: faults
  // then leave their group unwritten without a record.
  unsigned long long* status = nullptr;

  std::uint64_t value_count = 0;
  std::uint64_t stream_bits = 0;
  std::uint64_t chunk_count = 0;
  std::uint64_t group_count = 0;
  std::uint64_t max_group_values = 0;  // sizes the shared-memory staging; not trusted for bounds
  std::uint32_t chunk_bits = 0;
  std::uint32_t chunks_per_group = 0;
  int max_code_length = 0;
  int table_bits = 0;  // the decode table's index width, >= max_code_length
  // The CUDA device whose memory the pointers lie in (set by device_bundle::upload): decompress()
  // refuses to launch on another current device. -1: not checked (a view over host memory, or one
  // the caller assembled).
  int device = -1;
};

struct gpu_decode_options {
  // Shared memory for staging decoded exponents before the wide stores, per thread block. 0 picks
  // the largest sync group's size, as long as two blocks still fit a multiprocessor (else the
  // largest that does, in equal tiles). Smaller values make a block stage its sync group in
  // several tiles; rounded down to a multiple of 8 bytes.
  std::uint32_t stage_bytes = 0;
};

// The decode table widths the kernel is compiled for: bundles whose max_code_length is at most
// kGpuTableBitsSmall use 24 KiB of tables (a multi-symbol and a single-symbol one), longer codes
// (up to kMaxCodeLength) a 64 KiB single-symbol table.
inline constexpr int kGpuTableBitsSmall = 12;
inline constexpr int kGpuTableBitsLarge = 15;
// Threads per block of the decode kernel. A block decodes one sync group; a bundle with more than
// this many chunks per group gives each thread several consecutive chunks, one with fewer leaves
// threads idle during decoding. Any chunks_per_group is accepted; 256 (the encoder's default)
// gives one chunk per thread.
inline constexpr unsigned kGpuThreadsPerBlock = 256;

// A bundle staged in device memory that the caller owns, for example one buffer that every bundle
// of a model passes through in turn on one stream (stream order then keeps a bundle's launches
// before the next bundle's copy). Owns nothing: the views point into the caller's buffer, which
// must hold the staged bytes until every launch over them has run.
struct staged_bundle {
  value_format format = value_format::bf16;         // of every segment: the output's values
  std::vector<device_bundle_view> segment_views;    // one per segment (most bundles have one)
  std::vector<std::uint64_t> segment_first_values;  // each segment's first value in the output
  std::uint64_t value_count = 0;                    // all segments together
};

// Device bytes stage_bundle needs for `bundle`: its serialized bytes, then each segment's decode
// tables, each part 256-byte aligned.
std::uint64_t staging_bytes(const bundle_view& bundle);

// Copies the bundle and its decode tables (built here, on the host) into
// device_memory[0 .. staging_bytes(bundle)) on `stream`, on the current device, and returns the
// views to launch with (and the bundle's value format, which decompress() checks the output
// against). `status` is one word of device memory that receives the kernel's first
// fault record (the caller sets it to all ones beforehand), or null. Copies from pageable memory
// have taken their source when the call returns; from pinned memory the bytes must stay unchanged
// until the stream has passed the copy. Errors: errc::insufficient_space (capacity too small),
// errc::invalid_argument (device_memory not 256-byte aligned, or a geometry the kernel does not
// support, named in the message), errc::bad_data (a code the kernel's tables cannot hold),
// errc::cuda_error.
result<staged_bundle> stage_bundle(const bundle_view& bundle, void* device_memory,
                                   std::uint64_t capacity, unsigned long long* status,
                                   gpu_stream stream = nullptr);

// A bundle uploaded to device memory: its serialized bytes (so the sections are usable as they
// are), its decode table and its status word, in one allocation. Move-only; the destructor frees
// the memory (cudaFree, which waits for work still using it).
class device_bundle {
 public:
  device_bundle() = default;
  device_bundle(device_bundle&& other) noexcept;
  device_bundle& operator=(device_bundle&& other) noexcept;
  device_bundle(const device_bundle&) = delete;
  device_bundle& operator=(const device_bundle&) = delete;
  ~device_bundle();

  // Allocates device memory on the current device and copies the bundle into it on `stream`. When
  // bundle.bytes() lie in pinned (page-locked) host memory the copy is asynchronous: the bytes
  // must stay unchanged until the stream has passed it. From pageable memory the call returns
  // once the bytes have been taken. Errors: errc::too_large (device memory exhausted),
  // errc::cuda_error (another CUDA failure), errc::invalid_argument (a geometry the kernel does
  // not support, e.g. chunks_per_group * chunk_bits >= 2^31; named in the message).
  static result<device_bundle> upload(const bundle_view& bundle, gpu_stream stream = nullptr);

  // The view of the first segment: of the whole bundle when it has one segment (the encoder's
  // choice; see bundle_format.hpp). decompress(const device_bundle&, ...) decodes every segment.
  [[nodiscard]] const device_bundle_view& view() const noexcept { return view_; }
  // One view per segment, and the index of each segment's first value in the output.
  [[nodiscard]] std::span<const device_bundle_view> segment_views() const noexcept {
    return segment_views_;
  }
  [[nodiscard]] std::span<const std::uint64_t> segment_first_values() const noexcept {
    return segment_first_;
  }
  [[nodiscard]] std::uint64_t value_count() const noexcept { return tensor_offsets_.back(); }
  // The values' format (every segment's): what decompress() writes.
  [[nodiscard]] value_format format() const noexcept { return format_; }
  [[nodiscard]] std::uint32_t tensor_count() const noexcept {
    return static_cast<std::uint32_t>(tensor_offsets_.size() - 1);
  }
  // Index of tensor i's first value in the decoded output. Precondition: i < tensor_count().
  [[nodiscard]] std::uint64_t tensor_offset(std::uint32_t i) const noexcept {
    return tensor_offsets_[i];
  }
  [[nodiscard]] std::uint64_t tensor_value_count(std::uint32_t i) const noexcept {
    return tensor_offsets_[i + 1] - tensor_offsets_[i];
  }
  // Device memory held, in bytes.
  [[nodiscard]] std::uint64_t device_bytes() const noexcept { return device_bytes_; }

  // Waits for `stream`, then reports the first corrupt sync group any decompress of this bundle
  // found since the upload or the last reset: errc::bad_data naming the group, or ok.
  [[nodiscard]] error check_decode_status(gpu_stream stream = nullptr) const;
  // Clears the status word (asynchronously, on `stream`).
  error reset_decode_status(gpu_stream stream = nullptr);

 private:
  void* device_memory_ = nullptr;
  std::uint64_t device_bytes_ = 0;
  value_format format_ = value_format::bf16;
  device_bundle_view view_{};
  std::vector<device_bundle_view> segment_views_;
  std::vector<std::uint64_t> segment_first_;
  std::vector<std::uint64_t> tensor_offsets_{0};  // tensor_count + 1 prefix sums
};

// Writes every value of the bundle to out[0 .. view.value_count) with one kernel launch on
// `stream`. `out` is device memory of out_bytes bytes, holding values of the view's format
// (value_bytes(view.format) bytes each) and aligned to their width (16-byte alignment gives the
// widest stores but is not required). Allocates nothing, does not synchronise, may be captured in
// a CUDA graph. Returns, before launching anything:
//   errc::insufficient_space  out_bytes < view.value_count * value_bytes(view.format)
//   errc::invalid_argument    a null or misaligned pointer, inconsistent header fields, planes
//                             that do not match the format, a geometry the kernel does not
//                             support (named in the message), or a current device other than
//                             the one the bundle was uploaded to
//   errc::cuda_error          an earlier CUDA call on this thread had failed and left its error
//                             pending (named as such, and cleared; nothing is launched)
// and after the launch errc::cuda_error if the launch itself failed. Corrupt symbol streams are
// reported through device_bundle::check_decode_status().
error decompress(const device_bundle_view& view, std::byte* out, std::uint64_t out_bytes,
                 gpu_stream stream, const gpu_decode_options& options = {});

namespace detail {

// The typed outputs: one value of the format per element.
template <class T>
concept gpu_output_value = std::same_as<T, std::uint8_t> || std::same_as<T, std::uint16_t> ||
    std::same_as<T, std::uint32_t>;

// A format whose values are not `width` bytes wide: errc::invalid_argument naming both.
inline error check_output_width(value_format f, std::size_t width, const char* where) {
  if (is_known(f) && value_bytes(f) == width) return {};
  return {errc::invalid_argument,
          std::string(where) + ": the bundle holds " +
              (is_known(f) ? std::string(to_string(f)) + " values (" +
                                 std::to_string(value_bytes(f)) + " bytes each)"
                           : "values of unknown format " + std::to_string(static_cast<int>(f))) +
              ", the output is an array of " + std::to_string(width) + "-byte values"};
}

// count * width, saturated (a capacity in values to one in bytes).
inline std::uint64_t capacity_bytes(std::uint64_t count, std::size_t width) {
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
  return count > kMax / width ? kMax : count * width;
}

// Every segment's launch, each into its part of out (out_bytes bytes).
inline error decompress_segments(std::span<const device_bundle_view> views,
                                 std::span<const std::uint64_t> first, std::uint64_t value_count,
                                 value_format format, std::byte* out, std::uint64_t out_bytes,
                                 gpu_stream stream, const gpu_decode_options& options) {
  if (!is_known(format)) {
    return {errc::invalid_argument,
            "gpu decompress: unknown value format " + std::to_string(static_cast<int>(format))};
  }
  const std::uint64_t width = value_bytes(format);
  if (out_bytes / width < value_count)
    return {errc::insufficient_space, "gpu decompress: output holds " + std::to_string(out_bytes) +
                                          " bytes, the bundle has " + std::to_string(value_count) +
                                          " " + std::string(to_string(format)) + " values (" +
                                          std::to_string(value_count * width) + " bytes)"};
  for (std::size_t s = 0; s < views.size(); ++s) {
    if (views[s].value_count == 0) continue;
    if (error e = floatzip::decompress(views[s], out + first[s] * width,
                                       out_bytes - first[s] * width, stream, options))
      return e;
  }
  return {};
}

}  // namespace detail

// The same into an array of out_capacity values of the view's width: std::uint16_t for BF16 and
// FP16, std::uint32_t for FP32 and BF16-in-FP32, std::uint8_t for FP8.
template <detail::gpu_output_value T>
error decompress(const device_bundle_view& view, T* out, std::uint64_t out_capacity,
                 gpu_stream stream, const gpu_decode_options& options = {}) {
  if (error e = detail::check_output_width(view.format, sizeof(T), "gpu decompress")) return e;
  return decompress(view, reinterpret_cast<std::byte*>(out),
                    detail::capacity_bytes(out_capacity, sizeof(T)), stream, options);
}

// Every segment of the bundle: one launch per segment (most bundles have one). out_bytes bytes of
// output, or out_capacity values of the format's width.
inline error decompress(const device_bundle& bundle, std::byte* out, std::uint64_t out_bytes,
                        gpu_stream stream, const gpu_decode_options& options = {}) {
  return detail::decompress_segments(bundle.segment_views(), bundle.segment_first_values(),
                                     bundle.value_count(), bundle.format(), out, out_bytes, stream,
                                     options);
}
template <detail::gpu_output_value T>
error decompress(const device_bundle& bundle, T* out, std::uint64_t out_capacity, gpu_stream stream,
                 const gpu_decode_options& options = {}) {
  if (error e = detail::check_output_width(bundle.format(), sizeof(T), "gpu decompress")) return e;
  return decompress(bundle, reinterpret_cast<std::byte*>(out),
                    detail::capacity_bytes(out_capacity, sizeof(T)), stream, options);
}

// A staged bundle's segments, as above.
inline error decompress(const staged_bundle& bundle, std::byte* out, std::uint64_t out_bytes,
                        gpu_stream stream, const gpu_decode_options& options = {}) {
  return detail::decompress_segments(bundle.segment_views, bundle.segment_first_values,
                                     bundle.value_count, bundle.format, out, out_bytes, stream,
                                     options);
}
template <detail::gpu_output_value T>
error decompress(const staged_bundle& bundle, T* out, std::uint64_t out_capacity, gpu_stream stream,
                 const gpu_decode_options& options = {}) {
  if (error e = detail::check_output_width(bundle.format, sizeof(T), "gpu decompress")) return e;
  return decompress(bundle, reinterpret_cast<std::byte*>(out),
                    detail::capacity_bytes(out_capacity, sizeof(T)), stream, options);
}

// Number of CUDA devices; 0 when there is no device or no usable driver.
int device_count() noexcept;
inline bool gpu_available() noexcept { return device_count() > 0; }

}  // namespace floatzip
