// llama_generate: greedy text generation from a Llama model stored as .fzip (or .safetensors),
// decompressing one transformer block at a time into one reused buffer.
//
//   llama_generate MODEL --config CONFIG.json (--tokenizer TOKENIZER --prompt TEXT | --tokens IDS)
//                  [--steps N] [--verify ORIGINAL.safetensors] [--threads N]
//                  [--rope adjacent|split-halves]
//
// MODEL is a .fzip container or a safetensors file (told apart by their first bytes). With
// --verify, the uncompressed ORIGINAL runs beside it, step by step, and the program exits with
// status 1 unless every logit of every step is bit-identical.
#include <fmt/core.h>

#include <array>
#include <bit>
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
};

void print_usage(std::FILE* out) {
  fmt::print(out,
             "usage: llama_generate MODEL --config CONFIG.json\n"
             "                      (--tokenizer TOKENIZER --prompt TEXT | --tokens ID,ID,...)\n"
             "                      [--steps N] [--verify ORIGINAL.safetensors] [--threads N]\n"
             "                      [--rope adjacent|split-halves]\n"
             "\n"
             "  MODEL      .fzip container or .safetensors file with Hugging Face Llama names\n"
             "  --steps    tokens to generate after the prompt (default 256; generation also\n"
             "             stops at the end of the KV cache, and at BOS when a tokenizer is used)\n"
             "  --tokens   fixed prompt token ids, for models without a tokenizer (no BOS added)\n"
             "  --verify   also run this uncompressed model; exit 1 unless all logits of all\n"
             "             steps are bit-identical\n"
             "  --threads  CPU threads per bundle decode (default 1)\n"
             "  --rope     rotary pairing: adjacent dims (2i, 2i+1) as llama2.c (default), or\n"
             "             split-halves (i, i + head_size/2) as Hugging Face rotate_half\n");
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
      mismatch = fmt::format(
          "position {} (token {}): logit {} is {:.9g} (bits 0x{:08x}), the uncompressed "
          "model's {:.9g} (bits 0x{:08x})",
          position, token, *i, logits[*i], std::bit_cast<std::uint32_t>(logits[*i]),
          (*expected)[*i], std::bit_cast<std::uint32_t>((*expected)[*i]));
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

  // The text, or the token ids.
  if (tokenizer) {
    std::string text;
    std::vector<int> all = prompt;
    all.insert(all.end(), generated->begin(), generated->end());
    for (std::size_t i = 1; i < all.size(); ++i)
      append_piece(text, tokenizer->decode(all[i - 1], all[i]));
    fmt::print("{}\n", text);
  } else {
    fmt::print("prompt tokens:    {}\ngenerated tokens: {}\n", join(prompt), join(*generated));
  }

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
