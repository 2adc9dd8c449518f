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
//   adaptive     2 MiB pages while they are cheap, else 4 KiB ones (the default of
//                decompress_values): the decoding threads fault the output in 2 MiB slices
//                before they decode (as populate_parallel) and time each on the faulting
//                thread's CPU clock; a huge page that takes longer than
//                huge_page_gauge::kSlowSeconds turns the rest of the buffer, and the process's
//                next kRetryBytes of output, to 4 KiB pages.
//
// Why adaptive: on a VM whose free memory is handed back to the host (virtio-balloon free page
// reporting), a huge page carved from memory the guest freed seconds ago costs 3.5-7 ms to clear
// (0.3-0.6 GB/s), against 0.1-0.2 ms when the memory was freed just before (12-24 GB/s) and
// 0.7 ms as 512 small faults (3 GB/s, however long the memory was free): measured on the 2-vCPU
// VM of bench/RESULTS.md (issue 14, "Fresh memory"). Neither fixed choice is right there: huge
// pages are 6-10x slower than small ones when a model is loaded into memory that was free for
// long, and 4-8x faster when it reuses memory freed just before. The kernel hands out unreported
// free blocks before reported ones, so once one huge page is slow the next ones are too, until
// memory is freed again: hence a retry after kRetryBytes rather than a probe per buffer.
#pragma once

#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "floatzip/error.hpp"

namespace floatzip::detail {

enum class page_policy { first_touch, huge_pages, populate, populate_parallel, adaptive };

inline constexpr std::size_t kHugePageBytes = std::size_t{2} << 20;  // x86-64 and arm64 (4K base)

// CPU time the calling thread has used, in seconds (user and system: the kernel clearing a page
// it faults in counts). What the adaptive policy times a huge page with: a slow page costs CPU
// time (measured on the VM above: 4.6-5.1 ms of thread CPU time for 4.6-6.6 ms of wall time per
// slow page, 0.09 ms for both when cheap), while a thread that was descheduled mid-fault by
// another one of the machine does not, and on the wall clock it would turn a whole process to
// 4 KiB pages for one preemption.
inline double thread_cpu_seconds() noexcept {
  timespec t{};
  (void)::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

// Whether 2 MiB pages are cheap to fault in, as the adaptive policy last found them. One per
// process (process()); tests make their own.
class huge_page_gauge {
 public:
  // A huge page that takes longer than this to fault in is slower than 512 small faults
  // wherever they were measured (0.7 ms on the VM above, about 0.1 ms on bare metal); the cheap
  // huge pages of that VM take 0.1-0.2 ms.
  static constexpr double kSlowSeconds = 1e-3;
  // Output mapped in 4 KiB pages after a slow huge page before huge pages are tried again: one
  // slow probe (at most ~7 ms) per 256 MiB costs a few percent of faulting them in small pages.
  static constexpr std::int64_t kRetryBytes = std::int64_t{256} << 20;

  static huge_page_gauge& process() noexcept {
    static huge_page_gauge gauge;
    return gauge;
  }

  // Whether a new mapping of `bytes` should ask for huge pages; a mapping that does not counts
  // towards the retry.
  bool want_huge(std::size_t bytes) noexcept {
    if (small_left_.load(std::memory_order_relaxed) <= 0) return true;
    small_left_.fetch_sub(static_cast<std::int64_t>(std::min<std::size_t>(bytes, kRetryBytes)),
                          std::memory_order_relaxed);
    return false;
  }

  // One huge page took `seconds` of the faulting thread's CPU time. Returns whether that was slow
  // (and then the next kRetryBytes of mappings get small pages).
  bool record(double seconds) noexcept {
    if (seconds <= kSlowSeconds) return false;
    small_left_.store(kRetryBytes, std::memory_order_relaxed);
    return true;
  }

  // Forgets a slow huge page: the next mapping tries huge pages again.
  void reset() noexcept { small_left_.store(0, std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> small_left_{0};
};

// An owning, page-aligned anonymous mapping of `size()` bytes, untouched (except under
// page_policy::populate), reading as zeros until written.
class page_memory {
 public:
  page_memory() = default;
  page_memory(page_memory&& other) noexcept
      : base_(std::exchange(other.base_, nullptr)),
        data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        mapped_(std::exchange(other.mapped_, 0)),
        huge_bytes_(std::exchange(other.huge_bytes_, 0)) {}
  page_memory& operator=(page_memory&& other) noexcept {
    if (this != &other) {
      release();
      base_ = std::exchange(other.base_, nullptr);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      mapped_ = std::exchange(other.mapped_, 0);
      huge_bytes_ = std::exchange(other.huge_bytes_, 0);
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
    const bool huge =
        size >= kHugePageBytes &&
        (policy == page_policy::huge_pages ||
         (policy == page_policy::adaptive && huge_page_gauge::process().want_huge(size)));
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
      m.huge_bytes_ = size / kHugePageBytes * kHugePageBytes;
      (void)::madvise(m.data_, m.huge_bytes_, MADV_HUGEPAGE);
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

  // Asks for 4 KiB pages from now on in the part that asked for huge pages; those already faulted
  // in stay.
  void prefer_small_pages() const noexcept {
    if (huge_bytes_ != 0) (void)::madvise(data_, huge_bytes_, MADV_NOHUGEPAGE);
  }

  [[nodiscard]] std::byte* data() const noexcept { return data_; }
  // The leading bytes that asked for 2 MiB pages (whole huge pages; 0 for 4 KiB pages only).
  [[nodiscard]] std::size_t huge_bytes() const noexcept { return huge_bytes_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  void release() noexcept {
    if (base_ != nullptr) ::munmap(base_, mapped_);
    base_ = nullptr;
    data_ = nullptr;
    size_ = 0;
    mapped_ = 0;
    huge_bytes_ = 0;
  }

  void* base_ = nullptr;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t mapped_ = 0;
  std::size_t huge_bytes_ = 0;
};

}  // namespace floatzip::detail
