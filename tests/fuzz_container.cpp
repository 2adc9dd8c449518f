// libFuzzer target: container parsing and decoding, plus the safetensors header parser.
//
// Each input is read three ways: as a safetensors file, as a .fzip file with checksums checked
// (the path every real file takes), and as a .fzip file with checksums off, so that mutations
// reach the index validation and the bundle decoder behind the checksums. Whatever the bytes,
// the library must return errors, never read or write out of bounds (AddressSanitizer), never
// hit undefined behaviour (UBSan), and never allocate more than a small multiple of the input.
//
// Built by tests/fuzz.cmake with clang (-fsanitize=fuzzer,address,undefined); the ctest
// `fuzz_container` runs it for a bounded time on a seed corpus made from the real models.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "floatzip/container.hpp"
#include "floatzip/safetensors.hpp"

namespace {

void read_everything(const floatzip::container_reader& reader) {
  std::vector<std::uint16_t> values;
  for (std::uint32_t b = 0; b < reader.bundles().size(); ++b) {
    const auto& rec = reader.bundles()[b];
    if (rec.kind == floatzip::bundle_kind::bf16_huffman) {
      // value_count <= stored bytes <= input size was checked by the reader: bounded.
      values.assign(rec.value_count, 0);
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
  return 0;
}
