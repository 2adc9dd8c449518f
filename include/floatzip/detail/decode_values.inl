// floatzip internals: decompress_values, decoding into memory of its own (see decoder.hpp).
#pragma once

#include <cstdint>
#include <string>

#include "floatzip/detail/parallel.hpp"

namespace floatzip {
namespace detail {

// How decompress_values (and container_reader::read_tensor's scratch) get their pages. Measured
// on the 2-vCPU VM of bench/RESULTS.md (issue 14, 24 interleaved repetitions, fresh-buffer decode
// over the reused-buffer ceiling): 2 MiB pages 0.40 at 1 thread and 0.66 at 2, 4 KiB pages
// (first touch, MAP_POPULATE or MADV_POPULATE_WRITE) 0.39-0.44 at both. 2 MiB pages are
// bimodal there (0.12-0.75: the hypervisor backs memory the guest returned to it anew), while
// 4 KiB faults cost about 2 us each however many threads take them.
inline constexpr page_policy kValuesPagePolicy = page_policy::huge_pages;

// `policy` picks how the output's pages are obtained (detail/page_memory.hpp); the benchmark
// compares them, decompress_values uses the measured best.
inline result<value_buffer> decompress_values(const bundle_view& bundle,
                                              const decode_options& options, page_policy policy) {
  const std::uint64_t count = bundle.value_count();
  const std::size_t width = value_bytes(bundle.format());
  if (count > SIZE_MAX / width) {
    return error{errc::too_large,
                 "decompress: " + std::to_string(count) + " values do not fit in memory"};
  }
  auto memory = page_memory::allocate(static_cast<std::size_t>(count) * width, policy);
  if (!memory) return memory.error();
  value_buffer buffer;
  buffer.memory_ = std::move(*memory);
  buffer.count_ = static_cast<std::size_t>(count);
  buffer.format_ = bundle.format();
  if (policy == page_policy::populate_parallel) {
    // The decoding threads' share of the faults, taken in bulk before they decode.
    const std::size_t bytes = buffer.memory_.size();
    const std::size_t slices = (bytes + kHugePageBytes - 1) / kHugePageBytes;
    parallel_for(slices, resolve_threads(options.threads), [&](std::size_t i) {
      buffer.memory_.populate(i * kHugePageBytes, kHugePageBytes);
    });
  }
  if (error e = decompress(bundle, buffer.bytes(), options)) return e;
  return buffer;
}

}  // namespace detail

inline result<value_buffer> decompress_values(const bundle_view& bundle,
                                              const decode_options& options) {
  return detail::decompress_values(bundle, options, detail::kValuesPagePolicy);
}

}  // namespace floatzip
