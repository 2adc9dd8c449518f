// Helpers shared by the container and command-line tests: temporary directories, whole-file I/O,
// hand-built safetensors files, and patching .fzip files while keeping their checksums valid (so
// that a test reaches the validation behind the checksums).
#pragma once

#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "floatzip/container.hpp"
#include "test_paths.hpp"

namespace floatzip::testing {

namespace fs = std::filesystem;

inline fs::path models_dir() { return test::models_dir(); }

inline std::vector<fs::path> model_files() {
  std::vector<fs::path> files;
  std::error_code ec;
  if (!fs::is_directory(models_dir(), ec)) return files;
  for (const auto& e : fs::directory_iterator(models_dir()))
    if (e.path().extension() == ".safetensors") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

// A fresh directory removed with its contents at scope exit.
class temp_dir {
 public:
  temp_dir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("floatzip_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  [[nodiscard]] const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }
  // Names of the entries in the directory (to check that nothing, not even a temporary file,
  // was left behind).
  [[nodiscard]] std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(path_)) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  fs::path path_;
};

inline std::vector<std::byte> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> bytes(chars.size());
  if (!chars.empty()) std::memcpy(bytes.data(), chars.data(), chars.size());
  return bytes;
}

inline void write_file(const fs::path& p, std::span<const std::byte> bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

inline void write_text(const fs::path& p, const std::string& text) {
  write_file(p, std::as_bytes(std::span(text.data(), text.size())));
}

// A safetensors image from literal JSON (used as is: no padding) and data bytes.
inline std::vector<std::byte> safetensors_image(const std::string& json,
                                                std::span<const std::byte> data) {
  std::vector<std::byte> file(8 + json.size());
  const std::uint64_t n = json.size();
  std::memcpy(file.data(), &n, 8);
  std::memcpy(file.data() + 8, json.data(), json.size());
  file.insert(file.end(), data.begin(), data.end());
  return file;
}

// Deterministic bytes that look like BF16 weights (so BF16 bundles compress).
inline std::vector<std::byte> weight_like_bytes(std::size_t count, std::uint32_t seed) {
  std::vector<std::byte> out(count);
  std::uint32_t x = seed * 2654435761u + 1;
  for (std::size_t i = 0; i < count; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    // Odd bytes are the high byte of a little-endian BF16: sign + top exponent bits.
    out[i] = (i & 1) ? std::byte(0x3C | (x & 0x80) | ((x >> 9) & 1)) : std::byte(x & 0xFF);
  }
  return out;
}

// Splits a real model into a sharded Hugging Face checkpoint in `dir`:
// model-0000k-of-0000n.safetensors, model.safetensors.index.json and a config.json.
inline void make_sharded_checkpoint(const fs::path& source, const fs::path& dir, int shards) {
  auto file = detail::mapped_file::open(source).value();
  const auto header = safetensors::parse_header(file.bytes(), file.size(), source.string()).value();
  const std::byte* data = file.bytes().data() + header.header_size();
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  const std::size_t per_shard = (header.tensors.size() + shards - 1) / shards;
  for (int s = 0; s < shards; ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, shards);
    std::vector<safetensors::tensor_spec> specs;
    std::vector<const safetensors::tensor_info*> infos;
    for (std::size_t i = s * per_shard; i < std::min(header.tensors.size(), (s + 1) * per_shard);
         ++i) {
      const auto& t = header.tensors[i];
      specs.push_back({t.name, t.type, t.shape});
      infos.push_back(&t);
      weight_map[t.name] = name;
    }
    const error e = safetensors::write_file(
        dir / name, specs, header.metadata, [&](std::size_t i, std::span<std::byte> out) {
          std::memcpy(out.data(), data + infos[i]->data.begin, out.size());
          return error{};
        });
    if (e) throw exception(e);
  }
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", header.data_size}};
  index["weight_map"] = weight_map;
  write_text(dir / "model.safetensors.index.json", index.dump(2) + "\n");
  write_text(dir / "config.json", R"({"architectures": ["LlamaForCausalLM"]})"
                                  "\n");
}

// ---- .fzip surgery ----------------------------------------------------------------------------

// Index surgery on format 2, whose index lives in a zstd frame at the end of the file, works on
// an "expanded" image: the file up to its metadata section followed by the decoded metadata
// (verbatim header, then index). layout_of gives offsets in those coordinates for the header and
// index (header_offset, index_offset, records), and the compressed file's own metadata_offset /
// metadata_size for byte flips. fix_checksums repacks an expanded image into a valid-looking file
// (recompressing the metadata, updating sizes and every checksum); given a file that is not
// expanded, it expands it first. A patched file_size (field 16) keeps its offset from the true
// size.
struct fzip_layout {
  std::uint64_t metadata_offset, metadata_size;  // in the compressed file
  std::uint64_t header_offset, header_size, index_offset, index_size, bundles_offset;
  std::uint32_t bundle_count, tensor_count, gap_count;
  [[nodiscard]] std::uint64_t bundle_record(std::uint32_t b) const {
    return index_offset + kIndexHeaderBytes + std::uint64_t{b} * kBundleRecordBytes;
  }
  [[nodiscard]] std::uint64_t tensor_record(std::uint32_t t) const {
    return bundle_record(bundle_count) + std::uint64_t{t} * kTensorRecordBytes;
  }
};

inline std::uint64_t get_u64(const std::vector<std::byte>& f, std::uint64_t at) {
  std::uint64_t v;
  std::memcpy(&v, f.data() + at, 8);
  return v;
}
inline std::uint32_t get_u32(const std::vector<std::byte>& f, std::uint64_t at) {
  std::uint32_t v;
  std::memcpy(&v, f.data() + at, 4);
  return v;
}
template <class T>
void put(std::vector<std::byte>& f, std::uint64_t at, T v) {
  std::memcpy(f.data() + at, &v, sizeof v);
}

// True when the bytes at the metadata offset are a zstd frame (a compressed file).
inline bool is_compressed_form(const std::vector<std::byte>& f) {
  const std::uint64_t at = get_u64(f, 32);
  return at <= f.size() && f.size() - at >= 4 && get_u32(f, at) == 0xFD2FB528u;
}

// A compact index (flag bit 0) comes out in the classic layout, flag cleared, so that surgery
// finds every record at a fixed offset, unless `keep_compact_index` (surgery on the compact
// layout itself).
inline std::vector<std::byte> expand(const std::vector<std::byte>& f,
                                     bool keep_compact_index = false) {
  const std::uint64_t at = get_u64(f, 32);
  const auto frame = std::span(f).subspan(at);
  const unsigned long long n = ZSTD_getFrameContentSize(frame.data(), frame.size());
  std::vector<std::byte> out(f.begin(), f.begin() + static_cast<std::ptrdiff_t>(at));
  std::vector<std::byte> decoded(static_cast<std::size_t>(n));
  const std::size_t got =
      ZSTD_decompress(decoded.data(), decoded.size(), frame.data(), frame.size());
  EXPECT_FALSE(ZSTD_isError(got));
  if (!keep_compact_index && (get_u32(f, 12) & kContainerFlagCompactIndex)) {
    const std::uint64_t header_size = get_u64(f, 40);
    const auto header_bytes = std::span<const std::byte>(decoded).first(header_size);
    auto header = safetensors::parse_header(header_bytes, get_u64(f, 24), "expand");
    EXPECT_TRUE(header.has_value());
    std::vector<std::byte> classic;
    EXPECT_EQ(detail::expand_compact_index(std::span<const std::byte>(decoded).subspan(header_size),
                                           *header, classic),
              "");
    decoded.resize(header_size);
    decoded.insert(decoded.end(), classic.begin(), classic.end());
    put(out, 12, get_u32(f, 12) & ~kContainerFlagCompactIndex);
    put(out, 64, std::uint64_t{classic.size()});
  }
  out.insert(out.end(), decoded.begin(), decoded.end());
  return out;
}

inline fzip_layout layout_of(const std::vector<std::byte>& f) {
  fzip_layout l{};
  l.metadata_offset = get_u64(f, 32);
  l.metadata_size = get_u64(f, 56);
  l.header_offset = l.metadata_offset;
  l.header_size = get_u64(f, 40);
  l.index_offset = l.header_offset + l.header_size;
  const auto e = is_compressed_form(f) ? expand(f) : f;
  l.index_size = get_u64(e, 64);
  l.bundles_offset = get_u64(f, 80);
  l.bundle_count = get_u32(e, l.index_offset);
  l.tensor_count = get_u32(e, l.index_offset + 4);
  l.gap_count = get_u32(e, l.index_offset + 8);
  return l;
}

// Repacks an expanded image (or re-seals a compressed file) with every checksum recomputed.
inline void fix_checksums(std::vector<std::byte>& f, bool bundles_too = false) {
  if (is_compressed_form(f)) f = expand(f);
  const std::uint64_t at = get_u64(f, 32);
  const std::uint64_t expected_file_size = at + get_u64(f, 56);
  // A patched file_size keeps its difference from the true size.
  const std::uint64_t file_size_delta = get_u64(f, 16) - expected_file_size;
  const auto decoded = std::span<const std::byte>(f).subspan(at);
  if (bundles_too) {
    const std::uint64_t index = at + get_u64(f, 40);
    const std::uint32_t bundles = get_u32(f, index);
    for (std::uint32_t b = 0; b < bundles; ++b) {
      const std::uint64_t rec = index + kIndexHeaderBytes + std::uint64_t{b} * kBundleRecordBytes;
      const std::uint64_t offset = get_u64(f, rec);
      const std::uint64_t size = get_u64(f, rec + 8);
      if (offset <= at && size <= at - offset)
        put(f, rec + 16, detail::xxh3_64(std::span(f).subspan(offset, size)));
    }
  }
  const std::vector<std::byte> frame = [&] {
    std::vector<std::byte> out(ZSTD_compressBound(decoded.size()));
    out.resize(ZSTD_compress(out.data(), out.size(), decoded.data(), decoded.size(), 3));
    return out;
  }();
  put(f, 72, detail::xxh3_64(decoded));
  std::vector<std::byte> packed(f.begin(), f.begin() + static_cast<std::ptrdiff_t>(at));
  packed.insert(packed.end(), frame.begin(), frame.end());
  put(packed, 56, std::uint64_t{frame.size()});
  put(packed, 16, std::uint64_t{packed.size()} + file_size_delta);
  put(packed, 48, detail::xxh3_64(frame));
  put(packed, 120, detail::xxh3_64(std::span(packed).first(120)));
  f = std::move(packed);
}

// Opens the image and touches everything: every bundle decoded and checked, every tensor read.
// What a hostile file must fail cleanly somewhere in.
inline error open_and_read_everything(const std::vector<std::byte>& fzip,
                                      const reader_options& options = {}) {
  auto reader = container_reader::from_bytes(fzip, "hostile.fzip", options);
  if (!reader) return reader.error();
  if (error e = reader->verify_all({1})) return e;
  for (const auto& t : reader->tensors()) {
    std::vector<std::byte> out(t.size_bytes());
    if (error e = reader->read_tensor(t, out, {1})) return e;
  }
  return {};
}

}  // namespace floatzip::testing
