// llama_generate: weights from a .fzip container, decompressed one bundle at a time.
//
// The container holds each transformer block ("model.layers.N.") as one BF16 bundle and every
// other tensor as a bundle of its own. load_block(N) decodes block N's bundle into the engine's
// buffer and returns views at each tensor's offset in it; load_tensor does the same for the
// embedding, final norm and output head. The buffer is sized once to the largest bundle the
// forward pass uses, so the decoded weights resident at any moment never exceed one bundle.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "floatzip/container.hpp"
#include "floatzip/error.hpp"
#include "model_config.hpp"
#include "weight_source.hpp"

namespace llama {

// Where a tensor lies in a .fzip container.
struct fzip_tensor_ref {
  weight_type type = weight_type::bf16;
  std::uint32_t bundle = 0;
  bool decoded = false;      // in a BF16 bundle (else stored raw)
  std::uint64_t offset = 0;  // first value in the decoded bundle, or first byte of a raw one
  std::size_t count = 0;     // elements
};

class fzip_source final : public indexed_weight_source<fzip_tensor_ref> {
 public:
  static floatzip::result<std::unique_ptr<fzip_source>> open(
      const std::filesystem::path& path, const model_config& config,
      const floatzip::decode_options& decode = {}) {
    auto reader = floatzip::container_reader::open(path);
    if (!reader) return reader.error();
    std::unique_ptr<fzip_source> source(new fzip_source(std::move(*reader)));
    source->decode_ = decode;
    source->decoded_checked_.assign(source->reader_.bundles().size(), false);
    const std::string where = path.string();
    const auto& reader_ref = source->reader_;

    const auto has_tensor = [&](const std::string& name) {
      return reader_ref.find_tensor(name) != nullptr;
    };
    const auto resolve =
        [&](const std::string& name,
            std::span<const std::uint64_t> expected) -> floatzip::result<tensor_ref> {
      const floatzip::container_tensor* tensor = reader_ref.find_tensor(name);
      if (tensor == nullptr)
        return floatzip::error{floatzip::errc::bad_data,
                               where + ": tensor '" + name + "' is missing"};
      if (tensor->bundle_count > 1)
        return floatzip::error{floatzip::errc::bad_data,
                               where + ": tensor '" + name +
                                   "' is split across bundles (bigger than the bundle limit)"};
      auto type = check_tensor(where, name, tensor->type, tensor->shape, expected);
      if (!type) return type.error();
      const auto& bundle = reader_ref.bundles()[tensor->bundle];
      tensor_ref ref{*type, tensor->bundle, bundle.is_bf16(), tensor->bundle_offset,
                     static_cast<std::size_t>(tensor->size_bytes() / element_bytes(*type))};
      // A BF16 bundle holds BF16 values only; a tensor of another type is stored raw.
      if (ref.decoded && ref.type != weight_type::bf16)
        return floatzip::error{floatzip::errc::bad_data,
                               where + ": tensor '" + name +
                                   "' is not BF16 but sits in BF16 bundle " +
                                   std::to_string(ref.bundle)};
      // The reader validated its index; this guards the views handed to the forward pass.
      const std::uint64_t end = ref.decoded ? bundle.value_count : bundle.stored_bytes;
      const std::uint64_t span = ref.decoded ? ref.count : ref.count * element_bytes(ref.type);
      if (ref.offset > end || span > end - ref.offset)
        return floatzip::error{floatzip::errc::bad_data, where + ": tensor '" + name +
                                                             "' lies outside its bundle " +
                                                             std::to_string(ref.bundle)};
      source->model_weight_bytes_ += tensor->size_bytes();
      return ref;
    };
    // BF16 values a load needs: the decoded bundle (at most one per load) plus copies of raw
    // tensors whose addresses their element type cannot be read from.
    const auto load_values =
        [&](std::span<const tensor_ref> refs) -> floatzip::result<std::size_t> {
      std::optional<std::uint32_t> decoded_bundle;
      std::size_t staged = 0;
      for (const tensor_ref& ref : refs) {
        if (ref.decoded) {
          if (decoded_bundle && *decoded_bundle != ref.bundle)
            return floatzip::error{floatzip::errc::bad_data,
                                   where + ": the BF16 tensors of one load span bundles " +
                                       std::to_string(*decoded_bundle) + " and " +
                                       std::to_string(ref.bundle) +
                                       " (a transformer block must be one bundle)"};
          decoded_bundle = ref.bundle;
        } else {
          staged += staged_slots(ref.count * element_bytes(ref.type));
        }
      }
      const std::size_t decoded =
          decoded_bundle ? std::size_t(reader_ref.bundles()[*decoded_bundle].value_count) : 0;
      // Staged copies follow the decoded values, starting on an even slot.
      return (decoded + 1) / 2 * 2 + staged;
    };
    if (floatzip::error e = source->build_index(where, config, has_tensor, resolve, load_values))
      return e;
    return source;
  }

  [[nodiscard]] std::uint64_t file_bytes() const noexcept override { return reader_.file_size(); }
  [[nodiscard]] std::string_view format() const noexcept override { return "fzip"; }

  [[nodiscard]] const floatzip::container_reader& reader() const noexcept { return reader_; }

 private:
  explicit fzip_source(floatzip::container_reader reader) : reader_(std::move(reader)) {}

  // Decodes the BF16 bundle the tensors share (once) into the front of `buffer` and places raw
  // tensors after it.
  floatzip::error place(std::span<const tensor_ref> refs, std::span<weight_view> views,
                        std::span<std::uint16_t> buffer) override {
    std::optional<std::uint32_t> decoded_bundle;
    std::size_t cursor = 0;
    for (const tensor_ref& ref : refs) {
      if (!ref.decoded || decoded_bundle) continue;
      decoded_bundle = ref.bundle;
      // The decoded checksum is checked the first time a bundle is decoded. Later decodes read
      // the same checksummed stored bytes with the same deterministic decoder, so checking again
      // would only add a pass over the output to every token.
      const bool first_decode = !decoded_checked_[ref.bundle];
      if (floatzip::error e = reader_.decode_bundle(ref.bundle, buffer, decode_, first_decode))
        return e;
      decoded_checked_[ref.bundle] = true;
      cursor = std::size_t(reader_.bundles()[ref.bundle].value_count + 1) / 2 * 2;
    }
    for (std::size_t i = 0; i < refs.size(); ++i) {
      const tensor_ref& ref = refs[i];
      if (ref.decoded) {
        views[i] = {weight_type::bf16, buffer.data() + ref.offset, ref.count};
        continue;
      }
      auto bytes = reader_.bundle_bytes(ref.bundle);
      if (!bytes) return bytes.error();
      views[i] = place_tensor(bytes->data() + ref.offset, ref.type, ref.count, buffer, cursor);
    }
    return {};
  }

  floatzip::container_reader reader_;
  floatzip::decode_options decode_;
  std::vector<bool> decoded_checked_;
};

}  // namespace llama
