// floatzip: error codes, error values and a value-or-error result.
//
// Decoding never throws on bad data: it returns an `error`. Callers who prefer exceptions call
// `result::value()` or `throw_if_error()`, which throw `floatzip::exception`.
#pragma once

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

namespace floatzip {

// Stable numeric values: they may be printed, logged and compared across versions.
enum class errc : int {
  ok = 0,
  bad_data = 1,             // a field holds an impossible value (corruption or a hostile file)
  truncated = 2,            // the input ends before a section or field it declares
  unsupported_version = 3,  // written by a newer floatzip, or not a floatzip stream at all
  insufficient_space = 4,   // the caller's output buffer is too small
  invalid_argument = 5,     // the caller passed options or inputs outside the documented range
  checksum_mismatch = 6,    // a section's stored checksum disagrees with its bytes
  io_error = 7,             // the operating system refused a read, write, map or rename
  too_large = 8,            // a declared size exceeds what this build or machine can hold
  cuda_error = 9,           // a CUDA runtime call failed
  cancelled = 10,           // the caller's cancel_flag was set (Ctrl-C in the command)
};

constexpr const char* to_string(errc code) noexcept {
  switch (code) {
    case errc::ok: return "ok";
    case errc::bad_data: return "bad_data";
    case errc::truncated: return "truncated";
    case errc::unsupported_version: return "unsupported_version";
    case errc::insufficient_space: return "insufficient_space";
    case errc::invalid_argument: return "invalid_argument";
    case errc::checksum_mismatch: return "checksum_mismatch";
    case errc::io_error: return "io_error";
    case errc::too_large: return "too_large";
    case errc::cuda_error: return "cuda_error";
    case errc::cancelled: return "cancelled";
  }
  return "unknown";
}

// A flag the caller owns and may set from any thread, or from a signal handler (the atomic is
// lock-free), to stop a long operation (a header parse, a conversion) with errc::cancelled.
// Operations take a pointer to it; a null pointer never cancels.
using cancel_flag = std::atomic<bool>;
static_assert(cancel_flag::is_always_lock_free, "a cancel_flag must be settable from a signal");

inline bool cancel_requested(const cancel_flag* flag) noexcept {
  return flag != nullptr && flag->load(std::memory_order_relaxed);
}

// An error code plus a message that names the section and field that was wrong.
struct error {
  errc code = errc::ok;
  std::string message;

  error() = default;
  error(errc c, std::string m) : code(c), message(std::move(m)) {}

  [[nodiscard]] bool ok() const noexcept { return code == errc::ok; }
  explicit operator bool() const noexcept { return code != errc::ok; }  // true when failed
};

class exception : public std::runtime_error {
 public:
  explicit exception(error e)
      : std::runtime_error(std::string(to_string(e.code)) + ": " + e.message),
        error_(std::move(e)) {}
  [[nodiscard]] const floatzip::error& err() const noexcept { return error_; }
  [[nodiscard]] errc code() const noexcept { return error_.code; }

 private:
  floatzip::error error_;
};

inline void throw_if_error(const error& e) {
  if (!e.ok()) throw exception(e);
}

// A value or an error. Deliberately small: has_value(), value(), error(), operator*, operator->.
template <class T>
class result {
 public:
  result(T value) : state_(std::in_place_index<0>, std::move(value)) {}        // NOLINT: implicit
  result(floatzip::error e) : state_(std::in_place_index<1>, std::move(e)) {}  // NOLINT: implicit

  [[nodiscard]] bool has_value() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & {
    if (!has_value()) throw exception(std::get<1>(state_));
    return std::get<0>(state_);
  }
  const T& value() const& {
    if (!has_value()) throw exception(std::get<1>(state_));
    return std::get<0>(state_);
  }
  T&& value() && {
    if (!has_value()) throw exception(std::get<1>(state_));
    return std::get<0>(std::move(state_));
  }
  T& operator*() & { return std::get<0>(state_); }
  const T& operator*() const& { return std::get<0>(state_); }
  T* operator->() { return &std::get<0>(state_); }
  const T* operator->() const { return &std::get<0>(state_); }

  // The error; an `ok` error when a value is held.
  [[nodiscard]] floatzip::error error() const {
    return has_value() ? floatzip::error{} : std::get<1>(state_);
  }

 private:
  std::variant<T, floatzip::error> state_;
};

}  // namespace floatzip
