// The .fzip container: byte-for-byte round trips of every layout safetensors allows, the
// bundling rule, the reader API, and hostile files (truncated, flipped, patched with valid
// checksums) that must give typed errors, never crashes, huge allocations or output files.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "container_test_util.hpp"
#include "floatzip/container.hpp"

namespace floatzip {
namespace {

using testing::temp_dir;
namespace fs = std::filesystem;

// A small checkpoint with every kind of tile: a two-tensor transformer block, a lone BF16
// tensor, F32 and I64 tensors, an empty tensor, a gap between tensors and trailing bytes.
std::vector<std::byte> mixed_checkpoint() {
  const std::string json =
      R"({"__metadata__":{"format":"pt"},)"
      R"("model.layers.0.q.weight":{"dtype":"BF16","shape":[16,8],"data_offsets":[0,256]},)"
      R"("model.layers.0.k.weight":{"dtype":"BF16","shape":[8,8],"data_offsets":[256,384]},)"
      R"("norm.bias":{"dtype":"F32","shape":[4],"data_offsets":[384,400]},)"
      R"("embed":{"dtype":"BF16","shape":[100],"data_offsets":[408,608]},)"
      R"("empty":{"dtype":"BF16","shape":[0],"data_offsets":[608,608]},)"
      R"("ids":{"dtype":"I64","shape":[3],"data_offsets":[608,632]}})";
  return testing::safetensors_image(json, testing::weight_like_bytes(637, 7));
}

// Writes `image` as a safetensors file, compresses it, and returns the .fzip bytes.
std::vector<std::byte> compress_image(const temp_dir& dir, const std::vector<std::byte>& image,
                                      const std::string& stem = "m") {
  testing::write_file(dir / (stem + ".safetensors"), image);
  auto totals = compress_file(dir / (stem + ".safetensors"), dir / (stem + ".fzip"));
  if (!totals) throw exception(totals.error());
  return testing::read_file(dir / (stem + ".fzip"));
}

// Round trip through files; returns the restored bytes.
std::vector<std::byte> round_trip(const temp_dir& dir, const std::vector<std::byte>& image) {
  compress_image(dir, image, "rt");
  const error e = decompress_file(dir / "rt.fzip", dir / "rt.back.safetensors");
  if (e) throw exception(e);
  if (error v = verify_file(dir / "rt.safetensors", dir / "rt.fzip")) throw exception(v);
  return testing::read_file(dir / "rt.back.safetensors");
}

// Opens the image and touches everything: every bundle decoded and checked, every tensor read.
error open_and_read_everything(const std::vector<std::byte>& fzip, const reader_options& options) {
  auto reader = container_reader::from_bytes(fzip, "hostile.fzip", options);
  if (!reader) return reader.error();
  if (error e = reader->verify_all({1})) return e;
  for (const auto& t : reader->tensors()) {
    std::vector<std::byte> out(t.size_bytes());
    if (error e = reader->read_tensor(t, out, {1})) return e;
  }
  return {};
}

TEST(ContainerBundling, TransformerBlockPrefix) {
  EXPECT_EQ(transformer_block_prefix("model.layers.12.mlp.up_proj.weight"), "model.layers.12.");
  EXPECT_EQ(transformer_block_prefix("layers.0.attention.wq.weight"), "layers.0.");
  EXPECT_EQ(transformer_block_prefix("model.vision.encoder.layers.3.fc.weight"),
            "model.vision.encoder.layers.3.");
  EXPECT_EQ(transformer_block_prefix("model.embed_tokens.weight"), "");
  EXPECT_EQ(transformer_block_prefix("model.layers.x.weight"), "");
  EXPECT_EQ(transformer_block_prefix("model.xlayers.3.weight"), "");
  EXPECT_EQ(transformer_block_prefix("model.layers.3"), "");  // no "." after the number
  EXPECT_EQ(transformer_block_prefix("a.layers.b.layers.7.w"), "a.layers.b.layers.7.");
}

TEST(ContainerRealModels, RoundTripByteForByteAndReadEveryTensor) {
  const auto models = testing::model_files();
  if (models.empty()) GTEST_SKIP() << "no models in " << testing::models_dir();
  for (const auto& model : models) {
    SCOPED_TRACE(model.string());
    temp_dir dir;
    auto totals = compress_file(model, dir / "m.fzip");
    ASSERT_TRUE(totals.has_value()) << totals.error().message;
    ASSERT_FALSE(decompress_file(dir / "m.fzip", dir / "back.safetensors"));
    const auto original = testing::read_file(model);
    EXPECT_EQ(testing::read_file(dir / "back.safetensors"), original);
    EXPECT_FALSE(verify_file(model, dir / "m.fzip"));
    EXPECT_EQ(dir.entries(), (std::vector<std::string>{"back.safetensors", "m.fzip"}));

    auto reader = container_reader::open(dir / "m.fzip").value();
    EXPECT_EQ(reader.file_size(), fs::file_size(dir / "m.fzip"));
    EXPECT_EQ(reader.original_size(), original.size());
    EXPECT_EQ(totals->file_bytes, reader.file_size());
    EXPECT_EQ(totals->original_bytes, original.size());
    const auto& header = reader.original_header();
    EXPECT_EQ(reader.tensors().size(), header.tensors.size());
    std::uint64_t bf16_values = 0;
    for (const auto& info : header.tensors) {
      const auto* t = reader.find_tensor(info.name);
      ASSERT_NE(t, nullptr) << info.name;
      EXPECT_EQ(t->type, info.type);
      EXPECT_EQ(t->shape, info.shape);
      std::vector<std::byte> bytes(t->size_bytes());
      ASSERT_FALSE(reader.read_tensor(*t, bytes));
      EXPECT_EQ(0,
                std::memcmp(bytes.data(), original.data() + header.header_size() + info.data.begin,
                            bytes.size()))
          << info.name;
      if (info.type == safetensors::dtype::bf16) bf16_values += info.element_count();
    }
    EXPECT_EQ(totals->bf16_values, bf16_values);
    EXPECT_EQ(reader.totals().bf16_values, bf16_values);

    // Bundles: 64-byte aligned; BF16 blocks hold exactly the tensors of one "layers.N." prefix.
    std::map<std::string, std::set<std::uint32_t>> bundles_of_prefix;
    for (std::uint32_t b = 0; b < reader.bundles().size(); ++b) {
      EXPECT_EQ(reader.bundles()[b].file_offset % kContainerAlignment, 0u);
      const auto bytes = reader.bundle_bytes(b).value();
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(bytes.data()) % kContainerAlignment, 0u);
      std::set<std::string> prefixes;
      for (std::uint32_t m : reader.bundle_tensors(b)) {
        const auto prefix = std::string(transformer_block_prefix(reader.tensors()[m].name));
        prefixes.insert(prefix);
        if (!prefix.empty()) bundles_of_prefix[prefix].insert(b);
      }
      if (reader.bundle_tensors(b).size() > 1) {
        EXPECT_EQ(prefixes.size(), 1u);
      }
    }
    for (const auto& [prefix, bundles] : bundles_of_prefix) {
      const bool bf16 = reader.bundles()[*bundles.begin()].kind == bundle_kind::bf16_huffman;
      if (bf16) {
        EXPECT_EQ(bundles.size(), 1u) << prefix;  // one block, one bundle
      }
    }
    if (totals->bf16_values > 0) {
      // Trained weights: at most 11 bits per weight even on these tiny models.
      EXPECT_LT(totals->bits_per_bf16_value(), 11.0);
      EXPECT_GT(totals->bits_per_bf16_value(), totals->huffman_ideal_bits_per_value());
      EXPECT_GT(totals->huffman_ideal_bits_per_value(), totals->entropy_bound_bits_per_value());
    }
  }
}

TEST(ContainerLayouts, GapsOddOffsetsEmptyTensorsAndMixedDtypes) {
  temp_dir dir;
  const auto image = mixed_checkpoint();
  EXPECT_EQ(round_trip(dir, image), image);
  auto reader = container_reader::open(dir / "rt.fzip").value();
  ASSERT_EQ(reader.gaps().size(), 2u);  // 400..408 and the trailing 5 bytes
  EXPECT_EQ(reader.gaps()[0].original, (safetensors::byte_range{400, 408}));
  EXPECT_EQ(reader.gaps()[1].original, (safetensors::byte_range{632, 637}));
  // The block bundle holds q and k in file order; embed and the empty tensor are lone bundles.
  const auto* q = reader.find_tensor("model.layers.0.q.weight");
  const auto* k = reader.find_tensor("model.layers.0.k.weight");
  ASSERT_TRUE(q && k);
  EXPECT_EQ(q->bundle, k->bundle);
  EXPECT_EQ(k->bundle_offset, 128u);
  EXPECT_EQ(reader.bundles()[q->bundle].value_count, 192u);
  EXPECT_EQ(reader.bundles()[reader.find_tensor("norm.bias")->bundle].kind, bundle_kind::raw);
  // The JSON length above is odd, so the data section starts at an odd offset: BF16 tensors were
  // read through aligned copies.
  EXPECT_EQ(reader.original_header().header_size() % 2, 1u);
}

TEST(ContainerLayouts, EveryHeaderLengthParity) {
  // Data sections at every offset mod 8 (JSON padded by 0..7 spaces).
  for (int pad = 0; pad < 8; ++pad) {
    temp_dir dir;
    const std::string json = R"({"model.layers.1.w":{"dtype":"BF16","shape":[33],)"
                             R"("data_offsets":[0,66]}})" +
                             std::string(pad, ' ');
    const auto image = testing::safetensors_image(json, testing::weight_like_bytes(66, pad));
    EXPECT_EQ(round_trip(dir, image), image) << pad;
  }
}

TEST(ContainerLayouts, EmptyCheckpointsAndHeaderOnlyFiles) {
  for (const char* json : {"{}", R"({"__metadata__":{"a":"b"}})", "{}        "}) {
    temp_dir dir;
    const auto image = testing::safetensors_image(json, {});
    EXPECT_EQ(round_trip(dir, image), image) << json;
  }
  temp_dir dir;  // data but no tensors: one gap
  const auto only_gap = testing::safetensors_image("{}", testing::weight_like_bytes(100, 1));
  EXPECT_EQ(round_trip(dir, only_gap), only_gap);
}

TEST(ContainerLayouts, SubByteAndEveryDtypeStoredRaw) {
  temp_dir dir;
  std::string json = "{";
  std::uint64_t offset = 0;
  int i = 0;
  for (const auto& entry : safetensors::detail::kDtypeTable) {
    const std::uint64_t count = 8;
    const std::uint64_t bytes = count * entry.bits / 8;
    json += (i ? "," : "") + std::string("\"t") + std::to_string(i) + "\":{\"dtype\":\"" +
            std::string(entry.name) + "\",\"shape\":[2,4],\"data_offsets\":[" +
            std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
    offset += bytes;
    ++i;
  }
  json += "}";
  const auto image = testing::safetensors_image(json, testing::weight_like_bytes(offset, 3));
  EXPECT_EQ(round_trip(dir, image), image);
}

TEST(ContainerReader, ApiContracts) {
  temp_dir dir;
  const auto fzip = compress_image(dir, mixed_checkpoint());
  auto reader = container_reader::from_bytes(fzip, "mixed.fzip").value();
  const auto* q = reader.find_tensor("model.layers.0.q.weight");
  ASSERT_NE(q, nullptr);
  std::vector<std::uint16_t> small(10);
  EXPECT_EQ(reader.decode_bundle(q->bundle, small).code, errc::insufficient_space);
  const auto* f32 = reader.find_tensor("norm.bias");
  EXPECT_EQ(reader.bundle(f32->bundle).error().code, errc::invalid_argument);
  std::vector<std::byte> wrong(3);
  EXPECT_EQ(reader.read_tensor(*f32, wrong).code, errc::insufficient_space);
  EXPECT_EQ(reader.bundle_bytes(999).error().code, errc::invalid_argument);
  EXPECT_TRUE(reader.bundle_tensors(999).empty());
  EXPECT_EQ(reader.find_tensor("nope"), nullptr);
  auto view = reader.bundle(q->bundle).value();
  EXPECT_EQ(view.tensor_count(), 2u);
  std::vector<std::uint16_t> block(view.value_count());
  ASSERT_FALSE(reader.decode_bundle(q->bundle, block));
  const auto image = mixed_checkpoint();
  const std::size_t data_start = reader.original_header().header_size();
  EXPECT_EQ(0, std::memcmp(block.data(), image.data() + data_start, 384));
}

// ---- hostile input ----------------------------------------------------------------------------

TEST(ContainerHostile, TruncatedAtEveryLength) {
  temp_dir dir;
  const auto fzip = compress_image(dir, mixed_checkpoint());
  for (std::size_t n = 0; n < fzip.size(); ++n) {
    const std::vector<std::byte> cut(fzip.begin(), fzip.begin() + static_cast<std::ptrdiff_t>(n));
    auto r = container_reader::from_bytes(cut, "cut.fzip");
    ASSERT_FALSE(r.has_value()) << n;
    EXPECT_NE(r.error().message.find("cut.fzip"), std::string::npos);
    // Without checksums the structural checks alone must still refuse it.
    EXPECT_FALSE(container_reader::from_bytes(cut, "cut.fzip", {false}).has_value()) << n;
  }
  // Truncated on disk: decompression fails and leaves nothing behind.
  const std::vector<std::byte> cut(fzip.begin(), fzip.end() - 1);
  temp_dir out;
  testing::write_file(out / "cut.fzip", cut);
  const error e = decompress_file(out / "cut.fzip", out / "cut.safetensors");
  EXPECT_EQ(e.code, errc::truncated) << e.message;
  EXPECT_EQ(out.entries(), std::vector<std::string>{"cut.fzip"});
}

TEST(ContainerHostile, EverySingleBitFlipIsDetected) {
  temp_dir dir;
  const auto fzip = compress_image(dir, mixed_checkpoint());
  for (std::size_t at = 0; at < fzip.size(); ++at) {
    for (int bit = 0; bit < 8; bit += 3) {
      auto flipped = fzip;
      flipped[at] ^= std::byte(1u << bit);
      const error e = open_and_read_everything(flipped, {});
      ASSERT_TRUE(e) << "flip of bit " << bit << " at byte " << at << " went unnoticed";
    }
  }
}

TEST(ContainerHostile, FlippedBytesWithoutChecksumsNeverCrash) {
  // The validation behind the checksums, on its own: a flipped byte anywhere either gives an
  // error or (in data bytes, which only checksums protect) a well-formed result.
  temp_dir dir;
  const auto fzip = compress_image(dir, mixed_checkpoint());
  int rejected = 0;
  for (std::size_t at = 0; at < fzip.size(); ++at) {
    for (std::uint8_t mask : {0x01, 0x80, 0xFF}) {
      auto flipped = fzip;
      flipped[at] ^= std::byte(mask);
      if (open_and_read_everything(flipped, {false})) ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
}

TEST(ContainerHostile, WrongMagicAndNewerVersions) {
  temp_dir dir;
  const auto fzip = compress_image(dir, mixed_checkpoint());
  auto bad_magic = fzip;
  bad_magic[1] = std::byte{'X'};
  auto r = container_reader::from_bytes(bad_magic, "m.fzip");
  EXPECT_EQ(r.error().code, errc::unsupported_version);
  EXPECT_NE(r.error().message.find("magic"), std::string::npos);

  auto newer_major = fzip;
  testing::put<std::uint16_t>(newer_major, 8, 2);
  testing::fix_checksums(newer_major);
  r = container_reader::from_bytes(newer_major, "m.fzip");
  EXPECT_EQ(r.error().code, errc::unsupported_version);
  EXPECT_NE(r.error().message.find("version"), std::string::npos);

  auto newer_minor = fzip;
  testing::put<std::uint16_t>(newer_minor, 10, 1);
  testing::fix_checksums(newer_minor);
  EXPECT_EQ(container_reader::from_bytes(newer_minor, "m.fzip").error().code,
            errc::unsupported_version);

  auto flags = fzip;
  testing::put<std::uint32_t>(flags, 12, 4);
  testing::fix_checksums(flags);
  EXPECT_EQ(container_reader::from_bytes(flags, "m.fzip").error().code, errc::unsupported_version);
}

// Patches a field, repairs the checksums, and expects `code` with `field` named in the message.
void expect_patch_rejected(const std::vector<std::byte>& fzip,
                           const std::function<void(std::vector<std::byte>&)>& patch, errc code,
                           const std::string& field) {
  auto patched = fzip;
  patch(patched);
  testing::fix_checksums(patched);
  const error e = open_and_read_everything(patched, {});
  ASSERT_TRUE(e) << field;
  EXPECT_EQ(e.code, code) << e.message;
  EXPECT_NE(e.message.find(field), std::string::npos) << e.message;
}

TEST(ContainerHostile, OffsetsAndSizesBeyondTheFile) {
  temp_dir dir;
  const auto fzip = compress_image(dir, mixed_checkpoint());
  const auto l = testing::layout_of(fzip);
  const std::uint64_t size = fzip.size();
  using testing::put;
  expect_patch_rejected(
      fzip, [&](auto& f) { put<std::uint64_t>(f, l.bundle_record(0) + 8, size + 1000); },
      errc::bad_data, "stored_bytes");
  expect_patch_rejected(
      fzip, [&](auto& f) { put<std::uint64_t>(f, l.bundle_record(1), size + 64); }, errc::bad_data,
      "file_offset");
  expect_patch_rejected(
      fzip, [&](auto& f) { put<std::uint64_t>(f, l.tensor_record(0) + 8, size * 4); },
      errc::bad_data, "tensor");
  expect_patch_rejected(
      fzip, [&](auto& f) { put<std::uint64_t>(f, 40, size * 2); }, errc::bad_data, "header_size");
  expect_patch_rejected(
      fzip, [&](auto& f) { put<std::uint64_t>(f, 64, ~std::uint64_t{0} - 8); }, errc::bad_data,
      "index_size");
  expect_patch_rejected(
      fzip, [&](auto& f) { put<std::uint64_t>(f, 16, size + 1); }, errc::truncated, "file_size");
  expect_patch_rejected(
      fzip, [&](auto& f) { put<std::uint32_t>(f, l.tensor_record(0) + 32, 1u << 30); },
      errc::bad_data, "name_offset");
  expect_patch_rejected(
      fzip, [&](auto& f) { put<std::uint32_t>(f, l.tensor_record(0) + 24, 77); }, errc::bad_data,
      "bundle");
}

TEST(ContainerHostile, HugeDeclaredSizesAreRefusedBeforeAllocating) {
  temp_dir dir;
  const auto fzip = compress_image(dir, mixed_checkpoint());
  const auto l = testing::layout_of(fzip);
  using testing::put;
  const std::uint64_t huge = std::uint64_t{1} << 60;
  expect_patch_rejected(
      fzip, [&](auto& f) { put<std::uint64_t>(f, l.bundle_record(0) + 40, huge); }, errc::bad_data,
      "value_count");
  expect_patch_rejected(
      fzip, [&](auto& f) { put<std::uint64_t>(f, 24, huge); }, errc::bad_data, "");
  expect_patch_rejected(
      fzip, [&](auto& f) { put<std::uint64_t>(f, l.index_offset + 16, huge); }, errc::bad_data,
      "names_bytes");
  expect_patch_rejected(
      fzip, [&](auto& f) { put<std::uint32_t>(f, l.index_offset, 0xFFFFFFFFu); }, errc::bad_data,
      "bundle_count");
  expect_patch_rejected(
      fzip, [&](auto& f) { put<std::uint32_t>(f, l.index_offset + 12, 0xFFFFFFFFu); },
      errc::bad_data, "dims_count");
  // A safetensors header length of 2^60 inside the container.
  expect_patch_rejected(
      fzip, [&](auto& f) { put<std::uint64_t>(f, l.header_offset, huge); }, errc::too_large,
      "header length");
}

TEST(ContainerHostile, IndexThatDisagreesWithTheVerbatimHeader) {
  temp_dir dir;
  const auto fzip = compress_image(dir, mixed_checkpoint());
  const auto l = testing::layout_of(fzip);
  using testing::put;
  // dtype BF16 -> F16 (same size) in the first tensor record.
  expect_patch_rejected(
      fzip,
      [&](auto& f) {
        put<std::uint16_t>(f, l.tensor_record(0) + 46,
                           static_cast<std::uint16_t>(safetensors::dtype::f16));
      },
      errc::bad_data, "disagrees with the safetensors header");
  // Two tensor records swapped: out of order.
  expect_patch_rejected(
      fzip,
      [&](auto& f) {
        std::vector<std::byte> a(f.begin() + l.tensor_record(0), f.begin() + l.tensor_record(1));
        std::copy(f.begin() + l.tensor_record(1), f.begin() + l.tensor_record(2),
                  f.begin() + l.tensor_record(0));
        std::copy(a.begin(), a.end(), f.begin() + l.tensor_record(1));
      },
      errc::bad_data, "out of order");
  // A BF16 tensor claiming a different position in its bundle.
  expect_patch_rejected(
      fzip, [&](auto& f) { put<std::uint64_t>(f, l.tensor_record(1) + 16, 5); }, errc::bad_data,
      "bundle_offset");
  // Bundle statistics out of range.
  expect_patch_rejected(
      fzip, [&](auto& f) { put<double>(f, l.bundle_record(0) + 48, 9.5); }, errc::bad_data,
      "exponent_entropy");
  // Non-zero padding between sections.
  expect_patch_rejected(
      fzip, [&](auto& f) { f[l.bundles_offset - 1] = std::byte{1}; }, errc::bad_data, "padding");
}

TEST(ContainerHostile, ChecksumMismatches) {
  temp_dir dir;
  const auto fzip = compress_image(dir, mixed_checkpoint());
  const auto l = testing::layout_of(fzip);
  // A flipped byte in a bundle: the file opens (bundles are checked when touched) ...
  auto flipped = fzip;
  const std::uint64_t bundle0 = testing::get_u64(fzip, l.bundle_record(0));
  flipped[bundle0 + 70] ^= std::byte{0x10};
  auto reader = container_reader::from_bytes(flipped, "f.fzip").value();
  const auto e = reader.bundle_bytes(0).error();
  EXPECT_EQ(e.code, errc::checksum_mismatch);
  EXPECT_NE(e.message.find("bundle 0"), std::string::npos);
  EXPECT_EQ(reader.verify_all().code, errc::checksum_mismatch);
  // ... in the index or header sections it does not.
  for (std::uint64_t at : {std::uint64_t{5}, l.header_offset + 20, l.index_offset + 40}) {
    auto bad = fzip;
    bad[at] ^= std::byte{0x04};
    EXPECT_FALSE(container_reader::from_bytes(bad, "f.fzip").has_value()) << at;
  }
  // The sign/mantissa bytes changed and the stored checksum repaired: the decoded checksum
  // recorded at compression time still catches it.
  auto resealed = fzip;
  auto view = parse_bundle(std::span(fzip).subspan(bundle0)).value();
  resealed[bundle0 + view.layout().sign_mantissa_offset + 3] ^= std::byte{0x01};
  testing::fix_checksums(resealed, /*bundles_too=*/true);
  auto r2 = container_reader::from_bytes(resealed, "f.fzip").value();
  std::vector<std::uint16_t> block(r2.bundles()[0].value_count);
  const error decoded = r2.decode_bundle(0, block);
  EXPECT_EQ(decoded.code, errc::checksum_mismatch);
  EXPECT_NE(decoded.message.find("decoded_checksum"), std::string::npos);
}

TEST(ContainerHostile, FailedDecompressionLeavesNoOutput) {
  temp_dir dir;
  auto fzip = compress_image(dir, mixed_checkpoint());
  const auto l = testing::layout_of(fzip);
  fzip[testing::get_u64(fzip, l.bundle_record(l.bundle_count - 1)) + 1] ^= std::byte{0x40};
  temp_dir out;
  testing::write_file(out / "bad.fzip", fzip);
  const error e = decompress_file(out / "bad.fzip", out / "bad.safetensors");
  EXPECT_EQ(e.code, errc::checksum_mismatch) << e.message;
  EXPECT_EQ(out.entries(), std::vector<std::string>{"bad.fzip"});
}

// decompress_file checks each BF16 bundle's decoded checksum on the thread that writes it
// (detail/decompress_pipeline.inl): a wrong value still fails the file and leaves nothing.
TEST(ContainerHostile, DecompressFileChecksDecodedValuesAndLeavesNoOutput) {
  temp_dir dir;
  auto fzip = compress_image(dir, mixed_checkpoint());
  const auto l = testing::layout_of(fzip);
  const std::uint64_t bundle0 = testing::get_u64(fzip, l.bundle_record(0));
  auto view = parse_bundle(std::span(fzip).subspan(bundle0)).value();
  fzip[bundle0 + view.layout().sign_mantissa_offset + 3] ^= std::byte{0x01};
  testing::fix_checksums(fzip, /*bundles_too=*/true);
  temp_dir out;
  testing::write_file(out / "bad.fzip", fzip);
  for (unsigned threads : {1u, 2u}) {
    decompress_options options;
    options.codec.threads = threads;
    const error e = decompress_file(out / "bad.fzip", out / "bad.safetensors", options);
    EXPECT_EQ(e.code, errc::checksum_mismatch) << e.message;
    EXPECT_NE(e.message.find("decoded_checksum"), std::string::npos) << e.message;
    EXPECT_EQ(out.entries(), std::vector<std::string>{"bad.fzip"});
  }
}

// Bundles larger than the pipeline's write slices, with tensors (one empty, one of a single
// value) and a gap straddling slice boundaries, restore byte for byte.
TEST(ContainerLayouts, TensorsStraddlingWriteSlices) {
  const std::uint64_t counts[] = {200'003, 0, 1, 150'001, 131'072};
  std::string json = "{";
  std::uint64_t at = 0;
  for (int layer = 0; layer < 2; ++layer) {
    for (std::size_t i = 0; i < std::size(counts); ++i) {
      if (json.size() > 1) json += ",";
      json += "\"model.layers." + std::to_string(layer) + ".t" + std::to_string(i) +
              "\":{\"dtype\":\"BF16\",\"shape\":[" + std::to_string(counts[i]) +
              "],\"data_offsets\":[" + std::to_string(at) + "," +
              std::to_string(at + 2 * counts[i]) + "]}";
      at += 2 * counts[i];
    }
    at += 6;  // a gap between the blocks
  }
  json += "}";
  const auto image = testing::safetensors_image(json, testing::weight_like_bytes(at - 6, 11));
  temp_dir dir;
  EXPECT_EQ(round_trip(dir, image), image);
}

TEST(ContainerHostile, CompressRefusesBadSafetensorsAndLeavesNothing) {
  const std::vector<std::pair<std::string, errc>> cases = {
      {R"({"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]})", errc::bad_data},  // JSON
      {R"({"a":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]},)"
       R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[4,12]}})",
       errc::bad_data},                                                                   // overlap
      {R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[8,4]}})", errc::bad_data},     // order
      {R"({"a":{"dtype":"BF16","shape":[64],"data_offsets":[0,128]}})", errc::bad_data},  // beyond
  };
  for (const auto& [json, code] : cases) {
    temp_dir dir;
    testing::write_file(dir / "bad.safetensors",
                        testing::safetensors_image(json, testing::weight_like_bytes(16, 1)));
    auto r = compress_file(dir / "bad.safetensors", dir / "bad.fzip");
    ASSERT_FALSE(r.has_value()) << json;
    EXPECT_EQ(r.error().code, code) << r.error().message;
    EXPECT_NE(r.error().message.find("bad.safetensors"), std::string::npos);
    EXPECT_EQ(dir.entries(), std::vector<std::string>{"bad.safetensors"});
  }
  temp_dir dir;
  EXPECT_EQ(compress_file(dir / "missing.safetensors", dir / "x.fzip").error().code,
            errc::io_error);
  EXPECT_TRUE(dir.entries().empty());
}

TEST(ContainerDirectories, ShardedCheckpointRoundTrips) {
  const auto model = testing::models_dir() / "stories260K.bf16.safetensors";
  if (!fs::exists(model)) GTEST_SKIP() << model << " not present";
  temp_dir dir;
  fs::create_directories(dir / "ckpt");
  testing::make_sharded_checkpoint(model, dir / "ckpt", 3);
  testing::write_text(dir / "ckpt" / "empty.txt", "");  // other files travel verbatim, even empty
  ASSERT_FALSE(validate_shard_index(dir / "ckpt"));
  auto totals = compress_directory(dir / "ckpt", dir / "ckpt.fzip");
  ASSERT_TRUE(totals.has_value()) << totals.error().message;
  EXPECT_EQ(totals->bf16_values, 260032u);
  EXPECT_TRUE(fs::exists(dir / "ckpt.fzip" / "model-00002-of-00003.fzip"));
  EXPECT_TRUE(fs::exists(dir / "ckpt.fzip" / "model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(dir / "ckpt.fzip" / "config.json"));
  EXPECT_FALSE(validate_shard_index(dir / "ckpt.fzip"));  // checked through the .fzip headers
  ASSERT_FALSE(verify_directory(dir / "ckpt", dir / "ckpt.fzip"));
  ASSERT_FALSE(decompress_directory(dir / "ckpt.fzip", dir / "back"));
  for (const auto& e : fs::directory_iterator(dir / "ckpt"))
    EXPECT_EQ(testing::read_file(e.path()), testing::read_file(dir / "back" / e.path().filename()))
        << e.path();
  EXPECT_EQ(std::distance(fs::directory_iterator(dir / "back"), fs::directory_iterator()), 6);
  // Existing outputs are refused unless replacing is asked for.
  EXPECT_EQ(decompress_directory(dir / "ckpt.fzip", dir / "back").code, errc::invalid_argument);
  EXPECT_FALSE(decompress_directory(dir / "ckpt.fzip", dir / "back", {}, true));
}

TEST(ContainerDirectories, BadShardIndexIsRefusedAndLeavesNothing) {
  const auto model = testing::models_dir() / "stories260K.bf16.safetensors";
  if (!fs::exists(model)) GTEST_SKIP() << model << " not present";
  const std::vector<std::string> bad_indexes = {
      R"({"weight_map":{"model.norm.weight":"model-00009-of-00009.safetensors"}})",
      R"({"weight_map":{"model.norm.weight":"../escape.safetensors"}})",
      R"({"weight_map":{"not.a.tensor":"model-00001-of-00002.safetensors"}})",
      R"({"weight_map":)",
  };
  for (const auto& index : bad_indexes) {
    temp_dir dir;
    fs::create_directories(dir / "ckpt");
    testing::make_sharded_checkpoint(model, dir / "ckpt", 2);
    testing::write_text(dir / "ckpt" / "model.safetensors.index.json", index);
    auto r = compress_directory(dir / "ckpt", dir / "out");
    ASSERT_FALSE(r.has_value()) << index;
    EXPECT_EQ(r.error().code, errc::bad_data) << r.error().message;
    EXPECT_NE(r.error().message.find("model.safetensors.index.json"), std::string::npos);
    EXPECT_EQ(dir.entries(), std::vector<std::string>{"ckpt"});
  }
  // An index that misses tensors of the shards.
  temp_dir dir;
  fs::create_directories(dir / "ckpt");
  testing::make_sharded_checkpoint(model, dir / "ckpt", 2);
  testing::write_text(dir / "ckpt" / "model.safetensors.index.json",
                      R"({"weight_map":{"model.norm.weight":"model-00002-of-00002.safetensors"}})");
  EXPECT_EQ(validate_shard_index(dir / "ckpt").code, errc::bad_data);
}

}  // namespace
}  // namespace floatzip
