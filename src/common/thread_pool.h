// ThreadPool: a fixed set of threads for work that may block (storage reads,
// password hashing), so the network event loops never do. submit() may be
// called from any thread; tasks run in FIFO order across the workers.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace parley {

// A thread that names itself (as top -H, perf and gdb show it; 15 bytes at
// most) and then runs `body`. The main thread is never renamed: its name is
// the process's.
std::thread named_thread(std::string name, std::function<void()> body);

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();  // finishes queued tasks, then joins
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void submit(std::function<void()> task);
  size_t queued() const;
  size_t threads() const { return threads_.size(); }
  // True when a worker would take a task submitted now at once: fewer tasks
  // queued and running than threads (a moment's view; any thread).
  bool has_free_worker() const;
  // True when no task is queued or running (a moment's view; any thread).
  bool idle() const;

 private:
  void run();
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  size_t running_ = 0;  // tasks being run now
  std::vector<std::thread> threads_;
};

}  // namespace parley
