// floatzip: compressing a bundle of tensors of one value format on the CPU.
//
//   std::vector<std::uint16_t> q = ..., k = ...;           // BF16 bit patterns
//   std::span<const std::uint16_t> tensors[] = {q, k};
//   std::vector<std::byte> bundle = floatzip::compress_bundle(tensors);
//
// Any format (value_format.hpp), each tensor given as its values' little-endian bytes:
//
//   std::span<const std::byte> fp16_tensors[] = {std::as_bytes(std::span(q))};
//   auto bundle = floatzip::compress_bundle(floatzip::value_format::fp16, fp16_tensors);
//
// The result is a serialized bundle (see bundle_format.hpp) that parse_bundle() accepts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "floatzip/bundle_format.hpp"
#include "floatzip/error.hpp"
#include "floatzip/huffman.hpp"
#include "floatzip/value_format.hpp"

namespace floatzip {

struct encode_options {
  // Longest codeword, 1..kMaxCodeLength. Decoders index a flat table by this many bits; 12 keeps
  // the table at 8 KiB (GPU shared memory) and costs < 0.001 bits/value on trained weights.
  int max_code_length = 12;
  // Chunk size of the exponent stream: one GPU thread's share. Metadata costs 4 bits per chunk.
  std::uint32_t chunk_bytes = 64;
  // Chunks per sync group (one GPU thread block). Metadata costs 64 bits per group.
  std::uint32_t chunks_per_group = 256;
  // Encoder threads; 0 = all cores.
  unsigned threads = 0;
  // Let the encoder cut the bundle into segments (runs of whole tensors), each with a code of its
  // own, wherever that makes the bundle smaller (see bundle_format.hpp). Off: one code for all.
  bool adaptive_codes = true;
};

// Checks the options against the format's bounds; errc::invalid_argument names the bad field.
error validate(const encode_options& options);

// Compresses the tensors, in order, into one bundle of BF16 values. Any values are accepted (all
// 65,536 BF16 patterns round-trip bit-exactly). Throws floatzip::exception (errc::invalid_argument)
// for invalid options or too many values, and std::bad_alloc when memory runs out.
std::vector<std::byte> compress_bundle(std::span<const std::span<const std::uint16_t>> tensors,
                                       const encode_options& options = {});

// The same for values of any format: each tensor is its values' little-endian bytes (no
// alignment needed). Every bit pattern round-trips, NaN payloads included. Throws
// floatzip::exception (errc::invalid_argument) also for an unknown format, a tensor whose size
// is not a multiple of value_bytes(format), for bf16_in_fp32, a value whose low 16 bits are
// not zero (check with low_halves_zero first, or use fp32), and for bf16_in_fp16, a value that is
// not a BF16 value (check with fp16_values_are_bf16 first, or use fp16).
std::vector<std::byte> compress_bundle(value_format format,
                                       std::span<const std::span<const std::byte>> tensors,
                                       const encode_options& options = {});

// The two passes of compress_bundle, for callers who own the output memory (a buffer reused for
// every bundle of a model, a memory-mapped file):
//
//   const auto plan = floatzip::make_encode_plan(tensors, options);   // pass 1: histogram, code
//   buffer.resize(plan.encoded_size());
//   floatzip::encode_bundle(plan, buffer);                             // pass 2: writes it all
//
// The plan refers to the tensors' values: keep them alive and unchanged until encode_bundle
// returns.
namespace detail {
// One segment of a planned bundle: tensors [tensor_begin, tensor_end) under one code.
struct segment_plan {
  std::uint32_t tensor_begin = 0;
  std::uint32_t tensor_end = 0;
  std::uint64_t value_count = 0;
  std::uint64_t stream_bits = 0;
  code_lengths lengths{};
  unsigned first_symbol = 0;
  unsigned symbol_span = 1;
  std::vector<std::uint64_t> part_value_begin;  // parts: runs of values encoded in parallel
  std::vector<std::uint64_t> part_first_bit;
  bundle_layout layout;
};
}  // namespace detail

class encode_plan {
 public:
  [[nodiscard]] value_format format() const noexcept { return header_.format; }
  [[nodiscard]] std::uint64_t encoded_size() const noexcept { return header_.total_bytes; }
  [[nodiscard]] const bundle_header& header() const noexcept { return header_; }
  // Of the symbols (value_format.hpp; the exponents, for BF16) of all values.
  [[nodiscard]] const symbol_histogram& histogram() const noexcept { return histogram_; }
  // The code of the first segment (of the only one when adaptive_codes is off).
  [[nodiscard]] const code_lengths& code() const noexcept { return segments_.front().lengths; }
  [[nodiscard]] std::span<const detail::segment_plan> segments() const noexcept {
    return segments_;
  }
  // Symbol bits under an unlimited Huffman code per tensor: the ideal a bundle is measured
  // against (no metadata, no length limit, a free code table for every tensor; the raw planes
  // add 8 bits per value, 24 for fp32, 0 for fp8).
  [[nodiscard]] std::uint64_t tensor_huffman_ideal_bits() const noexcept {
    return tensor_ideal_bits_;
  }

 private:
  friend encode_plan make_encode_plan(value_format, std::span<const std::span<const std::byte>>,
                                      const encode_options&);
  friend error encode_bundle(const encode_plan&, std::span<std::byte>);

  std::vector<std::span<const std::byte>> tensors_;  // each: whole values of header_.format
  unsigned threads_ = 1;
  symbol_histogram histogram_{};
  std::vector<detail::segment_plan> segments_;
  std::uint64_t tensor_ideal_bits_ = 0;
  bundle_header header_;
  bundle_layout layout_;
};

// Pass 1. Throws floatzip::exception (errc::invalid_argument) like compress_bundle.
encode_plan make_encode_plan(std::span<const std::span<const std::uint16_t>> tensors,
                             const encode_options& options = {});
encode_plan make_encode_plan(value_format format,
                             std::span<const std::span<const std::byte>> tensors,
                             const encode_options& options = {});

// Pass 2: writes exactly plan.encoded_size() bytes to the front of `out`, whatever `out` held.
//   errc::insufficient_space  out is smaller than plan.encoded_size()
error encode_bundle(const encode_plan& plan, std::span<std::byte> out);

// One tensor as a bundle of its own.
std::vector<std::byte> compress_bundle(std::span<const std::uint16_t> tensor,
                                       const encode_options& options = {});

// Histogram of the exponent bytes of the BF16 values (for statistics and reports).
symbol_histogram exponent_histogram(std::span<const std::uint16_t> values);

// Histogram of the coded symbols (format_traits<F>::symbol) of values of any format, given as
// their little-endian bytes; a trailing partial value is ignored. An unknown format counts nothing.
symbol_histogram symbol_histogram_of(value_format format, std::span<const std::byte> values);

// Whether every 4-byte little-endian FP32 value has its low 16 bits zero: whether the tensor may be
// coded as bf16_in_fp32. False for a size that is not a multiple of 4.
bool low_halves_zero(std::span<const std::byte> fp32_values) noexcept;

// Whether every 2-byte little-endian FP16 value is exactly a BF16 value (its mantissa bits below
// the top 8 significant ones are zero: F16 weights rounded from BF16): whether the tensor may be
// coded as bf16_in_fp16. False for an odd size.
bool fp16_values_are_bf16(std::span<const std::byte> fp16_values) noexcept;

}  // namespace floatzip

#include "floatzip/detail/encoder.inl"
