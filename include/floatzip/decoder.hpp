// floatzip: decompressing a bundle on the CPU.
//
//   auto view = floatzip::parse_bundle(bytes).value();      // validates every field
//   std::vector<std::uint16_t> out(view.value_count());
//   if (auto err = floatzip::decompress(view, out)) { /* err.code, err.message */ }
//   // tensor i is out[view.tensor_offset(i) .. + view.tensor_value_count(i))
//
// Bundles of every value format (value_format.hpp) decode through the same functions: into a
// span of bytes (any format), or into a span whose elements have the width of the bundle's values
// (uint16_t for bf16 and fp16, uint32_t for fp32 and bf16_in_fp32, uint8_t for the FP8 formats).
//
// decompress() never throws on bad data and never reads or writes outside the bundle's bytes or
// `out`: corrupt codewords are reported as errc::bad_data naming the sync group.
#pragma once

#include <cstdint>
#include <span>
#include <utility>

#include "floatzip/bundle_format.hpp"
#include "floatzip/detail/page_memory.hpp"
#include "floatzip/error.hpp"
#include "floatzip/value_format.hpp"

namespace floatzip {

struct decode_options;
class value_buffer;
namespace detail {
result<value_buffer> decompress_values(const bundle_view& bundle, const decode_options& options,
                                       page_policy policy);
}  // namespace detail

struct decode_options {
  // Decoder threads; 0 = all cores. Small bundles use one thread whatever is asked.
  unsigned threads = 0;
};

// Writes the bundle's value_count() values to out[0 .. value_count()), little-endian. Allocates
// nothing on the heap except the worker threads' stacks.
// Stack: about 390 KiB on the calling thread (decode tables and the table builder's scratch,
// sized for 15-bit codes; exponent buffers), 64 KiB on each worker.
//   errc::invalid_argument    the span's elements are not as wide as the bundle's values (a
//                             uint16_t span for an fp32 bundle); the message names both
//   errc::insufficient_space  out is smaller than value_count() (the span of bytes: than
//                             value_count() * value_bytes(bundle.format()))
//   errc::bad_data            the exponent stream does not decode to exactly the declared values
error decompress(const bundle_view& bundle, std::span<std::uint16_t> out,  // bf16, fp16
                 const decode_options& options = {});
error decompress(const bundle_view& bundle, std::span<std::uint32_t> out,  // fp32, bf16_in_fp32
                 const decode_options& options = {});
error decompress(const bundle_view& bundle, std::span<std::uint8_t> out,  // fp8_e4m3, fp8_e5m2
                 const decode_options& options = {});
error decompress(const bundle_view& bundle, std::span<std::byte> out,  // any format, any alignment
                 const decode_options& options = {});

// Decoded values in memory of their own (an anonymous mapping, freed with the buffer).
class value_buffer {
 public:
  value_buffer() = default;
  value_buffer(value_buffer&& other) noexcept
      : memory_(std::move(other.memory_)),
        count_(std::exchange(other.count_, 0)),
        format_(other.format_) {}
  value_buffer& operator=(value_buffer&& other) noexcept {
    memory_ = std::move(other.memory_);
    count_ = std::exchange(other.count_, 0);
    format_ = other.format_;
    return *this;
  }
  // The values of a 16-bit format (bf16, fp16); empty for the others (use bytes()).
  [[nodiscard]] std::span<std::uint16_t> values() const noexcept {
    if (value_bytes(format_) != sizeof(std::uint16_t)) return {};
    return {reinterpret_cast<std::uint16_t*>(memory_.data()), count_};
  }
  // The values of any format as little-endian bytes: size() * value_bytes(format()).
  [[nodiscard]] std::span<std::byte> bytes() const noexcept {
    return {memory_.data(), count_ * value_bytes(format_)};
  }
  [[nodiscard]] value_format format() const noexcept { return format_; }
  // Values (not bytes).
  [[nodiscard]] std::size_t size() const noexcept { return count_; }

 private:
  friend result<value_buffer> detail::decompress_values(const bundle_view&, const decode_options&,
                                                        detail::page_policy);
  detail::page_memory memory_;
  std::size_t count_ = 0;
  value_format format_ = value_format::bf16;
};

// decompress() into memory it allocates: what a caller without a buffer of its own should use.
// The output is an anonymous mapping that the decoding threads fault in, in 2 MiB slices, before
// they decode, instead of a vector zeroed page by page on the calling thread: faulting fresh pages
// is most of the time of `std::vector<std::uint16_t> out(n); decompress(bundle, out);`. It asks
// for 2 MiB pages (transparent huge pages, where the kernel grants them) while they fault in
// fast, and for 4 KiB pages while they do not (on VMs whose host takes back free memory, a huge
// page can cost 5-10x its 512 small pages: detail/page_memory.hpp, detail/decode_values.inl).
//   errc::too_large  the system refuses the memory
//   errc::bad_data   as decompress()
result<value_buffer> decompress_values(const bundle_view& bundle,
                                       const decode_options& options = {});

}  // namespace floatzip

#include "floatzip/detail/decoder.inl"
//
#include "floatzip/detail/decode_values.inl"
