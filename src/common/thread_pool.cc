#include "common/thread_pool.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

namespace parley {

std::thread named_thread(std::string name, std::function<void()> body) {
  return std::thread([name = std::move(name), body = std::move(body)] {
    pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
    body();
  });
}

ThreadPool::ThreadPool(int threads) {
  for (int i = 0; i < threads; ++i) threads_.push_back(named_thread("parley-worker", [this] { run(); }));
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::submit(std::function<void()> task) {
  {
    std::lock_guard lock(mu_);
    tasks_.push_back(std::move(task));
  }
  cv_.notify_one();
}

size_t ThreadPool::queued() const {
  std::lock_guard lock(mu_);
  return tasks_.size();
}

bool ThreadPool::has_free_worker() const {
  std::lock_guard lock(mu_);
  return tasks_.size() + running_ < threads_.size();
}

bool ThreadPool::idle() const {
  std::lock_guard lock(mu_);
  return tasks_.empty() && running_ == 0;
}

void ThreadPool::run() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
      ++running_;
    }
    try {
      task();
    } catch (const std::exception& e) {
      spdlog::error("event=task_failed error=\"{}\"", e.what());
    }
    task = nullptr;  // its captures go before the pool counts it done
    std::lock_guard lock(mu_);
    --running_;
  }
}

}  // namespace parley
