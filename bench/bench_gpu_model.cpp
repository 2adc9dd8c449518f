// The lockstep half of the GPU decode kernel's cost model (cmake/scripts/kernel_model.sh runs it).
// A MODEL, not a measurement: no GPU is involved.
//
// The CPU executor (cpu_executor.hpp) runs the kernel's own per-thread functions
// (detail/kernel_logic.hpp) block by block; this program observes such a run through the
// functions' probe hook and replays each warp's 32 threads in lockstep, as a GPU issues them: a
// warp takes as many steps of a phase's loop as its busiest lane, and each step's shared-memory
// accesses of all active lanes form one warp-wide access whose cost is its number of wavefronts
// (the largest number of distinct 32-bit words any of the 32 banks must serve). Per phase it
// counts warp steps, active lanes, table look-ups and their wavefronts, stream refills (and the
// warp steps in which any lane refilled: a refill is a branch the whole warp waits for), stage
// stores and loads and their wavefronts, and per launch the tiles per group, with the launch
// shape computed as the launcher computes it for an H100/H200 (228 KiB of shared memory per
// multiprocessor, 227 KiB per block).
//
//   floatzip_gpu_model [--llama-mib N] [--models DIR] [--quick]
//
// prints one JSON object per line, one per input, value format and encoder option set;
// kernel_model.py joins them with the SASS instruction counts of the built kernel of that format.
// --quick: only the default options on the Llama-shaped block and the real models (what CI runs, on
// a small block).
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iterator>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "bench_data.hpp"
#include "bench_gpu_inputs.hpp"
#include "floatzip/bundle_format.hpp"
#include "floatzip/cpu_executor.hpp"
#include "floatzip/detail/kernel_logic.hpp"
#include "floatzip/encoder.hpp"
#include "floatzip/value_format.hpp"

namespace floatzip::bench {
namespace {

constexpr unsigned kWarp = 32;
constexpr unsigned kBanks = 32;

enum class event_kind : std::uint8_t {
  step,
  table_lookup,
  stream_refill,
  stage_store,
  stage_load,
  merge_by_traits
};

struct lane_event {
  event_kind kind;
  std::uint32_t offset;
  std::uint32_t bytes;
};

using lane_log = std::vector<lane_event>;

struct recording_probe {
  lane_log* log;
  void step(floatzip::detail::loop_kind kind) const {
    log->push_back({event_kind::step, static_cast<std::uint32_t>(kind), 0});
  }
  void table_lookup(std::uint32_t offset, unsigned bytes) const {
    log->push_back({event_kind::table_lookup, offset, bytes});
  }
  void stream_refill() const { log->push_back({event_kind::stream_refill, 0, 0}); }
  void stage_store(std::uint32_t offset, unsigned bytes) const {
    log->push_back({event_kind::stage_store, offset, bytes});
  }
  void stage_load(std::uint32_t offset, unsigned bytes) const {
    log->push_back({event_kind::stage_load, offset, bytes});
  }
  void merge_by_traits() const { log->push_back({event_kind::merge_by_traits, 0, 0}); }
};

// One warp-wide shared-memory access of the lanes that take part: bytes [offset, offset + bytes)
// each. Shared memory has 32 banks of 4-byte words; lanes reading the same word share it
// (broadcast), distinct words in one bank are served one per wavefront.
unsigned wavefronts(const std::vector<std::pair<std::uint32_t, std::uint32_t>>& accesses) {
  std::vector<std::uint32_t> words;
  for (const auto& [offset, bytes] : accesses) {
    if (bytes == 0) continue;
    for (std::uint32_t w = offset / 4; w <= (offset + bytes - 1) / 4; ++w) words.push_back(w);
  }
  if (words.empty()) return 0;
  std::sort(words.begin(), words.end());
  words.erase(std::unique(words.begin(), words.end()), words.end());
  std::array<unsigned, kBanks> per_bank{};
  unsigned worst = 0;
  for (const std::uint32_t w : words) worst = std::max(worst, ++per_bank[w % kBanks]);
  return worst;
}

struct access_stats {
  std::uint64_t lane_accesses = 0;  // per lane
  std::uint64_t warp_accesses = 0;  // warp-wide instructions with at least one lane taking part
  std::uint64_t wavefronts = 0;

  nlohmann::json to_json() const {
    return {{"lane_accesses", lane_accesses},
            {"warp_accesses", warp_accesses},
            {"wavefronts", wavefronts}};
  }
};

struct phase_stats {
  std::uint64_t warp_runs = 0;   // (warp, barrier interval) pairs in which some lane worked
  std::uint64_t warp_steps = 0;  // loop iterations issued: per run, the busiest lane's steps
  std::uint64_t lane_steps = 0;  // iterations lanes needed
  std::uint64_t refills = 0;
  std::uint64_t refill_warp_steps = 0;  // warp steps in which at least one lane refilled
  // Warp steps in which at least one lane merged its unit value by value through the traits
  // (unit_merge's fallback; the kernel's warp issues it for all lanes then).
  std::uint64_t by_traits_warp_steps = 0;
  access_stats lookups, stores, loads;

  nlohmann::json to_json() const {
    return {{"warp_runs", warp_runs},
            {"warp_steps", warp_steps},
            {"lane_steps", lane_steps},
            {"active_lane_fraction",
             warp_steps == 0
                 ? 0.0
                 : static_cast<double>(lane_steps) / (32.0 * static_cast<double>(warp_steps))},
            {"refills", refills},
            {"refill_warp_steps", refill_warp_steps},
            {"by_traits_warp_steps", by_traits_warp_steps},
            {"table_lookups", lookups.to_json()},
            {"stage_stores", stores.to_json()},
            {"stage_loads", loads.to_json()}};
  }
};

using floatzip::detail::kLoopKinds;
using floatzip::detail::loop_kind;

// In loop_kind's order (kernel_logic.hpp).
constexpr const char* kLoopNames[] = {
    "walk_pair",     "walk_multi", "walk_single", "decode_pair",   "decode_multi",
    "decode_single", "merge",      "flush",       "merge_partial", "merge_shifted"};
static_assert(std::size(kLoopNames) == kLoopKinds, "a name for every loop kind");

// A lane's events cut into loop iterations: an iteration starts at its probe.step() and owns the
// events up to the next one, per kind of loop. Lanes of a warp run a loop together until the last
// of them leaves it, so each kind is replayed on its own.
using lane_steps = std::array<std::vector<std::vector<lane_event>>, kLoopKinds>;

lane_steps split_steps(const lane_log& log) {
  lane_steps out;
  std::vector<lane_event>* current = nullptr;
  for (const lane_event& e : log) {
    if (e.kind == event_kind::step) {
      current = &out[e.offset].emplace_back();
    } else if (current != nullptr) {
      current->push_back(e);
    }
  }
  return out;
}

class lockstep_observer {
 public:
  explicit lockstep_observer(unsigned threads) : lanes_(threads) {}

  recording_probe probe(unsigned thread) { return {&lanes_[thread]}; }

  void barrier(floatzip::detail::executor_phase /*phase*/, unsigned threads) {
    for (unsigned first = 0; first < threads; first += kWarp) {
      replay_warp(first, std::min(threads, first + kWarp));
    }
    for (auto& lane : lanes_) lane.clear();
  }

  std::array<phase_stats, kLoopKinds> loops;

 private:
  void replay_warp(unsigned first, unsigned end) {
    std::vector<lane_steps> lanes;
    for (unsigned t = first; t < end; ++t) lanes.push_back(split_steps(lanes_[t]));
    for (unsigned kind = 0; kind < kLoopKinds; ++kind) replay_loop(lanes, kind, loops[kind]);
  }

  static void replay_loop(const std::vector<lane_steps>& lanes, unsigned kind, phase_stats& stats) {
    std::size_t longest = 0;
    for (const lane_steps& lane : lanes) {
      longest = std::max(longest, lane[kind].size());
      stats.lane_steps += lane[kind].size();
    }
    if (longest == 0) return;
    ++stats.warp_runs;
    stats.warp_steps += longest;
    std::vector<std::pair<std::uint32_t, std::uint32_t>> accesses;
    for (std::size_t i = 0; i < longest; ++i) {
      // The k-th access of a kind within the step, across lanes, is one warp-wide instruction.
      for (const event_kind access :
           {event_kind::table_lookup, event_kind::stage_store, event_kind::stage_load}) {
        access_stats& a = access == event_kind::table_lookup  ? stats.lookups
                          : access == event_kind::stage_store ? stats.stores
                                                              : stats.loads;
        for (std::size_t k = 0;; ++k) {
          accesses.clear();
          for (const lane_steps& lane : lanes) {
            if (i >= lane[kind].size()) continue;
            std::size_t seen = 0;
            for (const lane_event& e : lane[kind][i]) {
              if (e.kind != access) continue;
              if (seen++ == k) {
                accesses.emplace_back(e.offset, e.bytes);
                break;
              }
            }
          }
          if (accesses.empty()) break;
          a.lane_accesses += accesses.size();
          ++a.warp_accesses;
          a.wavefronts += wavefronts(accesses);
        }
      }
      bool any_refill = false;
      bool any_by_traits = false;
      for (const lane_steps& lane : lanes) {
        if (i >= lane[kind].size()) continue;
        for (const lane_event& e : lane[kind][i]) {
          if (e.kind == event_kind::stream_refill) {
            ++stats.refills;
            any_refill = true;
          }
          if (e.kind == event_kind::merge_by_traits) any_by_traits = true;
        }
      }
      if (any_refill) ++stats.refill_warp_steps;
      if (any_by_traits) ++stats.by_traits_warp_steps;
    }
  }

  std::vector<lane_log> lanes_;
};

// H100 and H200 (both GH100): shared memory per multiprocessor and per block (opt-in).
constexpr floatzip::detail::device_shared_limits kHopperShared{228 * 1024, 227 * 1024};

struct model_run {
  std::string input;
  value_format format = value_format::bf16;
  encode_options options;
  std::uint64_t bundles = 0;
  std::uint64_t segments = 0;  // launches: a bundle has one per code it holds
  std::uint64_t values = 0;
  std::uint64_t bundle_bytes = 0;
  std::uint64_t groups = 0;
  std::uint64_t tiles = 0;  // sum over groups
  std::uint32_t max_shared_bytes = 0;
  std::uint32_t max_stage_slots = 0;
  int table_bits = 0;
  lockstep_observer observer{kGpuThreadsPerBlock};

  void add_bundle(std::span<const std::span<const std::uint16_t>> tensors) {
    std::vector<std::span<const std::byte>> bytes;
    for (const auto& t : tensors) bytes.push_back(std::as_bytes(t));
    add_bundle(bytes);
  }

  // The tensors' values in `format`, as little-endian bytes.
  void add_bundle(std::span<const std::span<const std::byte>> tensors) {
    const std::vector<std::byte> bytes = compress_bundle(format, tensors, options);
    const bundle_view view = parse_bundle(bytes).value();
    if (view.value_count() == 0) return;
    const std::uint64_t width = value_bytes(format);
    const std::uint64_t unit = floatzip::detail::slots_per_store(format);
    // The output 16-byte aligned, as a cudaMalloc'ed buffer is.
    std::vector<std::uint64_t> storage((view.value_count() * width + 31) / 8);
    std::byte* const aligned = reinterpret_cast<std::byte*>(storage.data()) +
                               (16 - reinterpret_cast<std::uintptr_t>(storage.data()) % 16) % 16;
    // A bundle whose tensors the encoder gave codes of their own is several segments: one launch
    // each, as the GPU runs it (gpu.hpp), each into its part of the output.
    const error e = view.for_each_segment([&](const bundle_view& segment) -> error {
      if (segment.value_count() == 0) return {};
      const int bits = floatzip::detail::gpu_table_bits(segment.max_code_length());
      const auto table = floatzip::detail::build_kernel_tables(segment, bits).value();
      unsigned long long status = floatzip::detail::kNoFault;
      const device_bundle_view v = floatzip::detail::make_device_bundle_view(
          segment, segment.bytes().data(), table.data(), bits, &status);
      const floatzip::detail::launch_shape shape =
          floatzip::detail::launch_shape_for(v, kHopperShared, 0).value();
      // Keep each segment's output at the alignment it has in the bundle's buffer.
      std::byte* const segment_out = aligned + (segment.first_value() - view.first_value()) * width;
      const error run = visit_format(format, [&]<value_format F>() -> error {
        auto* const out = reinterpret_cast<typename format_traits<F>::value_type*>(segment_out);
        return bits == kGpuTableBitsSmall
                   ? floatzip::detail::execute_kernel<F, kGpuTableBitsSmall>(
                         v, out, shape.stage_slots, kGpuThreadsPerBlock, observer)
                   : floatzip::detail::execute_kernel<F, kGpuTableBitsLarge>(
                         v, out, shape.stage_slots, kGpuThreadsPerBlock, observer);
      });
      if (run) return run;
      groups += segment.group_count();
      const std::uint64_t lead = (segment.first_value() - view.first_value()) % unit;
      for (std::uint64_t g = 0; g < segment.group_count(); ++g) {
        const std::uint64_t n = segment.group_end_value(g) - segment.group_value_position(g);
        // slot_end = lead + n with lead < unit (the output's lead in its aligned store unit).
        const std::uint64_t slot_end = (lead + segment.group_value_position(g)) % unit + n;
        tiles += (slot_end + shape.stage_slots - 1) / shape.stage_slots;
      }
      max_shared_bytes = std::max(max_shared_bytes, shape.shared_bytes);
      max_stage_slots = std::max(max_stage_slots, shape.stage_slots);
      table_bits = std::max(table_bits, bits);
      ++segments;
      return {};
    });
    if (!e.ok()) {
      std::fprintf(stderr, "gpu model: %s: %s\n", input.c_str(), e.message.c_str());
      std::exit(1);
    }
    // The replay must have decoded the bundle: the model describes a correct run only.
    std::uint64_t offset = 0;
    for (const auto& t : tensors) {
      if (!std::equal(t.begin(), t.end(), aligned + offset)) {
        std::fprintf(stderr, "gpu model: %s: a tensor decoded wrong\n", input.c_str());
        std::exit(1);
      }
      offset += t.size();
    }
    ++bundles;
    values += view.value_count();
    bundle_bytes += bytes.size();
  }

  nlohmann::json to_json() const {
    return {{"input", input},
            {"format", to_string(format)},
            {"format_id", static_cast<unsigned>(format)},
            {"value_bytes", value_bytes(format)},
            {"max_code_length", options.max_code_length},
            {"chunk_bytes", options.chunk_bytes},
            {"chunks_per_group", options.chunks_per_group},
            {"table_bits", table_bits},
            {"threads_per_block", kGpuThreadsPerBlock},
            {"bundles", bundles},
            {"segments", segments},
            {"values", values},
            {"bundle_bytes", bundle_bytes},
            {"groups", groups},
            {"tiles", tiles},
            {"tiles_per_group", groups == 0 ? 0.0 : static_cast<double>(tiles) / groups},
            {"stage_slots", max_stage_slots},
            {"shared_bytes_per_block", max_shared_bytes},
            {"table_load_bytes", floatzip::detail::kernel_tables_bytes(table_bits)},
            {"loops", loops_json()}};
  }

  nlohmann::json loops_json() const {
    nlohmann::json loops = nlohmann::json::object();
    for (unsigned kind = 0; kind < kLoopKinds; ++kind) {
      loops[kLoopNames[kind]] = observer.loops[kind].to_json();
    }
    return loops;
  }
};

void run_llama(const llama_block& block, const encode_options& options, const std::string& name) {
  model_run run;
  run.input = name;
  run.options = options;
  run.add_bundle(block.tensors);
  std::printf("%s\n", run.to_json().dump().c_str());
  std::fflush(stdout);
}

// The block in another value format (bench_gpu_inputs.hpp's make_format_input), default options.
void run_llama_format(const llama_block& block, value_format format, const std::string& name) {
  model_run run;
  run.input = name;
  run.format = format;
  run.add_bundle(make_format_input(format, block).spans());
  std::printf("%s\n", run.to_json().dump().c_str());
  std::fflush(stdout);
}

void run_models(const std::filesystem::path& dir, const encode_options& options) {
  const auto files = real_model_files(dir);
  if (files.empty()) {
    std::fprintf(stderr, "gpu model: no *.bf16.safetensors in %s: real models skipped\n",
                 dir.string().c_str());
    return;
  }
  model_run run;
  run.input = "real_models";
  run.options = options;
  for (const auto& file : files) {
    std::string message;
    auto data = load_safetensors_dataset(file, &message);
    if (!data) {
      std::fprintf(stderr, "gpu model: %s: %s\n", file.string().c_str(), message.c_str());
      std::exit(1);
    }
    for (const auto& bundle : data->bundles) run.add_bundle(bundle.tensors);
  }
  std::printf("%s\n", run.to_json().dump().c_str());
  std::fflush(stdout);
}

int run_main(int argc, char** argv) {
  std::uint64_t llama_mib = 64;
  std::filesystem::path models = FLOATZIP_MODELS_DIR;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--llama-mib" && i + 1 < argc) {
      llama_mib = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--models" && i + 1 < argc) {
      models = argv[++i];
    } else if (arg == "--quick") {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--llama-mib N] [--models DIR] [--quick]\n", argv[0]);
      return 2;
    }
  }
  if (llama_mib == 0) llama_mib = 1;
  const llama_block block = make_llama_block_values(llama_mib << 20, 42);
  const std::string llama = "llama_" + std::to_string(llama_mib) + "MiB";
  const encode_options defaults{};
  run_models(models, defaults);
  if (!quick) {
    encode_options chunk128 = defaults;
    chunk128.chunk_bytes = 128;
    run_llama(block, chunk128, llama);
    encode_options long_codes = defaults;
    long_codes.max_code_length = 15;
    run_llama(block, long_codes, llama);
    // The block in every other value format: the kernel of each format (its merge differs).
    for (unsigned f = 1; f < kValueFormatCount; ++f) {
      run_llama_format(block, static_cast<value_format>(f), llama);
    }
  }
  // Last: the default options on the Llama-shaped block, the line kernel_model.sh summarises.
  run_llama(block, defaults, llama);
  return 0;
}

}  // namespace
}  // namespace floatzip::bench

int main(int argc, char** argv) { return floatzip::bench::run_main(argc, argv); }
