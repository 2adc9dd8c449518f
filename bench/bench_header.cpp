// Parsing a safetensors header of many tensors (issue 13: the JSON parse was quadratic in the
// number of keys, 80 k keys took 104 s). Times floatzip::safetensors::parse_header, a bounded SAX
// parse into flat structures, against two baselines on the same text in the same run:
// nlohmann::json's DOM parse (std::map objects: n log n, the tree floatzip no longer builds) and
// nlohmann::ordered_json's DOM parse, the parser floatzip used before (each new key compared
// with every earlier one), at sizes it finishes in reasonable time.
//
//   floatzip_bench_header [--benchmark_filter=...]
//
// Items per second are tensors per second; bytes per second are JSON bytes per second.
#include <benchmark/benchmark.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "floatzip/safetensors.hpp"

namespace {

// A header of `count` one-value BF16 tensors named like a mixture-of-experts model's.
const std::string& header_json(std::size_t count) {
  static std::vector<std::pair<std::size_t, std::string>> cache;
  for (const auto& [n, text] : cache)
    if (n == count) return text;
  std::string json = "{\"__metadata__\":{\"format\":\"pt\"}";
  for (std::size_t i = 0; i < count; ++i)
    json += ",\"model.layers." + std::to_string(i / 256) + ".mlp.experts." +
            std::to_string(i % 256) + ".up_proj.weight\":{\"dtype\":\"BF16\",\"shape\":[1]," +
            "\"data_offsets\":[" + std::to_string(2 * i) + "," + std::to_string(2 * i + 2) + "]}";
  json += "}";
  cache.emplace_back(count, std::move(json));
  return cache.back().second;
}

std::vector<std::byte> file_image(std::size_t count) {
  const std::string& json = header_json(count);
  std::vector<std::byte> file(8 + json.size() + 2 * count);
  const std::uint64_t n = json.size();
  std::memcpy(file.data(), &n, 8);
  std::memcpy(file.data() + 8, json.data(), json.size());
  return file;
}

void BM_ParseHeader(benchmark::State& state) {
  const auto count = static_cast<std::size_t>(state.range(0));
  const auto file = file_image(count);
  for (auto _ : state) {
    auto h = floatzip::safetensors::parse_header(file, file.size(), "bench.safetensors");
    if (!h || h->tensors.size() != count) state.SkipWithError("parse failed");
    benchmark::DoNotOptimize(h);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(count));
  state.SetBytesProcessed(state.iterations() *
                          static_cast<std::int64_t>(header_json(count).size()));
}

template <class Json>
void BM_NlohmannDom(benchmark::State& state) {
  const auto count = static_cast<std::size_t>(state.range(0));
  const std::string& json = header_json(count);
  for (auto _ : state) {
    auto tree = Json::parse(json);
    if (tree.size() != count + 1) state.SkipWithError("parse failed");
    benchmark::DoNotOptimize(tree);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(count));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(json.size()));
}

}  // namespace

BENCHMARK(BM_ParseHeader)->Arg(1'000)->Arg(10'000)->Arg(100'000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_NlohmannDom<nlohmann::json>)
    ->Name("BM_JsonDomBaseline")
    ->Arg(1'000)
    ->Arg(10'000)
    ->Arg(100'000)
    ->Unit(benchmark::kMillisecond);
// The parser before issue 13: quadratic, so 100 k keys (about a minute) is left out.
BENCHMARK(BM_NlohmannDom<nlohmann::ordered_json>)
    ->Name("BM_OrderedJsonDomBefore")
    ->Arg(1'000)
    ->Arg(10'000)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
