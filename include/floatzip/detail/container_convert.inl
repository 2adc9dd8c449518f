// floatzip internals: safetensors <-> .fzip conversion, verification, model directories.
#pragma once

#include <algorithm>
#include <map>
#include <new>
#include <set>
#include <system_error>

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

namespace detail {

// One bundle to write: a raw tile (a non-BF16 tensor or a gap) or a group of BF16 tensors.
struct bundle_plan {
  bundle_kind kind = bundle_kind::raw;
  std::vector<std::uint32_t> members;  // indices into the container's tensor list, bundle order
  std::optional<std::uint32_t> gap;    // index into the gap list for a gap's raw bundle
};

struct container_plan {
  std::vector<container_tensor> tensors;  // offset order
  std::vector<container_gap> gaps;
  std::vector<bundle_plan> bundles;  // file order: order of first appearance in the data
};

// Assigns every tile of the data section to a bundle.
inline container_plan plan_container(const safetensors::header& h) {
  container_plan plan;
  const auto order = h.offset_order();
  const auto gap_ranges = h.gaps();
  std::map<std::string, std::uint32_t, std::less<>> block_bundle;
  auto new_bundle = [&](bundle_kind kind) {
    plan.bundles.push_back({kind, {}, std::nullopt});
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
      const std::uint32_t b = new_bundle(bundle_kind::raw);
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
    std::uint32_t b;
    if (t.type != safetensors::dtype::bf16) {
      b = new_bundle(bundle_kind::raw);
    } else if (const auto prefix = transformer_block_prefix(t.name); !prefix.empty()) {
      const auto found = block_bundle.find(prefix);
      if (found != block_bundle.end()) {
        b = found->second;
      } else {
        b = new_bundle(bundle_kind::bf16_huffman);
        block_bundle.emplace(std::string(prefix), b);
      }
    } else {
      b = new_bundle(bundle_kind::bf16_huffman);
    }
    t.bundle = b;
    t.bundle_tensor = static_cast<std::uint32_t>(plan.bundles[b].members.size());
    plan.bundles[b].members.push_back(static_cast<std::uint32_t>(plan.tensors.size()));
    plan.tensors.push_back(std::move(t));
  }
  // Value offsets within each BF16 bundle.
  for (const auto& bundle : plan.bundles) {
    std::uint64_t values = 0;
    for (std::uint32_t m : bundle.members) {
      plan.tensors[m].bundle_offset = bundle.kind == bundle_kind::raw ? 0 : values;
      values += plan.tensors[m].size_bytes() / 2;
    }
  }
  return plan;
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
  auto mapped = mapped_file::open(input);
  if (!mapped) return mapped.error();
  const auto file = mapped->bytes();
  auto parsed = safetensors::parse_header(file, file.size(), input.string());
  if (!parsed) return parsed.error();
  const safetensors::header& header = *parsed;
  container_plan plan = plan_container(header);
  if (plan.bundles.size() > std::numeric_limits<std::uint32_t>::max())
    return {errc::too_large, input.string() + ": more than 2^32 bundles"};

  std::vector<container_bundle> records(plan.bundles.size());
  for (std::size_t b = 0; b < plan.bundles.size(); ++b) {
    records[b].kind = plan.bundles[b].kind;
    records[b].tensor_count = static_cast<std::uint32_t>(plan.bundles[b].members.size());
  }
  // The index has a fixed size known now; it is written last, once the bundle records are.
  const std::uint64_t header_size = header.header_size();
  const std::uint64_t index_offset = align_container(kContainerHeaderBytes + header_size);
  const std::uint64_t index_size = encode_index(records, plan.tensors, plan.gaps).size();
  const std::uint64_t bundles_offset = align_container(index_offset + index_size);

  auto created = atomic_output_file::create(output);
  if (!created) return created.error();
  atomic_output_file& out = *created;
  if (error e = out.write_zeros(kContainerHeaderBytes)) return e;
  if (error e = out.write(file.first(header_size))) return e;
  if (error e = out.write_zeros(bundles_offset - out.position())) return e;

  const std::byte* data_section = file.data() + header_size;
  const std::uint64_t data_size = header.data_size;
  std::uint64_t done = 0;
  std::vector<std::vector<std::uint16_t>> aligned_copies;
  std::vector<std::byte> encoded;  // grows to the largest bundle
  for (std::size_t b = 0; b < plan.bundles.size(); ++b) {
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
      std::vector<std::span<const std::uint16_t>> tensors;
      aligned_copies.clear();
      xxh3_stream decoded_hash;
      for (std::uint32_t m : bundle.members) {
        const auto& t = plan.tensors[m];
        const std::byte* p = data_section + t.original.begin;
        const std::size_t count = static_cast<std::size_t>(t.size_bytes() / 2);
        decoded_hash.update({p, t.size_bytes()});
        tile_bytes += t.size_bytes();
        if (count == 0) {
          tensors.emplace_back();
        } else if (reinterpret_cast<std::uintptr_t>(p) % alignof(std::uint16_t) == 0) {
          tensors.emplace_back(reinterpret_cast<const std::uint16_t*>(p), count);
        } else {
          // The JSON length puts the data section at an odd address: copy to read u16 safely.
          auto& copy = aligned_copies.emplace_back(count);
          std::memcpy(copy.data(), p, t.size_bytes());
          tensors.emplace_back(copy.data(), count);
        }
      }
      // Pass 1 (histogram, code) gives the statistics for the index; pass 2 encodes into a
      // buffer reused by every bundle, so its pages are faulted in once per file.
      const encode_plan bundle_plan = make_encode_plan(tensors, options.codec);
      const symbol_histogram& hist = bundle_plan.histogram();
      if (encoded.size() < bundle_plan.encoded_size()) encoded.resize(bundle_plan.encoded_size());
      const auto compressed = std::span<std::byte>(encoded).first(bundle_plan.encoded_size());
      if (error e = encode_bundle(bundle_plan, compressed)) return e;
      if (error e = out.write(compressed)) return e;
      rec.stored_bytes = compressed.size();
      rec.stored_checksum = xxh3_64(compressed);
      rec.decoded_bytes = tile_bytes;
      rec.decoded_checksum = decoded_hash.digest();
      rec.value_count = tile_bytes / 2;
      rec.exponent_entropy = entropy_bits_per_symbol(hist);
      rec.huffman_ideal_bits = unlimited_huffman_bits(hist);
      for (std::uint32_t m : bundle.members)
        mapped->release(header_size + plan.tensors[m].original.begin, plan.tensors[m].size_bytes());
    }
    if (error e = out.write_zeros(align_container(out.position()) - out.position())) return e;
    done += tile_bytes;
    if (options.progress) options.progress(done, data_size);
  }

  const std::vector<std::byte> index = encode_index(records, plan.tensors, plan.gaps);
  if (error e = out.write_at(index_offset, index)) return e;
  container_header_fields fields;
  fields.file_size = out.position();
  fields.original_size = file.size();
  fields.header_size = header_size;
  fields.header_checksum = xxh3_64(file.first(header_size));
  fields.index_offset = index_offset;
  fields.index_size = index_size;
  fields.index_checksum = xxh3_64(index);
  fields.bundles_offset = bundles_offset;
  if (error e = out.write_at(0, encode_container_header(fields))) return e;

  totals = {};
  totals.file_bytes = fields.file_size;
  totals.original_bytes = fields.original_size;
  totals.tensor_count = plan.tensors.size();
  totals.bundle_count = records.size();
  for (const auto& rec : records) {
    if (rec.kind == bundle_kind::raw) {
      totals.raw_bytes += rec.stored_bytes;
      continue;
    }
    ++totals.bf16_bundle_count;
    totals.bf16_values += rec.value_count;
    totals.bf16_stored_bytes += rec.stored_bytes;
    totals.exponent_entropy_bits += rec.exponent_entropy * double(rec.value_count);
    totals.huffman_ideal_bits += rec.huffman_ideal_bits;
  }
  return out.commit(options.sync);
}

// For each bundle, the gap it stores (meaningful only for the raw bundles of gaps).
inline std::vector<std::uint32_t> gap_bundle_map(const container_reader& reader) {
  std::vector<std::uint32_t> gap_of_bundle(reader.bundles().size(), 0);
  for (std::uint32_t g = 0; g < reader.gaps().size(); ++g)
    gap_of_bundle[reader.gaps()[g].bundle] = g;
  return gap_of_bundle;
}

inline error decompress_file_impl(const std::filesystem::path& input,
                                  const std::filesystem::path& output,
                                  const decompress_options& options) {
  auto reader = container_reader::open(input);
  if (!reader) return reader.error();
  const auto header_bytes = reader->original_header_bytes();
  const std::uint64_t data_start = header_bytes.size();

  auto created = atomic_output_file::create(output);
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
  auto reader = container_reader::open(compressed_path);
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
    const std::uint64_t at = first_difference(expected, decoded);
    return {errc::bad_data, what + ": " + std::string(tile) + " differs at byte " +
                                std::to_string(at) + " (file offset " +
                                std::to_string(header_bytes.size() + begin + at) + ")"};
  };

  const auto gap_of_bundle = gap_bundle_map(*reader);
  std::vector<std::uint16_t> values;
  std::uint64_t done = 0;
  for (std::uint32_t b = 0; b < reader->bundles().size(); ++b) {
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
      if (values.size() < rec.value_count) values.resize(rec.value_count);
      const auto block = std::span<std::uint16_t>(values).first(rec.value_count);
      if (error e = reader->decode_bundle(b, block, options.codec)) return e;
      for (std::uint32_t m : members) {
        const auto& t = reader->tensors()[m];
        if (error e = differs("tensor " + safetensors::detail::quoted(t.name),
                              std::as_bytes(block.subspan(t.bundle_offset, t.size_bytes() / 2)),
                              t.original.begin))
          return e;
      }
    }
    reader->release_bundle(b);
    done += rec.decoded_bytes;
    if (options.progress) options.progress(done, reader->original_header().data_size);
  }
  return {};
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

inline error check_output_free(const std::filesystem::path& output, bool replace_existing) {
  std::error_code ec;
  if (!replace_existing && std::filesystem::exists(output, ec))
    return {errc::invalid_argument, output.string() + " exists (replace it explicitly)"};
  return {};
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
  // Tensor names per shard, from the shard itself or from its compressed form.
  std::map<std::string, std::set<std::string>> shard_tensors;
  for (const auto& shard : index->shard_files) {
    std::vector<std::string> names;
    const auto plain = directory / shard;
    const auto compressed =
        directory /
        (detail::has_suffix(shard, detail::kSafetensorsExtension)
             ? detail::swap_suffix(shard, detail::kSafetensorsExtension, kContainerExtension)
             : shard + std::string(kContainerExtension));
    if (std::filesystem::exists(plain, ec)) {
      auto mapped = detail::mapped_file::open(plain);
      if (!mapped) return mapped.error();
      auto header = safetensors::parse_header(mapped->bytes(), mapped->size(), plain.string());
      if (!header) return header.error();
      for (const auto& t : header->tensors) names.push_back(t.name);
    } else if (std::filesystem::exists(compressed, ec)) {
      auto reader = container_reader::open(compressed);
      if (!reader) return reader.error();
      for (const auto& t : reader->original_header().tensors) names.push_back(t.name);
    } else {
      return {errc::bad_data, index_path.string() + ": field 'weight_map' names shard " + shard +
                                  ", which is not in the directory"};
    }
    shard_tensors[shard].insert(names.begin(), names.end());
  }
  std::size_t listed = 0;
  for (const auto& [name, shard] : index->weight_map) {
    if (shard_tensors[shard].count(name) == 0)
      return {errc::bad_data, index_path.string() + ": field 'weight_map': tensor " +
                                  safetensors::detail::quoted(name) + " is not in shard " + shard};
    ++listed;
  }
  std::size_t present = 0;
  for (const auto& [shard, names] : shard_tensors) present += names.size();
  if (present != listed)
    return {errc::bad_data, index_path.string() + ": field 'weight_map' lists " +
                                std::to_string(listed) + " tensors but its shards hold " +
                                std::to_string(present)};
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
    if (error e = validate_shard_index(input)) return e;
    if (error e = detail::check_output_free(output, replace_existing)) return e;
    auto dir = detail::atomic_output_directory::create(output);
    if (!dir) return dir.error();
    std::uint64_t total_bytes = 0;
    for (const auto& entry : *entries) total_bytes += entry.size;
    std::uint64_t done_before = 0;
    for (const auto& [entry, out_name] : *mapped) {
      if (detail::has_suffix(entry.name, detail::kSafetensorsExtension)) {
        compress_options file_options = options;
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
    return dir->commit(replace_existing);
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
    if (error e = validate_shard_index(input)) return e;
    if (error e = detail::check_output_free(output, replace_existing)) return e;
    auto dir = detail::atomic_output_directory::create(output);
    if (!dir) return dir.error();
    std::uint64_t total_bytes = 0;
    for (const auto& entry : *entries) total_bytes += entry.size;
    std::uint64_t done_before = 0;
    for (const auto& [entry, out_name] : *mapped) {
      if (detail::has_suffix(entry.name, kContainerExtension)) {
        decompress_options file_options = options;
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
    return dir->commit(replace_existing);
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
