// The `floatzip` command as users and scripts meet it: exit codes (0 ok, 1 bad input or failed
// verification, 2 usage), byte-for-byte round trips of the real models and of sharded
// directories, `verify` catching one flipped bit, `info --json` agreeing with the file sizes,
// every kind of bad input leaving no output behind, and memory bounded by bundles.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../bench/format_files.hpp"
#include "container_test_util.hpp"

namespace floatzip {
namespace {

using testing::temp_dir;
namespace fs = std::filesystem;

struct run_result {
  int exit_code = -1;
  std::string out;
  std::string err;
  long max_rss_kb = 0;
};

// The floatzip command under test: FLOATZIP_CLI_PATH in the environment, else the path CMake
// writes to floatzip_cli_path.txt beside this binary (test_paths.hpp says why not compiled in).
const std::string& cli_path() {
  static const std::string path =
      test::path_setting("FLOATZIP_CLI_PATH", "floatzip_cli_path.txt").string();
  return path;
}

std::string slurp(const fs::path& p) {
  const auto bytes = testing::read_file(p);
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

struct run_settings {
  fs::path cwd;                                        // empty: the test's own
  std::optional<std::chrono::milliseconds> interrupt;  // send SIGINT this long after the start
};

// Runs the floatzip binary with `args`, capturing stdout, stderr, exit code and peak memory.
// Sends SIGINT to `pid` once it catches SIGINT (its handler installed: SIGINT's bit in SigCgt
// of /proc/PID/status), so that a slow start (a sanitizer build on a busy machine can take longer
// than the test's delay to reach main) does not meet the default action and die silently. Gives
// up waiting after 30 s, or when the process has exited, and signals anyway.
void interrupt_once_catching(pid_t pid) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  const std::string status_path = "/proc/" + std::to_string(pid) + "/status";
  while (std::chrono::steady_clock::now() < give_up) {
    std::ifstream status(status_path);
    std::string line;
    bool catching = false;
    bool exited = !status;
    while (std::getline(status, line)) {
      if (line.rfind("State:", 0) == 0 && line.find('Z') != std::string::npos) exited = true;
      if (line.rfind("SigCgt:", 0) == 0)
        catching = (std::stoull(line.substr(7), nullptr, 16) >> (SIGINT - 1) & 1) != 0;
    }
    if (catching || exited) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ::kill(pid, SIGINT);
}

run_result run(const std::vector<std::string>& args, const run_settings& settings = {}) {
  if (cli_path().empty())
    ADD_FAILURE() << "floatzip_cli_path.txt is missing beside the test binary";
  temp_dir capture;
  const fs::path out = capture / "stdout";
  const fs::path err = capture / "stderr";
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int out_fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err_fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(err_fd, STDERR_FILENO);
    if (!settings.cwd.empty() && ::chdir(settings.cwd.c_str()) != 0) ::_exit(126);
    std::vector<char*> argv;
    std::string program = cli_path();
    argv.push_back(program.data());
    std::vector<std::string> copies = args;
    for (auto& a : copies) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(program.c_str(), argv.data());
    ::_exit(127);
  }
  if (settings.interrupt) {
    std::this_thread::sleep_for(*settings.interrupt);
    interrupt_once_catching(pid);
  }
  run_result r;
  int status = 0;
  struct rusage usage {};
  ::wait4(pid, &status, 0, &usage);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.max_rss_kb = usage.ru_maxrss;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

// Starts the binary, sends SIGINT after `delay`, and returns its exit code.
int run_interrupted(const std::vector<std::string>& args, std::chrono::milliseconds delay) {
  if (cli_path().empty())
    ADD_FAILURE() << "floatzip_cli_path.txt is missing beside the test binary";
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null_fd = ::open("/dev/null", O_WRONLY);
    ::dup2(null_fd, STDOUT_FILENO);
    ::dup2(null_fd, STDERR_FILENO);
    std::vector<char*> argv;
    std::string program = cli_path();
    argv.push_back(program.data());
    std::vector<std::string> copies = args;
    for (auto& a : copies) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(program.c_str(), argv.data());
    ::_exit(127);
  }
  std::this_thread::sleep_for(delay);
  interrupt_once_catching(pid);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string describe(const run_result& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

void flip_bit(const fs::path& p, std::uint64_t byte, int bit) {
  auto bytes = testing::read_file(p);
  bytes.at(byte) ^= std::byte(1u << bit);
  testing::write_file(p, bytes);
}

TEST(Cli, HelpForEveryCommandAndUsageErrors) {
  EXPECT_EQ(run({"--help"}).exit_code, 0);
  EXPECT_EQ(run({"--version"}).exit_code, 0);
  for (const char* command : {"compress", "decompress", "verify", "info", "bench", "demo"}) {
    const auto r = run({command, "--help"});
    EXPECT_EQ(r.exit_code, 0) << command;
    EXPECT_NE(r.out.find(std::string("usage: floatzip ") + command), std::string::npos) << r.out;
    EXPECT_EQ(run({"help", command}).exit_code, 0) << command;
  }
  EXPECT_EQ(run({}).exit_code, 2);
  EXPECT_EQ(run({"explode"}).exit_code, 2);
  EXPECT_EQ(run({"compress"}).exit_code, 2);
  EXPECT_EQ(run({"compress", "a", "b"}).exit_code, 2);
  EXPECT_EQ(run({"compress", "x.safetensors", "--frobnicate"}).exit_code, 2);
  EXPECT_EQ(run({"compress", "x.safetensors", "--threads", "many"}).exit_code, 2);
  EXPECT_EQ(run({"compress", "x.safetensors", "--threads"}).exit_code, 2);
  EXPECT_EQ(run({"verify", "only-one"}).exit_code, 2);
  EXPECT_EQ(run({"info"}).exit_code, 2);
  EXPECT_EQ(run({"demo", "--size-mb", "0"}).exit_code, 2);
  const auto usage = run({"decompress", "a", "--nope"});
  EXPECT_NE(usage.err.find("unknown option --nope"), std::string::npos) << usage.err;
}

TEST(Cli, EveryModelRoundTripsByteForByte) {
  const auto models = testing::model_files();
  if (models.empty()) GTEST_SKIP() << "no models in " << testing::models_dir();
  for (const auto& model : models) {
    SCOPED_TRACE(model.string());
    temp_dir dir;
    fs::copy_file(model, dir / "m.safetensors");
    auto r = run({"compress", (dir / "m.safetensors").string()});  // default name m.fzip
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    ASSERT_TRUE(fs::exists(dir / "m.fzip"));
    r = run({"decompress", (dir / "m.fzip").string(), "-o", (dir / "back.safetensors").string(),
             "--threads", "2"});
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    EXPECT_EQ(testing::read_file(dir / "back.safetensors"), testing::read_file(model));
    r = run({"verify", model.string(), (dir / "m.fzip").string()});
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    EXPECT_EQ(dir.entries(),
              (std::vector<std::string>{"back.safetensors", "m.fzip", "m.safetensors"}));
  }
}

TEST(Cli, VerifyCatchesASingleFlippedBit) {
  const auto model = testing::models_dir() / "stories260K.bf16.safetensors";
  if (!fs::exists(model)) GTEST_SKIP() << model << " not present";
  temp_dir dir;
  ASSERT_EQ(run({"compress", model.string(), "-o", (dir / "m.fzip").string()}).exit_code, 0);
  const auto fzip = testing::read_file(dir / "m.fzip");
  const auto l = testing::layout_of(fzip);
  // Bits in the file header, the verbatim header, the index, a bundle's sign/mantissa bytes,
  // its exponent stream, and the last byte.
  const std::vector<std::uint64_t> positions = {20,
                                                l.metadata_offset + 10,
                                                l.metadata_offset + l.metadata_size / 2,
                                                l.bundles_offset + 300,
                                                l.bundles_offset + fzip.size() / 2,
                                                fzip.size() - 1};
  for (std::uint64_t at : positions) {
    fs::copy_file(dir / "m.fzip", dir / "flipped.fzip", fs::copy_options::overwrite_existing);
    flip_bit(dir / "flipped.fzip", at, static_cast<int>(at % 8));
    const auto r = run({"verify", model.string(), (dir / "flipped.fzip").string()});
    EXPECT_EQ(r.exit_code, 1) << "flip at " << at << "\n" << describe(r);
    EXPECT_NE(r.err.find("flipped.fzip"), std::string::npos) << r.err;
  }
  // A flipped bit in the original is caught too (the container is intact, the data differ).
  fs::copy_file(model, dir / "original.safetensors");
  const std::uint64_t tensor_byte = fs::file_size(model) - 1000;
  flip_bit(dir / "original.safetensors", tensor_byte, 3);
  const auto r =
      run({"verify", (dir / "original.safetensors").string(), (dir / "m.fzip").string()});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find("differs at byte"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(std::to_string(tensor_byte)), std::string::npos) << r.err;
}

TEST(Cli, InfoJsonAgreesWithTheFiles) {
  const auto models = testing::model_files();
  if (models.empty()) GTEST_SKIP() << "no models in " << testing::models_dir();
  for (const auto& model : models) {
    SCOPED_TRACE(model.string());
    temp_dir dir;
    ASSERT_EQ(run({"compress", model.string(), "-o", (dir / "m.fzip").string()}).exit_code, 0);
    const auto r = run({"info", (dir / "m.fzip").string(), "--json"});
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    const auto json = nlohmann::json::parse(r.out);
    const auto compressed = fs::file_size(dir / "m.fzip");
    const auto original = fs::file_size(model);
    EXPECT_EQ(json.at("compressed_bytes").get<std::uint64_t>(), compressed);
    EXPECT_EQ(json.at("original_bytes").get<std::uint64_t>(), original);
    EXPECT_NEAR(json.at("ratio").get<double>(), double(compressed) / double(original), 1e-12);
    // Values of each format from the safetensors file itself.
    auto file = detail::mapped_file::open(model).value();
    const auto header = safetensors::parse_header(file.bytes(), file.size(), "m").value();
    std::map<std::string, std::uint64_t> format_values;
    std::uint64_t float_values = 0;
    for (const auto& t : header.tensors) {
      const auto data = file.bytes().subspan(header.header_size() + t.data.begin, t.size_bytes());
      const auto format = container_format_of(t.type, holds_bf16_values(t.type, data));
      if (!format) continue;
      format_values[std::string(to_string(*format))] += t.element_count();
      float_values += t.element_count();
    }
    const std::uint64_t bf16_values = format_values["bf16"];
    format_values.erase("bf16");
    if (bf16_values > 0) format_values["bf16"] = bf16_values;
    EXPECT_EQ(json.at("bf16_values").get<std::uint64_t>(), bf16_values);
    ASSERT_EQ(json.at("formats").size(), format_values.size());
    for (const auto& [name, values] : format_values) {
      const auto& f = json.at("formats").at(name);
      EXPECT_EQ(f.at("values").get<std::uint64_t>(), values) << name;
      EXPECT_NEAR(f.at("bits_per_value").get<double>(),
                  8.0 * f.at("stored_bytes").get<double>() / double(values), 1e-9);
      EXPECT_GE(f.at("bits_per_value").get<double>(),
                f.at("huffman_ideal_bits_per_value").get<double>());
    }
    // Per-bundle figures add up to the totals; bits per value follow from the stored bytes.
    std::uint64_t stored = 0;
    std::uint64_t decoded = 0;
    std::uint64_t values = 0;
    for (const auto& b : json.at("bundles")) {
      stored += b.at("stored_bytes").get<std::uint64_t>();
      decoded += b.at("original_bytes").get<std::uint64_t>();
      values += b.at("values").get<std::uint64_t>();
    }
    EXPECT_EQ(values, float_values);
    EXPECT_EQ(decoded, original - header.header_size());
    EXPECT_LT(stored, compressed);
    if (bf16_values > 0) {
      const double bits = json.at("bits_per_bf16_value").get<double>();
      EXPECT_NEAR(bits, 8.0 * json.at("bf16_stored_bytes").get<double>() / double(bf16_values),
                  1e-9);
      EXPECT_GT(bits, 10.0);
      EXPECT_LT(bits, 11.0);
    }
    const auto text = run({"info", (dir / "m.fzip").string()});
    EXPECT_EQ(text.exit_code, 0);
    EXPECT_NE(text.out.find("bits/v"), std::string::npos) << text.out;
  }
}

// Issue 12: one file with every float format the container codes (made from the real model in
// BF16, F16 and F32: FP8 by a per-tensor scale, BF16-in-F32 by widening, BF16-in-F16 by rounding
// BF16 to F16) and a raw I64 tensor.
TEST(Cli, MixedDtypeFileRoundTripsAndInfoReportsEveryFormat) {
  const fs::path models = testing::models_dir();
  const fs::path bf16 = models / "stories260K.bf16.safetensors";
  const fs::path f16 = models / "stories260K.f16.safetensors";
  const fs::path f32 = models / "stories260K.f32.safetensors";
  if (!fs::exists(bf16) || !fs::exists(f16) || !fs::exists(f32))
    GTEST_SKIP() << "stories260K in BF16, F16 and F32 not present in " << models;
  namespace ff = format_files;
  temp_dir dir;
  ff::write_safetensors(
      dir / "mixed.safetensors",
      ff::mixed_file(ff::read_tensors(bf16), ff::read_tensors(f16), ff::read_tensors(f32)));
  for (const char* group : {"auto", "none"}) {
    SCOPED_TRACE(group);
    auto r = run({"compress", (dir / "mixed.safetensors").string(), "-o",
                  (dir / "mixed.fzip").string(), "--force", "--group", group});
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    for (const char* format :
         {"bf16", "fp16", "fp32", "bf16-in-fp32", "fp8-e4m3", "fp8-e5m2", "bf16-in-fp16"})
      EXPECT_NE(r.out.find(std::string("bits per ") + format + " value"), std::string::npos)
          << r.out;
    r = run({"decompress", (dir / "mixed.fzip").string(), "-o", (dir / "back.safetensors").string(),
             "--force"});
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    EXPECT_EQ(testing::read_file(dir / "back.safetensors"),
              testing::read_file(dir / "mixed.safetensors"));
    r = run({"verify", (dir / "mixed.safetensors").string(), (dir / "mixed.fzip").string()});
    EXPECT_EQ(r.exit_code, 0) << describe(r);

    r = run({"info", (dir / "mixed.fzip").string(), "--json"});
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    const auto json = nlohmann::json::parse(r.out);
    const auto& formats = json.at("formats");
    ASSERT_EQ(formats.size(), 7u) << formats.dump();
    std::uint64_t stored = 0;
    for (const auto& [name, f] : formats.items()) {
      SCOPED_TRACE(name);
      EXPECT_GT(f.at("values").get<std::uint64_t>(), 0u);
      EXPECT_LT(f.at("ratio").get<double>(), 1.0);
      EXPECT_GE(f.at("bits_per_value").get<double>(),
                f.at("huffman_ideal_bits_per_value").get<double>());
      stored += f.at("stored_bytes").get<std::uint64_t>();
    }
    // The per-bundle figures carry their format and add up to the per-format totals.
    std::map<std::string, std::uint64_t> bundle_stored;
    for (const auto& b : json.at("bundles"))
      if (b.contains("format"))
        bundle_stored[b.at("format").get<std::string>()] +=
            b.at("stored_bytes").get<std::uint64_t>();
    for (const auto& [name, f] : formats.items())
      EXPECT_EQ(bundle_stored[name], f.at("stored_bytes").get<std::uint64_t>()) << name;
    EXPECT_LT(stored, json.at("compressed_bytes").get<std::uint64_t>());
    const auto text = run({"info", (dir / "mixed.fzip").string()});
    ASSERT_EQ(text.exit_code, 0) << describe(text);
    for (const char* line : {"fp16: ", "fp32: ", "bf16-in-fp32: ", "fp8-e4m3: ", "fp8-e5m2: ",
                             "bf16-in-fp16: ", "per-tensor Huffman ideal"})
      EXPECT_NE(text.out.find(line), std::string::npos) << text.out;
  }
}

TEST(Cli, ShardedDirectoryRoundTrips) {
  const auto model = testing::models_dir() / "tang-poem-750K.bf16.safetensors";
  if (!fs::exists(model)) GTEST_SKIP() << model << " not present";
  temp_dir dir;
  fs::create_directories(dir / "ckpt");
  testing::make_sharded_checkpoint(model, dir / "ckpt", 2);
  auto r = run({"compress", (dir / "ckpt").string() + "/"});  // -> ckpt.fzip
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  ASSERT_TRUE(fs::is_directory(dir / "ckpt.fzip"));
  r = run({"verify", (dir / "ckpt").string(), (dir / "ckpt.fzip").string()});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  r = run({"info", (dir / "ckpt.fzip").string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const auto json = nlohmann::json::parse(r.out);
  EXPECT_EQ(json.at("files").size(), 2u);
  EXPECT_EQ(json.at("compressed_bytes").get<std::uint64_t>(),
            fs::file_size(dir / "ckpt.fzip" / "model-00001-of-00002.fzip") +
                fs::file_size(dir / "ckpt.fzip" / "model-00002-of-00002.fzip"));
  fs::rename(dir / "ckpt", dir / "original");
  r = run({"decompress", (dir / "ckpt.fzip").string()});  // -> ckpt
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  for (const auto& e : fs::directory_iterator(dir / "original"))
    EXPECT_EQ(testing::read_file(e.path()), testing::read_file(dir / "ckpt" / e.path().filename()))
        << e.path().filename();
  EXPECT_EQ(std::distance(fs::directory_iterator(dir / "ckpt"), fs::directory_iterator()), 4);
  // A shard that goes missing after compression is caught.
  fs::remove(dir / "ckpt.fzip" / "model-00002-of-00002.fzip");
  r = run({"decompress", (dir / "ckpt.fzip").string(), "-o", (dir / "again").string()});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_FALSE(fs::exists(dir / "again"));
}

TEST(Cli, ExistingOutputNeedsForce) {
  const auto model = testing::models_dir() / "aidreams260K.bf16.safetensors";
  if (!fs::exists(model)) GTEST_SKIP() << model << " not present";
  temp_dir dir;
  const auto out = (dir / "m.fzip").string();
  ASSERT_EQ(run({"compress", model.string(), "-o", out}).exit_code, 0);
  const auto r = run({"compress", model.string(), "-o", out});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;
  EXPECT_EQ(run({"compress", model.string(), "-o", out, "--force"}).exit_code, 0);
  EXPECT_EQ(run({"decompress", out, "-o", out, "--force"}).exit_code, 1);  // the input itself
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"m.fzip"});
}

// Each bad input: exit code 1, a message naming the file (and usually the field), no output.
class CliBadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto model = testing::models_dir() / "stories260K.bf16.safetensors";
    if (!fs::exists(model)) GTEST_SKIP() << model << " not present";
    ASSERT_EQ(run({"compress", model.string(), "-o", (dir_ / "good.fzip").string()}).exit_code, 0);
    good_ = testing::read_file(dir_ / "good.fzip");
  }

  // Writes `bytes` as bad.fzip, runs decompress and verify-less info, expects failure.
  void expect_decompress_fails(const std::vector<std::byte>& bytes, const std::string& needle) {
    temp_dir work;
    testing::write_file(work / "bad.fzip", bytes);
    const auto r = run({"decompress", (work / "bad.fzip").string()});
    EXPECT_EQ(r.exit_code, 1) << describe(r);
    EXPECT_NE(r.err.find("bad.fzip"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << "wanted '" << needle << "' in " << r.err;
    EXPECT_EQ(work.entries(), std::vector<std::string>{"bad.fzip"});
  }

  void expect_compress_fails(const std::vector<std::byte>& safetensors, const std::string& needle) {
    temp_dir work;
    testing::write_file(work / "bad.safetensors", safetensors);
    const auto r = run({"compress", (work / "bad.safetensors").string()});
    EXPECT_EQ(r.exit_code, 1) << describe(r);
    EXPECT_NE(r.err.find("bad.safetensors"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << "wanted '" << needle << "' in " << r.err;
    EXPECT_EQ(work.entries(), std::vector<std::string>{"bad.safetensors"});
  }

  temp_dir dir_;
  std::vector<std::byte> good_;
};

TEST_F(CliBadInput, Truncated) {
  for (std::uint64_t keep : {std::uint64_t{0}, std::uint64_t{7}, std::uint64_t{100},
                             std::uint64_t{good_.size() / 2}, std::uint64_t{good_.size() - 1}}) {
    expect_decompress_fails({good_.begin(), good_.begin() + static_cast<std::ptrdiff_t>(keep)},
                            keep < 8 ? "magic" : "file");
  }
}

TEST_F(CliBadInput, FlippedBytes) {
  const auto l = testing::layout_of(good_);
  for (std::uint64_t at :
       {std::uint64_t{30}, l.metadata_offset + 9, l.metadata_offset + l.metadata_size - 3,
        l.bundles_offset + 1000, std::uint64_t{good_.size() - 70}}) {
    auto bad = good_;
    bad[at] ^= std::byte{0xA5};
    expect_decompress_fails(bad, "checksum");
  }
}

TEST_F(CliBadInput, WrongMagic) {
  auto bad = good_;
  bad[0] = std::byte{'P'};
  expect_decompress_fails(bad, "magic");
}

TEST_F(CliBadInput, NewerVersion) {
  auto bad = good_;
  testing::put<std::uint16_t>(bad, 8, 7);
  testing::fix_checksums(bad);
  expect_decompress_fails(bad, "version");
}

TEST_F(CliBadInput, OffsetsBeyondTheFile) {
  auto bad = testing::expand(good_);
  const auto l = testing::layout_of(good_);
  testing::put<std::uint64_t>(bad, l.bundle_record(2) + 8, good_.size() * 3);
  testing::fix_checksums(bad);
  expect_decompress_fails(bad, "stored_bytes");
}

TEST_F(CliBadInput, HugeDeclaredSizes) {
  auto bad = testing::expand(good_);
  const auto l = testing::layout_of(good_);
  testing::put<std::uint64_t>(bad, l.bundle_record(1) + 40, std::uint64_t{1} << 61);
  testing::fix_checksums(bad);
  expect_decompress_fails(bad, "value_count");
  auto names = testing::expand(good_);
  testing::put<std::uint64_t>(names, l.index_offset + 16, std::uint64_t{1} << 62);
  testing::fix_checksums(names);
  expect_decompress_fails(names, "names_bytes");
}

TEST_F(CliBadInput, ChecksumMismatch) {
  auto bad = good_;
  const auto l = testing::layout_of(bad);
  bad[testing::get_u64(testing::expand(good_), l.bundle_record(3)) + 17] ^= std::byte{0x08};
  expect_decompress_fails(bad, "stored_checksum");
}

TEST_F(CliBadInput, InvalidSafetensorsJson) {
  expect_compress_fails(testing::safetensors_image(R"({"w":{"dtype":"BF16",)", {}), "invalid JSON");
}

TEST_F(CliBadInput, OverlappingTensors) {
  expect_compress_fails(
      testing::safetensors_image(R"({"a":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]},)"
                                 R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[6,14]}})",
                                 testing::weight_like_bytes(14, 2)),
      "overlap");
}

TEST_F(CliBadInput, OutOfOrderTensors) {
  expect_compress_fails(
      testing::safetensors_image(R"({"a":{"dtype":"BF16","shape":[4],"data_offsets":[8,0]}})",
                                 testing::weight_like_bytes(8, 2)),
      "out of order");
}

TEST_F(CliBadInput, OffsetsBeyondTheSafetensorsFile) {
  expect_compress_fails(
      testing::safetensors_image(R"({"a":{"dtype":"BF16","shape":[400],"data_offsets":[0,800]}})",
                                 testing::weight_like_bytes(8, 2)),
      "beyond the data section");
}

TEST_F(CliBadInput, MissingInputAndNotAContainer) {
  const auto r = run({"decompress", (dir_ / "nothing.fzip").string()});
  EXPECT_EQ(r.exit_code, 1);
  expect_decompress_fails(testing::read_file(cli_path()), "magic");  // an ELF file
}

// A small checkpoint file (a block of two BF16 tensors and an F32 one) with the given names.
void write_small_checkpoint(const fs::path& path,
                            std::vector<std::string> names = {"model.layers.0.q.weight",
                                                              "model.layers.0.k.weight", "norm"}) {
  std::vector<safetensors::tensor_spec> specs;
  for (std::size_t i = 0; i < names.size(); ++i)
    specs.push_back({names[i],
                     i + 1 == names.size() && names.size() > 1 ? safetensors::dtype::f32
                                                               : safetensors::dtype::bf16,
                     {64, 16}});
  const std::vector<std::pair<std::string, std::string>> metadata = {{"format", "pt"}};
  const error e = safetensors::write_file(
      path, specs, metadata, [](std::size_t i, std::span<std::byte> out) -> error {
        const auto bytes = testing::weight_like_bytes(out.size(), static_cast<std::uint32_t>(i));
        std::memcpy(out.data(), bytes.data(), out.size());
        return {};
      });
  if (e) throw exception(e);
}

// Every file and directory under `root` with its bytes: what a run must leave untouched.
std::map<std::string, std::vector<std::byte>> snapshot(const fs::path& root) {
  std::map<std::string, std::vector<std::byte>> files;
  for (const auto& e : fs::recursive_directory_iterator(root))
    files[e.path().string()] =
        e.is_regular_file() ? testing::read_file(e.path()) : std::vector<std::byte>{};
  return files;
}

// Issue 13 item 1: `compress model -o . --force` deleted the input model, unrelated files and its
// own output; `compress parent/model -o parent --force` deleted the input and exited 0.
TEST(Cli, ForceNeverDeletesTheInputOrFilesItDidNotWrite) {
  temp_dir dir;
  const fs::path parent = dir / "parent";
  const fs::path model = parent / "model";
  fs::create_directories(model);
  write_small_checkpoint(model / "model.safetensors");
  testing::write_text(model / "config.json", "{}\n");
  testing::write_text(parent / "unrelated.txt", "keep me\n");
  const auto before = snapshot(dir.path());
  auto r =
      run({"compress", "model", "-o", ".", "--force"}, {.cwd = parent, .interrupt = std::nullopt});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find("input"), std::string::npos) << r.err;
  EXPECT_EQ(snapshot(dir.path()), before);
  for (const fs::path& out : {parent, model, model / "sub", model / "..", dir.path()}) {
    r = run({"compress", model.string(), "-o", out.string(), "--force"});
    EXPECT_EQ(r.exit_code, 1) << out << "\n" << describe(r);
    EXPECT_EQ(snapshot(dir.path()), before) << out;
  }
  r = run({"compress", model.string(), "-o", (dir / "out").string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  r = run({"decompress", (dir / "out").string(), "-o", parent.string(), "--force"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_TRUE(fs::exists(model / "model.safetensors"));
  // A directory holding files the conversion does not write is not replaced either.
  r = run({"compress", model.string(), "-o", parent.string() + "/../parent", "--force"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  fs::create_directories(dir / "other");
  testing::write_text(dir / "other" / "notes.txt", "mine\n");
  r = run({"compress", model.string(), "-o", (dir / "other").string(), "--force"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find("notes.txt"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(dir / "other" / "notes.txt"));
  // Its own earlier output is what --force replaces.
  r = run({"compress", model.string(), "-o", (dir / "out").string(), "--force"});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(run({"verify", model.string(), (dir / "out").string()}).exit_code, 0);
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"other", "out", "parent"}));
}

// Issue 13 item 4: --force renamed a regular file over a FIFO or a device node (as root,
// `-o /dev/null --force` would replace /dev/null), and a dangling symlink was replaced even
// without --force.
TEST(Cli, SpecialFilesAndSymlinksAreNotReplacedByAccident) {
  temp_dir dir;
  write_small_checkpoint(dir / "m.safetensors");
  const auto input = (dir / "m.safetensors").string();
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0644), 0);
  auto r = run({"compress", input, "-o", (dir / "fifo").string(), "--force"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find("FIFO"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::is_fifo(dir / "fifo"));
  if (::geteuid() == 0) {  // only root can make a device node: a copy of /dev/null
    ASSERT_EQ(::mknod((dir / "null").c_str(), S_IFCHR | 0666, ::makedev(1, 3)), 0);
    r = run({"compress", input, "-o", (dir / "null").string(), "--force"});
    EXPECT_EQ(r.exit_code, 1) << describe(r);
    EXPECT_NE(r.err.find("device"), std::string::npos) << r.err;
    EXPECT_TRUE(fs::is_character_file(dir / "null"));
    fs::remove(dir / "null");
  }
  fs::create_symlink("nowhere.fzip", dir / "dangling.fzip");
  r = run({"compress", input, "-o", (dir / "dangling.fzip").string()});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::is_symlink(dir / "dangling.fzip"));
  EXPECT_FALSE(fs::exists(dir / "nowhere.fzip"));
  // With --force, a symlink is replaced as a link: its target is neither written nor deleted.
  testing::write_text(dir / "target.bin", "precious\n");
  fs::create_symlink("target.bin", dir / "link.fzip");
  r = run({"compress", input, "-o", (dir / "link.fzip").string(), "--force"});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_FALSE(fs::is_symlink(dir / "link.fzip"));
  EXPECT_EQ(testing::read_file(dir / "target.bin").size(), 9u);
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"dangling.fzip", "fifo", "link.fzip",
                                                     "m.safetensors", "target.bin"}));
}

// Issue 13 item 6: SIGINT was acted on only at the next progress report, so `info` (which has
// none) ignored it while it parsed a header.
TEST(Cli, InterruptStopsInfoWhileItParsesAHeader) {
  temp_dir dir;
  // A valid checkpoint whose header carries 20 MB (10 million numbers) in a field floatzip does
  // not read: parsing it takes about a second.
  std::string json = R"({"w":{"dtype":"BF16","shape":[4],"data_offsets":[0,8],"pad":[)";
  json.reserve(20'000'100);
  while (json.size() < 20'000'000) json += "0,";
  json += "0]}}";
  testing::write_file(dir / "big.safetensors",
                      testing::safetensors_image(json, testing::weight_like_bytes(8, 1)));
  [[maybe_unused]] const double header_mib = double(json.size()) / (1 << 20);
  json.clear();
  json.shrink_to_fit();
  auto r = run({"compress", (dir / "big.safetensors").string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  fs::remove(dir / "big.safetensors");
  // Item 3 end to end: the whole run stays near the mapped header's size (the tree built before
  // took about 16 times the header).
  r = run({"info", (dir / "big.fzip").string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
#if !defined(__SANITIZE_ADDRESS__)
  EXPECT_LT(double(r.max_rss_kb) / 1024, header_mib + 64) << "info peak RSS, KiB";
#endif
  r = run({"info", (dir / "big.fzip").string()},
          {.cwd = {}, .interrupt = std::chrono::milliseconds(100)});
  EXPECT_EQ(r.exit_code, 130) << describe(r);
  EXPECT_NE(r.err.find("interrupted"), std::string::npos) << describe(r);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"big.fzip"});
}

// Issue 13 item 8: `info` printed tensor names from the file as they were: NUL, newlines and
// terminal escape sequences reached the terminal.
TEST(Cli, InfoEscapesNamesFromTheFile) {
  temp_dir dir;
  const std::string evil = "x\x1b]0;owned\x07\ny\x1b[2J\xc2\x9b" + std::string(1, '\0') + "z";
  write_small_checkpoint(dir / "m.safetensors", {evil});
  ASSERT_EQ(run({"compress", (dir / "m.safetensors").string()}).exit_code, 0);
  auto r = run({"info", (dir / "m.fzip").string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  for (char c : r.out)
    EXPECT_TRUE(c == '\n' || static_cast<unsigned char>(c) >= 0x20) << int(c) << " in " << r.out;
  EXPECT_EQ(r.out.find("\xc2\x9b"), std::string::npos) << r.out;  // C1 CSI
  EXPECT_NE(r.out.find("x\\x1b]0;owned\\x07\\x0ay\\x1b[2J\\xc2\\x9b\\x00z"), std::string::npos)
      << r.out;
  r = run({"info", (dir / "m.fzip").string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(nlohmann::json::parse(r.out).at("bundles").at(0).at("name").get<std::string>(), evil);
}

// Issue 13 item 9: `info --json` on a file whose path is not UTF-8 failed with a raw
// json.exception.type_error.316, and `-o ""` gave "cannot rename ... to :".
TEST(Cli, PathsThatAreNotUtf8AndEmptyPaths) {
  temp_dir dir;
  write_small_checkpoint(dir / "m.safetensors");
  const fs::path odd = dir / "m\xff\xfe.fzip";
  auto r = run({"compress", (dir / "m.safetensors").string(), "-o", odd.string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  r = run({"info", odd.string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const auto json = nlohmann::json::parse(r.out);
  EXPECT_NE(json.at("file").get<std::string>().find("m\\xff\\xfe.fzip"), std::string::npos)
      << r.out;
  r = run({"info", odd.string()});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("m\\xff\\xfe.fzip"), std::string::npos) << r.out;
  r = run({"compress", (dir / "m.safetensors").string(), "-o", ""});
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("empty"), std::string::npos) << r.err;
  r = run({"decompress", odd.string(), "-o", ""});
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"m.safetensors", odd.filename().string()}));
}

TEST(Cli, DemoRunsAndVerifies) {
  temp_dir dir;
  const auto r = run({"demo", "--size-mb", "8", "--keep", (dir / "demo").string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("bit-identical"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("entropy bound"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("unlimited-Huffman ideal"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(dir / "demo" / "llama.fzip"));
  // Deterministic: the same seed gives the same checkpoint.
  const auto again = run({"demo", "--size-mb", "8", "--keep", (dir / "again").string()});
  ASSERT_EQ(again.exit_code, 0) << describe(again);
  EXPECT_EQ(testing::read_file(dir / "demo" / "llama.safetensors"),
            testing::read_file(dir / "again" / "llama.safetensors"));
  // Heavy-tailed weights compress like trained ones: 10.5-11 bits per weight.
  const auto info = run({"info", (dir / "demo" / "llama.fzip").string(), "--json"});
  const auto json = nlohmann::json::parse(info.out);
  EXPECT_GT(json.at("bits_per_bf16_value").get<double>(), 10.5);
  EXPECT_LT(json.at("bits_per_bf16_value").get<double>(), 11.0);
}

TEST(Cli, BenchReportsThroughputAndNoMadeUpGpuFigures) {
  const auto model = testing::models_dir() / "stories260K.bf16.safetensors";
  if (!fs::exists(model)) GTEST_SKIP() << model << " not present";
  const auto r = run({"bench", model.string(), "--repeat", "1"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("encode GB/s"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("memcpy"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("GPU"), std::string::npos) << r.out;
}

TEST(Cli, CompressionMemoryIsBoundedByBundlesNotTheModel) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's quarantine keeps freed memory resident";
#endif
  // 48 transformer blocks of 2 MiB each (96 MiB of BF16): streaming compression and
  // decompression must stay far below the model's size in resident memory.
  temp_dir dir;
  std::vector<safetensors::tensor_spec> specs;
  for (int layer = 0; layer < 48; ++layer)
    for (const char* name : {"q", "k"})
      specs.push_back({"model.layers." + std::to_string(layer) + "." + name + ".weight",
                       safetensors::dtype::bf16,
                       {512, 1024}});
  const auto path = dir / "big.safetensors";
  ASSERT_FALSE(safetensors::write_file(
      path, specs, {}, [](std::size_t i, std::span<std::byte> out) -> error {
        const auto bytes = testing::weight_like_bytes(out.size(), static_cast<std::uint32_t>(i));
        std::memcpy(out.data(), bytes.data(), out.size());
        return {};
      }));
  const double model_mb = double(fs::file_size(path)) / (1 << 20);
  auto r = run({"compress", path.string(), "--threads", "2"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const double compress_mb = double(r.max_rss_kb) / 1024;
  r = run({"decompress", (dir / "big.fzip").string(), "-o", (dir / "back.safetensors").string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const double decompress_mb = double(r.max_rss_kb) / 1024;
  EXPECT_LT(compress_mb, model_mb / 3) << "compress peak RSS " << compress_mb << " MiB";
  EXPECT_LT(decompress_mb, model_mb / 3) << "decompress peak RSS " << decompress_mb << " MiB";
  RecordProperty("compress_peak_rss_mib", std::to_string(compress_mb));
  RecordProperty("decompress_peak_rss_mib", std::to_string(decompress_mb));
  EXPECT_EQ(testing::read_file(path), testing::read_file(dir / "back.safetensors"));

  // Interrupted part-way (Ctrl-C), compression stops and removes its temporary file. On a
  // machine fast enough to finish first, the output must then be complete.
  fs::remove(dir / "back.safetensors");
  const int code = run_interrupted(
      {"compress", path.string(), "-o", (dir / "i.fzip").string(), "--threads", "1"},
      std::chrono::milliseconds(30));
  if (code == 0) {
    EXPECT_FALSE(container_reader::open(dir / "i.fzip").value().verify_all());
  } else {
    EXPECT_EQ(code, 130);
    EXPECT_EQ(dir.entries(), (std::vector<std::string>{"big.fzip", "big.safetensors"}));
  }
}

}  // namespace
}  // namespace floatzip
