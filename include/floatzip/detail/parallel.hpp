// floatzip internals: a minimal fork-join loop over independent tasks.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <thread>
#include <vector>

namespace floatzip::detail {

// 0 means "all cores".
inline unsigned resolve_threads(unsigned requested) noexcept {
  if (requested != 0) return requested;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : hw;
}

// Runs task(i) for every i in [0, task_count) on up to `threads` threads (the caller's included).
// Tasks are handed out dynamically so uneven tasks balance. `task` must not throw.
template <class Task>
void parallel_for(std::size_t task_count, unsigned threads, Task&& task) {
  const std::size_t workers = std::min<std::size_t>(threads == 0 ? 1 : threads, task_count);
  if (workers <= 1) {
    for (std::size_t i = 0; i < task_count; ++i) task(i);
    return;
  }
  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    for (std::size_t i = next.fetch_add(1, std::memory_order_relaxed); i < task_count;
         i = next.fetch_add(1, std::memory_order_relaxed)) {
      task(i);
    }
  };
  std::vector<std::jthread> pool;
  pool.reserve(workers - 1);
  for (std::size_t w = 1; w < workers; ++w) pool.emplace_back(worker);
  worker();
}

}  // namespace floatzip::detail
