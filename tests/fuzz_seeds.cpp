// Writes the seed corpus of the container fuzzer from the real models at test time (the models
// are not part of the repository, and neither are files derived from them).
//
//   fuzz_seeds MODELS_DIR CORPUS_DIR [SCRATCH_DIR...]
//
// CORPUS_DIR is rewritten from scratch; each SCRATCH_DIR, where a fuzzer keeps the inputs it
// finds, is emptied so that every run starts from the seeds alone.
//
// Seeds are kept small so the fuzzer runs many inputs per second: for each model, a checkpoint
// of a few of its real tensors (a block's norm and smallest matrix, the final norm) is written
// as safetensors and compressed twice, once with the default options and once with tiny chunks
// and groups so that a few kilobytes already hold many chunks and sync groups. One hand-built
// checkpoint adds gaps, empty tensors and mixed dtypes.
#include <zstd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "floatzip/container.hpp"

namespace fs = std::filesystem;
using namespace floatzip;

namespace {

void die(const std::string& what) {
  std::fprintf(stderr, "fuzz_seeds: %s\n", what.c_str());
  std::exit(1);
}

void check(const error& e) {
  if (e) die(e.message);
}

// A few real tensors that keep a seed small but give every kind of bundle something to hold:
// the first vector (a block's norm), the first matrix of at most 8 KiB, and the last vector.
std::vector<const safetensors::tensor_info*> pick_tensors(const safetensors::header& header) {
  const safetensors::tensor_info* first_vector = nullptr;
  const safetensors::tensor_info* matrix = nullptr;
  const safetensors::tensor_info* last_vector = nullptr;
  for (const auto& t : header.tensors) {
    if (t.shape.size() == 1) {
      if (first_vector == nullptr) first_vector = &t;
      last_vector = &t;
    } else if (matrix == nullptr && t.size_bytes() <= 8192) {
      matrix = &t;
    }
  }
  std::vector<const safetensors::tensor_info*> picked;
  for (const auto* t : {first_vector, matrix, last_vector})
    if (t != nullptr && (picked.empty() || picked.back() != t)) picked.push_back(t);
  return picked;
}

void write_subset(const fs::path& model, const fs::path& out) {
  auto file = detail::mapped_file::open(model);
  if (!file) die(file.error().message);
  auto header = safetensors::parse_header(file->bytes(), file->size(), model.string());
  if (!header) die(header.error().message);
  const auto picked = pick_tensors(*header);
  std::vector<safetensors::tensor_spec> specs;
  for (const auto* t : picked) specs.push_back({t->name, t->type, t->shape});
  const std::byte* data = file->bytes().data() + header->header_size();
  check(safetensors::write_file(
      out, specs, header->metadata, [&](std::size_t i, std::span<std::byte> bytes) {
        std::memcpy(bytes.data(), data + picked[i]->data.begin, bytes.size());
        return error{};
      }));
}

// Writes `fzip` again as <fzip>.expanded: its metadata section decoded in place (see
// fuzz_container.cpp), so that the fuzzer's mutations reach the index behind the zstd frame.
// With `classic`, as <fzip>.classic.expanded with its compact index in the classic layout of
// earlier files (flag bit cleared), which readers still read.
void write_expanded(const fs::path& fzip, bool classic = false) {
  auto file = detail::mapped_file::open(fzip);
  if (!file) die(file.error().message);
  const auto bytes = file->bytes();
  std::uint64_t at = 0;
  std::memcpy(&at, bytes.data() + 32, 8);
  const auto frame = bytes.subspan(at);
  const unsigned long long n = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (n == ZSTD_CONTENTSIZE_UNKNOWN || n == ZSTD_CONTENTSIZE_ERROR) die("no metadata frame");
  std::vector<std::byte> out(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(at));
  out.resize(at + n);
  if (ZSTD_isError(ZSTD_decompress(out.data() + at, n, frame.data(), frame.size())))
    die("metadata frame does not decode");
  std::uint32_t flags = 0;
  std::memcpy(&flags, out.data() + 12, 4);
  if (classic && (flags & kContainerFlagCompactIndex) != 0) {
    std::uint64_t header_size = 0;
    std::uint64_t original_size = 0;
    std::memcpy(&header_size, out.data() + 40, 8);
    std::memcpy(&original_size, out.data() + 24, 8);
    const auto metadata = std::span<const std::byte>(out).subspan(at);
    auto header = safetensors::parse_header(metadata.first(header_size), original_size, "seed");
    if (!header) die(header.error().message);
    std::vector<std::byte> index;
    const std::string what =
        detail::expand_compact_index(metadata.subspan(header_size), *header, index);
    if (!what.empty()) die(what);
    out.resize(at + header_size);
    out.insert(out.end(), index.begin(), index.end());
    flags &= ~kContainerFlagCompactIndex;
    const std::uint64_t index_size = index.size();
    std::memcpy(out.data() + 12, &flags, 4);
    std::memcpy(out.data() + 64, &index_size, 8);
  }
  std::FILE* f =
      std::fopen((fzip.string() + (classic ? ".classic.expanded" : ".expanded")).c_str(), "wb");
  if (f == nullptr) die("cannot write an expanded seed");
  std::fwrite(out.data(), 1, out.size(), f);
  std::fclose(f);
}

void compress_both_ways(const fs::path& safetensors_file, const fs::path& corpus,
                        const std::string& stem) {
  compress_options plain;
  plain.codec.threads = 1;
  auto a = compress_file(safetensors_file, corpus / (stem + ".fzip"), plain);
  if (!a) die(a.error().message);
  compress_options tiny = plain;
  tiny.codec.chunk_bytes = kMinChunkBytes;
  tiny.codec.chunks_per_group = 4;
  tiny.codec.max_code_length = 9;
  auto b = compress_file(safetensors_file, corpus / (stem + ".tiny-chunks.fzip"), tiny);
  if (!b) die(b.error().message);
  write_expanded(corpus / (stem + ".fzip"));
  write_expanded(corpus / (stem + ".fzip"), /*classic=*/true);
  write_expanded(corpus / (stem + ".tiny-chunks.fzip"));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) die("usage: fuzz_seeds MODELS_DIR CORPUS_DIR [SCRATCH_DIR...]");
  const fs::path models = argv[1];
  const fs::path corpus = argv[2];
  std::error_code ec;
  fs::remove_all(corpus, ec);
  fs::create_directories(corpus);
  for (int i = 3; i < argc; ++i) {
    fs::remove_all(argv[i], ec);
    fs::create_directories(argv[i]);
  }
  int seeds = 0;
  if (fs::is_directory(models, ec)) {
    for (const auto& entry : fs::directory_iterator(models)) {
      if (entry.path().extension() != ".safetensors") continue;
      const std::string stem = entry.path().stem().string();
      const fs::path subset = corpus / (stem + ".subset.safetensors");
      write_subset(entry.path(), subset);
      compress_both_ways(subset, corpus, stem);
      seeds += 5;
    }
  } else {
    std::fprintf(stderr, "fuzz_seeds: %s not present; only the hand-built seed\n", models.c_str());
  }
  // Gaps, an empty tensor, mixed dtypes (FP8 values of a few codes: a coded FP8 bundle; F16 and
  // F32 ones) and an odd header length.
  const std::string json =
      R"({"model.layers.0.a":{"dtype":"BF16","shape":[40],"data_offsets":[0,80]},)"
      R"("model.layers.0.b":{"dtype":"BF16","shape":[8],"data_offsets":[80,96]},)"
      R"("f":{"dtype":"F32","shape":[2],"data_offsets":[100,108]},)"
      R"("e":{"dtype":"BF16","shape":[0],"data_offsets":[108,108]},)"
      R"("h":{"dtype":"BF16","shape":[3],"data_offsets":[108,114]},)"
      R"("q":{"dtype":"F8_E4M3","shape":[160],"data_offsets":[114,274]},)"
      R"("g":{"dtype":"F16","shape":[8],"data_offsets":[274,290]}})";
  std::string image(8, '\0');
  const std::uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) image[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  image += json;
  for (int i = 0; i < 296; ++i)
    image += static_cast<char>(i >= 114 && i < 274 ? 0x30 + (i * i) % 3 : (i * 37) & 0x7F);
  {
    std::FILE* f = std::fopen((corpus / "mixed.safetensors").c_str(), "wb");
    if (f == nullptr) die("cannot write the mixed seed");
    std::fwrite(image.data(), 1, image.size(), f);
    std::fclose(f);
  }
  compress_both_ways(corpus / "mixed.safetensors", corpus, "mixed");
  seeds += 5;
  std::printf("fuzz_seeds: %d seeds in %s\n", seeds, corpus.c_str());
  return 0;
}
