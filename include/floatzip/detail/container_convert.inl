// floatzip internals: safetensors <-> .fzip conversion, verification, model directories.
#pragma once

#include <algorithm>
#include <map>
#include <new>
#include <regex>
#include <set>
#include <system_error>
#include <unordered_map>

namespace floatzip {

inline std::string_view transformer_block_prefix(std::string_view name) noexcept {
  constexpr std::string_view kLayers = "layers.";
  for (std::size_t at = name.find(kLayers); at != std::string_view::npos;
       at = name.find(kLayers, at + 1)) {
    if (at != 0 && name[at - 1] != '.') continue;  // "xlayers.3." is not a block
    std::size_t digits_end = at + kLayers.size();
    while (digits_end < name.size() && name[digits_end] >= '0' && name[digits_end] <= '9')
      ++digits_end;
    if (digits_end == at + kLayers.size() || digits_end >= name.size() || name[digits_end] != '.')
      continue;
    return name.substr(0, digits_end + 1);
  }
  return {};
}

inline std::string_view grouping_name(grouping_kind kind) noexcept {
  switch (kind) {
    case grouping_kind::layers: return "layers";
    case grouping_kind::automatic: return "auto";
    case grouping_kind::diffusion: return "diffusion";
    case grouping_kind::experts: return "experts";
    case grouping_kind::pattern: return "regex";
    case grouping_kind::none: return "none";
  }
  return "unknown";
}

inline result<grouping> parse_grouping(std::string_view spec) {
  constexpr std::string_view kRegex = "regex:";
  for (std::uint32_t k = 0; k < kGroupingKindCount; ++k) {
    const auto kind = static_cast<grouping_kind>(k);
    if (kind != grouping_kind::pattern && spec == grouping_name(kind)) return grouping{kind, {}};
  }
  if (spec.substr(0, kRegex.size()) == kRegex) {
    grouping g{grouping_kind::pattern, std::string(spec.substr(kRegex.size()))};
    if (g.pattern.empty())
      return error{errc::invalid_argument, "grouping: empty regular expression"};
    try {
      (void)std::regex(g.pattern, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      return error{errc::invalid_argument, "grouping: regular expression '" + g.pattern +
                                               "' does not compile: " + e.what()};
    }
    return g;
  }
  return error{errc::invalid_argument,
               "grouping '" + std::string(spec) +
                   "': expected auto, layers, diffusion, experts, none or regex:PATTERN"};
}

namespace detail {

// The prefix of `name` through its first component of digits that follows a component named in
// `words` (any non-numeric component when `words` is empty) and is not the last component:
// "a.b.layers.3.mlp.w" -> "a.b.layers.3.". Empty when there is none.
inline std::string_view numbered_prefix(std::string_view name,
                                        std::initializer_list<std::string_view> words) noexcept {
  std::size_t begin = 0;
  std::string_view previous;
  while (begin < name.size()) {
    const std::size_t dot = name.find('.', begin);
    if (dot == std::string_view::npos) break;  // the last component is never the number
    const std::string_view part = name.substr(begin, dot - begin);
    const bool digits = !part.empty() && std::all_of(part.begin(), part.end(),
                                                     [](char c) { return c >= '0' && c <= '9'; });
    if (digits && !previous.empty() && !(previous[0] >= '0' && previous[0] <= '9')) {
      bool wanted = words.size() == 0;
      for (std::string_view w : words) wanted = wanted || previous == w;
      if (wanted) return name.substr(0, dot + 1);
    }
    previous = part;
    begin = dot + 1;
  }
  return {};
}

// The group of a tensor under `g` (empty: no group). `pattern` is g's compiled expression.
inline std::string group_key(const grouping& g, const std::regex* pattern, std::string_view name) {
  switch (g.kind) {
    case grouping_kind::layers: return std::string(transformer_block_prefix(name));
    case grouping_kind::automatic: return std::string(numbered_prefix(name, {}));
    case grouping_kind::diffusion:
      return std::string(numbered_prefix(name, {"transformer_blocks", "single_transformer_blocks",
                                                "down_blocks", "up_blocks", "blocks", "layers"}));
    case grouping_kind::experts: {
      constexpr std::string_view kExperts = "experts.";
      for (std::size_t at = name.rfind(kExperts); at != std::string_view::npos;
           at = at == 0 ? std::string_view::npos : name.rfind(kExperts, at - 1)) {
        if (at != 0 && name[at - 1] != '.') continue;
        const auto rest = numbered_prefix(name.substr(at), {"experts"});
        if (!rest.empty()) return std::string(name.substr(0, at + rest.size()));
      }
      return std::string(transformer_block_prefix(name));
    }
    case grouping_kind::pattern: {
      std::match_results<std::string_view::const_iterator> m;
      if (pattern == nullptr || !std::regex_search(name.begin(), name.end(), m, *pattern))
        return {};
      return m.size() > 1 && m[1].matched ? m[1].str() : m[0].str();
    }
    case grouping_kind::none: return {};
  }
  return {};
}

// One bundle to write: a raw tile (a tensor of a dtype that is not coded, or a gap) or a group of
// float tensors of one value format.
struct bundle_plan {
  bundle_kind kind = bundle_kind::raw;
  value_format format = value_format::bf16;  // of a huffman bundle
  std::vector<std::uint32_t> members;  // indices into the container's tensor list, bundle order
  std::optional<std::uint32_t> gap;    // index into the gap list for a gap's raw bundle
  // A piece of a tensor split across bundles: values [piece_first, + piece_values) of its one
  // member (piece_values == 0: the members whole).
  std::uint64_t piece_first = 0;
  std::uint64_t piece_values = 0;
};

struct container_plan {
  std::vector<container_tensor> tensors;  // offset order
  std::vector<container_gap> gaps;
  std::vector<bundle_plan> bundles;  // file order: order of first appearance in the data
};

// Assigns every tile of the data section to a bundle. `format_of(info)` says which value format
// a tensor is coded in (nullopt: stored raw); plan_container(h, ...) without it asks
// container_format_of with every F32 tensor taken for fp32.
template <class FormatOf>
container_plan plan_container(const safetensors::header& h, const grouping& g,
                              std::uint64_t max_bundle_values, FormatOf&& format_of) {
  container_plan plan;
  std::optional<std::regex> pattern;
  if (g.kind == grouping_kind::pattern) pattern.emplace(g.pattern, std::regex::ECMAScript);
  const auto order = h.offset_order();
  const auto gap_ranges = h.gaps();
  // Groups are per format: tensors of different formats never share a bundle.
  std::map<std::pair<value_format, std::string>, std::uint32_t, std::less<>> block_bundle;
  std::map<std::uint32_t, std::uint64_t> group_values;  // values in each group's bundle
  // Per format: the bundle small loose tensors go to now, and its values.
  std::array<std::optional<std::uint32_t>, kValueFormatCount> loose_bundle{};
  std::array<std::uint64_t, kValueFormatCount> loose_values{};
  auto new_bundle = [&](bundle_kind kind, value_format format) {
    plan.bundles.push_back({kind, format, {}, std::nullopt, 0, 0});
    return static_cast<std::uint32_t>(plan.bundles.size() - 1);
  };
  std::size_t ti = 0;
  std::size_t gi = 0;
  while (ti < order.size() || gi < gap_ranges.size()) {
    // Same tie rule as the reader: at one position an empty tensor precedes the gap.
    const bool take_tensor =
        ti < order.size() &&
        (gi == gap_ranges.size() || h.tensors[order[ti]].data.begin < gap_ranges[gi].begin ||
         (h.tensors[order[ti]].data.begin == gap_ranges[gi].begin &&
          h.tensors[order[ti]].data.size() == 0));
    if (!take_tensor) {
      const std::uint32_t b = new_bundle(bundle_kind::raw, value_format::bf16);
      plan.bundles[b].gap = static_cast<std::uint32_t>(plan.gaps.size());
      plan.gaps.push_back({gap_ranges[gi++], b});
      continue;
    }
    const auto& info = h.tensors[order[ti]];
    container_tensor t;
    t.name = info.name;
    t.type = info.type;
    t.shape = info.shape;
    t.original = info.data;
    t.header_order = static_cast<std::uint32_t>(order[ti]);
    ++ti;
    const std::optional<value_format> format = format_of(info);
    if (!format) {
      t.bundle = new_bundle(bundle_kind::raw, value_format::bf16);
      plan.bundles[t.bundle].members.push_back(static_cast<std::uint32_t>(plan.tensors.size()));
      plan.tensors.push_back(std::move(t));
      continue;
    }
    const std::size_t f = static_cast<std::size_t>(*format);
    const std::uint64_t tensor_values = t.size_bytes() / value_bytes(*format);
    if (tensor_values > max_bundle_values) {
      // Too big for one bundle: consecutive bundles of at most max_bundle_values values each,
      // so that no step of compression or decompression holds more than one of them.
      const std::uint64_t pieces = (tensor_values + max_bundle_values - 1) / max_bundle_values;
      t.bundle = static_cast<std::uint32_t>(plan.bundles.size());
      t.bundle_count = static_cast<std::uint32_t>(pieces);
      for (std::uint64_t k = 0; k < pieces; ++k) {
        const std::uint32_t piece = new_bundle(bundle_kind::huffman, *format);
        plan.bundles[piece].members.push_back(static_cast<std::uint32_t>(plan.tensors.size()));
        plan.bundles[piece].piece_first = tensor_values * k / pieces;
        plan.bundles[piece].piece_values =
            tensor_values * (k + 1) / pieces - tensor_values * k / pieces;
      }
      plan.tensors.push_back(std::move(t));
      continue;
    }
    std::uint32_t b;
    if (std::string prefix = group_key(g, pattern ? &*pattern : nullptr, t.name); !prefix.empty()) {
      // A group over the limit continues in a new bundle (memory stays bounded).
      auto key = std::make_pair(*format, std::move(prefix));
      const auto found = block_bundle.find(key);
      if (found != block_bundle.end() &&
          group_values[found->second] + tensor_values <= max_bundle_values) {
        b = found->second;
      } else {
        b = new_bundle(bundle_kind::huffman, *format);
        block_bundle[std::move(key)] = b;
      }
      group_values[b] += tensor_values;
    } else if (tensor_values >= kPackedBundleValues) {
      b = new_bundle(bundle_kind::huffman, *format);
    } else {
      // Small tensors outside a block share bundles: each bundle of its own would cost more in
      // fixed sizes (header, code, records) than its values take.
      if (!loose_bundle[f] || loose_values[f] + tensor_values > kPackedBundleValues) {
        loose_bundle[f] = new_bundle(bundle_kind::huffman, *format);
        loose_values[f] = 0;
      }
      b = *loose_bundle[f];
      loose_values[f] += tensor_values;
    }
    t.bundle = b;
    t.bundle_tensor = static_cast<std::uint32_t>(plan.bundles[b].members.size());
    plan.bundles[b].members.push_back(static_cast<std::uint32_t>(plan.tensors.size()));
    plan.tensors.push_back(std::move(t));
  }
  // Value offsets within each coded bundle (0 for the pieces of a split tensor).
  for (const auto& bundle : plan.bundles) {
    if (bundle.piece_values != 0 || bundle.kind == bundle_kind::raw) continue;
    std::uint64_t values = 0;
    for (std::uint32_t m : bundle.members) {
      plan.tensors[m].bundle_offset = values;
      values += plan.tensors[m].size_bytes() / value_bytes(bundle.format);
    }
  }
  return plan;
}

inline container_plan plan_container(const safetensors::header& h, const grouping& g = {},
                                     std::uint64_t max_bundle_values = kMaxBundleValuesDefault) {
  return plan_container(h, g, max_bundle_values, [](const safetensors::tensor_info& info) {
    return container_format_of(info.type, false);
  });
}

// Runs `body` and turns the exceptions compression can raise into errors.
template <class Body>
error catch_as_error(std::string_view where, Body&& body) {
  try {
    return body();
  } catch (const exception& e) {
    return {e.code(), std::string(where) + ": " + e.err().message};
  } catch (const std::bad_alloc&) {
    return {errc::too_large, std::string(where) + ": out of memory"};
  } catch (const std::filesystem::filesystem_error& e) {
    return {errc::io_error, std::string(where) + ": " + e.what()};
  }
}

inline error compress_file_impl(const std::filesystem::path& input,
                                const std::filesystem::path& output,
                                const compress_options& options, container_totals& totals) {
  if (error e = validate(options.codec)) return e;
  if (error e = check_output_apart_from_input(input, output)) return e;
  if (error e = check_replaceable_file(output, options.replace_existing)) return e;
  auto mapped = mapped_file::open(input);
  if (!mapped) return mapped.error();
  const auto file = mapped->bytes();
  auto parsed = safetensors::parse_header(file, file.size(), input.string(), {options.cancel});
  if (!parsed) return parsed.error();
  const safetensors::header& header = *parsed;
  if (options.group.kind == grouping_kind::pattern) {
    if (auto parsed_group = parse_grouping("regex:" + options.group.pattern); !parsed_group)
      return parsed_group.error();
  }
  if (options.max_bundle_values == 0)
    return {errc::invalid_argument, "compress_options.max_bundle_values is 0"};
  const std::byte* data_section = file.data() + header.header_size();
  // F32 tensors whose values all have zero low halves (BF16 widened), and F16 tensors whose
  // values are all BF16 values (BF16 saved as F16), are coded as BF16: one pass over each F32
  // and F16 tensor now, its pages released again (streaming).
  container_plan plan = plan_container(
      header, options.group, options.max_bundle_values,
      [&](const safetensors::tensor_info& info) -> std::optional<value_format> {
        if (info.type != safetensors::dtype::f32 && info.type != safetensors::dtype::f16)
          return container_format_of(info.type, false);
        const std::span<const std::byte> values(data_section + info.data.begin, info.size_bytes());
        const bool bf16_values = holds_bf16_values(info.type, values);
        mapped->release(header.header_size() + info.data.begin, info.size_bytes());
        return container_format_of(info.type, bf16_values);
      });
  if (plan.bundles.size() > std::numeric_limits<std::uint32_t>::max())
    return {errc::too_large, input.string() + ": more than 2^32 bundles"};

  std::vector<container_bundle> records(plan.bundles.size());
  for (std::size_t b = 0; b < plan.bundles.size(); ++b) {
    records[b].kind = plan.bundles[b].kind;
    records[b].format = plan.bundles[b].format;
    records[b].tensor_count = static_cast<std::uint32_t>(plan.bundles[b].members.size());
  }
  // The metadata (original header + index, compressed) goes last: its size is known only once
  // the bundle records are.
  const std::uint64_t header_size = header.header_size();

  auto created = atomic_output_file::create(output, options.replace_existing);
  if (!created) return created.error();
  atomic_output_file& out = *created;
  if (error e = out.write_zeros(kContainerHeaderBytes)) return e;

  const std::uint64_t data_size = header.data_size;
  std::uint64_t done = 0;
  std::vector<std::byte> encoded;  // grows to the largest bundle
  for (std::size_t b = 0; b < plan.bundles.size(); ++b) {
    if (cancel_requested(options.cancel))
      return {errc::cancelled, input.string() + ": interrupted"};
    const auto& bundle = plan.bundles[b];
    auto& rec = records[b];
    rec.file_offset = out.position();
    std::uint64_t tile_bytes = 0;
    if (bundle.kind == bundle_kind::raw) {
      const safetensors::byte_range r =
          bundle.gap ? plan.gaps[*bundle.gap].original : plan.tensors[bundle.members[0]].original;
      const std::span<const std::byte> bytes(data_section + r.begin, r.size());
      if (error e = out.write(bytes)) return e;
      rec.stored_bytes = rec.decoded_bytes = r.size();
      rec.stored_checksum = rec.decoded_checksum = xxh3_64(bytes);
      tile_bytes = r.size();
      mapped->release(header_size + r.begin, r.size());
    } else {
      // Each tensor's values as their little-endian bytes, straight from the mapping (the coder
      // reads bytes: no alignment needed, whatever the JSON length puts the data section at).
      const std::uint64_t width = value_bytes(bundle.format);
      std::vector<std::span<const std::byte>> tensors;
      xxh3_stream decoded_hash;
      for (std::uint32_t m : bundle.members) {
        const auto& t = plan.tensors[m];
        // The whole tensor, or this bundle's piece of a split one.
        const std::uint64_t piece_bytes =
            bundle.piece_values != 0 ? width * bundle.piece_values : t.size_bytes();
        const std::byte* p = data_section + t.original.begin + width * bundle.piece_first;
        decoded_hash.update({p, piece_bytes});
        tile_bytes += piece_bytes;
        tensors.emplace_back(p, static_cast<std::size_t>(piece_bytes));
      }
      // Pass 1 (histogram, code) gives the statistics for the index; pass 2 encodes into a
      // buffer reused by every bundle, so its pages are faulted in once per file.
      const encode_plan bundle_plan = make_encode_plan(bundle.format, tensors, options.codec);
      const symbol_histogram& hist = bundle_plan.histogram();
      if (encoded.size() < bundle_plan.encoded_size()) encoded.resize(bundle_plan.encoded_size());
      const auto compressed = std::span<std::byte>(encoded).first(bundle_plan.encoded_size());
      rec.decoded_bytes = tile_bytes;
      rec.decoded_checksum = decoded_hash.digest();
      rec.value_count = tile_bytes / width;
      rec.exponent_entropy = entropy_bits_per_symbol(hist);
      rec.huffman_ideal_bits = bundle_plan.tensor_huffman_ideal_bits();
      if (compressed.size() < tile_bytes) {
        if (error e = encode_bundle(bundle_plan, compressed)) return e;
        if (error e = out.write(compressed)) return e;
        rec.stored_bytes = compressed.size();
        rec.stored_checksum = xxh3_64(compressed);
      } else {
        // Coding would not make these values smaller: they are stored as they are.
        rec.kind = bundle_kind::verbatim;
        for (const auto& t : tensors)
          if (error e = out.write(t)) return e;
        rec.stored_bytes = tile_bytes;
        rec.stored_checksum = rec.decoded_checksum;
      }
      for (std::uint32_t m : bundle.members)
        mapped->release(header_size + plan.tensors[m].original.begin + width * bundle.piece_first,
                        tile_bytes);
    }
    if (error e = out.write_zeros(align_container(out.position()) - out.position())) return e;
    done += tile_bytes;
    if (options.progress) options.progress(done, data_size);
  }

  const std::vector<std::byte> index =
      encode_compact_index(records, plan.tensors, plan.gaps, options.group.kind);
  const std::vector<std::byte> metadata = compress_metadata(file.first(header_size), index);
  container_header_fields fields;
  // BF16-only files stay minor 0 and the others minor 1 (what the bundles need); the compact
  // index is a flag, which readers from before it refuse with a clear version error.
  fields.version_minor = std::any_of(records.begin(), records.end(), [](const auto& rec) {
    return rec.has_values() && rec.format != value_format::bf16;
  });
  fields.flags = kContainerFlagCompactIndex;
  fields.metadata_offset = out.position();
  if (error e = out.write(metadata)) return e;
  fields.file_size = out.position();
  fields.original_size = file.size();
  fields.header_size = header_size;
  fields.metadata_checksum = xxh3_64(metadata);
  fields.metadata_stored_size = metadata.size();
  fields.index_size = index.size();
  {
    xxh3_stream decoded;
    decoded.update(file.first(header_size));
    decoded.update(index);
    fields.metadata_decoded_checksum = decoded.digest();
  }
  fields.bundles_offset = kContainerHeaderBytes;
  if (error e = out.write_at(0, encode_container_header(fields))) return e;

  totals = {};
  totals.file_bytes = fields.file_size;
  totals.original_bytes = fields.original_size;
  totals.tensor_count = plan.tensors.size();
  for (const auto& rec : records) totals.add_bundle(rec);
  // What was read past a truncation was zeros: such an output must not appear.
  if (error e = mapped->check_unchanged()) return e;
  return out.commit(options.sync);
}

inline error decompress_file_impl(const std::filesystem::path& input,
                                  const std::filesystem::path& output,
                                  const decompress_options& options) {
  if (error e = check_output_apart_from_input(input, output)) return e;
  if (error e = check_replaceable_file(output, options.replace_existing)) return e;
  auto reader = container_reader::open(input, {.verify_checksums = true, .cancel = options.cancel});
  if (!reader) return reader.error();
  const auto header_bytes = reader->original_header_bytes();
  const std::uint64_t data_start = header_bytes.size();

  auto created = atomic_output_file::create(output, options.replace_existing);
  if (!created) return created.error();
  atomic_output_file& out = *created;
  if (error e = out.write(header_bytes)) return e;
  if (error e = out.resize(reader->original_size())) return e;
  if (error e = out.preallocate(reader->original_size())) return e;

  // Decoded by this thread, hashed and written by another (detail/decompress_pipeline.inl).
  if (error e = write_decoded_data(*reader, out, data_start, options, /*check_decoded=*/true))
    return e;
  return out.commit(options.sync);
}

// Offset of the first differing byte of two equal-sized spans.
inline std::uint64_t first_difference(std::span<const std::byte> a,
                                      std::span<const std::byte> b) noexcept {
  const auto [ia, ib] = std::mismatch(a.begin(), a.end(), b.begin());
  return static_cast<std::uint64_t>(ia - a.begin());
}

inline error verify_file_impl(const std::filesystem::path& original_path,
                              const std::filesystem::path& compressed_path,
                              const decompress_options& options) {
  auto original = mapped_file::open(original_path);
  if (!original) return original.error();
  auto reader =
      container_reader::open(compressed_path, {.verify_checksums = true, .cancel = options.cancel});
  if (!reader) return reader.error();
  const std::string what =
      "verify " + original_path.string() + " against " + compressed_path.string();
  const auto file = original->bytes();
  if (file.size() != reader->original_size())
    return {errc::bad_data, what + ": the original has " + std::to_string(file.size()) +
                                " bytes, the container decompresses to " +
                                std::to_string(reader->original_size())};
  const auto header_bytes = reader->original_header_bytes();
  if (std::memcmp(file.data(), header_bytes.data(), header_bytes.size()) != 0)
    return {errc::bad_data,
            what + ": safetensors header differs at byte " +
                std::to_string(first_difference(file.first(header_bytes.size()), header_bytes))};
  const std::byte* data_section = file.data() + header_bytes.size();
  auto differs = [&](std::string_view tile, std::span<const std::byte> decoded,
                     std::uint64_t begin) -> error {
    if (decoded.empty()) return {};
    const std::span<const std::byte> expected(data_section + begin, decoded.size());
    if (std::memcmp(expected.data(), decoded.data(), decoded.size()) == 0) {
      original->release(header_bytes.size() + begin, decoded.size());  // streaming: bounded RSS
      return {};
    }
    // A difference read from a file that shrank under us is that, not a difference.
    if (error e = original->check_unchanged()) return e;
    if (error e = reader->check_unchanged()) return e;
    const std::uint64_t at = first_difference(expected, decoded);
    return {errc::bad_data, what + ": " + std::string(tile) + " differs at byte " +
                                std::to_string(at) + " (file offset " +
                                std::to_string(header_bytes.size() + begin + at) + ")"};
  };

  const auto gap_of_bundle = gap_bundle_map(*reader);
  std::vector<std::byte> values;
  std::uint64_t done = 0;
  for (std::uint32_t b = 0; b < reader->bundles().size(); ++b) {
    if (cancel_requested(options.cancel))
      return {errc::cancelled, compressed_path.string() + ": interrupted"};
    const auto& rec = reader->bundles()[b];
    const auto members = reader->bundle_tensors(b);
    if (rec.kind == bundle_kind::raw) {
      auto bytes = reader->bundle_bytes(b);
      if (!bytes) return bytes.error();
      if (members.empty()) {
        const auto& g = reader->gaps()[gap_of_bundle[b]];
        if (error e =
                differs("gap at " + std::to_string(g.original.begin), *bytes, g.original.begin))
          return e;
      } else {
        const auto& t = reader->tensors()[members[0]];
        if (error e =
                differs("tensor " + safetensors::detail::quoted(t.name), *bytes, t.original.begin))
          return e;
      }
    } else {
      if (values.size() < rec.decoded_bytes) values.resize(rec.decoded_bytes);
      const auto block = std::span<std::byte>(values).first(rec.decoded_bytes);
      if (error e = reader->decode_bundle(b, block, options.codec)) return e;
      const std::uint64_t width = value_bytes(rec.format);
      for (std::uint32_t m : members) {
        const auto& t = reader->tensors()[m];
        const auto piece = reader->tensor_piece(b, t);
        if (error e = differs("tensor " + safetensors::detail::quoted(t.name),
                              block.subspan(width * t.bundle_offset, width * piece.values),
                              t.original.begin + width * piece.first))
          return e;
      }
    }
    reader->release_bundle(b);
    done += rec.decoded_bytes;
    if (options.progress) options.progress(done, reader->original_header().data_size);
  }
  if (error e = original->check_unchanged()) return e;
  return reader->check_unchanged();
}

// ---- model directories ---------------------------------------------------------------------

struct directory_entry {
  std::string name;
  std::uint64_t size = 0;
};

// "<name>.tmp.XXXXXX": the names atomic_output_file and atomic_output_directory write under.
inline bool is_temporary_name(std::string_view name) noexcept {
  constexpr std::string_view kMarker = ".tmp.";
  constexpr std::size_t kRandom = 6;
  if (name.size() < kMarker.size() + kRandom) return false;
  return name.substr(name.size() - kRandom - kMarker.size(), kMarker.size()) == kMarker;
}

// Regular files (symlinks followed, as in a Hugging Face cache snapshot) sorted by name.
// Subdirectories are not part of a checkpoint and are skipped.
inline result<std::vector<directory_entry>> list_regular_files(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    return error{errc::io_error, dir.string() + ": not a directory"};
  std::vector<directory_entry> entries;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code entry_ec;
    if (!it->is_regular_file(entry_ec)) continue;
    const auto name = it->path().filename().string();
    if (is_temporary_name(name)) continue;  // another run's output in progress, or leftovers
    entries.push_back({name, static_cast<std::uint64_t>(it->file_size(entry_ec))});
  }
  if (ec) return error{errc::io_error, dir.string() + ": cannot list: " + ec.message()};
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  return entries;
}

inline bool has_suffix(std::string_view s, std::string_view suffix) noexcept {
  return s.size() > suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

inline constexpr std::string_view kSafetensorsExtension = ".safetensors";

inline std::string swap_suffix(std::string_view name, std::string_view from, std::string_view to) {
  return std::string(name.substr(0, name.size() - from.size())) + std::string(to);
}

// Output names of a directory conversion; an error when two inputs map to one output.
inline result<std::vector<std::pair<directory_entry, std::string>>> map_directory_names(
    const std::filesystem::path& dir, const std::vector<directory_entry>& entries,
    std::string_view from, std::string_view to) {
  std::vector<std::pair<directory_entry, std::string>> mapped;
  std::set<std::string> outputs;
  for (const auto& e : entries) {
    std::string out = has_suffix(e.name, from) ? swap_suffix(e.name, from, to) : e.name;
    if (!outputs.insert(out).second)
      return error{errc::invalid_argument, dir.string() + ": both " + e.name +
                                               " and another file "
                                               "would be written as " +
                                               out};
    mapped.emplace_back(e, std::move(out));
  }
  return mapped;
}

// Copies a file (used for config.json, the shard index and the like) atomically into `to`.
inline error copy_verbatim(const std::filesystem::path& from, const std::filesystem::path& to) {
  std::error_code ec;
  std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) return {errc::io_error, "cannot copy " + from.string() + ": " + ec.message()};
  return {};
}

// The names a directory conversion writes into its output: what replacing may delete there.
inline std::set<std::string> output_names(
    const std::vector<std::pair<directory_entry, std::string>>& mapped) {
  std::set<std::string> names;
  for (const auto& [entry, out_name] : mapped) names.insert(out_name);
  return names;
}

}  // namespace detail

inline error validate_shard_index(const std::filesystem::path& directory) {
  const auto index_path = directory / std::string(safetensors::kShardIndexFileName);
  std::error_code ec;
  if (!std::filesystem::exists(index_path, ec)) return {};
  auto text = detail::read_small_file(index_path, safetensors::kMaxHeaderJsonBytes);
  if (!text) return text.error();
  auto index = safetensors::parse_shard_index(*text, index_path.string());
  if (!index) return index.error();
  auto entries = detail::list_regular_files(directory);
  if (!entries) return entries.error();
  std::set<std::string> present;
  for (const auto& e : *entries) present.insert(e.name);
  auto compressed_name = [](const std::string& name) {
    return detail::has_suffix(name, detail::kSafetensorsExtension)
               ? detail::swap_suffix(name, detail::kSafetensorsExtension, kContainerExtension)
               : name + std::string(kContainerExtension);
  };
  // Which file each tensor name was found in, over every tensor file of the directory: a name
  // in two files makes the checkpoint ambiguous, listed in the index or not.
  std::unordered_map<std::string, std::string> file_of_tensor;
  std::set<std::string> read_files;
  auto read_names = [&](const std::string& file, std::set<std::string>* into) -> error {
    read_files.insert(file);
    std::vector<std::string> names;
    const auto path = directory / file;
    if (detail::has_suffix(file, kContainerExtension)) {
      auto reader = container_reader::open(path);
      if (!reader) return reader.error();
      for (const auto& t : reader->original_header().tensors) names.push_back(t.name);
    } else {
      auto mapped = detail::mapped_file::open(path);
      if (!mapped) return mapped.error();
      auto header = safetensors::parse_header(mapped->bytes(), mapped->size(), path.string());
      if (!header) return header.error();
      for (auto& t : header->tensors) names.push_back(std::move(t.name));
    }
    for (auto& name : names) {
      const auto [at, inserted] = file_of_tensor.emplace(name, file);
      if (!inserted)
        return {errc::bad_data,
                index_path.string() + ": tensor " + safetensors::detail::quoted(name) +
                    " is in both " + detail::printable(std::string_view(at->second)) + " and " +
                    detail::printable(std::string_view(file)) + ": a loader could take either"};
      if (into != nullptr) into->insert(std::move(name));
    }
    return {};
  };
  // The shards the index names, from the shard itself or from its compressed form.
  std::map<std::string, std::set<std::string>> shard_tensors;
  for (const auto& shard : index->shard_files) {
    const std::string compressed = compressed_name(shard);
    const std::string& file = present.count(shard) != 0        ? shard
                              : present.count(compressed) != 0 ? compressed
                                                               : shard;
    if (present.count(file) == 0)
      return {errc::bad_data, index_path.string() + ": field 'weight_map' names shard " + shard +
                                  ", which is not in the directory"};
    read_files.insert(compressed);  // one shard, whichever form it is in
    if (error e = read_names(file, &shard_tensors[shard])) return e;
  }
  // Every other tensor file (a consolidated copy, a stray shard), each stem once.
  for (const auto& e : *entries) {
    const bool plain = detail::has_suffix(e.name, detail::kSafetensorsExtension);
    if (read_files.count(e.name) != 0 ||
        !(plain || detail::has_suffix(e.name, kContainerExtension)))
      continue;
    if (!plain && present.count(detail::swap_suffix(e.name, kContainerExtension,
                                                    detail::kSafetensorsExtension)) != 0)
      continue;  // its uncompressed form is read instead
    if (error err = read_names(e.name, nullptr)) return err;
  }
  std::size_t listed = 0;
  for (const auto& [name, shard] : index->weight_map) {
    if (shard_tensors[shard].count(name) == 0)
      return {errc::bad_data, index_path.string() + ": field 'weight_map': tensor " +
                                  safetensors::detail::quoted(name) + " is not in shard " + shard};
    ++listed;
  }
  std::size_t in_shards = 0;
  for (const auto& [shard, names] : shard_tensors) in_shards += names.size();
  if (in_shards != listed)
    return {errc::bad_data, index_path.string() + ": field 'weight_map' lists " +
                                std::to_string(listed) + " tensors but its shards hold " +
                                std::to_string(in_shards)};
  return {};
}

inline result<container_totals> compress_file(const std::filesystem::path& input,
                                              const std::filesystem::path& output,
                                              const compress_options& options) {
  container_totals totals;
  if (error e = detail::catch_as_error(input.string(), [&] {
        return detail::compress_file_impl(input, output, options, totals);
      }))
    return e;
  return totals;
}

inline error decompress_file(const std::filesystem::path& input,
                             const std::filesystem::path& output,
                             const decompress_options& options) {
  return detail::catch_as_error(
      input.string(), [&] { return detail::decompress_file_impl(input, output, options); });
}

inline error verify_file(const std::filesystem::path& original,
                         const std::filesystem::path& compressed,
                         const decompress_options& options) {
  return detail::catch_as_error(
      compressed.string(), [&] { return detail::verify_file_impl(original, compressed, options); });
}

inline result<container_totals> compress_directory(const std::filesystem::path& input,
                                                   const std::filesystem::path& output,
                                                   const compress_options& options,
                                                   bool replace_existing) {
  container_totals totals;
  const error failure = detail::catch_as_error(input.string(), [&]() -> error {
    auto entries = detail::list_regular_files(input);
    if (!entries) return entries.error();
    auto mapped = detail::map_directory_names(input, *entries, detail::kSafetensorsExtension,
                                              kContainerExtension);
    if (!mapped) return mapped.error();
    if (error e = detail::check_output_apart_from_input(input, output)) return e;
    const std::set<std::string> names_written = detail::output_names(*mapped);
    if (error e = detail::check_replaceable_directory(output, replace_existing, names_written))
      return e;
    if (error e = validate_shard_index(input)) return e;
    auto dir = detail::atomic_output_directory::create(output);
    if (!dir) return dir.error();
    std::uint64_t total_bytes = 0;
    for (const auto& entry : *entries) total_bytes += entry.size;
    std::uint64_t done_before = 0;
    for (const auto& [entry, out_name] : *mapped) {
      if (detail::has_suffix(entry.name, detail::kSafetensorsExtension)) {
        compress_options file_options = options;
        file_options.replace_existing = false;  // a fresh directory: nothing to replace
        if (options.progress)
          file_options.progress = [&](std::uint64_t done, std::uint64_t) {
            options.progress(done_before + done, total_bytes);
          };
        auto file_totals = compress_file(input / entry.name, dir->path() / out_name, file_options);
        if (!file_totals) return file_totals.error();
        totals += *file_totals;
      } else if (error e = detail::copy_verbatim(input / entry.name, dir->path() / out_name)) {
        return e;
      }
      done_before += entry.size;
      if (options.progress) options.progress(done_before, total_bytes);
    }
    return dir->commit(replace_existing, names_written);
  });
  if (failure) return failure;
  return totals;
}

inline error decompress_directory(const std::filesystem::path& input,
                                  const std::filesystem::path& output,
                                  const decompress_options& options, bool replace_existing) {
  return detail::catch_as_error(input.string(), [&]() -> error {
    auto entries = detail::list_regular_files(input);
    if (!entries) return entries.error();
    auto mapped = detail::map_directory_names(input, *entries, kContainerExtension,
                                              detail::kSafetensorsExtension);
    if (!mapped) return mapped.error();
    if (error e = detail::check_output_apart_from_input(input, output)) return e;
    const std::set<std::string> names_written = detail::output_names(*mapped);
    if (error e = detail::check_replaceable_directory(output, replace_existing, names_written))
      return e;
    if (error e = validate_shard_index(input)) return e;
    auto dir = detail::atomic_output_directory::create(output);
    if (!dir) return dir.error();
    std::uint64_t total_bytes = 0;
    for (const auto& entry : *entries) total_bytes += entry.size;
    std::uint64_t done_before = 0;
    for (const auto& [entry, out_name] : *mapped) {
      if (detail::has_suffix(entry.name, kContainerExtension)) {
        decompress_options file_options = options;
        file_options.replace_existing = false;
        if (options.progress)
          file_options.progress = [&](std::uint64_t, std::uint64_t) {
            options.progress(done_before, total_bytes);
          };
        if (error e = decompress_file(input / entry.name, dir->path() / out_name, file_options))
          return e;
      } else if (error e = detail::copy_verbatim(input / entry.name, dir->path() / out_name)) {
        return e;
      }
      done_before += entry.size;
      if (options.progress) options.progress(done_before, total_bytes);
    }
    return dir->commit(replace_existing, names_written);
  });
}

inline error verify_directory(const std::filesystem::path& original,
                              const std::filesystem::path& compressed,
                              const decompress_options& options) {
  return detail::catch_as_error(compressed.string(), [&]() -> error {
    auto originals = detail::list_regular_files(original);
    if (!originals) return originals.error();
    auto compressed_entries = detail::list_regular_files(compressed);
    if (!compressed_entries) return compressed_entries.error();
    auto mapped = detail::map_directory_names(original, *originals, detail::kSafetensorsExtension,
                                              kContainerExtension);
    if (!mapped) return mapped.error();
    std::set<std::string> expected;
    for (const auto& [entry, out_name] : *mapped) expected.insert(out_name);
    for (const auto& e : *compressed_entries)
      if (expected.erase(e.name) == 0)
        return {errc::bad_data,
                compressed.string() + ": " + e.name + " has no original in " + original.string()};
    if (!expected.empty())
      return {errc::bad_data, compressed.string() + ": " + *expected.begin() +
                                  " is missing (its original is in " + original.string() + ")"};
    for (const auto& [entry, out_name] : *mapped) {
      if (detail::has_suffix(entry.name, detail::kSafetensorsExtension)) {
        if (error e = verify_file(original / entry.name, compressed / out_name, options)) return e;
        continue;
      }
      auto a = detail::mapped_file::open(original / entry.name);
      if (!a) return a.error();
      auto b = detail::mapped_file::open(compressed / out_name);
      if (!b) return b.error();
      if (a->size() != b->size() ||
          (a->size() != 0 && std::memcmp(a->bytes().data(), b->bytes().data(), a->size()) != 0))
        return {errc::bad_data, (compressed / out_name).string() + " differs from " +
                                    (original / entry.name).string()};
    }
    return {};
  });
}

}  // namespace floatzip
