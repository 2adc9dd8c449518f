// Every float format through the .fzip container (issue 12): the dtype -> value format plan,
// byte-exact round trips of mixed-dtype files made from the real models (BF16, F16, F32,
// BF16-in-F32, F8_E4M3, F8_E5M2 and raw dtypes in one file), grouping, packing, splitting and the
// verbatim fallback per format, files written before the other formats existed, and hostile
// indexes whose formats disagree with the dtypes or with the bundles.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "../bench/format_files.hpp"
#include "container_test_util.hpp"
#include "floatzip/container.hpp"

namespace floatzip {
namespace {

using testing::open_and_read_everything;
using testing::temp_dir;
namespace fs = std::filesystem;
namespace ff = format_files;
using safetensors::dtype;

// ---- helpers ------------------------------------------------------------------------------------

std::vector<std::byte> random_bytes(std::size_t n, std::uint32_t seed) {
  std::vector<std::byte> out(n);
  std::mt19937 rng(seed);
  for (auto& b : out) b = static_cast<std::byte>(rng());
  return out;
}

// Weight-like values of a dtype: normal(0, scale), rounded to the dtype (F8 through a scale).
ff::tensor weights(const std::string& name, dtype type, std::size_t n, std::uint32_t seed,
                   bool widened = false) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  ff::tensor f32{name, dtype::f32, {n}, std::vector<std::byte>(4 * n)};
  for (std::size_t i = 0; i < n; ++i) {
    float v = normal(rng);
    std::uint32_t bits;
    std::memcpy(&bits, &v, 4);
    if (widened || type == dtype::bf16) bits &= 0xFFFF0000u;
    std::memcpy(f32.data.data() + 4 * i, &bits, 4);
  }
  switch (type) {
    case dtype::f32: return f32;
    case dtype::bf16: {
      ff::tensor t{name, dtype::bf16, {n}, std::vector<std::byte>(2 * n)};
      for (std::size_t i = 0; i < n; ++i)
        std::memcpy(t.data.data() + 2 * i, f32.data.data() + 4 * i + 2, 2);
      return t;
    }
    case dtype::f16: {
      ff::tensor t{name, dtype::f16, {n}, std::vector<std::byte>(2 * n)};
      for (std::size_t i = 0; i < n; ++i) {
        float v;
        std::memcpy(&v, f32.data.data() + 4 * i, 4);
        const std::uint16_t h = test::float_to_fp16(v);
        std::memcpy(t.data.data() + 2 * i, &h, 2);
      }
      return t;
    }
    case dtype::f8_e4m3:
    case dtype::f8_e5m2:
      return ff::to_fp8(f32, type == dtype::f8_e4m3 ? ff::fp8_kind::e4m3 : ff::fp8_kind::e5m2)
          .first;
    default: throw std::runtime_error("weights: no such float dtype");
  }
}

struct compressed {
  std::vector<std::byte> original;
  fs::path fzip;
  container_totals totals;
};

compressed compress_tensors(const temp_dir& dir, const std::vector<ff::tensor>& tensors,
                            const compress_options& options = {}, const std::string& stem = "f") {
  compressed c;
  c.original = ff::safetensors_bytes(tensors);
  testing::write_file(dir / (stem + ".safetensors"), c.original);
  c.fzip = dir / (stem + ".fzip");
  auto totals = compress_file(dir / (stem + ".safetensors"), c.fzip, options);
  if (!totals) throw exception(totals.error());
  c.totals = *totals;
  return c;
}

// Decompresses and verifies; reads every tensor through read_tensor and every bundle through
// decode_bundle, comparing with the original bytes.
void expect_exact_everywhere(const temp_dir& dir, const compressed& c) {
  const fs::path back = dir / "back.safetensors";
  const error d = decompress_file(c.fzip, back);
  ASSERT_FALSE(d) << d.message;
  EXPECT_EQ(testing::read_file(back), c.original);
  const fs::path source = fs::path(c.fzip).replace_extension(".safetensors");
  const error v = verify_file(source, c.fzip);
  ASSERT_FALSE(v) << v.message;
  auto reader = container_reader::open(c.fzip).value();
  const error all = reader.verify_all();
  ASSERT_FALSE(all) << all.message;
  const std::size_t data_start = reader.original_header().header_size();
  for (const auto& t : reader.tensors()) {
    std::vector<std::byte> out(t.size_bytes());
    const error e = reader.read_tensor(t, out);
    ASSERT_FALSE(e) << e.message;
    EXPECT_EQ(0, t.size_bytes() == 0
                     ? 0
                     : std::memcmp(out.data(), c.original.data() + data_start + t.original.begin,
                                   out.size()))
        << t.name;
  }
}

// ---- the plan -----------------------------------------------------------------------------------

TEST(ContainerFormats, DtypeToFormat) {
  EXPECT_EQ(container_format_of(dtype::bf16, false), value_format::bf16);
  EXPECT_EQ(container_format_of(dtype::f16, false), value_format::fp16);
  EXPECT_EQ(container_format_of(dtype::f32, false), value_format::fp32);
  EXPECT_EQ(container_format_of(dtype::f32, true), value_format::bf16_in_fp32);
  EXPECT_EQ(container_format_of(dtype::f16, true), value_format::bf16_in_fp16);
  EXPECT_EQ(container_format_of(dtype::f8_e4m3, false), value_format::fp8_e4m3);
  EXPECT_EQ(container_format_of(dtype::f8_e5m2, false), value_format::fp8_e5m2);
  for (dtype raw : {dtype::boolean, dtype::u8, dtype::i8, dtype::i16, dtype::u16, dtype::i32,
                    dtype::u32, dtype::f64, dtype::i64, dtype::u64, dtype::f8_e8m0, dtype::c64,
                    dtype::f4, dtype::f6_e2m3, dtype::f6_e3m2})
    EXPECT_FALSE(container_format_of(raw, true)) << safetensors::to_string(raw);
  EXPECT_TRUE(dtype_holds_format(dtype::f32, value_format::fp32));
  EXPECT_TRUE(dtype_holds_format(dtype::f32, value_format::bf16_in_fp32));
  EXPECT_FALSE(dtype_holds_format(dtype::f16, value_format::bf16));
  EXPECT_FALSE(dtype_holds_format(dtype::bf16, value_format::bf16_in_fp32));
  EXPECT_TRUE(dtype_holds_format(dtype::f16, value_format::fp16));
  EXPECT_TRUE(dtype_holds_format(dtype::f16, value_format::bf16_in_fp16));
  EXPECT_FALSE(dtype_holds_format(dtype::f32, value_format::bf16_in_fp16));
  EXPECT_FALSE(dtype_holds_format(dtype::bf16, value_format::bf16_in_fp16));
  EXPECT_EQ(raw_plane_bits(value_format::bf16_in_fp16), 8u);
  // Which F16 and F32 tensors hold BF16 values (one value each: 1.0 = 0x3C00 is, 1 + 2^-10 =
  // 0x3C01 is not; F32 1.0 = 0x3F800000 is, 0x3F800001 is not).
  const std::uint16_t h[] = {0x3C00, 0x3C01};
  const std::uint32_t w[] = {0x3F800000u, 0x3F800001u};
  EXPECT_TRUE(holds_bf16_values(dtype::f16, std::as_bytes(std::span(h, 1))));
  EXPECT_FALSE(holds_bf16_values(dtype::f16, std::as_bytes(std::span(h))));
  EXPECT_TRUE(holds_bf16_values(dtype::f32, std::as_bytes(std::span(w, 1))));
  EXPECT_FALSE(holds_bf16_values(dtype::f32, std::as_bytes(std::span(w))));
  EXPECT_FALSE(holds_bf16_values(dtype::bf16, std::as_bytes(std::span(h, 1))));
  EXPECT_EQ(raw_plane_bits(value_format::fp32), 24u);
  EXPECT_EQ(raw_plane_bits(value_format::bf16_in_fp32), 8u);
  EXPECT_EQ(raw_plane_bits(value_format::fp8_e5m2), 0u);
}

// One block of every float dtype plus loose tensors: a bundle per (format, group), loose tensors
// packed per format, F32 split by its low halves, raw dtypes raw.
TEST(ContainerFormats, FormatsNeverShareABundle) {
  temp_dir dir;
  std::vector<ff::tensor> tensors;
  std::uint32_t seed = 1;
  for (dtype type : {dtype::bf16, dtype::f16, dtype::f32, dtype::f8_e4m3, dtype::f8_e5m2}) {
    tensors.push_back(weights("model.layers.0.a." + std::string(safetensors::to_string(type)), type,
                              3000, seed++));
    tensors.push_back(weights("model.layers.0.b." + std::string(safetensors::to_string(type)), type,
                              2000, seed++));
    tensors.push_back(
        weights("loose.a." + std::string(safetensors::to_string(type)), type, 3000, seed++));
    tensors.push_back(
        weights("loose.b." + std::string(safetensors::to_string(type)), type, 2500, seed++));
  }
  tensors.push_back(weights("model.layers.0.widened", dtype::f32, 4000, seed++, true));
  tensors.push_back(weights("loose.widened", dtype::f32, 900, seed++, true));
  // BF16 values saved as F16.
  tensors.push_back(weights("model.layers.0.f16_of_bf16.widened", dtype::f16, 4000, seed++, true));
  tensors.push_back(weights("loose.f16_of_bf16.widened", dtype::f16, 900, seed++, true));
  tensors.push_back({"ids", dtype::i64, {4}, random_bytes(32, 9)});
  const auto c = compress_tensors(dir, tensors);
  auto reader = container_reader::open(c.fzip).value();
  EXPECT_EQ(reader.version_minor(), 1);
  std::map<std::pair<value_format, bool>, std::set<std::uint32_t>> bundles_of;  // (format, block)
  for (std::uint32_t b = 0; b < reader.bundles().size(); ++b) {
    const auto& rec = reader.bundles()[b];
    const auto members = reader.bundle_tensors(b);
    if (!rec.has_values()) {
      ASSERT_EQ(members.size(), 1u);
      EXPECT_EQ(reader.tensors()[members[0]].name, "ids");
      continue;
    }
    EXPECT_EQ(rec.kind, bundle_kind::huffman) << b;
    EXPECT_LT(rec.stored_bytes, rec.decoded_bytes) << b;
    const bool block = reader.tensors()[members[0]].name.starts_with("model.layers.0.");
    for (std::uint32_t m : members) {
      const auto& t = reader.tensors()[m];
      EXPECT_TRUE(dtype_holds_format(t.type, rec.format)) << t.name;
      EXPECT_EQ(t.name.starts_with("model.layers.0."), block) << t.name;
      const bool widened = t.name.ends_with("widened");
      if (t.type == dtype::f32) {
        EXPECT_EQ(rec.format, widened ? value_format::bf16_in_fp32 : value_format::fp32) << t.name;
      }
      if (t.type == dtype::f16) {
        EXPECT_EQ(rec.format, widened ? value_format::bf16_in_fp16 : value_format::fp16) << t.name;
      }
    }
    bundles_of[{rec.format, block}].insert(b);
  }
  // Exactly one block bundle and one packed bundle per format.
  EXPECT_EQ(bundles_of.size(), 2 * kValueFormatCount);
  for (const auto& [key, set] : bundles_of) EXPECT_EQ(set.size(), 1u);
  for (unsigned f = 0; f < kValueFormatCount; ++f) {
    const auto& ft = c.totals.formats[f];
    EXPECT_EQ(ft.bundle_count, 2u) << f;
    EXPECT_GT(ft.values, 0u);
    EXPECT_EQ(ft.original_bytes, ft.values * value_bytes(static_cast<value_format>(f)));
    EXPECT_LT(ft.stored_bytes, ft.original_bytes);
  }
  EXPECT_EQ(c.totals.bf16_values, c.totals.of(value_format::bf16).values);
  expect_exact_everywhere(dir, c);
}

TEST(ContainerFormats, VerbatimWhenCodingWouldNotShrinkEveryFormat) {
  temp_dir dir;
  std::vector<ff::tensor> tensors;
  std::uint32_t seed = 40;
  for (dtype type : {dtype::bf16, dtype::f16, dtype::f32, dtype::f8_e4m3, dtype::f8_e5m2}) {
    const std::size_t bytes = 4096;
    tensors.push_back({"noise." + std::string(safetensors::to_string(type)),
                       type,
                       {bytes / (safetensors::dtype_bits(type) / 8)},
                       random_bytes(bytes, seed++)});
  }
  const auto c = compress_tensors(dir, tensors);
  auto reader = container_reader::open(c.fzip).value();
  std::set<value_format> seen;
  for (const auto& rec : reader.bundles()) {
    ASSERT_TRUE(rec.has_values());
    EXPECT_EQ(rec.kind, bundle_kind::verbatim) << to_string(rec.format);
    EXPECT_EQ(rec.stored_bytes, rec.decoded_bytes);
    seen.insert(rec.format);
  }
  // Random F32 bits have non-zero low halves: fp32, never bf16_in_fp32.
  EXPECT_EQ(seen,
            (std::set<value_format>{value_format::bf16, value_format::fp16, value_format::fp32,
                                    value_format::fp8_e4m3, value_format::fp8_e5m2}));
  EXPECT_LE(c.totals.file_bytes, c.original.size() + 4096);  // header, index: no bundle grew
  expect_exact_everywhere(dir, c);
}

TEST(ContainerFormats, TensorsBiggerThanTheBundleLimitAreSplitInEveryFormat) {
  temp_dir dir;
  std::vector<ff::tensor> tensors;
  std::uint32_t seed = 60;
  for (dtype type : {dtype::bf16, dtype::f16, dtype::f32, dtype::f8_e4m3, dtype::f8_e5m2})
    tensors.push_back(
        weights("big." + std::string(safetensors::to_string(type)), type, 3501, seed++));
  tensors.push_back(weights("big.widened", dtype::f32, 2222, seed++, true));
  tensors.push_back(weights("big.f16_of_bf16", dtype::f16, 2345, seed++, true));
  compress_options options;
  options.max_bundle_values = 1000;
  const auto c = compress_tensors(dir, tensors, options);
  auto reader = container_reader::open(c.fzip).value();
  for (const auto& b : reader.bundles()) EXPECT_LE(b.value_count, 1000u);
  for (const auto& t : reader.tensors()) {
    const std::uint64_t values = t.size_bytes() / value_bytes(reader.bundles()[t.bundle].format);
    EXPECT_EQ(t.bundle_count, (values + 999) / 1000) << t.name;
    std::uint64_t first = 0;
    for (std::uint32_t b = t.bundle; b < t.bundle + t.bundle_count; ++b) {
      EXPECT_EQ(reader.tensor_piece(b, t).first, first);
      first += reader.tensor_piece(b, t).values;
    }
    EXPECT_EQ(first, values) << t.name;
  }
  expect_exact_everywhere(dir, c);
}

TEST(ContainerFormats, GroupingPresetsKeepFormatsApart) {
  temp_dir dir;
  std::vector<ff::tensor> tensors;
  std::uint32_t seed = 80;
  for (int layer = 0; layer < 2; ++layer)
    for (dtype type : {dtype::bf16, dtype::f16, dtype::f8_e4m3})
      tensors.push_back(weights("transformer_blocks." + std::to_string(layer) + ".w." +
                                    std::string(safetensors::to_string(type)),
                                type, 1500, seed++));
  for (const char* spec : {"auto", "diffusion", "none", "regex:blocks\\.(\\d+)"}) {
    SCOPED_TRACE(spec);
    compress_options options;
    options.group = parse_grouping(spec).value();
    const auto c = compress_tensors(dir, tensors, options);
    auto reader = container_reader::open(c.fzip).value();
    for (std::uint32_t b = 0; b < reader.bundles().size(); ++b) {
      std::set<dtype> types;
      std::set<char> layers;
      for (std::uint32_t m : reader.bundle_tensors(b)) {
        types.insert(reader.tensors()[m].type);
        layers.insert(reader.tensors()[m].name[std::string_view("transformer_blocks.").size()]);
      }
      EXPECT_EQ(types.size(), 1u) << b;
      // Grouped by block (each format's tensors of one block together), or all packed.
      EXPECT_EQ(layers.size(), std::string(spec) == "none" ? 2u : 1u) << b;
    }
    EXPECT_EQ(reader.bundles().size(), std::string(spec) == "none" ? 3u : 6u);
    expect_exact_everywhere(dir, c);
  }
}

// ---- real weights in every format ---------------------------------------------------------------

struct real_sources {
  std::vector<ff::tensor> bf16, f16, f32;
};

std::optional<real_sources> stories260k() {
  const fs::path dir = testing::models_dir();
  const fs::path bf16 = dir / "stories260K.bf16.safetensors";
  const fs::path f16 = dir / "stories260K.f16.safetensors";
  const fs::path f32 = dir / "stories260K.f32.safetensors";
  std::error_code ec;
  if (!fs::exists(bf16, ec) || !fs::exists(f16, ec) || !fs::exists(f32, ec)) return std::nullopt;
  return real_sources{ff::read_tensors(bf16), ff::read_tensors(f16), ff::read_tensors(f32)};
}

TEST(ContainerFormatsRealModels, MixedDtypeFileRoundTripsByteForByte) {
  const auto src = stories260k();
  if (!src) GTEST_SKIP() << test::models_absent_message();
  temp_dir dir;
  const auto mixed = ff::mixed_file(src->bf16, src->f16, src->f32);
  for (const char* spec : {"auto", "layers", "none"}) {
    SCOPED_TRACE(spec);
    compress_options options;
    options.group = parse_grouping(spec).value();
    const auto c = compress_tensors(dir, mixed, options, "mixed");
    // Every format is there, coded smaller than its values.
    for (unsigned f = 0; f < kValueFormatCount; ++f) {
      const auto& ft = c.totals.formats[f];
      SCOPED_TRACE(to_string(static_cast<value_format>(f)));
      EXPECT_GT(ft.values, 0u);
      EXPECT_LT(ft.stored_bytes, ft.original_bytes);
      // Within the ideal of the format's split, plus the bundles' fixed costs on these small
      // tensors (a few thousand values each).
      EXPECT_GE(ft.bits_per_value(), ft.huffman_ideal_bits_per_value(static_cast<value_format>(f)));
    }
    EXPECT_LT(c.totals.ratio(), 0.75);
    expect_exact_everywhere(dir, c);
  }
}

TEST(ContainerFormatsRealModels, WholeModelsInEveryFormat) {
  const auto src = stories260k();
  if (!src) GTEST_SKIP() << test::models_absent_message();
  temp_dir dir;
  struct variant {
    std::string name;
    std::vector<ff::tensor> tensors;
    value_format format;
  };
  const std::vector<variant> variants = {
      {"f16", src->f16, value_format::fp16},
      {"f32", src->f32, value_format::fp32},
      {"bf16-in-f32", ff::widened_file(src->bf16), value_format::bf16_in_fp32},
      {"f16-from-bf16", ff::to_f16_file(src->bf16), value_format::bf16_in_fp16},
      {"f8_e4m3", ff::to_fp8_file(src->f32, ff::fp8_kind::e4m3), value_format::fp8_e4m3},
      {"f8_e5m2", ff::to_fp8_file(src->f32, ff::fp8_kind::e5m2), value_format::fp8_e5m2}};
  for (const auto& v : variants) {
    SCOPED_TRACE(v.name);
    const auto c = compress_tensors(dir, v.tensors, {}, v.name);
    const auto& ft = c.totals.of(v.format);
    EXPECT_GT(ft.values, 250000u);
    EXPECT_LT(ft.stored_bytes, ft.original_bytes);
    if (v.format == value_format::bf16_in_fp32) {
      // The target: BF16 values in FP32 files cost about what they cost as BF16.
      EXPECT_LE(c.totals.ratio(), 0.36);
      EXPECT_EQ(c.totals.of(value_format::fp32).values, 0u);
    }
    if (v.format == value_format::bf16_in_fp16) {
      // BF16 values in F16 files cost what they cost as BF16: the same bits per value as the
      // BF16 file's coded bundles (same symbols, same raw bytes), fp16's split never chosen.
      EXPECT_EQ(c.totals.of(value_format::fp16).values, 0u);
      const auto as_bf16 = compress_tensors(dir, src->bf16, {}, "bf16");
      EXPECT_EQ(ft.stored_bytes, as_bf16.totals.of(value_format::bf16).stored_bytes);
    }
    if (v.format == value_format::fp16) {
      // A real F16 checkpoint is not BF16 values: fp16's split.
      EXPECT_EQ(c.totals.of(value_format::bf16_in_fp16).values, 0u);
    }
    expect_exact_everywhere(dir, c);
  }
}

// ---- files written before the other formats -----------------------------------------------------

// tests/data, found through a file CMake writes beside the test binary (test_paths.hpp).
fs::path fixture(const char* name) {
  return test::path_setting("FLOATZIP_TEST_DATA_DIR", "floatzip_test_data_dir.txt") / name;
}

TEST(ContainerFormats, Format2FilesWrittenBeforeStillRead) {
  // Written by floatzip's main branch before issue 12 (F16, F32, F8 stored raw; a BF16 bundle
  // coded, another verbatim).
  const fs::path old_fzip = fixture("format2_mixed_before_issue12.fzip");
  const fs::path original = fixture("format2_mixed.safetensors");
  auto reader = container_reader::open(old_fzip);
  ASSERT_TRUE(reader) << reader.error().message;
  EXPECT_EQ(reader->version_minor(), 0);
  const auto totals = reader->totals();
  EXPECT_EQ(totals.bf16_bundle_count, 2u);
  EXPECT_EQ(totals.of(value_format::bf16).bundle_count, 2u);
  for (unsigned f = 1; f < kValueFormatCount; ++f) EXPECT_EQ(totals.formats[f].bundle_count, 0u);
  EXPECT_FALSE(reader->verify_all());
  EXPECT_FALSE(verify_file(original, old_fzip));
  temp_dir dir;
  ASSERT_FALSE(decompress_file(old_fzip, dir / "back.safetensors"));
  EXPECT_EQ(testing::read_file(dir / "back.safetensors"), testing::read_file(original));

  // The same file compressed today codes its F16, F32 and F8 tensors (minor 1)...
  ASSERT_TRUE(compress_file(original, dir / "new.fzip"));
  auto now = container_reader::open(dir / "new.fzip").value();
  EXPECT_EQ(now.version_minor(), 1);
  EXPECT_GT(now.totals().of(value_format::fp16).bundle_count, 0u);
  // ...and a BF16-only file is written exactly as before: minor 0, format fields zero.
  std::vector<ff::tensor> bf16_only = {weights("model.layers.0.w", dtype::bf16, 5000, 3)};
  const auto c = compress_tensors(dir, bf16_only);
  EXPECT_EQ(container_reader::open(c.fzip).value().version_minor(), 0);
}

// ---- hostile indexes ----------------------------------------------------------------------------

// A file of one F16 tensor, one F32 tensor (fp32) and one widened F32 tensor, each its own bundle.
std::vector<std::byte> three_format_file(const temp_dir& dir) {
  const auto c =
      compress_tensors(dir,
                       {weights("h", dtype::f16, 3000, 1), weights("s", dtype::f32, 3000, 2),
                        weights("w", dtype::f32, 3000, 3, true)},
                       {}, "three");
  return testing::read_file(c.fzip);
}

void expect_rejected(const std::vector<std::byte>& patched, const std::string& expected) {
  const error e = open_and_read_everything(patched);
  ASSERT_TRUE(e) << expected;
  EXPECT_EQ(e.code, errc::bad_data) << e.message;
  EXPECT_NE(e.message.find(expected), std::string::npos) << e.message;
}

TEST(ContainerFormatsHostile, IndexFormatMustAgreeWithDtypesAndBundles) {
  temp_dir dir;
  const auto fzip = three_format_file(dir);
  ASSERT_FALSE(open_and_read_everything(fzip));
  const auto l = testing::layout_of(fzip);
  auto reader = container_reader::from_bytes(fzip, "ok").value();
  ASSERT_EQ(reader.bundles().size(), 3u);
  auto bundle_of = [&](const char* name) { return reader.find_tensor(name)->bundle; };
  ASSERT_EQ(reader.bundles()[bundle_of("h")].format, value_format::fp16);
  ASSERT_EQ(reader.bundles()[bundle_of("s")].format, value_format::fp32);
  ASSERT_EQ(reader.bundles()[bundle_of("w")].format, value_format::bf16_in_fp32);
  auto patched_format = [&](std::uint32_t b, std::uint32_t format) {
    auto f = testing::expand(fzip);
    testing::put<std::uint32_t>(f, l.bundle_record(b) + 72, format);
    testing::fix_checksums(f);
    return f;
  };
  // A format the F16 tensor cannot have: the index names the tensor and both types.
  expect_rejected(patched_format(bundle_of("h"), 0), "a F16 tensor in a bf16 bundle");
  // One of another width: the record's own sizes disagree first.
  expect_rejected(patched_format(bundle_of("h"), 4), "field 'decoded_bytes'");
  // No such format (7: the first number after bf16_in_fp16; what a reader before bf16_in_fp16
  // says of 6 too).
  expect_rejected(patched_format(bundle_of("h"), 7), "no such value format");
  // A format the dtype allows (F16: fp16 or bf16-in-fp16) that the bundle's header does not
  // have: caught when the bundle is parsed.
  expect_rejected(patched_format(bundle_of("h"), 6),
                  "bundle header's format fp16 disagrees with the index's bf16-in-fp16");
  expect_rejected(patched_format(bundle_of("h"), 0xFFFFFFFFu), "field 'format'");
  // A format the dtype allows (F32: fp32 or bf16-in-fp32) but the bundle's header does not
  // have: caught when the bundle is parsed, naming the tensor.
  {
    auto f = testing::expand(fzip);
    const std::uint32_t b = bundle_of("s");
    testing::put<std::uint32_t>(f, l.bundle_record(b) + 72, 3);
    // bf16_in_fp32 decodes 4 bytes per value as well: sizes stay consistent.
    testing::fix_checksums(f);
    expect_rejected(f, "tensor 's' (F32)");
  }
  // The bundle header's format byte rewritten to a format of the same sections (bundle
  // checksums repaired): the same check, from the other side.
  {
    auto f = testing::expand(fzip);
    const std::uint32_t b = bundle_of("w");
    const std::uint64_t at = testing::get_u64(f, l.bundle_record(b));
    ASSERT_EQ(f[at + 7], std::byte{3});
    f[at + 7] = std::byte{0};  // bf16: a raw byte per value, no low halves, as bf16-in-fp32
    testing::fix_checksums(f, /*bundles_too=*/true);
    expect_rejected(f,
                    "bundle header's format bf16 disagrees with the index's bf16-in-fp32 for "
                    "tensor 'w' (F32)");
  }
  // One whose sections do not fit: a typed error naming the bundle.
  {
    auto f = testing::expand(fzip);
    const std::uint32_t b = bundle_of("w");
    const std::uint64_t at = testing::get_u64(f, l.bundle_record(b));
    f[at + 7] = std::byte{2};  // fp32: low halves that the bundle's bytes do not hold
    testing::fix_checksums(f, /*bundles_too=*/true);
    const error e = open_and_read_everything(f);
    ASSERT_TRUE(e);
    EXPECT_TRUE(e.code == errc::bad_data || e.code == errc::truncated) << e.message;
    EXPECT_NE(e.message.find("bundle " + std::to_string(b)), std::string::npos) << e.message;
  }
  // A raw bundle with a format, and a non-BF16 format in a file that says minor version 0.
  {
    auto f = testing::expand(fzip);
    testing::put<std::uint16_t>(f, 10, 0);
    testing::fix_checksums(f);
    expect_rejected(f, "minor version 0");
  }
  // A newer minor version is refused as such.
  {
    auto f = testing::expand(fzip);
    testing::put<std::uint16_t>(f, 10, 2);
    testing::fix_checksums(f);
    const error e = open_and_read_everything(f);
    EXPECT_EQ(e.code, errc::unsupported_version) << e.message;
  }
  // The reserved half of the field.
  {
    auto f = testing::expand(fzip);
    testing::put<std::uint32_t>(f, l.bundle_record(0) + 76, 1);
    testing::fix_checksums(f);
    expect_rejected(f, "reserved");
  }
}

TEST(ContainerFormatsHostile, DecodeBundleChecksTheOutputWidth) {
  temp_dir dir;
  const auto fzip = three_format_file(dir);
  auto reader = container_reader::from_bytes(fzip, "three.fzip").value();
  const std::uint32_t s = reader.find_tensor("s")->bundle;
  const std::uint32_t h = reader.find_tensor("h")->bundle;
  std::vector<std::uint16_t> values(2 * reader.bundles()[s].value_count);
  const error wrong = reader.decode_bundle(s, values);
  EXPECT_EQ(wrong.code, errc::invalid_argument);
  EXPECT_NE(wrong.message.find("fp32"), std::string::npos) << wrong.message;
  EXPECT_FALSE(reader.decode_bundle(h, std::span(values).first(reader.bundles()[h].value_count)));
  std::vector<std::byte> small(reader.bundles()[s].decoded_bytes - 1);
  EXPECT_EQ(reader.decode_bundle(s, small).code, errc::insufficient_space);
}

}  // namespace
}  // namespace floatzip
