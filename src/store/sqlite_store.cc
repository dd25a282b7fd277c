#include "store/sqlite_store.h"

#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <unordered_map>
#include <unordered_set>

#include "common/atomic_file.h"
#include "common/clock.h"
#include "common/ids.h"
#include "store/data_dir_lock.h"
#include "store/message_key.h"
#include "store/phone_key.h"
#include "store/sqlite_backup.h"
#include "store/sqlite_checkpointer.h"
#include "store/sqlite_conn.h"
#include "store/sqlite_rows.h"
#include "store/sqlite_schema.h"
#include "store/store_copy_lock.h"

namespace parley {

namespace {

constexpr size_t kMaxPooledReaders = 8;
// Writer caches stay small: past this many entries they are simply dropped.
constexpr size_t kMaxCacheEntries = 10000;
// The writer only checkpoints itself (the checkpointer cannot keep up) past
// this many WAL pages, or twice the round's threshold if that is more.
constexpr int kCheckpointHardLimitFrames = 100000;

}  // namespace

// ---------------------------------------------------------------- lifecycle

namespace {

// The data dir's store_id file, made when missing: a backup holds the
// database alone, so the data dir a restore makes gets a new one.
// Tools beside a server (`parley user add`) only read it: the server makes it.
Result<std::string> read_or_make_store_id(const std::string& data_dir, bool make) {
  const std::string path = (std::filesystem::path(data_dir) / "store_id").string();
  std::ifstream in(path);
  std::string id;
  if (in && std::getline(in, id) && is_uuid(id)) return id;
  if (!make) return std::string();
  id = new_uuid();
  if (auto st = write_file_atomically(path, id + "\n", 0600); !st) return st.error();
  return id;
}

}  // namespace

Result<std::unique_ptr<SqliteStore>> SqliteStore::open(const StoreOptions& options) {
  // No allocation statistics: they take a global mutex on every SQLite malloc.
  // Only possible before SQLite initializes; later calls just get MISUSE.
  static std::once_flag configured;
  std::call_once(configured, [] { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); });
  if (options.data_dir.empty()) return bad_input("invalid_config", "store data_dir is empty");
  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  if (ec) return internal_error("cannot create " + options.data_dir + ": " + ec.message());
  std::string path = (std::filesystem::path(options.data_dir) / "parley.db").string();
  if (auto st = no_unfinished_restore(options.data_dir); !st) return st.error();
  // Beside a server, a command writes only while no copy to PostgreSQL runs
  // (store_copy_lock.h): held until the store is closed.
  std::unique_ptr<StoreCopyLock> copy_lock;
  if (options.beside_server) {
    auto held = StoreCopyLock::shared(options.data_dir);
    if (!held) return held.error();
    copy_lock = std::move(*held);
  }

  auto conn = SqliteConn::open(path, /*writer=*/true, options.fsync_commits);
  if (!conn) return conn.error();
  std::unique_ptr<DataDirLock> migrating;  // held while the schema is brought up to date
  if (const int version = schema_version((*conn)->db()); options.beside_server && version < latest_schema_version()) {
    auto held = DataDirLock::acquire(options.data_dir);
    if (!held)
      return Error{ErrorKind::kConflict, "schema_outdated",
                   "the store in " + options.data_dir + " has schema version " + std::to_string(version) +
                       ", this parley needs " + std::to_string(latest_schema_version()) +
                       ", and a server is running on it (" + held.error().message +
                       "): stop it and start this version's server, which migrates, then retry"};
    migrating = std::move(*held);
  }
  if (auto st = migrate_schema((*conn)->db()); !st) return st.error();
  migrating.reset();
  auto last_created_at = max_created_at(**conn);
  if (!last_created_at) return last_created_at.error();
  const int threshold = std::max(options.wal_checkpoint_pages, 1);
  auto checkpointer = SqliteCheckpointer::start(path, options.fsync_commits, threshold);
  if (!checkpointer) return checkpointer.error();
  (*checkpointer)->attach_to_writer((*conn)->db(), std::max(kCheckpointHardLimitFrames, 2 * threshold));
  auto id = read_or_make_store_id(options.data_dir, /*make=*/!options.beside_server);
  if (!id) return id.error();
  spdlog::info("event=store_open path={} schema_version={} fsync_commits={} wal_checkpoint_pages={} store_id={}", path,
               latest_schema_version(), options.fsync_commits, threshold, *id);
  auto store = std::unique_ptr<SqliteStore>(
      new SqliteStore(options, path, std::move(*conn), std::move(*checkpointer), *last_created_at));
  store->store_id_ = std::move(*id);
  store->copy_lock_ = std::move(copy_lock);
  return store;
}

Result<std::unique_ptr<Store>> open_sqlite_store(const StoreOptions& options) {
  auto store = SqliteStore::open(options);
  if (!store) return store.error();
  return std::unique_ptr<Store>(std::move(*store));
}

SqliteStore::SqliteStore(StoreOptions options, std::string path, std::unique_ptr<SqliteConn> writer,
                         std::unique_ptr<SqliteCheckpointer> checkpointer, Micros last_created_at)
    : options_(std::move(options)),
      path_(std::move(path)),
      writer_conn_(std::move(writer)),
      checkpointer_(std::move(checkpointer)),
      last_created_at_(last_created_at) {
  writer_ = std::make_unique<GroupCommitWriter>(
      options_.max_batch, [this](std::vector<GroupCommitWriter::Op>& batch) { return run_batch(batch); });
}

SqliteStore::~SqliteStore() { close(); }

void SqliteStore::close() {
  std::call_once(close_once_, [this] {
    writer_->stop();  // every queued write committed, every callback run
    std::vector<std::unique_ptr<SqliteConn>> idle;
    {
      std::lock_guard lock(readers_mu_);
      readers_closed_ = true;
      idle.swap(readers_);
    }
    idle.clear();
    checkpointer_.reset();
    // Last, so that it is the last connection out: SQLite then copies the
    // WAL into the database and deletes it. Closed first, it left the WAL
    // to the read-only readers, which cannot: a stopped server's database
    // file alone then lacked recent messages, and the WAL kept deleted text.
    writer_conn_.reset();
    copy_lock_.reset();
    spdlog::info("event=store_closed path={} wal_left={}", path_,
                 std::filesystem::exists(path_ + "-wal") ? "yes" : "no");
  });
}

std::string SqliteStore::describe() const { return "sqlite:" + path_; }

int SqliteStore::wal_frames() const { return checkpointer_ ? checkpointer_->wal_frames() : 0; }

// ---------------------------------------------------------------- writer

std::optional<Error> SqliteStore::run_batch(std::vector<GroupCommitWriter::Op>& batch) {
  SqliteConn& c = *writer_conn_;
  bool ok;
  std::string error;
  const int64_t changes_before = sqlite3_total_changes64(c.db());
  {
    std::lock_guard gate(checkpointer_->writer_gate());
    try {
      ok = c.exec("BEGIN IMMEDIATE");
      c.set_in_batch(ok);
      for (size_t i = 0; ok && i < batch.size(); ++i) {
        if (batch[i].needs_current_state) ok = flush_thread_state();
        ok = ok && run_op(batch[i]);
      }
      ok = ok && flush_thread_state() && c.exec("COMMIT");
    } catch (const std::exception& e) {
      // Rolled back here, not left open for the next batch to trip over.
      ok = false;
      error = std::string("exception: ") + e.what();
    }
    if (!ok) {
      if (error.empty()) error = c.errmsg();
      if (!sqlite3_get_autocommit(c.db())) c.exec("ROLLBACK");
    }
    c.set_in_batch(false);
  }
  if (ok) {
    // Only a batch that wrote says the store is back: with the disk full,
    // each op's savepoint rolls back and the empty batch commits fine.
    if (sqlite3_total_changes64(c.db()) != changes_before)
      if (auto held_back = batch_failed_log_.recovered())
        spdlog::warn("event=store_batch_recovered suppressed={}", *held_back);
    return std::nullopt;
  }
  if (auto held_back = batch_failed_log_.admit())
    spdlog::error("event=store_batch_failed size={} error=\"{}\" suppressed={}", batch.size(), error, *held_back);
  forget_caches();  // they may hold values of the rolled-back batch
  return storage_unavailable();
}

void SqliteStore::enqueue_op_for_test(std::function<bool(SqliteConn&)> apply, bool needs_savepoint,
                                      std::function<void(const Error*)> finish) {
  GroupCommitWriter::Op op{[this, apply = std::move(apply)] { return apply(*writer_conn_); }, std::move(finish)};
  op.needs_savepoint = needs_savepoint;
  writer_->enqueue(std::move(op));
}

// False only when the batch must fail: the whole transaction is lost, or an op
// run without a savepoint failed after it wrote. An op that fails by itself is
// rolled back to its savepoint, or has written nothing, and the batch goes on.
bool SqliteStore::run_op(GroupCommitWriter::Op& op) {
  SqliteConn& c = *writer_conn_;
  if (!op.needs_savepoint) {
    const int64_t changes_before = sqlite3_total_changes64(c.db());
    bool applied = op.apply();
    if (sqlite3_get_autocommit(c.db())) return false;  // SQLite aborted the transaction
    if (applied || sqlite3_total_changes64(c.db()) == changes_before) return true;
    spdlog::error("event=store_op_failed_after_writing");
    return false;
  }
  if (!c.exec("SAVEPOINT op")) return false;
  bool applied = op.apply();
  if (sqlite3_get_autocommit(c.db())) return false;  // SQLite aborted the transaction (I/O error, disk full)
  if (!applied) {
    if (!c.exec("ROLLBACK TO op")) return false;
    // What the op put in the caches went with its writes (a notice's seq, a
    // member added), whether it returned an error or threw. The batch's
    // deferred state was flushed before such an op, so only its own is lost.
    if (op.needs_current_state) forget_caches();
  }
  return c.exec("RELEASE op");
}

void SqliteStore::forget_caches() {
  thread_keys_.clear();
  senders_.clear();
  members_.clear();
  pending_threads_.clear();
  pending_reads_.clear();
}

// Appends leave their thread row and the sender's read mark to here: one
// UPDATE per thread and per sender at the end of the batch (or before an op
// that may read them) instead of two per message. Runs outside any op's
// savepoint, so a later op rolling back cannot undo it; false fails the batch.
bool SqliteStore::flush_thread_state() {
  SqliteConn& c = *writer_conn_;
  for (const auto& [thread_id, state] : pending_threads_) {
    auto st = c.prepare("UPDATE threads SET last_seq = ?, last_activity = ? WHERE id = ?");
    st.bind(state.last_seq, state.last_activity, thread_id);
    if (!st.done()) return false;
  }
  for (const auto& [key, seq] : pending_reads_) {
    auto st = c.prepare("UPDATE participants SET last_read_seq = ? WHERE thread_id = ? AND user_id = ?");
    st.bind(seq, key.first, key.second);
    if (!st.done()) return false;
  }
  pending_threads_.clear();
  pending_reads_.clear();
  return true;
}

Result<SqliteStore::ThreadKey> SqliteStore::thread_key(const std::string& thread_id) {
  if (auto it = thread_keys_.find(thread_id); it != thread_keys_.end()) return it->second;
  if (auto it = pending_threads_.find(thread_id); it != pending_threads_.end())
    return ThreadKey{it->second.no, it->second.last_seq};
  auto st = writer_conn_->prepare("SELECT no, last_seq FROM threads WHERE id = ?");
  st.bind(thread_id);
  if (st.row()) return ThreadKey{st.i64(0), st.i64(1)};
  if (st.error() != SQLITE_OK) return storage_error(*writer_conn_, st.error(), "thread_key");
  return not_found("thread_not_found", "thread does not exist");
}

Result<UserRef> SqliteStore::sender_ref(const std::string& user_id) {
  if (auto it = senders_.find(user_id); it != senders_.end()) return it->second;
  auto st = writer_conn_->prepare("SELECT id, username, full_name, role FROM users WHERE id = ?");
  st.bind(user_id);
  if (!st.row()) {
    // A failed read is not a missing user: the client would not retry that.
    if (st.error() != SQLITE_OK) return storage_error(*writer_conn_, st.error(), "sender_ref");
    return not_found("user_not_found", "user does not exist");
  }
  if (senders_.size() >= kMaxCacheEntries) senders_.clear();
  return senders_[user_id] = UserRef{st.text(0), st.text(1), st.text(2), st.text(3)};
}

const std::string& SqliteStore::member_key(const std::string& thread_id, const std::string& user_id) {
  member_probe_.assign(thread_id).append(1, '\n').append(user_id);
  return member_probe_;
}

Result<bool> SqliteStore::is_participant(const std::string& thread_id, const std::string& user_id) {
  const std::string& key = member_key(thread_id, user_id);
  if (members_.contains(key)) return true;
  auto st = writer_conn_->prepare("SELECT 1 FROM participants WHERE thread_id = ? AND user_id = ?");
  st.bind(thread_id, user_id);
  if (!st.row()) {
    if (st.error() != SQLITE_OK && st.error() != SQLITE_DONE) return storage_error(*writer_conn_, st.error(), "is_participant");
    return false;
  }
  if (members_.size() >= kMaxCacheEntries) members_.clear();
  members_.insert(key);
  return true;
}

// ---------------------------------------------------------------- users

Result<User> SqliteStore::create_user(const User& user) {
  User u = user;
  if (u.id.empty()) u.id = new_uuid();
  if (u.created_at == 0) u.created_at = now_micros();
  return writer_->submit_and_wait<User>([this, u = std::move(u)] { return write_user(u); });
}

Result<User> SqliteStore::write_user(User u) {
  SqliteConn& c = *writer_conn_;
  // Checked here, not by parsing constraint messages: the writer is the only
  // writer, so nothing can slip in between the check and the insert.
  if (c.prepare("SELECT 1 FROM users WHERE username = ?").bind(u.username).row())
    return Error{ErrorKind::kConflict, "username_taken", "username is already taken"};
  std::optional<std::string> key = stored_phone_key(u.phone_number);
  // The number as typed is unique too (schema v1): a key-less one is compared as is.
  if (u.phone_number && c.prepare("SELECT 1 FROM users WHERE phone_key = ? OR phone_number = ?")
                            .bind(key, *u.phone_number)
                            .row())
    return Error{ErrorKind::kConflict, "phone_taken", "phone number is already registered"};
  auto st = c.prepare("INSERT INTO users (" USER_COLS ", phone_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  st.bind(u.id, u.username, u.full_name, u.phone_number, u.role, u.password_hash, u.created_at, u.last_seen,
          u.disabled, u.tokens_valid_after, key);
  if (!st.done()) return storage_error(c, st.error(), "insert_user");
  return u;
}

Result<std::optional<User>> SqliteStore::user_by_id(const std::string& id) {
  return with_reader([&](SqliteConn& c) { return find_user(c, "SELECT " USER_COLS " FROM users WHERE id = ?", id); });
}

Result<std::optional<User>> SqliteStore::user_by_username(const std::string& username) {
  return with_reader(
      [&](SqliteConn& c) { return find_user(c, "SELECT " USER_COLS " FROM users WHERE username = ?", username); });
}

Result<std::optional<User>> SqliteStore::user_by_phone(const std::string& phone) {
  std::string key = phone_key(phone);
  if (key.empty()) return std::optional<User>();
  return with_reader(
      [&](SqliteConn& c) { return find_user(c, "SELECT " USER_COLS " FROM users WHERE phone_key = ?", key); });
}

Result<std::vector<User>> SqliteStore::search_users(const std::string& query, int limit) {
  return with_reader([&](SqliteConn& c) {
    // LIKE is case-insensitive for ASCII letters only (SQLite's built-in
    // rule), and so is NOCASE. The username typed in full comes first: past
    // the limit, a short name would be lost among the longer ones holding it.
    auto st = c.prepare("SELECT " USER_COLS " FROM users WHERE username LIKE ?1 ESCAPE '\\' "
                        "OR full_name LIKE ?1 ESCAPE '\\' "
                        "ORDER BY username = ?3 COLLATE NOCASE DESC, username LIMIT ?2");
    st.bind(like_contains_pattern(query), clamp_limit(limit), query);
    std::vector<User> out;
    while (st.row()) out.push_back(read_user(st));
    log_read_error(c, st, "search_users");
    return out;
  });
}

Result<std::vector<User>> SqliteStore::recent_users(int limit) {
  return with_reader([&](SqliteConn& c) {
    auto st = c.prepare("SELECT " USER_COLS " FROM users ORDER BY last_seen DESC, created_at DESC LIMIT ?");
    st.bind(std::max(limit, 0));
    std::vector<User> out;
    while (st.row()) out.push_back(read_user(st));
    log_read_error(c, st, "recent_users");
    return out;
  });
}

Result<size_t> SqliteStore::user_count() {
  return with_reader([](SqliteConn& c) {
    auto st = c.prepare("SELECT COUNT(*) FROM users");
    return st.row() ? static_cast<size_t>(st.i64(0)) : size_t{0};
  });
}

// Waits for the commit, as PgStore's does: the offline presence frame
// follows, and GET /api/users/:id/presence must then find this last_seen.
void SqliteStore::set_last_seen(const std::string& user_id, Micros when) {
  auto written = writer_->submit_and_wait<Ok>(
      [this, user_id, when]() -> Status {
        auto st = writer_conn_->prepare("UPDATE users SET last_seen = MAX(last_seen, ?) WHERE id = ?");
        st.bind(when, user_id);
        if (!st.done()) return storage_error(*writer_conn_, st.error(), "set_last_seen");
        return Ok{};
      },
      {.needs_current_state = false});
  if (!written) spdlog::warn("event=last_seen_not_stored user_id={} code={}", user_id, written.error().code);
}

// ---------------------------------------------------------------- threads

Result<Store::CreatedThread> SqliteStore::create_thread(const Thread& in) {
  auto prepared = prepare_new_thread(in);
  if (!prepared) return prepared.error();
  return writer_->submit_and_wait<CreatedThread>(
      [this, t = std::move(*prepared)] { return write_thread(t.thread, t.direct_key); });
}

// On the message clock (created_at): every message stored before a join is
// older than it, every one after is newer, so offline sync and live delivery
// (ChatService::members_at_commit) draw the line exactly, whatever the wall
// clock does meanwhile.
Micros SqliteStore::join_time() { return last_created_at_ = std::max(now_micros(), last_created_at_ + 1); }

Result<Store::CreatedThread> SqliteStore::write_thread(const Thread& t, const std::optional<std::string>& direct_key) {
  SqliteConn& c = *writer_conn_;
  if (direct_key) {
    auto st = c.prepare("SELECT id FROM threads WHERE direct_key = ?");
    st.bind(*direct_key);
    if (st.row()) {
      std::string existing = st.text(0);
      if (auto found = load_thread(c, existing)) return CreatedThread{std::move(*found), false};
    }
  }
  for (const auto& p : t.participants)
    if (!user_exists(c, p.user_id)) return not_found("user_not_found", "participant does not exist");

  auto st = c.prepare(
      "INSERT INTO threads (id, type, title, created_by, created_at, last_activity, last_seq, direct_key, no) "
      "VALUES (?, ?, ?, ?, ?, ?, 0, ?, (SELECT COALESCE(MAX(no), 0) + 1 FROM threads))");
  st.bind(t.id, stored_thread_type(t.type), t.title, t.created_by, t.created_at, t.created_at, direct_key);
  if (!st.done()) return storage_error(c, st.error(), "insert_thread");
  const Micros joined = join_time();
  for (const auto& p : t.participants) {
    auto ins = c.prepare("INSERT INTO participants (thread_id, user_id, is_admin, joined_at) VALUES (?, ?, ?, ?)");
    ins.bind(t.id, p.user_id, p.is_admin, joined);
    if (!ins.done()) return storage_error(c, ins.error(), "insert_participant");
  }
  auto stored = load_thread(c, t.id);
  if (!stored) return internal_error("storage error");
  return CreatedThread{std::move(*stored), true};
}

Result<std::optional<Thread>> SqliteStore::thread(const std::string& thread_id) {
  return with_reader([&](SqliteConn& c) {
    ReadTxn txn(c);
    return load_thread(c, thread_id);
  });
}

Result<std::optional<ThreadMembers>> SqliteStore::thread_members(const std::string& thread_id) {
  return with_reader([&](SqliteConn& c) -> std::optional<ThreadMembers> {
    ReadTxn txn(c);
    ThreadMembers members;
    {
      auto st = c.prepare("SELECT type FROM threads WHERE id = ?");
      st.bind(thread_id);
      if (!st.row()) return std::nullopt;
      members.type = thread_type_from_stored(st.text(0));
    }
    auto st = c.prepare(
        "SELECT user_id, is_admin, joined_at FROM participants WHERE thread_id = ? ORDER BY joined_at, user_id");
    st.bind(thread_id);
    while (st.row()) {
      members.user_ids.push_back(st.text(0));
      if (st.i64(1) != 0) members.admin_ids.push_back(st.text(0));
      members.joined_at.push_back(st.i64(2));
    }
    log_read_error(c, st, "thread_members");
    return members;
  });
}

Result<std::vector<ThreadSummary>> SqliteStore::threads_for_user(const std::string& user_id) {
  return with_reader([&](SqliteConn& c) {
    ReadTxn txn(c);
    std::vector<ThreadSummary> out;
    {
      auto st = c.prepare(
          "SELECT " THREAD_COLS ", " UNREAD_OF_P " "
          "FROM participants p JOIN threads t ON t.id = p.thread_id WHERE p.user_id = ? "
          "ORDER BY t.last_activity DESC, t.id");
      st.bind(user_id);
      while (st.row()) out.push_back(ThreadSummary{read_thread(st), st.i64(7), std::nullopt});
      log_read_error(c, st, "threads_for_user");
    }
    // Three more statements, whatever the number of threads (not three per
    // thread): a teacher in 200 classes reconnecting is one read, not 600.
    std::unordered_map<std::string, ThreadSummary*> by_id;
    for (auto& s : out) by_id.emplace(s.thread.id, &s);
    auto of = [&](const SqliteStmt& st) {
      auto it = by_id.find(st.text(0));
      return it == by_id.end() ? nullptr : it->second;
    };
    {
      auto st = c.prepare("SELECT p.thread_id, " PARTICIPANT_COLS " " PARTICIPANTS_FROM
                          " JOIN participants me ON me.thread_id = p.thread_id WHERE me.user_id = ? "
                          "ORDER BY p.joined_at, p.user_id");
      st.bind(user_id);
      while (st.row())
        if (auto* s = of(st)) s->thread.participants.push_back(read_participant(st, 1));
      log_read_error(c, st, "threads_for_user participants");
    }
    {
      auto st = c.prepare(
          "SELECT f.thread_id, f.user_id, f.last_read_seq, f.last_delivered_seq, f.joined_at "
          "FROM participants me JOIN former_marks f ON f.thread_id = me.thread_id WHERE me.user_id = ?");
      st.bind(user_id);
      while (st.row())
        if (auto* s = of(st))
          s->thread.former_marks.push_back(FormerMarks{st.text(1), st.i64(2), st.i64(3), st.i64(4)});
      log_read_error(c, st, "threads_for_user former_marks");
    }
    {
      auto st = c.prepare(MESSAGE_SELECT
                          "JOIN threads t ON t.no = m.thread_no AND m.seq = t.last_seq "
                          "JOIN participants me ON me.thread_id = t.id WHERE me.user_id = ?");
      st.bind(user_id);
      for (Message& m : read_messages(c, st, "threads_for_user last_message"))
        if (auto it = by_id.find(m.thread_id); it != by_id.end()) it->second->last_message = std::move(m);
    }
    return out;
  });
}

void SqliteStore::add_participants(Addition addition, AdditionCallback done) {
  writer_->submit<Added>([this, a = std::move(addition)] { return write_participants(a); }, std::move(done));
}

Result<Added> SqliteStore::write_participants(const Addition& a) {
  const std::string& thread_id = a.thread_id;
  SqliteConn& c = *writer_conn_;
  {
    auto st = c.prepare("SELECT type FROM threads WHERE id = ?");
    st.bind(thread_id);
    if (!st.row()) return not_found("thread_not_found", "thread does not exist");
    // A direct thread is keyed by its pair; a third member would break that.
    if (thread_type_from_stored(st.text(0)) == ThreadType::kDirect)
      return bad_input("direct_thread", "participants of a direct thread cannot change");
  }
  if (auto admin = require_admin(thread_id, a.actor_id); !admin) return admin.error();
  // A new member has read and received what was said before (Store::add_participants).
  auto key = thread_key(thread_id);
  if (!key) return key.error();
  Added out;
  const Micros now = join_time();
  for (const auto& uid : a.user_ids) {
    if (!user_exists(c, uid)) return not_found("user_not_found", "participant does not exist");
    auto st = c.prepare(
        "INSERT INTO participants (thread_id, user_id, is_admin, joined_at, last_read_seq, last_delivered_seq) "
        "VALUES (?, ?, 0, ?, ?, ?) ON CONFLICT (thread_id, user_id) DO NOTHING");
    st.bind(thread_id, uid, now, key->last_seq, key->last_seq);
    if (!st.done()) return storage_error(c, st.error(), "add_participant");
    if (c.changes() > 0) out.user_ids.push_back(uid);
  }
  if (a.max_members > 0 && !out.user_ids.empty()) {
    auto st = c.prepare("SELECT COUNT(*) FROM participants WHERE thread_id = ?");
    st.bind(thread_id);
    if (!st.row()) return storage_error(c, st.error(), "add_participant");
    if (static_cast<size_t>(st.i64(0)) > a.max_members) return group_too_large(a.max_members);
  }
  // After every addition, so each notice reaches all those added (a message
  // stored from their joined_at on is theirs).
  for (size_t i = 0; a.notice && i < out.user_ids.size(); ++i) {
    auto stored = write_message(a.notice(out.user_ids[i]));
    if (!stored) return stored.error();
    out.notices.push_back(std::move(stored->message));
  }
  return out;
}

Status SqliteStore::require_admin(const std::string& thread_id, const std::string& actor_id) {
  if (actor_id.empty()) return Ok{};
  auto st = writer_conn_->prepare("SELECT is_admin FROM participants WHERE thread_id = ? AND user_id = ?");
  st.bind(thread_id, actor_id);
  if (st.row()) return st.i64(0) != 0 ? Status{Ok{}} : not_admin();
  if (st.error() != SQLITE_OK) return storage_error(*writer_conn_, st.error(), "require_admin");
  return not_admin();
}

void SqliteStore::remove_participant(Removal removal, RemovalCallback done) {
  writer_->submit<Removed>([this, r = std::move(removal)] { return write_removal(r); }, std::move(done));
}

// Everything that can refuse the removal is read before the first write. A
// statement failing after it rolls the op back, and run_op forgets what the
// writer's caches took from it.
Result<Removed> SqliteStore::write_removal(const Removal& r) {
  if (r.actor_id != r.user_id)
    if (auto admin = require_admin(r.thread_id, r.actor_id); !admin) return admin.error();
  auto successor = successor_admin(r.thread_id, r.user_id);
  if (!successor) return successor.error();
  Removed out;
  auto written = [&]() -> Status {
    // Kept for the status of what they read (schema v10), as they are before
    // the notices below: a message stored for the leaver reads nothing for them.
    // The batch's deferred read marks were flushed before this op.
    auto keep = writer_conn_->prepare(
        "INSERT INTO former_marks (thread_id, user_id, last_read_seq, last_delivered_seq, joined_at) "
        "SELECT thread_id, user_id, last_read_seq, last_delivered_seq, joined_at FROM participants "
        "WHERE thread_id = ? AND user_id = ? "
        "ON CONFLICT (thread_id, user_id, joined_at) DO UPDATE SET "
        "last_read_seq = MAX(last_read_seq, excluded.last_read_seq), "
        "last_delivered_seq = MAX(last_delivered_seq, excluded.last_delivered_seq)");
    keep.bind(r.thread_id, r.user_id);
    if (!keep.done()) return storage_error(*writer_conn_, keep.error(), "remove_participant");
    if (r.notice) {
      auto stored = write_message(*r.notice);
      if (!stored) return stored.error();
      out.notice = std::move(stored->message);
    }
    if (*successor) {
      auto ref = sender_ref(**successor);
      if (!ref) return ref.error();
      if (auto notice = promotion_notice(r, ref->username)) {
        auto stored = write_message(*notice);
        if (!stored) return stored.error();
        out.promotion = std::move(stored->message);
      }
    }
    if (int64_t last = last_notice_seq(out); last > 0) {
      auto ended = writer_conn_->prepare(
          "UPDATE former_marks SET left_seq = ? WHERE thread_id = ? AND user_id = ? "
          "AND joined_at = (SELECT joined_at FROM participants WHERE thread_id = ? AND user_id = ?)");
      ended.bind(last, r.thread_id, r.user_id, r.thread_id, r.user_id);
      if (!ended.done()) return storage_error(*writer_conn_, ended.error(), "remove_participant");
    }
    auto del = writer_conn_->prepare("DELETE FROM participants WHERE thread_id = ? AND user_id = ?");
    del.bind(r.thread_id, r.user_id);
    if (!del.done()) return storage_error(*writer_conn_, del.error(), "remove_participant");
    members_.erase(member_key(r.thread_id, r.user_id));
    if (!*successor) return Ok{};
    auto promote = writer_conn_->prepare("UPDATE participants SET is_admin = 1 WHERE thread_id = ? AND user_id = ?");
    promote.bind(r.thread_id, **successor);
    if (!promote.done()) return storage_error(*writer_conn_, promote.error(), "promote_admin");
    out.new_admin_id = **successor;
    return Ok{};
  }();
  if (!written) return written.error();
  return out;
}

// Who becomes admin when user_id leaves a group: nullopt when an admin
// remains, or nobody does. Errors: not_found "not_a_participant".
Result<std::optional<std::string>> SqliteStore::successor_admin(const std::string& thread_id,
                                                                const std::string& user_id) {
  SqliteConn& c = *writer_conn_;
  auto st = c.prepare(
      "SELECT t.type, EXISTS (SELECT 1 FROM participants o WHERE o.thread_id = t.id AND o.user_id <> p.user_id "
      "AND o.is_admin <> 0) FROM participants p JOIN threads t ON t.id = p.thread_id "
      "WHERE p.thread_id = ? AND p.user_id = ?");
  st.bind(thread_id, user_id);
  if (!st.row()) {
    if (st.error() != SQLITE_OK && st.error() != SQLITE_DONE) return storage_error(c, st.error(), "remove_participant");
    return not_found("not_a_participant", "user is not in this thread");
  }
  if (thread_type_from_stored(st.text(0)) != ThreadType::kGroup || st.i64(1) != 0)
    return std::optional<std::string>();
  auto next = c.prepare(
      "SELECT user_id FROM participants WHERE thread_id = ? AND user_id <> ? ORDER BY joined_at, user_id LIMIT 1");
  next.bind(thread_id, user_id);
  if (next.row()) return std::optional<std::string>(next.text(0));
  if (next.error() != SQLITE_OK && next.error() != SQLITE_DONE) return storage_error(c, next.error(), "remove_participant");
  return std::optional<std::string>();
}

// ---------------------------------------------------------------- messages

void SqliteStore::append(AppendRequest request, AppendCallback done) {
  // write_message orders its statements so that a failure leaves nothing
  // written (see there): no savepoint.
  writer_->submit<AppendResult>([this, r = std::move(request)] { return write_message(r); }, std::move(done),
                                {.needs_current_state = false, .needs_savepoint = false});
}

Result<AppendResult> SqliteStore::write_message(const AppendRequest& r) {
  SqliteConn& c = *writer_conn_;
  auto thread_ref = thread_key(r.thread_id);
  if (!thread_ref) return thread_ref.error();
  auto sender = sender_ref(r.sender_id);
  if (!sender) return sender.error();

  Message m;
  m.thread_id = r.thread_id;
  m.seq = thread_ref->last_seq + 1;
  m.sender_id = r.sender_id;
  m.content = r.content;
  m.message_type = r.message_type;
  m.client_msg_id = r.client_msg_id;
  // Strictly increasing even within one clock tick, so created_at is a cursor.
  m.created_at = last_created_at_ = std::max(now_micros(), last_created_at_ + 1);
  m.id = new_uuid_v7(m.created_at / 1000);  // time-ordered: the id index grows at its end
  m.sender = *sender;

  // Runs without a savepoint (append()), so a failure must leave nothing
  // written: everything that can refuse the send is read first, the row's
  // INSERT is the first write (a failed statement is undone by SQLite), and
  // the key's INSERT can fail only by losing the transaction (this writer
  // just found the key free).
  std::optional<std::string> client_id;
  std::optional<int64_t> new_key;
  if (!r.client_msg_id.empty()) {
    client_id = r.client_msg_id;  // else NULL, so "none" never collides
    int64_t key = message_key(r.thread_id, r.sender_id, r.client_msg_id);
    auto owner = key_owner(key);
    if (!owner) return owner.error();
    if (!*owner) {
      new_key = key;
    } else {
      auto original = find_retried(r, **owner);
      if (!original) return original.error();
      if (*original) return AppendResult{std::move(**original), true};
      // A 64-bit hash collision with another send: stored without a key;
      // its own retries find it through find_retried's slow path.
    }
  }
  // Checked here, in commit order, and not only by ChatService before the
  // append was queued: a removal queued meanwhile commits first. After the
  // retry check, as in PgStore: a retry of what was stored still finds it.
  auto member = is_participant(r.thread_id, r.sender_id);
  if (!member) return member.error();
  if (!*member) return thread_not_found_or_forbidden();
  auto ins = c.prepare(
      "INSERT INTO messages (id, thread_id, thread_no, seq, sender_id, content, message_type, client_msg_id, "
      "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
  ins.bind(m.id, m.thread_id, thread_ref->no, m.seq, m.sender_id, m.content, m.message_type, client_id,
           m.created_at);
  if (!ins.done()) return storage_error(c, ins.error(), "insert_message");
  if (new_key) {
    auto claim = c.prepare("INSERT INTO message_keys (key, seq) VALUES (?, ?)");
    claim.bind(*new_key, m.seq);
    if (!claim.done()) return storage_error(c, claim.error(), "insert_message_key");
  }
  if (r.owes_push) {  // a new id: this too can fail only by losing the transaction
    auto owed = c.prepare("INSERT INTO owed_pushes (message_id, created_at) VALUES (?, ?)");
    owed.bind(m.id, m.created_at);
    if (!owed.done()) return storage_error(c, owed.error(), "insert_owed_push");
  }

  // Only now, with every statement done: a failed op must leave the caches as they were.
  auto& thread = pending_threads_[m.thread_id];
  thread.no = thread_ref->no;
  thread.last_seq = m.seq;
  thread.last_activity = m.created_at;
  pending_reads_[{m.thread_id, m.sender_id}] = m.seq;
  if (thread_keys_.size() >= kMaxCacheEntries) thread_keys_.clear();
  thread_keys_[m.thread_id] = ThreadKey{thread_ref->no, m.seq};
  return AppendResult{std::move(m), false};
}

// The seq of the message holding `key` in message_keys, or nullopt when none does.
Result<std::optional<int64_t>> SqliteStore::key_owner(int64_t key) {
  SqliteConn& c = *writer_conn_;
  auto st = c.prepare("SELECT seq FROM message_keys WHERE key = ?");
  st.bind(key);
  if (st.row()) return std::optional<int64_t>(st.i64(0));
  if (st.error() != SQLITE_OK) return storage_error(c, st.error(), "read_message_key");
  return std::optional<int64_t>();
}

// The original of a retried send whose key is held by the message at `seq`,
// or nullopt when that is another send (a hash collision): then only a scan
// of the thread's rows can tell, which is slow but never happens in practice.
Result<std::optional<Message>> SqliteStore::find_retried(const AppendRequest& r, int64_t seq) {
  SqliteConn& c = *writer_conn_;
  auto same_send = [&](const Message& m) { return m.sender_id == r.sender_id && m.client_msg_id == r.client_msg_id; };
  if (auto m = message_at(c, r.thread_id, seq); m && same_send(*m)) return std::optional<Message>(std::move(*m));
  auto st = c.prepare(MESSAGE_SELECT "WHERE m.thread_no = " THREAD_NO_OF("?") " AND m.sender_id = ? AND m.client_msg_id = ?");
  st.bind(r.thread_id, r.sender_id, r.client_msg_id);
  auto found = read_messages(c, st, "find_client_msg");
  if (st.error() != SQLITE_OK && st.error() != SQLITE_DONE) return storage_error(c, st.error(), "find_client_msg");
  if (found.empty()) return std::optional<Message>();
  return std::optional<Message>(std::move(found.front()));
}

Result<std::optional<Message>> SqliteStore::message(const std::string& message_id) {
  return with_reader([&](SqliteConn& c) -> std::optional<Message> {
    auto st = c.prepare(MESSAGE_SELECT "WHERE m.id = ?");
    st.bind(message_id);
    auto found = read_messages(c, st, "message");
    if (found.empty()) return std::nullopt;
    return std::move(found.front());
  });
}

Result<std::vector<Message>> SqliteStore::messages_after(const std::string& thread_id, int64_t after_seq, int limit) {
  return with_reader([&](SqliteConn& c) {
    auto st = c.prepare(MESSAGE_SELECT "WHERE m.thread_no = " THREAD_NO_OF("?") " AND m.seq > ? ORDER BY m.seq LIMIT ?");
    st.bind(thread_id, after_seq, clamp_limit(limit));
    return read_messages(c, st, "messages_after");
  });
}

Result<MemberPage> SqliteStore::member_page(const std::string& user_id, const PageQuery& q) {
  auto page = with_reader([&](SqliteConn& c) -> std::optional<MemberPage> {
    ReadTxn txn(c);
    MemberPage out;
    std::optional<Micros> member_since;  // set: a participant now
    {
      auto st = c.prepare("SELECT joined_at FROM participants WHERE thread_id = ? AND user_id = ?");
      st.bind(q.thread_id, user_id);
      if (st.row()) member_since = st.i64(0);
      else log_read_error(c, st, "member_page");
    }
    if (q.former_too && q.after_seq >= 0) {
      // Of the memberships that ended past after_seq, the first (seqs only
      // grow): it comes before the current one, if the user is back.
      auto f = c.prepare(
          "SELECT joined_at, left_seq FROM former_marks WHERE thread_id = ? AND user_id = ? AND left_seq > ? "
          "ORDER BY left_seq LIMIT 1");
      f.bind(q.thread_id, user_id, q.after_seq);
      if (f.row()) {
        out.joined_at = f.i64(0);
        out.ended_at_seq = f.i64(1);
      } else {
        log_read_error(c, f, "member_page former");
      }
    }
    if (out.ended_at_seq == 0) {
      if (!member_since) return std::nullopt;
      out.joined_at = *member_since;
    }
    if (q.after_seq >= 0) {
      // Someone no longer a participant reads only what was said during
      // the membership that ended (the history before it is no longer
      // theirs); a participant reads the whole history, as always.
      const bool ended = out.ended_at_seq > 0;
      auto st = c.prepare(MESSAGE_SELECT "WHERE m.thread_no = " THREAD_NO_OF("?")
                                         " AND m.seq > ? AND m.seq <= ? AND m.created_at >= ? ORDER BY m.seq LIMIT ?");
      st.bind(q.thread_id, q.after_seq, ended ? out.ended_at_seq : kAllSeqs,
              ended && !member_since ? out.joined_at : Micros{0}, clamp_limit(q.limit));
      out.messages = read_messages(c, st, "member_page");
    } else {
      auto st = c.prepare(MESSAGE_SELECT "WHERE m.thread_no = " THREAD_NO_OF("?") " AND m.seq < ? ORDER BY m.seq DESC LIMIT ?");
      st.bind(q.thread_id, q.before_seq, clamp_limit(q.limit));
      out.messages = read_messages(c, st, "member_page");
      std::reverse(out.messages.begin(), out.messages.end());
    }
    return out;
  });
  if (!page) return page.error();
  if (!*page) return not_found("not_a_participant", "user is not in this thread");
  return std::move(**page);
}

Result<int64_t> SqliteStore::last_seq_created_before(const std::string& thread_id, int64_t below_seq,
                                                     Micros created_before, int64_t lowest_seq) {
  return with_reader([&](SqliteConn& c) -> int64_t {
    auto st = c.prepare("SELECT seq FROM messages WHERE thread_no = " THREAD_NO_OF("?")
                        " AND seq < ? AND seq > ? AND created_at < ? ORDER BY seq DESC LIMIT 1");
    st.bind(thread_id, below_seq, lowest_seq, created_before);
    if (st.row()) return st.i64(0);
    log_read_error(c, st, "last_seq_created_before");
    return lowest_seq;
  });
}

Result<std::vector<Message>> SqliteStore::messages_before(const std::string& thread_id, int64_t before_seq, int limit) {
  return with_reader([&](SqliteConn& c) {
    auto st = c.prepare(MESSAGE_SELECT "WHERE m.thread_no = " THREAD_NO_OF("?") " AND m.seq < ? ORDER BY m.seq DESC LIMIT ?");
    st.bind(thread_id, before_seq, clamp_limit(limit));
    auto out = read_messages(c, st, "messages_before");
    std::reverse(out.begin(), out.end());
    return out;
  });
}

// One snapshot for both queries. Commits happen in created_at order from one
// writer, so a snapshot holds every message up to some created_at and none
// after: a cursor taken from it never skips a later commit.
Result<OfflinePage> SqliteStore::messages_since(const std::string& user_id, Micros since, int limit) {
  return with_reader(
      [&](SqliteConn& c) {
        ReadTxn txn(c);
        // A time past the newest commit (a client's clock ahead) would come
        // back as the cursor and skip what commits until then: the newest
        // commit's time stands in for it. The table is appended in commit order.
        auto clock = c.prepare("SELECT created_at FROM messages ORDER BY rowid DESC LIMIT 1");
        since = std::min<Micros>(since, clock.row() ? clock.i64(0) : 0);
        // Per thread, the walk starts after the newest message at or before
        // `since`, found by walking the thread's seq index backwards from its
        // end: the cost follows what is new, not the thread's length.
        auto st = c.prepare(MESSAGE_SELECT
                            "JOIN participants p ON p.user_id = ?1 "
                            "JOIN threads t ON t.id = p.thread_id AND t.no = m.thread_no "
                            "WHERE m.created_at >= p.joined_at AND m.seq > COALESCE((SELECT b.seq FROM messages b WHERE b.thread_no = t.no "
                            "AND b.created_at <= ?2 ORDER BY b.seq DESC LIMIT 1), 0) "
                            "AND m.created_at > ?2 AND m.sender_id <> ?1 ORDER BY m.created_at LIMIT ?3");
        st.bind(user_id, since, clamp_limit(limit) + 1);
        auto current = read_messages(c, st, "messages_since");
        // The memberships that ended: what was said in each from its join up
        // to its removal's last notice. The walk back starts at that end, so
        // one that ended before `since` costs one step.
        auto ended = c.prepare(MESSAGE_SELECT
                               "JOIN former_marks f ON f.user_id = ?1 AND f.left_seq > 0 "
                               "JOIN threads t ON t.id = f.thread_id AND t.no = m.thread_no "
                               "WHERE m.created_at >= f.joined_at AND m.seq <= f.left_seq "
                               "AND m.seq > COALESCE((SELECT b.seq FROM messages b WHERE b.thread_no = t.no "
                               "AND b.seq <= f.left_seq AND b.created_at <= ?2 ORDER BY b.seq DESC LIMIT 1), 0) "
                               "AND m.created_at > ?2 AND m.sender_id <> ?1 ORDER BY m.created_at LIMIT ?3");
        ended.bind(user_id, since, clamp_limit(limit) + 1);
        auto page = offline_page(std::move(current), read_messages(c, ended, "messages_since former"), limit);
        if (page.has_more) return page;
        // Nothing more from others: move past the user's own newer messages too.
        auto newest = c.prepare(
            "SELECT MAX((SELECT m.created_at FROM messages m WHERE m.thread_no = t.no "
            "ORDER BY m.seq DESC LIMIT 1)) FROM participants p JOIN threads t ON t.id = p.thread_id "
            "WHERE p.user_id = ?1 UNION ALL "
            "SELECT MAX(m.created_at) FROM former_marks f JOIN threads t ON t.id = f.thread_id "
            "JOIN messages m ON m.thread_no = t.no AND m.seq = f.left_seq WHERE f.user_id = ?1 AND f.left_seq > 0");
        newest.bind(user_id);
        // The newest message of the caller's threads (the epoch for none),
        // whatever time was asked: an answer that depended on how the time
        // asked compares with the store's newest commit would tell anyone,
        // by bisection, when someone somewhere last wrote.
        page.cursor = page.messages.empty() ? since : page.messages.back().created_at;  // if the read fails
        std::optional<Micros> newest_at;
        while (newest.row()) {
          Micros at = newest.is_null(0) ? 0 : newest.i64(0);
          newest_at = std::max(newest_at.value_or(0), at);
        }
        if (newest.error() == SQLITE_OK && newest_at) page.cursor = *newest_at;
        return page;
      });
}

Result<std::vector<std::pair<std::string, int64_t>>> SqliteStore::left_threads_owed(const std::string& user_id) {
  return with_reader([&](SqliteConn& c) {
    // By user (former_marks_by_user), then primary-key steps per row: the
    // notice's time, a message from others past the marks (the user's own
    // notices, of their leaving, are never acknowledged: one's own), and
    // whether the user is in the thread again.
    auto st = c.prepare(
        "SELECT f.thread_id, MIN(MAX(f.last_delivered_seq, f.last_read_seq)) FROM former_marks f "
        "JOIN threads t ON t.id = f.thread_id JOIN messages m ON m.thread_no = t.no AND m.seq = f.left_seq "
        "JOIN users u ON u.id = f.user_id "
        "WHERE f.user_id = ?1 AND f.left_seq > MAX(f.last_delivered_seq, f.last_read_seq) "
        "AND m.created_at > u.last_seen "
        "AND EXISTS (SELECT 1 FROM messages o WHERE o.thread_no = t.no "
        "AND o.seq > MAX(f.last_delivered_seq, f.last_read_seq) AND o.seq <= f.left_seq "
        "AND o.created_at >= f.joined_at AND o.sender_id <> ?1) "
        "AND NOT EXISTS (SELECT 1 FROM participants p WHERE p.thread_id = f.thread_id AND p.user_id = ?1) "
        "GROUP BY f.thread_id ORDER BY f.thread_id");
    st.bind(user_id);
    std::vector<std::pair<std::string, int64_t>> out;
    while (st.row()) out.emplace_back(st.text(0), st.i64(1));
    log_read_error(c, st, "left_threads_owed");
    return out;
  });
}

// ---------------------------------------------------------------- read state

Result<std::vector<UnreadCount>> SqliteStore::unread_counts(const std::string& user_id) {
  return with_reader([&](SqliteConn& c) {
    auto st = c.prepare(
        "SELECT p.thread_id, " UNREAD_OF_P " "
        "FROM participants p JOIN threads t ON t.id = p.thread_id WHERE p.user_id = ? ORDER BY p.thread_id");
    st.bind(user_id);
    std::vector<UnreadCount> out;
    while (st.row()) out.push_back(UnreadCount{st.text(0), st.i64(1)});
    log_read_error(c, st, "unread_counts");
    return out;
  });
}

Result<std::vector<ParticipantUnread>> SqliteStore::thread_unread_counts(const std::string& thread_id) {
  return with_reader([&](SqliteConn& c) {
    auto st = c.prepare(
        "SELECT p.user_id, " UNREAD_OF_P " "
        "FROM participants p JOIN threads t ON t.id = p.thread_id WHERE p.thread_id = ? ORDER BY p.user_id");
    st.bind(thread_id);
    std::vector<ParticipantUnread> out;
    while (st.row()) out.push_back(ParticipantUnread{st.text(0), st.i64(1)});
    log_read_error(c, st, "thread_unread_counts");
    return out;
  });
}

Result<ReadMark> SqliteStore::mark_read(const std::string& thread_id, const std::string& user_id, int64_t up_to_seq) {
  return writer_->submit_and_wait<ReadMark>(
      [this, thread_id, user_id, up_to_seq] { return write_read_mark(thread_id, user_id, up_to_seq); });
}

Result<ReadMark> SqliteStore::write_read_mark(const std::string& thread_id, const std::string& user_id,
                                              int64_t up_to_seq) {
  SqliteConn& c = *writer_conn_;
  int64_t current = 0;
  int64_t last_seq = 0;
  {
    auto st = c.prepare(
        "SELECT p.last_read_seq, t.last_seq FROM participants p JOIN threads t ON t.id = p.thread_id "
        "WHERE p.thread_id = ? AND p.user_id = ?");
    st.bind(thread_id, user_id);
    if (!st.row()) {
      if (st.error() != SQLITE_OK) return storage_error(c, st.error(), "mark_read");
      return not_found("not_a_participant", "user is not in this thread");
    }
    current = st.i64(0);
    last_seq = st.i64(1);
  }
  int64_t target = std::min(up_to_seq, last_seq);
  if (target <= current) return ReadMark{current, false};  // never moves back
  auto st = c.prepare("UPDATE participants SET last_read_seq = ? WHERE thread_id = ? AND user_id = ?");
  st.bind(target, thread_id, user_id);
  if (!st.done()) return storage_error(c, st.error(), "mark_read");
  return ReadMark{target, true};
}

Result<int64_t> SqliteStore::mark_delivered(const std::string& thread_id, const std::string& user_id, int64_t seq) {
  return writer_->submit_and_wait<int64_t>([this, thread_id, user_id, seq]() -> Result<int64_t> {
    SqliteConn& c = *writer_conn_;
    auto st = c.prepare(
        "UPDATE participants SET last_delivered_seq = MAX(last_delivered_seq, ?) "
        "WHERE thread_id = ? AND user_id = ? RETURNING last_delivered_seq");
    st.bind(seq, thread_id, user_id);
    if (!st.row()) {
      if (st.error() != SQLITE_OK) return storage_error(c, st.error(), "mark_delivered");
      return not_found("not_a_participant", "user is not in this thread");
    }
    return st.i64(0);
  }, {.needs_current_state = false});
}

Result<bool> SqliteStore::mark_former_delivered(const std::string& thread_id, const std::string& user_id, int64_t seq,
                                                Micros created_at) {
  return writer_->submit_and_wait<bool>([this, thread_id, user_id, seq, created_at]() -> Result<bool> {
    SqliteConn& c = *writer_conn_;
    // Memberships never overlap, and seqs and created_at rise together: one
    // row at most holds the message.
    auto st = c.prepare(
        "UPDATE former_marks SET last_delivered_seq = MAX(last_delivered_seq, ?1) "
        "WHERE thread_id = ?2 AND user_id = ?3 AND left_seq >= ?1 AND joined_at <= ?4 RETURNING 1");
    st.bind(seq, thread_id, user_id, created_at);
    if (st.row()) return true;
    if (st.error() != SQLITE_OK) return storage_error(c, st.error(), "mark_former_delivered");
    return false;
  }, {.needs_current_state = false});
}

namespace {

// Not DISTINCT: SQLite would build a temporary b-tree per call (1.4 of its
// 2.4 µs for a user with one contact); a sort of the few rows is cheaper.
// Each user's presence announcement reads this once.
constexpr const char* kContactsSql =
    "SELECT o.user_id FROM participants p JOIN participants o ON o.thread_id = p.thread_id "
    "WHERE p.user_id = ? AND o.user_id <> p.user_id";

std::vector<std::string> read_contacts(SqliteConn& c, const std::string& user_id) {
  auto st = c.prepare(kContactsSql);
  st.bind(user_id);
  std::vector<std::string> out;
  while (st.row()) out.push_back(st.text(0));
  log_read_error(c, st, "contacts");
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace

Result<std::vector<std::string>> SqliteStore::contacts(const std::string& user_id) {
  return with_reader([&](SqliteConn& c) { return read_contacts(c, user_id); });
}

Result<std::vector<std::string>> SqliteStore::openers(const std::string& user_id) {
  return with_reader([&](SqliteConn& c) {
    auto st = c.prepare(
        "SELECT DISTINCT t.created_by FROM participants p JOIN threads t ON t.id = p.thread_id "
        "JOIN participants o ON o.thread_id = t.id AND o.user_id = t.created_by "
        "WHERE p.user_id = ? AND t.created_by <> p.user_id");
    st.bind(user_id);
    std::vector<std::string> out;
    while (st.row()) out.push_back(st.text(0));
    log_read_error(c, st, "openers");
    return out;
  });
}

// One read transaction for the whole burst: each statement on its own would
// take and release the WAL read lock (two fcntl calls) and a pooled reader.
Result<std::vector<std::vector<std::string>>> SqliteStore::contacts_of_each(const std::vector<std::string>& user_ids) {
  return with_reader([&](SqliteConn& c) {
    ReadTxn txn(c);
    std::vector<std::vector<std::string>> out;
    out.reserve(user_ids.size());
    for (const auto& id : user_ids) out.push_back(read_contacts(c, id));
    return out;
  });
}

// ---------------------------------------------------------------- moderation

namespace {

// Under the single writer (and BEGIN IMMEDIATE across processes), MAX + 1 is
// the next version in commit order.
Result<AccountState> write_account(SqliteConn& c, const std::string& user_id, const char* op,
                                   std::optional<bool> disabled, std::optional<int64_t> valid_after) {
  auto st = c.prepare(
      "UPDATE users SET disabled = COALESCE(?1, disabled), "
      "tokens_valid_after = CASE WHEN ?2 IS NULL THEN tokens_valid_after ELSE MAX(tokens_valid_after + 1, ?2) END, "
      "state_version = (SELECT COALESCE(MAX(state_version), 0) + 1 FROM users) WHERE id = ?3 "
      "RETURNING disabled, tokens_valid_after, state_version");
  std::optional<int64_t> dis;
  if (disabled) dis = *disabled ? 1 : 0;
  st.bind(dis, valid_after, user_id);
  if (!st.row()) {
    if (st.error() != SQLITE_OK) return storage_error(c, st.error(), op);
    return not_found("user_not_found", "no such user");
  }
  AccountState a{user_id, st.i64(0) != 0, st.i64(1), st.i64(2)};
  st.row();  // finish the statement so its write completes
  return a;
}

Result<Message> reread_message(SqliteConn& c, const std::string& id) {
  auto st = c.prepare(MESSAGE_SELECT "WHERE m.id = ?");
  st.bind(id);
  auto found = read_messages(c, st, "reread_message");
  if (found.empty()) return internal_error("storage error");
  return std::move(found.front());
}

// A claimed notification's message as it is now: its content and edit time
// into `n`. False (and the notification removed) when the message was
// deleted or is gone, its recipient's account is disabled (a locked
// account gets no more message text on its phones), or the recipient has
// left the thread (a retry must not carry the text to a removed member, nor
// to one added back since, for whom it was said before they joined):
// nothing is sent for it.
Result<bool> fill_notification_message(SqliteConn& c, Notification& n) {
  if (n.message_id.empty()) return true;
  auto st = c.prepare(
      "SELECT content, edited_at, deleted_at, change_no FROM messages WHERE id = ?1 "
      "AND NOT EXISTS (SELECT 1 FROM users WHERE id = ?2 AND disabled <> 0) "
      "AND EXISTS (SELECT 1 FROM participants p WHERE p.thread_id = messages.thread_id AND p.user_id = ?2 "
      "AND p.joined_at <= messages.created_at)");
  st.bind(n.message_id, n.recipient_id);
  if (st.row() && st.is_null(2)) {
    n.content = st.text(0);
    if (!st.is_null(1)) n.edited_at = st.i64(1);
    if (!st.is_null(3)) n.change_no = st.i64(3);
    return true;
  }
  if (st.error() != SQLITE_OK) return storage_error(c, st.error(), "claim_notifications");
  auto drop = c.prepare("DELETE FROM webhook_outbox WHERE id = ?");
  drop.bind(n.id);
  if (!drop.done()) return storage_error(c, drop.error(), "claim_notifications");
  return false;
}

}  // namespace

Result<AccountState> SqliteStore::set_user_disabled(const std::string& user_id, bool disabled) {
  return writer_->submit_and_wait<AccountState>([this, user_id, disabled]() -> Result<AccountState> {
    auto state = write_account(*writer_conn_, user_id, "set_user_disabled", disabled, std::nullopt);
    if (!state || !disabled) return state;
    // Its queued pushes go with it, in the same commit: an `enable` before a
    // retry was due would otherwise send them after all.
    auto drop = writer_conn_->prepare("DELETE FROM webhook_outbox WHERE recipient_id = ? AND dead = 0");
    drop.bind(user_id);
    if (!drop.done()) return storage_error(*writer_conn_, drop.error(), "set_user_disabled");
    return state;
  });
}

Result<AccountState> SqliteStore::revoke_tokens(const std::string& user_id, int64_t valid_after) {
  return writer_->submit_and_wait<AccountState>([this, user_id, valid_after] {
    return write_account(*writer_conn_, user_id, "revoke_tokens", std::nullopt, valid_after);
  });
}

Result<std::vector<AccountState>> SqliteStore::account_changes(int64_t after_version) {
  return with_reader([&](SqliteConn& c) {
    auto st = c.prepare(
        "SELECT id, disabled, tokens_valid_after, state_version FROM users WHERE state_version > ? "
        "ORDER BY state_version");
    st.bind(after_version);
    std::vector<AccountState> out;
    while (st.row()) out.push_back(AccountState{st.text(0), st.i64(1) != 0, st.i64(2), st.i64(3)});
    log_read_error(c, st, "account_changes");
    return out;
  });
}

// Whether actor_id may change the message as this commits (Store::delete_message):
// a participant of its thread, and its sender, or (admin_too) an admin.
Status SqliteStore::may_change(const std::string& message_id, const std::string& actor_id, bool admin_too) {
  if (actor_id.empty()) return Ok{};
  SqliteConn& c = *writer_conn_;
  auto st = c.prepare(
      "SELECT m.sender_id = ?1, p.is_admin FROM messages m "
      "LEFT JOIN participants p ON p.thread_id = m.thread_id AND p.user_id = ?1 WHERE m.id = ?2");
  st.bind(actor_id, message_id);
  if (!st.row()) {
    if (st.error() != SQLITE_OK) return storage_error(c, st.error(), "may_change");
    return not_found("message_not_found", "no such message");
  }
  const bool member = !st.is_null(1);
  if (member && (st.i64(0) != 0 || (admin_too && st.i64(1) != 0))) return Ok{};
  return not_allowed();
}

Result<Message> SqliteStore::delete_message(const std::string& message_id, const std::string& actor_id) {
  return writer_->submit_and_wait<Message>([this, message_id, actor_id]() -> Result<Message> {
    SqliteConn& c = *writer_conn_;
    if (auto may = may_change(message_id, actor_id, /*admin_too=*/true); !may) return may.error();
    auto st = c.prepare(
        "UPDATE messages SET content = '', change_no = CASE WHEN deleted_at IS NULL THEN " NEXT_CHANGE_NO
        " ELSE change_no END, deleted_at = COALESCE(deleted_at, ?) WHERE id = ?");
    st.bind(now_micros(), message_id);
    if (!st.done()) return storage_error(c, st.error(), "delete_message");
    if (c.changes() == 0) return not_found("message_not_found", "no such message");
    // No push for a message that is gone, and no copy of its text left behind.
    auto outbox = c.prepare("DELETE FROM webhook_outbox WHERE message_id = ?");
    outbox.bind(message_id);
    if (!outbox.done()) return storage_error(c, outbox.error(), "delete_message");
    auto owed = c.prepare("DELETE FROM owed_pushes WHERE message_id = ?");
    owed.bind(message_id);
    if (!owed.done()) return storage_error(c, owed.error(), "delete_message");
    return reread_message(c, message_id);
  });
}

Result<Message> SqliteStore::edit_message(const std::string& message_id, const std::string& actor_id,
                                          const std::string& content, Micros when) {
  return writer_->submit_and_wait<Message>([this, message_id, actor_id, content, when]() -> Result<Message> {
    SqliteConn& c = *writer_conn_;
    if (auto may = may_change(message_id, actor_id, /*admin_too=*/false); !may) return may.error();
    auto st = c.prepare("UPDATE messages SET content = ?, edited_at = ?, change_no = " NEXT_CHANGE_NO
                        " WHERE id = ? AND deleted_at IS NULL");
    st.bind(content, when, message_id);
    if (!st.done()) return storage_error(c, st.error(), "edit_message");
    if (c.changes() == 0) {
      if (c.prepare("SELECT 1 FROM messages WHERE id = ?").bind(message_id).row())
        return Error{ErrorKind::kConflict, "message_deleted", "the message was deleted"};
      return not_found("message_not_found", "no such message");
    }
    return reread_message(c, message_id);
  });
}

Result<int64_t> SqliteStore::last_change() {
  return with_reader([&](SqliteConn& c) -> int64_t {
    auto st = c.prepare("SELECT " LAST_CHANGE_NO);
    if (st.row()) return st.i64(0);
    log_read_error(c, st, "last_change");
    return 0;
  });
}

Result<std::vector<Message>> SqliteStore::changes_after(const std::string& user_id, int64_t after, int limit) {
  return with_reader([&](SqliteConn& c) {
    auto st = c.prepare(MESSAGE_SELECT
                        "JOIN participants p ON p.thread_id = m.thread_id AND p.user_id = ? "
                        "WHERE m.change_no > ? ORDER BY m.change_no LIMIT ?");
    st.bind(user_id, after, clamp_limit(limit));
    return read_messages(c, st, "changes_after");
  });
}

// ---------------------------------------------------------------- webhook outbox

void SqliteStore::enqueue_notifications(std::vector<Notification> items, std::vector<std::string> settles,
                                        std::function<void(Result<size_t>)> done) {
  // No savepoint: a statement here fails only when the transaction is lost
  // (an id taken is skipped), and the whole batch fails with it anyway.
  writer_->submit<size_t>(
      [this, items = std::move(items), settles = std::move(settles)]() -> Result<size_t> {
        SqliteConn& c = *writer_conn_;
        const Micros now = now_micros();
        std::unordered_set<std::string> settled_elsewhere;  // owed no more: another settled it, or it was deleted
        std::unordered_set<std::string> seen;
        for (const auto& id : settles) {
          if (!seen.insert(id).second) continue;  // named twice: settled once
          auto owed = c.prepare("DELETE FROM owed_pushes WHERE message_id = ?");
          owed.bind(id);
          if (!owed.done()) return storage_error(c, owed.error(), "settle_owed_push");
          if (c.changes() == 0) settled_elsewhere.insert(id);
        }
        size_t stored = 0;
        for (const auto& n : items) {
          if (settled_elsewhere.count(n.message_id)) continue;
          auto st = c.prepare(
              "INSERT INTO webhook_outbox (id, recipient_id, body, attempts, next_attempt_at, created_at, message_id) "
              "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING");
          std::optional<std::string> message_id;
          if (!n.message_id.empty()) message_id = n.message_id;
          st.bind(n.id, n.recipient_id, n.body, n.attempts, n.next_attempt_at, now, message_id);
          if (!st.done()) return storage_error(c, st.error(), "enqueue_notification");
          stored += static_cast<size_t>(c.changes());
        }
        return stored;
      },
      [done = std::move(done)](Result<size_t> r) {
        if (done) done(std::move(r));
      },
      {.needs_current_state = false, .needs_savepoint = false});
}

Result<std::vector<std::string>> SqliteStore::overdue_pushes(Micros before, int limit) {
  return with_reader([&](SqliteConn& c) {
    // Ids are UUIDv7, in time order: the walk stops after `limit` rows.
    auto st = c.prepare("SELECT message_id FROM owed_pushes WHERE created_at < ? ORDER BY message_id LIMIT ?");
    st.bind(before, clamp_limit(limit));
    std::vector<std::string> out;
    while (st.row()) out.push_back(st.text(0));
    log_read_error(c, st, "overdue_pushes");
    return out;
  });
}

Result<std::vector<Notification>> SqliteStore::claim_notifications(Micros now, Micros lease_until, int limit) {
  return writer_->submit_and_wait<std::vector<Notification>>(
      [this, now, lease_until, limit]() -> Result<std::vector<Notification>> {
        SqliteConn& c = *writer_conn_;
        auto st = c.prepare(
            "UPDATE webhook_outbox SET next_attempt_at = ?1 WHERE id IN (SELECT id FROM webhook_outbox "
            "WHERE dead = 0 AND next_attempt_at <= ?2 ORDER BY next_attempt_at, created_at LIMIT ?3) "
            "RETURNING id, recipient_id, body, attempts, created_at, message_id");
        st.bind(lease_until, now, clamp_limit(limit));
        std::vector<std::pair<Micros, Notification>> rows;
        while (st.row()) {
          Notification n;
          n.id = st.text(0);
          n.recipient_id = st.text(1);
          n.body = st.text(2);
          n.attempts = static_cast<int>(st.i64(3));
          n.next_attempt_at = lease_until;
          if (!st.is_null(5)) n.message_id = st.text(5);
          rows.push_back({st.i64(4), std::move(n)});
        }
        if (st.error() != SQLITE_OK) return storage_error(c, st.error(), "claim_notifications");
        // RETURNING gives no order: oldest first, as they were queued.
        std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        std::vector<Notification> out;
        for (auto& r : rows) {
          auto live = fill_notification_message(c, r.second);
          if (!live) return live.error();
          if (*live) out.push_back(std::move(r.second));
        }
        return out;
      });
}

Result<std::optional<Micros>> SqliteStore::next_notification_due() {
  return with_reader([](SqliteConn& c) -> std::optional<Micros> {
    auto st = c.prepare("SELECT MIN(next_attempt_at) FROM webhook_outbox WHERE dead = 0");
    std::optional<Micros> due;
    if (st.row() && !st.is_null(0)) due = st.i64(0);
    log_read_error(c, st, "next_notification_due");
    return due;
  });
}

Status SqliteStore::finish_notification(const std::string& id) {
  return writer_->submit_and_wait<Ok>([this, id]() -> Status {
    auto st = writer_conn_->prepare("DELETE FROM webhook_outbox WHERE id = ?");
    st.bind(id);
    if (!st.done()) return storage_error(*writer_conn_, st.error(), "finish_notification");
    return Ok{};
  });
}

Status SqliteStore::retry_notification(const std::string& id, int attempts, Micros next_attempt_at) {
  return writer_->submit_and_wait<Ok>([this, id, attempts, next_attempt_at]() -> Status {
    auto st = writer_conn_->prepare("UPDATE webhook_outbox SET attempts = ?, next_attempt_at = ? WHERE id = ?");
    st.bind(attempts, next_attempt_at, id);
    if (!st.done()) return storage_error(*writer_conn_, st.error(), "retry_notification");
    return Ok{};
  });
}

Status SqliteStore::dead_letter_notification(const std::string& id, int attempts) {
  return writer_->submit_and_wait<Ok>([this, id, attempts]() -> Status {
    auto st = writer_conn_->prepare("UPDATE webhook_outbox SET attempts = ?, dead = 1 WHERE id = ?");
    st.bind(attempts, id);
    if (!st.done()) return storage_error(*writer_conn_, st.error(), "dead_letter_notification");
    return Ok{};
  });
}

Result<int64_t> SqliteStore::dead_notification_count() {
  return with_reader([](SqliteConn& c) -> int64_t {
    auto st = c.prepare("SELECT COUNT(*) FROM webhook_outbox WHERE dead = 1");
    int64_t n = st.row() ? st.i64(0) : 0;
    log_read_error(c, st, "dead_notification_count");
    return n;
  });
}

// ---------------------------------------------------------------- read pool

template <typename F, typename T>
Result<T> SqliteStore::with_reader(F&& f) {
  auto conn = acquire_reader();
  if (!conn) return storage_unavailable();
  conn->take_failure();
  T result = f(*conn);
  const bool failed = conn->take_failure();  // logged where it happened
  release_reader(std::move(conn));
  if (failed) return internal_error("storage error");
  return result;
}

std::unique_ptr<SqliteConn> SqliteStore::acquire_reader() {
  {
    std::lock_guard lock(readers_mu_);
    if (!readers_.empty()) {
      auto conn = std::move(readers_.back());
      readers_.pop_back();
      return conn;
    }
  }
  auto conn = SqliteConn::open(path_, /*writer=*/false, false);
  if (!conn) {
    static LogThrottle throttle;  // every read tries again
    if (auto held_back = throttle.admit())
      spdlog::error("event=store_reader_open_failed error=\"{}\" suppressed={}", conn.error().message, *held_back);
    return nullptr;
  }
  return std::move(*conn);
}

void SqliteStore::release_reader(std::unique_ptr<SqliteConn> conn) {
  std::lock_guard lock(readers_mu_);
  // Past the cap (a burst of concurrent reads) the extra connection just closes.
  if (!readers_closed_ && readers_.size() < kMaxPooledReaders) readers_.push_back(std::move(conn));
}

}  // namespace parley
