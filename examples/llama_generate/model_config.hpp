// llama_generate: the shape of a Llama-architecture model, read from its config JSON.
//
// Two spellings are accepted, so the example runs both the llama2.c-derived test models and
// Hugging Face checkpoints:
//   llama2.c style  dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len,
//                   tied_embeddings
//   Hugging Face    hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
//                   num_key_value_heads, vocab_size, max_position_embeddings, tie_word_embeddings
// plus rms_norm_eps and rope_theta in both. The config is untrusted: every field is checked, and
// the sizes are bounded so that a hostile config cannot make the KV cache allocation explode.
#pragma once

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "floatzip/detail/file_io.hpp"
#include "floatzip/error.hpp"

namespace llama {

// How rotary embeddings pair up the dimensions of a head.
enum class rope_pairing {
  // llama2.c / Meta: dimensions (2i, 2i+1) rotate together.
  adjacent,
  // Hugging Face rotate_half: dimensions (i, i + head_size/2) rotate together. HF checkpoints
  // converted from Meta weights permute the rows of q_proj and k_proj so that this gives the same
  // result as `adjacent` on the original weights.
  split_halves,
};

struct model_config {
  int dim = 0;         // residual stream width
  int hidden_dim = 0;  // SwiGLU inner width
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;  // grouped-query attention: n_heads is a multiple of this
  int vocab_size = 0;
  int seq_len = 0;  // KV cache length: the most positions a generation can use
  bool tied_embeddings = true;
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  rope_pairing rope = rope_pairing::adjacent;

  [[nodiscard]] int head_size() const noexcept { return dim / n_heads; }
  [[nodiscard]] int kv_dim() const noexcept { return head_size() * n_kv_heads; }
};

namespace detail {

inline constexpr std::uint64_t kMaxConfigBytes = 1 << 20;
// Bounds a config must stay inside: far above any released Llama, far below sizes whose KV cache
// or scratch buffers would not fit a machine.
inline constexpr std::int64_t kMaxWidth = 1 << 17;
inline constexpr std::int64_t kMaxLayers = 1 << 10;
inline constexpr std::int64_t kMaxVocab = 1 << 22;
inline constexpr std::int64_t kMaxSeqLen = 1 << 20;
inline constexpr std::uint64_t kMaxKvCacheBytes = std::uint64_t{16} << 30;

// The first of `keys` present in `object`, or nullptr.
inline const nlohmann::json* find_any(const nlohmann::json& object,
                                      std::initializer_list<std::string_view> keys) {
  for (std::string_view key : keys) {
    const auto it = object.find(std::string(key));
    if (it != object.end()) return &*it;
  }
  return nullptr;
}

inline std::string key_names(std::initializer_list<std::string_view> keys) {
  std::string names;
  for (std::string_view key : keys) {
    if (!names.empty()) names += "' or '";
    names += key;
  }
  return "'" + names + "'";
}

}  // namespace detail

// Parses a config from JSON text. `where` names the file in error messages.
inline floatzip::result<model_config> parse_model_config(std::string_view text,
                                                         std::string_view where) {
  using floatzip::errc;
  using floatzip::error;
  const std::string file(where);
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    return error{errc::bad_data, file + ": invalid JSON: " + e.what()};
  }
  if (!json.is_object()) return error{errc::bad_data, file + ": JSON is not an object"};

  model_config config;
  const auto read_int = [&](std::initializer_list<std::string_view> keys, std::int64_t max,
                            int& out, bool required) -> error {
    const nlohmann::json* value = detail::find_any(json, keys);
    if (value == nullptr) {
      if (!required) return {};
      return {errc::bad_data, file + ": field " + detail::key_names(keys) + " is missing"};
    }
    if (!value->is_number_integer() || value->get<std::int64_t>() < 1 ||
        value->get<std::int64_t>() > max)
      return {errc::bad_data, file + ": field " + detail::key_names(keys) +
                                  " is not an integer in [1, " + std::to_string(max) + "]"};
    out = static_cast<int>(value->get<std::int64_t>());
    return {};
  };
  const auto read_float = [&](std::initializer_list<std::string_view> keys, float& out) -> error {
    const nlohmann::json* value = detail::find_any(json, keys);
    if (value == nullptr) return {};  // the default
    if (!value->is_number() || !(value->get<double>() > 0.0) || value->get<double>() > 1e12)
      return {errc::bad_data,
              file + ": field " + detail::key_names(keys) + " is not a positive number"};
    out = static_cast<float>(value->get<double>());
    return {};
  };

  if (const nlohmann::json* arch = detail::find_any(json, {"architecture", "model_type"});
      arch != nullptr && (!arch->is_string() || arch->get<std::string>() != "llama"))
    return error{errc::bad_data, file + ": field 'architecture' is not \"llama\""};
  if (error e = read_int({"dim", "hidden_size"}, detail::kMaxWidth, config.dim, true)) return e;
  if (error e = read_int({"hidden_dim", "intermediate_size"}, detail::kMaxWidth * 8,
                         config.hidden_dim, true))
    return e;
  if (error e =
          read_int({"n_layers", "num_hidden_layers"}, detail::kMaxLayers, config.n_layers, true))
    return e;
  if (error e =
          read_int({"n_heads", "num_attention_heads"}, detail::kMaxWidth, config.n_heads, true))
    return e;
  config.n_kv_heads = config.n_heads;
  if (error e = read_int({"n_kv_heads", "num_key_value_heads"}, detail::kMaxWidth,
                         config.n_kv_heads, false))
    return e;
  if (error e = read_int({"vocab_size"}, detail::kMaxVocab, config.vocab_size, true)) return e;
  if (error e = read_int({"seq_len", "max_position_embeddings"}, detail::kMaxSeqLen, config.seq_len,
                         true))
    return e;
  if (const nlohmann::json* tied =
          detail::find_any(json, {"tied_embeddings", "tie_word_embeddings"})) {
    if (!tied->is_boolean())
      return error{errc::bad_data, file + ": field 'tied_embeddings' is not a boolean"};
    config.tied_embeddings = tied->get<bool>();
  }
  if (error e = read_float({"rms_norm_eps", "norm_eps"}, config.rms_norm_eps)) return e;
  if (error e = read_float({"rope_theta"}, config.rope_theta)) return e;

  if (config.dim % config.n_heads != 0 || config.head_size() % 2 != 0)
    return error{errc::bad_data, file + ": field 'dim' (" + std::to_string(config.dim) +
                                     ") is not n_heads (" + std::to_string(config.n_heads) +
                                     ") times an even head size"};
  if (config.n_kv_heads > config.n_heads || config.n_heads % config.n_kv_heads != 0)
    return error{errc::bad_data, file + ": field 'n_kv_heads' (" +
                                     std::to_string(config.n_kv_heads) + ") does not divide " +
                                     "n_heads (" + std::to_string(config.n_heads) + ")"};
  const std::uint64_t kv_cache_bytes = 2 * sizeof(float) * std::uint64_t(config.n_layers) *
                                       std::uint64_t(config.seq_len) *
                                       std::uint64_t(config.kv_dim());
  if (kv_cache_bytes > detail::kMaxKvCacheBytes)
    return error{errc::too_large, file +
                                      ": fields 'n_layers', 'seq_len' and 'n_kv_heads' ask for " +
                                      std::to_string(kv_cache_bytes) + " bytes of KV cache"};
  return config;
}

inline floatzip::result<model_config> load_model_config(const std::filesystem::path& path) {
  auto text = floatzip::detail::read_small_file(path, detail::kMaxConfigBytes);
  if (!text) return text.error();
  return parse_model_config(*text, path.string());
}

}  // namespace llama
