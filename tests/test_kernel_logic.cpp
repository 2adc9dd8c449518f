// Tests for the GPU decode kernel's logic (detail/kernel_logic.hpp) through the CPU executor
// (cpu_executor.hpp), which runs the kernel's per-thread functions block by block and phase by
// phase. Every decode is compared bit for bit with the original values, into an output poisoned
// with the complement of the expected values and guarded by canaries, at every store alignment.
#include <gtest/gtest.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "floatzip/bf16.hpp"
#include "floatzip/bundle_format.hpp"
#include "floatzip/cpu_executor.hpp"
#include "floatzip/decoder.hpp"
#include "floatzip/detail/bitstream.hpp"
#include "floatzip/detail/kernel_logic.hpp"
#include "floatzip/encoder.hpp"
#include "floatzip/value_format.hpp"
#include "format_typed_tests.hpp"
#include "kernel_test_inputs.hpp"

namespace floatzip {
namespace {

using test::all_patterns;
using test::compress;
using test::concatenated;
using test::geometry;
using test::heavy_tailed;
using test::tensor_list;

constexpr std::size_t kGuardValues = 16;  // canaries on both sides of the output
template <class T>
constexpr T kCanary = static_cast<T>(0x5EC0C0DEu);  // 0xC0DE for 16-bit values

// Runs the executor into a buffer whose first value lies `shift` values past a 16-byte boundary,
// poisoned with ~expected so that an unwritten value cannot pass, and checks every value and the
// canaries around it. T: the bundle's value type (uint16_t for BF16/FP16, uint32_t for FP32 and
// BF16-in-FP32, uint8_t for FP8).
template <class T>
void expect_executor_decodes(std::span<const std::byte> bytes, const std::vector<T>& expected,
                             unsigned shift, const cpu_executor_options& options = {}) {
  auto view = parse_bundle(bytes);
  ASSERT_TRUE(view.has_value()) << view.error().message;
  ASSERT_EQ(view->value_count(), expected.size());
  ASSERT_EQ(value_bytes(view->format()), sizeof(T));
  const std::size_t unit = detail::slots_per_store(view->format());
  ASSERT_LT(shift, unit);
  std::vector<T> buffer(expected.size() + 2 * kGuardValues + unit, kCanary<T>);
  const std::size_t misalignment =
      (reinterpret_cast<std::uintptr_t>(buffer.data()) / sizeof(T)) % unit;
  const std::size_t begin = kGuardValues + (shift + unit - misalignment) % unit;
  T* out = buffer.data() + begin;
  ASSERT_EQ((reinterpret_cast<std::uintptr_t>(out) / sizeof(T)) % unit, shift);
  for (std::size_t i = 0; i < expected.size(); ++i) out[i] = static_cast<T>(~expected[i]);

  const error e = execute_kernel_on_cpu(*view, std::span<T>(out, expected.size()), options);
  ASSERT_TRUE(e.ok()) << e.message;
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    if (out[i] != expected[i] && ++mismatches <= 5) {
      ADD_FAILURE() << to_string(view->format()) << " value " << i << " of " << expected.size()
                    << ": got " << std::hex << std::uint32_t{out[i]} << " expected "
                    << std::uint32_t{expected[i]} << " (shift " << std::dec << shift << ")";
    }
  }
  EXPECT_EQ(mismatches, 0u);
  for (std::size_t i = 0; i < begin; ++i) ASSERT_EQ(buffer[i], kCanary<T>) << "before output " << i;
  for (std::size_t i = begin + expected.size(); i < buffer.size(); ++i) {
    ASSERT_EQ(buffer[i], kCanary<T>) << "after output " << i;
  }
}

template <class T>
void expect_all_shifts(std::span<const std::byte> bytes, const std::vector<T>& expected,
                       const cpu_executor_options& options = {}) {
  for (unsigned shift = 0; shift < 16 / sizeof(T); ++shift) {
    SCOPED_TRACE("output shift " + std::to_string(shift));
    expect_executor_decodes(bytes, expected, shift, options);
    if (testing::Test::HasFatalFailure()) return;
  }
}

// The CPU decoder (decoder.hpp) on the same bundle: the reference the kernel must agree with.
template <class T>
void expect_cpu_decoder_decodes(std::span<const std::byte> bytes, const std::vector<T>& expected) {
  const bundle_view view = parse_bundle(bytes).value();
  std::vector<T> out(expected.size());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<T>(~expected[i]);
  const error e = decompress(view, std::span<T>(out));
  ASSERT_TRUE(e.ok()) << e.message;
  ASSERT_TRUE(out == expected) << "the CPU decoder disagrees (" << to_string(view.format()) << ")";
}

// ---- the per-thread building blocks -------------------------------------------------------------

TEST(KernelLogic, MergeTwoValuesMatchesBf16MergeForEveryPattern) {
  std::mt19937 rng(1);
  for (unsigned e = 0; e < 256; ++e) {
    for (unsigned s = 0; s < 256; ++s) {
      const unsigned e2 = rng() & 0xFF;
      const unsigned s2 = rng() & 0xFF;
      const std::uint32_t word = detail::merge_two_values(e | e2 << 8, s | s2 << 8);
      ASSERT_EQ(word & 0xFFFF,
                bf16_merge(static_cast<std::uint8_t>(e), static_cast<std::uint8_t>(s)));
      ASSERT_EQ(word >> 16,
                bf16_merge(static_cast<std::uint8_t>(e2), static_cast<std::uint8_t>(s2)));
      const std::uint32_t swapped = detail::merge_two_values(e2 | e << 8, s2 | s << 8);
      ASSERT_EQ(swapped >> 16,
                bf16_merge(static_cast<std::uint8_t>(e), static_cast<std::uint8_t>(s)));
    }
  }
}

TEST(KernelLogic, LoadSection8AtEveryMisalignment) {
  alignas(16) std::array<std::uint8_t, 48> bytes;
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 37 + 5);
  for (std::uint64_t pos = 0; pos + 8 <= 32; ++pos) {
    const std::uint64_t got = detail::load_section8(bytes.data(), pos);
    for (unsigned k = 0; k < 8; ++k) {
      ASSERT_EQ((got >> (8 * k)) & 0xFF, bytes[pos + k]) << "pos " << pos << " byte " << k;
    }
  }
}

TEST(KernelLogic, StreamReaderSeesTheStreamFromAnyPosition) {
  std::mt19937_64 rng(3);
  alignas(16) std::array<std::uint8_t, 256 + kStreamPaddingBytes> stream{};
  for (std::size_t i = 0; i < 256; ++i) stream[i] = static_cast<std::uint8_t>(rng());
  // A table that maps every 12-bit index to "length = 1 + index % 12", symbol = low index bits,
  // so that the reader's consumed lengths vary; compare what it peeks with stream_window.
  std::vector<decode_entry> table(1 << 12);
  for (std::size_t i = 0; i < table.size(); ++i) {
    table[i] = make_decode_entry(static_cast<std::uint8_t>(i), 1 + i % 12);
  }
  for (std::uint64_t start = 0; start < 200 * 8; start += 7) {
    detail::stream_reader reader;
    reader.start(stream.data(), start);
    std::uint64_t pos = start;
    while (pos + 64 < 256 * 8) {
      reader.refill<12>(detail::no_probe{});
      const decode_entry e = reader.look_up<12>(table.data(), table.data(), detail::no_probe{});
      const std::uint64_t index = detail::stream_window(stream.data(), pos) >> 52;
      ASSERT_EQ(e, table[index]) << "start " << start << " pos " << pos;
      reader.consume(entry_length(e));
      pos += entry_length(e);
    }
  }
}

// Every multi-symbol entry against decoding its index codeword by codeword: as many whole
// codewords as fit in the 12 bits, at most three, their symbols in order and zeros above.
TEST(KernelLogic, MultiSymbolEntriesDecodeTheirIndex) {
  for (const auto& values : {heavy_tailed(200'000, 11), test::all_patterns(true)}) {
    const auto bytes = compress({values}, {});
    const bundle_view view = parse_bundle(bytes).value();
    ASSERT_EQ(detail::gpu_table_bits(view.max_code_length()), 12);
    std::vector<decode_entry> single(1 << 12);
    build_decode_table(view.code(), 12, single);
    const std::vector<detail::multi_entry> multi = detail::build_multi_table(single, 12);
    const canonical_code code = make_canonical_code(view.code());
    for (std::uint32_t index = 0; index < multi.size(); ++index) {
      const detail::decoded_step d = detail::decoded_step_of(multi[index]);
      unsigned at = 0;
      unsigned count = 0;
      std::uint32_t symbols = 0;
      while (count < 3) {
        // The codeword at bit `at` of the index (MSB first), found by its canonical code.
        int found = -1;
        for (int sym = 0; sym < kSymbolCount && found < 0; ++sym) {
          const unsigned len = code.length[sym];
          if (len == 0 || at + len > 12) continue;
          if (((index >> (12 - at - len)) & ((1u << len) - 1)) == code.code[sym]) found = sym;
        }
        if (found < 0) break;
        symbols |= static_cast<std::uint32_t>(found) << (8 * count);
        at += code.length[found];
        ++count;
      }
      ASSERT_EQ(d.count, count) << "index " << index;
      ASSERT_EQ(d.length, at) << "index " << index;
      ASSERT_EQ(d.symbols, symbols) << "index " << index;
      ASSERT_GE(d.count, 1u);
    }
  }
}

// ---- whole bundles
// --------------------------------------------------------------------------------

TEST(KernelExecutor, AllBf16PatternsAtEveryAlignment) {
  for (const bool shuffled : {false, true}) {
    const std::vector<std::uint16_t> values = all_patterns(shuffled);
    for (const int max_length : {8, 12, 15}) {
      SCOPED_TRACE("max_code_length " + std::to_string(max_length) +
                   (shuffled ? " shuffled" : " in order"));
      const auto bytes = compress({values}, geometry(max_length, 64, 256));
      expect_all_shifts(bytes, values);
    }
  }
}

TEST(KernelExecutor, EmptyBundlesWriteNothing) {
  for (const tensor_list& tensors : {tensor_list{}, tensor_list{{}}, tensor_list{{}, {}, {}}}) {
    const auto bytes = compress(tensors, {});
    auto view = parse_bundle(bytes);
    ASSERT_TRUE(view.has_value()) << view.error().message;
    std::vector<std::uint16_t> out(4, kCanary<std::uint16_t>);
    EXPECT_TRUE(execute_kernel_on_cpu(*view, std::span<std::uint16_t>(out)).ok());
    EXPECT_TRUE(execute_kernel_on_cpu(*view, std::span<std::uint16_t>()).ok());
    EXPECT_EQ(out, std::vector<std::uint16_t>(4, kCanary<std::uint16_t>));
  }
}

TEST(KernelExecutor, OneValue) {
  for (const std::uint16_t v : {std::uint16_t{0}, std::uint16_t{0x8000}, std::uint16_t{0x3F80},
                                std::uint16_t{0x7FC1}, std::uint16_t{0xFFFF}}) {
    const std::vector<std::uint16_t> values{v};
    expect_all_shifts(compress({values}, {}), values);
  }
}

// Sizes that end mid-chunk, on a chunk, mid-group and on a group, under geometries that give a
// thread one chunk, several chunks, or no chunk at all.
TEST(KernelExecutor, OddSizesAndGeometries) {
  struct case_geometry {
    encode_options options;
    unsigned threads;
  };
  std::vector<case_geometry> geometries;
  for (const auto& g : test::odd_geometries()) geometries.push_back({g, 256});
  geometries.push_back({geometry(11, 64, 256), 32});   // a small block: eight chunks per thread
  geometries.push_back({geometry(13, 8, 257), 1024});  // a large block
  std::uint64_t seed = 11;
  for (const std::size_t n : test::odd_sizes()) {
    const std::vector<std::uint16_t> values = heavy_tailed(n, ++seed);
    for (const auto& g : geometries) {
      SCOPED_TRACE("n " + std::to_string(n) + " chunk_bytes " +
                   std::to_string(g.options.chunk_bytes) + " chunks_per_group " +
                   std::to_string(g.options.chunks_per_group) + " threads " +
                   std::to_string(g.threads));
      const auto bytes = compress({values}, g.options);
      cpu_executor_options options;
      options.threads_per_block = g.threads;
      expect_executor_decodes(bytes, values, static_cast<unsigned>(n % 8), options);
      if (HasFatalFailure()) return;
    }
  }
}

// Small stages force several tiles per group; each thread's decoder carries over between tiles.
TEST(KernelExecutor, StagingInTiles) {
  const std::vector<std::uint16_t> values = heavy_tailed(300001, 5);
  const auto bytes = compress({values}, {});
  for (const std::uint32_t stage : {8u, 16u, 24u, 1000u, 4096u, 20000u, 65536u}) {
    SCOPED_TRACE("stage_bytes " + std::to_string(stage));
    cpu_executor_options options;
    options.stage_bytes = stage;
    expect_executor_decodes(bytes, values, stage % 8, options);
    if (HasFatalFailure()) return;
  }
  cpu_executor_options options;
  options.stage_bytes = 40;
  expect_all_shifts(bytes, values, options);
}

TEST(KernelExecutor, ManyOddSizedTensorsInOneBundle) {
  std::mt19937_64 rng(9);
  tensor_list tensors;
  for (int i = 0; i < 300; ++i) {
    const std::size_t n = rng() % 4 == 0 ? rng() % 8 : rng() % 5000;
    tensors.push_back(heavy_tailed(n, rng(), 0.005f + 0.001f * static_cast<float>(i % 40)));
  }
  const auto bytes = compress(tensors, {});
  const auto view = parse_bundle(bytes);
  ASSERT_TRUE(view.has_value());
  ASSERT_EQ(view->tensor_count(), tensors.size());
  expect_all_shifts(bytes, concatenated(tensors));
}

TEST(KernelExecutor, HeavyTailedLarge) {
  const std::vector<std::uint16_t> values = heavy_tailed(3'000'017, 21, 0.03f);
  expect_executor_decodes(compress({values}, {}), values, 0);
}

// One exponent only: the one-symbol code, one bit per value, so a group holds 131,072 values and
// the default-sized stages of a real GPU need several tiles.
TEST(KernelExecutor, OneSymbolCode) {
  const std::vector<std::uint16_t> values = test::one_exponent(400'000, 2);
  const auto bytes = compress({values}, {});
  expect_executor_decodes(bytes, values, 3);
  cpu_executor_options options;
  options.stage_bytes = 32 * 1024;
  expect_executor_decodes(bytes, values, 5, options);
}

// Fibonacci-like exponent counts force codes up to the 15-bit limit (the large table).
TEST(KernelExecutor, LongestCodes) {
  const std::vector<std::uint16_t> values = test::fibonacci_exponents();
  const auto bytes = compress({values}, geometry(15, 64, 256));
  const auto view = parse_bundle(bytes);
  ASSERT_TRUE(view.has_value());
  ASSERT_EQ(view->max_code_length(), 15);
  int longest = 0;
  for (const auto len : view->code()) longest = std::max<int>(longest, len);
  ASSERT_EQ(longest, 15) << "the test data no longer forces 15-bit codes";
  expect_all_shifts(bytes, values);
}

// ---- the real models
// ------------------------------------------------------------------------------

TEST(KernelTestInputs, BundleKeyGroupsTransformerBlocks) {
  EXPECT_EQ(test::bundle_key("model.layers.12.mlp.up_proj.weight"), "model.layers.12.");
  EXPECT_EQ(test::bundle_key("layers.3.attention.wq.weight"), "layers.3.");
  EXPECT_EQ(test::bundle_key("model.embed_tokens.weight"), "model.embed_tokens.weight");
  EXPECT_EQ(test::bundle_key("model.extra_layers.weight"), "model.extra_layers.weight");
  EXPECT_EQ(test::bundle_key("model.layers.x.weight"), "model.layers.x.weight");
}

TEST(KernelExecutor, RealModels) {
  std::string skip_reason;
  const std::vector<test::model_bundle> bundles = test::model_bundles(skip_reason);
  if (bundles.empty()) GTEST_SKIP() << skip_reason;
  std::printf("%zu bundles from the real models\n", bundles.size());
  for (const auto& bundle : bundles) {
    SCOPED_TRACE(bundle.name);
    const std::vector<std::uint16_t> expected = concatenated(bundle.tensors);
    const auto bytes = compress(bundle.tensors, {});
    expect_executor_decodes(bytes, expected, static_cast<unsigned>(bundle.name.size() % 8));
    if (HasFatalFailure()) return;
    if (bundle.name.ends_with("<whole file>")) {
      cpu_executor_options tiny_stage;
      tiny_stage.stage_bytes = 2048;
      expect_all_shifts(bytes, expected, tiny_stage);
    }
  }
}

// ---- launch checks and corrupt data
// ----------------------------------------------------------------

struct host_kernel_bundle {
  std::vector<std::byte> bytes;
  bundle_view view;
  std::vector<std::uint32_t> tables;
  unsigned long long status = detail::kNoFault;
  device_bundle_view device_view;
};

// A parsed bundle with its kernel view over host memory. Changing `bytes` afterwards changes what
// the executor reads, which is how the metadata is corrupted past parse_bundle's checks.
std::unique_ptr<host_kernel_bundle> make_host_kernel_bundle(std::vector<std::byte> bytes) {
  auto b = std::make_unique<host_kernel_bundle>();
  b->bytes = std::move(bytes);
  b->view = parse_bundle(b->bytes).value();
  const int bits = detail::gpu_table_bits(b->view.max_code_length());
  b->tables = detail::build_kernel_tables(b->view, bits).value();
  b->device_view =
      detail::make_device_bundle_view(b->view, b->bytes.data(), b->tables.data(), bits, &b->status);
  return b;
}
std::unique_ptr<host_kernel_bundle> make_host_kernel_bundle(const tensor_list& tensors,
                                                            const encode_options& options) {
  return make_host_kernel_bundle(compress(tensors, options));
}

TEST(KernelExecutor, LaunchChecks) {
  const std::vector<std::uint16_t> values = heavy_tailed(5000, 1);
  auto b = make_host_kernel_bundle({values}, {});
  std::vector<std::uint16_t> out(values.size() + 8);
  std::uint16_t* aligned =
      out.data() + (8 - (reinterpret_cast<std::uintptr_t>(out.data()) / 2) % 8) % 8;

  EXPECT_EQ(execute_kernel_on_cpu(b->device_view, aligned, values.size() - 1).code,
            errc::insufficient_space);
  EXPECT_EQ(
      execute_kernel_on_cpu(b->device_view, static_cast<std::uint16_t*>(nullptr), values.size())
          .code,
      errc::invalid_argument);
  auto* odd = reinterpret_cast<std::uint16_t*>(reinterpret_cast<char*>(aligned) + 1);
  EXPECT_EQ(execute_kernel_on_cpu(b->device_view, odd, values.size()).code, errc::invalid_argument);

  auto expect_invalid = [&](auto mutate, const char* what) {
    device_bundle_view v = b->device_view;
    mutate(v);
    const error e = execute_kernel_on_cpu(v, aligned, values.size());
    EXPECT_EQ(e.code, errc::invalid_argument) << what << ": " << e.message;
  };
  expect_invalid([](device_bundle_view& v) { v.table_bits = 13; }, "table bits not compiled");
  expect_invalid([](device_bundle_view& v) { v.max_code_length = 16; }, "code longer than table");
  expect_invalid([](device_bundle_view& v) { v.exponent_stream = nullptr; }, "null stream");
  expect_invalid([](device_bundle_view& v) { v.raw_bytes += 1; }, "misaligned section");
  expect_invalid([](device_bundle_view& v) { v.chunk_count += 1; }, "chunk count");
  expect_invalid([](device_bundle_view& v) { v.group_count -= 1; }, "group count");
  expect_invalid([](device_bundle_view& v) { v.stream_bits = v.value_count * 20; }, "stream bits");
  expect_invalid(
      [](device_bundle_view& v) {
        v.chunks_per_group = 1u << 16;
        v.chunk_bits = 1u << 16;
      },
      "group too large for 32-bit offsets");
  cpu_executor_options no_threads;
  no_threads.threads_per_block = 0;
  EXPECT_EQ(execute_kernel_on_cpu(b->device_view, aligned, values.size(), no_threads).code,
            errc::invalid_argument);
  EXPECT_TRUE(execute_kernel_on_cpu(b->device_view, aligned, values.size()).ok());
}

// A table entry of length 0 would keep a thread's walk from advancing and hang its block; one
// longer than the table would read past the stream padding. Both are refused when the table is
// built, before anything is uploaded or launched.
TEST(KernelLogic, DecodeTableEntriesOfBadLengthAreRejected) {
  const std::vector<std::uint16_t> values = heavy_tailed(5000, 1);
  auto b = make_host_kernel_bundle({values}, {});
  const int bits = b->device_view.table_bits;
  std::vector<decode_entry> single(std::size_t{1} << bits);
  build_decode_table(b->view.code(), bits, single);
  EXPECT_TRUE(detail::check_kernel_decode_table(single, bits).ok());
  for (const unsigned length : {0u, static_cast<unsigned>(bits) + 1}) {
    std::vector<decode_entry> table = single;
    table[table.size() / 3] = make_decode_entry(7, length);
    const error e = detail::check_kernel_decode_table(table, bits);
    EXPECT_EQ(e.code, errc::bad_data);
    EXPECT_NE(e.message.find("entry " + std::to_string(table.size() / 3)), std::string::npos)
        << e.message;
  }
}

TEST(KernelLogic, LaunchDeviceMustBeTheBundlesDevice) {
  device_bundle_view v;
  EXPECT_TRUE(detail::validate_launch_device(v, 3).ok());  // -1: a host view, not checked
  v.device = 1;
  EXPECT_TRUE(detail::validate_launch_device(v, 1).ok());
  const error e = detail::validate_launch_device(v, 0);
  EXPECT_EQ(e.code, errc::invalid_argument);
  EXPECT_NE(e.message.find("uploaded to device 1"), std::string::npos) << e.message;
}

// The launcher's shared-memory plan, computed without a GPU: the table, the scan storage and the
// stage, the stage starting on a 128-byte boundary, and a clear error where the table alone
// does not fit.
TEST(KernelLogic, LaunchShapeOnHopperLimits) {
  const std::vector<std::uint16_t> values = heavy_tailed(400'000, 8);
  auto b = make_host_kernel_bundle({values}, {});
  const detail::device_shared_limits hopper{228 * 1024, 227 * 1024};
  const auto shape = detail::launch_shape_for(b->device_view, hopper, 0);
  ASSERT_TRUE(shape.has_value()) << shape.error().message;
  const std::uint32_t fixed = detail::kernel_fixed_shared_bytes(b->device_view.table_bits);
  EXPECT_EQ(fixed % 128, 0u);
  EXPECT_EQ(shape->shared_bytes, fixed + shape->stage_slots);
  EXPECT_EQ(shape->stage_slots % detail::slots_per_store(value_format::bf16), 0u);
  EXPECT_LE(shape->shared_bytes + detail::kReservedSharedPerBlock,
            hopper.per_multiprocessor / detail::kMinBlocksPerMultiprocessor);
  // The largest group in one tile.
  EXPECT_EQ(shape->stage_slots, detail::stage_slots_for(b->device_view, std::uint64_t{1} << 32));
  const auto small = detail::launch_shape_for(b->device_view, hopper, 2048);
  ASSERT_TRUE(small.has_value());
  EXPECT_LE(small->stage_slots, 2048u);
  const auto tiny_device = detail::launch_shape_for(b->device_view, {16 * 1024, 4 * 1024}, 0);
  ASSERT_FALSE(tiny_device.has_value());
  EXPECT_EQ(tiny_device.error().code, errc::invalid_argument);
}

// Metadata that parse_bundle accepted but that was changed afterwards (as a bit flip in device
// memory would): the block that uses it must refuse to write and report its group.
TEST(KernelExecutor, CorruptGroupPositionsAreReported) {
  const std::vector<std::uint16_t> values = heavy_tailed(400'000, 8);
  auto b = make_host_kernel_bundle({values}, {});
  const std::uint64_t groups = b->view.group_count();
  ASSERT_GE(groups, 4u);
  std::vector<std::uint16_t> out(values.size());
  const std::uint64_t offset = b->view.layout().group_positions_offset;
  for (const std::uint64_t g : {std::uint64_t{0}, std::uint64_t{1}, groups / 2, groups - 1}) {
    for (const std::int64_t delta : {-1, 1, 1000, -1000}) {
      std::uint64_t position;
      std::memcpy(&position, b->bytes.data() + offset + g * 8, 8);
      if (static_cast<std::int64_t>(position) + delta < 0) continue;
      const std::uint64_t corrupt = position + static_cast<std::uint64_t>(delta);
      std::memcpy(b->bytes.data() + offset + g * 8, &corrupt, 8);
      b->status = detail::kNoFault;
      const error e = execute_kernel_on_cpu(b->device_view, out.data(), out.size());
      std::memcpy(b->bytes.data() + offset + g * 8, &position, 8);
      EXPECT_EQ(e.code, errc::bad_data) << "group " << g << " delta " << delta;
      // The group before a moved boundary sees it as its end: it may be reported first.
      const std::uint64_t reported = b->status >> 8;
      EXPECT_TRUE(reported == g || reported + 1 == g) << "reported " << reported << " for " << g;
      EXPECT_NE(e.message.find("group " + std::to_string(reported) + ":"), std::string::npos)
          << e.message;
    }
  }
  EXPECT_TRUE(execute_kernel_on_cpu(b->device_view, out.data(), out.size()).ok());
  EXPECT_EQ(out, values);
}

// What the GPU test CorruptDeviceMetadataIsReported expects, proven here: moving one group's
// position fails the two groups that use it; they stay unwritten, every other group is decoded.
TEST(KernelExecutor, FaultyGroupsAloneAreLeftUnwritten) {
  const std::vector<std::uint16_t> values = heavy_tailed(400'000, 8);
  auto b = make_host_kernel_bundle({values}, {});
  const std::uint64_t groups = b->view.group_count();
  ASSERT_GE(groups, 4u);
  const std::uint64_t g = groups / 2;
  const std::uint64_t bad_first = b->view.group_value_position(g - 1);
  const std::uint64_t bad_end = b->view.group_value_position(g + 1);
  const std::uint64_t corrupt = b->view.group_value_position(g) + 1;
  std::memcpy(b->bytes.data() + b->view.layout().group_positions_offset + g * 8, &corrupt, 8);
  std::vector<std::uint16_t> out(values.size());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::uint16_t>(~values[i]);
  const error e = execute_kernel_on_cpu(b->device_view, out.data(), out.size());
  EXPECT_EQ(e.code, errc::bad_data);
  EXPECT_NE(e.message.find("group " + std::to_string(g - 1) + ":"), std::string::npos) << e.message;
  for (std::uint64_t i = 0; i < values.size(); ++i) {
    const bool in_bad_group = i >= bad_first && i < bad_end;
    ASSERT_EQ(out[i], in_bad_group ? static_cast<std::uint16_t>(~values[i]) : values[i])
        << "value " << i;
  }
}

// Every position moved by the same amount, with a value count to match: each group's count
// agrees with its neighbours, so only the rule "group 0 starts at value 0" stops the blocks from
// leaving the first values unwritten.
TEST(KernelExecutor, ShiftedGroupPositionsAreReported) {
  const std::vector<std::uint16_t> values = heavy_tailed(200'000, 14);
  auto b = make_host_kernel_bundle({values}, {});
  const std::uint64_t offset = b->view.layout().group_positions_offset;
  for (std::uint64_t g = 0; g < b->view.group_count(); ++g) {
    std::uint64_t position;
    std::memcpy(&position, b->bytes.data() + offset + g * 8, 8);
    position += 5;
    std::memcpy(b->bytes.data() + offset + g * 8, &position, 8);
  }
  device_bundle_view shifted = b->device_view;
  shifted.value_count += 5;
  std::vector<std::uint16_t> out(shifted.value_count);
  const error e = execute_kernel_on_cpu(shifted, out.data(), out.size());
  EXPECT_EQ(e.code, errc::bad_data) << e.message;
  EXPECT_EQ(b->status, detail::fault_record(0, detail::kernel_fault::group_position));
}

TEST(KernelExecutor, CorruptChunkGapsAreReported) {
  const std::vector<std::uint16_t> values = heavy_tailed(200'000, 12);
  auto b = make_host_kernel_bundle({values}, {});
  std::vector<std::uint16_t> out(values.size());
  auto* gaps =
      reinterpret_cast<std::uint8_t*>(b->bytes.data() + b->view.layout().chunk_gaps_offset);
  std::mt19937_64 rng(6);
  for (int trial = 0; trial < 200; ++trial) {
    const std::uint64_t chunk = 1 + rng() % (b->view.chunk_count() - 1);
    const std::uint8_t saved = gaps[chunk >> 1];
    const unsigned shift = (chunk & 1) != 0 ? 4 : 0;
    const unsigned gap = (saved >> shift) & 0xF;
    const unsigned corrupt = (gap + 1 + rng() % 15) & 0xF;  // any other nibble, 0..15
    gaps[chunk >> 1] = static_cast<std::uint8_t>((saved & ~(0xF << shift)) | (corrupt << shift));
    b->status = detail::kNoFault;
    const error e = execute_kernel_on_cpu(b->device_view, out.data(), out.size());
    gaps[chunk >> 1] = saved;
    ASSERT_EQ(e.code, errc::bad_data) << "chunk " << chunk << " gap " << gap << " -> " << corrupt;
    EXPECT_EQ(b->status & 0xFF, static_cast<unsigned>(detail::kernel_fault::chunk_boundary));
    // The chunk's own group or, when it starts a group, the group before it.
    const std::uint64_t group = chunk / b->view.header().chunks_per_group;
    const std::uint64_t reported = b->status >> 8;
    EXPECT_TRUE(reported == group || reported + 1 == group) << reported << " vs " << group;
  }
}

// Flipped stream bits: whatever the executor accepts, the CPU decoder must decode identically
// (both check the codewords against the metadata; the executor per chunk, so it is stricter).
// Never a crash or an out-of-bounds access (CI runs this under AddressSanitizer).
TEST(KernelExecutor, FlippedStreamBitsNeverEscapeTheBundle) {
  const std::vector<std::uint16_t> values = heavy_tailed(3000, 13);
  const auto original = compress({values}, geometry(12, 8, 4));
  const auto layout = parse_bundle(original).value().layout();
  const std::uint64_t stream_bytes = (parse_bundle(original).value().stream_bits() + 7) / 8;
  int rejected = 0, accepted = 0;
  for (std::uint64_t i = 0; i < stream_bytes; ++i) {
    for (int bit = 0; bit < 8; bit += 3) {
      std::vector<std::byte> bytes = original;
      bytes[layout.stream_offset + i] ^= std::byte{static_cast<unsigned char>(1u << bit)};
      const bundle_view view = parse_bundle(bytes).value();
      std::vector<std::uint16_t> out(values.size(), 0);
      const error e = execute_kernel_on_cpu(view, std::span<std::uint16_t>(out));
      if (e) {
        ASSERT_EQ(e.code, errc::bad_data) << e.message;
        ++rejected;
        continue;
      }
      ++accepted;
      std::vector<std::uint16_t> reference(values.size(), 1);
      decode_options one_thread;
      one_thread.threads = 1;
      ASSERT_TRUE(decompress(view, reference, one_thread).ok()) << "byte " << i << " bit " << bit;
      ASSERT_EQ(out, reference) << "byte " << i << " bit " << bit;
    }
  }
  EXPECT_GT(rejected, 0);
  std::printf("flipped stream bits: %d rejected, %d decoded to other values\n", rejected, accepted);
}

// Agreement with the CPU decoder on data that is not made of BF16 weights at all.
TEST(KernelExecutor, AgreesWithCpuDecoderOnRandomBits) {
  std::mt19937_64 rng(17);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<std::uint16_t> values(1 + rng() % 70'000);
    for (auto& v : values) v = static_cast<std::uint16_t>(rng());
    const auto bytes =
        compress({values}, geometry(8 + trial % 8, 4 + rng() % 100, 1 + rng() % 600));
    const bundle_view view = parse_bundle(bytes).value();
    std::vector<std::uint16_t> a(values.size()), c(values.size());
    ASSERT_TRUE(execute_kernel_on_cpu(view, std::span<std::uint16_t>(a)).ok());
    ASSERT_TRUE(decompress(view, c).ok());
    ASSERT_EQ(a, values);
    ASSERT_EQ(c, values);
  }
}

// ---- every value format -------------------------------------------------------------------------
// The same kernel code for every format (value_format.hpp): each test runs per format, against
// the original values and the CPU decoder.

using test::all_patterns_of;
using test::compress_format;
using test::format_tensors;
using test::value_of;
using test::weights_of;

using test::all_formats;
using test::format_constant;
using test::format_name;

template <class C>
class KernelFormats : public testing::Test {};
TYPED_TEST_SUITE(KernelFormats, all_formats, format_name);

constexpr unsigned kUnitOf(value_format f) { return detail::slots_per_store(f); }

// Every bit pattern the format has (all 256 FP8 bytes, all 65,536 16-bit patterns, every high
// half of the 32-bit formats), in order and shuffled, at each code length limit and every store
// alignment; FP8's 256 patterns also repeated into many groups.
TYPED_TEST(KernelFormats, EveryPatternAtEveryAlignment) {
  constexpr value_format F = TypeParam::value;
  using T = value_of<F>;
  for (const bool shuffled : {false, true}) {
    std::vector<T> values = all_patterns_of<F>(shuffled);
    if (sizeof(T) == 1 && shuffled) {
      const std::vector<T> once = values;
      for (int copy = 1; copy < 400; ++copy) values.insert(values.end(), once.begin(), once.end());
      std::shuffle(values.begin(), values.end(), std::mt19937_64(3));
    }
    for (const int max_length : {8, 12, 15}) {
      SCOPED_TRACE(std::string(to_string(F)) + " max_code_length " + std::to_string(max_length) +
                   (shuffled ? " shuffled" : " in order") + ", " + std::to_string(values.size()) +
                   " values");
      const auto bytes = compress_format<F>({values}, geometry(max_length, 64, 256));
      ASSERT_EQ(parse_bundle(bytes).value().format(), F);
      expect_cpu_decoder_decodes(bytes, values);
      expect_all_shifts(bytes, values);
      if (this->HasFatalFailure()) return;
    }
  }
}

TYPED_TEST(KernelFormats, OddSizesAndGeometries) {
  constexpr value_format F = TypeParam::value;
  std::uint64_t seed = 31;
  for (const std::size_t n : test::odd_sizes()) {
    const auto values = weights_of<F>(n, ++seed);
    for (const auto& g : test::odd_geometries()) {
      SCOPED_TRACE("n " + std::to_string(n) + " chunk_bytes " + std::to_string(g.chunk_bytes) +
                   " chunks_per_group " + std::to_string(g.chunks_per_group));
      const auto bytes = compress_format<F>({values}, g);
      expect_executor_decodes(bytes, values, static_cast<unsigned>(n % kUnitOf(F)));
      if (this->HasFatalFailure()) return;
    }
  }
}

// Tensors of odd sizes, so that group boundaries fall at every offset in a store unit; small
// stages, so that each group is staged in several tiles.
TYPED_TEST(KernelFormats, ManyOddTensorsAndTiles) {
  constexpr value_format F = TypeParam::value;
  std::mt19937_64 rng(19);
  format_tensors<F> tensors;
  for (int i = 0; i < 120; ++i) {
    const std::size_t n = rng() % 4 == 0 ? rng() % 17 : rng() % 7000;
    tensors.push_back(weights_of<F>(n, rng(), 0.005f + 0.002f * static_cast<float>(i % 20)));
  }
  const auto bytes = compress_format<F>(tensors, {});
  const auto expected = test::concatenated(tensors);
  expect_cpu_decoder_decodes(bytes, expected);
  expect_all_shifts(bytes, expected);
  for (const std::uint32_t stage : {16u, 48u, 1000u, 20000u}) {
    SCOPED_TRACE("stage_bytes " + std::to_string(stage));
    cpu_executor_options options;
    options.stage_bytes = stage;
    expect_executor_decodes(bytes, expected, stage % kUnitOf(F), options);
    if (this->HasFatalFailure()) return;
  }
}

TYPED_TEST(KernelFormats, LargeBundle) {
  constexpr value_format F = TypeParam::value;
  const auto values = weights_of<F>(1'000'003, 21, 0.03f);
  const auto bytes = compress_format<F>({values}, {});
  expect_cpu_decoder_decodes(bytes, values);
  expect_executor_decodes(bytes, values, 1);
}

TYPED_TEST(KernelFormats, RealWeights) {
  constexpr value_format F = TypeParam::value;
  std::string skip_reason;
  const auto bundles = test::format_model_bundles<F>(skip_reason);
  if (bundles.empty()) GTEST_SKIP() << skip_reason;
  std::printf("%zu %s bundles from the real models\n", bundles.size(), to_string(F).data());
  for (const auto& bundle : bundles) {
    SCOPED_TRACE(bundle.name);
    const auto expected = test::concatenated(bundle.tensors);
    const auto bytes = compress_format<F>(bundle.tensors, {});
    expect_cpu_decoder_decodes(bytes, expected);
    expect_executor_decodes(bytes, expected,
                            static_cast<unsigned>(bundle.name.size() % kUnitOf(F)));
    if (this->HasFatalFailure()) return;
    if (bundle.name.ends_with("<whole file>")) {
      cpu_executor_options tiny_stage;
      tiny_stage.stage_bytes = 2048;
      expect_all_shifts(bytes, expected, tiny_stage);
    }
  }
}

// As FaultyGroupsAloneAreLeftUnwritten, for every format: the partial store units at the faulty
// groups' edges are the neighbours', which must be written, the faulty groups' values not.
TYPED_TEST(KernelFormats, FaultyGroupsAloneAreLeftUnwritten) {
  constexpr value_format F = TypeParam::value;
  using T = value_of<F>;
  const auto values = weights_of<F>(400'003, 8);
  auto b = make_host_kernel_bundle(compress_format<F>({values}, {}));
  const std::uint64_t groups = b->view.group_count();
  ASSERT_GE(groups, 4u);
  const std::uint64_t g = groups / 2;
  const std::uint64_t bad_first = b->view.group_value_position(g - 1);
  const std::uint64_t bad_end = b->view.group_value_position(g + 1);
  const std::uint64_t corrupt = b->view.group_value_position(g) + 1;
  std::memcpy(b->bytes.data() + b->view.layout().group_positions_offset + g * 8, &corrupt, 8);
  std::vector<T> out(values.size() + kUnitOf(F));
  // An output that starts mid store unit: the groups' edges fall at other offsets.
  T* start = out.data() + 1;
  for (std::size_t i = 0; i < values.size(); ++i) start[i] = static_cast<T>(~values[i]);
  const error e = execute_kernel_on_cpu(b->device_view, start, values.size());
  EXPECT_EQ(e.code, errc::bad_data);
  EXPECT_NE(e.message.find("group " + std::to_string(g - 1) + ":"), std::string::npos) << e.message;
  for (std::uint64_t i = 0; i < values.size(); ++i) {
    const bool in_bad_group = i >= bad_first && i < bad_end;
    ASSERT_EQ(start[i], in_bad_group ? static_cast<T>(~values[i]) : values[i]) << "value " << i;
  }
}

// Whatever the executor accepts from a corrupted stream, the CPU decoder decodes identically.
TYPED_TEST(KernelFormats, FlippedStreamBitsAgreeWithTheCpuDecoder) {
  constexpr value_format F = TypeParam::value;
  using T = value_of<F>;
  const auto values = weights_of<F>(3000, 13);
  const auto original = compress_format<F>({values}, geometry(12, 8, 4));
  const bundle_view parsed = parse_bundle(original).value();
  const std::uint64_t stream_offset = parsed.layout().stream_offset;
  const std::uint64_t stream_bytes = (parsed.stream_bits() + 7) / 8;
  int rejected = 0;
  for (std::uint64_t i = 0; i < stream_bytes; i += 3) {
    std::vector<std::byte> bytes = original;
    bytes[stream_offset + i] ^= std::byte{static_cast<unsigned char>(1u << (i % 8))};
    const bundle_view view = parse_bundle(bytes).value();
    std::vector<T> out(values.size(), 0);
    if (const error e = execute_kernel_on_cpu(view, std::span<T>(out))) {
      ASSERT_EQ(e.code, errc::bad_data) << e.message;
      ++rejected;
      continue;
    }
    std::vector<T> reference(values.size(), 1);
    decode_options one_thread;
    one_thread.threads = 1;
    ASSERT_TRUE(decompress(view, std::span<T>(reference), one_thread).ok()) << "byte " << i;
    ASSERT_TRUE(out == reference) << "byte " << i;
  }
  EXPECT_GT(rejected, 0);
}

// The launch checks that depend on the format: output width and alignment, and the planes a
// view of the format must (and must not) have.
TYPED_TEST(KernelFormats, LaunchChecksNameTheFormat) {
  constexpr value_format F = TypeParam::value;
  using T = value_of<F>;
  const auto values = weights_of<F>(5000, 1);
  auto b = make_host_kernel_bundle(compress_format<F>({values}, {}));
  EXPECT_EQ(b->device_view.format, F);
  std::vector<std::uint32_t> storage(values.size() + 16);
  auto* bytes = reinterpret_cast<std::byte*>(storage.data());
  const std::uint64_t size = values.size() * sizeof(T);
  // Every typed output of another width: invalid_argument naming the format.
  auto expect_wrong_width = [&](auto* typed) {
    using U = std::remove_pointer_t<decltype(typed)>;
    if (sizeof(U) == sizeof(T)) return;
    const error e = execute_kernel_on_cpu(b->device_view, typed, storage.size());
    EXPECT_EQ(e.code, errc::invalid_argument) << e.message;
    EXPECT_NE(e.message.find(std::string(to_string(F))), std::string::npos) << e.message;
    std::vector<U> host_out(values.size() * 4);
    const error on_bundle = execute_kernel_on_cpu(b->view, std::span<U>(host_out));
    EXPECT_EQ(on_bundle.code, errc::invalid_argument) << on_bundle.message;
  };
  expect_wrong_width(reinterpret_cast<std::uint8_t*>(bytes));
  expect_wrong_width(reinterpret_cast<std::uint16_t*>(bytes));
  expect_wrong_width(reinterpret_cast<std::uint32_t*>(bytes));
  // Bytes: any size short of the values is insufficient; a pointer off the value width invalid.
  EXPECT_EQ(execute_kernel_on_cpu(b->device_view, bytes, size - 1).code, errc::insufficient_space);
  if (sizeof(T) > 1) {
    EXPECT_EQ(execute_kernel_on_cpu(b->device_view, bytes + 1, size).code, errc::invalid_argument);
  }
  std::vector<T> out(values.size());
  EXPECT_TRUE(
      execute_kernel_on_cpu(b->device_view, reinterpret_cast<std::byte*>(out.data()), size).ok());
  EXPECT_TRUE(out == values);
  // The planes: a view that lacks one its format has, or has one its format has not.
  auto expect_invalid = [&](auto mutate, const char* what) {
    device_bundle_view v = b->device_view;
    mutate(v);
    const error e = execute_kernel_on_cpu(v, out.data(), out.size());
    EXPECT_EQ(e.code, errc::invalid_argument) << what << ": " << e.message;
  };
  const std::uint8_t* some_bytes = b->device_view.exponent_stream;
  const auto* some_halves = reinterpret_cast<const std::uint16_t*>(some_bytes);
  if (format_traits<F>::has_raw_byte) {
    expect_invalid([](device_bundle_view& v) { v.raw_bytes = nullptr; }, "raw bytes missing");
  } else {
    expect_invalid([&](device_bundle_view& v) { v.raw_bytes = some_bytes; }, "raw bytes extra");
  }
  if (format_traits<F>::has_low_half) {
    expect_invalid([](device_bundle_view& v) { v.low_halves = nullptr; }, "low halves missing");
    expect_invalid([](device_bundle_view& v) { v.low_halves += 1; }, "low halves misaligned");
  } else {
    expect_invalid([&](device_bundle_view& v) { v.low_halves = some_halves; }, "low halves extra");
  }
  expect_invalid(
      [](device_bundle_view& v) { v.format = static_cast<value_format>(kValueFormatCount); },
      "unknown format");
}

TEST(KernelExecutor, Fp32SpecialsAtEveryAlignment) {
  const std::vector<std::uint32_t> specials = test::fp32_specials();
  // Alone, and scattered among weights (so that they share store units with ordinary values).
  std::vector<std::uint32_t> mixed = test::heavy_tailed_fp32(100'000, 4);
  std::mt19937_64 rng(8);
  for (const std::uint32_t s : specials) mixed[rng() % mixed.size()] = s;
  for (const auto& values : {specials, mixed}) {
    for (const int max_length : {12, 15}) {
      const auto bytes =
          test::compress_format<value_format::fp32>({values}, geometry(max_length, 64, 256));
      expect_cpu_decoder_decodes(bytes, values);
      expect_all_shifts(bytes, values);
      if (this->HasFatalFailure()) return;
    }
  }
  // The high halves of the specials, widened: BF16-in-FP32 keeps NaN payloads and signs too.
  std::vector<std::uint32_t> widened;
  for (const std::uint32_t s : specials) widened.push_back(s & 0xFFFF0000u);
  const auto bytes = test::compress_format<value_format::bf16_in_fp32>({widened}, {});
  expect_cpu_decoder_decodes(bytes, widened);
  expect_all_shifts(bytes, widened);
}

TEST(KernelExecutor, Fp32RandomBits) {
  std::mt19937_64 rng(29);
  for (int trial = 0; trial < 6; ++trial) {
    std::vector<std::uint32_t> values(1 + rng() % 90'000);
    for (auto& v : values) v = static_cast<std::uint32_t>(rng());
    const auto bytes = test::compress_format<value_format::fp32>(
        {values}, geometry(8 + trial, 4 + rng() % 100, 1 + rng() % 600));
    expect_cpu_decoder_decodes(bytes, values);
    expect_executor_decodes(bytes, values, trial % 4);
    if (this->HasFatalFailure()) return;
  }
}

// ---- the wide merges ----------------------------------------------------------------------------

// Every format of value_format.hpp but bf16_in_fp16 gets a wide merge, not the value-by-value
// fallback.
TEST(KernelLogic, EveryFormatHasAWideMerge) {
  using detail::merge_shape;
  using detail::merge_shape_of;
  EXPECT_EQ(merge_shape_of<format_traits<value_format::bf16>>(), merge_shape::bf16_split);
  EXPECT_NE(merge_shape_of<format_traits<value_format::fp16>>(), merge_shape::per_value);
  EXPECT_EQ(merge_shape_of<format_traits<value_format::fp32>>(), merge_shape::bf16_split);
  EXPECT_EQ(merge_shape_of<format_traits<value_format::bf16_in_fp32>>(), merge_shape::bf16_split);
  EXPECT_EQ(merge_shape_of<format_traits<value_format::fp8_e4m3>>(), merge_shape::symbol_only);
  EXPECT_EQ(merge_shape_of<format_traits<value_format::fp8_e5m2>>(), merge_shape::symbol_only);
  // bf16_in_fp16: BF16's merge, then FP16 rounding toward zero (up to symbol 142; beyond, value
  // by value through the traits).
  EXPECT_EQ(merge_shape_of<format_traits<value_format::bf16_in_fp16>>(),
            merge_shape::bf16_narrowed);
}

// Traits of no shape the kernel knows (a split no format uses), to drive the fallback and the
// shapes: one value's bits are a fixed permutation of the symbol, raw byte and low half.
template <class T, bool Raw, bool Low, int Kind>
struct test_traits {
  using value_type = T;
  static constexpr bool has_raw_byte = Raw;
  static constexpr bool has_low_half = Low;
  static constexpr value_type merge(std::uint8_t symbol, std::uint8_t raw, std::uint16_t low) {
    if constexpr (Kind == 0) {  // no known shape
      if constexpr (sizeof(T) == 1) return static_cast<T>(~symbol);
      if constexpr (sizeof(T) == 2) return static_cast<T>(raw << 8 | (symbol ^ 0x5A));
      return static_cast<T>(std::uint32_t{low} << 16 | std::uint32_t{symbol} << 8 | raw);
    } else if constexpr (Kind == 1) {  // byte concatenation
      return static_cast<T>(symbol << 8 | raw);
    } else {  // the BF16 split
      if constexpr (sizeof(T) == 4) {
        return static_cast<T>(std::uint32_t{bf16_merge(symbol, raw)} << 16 | (Low ? low : 0));
      }
      return static_cast<T>(bf16_merge(symbol, raw));
    }
  }
};

template <class Traits, bool Aligned>
void expect_unit_merge_matches_traits(detail::merge_shape expected_shape) {
  using T = typename Traits::value_type;
  constexpr unsigned kUnit = 16 / sizeof(T);
  ASSERT_EQ(detail::merge_shape_of<Traits>(), expected_shape);
  std::mt19937_64 rng(sizeof(T) * 7 + Aligned);
  alignas(16) std::array<std::uint8_t, 64> raw;
  alignas(16) std::array<std::uint16_t, 64> low;
  alignas(16) std::array<std::uint8_t, 16> symbols;
  alignas(16) std::array<T, 64> out;
  for (int trial = 0; trial < 200; ++trial) {
    for (auto& x : raw) x = static_cast<std::uint8_t>(rng());
    for (auto& x : low) x = static_cast<std::uint16_t>(rng());
    for (auto& x : symbols) x = static_cast<std::uint8_t>(rng());
    // A unit-aligned position, or (not Aligned) one the raw planes are misaligned at, as the
    // shifted loops use it: the output stays 16-byte aligned.
    const std::uint64_t pos = kUnit * (1 + rng() % 2) + (Aligned ? 0 : 1 + rng() % (kUnit - 1));
    // out_base + pos is 16-byte aligned: out is, and (out_base - out) + pos is a multiple of kUnit.
    T* const out_base = out.data() + (Aligned ? 0 : kUnit - pos % kUnit);
    detail::unit_merge<Traits>::template store<Aligned>(out_base, symbols.data(), raw.data(),
                                                        low.data(), pos);
    for (unsigned i = 0; i < kUnit; ++i) {
      const T expected = Traits::merge(symbols[i], Traits::has_raw_byte ? raw[pos + i] : 0,
                                       Traits::has_low_half ? low[pos + i] : 0);
      ASSERT_EQ(out_base[pos + i], expected) << "value " << i << " pos " << pos;
    }
  }
}

TEST(KernelLogic, UnitMergesOfEveryShapeMatchTheTraits) {
  using detail::merge_shape;
  for (const bool aligned : {true, false}) {
    SCOPED_TRACE(aligned ? "aligned" : "shifted");
    auto run = [&]<class Traits>(merge_shape shape) {
      if (aligned) {
        expect_unit_merge_matches_traits<Traits, true>(shape);
      } else if (Traits::has_raw_byte) {
        expect_unit_merge_matches_traits<Traits, false>(shape);
      }
    };
    run.template operator()<test_traits<std::uint16_t, true, false, 0>>(merge_shape::per_value);
    run.template operator()<test_traits<std::uint16_t, true, false, 1>>(merge_shape::byte_concat);
    run.template operator()<test_traits<std::uint16_t, true, false, 2>>(merge_shape::bf16_split);
    run.template operator()<test_traits<std::uint32_t, true, true, 0>>(merge_shape::per_value);
    run.template operator()<test_traits<std::uint32_t, true, true, 2>>(merge_shape::bf16_split);
    run.template operator()<test_traits<std::uint32_t, true, false, 2>>(merge_shape::bf16_split);
    run.template operator()<test_traits<std::uint8_t, false, false, 0>>(merge_shape::per_value);
    run.template operator()<format_traits<value_format::fp8_e4m3>>(merge_shape::symbol_only);
    run.template operator()<format_traits<value_format::fp16>>(
        detail::merge_shape_of<format_traits<value_format::fp16>>());
    run.template operator()<format_traits<value_format::bf16_in_fp16>>(merge_shape::bf16_narrowed);
  }
}

// ---- bf16_in_fp16's wide merge (BF16's merge, then FP16 rounding toward zero) -----------------

// The host's model of the device's cvt.rz.f16.f32 against the x86 F16C conversion with
// round-toward-zero (vcvtps2ph, imm 3), an independent implementation of the same IEEE rounding:
// every FP32 value with a zero low half (what the kernel converts: BF16 values) and random FP32
// values, NaNs apart (F16C keeps a NaN's payload, the GPU gives the canonical NaN).
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("f16c"))) std::uint16_t f16c_rz(std::uint32_t f) {
  const __m128 x = _mm_castsi128_ps(_mm_cvtsi32_si128(static_cast<int>(f)));
  return static_cast<std::uint16_t>(_mm_extract_epi16(_mm_cvtps_ph(x, _MM_FROUND_TO_ZERO), 0));
}
#endif

TEST(KernelLogic, Fp16FromFp32RoundedTowardZeroMatchesF16c) {
#if defined(__x86_64__) || defined(__i386__)
  if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "this CPU has no F16C";
  auto is_nan = [](std::uint32_t f) { return (f & 0x7F800000u) == 0x7F800000u && (f & 0x7FFFFFu); };
  std::vector<std::uint32_t> inputs;
  for (std::uint32_t high = 0; high < 0x10000; ++high) inputs.push_back(high << 16);
  std::mt19937 rng(41);
  for (int i = 0; i < 1'000'000; ++i) inputs.push_back(rng());
  for (const std::uint32_t edge : {0x477FEFFFu, 0x477FF000u, 0x477FE000u, 0x38800000u, 0x387FFFFFu,
                                   0x33800000u, 0x337FFFFFu, 0x00000001u, 0x80800000u}) {
    inputs.push_back(edge);
    inputs.push_back(edge | 0x80000000u);
  }
  int checked = 0;
  for (const std::uint32_t f : inputs) {
    if (is_nan(f)) {
      ASSERT_EQ(detail::fp16_from_fp32_rz(f), 0x7FFF) << std::hex << f;
      continue;
    }
    ASSERT_EQ(detail::fp16_from_fp32_rz(f), f16c_rz(f)) << std::hex << f;
    ++checked;
  }
  EXPECT_GT(checked, 1'000'000);
#else
  GTEST_SKIP() << "no x86 F16C on this machine";
#endif
}

// Counts the units merged value by value (unit_merge's fallback); ignores every other event.
struct by_traits_counter : detail::no_probe {
  std::uint64_t* units;
  void merge_by_traits() const { ++*units; }
};

// Every (symbol, raw byte) pair through unit_merge's bf16_narrowed store, against the traits (the
// CPU decoder's merge): in units of one symbol (the wide path for symbols up to 142, the fallback
// above), and in units of common pairs with one pair of a symbol above 142 at each position.
// The probe proves which units took the fallback.
template <bool Aligned>
void expect_bf16_in_fp16_units_match_traits() {
  using traits = format_traits<value_format::bf16_in_fp16>;
  using unit_merge = detail::unit_merge<traits>;
  ASSERT_EQ(unit_merge::kShape, detail::merge_shape::bf16_narrowed);
  std::vector<std::pair<std::uint8_t, std::uint8_t>> pairs;  // (symbol, raw byte)
  for (unsigned symbol = 0; symbol < 256; ++symbol) {
    for (unsigned raw = 0; raw < 256; ++raw) pairs.emplace_back(symbol, raw);
  }
  // Then the common pairs (symbol <= 142) shuffled, with every 8th unit's pair k replaced by a
  // rare one (symbol 143..255), k = 0..7 in turn.
  std::vector<std::pair<std::uint8_t, std::uint8_t>> common, rare;
  for (const auto& p : pairs) (p.first <= detail::kNarrowMaxSymbol ? common : rare).push_back(p);
  std::shuffle(common.begin(), common.end(), std::mt19937_64(17));
  std::shuffle(rare.begin(), rare.end(), std::mt19937_64(19));
  std::uint64_t expected_fallbacks = 0;
  for (unsigned symbol = 0; symbol < 256; ++symbol) {
    expected_fallbacks += symbol > detail::kNarrowMaxSymbol ? 32 : 0;  // 256 raw bytes / 8
  }
  for (std::size_t i = 0; i + 8 <= common.size(); i += 8) {
    const std::size_t unit = i / 8;
    if (unit % 8 == 0) {
      common[i + unit / 8 % 8] = rare[unit / 8 % rare.size()];
      ++expected_fallbacks;
    }
    pairs.insert(pairs.end(), common.begin() + i, common.begin() + i + 8);
  }
  constexpr unsigned kUnit = 8;
  // Raw bytes at a unit-aligned position, or one the raw plane is misaligned at (the shifted loop).
  const std::uint64_t lead = Aligned ? 0 : 3;
  std::vector<std::uint8_t> raw(lead + pairs.size() + 16);
  alignas(16) std::array<std::uint8_t, 8> symbols;
  // The output 16-byte aligned at out_base + pos for every unit's pos = lead + first.
  std::vector<std::uint16_t> out(pairs.size() + 32);
  std::uint16_t* const aligned =
      out.data() + (16 - reinterpret_cast<std::uintptr_t>(out.data()) % 16) % 16 / 2;
  std::uint16_t* const out_base = aligned + (kUnit - lead) % kUnit;
  std::uint64_t fallbacks = 0;
  const by_traits_counter probe{{}, &fallbacks};
  for (std::size_t i = 0; i < pairs.size(); ++i) raw[lead + i] = pairs[i].second;
  for (std::size_t first = 0; first < pairs.size(); first += kUnit) {
    for (unsigned k = 0; k < kUnit; ++k) symbols[k] = pairs[first + k].first;
    const std::uint64_t pos = lead + first;
    unit_merge::template store<Aligned>(out_base, symbols.data(), raw.data(), nullptr, pos, probe);
    for (unsigned k = 0; k < kUnit; ++k) {
      const auto [symbol, raw_byte] = pairs[first + k];
      ASSERT_EQ(out_base[pos + k], traits::merge(symbol, raw_byte, 0))
          << "symbol " << unsigned{symbol} << " raw byte " << unsigned{raw_byte};
    }
  }
  EXPECT_EQ(fallbacks, expected_fallbacks);
}

TEST(KernelLogic, Bf16InFp16WideMergeAndFallbackMatchTheTraitsForEveryPair) {
  expect_bf16_in_fp16_units_match_traits<true>();
  expect_bf16_in_fp16_units_match_traits<false>();
}

// An executor observer whose probes count the units merged value by value.
struct by_traits_observer {
  std::uint64_t units = 0;
  by_traits_counter probe(unsigned /*thread*/) { return {{}, &units}; }
  void barrier(detail::executor_phase /*phase*/, unsigned /*threads*/) {}
};

// The whole kernel on the CPU executor for every FP16 pattern bf16_in_fp16 accepts: units of
// common values only (the wide path), units where an infinity or NaN (symbol 255, the fallback)
// sits among common values at every position, every pattern shuffled; groups starting inside
// store units (small odd chunks), every output alignment; against the CPU decoder, with a count
// of the fallback units proving which path ran.
TEST(KernelExecutor, Bf16InFp16WideMergeAndFallbackAgreeWithTheCpuDecoder) {
  constexpr value_format F = value_format::bf16_in_fp16;
  using traits = format_traits<F>;
  const std::vector<std::uint16_t> accepted = all_patterns_of<F>(true);
  std::vector<std::uint16_t> common, rare;
  for (const std::uint16_t v : accepted) {
    (traits::symbol(v) <= detail::kNarrowMaxSymbol ? common : rare).push_back(v);
  }
  ASSERT_EQ(accepted.size(), 8960u);
  ASSERT_EQ(rare.size(), 256u);  // +-infinity and the NaNs FP16 and BF16 share
  // A rare value after every 13 common ones, so that it lands at each position of a unit.
  std::vector<std::uint16_t> mixed;
  for (std::size_t i = 0; i < common.size(); ++i) {
    mixed.push_back(common[i]);
    if (i % 13 == 12) mixed.push_back(rare[i / 13 % rare.size()]);
  }
  struct input {
    const char* name;
    const std::vector<std::uint16_t>* values;
    bool fallback;
  };
  for (const input& in : {input{"common values", &common, false}, input{"mixed", &mixed, true},
                          input{"every accepted pattern", &accepted, true}}) {
    for (const encode_options& options :
         {geometry(12, 64, 256), geometry(12, 5, 3), geometry(15, 16, 3), geometry(12, 16, 1000)}) {
      SCOPED_TRACE(std::string(in.name) + ", chunk_bytes " + std::to_string(options.chunk_bytes) +
                   " chunks_per_group " + std::to_string(options.chunks_per_group));
      const auto bytes = compress_format<F>({*in.values}, options);
      expect_cpu_decoder_decodes(bytes, *in.values);
      expect_all_shifts(bytes, *in.values);
      if (HasFatalFailure()) return;
      // The same run with the counting probes, into a 16-byte aligned output.
      const auto b = make_host_kernel_bundle(bytes);
      ASSERT_EQ(b->view.value_count(), in.values->size());
      std::vector<std::uint16_t> storage(in.values->size() + 8);
      std::uint16_t* const out =
          storage.data() + (16 - reinterpret_cast<std::uintptr_t>(storage.data()) % 16) % 16 / 2;
      by_traits_observer observer;
      const error e = b->device_view.table_bits == kGpuTableBitsSmall
                          ? detail::execute_kernel<F, kGpuTableBitsSmall>(b->device_view, out, 4096,
                                                                          256, observer)
                          : detail::execute_kernel<F, kGpuTableBitsLarge>(b->device_view, out, 4096,
                                                                          256, observer);
      ASSERT_TRUE(e.ok()) << e.message;
      ASSERT_TRUE(std::equal(in.values->begin(), in.values->end(), out));
      if (in.fallback) {
        EXPECT_GT(observer.units, 0u);
      } else {
        EXPECT_EQ(observer.units, 0u);
      }
    }
  }
}

TEST(KernelLogic, LoadSection4AtEveryMisalignment) {
  alignas(16) std::array<std::uint8_t, 48> bytes;
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 29 + 3);
  for (std::uint64_t pos = 0; pos + 4 <= 40; ++pos) {
    const std::uint32_t got = detail::load_section4(bytes.data(), pos);
    for (unsigned k = 0; k < 4; ++k) {
      ASSERT_EQ((got >> (8 * k)) & 0xFF, bytes[pos + k]) << "pos " << pos << " byte " << k;
    }
  }
}

}  // namespace
}  // namespace floatzip
