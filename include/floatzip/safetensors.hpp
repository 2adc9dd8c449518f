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
// byte span, offsets outside the data section, overlapping tensors, duplicate names, and a NUL
// byte in the JSON (which some parsers, nlohmann's among them, take for the end of the text, so
// that tensors after it would vanish; the reference implementation rejects it).
//
// The JSON is parsed as SAX events into flat structures, never as a tree: time and memory are
// linear in the header and bounded (kMaxHeaderJsonBytes, kMaxHeaderEntries, nesting depth) while
// parsing, and a cancel flag stops a parse between two events.
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
#include <unordered_set>
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

// The most tensors and "__metadata__" entries one header may hold, and the most entries of a
// shard index's weight_map. The largest real checkpoints hold tens of thousands of tensors in
// all; the limit bounds what a hostile header makes the parser keep (about 200 bytes each).
inline constexpr std::uint64_t kMaxHeaderEntries = std::uint64_t{1} << 20;

struct parse_options {
  // When set, from another thread or a signal handler, the parse stops with errc::cancelled.
  const cancel_flag* cancel = nullptr;
};

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
// hostile header from making the parser's stack grow.
inline constexpr int kMaxJsonDepth = 16;

// The kinds of SAX events the header handlers below act on.
enum class json_token {
  null_value,
  boolean,
  negative_integer,
  unsigned_integer,  // the value is in json_sax_base::number_
  floating,
  string,  // json_sax_base::text_ points at it (movable)
  key,     // likewise
  object_start,
  object_end,
  array_start,
  array_end,
};

// The part of a header parse that does not depend on the schema: nesting depth, cancellation,
// error capture, and skipping values floatzip does not read (they are checked as JSON, and
// counted towards the depth, but nothing of them is kept). The parse is nlohmann's SAX parser:
// no tree is ever built, so time and memory are linear in the text and in what is kept, and
// every limit is enforced at the event that crosses it.
class json_sax_base : public nlohmann::json_sax<nlohmann::json> {
 public:
  json_sax_base(std::string where, const cancel_flag* cancel)
      : where_(std::move(where)), cancel_(cancel) {}

  bool null() final { return event(json_token::null_value); }
  bool boolean(bool) final { return event(json_token::boolean); }
  bool number_integer(std::int64_t value) final {
    if (value < 0) return event(json_token::negative_integer);
    number_ = static_cast<std::uint64_t>(value);
    return event(json_token::unsigned_integer);
  }
  bool number_unsigned(std::uint64_t value) final {
    number_ = value;
    return event(json_token::unsigned_integer);
  }
  bool number_float(double, const std::string&) final { return event(json_token::floating); }
  bool string(std::string& value) final {
    text_ = &value;
    return event(json_token::string);
  }
  bool binary(nlohmann::json::binary_t&) final { return event(json_token::floating); }
  bool key(std::string& value) final {
    text_ = &value;
    return event(json_token::key);
  }
  bool start_object(std::size_t) final { return open() && event(json_token::object_start); }
  bool end_object() final {
    --depth_;
    return event(json_token::object_end);
  }
  bool start_array(std::size_t) final { return open() && event(json_token::array_start); }
  bool end_array() final {
    --depth_;
    return event(json_token::array_end);
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) final {
    std::string what = e.what();  // quotes the last token, which a hostile file makes huge
    if (what.size() > 300) what = what.substr(0, 300) + "...";
    return fail(errc::bad_data, "invalid JSON: " + quoted_text(what));
  }

  [[nodiscard]] const std::string& where() const noexcept { return where_; }
  [[nodiscard]] error take_error() { return std::move(error_); }

 protected:
  // Every event that is not skipped, in document order.
  virtual bool on(json_token token) = 0;

  bool fail(errc code, const std::string& what) {
    if (!error_) error_ = {code, where_ + ": " + what};
    return false;
  }
  // The next value is not read: on() sees nothing of it, and the event after it comes to the
  // same state on() left.
  void skip_next_value() noexcept { skipping_ = true; }

  std::uint64_t number_ = 0;
  std::string* text_ = nullptr;

 private:
  static std::string quoted_text(std::string_view s) {
    std::string out;
    for (char c : s) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) {
        static constexpr char kHex[] = "0123456789abcdef";
        out += "\\x";
        out += kHex[static_cast<unsigned char>(c) >> 4];
        out += kHex[c & 15];
      } else {
        out += c;
      }
    }
    return out;
  }
  bool open() {
    if (++depth_ > kMaxJsonDepth)
      return fail(errc::bad_data,
                  "JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    return true;
  }
  bool event(json_token token) {
    // One relaxed load per event: a Ctrl-C stops even a parse of 100 MB of ignored numbers.
    if (cancel_requested(cancel_)) return fail(errc::cancelled, "interrupted");
    if (!skipping_) return on(token);
    switch (token) {
      case json_token::object_start:
      case json_token::array_start: ++skip_depth_; return true;
      case json_token::object_end:
      case json_token::array_end: --skip_depth_; break;
      case json_token::key: return true;
      default: break;
    }
    if (skip_depth_ == 0) skipping_ = false;  // the skipped value is complete
    return true;
  }

  std::string where_;
  const cancel_flag* cancel_;
  error error_;
  int depth_ = 0;
  bool skipping_ = false;
  int skip_depth_ = 0;
};

// A hash set of positions in a vector of named entries, hashed and compared by name: finds
// duplicate names in expected constant time without a second copy of every name.
template <class Entry, std::string Entry::*Name>
class unique_names {
 public:
  explicit unique_names(const std::vector<Entry>& entries)
      : set_(0, hasher{&entries}, equal{&entries}) {}
  // Adds the last entry; false when an earlier entry has its name.
  bool add_last() {
    const auto& entries = *set_.hash_function().entries;
    return set_.insert(static_cast<std::uint32_t>(entries.size() - 1)).second;
  }

 private:
  struct hasher {
    const std::vector<Entry>* entries;
    std::size_t operator()(std::uint32_t i) const noexcept {
      return std::hash<std::string_view>{}((*entries)[i].*Name);
    }
  };
  struct equal {
    const std::vector<Entry>* entries;
    bool operator()(std::uint32_t a, std::uint32_t b) const noexcept {
      return (*entries)[a].*Name == (*entries)[b].*Name;
    }
  };
  std::unordered_set<std::uint32_t, hasher, equal> set_;
};

using string_pair = std::pair<std::string, std::string>;

// Runs `handler` over `text`. A NUL byte is refused first: nlohmann's lexer takes it for the end
// of the input, which would hide everything after it (tensors included) from the parse.
inline error parse_json_text(std::string_view text, json_sax_base& handler) {
  if (const void* nul = std::memchr(text.data(), 0, text.size()))
    return {errc::bad_data,
            handler.where() + ": NUL byte at byte " +
                std::to_string(static_cast<const char*>(nul) - text.data()) +
                " of the JSON (never valid JSON; the reference parser refuses it too)"};
  try {
    if (!nlohmann::json::sax_parse(text.begin(), text.end(), &handler,
                                   nlohmann::json::input_format_t::json, /*strict=*/true,
                                   /*ignore_comments=*/false))
      return handler.take_error();
  } catch (const std::bad_alloc&) {
    return {errc::too_large, handler.where() + ": out of memory while parsing the JSON"};
  }
  return handler.take_error();  // a check the handler made after the last event
}

// The safetensors header: {"name": {"dtype", "shape", "data_offsets", ...}, "__metadata__": {}}.
// Each tensor is checked when its entry closes; fields other than the three are skipped.
class header_sax final : public json_sax_base {
 public:
  header_sax(header& h, std::string where, const cancel_flag* cancel)
      : json_sax_base(std::move(where), cancel), h_(h), names_(h.tensors), keys_(h.metadata) {}

  // Called after a successful parse.
  bool complete() {
    if (state_ != state::done) return fail(errc::bad_data, "JSON is not an object");
    return true;
  }

 private:
  enum class state {
    start,
    entries,         // in the top-level object, expecting a key
    metadata,        // the value of "__metadata__"
    metadata_keys,   // in "__metadata__", expecting a key
    metadata_value,  // a metadata value
    tensor,          // a tensor's entry
    tensor_fields,   // in a tensor's entry, expecting a key
    dtype,
    shape,
    shape_values,
    offsets,
    offsets_values,
    done,
  };
  static constexpr unsigned kDtype = 1, kShape = 2, kOffsets = 4;

  tensor_info& tensor() { return h_.tensors.back(); }
  std::string tensor_where() { return "tensor " + detail::quoted(tensor().name); }
  bool tensor_fail(const std::string& what) {
    return fail(errc::bad_data, tensor_where() + ": " + what);
  }
  bool count_entry() {
    if (++entries_ > kMaxHeaderEntries)
      return fail(errc::too_large, "more than " + std::to_string(kMaxHeaderEntries) +
                                       " tensors and metadata entries");
    return true;
  }

  bool on(json_token token) override {
    using t = json_token;
    switch (state_) {
      case state::start:
        if (token != t::object_start) return fail(errc::bad_data, "JSON is not an object");
        state_ = state::entries;
        return true;
      case state::entries:
        if (token == t::object_end) {
          state_ = state::done;
          return true;
        }
        if (!count_entry()) return false;
        if (*text_ == "__metadata__") {
          if (h_.has_metadata)
            return fail(errc::bad_data, "duplicate key '__metadata__' (JSON object)");
          h_.has_metadata = true;
          state_ = state::metadata;
          return true;
        }
        h_.tensors.emplace_back().name = std::move(*text_);
        if (!names_.add_last())
          return fail(errc::bad_data, "duplicate key " + detail::quoted(tensor().name) +
                                          ": two tensors of that name");
        fields_ = 0;
        state_ = state::tensor;
        return true;
      case state::metadata:
        if (token != t::object_start)
          return fail(errc::bad_data, "field '__metadata__' is not an object");
        state_ = state::metadata_keys;
        return true;
      case state::metadata_keys:
        if (token == t::object_end) {
          state_ = state::entries;
          return true;
        }
        if (!count_entry()) return false;
        h_.metadata.emplace_back().first = std::move(*text_);
        if (!keys_.add_last())
          return fail(errc::bad_data, "field '__metadata__': duplicate key " +
                                          detail::quoted(h_.metadata.back().first));
        state_ = state::metadata_value;
        return true;
      case state::metadata_value:
        if (token != t::string)
          return fail(errc::bad_data, "field '__metadata__': value of " +
                                          detail::quoted(h_.metadata.back().first) +
                                          " is not a string");
        h_.metadata.back().second = std::move(*text_);
        state_ = state::metadata_keys;
        return true;
      case state::tensor:
        if (token != t::object_start) return tensor_fail("entry is not an object");
        state_ = state::tensor_fields;
        return true;
      case state::tensor_fields: {
        if (token == t::object_end) {
          state_ = state::entries;
          return finish_tensor();
        }
        unsigned field = 0;
        if (*text_ == "dtype") {
          field = kDtype;
          state_ = state::dtype;
        } else if (*text_ == "shape") {
          field = kShape;
          state_ = state::shape;
        } else if (*text_ == "data_offsets") {
          field = kOffsets;
          state_ = state::offsets;
        } else {
          skip_next_value();  // another writer's field: not read, not kept
          return true;
        }
        if ((fields_ & field) != 0)
          return tensor_fail("duplicate key " + detail::quoted(*text_) + " (JSON object)");
        fields_ |= field;
        return true;
      }
      case state::dtype: {
        if (token != t::string) return tensor_fail("field 'dtype' is missing or not a string");
        const auto type = dtype_from_string(*text_);
        if (!type) return tensor_fail("field 'dtype': unknown dtype " + detail::quoted(*text_));
        tensor().type = *type;
        state_ = state::tensor_fields;
        return true;
      }
      case state::shape:
        if (token != t::array_start) return tensor_fail("field 'shape' is missing or not an array");
        state_ = state::shape_values;
        return true;
      case state::shape_values:
        if (token == t::array_end) {
          state_ = state::tensor_fields;
          return true;
        }
        if (token != t::unsigned_integer)
          return tensor_fail("field 'shape' holds a value that is not a non-negative integer");
        if (tensor().shape.size() == 64)
          return tensor_fail("field 'shape' has more than 64 dimensions (limit 64)");
        tensor().shape.push_back(number_);
        return true;
      case state::offsets:
        if (token != t::array_start)
          return tensor_fail("field 'data_offsets' is missing or not a pair");
        offsets_count_ = 0;
        state_ = state::offsets_values;
        return true;
      case state::offsets_values:
        if (token == t::array_end) {
          if (offsets_count_ != 2)
            return tensor_fail("field 'data_offsets' is missing or not a pair");
          state_ = state::tensor_fields;
          return true;
        }
        if (token != t::unsigned_integer)
          return tensor_fail(
              "field 'data_offsets' holds a value that is not a non-negative integer");
        if (offsets_count_ == 2)
          return tensor_fail("field 'data_offsets' is missing or not a pair");
        offsets_[offsets_count_++] = number_;
        return true;
      case state::done: return fail(errc::bad_data, "invalid JSON after the object");
    }
    return false;
  }

  // The checks that need the whole entry, as soon as it closes.
  bool finish_tensor() {
    tensor_info& info = tensor();
    if ((fields_ & kDtype) == 0) return tensor_fail("field 'dtype' is missing or not a string");
    if ((fields_ & kShape) == 0) return tensor_fail("field 'shape' is missing or not an array");
    if ((fields_ & kOffsets) == 0)
      return tensor_fail("field 'data_offsets' is missing or not a pair");
    const std::uint64_t begin = offsets_[0];
    const std::uint64_t end = offsets_[1];
    if (begin > end)
      return tensor_fail("field 'data_offsets' is out of order (begin " + std::to_string(begin) +
                         " > end " + std::to_string(end) + ")");
    if (end > h_.data_size)
      return tensor_fail("field 'data_offsets' ends at " + std::to_string(end) +
                         ", beyond the data section of " + std::to_string(h_.data_size) + " bytes");
    info.data = {begin, end};
    const auto count = element_count(info.shape);
    const auto bytes_needed = count ? storage_bytes(info.type, *count) : std::nullopt;
    if (!bytes_needed)
      return tensor_fail("field 'shape': size overflows or does not fill whole bytes for dtype " +
                         std::string(to_string(info.type)));
    if (*bytes_needed != info.data.size())
      return tensor_fail("field 'shape' needs " + std::to_string(*bytes_needed) + " bytes of " +
                         std::string(to_string(info.type)) + " but 'data_offsets' spans " +
                         std::to_string(info.data.size()));
    return true;
  }

  header& h_;
  unique_names<tensor_info, &tensor_info::name> names_;
  unique_names<string_pair, &string_pair::first> keys_;
  state state_ = state::start;
  unsigned fields_ = 0;
  std::uint64_t offsets_[2] = {0, 0};
  unsigned offsets_count_ = 0;
  std::uint64_t entries_ = 0;
};

}  // namespace detail

// Parses and validates the header of a safetensors file of `file_size` bytes. `bytes` must start
// at the beginning of the file and cover at least the header (8 + N bytes); usually it is the
// whole mapped file. `file_name` only labels error messages.
//
// Time and memory are linear in the JSON and bounded before anything is kept: at most
// kMaxHeaderJsonBytes of text, kMaxHeaderEntries tensors and metadata entries, nesting of
// detail::kMaxJsonDepth levels, each checked as the parser reaches it. Duplicate names (tensors,
// metadata keys, a tensor's own fields) are errors; fields of a tensor entry other than dtype,
// shape and data_offsets are skipped, parsed but not kept. A NUL byte anywhere in the JSON is an
// error, as in the reference parser.
inline result<header> parse_header(std::span<const std::byte> bytes, std::uint64_t file_size,
                                   std::string_view file_name, const parse_options& options = {}) {
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
  detail::header_sax handler(h, where, options.cancel);
  if (error e = detail::parse_json_text(text, handler)) return e;
  if (!handler.complete()) return handler.take_error();

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

namespace detail {

// model.safetensors.index.json: {"metadata": {"total_size": n, ...} or null,
// "weight_map": {"name": "file", ...}, ...}. Other fields, at any level, are skipped.
class shard_index_sax final : public json_sax_base {
 public:
  shard_index_sax(shard_index& index, std::string where, const cancel_flag* cancel)
      : json_sax_base(std::move(where), cancel), index_(index), names_(index.weight_map) {}

  bool complete() {
    if (state_ != state::done) return fail(errc::bad_data, "JSON is not an object");
    if (!has_map_) return fail(errc::bad_data, "field 'weight_map' is missing or not an object");
    return true;
  }

 private:
  enum class state {
    start,
    fields,
    metadata,
    metadata_fields,
    total_size,
    map,
    map_keys,
    map_value,
    done
  };

  bool once(bool& seen, std::string_view field) {
    if (seen) return fail(errc::bad_data, "duplicate key '" + std::string(field) + "'");
    seen = true;
    return true;
  }

  bool on(json_token token) override {
    using t = json_token;
    switch (state_) {
      case state::start:
        if (token != t::object_start) return fail(errc::bad_data, "JSON is not an object");
        state_ = state::fields;
        return true;
      case state::fields:
        if (token == t::object_end) {
          state_ = state::done;
          return true;
        }
        if (*text_ == "metadata") {
          state_ = state::metadata;
          return once(has_metadata_, "metadata");
        }
        if (*text_ == "weight_map") {
          state_ = state::map;
          return once(has_map_, "weight_map");
        }
        skip_next_value();
        return true;
      case state::metadata:
        if (token == t::null_value) {
          state_ = state::fields;
          return true;
        }
        if (token != t::object_start)
          return fail(errc::bad_data, "field 'metadata' is not an object");
        state_ = state::metadata_fields;
        return true;
      case state::metadata_fields:
        if (token == t::object_end) {
          state_ = state::fields;
          return true;
        }
        if (*text_ == "total_size") {
          state_ = state::total_size;
          return once(has_total_, "metadata.total_size");
        }
        skip_next_value();
        return true;
      case state::total_size:
        if (token != t::unsigned_integer)
          return fail(errc::bad_data, "field 'metadata.total_size' is invalid");
        index_.total_size = number_;
        state_ = state::metadata_fields;
        return true;
      case state::map:
        if (token != t::object_start)
          return fail(errc::bad_data, "field 'weight_map' is missing or not an object");
        state_ = state::map_keys;
        return true;
      case state::map_keys:
        if (token == t::object_end) {
          state_ = state::fields;
          return true;
        }
        if (index_.weight_map.size() == kMaxHeaderEntries)
          return fail(errc::too_large, "field 'weight_map' has more than " +
                                           std::to_string(kMaxHeaderEntries) + " entries");
        index_.weight_map.emplace_back().first = std::move(*text_);
        if (!names_.add_last())
          return fail(errc::bad_data, "field 'weight_map': duplicate key " +
                                          detail::quoted(index_.weight_map.back().first));
        state_ = state::map_value;
        return true;
      case state::map_value: {
        auto& [name, file] = index_.weight_map.back();
        if (token != t::string)
          return fail(errc::bad_data,
                      "field 'weight_map': entry " + detail::quoted(name) + " is not a string");
        file = std::move(*text_);
        if (!is_plain_file_name(file))
          return fail(errc::bad_data, "field 'weight_map': entry " + detail::quoted(name) +
                                          " names " + detail::quoted(file) +
                                          ", which is not a file in the checkpoint directory");
        if (shard_set_.insert(file).second) index_.shard_files.push_back(file);
        state_ = state::map_keys;
        return true;
      }
      case state::done: return fail(errc::bad_data, "invalid JSON after the object");
    }
    return false;
  }

  shard_index& index_;
  unique_names<string_pair, &string_pair::first> names_;
  std::unordered_set<std::string> shard_set_;  // few distinct files, however many tensors
  state state_ = state::start;
  bool has_metadata_ = false;
  bool has_map_ = false;
  bool has_total_ = false;
};

}  // namespace detail

// Parses a shard index with the same bounds as parse_header (size, entries, depth, duplicate
// names, cancellation), checking that every shard it names is a plain file name.
inline result<shard_index> parse_shard_index(std::string_view json_text, std::string_view file_name,
                                             const parse_options& options = {}) {
  const std::string where = std::string(file_name) + ": shard index";
  if (json_text.size() > kMaxHeaderJsonBytes)
    return error{errc::too_large,
                 where + ": file larger than " + std::to_string(kMaxHeaderJsonBytes) + " bytes"};
  shard_index index;
  detail::shard_index_sax handler(index, where, options.cancel);
  if (error e = detail::parse_json_text(json_text, handler)) return e;
  if (!handler.complete()) return handler.take_error();
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

// The header bytes (length field + JSON) of a file holding `tensors` in order. The JSON is
// written directly (names escaped by nlohmann), in linear time whatever the number of tensors.
inline result<std::vector<std::byte>> make_header(
    std::span<const tensor_spec> tensors,
    std::span<const std::pair<std::string, std::string>> metadata = {}) {
  auto quote = [](const std::string& s) -> std::optional<std::string> {
    try {
      return nlohmann::json(s).dump();
    } catch (const nlohmann::json::exception&) {
      return std::nullopt;  // not UTF-8
    }
  };
  std::string text = "{";
  if (!metadata.empty()) {
    text += "\"__metadata__\":{";
    std::unordered_set<std::string_view> keys;
    for (const auto& [key, value] : metadata) {
      const auto k = quote(key);
      const auto v = quote(value);
      if (!k || !v || !keys.insert(key).second)
        return error{errc::invalid_argument, "safetensors writer: metadata key " +
                                                 detail::quoted(key) +
                                                 ": duplicate, or not UTF-8 (key or value)"};
      text += *k + ":" + *v + ",";
    }
    text.back() = '}';
    text += ",";
  }
  std::unordered_set<std::string_view> names;
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    const auto count = element_count(t.shape);
    const std::uint64_t size = count ? storage_bytes(t.type, *count).value_or(~0ull) : ~0ull;
    const auto name = quote(t.name);
    if (size == ~0ull || !name || t.name == "__metadata__" || !names.insert(t.name).second)
      return error{errc::invalid_argument,
                   "safetensors writer: tensor " + detail::quoted(t.name) +
                       ": duplicate or reserved name, a name that is not UTF-8, or a shape "
                       "whose size overflows"};
    text += *name + ":{\"dtype\":\"" + std::string(to_string(t.type)) + "\",\"shape\":[";
    for (std::size_t d = 0; d < t.shape.size(); ++d)
      text += (d == 0 ? "" : ",") + std::to_string(t.shape[d]);
    text += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + size) +
            "]},";
    offset += size;
  }
  if (text.size() > 1) text.pop_back();  // the last comma
  text += "}";
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
