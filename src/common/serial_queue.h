// SerialQueue: runs tasks one at a time, in submission order, on a
// ThreadPool, with one pool task per burst: while that task runs it also
// takes what is submitted meanwhile. A burst of small jobs (authenticating a
// storm of connects, announcing their presence) then costs one worker
// wake-up instead of one each. submit() may be called from any thread. The
// pool must outlive the queue's last task; the queue is shared with it.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "common/thread_pool.h"

namespace parley {

class SerialQueue : public std::enable_shared_from_this<SerialQueue> {
 public:
  static std::shared_ptr<SerialQueue> create(ThreadPool& pool) {
    return std::shared_ptr<SerialQueue>(new SerialQueue(pool));
  }

  void submit(std::function<void()> task) {
    {
      std::lock_guard lock(mu_);
      tasks_.push_back(std::move(task));
      if (draining_) return;
      draining_ = true;
    }
    pool_.submit([self = shared_from_this()] { self->drain(); });
  }

  // True while a task is queued or running. Once false, every task submitted
  // so far has finished.
  bool busy() {
    std::lock_guard lock(mu_);
    return draining_;
  }

 private:
  explicit SerialQueue(ThreadPool& pool) : pool_(pool) {}

  void drain() {
    for (;;) {
      std::vector<std::function<void()>> batch;
      {
        std::lock_guard lock(mu_);
        if (tasks_.empty()) {
          draining_ = false;
          return;
        }
        batch.swap(tasks_);
      }
      for (auto& task : batch) task();
    }
  }

  ThreadPool& pool_;
  std::mutex mu_;
  std::vector<std::function<void()>> tasks_;
  bool draining_ = false;  // a drain task is queued or running
};

}  // namespace parley
