// floatzip internals: output memory whose pages the decoding threads fault in themselves.
//
// Why: a fresh std::vector of decoded values is zeroed by the thread that creates it, so every
// page of the output is faulted in (and cleared twice, by the kernel and by the vector) on one
// thread before decoding starts; that is most of a fresh-buffer decode (bench/RESULTS.md). An
// anonymous mapping that nobody touches before the decoder writes it moves each fault to the thread
// that writes the page, spread over the decoding threads, and skips the user-space clearing.
//
// How pages are obtained is a measured choice (bench/bench_user_paths.cpp, bench/RESULTS.md):
//   first_touch  4 KiB pages faulted by the decoding threads as they write
//   huge_pages   the same mapping with MADV_HUGEPAGE: one fault per 2 MiB (the default of
//                decompress_values: where the host backs the memory, the kernel clears a huge
//                page far faster than it takes 512 faults; a tail under 2 MiB stays in 4 KiB)
//   populate     MAP_POPULATE: the kernel faults everything in inside mmap(), on the caller
//   populate_parallel  MADV_POPULATE_WRITE on 2 MiB slices spread over the decoding threads
//                before they decode: one system call per slice instead of 512 page faults
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "floatzip/error.hpp"

namespace floatzip::detail {

enum class page_policy { first_touch, huge_pages, populate, populate_parallel };

inline constexpr std::size_t kHugePageBytes = std::size_t{2} << 20;  // x86-64 and arm64 (4K base)

// An owning, page-aligned anonymous mapping of `size()` bytes, untouched (except under
// page_policy::populate), reading as zeros until written.
class page_memory {
 public:
  page_memory() = default;
  page_memory(page_memory&& other) noexcept
      : base_(std::exchange(other.base_, nullptr)),
        data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        mapped_(std::exchange(other.mapped_, 0)) {}
  page_memory& operator=(page_memory&& other) noexcept {
    if (this != &other) {
      release();
      base_ = std::exchange(other.base_, nullptr);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      mapped_ = std::exchange(other.mapped_, 0);
    }
    return *this;
  }
  page_memory(const page_memory&) = delete;
  page_memory& operator=(const page_memory&) = delete;
  ~page_memory() { release(); }

  // errc::too_large when the system refuses the mapping.
  static result<page_memory> allocate(std::size_t size, page_policy policy) {
    page_memory m;
    if (size == 0) return m;
    int flags = MAP_PRIVATE | MAP_ANONYMOUS;
    if (policy == page_policy::populate) flags |= MAP_POPULATE;
    // Huge pages need 2 MiB alignment: the mapping gets one huge page of slack (address space
    // only, never touched) and the data starts at the first 2 MiB boundary in it.
    const bool huge = policy == page_policy::huge_pages && size >= kHugePageBytes;
    const std::size_t mapped = huge ? size + kHugePageBytes : size;
    void* p = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (p == MAP_FAILED) {
      return error{errc::too_large, "cannot map " + std::to_string(size) +
                                        " bytes of output memory: " + std::strerror(errno)};
    }
    m.base_ = p;
    m.mapped_ = mapped;
    m.data_ = static_cast<std::byte*>(p);
    m.size_ = size;
    if (huge) {
      const auto address = reinterpret_cast<std::uintptr_t>(p);
      m.data_ += (kHugePageBytes - address % kHugePageBytes) % kHugePageBytes;
      // Whole huge pages only; a tail under 2 MiB stays in 4 KiB pages rather than waste up to
      // 2 MiB. Advice only: a kernel without transparent huge pages keeps 4 KiB pages.
      (void)::madvise(m.data_, size / kHugePageBytes * kHugePageBytes, MADV_HUGEPAGE);
    }
    return m;
  }

  // Faults in [offset, offset + length) for writing in one call (Linux 5.14 and later; a no-op
  // elsewhere, where the pages are faulted in when written).
  void populate(std::size_t offset, std::size_t length) const noexcept {
#ifdef MADV_POPULATE_WRITE
    if (data_ == nullptr || offset >= size_) return;
    // madvise wants a page-aligned start: data_ is, so round the offset down to a page.
    const std::size_t begin = offset / 4096 * 4096;
    (void)::madvise(data_ + begin, std::min(size_ - begin, length + (offset - begin)),
                    MADV_POPULATE_WRITE);
#else
    (void)offset;
    (void)length;
#endif
  }

  [[nodiscard]] std::byte* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  void release() noexcept {
    if (base_ != nullptr) ::munmap(base_, mapped_);
    base_ = nullptr;
    data_ = nullptr;
    size_ = 0;
    mapped_ = 0;
  }

  void* base_ = nullptr;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t mapped_ = 0;
};

}  // namespace floatzip::detail
