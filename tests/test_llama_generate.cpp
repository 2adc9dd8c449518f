// The llama_generate example on the real models: the forward pass streamed out of a .fzip
// container gives exactly the logits of the uncompressed safetensors file, the decode buffer is
// allocated once and nothing else is allocated per token, and stories260K tells the story its
// config records.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <new>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "../examples/llama_generate/fzip_source.hpp"
#include "../examples/llama_generate/model_config.hpp"
#include "../examples/llama_generate/tokenizer.hpp"
#include "../examples/llama_generate/transformer.hpp"
#include "../examples/llama_generate/weight_source.hpp"
#include "floatzip/container.hpp"
#include "llama_test_models.hpp"

// Every heap allocation of the process, so a test can check that forward passes make none.
namespace {
std::atomic<std::uint64_t> g_heap_allocations{0};

void* counted_malloc(std::size_t size) noexcept {
  g_heap_allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(size == 0 ? 1 : size);
}
}  // namespace

// Every replaceable form but the aligned ones (left to the library, with their own deletes), so
// that no allocation from one family is released by the other. Out of line: inlined, GCC pairs
// the malloc() of one with the free() of the other and warns about a mismatch that is not there.
[[gnu::noinline]] void* operator new(std::size_t size) {
  if (void* p = counted_malloc(size)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void* operator new[](std::size_t size) {
  if (void* p = counted_malloc(size)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return counted_malloc(size);
}
[[gnu::noinline]] void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return counted_malloc(size);
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

namespace fs = std::filesystem;

using llama_test::kAidreams;
using llama_test::kModels;
using llama_test::kStories;
using llama_test::kTangPoem;
using llama_test::model_files;

// What one greedy generation produced: the tokens and every step's logits.
struct generation_record {
  std::vector<int> tokens;    // generated, prompt excluded
  std::vector<float> logits;  // steps x vocab
  std::size_t steps = 0;
  llama::run_stats stats;
  std::size_t buffer_allocations = 0;
  std::size_t buffer_bytes = 0;
};

generation_record generate(const llama::model_config& config, llama::weight_source& source,
                           const std::vector<int>& prompt, int new_tokens, int stop_token) {
  llama::transformer model(config, source);
  generation_record record;
  auto generated = llama::generate_greedy(
      model, prompt, new_tokens, stop_token,
      [&](int, int, std::span<const float> logits) -> floatzip::error {
        record.logits.insert(record.logits.end(), logits.begin(), logits.end());
        ++record.steps;
        return {};
      });
  EXPECT_TRUE(generated.has_value()) << generated.error().message;
  if (generated) record.tokens = *generated;
  record.stats = model.stats();
  record.buffer_allocations = model.buffer().allocations();
  record.buffer_bytes = model.buffer().size_bytes();
  return record;
}

std::unique_ptr<llama::weight_source> open_safetensors(const fs::path& path,
                                                       const llama::model_config& config) {
  auto source = llama::safetensors_source::open(path, config);
  if (!source) ADD_FAILURE() << source.error().message;
  return source ? std::move(*source) : nullptr;
}

std::unique_ptr<llama::fzip_source> open_fzip(const fs::path& path,
                                              const llama::model_config& config) {
  auto source = llama::fzip_source::open(path, config, floatzip::decode_options{1});
  if (!source) ADD_FAILURE() << source.error().message;
  return source ? std::move(*source) : nullptr;
}

class LlamaGenerate : public llama_test::compressed_models {
 protected:
  static llama::model_config config_of(const model_files& model) {
    return llama::load_model_config(model.config()).value();
  }

  // Compressed and uncompressed runs of fixed token ids must agree bit for bit.
  static void expect_identical_runs(const model_files& model, const std::vector<int>& prompt,
                                    int new_tokens) {
    const auto config = config_of(model);
    auto plain = open_safetensors(model.bf16(), config);
    auto compressed = open_fzip(fzip(model), config);
    ASSERT_TRUE(plain && compressed);
    const auto expected = generate(config, *plain, prompt, new_tokens, -1);
    const auto actual = generate(config, *compressed, prompt, new_tokens, -1);
    ASSERT_EQ(actual.tokens.size(), std::size_t(new_tokens));
    EXPECT_EQ(actual.tokens, expected.tokens);
    ASSERT_EQ(actual.steps, expected.steps);
    ASSERT_EQ(actual.logits.size(), expected.logits.size());
    const auto difference = llama::first_bit_difference(actual.logits, expected.logits);
    EXPECT_FALSE(difference.has_value())
        << "logit " << *difference % std::size_t(config.vocab_size) << " of step "
        << *difference / std::size_t(config.vocab_size) << " differs";
    // The compressed run really decompressed: one load per block and per global tensor used.
    EXPECT_GT(actual.stats.load_seconds, 0.0);
    EXPECT_EQ(actual.buffer_allocations, 1u);
    EXPECT_LT(actual.buffer_bytes, compressed->model_weight_bytes());
  }
};

// The continuation stories260K.config.json records for "Once upon a time", without the "...".
std::string recorded_continuation() {
  std::ifstream in(kStories.config());
  const auto json = nlohmann::json::parse(in);
  const std::string reference = json.at("greedy_reference").get<std::string>();
  const std::string open = "continues: '";
  const std::size_t begin = reference.find(open);
  const std::size_t end = reference.rfind("...'");
  if (begin == std::string::npos || end == std::string::npos || end < begin) return {};
  return reference.substr(begin + open.size(), end - begin - open.size());
}

std::string story_text(const llama::tokenizer& tokenizer, std::vector<int> all) {
  std::string text;
  for (std::size_t i = 1; i < all.size(); ++i) text += tokenizer.decode(all[i - 1], all[i]);
  return text;
}

TEST_F(LlamaGenerate, StoriesCompressedMatchesUncompressedAndTheRecordedStory) {
  LLAMA_TEST_SKIP_WITHOUT(kStories);
  const auto config = config_of(kStories);
  const auto tokenizer =
      llama::tokenizer::load(kModels / "stories260K.tok512.bin", config.vocab_size).value();
  const std::vector<int> prompt = tokenizer.encode("Once upon a time");
  ASSERT_EQ(prompt.front(), llama::kBosToken);

  auto plain = open_safetensors(kStories.bf16(), config);
  auto compressed = open_fzip(fzip(kStories), config);
  ASSERT_TRUE(plain && compressed);
  const auto expected = generate(config, *plain, prompt, 120, llama::kBosToken);
  const auto actual = generate(config, *compressed, prompt, 120, llama::kBosToken);
  EXPECT_EQ(actual.tokens, expected.tokens);
  ASSERT_EQ(actual.logits.size(), expected.logits.size());
  EXPECT_FALSE(llama::first_bit_difference(actual.logits, expected.logits).has_value());

  std::vector<int> all = prompt;
  all.insert(all.end(), actual.tokens.begin(), actual.tokens.end());
  const std::string recorded = recorded_continuation();
  ASSERT_FALSE(recorded.empty()) << "no greedy_reference in " << kStories.config();
  EXPECT_EQ(story_text(tokenizer, all).substr(0, recorded.size()), recorded);
}

// The BF16 weights are a rounding of the float32 original: logits differ in their low bits from
// the first step on (so a bit-exact comparison does detect different weights), yet the greedy
// story agrees with the recorded float32 one well past the recorded text.
TEST_F(LlamaGenerate, StoriesFloat32OriginalTellsTheRecordedStory) {
  LLAMA_TEST_SKIP_WITHOUT(kStories);
  const fs::path f32 = kModels / "stories260K.f32.safetensors";
  if (!fs::exists(f32)) GTEST_SKIP() << f32 << " is absent";
  const auto config = config_of(kStories);
  const auto tokenizer =
      llama::tokenizer::load(kModels / "stories260K.tok512.bin", config.vocab_size).value();
  const std::vector<int> prompt = tokenizer.encode("Once upon a time");
  auto original = open_safetensors(f32, config);
  auto bf16 = open_safetensors(kStories.bf16(), config);
  ASSERT_TRUE(original && bf16);
  const auto from_f32 = generate(config, *original, prompt, 60, llama::kBosToken);
  const auto from_bf16 = generate(config, *bf16, prompt, 60, llama::kBosToken);

  std::vector<int> all = prompt;
  all.insert(all.end(), from_f32.tokens.begin(), from_f32.tokens.end());
  const std::string recorded = recorded_continuation();
  EXPECT_EQ(story_text(tokenizer, all).substr(0, recorded.size()), recorded);
  EXPECT_EQ(from_bf16.tokens, from_f32.tokens);
  const auto difference = llama::first_bit_difference(from_bf16.logits, from_f32.logits);
  ASSERT_TRUE(difference.has_value());
  EXPECT_LT(*difference, std::size_t(config.vocab_size));  // already in the first step
}

TEST_F(LlamaGenerate, AidreamsCompressedMatchesUncompressed) {
  LLAMA_TEST_SKIP_WITHOUT(kAidreams);
  expect_identical_runs(kAidreams, {1, 2, 3}, 60);
}

TEST_F(LlamaGenerate, TangPoemCompressedMatchesUncompressed) {
  LLAMA_TEST_SKIP_WITHOUT(kTangPoem);
  expect_identical_runs(kTangPoem, {1, 24, 25}, 60);
}

// One buffer, sized to the largest bundle the forward pass decodes, allocated once; after the
// first token nothing at all is allocated on the heap, however many tokens follow.
TEST_F(LlamaGenerate, DecodeBufferIsAllocatedOnceAndTokensAllocateNothing) {
  LLAMA_TEST_SKIP_WITHOUT(kStories);
  const auto config = config_of(kStories);
  auto compressed = open_fzip(fzip(kStories), config);
  ASSERT_TRUE(compressed);
  std::uint64_t largest_bundle = 0;
  for (const auto& bundle : compressed->reader().bundles())
    if (bundle.kind == floatzip::bundle_kind::bf16_huffman)
      largest_bundle = std::max(largest_bundle, bundle.value_count);

  llama::transformer model(config, *compressed);
  ASSERT_EQ(model.buffer().allocations(), 1u);
  EXPECT_EQ(model.buffer().size_bytes(), 2 * largest_bundle);
  EXPECT_LT(model.buffer().size_bytes(), compressed->model_weight_bytes() / 4);

  ASSERT_TRUE(model.forward(llama::kBosToken, 0).has_value());  // first decodes check checksums
  const std::uint64_t probe_before = g_heap_allocations.load();
  auto probe = std::make_unique<std::vector<int>>(100);
  ASSERT_GE(g_heap_allocations.load() - probe_before, 2u)
      << "the allocation counter counts nothing";
  const std::uint64_t before = g_heap_allocations.load();
  bool all_ok = true;
  int token = llama::kBosToken;
  const int positions = 100;
  for (int position = 1; position < positions; ++position) {
    auto logits = model.forward(token, position);
    all_ok = all_ok && logits.has_value();
    if (logits) token = llama::argmax(*logits);
  }
  const std::uint64_t allocations = g_heap_allocations.load() - before;
  ASSERT_TRUE(all_ok);
  EXPECT_EQ(allocations, 0u);
  EXPECT_EQ(model.buffer().allocations(), 1u);
  // Per token: the embedding (kept for the tied head), five blocks and the final norm.
  EXPECT_EQ(model.stats().weight_loads, std::uint64_t(positions) * (1 + config.n_layers + 1) + 1);
}

// A safetensors file whose data section starts at an odd address: every BF16 tensor is misaligned
// and copied into the buffer instead of read in place, with the same logits.
TEST_F(LlamaGenerate, MisalignedSafetensorsAreStagedThroughTheBuffer) {
  LLAMA_TEST_SKIP_WITHOUT(kStories);
  std::ifstream in(kStories.bf16(), std::ios::binary);
  std::vector<char> file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(file.size(), 8u);
  std::uint64_t json_size = 0;
  std::memcpy(&json_size, file.data(), 8);
  ASSERT_EQ((8 + json_size) % 2, 0u);
  // One more padding space after the JSON shifts the data section by one byte.
  const std::uint64_t shifted = json_size + 1;
  std::vector<char> odd(file.begin(), file.begin() + 8 + static_cast<std::ptrdiff_t>(json_size));
  std::memcpy(odd.data(), &shifted, 8);
  odd.push_back(' ');
  odd.insert(odd.end(), file.begin() + 8 + static_cast<std::ptrdiff_t>(json_size), file.end());
  const fs::path path = fzip(kStories).replace_extension(".odd.safetensors");
  std::ofstream(path, std::ios::binary).write(odd.data(), static_cast<std::streamsize>(odd.size()));

  const auto config = config_of(kStories);
  auto misaligned = open_safetensors(path, config);
  auto aligned = open_safetensors(kStories.bf16(), config);
  ASSERT_TRUE(misaligned && aligned);
  EXPECT_EQ(aligned->buffer_values(), 0u);
  EXPECT_GT(misaligned->buffer_values(), 0u);
  const auto expected = generate(config, *aligned, {1, 400, 401}, 20, -1);
  const auto actual = generate(config, *misaligned, {1, 400, 401}, 20, -1);
  EXPECT_EQ(actual.tokens, expected.tokens);
  EXPECT_FALSE(llama::first_bit_difference(actual.logits, expected.logits).has_value());
}

// Hugging Face's Meta-to-HF conversion permutes the rows of q_proj and k_proj within each head
// (row 2i to i, row 2i+1 to i + head_size/2) so that rotate_half pairing reproduces Meta's
// adjacent pairing. A copy of stories260K permuted that way and run with split_halves must
// rotate exactly the same numbers; only the order of the terms of each q.k sum changes, so the
// logits agree to rounding and the greedy tokens agree.
TEST_F(LlamaGenerate, SplitHalvesRopeOnPermutedWeightsMatchesAdjacentRope) {
  LLAMA_TEST_SKIP_WITHOUT(kStories);
  std::ifstream in(kStories.bf16(), std::ios::binary);
  std::vector<char> file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto header = floatzip::safetensors::parse_header(std::as_bytes(std::span(file)),
                                                          file.size(), "stories260K")
                          .value();
  const auto config = config_of(kStories);
  const std::size_t head_size = std::size_t(config.head_size());
  const std::size_t row_bytes = std::size_t(config.dim) * 2;
  for (int layer = 0; layer < config.n_layers; ++layer) {
    for (const char* suffix : {"self_attn.q_proj.weight", "self_attn.k_proj.weight"}) {
      const auto* tensor = header.find(llama::block_prefix(layer) + suffix);
      ASSERT_NE(tensor, nullptr);
      char* rows = file.data() + header.header_size() + tensor->data.begin;
      const std::vector<char> original(rows, rows + tensor->size_bytes());
      const std::size_t heads = tensor->shape[0] / head_size;
      for (std::size_t h = 0; h < heads; ++h)
        for (std::size_t i = 0; i < head_size; ++i) {
          // Row i of the permuted head is row 2i (first half) or 2(i - half) + 1 of the original.
          const std::size_t half = head_size / 2;
          const std::size_t from = i < half ? 2 * i : 2 * (i - half) + 1;
          std::memcpy(rows + (h * head_size + i) * row_bytes,
                      original.data() + (h * head_size + from) * row_bytes, row_bytes);
        }
    }
  }
  const fs::path path = fzip(kStories).replace_extension(".hf.safetensors");
  std::ofstream(path, std::ios::binary)
      .write(file.data(), static_cast<std::streamsize>(file.size()));

  auto hf_config = config;
  hf_config.rope = llama::rope_pairing::split_halves;
  auto permuted = open_safetensors(path, hf_config);
  auto plain = open_safetensors(kStories.bf16(), config);
  ASSERT_TRUE(permuted && plain);
  const std::vector<int> prompt = {llama::kBosToken, 400, 401};
  const auto expected = generate(config, *plain, prompt, 40, -1);
  const auto actual = generate(hf_config, *permuted, prompt, 40, -1);
  EXPECT_EQ(actual.tokens, expected.tokens);
  ASSERT_EQ(actual.logits.size(), expected.logits.size());
  float worst = 0.0f;
  for (std::size_t i = 0; i < actual.logits.size(); ++i)
    worst = std::max(worst, std::abs(actual.logits[i] - expected.logits[i]));
  EXPECT_LT(worst, 1e-3f);
  // And the pairing matters: the permuted weights with adjacent pairing are a different model.
  auto misread = open_safetensors(path, config);
  ASSERT_TRUE(misread);
  const auto wrong = generate(config, *misread, prompt, 40, -1);
  EXPECT_NE(wrong.tokens, expected.tokens);
}

TEST_F(LlamaGenerate, ConfigAndWeightMismatchesAreTypedErrors) {
  LLAMA_TEST_SKIP_WITHOUT(kStories);
  auto config = config_of(kStories);
  config.hidden_dim += 1;
  auto wrong_shape = llama::safetensors_source::open(kStories.bf16(), config);
  ASSERT_FALSE(wrong_shape.has_value());
  EXPECT_EQ(wrong_shape.error().code, floatzip::errc::bad_data);
  EXPECT_NE(wrong_shape.error().message.find("mlp.gate_proj.weight"), std::string::npos)
      << wrong_shape.error().message;
  auto wrong_shape_fzip = llama::fzip_source::open(fzip(kStories), config);
  ASSERT_FALSE(wrong_shape_fzip.has_value());
  EXPECT_NE(wrong_shape_fzip.error().message.find("mlp.gate_proj.weight"), std::string::npos);

  config = config_of(kStories);
  config.n_layers += 1;
  auto missing = llama::fzip_source::open(fzip(kStories), config);
  ASSERT_FALSE(missing.has_value());
  EXPECT_NE(missing.error().message.find("model.layers.5."), std::string::npos)
      << missing.error().message;
}

}  // namespace

TEST(LlamaConfig, RejectsInconsistentShapesWithTheFieldName) {
  const auto bad = [](const char* json) {
    auto config = llama::parse_model_config(json, "test.json");
    EXPECT_FALSE(config.has_value()) << json;
    return config ? std::string() : config.error().message;
  };
  const char* ok = R"({"dim": 64, "hidden_dim": 172, "n_layers": 5, "n_heads": 8,
                       "n_kv_heads": 4, "vocab_size": 512, "seq_len": 512})";
  ASSERT_TRUE(llama::parse_model_config(ok, "test.json").has_value());
  EXPECT_NE(bad(R"({"dim": 64, "n_layers": 5, "n_heads": 8, "vocab_size": 512,
                   "seq_len": 512})")
                .find("hidden_dim"),
            std::string::npos);
  EXPECT_NE(bad(R"({"dim": 64, "hidden_dim": 172, "n_layers": 5, "n_heads": 8,
                   "n_kv_heads": 3, "vocab_size": 512, "seq_len": 512})")
                .find("n_kv_heads"),
            std::string::npos);
  EXPECT_NE(bad(R"({"dim": 60, "hidden_dim": 172, "n_layers": 5, "n_heads": 8,
                   "vocab_size": 512, "seq_len": 512})")
                .find("dim"),
            std::string::npos);
  EXPECT_NE(bad(R"({"dim": 64, "hidden_dim": 172, "n_layers": 1024, "n_heads": 8,
                   "vocab_size": 512, "seq_len": 1048576})")
                .find("KV cache"),
            std::string::npos);
  EXPECT_NE(bad(R"({"dim": -64, "hidden_dim": 172, "n_layers": 5, "n_heads": 8,
                   "vocab_size": 512, "seq_len": 512})")
                .find("dim"),
            std::string::npos);
  EXPECT_FALSE(bad("[1, 2]").empty());
  EXPECT_FALSE(bad("{").empty());
}

TEST(LlamaTokenizer, TruncatedAndOversizedEntriesAreTypedErrors) {
  // max_token_length 4, then two tokens: "a" (score 0) and a length field of 9.
  std::vector<std::byte> bytes;
  const auto put = [&](const void* p, std::size_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    bytes.insert(bytes.end(), b, b + n);
  };
  const std::int32_t max_length = 4, one = 1, nine = 9;
  const float score = 0.0f;
  put(&max_length, 4);
  put(&score, 4);
  put(&one, 4);
  put("a", 1);
  auto truncated = llama::tokenizer::parse(bytes, 2, "tok.bin");
  ASSERT_FALSE(truncated.has_value());
  EXPECT_EQ(truncated.error().code, floatzip::errc::truncated);
  EXPECT_NE(truncated.error().message.find("token 1"), std::string::npos);
  put(&score, 4);
  put(&nine, 4);
  auto oversized = llama::tokenizer::parse(bytes, 2, "tok.bin");
  ASSERT_FALSE(oversized.has_value());
  EXPECT_EQ(oversized.error().code, floatzip::errc::bad_data);
  EXPECT_NE(oversized.error().message.find("length"), std::string::npos);
  auto one_token = llama::tokenizer::parse(bytes, 1, "tok.bin");
  ASSERT_TRUE(one_token.has_value());
  EXPECT_EQ(one_token->piece(0), "a");
}
