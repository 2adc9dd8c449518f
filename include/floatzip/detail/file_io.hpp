// floatzip: files for the container code: a read-only memory map of an input file, and output
// files that appear under their final name only when complete.
//
// POSIX only (Linux, macOS). Errors are floatzip::error values with errc::io_error naming the
// path and the failing system call.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "floatzip/error.hpp"

namespace floatzip::detail {

inline error io_failure(std::string_view action, const std::filesystem::path& path,
                        int errno_value) {
  return error{errc::io_error,
               std::string(action) + " " + path.string() + ": " + std::strerror(errno_value)};
}

// A read-only, private memory map of a whole regular file. Pages are read on first touch, so a
// reader that asks for one bundle reads only that bundle from disk. Move-only.
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
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int e = errno;
      ::close(fd);
      return io_failure("cannot stat", path, e);
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      return error{errc::io_error, "cannot map " + path.string() + ": not a regular file"};
    }
    mapped_file file;
    file.path_ = path;
    file.size_ = static_cast<std::uint64_t>(st.st_size);
    if (file.size_ > 0) {
      void* address = ::mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (address == MAP_FAILED) {
        const int e = errno;
        ::close(fd);
        return io_failure("cannot map", path, e);
      }
      file.address_ = static_cast<const std::byte*>(address);
    }
    ::close(fd);  // the mapping keeps the file open
    return file;
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
    if (address_ != nullptr) ::munmap(const_cast<std::byte*>(address_), size_);
    address_ = nullptr;
    size_ = 0;
  }
  void swap(mapped_file& other) noexcept {
    std::swap(address_, other.address_);
    std::swap(size_, other.size_);
    std::swap(path_, other.path_);
  }

  const std::byte* address_ = nullptr;
  std::uint64_t size_ = 0;
  std::filesystem::path path_;
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

  static result<atomic_output_file> create(const std::filesystem::path& final_path) {
    std::string name = temporary_name_template(final_path);
    const int fd = ::mkstemp(name.data());
    if (fd < 0) return io_failure("cannot create a temporary file for", final_path, errno);
    ::fchmod(fd, 0666 & ~process_umask());  // best effort
    atomic_output_file out;
    out.fd_ = fd;
    out.temporary_path_ = name;
    out.final_path_ = final_path;
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

  // Closes the file and renames it to its final name, replacing any file there. With `sync`,
  // the data and then the directory entry are flushed to disk first, so a crash leaves either
  // the old file or the complete new one.
  error commit(bool sync = false) {
    if (fd_ < 0) return {errc::io_error, "commit of a closed output file"};
    if (sync && ::fsync(fd_) != 0) return io_failure("cannot sync", temporary_path_, errno);
    if (::close(fd_) != 0) {
      fd_ = -1;
      return io_failure("cannot close", temporary_path_, errno);
    }
    fd_ = -1;
    if (::rename(temporary_path_.c_str(), final_path_.c_str()) != 0)
      return io_failure("cannot rename the temporary file to", final_path_, errno);
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
  }

  int fd_ = -1;
  std::uint64_t position_ = 0;
  std::filesystem::path temporary_path_;
  std::filesystem::path final_path_;
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

  // Renames the directory into place. An existing directory of that name is replaced only when
  // `replace_existing` is set (it is removed first; the replacement is then not atomic).
  error commit(bool replace_existing) {
    if (temporary_path_.empty()) return {errc::io_error, "commit of a discarded directory"};
    std::error_code ec;
    if (replace_existing && std::filesystem::is_directory(final_path_, ec)) {
      std::filesystem::remove_all(final_path_, ec);
      if (ec)
        return {errc::io_error, "cannot remove " + final_path_.string() + ": " + ec.message()};
    }
    if (::rename(temporary_path_.c_str(), final_path_.c_str()) != 0)
      return io_failure("cannot rename the temporary directory to", final_path_, errno);
    temporary_path_.clear();
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
