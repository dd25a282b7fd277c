// SqliteStore: the embedded Store, one SQLite file in WAL mode.
//
// A GroupCommitWriter's writer thread owns the only write connection and
// group-commits queued writes: up to max_batch ops per BEGIN IMMEDIATE ...
// COMMIT, each op inside its own SAVEPOINT so a failing op rolls back alone
// (appends, which fail only before they write, run without one).
// Reads use a small pool of read-only connections and only ever see committed
// data. Callbacks run on the writer's completion thread, in commit order,
// while the writer goes on to the next transaction. WAL checkpoints run on a
// SqliteCheckpointer's thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/log_throttle.h"
#include "store/group_commit.h"
#include "store/store.h"

struct sqlite3;

namespace parley {

class SqliteConn;  // one sqlite3 handle plus its prepared-statement cache
class SqliteCheckpointer;
class StoreCopyLock;

class SqliteStore final : public Store {
 public:
  // Creates data_dir if needed, opens <data_dir>/parley.db, migrates, starts the writer.
  static Result<std::unique_ptr<SqliteStore>> open(const StoreOptions& options);
  ~SqliteStore() override;

  Result<User> create_user(const User& user) override;
  Result<std::optional<User>> user_by_id(const std::string& id) override;
  Result<std::optional<User>> user_by_username(const std::string& username) override;
  Result<std::optional<User>> user_by_phone(const std::string& phone) override;
  Result<std::vector<User>> search_users(const std::string& query, int limit) override;
  Result<std::vector<User>> recent_users(int limit) override;
  Result<size_t> user_count() override;
  void set_last_seen(const std::string& user_id, Micros when) override;

  Result<CreatedThread> create_thread(const Thread& thread) override;
  Result<std::optional<Thread>> thread(const std::string& thread_id) override;
  Result<std::optional<ThreadMembers>> thread_members(const std::string& thread_id) override;
  Result<std::vector<ThreadSummary>> threads_for_user(const std::string& user_id) override;
  using Store::add_participants;
  void add_participants(Addition addition, AdditionCallback done) override;
  void remove_participant(Removal removal, RemovalCallback done) override;

  void append(AppendRequest request, AppendCallback done) override;
  Result<std::optional<Message>> message(const std::string& message_id) override;
  Result<std::vector<Message>> messages_after(const std::string& thread_id, int64_t after_seq, int limit) override;
  Result<std::vector<Message>> messages_before(const std::string& thread_id, int64_t before_seq, int limit) override;
  Result<MemberPage> member_page(const std::string& user_id, const PageQuery& query) override;
  Result<int64_t> last_seq_created_before(const std::string& thread_id, int64_t below_seq, Micros created_before,
                                          int64_t lowest_seq) override;
  Result<OfflinePage> messages_since(const std::string& user_id, Micros since, int limit) override;
  Result<std::vector<std::pair<std::string, int64_t>>> left_threads_owed(const std::string& user_id) override;

  Result<std::vector<UnreadCount>> unread_counts(const std::string& user_id) override;
  Result<std::vector<ParticipantUnread>> thread_unread_counts(const std::string& thread_id) override;
  Result<int64_t> mark_delivered(const std::string& thread_id, const std::string& user_id, int64_t seq) override;
  Result<bool> mark_former_delivered(const std::string& thread_id, const std::string& user_id, int64_t seq,
                                     Micros created_at) override;
  Result<std::vector<std::string>> contacts(const std::string& user_id) override;
  Result<std::vector<std::string>> openers(const std::string& user_id) override;
  Result<std::vector<std::vector<std::string>>> contacts_of_each(const std::vector<std::string>& user_ids) override;
  Result<ReadMark> mark_read(const std::string& thread_id, const std::string& user_id, int64_t up_to_seq) override;

  Result<AccountState> set_user_disabled(const std::string& user_id, bool disabled) override;
  Result<AccountState> revoke_tokens(const std::string& user_id, int64_t valid_after) override;
  Result<std::vector<AccountState>> account_changes(int64_t after_version) override;
  Result<Message> delete_message(const std::string& message_id, const std::string& actor_id) override;
  Result<Message> edit_message(const std::string& message_id, const std::string& actor_id, const std::string& content,
                               Micros when) override;
  Result<int64_t> last_change() override;
  Result<std::vector<Message>> changes_after(const std::string& user_id, int64_t after, int limit) override;
  void enqueue_notifications(std::vector<Notification> items, std::vector<std::string> settles,
                             std::function<void(Result<size_t>)> done) override;
  Result<std::vector<std::string>> overdue_pushes(Micros before, int limit) override;
  Result<std::vector<Notification>> claim_notifications(Micros now, Micros lease_until, int limit) override;
  Result<std::optional<Micros>> next_notification_due() override;
  Status finish_notification(const std::string& id) override;
  Status retry_notification(const std::string& id, int attempts, Micros next_attempt_at) override;
  Status dead_letter_notification(const std::string& id, int attempts) override;
  Result<int64_t> dead_notification_count() override;

  std::string describe() const override;
  std::string store_id() const override { return store_id_; }
  void close() override;

  // Group commits made so far; tests use it to check that writes share commits.
  uint64_t commit_count() const { return writer_->commit_count(); }
  // Tests: queues a write whose body runs `inside` on the writer thread, inside
  // the batch transaction, so a test can hold the writer mid-commit.
  void run_inside_write_for_test(std::function<void()> inside) {
    writer_->enqueue(GroupCommitWriter::Op{[inside = std::move(inside)] {
                                             inside();
                                             return true;
                                           },
                                           [](const Error*) {}});
  }
  // An op on the writer's connection, with or without a savepoint; finish
  // gets the batch's error.
  void enqueue_op_for_test(std::function<bool(SqliteConn&)> apply, bool needs_savepoint,
                           std::function<void(const Error*)> finish);
  // The last commit's outcome (see Store::write_state).
  WriteState write_state() const override { return writer_->write_state(); }
  // Frames in the WAL as of the last commit; tests use it to see the WAL restart.
  int wal_frames() const;

 private:
  SqliteStore(StoreOptions options, std::string path, std::unique_ptr<SqliteConn> writer,
              std::unique_ptr<SqliteCheckpointer> checkpointer, Micros last_created_at);

  // --- on the writer thread only (the GroupCommitWriter calls them); callbacks
  // run on its completion thread ---
  std::optional<Error> run_batch(std::vector<GroupCommitWriter::Op>& batch);
  bool run_op(GroupCommitWriter::Op& op);
  void forget_caches();
  bool flush_thread_state();

  Result<User> write_user(User user);
  Result<CreatedThread> write_thread(const Thread& thread, const std::optional<std::string>& direct_key);
  Micros join_time();
  Result<Added> write_participants(const Addition& addition);
  Result<AppendResult> write_message(const AppendRequest& request);
  Result<Removed> write_removal(const Removal& removal);
  Result<std::optional<std::string>> successor_admin(const std::string& thread_id, const std::string& user_id);
  // The store's own check of who changes what, as it commits (Addition::actor_id, Store::delete_message).
  Status require_admin(const std::string& thread_id, const std::string& actor_id);
  Status may_change(const std::string& message_id, const std::string& actor_id, bool admin_too);
  Result<ReadMark> write_read_mark(const std::string& thread_id, const std::string& user_id, int64_t up_to_seq);
  struct ThreadKey {
    int64_t no = 0;  // threads.no, the thread's key in the message index
    int64_t last_seq = 0;
  };
  Result<ThreadKey> thread_key(const std::string& thread_id);
  Result<std::optional<int64_t>> key_owner(int64_t key);
  Result<std::optional<Message>> find_retried(const AppendRequest& request, int64_t seq);
  // Errors: not_found "user_not_found", or the read's own.
  Result<UserRef> sender_ref(const std::string& user_id);
  Result<bool> is_participant(const std::string& thread_id, const std::string& user_id);
  const std::string& member_key(const std::string& thread_id, const std::string& user_id);

  // --- read side ---
  std::unique_ptr<SqliteConn> acquire_reader();
  void release_reader(std::unique_ptr<SqliteConn> conn);
  // Runs f on a pooled read connection: f's answer, or an Error when no
  // connection could be opened or any statement of f failed.
  template <typename F, typename T = std::invoke_result_t<F&, SqliteConn&>>
  Result<T> with_reader(F&& f);

  const StoreOptions options_;
  const std::string path_;
  std::string store_id_;  // <data dir>/store_id, made on the first start (a restore's too)
  std::unique_ptr<StoreCopyLock> copy_lock_;  // beside a server only; released last in close()

  std::unique_ptr<SqliteConn> writer_conn_;
  std::unique_ptr<SqliteCheckpointer> checkpointer_;  // stopped after the writer thread, before writer_conn_ closes
  std::unique_ptr<GroupCommitWriter> writer_;  // stopped in close(), before the connections

  std::once_flag close_once_;
  // A full disk fails every batch, as fast as clients retry: one line a second.
  LogThrottle batch_failed_log_;

  // Writer-thread caches; dropped whenever a batch rolls back.
  std::unordered_map<std::string, ThreadKey> thread_keys_;
  std::unordered_map<std::string, UserRef> senders_;
  // (thread, user) pairs found in participants, keyed by member_key(). Only
  // this writer removes participants, and it drops the pair as it does, so a
  // pair here is a participant now.
  std::unordered_set<std::string> members_;
  std::string member_probe_;  // member_key()'s buffer: no allocation per append
  // Written by appends, flushed by flush_thread_state(); sorted, so the
  // flush walks each table's pages in order.
  struct ThreadState {
    int64_t no = 0;
    int64_t last_seq = 0;
    Micros last_activity = 0;
  };
  std::map<std::string, ThreadState> pending_threads_;
  std::map<std::pair<std::string, std::string>, int64_t> pending_reads_;  // (thread, sender) -> seq
  Micros last_created_at_ = 0;  // created_at is strictly increasing across the store

  std::mutex readers_mu_;
  std::vector<std::unique_ptr<SqliteConn>> readers_;
  bool readers_closed_ = false;
};

}  // namespace parley
