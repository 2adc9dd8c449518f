// The .fzip container: byte-for-byte round trips of every layout safetensors allows, the
// bundling rule, the reader API, and hostile files (truncated, flipped, patched with valid
// checksums) that must give typed errors, never crashes, huge allocations or output files.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "container_test_util.hpp"
#include "floatzip/container.hpp"

namespace floatzip {
namespace {

using testing::open_and_read_everything;
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

// A block big enough that coding shrinks it (mixed_checkpoint's is stored verbatim).
std::vector<std::byte> block_checkpoint() {
  const std::string json =
      R"({"model.layers.0.q.weight":{"dtype":"BF16","shape":[64,64],"data_offsets":[0,8192]},)"
      R"("model.layers.0.k.weight":{"dtype":"BF16","shape":[32,64],"data_offsets":[8192,12288]},)"
      R"("norm.bias":{"dtype":"F32","shape":[4],"data_offsets":[12288,12304]}})";
  return testing::safetensors_image(json, testing::weight_like_bytes(12304, 5));
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

void expect_patch_rejected(const std::vector<std::byte>& fzip,
                           const std::function<void(std::vector<std::byte>&)>& patch, errc code,
                           const std::string& field);

// A safetensors image of BF16 tensors (name, values), in order.
std::vector<std::byte> bf16_checkpoint(
    const std::vector<std::pair<std::string, std::vector<std::uint16_t>>>& tensors) {
  std::string json = "{";
  std::vector<std::byte> data;
  for (const auto& [name, values] : tensors) {
    const std::size_t begin = data.size();
    data.resize(begin + 2 * values.size());
    if (!values.empty()) std::memcpy(data.data() + begin, values.data(), 2 * values.size());
    json += (json.size() > 1 ? "," : "") + std::string("\"") + name +
            "\":{\"dtype\":\"BF16\",\"shape\":[" + std::to_string(values.size()) +
            "],\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(data.size()) +
            "]}";
  }
  json += "}";
  return testing::safetensors_image(json, data);
}

// BF16 patterns of normal samples at `scale` (trained weights' exponents, roughly).
std::vector<std::uint16_t> normal_bf16(std::size_t n, float scale, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<std::uint16_t> v(n);
  for (auto& x : v) {
    const float f = d(rng);
    std::uint32_t bits;
    std::memcpy(&bits, &f, 4);
    x = static_cast<std::uint16_t>(bits >> 16);
  }
  return v;
}

TEST(ContainerBundling, GroupingRules) {
  auto key = [](grouping_kind kind, std::string_view name, const std::string& pattern = "") {
    const grouping g{kind, pattern};
    const std::regex re(pattern.empty() ? "x" : pattern);
    return detail::group_key(g, &re, name);
  };
  using k = grouping_kind;
  EXPECT_EQ(key(k::layers, "model.layers.3.mlp.w"), "model.layers.3.");
  EXPECT_EQ(key(k::layers, "transformer_blocks.3.ff.w"), "");
  EXPECT_EQ(key(k::automatic, "model.layers.3.mlp.w"), "model.layers.3.");
  EXPECT_EQ(key(k::automatic, "transformer_blocks.12.attn.to_q.weight"), "transformer_blocks.12.");
  EXPECT_EQ(key(k::automatic, "encoder.block.4.layer.0.SelfAttention.q.weight"),
            "encoder.block.4.");
  EXPECT_EQ(key(k::automatic, "h.7.attn.c_attn.weight"), "h.7.");
  EXPECT_EQ(key(k::automatic, "model.norm.weight"), "");
  EXPECT_EQ(key(k::automatic, "stage3_conv12.weight"), "");
  EXPECT_EQ(key(k::automatic, "blocks.3"), "");  // the number is the last component
  EXPECT_EQ(key(k::diffusion, "single_transformer_blocks.5.norm.linear.weight"),
            "single_transformer_blocks.5.");
  EXPECT_EQ(key(k::diffusion, "down_blocks.1.resnets.0.conv1.weight"), "down_blocks.1.");
  EXPECT_EQ(key(k::diffusion, "time_embedding.linear_1.weight"), "");
  EXPECT_EQ(key(k::experts, "model.layers.0.mlp.experts.17.w1.weight"),
            "model.layers.0.mlp.experts.17.");
  EXPECT_EQ(key(k::experts, "model.layers.0.self_attn.q_proj.weight"), "model.layers.0.");
  EXPECT_EQ(key(k::pattern, "net.stage2.block7.conv.weight", R"(stage(\d+))"), "2");
  EXPECT_EQ(key(k::pattern, "net.stage2.block7.conv.weight", R"(net\.stage\d+)"), "net.stage2");
  EXPECT_EQ(key(k::pattern, "head.weight", R"(stage(\d+))"), "");
  EXPECT_EQ(key(k::none, "model.layers.3.mlp.w"), "");

  EXPECT_EQ(parse_grouping("auto").value().kind, grouping_kind::automatic);
  EXPECT_EQ(parse_grouping("diffusion").value().kind, grouping_kind::diffusion);
  EXPECT_EQ(parse_grouping("regex:blk(\\d+)").value().pattern, "blk(\\d+)");
  EXPECT_EQ(parse_grouping("regex:(").error().code, errc::invalid_argument);
  EXPECT_EQ(parse_grouping("regex:").error().code, errc::invalid_argument);
  EXPECT_EQ(parse_grouping("layer").error().code, errc::invalid_argument);
}

TEST(ContainerBundling, GroupingPresetsInFiles) {
  temp_dir dir;
  std::vector<std::pair<std::string, std::vector<std::uint16_t>>> tensors;
  std::uint32_t seed = 1;
  for (const char* block :
       {"transformer_blocks.0.", "transformer_blocks.1.", "single_transformer_blocks.0."})
    for (const char* part : {"attn.to_q.weight", "attn.to_k.weight", "ff.net.weight"})
      tensors.emplace_back(std::string(block) + part, normal_bf16(3000, 0.02f, seed++));
  tensors.emplace_back("proj_out.weight", normal_bf16(2000, 0.05f, seed++));
  const auto image = bf16_checkpoint(tensors);
  testing::write_file(dir / "d.safetensors", image);
  for (const char* spec : {"auto", "diffusion", "layers", "none", "regex:^(\\w+blocks)\\."}) {
    SCOPED_TRACE(spec);
    compress_options options;
    options.group = parse_grouping(spec).value();
    ASSERT_TRUE(compress_file(dir / "d.safetensors", dir / "d.fzip", options));
    auto reader = container_reader::open(dir / "d.fzip").value();
    EXPECT_EQ(reader.grouping_used(), options.group.kind);
    const auto* q0 = reader.find_tensor("transformer_blocks.0.attn.to_q.weight");
    const auto* f0 = reader.find_tensor("transformer_blocks.0.ff.net.weight");
    const auto* q1 = reader.find_tensor("transformer_blocks.1.attn.to_q.weight");
    const auto* s0 = reader.find_tensor("single_transformer_blocks.0.attn.to_q.weight");
    const std::string_view g = spec;
    if (g == "auto" || g == "diffusion") {
      EXPECT_EQ(q0->bundle, f0->bundle);
      EXPECT_NE(q0->bundle, q1->bundle);
      EXPECT_NE(q0->bundle, s0->bundle);
      EXPECT_EQ(reader.bundle_tensors(q0->bundle).size(), 3u);
    } else if (g[0] == 'r') {  // all "transformer_blocks" in one group, single_... in another
      EXPECT_EQ(q0->bundle, q1->bundle);
      EXPECT_NE(q0->bundle, s0->bundle);
    } else {  // no group: everything small is packed together
      EXPECT_EQ(q0->bundle, s0->bundle);
    }
    ASSERT_FALSE(reader.verify_all());
    ASSERT_FALSE(decompress_file(dir / "d.fzip", dir / "back.safetensors"));
    EXPECT_EQ(testing::read_file(dir / "back.safetensors"), image);
    fs::remove(dir / "d.fzip");
    fs::remove(dir / "back.safetensors");
  }
}

// A network of hundreds of small tensors at different scales (a detection network's shape):
// packed into a few bundles with a code per run of alike tensors, near the per-tensor ideal.
TEST(ContainerPacking, HundredsOfSmallTensorsNearThePerTensorIdeal) {
  temp_dir dir;
  std::vector<std::pair<std::string, std::vector<std::uint16_t>>> tensors;
  std::mt19937 rng(5);
  for (int i = 0; i < 335; ++i) {
    const std::size_t n = i % 3 == 0 ? 16 + rng() % 112 : 256 + rng() % 9000;  // norms, convs
    const float scale = std::pow(10.0f, -3.0f + 3.0f * float(rng() % 1000) / 1000.0f);
    tensors.emplace_back("backbone.stage_" + std::string(1, char('a' + i % 5)) + ".conv" +
                             std::to_string(i) + ".weight",
                         normal_bf16(n, scale, 1000 + i));
  }
  const auto image = bf16_checkpoint(tensors);
  testing::write_file(dir / "n.safetensors", image);
  auto totals = compress_file(dir / "n.safetensors", dir / "n.fzip");
  ASSERT_TRUE(totals) << totals.error().message;
  auto reader = container_reader::open(dir / "n.fzip").value();
  EXPECT_LE(reader.bundles().size(), 4u);
  for (const auto& b : reader.bundles()) EXPECT_LE(b.stored_bytes, b.decoded_bytes);
  const double gap = totals->bits_per_bf16_value() - totals->huffman_ideal_bits_per_value();
  RecordProperty("bits_over_per_tensor_ideal", std::to_string(gap));
  EXPECT_LT(gap, 0.30) << totals->bits_per_bf16_value() << " bits per value, per-tensor ideal "
                       << totals->huffman_ideal_bits_per_value();
  EXPECT_LT(totals->ratio(), 0.75);
  ASSERT_FALSE(reader.verify_all());
  ASSERT_FALSE(decompress_file(dir / "n.fzip", dir / "back.safetensors"));
  EXPECT_EQ(testing::read_file(dir / "back.safetensors"), image);
}

TEST(ContainerPacking, VerbatimWhenCodingWouldNotShrink) {
  temp_dir dir;
  // Every BF16 pattern equally likely: the exponent byte carries 8 bits, so coding only adds.
  std::vector<std::uint16_t> noise(5000);
  std::mt19937 rng(3);
  for (auto& x : noise) x = static_cast<std::uint16_t>(rng());
  const auto image = bf16_checkpoint({{"noise.a", noise}, {"model.layers.0.w", noise}});
  testing::write_file(dir / "r.safetensors", image);
  ASSERT_TRUE(compress_file(dir / "r.safetensors", dir / "r.fzip"));
  auto reader = container_reader::open(dir / "r.fzip").value();
  ASSERT_EQ(reader.bundles().size(), 2u);
  for (const auto& b : reader.bundles()) {
    EXPECT_EQ(b.kind, bundle_kind::bf16_raw);
    EXPECT_EQ(b.stored_bytes, b.decoded_bytes);
  }
  std::vector<std::uint16_t> out(noise.size());
  ASSERT_FALSE(reader.decode_bundle(1, out));
  EXPECT_EQ(out, noise);
  std::vector<std::byte> tensor(noise.size() * 2);
  ASSERT_FALSE(reader.read_tensor(*reader.find_tensor("noise.a"), tensor));
  EXPECT_EQ(0, std::memcmp(tensor.data(), noise.data(), tensor.size()));
  ASSERT_FALSE(reader.verify_all());
  ASSERT_FALSE(verify_file(dir / "r.safetensors", dir / "r.fzip"));
  ASSERT_FALSE(decompress_file(dir / "r.fzip", dir / "back.safetensors"));
  EXPECT_EQ(testing::read_file(dir / "back.safetensors"), image);
}

// Issue 13, item 7: memory stays bounded by the bundle limit whatever the tensor sizes.
TEST(ContainerSplit, TensorsAndGroupsBiggerThanTheBundleLimitAreSplit) {
  temp_dir dir;
  const auto image = bf16_checkpoint({{"model.layers.0.q", normal_bf16(900, 0.02f, 1)},
                                      {"big", normal_bf16(3501, 0.05f, 2)},
                                      {"model.layers.0.k", normal_bf16(400, 0.02f, 3)},
                                      {"small", normal_bf16(30, 0.5f, 4)}});
  testing::write_file(dir / "s.safetensors", image);
  compress_options options;
  options.max_bundle_values = 1000;
  ASSERT_TRUE(compress_file(dir / "s.safetensors", dir / "s.fzip", options));
  const auto fzip = testing::read_file(dir / "s.fzip");
  auto reader = container_reader::open(dir / "s.fzip").value();
  for (const auto& b : reader.bundles()) EXPECT_LE(b.value_count, 1000u);
  const auto* big = reader.find_tensor("big");
  ASSERT_EQ(big->bundle_count, 4u);
  std::uint64_t first = 0;
  for (std::uint32_t b = big->bundle; b < big->bundle + big->bundle_count; ++b) {
    ASSERT_EQ(reader.bundle_tensors(b).size(), 1u);
    const auto piece = reader.tensor_piece(b, *big);
    EXPECT_EQ(piece.first, first);
    first += piece.values;
  }
  EXPECT_EQ(first, 3501u);
  // The block group over the limit continues in a second bundle.
  EXPECT_NE(reader.find_tensor("model.layers.0.q")->bundle,
            reader.find_tensor("model.layers.0.k")->bundle);
  std::vector<std::byte> tensor(big->size_bytes());
  const error read = reader.read_tensor(*big, tensor);
  ASSERT_FALSE(read) << read.message;
  const std::size_t data_start = reader.original_header().header_size();
  EXPECT_EQ(0, std::memcmp(tensor.data(), image.data() + data_start + big->original.begin,
                           tensor.size()));
  ASSERT_FALSE(reader.verify_all());
  ASSERT_FALSE(verify_file(dir / "s.safetensors", dir / "s.fzip"));
  ASSERT_FALSE(decompress_file(dir / "s.fzip", dir / "back.safetensors"));
  EXPECT_EQ(testing::read_file(dir / "back.safetensors"), image);

  // A hostile index: pieces that do not add up, or that point past the bundles.
  const auto l = testing::layout_of(fzip);
  const std::uint32_t record = 1;  // "big", second in offset order
  using testing::put;
  for (std::uint32_t count : {0u, 3u, 5u, 0xFFFFFFFFu}) {
    expect_patch_rejected(
        fzip, [&](auto& f) { put<std::uint32_t>(f, l.tensor_record(record) + 52, count); },
        errc::bad_data, "bundle_count");
  }
  // A piece claimed by the tensor before it as well.
  expect_patch_rejected(
      fzip, [&](auto& f) { put<std::uint32_t>(f, l.tensor_record(0) + 52, 2); }, errc::bad_data,
      "bundle_count");
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
      // The ideal is per tensor (a free code for each), so it may lie below the entropy of the
      // bundles' pooled histograms; it never lies below the raw sign/mantissa byte.
      EXPECT_GT(totals->huffman_ideal_bits_per_value(), 8.0);
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
  // The F32 tensor is a bundle of F32 values (4 of them: stored verbatim, coding would not pay).
  const auto& norm = reader.bundles()[reader.find_tensor("norm.bias")->bundle];
  EXPECT_EQ(norm.kind, bundle_kind::verbatim);
  EXPECT_TRUE(dtype_holds_format(safetensors::dtype::f32, norm.format));
  // The JSON length above is odd, so the data section starts at an odd offset: the coder reads
  // the values as bytes, wherever they are.
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

// Float dtypes are coded (or stored verbatim, these few values), the others raw.
TEST(ContainerLayouts, SubByteAndEveryDtypeRoundTrips) {
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
  // A block this small is stored verbatim (coding would not shrink it): no bundle view.
  const auto& record = reader.bundles()[q->bundle];
  ASSERT_EQ(record.kind, bundle_kind::bf16_raw);
  EXPECT_LE(record.stored_bytes, record.decoded_bytes);
  EXPECT_EQ(reader.bundle(q->bundle).error().code, errc::invalid_argument);
  EXPECT_EQ(reader.bundle_tensors(q->bundle).size(), 2u);
  std::vector<std::uint16_t> block(record.value_count);
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
  testing::put<std::uint16_t>(newer_major, 8, 3);
  testing::fix_checksums(newer_major);
  r = container_reader::from_bytes(newer_major, "m.fzip");
  EXPECT_EQ(r.error().code, errc::unsupported_version);
  EXPECT_NE(r.error().message.find("version"), std::string::npos);

  // A file of format 1 (floatzip before bundle format 2): refused with a clear reason.
  auto format1 = fzip;
  testing::put<std::uint16_t>(format1, 8, 1);
  testing::fix_checksums(format1);
  r = container_reader::from_bytes(format1, "m.fzip");
  EXPECT_EQ(r.error().code, errc::unsupported_version);
  EXPECT_NE(r.error().message.find("compress the original again"), std::string::npos);

  auto newer_minor = fzip;  // minor 1 (other value formats) is read; 2 is newer
  testing::put<std::uint16_t>(newer_minor, 10, 2);
  testing::fix_checksums(newer_minor);
  EXPECT_EQ(container_reader::from_bytes(newer_minor, "m.fzip").error().code,
            errc::unsupported_version);

  auto flags = fzip;
  testing::put<std::uint32_t>(flags, 12, 4);
  testing::fix_checksums(flags);
  EXPECT_EQ(container_reader::from_bytes(flags, "m.fzip").error().code, errc::unsupported_version);
}

// Files are written with the compact index; the classic layout of earlier files (the same index
// expanded, flag cleared) reads to the same records, and the compact one is the smaller file.
TEST(ContainerReader, CompactIndexReadsAsTheClassicOneAndIsSmaller) {
  temp_dir dir;
  for (const auto& image : {mixed_checkpoint(), block_checkpoint()}) {
    const auto fzip = compress_image(dir, image);
    auto compact = container_reader::from_bytes(fzip, "compact.fzip");
    ASSERT_TRUE(compact) << compact.error().message;
    EXPECT_TRUE(compact->compact_index());
    auto classic_bytes = testing::expand(fzip);
    testing::fix_checksums(classic_bytes);
    auto classic = container_reader::from_bytes(classic_bytes, "classic.fzip");
    ASSERT_TRUE(classic) << classic.error().message;
    EXPECT_FALSE(classic->compact_index());
    ASSERT_EQ(compact->tensors().size(), classic->tensors().size());
    for (std::size_t i = 0; i < compact->tensors().size(); ++i) {
      const auto& a = compact->tensors()[i];
      const auto& b = classic->tensors()[i];
      EXPECT_EQ(a.name, b.name);
      EXPECT_EQ(a.shape, b.shape);
      EXPECT_EQ(a.type, b.type);
      EXPECT_EQ(a.original, b.original);
      EXPECT_EQ(a.bundle, b.bundle);
      EXPECT_EQ(a.bundle_offset, b.bundle_offset);
      EXPECT_EQ(a.bundle_tensor, b.bundle_tensor);
      EXPECT_EQ(a.header_order, b.header_order);
      EXPECT_EQ(a.bundle_count, b.bundle_count);
    }
    ASSERT_EQ(compact->bundles().size(), classic->bundles().size());
    for (std::size_t b = 0; b < compact->bundles().size(); ++b) {
      EXPECT_EQ(compact->bundles()[b].stored_checksum, classic->bundles()[b].stored_checksum);
      EXPECT_EQ(compact->bundles()[b].decoded_checksum, classic->bundles()[b].decoded_checksum);
      EXPECT_EQ(compact->bundles()[b].value_count, classic->bundles()[b].value_count);
    }
    EXPECT_FALSE(open_and_read_everything(fzip));
    EXPECT_FALSE(open_and_read_everything(classic_bytes));
    // Same compression level for both (fix_checksums recompresses at its own level).
    auto recompressed = testing::expand(fzip, /*keep_compact_index=*/true);
    testing::fix_checksums(recompressed);
    EXPECT_LT(recompressed.size(), classic_bytes.size());
  }
}

// Surgery on the compact layout itself: each field the expansion relies on is checked.
TEST(ContainerHostile, CompactIndexFieldsAreChecked) {
  temp_dir dir;
  const auto fzip = compress_image(dir, mixed_checkpoint());
  const auto raw = testing::expand(fzip, /*keep_compact_index=*/true);
  const std::uint64_t index = testing::get_u64(raw, 32) + testing::get_u64(raw, 40);
  const std::uint32_t bundles = testing::get_u32(raw, index);
  const std::uint32_t tensors = testing::get_u32(raw, index + 4);
  ASSERT_GE(tensors, 2u);
  // Column k of the tensor table: byte k of every record.
  const auto column = [&](std::uint32_t k) {
    return index + kIndexHeaderBytes + std::uint64_t{bundles} * kBundleRecordBytes +
           std::uint64_t{k} * tensors;
  };
  const auto expect = [&](const std::function<void(std::vector<std::byte>&)>& patch,
                          const std::string& what) {
    auto patched = raw;
    patch(patched);
    testing::fix_checksums(patched);
    const error e = open_and_read_everything(patched);
    ASSERT_TRUE(e) << what;
    EXPECT_EQ(e.code, errc::bad_data) << e.message;
    EXPECT_NE(e.message.find(what), std::string::npos) << e.message;
  };
  // header_order (bytes 16..19 of a record): out of range, and one entry named twice.
  expect([&](auto& f) { f[column(19)] = std::byte{0x80}; }, "'header_order' is out of range");
  expect([&](auto& f) { f[column(16) + 1] = f[column(16)]; }, "'header_order' is used twice");
  expect([&](auto& f) { testing::put<std::uint32_t>(f, index + 12, 1); },
         "'dims_count' and 'names_bytes' of a compact index are not zero");
  expect([&](auto& f) { testing::put<std::uint64_t>(f, index + 16, 5); },
         "'dims_count' and 'names_bytes' of a compact index are not zero");
  expect([&](auto& f) { testing::put<std::uint32_t>(f, index + 8, 7); },
         "do not add up to the compact section size");
  // A bundle number (bytes 8..11) out of range reaches the classic checks.
  expect([&](auto& f) { f[column(11)] = std::byte{0x40}; }, "field 'bundle'");
  // The flag cleared on a compact index: read as classic, its sizes do not add up.
  expect([&](auto& f) { testing::put<std::uint32_t>(f, 12, 0); }, "do not add up");
}

// Patches a field, repairs the checksums, and expects `code` with `field` named in the message.
void expect_patch_rejected(const std::vector<std::byte>& fzip,
                           const std::function<void(std::vector<std::byte>&)>& patch, errc code,
                           const std::string& field) {
  auto patched = testing::expand(fzip);
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
      fzip, [&](auto& f) { put<std::uint64_t>(f, 40, std::uint64_t{1} << 40); }, errc::bad_data,
      "header_size");
  {  // the metadata offset is what the repacking helper relies on: patched by hand
    auto b = fzip;
    put<std::uint64_t>(b, 32, size * 2);
    put(b, 120, detail::xxh3_64(std::span(b).first(120)));
    const auto r = container_reader::from_bytes(b, "m.fzip");
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, errc::bad_data);
    EXPECT_NE(r.error().message.find("metadata_offset"), std::string::npos);
  }
  expect_patch_rejected(
      fzip, [&](auto& f) { put<std::uint64_t>(f, 80, 64); }, errc::bad_data, "bundles_offset");
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
  // Non-zero padding after a bundle.
  const auto expanded = testing::expand(fzip);
  for (std::uint32_t b = 0; b < l.bundle_count; ++b) {
    const std::uint64_t end = testing::get_u64(expanded, l.bundle_record(b)) +
                              testing::get_u64(expanded, l.bundle_record(b) + 8);
    if (end % kContainerAlignment == 0) continue;
    expect_patch_rejected(
        fzip, [&](auto& f) { f[end] = std::byte{1}; }, errc::bad_data, "padding");
    break;
  }
}

TEST(ContainerHostile, ChecksumMismatches) {
  temp_dir dir;
  const auto fzip = compress_image(dir, block_checkpoint());
  const auto l = testing::layout_of(fzip);
  {
    const auto reader = container_reader::from_bytes(fzip, "f.fzip").value();
    ASSERT_EQ(reader.bundles()[0].kind, bundle_kind::bf16_huffman);
  }
  // A flipped byte in a bundle: the file opens (bundles are checked when touched) ...
  auto flipped = fzip;
  const std::uint64_t bundle0 = testing::get_u64(testing::expand(fzip), l.bundle_record(0));
  flipped[bundle0 + 70] ^= std::byte{0x10};
  auto reader = container_reader::from_bytes(flipped, "f.fzip").value();
  const auto e = reader.bundle_bytes(0).error();
  EXPECT_EQ(e.code, errc::checksum_mismatch);
  EXPECT_NE(e.message.find("bundle 0"), std::string::npos);
  EXPECT_EQ(reader.verify_all().code, errc::checksum_mismatch);
  // ... in the index or header sections it does not.
  for (std::uint64_t at :
       {std::uint64_t{5}, l.metadata_offset + 20, l.metadata_offset + l.metadata_size / 2}) {
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
  fzip[testing::get_u64(testing::expand(fzip), l.bundle_record(l.bundle_count - 1)) + 1] ^=
      std::byte{0x40};
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
  auto fzip = compress_image(dir, block_checkpoint());
  const auto l = testing::layout_of(fzip);
  const std::uint64_t bundle0 = testing::get_u64(testing::expand(fzip), l.bundle_record(0));
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

// Issue 13 item 5: another process truncating the input mid-run killed the process with SIGBUS
// (the input is memory-mapped) and left its temporary file. Now it is an error naming the file.
TEST(ContainerFiles, InputThatShrinksWhileBeingReadIsAnErrorNotACrash) {
  temp_dir dir;
  std::vector<safetensors::tensor_spec> specs;
  for (int layer = 0; layer < 8; ++layer)
    specs.push_back({"model.layers." + std::to_string(layer) + ".w",
                     safetensors::dtype::bf16,
                     {512, 256}});  // 256 KiB per block
  const fs::path input = dir / "m.safetensors";
  ASSERT_FALSE(
      safetensors::write_file(input, specs, {}, [](std::size_t i, std::span<std::byte> out) {
        const auto bytes = testing::weight_like_bytes(out.size(), static_cast<std::uint32_t>(i));
        std::memcpy(out.data(), bytes.data(), out.size());
        return error{};
      }));
  const auto original = testing::read_file(input);
  compress_options options;
  options.codec.threads = 1;
  bool truncated = false;
  options.progress = [&](std::uint64_t, std::uint64_t) {
    if (!truncated) fs::resize_file(input, 4096);  // after the first block: the rest is gone
    truncated = true;
  };
  auto r = compress_file(input, dir / "m.fzip", options);
  ASSERT_TRUE(truncated);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, errc::io_error) << r.error().message;
  EXPECT_NE(r.error().message.find("m.safetensors"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("changed while"), std::string::npos) << r.error().message;
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"m.safetensors"});

  // The same for a container that shrinks under a reader and under decompression.
  testing::write_file(input, original);
  ASSERT_TRUE(compress_file(input, dir / "m.fzip").has_value());
  auto reader = container_reader::open(dir / "m.fzip").value();
  fs::resize_file(dir / "m.fzip", fs::file_size(dir / "m.fzip") / 2);
  const error e = reader.verify_all();
  EXPECT_EQ(e.code, errc::io_error) << e.message;
  EXPECT_NE(e.message.find("changed while"), std::string::npos) << e.message;
}

// Issue 13 item 1: replacing an existing output directory deleted it first, whatever it held:
// `-o parent --force` deleted the input model inside it. Nothing the conversion did not write may
// be deleted, and no output may contain, or lie inside, the input.
TEST(ContainerDirectories, ReplacingNeverDeletesTheInputOrFilesTheConversionDidNotWrite) {
  temp_dir dir;
  const fs::path parent = dir / "parent";
  const fs::path model = parent / "model";
  fs::create_directories(model);
  testing::write_file(model / "m.safetensors", mixed_checkpoint());
  testing::write_text(model / "config.json", "{}\n");
  testing::write_text(parent / "unrelated.txt", "keep me\n");
  auto snapshot = [&] {
    std::map<std::string, std::vector<std::byte>> files;
    for (const auto& e : fs::recursive_directory_iterator(dir.path()))
      files[e.path().string()] =
          e.is_regular_file() ? testing::read_file(e.path()) : std::vector<std::byte>{};
    return files;
  };
  const auto before = snapshot();
  for (const fs::path& out : {parent, model, model / "sub", parent / "model" / "..", dir.path()}) {
    SCOPED_TRACE(out.string());
    auto r = compress_directory(model, out, {}, /*replace_existing=*/true);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, errc::invalid_argument) << r.error().message;
    EXPECT_NE(r.error().message.find("input"), std::string::npos) << r.error().message;
    EXPECT_EQ(snapshot(), before);
    EXPECT_EQ(decompress_directory(model, out, {}, true).code, errc::invalid_argument);
    EXPECT_EQ(snapshot(), before);
  }
  // An existing directory holding a file the conversion would not write stays as it is.
  fs::create_directories(dir / "other");
  testing::write_text(dir / "other" / "notes.txt", "mine\n");
  auto r = compress_directory(model, dir / "other", {}, true);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("notes.txt"), std::string::npos) << r.error().message;
  EXPECT_EQ(testing::read_file(dir / "other" / "notes.txt").size(), 5u);
  // A previous output of the same conversion is replaced.
  ASSERT_TRUE(compress_directory(model, dir / "out").has_value());
  EXPECT_EQ(compress_directory(model, dir / "out").error().code, errc::invalid_argument);
  auto again = compress_directory(model, dir / "out", {}, true);
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_FALSE(verify_directory(model, dir / "out"));
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"other", "out", "parent"}));
}

// Issue 13 item 10: a shard file that the index does not list was never read, so a tensor in
// it could repeat one of the checkpoint's. A file with other tensors (Mistral keeps a
// consolidated.safetensors beside its shards) is allowed; one that repeats a tensor is not.
TEST(ContainerDirectories, AFileTheIndexDoesNotListMayNotRepeatItsTensors) {
  temp_dir dir;
  const fs::path ckpt = dir / "ckpt";
  fs::create_directories(ckpt);
  auto write_shard = [&](const std::string& name, std::vector<std::string> tensors) {
    std::vector<safetensors::tensor_spec> specs;
    for (auto& t : tensors) specs.push_back({t, safetensors::dtype::bf16, {4}});
    ASSERT_FALSE(
        safetensors::write_file(ckpt / name, specs, {}, [](std::size_t, std::span<std::byte> out) {
          std::fill(out.begin(), out.end(), std::byte{0x3F});
          return error{};
        }));
  };
  write_shard("model-00001-of-00001.safetensors", {"a", "b"});
  testing::write_text(ckpt / "model.safetensors.index.json",
                      R"({"weight_map":{"a":"model-00001-of-00001.safetensors",)"
                      R"("b":"model-00001-of-00001.safetensors"}})");
  EXPECT_FALSE(validate_shard_index(ckpt));
  write_shard("consolidated.safetensors", {"c"});
  EXPECT_FALSE(validate_shard_index(ckpt));
  write_shard("extra.safetensors", {"d", "a"});
  const error e = validate_shard_index(ckpt);
  EXPECT_EQ(e.code, errc::bad_data) << e.message;
  for (const char* part : {"'a'", "extra.safetensors", "model-00001-of-00001.safetensors"})
    EXPECT_NE(e.message.find(part), std::string::npos) << part << " not in " << e.message;
  EXPECT_FALSE(compress_directory(ckpt, dir / "out").has_value());
  EXPECT_FALSE(fs::exists(dir / "out"));
  // Compressed, the same ambiguity is caught through the .fzip headers.
  fs::remove(ckpt / "extra.safetensors");
  ASSERT_TRUE(compress_directory(ckpt, dir / "out").has_value());
  ASSERT_TRUE(compress_file(ckpt / "model-00001-of-00001.safetensors", dir / "out" / "extra.fzip")
                  .has_value());
  EXPECT_EQ(validate_shard_index(dir / "out").code, errc::bad_data);
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
