// floatzip internals: decompress_values, decoding into memory of its own (see decoder.hpp).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "floatzip/detail/parallel.hpp"

namespace floatzip {
namespace detail {

// How decompress_values (and container_reader::read_tensor's scratch) get their pages: 2 MiB
// pages while they are cheap, 4 KiB ones while they are not (detail/page_memory.hpp). Measured on
// the 2-vCPU VM of bench/RESULTS.md (issue 14): 2 MiB pages fault in at 12-24 GB/s per thread
// when the memory was freed just before and at 0.3-0.6 GB/s when it was free for seconds (the
// host took it back); 4 KiB pages at about 3 GB/s per thread either way.
inline constexpr page_policy kValuesPagePolicy = page_policy::adaptive;

// Faults in `memory` for writing, in 2 MiB slices spread over `threads` threads, before the
// decoder writes it (populate_parallel and adaptive). Under adaptive, each huge page is timed: a
// slow one turns the rest of the buffer to 4 KiB pages and tells the process's gauge. The timer
// is the faulting thread's CPU clock, so that a thread descheduled mid-fault (the machine busy
// with other work) does not count as a slow page.
inline void fault_in(const page_memory& memory, unsigned threads, page_policy policy) {
  const std::size_t bytes = memory.size();
  const std::size_t slices = (bytes + kHugePageBytes - 1) / kHugePageBytes;
  const std::size_t huge_slices =
      policy == page_policy::adaptive ? memory.huge_bytes() / kHugePageBytes : 0;
  std::atomic<bool> small{huge_slices == 0};
  parallel_for(slices, threads, [&](std::size_t i) {
    if (i >= huge_slices || small.load(std::memory_order_relaxed)) {
      memory.populate(i * kHugePageBytes, kHugePageBytes);
      return;
    }
    const double t0 = thread_cpu_seconds();
    memory.populate(i * kHugePageBytes, kHugePageBytes);
    const double seconds = thread_cpu_seconds() - t0;
    if (huge_page_gauge::process().record(seconds) && !small.exchange(true)) {
      memory.prefer_small_pages();
    }
  });
}

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
  if (policy == page_policy::populate_parallel || policy == page_policy::adaptive) {
    // The decoding threads' share of the faults, taken in bulk before they decode.
    fault_in(buffer.memory_, resolve_threads(options.threads), policy);
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
