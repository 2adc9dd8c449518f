// floatzip internals: decompress_values, decoding into memory of its own (see decoder.hpp).
#pragma once

#include <cstdint>
#include <string>

#include "floatzip/detail/parallel.hpp"

namespace floatzip {
namespace detail {

// How decompress_values (and container_reader::read_tensor's scratch) get their pages.
// Measured (bench/RESULTS.md, issue 14): see there for the policies' figures on this machine.
inline constexpr page_policy kValuesPagePolicy = page_policy::populate;

// `policy` picks how the output's pages are obtained (detail/page_memory.hpp); the benchmark
// compares them, decompress_values uses the measured best.
inline result<value_buffer> decompress_values(const bundle_view& bundle,
                                              const decode_options& options, page_policy policy) {
  const std::uint64_t count = bundle.value_count();
  if (count > SIZE_MAX / sizeof(std::uint16_t)) {
    return error{errc::too_large,
                 "decompress: " + std::to_string(count) + " values do not fit in memory"};
  }
  auto memory =
      page_memory::allocate(static_cast<std::size_t>(count) * sizeof(std::uint16_t), policy);
  if (!memory) return memory.error();
  value_buffer buffer;
  buffer.memory_ = std::move(*memory);
  buffer.count_ = static_cast<std::size_t>(count);
  if (policy == page_policy::populate_parallel) {
    // The decoding threads' share of the faults, taken in bulk before they decode.
    const std::size_t bytes = buffer.memory_.size();
    const std::size_t slices = (bytes + kHugePageBytes - 1) / kHugePageBytes;
    parallel_for(slices, resolve_threads(options.threads), [&](std::size_t i) {
      buffer.memory_.populate(i * kHugePageBytes, kHugePageBytes);
    });
  }
  if (error e = decompress(bundle, buffer.values(), options)) return e;
  return buffer;
}

}  // namespace detail

inline result<value_buffer> decompress_values(const bundle_view& bundle,
                                              const decode_options& options) {
  return detail::decompress_values(bundle, options, detail::kValuesPagePolicy);
}

}  // namespace floatzip
