// floatzip CPU decode (and encode) the way users run it, against its own ceiling and zstd, with
// every contender interleaved in each repetition (issue 14).
//
//   floatzip_bench_user_paths [--size-mb N] [--reps N] [--dir DIR] [--cli PATH] [--json FILE]
//                             [--peer "COMMAND"] [--cold-pause-s S]
//
// Input: a synthetic Llama-shaped checkpoint (llama_synth.hpp) of at least N MB (default 256),
// written as a safetensors file, compressed with `floatzip compress` (the library's
// compress_file) and with `zstd -1`. Each repetition times, in this order:
//
//   in memory, per bundle (one transformer block), all bundles of the checkpoint, threads T = 1, 2:
//     encode             make_encode_plan + encode_bundle into one reused buffer
//     decode_reused      decompress() into one buffer reused for every bundle (the ceiling)
//     decode_vector      std::vector<uint16_t> out(n); decompress(view, out) (a user's first try)
//     decode_values      decompress_values(view), the library's allocating decode, as shipped
//                        (page_policy::adaptive)
//     values_first_touch the same with each page policy of detail/page_memory.hpp: 4 KiB pages
//     values_huge          first touched by the decoding threads, MADV_HUGEPAGE, MAP_POPULATE,
//     values_populate      MADV_POPULATE_WRITE on the decoding threads before they decode
//     values_madv_pop
//     cold_values        decode_values, values_huge and values_madv_pop again, each after an
//     cold_huge          untimed pause of S seconds (default 3; 0 leaves them out) in which the
//     cold_madv_pop      memory the previous contender freed stays free: on a VM with free page
//                        reporting the host takes it back, as it has the memory a process gets
//                        when it loads a model (the contenders above reuse memory freed just
//                        before them). The process's huge-page gauge (page_memory.hpp) is reset
//                        before every contender, so each measures its own memory state.
//   file to file (child processes, output in DIR, page cache warm, no fsync):
//     cli_decompress     floatzip decompress X.fzip -o Y --threads 1
//     zstd_d             zstd -d -q X.safetensors.zst -o Y
//   peer (optional): --peer runs COMMAND once per repetition; it must print lines
//     "name seconds" (e.g. bench/zipnn_peer.py timing ZipNN's C calls on the same file).
//
// Reported: GB/s (BF16 bytes of the checkpoint per second) per repetition and the median, and
// per-repetition ratios against the baseline of the same repetition. Every decode is checked
// against the original values once before timing.
#include <fmt/core.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "floatzip/container.hpp"
#include "floatzip/decoder.hpp"
#include "floatzip/encoder.hpp"
#include "llama_synth.hpp"

namespace {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n == 0 ? 0.0 : n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int run_shell(const std::string& command) {
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void require(bool ok, const std::string& what) {
  if (!ok) {
    fmt::print(stderr, "bench_user_paths: {}\n", what);
    std::exit(1);
  }
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct options {
  std::uint64_t size_mb = 256;
  int reps = 5;
  fs::path dir;
  std::string cli;
  std::string json;
  std::string peer;
  double cold_pause_s = 3;
};

options parse(int argc, char** argv) {
  options o;
#ifdef FLOATZIP_CLI_PATH
  o.cli = FLOATZIP_CLI_PATH;
#endif
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    require(i + 1 < argc, "option " + a + " needs a value");
    const std::string v = argv[++i];
    if (a == "--size-mb") {
      o.size_mb = std::stoull(v);
    } else if (a == "--reps") {
      o.reps = std::stoi(v);
    } else if (a == "--dir") {
      o.dir = v;
    } else if (a == "--cli") {
      o.cli = v;
    } else if (a == "--json") {
      o.json = v;
    } else if (a == "--peer") {
      o.peer = v;
    } else if (a == "--cold-pause-s") {
      o.cold_pause_s = std::stod(v);
    } else {
      require(false, "unknown option " + a);
    }
  }
  require(o.reps >= 1 && o.size_mb >= 1, "--reps and --size-mb must be positive");
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace floatzip;
  const options opt = parse(argc, argv);
  require(!opt.cli.empty(), "name the floatzip CLI with --cli");
  const fs::path dir =
      opt.dir.empty() ? fs::temp_directory_path() / "floatzip_bench_user_paths" : opt.dir;
  fs::create_directories(dir);

  // ---- inputs -----------------------------------------------------------------------------------
  const auto ckpt = bench::make_llama_checkpoint(opt.size_mb << 20, 42);
  const double gb = double(ckpt.size_bytes()) / 1e9;
  const fs::path st = dir / "llama.safetensors";
  const fs::path fz = dir / "llama.fzip";
  const fs::path zs = dir / "llama.safetensors.zst";
  const fs::path out = dir / "out.safetensors";
  {
    std::vector<safetensors::tensor_spec> specs;
    std::vector<const bench::synthetic_tensor*> order;
    for (const auto& b : ckpt.blocks) {
      for (const auto& t : b.tensors) {
        specs.push_back({t.name, safetensors::dtype::bf16, t.shape});
        order.push_back(&t);
      }
    }
    const std::vector<std::pair<std::string, std::string>> metadata = {{"format", "pt"}};
    fs::remove(st);
    require(!safetensors::write_file(st, specs, metadata,
                                     [&](std::size_t i, std::span<std::byte> bytes) -> error {
                                       std::memcpy(bytes.data(), order[i]->values.data(),
                                                   bytes.size());
                                       return {};
                                     }),
            "cannot write " + st.string());
  }
  fs::remove(fz);
  require(compress_file(st, fz).has_value(), "cannot compress " + st.string());
  require(run_shell("zstd -1 -q -f " + shell_quote(st) + " -o " + shell_quote(zs)) == 0,
          "zstd -1 failed (is the zstd package installed?)");

  // In-memory bundles, as the container cuts them.
  std::vector<std::vector<std::span<const std::uint16_t>>> tensors;
  std::vector<std::vector<std::byte>> bundles;
  std::vector<bundle_view> views;
  std::uint64_t max_values = 0;
  for (const auto& b : ckpt.blocks) {
    tensors.push_back(b.spans());
    bundles.push_back(compress_bundle(tensors.back()));
    max_values = std::max(max_values, b.value_count());
  }
  for (const auto& b : bundles) views.push_back(parse_bundle(b).value());
  std::vector<std::byte> encode_buffer;
  std::vector<std::uint16_t> reused(max_values, 1);  // touched: the ceiling has no faults

  // Correctness of every in-memory path once, before timing.
  for (std::size_t b = 0; b < views.size(); ++b) {
    const auto want = ckpt.blocks[b].spans();
    auto check = [&](std::span<const std::uint16_t> got, const char* path) {
      std::uint64_t at = 0;
      for (const auto& t : want) {
        require(std::equal(t.begin(), t.end(), got.begin() + static_cast<std::ptrdiff_t>(at)),
                std::string(path) + " decodes bundle " + std::to_string(b) + " wrongly");
        at += t.size();
      }
    };
    for (auto policy : {detail::page_policy::first_touch, detail::page_policy::huge_pages,
                        detail::page_policy::populate, detail::page_policy::populate_parallel,
                        detail::page_policy::adaptive}) {
      auto v = detail::decompress_values(views[b], {2}, policy);
      require(v.has_value(), "decompress_values failed");
      check(v->values(), "decompress_values");
    }
  }

  // ---- contenders
  // ---------------------------------------------------------------------------------
  struct contender {
    std::string name;
    std::function<double()> run;  // seconds
    bool cold = false;            // run after an untimed pause of --cold-pause-s
  };
  std::vector<contender> contenders;
  for (unsigned threads : {1u, 2u}) {
    const std::string t = "/t" + std::to_string(threads);
    const decode_options dopt{threads};
    contenders.push_back({"encode" + t, [&, threads] {
                            encode_options eopt;
                            eopt.threads = threads;
                            const auto t0 = clock_type::now();
                            for (const auto& spans : tensors) {
                              const auto plan = make_encode_plan(spans, eopt);
                              if (encode_buffer.size() < plan.encoded_size())
                                encode_buffer.resize(plan.encoded_size());
                              require(!encode_bundle(plan, encode_buffer), "encode failed");
                            }
                            return seconds_since(t0);
                          }});
    contenders.push_back({"decode_reused" + t, [&, dopt] {
                            const auto t0 = clock_type::now();
                            for (const auto& v : views)
                              require(!decompress(v, reused, dopt), "decode failed");
                            return seconds_since(t0);
                          }});
    // Fresh outputs are kept until the pass ends, as when a model is loaded (freed one by one,
    // malloc would hand the same, already faulted pages to the next bundle), and freed untimed.
    contenders.push_back({"decode_vector" + t, [&, dopt] {
                            std::vector<std::vector<std::uint16_t>> kept;
                            kept.reserve(views.size());
                            const auto t0 = clock_type::now();
                            for (const auto& v : views) {
                              kept.emplace_back(v.value_count());
                              require(!decompress(v, kept.back(), dopt), "decode failed");
                            }
                            return seconds_since(t0);
                          }});
    contenders.push_back({"decode_values" + t, [&, dopt] {
                            std::vector<value_buffer> kept;
                            kept.reserve(views.size());
                            const auto t0 = clock_type::now();
                            for (const auto& v : views) {
                              auto values = decompress_values(v, dopt);
                              require(values.has_value(), "decode failed");
                              kept.push_back(std::move(*values));
                            }
                            return seconds_since(t0);
                          }});
    const std::pair<const char*, detail::page_policy> policies[] = {
        {"values_first_touch", detail::page_policy::first_touch},
        {"values_huge", detail::page_policy::huge_pages},
        {"values_populate", detail::page_policy::populate},
        {"values_madv_pop", detail::page_policy::populate_parallel}};
    const std::pair<const char*, detail::page_policy> cold_policies[] = {
        {"cold_values", detail::kValuesPagePolicy},
        {"cold_huge", detail::page_policy::huge_pages},
        {"cold_madv_pop", detail::page_policy::populate_parallel}};
    std::vector<std::pair<std::string, detail::page_policy>> runs;
    for (const auto& [name, policy] : policies) runs.emplace_back(name + t, policy);
    if (opt.cold_pause_s > 0) {
      for (const auto& [name, policy] : cold_policies) runs.emplace_back(name + t, policy);
    }
    for (const auto& [name, policy] : runs) {
      contenders.push_back({name,
                            [&, dopt, policy = policy] {
                              std::vector<value_buffer> kept;
                              kept.reserve(views.size());
                              const auto t0 = clock_type::now();
                              for (const auto& v : views) {
                                auto values = detail::decompress_values(v, dopt, policy);
                                require(values.has_value(), "decode failed");
                                kept.push_back(std::move(*values));
                              }
                              return seconds_since(t0);
                            },
                            name.rfind("cold_", 0) == 0});
    }
  }
  auto timed_child = [&](const std::string& command) {
    fs::remove(out);
    const auto t0 = clock_type::now();
    require(run_shell(command) == 0, "failed: " + command);
    const double s = seconds_since(t0);
    require(fs::file_size(out) == fs::file_size(st), "wrong output size from: " + command);
    return s;
  };
  const std::string cli_command = shell_quote(opt.cli) + " decompress " + shell_quote(fz) + " -o " +
                                  shell_quote(out) + " --threads 1 --force >/dev/null";
  const std::string zstd_command =
      "zstd -d -q -f " + shell_quote(zs) + " -o " + shell_quote(out) + " 2>/dev/null";
  contenders.push_back({"cli_decompress/t1", [&] { return timed_child(cli_command); }});
  contenders.push_back({"zstd_d", [&] { return timed_child(zstd_command); }});
  // Byte-identical output of the CLI, once.
  timed_child(cli_command);
  require(run_shell("cmp -s " + shell_quote(st) + " " + shell_quote(out)) == 0,
          "floatzip decompress output differs from the original");

  // ---- interleaved repetitions
  // --------------------------------------------------------------------
  std::map<std::string, std::vector<double>> gbps;
  std::vector<std::string> order;
  for (const auto& c : contenders) order.push_back(c.name);
  const fs::path peer_out = dir / "peer.txt";
  for (int r = 0; r < opt.reps; ++r) {
    for (const auto& c : contenders) {
      detail::huge_page_gauge::process().reset();
      if (c.cold) ::usleep(static_cast<useconds_t>(opt.cold_pause_s * 1e6));
      gbps[c.name].push_back(gb / c.run());
    }
    if (!opt.peer.empty()) {
      require(run_shell(opt.peer + " > " + shell_quote(peer_out)) == 0, "peer command failed");
      std::FILE* f = std::fopen(peer_out.c_str(), "r");
      require(f != nullptr, "no peer output");
      char name[128];
      double s = 0;
      while (std::fscanf(f, "%127s %lf", name, &s) == 2) {
        const std::string n = std::string("peer:") + name;
        if (r == 0) order.push_back(n);
        gbps[n].push_back(gb / s);
      }
      std::fclose(f);
    }
    fmt::print(stderr, "repetition {} of {} done\n", r + 1, opt.reps);
  }
  fs::remove(out);

  // ---- report
  // -------------------------------------------------------------------------------------
  fmt::print(
      "checkpoint: {} tensors in {} bundles, {:.1f} MB BF16; .fzip {:.1f} MB, .zst {:.1f} MB\n",
      ckpt.blocks.size(), views.size(), gb * 1e3, double(fs::file_size(fz)) / 1e6,
      double(fs::file_size(zs)) / 1e6);
  fmt::print("{:<24} {:>8}  per repetition (GB/s)\n", "contender", "median");
  for (const auto& n : order) {
    std::string reps;
    for (double v : gbps[n]) reps += fmt::format(" {:.3f}", v);
    fmt::print("{:<24} {:>8.3f} {}\n", n, median(gbps[n]), reps);
  }
  // Ratios against the baseline of the same repetition.
  auto ratio = [&](const std::string& a, const std::string& b) {
    if (!gbps.count(a) || !gbps.count(b)) return;
    std::vector<double> r;
    std::string reps;
    for (std::size_t i = 0; i < gbps[a].size() && i < gbps[b].size(); ++i) {
      r.push_back(gbps[a][i] / gbps[b][i]);
      reps += fmt::format(" {:.3f}", r.back());
    }
    fmt::print("{:<44} {:>6.3f} {}\n", a + " / " + b, median(r), reps);
  };
  fmt::print("\nratio (median, then per repetition)\n");
  for (const char* t : {"/t1", "/t2"}) {
    for (const char* n :
         {"decode_values", "values_first_touch", "values_huge", "values_populate",
          "values_madv_pop", "decode_vector", "cold_values", "cold_huge", "cold_madv_pop"})
      ratio(std::string(n) + t, std::string("decode_reused") + t);
  }
  ratio("decode_values/t2", "decode_values/t1");
  ratio("decode_reused/t2", "decode_reused/t1");
  ratio("encode/t2", "encode/t1");
  ratio("cli_decompress/t1", "zstd_d");
  for (const auto& n : order) {
    if (n.rfind("peer:", 0) != 0) continue;
    const std::string t = n.substr(n.size() - 3);
    if (n.find("decompress") != std::string::npos) {
      ratio("decode_values" + t, n);
      ratio("cold_values" + t, n);
    }
    if (n.find("compress") != std::string::npos && n.find("decompress") == std::string::npos)
      ratio("encode" + t, n);
  }
  if (!opt.json.empty()) {
    std::FILE* f = std::fopen(opt.json.c_str(), "w");
    require(f != nullptr, "cannot write " + opt.json);
    fmt::print(f, "{{\"bf16_bytes\": {}, \"gbps\": {{", ckpt.size_bytes());
    bool first = true;
    for (const auto& n : order) {
      std::string reps;
      for (double v : gbps[n]) reps += fmt::format("{}{:.4f}", reps.empty() ? "" : ", ", v);
      fmt::print(f, "{}\"{}\": [{}]", first ? "" : ", ", n, reps);
      first = false;
    }
    fmt::print(f, "}}}}\n");
    std::fclose(f);
  }
  return 0;
}
