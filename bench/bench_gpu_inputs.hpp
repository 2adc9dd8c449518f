// floatzip GPU benchmarks: the Llama-shaped transformer block that the GPU benchmark times and
// the kernel cost model (bench_gpu_model.cpp) replays, generated identically for both.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <thread>
#include <vector>

#include "llama_synth.hpp"

namespace floatzip::bench {

// Runs fn(first, count) over [0, n) on all cores.
template <class Fn>
void parallel_slices(std::uint64_t n, Fn&& fn) {
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      const std::uint64_t first = n * t / threads;
      fn(first, n * (t + 1) / threads - first);
    });
  }
  for (auto& th : pool) th.join();
}

// One transformer block of Llama-7B proportions (two norms, q, k, v, o, gate, up, down) holding
// about target_bytes of BF16; `tensors` are spans into `values`.
struct llama_block {
  std::vector<std::uint16_t> values;
  std::vector<std::span<const std::uint16_t>> tensors;
};

inline llama_block make_llama_block_values(std::uint64_t target_bytes, std::uint64_t seed) {
  const double values = static_cast<double>(target_bytes) / 2;
  const double mlp_ratio = 11008.0 / 4096.0;
  auto round_32 = [](double x) {
    return std::max<std::uint64_t>(32, static_cast<std::uint64_t>(std::llround(x / 32)) * 32);
  };
  const std::uint64_t h = round_32(std::sqrt(values / (4 + 3 * mlp_ratio)));
  const std::uint64_t m = round_32(static_cast<double>(h) * mlp_ratio);
  struct tensor_spec {
    std::uint64_t count;
    bool norm;
  };
  const std::vector<tensor_spec> specs = {{h, true},      {h * h, false}, {h * h, false},
                                          {h * h, false}, {h * h, false}, {h, true},
                                          {m * h, false}, {m * h, false}, {h * m, false}};
  llama_block block;
  std::uint64_t total = 0;
  for (const auto& s : specs) total += s.count;
  block.values.resize(total);
  std::uint64_t offset = 0;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const std::uint64_t tensor_seed = splitmix64_mix(seed + (i + 1) * kGoldenGamma);
    const float scale = specs[i].norm ? 0.05f : detail::matrix_scale(tensor_seed);
    const float center = specs[i].norm ? 0.3f : 0.0f;
    std::uint16_t* dst = block.values.data() + offset;
    parallel_slices(specs[i].count, [&](std::uint64_t first, std::uint64_t count) {
      fill_student_t_bf16(std::span<std::uint16_t>(dst + first, count), center, scale, tensor_seed,
                          first);
    });
    block.tensors.emplace_back(dst, specs[i].count);
    offset += specs[i].count;
  }
  return block;
}

}  // namespace floatzip::bench
