// GroupCommitWriter: the write half of a Store, independent of the database.
//
// Writes are queued as ops; one writer thread takes up to max_batch of them
// at a time and hands them to the backend's run_batch, which applies them in
// one transaction and commits. Each op's finish() then runs on a completion
// thread, one after another in commit order, after the commit is durable, so
// the writer starts the next transaction while the last one's results are
// encoded and published (a small batch with nothing ahead of it is finished
// on the writer itself, still in order: at low load that saves a thread
// wake-up). A batch whose transaction fails hands its error to
// every op in it.
//
// enqueue()/submit()/submit_and_wait() may be called from any thread
// (submit_and_wait() not from the writer or completion thread: it would wait
// on itself). run_batch runs on the writer thread only. The store owns the
// writer and must stop() it before it closes the connection run_batch uses;
// after stop(), new ops finish at once with "store_closed".
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <atomic>
#include <vector>

#include "common/error.h"
#include "store/store.h"

namespace parley {

// What a backend may attach to an op it queues, to know the op again in its
// run_batch (PgStore sends a run of appends together); the writer never
// looks at it.
struct GroupCommitPayload {
  virtual ~GroupCommitPayload() = default;
};

// How GroupCommitWriter::submit() fills an Op's flags (see Op). Outside the
// class: clang needs it complete to use it as a default argument there.
struct GroupCommitOpFlags {
  bool needs_current_state = true;
  bool needs_savepoint = true;
};

class GroupCommitWriter {
 public:
  struct Op {
    // Runs inside the batch transaction; false when this op failed by itself
    // (the backend rolls back only its part and the batch goes on).
    std::function<bool()> apply;
    // After the batch: the batch's error when its transaction failed, else nullptr.
    std::function<void(const Error* batch_error)> finish;
    // False for an op that neither reads nor writes what the backend defers
    // to the end of a batch (SqliteStore: the thread row and the sender's read
    // mark of each append); run_batch brings that state up to date before
    // every op where this is true.
    bool needs_current_state = true;
    // False for an op whose failure leaves nothing written: its first write
    // that can fail without losing the transaction is also its first write
    // (SQLite undoes a failed statement), and any later one can fail only by
    // losing it. SqliteStore then runs it without a savepoint (which copied
    // every page the op touched: 12-15% of an append) and fails the whole
    // batch if it fails after writing all the same.
    bool needs_savepoint = true;
    std::shared_ptr<GroupCommitPayload> payload = nullptr;  // the backend's, or none
  };
  using OpFlags = GroupCommitOpFlags;
  // Applies and commits one batch; the error when the whole transaction failed.
  using RunBatch = std::function<std::optional<Error>(std::vector<Op>& batch)>;
  // Checks that the store can commit again (a write of no consequence); the
  // error while it cannot. Run on the writer thread about once a second while
  // the last batch failed and nothing is queued, so that a database that came
  // back says so before the next write: /health answers 503 meanwhile, and a
  // load balancer that stopped sending traffic for it would otherwise never
  // send the write that clears it. `give_up` turns true once stop() is
  // called or a write is queued: a probe waiting on the database returns
  // then, so that neither waits out a database that does not answer.
  using Probe = std::function<std::optional<Error>(const std::function<bool()>& give_up)>;

  // Starts the writer and completion threads. `probe` may be empty: then
  // only the next batch tells.
  GroupCommitWriter(size_t max_batch, RunBatch run_batch, Probe probe = {});
  ~GroupCommitWriter();
  GroupCommitWriter(const GroupCommitWriter&) = delete;
  GroupCommitWriter& operator=(const GroupCommitWriter&) = delete;

  void enqueue(Op op);

  // An op computing a Result<T>; done (may be empty) gets it after the commit.
  template <typename T>
  void submit(std::function<Result<T>()> apply, std::function<void(Result<T>)> done,
              OpFlags flags = {});
  template <typename T>
  Result<T> submit_and_wait(std::function<Result<T>()> apply, OpFlags flags = {});

  // Commits everything queued so far, runs every callback, then stops both threads.
  void stop();

  // The last batch's outcome, for Store::write_state(); any thread.
  Store::WriteState write_state() const {
    std::lock_guard lock(outcome_mu_);
    return last_outcome_;
  }

  // Batches committed so far; tests use it to check that writes share commits.
  uint64_t commit_count() const { return commits_.load(std::memory_order_relaxed); }
  // Ops queued in any writer of this process whose finish() has not run yet:
  // a graceful shutdown waits for zero before it closes connections. Any thread.
  static int64_t ops_in_flight() { return in_flight_.load(std::memory_order_acquire); }
  // True on the writer or the completion thread.
  bool on_own_thread() const;

 private:
  struct Completed {
    std::vector<Op> ops;
    std::optional<Error> failure;
  };
  void writer_loop();
  // Waits for work (or stopping), probing meanwhile if the last batch failed;
  // false when stopping with nothing queued. `lock` holds queue_mu_.
  bool wait_for_work(std::unique_lock<std::mutex>& lock);
  void set_outcome(const std::optional<Error>& failure);
  void completion_loop();
  void finish_all(Completed& c);
  static void log_op_exception(const char* what);

  const size_t max_batch_;
  const RunBatch run_batch_;
  const Probe probe_;
  bool last_failed_ = false;  // writer thread only

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<Op> queue_;
  bool stopping_ = false;
  std::atomic<bool> stop_asked_{false};    // stopping_, for a probe under way
  std::atomic<bool> work_waiting_{false};  // an op was queued since the probe began

  std::mutex done_mu_;
  std::condition_variable done_cv_;
  std::deque<Completed> done_;  // committed (or failed) batches whose callbacks have yet to run
  bool completing_ = false;     // the completion thread is running callbacks it took from done_
  bool done_stopping_ = false;

  mutable std::mutex outcome_mu_;
  Store::WriteState last_outcome_;
  std::once_flag stop_once_;
  std::atomic<uint64_t> commits_{0};
  static inline std::atomic<int64_t> in_flight_{0};
  std::thread writer_;
  std::thread completer_;  // runs the callbacks
};

template <typename T>
void GroupCommitWriter::submit(std::function<Result<T>()> apply, std::function<void(Result<T>)> done,
                               OpFlags flags) {
  auto result = std::make_shared<std::optional<Result<T>>>();
  Op op;
  op.needs_current_state = flags.needs_current_state;
  op.needs_savepoint = flags.needs_savepoint;
  op.apply = [apply = std::move(apply), result] {
    try {
      result->emplace(apply());
    } catch (const std::exception& e) {
      log_op_exception(e.what());
      result->emplace(internal_error("storage error"));
    }
    return (*result)->ok();
  };
  op.finish = [result, done = std::move(done)](const Error* batch_error) {
    if (!done) return;
    if (batch_error) {
      done(*batch_error);
    } else {
      done(std::move(**result));
    }
  };
  enqueue(std::move(op));
}

template <typename T>
Result<T> GroupCommitWriter::submit_and_wait(std::function<Result<T>()> apply, OpFlags flags) {
  // Waiting on the writer from a callback would hold up every later callback.
  if (on_own_thread()) return internal_error("blocking store write from a store callback");
  auto promise = std::make_shared<std::promise<Result<T>>>();
  auto future = promise->get_future();
  submit<T>(
      std::move(apply), [promise](Result<T> r) { promise->set_value(std::move(r)); }, flags);
  return future.get();
}

}  // namespace parley
