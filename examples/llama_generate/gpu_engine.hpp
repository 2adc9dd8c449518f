// llama_generate: the forward pass on an NVIDIA GPU, declared in plain C++.
//
// gpu_engine.cu defines everything here; this header includes no CUDA header, so main.cpp and the
// test build with the host compiler. The engine runs the arithmetic of transformer.hpp on the
// device: the matrix-vector products with cuBLAS, the element-wise steps (RMSNorm, rotary
// embeddings, attention over the KV cache, SwiGLU, residual adds) as small kernels of its own,
// with every activation kept in device memory. Only the logits come back, once per token.
//
// Its weights come in one of two forms (gpu_weights.hpp builds both from the CPU sources):
//   compressed    floatzip bundles, uploaded once; before each load (a transformer block, the
//                 embedding, the final norm, the output head) the load's bundle is decompressed
//                 with floatzip::decompress into ONE device buffer reused by every load
//   uncompressed  the BF16 tensors, uploaded once and read where they lie
// Both then run the same kernels and the same cuBLAS calls on the same FP32 scratch, which is why
// their logits agree bit for bit.
//
//   auto engine = llama::gpu::engine::create(shape, weights).value();   // all device memory
//   auto logits = engine->forward(token, position);                     // no allocation
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "floatzip/bundle_format.hpp"
#include "floatzip/error.hpp"

namespace llama::gpu {

// The model's shape (model_config without its JSON parser, which the CUDA compiler need not see).
struct model_shape {
  int dim = 0;
  int hidden_dim = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int vocab_size = 0;
  int seq_len = 0;
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  bool rope_split_halves = false;  // rope_pairing::split_halves; else adjacent

  [[nodiscard]] int head_size() const noexcept { return dim / n_heads; }
  [[nodiscard]] int kv_dim() const noexcept { return head_size() * n_kv_heads; }
};

// Tensors of a block load, in the order of kBlockTensors (weight_source.hpp): attention_norm, wq,
// wk, wv, wo, ffn_norm, w1 (gate), w3 (up), w2 (down).
inline constexpr std::size_t kBlockTensorCount = 9;

// Where one tensor lies among its load's BF16 values.
struct tensor_slot {
  std::uint64_t offset = 0;  // first value
  std::uint64_t count = 0;   // values
};

// One load: a transformer block (9 tensors) or one global tensor (1).
struct host_load {
  std::string name;  // for messages: "block 3", "model.norm.weight"
  std::vector<tensor_slot> tensors;
  // The load's values: a decoded bundle's value_count, or the extent of the raw tensors.
  std::uint64_t value_count = 0;
  // Compressed: index into host_weights::bundles of the bundle that decodes to the load's values.
  std::optional<std::size_t> bundle;
  // Uncompressed: each tensor's BF16 bytes in host memory (tensors[i].count * 2 bytes), copied
  // to tensors[i].offset of the load's device values at upload.
  std::vector<std::span<const std::byte>> raw;
};

// Everything the engine uploads. Spans and bundle views point into the caller's mapped file and
// need to live only until engine::create returns.
struct host_weights {
  std::vector<floatzip::bundle_view> bundles;  // empty for uncompressed weights
  std::vector<host_load> blocks;               // one per layer
  host_load embedding;                         // [vocab, dim]
  host_load final_norm;                        // [dim]
  std::optional<host_load> output_head;        // [vocab, dim]; absent when tied to the embedding

  [[nodiscard]] bool compressed() const noexcept { return !bundles.empty(); }
};

struct run_stats {
  std::uint64_t forward_passes = 0;
  // Host wall time of whole forward passes: from the first launch until the logits are back in
  // host memory.
  double forward_seconds = 0;
  std::uint64_t decode_launches = 0;  // floatzip::decompress calls
  // GPU time between CUDA events recorded around each decompress launch, summed.
  double decode_seconds = 0;
};

class engine {
 public:
  // Uploads the weights and allocates every buffer the forward pass uses: device memory, the
  // cuBLAS handle and workspace, the stream, the timing events and the pinned logits. Checks the
  // tensors' sizes against `shape` first. Errors: errc::cuda_error naming the CUDA or cuBLAS call
  // that failed, errc::too_large when device memory runs out, errc::bad_data for weights that do
  // not fit the shape, errc::invalid_argument when there is no CUDA device.
  static floatzip::result<std::unique_ptr<engine>> create(const model_shape& shape,
                                                          const host_weights& weights);
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  // Runs `token` at `position` (0, 1, 2, ... in order, as transformer::forward) and returns the
  // logits, valid until the next call. The first pass also reads back each bundle's decode
  // status, so a stream whose codewords disagree with its metadata is reported as bad_data.
  floatzip::result<std::span<const float>> forward(int token, int position);

  // Runs forward(token, 0) once and clears the statistics: the first pass pays for loading the
  // kernels and cuBLAS's first calls, which a tokens/s figure should not include. Position 0 of
  // the KV cache is written again by the real first pass, so the warm-up leaves no trace.
  floatzip::error warm_up(int token);

  [[nodiscard]] const model_shape& config() const noexcept;
  [[nodiscard]] const run_stats& stats() const noexcept;
  [[nodiscard]] bool compressed() const noexcept;
  [[nodiscard]] const std::string& device_name() const noexcept;

  // Device memory, in bytes, by purpose.
  struct memory {
    std::uint64_t stored_weights = 0;  // bundles (compressed) or BF16 tensors (uncompressed)
    std::uint64_t decode_buffer = 0;   // the one reused BF16 buffer: the largest bundle; 0 if none
    std::uint64_t fp32_scratch = 0;    // one load's matrices widened to FP32, reused
    std::uint64_t activations = 0;     // KV cache, activations, logits
    std::uint64_t cublas_workspace = 0;
  };
  [[nodiscard]] const memory& device_memory() const noexcept;
  // How many times the decode buffer was allocated: 1 for compressed weights, 0 otherwise.
  [[nodiscard]] std::size_t decode_buffer_allocations() const noexcept;

 private:
  struct impl;
  explicit engine(std::unique_ptr<impl> state);
  std::unique_ptr<impl> impl_;
};

// Number of CUDA devices; 0 when there is none or no usable driver.
int device_count() noexcept;

}  // namespace llama::gpu
