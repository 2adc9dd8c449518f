// Llama-shaped BF16 checkpoints with heavy-tailed weights, for the demo and for benchmarks.
//
// Trained weights of large models have the exponent statistics of a heavy-tailed distribution
// at a per-matrix scale: 2.6-2.7 bits of exponent entropy, about 40 distinct exponents. Student-t
// samples at scales of 0.01-0.04 reproduce that. Generation is deterministic: the values depend
// only on the seed, the tensor and the position, not on the number of threads.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "floatzip/detail/parallel.hpp"
#include "floatzip/safetensors.hpp"

namespace floatzip::synthetic {

struct llama_shape {
  std::uint64_t dim = 0;
  std::uint64_t hidden = 0;  // MLP width
  std::uint64_t layers = 0;
  std::uint64_t vocab = 0;
  std::uint64_t heads = 0;
  std::uint64_t kv_heads = 0;
  std::uint64_t head_dim = 0;

  [[nodiscard]] std::uint64_t kv_dim() const { return kv_heads * head_dim; }
  [[nodiscard]] std::uint64_t values_per_layer() const {
    return 2 * dim * dim + 2 * dim * kv_dim() + 3 * dim * hidden + 2 * dim;
  }
  // Embedding and untied output head, plus the final norm.
  [[nodiscard]] std::uint64_t values_outside_layers() const { return 2 * vocab * dim + dim; }
  [[nodiscard]] std::uint64_t values() const {
    return values_outside_layers() + layers * values_per_layer();
  }
};

inline llama_shape make_shape(std::uint64_t dim, std::uint64_t vocab) {
  llama_shape s;
  s.dim = dim;
  s.head_dim = dim <= 1024 ? 64 : 128;
  s.heads = dim / s.head_dim;
  s.kv_heads = std::max<std::uint64_t>(1, s.heads / 4);  // grouped-query attention
  s.hidden = (dim * 7 / 2 + 255) / 256 * 256;            // Llama 3's 3.5x MLP
  s.vocab = vocab;
  s.layers = 1;
  return s;
}

// The widest Llama-like shape (dim 256..4096, vocab 32000) that fits `target_bytes` of BF16 with
// at least two layers, then as many layers as fill the target. Tiny targets shrink the vocab.
inline llama_shape choose_shape(std::uint64_t target_bytes) {
  const std::uint64_t target_values = std::max<std::uint64_t>(target_bytes / 2, 1);
  std::uint64_t dim = 4096;
  llama_shape s = make_shape(dim, 32000);
  while (dim > 256 && s.values_outside_layers() + 2 * s.values_per_layer() > target_values) {
    dim /= 2;
    s = make_shape(dim, 32000);
  }
  if (s.values_outside_layers() + s.values_per_layer() > target_values) {
    // Give the embedding and head a quarter of the budget.
    s.vocab = std::max<std::uint64_t>(64, target_values / 4 / (2 * dim) / 64 * 64);
  }
  const std::uint64_t left =
      target_values > s.values_outside_layers() ? target_values - s.values_outside_layers() : 0;
  s.layers = std::max<std::uint64_t>(1, (left + s.values_per_layer() / 2) / s.values_per_layer());
  return s;
}

struct tensor_plan {
  safetensors::tensor_spec spec;
  bool is_norm = false;
};

// Hugging Face Llama names, in the order a converter writes them.
inline std::vector<tensor_plan> llama_tensors(const llama_shape& s) {
  using safetensors::dtype;
  std::vector<tensor_plan> out;
  auto add = [&](std::string name, std::vector<std::uint64_t> shape, bool norm = false) {
    out.push_back({{std::move(name), dtype::bf16, std::move(shape)}, norm});
  };
  add("model.embed_tokens.weight", {s.vocab, s.dim});
  for (std::uint64_t l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {s.dim}, true);
    add(p + "self_attn.q_proj.weight", {s.dim, s.dim});
    add(p + "self_attn.k_proj.weight", {s.kv_dim(), s.dim});
    add(p + "self_attn.v_proj.weight", {s.kv_dim(), s.dim});
    add(p + "self_attn.o_proj.weight", {s.dim, s.dim});
    add(p + "post_attention_layernorm.weight", {s.dim}, true);
    add(p + "mlp.gate_proj.weight", {s.hidden, s.dim});
    add(p + "mlp.up_proj.weight", {s.hidden, s.dim});
    add(p + "mlp.down_proj.weight", {s.dim, s.hidden});
  }
  add("model.norm.weight", {s.dim}, true);
  add("lm_head.weight", {s.vocab, s.dim});
  return out;
}

// splitmix64: seeds the per-block generators from (seed, tensor, block).
inline std::uint64_t mix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// xoshiro256**: fast, good enough for synthetic weights.
class xoshiro256 {
 public:
  explicit xoshiro256(std::uint64_t seed) {
    for (auto& s : state_) s = seed = mix64(seed);
  }
  std::uint64_t next() {
    const std::uint64_t result = std::rotl(state_[1] * 5, 7) * 9;
    const std::uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = std::rotl(state_[3], 45);
    return result;
  }
  // Uniform in (-1, 1).
  double symmetric_unit() { return double(std::int64_t(next()) >> 11) * 0x1.0p-52; }

 private:
  std::uint64_t state_[4];
};

// Student-t with 4 degrees of freedom by Bailey's polar method: heavy tails (finite variance,
// infinite kurtosis), and for nu = 4 the method's w^(-2/nu) is 1/sqrt(w), so a sample costs two
// square roots instead of a pow.
inline double student_t4(xoshiro256& rng) {
  for (;;) {
    const double u = rng.symmetric_unit();
    const double v = rng.symmetric_unit();
    const double w = u * u + v * v;
    if (w >= 1.0 || w == 0.0) continue;
    return u * std::sqrt(4.0 * (1.0 / std::sqrt(w) - 1.0) / w);
  }
}

// Round to nearest even, as frameworks convert FP32 to BF16.
inline std::uint16_t to_bf16(float f) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
  return static_cast<std::uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

inline constexpr double kDegreesOfFreedom = 4.0;

// The per-matrix scale of tensor `index`: in [0.01, 0.04], fixed by the seed.
inline double matrix_scale(std::uint64_t seed, std::uint64_t index) {
  return 0.01 + 0.03 * double(mix64(seed ^ mix64(index)) >> 11) * 0x1.0p-53;
}

// Fills tensor `index` of a checkpoint. Norm weights sit near 1, as trained RMSNorm gains do.
inline void fill_tensor(std::span<std::uint16_t> out, std::uint64_t seed, std::uint64_t index,
                        bool is_norm, unsigned threads) {
  constexpr std::uint64_t kBlock = 1u << 20;
  const std::uint64_t blocks = (out.size() + kBlock - 1) / kBlock;
  const double scale = is_norm ? 0.05 : matrix_scale(seed, index);
  const double offset = is_norm ? 1.0 : 0.0;
  detail::parallel_for(blocks, detail::resolve_threads(threads), [&](std::size_t b) {
    xoshiro256 rng(mix64(seed) ^ mix64(index * 0x100000001B3ull + b));
    const std::uint64_t end = std::min<std::uint64_t>(out.size(), (b + 1) * kBlock);
    for (std::uint64_t i = b * kBlock; i < end; ++i)
      out[i] = to_bf16(float(offset + scale * student_t4(rng)));
  });
}

// Writes the checkpoint as a safetensors file. `keep_going` is asked before each tensor; an
// error from it abandons the file (nothing is left behind).
inline error write_llama_checkpoint(const std::filesystem::path& path, const llama_shape& shape,
                                    std::uint64_t seed, unsigned threads,
                                    const std::function<error()>& keep_going = {}) {
  const auto plan = llama_tensors(shape);
  std::vector<safetensors::tensor_spec> specs;
  for (const auto& t : plan) specs.push_back(t.spec);
  const std::vector<std::pair<std::string, std::string>> metadata = {
      {"format", "pt"},
      {"generator", "floatzip demo: Student-t weights (nu = 4), per-matrix scales 0.01-0.04"},
      {"seed", std::to_string(seed)}};
  return safetensors::write_file(path, specs, metadata,
                                 [&](std::size_t i, std::span<std::byte> bytes) -> error {
                                   if (keep_going)
                                     if (error e = keep_going()) return e;
                                   std::vector<std::uint16_t> values(bytes.size() / 2);
                                   fill_tensor(values, seed, i, plan[i].is_norm, threads);
                                   std::memcpy(bytes.data(), values.data(), bytes.size());
                                   return {};
                                 });
}

}  // namespace floatzip::synthetic
