// The safetensors parser is the first thing an untrusted file meets: every malformed header must
// become an error that names the file, the tensor and the field; every well-formed layout
// (including gaps and odd header lengths) must parse.
#include <gtest/gtest.h>
#include <malloc.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <new>
#include <string>
#include <vector>

#include "floatzip/detail/file_io.hpp"
#include "floatzip/safetensors.hpp"
#include "test_paths.hpp"

// Heap bytes in use and their peak while `counting` is set: the parser's memory bound is checked
// on what it allocates, not on the process's resident set. AddressSanitizer brings its own
// allocator, so the count is off (and the test that needs it skipped) under it.
#if defined(__SANITIZE_ADDRESS__)
#define FLOATZIP_TEST_COUNTS_ALLOCATIONS 0
#else
#define FLOATZIP_TEST_COUNTS_ALLOCATIONS 1
namespace allocation_count {
std::atomic<bool> counting{false};
std::atomic<std::int64_t> live{0};
std::atomic<std::int64_t> peak{0};
}  // namespace allocation_count

void* operator new(std::size_t size) {
  void* p = std::malloc(size == 0 ? 1 : size);
  if (p == nullptr) throw std::bad_alloc();
  if (allocation_count::counting.load(std::memory_order_relaxed)) {
    const auto now = allocation_count::live += static_cast<std::int64_t>(malloc_usable_size(p));
    std::int64_t seen = allocation_count::peak.load(std::memory_order_relaxed);
    while (now > seen && !allocation_count::peak.compare_exchange_weak(seen, now)) {
    }
  }
  return p;
}
void operator delete(void* p) noexcept {
  if (p != nullptr && allocation_count::counting.load(std::memory_order_relaxed))
    allocation_count::live -= static_cast<std::int64_t>(malloc_usable_size(p));
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept { operator delete(p); }
#endif

namespace floatzip::safetensors {
namespace {

namespace fs = std::filesystem;

// A file image: length field, JSON as given (no padding added), `data_size` data bytes.
std::vector<std::byte> make_file(const std::string& json, std::uint64_t data_size) {
  std::vector<std::byte> file(8 + json.size() + data_size, std::byte{0x5A});
  const std::uint64_t n = json.size();
  std::memcpy(file.data(), &n, 8);
  std::memcpy(file.data() + 8, json.data(), json.size());
  return file;
}

result<header> parse(const std::string& json, std::uint64_t data_size) {
  const auto file = make_file(json, data_size);
  return parse_header(file, file.size(), "test.safetensors");
}

// Expects a parse error of `code` whose message contains every one of `parts`.
void expect_error(const result<header>& r, errc code, std::initializer_list<std::string> parts) {
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, code) << r.error().message;
  for (const auto& p : parts)
    EXPECT_NE(r.error().message.find(p), std::string::npos)
        << "message '" << r.error().message << "' lacks '" << p << "'";
}

// A header of `count` BF16 tensors with realistic names (a mixture-of-experts model's), one value
// each; with `duplicate_last`, the last name repeats the first.
std::string many_tensors_json(std::size_t count, bool duplicate_last = false) {
  std::string json = "{";
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t id = duplicate_last && i + 1 == count ? 0 : i;
    json += "\"model.layers." + std::to_string(id / 256) + ".mlp.experts." +
            std::to_string(id % 256) +
            ".up_proj.weight\":{\"dtype\":\"BF16\",\"shape\":[1],"
            "\"data_offsets\":[" +
            std::to_string(2 * i) + "," + std::to_string(2 * i + 2) + "]}";
    json += i + 1 == count ? "}" : ",";
  }
  return json;
}

#if FLOATZIP_TEST_COUNTS_ALLOCATIONS
// The peak of heap bytes allocated while parsing `file`, over what was in use before.
std::int64_t parse_peak_bytes(const std::vector<std::byte>& file, result<header>& parsed) {
  allocation_count::live = 0;
  allocation_count::peak = 0;
  allocation_count::counting = true;
  parsed = parse_header(file, file.size(), "big.safetensors");
  allocation_count::counting = false;
  return allocation_count::peak.load();
}
#endif

TEST(SafetensorsDtype, NamesBitsAndStableValuesRoundTrip) {
  for (std::uint16_t v = 0; v < 64; ++v) {
    const auto t = static_cast<dtype>(v);
    if (!is_known_dtype(v)) {
      EXPECT_EQ(dtype_bits(t), 0u);
      continue;
    }
    const auto name = to_string(t);
    ASSERT_TRUE(dtype_from_string(name).has_value()) << name;
    EXPECT_EQ(*dtype_from_string(name), t);
  }
  EXPECT_EQ(dtype_bits(dtype::bf16), 16u);
  EXPECT_EQ(dtype_bits(dtype::f4), 4u);
  EXPECT_EQ(static_cast<int>(dtype::bf16), 9);  // stored in .fzip files
  EXPECT_FALSE(is_known_dtype(0));
  EXPECT_FALSE(dtype_from_string("bf16").has_value());  // case matters in the format
}

TEST(SafetensorsSizes, OverflowAndSubByteRules) {
  const std::uint64_t big = std::uint64_t{1} << 40;
  EXPECT_FALSE(element_count(std::vector<std::uint64_t>{big, big}).has_value());
  EXPECT_EQ(element_count(std::vector<std::uint64_t>{big, big, 0}), 0u);
  EXPECT_EQ(element_count(std::vector<std::uint64_t>{}), 1u);  // a scalar
  EXPECT_FALSE(storage_bytes(dtype::f64, std::uint64_t{1} << 62).has_value());
  EXPECT_EQ(storage_bytes(dtype::f4, 6), 3u);
  EXPECT_FALSE(storage_bytes(dtype::f4, 3).has_value());  // half a byte left over
  EXPECT_EQ(storage_bytes(dtype::f6_e2m3, 4), 3u);
  EXPECT_FALSE(storage_bytes(dtype::f6_e3m2, 3).has_value());
}

TEST(SafetensorsParse, ValidHeaderKeepsOrderMetadataAndOffsets) {
  const std::string json = R"({"b":{"dtype":"BF16","shape":[2,3],"data_offsets":[8,20]},)"
                           R"("__metadata__":{"format":"pt","note":"x"},)"
                           R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}   )";
  auto h = parse(json, 20);
  ASSERT_TRUE(h.has_value()) << h.error().message;
  ASSERT_EQ(h->tensors.size(), 2u);
  EXPECT_EQ(h->tensors[0].name, "b");  // JSON order, not sorted
  EXPECT_EQ(h->tensors[1].name, "a");
  EXPECT_EQ(h->tensors[0].type, dtype::bf16);
  EXPECT_EQ(h->tensors[0].shape, (std::vector<std::uint64_t>{2, 3}));
  EXPECT_EQ(h->tensors[0].data, (byte_range{8, 20}));
  EXPECT_EQ(h->tensors[0].element_count(), 6u);
  ASSERT_EQ(h->metadata.size(), 2u);
  EXPECT_EQ(h->metadata[0], (std::pair<std::string, std::string>{"format", "pt"}));
  EXPECT_EQ(h->json_size, json.size());
  EXPECT_EQ(h->data_size, 20u);
  EXPECT_EQ(h->offset_order(), (std::vector<std::size_t>{1, 0}));
  EXPECT_TRUE(h->gaps().empty());
  EXPECT_NE(h->find("a"), nullptr);
  EXPECT_EQ(h->find("c"), nullptr);
}

TEST(SafetensorsParse, EmptyHeaderAndScalarsAndEmptyTensors) {
  auto empty = parse("{}", 0);
  ASSERT_TRUE(empty.has_value());
  EXPECT_TRUE(empty->tensors.empty());
  auto h = parse(R"({"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]},)"
                 R"("e":{"dtype":"BF16","shape":[0,5],"data_offsets":[8,8]}})",
                 8);
  ASSERT_TRUE(h.has_value()) << h.error().message;
  EXPECT_EQ(h->tensors[0].element_count(), 1u);
  EXPECT_EQ(h->tensors[1].size_bytes(), 0u);
}

TEST(SafetensorsParse, GapsBetweenAndAfterTensorsAreReported) {
  auto h = parse(R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},)"
                 R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]}})",
                 16);
  ASSERT_TRUE(h.has_value()) << h.error().message;
  EXPECT_EQ(h->gaps(), (std::vector<byte_range>{{3, 8}, {12, 16}}));
  auto leading = parse(R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[5,8]}})", 8);
  ASSERT_TRUE(leading.has_value());
  EXPECT_EQ(leading->gaps(), (std::vector<byte_range>{{0, 5}}));
}

TEST(SafetensorsParse, RealModelsParse) {
  if (!test::models_present()) GTEST_SKIP() << test::models_absent_message();
  const fs::path dir = test::models_dir();
  int parsed = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    auto file = floatzip::detail::mapped_file::open(entry.path());
    ASSERT_TRUE(file.has_value()) << file.error().message;
    auto h = parse_header(file->bytes(), file->size(), entry.path().string());
    ASSERT_TRUE(h.has_value()) << h.error().message;
    EXPECT_GT(h->tensors.size(), 30u);
    EXPECT_TRUE(h->gaps().empty()) << entry.path();
    EXPECT_TRUE(h->has_metadata);
    EXPECT_EQ(h->file_size(), file->size());
    ++parsed;
  }
  EXPECT_GE(parsed, 5);
}

// Issue 13 item 2: the JSON parse was quadratic in the number of keys (80 k keys took 104 s).
// The timing itself is a benchmark (floatzip_bench_header); this test would hang for minutes.
TEST(SafetensorsParse, HundredThousandTensorsParseAndADuplicateNameIsNamed) {
  const std::size_t count = 100'000;
  auto h = parse(many_tensors_json(count), 2 * count);
  ASSERT_TRUE(h.has_value()) << h.error().message;
  ASSERT_EQ(h->tensors.size(), count);
  EXPECT_EQ(h->tensors[count - 1].name, "model.layers.390.mlp.experts.159.up_proj.weight");
  EXPECT_EQ(h->tensors[count - 1].data, (byte_range{2 * count - 2, 2 * count}));
  expect_error(parse(many_tensors_json(count, /*duplicate_last=*/true), 2 * count), errc::bad_data,
               {"duplicate", "'model.layers.0.mlp.experts.0.up_proj.weight'"});
}

// Issue 13 item 3: the tree was built before any limit was checked (a 50 MB header took 1.9 GB).
// What the parser allocates is bounded by what it keeps, not by what the JSON holds.
TEST(SafetensorsParse, MemoryWhileParsingIsBoundedByWhatIsKept) {
#if !FLOATZIP_TEST_COUNTS_ALLOCATIONS
  GTEST_SKIP() << "heap counting is off under AddressSanitizer";
#else
  // A 20 MB array in a field floatzip does not read: nothing of it is kept.
  std::string ignored = R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"pad":[)";
  for (int i = 0; i < 10'000'000; ++i) ignored += "0,";
  ignored += "0]}}";
  const auto ignored_file = make_file(ignored, 1);
  result<header> parsed = error{};
  const std::int64_t ignored_peak = parse_peak_bytes(ignored_file, parsed);
  ASSERT_TRUE(parsed.has_value()) << parsed.error().message;
  EXPECT_LT(ignored_peak, 1 << 20)
      << "bytes allocated parsing a " << ignored.size() << "-byte header that holds one tensor";
  RecordProperty("ignored_array_peak_bytes", std::to_string(ignored_peak));

  // 100 k tensors: the parsed header, and little beside it, for a 10 MB text.
  const std::size_t count = 100'000;
  const std::string json = many_tensors_json(count);
  const auto file = make_file(json, 2 * count);
  const std::int64_t peak = parse_peak_bytes(file, parsed);
  ASSERT_TRUE(parsed.has_value()) << parsed.error().message;
  EXPECT_LT(double(peak), 3.0 * double(json.size()))
      << "bytes allocated parsing " << count << " tensors from " << json.size() << " bytes";
  RecordProperty("hundred_k_tensors_peak_bytes", std::to_string(peak));
  RecordProperty("hundred_k_tensors_json_bytes", std::to_string(json.size()));
#endif
}

// Issue 13 item 6: a set cancel flag stops a parse (the command sets it on Ctrl-C).
TEST(SafetensorsParse, ACancelFlagStopsTheParsers) {
  cancel_flag cancel{true};
  const auto file = make_file(many_tensors_json(10), 20);
  expect_error(parse_header(file, file.size(), "c.safetensors", {&cancel}), errc::cancelled,
               {"c.safetensors", "interrupted"});
  const std::string index = R"({"weight_map":{"a":"m.safetensors"}})";
  EXPECT_EQ(parse_shard_index(index, "i.json", {&cancel}).error().code, errc::cancelled);
  cancel = false;
  EXPECT_TRUE(parse_header(file, file.size(), "c.safetensors", {&cancel}).has_value());
  EXPECT_TRUE(parse_shard_index(index, "i.json", {&cancel}).has_value());
}

TEST(SafetensorsBadInput, TruncatedAndOversizedLengthField) {
  std::vector<std::byte> tiny(5);
  expect_error(parse_header(tiny, tiny.size(), "t.safetensors"), errc::truncated,
               {"t.safetensors", "header length"});
  auto file = make_file(R"({})", 0);
  const std::uint64_t too_long = 1000;
  std::memcpy(file.data(), &too_long, 8);
  expect_error(parse_header(file, file.size(), "t.safetensors"), errc::truncated,
               {"header length", "1000"});
  const std::uint64_t huge = std::uint64_t{1} << 62;
  std::memcpy(file.data(), &huge, 8);
  expect_error(parse_header(file, file.size(), "t.safetensors"), errc::too_large,
               {"header length"});
}

TEST(SafetensorsBadInput, InvalidJson) {
  expect_error(parse(R"({"a":)", 0), errc::bad_data, {"test.safetensors", "invalid JSON"});
  expect_error(parse(R"([1,2])", 0), errc::bad_data, {"not an object"});
  expect_error(parse("{\"a\":\"\xff\"}", 0), errc::bad_data, {"invalid JSON"});  // not UTF-8
  // Text after the object, once the object itself is valid (errors are found in text order).
  expect_error(parse(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}} {"b":2})", 1),
               errc::bad_data, {"invalid JSON"});
  std::string deep = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":)";
  for (int i = 0; i < 40; ++i) deep += "[";
  for (int i = 0; i < 40; ++i) deep += "]";
  deep += "}}";
  expect_error(parse(deep, 1), errc::bad_data, {"nested deeper"});
}

// Issue 13 item 10: the JSON parser stopped at a NUL byte, so tensors after it were ignored (and
// stored as a gap). The reference parser rejects such headers; so does floatzip.
TEST(SafetensorsBadInput, NulByteDoesNotEndTheHeader) {
  const std::string tensor_a = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  std::string hidden = tensor_a;
  hidden += '\0';
  hidden += R"({"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})";
  expect_error(parse(hidden, 2), errc::bad_data,
               {"test.safetensors", "NUL", "byte " + std::to_string(tensor_a.size())});
  std::string padded = tensor_a + std::string("  \0 ", 4);
  expect_error(parse(padded, 1), errc::bad_data, {"NUL"});
  EXPECT_TRUE(parse(tensor_a + "    ", 1).has_value());  // space padding stays valid
}

TEST(SafetensorsBadInput, DuplicateTensorNames) {
  expect_error(parse(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                     R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                     2),
               errc::bad_data, {"duplicate key"});
}

TEST(SafetensorsBadInput, FieldsNamedInErrors) {
  expect_error(parse(R"({"w":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}})", 1), errc::bad_data,
               {"'w'", "dtype", "Q7"});
  expect_error(parse(R"({"w":{"shape":[1],"data_offsets":[0,1]}})", 1), errc::bad_data,
               {"'w'", "dtype"});
  expect_error(parse(R"({"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", 1),
               errc::bad_data, {"'w'", "shape"});
  expect_error(parse(R"({"w":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})", 1),
               errc::bad_data, {"'w'", "shape"});
  expect_error(parse(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", 1), errc::bad_data,
               {"'w'", "data_offsets"});
  expect_error(parse(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,"1"]}})", 1),
               errc::bad_data, {"'w'", "data_offsets"});
  expect_error(parse(R"({"w":[1,2]})", 1), errc::bad_data, {"'w'", "not an object"});
  expect_error(parse(R"({"__metadata__":{"k":3}})", 0), errc::bad_data, {"__metadata__", "'k'"});
}

TEST(SafetensorsBadInput, OffsetsOutOfOrderOrBeyondTheData) {
  expect_error(parse(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[4,2]}})", 8), errc::bad_data,
               {"'w'", "data_offsets", "out of order"});
  expect_error(parse(R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[6,10]}})", 8),
               errc::bad_data, {"'w'", "data_offsets", "beyond the data section"});
  expect_error(
      parse(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,18446744073709551615]}})", 8),
      errc::bad_data, {"'w'", "data_offsets"});
}

TEST(SafetensorsBadInput, ShapeDisagreesWithSpanOrOverflows) {
  expect_error(parse(R"({"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}})", 8),
               errc::bad_data, {"'w'", "shape", "needs 6 bytes"});
  expect_error(parse(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],)"
                     R"("data_offsets":[0,8]}})",
                     8),
               errc::bad_data, {"'w'", "shape", "overflows"});
  expect_error(parse(R"({"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", 8), errc::bad_data,
               {"'w'", "whole bytes"});
  EXPECT_TRUE(parse(R"({"w":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}})", 2).has_value());
}

TEST(SafetensorsBadInput, OverlappingTensors) {
  expect_error(parse(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                     R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                     8),
               errc::bad_data, {"'a'", "'b'", "overlap"});
  // An empty tensor strictly inside another one is an overlap too.
  expect_error(parse(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                     R"("e":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}})",
                     8),
               errc::bad_data, {"overlap"});
  // Touching is fine.
  EXPECT_TRUE(parse(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                    R"("e":{"dtype":"U8","shape":[0],"data_offsets":[4,4]},)"
                    R"("b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
                    8)
                  .has_value());
}

TEST(SafetensorsBadInput, ControlCharactersInNamesAreEscapedInMessages) {
  auto r = parse("{\"a\\u0001b\":{\"dtype\":\"Q\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("a\\x01b"), std::string::npos) << r.error().message;
}

TEST(SafetensorsWriter, MakeHeaderMatchesTheReferenceLayout) {
  const std::vector<tensor_spec> specs = {{"x", dtype::bf16, {3}}, {"y", dtype::f32, {2, 2}}};
  const std::vector<std::pair<std::string, std::string>> meta = {{"format", "pt"}};
  auto bytes = make_header(specs, meta);
  ASSERT_TRUE(bytes.has_value());
  EXPECT_EQ((bytes->size() - 8) % 8, 0u);  // padded with spaces
  std::vector<std::byte> file = *bytes;
  file.resize(file.size() + 6 + 16);
  auto h = parse_header(file, file.size(), "written");
  ASSERT_TRUE(h.has_value()) << h.error().message;
  ASSERT_EQ(h->tensors.size(), 2u);
  EXPECT_EQ(h->tensors[0].data, (byte_range{0, 6}));
  EXPECT_EQ(h->tensors[1].data, (byte_range{6, 22}));
  EXPECT_EQ(h->metadata, meta);
  const std::vector<tensor_spec> duplicate = {{"x", dtype::u8, {1}}, {"x", dtype::u8, {1}}};
  EXPECT_FALSE(make_header(duplicate).has_value());
}

TEST(SafetensorsWriter, WriteFileStreamsTensorsAndLeavesNothingOnError) {
  const fs::path dir = fs::temp_directory_path() / ("fz_st_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::vector<tensor_spec> specs = {{"a", dtype::u8, {5}}, {"b", dtype::i16, {3}}};
  const auto path = dir / "w.safetensors";
  ASSERT_FALSE(write_file(path, specs, {}, [](std::size_t i, std::span<std::byte> out) -> error {
    for (std::size_t k = 0; k < out.size(); ++k) out[k] = std::byte(i * 16 + k);
    return {};
  }));
  auto file = floatzip::detail::mapped_file::open(path);
  ASSERT_TRUE(file.has_value());
  auto h = parse_header(file->bytes(), file->size(), "w");
  ASSERT_TRUE(h.has_value()) << h.error().message;
  EXPECT_EQ(file->bytes()[h->header_size() + 5], std::byte{16});

  const auto failed = dir / "failed.safetensors";
  const error e = write_file(failed, specs, {}, [](std::size_t i, std::span<std::byte>) -> error {
    return i == 1 ? error{errc::io_error, "source gone"} : error{};
  });
  EXPECT_EQ(e.code, errc::io_error);
  EXPECT_FALSE(fs::exists(failed));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
  fs::remove_all(dir);
}

TEST(SafetensorsShardIndex, ParsesAndRejectsPathsOutsideTheDirectory) {
  auto index =
      parse_shard_index(R"({"metadata":{"total_size":123},"weight_map":{"a":"m-1.safetensors",)"
                        R"("b":"m-2.safetensors","c":"m-1.safetensors"}})",
                        "index.json");
  ASSERT_TRUE(index.has_value()) << index.error().message;
  EXPECT_EQ(index->total_size, 123u);
  EXPECT_EQ(index->weight_map.size(), 3u);
  EXPECT_EQ(index->shard_files, (std::vector<std::string>{"m-1.safetensors", "m-2.safetensors"}));

  for (const char* bad : {"../x.safetensors", "/etc/passwd", "a/b.safetensors", "..", ""}) {
    auto r = parse_shard_index(std::string(R"({"weight_map":{"a":")") + bad + "\"}}", "index.json");
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_NE(r.error().message.find("weight_map"), std::string::npos);
  }
  EXPECT_FALSE(parse_shard_index(R"({"metadata":{}})", "i").has_value());
  EXPECT_FALSE(parse_shard_index(R"({"weight_map":{"a":1}})", "i").has_value());
  EXPECT_FALSE(parse_shard_index(R"({"weight_map":{"a":"x","a":"y"}})", "i").has_value());
  EXPECT_FALSE(parse_shard_index(R"({"weight_map":)", "i").has_value());
}

}  // namespace
}  // namespace floatzip::safetensors
