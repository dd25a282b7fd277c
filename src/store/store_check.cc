#include "store/store_check.h"

#include <sqlite3.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>

#include "common/redact.h"
#include "common/utf8.h"
#include "store/pg_conn.h"
#include "store/sqlite_backup.h"
#include "store/sqlite_conn.h"
#include "store/sqlite_schema.h"

namespace parley {

namespace {

// Rows of text cells (nullopt = NULL): the one shape both backends answer in,
// so each invariant is written once, in SQL both dialects accept.
using Row = std::vector<std::optional<std::string>>;
using Query = std::function<Result<std::vector<Row>>(const std::string& sql, int columns)>;

constexpr int kMaxRowsPerCheck = 1000;  // a badly broken store lists this many per query, then says there are more
// Queries ask for one row more than they list: that row says there are more.
const std::string kLimit = " LIMIT " + std::to_string(kMaxRowsPerCheck + 1);

std::string cell(const Row& r, size_t i) { return i < r.size() && r[i] ? *r[i] : ""; }
int64_t num(const Row& r, size_t i) { return std::strtoll(cell(r, i).c_str(), nullptr, 10); }

Result<std::vector<Row>> sqlite_query(sqlite3* db, const std::string& sql, int columns) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    Error e = sqlite_failure(db, "query failed");
    sqlite3_finalize(st);
    return e;
  }
  std::vector<Row> rows;
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    Row row;
    for (int c = 0; c < columns; ++c) {
      const unsigned char* t = sqlite3_column_text(st, c);
      row.push_back(t ? std::optional<std::string>(reinterpret_cast<const char*>(t)) : std::nullopt);
    }
    rows.push_back(std::move(row));
  }
  std::optional<Error> failed;
  if (rc != SQLITE_DONE) failed = sqlite_failure(db, "query failed");
  sqlite3_finalize(st);
  if (failed) return *failed;
  return rows;
}

Result<std::vector<Row>> pg_query(PgConn& conn, const std::string& sql, int columns) {
  PgResult r = conn.run(sql);
  if (!r.ok()) return Error{ErrorKind::kUnavailable, "storage_unavailable", "query failed: " + r.message()};
  std::vector<Row> rows;
  for (int i = 0; i < r.rows(); ++i) {
    Row row;
    for (int c = 0; c < columns; ++c)
      row.push_back(r.is_null(i, c) ? std::nullopt : std::optional<std::string>(r.text(i, c)));
    rows.push_back(std::move(row));
  }
  return rows;
}

// How a thread's messages are found, as the store's reads find them: by
// thread id, or on SQLite from schema v6 by the thread's number, the key of
// the message index (joining by thread_id there would build a temporary
// index of every message: 1.4 s against 0.04 s for 300,000 messages).
constexpr const char* kMessagesByThreadId = "m.thread_id = t.id";
constexpr const char* kMessagesByThreadNo = "m.thread_no = t.no";

// Every listing query asks for kMaxRowsPerCheck + 1 rows (kLimit) and
// lists kMaxRowsPerCheck: the extra row means there are more than listed.
Query noting_caps(Query query, CheckReport& report) {
  return [query = std::move(query), &report](const std::string& sql, int columns) {
    auto rows = query(sql, columns);
    if (rows && rows->size() > static_cast<size_t>(kMaxRowsPerCheck)) {
      report.capped = true;
      rows->resize(kMaxRowsPerCheck);
    }
    return rows;
  };
}

// The invariants, in SQL both SQLite and PostgreSQL run as written.
Status check_invariants(const Query& query, const std::string& messages_of_thread, CheckReport& report) {
  auto add = [&report](std::string kind, std::string thread, std::string user, std::string detail) {
    report.problems.push_back({std::move(kind), std::move(thread), std::move(user), std::move(detail)});
  };
  const std::string& limit = kLimit;

  auto counts = query(
      "SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM threads), (SELECT COUNT(*) FROM messages), "
      "(SELECT COUNT(*) FROM participants)",
      4);
  if (!counts) return counts.error();
  if (!counts->empty()) {
    const Row& r = counts->front();
    report.users = num(r, 0);
    report.threads = num(r, 1);
    report.messages = num(r, 2);
    report.participants = num(r, 3);
    report.counted = true;
  }

  // seq is UNIQUE per thread, so count = max = last_seq with min 1 means 1..last_seq, gapless.
  auto seqs = query(
      "SELECT t.id, t.last_seq, COUNT(m.seq), COALESCE(MIN(m.seq), 0), COALESCE(MAX(m.seq), 0) "
      "FROM threads t LEFT JOIN messages m ON " + messages_of_thread + " GROUP BY t.id, t.last_seq "
      "HAVING COUNT(m.seq) <> t.last_seq OR COALESCE(MAX(m.seq), 0) <> t.last_seq OR COALESCE(MIN(m.seq), 1) <> 1 "
      "ORDER BY t.id" + limit,
      5);
  if (!seqs) return seqs.error();
  for (const Row& r : *seqs) {
    std::string thread = cell(r, 0);
    int64_t last_seq = num(r, 1), count = num(r, 2), min = num(r, 3), max = num(r, 4);
    if (count > 0 && (min != 1 || count != max - min + 1)) {
      add("seq_gap", thread, "",
          "thread " + thread + ": its messages' seq has gaps: " + std::to_string(count) + " messages with seq " +
              std::to_string(min) + ".." + std::to_string(max) + " (" + std::to_string(max - count) + " missing)");
    }
    if (max != last_seq) {
      add("last_seq_mismatch", thread, "",
          "thread " + thread + ": last_seq is " + std::to_string(last_seq) + " but its highest message seq is " +
              std::to_string(max));
    }
  }

  auto marks = query(
      "SELECT p.thread_id, p.user_id, p.last_read_seq, p.last_delivered_seq, t.last_seq "
      "FROM participants p JOIN threads t ON t.id = p.thread_id "
      "WHERE p.last_read_seq < 0 OR p.last_read_seq > t.last_seq "
      "OR p.last_delivered_seq < 0 OR p.last_delivered_seq > t.last_seq ORDER BY p.thread_id, p.user_id" + limit,
      5);
  if (!marks) return marks.error();
  for (const Row& r : *marks) {
    std::string range = " outside 0.." + cell(r, 4);
    int64_t last_seq = num(r, 4);
    if (num(r, 2) < 0 || num(r, 2) > last_seq)
      add("read_mark_out_of_range", cell(r, 0), cell(r, 1),
          "thread " + cell(r, 0) + ": user " + cell(r, 1) + " has read up to seq " + cell(r, 2) + range);
    if (num(r, 3) < 0 || num(r, 3) > last_seq)
      add("delivery_mark_out_of_range", cell(r, 0), cell(r, 1),
          "thread " + cell(r, 0) + ": user " + cell(r, 1) + " has delivered up to seq " + cell(r, 3) + range);
  }

  auto members = query(
      "SELECT p.thread_id, p.user_id, CASE WHEN t.id IS NULL THEN 1 ELSE 0 END, CASE WHEN u.id IS NULL THEN 1 ELSE 0 END "
      "FROM participants p LEFT JOIN threads t ON t.id = p.thread_id LEFT JOIN users u ON u.id = p.user_id "
      "WHERE t.id IS NULL OR u.id IS NULL ORDER BY p.thread_id, p.user_id" + limit,
      4);
  if (!members) return members.error();
  for (const Row& r : *members) {
    if (num(r, 2)) add("participant_without_thread", cell(r, 0), cell(r, 1),
                       "participant " + cell(r, 1) + " is in thread " + cell(r, 0) + ", which does not exist");
    if (num(r, 3)) add("participant_without_user", cell(r, 0), cell(r, 1),
                       "thread " + cell(r, 0) + " has participant " + cell(r, 1) + ", who is not a user");
  }

  auto orphans = query(
      "SELECT m.thread_id, COUNT(*) FROM messages m LEFT JOIN threads t ON t.id = m.thread_id "
      "WHERE t.id IS NULL GROUP BY m.thread_id ORDER BY m.thread_id" + limit,
      2);
  if (!orphans) return orphans.error();
  for (const Row& r : *orphans)
    add("message_without_thread", cell(r, 0), "", cell(r, 1) + " messages name thread " + cell(r, 0) + ", which does not exist");

  auto senders = query(
      "SELECT m.thread_id, m.sender_id, COUNT(*) FROM messages m LEFT JOIN users u ON u.id = m.sender_id "
      "WHERE u.id IS NULL GROUP BY m.thread_id, m.sender_id ORDER BY m.thread_id" + limit,
      3);
  if (!senders) return senders.error();
  for (const Row& r : *senders)
    add("message_sender_missing", cell(r, 0), cell(r, 1),
        "thread " + cell(r, 0) + ": " + cell(r, 2) + " messages from " + cell(r, 1) + ", who is not a user");
  return Ok{};
}

// SQLite only: a message with a client_msg_id whose key is not in
// message_keys would be stored twice if its sender retried it.
Status check_message_keys(sqlite3* db, const Query& query, CheckReport& report) {
  auto version = query("PRAGMA user_version", 1);
  if (!version) return version.error();
  if (version->empty() || num(version->front(), 0) < 5) return Ok{};  // keys came with schema v5
  if (auto st = register_message_key_function(db); !st) return st;
  auto missing = query(
      "SELECT m.thread_id, m.sender_id, m.seq FROM messages m WHERE m.client_msg_id IS NOT NULL AND NOT EXISTS "
      "(SELECT 1 FROM message_keys k WHERE k.key = parley_message_key(m.thread_id, m.sender_id, m.client_msg_id)) "
      "ORDER BY m.thread_id, m.seq" + kLimit,
      3);
  if (!missing) return missing.error();
  for (const Row& r : *missing)
    report.problems.push_back({"message_key_missing", cell(r, 0), cell(r, 1),
                               "thread " + cell(r, 0) + ": message seq " + cell(r, 2) +
                                   " has a client_msg_id but no idempotency key; a retry would store it twice"});
  return Ok{};
}

// Where each ended membership ended (SQLite schema 13 / PostgreSQL 10 on):
// past the thread's last message, its former member would be sent messages
// stored after they left (PageQuery::former_too). SQL both run as written.
Status check_membership_ends(const Query& query, CheckReport& report) {
  auto ends = query(
      "SELECT f.thread_id, f.user_id, f.left_seq, t.last_seq FROM former_marks f JOIN threads t ON t.id = f.thread_id "
      "WHERE f.left_seq < 0 OR f.left_seq > t.last_seq ORDER BY f.thread_id, f.user_id" + kLimit,
      4);
  if (!ends) return ends.error();
  for (const Row& r : *ends)
    report.problems.push_back({"membership_end_out_of_range", cell(r, 0), cell(r, 1),
                               "thread " + cell(r, 0) + ": a membership of user " + cell(r, 1) + " ended at seq " +
                                   cell(r, 2) + " outside 0.." + cell(r, 3)});
  return Ok{};
}

// SQLite only (schema v6): every thread has its own number, and every
// message's thread_no names the thread its thread_id does; a message filed
// under another number would be missing from its thread's history.
Status check_thread_numbers(const Query& query, CheckReport& report) {
  auto version = query("PRAGMA user_version", 1);
  if (!version) return version.error();
  if (version->empty() || num(version->front(), 0) < 6) return Ok{};
  auto unnumbered = query("SELECT id FROM threads WHERE no IS NULL ORDER BY id" + kLimit, 1);
  if (!unnumbered) return unnumbered.error();
  for (const Row& r : *unnumbered)
    report.problems.push_back({"thread_number_missing", cell(r, 0), "",
                               "thread " + cell(r, 0) + " has no number; its messages cannot be found"});
  auto misfiled = query(
      "SELECT m.thread_id, COUNT(*) FROM messages m LEFT JOIN threads t ON t.no = m.thread_no "
      "WHERE t.id IS NOT m.thread_id GROUP BY m.thread_id ORDER BY m.thread_id" + kLimit,
      2);
  if (!misfiled) return misfiled.error();
  for (const Row& r : *misfiled)
    report.problems.push_back({"message_thread_number", cell(r, 0), "",
                               "thread " + cell(r, 0) + ": " + cell(r, 1) +
                                   " messages are filed under another thread's number"});
  return Ok{};
}

// A Parley database has the version of the migration that made it (1 on):
// 0 is a file whose header was rewritten or a schema made by hand, and a
// version above this build's is a newer release's, whose invariants this
// check may not know. Older versions are fine: serve migrates them.
void check_schema_version(int64_t version, CheckReport& report) {
  if (version < 1)
    report.problems.push_back({"schema_version_missing", "", "",
                               "user_version is " + std::to_string(version) +
                                   ": not a schema Parley made (serve would migrate it from scratch)"});
  else if (version > latest_schema_version())
    report.problems.push_back({"schema_too_new", "", "",
                               "schema version " + std::to_string(version) + " is newer than this parley knows (" +
                                   std::to_string(latest_schema_version()) +
                                   "): check it with the release that made it"});
}

// SQLite only: text that is not UTF-8 (SQLite stores any bytes; PostgreSQL
// refuses them in a UTF8 database). The server would send it in frames
// clients must reject: a WebSocket client drops the connection.
void valid_utf8_function(sqlite3_context* ctx, int, sqlite3_value** argv) {
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return sqlite3_result_int(ctx, 1);
  const auto* bytes = static_cast<const char*>(sqlite3_value_blob(argv[0]));
  const int size = sqlite3_value_bytes(argv[0]);
  sqlite3_result_int(ctx, utf8_length(std::string_view(bytes ? bytes : "", static_cast<size_t>(size))) ? 1 : 0);
}

Status check_text(sqlite3* db, const Query& query, CheckReport& report) {
  if (sqlite3_create_function(db, "parley_valid_utf8", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, nullptr,
                              &valid_utf8_function, nullptr, nullptr) != SQLITE_OK)
    return internal_error(std::string("cannot register parley_valid_utf8: ") + sqlite3_errmsg(db));
  const std::string& limit = kLimit;
  auto messages = query("SELECT thread_id, sender_id, seq FROM messages WHERE NOT parley_valid_utf8(content) "
                        "ORDER BY thread_id, seq" + limit, 3);
  if (!messages) return messages.error();
  for (const Row& r : *messages)
    report.problems.push_back({"invalid_utf8", cell(r, 0), cell(r, 1),
                               "thread " + cell(r, 0) + ": message seq " + cell(r, 2) + " has text that is not UTF-8"});
  auto users = query("SELECT id FROM users WHERE NOT (parley_valid_utf8(username) AND parley_valid_utf8(full_name) "
                     "AND parley_valid_utf8(role) AND parley_valid_utf8(phone_number)) ORDER BY id" + limit, 1);
  if (!users) return users.error();
  for (const Row& r : *users)
    report.problems.push_back({"invalid_utf8", "", cell(r, 0), "user " + cell(r, 0) + " has a name, role or phone number that is not UTF-8"});
  auto titles = query("SELECT id FROM threads WHERE NOT parley_valid_utf8(title) ORDER BY id" + limit, 1);
  if (!titles) return titles.error();
  for (const Row& r : *titles)
    report.problems.push_back({"invalid_utf8", cell(r, 0), "", "thread " + cell(r, 0) + " has a title that is not UTF-8"});
  return Ok{};
}

Result<CheckReport> check_sqlite(const std::string& data_dir) {
  namespace fs = std::filesystem;
  fs::path path = fs::path(data_dir) / "parley.db";
  std::error_code ec;
  if (auto st = no_unfinished_restore(data_dir); !st) return st.error();  // as serve says it
  if (!fs::is_regular_file(path, ec))
    return not_found("no_database", "no database at " + path.string() + " (is --data-dir the server's?)");
  sqlite3* raw = nullptr;
  // Read-only and without the data dir lock: a running server keeps writing.
  int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr);
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> db(raw, &sqlite3_close_v2);
  if (rc != SQLITE_OK) return internal_error("cannot open " + path.string() + ": " + sqlite3_errstr(rc));
  sqlite3_busy_timeout(db.get(), 5000);
  CheckReport report;
  report.store = "sqlite:" + fs::absolute(path, ec).string();
  // One read transaction: every query sees the same snapshot, so a commit
  // between two of them cannot look like a broken invariant.
  if (sqlite3_exec(db.get(), "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK)
    return internal_error(std::string("cannot begin a read: ") + sqlite3_errmsg(db.get()));
  Query query = noting_caps(
      [&db](const std::string& sql, int columns) { return sqlite_query(db.get(), sql, columns); }, report);
  // Its own default stops at 100 findings; this one at what the others list.
  auto integrity = query("PRAGMA integrity_check(" + std::to_string(kMaxRowsPerCheck + 1) + ")", 1);
  if (!integrity) return integrity.error();
  for (const Row& r : *integrity)
    if (cell(r, 0) != "ok") report.problems.push_back({"integrity", "", "", "integrity_check: " + cell(r, 0)});
  auto tables = query("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                      "('users', 'threads', 'participants', 'messages')", 1);
  if (tables && (tables->empty() || num(tables->front(), 0) != 4))
    return bad_input("not_parley_database", path.string() + " is not a Parley database (no users, threads, "
                                            "participants and messages tables)");
  auto version = query("PRAGMA user_version", 1);
  if (!version) return version.error();
  check_schema_version(version->empty() ? 0 : num(version->front(), 0), report);
  const bool numbered = !version->empty() && num(version->front(), 0) >= 6;
  // The rest reads every row: on a damaged file it may fail part way. What
  // integrity_check found is still worth printing, with that failure.
  Status rest = check_invariants(query, numbered ? kMessagesByThreadNo : kMessagesByThreadId, report);
  if (rest && !version->empty() && num(version->front(), 0) >= 13) rest = check_membership_ends(query, report);
  if (rest) rest = check_message_keys(db.get(), query, report);
  if (rest) rest = check_thread_numbers(query, report);
  if (rest) rest = check_text(db.get(), query, report);
  const bool damage_found = std::any_of(report.problems.begin(), report.problems.end(),
                                        [](const CheckProblem& p) { return p.kind == "integrity"; });
  if (!rest && rest.error().code == "database_corrupt" && damage_found) {
    report.problems.push_back({"unreadable", "", "", "the invariants could not all be checked: " + rest.error().message});
    rest = Ok{};
  }
  if (!rest) return rest.error();
  sqlite3_exec(db.get(), "COMMIT", nullptr, nullptr, nullptr);
  return report;
}

Result<CheckReport> check_postgres(const std::string& url) {
  auto conn = PgConn::open(url);
  if (!conn) return conn.error();
  CheckReport report;
  report.store = redact_url_password(url);
  // One snapshot for every query, as on SQLite.
  if (!(*conn)->run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").ok())
    return Error{ErrorKind::kUnavailable, "storage_unavailable", "cannot begin a read: " + (*conn)->errmsg()};
  Query query = noting_caps([&conn](const std::string& sql, int columns) { return pg_query(**conn, sql, columns); },
                            report);
  if (auto st = check_invariants(query, kMessagesByThreadId, report); !st) return st.error();
  auto version = query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", 1);
  if (!version) return version.error();
  if (!version->empty() && num(version->front(), 0) >= 10)
    if (auto st = check_membership_ends(query, report); !st) return st.error();
  // New messages take created_at above the commit clock; one below the
  // newest message would let offline sync's cursor skip what comes next.
  auto clock = query("SELECT c.last_created_at, (SELECT COALESCE(MAX(created_at), 0) FROM messages) "
                     "FROM commit_clock c WHERE c.id = 1", 2);
  if (!clock) return clock.error();
  if (!clock->empty() && num(clock->front(), 0) < num(clock->front(), 1))
    report.problems.push_back({"commit_clock_behind", "", "",
                               "commit_clock.last_created_at " + cell(clock->front(), 0) +
                                   " is below the newest message's created_at " + cell(clock->front(), 1)});
  (*conn)->run("COMMIT");
  return report;
}

}  // namespace

Result<CheckReport> check_store(const StoreOptions& options) {
  if (!options.database_url.empty()) return check_postgres(options.database_url);
  return check_sqlite(options.data_dir);
}

}  // namespace parley
