// floatzip: the GPU decode kernel's logic, run on the CPU.
//
// execute_kernel_on_cpu() decodes a bundle exactly as cuda/decode_kernel.cuh does - block by
// block, phase by phase, thread by thread, with the same per-thread functions
// (detail/kernel_logic.hpp), the same segment geometry, scan, checks, staging tiles and 16-byte
// store units - only sequentially and with host memory standing in for shared memory. It is how
// the kernel's logic is tested bit-exactly on machines without a GPU, and a reference for what
// the kernel writes when the data is corrupt (nothing, for a group that fails its checks). Like
// the GPU API (gpu.hpp) it decodes every value format, into an array of the format's values or
// into bytes.
//
// It is a test and debugging tool, not a fast decoder: use decompress() from decoder.hpp on CPUs.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "floatzip/bundle_format.hpp"
#include "floatzip/detail/kernel_logic.hpp"
#include "floatzip/error.hpp"
#include "floatzip/gpu.hpp"
#include "floatzip/value_format.hpp"

namespace floatzip {

struct cpu_executor_options {
  // Threads per simulated block; the kernel is compiled for kGpuThreadsPerBlock.
  unsigned threads_per_block = kGpuThreadsPerBlock;
  // Stage size per block, as gpu_decode_options::stage_bytes; 0 = the largest group in one tile.
  std::uint32_t stage_bytes = 0;
};

namespace detail {

// The exclusive prefix sum cub::BlockScan::ExclusiveSum computes, with its block aggregate.
// Unsigned 32-bit arithmetic as in the kernel (the sums cannot wrap: see kMaxGroupBits).
inline std::uint32_t exclusive_sum(const std::vector<std::uint32_t>& counts,
                                   std::vector<std::uint32_t>& firsts) {
  std::uint32_t running = 0;
  for (std::size_t t = 0; t < counts.size(); ++t) {
    firsts[t] = running;
    running += counts[t];
  }
  return running;
}

// What the executor tells an observer: each thread's probe (kernel_logic.hpp) and each barrier,
// named after the phase it ends. The kernel cost model observes a run to replay its warps in
// lockstep; execute_kernel_on_cpu observes nothing.
enum class executor_phase { walk, decode, flush, merge };

struct no_observer {
  [[nodiscard]] no_probe probe(unsigned /*thread*/) const { return {}; }
  void barrier(executor_phase /*phase*/, unsigned /*threads*/) {}
};

// Per-block "shared memory" and per-thread registers, reused from block to block.
struct executor_block_state {
  std::vector<std::uint32_t> tables;
  std::vector<std::uint8_t> stage;
  std::vector<thread_segment> segments;
  std::vector<segment_walk> walks;
  std::vector<std::uint32_t> counts;
  std::vector<std::uint32_t> firsts;
  std::vector<thread_output> outputs;
};

// One thread block: the kernel's body with each barrier-separated phase run for every thread.
template <value_format F, int TableBits, class Observer>
unsigned long long execute_block(const device_bundle_view& v,
                                 typename format_traits<F>::value_type* out,
                                 std::uint32_t out_shift, std::uint32_t stage_slots,
                                 unsigned threads, std::uint64_t group, executor_block_state& st,
                                 Observer& observer) {
  // The decode tables into shared memory.
  for (unsigned t = 0; t < threads; ++t) {
    copy_block_part(st.tables.data(), v.decode_tables, kernel_tables_bytes(TableBits), t, threads);
  }
  const kernel_tables<TableBits> tables(st.tables.data());
  // __syncthreads(); phase 1.
  for (unsigned t = 0; t < threads; ++t) {
    st.segments[t] = thread_segment_of(v, group, t, threads);
    st.walks[t] =
        walk_segment<TableBits>(v.exponent_stream, tables, st.segments[t], observer.probe(t));
    st.counts[t] = st.walks[t].count;
  }
  observer.barrier(executor_phase::walk, threads);
  // BlockScan; __syncthreads_and of the per-thread checks.
  const std::uint32_t total = exclusive_sum(st.counts, st.firsts);
  bool all_consistent = true;
  for (unsigned t = 0; t < threads; ++t) {
    all_consistent = all_consistent && segment_consistent(st.segments[t], st.walks[t]);
  }
  const group_values values = group_values_of(v, group);
  const kernel_fault fault = block_fault(values, total, all_consistent);
  if (fault != kernel_fault::none) return fault_record(group, fault);

  // Phase 2, tile by tile.
  const block_output<F> b = block_output_of<F>(out, out_shift, v, values);
  for (unsigned t = 0; t < threads; ++t) {
    st.outputs[t] =
        start_output(v.exponent_stream, st.segments[t], b.lead, st.firsts[t], st.counts[t]);
  }
  std::uint8_t poison = 0x5A;
  for (std::uint32_t tile = 0; tile < b.slot_end; tile += stage_slots) {
    // Stale bytes from the previous tile must never reach the output: make them visible.
    std::fill(st.stage.begin(), st.stage.end(), poison++);
    for (unsigned t = 0; t < threads; ++t) {
      decode_to_stage<TableBits>(st.outputs[t], tables, st.stage.data(), tile, tile + stage_slots,
                                 observer.probe(t));
    }
    observer.barrier(executor_phase::decode, threads);  // __syncthreads()
    for (unsigned t = 0; t < threads; ++t) {
      flush_stage_tail(st.outputs[t], st.stage.data(), tile, tile + stage_slots, observer.probe(t));
    }
    observer.barrier(executor_phase::flush, threads);  // __syncthreads()
    for (unsigned t = 0; t < threads; ++t) {
      merge_tile_part(b, st.stage.data(), tile, tile + stage_slots, t, threads, observer.probe(t));
    }
    observer.barrier(executor_phase::merge, threads);  // __syncthreads()
  }
  return kNoFault;
}

// The kernel of format F (v.format) over the whole view.
template <value_format F, int TableBits, class Observer = no_observer>
error execute_kernel(const device_bundle_view& v, typename format_traits<F>::value_type* out,
                     std::uint32_t stage_slots, unsigned threads, Observer&& observer = {}) {
  const auto out_shift = static_cast<std::uint32_t>(
      (reinterpret_cast<std::uintptr_t>(out) / value_bytes(F)) & (slots_per_store(F) - 1));
  executor_block_state st;
  st.tables.resize(kernel_tables_bytes(TableBits) / 4);
  st.stage.resize(stage_slots);
  st.segments.resize(threads);
  st.walks.resize(threads);
  st.counts.resize(threads);
  st.firsts.resize(threads);
  st.outputs.resize(threads);
  // Blocks run in order here, on the GPU in any order; they are independent. As on the GPU, a
  // faulty group is left unwritten, the others are decoded, and the lowest fault is recorded
  // (the kernel's atomicMin).
  unsigned long long first_fault = kNoFault;
  for (std::uint64_t g = 0; g < v.group_count; ++g) {
    const unsigned long long record =
        execute_block<F, TableBits>(v, out, out_shift, stage_slots, threads, g, st, observer);
    if (record < first_fault) first_fault = record;
  }
  if (first_fault == kNoFault) return {};
  if (v.status != nullptr && first_fault < *v.status) *v.status = first_fault;
  return describe_fault(first_fault);
}

}  // namespace detail

// Runs the kernel's logic over a view whose pointers are host memory, with the kernel's launch
// checks first (alignment rules included: `out` must be aligned to the format's value width and
// its address decides the store alignment, as on the GPU). out_bytes: the output's size. Like
// the kernel, decodes every group that passes its checks, leaves the others unwritten, and
// reports the lowest faulty group (errc::bad_data; also stored in view.status when that is lower
// than what it holds).
inline error execute_kernel_on_cpu(const device_bundle_view& view, std::byte* out,
                                   std::uint64_t out_bytes,
                                   const cpu_executor_options& options = {}) {
  if (error e = detail::validate_launch(view, out, out_bytes)) return e;
  if (view.value_count == 0) return {};
  if (options.threads_per_block < 1 || options.threads_per_block > 1024) {
    return {errc::invalid_argument, "cpu executor: threads_per_block not in [1, 1024]"};
  }
  const std::uint64_t max_stage =
      options.stage_bytes == 0 ? std::uint64_t{1} << 32 : options.stage_bytes;
  const std::uint32_t stage_slots = detail::stage_slots_for(view, max_stage);
  const unsigned threads = options.threads_per_block;
  return visit_format(view.format, [&]<value_format F>() -> error {
    auto* const values = reinterpret_cast<typename format_traits<F>::value_type*>(out);
    if (view.table_bits == kGpuTableBitsSmall) {
      return detail::execute_kernel<F, kGpuTableBitsSmall>(view, values, stage_slots, threads);
    }
    return detail::execute_kernel<F, kGpuTableBitsLarge>(view, values, stage_slots, threads);
  });
}

// The same into out_capacity values of the view's width (std::uint16_t for BF16 and FP16,
// std::uint32_t for FP32 and BF16-in-FP32, std::uint8_t for FP8; another width is
// errc::invalid_argument naming both).
template <detail::gpu_output_value T>
error execute_kernel_on_cpu(const device_bundle_view& view, T* out, std::uint64_t out_capacity,
                            const cpu_executor_options& options = {}) {
  if (error e = detail::check_output_width(view.format, sizeof(T), "cpu executor")) return e;
  return execute_kernel_on_cpu(view, reinterpret_cast<std::byte*>(out),
                               detail::capacity_bytes(out_capacity, sizeof(T)), options);
}

// Builds the kernel's decode table and view over the bundle's host bytes, then runs the kernel's
// logic into `out` (the values' bytes: at least value_count() * value_bytes(format()) of them).
// The bundle's bytes must be 16-byte aligned (as std::vector<std::byte> and memory maps are).
// A bundle of several segments runs the kernel once per segment, as the GPU does.
inline error execute_kernel_on_cpu(const bundle_view& bundle, std::span<std::byte> out,
                                   const cpu_executor_options& options = {}) {
  const value_format format = bundle.format();
  const std::uint64_t width = value_bytes(format);
  if (out.size() / width < bundle.value_count())
    return {errc::insufficient_space, "execute_kernel_on_cpu: output holds " +
                                          std::to_string(out.size()) + " bytes, the bundle has " +
                                          std::to_string(bundle.value_count()) + " " +
                                          std::string(to_string(format)) + " values"};
  return bundle.for_each_segment([&](const bundle_view& segment) -> error {
    const int table_bits = detail::gpu_table_bits(segment.max_code_length());
    auto table = detail::build_kernel_tables(segment, table_bits);
    if (!table) return table.error();
    unsigned long long status = detail::kNoFault;
    const device_bundle_view view = detail::make_device_bundle_view(
        segment, segment.bytes().data(), table->data(), table_bits, &status);
    const auto segment_out = out.subspan((segment.first_value() - bundle.first_value()) * width,
                                         segment.value_count() * width);
    if (error e = execute_kernel_on_cpu(view, segment_out.data(), segment_out.size(), options))
      return {e.code, "segment of values " + std::to_string(segment.first_value()) + " + " +
                          std::to_string(segment.value_count()) + ": " + e.message};
    return {};
  });
}

namespace detail {
template <class T>
error execute_bundle_typed(const bundle_view& bundle, std::span<T> out,
                           const cpu_executor_options& options) {
  if (error e = check_output_width(bundle.format(), sizeof(T), "execute_kernel_on_cpu")) return e;
  if (out.size() < bundle.value_count())
    return {errc::insufficient_space, "execute_kernel_on_cpu: output holds " +
                                          std::to_string(out.size()) + " values, the bundle has " +
                                          std::to_string(bundle.value_count())};
  return execute_kernel_on_cpu(bundle, std::as_writable_bytes(out), options);
}
}  // namespace detail

// The same into an array of the format's values: BF16 and FP16.
inline error execute_kernel_on_cpu(const bundle_view& bundle, std::span<std::uint16_t> out,
                                   const cpu_executor_options& options = {}) {
  return detail::execute_bundle_typed(bundle, out, options);
}
// FP32 and BF16-in-FP32.
inline error execute_kernel_on_cpu(const bundle_view& bundle, std::span<std::uint32_t> out,
                                   const cpu_executor_options& options = {}) {
  return detail::execute_bundle_typed(bundle, out, options);
}
// FP8 (E4M3 and E5M2).
inline error execute_kernel_on_cpu(const bundle_view& bundle, std::span<std::uint8_t> out,
                                   const cpu_executor_options& options = {}) {
  return detail::execute_bundle_typed(bundle, out, options);
}

}  // namespace floatzip
