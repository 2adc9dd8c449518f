// floatzip: files for the container code: a read-only memory map of an input file that
// survives the file shrinking under it, output files and directories that appear under their
// final name only when complete, and the policy that decides what an output may replace.
//
// POSIX only (Linux, macOS). Errors are floatzip::error values with errc::io_error naming the
// path and the failing system call, or errc::invalid_argument for an output the policy refuses.
//
// Output policy (what `floatzip --force` may and may not do):
//   - an output never is, contains, or lies inside its input (checked on device and inode along
//     both paths, so "..", symlinks and bind mounts do not hide it);
//   - without replacing asked for, nothing that exists at the output path is touched, a dangling
//     symlink included, even when it appears while the output is being written;
//   - replacing may rename a new regular file over a regular file or over a symlink (the link is
//     replaced; its target is neither written nor deleted), and may swap a new directory for an
//     old one that holds nothing but regular files of the names the conversion writes;
//   - directories (for a file), FIFOs, sockets and device nodes are never replaced.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "floatzip/error.hpp"

namespace floatzip::detail {

// Text from a file or a file system made safe to print and to put in JSON: valid UTF-8 is kept;
// control characters (C0, DEL and C1, which include terminal escape sequences), bytes that are
// not UTF-8 and, unless told otherwise, backslashes become \xNN escapes. POSIX paths are bytes,
// not text, and a message must still name them.
inline std::string printable(std::string_view bytes, bool escape_backslash = true) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size());
  auto escape = [&](unsigned char c) {
    out += "\\x";
    out += kHex[c >> 4];
    out += kHex[c & 15];
  };
  for (std::size_t i = 0; i < bytes.size();) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7F || (c == '\\' && escape_backslash))
        escape(c);
      else
        out += static_cast<char>(c);
      ++i;
      continue;
    }
    // The length of a well-formed UTF-8 sequence starting here (no overlong forms, surrogates
    // or values past U+10FFFF), or 0.
    std::size_t length = 0;
    std::uint32_t code_point = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      length = 2;
      code_point = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      length = 3;
      code_point = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      length = 4;
      code_point = c & 0x07;
    }
    bool valid = length != 0 && i + length <= bytes.size();
    for (std::size_t k = 1; valid && k < length; ++k) {
      const auto next = static_cast<unsigned char>(bytes[i + k]);
      valid = (next & 0xC0) == 0x80;
      code_point = (code_point << 6) | (next & 0x3F);
    }
    valid =
        valid &&
        !(length == 3 && (code_point < 0x800 || (code_point >= 0xD800 && code_point <= 0xDFFF))) &&
        !(length == 4 && (code_point < 0x10000 || code_point > 0x10FFFF));
    // C1 controls (U+0080..U+009F) include CSI, which terminals act on like ESC [.
    if (!valid || code_point < 0xA0) {
      escape(c);
      ++i;
      continue;
    }
    out.append(bytes.substr(i, length));
    i += length;
  }
  return out;
}

inline std::string printable(const std::string& bytes, bool escape_backslash = true) {
  return printable(std::string_view(bytes), escape_backslash);
}
inline std::string printable(const std::filesystem::path& path) {
  return printable(std::string_view(path.native()));
}

inline error io_failure(std::string_view action, const std::filesystem::path& path,
                        int errno_value) {
  return error{errc::io_error,
               std::string(action) + " " + path.string() + ": " + std::strerror(errno_value)};
}

// ---- mappings that survive their file shrinking -----------------------------------------------
//
// Touching a page of a file mapping past the file's end raises SIGBUS, which kills the process:
// another process truncating an input while floatzip reads it used to do exactly that, and left
// the output's temporary file behind. mapped_file registers every mapping here, and a SIGBUS
// handler (installed once, the first time a file is mapped) maps a page of zeros over the page
// that faulted inside a registered mapping and marks the mapping: the read goes on, and
// mapped_file::check_unchanged() turns the mark into an error naming the file before any result
// built from those bytes is kept. A SIGBUS anywhere else goes to the handler that was installed
// before, or to the default action, as if floatzip were not there.
namespace sigbus_guard {

struct slot {
  std::atomic<std::uintptr_t> begin{0};  // 0: free
  std::atomic<std::uintptr_t> end{0};
  std::atomic<bool> faulted{false};
};
inline constexpr std::size_t kSlots = 256;  // live mappings guarded; more are mapped unguarded
inline slot g_slots[kSlots];
inline struct sigaction g_previous {};
inline std::uintptr_t g_page_size = 4096;
inline std::once_flag g_installed;

inline void handle(int signal_number, siginfo_t* info, void* context) {
  const auto address = reinterpret_cast<std::uintptr_t>(info->si_addr);
  if (info->si_code > 0) {  // a fault, not a kill(2)
    for (auto& s : g_slots) {
      const std::uintptr_t begin = s.begin.load(std::memory_order_acquire);
      if (begin == 0 || address < begin || address >= s.end.load(std::memory_order_acquire))
        continue;
      void* page = reinterpret_cast<void*>(address / g_page_size * g_page_size);
      if (::mmap(page, g_page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) ==
          MAP_FAILED)
        break;
      s.faulted.store(true, std::memory_order_release);
      return;  // the faulting load runs again and reads zeros
    }
  }
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(signal_number, info, context);
    return;
  }
  if ((g_previous.sa_flags & SA_SIGINFO) == 0 && g_previous.sa_handler != SIG_DFL &&
      g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(signal_number);
    return;
  }
  // The default action: a fault repeats when the handler returns and now kills the process; a
  // signal sent by kill(2) is raised again.
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  sigemptyset(&default_action.sa_mask);
  ::sigaction(SIGBUS, &default_action, nullptr);
  if (info->si_code <= 0) ::raise(SIGBUS);
}

inline void install() {
  std::call_once(g_installed, [] {
    g_page_size = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    struct sigaction action {};
    action.sa_sigaction = handle;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    ::sigaction(SIGBUS, &action, &g_previous);
  });
}

// A free slot for [begin, begin + size), or nullptr when all are taken.
inline slot* guard(const void* begin, std::uint64_t size) noexcept {
  const auto b = reinterpret_cast<std::uintptr_t>(begin);
  for (auto& s : g_slots) {
    std::uintptr_t expected = 0;
    // Claimed with a marker first, so that the handler never sees a begin without its end.
    if (!s.begin.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) continue;
    s.faulted.store(false, std::memory_order_relaxed);
    s.end.store(b + size, std::memory_order_release);
    s.begin.store(b, std::memory_order_release);
    return &s;
  }
  return nullptr;
}

inline void unguard(slot* s) noexcept {
  if (s == nullptr) return;
  s->end.store(0, std::memory_order_release);
  s->begin.store(0, std::memory_order_release);
}

}  // namespace sigbus_guard

inline struct timespec modification_time(const struct stat& st) noexcept {
#ifdef __APPLE__
  return st.st_mtimespec;
#else
  return st.st_mtim;
#endif
}

// A read-only, private memory map of a whole regular file. Pages are read on first touch, so a
// reader that asks for one bundle reads only that bundle from disk. If the file shrinks while it
// is mapped, pages past its new end read as zeros instead of killing the process (see
// sigbus_guard), and check_unchanged() reports it. Move-only.
class mapped_file {
 public:
  mapped_file() = default;
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  mapped_file(mapped_file&& other) noexcept { swap(other); }
  mapped_file& operator=(mapped_file&& other) noexcept {
    if (this != &other) {
      reset();
      swap(other);
    }
    return *this;
  }
  ~mapped_file() { reset(); }

  static result<mapped_file> open(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return io_failure("cannot open", path, errno);
    mapped_file file;  // owns fd from here on
    file.fd_ = fd;
    file.path_ = path;
    struct stat st {};
    if (::fstat(fd, &st) != 0) return io_failure("cannot stat", path, errno);
    if (!S_ISREG(st.st_mode))
      return error{errc::io_error, "cannot map " + path.string() + ": not a regular file"};
    file.size_ = static_cast<std::uint64_t>(st.st_size);
    file.modified_ = modification_time(st);
    if (file.size_ > 0) {
      sigbus_guard::install();
      void* address = ::mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (address == MAP_FAILED) return io_failure("cannot map", path, errno);
      file.address_ = static_cast<const std::byte*>(address);
      file.guard_ = sigbus_guard::guard(address, file.size_);
    }
    return file;
  }

  // An error naming the file when it shrank (pages past its new end were read as zeros) or was
  // modified since it was mapped: whatever was computed from its bytes must then be dropped.
  // The descriptor stays open for this check, so a file renamed over the path does not count.
  [[nodiscard]] error check_unchanged() const {
    if (fd_ < 0) return {};
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return io_failure("cannot stat", path_, errno);
    const bool faulted = guard_ != nullptr && guard_->faulted.load(std::memory_order_acquire);
    const struct timespec modified = modification_time(st);
    const bool resized = static_cast<std::uint64_t>(st.st_size) != size_;
    if (resized || modified.tv_sec != modified_.tv_sec || modified.tv_nsec != modified_.tv_nsec)
      return {errc::io_error, path_.string() + " changed while being read (" +
                                  std::to_string(size_) + " bytes when opened, " +
                                  std::to_string(st.st_size) +
                                  " now): another process truncated or wrote it"};
    if (faulted)  // same size and time: a read error of the device, not a truncation
      return {errc::io_error, path_.string() + ": a page of the file could not be read (SIGBUS)"};
    return {};
  }

  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {address_, size_}; }
  [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

  // Tells the kernel a range will be read soon and in order (prefetch and larger read-ahead).
  void will_need(std::uint64_t offset, std::uint64_t length) const noexcept {
    advise(offset, length, MADV_WILLNEED, /*shrink=*/false);
  }

  // Drops this mapping's pages in a range that is no longer needed, so that streaming through a
  // large model does not grow the process's resident set to the model's size. The data stays in
  // the page cache; touching the range again reads it back. Only whole pages inside the range are
  // dropped.
  void release(std::uint64_t offset, std::uint64_t length) const noexcept {
    advise(offset, length, MADV_DONTNEED, /*shrink=*/true);
  }

 private:
  void advise(std::uint64_t offset, std::uint64_t length, int advice, bool shrink) const noexcept {
    if (address_ == nullptr || offset >= size_) return;
    length = std::min(length, size_ - offset);
    const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    std::uint64_t begin = offset;
    std::uint64_t end = offset + length;
    if (shrink) {
      begin = (begin + page - 1) / page * page;
      end = end == size_ ? end : end / page * page;
    } else {
      begin = begin / page * page;
    }
    if (end <= begin) return;
    ::madvise(const_cast<std::byte*>(address_) + begin, end - begin, advice);
  }

  void reset() noexcept {
    sigbus_guard::unguard(guard_);  // before the range can be reused by another mapping
    guard_ = nullptr;
    if (address_ != nullptr) ::munmap(const_cast<std::byte*>(address_), size_);
    address_ = nullptr;
    size_ = 0;
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  void swap(mapped_file& other) noexcept {
    std::swap(address_, other.address_);
    std::swap(size_, other.size_);
    std::swap(path_, other.path_);
    std::swap(fd_, other.fd_);
    std::swap(modified_, other.modified_);
    std::swap(guard_, other.guard_);
  }

  const std::byte* address_ = nullptr;
  std::uint64_t size_ = 0;
  std::filesystem::path path_;
  int fd_ = -1;
  struct timespec modified_ {};
  sigbus_guard::slot* guard_ = nullptr;
};

// The process umask, read from /proc because umask(2) can only be queried by changing it, which
// races with other threads. New files get 0666 and directories 0777 less this mask, as open(2)
// and mkdir(2) would give them; mkstemp and mkdtemp create them private.
inline mode_t process_umask() {
  mode_t mask = 022;
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Umask:", 0) == 0) {
      mask = static_cast<mode_t>(std::strtoul(line.c_str() + 6, nullptr, 8));
      break;
    }
  }
  return mask;
}

// The temporary name for `final_path`: "<name>.tmp.XXXXXX" in the same directory, so that the
// final rename never crosses a file system.
inline std::string temporary_name_template(const std::filesystem::path& final_path) {
  return final_path.string() + ".tmp.XXXXXX";
}

// ---- output policy (see the top of this file) ------------------------------------------------

// What is at a path, the final symlink not followed; "" when nothing is.
inline std::string_view kind_of_existing(const std::filesystem::path& path, struct stat& st) {
  if (::lstat(path.c_str(), &st) != 0) return "";
  if (S_ISREG(st.st_mode)) return "a regular file";
  if (S_ISDIR(st.st_mode)) return "a directory";
  if (S_ISLNK(st.st_mode)) return "a symbolic link";
  if (S_ISFIFO(st.st_mode)) return "a FIFO";
  if (S_ISSOCK(st.st_mode)) return "a socket";
  if (S_ISCHR(st.st_mode)) return "a character device";
  if (S_ISBLK(st.st_mode)) return "a block device";
  return "a special file";
}

inline error output_exists(const std::filesystem::path& path, std::string_view kind,
                           std::string_view how_to_replace) {
  return {errc::invalid_argument, printable(path) + " exists (" + std::string(kind) + "; " +
                                      std::string(how_to_replace) + ")"};
}

// Whether a new regular file may be renamed to `path`.
inline error check_replaceable_file(const std::filesystem::path& path, bool replace_existing,
                                    std::string_view how_to_replace = "replace it explicitly") {
  if (path.empty()) return {errc::invalid_argument, "the output path is empty"};
  struct stat st {};
  const std::string_view kind = kind_of_existing(path, st);
  if (kind.empty()) return {};
  if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
    return {errc::invalid_argument, printable(path) + " is " + std::string(kind) +
                                        ": an output is written as a new regular file and "
                                        "never replaces one of these"};
  if (!replace_existing) return output_exists(path, kind, how_to_replace);
  return {};
}

// Whether a new directory may take the place of `path`: nothing there, or (replacing) a
// directory that holds only regular files named in `names_written`.
inline error check_replaceable_directory(const std::filesystem::path& path, bool replace_existing,
                                         const std::set<std::string>& names_written,
                                         std::string_view how_to_replace =
                                             "replace it "
                                             "explicitly") {
  if (path.empty()) return {errc::invalid_argument, "the output path is empty"};
  struct stat st {};
  const std::string_view kind = kind_of_existing(path, st);
  if (kind.empty()) return {};
  if (!S_ISDIR(st.st_mode))
    return {errc::invalid_argument,
            printable(path) + " is " + std::string(kind) +
                ", not a directory: a directory output never replaces one of these"};
  if (!replace_existing) return output_exists(path, kind, how_to_replace);
  std::error_code ec;
  for (std::filesystem::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    struct stat entry {};
    if (names_written.count(name) == 0 || ::lstat(it->path().c_str(), &entry) != 0 ||
        !S_ISREG(entry.st_mode))
      return {errc::invalid_argument,
              printable(path) + " holds " + printable(std::string_view(name)) +
                  ", which this conversion does not write: refusing to replace the directory "
                  "(move or remove it yourself)"};
  }
  if (ec) return {errc::io_error, "cannot list " + printable(path) + ": " + ec.message()};
  return {};
}

// Device and inode of a path (symlinks followed), if it exists.
struct file_identity {
  dev_t device = 0;
  ino_t inode = 0;
  friend bool operator==(const file_identity&, const file_identity&) = default;
};

inline std::optional<file_identity> identity_of(const std::filesystem::path& path) {
  struct stat st {};
  if (path.empty() || ::stat(path.c_str(), &st) != 0) return std::nullopt;
  return file_identity{st.st_dev, st.st_ino};
}

// The identities of `path` and of every directory above it, symlinks and ".." resolved.
inline std::vector<file_identity> identities_up_from(const std::filesystem::path& path) {
  std::error_code ec;
  std::filesystem::path at = std::filesystem::weakly_canonical(std::filesystem::absolute(path), ec);
  if (ec) at = std::filesystem::absolute(path).lexically_normal();
  std::vector<file_identity> ids;
  while (true) {
    if (auto id = identity_of(at)) ids.push_back(*id);
    if (!at.has_relative_path()) break;
    at = at.parent_path();
  }
  return ids;
}

// Refuses an output that is, contains, or lies inside the input: writing it would replace or
// mix with what is being read, and replacing it could delete the input.
inline error check_output_apart_from_input(const std::filesystem::path& input,
                                           const std::filesystem::path& output) {
  if (output.empty()) return {errc::invalid_argument, "the output path is empty"};
  const auto input_id = identity_of(input);
  if (!input_id) return {};  // reading it fails with its own message
  const auto output_id = identity_of(output);
  if (output_id == input_id)
    return {errc::invalid_argument, printable(output) + " is the input itself"};
  const auto above_output = identities_up_from(output);
  if (std::find(above_output.begin(), above_output.end(), *input_id) != above_output.end())
    return {errc::invalid_argument,
            printable(output) + " lies inside the input " + printable(input)};
  if (output_id) {
    const auto above_input = identities_up_from(input);
    if (std::find(above_input.begin(), above_input.end(), *output_id) != above_input.end())
      return {errc::invalid_argument,
              printable(output) + " contains the input " + printable(input)};
  }
  return {};
}

// Renames `from` to `to`; without `replace_existing`, fails rather than replace anything at `to`
// (renameat2's RENAME_NOREPLACE, or link + unlink where the file system lacks it).
inline error rename_into_place(const std::filesystem::path& from, const std::filesystem::path& to,
                               bool replace_existing) {
  if (replace_existing) {
    if (::rename(from.c_str(), to.c_str()) != 0)
      return io_failure("cannot rename the temporary file to", to, errno);
    return {};
  }
  int result = -1;
#ifdef RENAME_NOREPLACE
  result = ::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE);
  if (result == 0) return {};
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) {
    if (errno == EEXIST)
      return {errc::invalid_argument,
              printable(to) + " appeared while the output was being written; not replaced"};
    return io_failure("cannot rename the temporary file to", to, errno);
  }
#endif
  struct stat st {};
  if (::lstat(from.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    // No hard links for directories: an existing empty directory would be replaced by rename(2),
    // so check first (a narrow race where renameat2 is missing).
    if (::lstat(to.c_str(), &st) == 0)
      return {errc::invalid_argument,
              printable(to) + " appeared while the output was being written; not replaced"};
    result = ::rename(from.c_str(), to.c_str());
  } else if ((result = ::link(from.c_str(), to.c_str())) == 0) {
    ::unlink(from.c_str());
  }
  if (result != 0) {
    if (errno == EEXIST)
      return {errc::invalid_argument,
              printable(to) + " appeared while the output was being written; not replaced"};
    return io_failure("cannot rename the temporary file to", to, errno);
  }
  return {};
}

// An output file written under a temporary name and renamed to its final name by commit().
// Destroyed without commit (an error, an exception, a failed verification), it removes the
// temporary file, so a failed run leaves nothing behind. Move-only.
class atomic_output_file {
 public:
  atomic_output_file() = default;
  atomic_output_file(const atomic_output_file&) = delete;
  atomic_output_file& operator=(const atomic_output_file&) = delete;
  atomic_output_file(atomic_output_file&& other) noexcept { swap(other); }
  atomic_output_file& operator=(atomic_output_file&& other) noexcept {
    if (this != &other) {
      discard();
      swap(other);
    }
    return *this;
  }
  ~atomic_output_file() { discard(); }

  // With `replace_existing`, commit() may replace a regular file or a symlink at `final_path`;
  // without, it replaces nothing, not even something that appears there while writing. It never
  // replaces a directory, FIFO, socket or device node (see the output policy above).
  static result<atomic_output_file> create(const std::filesystem::path& final_path,
                                           bool replace_existing = true) {
    if (final_path.empty()) return error{errc::invalid_argument, "the output path is empty"};
    std::string name = temporary_name_template(final_path);
    const int fd = ::mkstemp(name.data());
    if (fd < 0) return io_failure("cannot create a temporary file for", final_path, errno);
    ::fchmod(fd, 0666 & ~process_umask());  // best effort
    atomic_output_file out;
    out.fd_ = fd;
    out.temporary_path_ = name;
    out.final_path_ = final_path;
    out.replace_existing_ = replace_existing;
    return out;
  }

  // Appends at the current position.
  error write(std::span<const std::byte> bytes) {
    if (error e = write_at(position_, bytes)) return e;
    position_ += bytes.size();
    return {};
  }

  // Appends `count` zero bytes (alignment padding).
  error write_zeros(std::uint64_t count) {
    static constexpr std::byte kZeros[4096] = {};
    while (count > 0) {
      const std::uint64_t n = std::min<std::uint64_t>(count, sizeof kZeros);
      if (error e = write({kZeros, n})) return e;
      count -= n;
    }
    return {};
  }

  // Writes at an absolute offset without moving the append position (used to fill in a header
  // or an index once the sizes after it are known, and to place decoded tensors).
  error write_at(std::uint64_t offset, std::span<const std::byte> bytes) {
    if (fd_ < 0) return {errc::io_error, "write to a closed output file"};
    const std::byte* p = bytes.data();
    std::uint64_t left = bytes.size();
    while (left > 0) {
      const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(left, 1u << 30));
      const ssize_t n = ::pwrite(fd_, p, chunk, static_cast<off_t>(offset));
      if (n < 0) {
        if (errno == EINTR) continue;
        return io_failure("cannot write", temporary_path_, errno);
      }
      if (n == 0) return {errc::io_error, "cannot write " + temporary_path_.string()};
      p += n;
      offset += static_cast<std::uint64_t>(n);
      left -= static_cast<std::uint64_t>(n);
    }
    return {};
  }

  // Sets the file's size (zero-filled when growing) and moves the append position to its end.
  error resize(std::uint64_t size) {
    if (fd_ < 0) return {errc::io_error, "resize of a closed output file"};
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0)
      return io_failure("cannot resize", temporary_path_, errno);
    position_ = size;
    return {};
  }

  // Reserves the disk blocks of bytes [0, size) (growing the file to `size`), to be written in
  // place later: a file system then writes them at about twice the speed of blocks it allocates
  // write by write (ext4, measured for issue 14), and a full disk is reported here, before
  // anything is written. A file system without fallocate allocates as it writes, as before.
  error preallocate(std::uint64_t size) {
    if (fd_ < 0) return {errc::io_error, "preallocate of a closed output file"};
    if (size == 0 || ::fallocate(fd_, 0, 0, static_cast<off_t>(size)) == 0) return {};
    if (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL) return {};
    return io_failure("cannot allocate space for", temporary_path_, errno);
  }

  [[nodiscard]] std::uint64_t position() const noexcept { return position_; }
  [[nodiscard]] const std::filesystem::path& final_path() const noexcept { return final_path_; }
  [[nodiscard]] const std::filesystem::path& temporary_path() const noexcept {
    return temporary_path_;
  }

  // Closes the file and renames it to its final name, replacing what create() allowed. With
  // `sync`, the data and then the directory entry are flushed to disk first, so a crash leaves
  // either the old file or the complete new one. On an error the temporary file is removed.
  error commit(bool sync = false) {
    if (fd_ < 0) return {errc::io_error, "commit of a closed output file"};
    if (sync && ::fsync(fd_) != 0) return io_failure("cannot sync", temporary_path_, errno);
    if (::close(fd_) != 0) {
      fd_ = -1;
      return io_failure("cannot close", temporary_path_, errno);
    }
    fd_ = -1;
    // Checked again here: the path may have changed since the run started.
    if (error e = check_replaceable_file(final_path_, replace_existing_)) return e;
    if (error e = rename_into_place(temporary_path_, final_path_, replace_existing_)) return e;
    temporary_path_.clear();
    if (sync) sync_directory_of(final_path_);
    return {};
  }

  // Closes and removes the temporary file (what the destructor does without a commit).
  void discard() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (!temporary_path_.empty()) ::unlink(temporary_path_.c_str());
    temporary_path_.clear();
  }

 private:
  static void sync_directory_of(const std::filesystem::path& path) noexcept {
    auto dir = path.parent_path();
    if (dir.empty()) dir = ".";
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
  }
  void swap(atomic_output_file& other) noexcept {
    std::swap(fd_, other.fd_);
    std::swap(position_, other.position_);
    std::swap(temporary_path_, other.temporary_path_);
    std::swap(final_path_, other.final_path_);
    std::swap(replace_existing_, other.replace_existing_);
  }

  int fd_ = -1;
  std::uint64_t position_ = 0;
  std::filesystem::path temporary_path_;
  std::filesystem::path final_path_;
  bool replace_existing_ = true;
};

// A directory built under a temporary name and renamed into place by commit(); removed with its
// contents when destroyed without a commit. For sharded checkpoints, which are one directory.
class atomic_output_directory {
 public:
  atomic_output_directory() = default;
  atomic_output_directory(const atomic_output_directory&) = delete;
  atomic_output_directory& operator=(const atomic_output_directory&) = delete;
  atomic_output_directory(atomic_output_directory&& other) noexcept { swap(other); }
  atomic_output_directory& operator=(atomic_output_directory&& other) noexcept {
    if (this != &other) {
      discard();
      swap(other);
    }
    return *this;
  }
  ~atomic_output_directory() { discard(); }

  static result<atomic_output_directory> create(const std::filesystem::path& final_path) {
    if (final_path.empty()) return error{errc::invalid_argument, "the output path is empty"};
    std::string name = temporary_name_template(final_path);
    if (::mkdtemp(name.data()) == nullptr)
      return io_failure("cannot create a temporary directory for", final_path, errno);
    ::chmod(name.c_str(), 0777 & ~process_umask());  // best effort
    atomic_output_directory out;
    out.temporary_path_ = name;
    out.final_path_ = final_path;
    return out;
  }

  // Where to write the directory's files before commit.
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return temporary_path_; }
  [[nodiscard]] const std::filesystem::path& final_path() const noexcept { return final_path_; }

  // Renames the directory into place. With `replace_existing`, an existing directory there is
  // replaced when it holds nothing but regular files named in `names_written` (an earlier output
  // of the same conversion): it is moved aside, the new one moved in, and only then are the old
  // one's files deleted. Nothing else is ever deleted or replaced.
  error commit(bool replace_existing, const std::set<std::string>& names_written) {
    if (temporary_path_.empty()) return {errc::io_error, "commit of a discarded directory"};
    struct stat st {};
    const bool exists = ::lstat(final_path_.c_str(), &st) == 0;
    if (!exists) {
      if (error e = rename_into_place(temporary_path_, final_path_, /*replace_existing=*/false))
        return e;
      temporary_path_.clear();
      return {};
    }
    if (!replace_existing || !S_ISDIR(st.st_mode)) {
      if (error e = check_replaceable_directory(final_path_, replace_existing, names_written))
        return e;
      return {errc::invalid_argument, printable(final_path_) + " exists"};  // not reached
    }
    if (error e = check_replaceable_directory(final_path_, true, names_written)) return e;
    std::string aside = temporary_name_template(final_path_);
    if (::mkdtemp(aside.data()) == nullptr)
      return io_failure("cannot create a temporary directory for", final_path_, errno);
    // rename(2) replaces the empty directory just made with the old output, atomically.
    if (::rename(final_path_.c_str(), aside.c_str()) != 0) {
      const int e = errno;
      ::rmdir(aside.c_str());
      return io_failure("cannot move aside the existing", final_path_, e);
    }
    if (::rename(temporary_path_.c_str(), final_path_.c_str()) != 0) {
      const int e = errno;
      ::rename(aside.c_str(), final_path_.c_str());  // put the old output back
      return io_failure("cannot rename the temporary directory to", final_path_, e);
    }
    temporary_path_.clear();
    for (const auto& name : names_written) {
      const auto old_file = std::filesystem::path(aside) / name;
      if (::lstat(old_file.c_str(), &st) == 0 && S_ISREG(st.st_mode)) ::unlink(old_file.c_str());
    }
    ::rmdir(aside.c_str());  // fails, leaving it, only if something was added meanwhile
    return {};
  }

  void discard() noexcept {
    if (temporary_path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(temporary_path_, ec);
    temporary_path_.clear();
  }

 private:
  void swap(atomic_output_directory& other) noexcept {
    std::swap(temporary_path_, other.temporary_path_);
    std::swap(final_path_, other.final_path_);
  }
  std::filesystem::path temporary_path_;
  std::filesystem::path final_path_;
};

// Reads a whole small file (a shard index, a config) with a size limit.
inline result<std::string> read_small_file(const std::filesystem::path& path,
                                           std::uint64_t max_bytes) {
  auto mapped = mapped_file::open(path);
  if (!mapped) return mapped.error();
  if (mapped->size() > max_bytes)
    return error{errc::too_large,
                 path.string() + ": larger than " + std::to_string(max_bytes) + " bytes"};
  const auto bytes = mapped->bytes();
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

}  // namespace floatzip::detail
