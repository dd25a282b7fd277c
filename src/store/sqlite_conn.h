// SqliteConn: one sqlite3 handle and its cache of prepared statements, and
// SqliteStmt, one use of a cached statement. The SQLite store's only contact
// with the SQLite C API besides its schema and checkpointer.
//
// A connection is used by one thread at a time (opened NOMUTEX): the store
// gives the write connection to its writer thread and lends read-only ones
// to readers from a pool. The connection owns its statements; a SqliteStmt
// must not outlive the connection it came from.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "common/error.h"

namespace parley {

// What a connection's statements tell it, and the rule they keep for it.
struct SqliteConnFlags {
  bool failed = false;    // a statement failed (SqliteConn::take_failure)
  bool in_batch = false;  // SqliteConn::set_in_batch
};

// One use of a prepared statement. Resets on destruction so a finished read
// never keeps its snapshot (and the WAL) pinned.
class SqliteStmt {
 public:
  // flags: its connection's.
  SqliteStmt(sqlite3_stmt* s, int rc, bool* in_use, SqliteConnFlags* flags)
      : s_(s), rc_(rc), in_use_(in_use), flags_(flags) {}
  SqliteStmt(const SqliteStmt&) = delete;
  SqliteStmt& operator=(const SqliteStmt&) = delete;
  ~SqliteStmt() {
    if (!s_) return;
    if (in_use_) {  // cached: keep it prepared for the next caller
      sqlite3_reset(s_);
      sqlite3_clear_bindings(s_);
      *in_use_ = false;
    } else {
      sqlite3_finalize(s_);
    }
  }

  template <typename... A>
  SqliteStmt& bind(const A&... args) {
    int i = 1;
    (bind_one(i++, args), ...);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE, or the extended error code (also kept in error()).
  int step() {
    // Inside a batch with its transaction gone (SQLite rolls it back on an
    // I/O error, a full disk, no memory, even in a read), a statement would
    // commit by itself: refused, so the batch fails whole.
    if (rc_ == SQLITE_OK && flags_->in_batch && sqlite3_get_autocommit(sqlite3_db_handle(s_))) rc_ = SQLITE_ABORT;
    if (rc_ != SQLITE_OK) {
      flags_->failed = true;
      return rc_;
    }
    int rc = sqlite3_step(s_);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
      rc_ = rc;
      flags_->failed = true;
    }
    return rc;
  }
  bool row() { return step() == SQLITE_ROW; }
  bool done() { return step() == SQLITE_DONE; }
  int error() const { return rc_; }

  int64_t i64(int col) const { return sqlite3_column_int64(s_, col); }
  bool is_null(int col) const { return sqlite3_column_type(s_, col) == SQLITE_NULL; }
  std::string text(int col) const {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, col));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(s_, col))) : std::string();
  }

 private:
  template <typename T>
  void bind_one(int i, const T& v) {
    if (rc_ != SQLITE_OK) return;
    if constexpr (std::is_same_v<T, std::nullptr_t>) {
      rc_ = sqlite3_bind_null(s_, i);
    } else if constexpr (std::is_integral_v<T>) {
      rc_ = sqlite3_bind_int64(s_, i, static_cast<sqlite3_int64>(v));
    } else if constexpr (std::is_same_v<T, std::optional<std::string>>) {
      rc_ = v ? bind_text(i, *v) : sqlite3_bind_null(s_, i);
    } else if constexpr (std::is_same_v<T, std::optional<int64_t>>) {
      rc_ = v ? sqlite3_bind_int64(s_, i, *v) : sqlite3_bind_null(s_, i);
    } else {
      rc_ = bind_text(i, std::string_view(v));
    }
  }
  int bind_text(int i, std::string_view v) {
    // Length-delimited (byte-exact, NULs included); TRANSIENT makes SQLite copy,
    // so temporaries are fine. A null data pointer would bind NULL, not ''.
    return sqlite3_bind_text64(s_, i, v.data() ? v.data() : "", v.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  }

  sqlite3_stmt* s_;
  int rc_;
  bool* in_use_;  // the cache slot's flag; nullptr for a private, finalized-on-exit statement
  SqliteConnFlags* flags_;
};

class SqliteConn {
 public:
  static Result<std::unique_ptr<SqliteConn>> open(const std::string& path, bool writer, bool fsync);
  ~SqliteConn() {
    for (auto& [sql, entry] : cache_) sqlite3_finalize(entry.stmt);
    sqlite3_close_v2(db_);
  }
  SqliteConn(const SqliteConn&) = delete;
  SqliteConn& operator=(const SqliteConn&) = delete;

  // `sql` must be a string literal (the cache is keyed by its address).
  SqliteStmt prepare(const char* sql);
  // A statement built at run time: prepared for this use only, finalized after it.
  SqliteStmt prepare_once(const std::string& sql);
  // For value-free statements (transaction control): true on success.
  bool exec(const char* sql) { return prepare(sql).done(); }
  sqlite3* db() const { return db_; }
  std::string errmsg() const { return sqlite3_errmsg(db_); }
  int64_t changes() const { return sqlite3_changes64(db_); }
  // Whether any statement failed since the last call; clears the flag. A
  // read checks it so that a failure is an error, not a shorter answer.
  bool take_failure() { return std::exchange(flags_.failed, false); }
  // While on (the writer, from its BEGIN to its COMMIT or ROLLBACK), every
  // statement must run inside the open transaction: one that finds it gone
  // fails instead of committing on its own.
  void set_in_batch(bool on) { flags_.in_batch = on; }

 private:
  explicit SqliteConn(sqlite3* db) : db_(db) {}
  Status configure_writer(bool fsync);

  struct Entry {
    sqlite3_stmt* stmt;
    bool in_use;
  };
  sqlite3* db_;
  std::unordered_map<const char*, Entry> cache_;
  SqliteConnFlags flags_;
};

// Several statements read as one consistent snapshot (reader connections only).
class ReadTxn {
 public:
  explicit ReadTxn(SqliteConn& c) : c_(c), open_(c.exec("BEGIN")) {}
  ~ReadTxn() {
    if (open_) c_.exec("COMMIT");
  }
  ReadTxn(const ReadTxn&) = delete;
  ReadTxn& operator=(const ReadTxn&) = delete;

 private:
  SqliteConn& c_;
  bool open_;
};

// Logs the detail (never shown to clients) and maps it to an Error.
Error storage_error(SqliteConn& c, int rc, std::string_view op);
// The failure `db` last had, where `what` was being done: a damaged file
// (SQLITE_CORRUPT, SQLITE_NOTADB) is database_corrupt, in words an operator
// can act on; any other is internal_error. For opening a store and for
// `parley check`, which say the same of the same file.
Error sqlite_failure(sqlite3* db, std::string_view what);
// Logs a read that stopped on an error (a read that found nothing is not one).
void log_read_error(SqliteConn& c, const SqliteStmt& st, std::string_view op);

}  // namespace parley
