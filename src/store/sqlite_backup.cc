#include "store/sqlite_backup.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>
#include <stdio.h>  // renameat2
#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>
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

bool parley_tables(sqlite3* db) {
  return scalar(db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                    "('users', 'threads', 'participants', 'messages')") == 4;
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

// The files a copy to `tmp` may leave: the database and SQLite's own beside it.
constexpr std::array<const char*, 4> kPartialSuffixes = {"", "-journal", "-wal", "-shm"};

// What the signal handler needs, set before it is installed and read-only
// while it is: the files to remove and the line to print around the signal.
std::array<std::string, kPartialSuffixes.size()> g_partial_files;
std::string g_interrupted_head, g_interrupted_tail;
// A restore's own marks on the data dir, removed too (empty: none): the LOCK
// file it created, and the directory if it made it (rmdir: only if empty).
std::string g_made_lock_file, g_made_dir;

void write_stderr(std::string_view text) {
  if (::write(STDERR_FILENO, text.data(), text.size()) < 0) return;  // nowhere to report it
}

extern "C" void remove_partial_and_exit(int sig) {
  // Only async-signal-safe calls here: the copy was cut anywhere, in SQLite
  // or in the allocator. unlink is enough: nothing else the copy made lasts.
  for (const std::string& f : g_partial_files) ::unlink(f.c_str());
  if (!g_made_lock_file.empty()) ::unlink(g_made_lock_file.c_str());
  if (!g_made_dir.empty()) ::rmdir(g_made_dir.c_str());
  write_stderr(g_interrupted_head);
  write_stderr(sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "SIGHUP");
  write_stderr(g_interrupted_tail);
  ::_exit(1);
}

// While alive, SIGTERM, SIGINT and SIGHUP remove the copy's partial files and
// end the process with exit 1 (the default action would leave them behind,
// full-size, in the backup folder). disarm() hands the signals back to their
// old handlers; done with signals blocked together with the rename, so a
// signal lands either before it (nothing written) or after (a whole file).
class RemovedOnSignal {
 public:
  RemovedOnSignal(const fs::path& tmp, const std::string& failure_code, const fs::path& to) {
    for (size_t i = 0; i < kPartialSuffixes.size(); ++i) g_partial_files[i] = tmp.string() + kPartialSuffixes[i];
    g_interrupted_head = "parley: " + failure_code + ": stopped by ";
    g_interrupted_tail = "; the partial copy was removed and nothing was written to " + to.string() + "\n";
    struct sigaction sa {};
    sa.sa_handler = remove_partial_and_exit;
    sigemptyset(&sa.sa_mask);
    for (int sig : kSignals) sigaddset(&sa.sa_mask, sig);
    for (size_t i = 0; i < kSignals.size(); ++i) ::sigaction(kSignals[i], &sa, &old_[i]);
  }
  ~RemovedOnSignal() { disarm(); }
  RemovedOnSignal(const RemovedOnSignal&) = delete;
  RemovedOnSignal& operator=(const RemovedOnSignal&) = delete;

  void disarm() {
    if (disarmed_) return;
    for (size_t i = 0; i < kSignals.size(); ++i) ::sigaction(kSignals[i], &old_[i], nullptr);
    disarmed_ = true;
  }

  // Blocks the signals for its lifetime (a pending one arrives afterwards).
  class Blocked {
   public:
    Blocked() {
      sigset_t set;
      sigemptyset(&set);
      for (int sig : kSignals) sigaddset(&set, sig);
      ::pthread_sigmask(SIG_BLOCK, &set, &old_);
    }
    ~Blocked() { ::pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
    Blocked(const Blocked&) = delete;
    Blocked& operator=(const Blocked&) = delete;

   private:
    sigset_t old_;
  };

 private:
  static constexpr std::array<int, 3> kSignals = {SIGTERM, SIGINT, SIGHUP};
  std::array<struct sigaction, kSignals.size()> old_{};
  bool disarmed_ = false;
};

// Copies `from` into a new file `to` (via a temporary name, fsynced, renamed).
// `journal_mode`: the copy's own, DELETE for a self-contained backup file,
// WAL for a server's database.
Result<CopySummary> copy_to_new_file(sqlite3* from, const fs::path& to, const char* journal_mode,
                                     const std::string& failure_code) {
  fs::path tmp = to;
  tmp += ".partial-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove(tmp, ec);
  RemovedOnSignal removed_on_signal(tmp, failure_code, to);
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
  int err = 0;
  {
    RemovedOnSignal::Blocked blocked;
    err = rename_no_replace(tmp, to);
    if (err == 0) removed_on_signal.disarm();
  }
  if (err != 0) {
    if (err == EEXIST) return fail(to.string() + " appeared while the copy was made; nothing was replaced");
    return fail("cannot rename " + tmp.string() + " to " + to.string() + ": " + std::strerror(err));
  }
  fs::path dir = to.parent_path().empty() ? fs::path(".") : to.parent_path();
  if (auto st = fsync_path(dir, true); !st) return Error{ErrorKind::kInternal, failure_code, st.error().message};
  summary.path = to.string();
  summary.bytes = static_cast<int64_t>(fs::file_size(to, ec));
  return summary;
}

// The pid in "<to>.partial-<pid>[-journal|-wal|-shm]", or 0 when `name` is
// not such a file of `to`.
pid_t partial_owner(const std::string& name, const std::string& to_name) {
  const std::string prefix = to_name + ".partial-";
  if (!name.starts_with(prefix)) return 0;
  const char* first = name.data() + prefix.size();
  const char* last = name.data() + name.size();
  pid_t pid = 0;
  auto [end, ec] = std::from_chars(first, last, pid);
  if (ec != std::errc() || end == first || pid <= 0) return 0;
  for (const char* suffix : kPartialSuffixes)
    if (std::string_view(end, last) == suffix) return pid;
  return 0;
}

// Removes what backups to `to` killed outright (SIGKILL, a crash, power
// loss) left behind. Only files whose process is gone: a live pid may be
// another backup still copying (or, reused, some other process: its file
// is kept, the safe way to be wrong). EPERM means alive, someone else's.
void remove_stale_partials(const fs::path& to) {
  std::error_code ec;
  const fs::path dir = to.parent_path().empty() ? fs::path(".") : to.parent_path();
  const std::string to_name = to.filename().string();
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const pid_t pid = partial_owner(name, to_name);
    if (pid == 0 || pid == ::getpid()) continue;
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;
    std::error_code removed;
    if (fs::remove(entry.path(), removed))
      spdlog::warn("event=backup_stale_partial_removed file=\"{}\" pid={}", entry.path().string(), pid);
  }
}

}  // namespace

Result<CopySummary> sqlite_backup(const std::string& data_dir, const std::string& to) {
  fs::path source = fs::path(data_dir) / "parley.db";
  std::error_code ec;
  if (auto st = no_unfinished_restore(data_dir); !st) return st.error();  // as serve says it
  if (!fs::is_regular_file(source, ec))
    return not_found("no_database", "no database at " + source.string() + " (is --data-dir the server's?)");
  if (fs::exists(to, ec)) return Error{ErrorKind::kConflict, "backup_exists", to + " exists; choose a new file name"};
  // Read-only, and without the data dir lock: the server keeps running and
  // writing; WAL lets this reader see one snapshot while it does.
  auto src = open_db(source.string(), SQLITE_OPEN_READONLY);
  if (!src) return Error{ErrorKind::kInternal, "backup_failed", src.error().message};
  // restore refuses anything else: a scheduled backup must not report
  // success while it copies an empty file (a data dir never served).
  if (!parley_tables(src->get()))
    return Error{ErrorKind::kInternal, "backup_failed",
                 source.string() + " is not a Parley database (no users, threads, participants and messages tables)"};
  const fs::path target = fs::absolute(to, ec);
  remove_stale_partials(target);
  return copy_to_new_file(src->get(), target, "DELETE", "backup_failed");
}

namespace {

// A data dir a restore may fill: missing, empty, or holding only the lock
// files locks leave behind (DataDirLock's LOCK, StoreCopyLock's COPY_LOCK).
// Else data_dir_not_empty.
Status restorable_data_dir(const std::string& data_dir) {
  std::error_code ec;
  if (!fs::exists(data_dir, ec)) return Ok{};
  if (!fs::is_directory(data_dir, ec)) return bad_input("data_dir_not_empty", data_dir + " exists and is not a directory");
  std::string what;
  int shown = 0;
  for (const auto& entry : fs::directory_iterator(data_dir, ec)) {
    if (entry.path().filename() == "LOCK" || entry.path().filename() == "COPY_LOCK") continue;
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

Status no_unfinished_restore(const std::string& data_dir) {
  std::error_code ec;
  if (fs::exists(fs::path(data_dir) / "parley.db", ec)) return Ok{};
  for (const auto& entry : fs::directory_iterator(data_dir, ec))
    if (partial_owner(entry.path().filename().string(), "parley.db") != 0)
      return Error{ErrorKind::kConflict, "restore_unfinished",
                   data_dir + " holds the partial files of a restore that did not finish (" +
                       entry.path().filename().string() + ") and no database: run the restore again (it removes them first)"};
  return Ok{};
}

Result<CopySummary> sqlite_restore(const std::string& from, const std::string& data_dir) {
  std::error_code ec;
  if (fs::is_directory(data_dir, ec)) remove_stale_partials(fs::absolute(fs::path(data_dir) / "parley.db", ec));
  if (auto st = restorable_data_dir(data_dir); !st) return st.error();
  const bool dir_existed = fs::exists(data_dir, ec);
  const bool lock_existed = fs::exists(fs::path(data_dir) / "LOCK", ec);
  if (!fs::is_regular_file(from, ec)) return bad_input("not_a_backup", "no backup file at " + from);
  auto src = open_db(from, SQLITE_OPEN_READONLY);
  if (!src) return bad_input("not_a_backup", src.error().message);
  // Any SQLite file would copy; only a Parley database is worth restoring.
  if (std::string check = quick_check(src->get()); check != "ok")
    return bad_input("not_a_backup", from + " is not a sound SQLite database: " + check);
  if (!parley_tables(src->get()))
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
    // Stopped by a signal, the restore leaves the data dir as it found it, as a failure does below.
    if (!lock_existed) g_made_lock_file = (fs::absolute(data_dir, ec) / "LOCK").string();
    if (!dir_existed) g_made_dir = fs::absolute(data_dir, ec).string();
    auto copied = copy_to_new_file(src->get(), fs::absolute(fs::path(data_dir) / "parley.db", ec), "WAL", "restore_failed");
    g_made_lock_file.clear();
    g_made_dir.clear();
    return copied;
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
