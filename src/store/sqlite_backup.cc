#include "store/sqlite_backup.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>  // renameat2
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <thread>

#include "store/data_dir_lock.h"
#include "store/sqlite_schema.h"

namespace parley {

namespace {

namespace fs = std::filesystem;

using Db = std::unique_ptr<sqlite3, int (*)(sqlite3*)>;

Result<Db> open_db(const std::string& path, int flags) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  Db db(raw, &sqlite3_close_v2);
  if (rc != SQLITE_OK) {
    return Error{ErrorKind::kInternal, "sqlite_open_failed",
                 "cannot open " + path + ": " + (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc))};
  }
  sqlite3_busy_timeout(db.get(), 5000);
  return db;
}

// One integer from a one-row query; -1 when it fails.
int64_t scalar(sqlite3* db, const char* sql) {
  sqlite3_stmt* st = nullptr;
  int64_t v = -1;
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

// "ok", or the first problem quick_check reports.
std::string quick_check(sqlite3* db) {
  sqlite3_stmt* st = nullptr;
  std::string out = "quick_check did not run";
  if (sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
    const unsigned char* t = sqlite3_column_text(st, 0);
    out = t ? reinterpret_cast<const char*>(t) : "";
  }
  sqlite3_finalize(st);
  return out;
}

// The whole database in one step: one read transaction, so the copy is one
// snapshot. (Stepping in pieces would restart whenever the server commits.)
Status copy_database(sqlite3* from, sqlite3* to) {
  sqlite3_backup* b = sqlite3_backup_init(to, "main", from, "main");
  if (!b) return internal_error(std::string("backup_init: ") + sqlite3_errmsg(to));
  int rc = SQLITE_OK;
  for (int attempt = 0; attempt < 100; ++attempt) {
    rc = sqlite3_backup_step(b, -1);
    if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  sqlite3_backup_finish(b);
  if (rc != SQLITE_DONE) return internal_error(std::string("backup_step: ") + sqlite3_errstr(rc));
  int err = sqlite3_errcode(to);
  if (err != SQLITE_OK) return internal_error(std::string("backup: ") + sqlite3_errmsg(to));
  return Ok{};
}

Status fsync_path(const fs::path& p, bool directory) {
  int fd = ::open(p.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return internal_error("cannot open " + p.string() + " to fsync");
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return internal_error("fsync " + p.string() + " failed");
  return Ok{};
}

void fill_counts(sqlite3* db, CopySummary& s) {
  s.users = scalar(db, "SELECT COUNT(*) FROM users");
  s.threads = scalar(db, "SELECT COUNT(*) FROM threads");
  s.messages = scalar(db, "SELECT COUNT(*) FROM messages");
}

// rename(2) that fails with EEXIST instead of replacing `to`; 0 or an errno.
int rename_no_replace(const fs::path& from, const fs::path& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return errno;
  // A file system without RENAME_NOREPLACE: the plain rename, checked just before.
  std::error_code ec;
  if (fs::exists(to, ec)) return EEXIST;
  return ::rename(from.c_str(), to.c_str()) == 0 ? 0 : errno;
}

// Copies `from` into a new file `to` (via a temporary name, fsynced, renamed).
// `journal_mode`: the copy's own, DELETE for a self-contained backup file,
// WAL for a server's database.
Result<CopySummary> copy_to_new_file(sqlite3* from, const fs::path& to, const char* journal_mode,
                                     const std::string& failure_code) {
  fs::path tmp = to;
  tmp += ".partial-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove(tmp, ec);
  auto fail = [&](const std::string& why) -> Error {
    fs::remove(tmp, ec);
    return Error{ErrorKind::kInternal, failure_code, why};
  };
  CopySummary summary;
  {
    auto dest = open_db(tmp.string(), SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    if (!dest) return fail(dest.error().message);
    if (auto st = copy_database(from, dest->get()); !st) return fail(st.error().message);
    std::string mode = std::string("PRAGMA journal_mode=") + journal_mode;
    if (sqlite3_exec(dest->get(), mode.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK)
      return fail(std::string("journal_mode: ") + sqlite3_errmsg(dest->get()));
    if (std::string check = quick_check(dest->get()); check != "ok") return fail("the copy fails quick_check: " + check);
    fill_counts(dest->get(), summary);
  }
  if (auto st = fsync_path(tmp, false); !st) return fail(st.error().message);
  // Never over a file that appeared since the caller checked (two backups to
  // one name would both report success, one of them lost).
  if (int err = rename_no_replace(tmp, to); err != 0) {
    if (err == EEXIST) return fail(to.string() + " appeared while the copy was made; nothing was replaced");
    return fail("cannot rename " + tmp.string() + " to " + to.string() + ": " + std::strerror(err));
  }
  fs::path dir = to.parent_path().empty() ? fs::path(".") : to.parent_path();
  if (auto st = fsync_path(dir, true); !st) return Error{ErrorKind::kInternal, failure_code, st.error().message};
  summary.path = to.string();
  summary.bytes = static_cast<int64_t>(fs::file_size(to, ec));
  return summary;
}

}  // namespace

Result<CopySummary> sqlite_backup(const std::string& data_dir, const std::string& to) {
  fs::path source = fs::path(data_dir) / "parley.db";
  std::error_code ec;
  if (!fs::is_regular_file(source, ec))
    return not_found("no_database", "no database at " + source.string() + " (is --data-dir the server's?)");
  if (fs::exists(to, ec)) return Error{ErrorKind::kConflict, "backup_exists", to + " exists; choose a new file name"};
  // Read-only, and without the data dir lock: the server keeps running and
  // writing; WAL lets this reader see one snapshot while it does.
  auto src = open_db(source.string(), SQLITE_OPEN_READONLY);
  if (!src) return Error{ErrorKind::kInternal, "backup_failed", src.error().message};
  return copy_to_new_file(src->get(), fs::absolute(to, ec), "DELETE", "backup_failed");
}

namespace {

// A data dir a restore may fill: missing, empty, or holding only the LOCK
// file a lock (DataDirLock) leaves behind. Else data_dir_not_empty.
Status restorable_data_dir(const std::string& data_dir) {
  std::error_code ec;
  if (!fs::exists(data_dir, ec)) return Ok{};
  if (!fs::is_directory(data_dir, ec)) return bad_input("data_dir_not_empty", data_dir + " exists and is not a directory");
  std::string what;
  int shown = 0;
  for (const auto& entry : fs::directory_iterator(data_dir, ec)) {
    if (entry.path().filename() == "LOCK") continue;
    if (shown++ == 3) {
      what += ", ...";
      break;
    }
    what += (what.empty() ? "" : ", ") + entry.path().filename().string();
  }
  if (what.empty()) return Ok{};
  return Error{ErrorKind::kConflict, "data_dir_not_empty",
               data_dir + " is not empty (" + what + "); restore only into a new or empty data dir, with no server on it"};
}

}  // namespace

Result<CopySummary> sqlite_restore(const std::string& from, const std::string& data_dir) {
  std::error_code ec;
  if (auto st = restorable_data_dir(data_dir); !st) return st.error();
  const bool dir_existed = fs::exists(data_dir, ec);
  const bool lock_existed = fs::exists(fs::path(data_dir) / "LOCK", ec);
  if (!fs::is_regular_file(from, ec)) return bad_input("not_a_backup", "no backup file at " + from);
  auto src = open_db(from, SQLITE_OPEN_READONLY);
  if (!src) return bad_input("not_a_backup", src.error().message);
  // Any SQLite file would copy; only a Parley database is worth restoring.
  if (std::string check = quick_check(src->get()); check != "ok")
    return bad_input("not_a_backup", from + " is not a sound SQLite database: " + check);
  if (scalar(src->get(), "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('users', 'threads', 'participants', 'messages')") != 4)
    return bad_input("not_a_backup", from + " is not a Parley database (no users, threads, participants and messages tables)");
  // serve would refuse the restored database (migrate_schema does not go
  // back); better to say so now, before the data dir is touched.
  if (int64_t version = scalar(src->get(), "PRAGMA user_version"); version > latest_schema_version())
    return bad_input("backup_too_new", from + " has schema version " + std::to_string(version) +
                                           ", newer than this parley knows (" + std::to_string(latest_schema_version()) +
                                           "); restore it with the parley release that made it, or a newer one");
  Result<CopySummary> restored = [&]() -> Result<CopySummary> {
    // The lock keeps a server from starting on the data dir while it is
    // filled; the check again under it, in case one came and went.
    auto lock = DataDirLock::acquire(data_dir);
    if (!lock) return lock.error();
    if (auto st = restorable_data_dir(data_dir); !st) return st.error();
    return copy_to_new_file(src->get(), fs::absolute(fs::path(data_dir) / "parley.db", ec), "WAL", "restore_failed");
  }();
  // A failed restore leaves the data dir as it found it (the lock created
  // its LOCK file, and the directory if it was missing), so a retry is not
  // refused as "not empty".
  if (!restored && restored.error().code != "data_dir_not_empty") {
    if (!lock_existed) fs::remove(fs::path(data_dir) / "LOCK", ec);
    if (!dir_existed) fs::remove(data_dir, ec);  // only if empty
  }
  return restored;
}

}  // namespace parley
