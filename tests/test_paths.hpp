// Paths the tests get from the build at run time: the real models' directory (../shared/models by
// default; read-only, never copied) and, for test_cli, the floatzip command.
//
// They are not compile definitions: an absolute path compiled into a test translation unit made
// ccache miss it whenever the checkout moved (CI clones into a new folder). A setting is read, in
// order, from
//   1. an environment variable: ctest sets FLOATZIP_MODELS_DIR for every test from the CMake cache
//      variable of the same name (floatzip_add_test in tests/CMakeLists.txt), and a user may set
//      it to point a test binary run by hand at another directory;
//   2. a one-line file next to the test binary, which CMake writes with the same value, so that a
//      binary run by hand from the build directory finds what ctest gives it.
// When the models directory is not there, tests that need it GTEST_SKIP() with
// models_absent_message().
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

namespace floatzip::test {

// The setting from `variable` in the environment, else from the first line of `file_name` beside
// the running binary; empty when neither has it.
inline std::filesystem::path path_setting(const char* variable, const char* file_name) {
  if (const char* from_environment = std::getenv(variable);
      from_environment != nullptr && *from_environment != '\0')
    return from_environment;
  std::error_code ec;
  const std::filesystem::path binary = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return {};
  std::ifstream file(binary.parent_path() / file_name);
  std::string line;
  if (!std::getline(file, line)) return {};
  return line;
}

inline constexpr const char* kModelsDirVariable = "FLOATZIP_MODELS_DIR";

inline std::filesystem::path models_dir() {
  static const std::filesystem::path dir =
      path_setting(kModelsDirVariable, "floatzip_models_dir.txt");
  return dir;
}

inline bool models_present() {
  std::error_code ec;
  return !models_dir().empty() && std::filesystem::is_directory(models_dir(), ec);
}

inline std::string models_absent_message() {
  const std::string where = models_dir().empty()
                                ? std::string("no models directory given")
                                : "real models not found at " + models_dir().string();
  return where + " (ctest sets the environment variable " + kModelsDirVariable +
         " from the CMake cache variable of that name; set it yourself to point a test binary at "
         "another directory); skipping";
}

}  // namespace floatzip::test
