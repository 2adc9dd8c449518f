// floatzip: reading the safetensors format (the Hugging Face weight files floatzip compresses).
//
// A safetensors file is
//     u64 little-endian N | N bytes of UTF-8 JSON | data section
// The JSON object maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}, with
// offsets relative to the start of the data section, plus an optional "__metadata__" object of
// string values. The JSON may be padded with trailing spaces.
//
// floatzip reproduces input files byte for byte, so this parser is deliberately more tolerant
// than the reference implementation about layout (gaps between tensors, bytes after the last
// tensor and JSON key order are all allowed and preserved by the container) and strict about
// everything that would make the file ambiguous: unknown dtypes, shapes that disagree with the
// byte span, offsets outside the data section, overlapping tensors, duplicate names.
//
// Every function here treats its input as untrusted and reports problems as a floatzip::error
// whose message names the file, the tensor and the field.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "floatzip/detail/file_io.hpp"
#include "floatzip/error.hpp"

namespace floatzip::safetensors {

// The element types safetensors defines. The numeric values are stored in .fzip files and are
// therefore stable; 0 is never a valid dtype so that a zeroed record is rejected.
enum class dtype : std::uint16_t {
  boolean = 1,
  u8 = 2,
  i8 = 3,
  f8_e5m2 = 4,
  f8_e4m3 = 5,
  i16 = 6,
  u16 = 7,
  f16 = 8,
  bf16 = 9,
  i32 = 10,
  u32 = 11,
  f32 = 12,
  f64 = 13,
  i64 = 14,
  u64 = 15,
  f8_e8m0 = 16,
  c64 = 17,
  f4 = 18,
  f6_e2m3 = 19,
  f6_e3m2 = 20,
};

namespace detail {
struct dtype_entry {
  dtype type;
  std::string_view name;  // as spelled in safetensors JSON
  unsigned bits;          // storage bits per element
};
inline constexpr dtype_entry kDtypeTable[] = {
    {dtype::boolean, "BOOL", 8},    {dtype::u8, "U8", 8},           {dtype::i8, "I8", 8},
    {dtype::f8_e5m2, "F8_E5M2", 8}, {dtype::f8_e4m3, "F8_E4M3", 8}, {dtype::i16, "I16", 16},
    {dtype::u16, "U16", 16},        {dtype::f16, "F16", 16},        {dtype::bf16, "BF16", 16},
    {dtype::i32, "I32", 32},        {dtype::u32, "U32", 32},        {dtype::f32, "F32", 32},
    {dtype::f64, "F64", 64},        {dtype::i64, "I64", 64},        {dtype::u64, "U64", 64},
    {dtype::f8_e8m0, "F8_E8M0", 8}, {dtype::c64, "C64", 64},        {dtype::f4, "F4", 4},
    {dtype::f6_e2m3, "F6_E2M3", 6}, {dtype::f6_e3m2, "F6_E3M2", 6},
};
}  // namespace detail

// The JSON spelling ("BF16"), or "?" for a value outside the enum.
constexpr std::string_view to_string(dtype t) noexcept {
  for (const auto& e : detail::kDtypeTable)
    if (e.type == t) return e.name;
  return "?";
}

// Storage bits per element (4 and 6 for the packed sub-byte float formats); 0 when unknown.
constexpr unsigned dtype_bits(dtype t) noexcept {
  for (const auto& e : detail::kDtypeTable)
    if (e.type == t) return e.bits;
  return 0;
}

constexpr std::optional<dtype> dtype_from_string(std::string_view name) noexcept {
  for (const auto& e : detail::kDtypeTable)
    if (e.name == name) return e.type;
  return std::nullopt;
}

// True for the numeric values of the enum: used to validate dtypes read from a .fzip index.
constexpr bool is_known_dtype(std::uint16_t value) noexcept {
  return dtype_bits(static_cast<dtype>(value)) != 0;
}

// Number of elements of a shape, or nullopt when the product does not fit in 64 bits.
inline std::optional<std::uint64_t> element_count(std::span<const std::uint64_t> shape) noexcept {
  std::uint64_t count = 1;
  for (std::uint64_t extent : shape) {
    if (extent != 0 && count > std::numeric_limits<std::uint64_t>::max() / extent) {
      // A zero extent later in the shape still makes the product 0.
      if (std::find(shape.begin(), shape.end(), std::uint64_t{0}) != shape.end()) return 0;
      return std::nullopt;
    }
    count *= extent;
  }
  return count;
}

// Bytes taken by `count` elements of `t`, or nullopt on overflow or when packed sub-byte
// elements do not fill a whole number of bytes (safetensors rejects such tensors too).
inline std::optional<std::uint64_t> storage_bytes(dtype t, std::uint64_t count) noexcept {
  const unsigned bits = dtype_bits(t);
  if (bits == 0) return std::nullopt;
  if (bits % 8 == 0) {
    const std::uint64_t bytes_per = bits / 8;
    if (count > std::numeric_limits<std::uint64_t>::max() / bytes_per) return std::nullopt;
    return count * bytes_per;
  }
  if (count > std::numeric_limits<std::uint64_t>::max() / bits) return std::nullopt;
  const std::uint64_t total_bits = count * bits;
  if (total_bits % 8 != 0) return std::nullopt;
  return total_bits / 8;
}

// A half-open byte range [begin, end) relative to the start of the data section.
struct byte_range {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  [[nodiscard]] std::uint64_t size() const noexcept { return end - begin; }
  friend bool operator==(const byte_range&, const byte_range&) = default;
};

struct tensor_info {
  std::string name;
  dtype type = dtype::u8;
  std::vector<std::uint64_t> shape;
  byte_range data;  // relative to the data section

  [[nodiscard]] std::uint64_t size_bytes() const noexcept { return data.size(); }
  // Valid after parse_header: the shape product was checked against the byte span.
  [[nodiscard]] std::uint64_t element_count() const noexcept {
    return safetensors::element_count(shape).value_or(0);
  }
};

// The largest JSON header accepted, as in the reference implementation: a larger length field is
// corruption or an attempt to make the reader allocate without bound.
inline constexpr std::uint64_t kMaxHeaderJsonBytes = 100'000'000;

// A parsed, validated safetensors header.
struct header {
  std::uint64_t json_size = 0;       // N: the length field, counting any trailing padding spaces
  std::uint64_t data_size = 0;       // bytes after the header: file size - 8 - N
  std::vector<tensor_info> tensors;  // in JSON (file) order
  std::vector<std::pair<std::string, std::string>> metadata;  // "__metadata__", in JSON order
  bool has_metadata = false;

  // Bytes from the start of the file to the start of the data section (the part a container
  // keeps verbatim).
  [[nodiscard]] std::uint64_t header_size() const noexcept { return 8 + json_size; }
  [[nodiscard]] std::uint64_t file_size() const noexcept { return header_size() + data_size; }

  // Indices into `tensors` sorted by position in the data section (ties: empty tensors first).
  [[nodiscard]] std::vector<std::size_t> offset_order() const {
    std::vector<std::size_t> order(tensors.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      const auto& ra = tensors[a].data;
      const auto& rb = tensors[b].data;
      return ra.begin != rb.begin ? ra.begin < rb.begin : ra.end < rb.end;
    });
    return order;
  }

  // Bytes of the data section that belong to no tensor: alignment padding between tensors, or
  // anything after the last one. The reference writer leaves none, but other writers may, and a
  // byte-for-byte round trip has to keep them.
  [[nodiscard]] std::vector<byte_range> gaps() const {
    std::vector<byte_range> result;
    std::uint64_t cursor = 0;
    for (std::size_t i : offset_order()) {
      const auto& r = tensors[i].data;
      if (r.begin > cursor) result.push_back({cursor, r.begin});
      cursor = std::max(cursor, r.end);
    }
    if (cursor < data_size) result.push_back({cursor, data_size});
    return result;
  }

  [[nodiscard]] const tensor_info* find(std::string_view name) const noexcept {
    for (const auto& t : tensors)
      if (t.name == name) return &t;
    return nullptr;
  }
};

namespace detail {

inline std::uint64_t load_le64(const std::byte* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);  // config.hpp guarantees a little-endian host
  return v;
}

inline std::string quoted(std::string_view s) {
  // Names come from untrusted files: keep messages printable and bounded.
  std::string out = "'";
  const std::size_t limit = 200;
  for (std::size_t i = 0; i < s.size() && i < limit; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != 0x7F) {
      out += static_cast<char>(c);
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (s.size() > limit) out += "...";
  out += "'";
  return out;
}

// JSON nesting allowed anywhere in a header. Real headers nest three levels; the limit keeps a
// hostile header from building deep trees.
inline constexpr int kMaxJsonDepth = 16;

// Parses `text` as JSON, keeping object key order. Duplicate keys in any object are errors: the
// parser would silently keep only one of them, and a tensor (or a weight_map entry) would vanish.
inline result<nlohmann::ordered_json> parse_json_object(std::string_view text,
                                                        std::string_view where) {
  using json = nlohmann::ordered_json;
  std::vector<std::size_t> keys_per_open_object;
  bool too_deep = false;
  bool duplicate_key = false;
  json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth > kMaxJsonDepth) too_deep = true;
    switch (event) {
      case json::parse_event_t::object_start: keys_per_open_object.push_back(0); break;
      case json::parse_event_t::key:
        if (!keys_per_open_object.empty()) ++keys_per_open_object.back();
        break;
      case json::parse_event_t::object_end:
        if (!keys_per_open_object.empty()) {
          if (parsed.size() != keys_per_open_object.back()) duplicate_key = true;
          keys_per_open_object.pop_back();
        }
        break;
      default: break;
    }
    return true;
  };
  json parsed;
  try {
    parsed = json::parse(text.begin(), text.end(), check, /*allow_exceptions=*/true,
                         /*ignore_comments=*/false);
  } catch (const nlohmann::json::exception& e) {
    return error{errc::bad_data, std::string(where) + ": invalid JSON: " + e.what()};
  }
  if (too_deep)
    return error{errc::bad_data, std::string(where) + ": JSON nested deeper than " +
                                     std::to_string(kMaxJsonDepth) + " levels"};
  if (duplicate_key)
    return error{errc::bad_data, std::string(where) + ": JSON object with a duplicate key"};
  if (!parsed.is_object())
    return error{errc::bad_data, std::string(where) + ": JSON is not an object"};
  return parsed;
}

inline std::optional<std::uint64_t> json_u64(const nlohmann::ordered_json& v) {
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  if (v.is_number_integer()) {
    const auto s = v.get<std::int64_t>();
    if (s >= 0) return static_cast<std::uint64_t>(s);
  }
  return std::nullopt;
}

}  // namespace detail

// Parses and validates the header of a safetensors file of `file_size` bytes. `bytes` must start
// at the beginning of the file and cover at least the header (8 + N bytes); usually it is the
// whole mapped file. `file_name` only labels error messages.
inline result<header> parse_header(std::span<const std::byte> bytes, std::uint64_t file_size,
                                   std::string_view file_name) {
  const std::string where = std::string(file_name) + ": safetensors header";
  if (file_size < 8 || bytes.size() < 8)
    return error{errc::truncated, where + ": file is shorter than the 8-byte header length field"};
  header h;
  h.json_size = detail::load_le64(bytes.data());
  if (h.json_size > kMaxHeaderJsonBytes)
    return error{errc::too_large, where + ": field 'header length' declares " +
                                      std::to_string(h.json_size) + " bytes of JSON (limit " +
                                      std::to_string(kMaxHeaderJsonBytes) + ")"};
  if (h.json_size > file_size - 8)
    return error{errc::truncated, where + ": field 'header length' declares " +
                                      std::to_string(h.json_size) +
                                      " bytes of JSON but the file has " +
                                      std::to_string(file_size - 8) + " after the length field"};
  if (bytes.size() - 8 < h.json_size)
    return error{errc::truncated, where + ": header bytes not available"};
  h.data_size = file_size - 8 - h.json_size;

  const std::string_view text(reinterpret_cast<const char*>(bytes.data() + 8), h.json_size);
  auto parsed = detail::parse_json_object(text, where);
  if (!parsed) return parsed.error();

  h.tensors.reserve(parsed->size());
  for (const auto& [key, value] : parsed->items()) {
    if (key == "__metadata__") {
      if (!value.is_object())
        return error{errc::bad_data, where + ": field '__metadata__' is not an object"};
      h.has_metadata = true;
      for (const auto& [mkey, mvalue] : value.items()) {
        if (!mvalue.is_string())
          return error{errc::bad_data, where + ": field '__metadata__': value of " +
                                           detail::quoted(mkey) + " is not a string"};
        h.metadata.emplace_back(mkey, mvalue.get<std::string>());
      }
      continue;
    }
    const std::string tensor_where = where + ": tensor " + detail::quoted(key);
    if (!value.is_object()) return error{errc::bad_data, tensor_where + ": entry is not an object"};
    tensor_info info;
    info.name = key;

    const auto dtype_it = value.find("dtype");
    if (dtype_it == value.end() || !dtype_it->is_string())
      return error{errc::bad_data, tensor_where + ": field 'dtype' is missing or not a string"};
    const auto type = dtype_from_string(dtype_it->get_ref<const std::string&>());
    if (!type)
      return error{errc::bad_data, tensor_where + ": field 'dtype': unknown dtype " +
                                       detail::quoted(dtype_it->get_ref<const std::string&>())};
    info.type = *type;

    const auto shape_it = value.find("shape");
    if (shape_it == value.end() || !shape_it->is_array())
      return error{errc::bad_data, tensor_where + ": field 'shape' is missing or not an array"};
    if (shape_it->size() > 64)
      return error{errc::bad_data, tensor_where + ": field 'shape' has " +
                                       std::to_string(shape_it->size()) + " dimensions (limit 64)"};
    for (const auto& extent : *shape_it) {
      const auto v = detail::json_u64(extent);
      if (!v)
        return error{errc::bad_data, tensor_where +
                                         ": field 'shape' holds a value that is not a non-negative "
                                         "integer"};
      info.shape.push_back(*v);
    }

    const auto offsets_it = value.find("data_offsets");
    if (offsets_it == value.end() || !offsets_it->is_array() || offsets_it->size() != 2)
      return error{errc::bad_data,
                   tensor_where + ": field 'data_offsets' is missing or not a pair"};
    const auto begin = detail::json_u64((*offsets_it)[0]);
    const auto end = detail::json_u64((*offsets_it)[1]);
    if (!begin || !end)
      return error{errc::bad_data, tensor_where +
                                       ": field 'data_offsets' holds a value that is not a "
                                       "non-negative integer"};
    if (*begin > *end)
      return error{errc::bad_data, tensor_where + ": field 'data_offsets' is out of order (begin " +
                                       std::to_string(*begin) + " > end " + std::to_string(*end) +
                                       ")"};
    if (*end > h.data_size)
      return error{errc::bad_data, tensor_where + ": field 'data_offsets' ends at " +
                                       std::to_string(*end) + ", beyond the data section of " +
                                       std::to_string(h.data_size) + " bytes"};
    info.data = {*begin, *end};

    const auto count = element_count(info.shape);
    const auto bytes_needed = count ? storage_bytes(info.type, *count) : std::nullopt;
    if (!bytes_needed)
      return error{errc::bad_data, tensor_where +
                                       ": field 'shape': size overflows or does not "
                                       "fill whole bytes for dtype " +
                                       std::string(to_string(info.type))};
    if (*bytes_needed != info.data.size())
      return error{errc::bad_data,
                   tensor_where + ": field 'shape' needs " + std::to_string(*bytes_needed) +
                       " bytes of " + std::string(to_string(info.type)) +
                       " but 'data_offsets' spans " + std::to_string(info.data.size())};
    h.tensors.push_back(std::move(info));
  }

  // Overlap check on the offset order: any tensor that starts before the previous one ends.
  const auto order = h.offset_order();
  for (std::size_t k = 1; k < order.size(); ++k) {
    const auto& prev = h.tensors[order[k - 1]];
    const auto& next = h.tensors[order[k]];
    if (next.data.begin < prev.data.end)
      return error{errc::bad_data, where + ": tensors " + detail::quoted(prev.name) + " and " +
                                       detail::quoted(next.name) +
                                       " overlap (field 'data_offsets')"};
  }
  return h;
}

// ---------------------------------------------------------------------------------------------
// Sharded checkpoints: model.safetensors.index.json maps every tensor name to the shard file
// that holds it: {"metadata": {...}, "weight_map": {"name": "model-00001-of-00002.safetensors"}}.

struct shard_index {
  std::vector<std::pair<std::string, std::string>> weight_map;  // tensor name -> shard file
  std::vector<std::string> shard_files;     // distinct shard file names, in first-seen order
  std::optional<std::uint64_t> total_size;  // "metadata"."total_size" when present
};

inline constexpr std::string_view kShardIndexFileName = "model.safetensors.index.json";

// A shard name from an untrusted index must stay inside the checkpoint directory: a plain file
// name, no separators, no "." or "..".
inline bool is_plain_file_name(std::string_view name) noexcept {
  if (name.empty() || name == "." || name == "..") return false;
  for (char c : name)
    if (c == '/' || c == '\\' || c == '\0') return false;
  return true;
}

inline result<shard_index> parse_shard_index(std::string_view json_text,
                                             std::string_view file_name) {
  const std::string where = std::string(file_name) + ": shard index";
  if (json_text.size() > kMaxHeaderJsonBytes)
    return error{errc::too_large,
                 where + ": file larger than " + std::to_string(kMaxHeaderJsonBytes) + " bytes"};
  auto parsed = detail::parse_json_object(json_text, where);
  if (!parsed) return parsed.error();
  shard_index index;
  if (const auto meta = parsed->find("metadata"); meta != parsed->end()) {
    if (!meta->is_object() && !meta->is_null())
      return error{errc::bad_data, where + ": field 'metadata' is not an object"};
    if (meta->is_object()) {
      if (const auto total = meta->find("total_size"); total != meta->end()) {
        const auto v = detail::json_u64(*total);
        if (!v) return error{errc::bad_data, where + ": field 'metadata.total_size' is invalid"};
        index.total_size = *v;
      }
    }
  }
  const auto map = parsed->find("weight_map");
  if (map == parsed->end() || !map->is_object())
    return error{errc::bad_data, where + ": field 'weight_map' is missing or not an object"};
  for (const auto& [name, shard] : map->items()) {
    if (!shard.is_string())
      return error{errc::bad_data, where + ": field 'weight_map': entry " + detail::quoted(name) +
                                       " is not a string"};
    const auto& file = shard.get_ref<const std::string&>();
    if (!is_plain_file_name(file))
      return error{errc::bad_data, where + ": field 'weight_map': entry " + detail::quoted(name) +
                                       " names " + detail::quoted(file) +
                                       ", which is not a file in the checkpoint directory"};
    if (std::find(index.shard_files.begin(), index.shard_files.end(), file) ==
        index.shard_files.end())
      index.shard_files.push_back(file);
    index.weight_map.emplace_back(name, file);
  }
  return index;
}

// ---------------------------------------------------------------------------------------------
// Writing: floatzip decompresses into verbatim headers, so writing is only needed to make
// checkpoints (the demo, tests). The layout is the reference writer's: the JSON ("__metadata__"
// first, then the tensors in the given order) padded with spaces to a multiple of 8 bytes, then
// the tensors back to back in the same order.

struct tensor_spec {
  std::string name;
  dtype type = dtype::bf16;
  std::vector<std::uint64_t> shape;
};

// The header bytes (length field + JSON) of a file holding `tensors` in order.
inline result<std::vector<std::byte>> make_header(
    std::span<const tensor_spec> tensors,
    std::span<const std::pair<std::string, std::string>> metadata = {}) {
  nlohmann::ordered_json json = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& meta = json["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
  }
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    const auto count = element_count(t.shape);
    const auto bytes = count ? storage_bytes(t.type, *count) : std::nullopt;
    if (!bytes || t.name == "__metadata__" || json.contains(t.name))
      return error{errc::invalid_argument,
                   "safetensors writer: tensor " + detail::quoted(t.name) +
                       ": duplicate or reserved name, or a shape whose size overflows"};
    json[t.name] = {{"dtype", std::string(to_string(t.type))},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + *bytes}}};
    offset += *bytes;
  }
  std::string text = json.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  std::vector<std::byte> out(8 + text.size());
  const std::uint64_t length = text.size();
  std::memcpy(out.data(), &length, 8);
  std::memcpy(out.data() + 8, text.data(), text.size());
  return out;
}

// Produces tensor i's bytes into `out` (exactly its size).
using tensor_filler = std::function<error(std::size_t tensor, std::span<std::byte> out)>;

// Writes a safetensors file atomically, one tensor in memory at a time.
inline error write_file(const std::filesystem::path& path, std::span<const tensor_spec> tensors,
                        std::span<const std::pair<std::string, std::string>> metadata,
                        const tensor_filler& fill) {
  auto header_bytes = make_header(tensors, metadata);
  if (!header_bytes) return header_bytes.error();
  auto out = floatzip::detail::atomic_output_file::create(path);
  if (!out) return out.error();
  if (error e = out->write(*header_bytes)) return e;
  std::vector<std::byte> buffer;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    buffer.resize(*storage_bytes(tensors[i].type, *element_count(tensors[i].shape)));
    if (error e = fill(i, buffer)) return e;
    if (error e = out->write(buffer)) return e;
  }
  return out->commit();
}

}  // namespace floatzip::safetensors
