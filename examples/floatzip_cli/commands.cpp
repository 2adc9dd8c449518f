// floatzip compress / decompress / verify / info.
#include <fmt/core.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "cli.hpp"
#include "floatzip/container.hpp"

namespace floatzip::cli {
namespace {

namespace fs = std::filesystem;

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

bool path_exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

// "a/b/" -> "a/b": a trailing separator would make DIR.fzip a path inside DIR.
fs::path without_trailing_separator(fs::path p) {
  while (!p.has_filename() && p.has_parent_path() && p != p.root_path()) p = p.parent_path();
  return p;
}

fs::path replace_suffix(const fs::path& p, std::string_view from, std::string_view to) {
  const std::string s = p.string();
  if (s.size() > from.size() && s.compare(s.size() - from.size(), from.size(), from) == 0)
    return s.substr(0, s.size() - from.size()) + std::string(to);
  return s + std::string(to);
}

bool has_suffix(const fs::path& p, std::string_view suffix) {
  const std::string s = p.filename().string();
  return s.size() > suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The library's output policy (detail/file_io.hpp), checked before any work so that a refusal
// comes first and says which flag would change it. The library checks again as it writes.
error check_output(const fs::path& input, const fs::path& output, bool directory, bool force) {
  if (error e = detail::check_output_apart_from_input(input, output)) return e;
  constexpr std::string_view kHint = "use --force to replace it";
  if (!directory) return detail::check_replaceable_file(output, force, kHint);
  // Replacing a directory also needs the names the conversion writes: the library checks that.
  return force ? error{} : detail::check_replaceable_directory(output, false, {}, kHint);
}

// -o: an empty path names nothing.
std::optional<fs::path> output_option(const arguments& args) {
  const auto value = args.value("output");
  if (!value) return std::nullopt;
  if (value->empty()) throw usage_error("-o/--output needs a path, not an empty string");
  return without_trailing_separator(*value);
}

unsigned threads_option(const arguments& args) {
  return static_cast<unsigned>(args.unsigned_value("threads", 0, 1, 4096));
}

// The value formats a container holds, in enum order.
std::vector<value_format> formats_present(const container_totals& t) {
  std::vector<value_format> present;
  for (unsigned f = 0; f < kValueFormatCount; ++f)
    if (t.formats[f].bundle_count != 0) present.push_back(static_cast<value_format>(f));
  return present;
}

// "10.691 bits per bf16 value, 19.021 bits per fp32 value" (or "no float values").
std::string bits_summary(const container_totals& t) {
  std::string out;
  for (value_format f : formats_present(t))
    out += fmt::format("{}{:.3f} bits per {} value", out.empty() ? "" : ", ",
                       t.of(f).bits_per_value(), to_string(f));
  return out.empty() ? "no float values" : out;
}

void print_totals_line(const fs::path& in, const fs::path& out, const container_totals& t,
                       double seconds) {
  fmt::print("{} -> {}: {} -> {} (ratio {:.4f}), {}, {:.2f} s, {:.2f} GB/s\n",
             detail::printable(in), detail::printable(out), human_bytes(double(t.original_bytes)),
             human_bytes(double(t.file_bytes)), t.ratio(), bits_summary(t), seconds,
             seconds > 0 ? double(t.original_bytes) / seconds / 1e9 : 0.0);
}

}  // namespace

int compress_command(const std::vector<std::string>& tokens) {
  const arguments args(tokens, {{"output", 'o', true},
                                {"threads", 0, true},
                                {"force", 0, false},
                                {"group", 0, true},
                                {"chunk-bytes", 0, true}});
  args.expect_positionals(1, 1, "one input: a .safetensors file or a checkpoint directory");
  const fs::path input = without_trailing_separator(args.positionals()[0]);
  const bool directory = is_dir(input);
  const fs::path output = output_option(args).value_or(
      directory ? fs::path(input.string() + std::string(kContainerExtension))
                : replace_suffix(input, ".safetensors", kContainerExtension));
  const bool force = args.flag("force");
  compress_options options;
  options.codec.threads = threads_option(args);  // usage errors before any file is touched
  options.replace_existing = force;
  options.cancel = &g_cancel;
  options.codec.chunk_bytes = static_cast<std::uint32_t>(args.unsigned_value(
      "chunk-bytes", options.codec.chunk_bytes, kMinChunkBytes, kMaxChunkBytes));
  if (const auto spec = args.value("group")) {
    auto group = parse_grouping(*spec);
    if (!group) throw usage_error("--group: " + group.error().message);
    options.group = *group;
  }
  if (!path_exists(input))
    return fail({errc::io_error, input.string() + ": no such file or directory"});
  if (error e = check_output(input, output, directory, force)) return fail(e);
  progress_bar bar("compress");
  options.progress = [&](std::uint64_t done, std::uint64_t total) { bar.update(done, total); };
  const stopwatch clock;
  auto totals = directory ? compress_directory(input, output, options, force)
                          : compress_file(input, output, options);
  bar.finish();
  if (!totals) return fail(totals.error());
  print_totals_line(input, output, *totals, clock.seconds());
  return kExitOk;
}

int decompress_command(const std::vector<std::string>& tokens) {
  const arguments args(tokens, {{"output", 'o', true}, {"threads", 0, true}, {"force", 0, false}});
  args.expect_positionals(1, 1, "one input: a .fzip file or directory");
  const fs::path input = without_trailing_separator(args.positionals()[0]);
  const bool directory = is_dir(input);
  fs::path output;
  if (const auto named = output_option(args)) {
    output = *named;
  } else if (directory) {
    if (!has_suffix(input, kContainerExtension))
      throw usage_error("the directory name does not end in .fzip: name the output with -o");
    output = replace_suffix(input, kContainerExtension, "");
  } else {
    output = replace_suffix(input, kContainerExtension, ".safetensors");
  }
  const bool force = args.flag("force");
  decompress_options options;
  options.codec.threads = threads_option(args);  // usage errors before any file is touched
  options.replace_existing = force;
  options.cancel = &g_cancel;
  if (!path_exists(input))
    return fail({errc::io_error, input.string() + ": no such file or directory"});
  if (error e = check_output(input, output, directory, force)) return fail(e);
  progress_bar bar("decompress");
  options.progress = [&](std::uint64_t done, std::uint64_t total) { bar.update(done, total); };
  const stopwatch clock;
  const error e = directory ? decompress_directory(input, output, options, force)
                            : decompress_file(input, output, options);
  bar.finish();
  if (e) return fail(e);
  const double seconds = clock.seconds();
  fmt::print("{} -> {}: {:.2f} s\n", detail::printable(input), detail::printable(output), seconds);
  return kExitOk;
}

int verify_command(const std::vector<std::string>& tokens) {
  const arguments args(tokens, {{"threads", 0, true}});
  args.expect_positionals(2, 2, "ORIGINAL and COMPRESSED");
  const fs::path original = without_trailing_separator(args.positionals()[0]);
  const fs::path compressed = without_trailing_separator(args.positionals()[1]);
  decompress_options options;
  options.codec.threads = threads_option(args);
  options.cancel = &g_cancel;
  progress_bar bar("verify");
  options.progress = [&](std::uint64_t done, std::uint64_t total) { bar.update(done, total); };
  const stopwatch clock;
  const bool directories = is_dir(original) || is_dir(compressed);
  if (directories && !(is_dir(original) && is_dir(compressed)))
    return fail({errc::invalid_argument,
                 "verify: compare a file with a file, or a directory "
                 "with a directory"});
  const error e = directories ? verify_directory(original, compressed, options)
                              : verify_file(original, compressed, options);
  bar.finish();
  if (e) {
    fmt::print(stderr, "floatzip: verification FAILED\n");
    return fail(e);
  }
  fmt::print("{}: identical to {} (every checksum checked, every bit compared), {:.2f} s\n",
             detail::printable(compressed), detail::printable(original), clock.seconds());
  return kExitOk;
}

namespace {

std::string bundle_label(const container_reader& reader, std::uint32_t b) {
  const auto members = reader.bundle_tensors(b);
  if (members.empty()) {
    for (const auto& g : reader.gaps())
      if (g.bundle == b) return fmt::format("(gap at data offset {})", g.original.begin);
    return "(gap)";
  }
  const auto& first = reader.tensors()[members[0]];
  if (members.size() == 1) return first.name;
  // The members' common name prefix, cut after a '.'.
  std::string_view prefix = first.name;
  for (std::uint32_t m : members) {
    const std::string_view name = reader.tensors()[m].name;
    std::size_t n = 0;
    while (n < prefix.size() && n < name.size() && prefix[n] == name[n]) ++n;
    prefix = prefix.substr(0, n);
  }
  const std::size_t dot = prefix.rfind('.');
  prefix = dot == std::string_view::npos ? std::string_view{} : prefix.substr(0, dot + 1);
  return prefix.empty() ? fmt::format("{} ... ({} tensors)", first.name, members.size())
                        : fmt::format("{}* ({} tensors)", prefix, members.size());
}

// Tensor names come from the file: printed, they are escaped (NUL, newlines, escape sequences).
std::string printable_bundle_label(const container_reader& reader, std::uint32_t b) {
  return detail::printable(bundle_label(reader, b));
}

nlohmann::ordered_json totals_json(const container_totals& t) {
  nlohmann::ordered_json j;
  j["original_bytes"] = t.original_bytes;
  j["compressed_bytes"] = t.file_bytes;
  j["ratio"] = t.ratio();
  j["bf16_values"] = t.bf16_values;
  j["bits_per_bf16_value"] = t.bits_per_bf16_value();
  j["exponent_entropy_bits_per_value"] =
      t.bf16_values == 0 ? 0.0 : t.exponent_entropy_bits / double(t.bf16_values);
  j["entropy_bound_bits_per_value"] = t.entropy_bound_bits_per_value();
  j["huffman_ideal_bits_per_value"] = t.huffman_ideal_bits_per_value();
  j["bf16_stored_bytes"] = t.bf16_stored_bytes;
  j["raw_bytes"] = t.raw_bytes;
  j["tensor_count"] = t.tensor_count;
  j["bundle_count"] = t.bundle_count;
  // Per value format present: its coded and verbatim bundles together.
  auto& formats = j["formats"] = nlohmann::ordered_json::object();
  for (value_format f : formats_present(t)) {
    const format_totals& ft = t.of(f);
    nlohmann::ordered_json jf;
    jf["bundles"] = ft.bundle_count;
    jf["values"] = ft.values;
    jf["original_bytes"] = ft.original_bytes;
    jf["stored_bytes"] = ft.stored_bytes;
    jf["ratio"] = ft.ratio();
    jf["bits_per_value"] = ft.bits_per_value();
    jf["symbol_entropy_bits_per_value"] =
        ft.values == 0 ? 0.0 : ft.symbol_entropy_bits / double(ft.values);
    jf["entropy_bound_bits_per_value"] = ft.entropy_bound_bits_per_value(f);
    jf["huffman_ideal_bits_per_value"] = ft.huffman_ideal_bits_per_value(f);
    formats[std::string(to_string(f))] = std::move(jf);
  }
  return j;
}

// "raw", or the format ("fp16"), with " verbatim" for values stored as they are.
std::string kind_label(const container_bundle& rec) {
  if (!rec.has_values()) return "raw";
  return std::string(to_string(rec.format)) +
         (rec.kind == bundle_kind::verbatim ? " verbatim" : "");
}

nlohmann::ordered_json file_json(const fs::path& path, const container_reader& reader) {
  nlohmann::ordered_json j;
  j["file"] = detail::printable(path);  // valid UTF-8 whatever the path's bytes
  const auto totals = totals_json(reader.totals());
  for (const auto& [key, value] : totals.items()) j[key] = value;
  j["grouping"] = grouping_name(reader.grouping_used());
  auto& bundles = j["bundles"] = nlohmann::ordered_json::array();
  for (std::uint32_t b = 0; b < reader.bundles().size(); ++b) {
    const auto& rec = reader.bundles()[b];
    nlohmann::ordered_json jb;
    jb["index"] = b;
    jb["kind"] = kind_label(rec);
    if (rec.has_values()) jb["format"] = to_string(rec.format);
    jb["name"] = bundle_label(reader, b);
    jb["tensors"] = reader.bundle_tensors(b).size();
    jb["values"] = rec.value_count;
    jb["original_bytes"] = rec.decoded_bytes;
    jb["stored_bytes"] = rec.stored_bytes;
    jb["bits_per_value"] = rec.bits_per_value();
    jb["exponent_entropy"] = rec.exponent_entropy;
    jb["huffman_ideal_bits_per_value"] = rec.huffman_ideal_bits_per_value();
    jb["ratio"] =
        rec.decoded_bytes == 0 ? 0.0 : double(rec.stored_bytes) / double(rec.decoded_bytes);
    bundles.push_back(std::move(jb));
  }
  return j;
}

void print_file_table(const fs::path& path, const container_reader& reader) {
  const auto t = reader.totals();
  std::string formats;  // "3 bf16, 2 fp16, "
  std::uint64_t coded = 0;
  for (value_format f : formats_present(t)) {
    formats += fmt::format("{} {}, ", t.of(f).bundle_count, to_string(f));
    coded += t.of(f).bundle_count;
  }
  fmt::print("{}: {} tensors in {} bundles ({}{} raw), grouping: {}\n", detail::printable(path),
             t.tensor_count, t.bundle_count, formats, t.bundle_count - coded,
             grouping_name(reader.grouping_used()));
  // ideal: the format's raw planes + an unlimited Huffman code per tensor, no metadata. A kind
  // ending in "v" is stored verbatim.
  fmt::print("{:>6} {:>13} {:>12} {:>13} {:>13} {:>7} {:>7} {:>7} {:>6}  {}\n", "bundle", "kind",
             "values", "bytes before", "bytes after", "bits/v", "ideal", "H(sym)", "ratio",
             "tensors");
  for (std::uint32_t b = 0; b < reader.bundles().size(); ++b) {
    const auto& rec = reader.bundles()[b];
    const bool raw = !rec.has_values();
    fmt::print(
        "{:>6} {:>13} {:>12} {:>13} {:>13} {:>7} {:>7} {:>7} {:>6}  {}\n", b,
        raw ? std::string("raw")
            : std::string(to_string(rec.format)) + (rec.kind == bundle_kind::verbatim ? "v" : ""),
        raw ? std::string("-") : std::to_string(rec.value_count), rec.decoded_bytes,
        rec.stored_bytes, raw ? std::string("-") : fmt::format("{:.3f}", rec.bits_per_value()),
        raw ? std::string("-") : fmt::format("{:.3f}", rec.huffman_ideal_bits_per_value()),
        raw ? std::string("-") : fmt::format("{:.3f}", rec.exponent_entropy),
        rec.decoded_bytes == 0
            ? std::string("-")
            : fmt::format("{:.3f}", double(rec.stored_bytes) / double(rec.decoded_bytes)),
        printable_bundle_label(reader, b));
  }
}

void print_totals(const container_totals& t) {
  fmt::print("total: {} bytes -> {} bytes, ratio {:.4f}\n", t.original_bytes, t.file_bytes,
             t.ratio());
  for (value_format f : formats_present(t)) {
    const format_totals& ft = t.of(f);
    fmt::print(
        "{}: {} values, {} -> {} bytes (ratio {:.4f}), {:.3f} bits per value (per-tensor Huffman "
        "ideal {:.3f}, {:+.3f}; entropy bound of the bundles {:.3f})\n",
        to_string(f), ft.values, ft.original_bytes, ft.stored_bytes, ft.ratio(),
        ft.bits_per_value(), ft.huffman_ideal_bits_per_value(f),
        ft.bits_per_value() - ft.huffman_ideal_bits_per_value(f),
        ft.entropy_bound_bits_per_value(f));
  }
}

}  // namespace

int info_command(const std::vector<std::string>& tokens) {
  const arguments args(tokens, {{"json", 0, false}});
  args.expect_positionals(1, 1, "one .fzip file or directory");
  const fs::path input = without_trailing_separator(args.positionals()[0]);
  const bool json = args.flag("json");

  std::vector<fs::path> files;
  if (is_dir(input)) {
    auto entries = detail::list_regular_files(input);
    if (!entries) return fail(entries.error());
    for (const auto& e : *entries)
      if (has_suffix(e.name, kContainerExtension)) files.push_back(input / e.name);
    if (files.empty())
      return fail(
          {errc::invalid_argument, detail::printable(input) + ": no .fzip files in the directory"});
  } else {
    files.push_back(input);
  }

  container_totals all;
  nlohmann::ordered_json file_objects = nlohmann::ordered_json::array();
  for (const auto& f : files) {
    auto reader = container_reader::open(f, {.verify_checksums = true, .cancel = &g_cancel});
    if (!reader) return fail(reader.error());
    all += reader->totals();
    if (json) {
      file_objects.push_back(file_json(f, *reader));
    } else {
      print_file_table(f, *reader);
      if (files.size() > 1) print_totals(reader->totals());
      fmt::print("\n");
    }
  }
  if (json) {
    nlohmann::ordered_json out;
    if (files.size() == 1) {
      out = std::move(file_objects[0]);
    } else {
      out["directory"] = detail::printable(input);
      const auto totals = totals_json(all);
      for (const auto& [key, value] : totals.items()) out[key] = value;
      out["files"] = std::move(file_objects);
    }
    // Names are valid UTF-8 (the JSON parser checked them) but may hold any character: escaped
    // as \\uXXXX, non-ASCII included, nothing reaches a terminal as a control sequence.
    fmt::print("{}\n", out.dump(2, ' ', /*ensure_ascii=*/true));
  } else {
    print_totals(all);
  }
  return kExitOk;
}

}  // namespace floatzip::cli
