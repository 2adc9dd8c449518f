// The real models the llama_generate tests run (CPU path and GPU path), and a test fixture that
// compresses them once per test program.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

#include "floatzip/container.hpp"
#include "test_paths.hpp"

namespace llama_test {

namespace fs = std::filesystem;

inline const fs::path kModels = floatzip::test::models_dir();

struct model_files {
  const char* name;
  fs::path bf16() const { return kModels / (std::string(name) + ".bf16.safetensors"); }
  fs::path config() const { return kModels / (std::string(name) + ".config.json"); }
};
inline constexpr model_files kStories{"stories260K"};
inline constexpr model_files kAidreams{"aidreams260K"};
inline constexpr model_files kTangPoem{"tang-poem-750K"};

// GTEST_SKIP returns from the function it is in, so this is a macro: a helper function could not
// end the test.
#define LLAMA_TEST_SKIP_WITHOUT(model)                                      \
  do {                                                                      \
    for (const auto& p_ : {(model).bf16(), (model).config()})               \
      if (!std::filesystem::exists(p_)) GTEST_SKIP() << p_ << " is absent"; \
  } while (false)

// Compresses the three models once, before the suite's first test, into a private temporary
// directory that the suite removes at its end; fzip(model) is the compressed file. Every test
// skips with the common message when the models directory is absent.
class compressed_models : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::is_directory(kModels)) return;
    directory_ = fs::temp_directory_path() / ("floatzip_test_llama_" + std::to_string(::getpid()));
    fs::create_directories(directory_);
    for (const auto& model : {kStories, kAidreams, kTangPoem}) {
      if (!fs::exists(model.bf16())) continue;
      auto totals = floatzip::compress_file(model.bf16(), fzip(model));
      ASSERT_TRUE(totals.has_value()) << totals.error().message;
    }
  }
  static void TearDownTestSuite() {
    std::error_code ignored;
    if (!directory_.empty()) fs::remove_all(directory_, ignored);
  }

  void SetUp() override {
    if (!floatzip::test::models_present()) GTEST_SKIP() << floatzip::test::models_absent_message();
  }

  static fs::path fzip(const model_files& model) {
    return directory_ / (std::string(model.name) + ".fzip");
  }

  static inline fs::path directory_;
};

}  // namespace llama_test
