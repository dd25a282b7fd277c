#include "store/pg_store.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>
#include <unordered_map>

#include "common/clock.h"
#include "common/ids.h"
#include "common/redact.h"
#include "store/pg_conn.h"
#include "store/pg_schema.h"
#include "store/phone_key.h"

namespace parley {

namespace {

constexpr size_t kMaxPooledReaders = 8;
constexpr size_t kMaxCacheEntries = 10000;

// One string literal per statement: the statement cache is keyed by its address.
#define PG_USER_COLS \
  "id, username, full_name, phone_number, role, password_hash, created_at, last_seen, disabled, tokens_valid_after"
#define PG_THREAD_COLS "t.id, t.type, t.title, t.created_by, t.created_at, t.last_activity, t.last_seq"
// Participant p's unread count (messages from others past p's read mark, not
// deleted ones).
#define PG_UNREAD_OF_P                                                                              \
  "(SELECT COUNT(*) FROM messages m WHERE m.thread_id = p.thread_id AND m.seq > p.last_read_seq " \
  "AND m.sender_id <> p.user_id AND m.deleted_at IS NULL)"
#define PG_MESSAGE_SELECT                                                                               \
  "SELECT m.id, m.thread_id, m.seq, m.sender_id, m.content, m.message_type, m.client_msg_id, "         \
  "m.created_at, m.edited_at, u.username, u.full_name, u.role, m.deleted_at, m.change_no FROM messages m " \
  "JOIN users u ON u.id = m.sender_id "

// The last change number (0: none) and the next one, through the partial
// index of changed messages. Writers hold the commit clock, so MAX + 1 is the
// next number in commit order across every node.
#define PG_LAST_CHANGE_NO \
  "COALESCE((SELECT change_no FROM messages WHERE change_no IS NOT NULL ORDER BY change_no DESC LIMIT 1), 0)"
#define PG_NEXT_CHANGE_NO "(" PG_LAST_CHANGE_NO " + 1)"

Error unavailable() { return storage_unavailable(); }

User read_user(const PgResult& r, int i) {
  User u;
  u.id = r.text(i, 0);
  u.username = r.text(i, 1);
  u.full_name = r.text(i, 2);
  if (!r.is_null(i, 3)) u.phone_number = r.text(i, 3);
  u.role = r.text(i, 4);
  u.password_hash = r.text(i, 5);
  u.created_at = r.i64(i, 6);
  u.last_seen = r.i64(i, 7);
  u.disabled = r.i64(i, 8) != 0;
  u.tokens_valid_after = r.i64(i, 9);
  return u;
}

Thread read_thread(const PgResult& r, int i) {
  Thread t;
  t.id = r.text(i, 0);
  t.type = thread_type_from_stored(r.text(i, 1));
  t.title = r.text(i, 2);
  t.created_by = r.text(i, 3);
  t.created_at = r.i64(i, 4);
  t.last_activity = r.i64(i, 5);
  t.last_seq = r.i64(i, 6);
  return t;
}

Message read_message(const PgResult& r, int i) {
  Message m;
  m.id = r.text(i, 0);
  m.thread_id = r.text(i, 1);
  m.seq = r.i64(i, 2);
  m.sender_id = r.text(i, 3);
  m.content = r.bytes(i, 4);
  m.message_type = r.text(i, 5);
  if (!r.is_null(i, 6)) m.client_msg_id = r.bytes(i, 6);
  m.created_at = r.i64(i, 7);
  if (!r.is_null(i, 8)) m.edited_at = r.i64(i, 8);
  m.sender = UserRef{m.sender_id, r.text(i, 9), r.text(i, 10), r.text(i, 11)};
  m.deleted = !r.is_null(i, 12);
  if (!r.is_null(i, 13)) m.change_no = r.i64(i, 13);
  return m;
}

std::vector<Message> read_messages(const PgConn& c, const PgResult& r, std::string_view op) {
  std::vector<Message> out;
  if (!r.ok()) {
    pg_error(c, r, op);
    return out;
  }
  out.reserve(static_cast<size_t>(r.rows()));
  for (int i = 0; i < r.rows(); ++i) out.push_back(read_message(r, i));
  return out;
}

void log_read_error(const PgConn& c, const PgResult& r, std::string_view op) {
  if (!r.ok()) pg_error(c, r, op);
}

std::optional<User> find_user(PgConn& c, const char* sql, const std::string& key) {
  auto r = c.exec(sql, {key});
  if (r.ok() && r.rows() > 0) return read_user(r, 0);
  log_read_error(c, r, "find_user");
  return std::nullopt;
}

// Whether every id in `ids` (repeats allowed) names a user, in one statement.
Result<bool> all_users_exist(PgConn& c, const std::vector<std::string>& ids) {
  if (ids.empty()) return true;
  auto r = c.exec("SELECT count(*) FROM users WHERE id = ANY($1::text[])", {PgParam::array(ids)});
  if (!r.ok() || r.rows() == 0) return pg_error(c, r, "find_users");
  return r.i64(0, 0) == static_cast<int64_t>(std::set<std::string>(ids.begin(), ids.end()).size());
}

// A participant row: p is participants, u the user (PG_PARTICIPANTS_FROM).
#define PG_PARTICIPANT_COLS                                                                                \
  "p.user_id, u.username, u.full_name, u.role, p.is_admin, p.last_read_seq, p.joined_at, p.last_delivered_seq, " \
  "u.last_seen"
#define PG_PARTICIPANTS_FROM "FROM participants p JOIN users u ON u.id = p.user_id"

Participant read_participant(const PgResult& r, int i, int col) {
  return Participant{r.text(i, col),     r.text(i, col + 1), r.text(i, col + 2),
                     r.text(i, col + 3), r.i64(i, col + 4) != 0, r.i64(i, col + 5),
                     r.i64(i, col + 6),  r.i64(i, col + 7), r.i64(i, col + 8)};
}

std::vector<Participant> load_participants(PgConn& c, const std::string& thread_id) {
  auto r = c.exec("SELECT " PG_PARTICIPANT_COLS " " PG_PARTICIPANTS_FROM
                  " WHERE p.thread_id = $1 ORDER BY p.joined_at, p.user_id COLLATE \"C\"",
                  {thread_id});
  std::vector<Participant> out;
  log_read_error(c, r, "load_participants");
  for (int i = 0; i < r.rows(); ++i) out.push_back(read_participant(r, i, 0));
  return out;
}

std::vector<FormerMarks> load_former_marks(PgConn& c, const std::string& thread_id) {
  auto r = c.exec(
      "SELECT user_id, last_read_seq, last_delivered_seq, joined_at FROM former_marks WHERE thread_id = $1",
      {thread_id});
  std::vector<FormerMarks> out;
  log_read_error(c, r, "load_former_marks");
  for (int i = 0; i < r.rows(); ++i)
    out.push_back(FormerMarks{r.text(i, 0), r.i64(i, 1), r.i64(i, 2), r.i64(i, 3)});
  return out;
}

std::optional<Thread> load_thread(PgConn& c, const std::string& id) {
  auto r = c.exec("SELECT " PG_THREAD_COLS " FROM threads t WHERE t.id = $1", {id});
  log_read_error(c, r, "load_thread");
  if (!r.ok() || r.rows() == 0) return std::nullopt;
  Thread t = read_thread(r, 0);
  t.participants = load_participants(c, id);
  t.former_marks = load_former_marks(c, id);
  return t;
}

int64_t clamp_limit(int limit) { return std::max(limit, 0); }

// Several statements read as one snapshot.
class PgReadTxn {
 public:
  explicit PgReadTxn(PgConn& c) : c_(c), open_(c.run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").ok()) {}
  ~PgReadTxn() {
    if (open_) c_.run("COMMIT");
  }
  PgReadTxn(const PgReadTxn&) = delete;
  PgReadTxn& operator=(const PgReadTxn&) = delete;

 private:
  PgConn& c_;
  bool open_;
};

}  // namespace

// ---------------------------------------------------------------- lifecycle

// Every node's writer holds the commit clock from BEGIN to COMMIT, so a
// writer that stops half-way (its process frozen by SIGSTOP or a paused VM,
// or cut off from the database without the connection closing) would stop
// every node's writes for as long, for a partition until TCP gives up
// (hours). A writer sends its statements back to back: 5 s idle inside a
// transaction means it is gone, and PostgreSQL ends its session, which rolls
// the transaction back (nothing of it was acknowledged) and frees the clock.
// The writer finds its connection lost when it resumes and reconnects for
// its next batch.
constexpr const char* kWriterSessionSetup = "SET idle_in_transaction_session_timeout = 5000";

// A PostgreSQL store's store_id (Store::store_id): PostgreSQL's backups are
// restored with its own tools, so Parley cannot give a restored store a new
// name as it does a SQLite one. It is derived instead from what any restore
// changes: the cluster (its system identifier: another cluster), the
// database's OID (another database of the cluster) and the `messages`
// table's OID (a restore over the same database creates its tables anew).
// Every node of a cluster reads the same. A major-version upgrade
// (pg_upgrade makes a new cluster) changes it too: clients then start over
// as after a restore, which costs them a re-read and loses nothing.
static Result<std::string> pg_store_id(PgConn& c) {
  auto r = c.exec(
      "SELECT md5(concat_ws('/', (SELECT system_identifier FROM pg_control_system()),"
      " (SELECT oid FROM pg_database WHERE datname = current_database()),"
      " to_regclass('messages')::oid))::uuid::text");
  if (!r.ok() || r.rows() != 1 || r.is_null(0, 0))
    return Error{ErrorKind::kUnavailable, "storage_unavailable", "cannot read the store's identity: " + r.primary_message()};
  return r.text(0, 0);
}

Result<std::unique_ptr<PgStore>> PgStore::open(const StoreOptions& options) {
  if (options.database_url.empty()) return bad_input("invalid_config", "database URL is empty");
  auto conn = PgConn::open(options.database_url);
  if (!conn) return conn.error();
  if (auto st = migrate_pg_schema(**conn); !st) return st.error();
  // A role refused the catalog's functions (some hosted services) has
  // none: clients then cannot tell a restore, as before there was one.
  auto store_id = pg_store_id(**conn);
  if (!store_id) {
    spdlog::warn("event=store_id_unavailable error=\"{}\"", store_id.error().message);
    store_id = std::string();
  }
  if (!(*conn)->set_session_setup(kWriterSessionSetup))
    return Error{ErrorKind::kUnavailable, "storage_unavailable", "cannot set up the PostgreSQL session: " + (*conn)->errmsg()};
  std::string described = redact_url_password(options.database_url);  // also what /health shows
  spdlog::info("event=store_open store=postgres url={} schema_version={} store_id={}", described,
               latest_pg_schema_version(), store_id->empty() ? "none" : *store_id);
  auto store = std::unique_ptr<PgStore>(new PgStore(options, std::move(described), std::move(*conn)));
  store->store_id_ = std::move(*store_id);
  return store;
}

PgStore::PgStore(StoreOptions options, std::string described, std::unique_ptr<PgConn> writer)
    : options_(std::move(options)), described_(std::move(described)), writer_conn_(std::move(writer)) {
  writer_ = std::make_unique<GroupCommitWriter>(
      options_.max_batch, [this](std::vector<GroupCommitWriter::Op>& batch) { return run_batch(batch); },
      [this](const std::function<bool()>& give_up) { return probe_writer(give_up); });
}

PgStore::~PgStore() { close(); }

void PgStore::close() {
  std::call_once(close_once_, [this] {
    writer_->stop();  // every queued write committed (or failed), every callback run
    writer_conn_.reset();
    std::vector<std::unique_ptr<PgConn>> idle;
    {
      std::lock_guard lock(readers_mu_);
      readers_closed_ = true;
      idle.swap(readers_);
    }
    spdlog::info("event=store_closed url={}", described_);
  });
}

std::string PgStore::describe() const { return described_; }

// ---------------------------------------------------------------- writer

// An append as the writer holds it: try_batch finds a run of them by this
// payload and sends their statements together (append_run).
struct PgStore::PendingAppend : GroupCommitPayload {
  AppendRequest request;
  std::optional<Result<AppendResult>> result;
};

std::optional<Error> PgStore::run_batch(std::vector<GroupCommitWriter::Op>& batch) {
  try {
    return run_batch_on_writer(batch);
  } catch (const std::exception& e) {
    // Thrown mid-transaction (an allocation that failed, say), the batch may
    // have left its transaction open, and the connection in pipeline mode:
    // the next batch's COMMIT would commit writes reported failed. A new
    // session is the one state known to be clean (the server rolls back the
    // old one's transaction).
    if (auto held_back = batch_failed_log_.admit())
      spdlog::error("event=store_batch_failed size={} error=\"exception: {}\" suppressed={}", batch.size(), e.what(),
                    *held_back);
    senders_.clear();
    writer_conn_->reconnect();
    return internal_error("storage commit failed");
  }
}

std::optional<Error> PgStore::run_batch_on_writer(std::vector<GroupCommitWriter::Op>& batch) {
  PgConn& c = *writer_conn_;
  if (!c.healthy() && !c.reconnect()) {
    if (auto held_back = batch_failed_log_.admit())
      spdlog::error("event=store_batch_failed size={} error=\"{}\" suppressed={}", batch.size(), c.errmsg(), *held_back);
    return unavailable();
  }
  // An op run without a savepoint whose statement failed took the whole
  // transaction with it: the batch runs once more with a savepoint around
  // every op, so that op fails alone, as it would have with one.
  BatchAttempt attempt = try_batch(batch, false);
  if (attempt.unsaved_op_failed && c.healthy()) {
    spdlog::warn("event=store_batch_retry size={} reason=statement_failed error=\"{}\"", batch.size(), attempt.error);
    if (c.in_transaction()) c.run("ROLLBACK");
    senders_.clear();
    attempt = try_batch(batch, true);
  }
  if (attempt.ok) {
    if (auto held_back = batch_failed_log_.recovered())
      spdlog::warn("event=store_batch_recovered suppressed={}", *held_back);
    return std::nullopt;
  }

  std::string error = attempt.error.empty() ? c.errmsg() : attempt.error;
  const bool lost = !c.healthy();
  if (auto held_back = batch_failed_log_.admit())
    spdlog::error("event=store_batch_failed size={} connection_lost={} error=\"{}\" suppressed={}", batch.size(), lost,
                  error, *held_back);
  if (!lost && c.in_transaction()) c.run("ROLLBACK");
  senders_.clear();  // may hold users of the rolled-back batch
  // Lost mid-COMMIT the outcome is unknown: the ops are reported failed, and
  // say that they may have landed (a client's retry with the same
  // client_msg_id finds the original if it did).
  if (lost && attempt.commit_failed)
    return Error{ErrorKind::kUnavailable, "storage_unavailable",
                 "the database connection was lost during the commit: it may have been stored (retry with the same "
                 "client_msg_id; check before repeating other changes)"};
  return lost ? unavailable() : internal_error("storage commit failed");
}

// After a failed batch, on the writer: whether the database takes a write
// again. The commit clock's row written as it is: a real write (it needs the
// server up, its disk writable, the row free of other nodes' locks), which
// changes nothing. Bounded, so that a stop never waits long behind it: the
// connect gives up when the stop comes, the statement after 2 s (a lock held
// elsewhere: 1 s).
std::optional<Error> PgStore::probe_writer(const std::function<bool()>& give_up) {
  PgConn& c = *writer_conn_;
  if (!c.healthy() && !c.reconnect(give_up)) return unavailable();
  if (c.in_transaction()) c.run("ROLLBACK");
  const bool wrote = c.run("BEGIN; SET LOCAL lock_timeout = 1000; SET LOCAL statement_timeout = 2000; "
                           "UPDATE commit_clock SET last_created_at = last_created_at WHERE id = 1; COMMIT")
                         .ok();
  if (c.healthy() && c.in_transaction()) c.run("ROLLBACK");
  if (!wrote) return unavailable();
  if (auto held_back = batch_failed_log_.recovered()) spdlog::warn("event=store_batch_recovered suppressed={}", *held_back);
  return std::nullopt;
}

PgStore::BatchAttempt PgStore::try_batch(std::vector<GroupCommitWriter::Op>& batch, bool savepoint_every_op) {
  PgConn& c = *writer_conn_;
  BatchAttempt out;
  // A connection that died while idle only says so when used: nothing of
  // this batch has run yet, so one reconnect and a second try are safe.
  auto begun = c.run("BEGIN");
  if (!begun.ok() && !c.healthy() && c.reconnect()) {
    spdlog::info("event=store_reconnected url={}", described_);
    begun = c.run("BEGIN");
  }
  if (!begun.ok()) return {false, false, begun.message()};
  // The commit clock: every writing transaction of every node takes this
  // row lock first, so they commit one at a time (see the class comment).
  auto clock = c.exec("SELECT last_created_at FROM commit_clock WHERE id = 1 FOR UPDATE");
  if (!clock.ok() || clock.rows() != 1) return {false, false, clock.message()};
  const Micros clock_floor = clock.i64(0, 0);
  last_created_at_ = std::max(last_created_at_, clock_floor);
  for (size_t i = 0; i < batch.size();) {
    // Two or more appends in a row go out together (append_run); with a
    // savepoint each they run one by one, as every other op.
    std::vector<PendingAppend*> run;
    for (size_t j = i; !savepoint_every_op && j < batch.size(); ++j) {
      auto* p = dynamic_cast<PendingAppend*>(batch[j].payload.get());
      if (!p) break;
      run.push_back(p);
    }
    if (run.size() > 1) {
      if (!append_run(run)) return {false, true, c.healthy() ? "an append failed" : c.errmsg()};
      i += run.size();
      continue;
    }
    auto& op = batch[i++];
    if (run_op(op, savepoint_every_op || op.needs_savepoint)) continue;
    return {false, !savepoint_every_op && !op.needs_savepoint, c.errmsg()};
  }
  if (last_created_at_ > clock_floor) {
    auto moved = c.exec("UPDATE commit_clock SET last_created_at = $1 WHERE id = 1", {last_created_at_});
    if (!moved.ok()) return {false, false, moved.message()};
  }
  // PostgreSQL answers a COMMIT outside a transaction with a warning and
  // success: a session that was reset on the way (its transaction rolled
  // back) must not make this batch read as committed.
  if (!c.in_transaction() || c.transaction_failed()) return {false, false, "the transaction was lost"};
  auto committed = c.run("COMMIT");
  if (!committed.ok()) return {false, false, committed.message(), true};
  return {true, false, ""};
}

// False only when the whole transaction is lost and the batch must fail; an op
// that fails by itself is rolled back to its savepoint, or (run without one)
// has written nothing, and the batch goes on.
bool PgStore::run_op(GroupCommitWriter::Op& op, bool savepoint) {
  PgConn& c = *writer_conn_;
  if (!savepoint) {
    // Such an op writes all in one statement or nothing (GroupCommitWriter::Op):
    // failing by itself it left nothing; a statement that failed aborted the
    // whole transaction (PostgreSQL keeps no partial one): run_batch runs the
    // batch again with savepoints.
    op.apply();
    return c.healthy() && !c.transaction_failed();
  }
  if (!c.run("SAVEPOINT op").ok()) return false;
  bool applied = op.apply();
  if (!c.healthy()) return false;
  if (!applied && !c.run("ROLLBACK TO SAVEPOINT op").ok()) return false;
  return c.run("RELEASE SAVEPOINT op").ok();
}

std::optional<UserRef> PgStore::sender_ref(const std::string& user_id) {
  if (auto it = senders_.find(user_id); it != senders_.end()) return it->second;
  auto r = writer_conn_->exec("SELECT id, username, full_name, role FROM users WHERE id = $1", {user_id});
  if (!r.ok() || r.rows() == 0) return std::nullopt;
  if (senders_.size() >= kMaxCacheEntries) senders_.clear();
  return senders_[user_id] = UserRef{r.text(0, 0), r.text(0, 1), r.text(0, 2), r.text(0, 3)};
}

// ---------------------------------------------------------------- users

Result<User> PgStore::create_user(const User& user) {
  User u = user;
  if (u.id.empty()) u.id = new_uuid();
  if (u.created_at == 0) u.created_at = now_micros();
  return writer_->submit_and_wait<User>([this, u = std::move(u)] { return write_user(u); });
}

Result<User> PgStore::write_user(const User& u) {
  PgConn& c = *writer_conn_;
  // Checked here, not by parsing constraint names: writers hold the commit
  // clock, so nothing can slip in between the check and the insert.
  auto taken = c.exec("SELECT 1 FROM users WHERE username = $1", {u.username});
  if (!taken.ok()) return pg_error(c, taken, "insert_user");
  if (taken.rows() > 0) return Error{ErrorKind::kConflict, "username_taken", "username is already taken"};
  std::optional<std::string> key = stored_phone_key(u.phone_number);
  if (u.phone_number) {
    // The number as typed is unique too (schema v1): a key-less one is compared as is.
    auto phone = c.exec("SELECT 1 FROM users WHERE phone_key = $1 OR phone_number = $2", {key, *u.phone_number});
    if (!phone.ok()) return pg_error(c, phone, "insert_user");
    if (phone.rows() > 0) return Error{ErrorKind::kConflict, "phone_taken", "phone number is already registered"};
  }
  auto r = c.exec("INSERT INTO users (" PG_USER_COLS ", phone_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                  {u.id, u.username, u.full_name, u.phone_number, u.role, u.password_hash, u.created_at, u.last_seen,
                   u.disabled, u.tokens_valid_after, key});
  if (!r.ok()) return pg_error(c, r, "insert_user");
  return u;
}

Result<std::optional<User>> PgStore::user_by_id(const std::string& id) {
  return with_reader([&](PgConn& c) { return find_user(c, "SELECT " PG_USER_COLS " FROM users WHERE id = $1", id); });
}

Result<std::optional<User>> PgStore::user_by_username(const std::string& username) {
  return with_reader(
      [&](PgConn& c) { return find_user(c, "SELECT " PG_USER_COLS " FROM users WHERE username = $1", username); });
}

Result<std::optional<User>> PgStore::user_by_phone(const std::string& phone) {
  std::string key = phone_key(phone);
  if (key.empty()) return std::optional<User>();
  return with_reader(
      [&](PgConn& c) { return find_user(c, "SELECT " PG_USER_COLS " FROM users WHERE phone_key = $1", key); });
}

Result<std::vector<User>> PgStore::search_users(const std::string& query, int limit) {
  return with_reader([&](PgConn& c) {
    // As SQLite's LIKE: only ASCII letters match either case (ILIKE would
    // fold every letter the database's locale knows). Byte order, as
    // SQLite's default, whatever the database's collation. The username
    // typed in full first, as on SQLite.
#define PG_ASCII_LOWER(x) "translate(" x ", 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
    auto r = c.exec("SELECT " PG_USER_COLS " FROM users WHERE " PG_ASCII_LOWER("username") " LIKE " PG_ASCII_LOWER(
                        "$1") " ESCAPE '\\' OR " PG_ASCII_LOWER("full_name") " LIKE " PG_ASCII_LOWER("$1") " ESCAPE '\\' "
                    "ORDER BY " PG_ASCII_LOWER("username") " = " PG_ASCII_LOWER("$3") " DESC, username COLLATE \"C\" LIMIT $2",
                    {like_contains_pattern(query), clamp_limit(limit), query});
#undef PG_ASCII_LOWER
    std::vector<User> out;
    log_read_error(c, r, "search_users");
    for (int i = 0; i < r.rows(); ++i) out.push_back(read_user(r, i));
    return out;
  });
}

Result<std::vector<User>> PgStore::recent_users(int limit) {
  return with_reader([&](PgConn& c) {
    auto r = c.exec("SELECT " PG_USER_COLS " FROM users ORDER BY last_seen DESC, created_at DESC LIMIT $1",
                    {std::max(limit, 0)});
    std::vector<User> out;
    log_read_error(c, r, "recent_users");
    for (int i = 0; i < r.rows(); ++i) out.push_back(read_user(r, i));
    return out;
  });
}

Result<size_t> PgStore::user_count() {
  return with_reader([](PgConn& c) {
    auto r = c.exec("SELECT COUNT(*) FROM users");
    return r.ok() && r.rows() == 1 ? static_cast<size_t>(r.i64(0, 0)) : size_t{0};
  });
}

// Waits for the commit (the caller, the presence announcer, runs on a
// worker): the offline presence frame follows, and a client that asks
// GET /api/users/:id/presence on seeing it must find this last_seen, not
// the one before (e2e.pg.node.live failed so once under load). Its failure
// is only logged: presence is best effort.
void PgStore::set_last_seen(const std::string& user_id, Micros when) {
  auto written = writer_->submit_and_wait<Ok>([this, user_id, when]() -> Status {
    auto r = writer_conn_->exec("UPDATE users SET last_seen = GREATEST(last_seen, $1) WHERE id = $2", {when, user_id});
    if (!r.ok()) return pg_error(*writer_conn_, r, "set_last_seen");
    return Ok{};
  });
  if (!written) spdlog::warn("event=last_seen_not_stored user_id={} code={}", user_id, written.error().code);
}

// ---------------------------------------------------------------- threads

Result<Store::CreatedThread> PgStore::create_thread(const Thread& in) {
  auto prepared = prepare_new_thread(in);
  if (!prepared) return prepared.error();
  return writer_->submit_and_wait<CreatedThread>(
      [this, t = std::move(*prepared)] { return write_thread(t.thread, t.direct_key); });
}

// On the commit clock (created_at), which this writer holds: every message
// stored before a join, on any node, is older than it, every one after is
// newer, whatever the nodes' wall clocks say, so joined_at and created_at
// compare exactly. (A join made through a node of an older version, during
// a rolling upgrade, has that node's clock: docs/operations.md.)
Micros PgStore::join_time() { return last_created_at_ = std::max(now_micros(), last_created_at_ + 1); }

Result<Store::CreatedThread> PgStore::write_thread(const Thread& t, const std::optional<std::string>& direct_key) {
  PgConn& c = *writer_conn_;
  if (direct_key) {
    auto r = c.exec("SELECT id FROM threads WHERE direct_key = $1", {*direct_key});
    if (!r.ok()) return pg_error(c, r, "find_direct");
    if (r.rows() > 0) {
      if (auto found = load_thread(c, r.text(0, 0))) return CreatedThread{std::move(*found), false};
    }
  }
  std::vector<std::string> ids, admin;
  for (const auto& p : t.participants) {
    ids.push_back(p.user_id);
    admin.push_back(p.is_admin ? "1" : "0");
  }
  auto known = all_users_exist(c, ids);
  if (!known) return known.error();
  if (!*known) return not_found("user_not_found", "participant does not exist");

  auto r = c.exec(
      "INSERT INTO threads (id, type, title, created_by, created_at, last_activity, last_seq, direct_key) "
      "VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
      {t.id, stored_thread_type(t.type), t.title, t.created_by, t.created_at, t.created_at, direct_key});
  if (!r.ok()) return pg_error(c, r, "insert_thread");
  // One statement for all members: a group of 500 is one round trip, not 500,
  // while this writer holds the commit clock every node's sends wait for.
  auto ins = c.exec(
      "INSERT INTO participants (thread_id, user_id, is_admin, joined_at) "
      "SELECT $1, x.u, x.a, $4 FROM unnest($2::text[], $3::int[]) AS x(u, a)",
      {t.id, PgParam::array(ids), PgParam::array(admin), join_time()});
  if (!ins.ok()) return pg_error(c, ins, "insert_participant");
  auto stored = load_thread(c, t.id);
  if (!stored) return internal_error("storage error");
  return CreatedThread{std::move(*stored), true};
}

Result<std::optional<Thread>> PgStore::thread(const std::string& thread_id) {
  return with_reader([&](PgConn& c) {
    PgReadTxn txn(c);
    return load_thread(c, thread_id);
  });
}

Result<std::optional<ThreadMembers>> PgStore::thread_members(const std::string& thread_id) {
  return with_reader([&](PgConn& c) -> std::optional<ThreadMembers> {
    PgReadTxn txn(c);
    ThreadMembers members;
    auto t = c.exec("SELECT type, member_version FROM threads WHERE id = $1", {thread_id});
    log_read_error(c, t, "thread_members");
    if (!t.ok() || t.rows() == 0) return std::nullopt;
    members.type = thread_type_from_stored(t.text(0, 0));
    members.version = t.i64(0, 1);
    auto r = c.exec(
        "SELECT user_id, is_admin, joined_at FROM participants WHERE thread_id = $1 "
        "ORDER BY joined_at, user_id COLLATE \"C\"",
        {thread_id});
    log_read_error(c, r, "thread_members");
    for (int i = 0; i < r.rows(); ++i) {
      members.user_ids.push_back(r.text(i, 0));
      if (r.i64(i, 1) != 0) members.admin_ids.push_back(r.text(i, 0));
      members.joined_at.push_back(r.i64(i, 2));
    }
    return members;
  });
}

Result<std::vector<ThreadSummary>> PgStore::threads_for_user(const std::string& user_id) {
  return with_reader([&](PgConn& c) {
    PgReadTxn txn(c);
    std::vector<ThreadSummary> out;
    auto r = c.exec(
        "SELECT " PG_THREAD_COLS ", " PG_UNREAD_OF_P " "
        "FROM participants p JOIN threads t ON t.id = p.thread_id WHERE p.user_id = $1 "
        "ORDER BY t.last_activity DESC, t.id COLLATE \"C\"",
        {user_id});
    log_read_error(c, r, "threads_for_user");
    for (int i = 0; i < r.rows(); ++i) out.push_back(ThreadSummary{read_thread(r, i), r.i64(i, 7), std::nullopt});
    // Three more statements, whatever the number of threads (not three round
    // trips per thread): a teacher in 200 classes reconnecting is one read.
    std::unordered_map<std::string, ThreadSummary*> by_id;
    for (auto& s : out) by_id.emplace(s.thread.id, &s);
    auto of = [&](const PgResult& res, int i) {
      auto it = by_id.find(res.text(i, 0));
      return it == by_id.end() ? nullptr : it->second;
    };
    auto p = c.exec("SELECT p.thread_id, " PG_PARTICIPANT_COLS " " PG_PARTICIPANTS_FROM
                    " JOIN participants me ON me.thread_id = p.thread_id WHERE me.user_id = $1 "
                    "ORDER BY p.joined_at, p.user_id COLLATE \"C\"",
                    {user_id});
    log_read_error(c, p, "threads_for_user participants");
    for (int i = 0; i < p.rows(); ++i)
      if (auto* s = of(p, i)) s->thread.participants.push_back(read_participant(p, i, 1));
    auto f = c.exec(
        "SELECT f.thread_id, f.user_id, f.last_read_seq, f.last_delivered_seq, f.joined_at "
        "FROM participants me JOIN former_marks f ON f.thread_id = me.thread_id WHERE me.user_id = $1",
        {user_id});
    log_read_error(c, f, "threads_for_user former_marks");
    for (int i = 0; i < f.rows(); ++i)
      if (auto* s = of(f, i))
        s->thread.former_marks.push_back(FormerMarks{f.text(i, 1), f.i64(i, 2), f.i64(i, 3), f.i64(i, 4)});
    auto last = c.exec(PG_MESSAGE_SELECT
                       "JOIN threads t ON t.id = m.thread_id AND m.seq = t.last_seq "
                       "JOIN participants me ON me.thread_id = t.id WHERE me.user_id = $1",
                       {user_id});
    for (Message& m : read_messages(c, last, "threads_for_user last_message"))
      if (auto it = by_id.find(m.thread_id); it != by_id.end()) it->second->last_message = std::move(m);
    return out;
  });
}

void PgStore::add_participants(Addition addition, AdditionCallback done) {
  writer_->submit<Added>([this, a = std::move(addition)] { return write_participants(a); }, std::move(done));
}

Result<Added> PgStore::write_participants(const Addition& a) {
  const std::string& thread_id = a.thread_id;
  const std::vector<std::string>& user_ids = a.user_ids;
  PgConn& c = *writer_conn_;
  auto t = c.exec("SELECT type FROM threads WHERE id = $1", {thread_id});
  if (!t.ok()) return pg_error(c, t, "add_participant");
  if (t.rows() == 0) return not_found("thread_not_found", "thread does not exist");
  // A direct thread is keyed by its pair; a third member would break that.
  if (thread_type_from_stored(t.text(0, 0)) == ThreadType::kDirect)
    return bad_input("direct_thread", "participants of a direct thread cannot change");
  if (auto admin = require_admin(thread_id, a.actor_id); !admin) return admin.error();
  auto known = all_users_exist(c, user_ids);
  if (!known) return known.error();
  if (!*known) return not_found("user_not_found", "participant does not exist");
  // A new member has read and received what was said before
  // (Store::add_participants); last_seq is this transaction's (the commit
  // clock is held). One statement for the whole list, as in write_thread.
  auto r = c.exec(
      "INSERT INTO participants (thread_id, user_id, is_admin, joined_at, last_read_seq, last_delivered_seq) "
      "SELECT $1, x.u, 0, $3, t.last_seq, t.last_seq FROM unnest($2::text[]) AS x(u) JOIN threads t ON t.id = $1 "
      "ON CONFLICT (thread_id, user_id) DO NOTHING RETURNING user_id",
      {thread_id, PgParam::array(user_ids), join_time()});
  if (!r.ok()) return pg_error(c, r, "add_participant");
  std::set<std::string> inserted;
  for (int i = 0; i < r.rows(); ++i) inserted.insert(r.text(i, 0));
  Added out;
  for (const auto& uid : user_ids)  // in the order asked
    if (inserted.erase(uid) > 0) out.user_ids.push_back(uid);
  if (a.max_members > 0 && !out.user_ids.empty()) {
    auto n = c.exec("SELECT COUNT(*) FROM participants WHERE thread_id = $1", {thread_id});
    if (!n.ok()) return pg_error(c, n, "add_participant");
    if (static_cast<size_t>(n.i64(0, 0)) > a.max_members) return group_too_large(a.max_members);
  }
  if (!out.user_ids.empty())
    if (auto bumped = bump_member_version(thread_id); !bumped) return bumped.error();
  // After every addition, so each notice reaches all those added.
  for (size_t i = 0; a.notice && i < out.user_ids.size(); ++i) {
    auto stored = write_message(a.notice(out.user_ids[i]));
    if (!stored) return stored.error();
    out.notices.push_back(std::move(stored->message));
  }
  return out;
}

// In the transaction of every change of a thread's members (ThreadMembers::version).
Status PgStore::bump_member_version(const std::string& thread_id) {
  PgConn& c = *writer_conn_;
  auto r = c.exec("UPDATE threads SET member_version = member_version + 1 WHERE id = $1", {thread_id});
  if (!r.ok()) return pg_error(c, r, "member_version");
  return Ok{};
}

Status PgStore::require_admin(const std::string& thread_id, const std::string& actor_id) {
  if (actor_id.empty()) return Ok{};
  PgConn& c = *writer_conn_;
  auto r = c.exec("SELECT is_admin FROM participants WHERE thread_id = $1 AND user_id = $2", {thread_id, actor_id});
  if (!r.ok()) return pg_error(c, r, "require_admin");
  if (r.rows() == 1 && r.i64(0, 0) != 0) return Ok{};
  return not_admin();
}

void PgStore::remove_participant(Removal removal, RemovalCallback done) {
  writer_->submit<Removed>([this, r = std::move(removal)] { return write_removal(r); }, std::move(done));
}

// Under the commit clock, as every write: the successor chosen here is the
// one the removal leaves, whichever node changes the thread next.
Result<Removed> PgStore::write_removal(const Removal& r) {
  PgConn& c = *writer_conn_;
  if (r.actor_id != r.user_id)
    if (auto admin = require_admin(r.thread_id, r.actor_id); !admin) return admin.error();
  auto successor = successor_admin(r.thread_id, r.user_id);
  if (!successor) return successor.error();
  Removed out;
  // Kept for the status of what they read (schema v6), as they are before
  // the notices below: a message stored for the leaver reads nothing for them.
  auto keep = c.exec(
      "INSERT INTO former_marks (thread_id, user_id, last_read_seq, last_delivered_seq, joined_at) "
      "SELECT thread_id, user_id, last_read_seq, last_delivered_seq, joined_at FROM participants "
      "WHERE thread_id = $1 AND user_id = $2 "
      "ON CONFLICT (thread_id, user_id, joined_at) DO UPDATE SET "
      "last_read_seq = GREATEST(former_marks.last_read_seq, EXCLUDED.last_read_seq), "
      "last_delivered_seq = GREATEST(former_marks.last_delivered_seq, EXCLUDED.last_delivered_seq)",
      {r.thread_id, r.user_id});
  if (!keep.ok()) return pg_error(c, keep, "remove_participant");
  if (r.notice) {
    auto stored = write_message(*r.notice);
    if (!stored) return stored.error();
    out.notice = std::move(stored->message);
  }
  if (*successor) {
    auto ref = sender_ref(**successor);
    if (!ref) return not_found("user_not_found", "participant does not exist");
    if (auto notice = promotion_notice(r, ref->username)) {
      auto stored = write_message(*notice);
      if (!stored) return stored.error();
      out.promotion = std::move(stored->message);
    }
  }
  if (int64_t last = last_notice_seq(out); last > 0) {
    auto ended = c.exec(
        "UPDATE former_marks f SET left_seq = $3 FROM participants p WHERE p.thread_id = $1 AND p.user_id = $2 "
        "AND f.thread_id = p.thread_id AND f.user_id = p.user_id AND f.joined_at = p.joined_at",
        {r.thread_id, r.user_id, last});
    if (!ended.ok()) return pg_error(c, ended, "remove_participant");
  }
  auto del = c.exec("DELETE FROM participants WHERE thread_id = $1 AND user_id = $2", {r.thread_id, r.user_id});
  if (!del.ok()) return pg_error(c, del, "remove_participant");
  if (auto bumped = bump_member_version(r.thread_id); !bumped) return bumped.error();
  if (!*successor) return out;
  auto promote = c.exec("UPDATE participants SET is_admin = 1 WHERE thread_id = $1 AND user_id = $2",
                        {r.thread_id, **successor});
  if (!promote.ok()) return pg_error(c, promote, "promote_admin");
  out.new_admin_id = **successor;
  return out;
}

// Who becomes admin when user_id leaves a group: nullopt when an admin
// remains, or nobody does. Errors: not_found "not_a_participant".
Result<std::optional<std::string>> PgStore::successor_admin(const std::string& thread_id, const std::string& user_id) {
  PgConn& c = *writer_conn_;
  auto st = c.exec(
      "SELECT t.type, (SELECT COUNT(*) FROM participants o WHERE o.thread_id = t.id AND o.user_id <> p.user_id "
      "AND o.is_admin <> 0) FROM participants p JOIN threads t ON t.id = p.thread_id "
      "WHERE p.thread_id = $1 AND p.user_id = $2",
      {thread_id, user_id});
  if (!st.ok()) return pg_error(c, st, "remove_participant");
  if (st.rows() == 0) return not_found("not_a_participant", "user is not in this thread");
  if (thread_type_from_stored(st.text(0, 0)) != ThreadType::kGroup || st.i64(0, 1) != 0)
    return std::optional<std::string>();
  auto next = c.exec(
      "SELECT user_id FROM participants WHERE thread_id = $1 AND user_id <> $2 "
      "ORDER BY joined_at, user_id COLLATE \"C\" LIMIT 1",
      {thread_id, user_id});
  if (!next.ok()) return pg_error(c, next, "remove_participant");
  if (next.rows() == 0) return std::optional<std::string>();
  return std::optional<std::string>(next.text(0, 0));
}

// ---------------------------------------------------------------- messages

void PgStore::append(AppendRequest request, AppendCallback done) {
  auto pending = std::make_shared<PendingAppend>();
  pending->request = std::move(request);
  GroupCommitWriter::Op op;
  // write_message writes in one statement, all or nothing: no savepoint
  // (two round trips fewer per message under the commit clock).
  op.needs_current_state = false;
  op.needs_savepoint = false;
  op.apply = [this, p = pending.get()] {  // op.payload keeps *p alive
    try {
      p->result.emplace(write_message(p->request));
    } catch (const std::exception& e) {
      spdlog::error("event=store_op_exception error=\"{}\"", e.what());
      p->result.emplace(internal_error("storage error"));
    }
    return p->result->ok();
  };
  op.finish = [p = pending.get(), done = std::move(done)](const Error* batch_error) {
    if (!done) return;
    if (batch_error) return done(*batch_error);
    done(p->result ? std::move(*p->result) : Result<AppendResult>(internal_error("storage error")));
  };
  op.payload = std::move(pending);
  writer_->enqueue(std::move(op));
}

// Why write_message stored nothing: the send was stored before (the original,
// as a duplicate), else why it was refused.
Result<AppendResult> PgStore::not_appended(PgConn& c, const AppendRequest& r,
                                           const std::optional<std::string>& client_id) {
  if (client_id) {
    auto dup = c.exec(PG_MESSAGE_SELECT "WHERE m.thread_id = $1 AND m.sender_id = $2 AND m.client_msg_id = $3",
                      {r.thread_id, r.sender_id, PgParam::bytes(client_id)});
    if (!dup.ok()) return pg_error(c, dup, "find_client_msg");
    if (dup.rows() > 0) return AppendResult{read_message(dup, 0), true};
  }
  return refused_append(c, r);
}

// Why write_message's thread update matched no row, in the order a caller
// can act on: no such thread, no such user, not a participant.
Error PgStore::refused_append(PgConn& c, const AppendRequest& r) {
  auto t = c.exec("SELECT 1 FROM threads WHERE id = $1", {r.thread_id});
  if (!t.ok()) return pg_error(c, t, "find_thread");
  if (t.rows() == 0) return not_found("thread_not_found", "thread does not exist");
  if (!sender_ref(r.sender_id)) return not_found("user_not_found", "sender does not exist");
  return thread_not_found_or_forbidden();
}

namespace {

// One statement, one round trip, while this writer holds the commit clock
// every node waits for: the thread's next seq, the row, and the sender's read
// mark. It writes all of it or nothing: when the client_msg_id is taken (a
// retry: under the commit clock no other node can insert it meanwhile; the
// unique index stays as the last word), or when the sender is no longer a
// participant (the caller checked its member cache, but another node may have
// removed them since; under the commit clock, that removal is committed and
// seen here). So an append needs no savepoint (PgStore::append). Its
// parameters: append_params.
#define PG_APPEND_CTES                                                                                           \
  "WITH t AS (UPDATE threads SET last_seq = last_seq + 1, last_activity = $2::bigint WHERE id = $1::text "      \
  "AND EXISTS (SELECT 1 FROM participants WHERE thread_id = $1::text AND user_id = $3::text) "                  \
  "AND NOT EXISTS (SELECT 1 FROM messages WHERE thread_id = $1::text AND sender_id = $3::text "                 \
  "AND client_msg_id = $7::bytea) "                                                                              \
  "RETURNING last_seq, member_version), "                                                                        \
  "m AS (INSERT INTO messages (id, thread_id, seq, sender_id, content, message_type, client_msg_id, created_at) " \
  "SELECT $4::text, $1::text, t.last_seq, $3::text, $5::bytea, $6::text, $7::bytea, $2::bigint FROM t "         \
  "RETURNING seq), "                                                                                             \
  "r AS (UPDATE participants p SET last_read_seq = m.seq FROM m WHERE p.thread_id = $1::text "                  \
  "AND p.user_id = $3::text) "
constexpr const char* kAppendSql = PG_APPEND_CTES "SELECT m.seq, t.member_version FROM m, t";
// The same, also recording that the message owes its push when $8 is true
// (AppendRequest::owes_push): only with a webhook, so without one an append
// runs the statement it always did.
constexpr const char* kAppendOwingSql =
    PG_APPEND_CTES
    ", o AS (INSERT INTO owed_pushes (message_id, created_at) SELECT $4::text, $2::bigint FROM m WHERE $8::boolean) "
    "SELECT m.seq, t.member_version FROM m, t";
#undef PG_APPEND_CTES

// The message an append would store, all but its seq. created_at is
// strictly increasing across the database: the floor came from commit_clock.
Message new_message(const AppendRequest& r, Micros floor) {
  Message m;
  m.thread_id = r.thread_id;
  m.sender_id = r.sender_id;
  m.content = r.content;
  m.message_type = r.message_type;
  m.client_msg_id = r.client_msg_id;
  m.created_at = std::max(now_micros(), floor + 1);
  m.id = new_uuid_v7(m.created_at / 1000);
  return m;
}

// NULL for "no client_msg_id", so "none" never collides.
std::optional<std::string> client_id_of(const std::string& client_msg_id) {
  if (client_msg_id.empty()) return std::nullopt;
  return client_msg_id;
}

// kAppendSql's parameters, or with `owing` kAppendOwingSql's.
std::vector<PgParam> append_params(const Message& m, bool owing, bool owes_push) {
  std::vector<PgParam> params{m.thread_id, m.created_at,   m.sender_id, m.id, PgParam::bytes(m.content), m.message_type,
                              PgParam::bytes(client_id_of(m.client_msg_id))};
  if (owing) params.push_back(owes_push);
  return params;
}

}  // namespace

Result<AppendResult> PgStore::write_message(const AppendRequest& r) {
  PgConn& c = *writer_conn_;
  auto sender = sender_ref(r.sender_id);
  if (!sender) return not_appended(c, r, client_id_of(r.client_msg_id));
  Message m = new_message(r, last_created_at_);
  m.sender = *sender;
  auto seq = c.exec(r.owes_push ? kAppendOwingSql : kAppendSql, append_params(m, r.owes_push, r.owes_push));
  if (!seq.ok()) return pg_error(c, seq, "append");
  if (seq.rows() == 0) return not_appended(c, r, client_id_of(r.client_msg_id));
  m.seq = seq.i64(0, 0);
  last_created_at_ = m.created_at;  // only now: a failed op leaves the floor as it was
  return AppendResult{std::move(m), false, seq.i64(0, 1)};
}

// A run of appends, consecutive in the batch, sent together (PgConn's
// pipeline): a round trip per PgConn::kPipelineDepth messages, not one each.
// Each gets the result write_message would give it. False when a statement
// failed: the transaction is aborted, and run_batch runs the batch again with
// a savepoint per op.
bool PgStore::append_run(const std::vector<PendingAppend*>& run) {
  PgConn& c = *writer_conn_;
  std::vector<PendingAppend*> sent, not_sent;
  std::vector<Message> messages;
  std::vector<std::vector<PgParam>> params;
  Micros floor = last_created_at_;
  // One statement for the run: the owing one if any append of it owes a push.
  const bool owing = std::any_of(run.begin(), run.end(), [](const PendingAppend* p) { return p->request.owes_push; });
  for (PendingAppend* p : run) {
    auto sender = sender_ref(p->request.sender_id);
    if (!c.healthy() || c.transaction_failed()) return false;
    if (!sender) {
      not_sent.push_back(p);
      continue;
    }
    Message m = new_message(p->request, floor);
    floor = m.created_at;
    m.sender = *sender;
    params.push_back(append_params(m, owing, p->request.owes_push));
    messages.push_back(std::move(m));
    sent.push_back(p);
  }
  auto results = c.exec_pipelined(owing ? kAppendOwingSql : kAppendSql, params);
  for (const auto& r : results) {
    if (r.ok()) continue;
    pg_error(c, r, "append");  // logs it
    return false;
  }
  for (size_t i = 0; i < sent.size(); ++i) {
    if (results[i].rows() == 0) {
      not_sent.push_back(sent[i]);
      continue;
    }
    messages[i].seq = results[i].i64(0, 0);
    last_created_at_ = messages[i].created_at;
    sent[i]->result.emplace(AppendResult{std::move(messages[i]), false, results[i].i64(0, 1)});
  }
  for (PendingAppend* p : not_sent)
    p->result.emplace(not_appended(c, p->request, client_id_of(p->request.client_msg_id)));
  return c.healthy() && !c.transaction_failed();
}

Result<std::optional<Message>> PgStore::message(const std::string& message_id) {
  return with_reader([&](PgConn& c) -> std::optional<Message> {
    auto found = read_messages(c, c.exec(PG_MESSAGE_SELECT "WHERE m.id = $1", {message_id}), "message");
    if (found.empty()) return std::nullopt;
    return std::move(found.front());
  });
}

Result<std::vector<Message>> PgStore::messages_after(const std::string& thread_id, int64_t after_seq, int limit) {
  return with_reader([&](PgConn& c) {
    return read_messages(
        c,
        c.exec(PG_MESSAGE_SELECT "WHERE m.thread_id = $1 AND m.seq > $2 ORDER BY m.seq LIMIT $3",
               {thread_id, after_seq, clamp_limit(limit)}),
        "messages_after");
  });
}

Result<MemberPage> PgStore::member_page(const std::string& user_id, const PageQuery& q) {
  auto page = with_reader([&](PgConn& c) -> std::optional<MemberPage> {
    PgReadTxn txn(c);  // REPEATABLE READ: both statements see one snapshot
    MemberPage out;
    // The current membership and, with former_too, the first of the
    // memberships that ended past after_seq (seqs only grow: it comes before
    // the current one, if the user is back), in one round trip.
    const bool former = q.former_too && q.after_seq >= 0;
    auto p = c.exec(
        "SELECT (SELECT joined_at FROM participants WHERE thread_id = $1 AND user_id = $2), f.joined_at, f.left_seq "
        "FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT joined_at, left_seq FROM former_marks "
        "WHERE $4 AND thread_id = $1 AND user_id = $2 AND left_seq > $3 ORDER BY left_seq LIMIT 1) f ON true",
        {q.thread_id, user_id, q.after_seq, former});
    log_read_error(c, p, "member_page");
    if (!p.ok() || p.rows() != 1) return std::nullopt;
    const bool member = !p.is_null(0, 0);  // a participant now
    if (!p.is_null(0, 2)) {
      out.joined_at = p.i64(0, 1);
      out.ended_at_seq = p.i64(0, 2);
    } else {
      if (!member) return std::nullopt;
      out.joined_at = p.i64(0, 0);
    }
    if (q.after_seq >= 0) {
      // Only what was said during the membership that ended, for someone no
      // longer a participant (see SqliteStore).
      const bool ended = out.ended_at_seq > 0;
      out.messages = read_messages(
          c,
          c.exec(PG_MESSAGE_SELECT
                 "WHERE m.thread_id = $1 AND m.seq > $2 AND m.seq <= $3 AND m.created_at >= $4 ORDER BY m.seq LIMIT $5",
                 {q.thread_id, q.after_seq, ended ? out.ended_at_seq : kAllSeqs,
                  ended && !member ? out.joined_at : Micros{0}, clamp_limit(q.limit)}),
          "member_page");
    } else {
      out.messages = read_messages(
          c,
          c.exec(PG_MESSAGE_SELECT "WHERE m.thread_id = $1 AND m.seq < $2 ORDER BY m.seq DESC LIMIT $3",
                 {q.thread_id, q.before_seq, clamp_limit(q.limit)}),
          "member_page");
      std::reverse(out.messages.begin(), out.messages.end());
    }
    return out;
  });
  if (!page) return page.error();
  if (!*page) return not_found("not_a_participant", "user is not in this thread");
  return std::move(**page);
}

Result<int64_t> PgStore::last_seq_created_before(const std::string& thread_id, int64_t below_seq,
                                                 Micros created_before, int64_t lowest_seq) {
  return with_reader([&](PgConn& c) -> int64_t {
    auto r = c.exec("SELECT seq FROM messages WHERE thread_id = $1 AND seq < $2 AND seq > $3 AND created_at < $4 "
                    "ORDER BY seq DESC LIMIT 1",
                    {thread_id, below_seq, lowest_seq, created_before});
    log_read_error(c, r, "last_seq_created_before");
    return r.ok() && r.rows() == 1 ? r.i64(0, 0) : lowest_seq;
  });
}

Result<std::vector<Message>> PgStore::messages_before(const std::string& thread_id, int64_t before_seq, int limit) {
  return with_reader([&](PgConn& c) {
    auto out = read_messages(
        c,
        c.exec(PG_MESSAGE_SELECT "WHERE m.thread_id = $1 AND m.seq < $2 ORDER BY m.seq DESC LIMIT $3",
               {thread_id, before_seq, clamp_limit(limit)}),
        "messages_before");
    std::reverse(out.begin(), out.end());
    return out;
  });
}

// One snapshot for both queries. Writers commit one at a time under the
// commit clock and created_at follows commit order, so a snapshot holds every
// message up to some created_at and none after: a cursor taken from it never
// skips a later commit, whichever node made it.
Result<OfflinePage> PgStore::messages_since(const std::string& user_id, Micros since, int limit) {
  return with_reader(
      [&](PgConn& c) {
        PgReadTxn txn(c);
        OfflinePage page;
        // A time past the newest commit (a client's clock ahead) would come
        // back as the cursor and skip what commits until then: the commit
        // clock stands in for it.
        auto clock = c.exec("SELECT last_created_at FROM commit_clock WHERE id = 1", {});
        log_read_error(c, clock, "messages_since");
        if (!clock.ok()) return page;
        if (clock.rows() == 1) since = std::min(since, clock.i64(0, 0));
        auto r = c.exec(PG_MESSAGE_SELECT
                        "JOIN participants p ON p.thread_id = m.thread_id AND p.user_id = $1 "
                        // Both on the commit clock (join_time): nothing from before the join,
                        // even a member's earlier time in the thread.
                        "WHERE m.created_at >= p.joined_at AND m.seq > COALESCE((SELECT b.seq FROM messages b WHERE b.thread_id = p.thread_id "
                        "AND b.created_at <= $2 ORDER BY b.seq DESC LIMIT 1), 0) "
                        "AND m.created_at > $2 AND m.sender_id <> $1 ORDER BY m.created_at LIMIT $3",
                        {user_id, since, clamp_limit(limit) + 1});
        auto current = read_messages(c, r, "messages_since");
        if (!r.ok()) return page;
        // The memberships that ended, each up to its removal's last notice:
        // see SqliteStore::messages_since.
        auto f = c.exec(PG_MESSAGE_SELECT
                        "JOIN former_marks f ON f.thread_id = m.thread_id AND f.user_id = $1 AND f.left_seq > 0 "
                        "WHERE m.created_at >= f.joined_at AND m.seq <= f.left_seq "
                        "AND m.seq > COALESCE((SELECT b.seq FROM messages b WHERE b.thread_id = f.thread_id "
                        "AND b.seq <= f.left_seq AND b.created_at <= $2 ORDER BY b.seq DESC LIMIT 1), 0) "
                        "AND m.created_at > $2 AND m.sender_id <> $1 ORDER BY m.created_at LIMIT $3",
                        {user_id, since, clamp_limit(limit) + 1});
        auto ended = read_messages(c, f, "messages_since former");
        if (!f.ok()) return page;
        page = offline_page(std::move(current), std::move(ended), limit);
        if (page.has_more) return page;
        // Nothing more from others: move past the user's own newer messages too.
        auto newest = c.exec(
            "SELECT GREATEST((SELECT MAX((SELECT m.created_at FROM messages m WHERE m.thread_id = p.thread_id "
            "ORDER BY m.seq DESC LIMIT 1)) FROM participants p WHERE p.user_id = $1), "
            "(SELECT MAX(m.created_at) FROM former_marks f JOIN messages m ON m.thread_id = f.thread_id "
            "AND m.seq = f.left_seq WHERE f.user_id = $1 AND f.left_seq > 0))",
            {user_id});
        log_read_error(c, newest, "messages_since");
        // The newest message of the caller's threads (the epoch for none),
        // whatever time was asked: see SqliteStore::messages_since.
        page.cursor = page.messages.empty() ? since : page.messages.back().created_at;  // if the read fails
        if (newest.ok() && newest.rows() == 1) page.cursor = newest.is_null(0, 0) ? 0 : newest.i64(0, 0);
        return page;
      });
}

Result<std::vector<std::pair<std::string, int64_t>>> PgStore::left_threads_owed(const std::string& user_id) {
  return with_reader([&](PgConn& c) {
    // See SqliteStore::left_threads_owed.
    auto r = c.exec(
        "SELECT f.thread_id, MIN(GREATEST(f.last_delivered_seq, f.last_read_seq)) FROM former_marks f "
        "JOIN messages m ON m.thread_id = f.thread_id AND m.seq = f.left_seq JOIN users u ON u.id = f.user_id "
        "WHERE f.user_id = $1 AND f.left_seq > GREATEST(f.last_delivered_seq, f.last_read_seq) "
        "AND m.created_at > u.last_seen "
        "AND EXISTS (SELECT 1 FROM messages o WHERE o.thread_id = f.thread_id "
        "AND o.seq > GREATEST(f.last_delivered_seq, f.last_read_seq) AND o.seq <= f.left_seq "
        "AND o.created_at >= f.joined_at AND o.sender_id <> $1) "
        "AND NOT EXISTS (SELECT 1 FROM participants p WHERE p.thread_id = f.thread_id AND p.user_id = $1) "
        "GROUP BY f.thread_id ORDER BY f.thread_id COLLATE \"C\"",
        {user_id});
    log_read_error(c, r, "left_threads_owed");
    std::vector<std::pair<std::string, int64_t>> out;
    for (int i = 0; i < r.rows(); ++i) out.emplace_back(r.text(i, 0), r.i64(i, 1));
    return out;
  });
}

// ---------------------------------------------------------------- read state

Result<std::vector<UnreadCount>> PgStore::unread_counts(const std::string& user_id) {
  return with_reader([&](PgConn& c) {
    auto r = c.exec(
        "SELECT p.thread_id, " PG_UNREAD_OF_P " "
        "FROM participants p WHERE p.user_id = $1 ORDER BY p.thread_id COLLATE \"C\"",
        {user_id});
    log_read_error(c, r, "unread_counts");
    std::vector<UnreadCount> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(UnreadCount{r.text(i, 0), r.i64(i, 1)});
    return out;
  });
}

Result<std::vector<ParticipantUnread>> PgStore::thread_unread_counts(const std::string& thread_id) {
  return with_reader([&](PgConn& c) {
    auto r = c.exec(
        "SELECT p.user_id, " PG_UNREAD_OF_P " "
        "FROM participants p WHERE p.thread_id = $1 ORDER BY p.user_id COLLATE \"C\"",
        {thread_id});
    log_read_error(c, r, "thread_unread_counts");
    std::vector<ParticipantUnread> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(ParticipantUnread{r.text(i, 0), r.i64(i, 1)});
    return out;
  });
}

Result<ReadMark> PgStore::mark_read(const std::string& thread_id, const std::string& user_id, int64_t up_to_seq) {
  return writer_->submit_and_wait<ReadMark>(
      [this, thread_id, user_id, up_to_seq] { return write_read_mark(thread_id, user_id, up_to_seq); });
}

Result<ReadMark> PgStore::write_read_mark(const std::string& thread_id, const std::string& user_id, int64_t up_to_seq) {
  PgConn& c = *writer_conn_;
  auto r = c.exec(
      "SELECT p.last_read_seq, t.last_seq, t.member_version FROM participants p JOIN threads t ON t.id = p.thread_id "
      "WHERE p.thread_id = $1 AND p.user_id = $2",
      {thread_id, user_id});
  if (!r.ok()) return pg_error(c, r, "mark_read");
  if (r.rows() == 0) return not_found("not_a_participant", "user is not in this thread");
  const int64_t current = r.i64(0, 0);
  const int64_t last_seq = r.i64(0, 1);
  int64_t target = std::min(up_to_seq, last_seq);
  if (target <= current) return ReadMark{current, false};  // never moves back
  auto u = c.exec("UPDATE participants SET last_read_seq = $1 WHERE thread_id = $2 AND user_id = $3",
                  {target, thread_id, user_id});
  if (!u.ok()) return pg_error(c, u, "mark_read");
  return ReadMark{target, true, r.i64(0, 2)};
}

Result<int64_t> PgStore::mark_delivered(const std::string& thread_id, const std::string& user_id, int64_t seq) {
  return writer_->submit_and_wait<int64_t>([this, thread_id, user_id, seq]() -> Result<int64_t> {
    PgConn& c = *writer_conn_;
    auto r = c.exec(
        "UPDATE participants SET last_delivered_seq = GREATEST(last_delivered_seq, $1) "
        "WHERE thread_id = $2 AND user_id = $3 RETURNING last_delivered_seq",
        {seq, thread_id, user_id});
    if (!r.ok()) return pg_error(c, r, "mark_delivered");
    if (r.rows() == 0) return not_found("not_a_participant", "user is not in this thread");
    return r.i64(0, 0);
  });
}

Result<bool> PgStore::mark_former_delivered(const std::string& thread_id, const std::string& user_id, int64_t seq,
                                            Micros created_at) {
  return writer_->submit_and_wait<bool>([this, thread_id, user_id, seq, created_at]() -> Result<bool> {
    PgConn& c = *writer_conn_;
    // See SqliteStore::mark_former_delivered.
    auto r = c.exec(
        "UPDATE former_marks SET last_delivered_seq = GREATEST(last_delivered_seq, $1) "
        "WHERE thread_id = $2 AND user_id = $3 AND left_seq >= $1 AND joined_at <= $4 RETURNING 1",
        {seq, thread_id, user_id, created_at});
    if (!r.ok()) return pg_error(c, r, "mark_former_delivered");
    return r.rows() > 0;
  });
}

Result<std::vector<std::string>> PgStore::contacts(const std::string& user_id) {
  return with_reader([&](PgConn& c) {
    auto r = c.exec(
        "SELECT DISTINCT o.user_id FROM participants p JOIN participants o ON o.thread_id = p.thread_id "
        "WHERE p.user_id = $1 AND o.user_id <> p.user_id",
        {user_id});
    log_read_error(c, r, "contacts");
    std::vector<std::string> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(r.text(i, 0));
    return out;
  });
}

Result<std::vector<std::string>> PgStore::openers(const std::string& user_id) {
  return with_reader([&](PgConn& c) {
    auto r = c.exec(
        "SELECT DISTINCT t.created_by FROM participants p JOIN threads t ON t.id = p.thread_id "
        "JOIN participants o ON o.thread_id = t.id AND o.user_id = t.created_by "
        "WHERE p.user_id = $1 AND t.created_by <> p.user_id",
        {user_id});
    log_read_error(c, r, "openers");
    std::vector<std::string> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(r.text(i, 0));
    return out;
  });
}

// ---------------------------------------------------------------- moderation

namespace {

Result<AccountState> account_row(const PgConn& c, const PgResult& r, const std::string& user_id, std::string_view op) {
  if (!r.ok()) return pg_error(c, r, op);
  if (r.rows() == 0) return not_found("user_not_found", "no such user");
  return AccountState{user_id, r.i64(0, 0) != 0, r.i64(0, 1), r.i64(0, 2)};
}

Result<Message> reread_message(PgConn& c, const std::string& id) {
  auto found = read_messages(c, c.exec(PG_MESSAGE_SELECT "WHERE m.id = $1", {id}), "reread_message");
  if (found.empty()) return internal_error("storage error");
  return std::move(found.front());
}

}  // namespace

// Writers hold the commit clock, so MAX + 1 is the next version in commit order
// across every node.
Result<AccountState> PgStore::set_user_disabled(const std::string& user_id, bool disabled) {
  return writer_->submit_and_wait<AccountState>([this, user_id, disabled]() -> Result<AccountState> {
    PgConn& c = *writer_conn_;
    auto r = c.exec(
        "UPDATE users SET disabled = $1, state_version = (SELECT COALESCE(MAX(state_version), 0) + 1 FROM users) "
        "WHERE id = $2 RETURNING disabled, tokens_valid_after, state_version",
        {disabled, user_id});
    auto state = account_row(c, r, user_id, "set_user_disabled");
    if (!state || !disabled) return state;
    // Its queued pushes go with it, in the same commit: an `enable` before a
    // retry was due would otherwise send them after all.
    auto drop = c.exec("DELETE FROM webhook_outbox WHERE recipient_id = $1 AND dead = 0", {user_id});
    if (!drop.ok()) return pg_error(c, drop, "set_user_disabled");
    return state;
  });
}

Result<AccountState> PgStore::revoke_tokens(const std::string& user_id, int64_t valid_after) {
  return writer_->submit_and_wait<AccountState>([this, user_id, valid_after] {
    PgConn& c = *writer_conn_;
    auto r = c.exec(
        "UPDATE users SET tokens_valid_after = GREATEST(tokens_valid_after + 1, $1), "
        "state_version = (SELECT COALESCE(MAX(state_version), 0) + 1 FROM users) "
        "WHERE id = $2 RETURNING disabled, tokens_valid_after, state_version",
        {valid_after, user_id});
    return account_row(c, r, user_id, "revoke_tokens");
  });
}

Result<std::vector<AccountState>> PgStore::account_changes(int64_t after_version) {
  return with_reader([&](PgConn& c) {
    auto r = c.exec(
        "SELECT id, disabled, tokens_valid_after, state_version FROM users WHERE state_version > $1 "
        "ORDER BY state_version",
        {after_version});
    log_read_error(c, r, "account_changes");
    std::vector<AccountState> out;
    for (int i = 0; i < r.rows(); ++i)
      out.push_back(AccountState{r.text(i, 0), r.i64(i, 1) != 0, r.i64(i, 2), r.i64(i, 3)});
    return out;
  });
}

// Whether actor_id may change the message as this commits (Store::delete_message):
// a participant of its thread, and its sender, or (admin_too) an admin.
Status PgStore::may_change(const std::string& message_id, const std::string& actor_id, bool admin_too) {
  if (actor_id.empty()) return Ok{};
  PgConn& c = *writer_conn_;
  auto r = c.exec(
      "SELECT (m.sender_id = $1)::int, p.is_admin, p.user_id IS NOT NULL FROM messages m "
      "LEFT JOIN participants p ON p.thread_id = m.thread_id AND p.user_id = $1 WHERE m.id = $2",
      {actor_id, message_id});
  if (!r.ok()) return pg_error(c, r, "may_change");
  if (r.rows() == 0) return not_found("message_not_found", "no such message");
  const bool member = r.text(0, 2) == "t";
  if (member && (r.i64(0, 0) != 0 || (admin_too && r.i64(0, 1) != 0))) return Ok{};
  return not_allowed();
}

Result<Message> PgStore::delete_message(const std::string& message_id, const std::string& actor_id) {
  return writer_->submit_and_wait<Message>([this, message_id, actor_id]() -> Result<Message> {
    PgConn& c = *writer_conn_;
    if (auto may = may_change(message_id, actor_id, /*admin_too=*/true); !may) return may.error();
    auto r = c.exec("UPDATE messages SET content = ''::bytea, change_no = CASE WHEN deleted_at IS NULL THEN "
                    PG_NEXT_CHANGE_NO " ELSE change_no END, deleted_at = COALESCE(deleted_at, $1) WHERE id = $2",
                    {now_micros(), message_id});
    if (!r.ok()) return pg_error(c, r, "delete_message");
    if (r.affected() == 0) return not_found("message_not_found", "no such message");
    // No push for a message that is gone, and no copy of its text left behind.
    auto outbox = c.exec("DELETE FROM webhook_outbox WHERE message_id = $1", {message_id});
    if (!outbox.ok()) return pg_error(c, outbox, "delete_message");
    auto owed = c.exec("DELETE FROM owed_pushes WHERE message_id = $1", {message_id});
    if (!owed.ok()) return pg_error(c, owed, "delete_message");
    return reread_message(c, message_id);
  });
}

Result<Message> PgStore::edit_message(const std::string& message_id, const std::string& actor_id,
                                      const std::string& content, Micros when) {
  return writer_->submit_and_wait<Message>([this, message_id, actor_id, content, when]() -> Result<Message> {
    PgConn& c = *writer_conn_;
    if (auto may = may_change(message_id, actor_id, /*admin_too=*/false); !may) return may.error();
    auto r = c.exec("UPDATE messages SET content = $1, edited_at = $2, change_no = " PG_NEXT_CHANGE_NO
                    " WHERE id = $3 AND deleted_at IS NULL",
                    {PgParam::bytes(content), when, message_id});
    if (!r.ok()) return pg_error(c, r, "edit_message");
    if (r.affected() == 0) {
      auto found = c.exec("SELECT 1 FROM messages WHERE id = $1", {message_id});
      if (!found.ok()) return pg_error(c, found, "edit_message");
      if (found.rows() > 0) return Error{ErrorKind::kConflict, "message_deleted", "the message was deleted"};
      return not_found("message_not_found", "no such message");
    }
    return reread_message(c, message_id);
  });
}

Result<int64_t> PgStore::last_change() {
  return with_reader([&](PgConn& c) -> int64_t {
    auto r = c.exec("SELECT " PG_LAST_CHANGE_NO, {});
    log_read_error(c, r, "last_change");
    return r.ok() && r.rows() == 1 ? r.i64(0, 0) : 0;
  });
}

Result<std::vector<Message>> PgStore::changes_after(const std::string& user_id, int64_t after, int limit) {
  return with_reader([&](PgConn& c) {
    return read_messages(c,
                         c.exec(PG_MESSAGE_SELECT
                                "JOIN participants p ON p.thread_id = m.thread_id AND p.user_id = $1 "
                                "WHERE m.change_no > $2 ORDER BY m.change_no LIMIT $3",
                                {user_id, after, clamp_limit(limit)}),
                         "changes_after");
  });
}

// ---------------------------------------------------------------- webhook outbox

void PgStore::enqueue_notifications(std::vector<Notification> items, std::vector<std::string> settles,
                                    std::function<void(Result<size_t>)> done) {
  // One statement for the lot, so no savepoint: a message to 500 offline
  // members, or the intake's settles of many messages, is one round trip
  // under the commit clock. Writers take the clock one at a time, so a
  // second settle of a message runs after the first committed and finds
  // its record gone.
  writer_->submit<size_t>(
      [this, items = std::move(items), settles = std::move(settles)]() -> Result<size_t> {
        PgConn& c = *writer_conn_;
        if (items.empty() && settles.empty()) return size_t{0};
        std::vector<std::string> ids, recipients, bodies, attempts, due, messages;
        for (const auto& n : items) {
          ids.push_back(n.id);
          recipients.push_back(n.recipient_id);
          bodies.push_back(n.body);
          attempts.push_back(std::to_string(n.attempts));
          due.push_back(std::to_string(n.next_attempt_at));
          messages.push_back(n.message_id);
        }
        auto r = c.exec(
            "WITH d AS (DELETE FROM owed_pushes WHERE message_id = ANY($8::text[]) RETURNING message_id) "
            "INSERT INTO webhook_outbox (id, recipient_id, body, attempts, next_attempt_at, created_at, message_id) "
            "SELECT x.id, x.recipient, x.body, x.attempts, x.due, $7, NULLIF(x.message, '') "
            "FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[], $6::text[]) "
            "AS x(id, recipient, body, attempts, due, message) "
            "WHERE x.message <> ALL($8::text[]) OR x.message IN (SELECT message_id FROM d) "
            "ON CONFLICT (id) DO NOTHING",
            {PgParam::array(ids), PgParam::array(recipients), PgParam::array(bodies), PgParam::array(attempts),
             PgParam::array(due), PgParam::array(messages), now_micros(), PgParam::array(settles)});
        if (!r.ok()) return pg_error(c, r, "enqueue_notification");
        return static_cast<size_t>(r.affected());
      },
      [done = std::move(done)](Result<size_t> r) {
        if (done) done(std::move(r));
      },
      {.needs_current_state = false, .needs_savepoint = false});
}

Result<std::vector<std::string>> PgStore::overdue_pushes(Micros before, int limit) {
  return with_reader([&](PgConn& c) {
    // Ids are UUIDv7, in time order: the primary key's walk stops after `limit` rows.
    auto r = c.exec("SELECT message_id FROM owed_pushes WHERE created_at < $1 ORDER BY message_id LIMIT $2",
                    {before, clamp_limit(limit)});
    log_read_error(c, r, "overdue_pushes");
    std::vector<std::string> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(r.text(i, 0));
    return out;
  });
}

// SKIP LOCKED: a row another transaction holds is left to it, never waited for.
// One statement claims the rows and reads each one's message as it is now;
// a notification whose message was deleted (or is gone), or whose recipient's
// account is disabled (a locked account gets no more message text on its
// phones) or who has left the thread (or was added back since: the message
// predates their joining; without the second of slack live delivery keeps
// for joins of older nodes, ChatService::joined_by: a push lost to such a
// clock rather than text pushed from before a join), is removed by a second
// one instead of returned.
Result<std::vector<Notification>> PgStore::claim_notifications(Micros now, Micros lease_until, int limit) {
  return writer_->submit_and_wait<std::vector<Notification>>(
      [this, now, lease_until, limit]() -> Result<std::vector<Notification>> {
        PgConn& c = *writer_conn_;
        auto r = c.exec(
            "WITH due AS (SELECT id FROM webhook_outbox WHERE dead = 0 AND next_attempt_at <= $1 "
            "ORDER BY next_attempt_at, created_at LIMIT $3 FOR UPDATE SKIP LOCKED), "
            "claimed AS (UPDATE webhook_outbox w SET next_attempt_at = $2 FROM due WHERE w.id = due.id "
            "RETURNING w.id, w.recipient_id, w.body, w.attempts, w.created_at, w.message_id) "
            "SELECT c.id, c.recipient_id, c.body, c.attempts, c.created_at, c.message_id, m.content, m.edited_at, "
            "(c.message_id IS NOT NULL AND (m.id IS NULL OR m.deleted_at IS NOT NULL OR COALESCE(u.disabled, 0) <> 0 "
            "OR NOT EXISTS (SELECT 1 FROM participants p WHERE p.thread_id = m.thread_id AND p.user_id = c.recipient_id "
            "AND p.joined_at <= m.created_at)))::int, m.change_no "
            "FROM claimed c LEFT JOIN messages m ON m.id = c.message_id LEFT JOIN users u ON u.id = c.recipient_id "
            "ORDER BY c.created_at",
            {now, lease_until, clamp_limit(limit)});
        if (!r.ok()) return pg_error(c, r, "claim_notifications");
        std::vector<Notification> out;
        std::vector<std::string> dropped;
        for (int i = 0; i < r.rows(); ++i) {
          if (r.i64(i, 8) != 0) {  // not to be sent
            dropped.push_back(r.text(i, 0));
            continue;
          }
          Notification n;
          n.id = r.text(i, 0);
          n.recipient_id = r.text(i, 1);
          n.body = r.text(i, 2);
          n.attempts = static_cast<int>(r.i64(i, 3));
          n.next_attempt_at = lease_until;
          if (!r.is_null(i, 5)) {
            n.message_id = r.text(i, 5);
            n.content = r.bytes(i, 6);
            if (!r.is_null(i, 7)) n.edited_at = r.i64(i, 7);
            if (!r.is_null(i, 9)) n.change_no = r.i64(i, 9);
          }
          out.push_back(std::move(n));
        }
        if (!dropped.empty()) {
          auto drop = c.exec("DELETE FROM webhook_outbox WHERE id = ANY($1::text[])", {PgParam::array(dropped)});
          if (!drop.ok()) return pg_error(c, drop, "claim_notifications");
        }
        return out;
      });
}

Result<std::optional<Micros>> PgStore::next_notification_due() {
  return with_reader([](PgConn& c) -> std::optional<Micros> {
    auto r = c.exec("SELECT MIN(next_attempt_at) FROM webhook_outbox WHERE dead = 0");
    log_read_error(c, r, "next_notification_due");
    if (!r.ok() || r.rows() != 1 || r.is_null(0, 0)) return std::nullopt;
    return r.i64(0, 0);
  });
}

Status PgStore::finish_notification(const std::string& id) {
  return writer_->submit_and_wait<Ok>([this, id]() -> Status {
    auto r = writer_conn_->exec("DELETE FROM webhook_outbox WHERE id = $1", {id});
    if (!r.ok()) return pg_error(*writer_conn_, r, "finish_notification");
    return Ok{};
  });
}

Status PgStore::retry_notification(const std::string& id, int attempts, Micros next_attempt_at) {
  return writer_->submit_and_wait<Ok>([this, id, attempts, next_attempt_at]() -> Status {
    auto r = writer_conn_->exec("UPDATE webhook_outbox SET attempts = $1, next_attempt_at = $2 WHERE id = $3",
                                {attempts, next_attempt_at, id});
    if (!r.ok()) return pg_error(*writer_conn_, r, "retry_notification");
    return Ok{};
  });
}

Status PgStore::dead_letter_notification(const std::string& id, int attempts) {
  return writer_->submit_and_wait<Ok>([this, id, attempts]() -> Status {
    auto r = writer_conn_->exec("UPDATE webhook_outbox SET attempts = $1, dead = 1 WHERE id = $2", {attempts, id});
    if (!r.ok()) return pg_error(*writer_conn_, r, "dead_letter_notification");
    return Ok{};
  });
}

Result<int64_t> PgStore::dead_notification_count() {
  return with_reader([](PgConn& c) -> int64_t {
    auto r = c.exec("SELECT COUNT(*) FROM webhook_outbox WHERE dead = 1");
    log_read_error(c, r, "dead_notification_count");
    return r.ok() && r.rows() == 1 ? r.i64(0, 0) : 0;
  });
}

// ---------------------------------------------------------------- read pool

template <typename F, typename T>
Result<T> PgStore::with_reader(F&& f) {
  // A pooled connection may have died while idle (a server restart): it only
  // says so when used, so a read that finds it broken runs once more on a new one.
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto conn = acquire_reader();
    if (!conn) return unavailable();
    conn->take_failure();
    T result = f(*conn);
    const bool failed = conn->take_failure();  // logged where it happened
    if (conn->healthy()) {
      release_reader(std::move(conn));
      if (failed) return internal_error("storage error");
      return result;
    }
  }
  return unavailable();
}

std::unique_ptr<PgConn> PgStore::acquire_reader() {
  {
    std::lock_guard lock(readers_mu_);
    if (!readers_.empty()) {
      auto conn = std::move(readers_.back());
      readers_.pop_back();
      return conn;
    }
  }
  auto conn = PgConn::open(options_.database_url);
  if (!conn) {
    static LogThrottle throttle;  // every read tries again
    if (auto held_back = throttle.admit())
      spdlog::error("event=store_reader_open_failed error=\"{}\" suppressed={}", conn.error().message, *held_back);
    return nullptr;
  }
  return std::move(*conn);
}

void PgStore::release_reader(std::unique_ptr<PgConn> conn) {
  std::lock_guard lock(readers_mu_);
  if (!readers_closed_ && readers_.size() < kMaxPooledReaders) readers_.push_back(std::move(conn));
}

}  // namespace parley
