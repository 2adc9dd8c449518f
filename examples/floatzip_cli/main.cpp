// floatzip: compress, ship, verify and restore Hugging Face safetensors checkpoints.
//
//   floatzip demo                              # generate, compress, verify, report
//   floatzip compress model.safetensors        # -> model.fzip
//   floatzip decompress model.fzip -o copy.safetensors
//   floatzip verify model.safetensors model.fzip
//   floatzip info model.fzip --json
#include <fmt/core.h>

#include <cstdio>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "cli.hpp"
#include "floatzip/config.hpp"

namespace floatzip::cli {
namespace {

struct command {
  std::string_view name;
  std::string_view summary;
  std::string_view help;
  int (*run)(const std::vector<std::string>&);
};

constexpr command kCommands[] = {
    {"compress", "safetensors file or checkpoint directory -> .fzip",
     R"(usage: floatzip compress IN [-o OUT] [--threads N] [--group G] [--chunk-bytes B] [--force]

Compresses a .safetensors file into a .fzip container, or every *.safetensors file of a
checkpoint directory (sharded checkpoints with model.safetensors.index.json included) into a
directory of .fzip files; other files of the directory are copied as they are.

  IN               a .safetensors file or a checkpoint directory
  -o, --output OUT output path (default: IN with .safetensors replaced by .fzip; DIR.fzip for a
                   directory)
  --threads N      encoder threads (default: all cores)
  --group G        which BF16 tensors form one bundle (decoded together, e.g. a transformer
                   block): auto (default: the first numbered name component, "<...>.<word>.N."),
                   layers (layers.N), diffusion (transformer_blocks.N,
                   single_transformer_blocks.N, down_blocks.N, up_blocks.N), experts
                   (experts.N), none, or regex:PATTERN (the first capture group, else the match)
  --chunk-bytes B  exponent-stream bytes per GPU thread (default 128): the sync metadata costs 4
                   bits per chunk, 64 costs 0.011 bits per weight more (see bench/RESULTS.md)
  --force          replace OUT if it exists: a regular file or a symlink (the link, not its
                   target), or a directory holding only files this command writes. Never the
                   input, a directory containing it, a FIFO or a device node.

The output appears only when complete; on any error nothing is left behind.)",
     compress_command},
    {"decompress", ".fzip file or directory -> the original safetensors, byte for byte",
     R"(usage: floatzip decompress IN [-o OUT] [--threads N] [--force]

Restores the original safetensors file (or checkpoint directory) byte for byte. Every checksum
is checked on the way.

  IN               a .fzip file or a directory made by `floatzip compress`
  -o, --output OUT output path (default: IN without .fzip; .safetensors added for a file)
  --threads N      decoder threads (default: all cores)
  --force          replace OUT if it exists (as for compress: never the input, a directory
                   containing it, a FIFO or a device node))",
     decompress_command},
    {"verify", "decode a .fzip and compare it bit for bit with the original",
     R"(usage: floatzip verify ORIGINAL COMPRESSED [--threads N]

Checks every checksum of COMPRESSED, decodes every bundle and compares the result with ORIGINAL
bit for bit (files or directories). Exit code 0 when identical, 1 otherwise.)",
     verify_command},
    {"info", "sizes, ratio, bits per weight and entropy per bundle",
     R"(usage: floatzip info FILE [--json]

Per bundle and in total: values, bytes before and after, bits per value, symbol (exponent)
entropy, the per-tensor Huffman ideal of the format's split, ratio; totals per value format (bf16,
fp16, fp32, bf16-in-fp32, fp8-e4m3, fp8-e5m2, bf16-in-fp16). Reads only the index (no decoding).
FILE is a .fzip file or a directory of them.

  --json   one JSON object; its top level has original_bytes, compressed_bytes, ratio,
           bf16_values, bits_per_bf16_value, the per-format totals under "formats" and the
           per-bundle figures (with "format") under "bundles")",
     info_command},
    {"bench", "CPU (and GPU) encode/decode throughput on a model file",
     R"(usage: floatzip bench FILE [--threads N] [--repeat N]

Measures CPU encode and decode throughput of the float bundles of FILE (.safetensors or .fzip;
every value format compress codes), with one thread and with --threads threads (default: all
cores), beside a memcpy of the same bytes measured in the same run. Best of --repeat runs
(default 3). GPU decode of the BF16 bundles is reported beside a BF16 device copy when this build
has the CUDA decoder and a GPU is present.)",
     bench_command},
    {"demo", "generate a Llama-shaped checkpoint, compress, verify, report",
     R"(usage: floatzip demo [--size-mb N] [--seed S] [--threads N] [--keep DIR]

Generates a Llama-shaped BF16 checkpoint with heavy-tailed (Student-t) weights at per-matrix
scales 0.01-0.04 in a temporary directory, compresses it, decompresses it, verifies it bit for
bit and prints size, ratio, bits per weight against the entropy bound and the unlimited-Huffman
ideal, and throughput.

  --size-mb N   checkpoint size in MB (default 256)
  --seed S      generator seed (default 1): the same seed gives the same file
  --threads N   codec threads (default: all cores)
  --keep DIR    keep the generated files in DIR instead of deleting them)",
     demo_command},
};

void print_overview(std::FILE* out) {
  fmt::print(out,
             "floatzip {}.{}.{}: lossless compression of BF16 model weights\n\n"
             "usage: floatzip COMMAND [ARGS...]\n\ncommands:\n",
             kVersionMajor, kVersionMinor, kVersionPatch);
  for (const auto& c : kCommands) fmt::print(out, "  {:<11} {}\n", c.name, c.summary);
  fmt::print(out,
             "\n`floatzip COMMAND --help` describes a command. Exit codes: 0 success, 1 bad "
             "input or\nfailed verification, 2 usage error.\n");
}

const command* find_command(std::string_view name) {
  for (const auto& c : kCommands)
    if (c.name == name) return &c;
  return nullptr;
}

int run(int argc, char** argv) {
  const std::vector<std::string> tokens(argv + 1, argv + argc);
  if (tokens.empty()) {
    print_overview(stderr);
    return kExitUsage;
  }
  const std::string& first = tokens[0];
  if (first == "--help" || first == "-h") {
    print_overview(stdout);
    return kExitOk;
  }
  if (first == "--version") {
    fmt::print("floatzip {}.{}.{}\n", kVersionMajor, kVersionMinor, kVersionPatch);
    return kExitOk;
  }
  if (first == "help") {
    if (tokens.size() == 1) {
      print_overview(stdout);
      return kExitOk;
    }
    const command* c = find_command(tokens[1]);
    if (c == nullptr) {
      fmt::print(stderr, "floatzip: unknown command '{}'\n\n", tokens[1]);
      print_overview(stderr);
      return kExitUsage;
    }
    fmt::print("{}\n", c->help);
    return kExitOk;
  }
  const command* c = find_command(first);
  if (c == nullptr) {
    fmt::print(stderr, "floatzip: unknown command '{}'\n\n", first);
    print_overview(stderr);
    return kExitUsage;
  }
  const std::vector<std::string> rest(tokens.begin() + 1, tokens.end());
  for (const auto& t : rest) {
    if (t == "--") break;
    if (t == "--help" || t == "-h") {
      fmt::print("{}\n", c->help);
      return kExitOk;
    }
  }
  install_interrupt_handlers();
  try {
    return c->run(rest);
  } catch (const usage_error& e) {
    fmt::print(stderr, "floatzip {}: {}\n\n{}\n", c->name, e.what(), c->help);
    return kExitUsage;
  }
}

}  // namespace
}  // namespace floatzip::cli

int main(int argc, char** argv) {
  try {
    return floatzip::cli::run(argc, argv);
  } catch (const std::exception& e) {
    // The library reports bad input as error values; what arrives here is unexpected (out of
    // memory, a failed allocation of threads) and still deserves a message, not an abort.
    fmt::print(stderr, "floatzip: error: {}\n", e.what());
    return floatzip::cli::kExitFailure;
  }
}
