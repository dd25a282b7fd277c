// SQLite backup and restore: a consistent copy of a data dir's database made
// with SQLite's online backup API, from another process while a server runs
// on it (a read transaction on the WAL database: the server's writes go on,
// the copy is the database as of the moment it began), and the way back
// into a new data dir. Neither takes the data dir lock of a running server
// (data_dir_lock.h): backup only reads; restore refuses a data dir that has
// anything in it, a running server's included.
//
// Blocking; no state kept between calls. For the length of a copy, SIGTERM,
// SIGINT and SIGHUP remove its partial files and end the process (exit 1,
// one line on stderr): meant for the command-line process that runs it.
#pragma once

#include <cstdint>
#include <string>

#include "common/error.h"

namespace parley {

// What a copy holds, for the command's one-line summary.
struct CopySummary {
  std::string path;  // the file written: the backup, or the restored database
  int64_t users = 0;
  int64_t threads = 0;
  int64_t messages = 0;
  int64_t bytes = 0;
};

// Copies <data_dir>/parley.db to `to`, a new file (written beside it under a
// temporary name, checked with quick_check, fsynced, then renamed, so `to`
// is either a whole backup or absent). First removes the partial files of
// earlier backups to `to` whose process is gone (SIGKILL, a crash).
// Errors: "no_database", "backup_exists", "backup_failed".
Result<CopySummary> sqlite_backup(const std::string& data_dir, const std::string& to);

// Copies the backup `from` into <data_dir>/parley.db. data_dir must be
// missing or empty. Errors: "data_dir_not_empty", "not_a_backup" (missing,
// unreadable, not a Parley database, or failing integrity_check),
// "backup_too_new" (a schema newer than latest_schema_version()), all with
// the data dir untouched; "restore_failed".
// A restore killed outright (SIGKILL, a crash) leaves its partial files in
// the data dir; the next restore into it removes those whose process is
// gone first.
Result<CopySummary> sqlite_restore(const std::string& from, const std::string& data_dir);
// Refuses (conflict "restore_unfinished") a data_dir that holds the partial
// files of a restore and no database: a store opened there would start
// empty beside the unfinished copy.
Status no_unfinished_restore(const std::string& data_dir);

}  // namespace parley
