// floatzip: decompressing a bundle on the CPU.
//
//   auto view = floatzip::parse_bundle(bytes).value();      // validates every field
//   std::vector<std::uint16_t> out(view.value_count());
//   if (auto err = floatzip::decompress(view, out)) { /* err.code, err.message */ }
//   // tensor i is out[view.tensor_offset(i) .. + view.tensor_value_count(i))
//
// decompress() never throws on bad data and never reads or writes outside the bundle's bytes or
// `out`: corrupt codewords are reported as errc::bad_data naming the sync group.
#pragma once

#include <cstdint>
#include <span>

#include "floatzip/bundle_format.hpp"
#include "floatzip/error.hpp"

namespace floatzip {

struct decode_options {
  // Decoder threads; 0 = all cores. Small bundles use one thread whatever is asked.
  unsigned threads = 0;
};

// Writes the bundle's value_count() BF16 values to out[0 .. value_count()). Allocates nothing on
// the heap except the worker threads' stacks.
// Stack: about 260 KiB on the calling thread (decode tables sized for 15-bit codes, exponent
// buffers), 64 KiB on each worker.
//   errc::insufficient_space  out is smaller than value_count()
//   errc::bad_data            the exponent stream does not decode to exactly the declared values
error decompress(const bundle_view& bundle, std::span<std::uint16_t> out,
                 const decode_options& options = {});

}  // namespace floatzip

#include "floatzip/detail/decoder.inl"
