// floatzip internals: MSB-first bit access to the exponent stream.
//
// The exponent stream is a sequence of canonical Huffman codewords written most-significant bit
// first into bytes, byte 0 first. Bit position p lives in byte p / 8 at bit 7 - p % 8. Reading a
// 64-bit big-endian word at byte p / 8 and shifting it left by p % 8 yields a window whose top 57
// bits or more are the stream from position p on.
//
// Padding rule (part of the format): the stream section holds ceil(stream_bits / 8) bytes of
// codewords followed by at least kStreamPaddingBytes bytes that belong to the section, so a window
// load starting at any byte that holds stream bits stays inside the section, and so does a load
// up to kStreamPaddingBytes - 8 bytes further on. Decoders may over-read by that much, never more.
#pragma once

#include <cstdint>
#include <cstring>

#include "floatzip/config.hpp"

namespace floatzip {

inline constexpr std::size_t kStreamPaddingBytes = 16;

namespace detail {

inline std::uint64_t load_be64(const std::uint8_t* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return __builtin_bswap64(v);
}

inline void store_be64(std::uint8_t* p, std::uint64_t v) noexcept {
  v = __builtin_bswap64(v);
  std::memcpy(p, &v, sizeof v);
}

// The next >= 57 stream bits from `bit_pos`, left-aligned.
inline std::uint64_t stream_window(const std::uint8_t* stream, std::uint64_t bit_pos) noexcept {
  return load_be64(stream + (bit_pos >> 3)) << (bit_pos & 7);
}

// Appends codewords MSB-first. The accumulator is left-aligned: its top `pending_bits` bits are
// the codewords not yet committed to memory. `flush` stores all eight accumulator bytes but only
// advances over the complete ones, so the partial byte is rewritten, completed, by the next flush.
// Precondition of `put_left_aligned`: pending_bits + length <= 63, which callers keep by flushing
// after at most floor(56 / max_code_length) codewords (a flush leaves at most 7 bits pending).
class bit_writer {
 public:
  bit_writer(std::uint8_t* out, unsigned leading_zero_bits) noexcept
      : out_(out), pending_bits_(leading_zero_bits) {}

  // `code_left` is the codeword shifted to the top of 64 bits, all lower bits zero.
  void put_left_aligned(std::uint64_t code_left, unsigned length) noexcept {
    acc_ |= code_left >> pending_bits_;
    pending_bits_ += length;
  }

  void flush() noexcept {
    store_be64(out_, acc_);
    const unsigned whole_bytes = pending_bits_ >> 3;
    out_ += whole_bytes;
    acc_ <<= whole_bytes * 8;  // whole_bytes <= 7 while the precondition holds
    pending_bits_ &= 7;
  }

  // Final flush; returns one past the last byte holding stream bits.
  std::uint8_t* finish() noexcept {
    flush();
    return out_ + (pending_bits_ != 0 ? 1 : 0);
  }

 private:
  std::uint8_t* out_;
  std::uint64_t acc_ = 0;
  unsigned pending_bits_;
};

}  // namespace detail
}  // namespace floatzip
