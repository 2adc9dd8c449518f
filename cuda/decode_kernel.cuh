// floatzip: the GPU decode kernel (one launch inflates one bundle) and its block primitive.
//
// Included only by CUDA translation units (cuda/floatzip_cuda.cu instantiates it). The per-thread
// work is in floatzip/detail/kernel_logic.hpp, shared with the CPU executor that tests it; this
// file adds what only a GPU has: the launch shape, shared memory, barriers and cub::BlockScan.
//
// Shared memory of one block (dynamic, sized at launch):
//
//   decode_shared:  the decode tables (24 KiB for 12-bit codes, 64 KiB for 15-bit ones)
//                   cub::BlockScan's temporary storage (at most kScanStorageBytes)
//   stage:          at kernel_fixed_shared_bytes(TableBits), a multiple of 128: stage_slots bytes
//   of decoded symbols, the block's output in tiles
#pragma once

#include <cstddef>
#include <cstdint>
#include <cub/block/block_scan.cuh>

#include "floatzip/detail/kernel_logic.hpp"
#include "floatzip/gpu.hpp"

namespace floatzip::detail {

// The decode tables of one thread block in shared memory (kernel_tables in kernel_logic.hpp: a
// multi-symbol and a single-symbol table for 12-bit codes, the single one for 15-bit codes),
// filled once per block from the bundle's copy in global memory (24 KiB that L2 serves to every
// block after the first).
template <int TableBits, int Threads>
class block_decode_table {
 public:
  static constexpr std::uint32_t kBytes = kernel_tables_bytes(TableBits);

  struct alignas(16) TempStorage {
    std::uint32_t words[kBytes / 4];
  };
  static_assert(sizeof(TempStorage) == kBytes, "the tables are exactly their entries");
  static_assert(kBytes % 16 == 0, "the cooperative load moves 16-byte words");

  __device__ explicit block_decode_table(TempStorage& storage) : storage_(storage) {}

  // Every thread of the block calls this; the caller synchronises before the first look-up.
  __device__ void load(const std::uint32_t* global_tables) {
    copy_block_part(storage_.words, global_tables, kBytes, threadIdx.x, Threads);
  }

  [[nodiscard]] __device__ kernel_tables<TableBits> tables() const {
    return kernel_tables<TableBits>(storage_.words);
  }

 private:
  TempStorage& storage_;
};

template <int TableBits, int Threads>
struct decode_shared {
  using table_type = block_decode_table<TableBits, Threads>;
  // Warp scans: 64 bytes of storage, where the default raking scan takes 1,184.
  using scan_type = cub::BlockScan<std::uint32_t, Threads, cub::BLOCK_SCAN_WARP_SCANS>;
  typename table_type::TempStorage table;
  typename scan_type::TempStorage scan;
};

// Offset of the stage in the block's dynamic shared memory (kernel_logic.hpp sizes it on the
// host, without CUDA headers).
template <int TableBits, int Threads>
inline constexpr std::uint32_t kStageOffset = kernel_fixed_shared_bytes(TableBits);
static_assert(sizeof(decode_shared<kGpuTableBitsSmall, kGpuThreadsPerBlock>) <=
                  kernel_fixed_shared_bytes(kGpuTableBitsSmall),
              "cub's scan storage outgrew kScanStorageBytes");
static_assert(sizeof(decode_shared<kGpuTableBitsLarge, kGpuThreadsPerBlock>) <=
                  kernel_fixed_shared_bytes(kGpuTableBitsLarge),
              "cub's scan storage outgrew kScanStorageBytes");

// One block per sync group, writing values of format F (instantiated per format by
// floatzip_cuda.cu; everything before the merge is the same code for all). See kernel_logic.hpp
// for the phases. Every barrier is reached by all
// threads: the fault decision is block-uniform (it follows the scan aggregate and
// __syncthreads_and), and the tile loop's bounds are block-uniform.
// Register budget: at least this many blocks per multiprocessor (64 registers a thread at 256
// threads). Without it ptxas aims for full occupancy on sm_80 and spills at 32 registers.
inline constexpr int kRegisterBudgetBlocks = 4;

template <value_format F, int TableBits, int Threads>
__global__ void __launch_bounds__(Threads, kRegisterBudgetBlocks)
    decode_bundle_kernel(const device_bundle_view v,
                         typename format_traits<F>::value_type* const out,
                         const std::uint32_t out_shift, const std::uint32_t stage_slots) {
  extern __shared__ uint4 shared_words[];
  using shared_type = decode_shared<TableBits, Threads>;
  auto& shared = *reinterpret_cast<shared_type*>(shared_words);
  std::uint8_t* const stage =
      reinterpret_cast<std::uint8_t*>(shared_words) + kStageOffset<TableBits, Threads>;
  const unsigned thread = threadIdx.x;
  const std::uint64_t group = blockIdx.x;

  typename shared_type::table_type table(shared.table);
  table.load(v.decode_tables);
  const thread_segment segment = thread_segment_of(v, group, thread, Threads);
  __syncthreads();

  // Phase 1: count; scan; check.
  const kernel_tables<TableBits> tables = table.tables();
  const segment_walk walk = walk_segment<TableBits>(v.exponent_stream, tables, segment);
  std::uint32_t first_value = 0;
  std::uint32_t codeword_total = 0;
  typename shared_type::scan_type(shared.scan)
      .ExclusiveSum(walk.count, first_value, codeword_total);
  const bool all_consistent = __syncthreads_and(segment_consistent(segment, walk)) != 0;
  const group_values values = group_values_of(v, group);
  const kernel_fault fault = block_fault(values, codeword_total, all_consistent);
  if (fault != kernel_fault::none) {
    if (thread == 0 && v.status != nullptr) atomicMin(v.status, fault_record(group, fault));
    return;
  }

  // Phase 2: decode into the stage, merge into the output, one tile at a time.
  const block_output<F> b = block_output_of<F>(out, out_shift, v, values);
  thread_output o = start_output(v.exponent_stream, segment, b.lead, first_value, walk.count);
  for (std::uint32_t tile = 0; tile < b.slot_end; tile += stage_slots) {
    decode_to_stage<TableBits>(o, tables, stage, tile, tile + stage_slots);
    __syncthreads();  // every whole word is in the stage: the partial ones can go in byte by byte
    flush_stage_tail(o, stage, tile, tile + stage_slots);
    __syncthreads();
    merge_tile_part(b, stage, tile, tile + stage_slots, thread, Threads);
    __syncthreads();  // the next tile overwrites the stage
  }
}

}  // namespace floatzip::detail
