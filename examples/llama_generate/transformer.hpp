// llama_generate: a Llama forward pass in float32 that streams its weights one transformer block
// at a time through a single reused buffer.
//
//   auto source = llama::safetensors_source::open("model.safetensors", config).value();
//   llama::transformer model(config, *source);      // allocates everything it will ever use
//   auto logits = model.forward(token, position);   // no allocation from here on
//
// The arithmetic follows llama2.c's run.c: RMSNorm, rotary embeddings, grouped-query attention
// over a KV cache, a SwiGLU MLP and a linear output head, all in float32 with the weights
// widened from their stored type as they are read. Every sum is taken in one fixed order that
// does not depend on where the weights came from, so two sources holding the same weight bits
// produce bit-identical logits.
#pragma once

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "floatzip/error.hpp"
#include "model_config.hpp"
#include "weight_source.hpp"

namespace llama {

// The engine's one buffer of decoded weights. It is allocated once, before the first forward
// pass, to the largest load the source will make; the count lets tests check that nothing
// re-allocates it.
class weight_buffer {
 public:
  void allocate(std::size_t values) {
    // At least one slot so data() is never null; value-initialised so no uninitialised read can
    // leak into a comparison.
    storage_ = std::make_unique<std::uint16_t[]>(values == 0 ? 1 : values);
    values_ = values;
    ++allocations_;
  }
  [[nodiscard]] std::span<std::uint16_t> values() noexcept { return {storage_.get(), values_}; }
  [[nodiscard]] std::size_t size_bytes() const noexcept { return values_ * sizeof(std::uint16_t); }
  [[nodiscard]] std::size_t allocations() const noexcept { return allocations_; }

 private:
  std::unique_ptr<std::uint16_t[]> storage_;
  std::size_t values_ = 0;
  std::size_t allocations_ = 0;
};

struct run_stats {
  std::uint64_t forward_passes = 0;
  std::uint64_t weight_loads = 0;  // load_block + load_tensor calls
  double forward_seconds = 0;      // whole forward passes, weight loads included
  double load_seconds = 0;         // inside load_block / load_tensor: decompression for .fzip
};

namespace detail {

// out[i] = sum_j w[i * cols + j] * x[j] for i < rows. Eight running partial sums, combined in a
// fixed tree at the end: a fixed order (so results do not depend on the caller) that the compiler
// can still keep in vector registers.
template <class Element, class Widen>
void matvec_rows(float* out, const Element* w, const float* x, std::size_t rows, std::size_t cols,
                 Widen widen) {
  constexpr std::size_t kLanes = 8;
  for (std::size_t i = 0; i < rows; ++i) {
    const Element* row = w + i * cols;
    float lane[kLanes] = {};
    std::size_t j = 0;
    for (; j + kLanes <= cols; j += kLanes)
      for (std::size_t l = 0; l < kLanes; ++l) lane[l] += widen(row[j + l]) * x[j + l];
    for (std::size_t l = 0; j < cols; ++j, ++l) lane[l] += widen(row[j]) * x[j];
    out[i] =
        ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  }
}

inline void matvec(float* out, const weight_view& w, const float* x, std::size_t rows,
                   std::size_t cols) {
  if (w.type == weight_type::bf16)
    matvec_rows(out, w.bf16(), x, rows, cols, [](std::uint16_t v) { return bf16_to_float(v); });
  else
    matvec_rows(out, w.f32(), x, rows, cols, [](float v) { return v; });
}

// llama2.c's RMSNorm: o = weight * (x / sqrt(mean(x^2) + eps)).
inline void rmsnorm(float* out, const float* x, const weight_view& weight, std::size_t size,
                    float eps) {
  float sum_squares = 0.0f;
  for (std::size_t j = 0; j < size; ++j) sum_squares += x[j] * x[j];
  const float scale = 1.0f / std::sqrt(sum_squares / static_cast<float>(size) + eps);
  for (std::size_t j = 0; j < size; ++j) out[j] = weight.at(j) * (scale * x[j]);
}

inline void softmax(float* x, std::size_t size) {
  float max_value = x[0];
  for (std::size_t i = 1; i < size; ++i) max_value = std::max(max_value, x[i]);
  float sum = 0.0f;
  for (std::size_t i = 0; i < size; ++i) {
    x[i] = std::exp(x[i] - max_value);
    sum += x[i];
  }
  for (std::size_t i = 0; i < size; ++i) x[i] /= sum;
}

}  // namespace detail

class transformer {
 public:
  // Allocates the decode buffer, the KV cache and the scratch vectors: every allocation the
  // engine makes. Throws std::bad_alloc when they do not fit.
  transformer(const model_config& config, weight_source& source)
      : config_(config), source_(source) {
    const auto dim = std::size_t(config.dim);
    const auto q_dim = std::size_t(config.n_heads) * std::size_t(config.head_size());
    const auto cache =
        std::size_t(config.n_layers) * std::size_t(config.seq_len) * std::size_t(config.kv_dim());
    buffer_.allocate(source.buffer_values());
    x_.resize(dim);
    xb_.resize(std::max(dim, q_dim));
    xb2_.resize(dim);
    q_.resize(q_dim);
    hb_.resize(std::size_t(config.hidden_dim));
    hb2_.resize(std::size_t(config.hidden_dim));
    attention_.resize(std::size_t(config.n_heads) * std::size_t(config.seq_len));
    key_cache_.resize(cache);
    value_cache_.resize(cache);
    rope_cos_.resize(std::size_t(config.head_size()) / 2);
    rope_sin_.resize(std::size_t(config.head_size()) / 2);
    // llama2.c's frequencies: pair i of a head turns at theta^(-2i / head_size) radians per
    // position.
    rope_frequency_.resize(std::size_t(config.head_size()) / 2);
    for (std::size_t i = 0; i < rope_frequency_.size(); ++i)
      rope_frequency_[i] =
          1.0f / std::pow(config.rope_theta,
                          static_cast<float>(2 * i) / static_cast<float>(config.head_size()));
    logits_.resize(std::size_t(config.vocab_size));
  }

  transformer(const transformer&) = delete;
  transformer& operator=(const transformer&) = delete;

  // Runs `token` at `position` (positions 0, 1, 2, ... in order: the KV cache holds the earlier
  // ones) and returns the logits over the vocabulary, valid until the next call.
  floatzip::result<std::span<const float>> forward(int token, int position) {
    using floatzip::errc;
    if (token < 0 || token >= config_.vocab_size)
      return floatzip::error{errc::invalid_argument, "forward: token " + std::to_string(token) +
                                                         " is outside the vocabulary"};
    if (position < 0 || position >= config_.seq_len)
      return floatzip::error{
          errc::invalid_argument,
          "forward: position " + std::to_string(position) + " is outside the KV cache"};
    const auto start = clock::now();
    if (floatzip::error e = run(token, position)) return e;
    stats_.forward_seconds += seconds_since(start);
    ++stats_.forward_passes;
    return std::span<const float>(logits_);
  }

  [[nodiscard]] const run_stats& stats() const noexcept { return stats_; }
  [[nodiscard]] const weight_buffer& buffer() const noexcept { return buffer_; }
  [[nodiscard]] const model_config& config() const noexcept { return config_; }
  [[nodiscard]] weight_source& source() const noexcept { return source_; }

 private:
  using clock = std::chrono::steady_clock;
  static double seconds_since(clock::time_point start) {
    return std::chrono::duration<double>(clock::now() - start).count();
  }

  floatzip::result<block_weights> load_block(int layer) {
    const auto start = clock::now();
    auto block = source_.load_block(layer, buffer_.values());
    stats_.load_seconds += seconds_since(start);
    ++stats_.weight_loads;
    resident_embedding_ = false;
    return block;
  }

  floatzip::result<weight_view> load_tensor(global_tensor which) {
    const auto start = clock::now();
    auto tensor = source_.load_tensor(which, buffer_.values());
    stats_.load_seconds += seconds_since(start);
    ++stats_.weight_loads;
    resident_embedding_ = which == global_tensor::embedding && tensor.has_value();
    return tensor;
  }

  floatzip::error run(int token, int position) {
    const auto dim = std::size_t(config_.dim);
    const auto head_size = std::size_t(config_.head_size());
    const auto kv_dim = std::size_t(config_.kv_dim());
    const auto q_dim = std::size_t(config_.n_heads) * head_size;
    const auto hidden = std::size_t(config_.hidden_dim);
    const auto seq_len = std::size_t(config_.seq_len);
    const auto pos = std::size_t(position);
    const std::size_t kv_group = std::size_t(config_.n_heads / config_.n_kv_heads);
    float* x = x_.data();

    // The embedding row. A tied head left the embedding in the buffer at the end of the previous
    // pass, so it is decoded once per token, not twice.
    if (!resident_embedding_) {
      auto embedding = load_tensor(global_tensor::embedding);
      if (!embedding) return embedding.error();
      embedding_ = *embedding;
    }
    for (std::size_t j = 0; j < dim; ++j) x[j] = embedding_.at(std::size_t(token) * dim + j);

    for (std::size_t turn = 0; turn < rope_cos_.size(); ++turn) {
      const float angle = static_cast<float>(position) * rope_frequency_[turn];
      rope_cos_[turn] = std::cos(angle);
      rope_sin_[turn] = std::sin(angle);
    }

    for (int layer = 0; layer < config_.n_layers; ++layer) {
      auto loaded = load_block(layer);
      if (!loaded) return loaded.error();
      const block_weights& w = *loaded;
      const std::size_t cache_offset = std::size_t(layer) * seq_len * kv_dim;
      float* key = key_cache_.data() + cache_offset + pos * kv_dim;
      float* value = value_cache_.data() + cache_offset + pos * kv_dim;

      // Attention.
      detail::rmsnorm(xb_.data(), x, w.attention_norm, dim, config_.rms_norm_eps);
      detail::matvec(q_.data(), w.wq, xb_.data(), q_dim, dim);
      detail::matvec(key, w.wk, xb_.data(), kv_dim, dim);
      detail::matvec(value, w.wv, xb_.data(), kv_dim, dim);
      rotate(q_.data(), config_.n_heads);
      rotate(key, config_.n_kv_heads);

      const float score_scale = 1.0f / std::sqrt(static_cast<float>(head_size));
      for (std::size_t h = 0; h < std::size_t(config_.n_heads); ++h) {
        const float* q = q_.data() + h * head_size;
        float* scores = attention_.data() + h * seq_len;
        const std::size_t kv_head_offset = (h / kv_group) * head_size;
        for (std::size_t t = 0; t <= pos; ++t) {
          const float* k = key_cache_.data() + cache_offset + t * kv_dim + kv_head_offset;
          float score = 0.0f;
          for (std::size_t i = 0; i < head_size; ++i) score += q[i] * k[i];
          scores[t] = score * score_scale;
        }
        detail::softmax(scores, pos + 1);
        float* mixed = xb_.data() + h * head_size;
        std::fill(mixed, mixed + head_size, 0.0f);
        for (std::size_t t = 0; t <= pos; ++t) {
          const float* v = value_cache_.data() + cache_offset + t * kv_dim + kv_head_offset;
          for (std::size_t i = 0; i < head_size; ++i) mixed[i] += scores[t] * v[i];
        }
      }
      detail::matvec(xb2_.data(), w.wo, xb_.data(), dim, q_dim);
      for (std::size_t j = 0; j < dim; ++j) x[j] += xb2_[j];

      // SwiGLU MLP: w2(silu(w1 x) * w3 x).
      detail::rmsnorm(xb_.data(), x, w.ffn_norm, dim, config_.rms_norm_eps);
      detail::matvec(hb_.data(), w.w1, xb_.data(), hidden, dim);
      detail::matvec(hb2_.data(), w.w3, xb_.data(), hidden, dim);
      for (std::size_t i = 0; i < hidden; ++i) {
        const float gate = hb_[i];
        hb_[i] = gate * (1.0f / (1.0f + std::exp(-gate))) * hb2_[i];
      }
      detail::matvec(xb_.data(), w.w2, hb_.data(), dim, hidden);
      for (std::size_t j = 0; j < dim; ++j) x[j] += xb_[j];
    }

    auto final_norm = load_tensor(global_tensor::final_norm);
    if (!final_norm) return final_norm.error();
    detail::rmsnorm(x, x, *final_norm, dim, config_.rms_norm_eps);

    const bool tied = !source_.has_output_head();
    auto head = load_tensor(tied ? global_tensor::embedding : global_tensor::output_head);
    if (!head) return head.error();
    if (tied) embedding_ = *head;
    detail::matvec(logits_.data(), *head, x, std::size_t(config_.vocab_size), dim);
    return {};
  }

  // Rotary embedding of `heads` heads of `vector` at the position whose angles are in rope_cos_ /
  // rope_sin_.
  void rotate(float* vector, int heads) const {
    const std::size_t head_size = std::size_t(config_.head_size());
    const std::size_t half = head_size / 2;
    for (std::size_t h = 0; h < std::size_t(heads); ++h) {
      float* head = vector + h * head_size;
      for (std::size_t turn = 0; turn < half; ++turn) {
        // adjacent: pair (2i, 2i+1), llama2.c; split_halves: pair (i, i + half), HF rotate_half.
        float& a = config_.rope == rope_pairing::adjacent ? head[2 * turn] : head[turn];
        float& b = config_.rope == rope_pairing::adjacent ? head[2 * turn + 1] : head[turn + half];
        const float a0 = a;
        const float b0 = b;
        a = a0 * rope_cos_[turn] - b0 * rope_sin_[turn];
        b = a0 * rope_sin_[turn] + b0 * rope_cos_[turn];
      }
    }
  }

  model_config config_;
  weight_source& source_;
  weight_buffer buffer_;
  run_stats stats_;
  bool resident_embedding_ = false;  // the buffer holds the embedding, as embedding_ shows it
  weight_view embedding_;

  std::vector<float> x_, xb_, xb2_, q_, hb_, hb2_, attention_, key_cache_, value_cache_;
  std::vector<float> rope_cos_, rope_sin_, rope_frequency_, logits_;
};

// Index of the largest logit; the first one on ties (as llama2.c).
inline int argmax(std::span<const float> logits) {
  std::size_t best = 0;
  for (std::size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<int>(best);
}

// Index of the first logit whose bit pattern differs between two runs (the first index past the
// shorter one when the lengths differ), or nullopt when they are bit-identical. Compares bits,
// not values: -0 and +0, or two NaNs, are differences here.
inline std::optional<std::size_t> first_bit_difference(std::span<const float> a,
                                                       std::span<const float> b) {
  const std::size_t common = std::min(a.size(), b.size());
  for (std::size_t i = 0; i < common; ++i)
    if (std::bit_cast<std::uint32_t>(a[i]) != std::bit_cast<std::uint32_t>(b[i])) return i;
  if (a.size() != b.size()) return common;
  return std::nullopt;
}

// Greedy decoding. Feeds prompt[0], prompt[1], ... (at least one token), then feeds back the
// argmax, until `new_tokens` tokens have been generated, the KV cache is full, or `stop_token`
// (when >= 0) comes out. Calls on_step(position, fed_token, logits) after every forward pass;
// a failed floatzip::error it returns stops the generation with that error. Returns the
// generated tokens (not the prompt). Model is a transformer, or anything with its forward() and
// config().seq_len (gpu::engine).
template <class Model, class OnStep>
floatzip::result<std::vector<int>> generate_greedy(Model& model, std::span<const int> prompt,
                                                   int new_tokens, int stop_token,
                                                   OnStep&& on_step) {
  if (prompt.empty())
    return floatzip::error{floatzip::errc::invalid_argument, "generate: the prompt is empty"};
  std::vector<int> generated;
  generated.reserve(std::size_t(std::max(new_tokens, 0)));
  int token = prompt[0];
  for (int position = 0; position < model.config().seq_len; ++position) {
    auto logits = model.forward(token, position);
    if (!logits) return logits.error();
    if (floatzip::error e = on_step(position, token, *logits)) return e;
    if (std::size_t(position) + 1 < prompt.size()) {
      token = prompt[std::size_t(position) + 1];
      continue;
    }
    if (static_cast<int>(generated.size()) >= new_tokens) break;
    token = argmax(*logits);
    if (token == stop_token) break;
    generated.push_back(token);
    if (static_cast<int>(generated.size()) >= new_tokens) break;
  }
  return generated;
}

}  // namespace llama
