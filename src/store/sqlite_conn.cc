#include "store/sqlite_conn.h"

#include <spdlog/spdlog.h>

#include "common/log_throttle.h"
#include "store/sqlite_wal_buffer.h"

namespace parley {

namespace {
constexpr int kBusyTimeoutMs = 5000;
}  // namespace

Error sqlite_failure(sqlite3* db, std::string_view what) {
  const int code = db ? sqlite3_errcode(db) & 0xff : SQLITE_CANTOPEN;
  const std::string why = db ? sqlite3_errmsg(db) : "out of memory";
  if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB)
    return Error{ErrorKind::kInternal, "database_corrupt",
                 "the database is damaged (" + why + "): restore the last backup (parley restore)"};
  return internal_error(std::string(what) + ": " + why);
}


Result<std::unique_ptr<SqliteConn>> SqliteConn::open(const std::string& path, bool writer, bool fsync) {
  int flags = SQLITE_OPEN_NOMUTEX | (writer ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY);
  // The writer writes the WAL through the buffering VFS (one write call per
  // commit instead of two per page); readers never write it.
  if (writer) {
    if (auto st = register_wal_buffer_vfs(); !st) return st.error();
  }
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, writer ? kWalBufferVfs : nullptr);
  std::unique_ptr<SqliteConn> conn(new SqliteConn(db));  // closes the handle even when open failed
  if (rc != SQLITE_OK) return sqlite_failure(db, "cannot open " + path);
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  // The writer gets a page cache big enough that the hot b-tree pages of a
  // busy server stay in it (SQLite's default is 2 MB); readers keep the
  // default, so memory does not grow with the number of pooled readers.
  const char* tuning = writer ? "PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY;" : "PRAGMA temp_store=MEMORY;";
  if (sqlite3_exec(db, tuning, nullptr, nullptr, nullptr) != SQLITE_OK)
    return sqlite_failure(db, "cannot tune connection");
  if (writer) {
    if (auto st = conn->configure_writer(fsync); !st) return st.error();
  }
  return conn;
}

Status SqliteConn::configure_writer(bool fsync) {
  std::string mode;
  auto keep_first = [](void* out, int, char** values, char**) {
    *static_cast<std::string*>(out) = values[0] ? values[0] : "";
    return 0;
  };
  if (sqlite3_exec(db_, "PRAGMA journal_mode=WAL", keep_first, &mode, nullptr) != SQLITE_OK || mode != "wal")
    return sqlite_failure(db_, "cannot enable WAL mode");
  // NORMAL in WAL mode: a commit survives a process crash; FULL also syncs
  // the WAL on every commit so it survives power loss.
  // Checkpoints are not the writer's: see SqliteCheckpointer.
  // Foreign keys stay off (SQLite's default). This connection is the only
  // writer, every op that writes a row naming a thread or a user checks that
  // it exists first (SqliteStore: thread_key, sender_ref, user_exists), and
  // users and threads are never deleted; with them on, each append also
  // looked both parents up by their 36-byte text keys, 7-10% of an append
  // (docs/benchmarks.md, "Foreign keys"). `parley check` finds any orphan.
  const char* pragmas = fsync ? "PRAGMA synchronous=FULL;" : "PRAGMA synchronous=NORMAL;";
  if (sqlite3_exec(db_, pragmas, nullptr, nullptr, nullptr) != SQLITE_OK)
    return sqlite_failure(db_, "cannot configure connection");
  return Ok{};
}

SqliteStmt SqliteConn::prepare(const char* sql) {
  auto it = cache_.find(sql);
  if (it != cache_.end() && !it->second.in_use) {
    it->second.in_use = true;
    return SqliteStmt(it->second.stmt, SQLITE_OK, &it->second.in_use, &flags_);
  }
  sqlite3_stmt* s = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr);
  if (rc != SQLITE_OK) {
    spdlog::error("event=sqlite_prepare_failed error=\"{}\"", errmsg());
    return SqliteStmt(nullptr, rc, nullptr, &flags_);
  }
  // The same statement nested inside itself gets a private copy.
  if (it != cache_.end()) return SqliteStmt(s, SQLITE_OK, nullptr, &flags_);
  auto& entry = cache_.emplace(sql, Entry{s, true}).first->second;
  return SqliteStmt(s, SQLITE_OK, &entry.in_use, &flags_);
}

SqliteStmt SqliteConn::prepare_once(const std::string& sql) {
  sqlite3_stmt* s = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.c_str(), static_cast<int>(sql.size()), &s, nullptr);
  if (rc != SQLITE_OK) spdlog::error("event=sqlite_prepare_failed error=\"{}\"", errmsg());
  return SqliteStmt(s, rc, nullptr, &flags_);
}

Error storage_error(SqliteConn& c, int rc, std::string_view op) {
  if ((rc & 0xff) == SQLITE_CONSTRAINT) {
    // An answer (two requests raced for one key), not a failure of the store.
    spdlog::info("event=store_conflict op={} code={} error=\"{}\"", op, rc, c.errmsg());
    return {ErrorKind::kConflict, "conflict", std::string(op) + " conflicts"};
  }
  // A failing disk fails every statement: a line a second, with how many it stands for.
  static LogThrottle throttle;
  if (auto held_back = throttle.admit())
    spdlog::error("event=store_error op={} code={} error=\"{}\" suppressed={}", op, rc, c.errmsg(), *held_back);
  // A bug in a statement is ours; anything else (disk full, I/O, read-only
  // files, busy past the timeout) is the storage failing.
  if ((rc & 0xff) == SQLITE_ERROR || (rc & 0xff) == SQLITE_MISUSE || (rc & 0xff) == SQLITE_RANGE)
    return internal_error("storage error");
  return storage_unavailable();
}

void log_read_error(SqliteConn& c, const SqliteStmt& st, std::string_view op) {
  if (st.error() != SQLITE_OK) spdlog::error("event=store_read_failed op={} error=\"{}\"", op, c.errmsg());
}

}  // namespace parley
