// llama_generate: greedy text generation from a Llama model stored as .fzip (or .safetensors),
// decompressing one transformer block at a time into one reused buffer.
//
//   llama_generate MODEL --config CONFIG.json (--tokenizer TOKENIZER --prompt TEXT | --tokens IDS)
//                  [--steps N] [--verify ORIGINAL.safetensors] [--threads N]
//                  [--rope adjacent|split-halves] [--device cpu|gpu]
//
// MODEL is a .fzip container or a safetensors file (told apart by their first bytes). With
// --verify, the uncompressed ORIGINAL runs beside it, step by step, and the program exits with
// status 1 unless every logit of every step is bit-identical.
//
// --device gpu (builds with CUDA only, gpu_engine.cu) runs the forward pass on the GPU: each
// block's bundle is decompressed on the device into one reused buffer just before the block runs.
// With --verify, the uncompressed weights run on the GPU beside it (bit-identical logits
// required, and their tokens/s printed for comparison) and on the CPU (same greedy tokens
// required, logits within a tolerance).
#include <fmt/core.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fzip_source.hpp"
#ifdef LLAMA_GENERATE_GPU
#include "gpu_engine.hpp"
#include "gpu_weights.hpp"
#endif
#include "model_config.hpp"
#include "tokenizer.hpp"
#include "transformer.hpp"
#include "weight_source.hpp"

namespace {

constexpr int kExitMismatch = 1;
constexpr int kExitUsage = 2;

struct options {
  std::filesystem::path model;
  std::filesystem::path config;
  std::optional<std::filesystem::path> tokenizer;
  std::optional<std::string> prompt;
  std::optional<std::vector<int>> tokens;
  int steps = 256;
  std::optional<std::filesystem::path> verify;
  unsigned threads = 1;
  llama::rope_pairing rope = llama::rope_pairing::adjacent;
  bool gpu = false;
};

void print_usage(std::FILE* out) {
  fmt::print(
      out,
      "usage: llama_generate MODEL --config CONFIG.json\n"
      "                      (--tokenizer TOKENIZER --prompt TEXT | --tokens ID,ID,...)\n"
      "                      [--steps N] [--verify ORIGINAL.safetensors] [--threads N]\n"
      "                      [--rope adjacent|split-halves] [--device cpu|gpu]\n"
      "\n"
      "  MODEL      .fzip container or .safetensors file with Hugging Face Llama names\n"
      "  --steps    tokens to generate after the prompt (default 256; generation also\n"
      "             stops at the end of the KV cache, and at BOS when a tokenizer is used)\n"
      "  --tokens   fixed prompt token ids, for models without a tokenizer (no BOS added)\n"
      "  --verify   also run this uncompressed model; exit 1 unless all logits of all\n"
      "             steps are bit-identical\n"
      "  --threads  CPU threads per bundle decode (default 1)\n"
      "  --rope     rotary pairing: adjacent dims (2i, 2i+1) as llama2.c (default), or\n"
      "             split-halves (i, i + head_size/2) as Hugging Face rotate_half\n"
      "  --device   cpu (default) or gpu: decompress each block on the GPU and run it\n"
      "             there; with --verify, also the uncompressed weights on the GPU (logits\n"
      "             bit-identical) and on the CPU (same tokens, logits within a tolerance)\n");
}

bool parse_int(std::string_view text, long long min, long long max, long long& out) {
  if (text.empty()) return false;
  long long value = 0;
  std::size_t i = 0;
  const bool negative = text[0] == '-';
  if (negative) ++i;
  if (i == text.size()) return false;
  for (; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
    value = value * 10 + (text[i] - '0');
    if (value > (1LL << 40)) return false;
  }
  out = negative ? -value : value;
  return out >= min && out <= max;
}

// Returns the options, or an error message.
std::optional<options> parse_arguments(int argc, char** argv, std::string& problem) {
  options opts;
  bool have_model = false;
  bool have_config = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const auto value = [&]() -> std::optional<std::string_view> {
      if (i + 1 >= argc) {
        problem = std::string(arg) + " needs a value";
        return std::nullopt;
      }
      return std::string_view(argv[++i]);
    };
    if (arg == "--config") {
      auto v = value();
      if (!v) return std::nullopt;
      opts.config = *v;
      have_config = true;
    } else if (arg == "--tokenizer") {
      auto v = value();
      if (!v) return std::nullopt;
      opts.tokenizer = std::filesystem::path(*v);
    } else if (arg == "--prompt") {
      auto v = value();
      if (!v) return std::nullopt;
      opts.prompt = std::string(*v);
    } else if (arg == "--tokens") {
      auto v = value();
      if (!v) return std::nullopt;
      std::vector<int> ids;
      std::string_view list = *v;
      while (!list.empty()) {
        const std::size_t comma = list.find(',');
        long long id = 0;
        if (!parse_int(list.substr(0, comma), 0, 1 << 30, id)) {
          problem = "--tokens: '" + std::string(list.substr(0, comma)) + "' is not a token id";
          return std::nullopt;
        }
        ids.push_back(static_cast<int>(id));
        list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
      }
      if (ids.empty()) {
        problem = "--tokens: no token ids";
        return std::nullopt;
      }
      opts.tokens = std::move(ids);
    } else if (arg == "--steps") {
      auto v = value();
      long long steps = 0;
      if (!v) return std::nullopt;
      if (!parse_int(*v, 0, 1 << 24, steps)) {
        problem = "--steps: '" + std::string(*v) + "' is not a count in [0, 16777216]";
        return std::nullopt;
      }
      opts.steps = static_cast<int>(steps);
    } else if (arg == "--verify") {
      auto v = value();
      if (!v) return std::nullopt;
      opts.verify = std::filesystem::path(*v);
    } else if (arg == "--threads") {
      auto v = value();
      long long threads = 0;
      if (!v) return std::nullopt;
      if (!parse_int(*v, 0, 1024, threads)) {
        problem = "--threads: '" + std::string(*v) + "' is not a count in [0, 1024]";
        return std::nullopt;
      }
      opts.threads = static_cast<unsigned>(threads);
    } else if (arg == "--rope") {
      auto v = value();
      if (!v) return std::nullopt;
      if (*v == "adjacent") {
        opts.rope = llama::rope_pairing::adjacent;
      } else if (*v == "split-halves") {
        opts.rope = llama::rope_pairing::split_halves;
      } else {
        problem = "--rope: expected 'adjacent' or 'split-halves'";
        return std::nullopt;
      }
    } else if (arg == "--device") {
      auto v = value();
      if (!v) return std::nullopt;
      if (*v == "cpu" || *v == "gpu") {
        opts.gpu = *v == "gpu";
      } else {
        problem = "--device: expected 'cpu' or 'gpu'";
        return std::nullopt;
      }
    } else if (arg.starts_with("--")) {
      problem = "unknown option " + std::string(arg);
      return std::nullopt;
    } else if (!have_model) {
      opts.model = arg;
      have_model = true;
    } else {
      problem = "more than one MODEL given";
      return std::nullopt;
    }
  }
  if (!have_model || !have_config) {
    problem = "MODEL and --config are required";
    return std::nullopt;
  }
  if (opts.tokens.has_value() == opts.prompt.has_value()) {
    problem = "give either --prompt (with --tokenizer) or --tokens";
    return std::nullopt;
  }
  if (opts.prompt && !opts.tokenizer) {
    problem = "--prompt needs --tokenizer";
    return std::nullopt;
  }
  return opts;
}

// A .fzip container starts with its magic; anything else is read as safetensors.
bool is_fzip(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::array<char, floatzip::kContainerMagic.size()> head{};
  if (!in.read(head.data(), head.size())) return false;
  return std::memcmp(head.data(), floatzip::kContainerMagic.data(), head.size()) == 0;
}

floatzip::result<std::unique_ptr<llama::weight_source>> open_source(
    const std::filesystem::path& path, const llama::model_config& config, unsigned threads) {
  if (is_fzip(path)) {
    auto source = llama::fzip_source::open(path, config, floatzip::decode_options{threads});
    if (!source) return source.error();
    return std::unique_ptr<llama::weight_source>(std::move(*source));
  }
  auto source = llama::safetensors_source::open(path, config);
  if (!source) return source.error();
  return std::unique_ptr<llama::weight_source>(std::move(*source));
}

// 1234567 -> "1,234,567".
std::string grouped(std::uint64_t n) {
  const std::string digits = std::to_string(n);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

// Text as llama2.c prints it, except that bytes >= 0x80 are kept: byte tokens spell UTF-8
// characters a byte at a time. Single-byte control pieces other than whitespace are left out.
void append_piece(std::string& text, const std::string& piece) {
  if (piece.size() == 1) {
    const unsigned char c = static_cast<unsigned char>(piece[0]);
    if ((c < 0x20 || c == 0x7F) && c != '\n' && c != '\t' && c != '\r') return;
  }
  text += piece;
}

std::string join(const std::vector<int>& ids) {
  std::string s;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) s.push_back(',');
    s.append(std::to_string(ids[i]));
  }
  return s;
}

// The text, or the token ids.
// --verify's report of the first logit whose bits differ from the reference run's.
std::string logit_mismatch(int position, int token, std::size_t i, std::span<const float> logits,
                           std::span<const float> expected, std::string_view reference) {
  return fmt::format(
      "position {} (token {}): logit {} is {:.9g} (bits 0x{:08x}), {} {:.9g} (bits 0x{:08x})",
      position, token, i, logits[i], std::bit_cast<std::uint32_t>(logits[i]), reference,
      expected[i], std::bit_cast<std::uint32_t>(expected[i]));
}

void print_generation(const std::optional<llama::tokenizer>& tokenizer,
                      const std::vector<int>& prompt, const std::vector<int>& generated) {
  if (tokenizer) {
    std::string text;
    std::vector<int> all = prompt;
    all.insert(all.end(), generated.begin(), generated.end());
    for (std::size_t i = 1; i < all.size(); ++i)
      append_piece(text, tokenizer->decode(all[i - 1], all[i]));
    fmt::print("{}\n", text);
  } else {
    fmt::print("prompt tokens:    {}\ngenerated tokens: {}\n", join(prompt), join(generated));
  }
}

int run_gpu(const options& opts, const llama::model_config& config,
            const std::optional<llama::tokenizer>& tokenizer, const std::vector<int>& prompt);

int run(const options& opts) {
  auto config_result = llama::load_model_config(opts.config);
  if (!config_result) throw floatzip::exception(config_result.error());
  llama::model_config config = *config_result;
  config.rope = opts.rope;

  std::optional<llama::tokenizer> tokenizer;
  std::vector<int> prompt;
  if (opts.prompt) {
    tokenizer = llama::tokenizer::load(*opts.tokenizer, config.vocab_size).value();
    prompt = tokenizer->encode(*opts.prompt);
  } else {
    prompt = *opts.tokens;
  }
  for (int id : prompt)
    if (id >= config.vocab_size)
      throw floatzip::exception(
          {floatzip::errc::invalid_argument, "--tokens: token " + std::to_string(id) +
                                                 " is outside the vocabulary of " +
                                                 std::to_string(config.vocab_size)});
  if (static_cast<int>(prompt.size()) > config.seq_len)
    throw floatzip::exception({floatzip::errc::invalid_argument,
                               "the prompt has " + std::to_string(prompt.size()) +
                                   " tokens, more than seq_len " + std::to_string(config.seq_len)});

  if (opts.gpu) return run_gpu(opts, config, tokenizer, prompt);

  auto source = open_source(opts.model, config, opts.threads).value();
  llama::transformer model(config, *source);

  std::unique_ptr<llama::weight_source> reference_source;
  std::unique_ptr<llama::transformer> reference;
  if (opts.verify) {
    reference_source = open_source(*opts.verify, config, opts.threads).value();
    reference = std::make_unique<llama::transformer>(config, *reference_source);
  }

  // With --verify, the reference runs the same token at the same position after every step and
  // its logits are compared bit for bit.
  std::uint64_t compared_steps = 0;
  std::optional<std::string> mismatch;
  const auto on_step = [&](int position, int token,
                           std::span<const float> logits) -> floatzip::error {
    if (!reference) return {};
    auto expected = reference->forward(token, position);
    if (!expected) return expected.error();
    if (const auto i = llama::first_bit_difference(logits, *expected)) {
      // Sizes are equal (one config), so *i indexes both.
      mismatch = logit_mismatch(position, token, *i, logits, *expected, "the uncompressed model's");
      return {floatzip::errc::bad_data, *mismatch};
    }
    ++compared_steps;
    return {};
  };

  const int stop_token = tokenizer ? llama::kBosToken : -1;
  auto generated = llama::generate_greedy(model, prompt, opts.steps, stop_token, on_step);
  if (!generated) {
    if (mismatch) {
      fmt::print(stderr, "llama_generate: verify FAILED at {}\n", *mismatch);
      return kExitMismatch;
    }
    throw floatzip::exception(generated.error());
  }

  print_generation(tokenizer, prompt, *generated);

  const llama::run_stats& stats = model.stats();
  const auto per_second = [](const llama::run_stats& s) {
    return s.forward_seconds > 0 ? double(s.forward_passes) / s.forward_seconds : 0.0;
  };
  fmt::print("---\n");
  fmt::print("model       {} ({}, {} bytes)\n", opts.model.string(), source->format(),
             grouped(source->file_bytes()));
  fmt::print(
      "tokens      {} prompt + {} generated; {} forward passes in {:.3f} s: {:.1f} tokens/s\n",
      prompt.size(), generated->size(), stats.forward_passes, stats.forward_seconds,
      per_second(stats));
  const bool compressed = source->format() == "fzip";
  const double passes = stats.forward_passes ? double(stats.forward_passes) : 1.0;
  fmt::print(
      "weights     {} loads, {:.3f} s{} ({:.1f} % of the forward time, {:.3f} ms per token){}\n",
      stats.weight_loads, stats.load_seconds, compressed ? " decompressing" : "",
      stats.forward_seconds > 0 ? 100.0 * stats.load_seconds / stats.forward_seconds : 0.0,
      1e3 * stats.load_seconds / passes,
      compressed ? "" : ": views into the mapped file, no decoding");
  const std::uint64_t model_bytes = source->model_weight_bytes();
  const std::uint64_t resident = model.buffer().size_bytes();
  if (compressed) {
    fmt::print(
        "memory      peak resident decoded weights {} bytes (one reused buffer: the largest "
        "bundle) vs {} bytes for the uncompressed model ({:.1f} %); compressed file {} bytes\n",
        grouped(resident), grouped(model_bytes),
        model_bytes ? 100.0 * double(resident) / double(model_bytes) : 0.0,
        grouped(source->file_bytes()));
  } else {
    fmt::print("memory      resident weights {} bytes (the whole uncompressed model, mapped)\n",
               grouped(model_bytes));
  }
  if (reference) {
    const llama::run_stats& ref = reference->stats();
    fmt::print("verify      OK: {} steps x {} logits bit-identical to {}\n", compared_steps,
               config.vocab_size, opts.verify->string());
    fmt::print("reference   {}: {:.1f} tokens/s; {} costs {:+.3f} ms per token against it\n",
               reference_source->format(), per_second(ref), opts.model.filename().string(),
               1e3 * (stats.forward_seconds - ref.forward_seconds) / passes);
  }
  return 0;
}

#ifdef LLAMA_GENERATE_GPU

// Logits of the GPU and CPU paths may differ by this much, relative to the step's largest logit
// magnitude (at least 1): they sum in different orders and the GPU fuses multiply-adds, which
// moves the last bits of each sum, but a wrong kernel moves whole units.
constexpr float kCpuLogitTolerance = 1e-3f;

std::unique_ptr<llama::gpu::engine> make_engine(const llama::weight_source& source,
                                                const std::filesystem::path& path,
                                                const llama::model_config& config) {
  auto weights = llama::gpu_weights(source, path.string()).value();
  auto engine = llama::gpu::engine::create(llama::gpu_shape(config), weights);
  if (!engine) {
    floatzip::error e = engine.error();
    e.message = path.string() + ": " + e.message;
    throw floatzip::exception(e);
  }
  return std::move(*engine);
}

int run_gpu(const options& opts, const llama::model_config& config,
            const std::optional<llama::tokenizer>& tokenizer, const std::vector<int>& prompt) {
  if (llama::gpu::device_count() == 0) {
    fmt::print(stderr,
               "llama_generate: --device gpu: no CUDA device found (no NVIDIA GPU, or no usable "
               "driver)\n");
    return kExitUsage;
  }
  auto source = open_source(opts.model, config, opts.threads).value();
  auto engine = make_engine(*source, opts.model, config);

  // With --verify: the uncompressed weights on the GPU (must match bit for bit) and on the CPU
  // (must give the same greedy tokens), both fed the tokens the engine under test chose.
  std::unique_ptr<llama::weight_source> reference_source;
  std::unique_ptr<llama::gpu::engine> reference;
  std::unique_ptr<llama::transformer> cpu;
  if (opts.verify) {
    reference_source = open_source(*opts.verify, config, opts.threads).value();
    reference = make_engine(*reference_source, *opts.verify, config);
    cpu = std::make_unique<llama::transformer>(config, *reference_source);
  }
  floatzip::throw_if_error(engine->warm_up(prompt[0]));
  if (reference) floatzip::throw_if_error(reference->warm_up(prompt[0]));

  std::uint64_t compared_steps = 0;
  std::uint64_t compared_tokens = 0;
  float max_cpu_difference = 0.0f;
  std::optional<std::string> mismatch;
  const auto on_step = [&](int position, int token,
                           std::span<const float> logits) -> floatzip::error {
    if (!reference) return {};
    auto expected = reference->forward(token, position);
    if (!expected) return expected.error();
    if (const auto i = llama::first_bit_difference(logits, *expected)) {
      mismatch =
          logit_mismatch(position, token, *i, logits, *expected, "the uncompressed GPU run's");
      return {floatzip::errc::bad_data, *mismatch};
    }
    auto on_cpu = cpu->forward(token, position);
    if (!on_cpu) return on_cpu.error();
    float scale = 1.0f;
    for (float v : *on_cpu) scale = std::max(scale, std::fabs(v));
    for (std::size_t i = 0; i < logits.size(); ++i) {
      const float difference = std::fabs(logits[i] - (*on_cpu)[i]);
      // NaN compares false both ways; !(d <= t) catches it.
      if (!(difference <= kCpuLogitTolerance * scale)) {
        mismatch = fmt::format(
            "position {} (token {}): logit {} is {:.9g} on the GPU, {:.9g} on the CPU: more "
            "than {} x {:.3g} apart",
            position, token, i, logits[i], (*on_cpu)[i], kCpuLogitTolerance, scale);
        return {floatzip::errc::bad_data, *mismatch};
      }
      max_cpu_difference = std::max(max_cpu_difference, difference);
    }
    // Where the next token is generated, the greedy choice must agree with the CPU path's.
    if (std::size_t(position) + 1 >= prompt.size()) {
      const int gpu_token = llama::argmax(logits);
      const int cpu_token = llama::argmax(*on_cpu);
      if (gpu_token != cpu_token) {
        mismatch = fmt::format("position {}: the GPU picks token {}, the CPU path token {}",
                               position, gpu_token, cpu_token);
        return {floatzip::errc::bad_data, *mismatch};
      }
      ++compared_tokens;
    }
    ++compared_steps;
    return {};
  };

  const int stop_token = tokenizer ? llama::kBosToken : -1;
  auto generated = llama::generate_greedy(*engine, prompt, opts.steps, stop_token, on_step);
  if (!generated) {
    if (mismatch) {
      fmt::print(stderr, "llama_generate: verify FAILED at {}\n", *mismatch);
      return kExitMismatch;
    }
    throw floatzip::exception(generated.error());
  }
  print_generation(tokenizer, prompt, *generated);

  const llama::gpu::run_stats& stats = engine->stats();
  const auto per_second = [](const llama::gpu::run_stats& s) {
    return s.forward_seconds > 0 ? double(s.forward_passes) / s.forward_seconds : 0.0;
  };
  const auto ms_per_token = [](const llama::gpu::run_stats& s, double seconds) {
    return s.forward_passes ? 1e3 * seconds / double(s.forward_passes) : 0.0;
  };
  const llama::gpu::engine::memory& memory = engine->device_memory();
  fmt::print("---\n");
  fmt::print("device      {} (cublasSgemv on BF16 weights widened to FP32; --device gpu)\n",
             engine->device_name());
  fmt::print("model       {} ({}, {} bytes)\n", opts.model.string(), source->format(),
             grouped(source->file_bytes()));
  fmt::print(
      "tokens      {} prompt + {} generated; {} forward passes in {:.3f} s: {:.1f} tokens/s, "
      "{:.3f} ms per token (after one warm-up pass)\n",
      prompt.size(), generated->size(), stats.forward_passes, stats.forward_seconds,
      per_second(stats), ms_per_token(stats, stats.forward_seconds));
  if (engine->compressed()) {
    fmt::print(
        "weights     {} decompress launches, {:.3f} ms between CUDA events around them ({:.3f} ms "
        "per token, {:.1f} % of the forward time)\n",
        stats.decode_launches, 1e3 * stats.decode_seconds,
        ms_per_token(stats, stats.decode_seconds),
        stats.forward_seconds > 0 ? 100.0 * stats.decode_seconds / stats.forward_seconds : 0.0);
    fmt::print(
        "memory      device: bundles {} bytes + one decode buffer {} bytes (the largest bundle) "
        "+ FP32 scratch {} bytes; the uncompressed BF16 weights take {} bytes\n",
        grouped(memory.stored_weights), grouped(memory.decode_buffer), grouped(memory.fp32_scratch),
        grouped(source->model_weight_bytes()));
  } else {
    fmt::print("weights     BF16 tensors resident on the device, no decoding\n");
    fmt::print("memory      device: BF16 weights {} bytes + FP32 scratch {} bytes\n",
               grouped(memory.stored_weights), grouped(memory.fp32_scratch));
  }
  if (reference) {
    const llama::gpu::run_stats& ref = reference->stats();
    fmt::print("verify      OK: {} steps x {} logits bit-identical to the GPU run of {}\n",
               compared_steps, config.vocab_size, opts.verify->string());
    fmt::print(
        "reference   {} on the GPU: {:.1f} tokens/s, {:.3f} ms per token; {} costs {:+.3f} ms "
        "per token against it ({:.3f} ms of it inside decompress launches)\n",
        reference_source->format(), per_second(ref), ms_per_token(ref, ref.forward_seconds),
        opts.model.filename().string(),
        ms_per_token(stats, stats.forward_seconds) - ms_per_token(ref, ref.forward_seconds),
        ms_per_token(stats, stats.decode_seconds));
    fmt::print(
        "cpu         same greedy token as the CPU path at all {} generated steps; logits differ "
        "from the CPU path's by at most {:.3g} (tolerance {} x max(1, |logit|))\n",
        compared_tokens, max_cpu_difference, kCpuLogitTolerance);
  } else if (engine->compressed()) {
    fmt::print("(give --verify ORIGINAL.safetensors to run the uncompressed weights beside it)\n");
  }
  return 0;
}

#else

int run_gpu(const options&, const llama::model_config&, const std::optional<llama::tokenizer>&,
            const std::vector<int>&) {
  fmt::print(stderr,
             "llama_generate: --device gpu: this build has no CUDA support (configure with "
             "-DFLOATZIP_CUDA=ON where the CUDA toolkit is installed)\n");
  return kExitUsage;
}

#endif  // LLAMA_GENERATE_GPU

}  // namespace

int main(int argc, char** argv) {
  std::string problem;
  const auto opts = parse_arguments(argc, argv, problem);
  if (!opts) {
    fmt::print(stderr, "llama_generate: {}\n\n", problem);
    print_usage(stderr);
    return kExitUsage;
  }
  try {
    return run(*opts);
  } catch (const std::exception& e) {
    fmt::print(stderr, "llama_generate: {}\n", e.what());
    return kExitUsage;
  }
}
