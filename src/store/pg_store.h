// PgStore: the Store on PostgreSQL (libpq), for several Parley nodes sharing
// one database.
//
// Writes go through a GroupCommitWriter, as in the SQLite store: many writes
// share one transaction, each op in its own SAVEPOINT, and callbacks run on
// the completion thread after COMMIT returned. Every writing transaction
// first locks the one commit_clock row, so across all nodes transactions
// that write commit one after another: a thread's seq is read and bumped
// under that lock (gapless however many nodes append to it), created_at
// follows commit order across the whole database (the offline-sync cursor,
// see docs/architecture.md), and two writers never deadlock. Reads use a
// pool of connections and see committed data only.
//
// A lost connection fails the ops of the batch in flight with kUnavailable
// "storage_unavailable" (nothing is acknowledged); the writer reconnects
// before its next batch and readers replace broken connections, so the
// store recovers by itself when the server is back. Any thread may call
// any method.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "common/log_throttle.h"
#include "store/group_commit.h"
#include "store/store.h"

namespace parley {

class PgConn;

class PgStore final : public Store {
 public:
  // Connects to options.database_url, migrates, starts the writer.
  static Result<std::unique_ptr<PgStore>> open(const StoreOptions& options);
  ~PgStore() override;

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
  // The last commit's outcome (see Store::write_state).
  WriteState write_state() const override { return writer_->write_state(); }

 private:
  PgStore(StoreOptions options, std::string described, std::unique_ptr<PgConn> writer);

  // --- writer side (writer thread only) ---
  std::optional<Error> run_batch(std::vector<GroupCommitWriter::Op>& batch);
  std::optional<Error> run_batch_on_writer(std::vector<GroupCommitWriter::Op>& batch);
  std::optional<Error> probe_writer(const std::function<bool()>& give_up);
  struct BatchAttempt {
    bool ok = false;
    bool unsaved_op_failed = false;  // an op without a savepoint lost the transaction
    std::string error;
    bool commit_failed = false;  // COMMIT was sent and did not answer success
  };
  BatchAttempt try_batch(std::vector<GroupCommitWriter::Op>& batch, bool savepoint_every_op);
  bool run_op(GroupCommitWriter::Op& op, bool savepoint);

  Result<User> write_user(const User& user);
  Result<CreatedThread> write_thread(const Thread& thread, const std::optional<std::string>& direct_key);
  Micros join_time();
  Result<Added> write_participants(const Addition& addition);
  struct PendingAppend;
  Result<AppendResult> write_message(const AppendRequest& request);
  bool append_run(const std::vector<PendingAppend*>& run);
  Result<Removed> write_removal(const Removal& removal);
  Result<std::optional<std::string>> successor_admin(const std::string& thread_id, const std::string& user_id);
  Status bump_member_version(const std::string& thread_id);
  // The store's own check of who changes what, as it commits (Addition::actor_id, Store::delete_message).
  Status require_admin(const std::string& thread_id, const std::string& actor_id);
  Status may_change(const std::string& message_id, const std::string& actor_id, bool admin_too);
  Result<AppendResult> not_appended(PgConn& c, const AppendRequest& request,
                                    const std::optional<std::string>& client_id);
  Error refused_append(PgConn& c, const AppendRequest& request);
  Result<ReadMark> write_read_mark(const std::string& thread_id, const std::string& user_id, int64_t up_to_seq);
  std::optional<UserRef> sender_ref(const std::string& user_id);

  // --- read side ---
  std::unique_ptr<PgConn> acquire_reader();
  void release_reader(std::unique_ptr<PgConn> conn);
  // Runs f on a pooled connection: f's answer, or an Error when no
  // connection could be had or any statement of f failed.
  template <typename F, typename T = std::invoke_result_t<F&, PgConn&>>
  Result<T> with_reader(F&& f);

  const StoreOptions options_;
  const std::string described_;  // the URL without its password
  std::string store_id_;  // pg_store_id(), read at open

  std::unique_ptr<PgConn> writer_conn_;
  std::unique_ptr<GroupCommitWriter> writer_;  // stopped in close(), before the connections
  std::once_flag close_once_;
  // A database down fails every batch, as fast as clients retry: one line a second.
  LogThrottle batch_failed_log_;

  // Writer-thread state. The clock floor is read under the commit_clock lock
  // at the start of every batch; sender names are only ever added to.
  Micros last_created_at_ = 0;
  std::unordered_map<std::string, UserRef> senders_;

  std::mutex readers_mu_;
  std::vector<std::unique_ptr<PgConn>> readers_;
  bool readers_closed_ = false;
};

}  // namespace parley
