// llama_generate: weights from a .fzip container, decompressed one bundle at a time.
//
// The container holds each transformer block ("model.layers.N.") as one BF16 bundle and every
// other tensor as a bundle of its own. load_block(N) decodes block N's bundle into the engine's
// buffer and returns views at each tensor's offset in it; load_tensor does the same for the
// embedding, final norm and output head. The buffer is sized once to the largest bundle the
// forward pass uses, so the decoded weights resident at any moment never exceed one bundle.
#pragma once

#include <algorithm>
#include <array>
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

class fzip_source final : public weight_source {
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

    // Resolves one tensor and checks it against the config.
    const auto resolve =
        [&](const std::string& name,
            std::span<const std::uint64_t> expected) -> floatzip::result<tensor_ref> {
      const floatzip::container_tensor* tensor = reader_ref.find_tensor(name);
      if (tensor == nullptr)
        return floatzip::error{floatzip::errc::bad_data,
                               where + ": tensor '" + name + "' is missing"};
      auto type = check_tensor(where, name, tensor->type, tensor->shape, expected);
      if (!type) return type.error();
      const auto& bundle = reader_ref.bundles()[tensor->bundle];
      tensor_ref ref{*type, tensor->bundle, bundle.kind == floatzip::bundle_kind::bf16_huffman,
                     tensor->bundle_offset,
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

    for (int layer = 0; layer < config.n_layers; ++layer) {
      std::array<tensor_ref, std::size(kBlockTensors)> block{};
      for (std::size_t i = 0; i < std::size(kBlockTensors); ++i) {
        const auto& spec = kBlockTensors[i];
        auto ref = resolve(block_prefix(layer) + spec.suffix, expected_shape(config, spec.member));
        if (!ref) return ref.error();
        block[i] = *ref;
      }
      auto values = load_values(block);
      if (!values) return values.error();
      source->buffer_values_ = std::max(source->buffer_values_, *values);
      source->blocks_.push_back(block);
    }
    for (global_tensor which :
         {global_tensor::embedding, global_tensor::final_norm, global_tensor::output_head}) {
      if (which == global_tensor::output_head &&
          reader_ref.find_tensor(tensor_name(which)) == nullptr) {
        if (!config.tied_embeddings)
          return floatzip::error{floatzip::errc::bad_data,
                                 where +
                                     ": tensor 'lm_head.weight' is missing and the config "
                                     "says the embeddings are not tied"};
        continue;
      }
      auto ref = resolve(tensor_name(which), expected_shape(config, which));
      if (!ref) return ref.error();
      auto values = load_values(std::span<const tensor_ref>(&*ref, 1));
      if (!values) return values.error();
      source->buffer_values_ = std::max(source->buffer_values_, *values);
      source->globals_[static_cast<std::size_t>(which)] = *ref;
    }
    return source;
  }

  [[nodiscard]] std::size_t buffer_values() const noexcept override { return buffer_values_; }

  floatzip::result<block_weights> load_block(int layer, std::span<std::uint16_t> buffer) override {
    if (layer < 0 || layer >= static_cast<int>(blocks_.size()))
      return floatzip::error{floatzip::errc::invalid_argument,
                             "load_block: no layer " + std::to_string(layer)};
    const auto& refs = blocks_[static_cast<std::size_t>(layer)];
    std::array<weight_view, std::size(kBlockTensors)> views{};
    if (floatzip::error e = load(refs, views, buffer)) return e;
    block_weights weights;
    for (std::size_t i = 0; i < std::size(kBlockTensors); ++i)
      weights.*kBlockTensors[i].member = views[i];
    return weights;
  }

  floatzip::result<weight_view> load_tensor(global_tensor which,
                                            std::span<std::uint16_t> buffer) override {
    const auto& ref = globals_[static_cast<std::size_t>(which)];
    if (!ref)
      return floatzip::error{floatzip::errc::invalid_argument,
                             "load_tensor: the model has no " + tensor_name(which)};
    weight_view view;
    if (floatzip::error e =
            load(std::span<const tensor_ref>(&*ref, 1), std::span<weight_view>(&view, 1), buffer))
      return e;
    return view;
  }

  [[nodiscard]] bool has_output_head() const noexcept override {
    return globals_[static_cast<std::size_t>(global_tensor::output_head)].has_value();
  }
  [[nodiscard]] std::uint64_t model_weight_bytes() const noexcept override {
    return model_weight_bytes_;
  }
  [[nodiscard]] std::uint64_t file_bytes() const noexcept override { return reader_.file_size(); }
  [[nodiscard]] std::string_view format() const noexcept override { return "fzip"; }

  [[nodiscard]] const floatzip::container_reader& reader() const noexcept { return reader_; }

  // Where each tensor lies in the container, for engines that do their own decoding (the GPU
  // path, gpu_weights.hpp).
  struct tensor_ref {
    weight_type type = weight_type::bf16;
    std::uint32_t bundle = 0;
    bool decoded = false;      // in a BF16 bundle (else stored raw)
    std::uint64_t offset = 0;  // first value in the decoded bundle, or first byte of a raw one
    std::size_t count = 0;     // elements
  };
  [[nodiscard]] std::size_t block_count() const noexcept { return blocks_.size(); }
  // Block `layer`'s tensors in the order of kBlockTensors. Precondition: layer < block_count().
  [[nodiscard]] const std::array<tensor_ref, std::size(kBlockTensors)>& block_refs(
      int layer) const noexcept {
    return blocks_[static_cast<std::size_t>(layer)];
  }
  // A tensor outside the blocks; empty for an absent (tied) output head.
  [[nodiscard]] const std::optional<tensor_ref>& global_ref(global_tensor which) const noexcept {
    return globals_[static_cast<std::size_t>(which)];
  }

 private:
  explicit fzip_source(floatzip::container_reader reader) : reader_(std::move(reader)) {}

  // Decodes the BF16 bundle the tensors share (once) into the front of `buffer` and places raw
  // tensors after it.
  floatzip::error load(std::span<const tensor_ref> refs, std::span<weight_view> views,
                       std::span<std::uint16_t> buffer) {
    if (buffer.size() < buffer_values_)
      return {floatzip::errc::insufficient_space,
              reader_.name() + ": the weight buffer holds " + std::to_string(buffer.size()) +
                  " values, loads need up to " + std::to_string(buffer_values_)};
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
  std::vector<std::array<tensor_ref, std::size(kBlockTensors)>> blocks_;
  std::array<std::optional<tensor_ref>, 3> globals_;
  std::size_t buffer_values_ = 0;
  std::uint64_t model_weight_bytes_ = 0;
};

}  // namespace llama
