// libFuzzer target: container parsing and decoding, plus the safetensors header parser.
//
// Each input is read four ways: as a safetensors file, as a .fzip file with checksums checked
// (the path every real file takes), as a .fzip file with checksums off, so that mutations
// reach the index validation and the bundle decoder behind the checksums, and as an "expanded"
// .fzip (its metadata section stored decoded, as fuzz_seeds writes *.expanded seeds), which the
// harness packs into a zstd frame first, so that mutations of the index and the verbatim header
// reach their validation instead of breaking the frame. Whatever the bytes,
// the library must return errors, never read or write out of bounds (AddressSanitizer), never
// hit undefined behaviour (UBSan), and never allocate more than a small multiple of the input.
//
// Built by tests/fuzz.cmake with clang (-fsanitize=fuzzer,address,undefined); the ctest
// `fuzz_container` runs it for a bounded time on a seed corpus made from the real models.
#include <zstd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "floatzip/container.hpp"
#include "floatzip/safetensors.hpp"

namespace {

void read_everything(const floatzip::container_reader& reader) {
  std::vector<std::byte> values;
  for (std::uint32_t b = 0; b < reader.bundles().size(); ++b) {
    const auto& rec = reader.bundles()[b];
    if (rec.has_values()) {
      // decoded_bytes <= 8 * stored bytes <= 8 * input size was checked by the reader: bounded.
      values.assign(rec.decoded_bytes, std::byte{0});
      (void)reader.decode_bundle(b, values, {1});
    } else {
      (void)reader.bundle_bytes(b);
    }
  }
  std::vector<std::byte> tensor;
  for (const auto& t : reader.tensors()) {
    tensor.assign(t.size_bytes(), std::byte{0});
    (void)reader.read_tensor(t, tensor, {1});
  }
  (void)reader.totals();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  (void)floatzip::safetensors::parse_header(bytes, size, "fuzz.safetensors");
  for (bool checksums : {true, false}) {
    auto reader = floatzip::container_reader::from_bytes(bytes, "fuzz.fzip", {checksums});
    if (reader) read_everything(*reader);
  }
  // The expanded reading: bytes [metadata_offset, end) are the decoded metadata.
  if (size >= floatzip::kContainerHeaderBytes) {
    std::uint64_t at = 0;
    std::memcpy(&at, data + 32, 8);
    if (at >= floatzip::kContainerHeaderBytes && at <= size && size - at <= (1u << 20)) {
      std::vector<std::byte> packed(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(at));
      std::vector<std::byte> frame(ZSTD_compressBound(size - at));
      const std::size_t n = ZSTD_compress(frame.data(), frame.size(), data + at, size - at, 1);
      if (!ZSTD_isError(n)) {
        packed.insert(packed.end(), frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(n));
        const std::uint64_t stored = n;
        const std::uint64_t file_size = packed.size();
        std::memcpy(packed.data() + 56, &stored, 8);
        std::memcpy(packed.data() + 16, &file_size, 8);
        auto reader = floatzip::container_reader::from_bytes(packed, "fuzz.fzip", {false});
        if (reader) read_everything(*reader);
      }
    }
  }
  return 0;
}
