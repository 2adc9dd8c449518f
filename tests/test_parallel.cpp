// The fork-join loop and its persistent thread pool (detail/parallel.hpp).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <set>
#include <thread>
#include <vector>

#include "floatzip/detail/parallel.hpp"

namespace floatzip::detail {
namespace {

// Runs every task exactly once for task counts around the thread count.
TEST(parallel_for, every_task_runs_exactly_once) {
  for (const unsigned threads : {1u, 2u, 3u, 8u}) {
    for (const std::size_t tasks :
         {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{7}, std::size_t{1000}}) {
      std::vector<std::atomic<int>> runs(tasks);
      parallel_for(tasks, threads, [&](std::size_t i) { runs[i].fetch_add(1); });
      for (std::size_t i = 0; i < tasks; ++i) {
        ASSERT_EQ(runs[i].load(), 1)
            << "task " << i << " of " << tasks << ", " << threads << " threads";
      }
    }
  }
}

// Pool threads do take part: with tasks that wait for each other, a loop of two tasks on two
// threads can only finish if a second thread runs one of them (or the test times out).
TEST(parallel_for, a_pool_thread_joins_the_caller) {
  std::atomic<int> arrived{0};
  std::set<std::thread::id> ids;
  std::mutex ids_mutex;
  parallel_for(2, 2, [&](std::size_t) {
    {
      std::lock_guard lock(ids_mutex);
      ids.insert(std::this_thread::get_id());
    }
    arrived.fetch_add(1);
    while (arrived.load() < 2) std::this_thread::yield();
  });
  EXPECT_EQ(ids.size(), 2u);
}

// Several callers at once, each also nesting a loop inside its tasks: every job completes with
// every task run once, whatever threads the pool has free.
TEST(parallel_for, concurrent_and_nested_callers) {
  constexpr int kCallers = 4;
  constexpr std::size_t kOuter = 16;
  constexpr std::size_t kInner = 64;
  std::vector<std::atomic<std::uint64_t>> sums(kCallers);
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c) {
    callers.emplace_back([&, c] {
      for (int round = 0; round < 20; ++round) {
        parallel_for(kOuter, 3, [&](std::size_t outer) {
          parallel_for(kInner, 2,
                       [&](std::size_t inner) { sums[c].fetch_add(outer * kInner + inner + 1); });
        });
      }
    });
  }
  for (auto& t : callers) t.join();
  constexpr std::uint64_t n = kOuter * kInner;
  for (int c = 0; c < kCallers; ++c) EXPECT_EQ(sums[c].load(), 20 * n * (n + 1) / 2) << c;
}

}  // namespace
}  // namespace floatzip::detail
