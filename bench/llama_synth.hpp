// floatzip benchmarks: synthetic Llama-shaped checkpoints of any size.
//
//   auto ckpt = floatzip::bench::make_llama_checkpoint(256 << 20, /*seed=*/42);
//   for (const auto& block : ckpt.blocks) {             // one bundle each, as the container groups
//     auto bundle = floatzip::compress_bundle(block.spans());
//   }
//
// Why synthetic: the real models in ../shared/models hold under a million weights each, too few to
// time a codec meant for multi-gigabyte checkpoints. Trained weights of large Llama models have
// heavy-tailed, roughly Student-t distributed entries whose exponent byte carries 2.6-2.7 bits of
// entropy; what matters for floatzip is that exponent histogram and the near-uniform sign/mantissa
// byte, both of which Student-t (nu = 5) samples at per-matrix scales of 0.01-0.04 reproduce.
//
// Shape: Llama-7B's proportions (hidden 4096, MLP 11008, 32 layers, vocabulary 32000 = 7.8 x
// hidden, untied lm_head) with the hidden size scaled so the checkpoint holds at least the
// requested bytes of BF16. Tensor names and shapes follow the Hugging Face Llama layout.
//
// Speed: values come from a counter-based generator (splitmix64 of seed and index), so any slice
// of any tensor can be generated on any thread with the same result; a Student-t sample is one
// look-up in an inverse-CDF table with linear interpolation (the far tail, 1 draw in 8192, is
// inverted exactly). 256 MB take about a second per core.
//
// Depends only on the standard library, so examples (the demo command) can include it as well.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numbers>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace floatzip::bench {

// fp32 -> bf16 bit pattern, round to nearest, ties to even (as PyTorch and the model converters
// do). NaNs keep a set mantissa bit so they stay NaN.
inline std::uint16_t f32_to_bf16_rne(float f) noexcept {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x40u);
  const std::uint32_t rounding_bias = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>((bits + rounding_bias) >> 16);
}

// splitmix64's finaliser: a bijective 64-bit mix whose outputs for consecutive inputs pass
// BigCrush, so hash(key + i * golden) is a random stream indexable by i.
inline std::uint64_t splitmix64_mix(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
inline constexpr std::uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ull;

// Samples of |T| for Student's t with 5 degrees of freedom, by inverse transform.
//
// For odd nu the CDF has a closed form; for nu = 5, with phi = atan(sqrt(5) / x), the survival
// function of |T| is
//     S(x) = P(|T| > x) = (2 / pi) * (phi - sin(phi) cos(phi) (1 + 2/3 sin^2(phi))),
// increasing in phi from 0 (x = inf) to 1 (phi = pi/2, x = 0). It is inverted by bisection in
// phi, which is robust and only runs when the table is built and for tail draws.
class student_t5_sampler {
 public:
  static constexpr int kTableBits = 13;
  static constexpr std::size_t kBins = std::size_t{1} << kTableBits;

  student_t5_sampler() {
    // quantile_[i] = |T| quantile at probability i / kBins; the last bin [kBins-1, kBins) has an
    // infinite upper end and is sampled exactly by tail().
    for (std::size_t i = 0; i < kBins; ++i) {
      quantile_[i] = static_cast<float>(inverse_survival(1.0 - static_cast<double>(i) / kBins));
    }
  }

  // |T| from 64 random bits (the top bit is left for the caller's sign).
  [[nodiscard]] float magnitude(std::uint64_t r) const noexcept {
    const std::size_t bin = static_cast<std::size_t>((r >> (63 - kTableBits)) & (kBins - 1));
    if (bin == kBins - 1) [[unlikely]] {
      // Survival probability uniform in (0, 1/kBins]: 50 random bits are plenty.
      const double u = static_cast<double>((r & ((std::uint64_t{1} << 50) - 1)) + 1) * 0x1p-50;
      return static_cast<float>(inverse_survival(u / static_cast<double>(kBins)));
    }
    // Uniform position inside the bin from the next 32 bits. Linear interpolation treats the
    // density as flat across a bin of probability 1/8192, which no histogram can tell apart.
    const float frac = static_cast<float>((r >> (31 - kTableBits)) & 0xFFFFFFFFu) * 0x1p-32f;
    const float lo = quantile_[bin];
    return lo + (quantile_[bin + 1] - lo) * frac;
  }

  // x with P(|T| > x) = q, for q in (0, 1].
  static double inverse_survival(double q) noexcept {
    if (q >= 1.0) return 0.0;
    double lo = 0.0;  // phi: S grows with phi
    double hi = std::numbers::pi / 2;
    for (int it = 0; it < 80; ++it) {
      const double mid = 0.5 * (lo + hi);
      (survival_of_phi(mid) < q ? lo : hi) = mid;
    }
    const double phi = 0.5 * (lo + hi);
    return std::sqrt(5.0) / std::tan(phi);
  }

  static double survival_of_phi(double phi) noexcept {
    const double s = std::sin(phi);
    const double c = std::cos(phi);
    return (2.0 / std::numbers::pi) * (phi - s * c * (1.0 + (2.0 / 3.0) * s * s));
  }

 private:
  std::array<float, kBins> quantile_{};
};

inline const student_t5_sampler& shared_student_t5_sampler() {
  static const student_t5_sampler sampler;
  return sampler;
}

// Fills out[i] with bf16(center + scale * t_i), t_i ~ Student-t(5), where value i depends only on
// (seed, first_index + i): slices generated separately equal the whole generated at once.
inline void fill_student_t_bf16(std::span<std::uint16_t> out, float center, float scale,
                                std::uint64_t seed, std::uint64_t first_index = 0) {
  const student_t5_sampler& sampler = shared_student_t5_sampler();
  const std::uint64_t key = splitmix64_mix(seed ^ 0x6A09E667F3BCC909ull);
  std::uint64_t counter = key + (first_index + 1) * kGoldenGamma;
  for (std::uint16_t& value : out) {
    const std::uint64_t r = splitmix64_mix(counter);
    counter += kGoldenGamma;
    const float magnitude = scale * sampler.magnitude(r);
    value = f32_to_bf16_rne(center + ((r >> 63) != 0 ? -magnitude : magnitude));
  }
}

// Llama dimensions. Parameter count: layers * (4 h^2 + 3 h m + 2 h) + 2 v h + h.
struct llama_dims {
  std::uint64_t hidden = 0;
  std::uint64_t intermediate = 0;
  std::uint64_t layers = 0;
  std::uint64_t vocab = 0;

  [[nodiscard]] std::uint64_t layer_value_count() const noexcept {
    return 4 * hidden * hidden + 3 * hidden * intermediate + 2 * hidden;
  }
  [[nodiscard]] std::uint64_t value_count() const noexcept {
    return layers * layer_value_count() + 2 * vocab * hidden + hidden;
  }
};

// Llama-7B proportions scaled to at least target_bytes of BF16. Sizes are multiples of 32 as in
// real models (GPU-friendly tiles). Small targets drop layers before shrinking the hidden size
// below 128, so every matrix stays a matrix.
inline llama_dims llama_dims_for_bytes(std::uint64_t target_bytes) {
  constexpr double kMlpRatio = 11008.0 / 4096.0;
  constexpr double kVocabRatio = 32000.0 / 4096.0;
  auto round_up_32 = [](double x) {
    return std::max<std::uint64_t>(32, (static_cast<std::uint64_t>(std::ceil(x)) + 31) / 32 * 32);
  };
  auto dims_for = [&](std::uint64_t layers, std::uint64_t hidden) {
    return llama_dims{hidden, round_up_32(kMlpRatio * static_cast<double>(hidden)), layers,
                      round_up_32(kVocabRatio * static_cast<double>(hidden))};
  };
  const double target_values = static_cast<double>(target_bytes) / 2.0;
  std::uint64_t layers = 32;
  // Values per hidden^2 ~ layers * (4 + 3 * 2.6875) + 2 * 7.8125.
  auto hidden_estimate = [&](std::uint64_t l) {
    const double per_h2 = static_cast<double>(l) * (4.0 + 3.0 * kMlpRatio) + 2.0 * kVocabRatio;
    return std::sqrt(target_values / per_h2);
  };
  while (layers > 1 && hidden_estimate(layers) < 128.0) layers /= 2;
  std::uint64_t hidden = round_up_32(hidden_estimate(layers));
  // Rounding is upward already; step up in the rare case the estimate undershoots.
  while (dims_for(layers, hidden).value_count() * 2 < target_bytes) hidden += 32;
  // Step down while a smaller size still meets the target, to stay close to it.
  while (hidden > 32 && dims_for(layers, hidden - 32).value_count() * 2 >= target_bytes) {
    hidden -= 32;
  }
  return dims_for(layers, hidden);
}

struct synthetic_tensor {
  std::string name;  // Hugging Face Llama name, e.g. model.layers.0.mlp.up_proj.weight
  std::vector<std::uint64_t> shape;   // row-major, as safetensors stores it
  std::vector<std::uint16_t> values;  // BF16 bit patterns
  float scale = 0;                    // Student-t scale the values were drawn with
};

// Tensors that floatzip compresses as one bundle: every tensor of one transformer block
// ("model.layers.N."), or a single tensor outside the blocks.
struct synthetic_block {
  std::string name;  // "model.layers.N", or the tensor's name
  std::vector<synthetic_tensor> tensors;

  [[nodiscard]] std::vector<std::span<const std::uint16_t>> spans() const {
    std::vector<std::span<const std::uint16_t>> result;
    result.reserve(tensors.size());
    for (const auto& t : tensors) result.emplace_back(t.values);
    return result;
  }
  [[nodiscard]] std::uint64_t value_count() const noexcept {
    std::uint64_t n = 0;
    for (const auto& t : tensors) n += t.values.size();
    return n;
  }
};

struct llama_checkpoint {
  llama_dims dims;
  std::uint64_t seed = 0;
  // In file order: embed_tokens, layers 0 .. L-1, norm, lm_head.
  std::vector<synthetic_block> blocks;

  [[nodiscard]] std::uint64_t value_count() const noexcept {
    std::uint64_t n = 0;
    for (const auto& b : blocks) n += b.value_count();
    return n;
  }
  [[nodiscard]] std::uint64_t size_bytes() const noexcept { return value_count() * 2; }
};

namespace detail {

// Per-matrix scale, log-uniform in [0.01, 0.04], drawn from the tensor's own seed.
inline float matrix_scale(std::uint64_t tensor_seed) noexcept {
  const double u = static_cast<double>(splitmix64_mix(tensor_seed ^ 0x5CA1E) >> 11) * 0x1p-53;
  return static_cast<float>(0.01 * std::exp2(2.0 * u));
}

}  // namespace detail

// Everything that fixes one generated tensor's values: bf16(center + scale * t), t drawn from
// `seed`. A writer that streams a checkpoint tensor by tensor (the CLI's demo) fills each one from
// its plan without holding the whole checkpoint in memory.
struct llama_tensor_plan {
  std::string block;  // the bundle it belongs to: "model.layers.N", or the tensor's own name
  std::string name;   // Hugging Face Llama name, e.g. model.layers.0.mlp.up_proj.weight
  std::vector<std::uint64_t> shape;  // row-major, as safetensors stores it
  float center = 0;                  // 0.3 for RMSNorm gains, 0 for matrices
  float scale = 0;
  std::uint64_t seed = 0;

  [[nodiscard]] std::uint64_t value_count() const noexcept {
    std::uint64_t n = 1;
    for (auto s : shape) n *= s;
    return n;
  }
  // Values first_index .. first_index + out.size() - 1 of the tensor: any slice, on any thread.
  void fill(std::span<std::uint16_t> out, std::uint64_t first_index = 0) const {
    fill_student_t_bf16(out, center, scale, seed, first_index);
  }
};

// The tensors of the checkpoint make_llama_checkpoint(dims, seed) generates, in file order:
// embed_tokens, layers 0 .. L-1, norm, lm_head. Matrices: Student-t(5) at a per-matrix scale in
// [0.01, 0.04]. RMSNorm gains: 0.3 + 0.05 t, positive and concentrated like trained gains.
inline std::vector<llama_tensor_plan> llama_tensor_plans(const llama_dims& d, std::uint64_t seed) {
  std::vector<llama_tensor_plan> plans;
  plans.reserve(d.layers * 9 + 3);
  std::uint64_t tensor_index = 0;
  auto add = [&](const std::string& block, std::string name, std::vector<std::uint64_t> shape,
                 bool is_norm) {
    const std::uint64_t tensor_seed = splitmix64_mix(seed + ++tensor_index * kGoldenGamma);
    plans.push_back({block, std::move(name), std::move(shape), is_norm ? 0.3f : 0.0f,
                     is_norm ? 0.05f : detail::matrix_scale(tensor_seed), tensor_seed});
  };
  add("model.embed_tokens.weight", "model.embed_tokens.weight", {d.vocab, d.hidden}, false);
  for (std::uint64_t layer = 0; layer < d.layers; ++layer) {
    const std::string block = "model.layers." + std::to_string(layer);
    const std::string p = block + ".";
    add(block, p + "input_layernorm.weight", {d.hidden}, true);
    add(block, p + "self_attn.q_proj.weight", {d.hidden, d.hidden}, false);
    add(block, p + "self_attn.k_proj.weight", {d.hidden, d.hidden}, false);
    add(block, p + "self_attn.v_proj.weight", {d.hidden, d.hidden}, false);
    add(block, p + "self_attn.o_proj.weight", {d.hidden, d.hidden}, false);
    add(block, p + "post_attention_layernorm.weight", {d.hidden}, true);
    add(block, p + "mlp.gate_proj.weight", {d.intermediate, d.hidden}, false);
    add(block, p + "mlp.up_proj.weight", {d.intermediate, d.hidden}, false);
    add(block, p + "mlp.down_proj.weight", {d.hidden, d.intermediate}, false);
  }
  add("model.norm.weight", "model.norm.weight", {d.hidden}, true);
  add("lm_head.weight", "lm_head.weight", {d.vocab, d.hidden}, false);
  return plans;
}

// Generates a Llama-shaped checkpoint of at least target_bytes BF16 bytes (see
// llama_dims_for_bytes) from `seed`, the tensors of llama_tensor_plans; the same arguments give
// the same bits on every machine and for any thread count. threads = 0 uses all cores.
inline llama_checkpoint make_llama_checkpoint(std::uint64_t target_bytes, std::uint64_t seed,
                                              unsigned threads = 0) {
  llama_checkpoint ckpt;
  ckpt.seed = seed;
  ckpt.dims = llama_dims_for_bytes(target_bytes);
  const std::vector<llama_tensor_plan> plans = llama_tensor_plans(ckpt.dims, seed);

  // Plans of one block are consecutive.
  ckpt.blocks.reserve(ckpt.dims.layers + 3);
  for (const llama_tensor_plan& plan : plans) {
    if (ckpt.blocks.empty() || ckpt.blocks.back().name != plan.block) {
      ckpt.blocks.emplace_back().name = plan.block;
    }
    synthetic_tensor& t = ckpt.blocks.back().tensors.emplace_back();
    t.name = plan.name;
    t.shape = plan.shape;
    t.values.resize(plan.value_count());
    t.scale = plan.scale;
  }

  // Slices of 1 Mi values handed out dynamically; the counter-based generator makes the result
  // independent of which thread fills which slice. Pointers are stable: every vector has its
  // final size.
  constexpr std::uint64_t kSlice = std::uint64_t{1} << 20;
  struct slice {
    const llama_tensor_plan* plan;
    std::uint16_t* out;
    std::uint64_t first;
    std::uint64_t count;
  };
  std::vector<slice> slices;
  std::size_t p = 0;
  for (auto& b : ckpt.blocks) {
    for (auto& t : b.tensors) {
      const llama_tensor_plan& plan = plans[p++];
      const std::uint64_t n = t.values.size();
      for (std::uint64_t first = 0; first < n; first += kSlice) {
        slices.push_back({&plan, t.values.data() + first, first, std::min(kSlice, n - first)});
      }
    }
  }
  (void)shared_student_t5_sampler();  // build the table once, before the workers race for it
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    for (std::size_t i = next.fetch_add(1); i < slices.size(); i = next.fetch_add(1)) {
      const slice& s = slices[i];
      s.plan->fill(std::span<std::uint16_t>(s.out, s.count), s.first);
    }
  };
  std::vector<std::jthread> pool;
  for (unsigned i = 1; i < std::min<std::size_t>(threads, slices.size()); ++i) {
    pool.emplace_back(worker);
  }
  worker();
  return ckpt;
}

}  // namespace floatzip::bench
