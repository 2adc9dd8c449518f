// floatzip_format_files: safetensors files of every float format made from the real models, for
// bench/peers (see format_files.hpp for how each is made).
//
//   floatzip_format_files MODELS_DIR OUT_DIR
//
// writes, for each MODEL.bf16.safetensors in MODELS_DIR, OUT_DIR/MODEL.bf16-in-f32.safetensors,
// MODEL.f8_e4m3.safetensors and MODEL.f8_e5m2.safetensors (rounded from MODEL.f32.safetensors
// when it exists, else from the BF16 weights), MODEL.f16-from-bf16.safetensors (the BF16 weights
// rounded to F16: a BF16 checkpoint saved as F16), MODEL.f16.safetensors when MODELS_DIR has
// none but has MODEL.f32.safetensors (rounded from it), and MODEL.mixed.safetensors when the
// model is there in BF16, F16 and F32.
// Prints the paths it wrote.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>

#include "format_files.hpp"

namespace fs = std::filesystem;
namespace ff = floatzip::format_files;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s MODELS_DIR OUT_DIR\n", argv[0]);
    return 2;
  }
  const fs::path models = argv[1];
  const fs::path out = argv[2];
  try {
    fs::create_directories(out);
    auto write = [&](const std::string& name, const std::vector<ff::tensor>& tensors) {
      ff::write_safetensors(out / name, tensors);
      std::printf("%s\n", (out / name).c_str());
    };
    constexpr std::string_view kSuffix = ".bf16.safetensors";
    std::vector<fs::path> sources;
    for (const auto& e : fs::directory_iterator(models)) {
      const std::string name = e.path().filename().string();
      if (name.size() > kSuffix.size() && name.ends_with(kSuffix)) sources.push_back(e.path());
    }
    std::sort(sources.begin(), sources.end());
    for (const auto& path : sources) {
      const std::string name = path.filename().string();
      const std::string model = name.substr(0, name.size() - kSuffix.size());
      const auto bf16 = ff::read_tensors(path);
      const fs::path f32_path = models / (model + ".f32.safetensors");
      const auto precise = fs::exists(f32_path) ? ff::read_tensors(f32_path) : bf16;
      write(model + ".bf16-in-f32.safetensors", ff::widened_file(bf16));
      write(model + ".f8_e4m3.safetensors", ff::to_fp8_file(precise, ff::fp8_kind::e4m3));
      write(model + ".f8_e5m2.safetensors", ff::to_fp8_file(precise, ff::fp8_kind::e5m2));
      const fs::path f16_path = models / (model + ".f16.safetensors");
      // F16 rounded from BF16 values keeps their 7 mantissa bits: its 3 lowest are zero, which
      // a real F16 checkpoint's are not (the name says which it is).
      write(model + ".f16-from-bf16.safetensors", ff::to_f16_file(bf16));
      if (!fs::exists(f16_path) && fs::exists(f32_path))
        write(model + ".f16.safetensors", ff::to_f16_file(precise));
      if (fs::exists(f16_path) && fs::exists(f32_path))
        write(model + ".mixed.safetensors",
              ff::mixed_file(bf16, ff::read_tensors(f16_path), precise));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "floatzip_format_files: %s\n", e.what());
    return 1;
  }
  return 0;
}
