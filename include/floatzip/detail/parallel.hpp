// floatzip internals: fork-join loops over independent tasks, on a pool of persistent threads.
//
// Why a pool: starting a thread costs little, but on virtual machines a new thread often first
// runs milliseconds later, once the hypervisor wakes an idle virtual CPU (2 ms median measured on
// the 2-vCPU machine in bench/RESULTS.md). Encoding one transformer block takes a few ms, so a
// thread per call found its work already done. Pool threads are started once, and after a job
// they spin briefly before they sleep, so the jobs of back-to-back bundles reach a running thread.
//
// The calling thread always works on its own job, and waits only for tasks that another thread
// has already started. So a job completes even if no pool thread ever joins it (all busy with
// other callers' jobs, or none exists, as in a child process after fork()), and parallel_for may
// be called from several threads at once, or from inside a task.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <type_traits>

namespace floatzip::detail {

// 0 means "all cores".
inline unsigned resolve_threads(unsigned requested) noexcept {
  if (requested != 0) return requested;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : hw;
}

class thread_pool {
 public:
  // A set of tasks [0, count) that the caller and up to `helpers_wanted` pool threads take in
  // order. Lives on the caller's stack; the pool's mutex guards every field but `next`.
  struct job {
    void (*run)(void* context, std::size_t task);
    void* context;
    std::size_t count;
    std::atomic<std::size_t> next{0};
    unsigned helpers_wanted;
    unsigned helpers_joined = 0;
    unsigned helpers_active = 0;
  };

  // The process's pool. Never destroyed: its threads may still be asleep in it at exit.
  static thread_pool& instance() {
    static thread_pool* const pool = new thread_pool;
    return *pool;
  }

  // Runs every task of `j` on the caller and up to j.helpers_wanted pool threads; returns when
  // all have finished.
  void run(job& j) {
    {
      std::lock_guard lock(mutex_);
      ensure_threads(j.helpers_wanted);
      queue_.push_back(&j);
      queued_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    work_on(j);
    std::unique_lock lock(mutex_);
    if (auto it = std::find(queue_.begin(), queue_.end(), &j); it != queue_.end()) {
      queue_.erase(it);
      queued_.fetch_sub(1, std::memory_order_relaxed);
    }
    finished_.wait(lock, [&] { return j.helpers_active == 0; });
  }

 private:
  // How long an idle pool thread keeps looking for work before it sleeps.
  static constexpr std::chrono::microseconds kSpin{1000};
  static constexpr unsigned kMaxThreads = 256;

  thread_pool() = default;

  static void work_on(job& j) {
    for (std::size_t i = j.next.fetch_add(1, std::memory_order_relaxed); i < j.count;
         i = j.next.fetch_add(1, std::memory_order_relaxed)) {
      j.run(j.context, i);
    }
  }

  static void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

  // Caller holds mutex_. If the system refuses a thread, jobs run on the threads there are.
  void ensure_threads(unsigned wanted) noexcept {
    wanted = std::min(wanted, kMaxThreads);
    try {
      while (thread_count_ < wanted) {
        std::thread([this] { worker(); }).detach();
        ++thread_count_;
      }
    } catch (const std::system_error&) {
    }
  }

  void worker() {
    for (;;) {
      // Spin on the queue count first: taking the mutex is only worth it when a job is there.
      const auto spin_until = std::chrono::steady_clock::now() + kSpin;
      for (unsigned i = 0; queued_.load(std::memory_order_acquire) == 0; ++i) {
        cpu_relax();
        if (i % 64 == 0 && std::chrono::steady_clock::now() >= spin_until) break;
      }
      job* j = nullptr;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return !queue_.empty(); });
        j = queue_.front();
        ++j->helpers_active;
        if (++j->helpers_joined == j->helpers_wanted) {
          queue_.pop_front();
          queued_.fetch_sub(1, std::memory_order_relaxed);
        }
      }
      work_on(*j);
      std::lock_guard lock(mutex_);
      // After this, `j` may be gone: the caller returns once it sees zero.
      if (--j->helpers_active == 0) finished_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;      // a job was queued
  std::condition_variable finished_;  // a job lost its last helper
  std::deque<job*> queue_;
  std::atomic<std::size_t> queued_{0};  // queue_.size(), readable without the mutex
  unsigned thread_count_ = 0;
};

// Runs task(i) for every i in [0, task_count) on up to `threads` threads (the caller's included).
// Tasks are handed out dynamically so uneven tasks balance. `task` must not throw.
template <class Task>
void parallel_for(std::size_t task_count, unsigned threads, Task&& task) {
  const std::size_t workers = std::min<std::size_t>(threads == 0 ? 1 : threads, task_count);
  if (workers <= 1) {
    for (std::size_t i = 0; i < task_count; ++i) task(i);
    return;
  }
  using task_type = std::remove_reference_t<Task>;
  thread_pool::job j{
      .run = [](void* context, std::size_t i) { (*static_cast<task_type*>(context))(i); },
      .context = const_cast<void*>(static_cast<const void*>(std::addressof(task))),
      .count = task_count,
      .helpers_wanted = static_cast<unsigned>(workers - 1)};
  thread_pool::instance().run(j);
}

}  // namespace floatzip::detail
