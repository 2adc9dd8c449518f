// libFuzzer target: the safetensors header parser and the shard index parser, the JSON that every
// untrusted checkpoint brings.
//
// Each input is read as a safetensors file twice: with its own size (most offsets then lie past
// the data section) and with a data section of 2^40 bytes behind it (only the header is read, so
// the offset, shape and overlap checks are reached), and as the text of a shard index. The
// parsers must return errors, never read out of bounds (AddressSanitizer), never hit undefined
// behaviour (UBSan), never take time or memory beyond linear in the input (libFuzzer's -timeout
// and -rss_limit_mb), and a parsed header must satisfy the invariants its users rely on.
//
// Built by tests/fuzz.cmake with clang (-fsanitize=fuzzer,address,undefined); the ctest
// `fuzz_safetensors_header` runs it for a bounded time on the container fuzzer's seeds (which
// hold safetensors files) with tests/fuzz_safetensors_header.dict.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string_view>

#include "floatzip/safetensors.hpp"

namespace {

void check_invariants(const floatzip::safetensors::header& h) {
  std::uint64_t previous_end = 0;
  for (std::size_t i : h.offset_order()) {
    const auto& t = h.tensors[i];
    if (t.data.begin > t.data.end || t.data.end > h.data_size || t.data.begin < previous_end)
      std::abort();  // ranges must be ordered, inside the data section and disjoint
    if (floatzip::safetensors::storage_bytes(t.type, t.element_count()) != t.data.size())
      std::abort();
    previous_end = t.data.end;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  for (std::uint64_t file_size :
       {std::uint64_t{size}, std::uint64_t{size} + (std::uint64_t{1} << 40)}) {
    auto h = floatzip::safetensors::parse_header(bytes, file_size, "fuzz.safetensors");
    if (h) check_invariants(*h);
  }
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto index = floatzip::safetensors::parse_shard_index(text, "fuzz.index.json");
  if (index)
    for (const auto& [name, file] : index->weight_map)
      if (!floatzip::safetensors::is_plain_file_name(file)) std::abort();
  return 0;
}
