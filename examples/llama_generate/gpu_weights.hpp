// llama_generate: what the GPU engine (gpu_engine.hpp) uploads, taken from the CPU path's weight
// sources, which have already checked every tensor's name, dtype and shape against the config.
//
//   .fzip         each load (a block, the embedding, the final norm, the output head) names the
//                 BF16 bundle that decodes to it and where its tensors lie in the decoded values
//   .safetensors  each load lists its tensors' BF16 bytes in the mapped file
//
// The GPU path computes from BF16 weights only: an F32 tensor (the float32 original, or a tensor
// a .fzip stores raw) is reported, not converted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>

#include "floatzip/error.hpp"
#include "fzip_source.hpp"
#include "gpu_engine.hpp"
#include "model_config.hpp"
#include "weight_source.hpp"

namespace llama {

inline gpu::model_shape gpu_shape(const model_config& config) {
  gpu::model_shape shape;
  shape.dim = config.dim;
  shape.hidden_dim = config.hidden_dim;
  shape.n_layers = config.n_layers;
  shape.n_heads = config.n_heads;
  shape.n_kv_heads = config.n_kv_heads;
  shape.vocab_size = config.vocab_size;
  shape.seq_len = config.seq_len;
  shape.rms_norm_eps = config.rms_norm_eps;
  shape.rope_theta = config.rope_theta;
  shape.rope_split_halves = config.rope == rope_pairing::split_halves;
  return shape;
}

namespace detail {

// Raw tensors of one load start at multiples of 128 values (256 bytes) on the device.
inline constexpr std::uint64_t kGpuRawAlignValues = 128;

inline floatzip::error gpu_needs_bf16(const std::string& file, const std::string& tensor,
                                      const char* how) {
  return {floatzip::errc::bad_data, file + ": tensor '" + tensor + "' is " + how +
                                        ": the GPU path computes from BF16 weights only"};
}

// Fills weights.blocks and the global loads in the engine's order, with make_load(name, refs,
// tensor_name) building one load from a source's tensor refs (tensor_name(i) names refs[i]).
template <class Source, class MakeLoad>
floatzip::error collect_loads(const Source& source, const MakeLoad& make_load,
                              gpu::host_weights& weights) {
  using ref_type = typename Source::tensor_ref;
  for (std::size_t layer = 0; layer < source.block_count(); ++layer) {
    const auto& refs = source.block_refs(static_cast<int>(layer));
    auto load = make_load("block " + std::to_string(layer), refs, [&](std::size_t i) {
      return block_prefix(static_cast<int>(layer)) + kBlockTensors[i].suffix;
    });
    if (!load) return load.error();
    weights.blocks.push_back(std::move(*load));
  }
  for (global_tensor which :
       {global_tensor::embedding, global_tensor::final_norm, global_tensor::output_head}) {
    const auto& ref = source.global_ref(which);
    if (!ref) continue;  // only the output head may be absent (tied): open() checked
    auto load = make_load(tensor_name(which), std::span<const ref_type>(&*ref, 1),
                          [&](std::size_t) { return tensor_name(which); });
    if (!load) return load.error();
    if (which == global_tensor::embedding) weights.embedding = std::move(*load);
    if (which == global_tensor::final_norm) weights.final_norm = std::move(*load);
    if (which == global_tensor::output_head) weights.output_head = std::move(*load);
  }
  return {};
}

}  // namespace detail

// The bundles of a .fzip, uploaded once and decoded per load on the device.
inline floatzip::result<gpu::host_weights> gpu_weights(const fzip_source& source) {
  const floatzip::container_reader& reader = source.reader();
  gpu::host_weights weights;
  std::map<std::uint32_t, std::size_t> bundle_index;  // container bundle -> weights.bundles

  const auto make_load = [&](std::string name, std::span<const fzip_source::tensor_ref> refs,
                             const auto& tensor_name) -> floatzip::result<gpu::host_load> {
    gpu::host_load load;
    load.name = std::move(name);
    for (std::size_t i = 0; i < refs.size(); ++i) {
      const fzip_source::tensor_ref& ref = refs[i];
      if (!ref.decoded || ref.type != weight_type::bf16)
        return detail::gpu_needs_bf16(reader.name(), tensor_name(i),
                                      "stored raw, not in a BF16 bundle");
      // fzip_source::open has checked that the BF16 tensors of one load share one bundle.
      load.tensors.push_back({ref.offset, ref.count});
    }
    const std::uint32_t bundle = refs[0].bundle;
    auto [it, inserted] = bundle_index.try_emplace(bundle, weights.bundles.size());
    if (inserted) {
      auto view = reader.bundle(bundle);  // checks the stored checksum
      if (!view) return view.error();
      weights.bundles.push_back(*view);
    }
    load.bundle = it->second;
    load.value_count = weights.bundles[it->second].value_count();
    return load;
  };

  if (auto e = detail::collect_loads(source, make_load, weights)) return e;
  return weights;
}

// The BF16 tensors of a .safetensors file, uploaded once as they are.
inline floatzip::result<gpu::host_weights> gpu_weights(const safetensors_source& source,
                                                       const std::string& file) {
  gpu::host_weights weights;
  const auto make_load = [&](std::string name, std::span<const safetensors_source::tensor_ref> refs,
                             const auto& tensor_name) -> floatzip::result<gpu::host_load> {
    gpu::host_load load;
    load.name = std::move(name);
    std::uint64_t cursor = 0;
    for (std::size_t i = 0; i < refs.size(); ++i) {
      const safetensors_source::tensor_ref& ref = refs[i];
      if (ref.type != weight_type::bf16) return detail::gpu_needs_bf16(file, tensor_name(i), "F32");
      load.tensors.push_back({cursor, ref.count});
      load.raw.emplace_back(ref.bytes, ref.count * 2);
      cursor = (cursor + ref.count + detail::kGpuRawAlignValues - 1) / detail::kGpuRawAlignValues *
               detail::kGpuRawAlignValues;
    }
    load.value_count = cursor;
    return load;
  };

  if (auto e = detail::collect_loads(source, make_load, weights)) return e;
  return weights;
}

// Either kind of source; `file` names it in messages.
inline floatzip::result<gpu::host_weights> gpu_weights(const weight_source& source,
                                                       const std::string& file) {
  if (const auto* fzip = dynamic_cast<const fzip_source*>(&source)) return gpu_weights(*fzip);
  if (const auto* raw = dynamic_cast<const safetensors_source*>(&source))
    return gpu_weights(*raw, file);
  return floatzip::error{floatzip::errc::invalid_argument,
                         file + ": the GPU path reads .fzip and .safetensors sources only"};
}

}  // namespace llama
