// floatzip: compressing a bundle of BF16 tensors on the CPU.
//
//   std::vector<std::uint16_t> q = ..., k = ...;           // BF16 bit patterns
//   std::span<const std::uint16_t> tensors[] = {q, k};
//   std::vector<std::byte> bundle = floatzip::compress_bundle(tensors);
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
};

// Checks the options against the format's bounds; errc::invalid_argument names the bad field.
error validate(const encode_options& options);

// Compresses the tensors, in order, into one bundle. Any values are accepted (all 65,536 BF16
// patterns round-trip bit-exactly). Throws floatzip::exception (errc::invalid_argument) for
// invalid options or too many values, and std::bad_alloc when memory runs out.
std::vector<std::byte> compress_bundle(std::span<const std::span<const std::uint16_t>> tensors,
                                       const encode_options& options = {});

// One tensor as a bundle of its own.
std::vector<std::byte> compress_bundle(std::span<const std::uint16_t> tensor,
                                       const encode_options& options = {});

// Histogram of the exponent bytes of the values (for statistics and reports).
symbol_histogram exponent_histogram(std::span<const std::uint16_t> values);

}  // namespace floatzip

#include "floatzip/detail/encoder.inl"
