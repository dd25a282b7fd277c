// SqliteStore: the embedded Store, one SQLite file in WAL mode.
//
// One writer thread owns the only write connection and group-commits queued
// writes: up to max_batch ops per BEGIN IMMEDIATE ... COMMIT, each op inside
// its own SAVEPOINT so a failing op rolls back alone. Reads use a small pool
// of read-only connections and only ever see committed data. Callbacks run
// on a completion thread, in commit order, while the writer goes on to the
// next transaction. WAL checkpoints run on a SqliteCheckpointer's thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "store/store.h"

namespace parley {

class SqliteConn;  // one sqlite3 handle plus its prepared-statement cache
class SqliteCheckpointer;

class SqliteStore final : public Store {
 public:
  // Creates data_dir if needed, opens <data_dir>/parley.db, migrates, starts the writer.
  static Result<std::unique_ptr<SqliteStore>> open(const StoreOptions& options);
  ~SqliteStore() override;

  Result<User> create_user(const User& user) override;
  std::optional<User> user_by_id(const std::string& id) override;
  std::optional<User> user_by_username(const std::string& username) override;
  std::optional<User> user_by_phone(const std::string& phone) override;
  std::vector<User> search_users(const std::string& query, int limit) override;
  size_t user_count() override;
  void set_last_seen(const std::string& user_id, Micros when) override;

  Result<CreatedThread> create_thread(const Thread& thread) override;
  std::optional<Thread> thread(const std::string& thread_id) override;
  std::optional<ThreadMembers> thread_members(const std::string& thread_id) override;
  std::vector<ThreadSummary> threads_for_user(const std::string& user_id) override;
  Result<std::vector<std::string>> add_participants(const std::string& thread_id,
                                                    const std::vector<std::string>& user_ids) override;
  Status remove_participant(const std::string& thread_id, const std::string& user_id) override;

  void append(AppendRequest request, AppendCallback done) override;
  std::optional<Message> message(const std::string& message_id) override;
  std::vector<Message> messages_after(const std::string& thread_id, int64_t after_seq, int limit) override;
  std::vector<Message> messages_before(const std::string& thread_id, int64_t before_seq, int limit) override;
  OfflinePage messages_since(const std::string& user_id, Micros since, int limit) override;

  std::vector<UnreadCount> unread_counts(const std::string& user_id) override;
  Result<int64_t> mark_delivered(const std::string& thread_id, const std::string& user_id, int64_t seq) override;
  std::vector<std::string> contacts(const std::string& user_id) override;
  Result<int64_t> mark_read(const std::string& thread_id, const std::string& user_id, int64_t up_to_seq) override;

  std::string describe() const override;
  WriteState write_state() const override;
  void close() override;

  // Group commits made so far; tests use it to check that writes share commits.
  uint64_t commit_count() const { return commits_.load(std::memory_order_relaxed); }
  // Frames in the WAL as of the last commit; tests use it to see the WAL restart.
  int wal_frames() const;
  // Tests: queues a write whose body runs `inside` on the writer thread, inside
  // the batch transaction, so a test can hold the writer mid-commit.
  void run_inside_write_for_test(std::function<void()> inside);

 private:
  // A queued write. apply() runs inside the batch transaction (in its own
  // savepoint) and returns false when the op failed; finish() runs after the
  // batch, with the batch's error when COMMIT failed, else nullptr.
  struct WriteOp {
    std::function<bool()> apply;
    std::function<void(const Error* batch_error)> finish;
  };

  SqliteStore(StoreOptions options, std::string path, std::unique_ptr<SqliteConn> writer,
              std::unique_ptr<SqliteCheckpointer> checkpointer, Micros last_created_at);

  // --- the write path: submit/enqueue from any thread; writer_loop, run_batch,
  // run_in_savepoint and forget_caches on the writer thread; completion_loop
  // (which runs every callback) on the completion thread ---
  template <typename T>
  void submit(std::function<Result<T>()> apply, std::function<void(Result<T>)> done);
  template <typename T>
  Result<T> submit_and_wait(std::function<Result<T>()> apply);
  void enqueue(WriteOp op);
  void writer_loop();
  void run_batch(std::vector<WriteOp>& batch);
  void completion_loop();
  bool run_in_savepoint(WriteOp& op);
  void forget_caches();

  Result<User> write_user(User user);
  Result<CreatedThread> write_thread(const Thread& thread, const std::optional<std::string>& direct_key);
  Result<std::vector<std::string>> write_participants(const std::string& thread_id,
                                                      const std::vector<std::string>& user_ids);
  Result<AppendResult> write_message(const AppendRequest& request);
  Result<int64_t> write_read_mark(const std::string& thread_id, const std::string& user_id, int64_t up_to_seq);
  Result<int64_t> last_seq_of(const std::string& thread_id);
  std::optional<UserRef> sender_ref(const std::string& user_id);

  // --- read side ---
  std::unique_ptr<SqliteConn> acquire_reader();
  void release_reader(std::unique_ptr<SqliteConn> conn);
  // Runs f on a pooled read connection; `fallback` when none can be opened.
  template <typename F, typename R = std::invoke_result_t<F&, SqliteConn&>>
  R with_reader(F&& f, R fallback = R{});

  const StoreOptions options_;
  const std::string path_;

  std::unique_ptr<SqliteConn> writer_conn_;
  std::unique_ptr<SqliteCheckpointer> checkpointer_;  // stopped after the writer thread, before writer_conn_ closes
  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<WriteOp> queue_;
  bool stopping_ = false;
  std::thread writer_;

  // Committed (or failed) batches whose callbacks have yet to run, in commit order.
  struct Completed {
    std::vector<WriteOp> ops;
    std::optional<Error> failure;
  };
  std::mutex done_mu_;
  std::condition_variable done_cv_;
  std::deque<Completed> done_;
  bool done_stopping_ = false;
  std::thread completer_;  // runs the callbacks

  std::once_flag close_once_;
  std::atomic<uint64_t> commits_{0};
  mutable std::mutex write_state_mu_;
  WriteState write_state_;  // the last commit's outcome

  // Writer-thread caches; dropped whenever a batch rolls back.
  std::unordered_map<std::string, int64_t> last_seq_;
  std::unordered_map<std::string, UserRef> senders_;
  Micros last_created_at_ = 0;  // created_at is strictly increasing across the store

  std::mutex readers_mu_;
  std::vector<std::unique_ptr<SqliteConn>> readers_;
  bool readers_closed_ = false;
};

}  // namespace parley
