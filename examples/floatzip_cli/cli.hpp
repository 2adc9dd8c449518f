// The `floatzip` command: pieces shared by the subcommands (arguments, progress, formatting).
#pragma once

#include <fmt/core.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "floatzip/detail/file_io.hpp"
#include "floatzip/error.hpp"

namespace floatzip::cli {

// Exit codes: the contract scripts rely on.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // bad input, failed verification, I/O error
inline constexpr int kExitUsage = 2;    // the command line itself is wrong

// Thrown for command-line mistakes; main() prints it with a hint and exits with kExitUsage.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct option_spec {
  std::string_view long_name;  // without "--"
  char short_name = 0;         // 0 = none
  bool takes_value = false;
};

// A parsed command line of one subcommand: positionals, flags and option values.
class arguments {
 public:
  arguments(const std::vector<std::string>& tokens, std::initializer_list<option_spec> specs) {
    bool options_done = false;
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      const std::string& token = tokens[i];
      if (options_done || token.size() < 2 || token[0] != '-') {
        positionals_.push_back(token);
        continue;
      }
      if (token == "--") {
        options_done = true;
        continue;
      }
      const option_spec* spec = nullptr;
      std::optional<std::string> inline_value;
      if (token.rfind("--", 0) == 0) {
        std::string_view name = std::string_view(token).substr(2);
        if (const auto eq = name.find('='); eq != std::string_view::npos) {
          inline_value = std::string(name.substr(eq + 1));
          name = name.substr(0, eq);
        }
        for (const auto& s : specs)
          if (s.long_name == name) spec = &s;
      } else if (token.size() == 2) {
        for (const auto& s : specs)
          if (s.short_name == token[1]) spec = &s;
      }
      if (spec == nullptr) throw usage_error("unknown option " + token);
      const std::string key(spec->long_name);
      if (!spec->takes_value) {
        if (inline_value) throw usage_error("option --" + key + " takes no value");
        flags_.insert(key);
        continue;
      }
      if (inline_value) {
        values_[key] = *inline_value;
      } else {
        if (i + 1 >= tokens.size()) throw usage_error("option " + token + " needs a value");
        values_[key] = tokens[++i];
      }
    }
  }

  [[nodiscard]] const std::vector<std::string>& positionals() const { return positionals_; }
  [[nodiscard]] bool flag(std::string_view name) const {
    return flags_.count(std::string(name)) != 0;
  }
  [[nodiscard]] std::optional<std::string> value(std::string_view name) const {
    const auto it = values_.find(std::string(name));
    if (it == values_.end()) return std::nullopt;
    return it->second;
  }
  // An unsigned option within [min, max]; `fallback` when absent.
  [[nodiscard]] std::uint64_t unsigned_value(std::string_view name, std::uint64_t fallback,
                                             std::uint64_t min, std::uint64_t max) const {
    const auto text = value(name);
    if (!text) return fallback;
    std::size_t used = 0;
    unsigned long long v = 0;
    try {
      v = std::stoull(*text, &used, 10);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != text->size() || (*text)[0] == '-' || v < min || v > max)
      throw usage_error(
          fmt::format("--{} wants a whole number in [{}, {}], not '{}'", name, min, max, *text));
    return v;
  }
  void expect_positionals(std::size_t min, std::size_t max, std::string_view what) const {
    if (positionals_.size() < min || positionals_.size() > max)
      throw usage_error(fmt::format("expected {}", what));
  }

 private:
  std::vector<std::string> positionals_;
  std::set<std::string> flags_;
  std::map<std::string, std::string> values_;
};

// Ctrl-C and SIGTERM: the handler only records the request, in g_interrupted and in the cancel
// flag every library call of the command is given. The library checks the flag in its parsers'
// callbacks (a header parse stops within one JSON token) and between bundles, and unwinds as on
// any other error, removing its temporary output files; progress reports check it too. A second
// signal terminates at once (SA_RESETHAND).
inline volatile std::sig_atomic_t g_interrupted = 0;
inline cancel_flag g_cancel{false};

inline void install_interrupt_handlers() {
  struct sigaction action {};
  action.sa_handler = [](int) {
    g_interrupted = 1;
    g_cancel.store(true, std::memory_order_relaxed);  // lock-free: safe in a handler
  };
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESETHAND;
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
}

// Called from progress callbacks.
inline void throw_if_interrupted() {
  if (g_interrupted != 0) throw exception(error{errc::io_error, "interrupted"});
}

inline bool stderr_is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

// A one-line progress bar on stderr, drawn only when stderr is a terminal (so logs and pipes
// get no control characters), redrawn at most ten times a second.
class progress_bar {
 public:
  explicit progress_bar(std::string label, bool enabled = stderr_is_terminal())
      : label_(std::move(label)), enabled_(enabled), start_(clock::now()) {}
  progress_bar(const progress_bar&) = delete;
  progress_bar& operator=(const progress_bar&) = delete;
  ~progress_bar() { finish(); }

  void update(std::uint64_t done, std::uint64_t total) {
    throw_if_interrupted();
    if (!enabled_) return;
    const auto now = clock::now();
    if (drawn_ && done < total && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    drawn_ = true;
    constexpr int kWidth = 30;
    const double fraction = total == 0 ? 1.0 : double(done) / double(total);
    const int filled = static_cast<int>(fraction * kWidth + 0.5);
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const double rate = seconds > 0 ? double(done) / seconds / 1e9 : 0.0;
    fmt::print(stderr, "\r{} [{}{}] {:3.0f}%  {:.2f} GB/s ", label_, std::string(filled, '#'),
               std::string(kWidth - filled, '.'), fraction * 100, rate);
    std::fflush(stderr);
  }
  // Erases the bar so that the next line of output starts clean.
  void finish() {
    if (!enabled_ || !drawn_) return;
    fmt::print(stderr, "\r{}\r", std::string(label_.size() + 56, ' '));
    std::fflush(stderr);
    drawn_ = false;
  }

 private:
  using clock = std::chrono::steady_clock;
  std::string label_;
  bool enabled_;
  bool drawn_ = false;
  clock::time_point start_;
  clock::time_point last_draw_{};
};

// "1.23 MB" style sizes (decimal units, as throughput is quoted).
inline std::string human_bytes(double bytes) {
  static constexpr const char* kUnits[] = {"B", "kB", "MB", "GB", "TB"};
  int unit = 0;
  while (bytes >= 1000.0 && unit < 4) {
    bytes /= 1000.0;
    ++unit;
  }
  return unit == 0 ? fmt::format("{:.0f} {}", bytes, kUnits[unit])
                   : fmt::format("{:.2f} {}", bytes, kUnits[unit]);
}

// Exit code after SIGINT/SIGTERM (128 + SIGINT, as shells report it).
inline constexpr int kExitInterrupted = 130;

// Prints an error from the library and returns the exit code for it.
inline int fail(const error& e) {
  if (g_interrupted != 0) {
    fmt::print(stderr, "floatzip: interrupted; no output was left behind\n");
    return kExitInterrupted;
  }
  // Messages quote names and paths from files and directories: no control characters reach the
  // terminal (names were escaped already; their backslashes stay as they are).
  fmt::print(stderr, "floatzip: error: {}\n", detail::printable(e.message, false));
  return kExitFailure;
}

class stopwatch {
 public:
  stopwatch() : start_(std::chrono::steady_clock::now()) {}
  [[nodiscard]] double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

// The subcommands; each returns an exit code and throws usage_error for command-line mistakes.
int compress_command(const std::vector<std::string>& args);
int decompress_command(const std::vector<std::string>& args);
int verify_command(const std::vector<std::string>& args);
int info_command(const std::vector<std::string>& args);
int bench_command(const std::vector<std::string>& args);
int demo_command(const std::vector<std::string>& args);

}  // namespace floatzip::cli
