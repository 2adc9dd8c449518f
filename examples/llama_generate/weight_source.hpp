// llama_generate: where a forward pass gets its weights from.
//
// A weight_source hands out one transformer block at a time. The engine owns one buffer of BF16
// values, sized once to the source's buffer_values(); before a block runs it calls
// load_block(layer, buffer), which may overwrite the buffer and returns views of the block's
// tensors. The views stay valid until the next load_* call. So a compressed source keeps at most
// one decoded block resident, however large the model, and an uncompressed source can return
// views straight into its memory-mapped file and ignore the buffer.
//
// Tensor names follow Hugging Face Llama checkpoints:
//   model.embed_tokens.weight   [vocab, dim]
//   model.layers.N.input_layernorm.weight, self_attn.{q,k,v,o}_proj.weight,
//     post_attention_layernorm.weight, mlp.{gate,up,down}_proj.weight
//   model.norm.weight           [dim]
//   lm_head.weight              [vocab, dim], absent when the output head is tied to the embedding
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "floatzip/detail/file_io.hpp"
#include "floatzip/error.hpp"
#include "floatzip/safetensors.hpp"
#include "model_config.hpp"

namespace llama {

// Element types the forward pass reads. BF16 is what floatzip stores; F32 lets the same code run
// the original float32 checkpoint for reference.
enum class weight_type { bf16, f32 };

inline float bf16_to_float(std::uint16_t bits) noexcept {
  return std::bit_cast<float>(std::uint32_t{bits} << 16);
}

// A read-only row-major tensor in its stored element type.
struct weight_view {
  weight_type type = weight_type::bf16;
  const void* data = nullptr;
  std::size_t count = 0;  // elements

  [[nodiscard]] const std::uint16_t* bf16() const noexcept {
    return static_cast<const std::uint16_t*>(data);
  }
  [[nodiscard]] const float* f32() const noexcept { return static_cast<const float*>(data); }
  [[nodiscard]] float at(std::size_t i) const noexcept {
    return type == weight_type::bf16 ? bf16_to_float(bf16()[i]) : f32()[i];
  }
};

// One transformer block. Names after llama2.c: w1 = gate_proj, w3 = up_proj, w2 = down_proj.
struct block_weights {
  weight_view attention_norm;  // input_layernorm [dim]
  weight_view wq;              // [n_heads * head_size, dim]
  weight_view wk;              // [n_kv_heads * head_size, dim]
  weight_view wv;              // [n_kv_heads * head_size, dim]
  weight_view wo;              // [dim, n_heads * head_size]
  weight_view ffn_norm;        // post_attention_layernorm [dim]
  weight_view w1;              // gate_proj [hidden_dim, dim]
  weight_view w3;              // up_proj [hidden_dim, dim]
  weight_view w2;              // down_proj [dim, hidden_dim]
};

// The tensors outside the transformer blocks.
enum class global_tensor { embedding, final_norm, output_head };

inline std::string tensor_name(global_tensor which) {
  switch (which) {
    case global_tensor::embedding: return "model.embed_tokens.weight";
    case global_tensor::final_norm: return "model.norm.weight";
    case global_tensor::output_head: return "lm_head.weight";
  }
  return "?";
}

// The nine tensors of a block, in the order of block_weights' members.
struct block_tensor_spec {
  const char* suffix;  // after "model.layers.N."
  weight_view block_weights::*member;
};
inline constexpr block_tensor_spec kBlockTensors[] = {
    {"input_layernorm.weight", &block_weights::attention_norm},
    {"self_attn.q_proj.weight", &block_weights::wq},
    {"self_attn.k_proj.weight", &block_weights::wk},
    {"self_attn.v_proj.weight", &block_weights::wv},
    {"self_attn.o_proj.weight", &block_weights::wo},
    {"post_attention_layernorm.weight", &block_weights::ffn_norm},
    {"mlp.gate_proj.weight", &block_weights::w1},
    {"mlp.up_proj.weight", &block_weights::w3},
    {"mlp.down_proj.weight", &block_weights::w2},
};

inline std::string block_prefix(int layer) { return "model.layers." + std::to_string(layer) + "."; }

// The shape each tensor must have under `config`.
inline std::vector<std::uint64_t> expected_shape(const model_config& config,
                                                 weight_view block_weights::*member) {
  const auto dim = std::uint64_t(config.dim);
  const auto hidden = std::uint64_t(config.hidden_dim);
  const auto q_rows = std::uint64_t(config.n_heads) * std::uint64_t(config.head_size());
  const auto kv_rows = std::uint64_t(config.kv_dim());
  if (member == &block_weights::attention_norm || member == &block_weights::ffn_norm) return {dim};
  if (member == &block_weights::wq) return {q_rows, dim};
  if (member == &block_weights::wk || member == &block_weights::wv) return {kv_rows, dim};
  if (member == &block_weights::wo) return {dim, q_rows};
  if (member == &block_weights::w1 || member == &block_weights::w3) return {hidden, dim};
  return {dim, hidden};  // w2
}

inline std::vector<std::uint64_t> expected_shape(const model_config& config, global_tensor which) {
  if (which == global_tensor::final_norm) return {std::uint64_t(config.dim)};
  return {std::uint64_t(config.vocab_size), std::uint64_t(config.dim)};
}

inline std::string shape_string(std::span<const std::uint64_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s.append(", ");
    s.append(std::to_string(shape[i]));
  }
  s.push_back(']');
  return s;
}

inline std::optional<weight_type> weight_type_of(floatzip::safetensors::dtype type) noexcept {
  if (type == floatzip::safetensors::dtype::bf16) return weight_type::bf16;
  if (type == floatzip::safetensors::dtype::f32) return weight_type::f32;
  return std::nullopt;
}

inline std::size_t element_bytes(weight_type type) noexcept {
  return type == weight_type::bf16 ? 2 : 4;
}

// Checks a tensor's dtype and shape against what the config asks for. `where` names the file.
inline floatzip::result<weight_type> check_tensor(std::string_view where, const std::string& name,
                                                  floatzip::safetensors::dtype type,
                                                  std::span<const std::uint64_t> shape,
                                                  std::span<const std::uint64_t> expected) {
  using floatzip::errc;
  const auto element = weight_type_of(type);
  if (!element)
    return floatzip::error{errc::bad_data, std::string(where) + ": tensor '" + name + "': dtype " +
                                               std::string(floatzip::safetensors::to_string(type)) +
                                               " (the forward pass reads BF16 or F32)"};
  if (!std::equal(shape.begin(), shape.end(), expected.begin(), expected.end()))
    return floatzip::error{errc::bad_data, std::string(where) + ": tensor '" + name + "': shape " +
                                               shape_string(shape) + ", the config asks for " +
                                               shape_string(expected)};
  return *element;
}

// BF16 slots a tensor of `bytes` bytes takes when copied into the engine's buffer. Copies start
// at even slots, so every copy is 4-byte aligned (the buffer itself is allocated aligned).
inline std::size_t staged_slots(std::uint64_t bytes) noexcept {
  return static_cast<std::size_t>((bytes + 3) / 4 * 2);
}

// A view of a tensor stored at `bytes`: in place when the address suits the element type (the
// usual case: safetensors writers and .fzip align tensors), otherwise copied into
// buffer[cursor ..], advancing cursor. The caller sized the buffer for every copy it may need.
inline weight_view place_tensor(const std::byte* bytes, weight_type type, std::size_t count,
                                std::span<std::uint16_t> buffer, std::size_t& cursor) {
  const std::size_t size = count * element_bytes(type);
  if (reinterpret_cast<std::uintptr_t>(bytes) % element_bytes(type) == 0)
    return {type, bytes, count};
  std::uint16_t* destination = buffer.data() + cursor;
  std::memcpy(destination, bytes, size);
  cursor += staged_slots(size);
  return {type, destination, count};
}

// Where a forward pass gets its weights: see the top of this file.
class weight_source {
 public:
  virtual ~weight_source() = default;

  // BF16 values the engine's buffer must hold for any single load_* call; 0 when views never
  // point into it.
  [[nodiscard]] virtual std::size_t buffer_values() const noexcept = 0;

  // Block `layer`'s tensors, possibly decoded into `buffer` (whose previous contents it may
  // overwrite). Valid until the next load_* call.
  virtual floatzip::result<block_weights> load_block(int layer,
                                                     std::span<std::uint16_t> buffer) = 0;

  // A tensor outside the blocks, the same way. output_head only when has_output_head().
  virtual floatzip::result<weight_view> load_tensor(global_tensor which,
                                                    std::span<std::uint16_t> buffer) = 0;

  // Whether the file has its own lm_head.weight (else the head is tied to the embedding).
  [[nodiscard]] virtual bool has_output_head() const noexcept = 0;

  // Bytes of all the weights the forward pass uses, decoded: what an engine that loads the whole
  // uncompressed model keeps resident.
  [[nodiscard]] virtual std::uint64_t model_weight_bytes() const noexcept = 0;

  // Bytes of the file the weights are read from.
  [[nodiscard]] virtual std::uint64_t file_bytes() const noexcept = 0;

  // "safetensors" or "fzip", for reports.
  [[nodiscard]] virtual std::string_view format() const noexcept = 0;
};

// What both sources share: the index built at open (each block's nine tensors and the tensors
// outside the blocks, resolved to the source's own `Ref`), the BF16 values the largest load
// needs, the checks of load_block and load_tensor, and the accessors engines that upload the
// weights themselves read (the GPU path, gpu_weights.hpp). A source says how a tensor is found
// and checked (build_index's callbacks) and how one load's tensors are placed (place()).
template <class Ref>
class indexed_weight_source : public weight_source {
 public:
  using tensor_ref = Ref;

  [[nodiscard]] std::size_t buffer_values() const noexcept final { return buffer_values_; }

  floatzip::result<block_weights> load_block(int layer, std::span<std::uint16_t> buffer) final {
    if (layer < 0 || layer >= static_cast<int>(blocks_.size()))
      return floatzip::error{floatzip::errc::invalid_argument,
                             "load_block: no layer " + std::to_string(layer)};
    std::array<weight_view, std::size(kBlockTensors)> views{};
    if (floatzip::error e = checked_place(blocks_[static_cast<std::size_t>(layer)], views, buffer))
      return e;
    block_weights weights;
    for (std::size_t i = 0; i < std::size(kBlockTensors); ++i)
      weights.*kBlockTensors[i].member = views[i];
    return weights;
  }

  floatzip::result<weight_view> load_tensor(global_tensor which,
                                            std::span<std::uint16_t> buffer) final {
    const auto& ref = globals_[static_cast<std::size_t>(which)];
    if (!ref)
      return floatzip::error{floatzip::errc::invalid_argument,
                             "load_tensor: the model has no " + tensor_name(which)};
    weight_view view;
    if (floatzip::error e =
            checked_place(std::span<const Ref>(&*ref, 1), std::span<weight_view>(&view, 1), buffer))
      return e;
    return view;
  }

  [[nodiscard]] bool has_output_head() const noexcept final {
    return globals_[static_cast<std::size_t>(global_tensor::output_head)].has_value();
  }
  [[nodiscard]] std::uint64_t model_weight_bytes() const noexcept final {
    return model_weight_bytes_;
  }

  [[nodiscard]] std::size_t block_count() const noexcept { return blocks_.size(); }
  // Block `layer`'s tensors in the order of kBlockTensors. Precondition: layer < block_count().
  [[nodiscard]] const std::array<Ref, std::size(kBlockTensors)>& block_refs(
      int layer) const noexcept {
    return blocks_[static_cast<std::size_t>(layer)];
  }
  // A tensor outside the blocks; empty for an absent (tied) output head.
  [[nodiscard]] const std::optional<Ref>& global_ref(global_tensor which) const noexcept {
    return globals_[static_cast<std::size_t>(which)];
  }

 protected:
  // Builds the index from `where` (the file's name, for messages):
  //   has_tensor(name) -> bool: whether the file holds a tensor of that name;
  //   resolve(name, expected_shape) -> result<Ref>: finds and checks one tensor (and adds its
  //     bytes to model_weight_bytes_);
  //   load_values(std::span<const Ref>) -> result<std::size_t>: the BF16 values of buffer one
  //     load of these tensors needs.
  // The first error stops it, in file order: block 0's tensors, ..., the embedding, the final
  // norm, the output head (which may be absent only when the config ties it to the embedding).
  template <class HasTensor, class Resolve, class LoadValues>
  floatzip::error build_index(const std::string& where, const model_config& config,
                              const HasTensor& has_tensor, const Resolve& resolve,
                              const LoadValues& load_values) {
    where_ = where;
    for (int layer = 0; layer < config.n_layers; ++layer) {
      std::array<Ref, std::size(kBlockTensors)> block{};
      for (std::size_t i = 0; i < std::size(kBlockTensors); ++i) {
        const auto& spec = kBlockTensors[i];
        floatzip::result<Ref> ref =
            resolve(block_prefix(layer) + spec.suffix, expected_shape(config, spec.member));
        if (!ref) return ref.error();
        block[i] = *ref;
      }
      floatzip::result<std::size_t> values = load_values(std::span<const Ref>(block));
      if (!values) return values.error();
      buffer_values_ = std::max(buffer_values_, *values);
      blocks_.push_back(block);
    }
    for (global_tensor which :
         {global_tensor::embedding, global_tensor::final_norm, global_tensor::output_head}) {
      if (which == global_tensor::output_head && !has_tensor(tensor_name(which))) {
        if (!config.tied_embeddings)
          return floatzip::error{floatzip::errc::bad_data,
                                 where +
                                     ": tensor 'lm_head.weight' is missing and the config "
                                     "says the embeddings are not tied"};
        continue;
      }
      floatzip::result<Ref> ref = resolve(tensor_name(which), expected_shape(config, which));
      if (!ref) return ref.error();
      floatzip::result<std::size_t> values = load_values(std::span<const Ref>(&*ref, 1));
      if (!values) return values.error();
      buffer_values_ = std::max(buffer_values_, *values);
      globals_[static_cast<std::size_t>(which)] = *ref;
    }
    return {};
  }

  // Views of the tensors `refs` into `views` (same length), decoding or copying into `buffer` as
  // the source needs. Called with a buffer of at least buffer_values() values.
  virtual floatzip::error place(std::span<const Ref> refs, std::span<weight_view> views,
                                std::span<std::uint16_t> buffer) = 0;

  std::uint64_t model_weight_bytes_ = 0;

 private:
  floatzip::error checked_place(std::span<const Ref> refs, std::span<weight_view> views,
                                std::span<std::uint16_t> buffer) {
    if (buffer.size() < buffer_values_)
      return {floatzip::errc::insufficient_space,
              where_ + ": the weight buffer holds " + std::to_string(buffer.size()) +
                  " values, loads need up to " + std::to_string(buffer_values_)};
    return place(refs, views, buffer);
  }

  std::string where_;
  std::vector<std::array<Ref, std::size(kBlockTensors)>> blocks_;
  std::array<std::optional<Ref>, 3> globals_;
  std::size_t buffer_values_ = 0;
};

// Where a tensor lies in a memory-mapped safetensors file.
struct mapped_tensor_ref {
  weight_type type = weight_type::bf16;
  const std::byte* bytes = nullptr;  // inside the mapped file, not necessarily aligned
  std::size_t count = 0;             // elements
};

// Reads the weights straight out of a memory-mapped safetensors file: no decoding, and no use
// of the buffer unless a tensor sits at an address its element type cannot be read from.
class safetensors_source final : public indexed_weight_source<mapped_tensor_ref> {
 public:
  static floatzip::result<std::unique_ptr<safetensors_source>> open(
      const std::filesystem::path& path, const model_config& config) {
    auto file = floatzip::detail::mapped_file::open(path);
    if (!file) return file.error();
    const std::string where = path.string();
    auto header = floatzip::safetensors::parse_header(file->bytes(), file->size(), where);
    if (!header) return header.error();

    std::unique_ptr<safetensors_source> source(new safetensors_source());
    source->file_ = std::move(*file);
    const std::byte* data_section = source->file_.bytes().data() + header->header_size();

    const auto has_tensor = [&](const std::string& name) { return header->find(name) != nullptr; };
    const auto resolve =
        [&](const std::string& name,
            std::span<const std::uint64_t> expected) -> floatzip::result<tensor_ref> {
      const auto* info = header->find(name);
      if (info == nullptr)
        return floatzip::error{floatzip::errc::bad_data,
                               where + ": tensor '" + name + "' is missing"};
      auto type = check_tensor(where, name, info->type, info->shape, expected);
      if (!type) return type.error();
      source->model_weight_bytes_ += info->size_bytes();
      return tensor_ref{*type, data_section + info->data.begin,
                        static_cast<std::size_t>(info->element_count())};
    };
    // Only tensors at addresses their element type cannot be read from take buffer space.
    const auto load_values = [](std::span<const tensor_ref> refs) -> floatzip::result<std::size_t> {
      std::size_t staged = 0;
      for (const tensor_ref& ref : refs)
        if (reinterpret_cast<std::uintptr_t>(ref.bytes) % element_bytes(ref.type) != 0)
          staged += staged_slots(ref.count * element_bytes(ref.type));
      return staged;
    };
    if (floatzip::error e = source->build_index(where, config, has_tensor, resolve, load_values))
      return e;
    return source;
  }

  [[nodiscard]] std::uint64_t file_bytes() const noexcept override { return file_.size(); }
  [[nodiscard]] std::string_view format() const noexcept override { return "safetensors"; }

 private:
  safetensors_source() = default;

  floatzip::error place(std::span<const tensor_ref> refs, std::span<weight_view> views,
                        std::span<std::uint16_t> buffer) override {
    std::size_t cursor = 0;
    for (std::size_t i = 0; i < refs.size(); ++i)
      views[i] = place_tensor(refs[i].bytes, refs[i].type, refs[i].count, buffer, cursor);
    return {};
  }

  floatzip::detail::mapped_file file_;
};

}  // namespace llama
